//! Issue #18's edges for a user: empty credentials, a call's own credential
//! header, and errors that name their coordinator.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{ClientBuilder, Error, QualityClient, QualityRequest};

async fn approving() -> TestCoordinator {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::approve());
    coordinator
}

/// One check of `client`, which must fail.
async fn failing(client: &QualityClient) -> Error {
    client
        .check(QualityRequest::new("t", "a"))
        .await
        .unwrap_err()
}

/// Sends one check with `client` and returns what the coordinator saw.
async fn sent_with(
    coordinator: &TestCoordinator,
    client: QualityClient,
) -> Vec<(Option<String>, Option<String>)> {
    coordinator.reset();
    coordinator.always(Reply::approve());
    client.check(QualityRequest::new("t", "a")).await.unwrap();
    auth_headers(coordinator)
}

fn auth_headers(coordinator: &TestCoordinator) -> Vec<(Option<String>, Option<String>)> {
    let value = |r: &tower_quality_gate::testing::Recorded, name: &str| {
        let mut all = r.headers.get_all(name).iter();
        let first = all.next().map(|v| v.to_str().unwrap().to_owned());
        assert!(all.next().is_none(), "{name} sent twice");
        first
    };
    coordinator
        .requests()
        .iter()
        .map(|r| (value(r, "authorization"), value(r, "x-api-key")))
        .collect()
}

#[tokio::test]
async fn empty_credentials_from_the_environment_are_none() {
    let coordinator = approving().await;
    let url = coordinator.url();
    let client = ClientBuilder::from_vars(|name| match name {
        "COORDINATOR_URL" => Some(url.clone()),
        "COORDINATOR_TOKEN" => Some(String::new()),
        "COORDINATOR_API_KEY" => Some("  ".to_owned()),
        _ => None,
    })
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(sent_with(&coordinator, client).await, vec![(None, None)]);
}

#[tokio::test]
async fn an_empty_bearer_token_or_api_key_from_the_builder_is_none() {
    let coordinator = approving().await;
    let client = QualityClient::builder(coordinator.url())
        .bearer_token("")
        .api_key(" ")
        .build()
        .unwrap();
    assert_eq!(sent_with(&coordinator, client).await, vec![(None, None)]);

    // No token, so a configured authorization header is not a conflict.
    let client = QualityClient::builder(coordinator.url())
        .bearer_token("")
        .header("authorization", "Basic dTpw")
        .build()
        .unwrap();
    assert_eq!(
        sent_with(&coordinator, client).await,
        vec![(Some("Basic dTpw".to_owned()), None)]
    );
}

#[tokio::test]
async fn a_calls_own_credential_header_replaces_the_configured_one() {
    let coordinator = approving().await;
    let client = QualityClient::builder(coordinator.url())
        .bearer_token("configured")
        .api_key("configured-key")
        .build()
        .unwrap();
    let own = QualityRequest::new("t", "a")
        .header(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer per-call"),
        )
        .header(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("per-call-key"),
        );
    client.check(own).await.unwrap();
    client.check(QualityRequest::new("t", "a")).await.unwrap();
    assert_eq!(
        auth_headers(&coordinator),
        vec![
            (
                Some("Bearer per-call".to_owned()),
                Some("per-call-key".to_owned())
            ),
            (
                Some("Bearer configured".to_owned()),
                Some("configured-key".to_owned())
            ),
        ]
    );
}

#[tokio::test]
async fn a_connect_error_names_its_coordinator_without_the_path() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = QualityClient::builder(format!("http://127.0.0.1:{port}/tenant-s3cret"))
        .attempts(1)
        .build()
        .unwrap();
    let err = failing(&client).await;
    let origin = format!("http://127.0.0.1:{port}");
    assert!(err.is_connect(), "{err}");
    assert_eq!(err.coordinator(), Some(origin.as_str()));
    let shown = format!("{err} {err:?}");
    assert!(
        shown.contains(&format!("could not connect to the coordinator at {origin}")),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");

    // The health check names it too.
    let err = client.health().await.unwrap_err();
    assert_eq!(err.coordinator(), Some(origin.as_str()));
}

#[tokio::test]
async fn timeouts_name_their_coordinator() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::hang());
    let origin = coordinator.url().trim_end_matches('/').to_owned();
    let client = QualityClient::builder(coordinator.url())
        .attempts(1)
        .attempt_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let err = failing(&client).await;
    assert!(err.is_timeout(), "{err}");
    assert_eq!(err.coordinator(), Some(origin.as_str()));
    assert!(err.to_string().contains(&origin), "{err}");

    let client = QualityClient::builder(coordinator.url())
        .total_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let err = failing(&client).await;
    assert!(err.is_total_timeout(), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("quality check at {origin} passed its deadline")),
        "{err}"
    );
}
