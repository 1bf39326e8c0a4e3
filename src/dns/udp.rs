//! DNS over UDP: N sockets on one address with SO_REUSEPORT, one OS thread each, a blocking
//! receive-answer-send loop with reused buffers.
//!
//! The kernel spreads packets across the sockets, and no packet ever crosses a thread or a task
//! (hickory-server spawns a tokio task per packet and funnels all sends through one channel).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{handle, Stats, Transport};
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

/// Starts one worker thread per socket. They return once `token` is cancelled.
pub fn serve(
    socks: Vec<UdpSocket>,
    store: Store,
    stats: Arc<Stats>,
    token: CancellationToken,
) -> Vec<JoinHandle<()>> {
    socks
        .into_iter()
        .enumerate()
        .map(|(i, sock)| {
            let (store, stats, token) = (store.clone(), stats.clone(), token.clone());
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || worker(&sock, &store, &stats, &token))
                .expect("spawning a thread must not fail at start-up")
        })
        .collect()
}

fn worker(sock: &UdpSocket, store: &Store, stats: &Stats, token: &CancellationToken) {
    let mut cache = arc_swap::Cache::new(&**store);
    let mut rx = vec![0u8; 65535];
    let mut tx = Vec::with_capacity(4096);
    loop {
        let (n, peer) = match sock.recv_from(&mut rx) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
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
        };
        let snap = cache.load();
        if handle(snap, &rx[..n], Transport::Udp, &mut tx, stats) {
            if let Err(error) = sock.send_to(&tx, peer) {
                debug!(%peer, %error, "udp send failed");
            }
        }
        if token.is_cancelled() {
            return;
        }
    }
}
