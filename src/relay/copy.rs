//! The byte pump between a client and its backend.
//!
//! - Readiness first, buffer second: a direction allocates its buffer only when its socket is
//!   readable and drops it once the socket would block, so an idle relayed connection holds no
//!   copy buffer (Outlook and ActiveSync keep thousands of connections idle for many minutes).
//!   Bulk data moves by splice(2) through a pipe, given back the same way.
//! - Half-close is passed on: EOF from one side becomes a FIN (`shutdown(Write)`) to the other,
//!   and the other direction keeps flowing (SMTP clients close their side before reading the
//!   final reply).
//! - An idle timeout (no bytes either way) closes both; once one side has closed, a shorter
//!   timeout bounds the other, so nothing lingers in CLOSE_WAIT. tokio's `copy_bidirectional`
//!   has neither.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::task::Poll;
use std::time::Duration;

use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::unistd::pipe2;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::relay::Timeouts;

/// Size of the buffer a direction borrows while data flows (64 KiB: a long stream moves in fewer
/// system calls; measured 1.3x the throughput of 16 KiB here).
const BUF: usize = 64 * 1024;
/// Buffers kept per thread for reuse, at most: a busy relay does not zero and free a fresh
/// 64 KiB for every burst, and an idle one holds at most this many in all.
const POOL: usize = 16;

thread_local! {
    static BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn take_buf() -> Vec<u8> {
    BUFFERS
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF])
}

fn give_buf(b: Vec<u8>) {
    give_back(&BUFFERS, b);
}

/// Returns `item` to a per-thread pool, or drops it when the pool already holds [`POOL`].
fn give_back<T>(pool: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>, item: T) {
    pool.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL {
            p.push(item);
        }
    });
}

/// Why a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed their sending half.
    Closed,
    /// No bytes for the idle timeout.
    Idle,
    /// One side closed and the other did not finish in time.
    HalfClosed,
    /// A socket error (reset, say) on either side.
    Error,
    /// Closed by the relay: the server went into maintenance, or down with
    /// `on_server_down = "close"`.
    Stopped,
}

/// Bytes moved, each way.
#[derive(Debug, Default)]
pub struct Bytes {
    /// Client → server.
    pub up: AtomicU64,
    /// Server → client.
    pub down: AtomicU64,
}

/// Relays bytes between `client` and `server` until both close, a timeout or an error.
/// `stop` cancelled closes both at once.
pub async fn pump(
    mut client: TcpStream,
    mut server: TcpStream,
    t: Timeouts,
    bytes: &Bytes,
    stop: &CancellationToken,
) -> End {
    let start = Instant::now();
    let last = AtomicU64::new(0); // ms since start of the last byte moved
    let closed = AtomicU8::new(0); // directions that have seen EOF
    let (cr, cw) = client.split();
    let (sr, sw) = server.split();
    let up = std::pin::pin!(one_way(cr, sw, &last, start, &bytes.up, &closed));
    let down = std::pin::pin!(one_way(sr, cw, &last, start, &bytes.down, &closed));
    drive(up, down, &last, start, t, stop).await
}

/// Relays between two streams of any kind: TLS on one side or both (the HTTPS front's offload
/// and re-encrypt modes). Same half-close and timeouts as [`pump`]; a 16 KiB buffer per
/// direction (rustls buffers records anyway, and has no readiness to wait on without one).
pub async fn pump_io<A, B>(
    client: A,
    server: B,
    t: Timeouts,
    bytes: &Bytes,
    stop: &CancellationToken,
) -> End
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (cr, cw) = tokio::io::split(client);
    let (sr, sw) = tokio::io::split(server);
    let up = std::pin::pin!(one_way_io(cr, sw, &last, start, &bytes.up));
    let down = std::pin::pin!(one_way_io(sr, cw, &last, start, &bytes.down));
    drive(up, down, &last, start, t, stop).await
}

/// Copies until EOF, then shuts `w` down (for TLS: close_notify, then FIN).
async fn one_way_io<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    last: &AtomicU64,
    start: Instant,
    moved: &AtomicU64,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        // read() returns at most buf.len() bytes.
        w.write_all(buf.get(..n).unwrap_or_default()).await?;
        w.flush().await?;
        moved.fetch_add(n as u64, Ordering::Relaxed);
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Runs both directions under the idle and half-closed timeouts, and `stop`.
///
/// The directions come pinned by the caller, not by value: an async fn keeps its arguments and
/// its pinned copies of them both, and this state is what every idle connection holds.
async fn drive<U, D>(
    mut up: Pin<&mut U>,
    mut down: Pin<&mut D>,
    last: &AtomicU64,
    start: Instant,
    t: Timeouts,
    stop: &CancellationToken,
) -> End
where
    U: std::future::Future<Output = io::Result<()>>,
    D: std::future::Future<Output = io::Result<()>>,
{
    let (mut up_done, mut down_done) = (false, false);
    let mut half_since: Option<Instant> = None;
    // One timer, re-armed only when its deadline moves (not on every loop turn).
    let timer = tokio::time::sleep_until(start + t.idle);
    tokio::pin!(timer);
    let mut armed = start + t.idle;
    loop {
        let idle_at = start + Duration::from_millis(last.load(Ordering::Relaxed)) + t.idle;
        let deadline = match half_since {
            Some(h) => idle_at.min(h + t.half_closed),
            None => idle_at,
        };
        if deadline != armed {
            timer.as_mut().reset(deadline);
            armed = deadline;
        }
        tokio::select! {
            r = up.as_mut(), if !up_done => {
                if r.is_err() { return End::Error; }
                up_done = true;
                half_since.get_or_insert_with(Instant::now);
            }
            r = down.as_mut(), if !down_done => {
                if r.is_err() { return End::Error; }
                down_done = true;
                half_since.get_or_insert_with(Instant::now);
            }
            () = stop.cancelled() => return End::Stopped,
            () = &mut timer => {
                let now = Instant::now();
                let idle_at = start + Duration::from_millis(last.load(Ordering::Relaxed)) + t.idle;
                if now >= idle_at {
                    return End::Idle;
                }
                if half_since.is_some_and(|h| now >= h + t.half_closed) {
                    return End::HalfClosed;
                }
            }
        }
        if up_done && down_done {
            return End::Closed;
        }
    }
}

/// Copies `r` to `w` until EOF (then passes the FIN on) or an error.
///
/// Reads go through tokio's `poll_read`, which on epoll treats a short read as "drained" and
/// clears the readiness: after a short read the loop waits for the kernel instead of spending a
/// `recv` on EAGAIN. That and the skipped `shutdown` below are two of the ~20 system calls a short
/// connection costs.
async fn one_way(
    mut r: ReadHalf<'_>,
    mut w: WriteHalf<'_>,
    last: &AtomicU64,
    start: Instant,
    moved: &AtomicU64,
    closed: &AtomicU8,
) -> io::Result<()> {
    /// How a burst of reads ended.
    enum Burst {
        Eof,
        /// A read filled the whole buffer: a bulk transfer, better moved by splice(2).
        Bulk,
        /// A short read: the socket is drained.
        Drained,
        /// `poll_read` said Pending: drained, or this task's cooperative budget is spent.
        Pending,
    }
    loop {
        r.readable().await?;
        let mut buf = take_buf();
        // One read attempt, without waiting.
        let read = std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf);
            Poll::Ready(match Pin::new(&mut r).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => Some(Ok(rb.filled().len())),
                Poll::Ready(Err(e)) => Some(Err(e)),
                Poll::Pending => None,
            })
        })
        .await;
        let res = match read {
            Some(Ok(0)) => Ok(Burst::Eof),
            Some(Ok(n)) => match w.write_all(buf.get(..n).unwrap_or_default()).await {
                Ok(()) => {
                    moved.fetch_add(n as u64, Ordering::Relaxed);
                    last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                    Ok(if n < buf.len() {
                        Burst::Drained
                    } else {
                        Burst::Bulk
                    })
                }
                Err(e) => Err(e),
            },
            None => Ok(Burst::Pending),
            Some(Err(e)) => Err(e),
        };
        // The buffer goes back before waiting again: nothing is held while the connection idles.
        give_buf(buf);
        match res? {
            Burst::Drained => {}
            Burst::Bulk => {
                if let Some(pipe) = take_pipe() {
                    let (r, w) = (r.as_ref(), w.as_ref());
                    // Boxed: only bulk directions carry its state.
                    if Box::pin(splice_rest(r, w, pipe, last, start, moved, closed)).await? {
                        return Ok(());
                    }
                }
            }
            // `readable()` does not count against tokio's cooperative budget, `poll_read` does:
            // without yielding here, a task out of budget would spin between the two forever.
            Burst::Pending => tokio::task::yield_now().await,
            Burst::Eof => {
                // Pass the half-close on, unless the other direction has already ended: then both
                // sockets are about to be closed, and close() sends that FIN itself (both read
                // sides are at EOF, so it is a clean FIN, not a reset).
                if closed.fetch_add(1, Ordering::Relaxed) == 0 {
                    let _ = w.shutdown().await; // the peer may already be gone
                }
                return Ok(());
            }
        }
    }
}

/// The pipe size asked for: Linux's default `fs.pipe-max-size`, so no privilege is needed.
/// A pipe holds page references, not copies, so its size is not memory held: what it sets is how
/// many bytes one splice(2) call moves. Measured here on one iperf3 stream, against the default
/// 64 KiB pipe: 1.4x the throughput and half the relay CPU per byte (`bench/relay.py`).
const PIPE: usize = 1 << 20;

/// A non-blocking pipe for splice(2): taken by a direction while it carries bulk data, and given
/// back (empty) whenever its socket is drained, so a connection that pauses holds no pipe: a
/// 1 MiB pipe costs the kernel 10 KiB of slots and the process two descriptors, which thousands
/// of idle connections that once downloaded an attachment must not keep.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// What one splice may move: [`PIPE`], or the default size when the kernel refused it (a
    /// lower `fs.pipe-max-size`, or the user's pipe quota spent).
    size: usize,
}

impl Pipe {
    /// None when no pipe can be had (descriptor limit): the copy loop carries on instead.
    fn new() -> Option<Self> {
        let (read, write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).ok()?;
        let size = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE as i32))
            .or_else(|_| fcntl(&write, FcntlArg::F_GETPIPE_SZ))
            .map_or(BUF, |n| n as usize);
        Some(Self { read, write, size })
    }
}

thread_local! {
    /// Empty pipes kept per thread for reuse, at most [`POOL`]: a stream that drains its socket
    /// many times a second does not create a pipe each time.
    static PIPES: std::cell::RefCell<Vec<Pipe>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn take_pipe() -> Option<Pipe> {
    PIPES.with(|p| p.borrow_mut().pop()).or_else(Pipe::new)
}

/// Only an empty pipe may be given back.
fn give_pipe(pipe: Pipe) {
    give_back(&PIPES, pipe);
}

/// The rest of a bulk direction, moved by splice(2) socket → pipe → socket: the bytes never
/// enter user space. Ok(true) at EOF; Ok(false) when no pipe could be had, for the copy loop to
/// carry on. Measured here on one iperf3 stream: the same throughput as the copy loop,
/// about 14 % less relay CPU per byte. Short exchanges stay on the copy loop, where splice would
/// cost a pipe and more system calls per connection.
async fn splice_rest(
    r: &TcpStream,
    w: &TcpStream,
    pipe: Pipe,
    last: &AtomicU64,
    start: Instant,
    moved: &AtomicU64,
    closed: &AtomicU8,
) -> io::Result<bool> {
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    let mut held = Some(pipe);
    loop {
        // Other connections on this thread get their turn during a long transfer.
        tokio::task::consume_budget().await;
        r.readable().await?;
        // None: no pipe to be had (descriptor limit); the copy loop carries on.
        let Some(pipe) = held.take().or_else(take_pipe) else {
            return Ok(false);
        };
        let n = match r.try_io(Interest::READABLE, || {
            splice(r.as_fd(), None, pipe.write.as_fd(), None, pipe.size, flags)
                .map_err(io::Error::from)
        }) {
            Ok(0) => {
                give_pipe(pipe);
                if closed.fetch_add(1, Ordering::Relaxed) == 0 {
                    let _ = socket2::SockRef::from(w).shutdown(std::net::Shutdown::Write);
                }
                return Ok(true);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Drained, and the pipe is empty: it goes back while the socket is waited for.
                give_pipe(pipe);
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut left = n;
        while left > 0 {
            w.writable().await?;
            match w.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_fd(), None, w.as_fd(), None, left, flags)
                    .map_err(io::Error::from)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        held = Some(pipe);
        moved.fetch_add(n as u64, Ordering::Relaxed);
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const T: Timeouts = Timeouts {
        idle: Duration::from_secs(30),
        half_closed: Duration::from_secs(30),
    };

    /// A client socket, and the relay's two sockets (toward the client and toward the server),
    /// and the server's socket: all real TCP on loopback.
    async fn plumbing() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
        let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l1.local_addr().unwrap()).await.unwrap();
        let (relay_client, _) = l1.accept().await.unwrap();
        let relay_server = TcpStream::connect(l2.local_addr().unwrap()).await.unwrap();
        let (server, _) = l2.accept().await.unwrap();
        (client, relay_client, relay_server, server)
    }

    #[tokio::test]
    async fn bytes_both_ways_and_half_close_each_way() {
        for client_closes_first in [true, false] {
            let (mut c, rc, rs, mut s) = plumbing().await;
            let bytes = std::sync::Arc::new(Bytes::default());
            let b = bytes.clone();
            let relay =
                tokio::spawn(async move { pump(rc, rs, T, &b, &CancellationToken::new()).await });
            let data: Vec<u8> = (0..200_000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            let (first, second) = if client_closes_first {
                (&mut c, &mut s)
            } else {
                (&mut s, &mut c)
            };
            first.write_all(&data).await.unwrap();
            first.shutdown().await.unwrap();
            let mut got = Vec::new();
            second.read_to_end(&mut got).await.unwrap(); // EOF arrives: the half-close was passed on
            assert_eq!(got, data);
            // The other direction still flows after the half-close.
            second.write_all(b"250 2.0.0 queued\r\n").await.unwrap();
            second.shutdown().await.unwrap();
            let mut back = Vec::new();
            first.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, b"250 2.0.0 queued\r\n");
            assert_eq!(relay.await.unwrap(), End::Closed);
            let (up, down) = (
                bytes.up.load(Ordering::Relaxed),
                bytes.down.load(Ordering::Relaxed),
            );
            assert_eq!(up + down, data.len() as u64 + 18);
        }
    }

    /// Far more than tokio's cooperative budget of reads per task poll, both ways at once: the
    /// pump must yield, not spin (a spin here hung a 5 s iperf3 run for minutes). Two workers, so
    /// the timeout still fires if the pump's task never yields.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_stream_both_ways_completes() {
        let (c, rc, rs, s) = plumbing().await;
        let relay = tokio::spawn(async move {
            pump(rc, rs, T, &Bytes::default(), &CancellationToken::new()).await
        });
        const TOTAL: usize = 256 << 20;
        let chunk = vec![7u8; 1 << 16];
        let drain = |mut r: tokio::net::tcp::OwnedReadHalf| async move {
            let mut got = 0usize;
            let mut b = vec![0u8; 1 << 16];
            loop {
                let n = r.read(&mut b).await.unwrap();
                if n == 0 {
                    return got;
                }
                got += n;
            }
        };
        let feed = |mut w: tokio::net::tcp::OwnedWriteHalf, chunk: Vec<u8>| async move {
            for _ in 0..TOTAL / chunk.len() {
                w.write_all(&chunk).await.unwrap();
            }
            w.shutdown().await.unwrap();
        };
        let (cr, cw) = c.into_split();
        let (sr, sw) = s.into_split();
        let work = async {
            tokio::join!(
                feed(cw, chunk.clone()),
                feed(sw, chunk.clone()),
                drain(cr),
                drain(sr)
            )
        };
        let (_, _, down, up) = tokio::time::timeout(Duration::from_secs(60), work)
            .await
            .expect("the stream completes (the pump yields)");
        assert_eq!((up, down), (TOTAL, TOTAL));
        assert_eq!(relay.await.unwrap(), End::Closed);
    }

    /// A direction that carried bulk data (splice) and then pauses gives its pipe back: idle
    /// connections hold no pipe. The test runs on the pump's thread (current-thread runtime), so
    /// it sees the thread's pool.
    #[tokio::test]
    async fn a_paused_bulk_direction_holds_no_pipe() {
        let pooled = || PIPES.with(|p| p.borrow().len());
        let (mut c, rc, rs, mut s) = plumbing().await;
        let relay = tokio::spawn(async move {
            pump(rc, rs, T, &Bytes::default(), &CancellationToken::new()).await
        });
        let data = vec![5u8; 8 << 20];
        let (_, got) = tokio::join!(c.write_all(&data), async {
            let mut got = vec![0u8; data.len()];
            s.read_exact(&mut got).await.map(|_| got)
        });
        assert_eq!(got.unwrap(), data);
        // The relay has drained the client: its pipe is back in the pool.
        let deadline = Instant::now() + Duration::from_secs(10);
        while pooled() == 0 {
            assert!(Instant::now() < deadline, "the pipe was not given back");
            tokio::task::yield_now().await;
        }
        assert_eq!(pooled(), 1);
        // Bulk data again takes it from the pool, and gives it back again.
        c.write_all(&data).await.unwrap_or(());
        let mut got = vec![0u8; data.len()];
        s.read_exact(&mut got).await.unwrap();
        drop((c, s));
        assert_eq!(relay.await.unwrap(), End::Closed);
        assert_eq!(pooled(), 1, "one pipe served both bursts");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_and_half_closed_timeouts() {
        let t = Timeouts {
            idle: Duration::from_secs(3600),
            half_closed: Duration::from_secs(60),
        };
        let (c, rc, rs, _s) = plumbing().await;
        let relay = tokio::spawn(async move {
            pump(rc, rs, t, &Bytes::default(), &CancellationToken::new()).await
        });
        drop(c); // the client goes away; the server never closes
        assert_eq!(relay.await.unwrap(), End::HalfClosed);

        let (_c, rc, rs, _s) = plumbing().await;
        let relay = tokio::spawn(async move {
            pump(rc, rs, t, &Bytes::default(), &CancellationToken::new()).await
        });
        assert_eq!(relay.await.unwrap(), End::Idle);
    }
}
