//! The coordinator's server: the accept loop, one task per connection, and
//! the handler that plays a scripted [`Reply`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::body::{Cut, FaultBody};
use super::conn::Conn;
use super::reply::{Abort, Reply};
use super::state::{InFlight, Recorded, Shared};
use super::sync::lock;
use crate::check::config::{CHECK_PATH, HEALTH_PATH};

/// A running server: its accept loop and the signal that stops it.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) task: JoinHandle<()>,
    pub(crate) stop: Arc<Notify>,
}

impl Server {
    pub(crate) async fn start(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(serve(listener, shared, stop.clone()));
        Ok(Server { addr, task, stop })
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: Arc<Notify>) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.notified() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let id = shared.connections.fetch_add(1, Ordering::SeqCst);
                let Ok((stream, conn)) = Conn::accept(id, stream) else { continue };
                let conn = Arc::new(conn);
                lock(&shared.open).insert(id, conn.clone());
                tasks.spawn(connection(stream, conn, shared.clone()));
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Refuse new connections first, then close the open ones, as a crashed
    // process would, and wait until their tasks are gone.
    drop(listener);
    shared.close_where(|_| true);
    while tasks.join_next().await.is_some() {}
}

/// Serves one connection until the client closes it or a fault drops it.
async fn connection(stream: tokio::net::TcpStream, conn: Arc<Conn>, shared: Arc<Shared>) {
    let _open = Registered {
        shared: shared.clone(),
        conn: conn.clone(),
    };
    let service = service_fn({
        let conn = conn.clone();
        move |req| handle(req, shared.clone(), conn.clone())
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let serving = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = serving => {}
        _ = conn.dropped() => {}
    }
}

/// Removes a connection from the registry when its task ends or is aborted.
struct Registered {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.conn.release();
        lock(&self.shared.open).remove(&self.conn.id);
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    conn: Arc<Conn>,
) -> Result<Response<FaultBody>, Cut> {
    let guard = InFlight::enter(shared.clone(), conn.clone());
    let arrived = Instant::now();

    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let is_check = parts.method == Method::POST && parts.uri.path().ends_with(CHECK_PATH);
    let recorded = Recorded {
        method: parts.method,
        path,
        headers: parts.headers,
        request: serde_json::from_slice(&body).ok(),
        body,
        at: Instant::now(),
        connection: conn.id,
    };
    let reply = if is_check {
        shared.hits.fetch_add(1, Ordering::SeqCst);
        let scripted = lock(&shared.script).pop_front();
        scripted.unwrap_or_else(|| {
            let rule = lock(&shared.rule).clone();
            rule(&recorded)
        })
    } else if recorded.method == Method::GET && recorded.path.ends_with(HEALTH_PATH) {
        lock(&shared.health).clone()
    } else {
        Reply::raw(404, "text/plain", "not found")
    };
    if shared.recording.load(Ordering::SeqCst) {
        lock(&shared.recorded).push(recorded);
    }

    let (mut reply, mut served) = (reply, is_check);
    if is_check {
        let capacity = lock(&shared.capacity).clone();
        if let Some(capacity) = capacity {
            match capacity.admit() {
                Ok(held) => capacity.serve(held).await,
                Err(shed) => (reply, served) = (shed, false),
            }
        }
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if served && shared.recording.load(Ordering::SeqCst) {
        lock(&shared.latencies).push(arrived.elapsed());
    }
    match reply.abort {
        Some(Abort::Close) => {
            conn.close();
            return Err(Cut);
        }
        Some(Abort::Reset) => {
            conn.reset();
            // The connection's task drops this future with the connection.
            std::future::pending::<()>().await;
        }
        None => {}
    }
    let mut response = Response::new(FaultBody::new(reply.body.clone(), guard));
    *response.status_mut() = reply.status;
    for (name, value) in &reply.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    Ok(response)
}
