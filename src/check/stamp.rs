//! Knowing whether an attempt went out on a pooled connection: each
//! connection carries the instant it was opened, which a failed attempt
//! compares with its own start.
//!
//! Instants are tickets from one process-wide counter rather than clock
//! readings, so "opened before" is exact even when two events share a clock
//! tick (or tokio's clock is paused).
//!
//! hyper-util resends a request by itself only if it was never written.
//! When a coordinator closes an idle keep-alive connection just as the pool
//! hands it out, the request is written into a dead socket and fails before
//! any response, though it never reached the coordinator. Telling that
//! apart from a coordinator that hung up on a fresh connection lets the
//! retry policy resend it at once, without counting it as an attempt.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tower::Service;

static TICKETS: AtomicU64 = AtomicU64::new(0);

/// The next ticket: a point in the order of connection opens and attempt
/// starts.
pub(crate) fn ticket() -> u64 {
    TICKETS.fetch_add(1, Ordering::Relaxed)
}

/// When a connection was opened, as a ticket, in its `Connected` extras.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Opened(u64);

/// Wraps a connector so its connections carry [`Opened`].
#[derive(Clone, Debug)]
pub(crate) struct Stamping<C>(pub(crate) C);

/// A connection that knows when it was opened.
#[derive(Debug)]
pub(crate) struct Stamped<T> {
    io: T,
    opened: u64,
}

/// The connect future of [`Stamping`].
#[derive(Debug)]
pub(crate) struct Connecting<F>(F);

impl<C> Service<Uri> for Stamping<C>
where
    C: Service<Uri>,
    C::Future: Unpin,
{
    type Response = Stamped<C::Response>;
    type Error = C::Error;
    type Future = Connecting<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        Connecting(self.0.call(dst))
    }
}

impl<F, T, E> Future for Connecting<F>
where
    F: Future<Output = Result<T, E>> + Unpin,
{
    type Output = Result<Stamped<T>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_ok(|io| Stamped {
            io,
            opened: ticket(),
        })
    }
}

impl<T: Connection> Connection for Stamped<T> {
    fn connected(&self) -> Connected {
        self.io.connected().extra(Opened(self.opened))
    }
}

impl<T: Read + Unpin> Read for Stamped<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Stamped<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// Whether a request that failed before any response went out on a
/// connection opened before the attempt started, and failed the way a
/// connection the coordinator had already closed fails: the stream ended
/// before the response head (hyper's incomplete message).
///
/// A reset is not counted: a coordinator that read the request and reset
/// the connection looks the same, and that request did reach it.
pub(crate) fn lost_on_pooled_connection(
    err: &hyper_util::client::legacy::Error,
    attempt_started: u64,
) -> bool {
    let Some(connected) = err.connect_info() else {
        return false;
    };
    let mut extras = http::Extensions::new();
    connected.get_extras(&mut extras);
    let reused = extras
        .get::<Opened>()
        .is_some_and(|Opened(opened)| *opened < attempt_started);
    reused && ended_before_response(err)
}

fn ended_before_response(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        source = e.source();
    }
    false
}
