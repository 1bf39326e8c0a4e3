//! One HTTP/1.1 request to a mailns admin listener, plain or over TLS: what `mailns ctl` and
//! the cluster poller send. One connection per request: both ask rarely, and a fresh
//! connection never finds a peer's half-closed keep-alive socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// Answers larger than this are refused (a status document of a big farm is well under).
const MAX_BODY: usize = 8 << 20;

/// TLS to the listener: the client config, and the name its certificate must carry.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Roots (or no verification, for `mailns ctl` on its own host).
    pub config: Arc<rustls::ClientConfig>,
    /// The server name to verify (and send as SNI where it is a name).
    pub name: ServerName<'static>,
}

/// What one request is.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// GET, POST.
    pub method: &'a Method,
    /// The path, `/api/v1/status`.
    pub path: &'a str,
    /// The Host header.
    pub host: &'a str,
    /// The bearer token.
    pub token: Option<&'a str>,
    /// The request body.
    pub body: Option<&'a str>,
    /// For connecting, and again for the whole answer.
    pub timeout: Duration,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connect failed.
    #[error("{0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed (certificate not trusted, or not TLS).
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    /// HTTP went wrong, or the answer was too big.
    #[error("{0}")]
    Http(String),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Sends `call` to `addr` and reads the whole answer.
///
/// # Errors
/// See [`ClientError`].
pub async fn request(
    addr: SocketAddr,
    tls: Option<&Tls>,
    call: Call<'_>,
) -> Result<(StatusCode, Bytes), ClientError> {
    let limit = call.timeout;
    let tcp = tokio::time::timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| ClientError::Timeout(limit))?
        .map_err(ClientError::Connect)?;
    match tls {
        None => exchange(tcp, call).await,
        Some(t) => {
            let connector = tokio_rustls::TlsConnector::from(t.config.clone());
            let stream = tokio::time::timeout(limit, connector.connect(t.name.clone(), tcp))
                .await
                .map_err(|_| ClientError::Timeout(limit))?
                .map_err(ClientError::Tls)?;
            exchange(stream, call).await
        }
    }
}

async fn exchange<IO>(io: IO, call: Call<'_>) -> Result<(StatusCode, Bytes), ClientError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| ClientError::Http(e.to_string());
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(call.method)
        .uri(call.path)
        .header(hyper::header::HOST, call.host);
    if let Some(t) = call.token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(
            call.body.unwrap_or_default().to_string(),
        )))
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let answer = tokio::time::timeout(call.timeout, async {
        let resp = send.send_request(req).await.map_err(http)?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        Ok((status, body.to_bytes()))
    })
    .await
    .map_err(|_| ClientError::Timeout(call.timeout))?;
    driver.abort();
    answer
}
