//! Slow and hostile clients against the real binary: a request head trickled one byte at a time
//! (slowloris) on port 80 and the admin API, a relayed connection left half-open by a backend
//! that never closes, and 10,000 idle relayed connections held at once (memory per connection
//! reported). The reset in the middle of a TLS handshake is in `https_front.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const ZONE: &str = "$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 127.0.0.53\n";

fn zone_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("z.zone"), ZONE).unwrap();
    dir
}

/// True once the peer has closed `c` (EOF or reset), polling for up to `limit`.
fn closed_within(c: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 1024];
    while t0.elapsed() < limit {
        match c.read(&mut buf) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(t0.elapsed()),
        }
    }
    None
}

/// A request head sent one byte every 300 ms never finishes: the listener closes it at its 5 s
/// header timeout however many bytes keep arriving, while other clients are served.
#[test]
fn a_trickled_request_head_is_closed_at_the_header_timeout() {
    in_netns(|| {
        let config = "[dns]\nlisten = [\"127.0.0.1:0\"]\n\n[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n\n\
             [redirect]\nlisten = [\"127.0.0.1:80\"]\nhost = \"owa.z.test\"\n\n\
             [admin]\nlisten = \"127.0.0.1:8053\"\n";
        let s = Mailns::start_config(zone_dir(), config);
        let me: IpAddr = "127.0.0.1".parse().unwrap();
        let port80: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let results = Arc::new(Mutex::new(Vec::new()));
        let tricklers: Vec<_> = [s.admin, port80]
            .into_iter()
            .map(|to| {
                let results = results.clone();
                std::thread::spawn(move || {
                    let mut c = connect_from(me, to).unwrap();
                    let head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Trickle: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                    let t0 = Instant::now();
                    let mut closed_at = None;
                    for b in head {
                        if c.write_all(&[*b]).is_err() {
                            closed_at = Some(t0.elapsed());
                            break;
                        }
                        if closed_within(&mut c, Duration::from_millis(300)).is_some() {
                            closed_at = Some(t0.elapsed());
                            break;
                        }
                    }
                    results.lock().unwrap().push((to, closed_at));
                })
            })
            .collect();
        // Meanwhile an ordinary client is served at once.
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(http_get(s.admin, "/livez").0, 200);
        for t in tricklers {
            t.join().unwrap();
        }
        for (to, closed_at) in results.lock().unwrap().iter() {
            let at = closed_at.unwrap_or_else(|| panic!("{to}: the trickler was never closed"));
            assert!(
                at >= Duration::from_millis(4500) && at < Duration::from_secs(8),
                "{to}: closed after {at:?}, the header timeout is 5 s"
            );
        }
    });
}

/// A backend that reads what it gets and never closes or answers (a half-open peer).
fn silent_backend() -> (SocketAddr, Arc<Mutex<Vec<TcpStream>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for c in l.incoming().map_while(Result::ok) {
            h.lock().unwrap().push(c);
        }
    });
    (addr, held)
}

/// The client half-closes and the backend never does: once `half_close_timeout` has passed
/// mailns closes both sides, and the relay counts no open connection.
#[test]
fn a_half_open_relayed_connection_is_closed_at_the_half_close_timeout() {
    let (backend, held) = silent_backend();
    let config = format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n\n[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n\n\
         [health]\ninterval = \"30s\"\nsentinels = false\n\n\
         [[check]]\nname = \"port\"\nkind = \"tcp\"\nport = {port}\n\n\
         [[server]]\nname = \"s1\"\naddresses = [\"127.0.0.1\"]\n\n\
         [[relay]]\nname = \"r\"\nkind = \"tcp\"\nlisten = [\"127.0.0.1:0\"]\nbackend_ports = [{port}]\n\
         servers = [\"s1\"]\nchecks = [\"port\"]\nhalf_close_timeout = \"1s\"\nidle_timeout = \"1h\"\n",
        port = backend.port()
    );
    let s = Mailns::start_config(zone_dir(), &config);
    let vip = s.relay("r")[0];
    let probes = held.lock().unwrap().len();
    let mut c = TcpStream::connect(vip).unwrap();
    c.write_all(b"hello").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    // The backend gets the bytes and the FIN, and says nothing. A health probe may connect
    // too, before or after the relayed connection: the relayed one is the one that says hello.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut b = loop {
        assert!(
            Instant::now() < deadline,
            "no backend connection got the bytes and the FIN"
        );
        let next = {
            let mut h = held.lock().unwrap();
            (h.len() > probes).then(|| h.remove(probes))
        };
        let Some(mut b) = next else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let mut got = Vec::new();
        b.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = b.read_to_end(&mut got);
        if got == b"hello" {
            break b;
        }
    };
    let t0 = Instant::now();
    let closed = closed_within(&mut c, Duration::from_secs(5));
    let took = closed.expect("mailns closed the half-open connection");
    assert!(
        took < Duration::from_secs(3),
        "closed {:?} after the FIN",
        t0.elapsed()
    );
    // The backend's side is closed too: a write soon fails.
    let backend_closed = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        b.write_all(b"x").is_err()
    });
    assert!(backend_closed, "mailns closed the backend side");
    wait_for(Duration::from_secs(3), "no open relayed connection", || {
        active_relayed(s.admin) == 0
    });
}

/// `mailns_relay_connections_active`, summed over backends.
fn active_relayed(admin: SocketAddr) -> u64 {
    let (_, m) = http_get(admin, "/metrics");
    m.lines()
        .filter(|l| l.starts_with("mailns_relay_connections_active"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// 10,000 idle relayed connections (or as many as the open-file limit allows) from 100 client
/// addresses are held at once; a new client is
/// still relayed; mailns's memory per held connection is reported (and bounded).
#[test]
fn ten_thousand_idle_relayed_connections_are_held_where_the_fd_limit_allows() {
    in_netns(|| {
        // Each relayed connection is two descriptors in mailns (and two here: the client's and
        // the backend's). 10,000 where the open-file limit allows; a box whose hard limit is
        // lower (this one: 20,000, without CAP_SYS_RESOURCE to raise it) holds as many as fit.
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        let want = 10_000usize;
        let fit = usize::try_from(hard.saturating_sub(300) / 2).unwrap_or(usize::MAX);
        let n = want.min(fit);
        if n < want {
            println!("RLIMIT_NOFILE hard limit {hard}: holding {n} connections, not {want}");
        }
        // The backend's accept queue as deep as mailns's, so a burst of relayed connects is not
        // dropped at the backend (std's listener allows 128).
        let l = {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            let addr: SocketAddr = "127.0.0.2:7000".parse().unwrap();
            sock.bind(&addr.into()).unwrap();
            sock.listen(4096).unwrap();
            TcpListener::from(sock)
        };
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::with_capacity(n + 16)));
        {
            let (accepted, held) = (accepted.clone(), held.clone());
            std::thread::spawn(move || {
                for c in l.incoming().map_while(Result::ok) {
                    held.lock().unwrap().push(c);
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let config = "[dns]\nlisten = [\"127.0.0.1:0\"]\n\n[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n\n\
             [health]\ninterval = \"30s\"\n\n\
             [[check]]\nname = \"port\"\nkind = \"tcp\"\nport = 7000\n\n\
             [[server]]\nname = \"s1\"\naddresses = [\"127.0.0.2\"]\n\n\
             [[relay]]\nname = \"r\"\nkind = \"tcp\"\nlisten = [\"127.0.0.1:7000\"]\n\
             servers = [\"s1\"]\nchecks = [\"port\"]\nmax_connections = 20000\nmax_per_client = 1000\nhalf_close_timeout = \"1s\"\n";
        let s = Mailns::start_config(zone_dir(), config);
        let vip: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        // Warm: one relayed connection, then the baseline.
        drop(TcpStream::connect(vip).unwrap());
        std::thread::sleep(Duration::from_millis(300));
        let before = rss_kb(s.pid());
        let base = accepted.load(Ordering::Relaxed);
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            let from: IpAddr = format!("127.0.{}.{}", 10 + i / 100, 1 + i % 100)
                .parse()
                .unwrap();
            clients.push(connect_from(from, vip).expect("connect to the relay"));
            // In steps of 500, so the listen backlog never overflows (a full accept queue drops
            // handshakes, which the kernel then retries for a minute).
            if (i + 1) % 500 == 0 {
                wait_for(Duration::from_secs(30), "the relay keeps up", || {
                    accepted.load(Ordering::Relaxed) > base + i
                });
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while accepted.load(Ordering::Relaxed) < base + n {
            if Instant::now() > deadline {
                let log: Vec<String> = s.log.try_iter().collect();
                panic!(
                    "{} of {n} relayed, {} active; mailns log:\n{}",
                    accepted.load(Ordering::Relaxed) - base,
                    active_relayed(s.admin),
                    log.iter()
                        .rev()
                        .take(20)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        let after = rss_kb(s.pid());
        let per_conn = after.saturating_sub(before) as f64 * 1024.0 / n as f64;
        let fds = std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
            .unwrap()
            .count();
        println!(
            "{n} idle relayed connections: mailns RSS {before} kB -> {after} kB, {per_conn:.0} bytes per connection, {fds} descriptors"
        );
        // All held (the warm-up connection may still be half-closed: its backend never closes).
        let active = active_relayed(s.admin);
        assert!(
            active == n as u64 || active == n as u64 + 1,
            "{active} of {n} held"
        );
        // A new client still gets through, and bytes flow on an old one.
        let mut fresh = connect_from("127.0.200.1".parse().unwrap(), vip).unwrap();
        fresh.write_all(b"ping").unwrap();
        wait_for(Duration::from_secs(10), "the new client relayed", || {
            accepted.load(Ordering::Relaxed) > base + n
        });
        // Idle connections cost no copy buffer (readiness first): well under 16 KiB each.
        assert!(
            per_conn < 16.0 * 1024.0,
            "{per_conn:.0} bytes per idle connection"
        );
        drop(clients);
        wait_for(Duration::from_secs(30), "every connection closed", || {
            active_relayed(s.admin) <= 1
        });
    });
}
