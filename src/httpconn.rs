//! One HTTP/1 connection as every mailns HTTP listener (admin, port 80) serves it: a slot from
//! the listener's [`Slots`] (a cap per client and in total, the longest idle connection evicted
//! for a newcomer), a bound on reading the request head, and read and write timeouts on the
//! socket, so a client that stops reading or sends nothing cannot hold its slot.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::limits::{Slot, Slots};

/// How an HTTP listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request's head.
    pub header_timeout: Duration,
    /// Time a read may wait: between keep-alive requests, and for a body.
    pub read_timeout: Duration,
    /// Time a write may wait on a client that does not read.
    pub write_timeout: Duration,
    /// Serve more than one request per connection.
    pub keep_alive: bool,
}

/// Where a listener gets its TLS config for each new connection (None: plain HTTP). Asked per
/// connection, so a reload's renewed certificate serves the next connection.
pub type TlsSource = Arc<dyn Fn() -> Option<Arc<rustls::ServerConfig>> + Send + Sync>;

/// Accepts on `listener` until `token` is cancelled; each connection holds a slot of `slots`
/// and is served by `handler`, which gets the request, the client address and the slot (so it
/// can mark itself busy while it answers). With `tls`, connections speak HTTPS; the handshake
/// must finish within the header timeout.
pub async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    slots: Arc<Slots>,
    limits: Limits,
    handler: H,
    tls: Option<TlsSource>,
    token: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(error) => {
                    warn!(%error, listener = name, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = token.cancelled() => return,
        };
        let peer = crate::addr::canonical_socket(peer);
        let Some(slot) = slots.admit(peer.ip()) else {
            debug!(%peer, listener = name, "connection limit reached (every connection busy); closing");
            continue;
        };
        let (handler, token) = (handler.clone(), token.clone());
        let tls = tls.as_ref().and_then(|t| t());
        tokio::spawn(async move {
            let slot = Arc::new(slot);
            let evicted = slot.evicted.clone();
            tokio::select! {
                r = connection(stream, peer, limits, handler, slot, tls) => {
                    if let Err(error) = r {
                        debug!(%peer, %error, listener = name, "connection ended");
                    }
                }
                () = evicted.cancelled() => debug!(%peer, listener = name, "idle connection evicted for a newcomer"),
                () = token.cancelled() => {}
            }
        });
    }
}

async fn connection<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    handler: H,
    slot: Arc<Slot>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<(), ConnError>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let mut timed = TimeoutStream::new(stream);
    timed.set_read_timeout(Some(limits.read_timeout));
    timed.set_write_timeout(Some(limits.write_timeout));
    slot.idle(crate::addr::mono_nanos());
    let timed = Box::pin(timed);
    let Some(cfg) = tls else {
        return Ok(serve_io(timed, peer, limits, handler, slot).await?);
    };
    let accept = tokio_rustls::TlsAcceptor::from(cfg).accept(timed);
    let tls = tokio::time::timeout(limits.header_timeout, accept)
        .await
        .map_err(|_| ConnError::Handshake(std::io::ErrorKind::TimedOut.into()))?
        .map_err(ConnError::Handshake)?;
    Ok(serve_io(tls, peer, limits, handler, slot).await?)
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    /// The TLS handshake failed or took too long.
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    /// HTTP.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// Serves HTTP/1 on `io` (plain or TLS).
async fn serve_io<IO, H, F>(
    io: IO,
    peer: SocketAddr,
    limits: Limits,
    handler: H,
    slot: Arc<Slot>,
) -> Result<(), hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let (handler, slot) = (handler.clone(), slot.clone());
        async move {
            slot.busy();
            let resp = handler(req, peer).await;
            slot.idle(crate::addr::mono_nanos());
            Ok::<_, Infallible>(resp)
        }
    });
    hyper::server::conn::http1::Builder::new()
        .keep_alive(limits.keep_alive)
        .max_buf_size(64 * 1024)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .await
}
