//! A lean HTTP/1.1 reader for the scenarios that count GETs (`reads`, `raw_edge_http`): one
//! kept-alive connection per reader and its request built once, so the load generator's own
//! CPU per request stays small beside what it measures. The REST client (`Api`) parses the URL
//! and passes each request through its pool, redirect and retry layers, which took about half
//! of the load generator's CPU per read; both scenarios use this reader, so their ratio stays
//! fair.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, HOST, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long a request may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One request to send again and again.
#[derive(Clone)]
pub struct Get {
    /// `host:port` to connect to.
    addr: String,
    host: HeaderValue,
    path: Uri,
    authorization: Option<HeaderValue>,
}

impl Get {
    /// `GET path` at `base` (`http://host:port`), with `token` as its bearer when given.
    pub fn new(base: &str, path: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let addr = base
            .strip_prefix("http://")
            .with_context(|| format!("{base} is not an http:// URL"))?
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            host: HeaderValue::from_str(&addr)?,
            addr,
            path: path.parse()?,
            authorization: token
                .map(|token| HeaderValue::from_str(&format!("Bearer {token}")))
                .transpose()?,
        })
    }

    fn request(&self) -> anyhow::Result<Request<Empty<Bytes>>> {
        let mut request = Request::get(self.path.clone()).header(HOST, self.host.clone());
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        Ok(request.body(Empty::new())?)
    }
}

/// A reader: one connection, opened on first use and again after it failed.
pub struct Reader {
    get: Get,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Reader {
    pub fn new(get: Get) -> Self {
        Self { get, sender: None }
    }

    /// Sends the request and reads the whole answer; its status. A request unanswered after
    /// `TIMEOUT` fails, and its connection is dropped.
    pub async fn send(&mut self) -> anyhow::Result<StatusCode> {
        match tokio::time::timeout(TIMEOUT, self.exchange()).await {
            Ok(answer) => answer,
            Err(_) => {
                self.sender = None;
                anyhow::bail!("GET {} unanswered after {TIMEOUT:?}", self.get.path)
            }
        }
    }

    async fn exchange(&mut self) -> anyhow::Result<StatusCode> {
        let sender = match &mut self.sender {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.sender.insert(connect(&self.get.addr).await?),
        };
        sender.ready().await.context("connection lost")?;
        let answer = sender.send_request(self.get.request()?).await;
        let response = match answer {
            Ok(response) => response,
            Err(err) => {
                self.sender = None;
                return Err(err).with_context(|| format!("GET {}", self.get.path));
            }
        };
        let status = response.status();
        response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the answer of GET {}", self.get.path))?;
        Ok(status)
    }
}

async fn connect(addr: &str) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        // Ends when the reader drops its sender or the edge closes the connection; the next
        // request then reconnects.
        let _ = connection.await;
    });
    Ok(sender)
}
