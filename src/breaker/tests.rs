//! The breaker's state machine at poll level, with paused time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt};

use super::*;

fn status(code: u16) -> Error {
    Error::http_status(StatusCode::from_u16(code).unwrap(), String::new(), None)
}

/// An inner service answering with `status(code)` for each `code` it is
/// given (200 answers Ok), counting its calls.
#[derive(Clone, Debug)]
struct Answers(Arc<AtomicUsize>);

impl Service<u16> for Answers {
    type Response = ();
    type Error = Error;
    type Future = std::future::Ready<Result<(), Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, code: u16) -> Self::Future {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::ready(if code == 200 {
            Ok(())
        } else {
            Err(status(code))
        })
    }
}

fn inner(calls: Arc<AtomicUsize>) -> Answers {
    Answers(calls)
}

fn breaker(threshold: u32) -> (CircuitBreaker<Answers>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let config = CircuitBreakerConfig {
        failure_threshold: threshold,
        cooldown: Duration::from_secs(30),
    };
    (CircuitBreaker::new(inner(calls.clone()), config), calls)
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_and_fails_fast() {
    let (mut svc, calls) = breaker(5);
    for _ in 0..4 {
        assert_eq!(
            svc.ready()
                .await
                .unwrap()
                .call(503)
                .await
                .unwrap_err()
                .status(),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
    }
    // A success resets the count.
    svc.ready().await.unwrap().call(200).await.unwrap();
    for _ in 0..4 {
        svc.ready().await.unwrap().call(500).await.unwrap_err();
    }
    assert_eq!(svc.state(), CircuitState::Closed);
    svc.ready().await.unwrap().call(500).await.unwrap_err();
    assert_eq!(svc.state(), CircuitState::Open);
    assert_eq!(calls.load(Ordering::SeqCst), 10);

    // Open: ready at once, and the call fails without reaching the inner service.
    let mut ready = task::spawn(svc.ready());
    assert_ready_ok!(ready.poll());
    drop(ready);
    let err = svc.call(200).await.unwrap_err();
    assert!(err.is_circuit_open());
    assert!(!err.is_retryable());
    assert_eq!(calls.load(Ordering::SeqCst), 10);
}

#[tokio::test(start_paused = true)]
async fn client_errors_do_not_trip_it() {
    let (mut svc, calls) = breaker(2);
    for code in [400, 404, 422, 400, 409] {
        svc.ready().await.unwrap().call(code).await.unwrap_err();
    }
    assert_eq!(svc.state(), CircuitState::Closed);
    // An invalid response counts as an answer too.
    let mut invalid = CircuitBreaker::new(
        tower::service_fn(|_: ()| async { Err::<(), _>(Error::invalid("x")) }),
        CircuitBreakerConfig {
            failure_threshold: 1,
            cooldown: Duration::from_secs(1),
        },
    );
    invalid.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(invalid.state(), CircuitState::Closed);
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn half_open_probe_closes_or_reopens() {
    let (mut svc, calls) = breaker(1);
    svc.ready().await.unwrap().call(503).await.unwrap_err();
    assert_eq!(svc.state(), CircuitState::Open);

    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(svc
        .ready()
        .await
        .unwrap()
        .call(200)
        .await
        .unwrap_err()
        .is_circuit_open());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(svc.state(), CircuitState::HalfOpen);

    // A failed probe opens it for another cooldown.
    svc.ready().await.unwrap().call(502).await.unwrap_err();
    assert_eq!(svc.state(), CircuitState::Open);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    tokio::time::advance(Duration::from_secs(30)).await;

    // A successful probe closes it.
    svc.ready().await.unwrap().call(200).await.unwrap();
    assert_eq!(svc.state(), CircuitState::Closed);
    svc.ready().await.unwrap().call(200).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn exactly_one_probe_under_concurrency() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let (tx, rx) = tokio::sync::watch::channel(false);
    // The inner service fails until released, then answers after the release.
    let slow = tower::service_fn(move |_: ()| {
        counter.fetch_add(1, Ordering::SeqCst);
        let mut rx = rx.clone();
        async move {
            if *rx.borrow() {
                return Ok(());
            }
            rx.changed().await.ok();
            Ok::<_, Error>(())
        }
    });
    let layer = CircuitBreakerLayer::new(CircuitBreakerConfig {
        failure_threshold: 1,
        cooldown: Duration::from_secs(5),
    });
    let failing = tower::service_fn(|_: ()| async { Err::<(), _>(status(503)) });
    // Trip the shared state through a failing service made by the same layer.
    let mut tripper = layer.layer(failing);
    tripper.ready().await.unwrap().call(()).await.unwrap_err();
    let svc = layer.layer(slow);
    assert_eq!(svc.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(5)).await;

    // 50 concurrent calls from clones: one probe goes through, 49 fail fast.
    let mut futures: Vec<_> = (0..50)
        .map(|_| {
            let mut clone = svc.clone();
            task::spawn(async move { clone.ready().await?.call(()).await })
        })
        .collect();
    let mut refused = 0;
    futures.retain_mut(|f| match f.poll() {
        std::task::Poll::Ready(result) => {
            assert!(result.unwrap_err().is_circuit_open());
            refused += 1;
            false
        }
        std::task::Poll::Pending => true,
    });
    assert_eq!(refused, 49);
    assert_eq!(futures.len(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(svc.state(), CircuitState::HalfOpen);

    tx.send(true).unwrap();
    assert!(futures[0].is_woken());
    assert_ready_ok!(futures[0].poll());
    assert_eq!(svc.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_lets_the_next_call_probe() {
    let layer = CircuitBreakerLayer::new(CircuitBreakerConfig {
        failure_threshold: 1,
        cooldown: Duration::from_secs(1),
    });
    let mut failing = layer.layer(tower::service_fn(|_: ()| async {
        Err::<(), _>(status(500))
    }));
    failing.ready().await.unwrap().call(()).await.unwrap_err();
    tokio::time::advance(Duration::from_secs(1)).await;

    let mut hanging = layer.layer(tower::service_fn(|_: ()| {
        std::future::pending::<Result<(), Error>>()
    }));
    let mut probe = task::spawn(hanging.ready().await.unwrap().call(()));
    assert_pending!(probe.poll());
    assert_eq!(hanging.state(), CircuitState::HalfOpen);
    // While the probe is out, others are refused.
    let mut other = layer.layer(tower::service_fn(|_: ()| async { Ok::<(), Error>(()) }));
    assert!(other
        .ready()
        .await
        .unwrap()
        .call(())
        .await
        .unwrap_err()
        .is_circuit_open());
    drop(probe);
    // The dropped probe decided nothing; the next call is the probe and closes it.
    other.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(other.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_drives_the_inner_service_when_closed() {
    let sem = Arc::new(tokio::sync::Semaphore::new(1));
    let limited = tower::limit::ConcurrencyLimit::with_semaphore(
        tower::service_fn(|_: ()| async { Ok::<(), Error>(()) }),
        sem.clone(),
    );
    let mut svc = CircuitBreaker::new(limited, CircuitBreakerConfig::default());
    let held = sem.clone().acquire_owned().await.unwrap();
    let mut ready = task::spawn(svc.ready());
    assert_pending!(ready.poll());
    drop(held);
    assert!(ready.is_woken());
    assert_ready!(ready.poll()).unwrap();
    drop(ready);
    svc.call(()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_ejected_replica_is_not_ready_until_the_cooldown_ends() {
    let calls = Arc::new(AtomicUsize::new(0));
    let config = CircuitBreakerConfig {
        failure_threshold: 2,
        cooldown: Duration::from_secs(10),
    };
    let mut svc = CircuitBreaker::ejecting(inner(calls.clone()), config, "replica-1");
    // Made ready while closed; two failures elsewhere open it before the
    // call. The call still goes through: the balancer already chose it.
    let mut other = svc.clone();
    svc.ready().await.unwrap();
    for _ in 0..2 {
        other.ready().await.unwrap().call(503).await.unwrap_err();
    }
    assert_eq!(svc.state(), CircuitState::Open);
    svc.call(200).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Open: not ready, so a balancer sends calls elsewhere.
    let mut ready = task::spawn(svc.ready());
    assert_pending!(ready.poll());
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_pending!(ready.poll());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(ready.is_woken());
    assert!(matches!(ready.poll(), std::task::Poll::Ready(Ok(_))));
    drop(ready);
    // The first call after the cooldown is the probe.
    svc.call(200).await.unwrap();
    assert_eq!(svc.state(), CircuitState::Closed);
}
