use std::time::Duration;

use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok, task};
use tower::Service;

use super::*;
use crate::error::ErrorKind;

/// A service whose call takes the duration it is given, or fails with the
/// status it is given.
fn sleeper() -> impl Service<
    Result<Duration, u16>,
    Response = Duration,
    Error = Error,
    Future = impl Future<Output = Result<Duration, Error>>,
> + Clone {
    tower::service_fn(|req: Result<Duration, u16>| async move {
        match req {
            Ok(d) => {
                tokio::time::sleep(d).await;
                Ok(d)
            }
            Err(status) => Err(Error::http_status(
                http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY),
                String::new(),
                None,
            )),
        }
    })
}

use std::future::Future;

const T: Duration = Duration::from_millis(10);

fn config() -> AdaptiveLimitConfig {
    AdaptiveLimitConfig::default().probe_samples(2)
}

/// Runs the first probe to its end: the limit is then the initial one.
async fn probed<S>(svc: &mut AdaptiveLimit<S>)
where
    S: Service<Result<Duration, u16>, Response = Duration, Error = Error>,
{
    for _ in 0..2 {
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        svc.call(Ok(T)).await.unwrap();
    }
    assert_eq!(svc.limit(), 20);
}

#[tokio::test(start_paused = true)]
async fn pending_at_the_limit_and_woken_when_a_call_ends() {
    let first = AdaptiveLimit::new(sleeper(), config());
    assert_eq!(first.limit(), 3);
    let mut services: Vec<_> = (0..4).map(|_| first.clone()).collect();
    let mut calls = Vec::new();
    for svc in services.iter_mut().take(3) {
        let mut ready = task::spawn(std::future::poll_fn(|cx| svc.poll_ready(cx)));
        assert_ready_ok!(ready.poll());
        drop(ready);
        calls.push(task::spawn(svc.call(Ok(T))));
    }
    assert_eq!(first.handle().in_flight(), 3);

    let last = &mut services[3];
    let mut ready = task::spawn(std::future::poll_fn(|cx| last.poll_ready(cx)));
    assert_pending!(ready.poll());
    assert_pending!(calls[0].poll());
    tokio::time::advance(T).await;
    assert_eq!(assert_ready_ok!(calls[0].poll()), T);
    assert!(ready.is_woken());
    assert_ready_ok!(ready.poll());
    assert_eq!(first.handle().in_flight(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_gives_its_permit_back() {
    let mut svc = AdaptiveLimit::new(sleeper(), config().probe_concurrency(1));
    let mut other = svc.clone();
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let call = svc.call(Ok(T));
    let mut ready = task::spawn(std::future::poll_fn(|cx| other.poll_ready(cx)));
    assert_pending!(ready.poll());
    drop(call);
    assert!(ready.is_woken());
    assert_ready_ok!(ready.poll());
    assert_eq!(svc.handle().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_call_without_a_permit_fails_as_not_ready() {
    let mut svc = AdaptiveLimit::new(sleeper(), config());
    let err = svc.call(Ok(T)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotReady);

    // A clone of a ready service has no permit of its own.
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let mut clone = svc.clone();
    let mut call = task::spawn(clone.call(Ok(T)));
    let err = assert_ready_err!(call.poll());
    assert_eq!(err.kind(), ErrorKind::NotReady);
    assert_eq!(svc.call(Ok(T)).await.unwrap(), T);
}

#[tokio::test(start_paused = true)]
async fn overload_answers_lower_the_limit_and_other_errors_do_not() {
    let layer = AdaptiveLimitLayer::new(config());
    let handle = layer.handle();
    let mut svc = tower::Layer::layer(&layer, sleeper());
    probed(&mut svc).await;

    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let err = svc.call(Err(400)).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
    assert_eq!(handle.limit(), 20);

    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    svc.call(Err(503)).await.unwrap_err();
    assert_eq!(handle.limit(), 18);
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    svc.call(Err(429)).await.unwrap_err();
    assert_eq!(handle.limit(), 16);
    assert_eq!(handle.baseline(), Some(T));
}

#[tokio::test(start_paused = true)]
async fn a_lower_limit_takes_back_permits_as_calls_end() {
    let mut svc = AdaptiveLimit::new(sleeper(), config().initial_limit(4));
    probed_to(&mut svc, 4).await;
    let mut services: Vec<_> = (0..5).map(|_| svc.clone()).collect();
    let mut calls = Vec::new();
    for s in services.iter_mut().take(3) {
        std::future::poll_fn(|cx| s.poll_ready(cx)).await.unwrap();
        let mut call = task::spawn(s.call(Ok(T)));
        assert_pending!(call.poll());
        calls.push(call);
    }
    // The fourth permit's call answers 503 at once: 4 × 0.9 = 3.6 → 3, and
    // its permit is taken back instead of freed.
    let s = &mut services[3];
    std::future::poll_fn(|cx| s.poll_ready(cx)).await.unwrap();
    s.call(Err(503)).await.unwrap_err();
    assert_eq!(svc.limit(), 3);

    let last = &mut services[4];
    let mut ready = task::spawn(std::future::poll_fn(|cx| last.poll_ready(cx)));
    assert_pending!(ready.poll());
    tokio::time::advance(T).await;
    for call in &mut calls {
        assert_ready_ok!(call.poll());
    }
    assert!(ready.is_woken());
    assert_ready_ok!(ready.poll());
    assert_eq!(svc.handle().in_flight(), 0);
}

async fn probed_to<S>(svc: &mut AdaptiveLimit<S>, limit: usize)
where
    S: Service<Result<Duration, u16>, Response = Duration, Error = Error>,
{
    for _ in 0..2 {
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        svc.call(Ok(T)).await.unwrap();
    }
    assert_eq!(svc.limit(), limit);
}
