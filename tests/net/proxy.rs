//! An HTTP proxy: forward proxy and `CONNECT` tunnels.

use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;

/// How a [`TestProxy`] behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards requests and opens tunnels.
    Serve,
    /// Answers `407 Proxy Authentication Required` to everything, with the
    /// body set by [`TestProxy::set_refusal_body`] (empty by default).
    RefuseAuth,
    /// Reads the request head and never answers.
    Silent,
}

/// What a [`TestProxy`] received on one connection.
#[derive(Clone, Debug, Default)]
pub struct ProxyRecord {
    /// The first request line: `CONNECT host:port HTTP/1.1`, or a forward
    /// proxy's `POST http://host:port/path HTTP/1.1`.
    pub request_line: String,
    /// The `Proxy-Authorization` header, if any.
    pub authorization: Option<String>,
}

/// An HTTP proxy on 127.0.0.1 written for the tests: a forward proxy for
/// absolute-form requests and a `CONNECT` tunnel, recording what it got.
pub struct TestProxy {
    pub port: u16,
    records: Arc<Mutex<Vec<ProxyRecord>>>,
    refusal: Arc<Mutex<Vec<u8>>>,
}

impl TestProxy {
    pub async fn start(mode: ProxyMode) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let records = Arc::new(Mutex::new(Vec::new()));
        let refusal = Arc::new(Mutex::new(Vec::new()));
        let (seen, body) = (records.clone(), refusal.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(proxy_connection(client, mode, seen.clone(), body.clone()));
            }
        });
        TestProxy {
            port,
            records,
            refusal,
        }
    }

    /// The body of each `407` answer from now on ([`ProxyMode::RefuseAuth`]).
    pub fn set_refusal_body(&self, body: Vec<u8>) {
        *self.refusal.lock().unwrap() = body;
    }

    /// `http://{credentials@}127.0.0.1:{port}`.
    pub fn url(&self, credentials: Option<&str>) -> String {
        match credentials {
            Some(c) => format!("http://{c}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// What each connection received, in order of arrival.
    pub fn records(&self) -> Vec<ProxyRecord> {
        self.records.lock().unwrap().clone()
    }
}

async fn proxy_connection(
    mut client: tokio::net::TcpStream,
    mode: ProxyMode,
    records: Arc<Mutex<Vec<ProxyRecord>>>,
    refusal: Arc<Mutex<Vec<u8>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.trim().to_owned());
    records.lock().unwrap().push(ProxyRecord {
        request_line: request_line.clone(),
        authorization,
    });
    match mode {
        ProxyMode::Serve => {}
        ProxyMode::RefuseAuth => {
            // The request's body first: closing on unread bytes would reset
            // the connection under the answer.
            let length = text
                .split("\r\n")
                .filter_map(|l| l.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let mut unread = vec![0u8; length];
            if client.read_exact(&mut unread).await.is_err() {
                return;
            }
            let body = refusal.lock().unwrap().clone();
            let mut answer = format!(
                "HTTP/1.1 407 Proxy Authentication Required\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            answer.extend(body);
            let _ = client.write_all(&answer).await;
            return;
        }
        ProxyMode::Silent => {
            std::future::pending::<()>().await;
        }
    }
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let Some(authority) = (if method == "CONNECT" {
        Some(target.to_owned())
    } else {
        target
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.to_string()))
    }) else {
        return;
    };
    // Every host is 127.0.0.1 here: tests name coordinators `coordinator.test`
    // to show that only the proxy resolves them.
    let Some(port) = authority
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
    else {
        return;
    };
    let Ok(mut upstream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    if method == "CONNECT" {
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    } else if upstream.write_all(&head).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
