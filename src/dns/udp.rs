//! DNS over UDP: N sockets on one address with SO_REUSEPORT, one OS thread each, a blocking
//! receive-answer-send loop with reused buffers.
//!
//! The kernel spreads packets across the sockets, and no packet ever crosses a thread or a task
//! (hickory-server spawns a tokio task per packet and funnels all sends through one channel).

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, sendto, MsgFlags, MultiHeaders, SockaddrStorage};
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use arc_swap::ArcSwap;

use super::{handle, Counters, Edge, Origin, Stats, Transport, Worker};
use crate::state::Store;

/// How often an idle worker looks at the shutdown token.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// Binds `workers` UDP sockets on `addr` (port 0: the first picks a port, the rest share it).
///
/// # Errors
/// The bind error of the first socket that fails.
pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<Vec<UdpSocket>> {
    let mut socks = Vec::with_capacity(workers);
    let mut addr = addr;
    for _ in 0..workers.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        // Bursts from a resolver farm: a larger receive queue drops fewer packets.
        let _ = s.set_recv_buffer_size(4 << 20);
        s.bind(&addr.into())?;
        let s: UdpSocket = s.into();
        s.set_read_timeout(Some(SHUTDOWN_POLL))?;
        addr = s.local_addr()?;
        socks.push(s);
    }
    Ok(socks)
}

/// What the UDP workers serve from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The serving snapshot.
    pub store: Store,
    /// Rate limiting and cookies.
    pub edge: Arc<ArcSwap<Edge>>,
    /// The query counters, one shard per worker.
    pub stats: Arc<Stats>,
}

/// Starts one worker thread per socket, counting into shards `first_shard..` of `stats`. They
/// return once `token` is cancelled. A worker that panics is logged and started again on the
/// same socket: one bad packet costs at most its batch, never the listener.
pub fn serve(
    socks: Vec<UdpSocket>,
    sources: &Sources,
    first_shard: usize,
    token: CancellationToken,
) -> io::Result<Vec<JoinHandle<()>>> {
    socks
        .into_iter()
        .enumerate()
        .map(|(i, sock)| {
            let (sources, token) = (sources.clone(), token.clone());
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || {
                    let stats = sources.stats.shard(first_shard + i);
                    while !token.is_cancelled() {
                        let run = std::panic::AssertUnwindSafe(|| {
                            worker(&sock, &sources, stats, &token);
                        });
                        if std::panic::catch_unwind(run).is_err() {
                            stats
                                .restarts
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            error!(worker = i, "dns udp worker panicked; restarted");
                        }
                    }
                })
        })
        .collect()
}

/// Datagrams received (and answers sent) per system call, at most.
const BATCH: usize = 32;
/// Receive buffer per datagram: a query is far smaller; a longer datagram is dropped.
const RX_SIZE: usize = 4096;

/// One worker: `recvmmsg` waits for at least one datagram and takes up to [`BATCH`] more that are
/// already queued, then the answers go out. Under load this cuts the
/// system calls and thread wake-ups per query (the dominant cost here, not the lookup) by the
/// batch size; when idle it answers each datagram at once.
fn worker(sock: &UdpSocket, sources: &Sources, stats: &Counters, token: &CancellationToken) {
    let fd = sock.as_raw_fd();
    let mut cache = arc_swap::Cache::new(&*sources.store);
    let mut edge = arc_swap::Cache::new(&*sources.edge);
    let mut state = Worker::new(stats);
    let mut rx = vec![[0u8; RX_SIZE]; BATCH];
    let mut tx: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1232)).collect();
    let mut rx_hdrs = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut got: Vec<(usize, Option<SockaddrStorage>)> = Vec::with_capacity(BATCH);
    let mut out_addrs: Vec<Option<SockaddrStorage>> = Vec::with_capacity(BATCH);
    loop {
        got.clear();
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = rx
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            match recvmmsg(
                fd,
                &mut rx_hdrs,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(results) => {
                    for r in results {
                        if r.flags.contains(MsgFlags::MSG_TRUNC) {
                            got.push((0, None)); // oversized: dropped below
                        } else {
                            got.push((r.bytes, r.address));
                        }
                    }
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    if token.is_cancelled() {
                        return;
                    }
                    continue;
                }
                Err(error) => {
                    // ICMP errors from earlier sends surface here (ECONNREFUSED): not fatal.
                    debug!(%error, "udp receive failed");
                    continue;
                }
            }
        }
        // Shutdown stops DNS at once: what arrives after it is left to the zone's other name
        // servers, as a stopped server's would be.
        if token.is_cancelled() {
            return;
        }
        let snap = cache.load();
        let edge = edge.load();
        let (unix, mono) = (crate::addr::unix_seconds(), crate::addr::mono_nanos());
        out_addrs.clear();
        let mut n_out = 0;
        for (packet, &(len, addr)) in rx.iter().zip(&got) {
            let (Some(addr), Some(packet), Some(out)) =
                (addr, packet.get(..len), tx.get_mut(n_out))
            else {
                continue;
            };
            let Some(ip) = peer_ip(&addr) else {
                continue;
            };
            let origin = Origin {
                ip,
                transport: Transport::Udp,
                unix,
                mono,
            };
            if len > 0 && handle(snap, edge, &origin, packet, &mut state, out) {
                out_addrs.push(Some(addr));
                n_out += 1;
            }
        }
        // One send_to per answer: nix's sendmmsg gives no sent-count that can be read soundly.
        for (out, addr) in tx.iter().take(n_out).zip(&out_addrs) {
            if let Some(addr) = addr {
                if let Err(error) = sendto(fd, out, addr, MsgFlags::empty()) {
                    debug!(%error, "udp send failed");
                }
            }
        }
        if token.is_cancelled() {
            return;
        }
    }
}

/// The client's address, v4-mapped folded to IPv4.
fn peer_ip(addr: &SockaddrStorage) -> Option<std::net::IpAddr> {
    let ip = if let Some(v4) = addr.as_sockaddr_in() {
        std::net::IpAddr::V4(v4.ip())
    } else {
        std::net::IpAddr::V6(addr.as_sockaddr_in6()?.ip())
    };
    Some(crate::addr::canonical(ip))
}
