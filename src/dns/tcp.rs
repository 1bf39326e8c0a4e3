//! DNS over TCP (RFC 7766), held as Knot DNS and NSD hold it against hostile clients.
//!
//! Length-prefixed messages, pipelined queries answered in order. Every read and write has a
//! bound: the idle timeout between messages, and the I/O timeout (Knot's `tcp-io-timeout`) for
//! the rest of a message once its length has arrived and for each answer's write, so a client
//! that sends queries and never reads loses its connection instead of holding it. Slots are
//! capped per client prefix and in total; when a cap is reached the connection idle the longest
//! is closed for the newcomer. Shutdown closes every connection at once, stalled or not.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::xfr::{self, TransferPolicy};
use super::{handle_parsed, is_transfer, Edge, Origin, Stats, Transport, Worker};
use crate::limits::{Caps, Slot, Slots};
use crate::query::wire;
use crate::state::Store;

/// Rotation counter shared by TCP connections (UDP workers keep their own).
static ROTATION: AtomicUsize = AtomicUsize::new(0);

/// TCP settings.
#[derive(Debug, Clone)]
pub struct TcpOptions {
    /// Close a connection that sends nothing for this long.
    pub idle_timeout: Duration,
    /// Close a connection that takes longer than this to deliver the rest of a message, or to
    /// take an answer.
    pub io_timeout: Duration,
    /// Connection caps.
    pub caps: Caps,
    /// The counter shard its connections count into.
    pub shard: usize,
}

/// What DNS over TCP serves from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The serving snapshot.
    pub store: Store,
    /// The query counters (DNS over TCP has its own shard).
    pub stats: Arc<Stats>,
    /// Who may transfer which zone.
    pub transfers: Arc<ArcSwap<TransferPolicy>>,
    /// Cookies (TCP is never rate limited).
    pub edge: Arc<ArcSwap<Edge>>,
}

/// Accepts connections on `listener` until `token` is cancelled; then every connection closes
/// at once (a stalled reader included), and this returns when they have.
pub async fn serve(
    listener: TcpListener,
    sources: Sources,
    opts: TcpOptions,
    token: CancellationToken,
) {
    let slots = Slots::new(opts.caps);
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = token.cancelled() => break,
        };
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(%error, "dns tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = crate::addr::canonical_socket(peer);
        let Some(slot) = slots.admit(peer.ip()) else {
            debug!(%peer, "dns tcp connection limit reached (every connection busy); closing");
            sources
                .stats
                .shard(opts.shard)
                .tcp_refused
                .fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (sources, token, opts) = (sources.clone(), token.clone(), opts.clone());
        conns.spawn(async move {
            let stop = slot.evicted.clone();
            let ended = tokio::select! {
                r = connection(stream, peer, &sources, &opts, &slot) => r,
                () = token.cancelled() => Ok(()),
                () = stop.cancelled() => {
                    debug!(%peer, "dns tcp connection evicted for a newcomer");
                    Ok(())
                }
            };
            if let Err(error) = ended {
                debug!(%peer, %error, "dns tcp connection ended");
            }
        });
    }
    while conns.join_next().await.is_some() {}
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    sources: &Sources,
    opts: &TcpOptions,
    slot: &Slot,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut msg = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    let stats = sources.stats.shard(opts.shard);
    let mut worker = Worker::new(stats);
    // A new connection is not evictable until it has been answered once: it waits for its first
    // message only `io_timeout`, then, between messages, is idle (evictable) for `idle_timeout`.
    let mut wait = opts.io_timeout;
    loop {
        let len = match timeout(wait, r.read_u16()).await {
            Ok(Ok(l)) => usize::from(l),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()), // idle
        };
        slot.busy();
        let Some(body) = msg.get_mut(..len) else {
            return Ok(());
        };
        match timeout(opts.io_timeout, r.read_exact(body)).await {
            Ok(res) => res?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "slow message")),
        };
        let parsed = wire::parse(body);
        if is_transfer(&parsed) {
            let request = body.to_vec();
            for m in transfer(sources, request, peer).await {
                write_message(&mut w, &m, opts.io_timeout).await?;
            }
            slot.idle(crate::addr::mono_nanos());
            wait = opts.idle_timeout;
            continue;
        }
        let answered = {
            let snap = sources.store.load();
            let edge = sources.edge.load();
            let origin = Origin {
                ip: peer.ip(),
                transport: Transport::Tcp,
                unix: crate::addr::unix_seconds(),
                mono: crate::addr::mono_nanos(),
            };
            worker.rotation = ROTATION.fetch_add(1, Ordering::Relaxed);
            handle_parsed(&snap, &edge, &origin, parsed, &mut worker, &mut out)
        };
        if !answered {
            debug!(%peer, "dns tcp message dropped; closing");
            return Ok(());
        }
        write_message(&mut w, &out, opts.io_timeout).await?;
        slot.idle(crate::addr::mono_nanos());
        wait = opts.idle_timeout;
    }
}

/// A zone transfer's messages, built off the async threads (a large zone takes milliseconds).
async fn transfer(sources: &Sources, request: Vec<u8>, peer: SocketAddr) -> Vec<Vec<u8>> {
    let zones = sources.store.load().static_zones.clone();
    let policy = sources.transfers.load_full();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    tokio::task::spawn_blocking(move || xfr::answer(&zones, &policy, &request, peer.ip(), now))
        .await
        .unwrap_or_default()
}

/// Writes one length-prefixed message; a client that does not take it within `limit` has its
/// connection closed (the write is abandoned with the connection).
async fn write_message(
    w: &mut (impl AsyncWrite + Unpin),
    m: &[u8],
    limit: Duration,
) -> io::Result<()> {
    let Ok(len) = u16::try_from(m.len()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message too long",
        ));
    };
    let mut framed = Vec::with_capacity(m.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(m);
    match timeout(limit, w.write_all(&framed)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client does not read",
        )),
    }
}
