//! Open-loop connection latency: new TCP connections at a fixed rate, each sending one request
//! and reading until the server closes, timed from the moment it was due to the close.
//!
//! `bench/relay.py` runs it against a backend directly and through each relay; the difference is
//! the latency a relay adds. wrk cannot measure that: it is a closed loop (a connection starts
//! only when an earlier one ends), so its latency figures are those of a saturated machine, and a
//! slow answer delays the next request instead of being counted (coordinated omission).
//!
//! A plain thread paces the starts (tokio's timer has 1 ms granularity, coarser than the 0.5 ms
//! between starts at 2,000/s) and hands each start to one current-thread runtime, so the load
//! generator takes about one core at most.
//!
//! ```sh
//! cargo run --release --example connlat -- 127.0.0.1:8080 --rate 2000 --secs 10
//! ```
//! prints one JSON object: counts and latency percentiles in microseconds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a benchmark client, not the server: a panic ends the measurement"
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    /// Where to connect (a loopback address: the benchmarks never leave the machine).
    addr: SocketAddr,
    /// New connections per second.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// How long to keep starting connections.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// A connection with no answer and close within this many milliseconds counts as failed.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// What each connection sends (`\r\n` escapes allowed).
    #[arg(
        long,
        default_value = "GET / HTTP/1.1\\r\\nHost: bench\\r\\nConnection: close\\r\\n\\r\\n"
    )]
    request: String,
}

/// One connection: connect, send, read to EOF. Ok only if something came back before the close.
async fn one(addr: SocketAddr, request: &[u8]) -> std::io::Result<usize> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    let mut got = 0;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await? {
            0 if got > 0 => return Ok(got),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
}

/// The p-th percentile (0..=100) of sorted `v`, nearest rank.
fn percentile(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn main() {
    let a = Args::parse();
    assert!(
        a.addr.ip().is_loopback(),
        "connlat connects to loopback addresses only"
    );
    let request: Arc<[u8]> = a.request.replace("\\r\\n", "\r\n").into_bytes().into();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let handle = rt.handle().clone();
    let done: Arc<Mutex<(Vec<u64>, u64)>> = Arc::default(); // latencies in µs, failures
    let total = u64::from(a.rate) * a.secs;
    let limit = Duration::from_millis(a.timeout_ms);

    let pacer = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let period = Duration::from_secs(1) / a.rate;
            let mut tasks = Vec::with_capacity(total as usize);
            for k in 0..total {
                let due = start + period * k as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let (done, request) = (done.clone(), request.clone());
                tasks.push(handle.spawn(async move {
                    let r = tokio::time::timeout(limit, one(a.addr, &request)).await;
                    let us = due.elapsed().as_micros() as u64;
                    let mut d = done.lock().expect("not poisoned");
                    match r {
                        Ok(Ok(_)) => d.0.push(us),
                        _ => d.1 += 1,
                    }
                }));
            }
            tasks
        })
    };
    // The runtime runs the connections on this thread while the pacer starts them.
    let tasks = rt.block_on(async {
        let pacer = tokio::task::spawn_blocking(move || pacer.join().expect("the pacer"));
        pacer.await.expect("the pacer")
    });
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let (mut lat, failed) = std::mem::take(&mut *done.lock().expect("not poisoned"));
    lat.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "started": total,
            "ok": lat.len(),
            "failed": failed,
            "p50_us": percentile(&lat, 50.0),
            "p90_us": percentile(&lat, 90.0),
            "p99_us": percentile(&lat, 99.0),
            "p999_us": percentile(&lat, 99.9),
            "max_us": lat.last().copied().unwrap_or(0),
        })
    );
}
