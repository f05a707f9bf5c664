//! One accepted connection, as the coordinator sees it: a second handle on
//! its socket, so a scripted fault can close or reset it from outside hyper.

use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;

use super::sync::lock;

/// A connection being served; shared by its task, its requests and the
/// coordinator's registry of open connections.
pub(crate) struct Conn {
    pub(crate) id: u64,
    /// A duplicate of the served socket's descriptor: shutting it down sends
    /// a FIN at once, and the socket only closes when both handles are gone.
    socket: Mutex<Option<std::net::TcpStream>>,
    /// Requests on this connection whose response is not finished.
    busy: AtomicUsize,
    /// Tells the connection's task to drop the connection now.
    drop_now: Notify,
}

impl Conn {
    /// Wraps an accepted stream; returns the stream to serve and its `Conn`.
    pub(crate) fn accept(id: u64, stream: TcpStream) -> std::io::Result<(TcpStream, Conn)> {
        let stream = stream.into_std()?;
        let dup = stream.try_clone()?;
        let conn = Conn {
            id,
            socket: Mutex::new(Some(dup)),
            busy: AtomicUsize::new(0),
            drop_now: Notify::new(),
        };
        Ok((TcpStream::from_std(stream)?, conn))
    }

    /// Closes cleanly: a FIN now, then the task drops the connection.
    pub(crate) fn close(&self) {
        if let Some(socket) = lock(&self.socket).as_ref() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        self.drop_now.notify_one();
    }

    /// Resets: with a zero linger, closing the socket sends a RST instead of
    /// a FIN, and discards whatever is still unsent.
    pub(crate) fn reset(&self) {
        if let Some(socket) = lock(&self.socket).take() {
            let socket = TcpSocket::from_std_stream(socket);
            // `set_zero_linger` needs tokio 1.50; a zero linger never blocks,
            // which is what the deprecation of `set_linger` is about.
            #[allow(deprecated)]
            let _ = socket.set_linger(Some(Duration::ZERO));
            // Dropping this handle leaves the served one as the last: the RST
            // goes out when the task drops it.
        }
        self.drop_now.notify_one();
    }

    /// Resolves when [`close`](Self::close) or [`reset`](Self::reset) asks
    /// the task to drop the connection.
    pub(crate) async fn dropped(&self) {
        self.drop_now.notified().await;
    }

    /// Forgets the duplicate handle once the task is done with the connection.
    pub(crate) fn release(&self) {
        lock(&self.socket).take();
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.busy.load(Ordering::SeqCst) == 0
    }

    pub(crate) fn enter(&self) {
        self.busy.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn leave(&self) {
        self.busy.fetch_sub(1, Ordering::SeqCst);
    }
}
