//! Properties that hold for any input a hostile coordinator or a careless
//! caller can produce: no secret leaves through an error, and no input
//! panics. Case counts are small so the suite stays fast; the crate-private
//! parts (the redactor, the `Retry-After` parser) have their own properties
//! next to the code.

mod net;

use std::time::Duration;

use http::StatusCode;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_quality_gate::breaker::CircuitBreakerConfig;
use tower_quality_gate::retry::{Jitter, JitteredBackoff, RetryBackoff};
use tower_quality_gate::testing::{Reply, TestCoordinator};
use tower_quality_gate::{Error, Proxy, QualityCheck, QualityClient, QualityRequest};

use net::{ProxyMode, TestProxy};

/// Header-valid secrets of at least 9 characters, without `[` or `]` (so no
/// secret can be read across or inside `[redacted]`): tabs, quotes,
/// backslashes and unicode included.
fn secret() -> impl Strategy<Value = String> {
    r#"[A-Za-z0-9\t "\\/+=~.:;,%é☃日_-]{9,40}"#
}

/// How many forms [`echoed`] knows.
const FORMS: u8 = 9;

/// The secret as a server may echo it: as sent, as the header reached it
/// (trimmed), inside a JSON string (escaped as serde_json and as Python's
/// `json.dumps` do), percent-encoded (upper- and lower-case hex, `/` kept,
/// as a form) or percent-decoded.
fn echoed(secret: &str, form: u8) -> Vec<u8> {
    match form {
        0 => secret.as_bytes().to_vec(),
        1 => secret.trim().as_bytes().to_vec(),
        2 => {
            // Between the quotes (an escaped quote may end it).
            let json = serde_json::to_string(secret).unwrap();
            json.as_bytes()[1..json.len() - 1].to_vec()
        }
        3 => secret
            .chars()
            .map(|c| match c {
                '"' => "\\\"".to_owned(),
                '\\' => "\\\\".to_owned(),
                '\t' => "\\t".to_owned(),
                c if c.is_ascii() => c.to_string(),
                c => c
                    .encode_utf16(&mut [0; 2])
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect(),
            })
            .collect::<String>()
            .into_bytes(),
        4 => percent(secret.as_bytes(), "", true),
        5 => percent(secret.as_bytes(), "", false),
        6 => percent(secret.as_bytes(), "/", true),
        7 => String::from_utf8(percent(secret.as_bytes(), "", true))
            .unwrap()
            .replace("%20", "+")
            .into_bytes(),
        _ => percent_decoded(secret.as_bytes()),
    }
}

/// `bytes` with all but RFC 3986's unreserved characters and `keep` as
/// `%XX`, in upper- or lower-case hex.
fn percent(bytes: &[u8], keep: &str, upper: bool) -> Vec<u8> {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.as_bytes().contains(&b) {
            out.push(b as char);
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out.into_bytes()
}

/// `bytes` with each `%XX` decoded.
fn percent_decoded(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) if bytes[i + 1..i + 3].iter().all(u8::is_ascii_hexdigit) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// A part of `secret` that `text` shows, if any: the secret whole when
/// shorter than 8 characters, else any 8 characters of it in a row, as
/// sent or as one line (control characters as spaces).
fn shown_part(text: &str, secret: &str) -> Option<String> {
    let chars: Vec<char> = secret.chars().collect();
    let width = chars.len().min(8);
    chars.windows(width.max(1)).find_map(|w| {
        let part: String = w.iter().collect();
        let one_line: String = w
            .iter()
            .map(|&c| if c.is_control() { ' ' } else { c })
            .collect();
        (text.contains(&part) || text.contains(&one_line)).then_some(part)
    })
}

/// What comes before the echoed secret: any bytes, often just short of the
/// 256-character snippet cut or the 1024-byte read, so the secret straddles
/// them.
fn prefix() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![0usize..16, 240usize..260, 1000usize..1030, 0usize..1100]
        .prop_flat_map(|len| proptest::collection::vec(any::<u8>(), len))
}

/// Every text an error offers a caller or a log, its sources' included.
fn error_texts(err: &Error) -> Vec<String> {
    let mut texts = vec![
        err.to_string(),
        format!("{err:?}"),
        err.body_snippet().unwrap_or_default().to_owned(),
    ];
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        texts.push(format!("{e} {e:?}"));
        source = e.source();
    }
    texts
}

/// Fails the case when a text of `err` shows a part of `secret` (see
/// [`shown_part`]).
fn refute_shown(err: &Error, secret: &str) -> Result<(), TestCaseError> {
    for text in error_texts(err) {
        if let Some(part) = shown_part(&text, secret) {
            return Err(TestCaseError::fail(format!(
                "{part:?} of {secret:?} leaked in {text:?}"
            )));
        }
    }
    Ok(())
}

/// A runtime, a coordinator on it, and a client of one attempt per call.
fn one_attempt_client() -> (tokio::runtime::Runtime, TestCoordinator, QualityClient) {
    let rt = runtime();
    let coordinator = rt.block_on(TestCoordinator::start());
    let client = QualityClient::builder(coordinator.url())
        .attempts(1)
        .build()
        .unwrap();
    (rt, coordinator, client)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `cases` cases of `strategy` end to end: each builds a check whose
/// credential is the case's secret (`x-coordinator-token`, a secret by its
/// name, or `x-tenant`, marked with `secret_header`), scripts the
/// coordinator's answer from the case, and asserts that no text of the
/// error shows the secret.
fn assert_no_error_shows_the_secret<S: Strategy>(
    cases: u32,
    strategy: S,
    case: impl Fn(&S::Value) -> (String, Reply),
) {
    let rt = runtime();
    let coordinator = rt.block_on(TestCoordinator::start());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    runner
        .run(&strategy, |value| {
            let (secret, reply) = case(&value);
            let check = QualityCheck::builder(coordinator.url())
                .header("x-coordinator-token", secret.as_str())
                .secret_header("x-tenant", format!("t-{secret}"))
                .build()
                .unwrap();
            coordinator.push(reply);
            let err = rt
                .block_on(check.oneshot(QualityRequest::new("t", "a")))
                .unwrap_err();
            for form in 0..FORMS {
                refute_shown(&err, &String::from_utf8_lossy(&echoed(&secret, form)))?;
            }
            Ok(())
        })
        .unwrap();
}

/// End to end on 127.0.0.1: whatever the coordinator's error body, and
/// wherever in it a secret header's value is echoed (before, across or after
/// the 256-character snippet cut and the 1024-byte read), no error text
/// shows the value.
#[test]
fn no_error_text_shows_a_secret_echoed_in_an_error_body() {
    let strategy = (
        secret(),
        prefix(),
        "[a-z ]{0,64}",
        0..FORMS,
        prop_oneof![Just(400u16), Just(429), Just(500), Just(503)],
    );
    assert_no_error_shows_the_secret(48, strategy, |(secret, prefix, suffix, form, status)| {
        let mut body = prefix.clone();
        body.extend(echoed(secret, *form));
        body.extend(suffix.as_bytes());
        (secret.clone(), Reply::raw(*status, "text/plain", body))
    });
}

/// End to end: a 200 whose JSON puts the secret where a verdict cannot have
/// it (a string for `approved`, a number for `gate`, a bare word) is an
/// invalid response whose error, source included, does not quote it.
#[test]
fn no_error_text_shows_a_secret_in_an_invalid_verdict() {
    // Characters serde would quote unescaped, so a quoted secret is seen.
    let strategy = ("[A-Za-z0-9é☃日_.~-]{9,40}", 0u8..4);
    assert_no_error_shows_the_secret(16, strategy, |(secret, shape)| {
        let quoted = serde_json::to_string(secret).unwrap();
        let body = match shape {
            0 => format!(r#"{{"approved":{quoted},"gate":"g"}}"#),
            1 => format!(r#"{{"approved":true,"gate":{{"name":{quoted}}}}}"#),
            2 => format!(r#"{{"approved":true,"gate":"g","details":{quoted}}}"#),
            _ => format!(r#"{{"approved":true,"gate":{secret}}}"#),
        };
        (secret.clone(), Reply::raw(200, "application/json", body))
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any base URL: `build()` never panics, and neither its error nor the
    /// builder's `Debug` shows the user info, whatever `#`, `?`, `/`, `:` or
    /// `@` it holds.
    #[test]
    fn no_base_url_panics_or_shows_its_user_info(
        scheme in prop_oneof![Just("http://"), Just("https://"), Just("ftp://"), Just(""), Just("http:/")],
        user in "Us[A-Za-z0-9#?/:%@._~!$&'()*+,;=-]{3,12}",
        password in "Pw[A-Za-z0-9#?/:%@._~!$&'()*+,;=-]{3,12}",
        host in "[a-z0-9.\\[\\]:-]{0,20}",
        rest in "[ -~]{0,20}",
    ) {
        let url = format!("{scheme}{user}:{password}@{host}{rest}");
        let builder = QualityCheck::builder(url.as_str());
        let debug = format!("{builder:?}");
        prop_assert!(!debug.contains(&user) && !debug.contains(&password), "{}", debug);
        if let Err(err) = builder.build() {
            prop_assert!(err.is_config());
            let text = format!("{err} {err:?}");
            prop_assert!(!text.contains(&user), "{:?} shows {:?}", text, user);
            prop_assert!(!text.contains(&password), "{:?} shows {:?}", text, password);
        }
    }

    /// Any string at all as a base URL: an answer, never a panic.
    #[test]
    fn any_base_url_builds_or_fails_cleanly(url in prop_oneof![
        any::<String>(),
        "(http|https|HTTP)://[\\[\\]:@a-z0-9.%/?#é -]{0,30}",
    ]) {
        let _ = QualityCheck::builder(url).build();
    }

    /// Any backoff settings: a wait of at most the cap, never a panic.
    #[test]
    fn any_backoff_is_bounded(
        initial in any::<(u64, u32)>(),
        max in any::<(u64, u32)>(),
        multiplier in any::<f64>(),
        retry in any::<u32>(),
        jitter in prop_oneof![Just(Jitter::Full), Just(Jitter::Equal), Just(Jitter::None)],
    ) {
        let duration = |(secs, nanos): (u64, u32)| Duration::new(secs, nanos % 1_000_000_000);
        let b = JitteredBackoff::new(duration(initial))
            .max_delay(duration(max))
            .multiplier(multiplier)
            .jitter(jitter);
        prop_assert!(b.delay(retry) <= duration(max));
        prop_assert!(b.base_delay(retry) <= duration(max));
    }
}

/// A 429 or 503 asking for more seconds than a `u64` holds asks for "beyond
/// the cap": the call fails at once instead of retrying at once.
#[tokio::test(start_paused = true)]
async fn an_enormous_retry_after_fails_fast() {
    let coordinator = TestCoordinator::start().await;
    for status in [429, 503] {
        coordinator.reset();
        coordinator.always(Reply::status(status).retry_after("184467440737095516160000"));
        let client = QualityClient::new(coordinator.url()).unwrap();
        let start = Instant::now();
        let err = client
            .check(QualityRequest::new("t", "a"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::from_u16(status).ok());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(u64::MAX)));
        assert_eq!(coordinator.hits(), 1, "{status}");
        assert_eq!(start.elapsed(), Duration::ZERO, "{status}");
    }
}

/// `Retry-After` on another status is ignored: the retry waits the backoff.
#[tokio::test(start_paused = true)]
async fn retry_after_on_a_500_is_ignored() {
    let coordinator = TestCoordinator::start().await;
    coordinator.push(Reply::status(500).retry_after("5"));
    let client = QualityClient::builder(coordinator.url())
        .backoff(JitteredBackoff::default().jitter(Jitter::None))
        .build()
        .unwrap();
    let start = Instant::now();
    assert!(
        client
            .check(QualityRequest::new("t", "a"))
            .await
            .unwrap()
            .approved
    );
    assert_eq!(coordinator.hits(), 2);
    assert_eq!(start.elapsed(), Duration::from_millis(100));

    coordinator.push(Reply::status(500).retry_after("5"));
    let err = QualityCheck::new(coordinator.url())
        .unwrap()
        .oneshot(QualityRequest::new("t", "a"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(err.retry_after(), None);
}

/// A breaker whose cooldown is `Duration::MAX` opens (for good) instead of
/// panicking on `now + cooldown`.
#[tokio::test(start_paused = true)]
async fn a_breaker_with_an_endless_cooldown_stays_open() {
    let coordinator = TestCoordinator::start().await;
    coordinator.always(Reply::status(500));
    let client = QualityClient::builder(coordinator.url())
        .attempts(1)
        .circuit_breaker(
            CircuitBreakerConfig::default()
                .failure_threshold(1)
                .cooldown(Duration::MAX),
        )
        .build()
        .unwrap();
    let err = client
        .check(QualityRequest::new("t", "a"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
    let err = client
        .check(QualityRequest::new("t", "a"))
        .await
        .unwrap_err();
    assert!(err.is_circuit_open(), "{err:?}");
    assert_eq!(coordinator.hits(), 1);
}

type Setting =
    fn(tower_quality_gate::QualityCheckBuilder) -> tower_quality_gate::QualityCheckBuilder;

/// Absurd settings are configuration errors at build time, named.
#[test]
fn absurd_settings_are_refused_at_build_time() {
    let url = "http://127.0.0.1:8000";
    let cases: [(Setting, &str); 6] = [
        (|b| b.body_limit(0), "body limit"),
        (|b| b.health_timeout(Duration::ZERO), "health timeout"),
        (|b| b.health_timeout(Duration::MAX), "health timeout"),
        (
            |b| b.connect_timeout(Some(Duration::ZERO)),
            "connect timeout",
        ),
        (
            |b| b.connect_timeout(Some(Duration::MAX)),
            "connect timeout",
        ),
        (
            |b| b.pool_idle_timeout(Some(Duration::MAX)),
            "pool idle timeout",
        ),
    ];
    for (set, named) in cases {
        let err = set(QualityCheck::builder(url)).build().unwrap_err();
        assert!(err.is_config(), "{named}: {err:?}");
        assert!(err.to_string().contains(named), "{named}: {err}");
    }
    assert!(QualityCheck::builder(url)
        .connect_timeout(None)
        .pool_idle_timeout(Some(Duration::ZERO))
        .build()
        .is_ok());
}

/// Headers the client sets itself are configuration errors naming the
/// header, never its value.
#[test]
fn reserved_headers_are_refused_by_name() {
    let url = "http://127.0.0.1:8000";
    for name in [
        "content-length",
        "Host",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "content-type",
        "user-agent",
        "x-request-id",
    ] {
        let err = QualityCheck::builder(url)
            .header(name, "VALUE-1")
            .build()
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(err.is_config(), "{name}");
        assert!(text.contains(&name.to_ascii_lowercase()), "{text}");
        assert!(!text.contains("VALUE-1"), "{text}");
    }
    let with_token = QualityCheck::builder(url)
        .bearer_token("t")
        .header("authorization", "Bearer VALUE-2")
        .build()
        .unwrap_err();
    assert!(with_token.to_string().contains("authorization"));
    let with_key = QualityCheck::builder(url)
        .api_key("k")
        .secret_header("X-API-Key", "VALUE-3")
        .build()
        .unwrap_err();
    assert!(with_key.to_string().contains("x-api-key"));
    let custom_id = QualityCheck::builder(url)
        .request_id_header(Some("idempotency-key"))
        .header("idempotency-key", "VALUE-4")
        .build()
        .unwrap_err();
    assert!(custom_id.to_string().contains("idempotency-key"));
    // Alone, each is an ordinary (secret) header.
    assert!(QualityCheck::builder(url)
        .header("authorization", "Bearer x")
        .header("x-api-key", "k")
        .build()
        .is_ok());
    assert!(QualityCheck::builder(url)
        .request_id_header(Some("content-length"))
        .build()
        .unwrap_err()
        .is_config());
}

/// A custom backoff may ask for `Duration::MAX`: the wait passes any
/// deadline, so the call fails at once with the last error.
#[tokio::test(start_paused = true)]
async fn a_backoff_of_duration_max_fails_fast() {
    #[derive(Debug)]
    struct Forever;

    impl RetryBackoff for Forever {
        fn delay(&self, _retry: u32) -> Duration {
            Duration::MAX
        }
    }

    let coordinator = TestCoordinator::start().await;
    // A slow answer, so that the time already spent is not zero.
    coordinator.always(Reply::status(500).delay(Duration::from_millis(10)));
    let client = QualityClient::builder(coordinator.url())
        .backoff(Forever)
        .build()
        .unwrap();
    let start = Instant::now();
    let err = client
        .check(QualityRequest::new("t", "a"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(coordinator.hits(), 1);
    assert_eq!(start.elapsed(), Duration::from_millis(10));
}

/// A credential a caller sends as a per-call header (a name that reads as
/// a secret: `authorization`, `x-session-token`, …) is scrubbed from an
/// error body that echoes it, like a configured one, through the client.
#[test]
fn no_error_text_shows_a_per_call_secret_header() {
    let (rt, coordinator, client) = one_attempt_client();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
    let strategy = (
        secret(),
        prefix(),
        0..FORMS,
        prop_oneof![Just("authorization"), Just("x-session-token")],
    );
    runner
        .run(&strategy, |(secret, prefix, form, name)| {
            let Ok(value) = http::HeaderValue::from_str(&secret) else {
                return Ok(());
            };
            let mut body = prefix.clone();
            body.extend(echoed(&secret, form));
            body.extend_from_slice(b" tail");
            coordinator.push(Reply::raw(503, "text/plain", body));
            let req =
                QualityRequest::new("t", "a").header(http::HeaderName::from_static(name), value);
            let err = rt.block_on(client.check(req)).unwrap_err();
            refute_shown(&err, &String::from_utf8_lossy(&echoed(&secret, form)))
        })
        .unwrap();
}

/// A per-call secret header whose value is not UTF-8 (any visible bytes
/// and obs-text) is a secret all the same: echoed as sent or as it decodes
/// lossily, wherever the read and the snippet cut it, no error text shows
/// it.
#[test]
fn no_error_text_shows_a_per_call_secret_header_that_is_not_utf8() {
    let (rt, coordinator, client) = one_attempt_client();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
    let byte = prop_oneof![0x21u8..0x7f, 0x80u8..=0xff];
    let strategy = (
        proptest::collection::vec(byte, 9..40),
        "[a-z ]{0,1100}",
        any::<bool>(),
    );
    runner
        .run(&strategy, |(secret, prefix, lossy)| {
            let value = http::HeaderValue::from_bytes(&secret).unwrap();
            let decoded = String::from_utf8_lossy(&secret).into_owned();
            let mut body = prefix.into_bytes();
            body.extend(if lossy {
                decoded.as_bytes()
            } else {
                &secret[..]
            });
            coordinator.push(Reply::raw(500, "text/plain", body));
            let req = QualityRequest::new("t", "a")
                .header(http::HeaderName::from_static("x-session-token"), value);
            let err = rt.block_on(client.check(req)).unwrap_err();
            refute_shown(&err, &decoded)
        })
        .unwrap();
}

/// A forward proxy's `407` body that echoes the client's proxy credentials
/// (`user:password` from the proxy URL, sent as `Proxy-Authorization:
/// Basic`): the base64 text, the `Basic` value, `user:password` or the
/// password alone, in every form, anywhere in the body: no error text
/// shows any of them.
#[test]
fn no_error_text_shows_proxy_credentials_echoed_in_a_407() {
    let rt = runtime();
    let coordinator = rt.block_on(TestCoordinator::start());
    let proxy = rt.block_on(TestProxy::start(ProxyMode::RefuseAuth));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(32));
    let strategy = (
        "[a-z]{3,8}",
        r#"[A-Za-z0-9 "\\/+=~.:;,%@é☃日_-]{9,30}"#,
        prefix(),
        0..FORMS,
        0u8..4,
    );
    runner
        .run(&strategy, |(user, password, prefix, form, which)| {
            let url = format!(
                "http://{user}:{}@127.0.0.1:{}",
                String::from_utf8(percent(password.as_bytes(), "", true)).unwrap(),
                proxy.port
            );
            let client = QualityClient::builder(coordinator.url())
                .attempts(1)
                .http(|c| c.proxy(Proxy::url(url)))
                .build()
                .unwrap();
            // What the proxy received, to echo: the first call's header.
            proxy.set_refusal_body(Vec::new());
            let err = rt
                .block_on(client.check(QualityRequest::new("t", "a")))
                .unwrap_err();
            prop_assert_eq!(err.status().map(|s| s.as_u16()), Some(407));
            let basic = proxy
                .records()
                .last()
                .unwrap()
                .authorization
                .clone()
                .unwrap();
            let user_password = format!("{user}:{password}");
            let secret = match which {
                0 => basic.clone(),
                1 => basic.trim_start_matches("Basic ").to_owned(),
                2 => user_password.clone(),
                _ => password.clone(),
            };
            let mut body = prefix.clone();
            body.extend(echoed(&secret, form));
            body.extend_from_slice(b" tail");
            proxy.set_refusal_body(body);
            let err = rt
                .block_on(client.check(QualityRequest::new("t", "a")))
                .unwrap_err();
            prop_assert_eq!(err.status().map(|s| s.as_u16()), Some(407));
            for shown in [&basic, &user_password, &password] {
                refute_shown(&err, shown)?;
            }
            refute_shown(&err, &String::from_utf8_lossy(&echoed(&secret, form)))
        })
        .unwrap();
}
