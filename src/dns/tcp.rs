//! DNS over TCP (RFC 7766): length-prefixed messages, pipelined queries answered in order, an idle
//! timeout between messages, and a cap on open connections (a new connection over the cap is
//! closed at once rather than left waiting).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use arc_swap::ArcSwap;

use super::xfr::{self, TransferPolicy};
use super::{handle_parsed, is_transfer, wire, Counters, Stats, Transport};
use crate::state::Store;

/// Rotation counter shared by TCP connections (UDP workers keep their own).
static ROTATION: AtomicUsize = AtomicUsize::new(0);

/// TCP settings.
#[derive(Debug, Clone)]
pub struct TcpOptions {
    /// Close a connection that sends nothing for this long.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// The counter shard its connections count into.
    pub shard: usize,
}

/// Accepts connections on `listener` until `token` is cancelled, then waits for open connections
/// to finish their current message.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    stats: Arc<Stats>,
    transfers: Arc<ArcSwap<TransferPolicy>>,
    opts: TcpOptions,
    token: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(opts.max_connections));
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(%peer, "dns tcp connection limit reached; closing");
            continue;
        };
        let (store, stats, token, idle, shard, transfers) = (
            store.clone(),
            stats.clone(),
            token.clone(),
            opts.idle_timeout,
            opts.shard,
            transfers.clone(),
        );
        conns.spawn(async move {
            let counters = stats.shard(shard);
            let ctx = Ctx {
                store: &store,
                stats: counters,
                transfers: &transfers,
            };
            if let Err(error) = connection(stream, peer, ctx, idle, &token).await {
                debug!(%peer, %error, "dns tcp connection ended");
            }
            drop(permit);
        });
    }
    while conns.join_next().await.is_some() {}
}

/// What a connection reads.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    store: &'a Store,
    stats: &'a Counters,
    transfers: &'a ArcSwap<TransferPolicy>,
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Ctx<'_>,
    idle: Duration,
    token: &CancellationToken,
) -> io::Result<()> {
    let Ctx {
        store,
        stats,
        transfers,
    } = ctx;
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut msg = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    loop {
        let len = tokio::select! {
            l = timeout(idle, r.read_u16()) => match l {
                Ok(Ok(l)) => l as usize,
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()), // idle
            },
            () = token.cancelled() => return Ok(()),
        };
        match timeout(idle, r.read_exact(&mut msg[..len])).await {
            Ok(res) => res?,
            Err(_) => return Ok(()),
        };
        let parsed = wire::parse(&msg[..len]);
        if is_transfer(&parsed) {
            // Built off the async threads: a large zone takes milliseconds to encode.
            let zones = store.load().static_zones.clone();
            let policy = transfers.load_full();
            let request = msg[..len].to_vec();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let messages = tokio::task::spawn_blocking(move || {
                xfr::answer(&zones, &policy, &request, peer.ip(), now)
            })
            .await
            .unwrap_or_default();
            for m in messages {
                let mut framed = Vec::with_capacity(m.len() + 2);
                framed.extend_from_slice(&(m.len() as u16).to_be_bytes());
                framed.extend_from_slice(&m);
                w.write_all(&framed).await?;
            }
            continue;
        }
        let answered = {
            let snap = store.load();
            let rotation = ROTATION.fetch_add(1, Ordering::Relaxed);
            handle_parsed(&snap, parsed, Transport::Tcp, rotation, &mut out, stats)
        };
        if !answered {
            debug!(%peer, "dns tcp message dropped; closing");
            return Ok(());
        }
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        w.write_all(&framed).await?;
    }
}
