//! DNS over UDP: one socket per address and N OS threads on it, a receive-answer-send loop
//! with reused buffers; one thread blocks on the socket, the others help when it falls behind.
//!
//! No packet ever crosses a thread or a task: the thread that receives a query answers it
//! (hickory-server spawns a tokio task per packet and funnels all sends through one channel).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use arc_swap::ArcSwap;

use super::{handle, Counters, Edge, Origin, Stats, Transport, Worker};
use crate::state::{Snapshot, Store};

/// How often an idle worker looks at the shutdown token.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// Binds one UDP socket on `addr` and returns `workers` handles to it, one per worker thread
/// (see [`serve`] for why they share one socket).
///
/// # Errors
/// The bind error.
pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<Vec<UdpSocket>> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Bursts from a resolver farm: a larger receive queue drops fewer packets.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    let sock: UdpSocket = s.into();
    sock.set_read_timeout(Some(SHUTDOWN_POLL))?;
    let clones = (1..workers.max(1))
        .map(|_| sock.try_clone())
        .collect::<io::Result<Vec<_>>>()?;
    Ok(std::iter::once(sock).chain(clones).collect())
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

/// Starts one worker thread per socket handle, counting into shards `first_shard..` of `stats`.
/// They return once `token` is cancelled. A worker that panics is logged and started again on
/// the same socket: one bad packet costs at most its batch, never the listener.
///
/// The first worker is the reader: it alone blocks on the socket. The others are helpers, each
/// asleep until the one before it takes a full batch (the queue is backing up), then reading
/// without blocking until the queue is empty. At the rates most namespaces see, one thread
/// answers everything and each wake-up carries as many queries as have arrived; under a flood
/// every worker is busy. With one SO_REUSEPORT socket per thread instead, the kernel spreads
/// the flows over all of them, and each thread wakes for its share: more wake-ups, each
/// carrying less (see BENCHMARKS.md).
pub fn serve(
    socks: Vec<UdpSocket>,
    sources: &Sources,
    first_shard: usize,
    token: CancellationToken,
) -> io::Result<Vec<JoinHandle<()>>> {
    // Helpers first, last to first, so each thread knows the helper it wakes.
    let mut next: Option<Thread> = None;
    let mut handles = Vec::with_capacity(socks.len());
    for (i, sock) in socks.into_iter().enumerate().rev() {
        let (sources, token, wakes) = (sources.clone(), token.clone(), next.take());
        let role = if i == 0 { Role::Reader } else { Role::Helper };
        let handle = std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || {
                let stats = sources.stats.shard(first_shard + i);
                while !token.is_cancelled() {
                    let run = std::panic::AssertUnwindSafe(|| {
                        worker(&sock, role, wakes.as_ref(), &sources, stats, &token);
                    });
                    if std::panic::catch_unwind(run).is_err() {
                        stats
                            .restarts
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        error!(worker = i, "dns udp worker panicked; restarted");
                    }
                }
            })?;
        next = Some(handle.thread().clone());
        handles.push(handle);
    }
    handles.reverse();
    Ok(handles)
}

/// What a worker thread does when nothing is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Blocks on the socket.
    Reader,
    /// Sleeps until the worker before it takes a full batch.
    Helper,
}

/// Datagrams received (and answers sent) per system call, at most.
const BATCH: usize = 32;
/// Receive buffer per datagram: a query is far smaller; a longer datagram is dropped.
const RX_SIZE: usize = 4096;

/// One worker: `recvmmsg` takes up to [`BATCH`] queued datagrams (the reader waits for the
/// first), then the answers go out in one `sendmmsg`. Under load this cuts the system calls and thread wake-ups
/// per query (the dominant cost here, not the lookup) by the batch size; when idle it answers
/// each datagram at once.
fn worker(
    sock: &UdpSocket,
    role: Role,
    wakes: Option<&Thread>,
    sources: &Sources,
    stats: &Counters,
    token: &CancellationToken,
) {
    let fd = sock.as_raw_fd();
    let mut cache = arc_swap::Cache::new(&*sources.store);
    let mut edge = arc_swap::Cache::new(&*sources.edge);
    let mut state = Worker::new(stats);
    let mut batch = Batch::new();
    let wait = match role {
        Role::Reader => MsgFlags::MSG_WAITFORONE,
        Role::Helper => MsgFlags::MSG_DONTWAIT,
    };
    while !token.is_cancelled() {
        if role == Role::Helper {
            std::thread::park_timeout(SHUTDOWN_POLL);
        }
        // A helper reads until the queue is empty, then sleeps again; the reader never stops.
        loop {
            match batch.receive(fd, wait) {
                Ok(0) => continue,
                Ok(n) => {
                    if n == BATCH {
                        if let Some(helper) = wakes {
                            helper.unpark();
                        }
                    }
                }
                Err(Errno::EAGAIN | Errno::EINTR) => break,
                Err(error) => {
                    // ICMP errors from earlier sends surface here (ECONNREFUSED): not fatal.
                    debug!(%error, "udp receive failed");
                    continue;
                }
            }
            // Shutdown stops DNS at once: what arrives after it is left to the zone's other
            // name servers, as a stopped server's would be.
            if token.is_cancelled() {
                return;
            }
            batch.answer(cache.load(), edge.load(), &mut state);
            batch.send(sock);
        }
    }
}

/// The buffers of one worker, reused from batch to batch.
struct Batch {
    rx: Vec<[u8; RX_SIZE]>,
    tx: Vec<Vec<u8>>,
    rx_hdrs: MultiHeaders<SockaddrStorage>,
    /// Length and sender of each datagram received (length 0: oversized, dropped).
    got: Vec<(usize, Option<SockaddrStorage>)>,
    /// Where each answer in `tx` goes.
    out_addrs: Vec<SocketAddrAny>,
}

impl Batch {
    fn new() -> Self {
        Self {
            rx: vec![[0u8; RX_SIZE]; BATCH],
            tx: (0..BATCH).map(|_| Vec::with_capacity(1232)).collect(),
            rx_hdrs: MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None),
            got: Vec::with_capacity(BATCH),
            out_addrs: Vec::with_capacity(BATCH),
        }
    }

    /// One `recvmmsg` with `flags`: how many datagrams it took.
    fn receive(&mut self, fd: std::os::fd::RawFd, flags: MsgFlags) -> Result<usize, Errno> {
        self.got.clear();
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .rx
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let results = recvmmsg(fd, &mut self.rx_hdrs, slices.iter_mut(), flags, None)?;
        for r in results {
            if r.flags.contains(MsgFlags::MSG_TRUNC) {
                self.got.push((0, None)); // oversized: dropped below
            } else {
                self.got.push((r.bytes, r.address));
            }
        }
        Ok(self.got.len())
    }

    /// Answers what [`Batch::receive`] took, into `tx` and `out_addrs`.
    fn answer(&mut self, snap: &Snapshot, edge: &Edge, state: &mut Worker<'_>) {
        let (unix, mono) = (crate::addr::unix_seconds(), crate::addr::mono_nanos());
        self.out_addrs.clear();
        for (packet, &(len, addr)) in self.rx.iter().zip(&self.got) {
            let (Some(addr), Some(packet), Some(out)) = (
                addr,
                packet.get(..len),
                self.tx.get_mut(self.out_addrs.len()),
            ) else {
                continue;
            };
            let Some(peer) = peer(&addr) else {
                continue;
            };
            let origin = Origin {
                // v4-mapped folded to IPv4, for the rate limits and the ACLs.
                ip: crate::addr::canonical(peer.ip()),
                transport: Transport::Udp,
                unix,
                mono,
            };
            if len > 0 && handle(snap, edge, &origin, packet, state, out) {
                self.out_addrs.push(peer.into());
            }
        }
    }

    /// Sends the answers in one `sendmmsg` (more only if the kernel takes part of the batch):
    /// one system call per batch instead of one per answer.
    fn send(&self, sock: &UdpSocket) {
        let iovs: Vec<[IoSlice<'_>; 1]> = self.tx.iter().map(|out| [IoSlice::new(out)]).collect();
        let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> =
            self.out_addrs.iter().map(|_| Default::default()).collect();
        let mut msgs: Vec<MMsgHdr<'_>> = self
            .out_addrs
            .iter()
            .zip(&iovs)
            .zip(controls.iter_mut())
            .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
            .collect();
        let mut rest = &mut msgs[..];
        while !rest.is_empty() {
            // An error is the first message's own (a later one's ends the call early): skip it.
            let taken = match sendmmsg(sock, rest, SendFlags::empty()) {
                Ok(n) => n.max(1),
                Err(error) => {
                    debug!(%error, "udp send failed");
                    1
                }
            };
            rest = rest.get_mut(taken..).unwrap_or_default();
        }
    }
}

/// The client's address, exactly as received (answers go back to it).
fn peer(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    Some(SocketAddr::V6((*addr.as_sockaddr_in6()?).into()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;
    use crate::dns::tests::{snapshot, ZONE};

    fn answered(c: &Counters) -> u64 {
        c.fast.load(Ordering::Relaxed) + c.slow.load(Ordering::Relaxed)
    }

    fn query(id: u16) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.add_query(Query::query(
            Name::from_ascii("owa.z.test.").unwrap(),
            RecordType::A,
        ));
        m.to_vec().unwrap()
    }

    /// One answer the kernel refuses (here: an IPv6 destination on an IPv4 socket) costs only
    /// itself: the answers before and after it in the batch still go out.
    #[test]
    fn a_refused_answer_in_a_batch_loses_only_itself() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let to: SocketAddr = client.local_addr().unwrap();
        let refused: SocketAddr = "[::1]:53".parse().unwrap();
        let mut batch = Batch::new();
        for (i, addr) in [to, to, refused, to, refused].into_iter().enumerate() {
            batch.tx[i] = vec![u8::try_from(i).unwrap()];
            batch.out_addrs.push(addr.into());
        }
        batch.send(&server);
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        for _ in 0..3 {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, [0, 1, 3]);
    }

    /// Two workers on one socket: a trickle (one query at a time) is answered by the reader
    /// alone, and a backlog brings the helper in.
    #[test]
    fn the_reader_answers_a_trickle_and_the_helper_joins_a_backlog() {
        let socks = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let server = socks[0].local_addr().unwrap();
        let sources = Sources {
            store: Arc::new(ArcSwap::from_pointee(snapshot("z.test.", ZONE))),
            edge: Arc::new(ArcSwap::from_pointee(Edge::default())),
            stats: Arc::new(Stats::new(3)),
        };
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // Queued before the workers start: the reader's first receive is a full batch.
        for id in 0..200 {
            client.send_to(&query(id), server).unwrap();
        }
        let token = CancellationToken::new();
        let threads = serve(socks, &sources, 0, token.clone()).unwrap();
        let (reader, helper) = (sources.stats.shard(0), sources.stats.shard(1));
        // Whatever the queue held, the backlog goes on until the helper has answered some.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut id = 200u16;
        while answered(helper) == 0 {
            assert!(Instant::now() < deadline, "the helper never joined");
            for _ in 0..200 {
                client.send_to(&query(id), server).unwrap();
                id = id.wrapping_add(1);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Drain the answers, then a trickle: each query waits for its answer.
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 1500];
        while client.recv_from(&mut buf).is_ok() {}
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (r0, h0) = (answered(reader), answered(helper));
        for id in 0..50 {
            client.send_to(&query(id), server).unwrap();
            let (n, _) = client.recv_from(&mut buf).unwrap();
            let m = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(m.metadata.id, id);
            assert_eq!(m.answers.len(), 2, "{m:?}");
        }
        assert_eq!(answered(reader) - r0, 50, "the reader answered the trickle");
        assert_eq!(answered(helper), h0, "the helper slept through it");
        token.cancel();
        for t in threads {
            t.join().unwrap();
        }
    }
}
