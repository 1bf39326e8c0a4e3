//! Heartbeats on the held sentinel connections, end to end at mailns's default check timing
//! (interval 2 s, timeout 1.5 s, rise 2, fall 2, heartbeat 500 ms): for each kind of check a
//! hung server and a dropped path leave the answers within 3 s; a slow but alive server, one
//! that pauses for a second, and one that closes its connections itself stay in, at no more
//! new connections than the probes make.
//!
//! Each test runs in its own network namespace (standard ports, an `iptables` DROP rule that
//! touches nothing else) with three simulated Exchange servers on 127.0.1.1-3, each a DNS
//! member of one name and a backend of one relay: both must leave it out.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mailns::sim::{self, Proto, Sim};

/// The bound on the worst case; the benchmark (`bench/detect.py`) reports the spread.
const BOUND: Duration = Duration::from_secs(3);
const NAME: &str = "svc.mail.test.";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Https,
    Smtp,
    Imap,
    Pop3,
    Tcp,
}

impl Kind {
    fn port(self) -> u16 {
        match self {
            Self::Https => 443,
            Self::Smtp => 25,
            Self::Imap => 143,
            Self::Pop3 => 110,
            Self::Tcp => 135,
        }
    }

    fn proto(self) -> Proto {
        match self {
            Self::Https => Proto::Https(sim::tls_server(&["svc.mail.test"])),
            Self::Smtp => Proto::Smtp,
            Self::Imap => Proto::Imap,
            Self::Pop3 => Proto::Pop3,
            Self::Tcp => Proto::Echo("rpc".into()),
        }
    }

    fn check(self) -> &'static str {
        match self {
            Self::Https => {
                "kind = \"https\"\nport = 443\npath = \"/owa/healthcheck.htm\"\nhost = \"svc.mail.test\"\ntls_verify = false"
            }
            Self::Smtp => "kind = \"smtp\"\nport = 25",
            Self::Imap => "kind = \"imap\"\nport = 143",
            Self::Pop3 => "kind = \"pop3\"\nport = 110",
            Self::Tcp => "kind = \"tcp\"\nport = 135",
        }
    }
}

struct Farm {
    sims: Vec<Arc<Sim>>,
    mailns: Mailns,
    _rt: Arc<tokio::runtime::Runtime>,
}

fn ip(h: u8) -> String {
    format!("127.0.1.{h}")
}

impl Farm {
    /// Three servers of `kind` and mailns watching them with the default timing.
    fn start(kind: Kind, health: &str) -> Self {
        let rt = sim::runtime();
        let sims = (1..=3u8)
            .map(|h| Sim::start(&rt, IpAddr::from([127, 0, 1, h]), kind.port(), kind.proto()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut zone = String::from(
            "$ORIGIN mail.test.\n$TTL 300\n@ SOA ns1 h 1 3600 900 1209600 60\n@ NS ns1\nns1 A 127.0.0.53\n",
        );
        for h in 1..=3 {
            zone += &format!("svc 10 A {}\n", ip(h));
        }
        std::fs::write(dir.path().join("mail.test.zone"), zone).unwrap();
        let config = format!(
            "[dns]\nlisten = [\"127.0.0.1:53\"]\nudp_workers = 1\n\n[health]\nstartup_timeout = \"5s\"\n{health}\n\n\
             [[zone]]\nname = \"mail.test\"\nfile = \"mail.test.zone\"\n\n\
             [[check]]\nname = \"c\"\n{}\n\n[[service]]\nname = \"svc.mail.test\"\nchecks = [\"c\"]\n\n{}\n\
             [[relay]]\nname = \"vip\"\nlisten = [\"127.0.0.1:0\"]\nservers = [\"ex1\", \"ex2\", \"ex3\"]\n\
             backend_port = {}\nchecks = [\"c\"]\n",
            kind.check(),
            (1..=3)
                .map(|h| format!("[[server]]\nname = \"ex{h}\"\naddresses = [\"{}\"]\n", ip(h)))
                .collect::<String>(),
            kind.port(),
        );
        let mailns = Mailns::start_config(dir, &config);
        let farm = Self {
            sims,
            mailns,
            _rt: rt,
        };
        farm.wait_all_in();
        farm
    }

    fn answers(&self) -> Vec<String> {
        a_set(self.mailns.addr, NAME)
    }

    fn wait_all_in(&self) {
        wait_for(
            Duration::from_secs(15),
            "all three servers answered",
            || self.answers() == vec![ip(1), ip(2), ip(3)] && (1..=3).all(|h| self.relay_usable(h)),
        );
    }

    /// No pair went down since start: the transitions the dashboard shows have no "down".
    fn assert_never_down(&self, kind: Kind) {
        let status = status_json(&self.mailns);
        let downs: Vec<_> = status["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["to"] == "down")
            .collect();
        assert!(downs.is_empty(), "{kind:?}: {downs:?}");
    }

    /// Whether the relay takes new connections to server `h`.
    fn relay_usable(&self, h: u8) -> bool {
        let status = status_json(&self.mailns);
        status["relays"][0]["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == format!("ex{h}"))
            .expect("the relay lists the server")["usable"]
            .as_bool()
            .unwrap()
    }

    /// Injects `fail` on server 2 at a random phase of the probe schedule, returns how long
    /// until the answers left it out, and repairs it with `repair`.
    fn time_out(&self, fail: impl FnOnce(), repair: impl FnOnce()) -> Duration {
        std::thread::sleep(Duration::from_millis(rand::random_range(300..2300)));
        let start = Instant::now();
        fail();
        // Out of the DNS answers and out of the relay's choices: both count.
        wait_for(
            Duration::from_secs(10),
            "server 2 out of the answers",
            || !self.answers().contains(&ip(2)),
        );
        wait_for(Duration::from_secs(10), "server 2 out of the relay", || {
            !self.relay_usable(2)
        });
        let gone = start.elapsed();
        repair();
        self.wait_all_in();
        gone
    }
}

fn iptables(op: &str, target: &str) {
    let ok = Command::new(require_tool("iptables"))
        .args([op, "INPUT", "-d", target, "-j", "DROP"])
        .status()
        .expect("iptables")
        .success();
    assert!(ok, "iptables {op}");
}

/// A hung server (every connection stops answering, the kernel still accepts) and a dropped
/// path (iptables DROP), twice each.
fn hung_and_dropped(kind: Kind, hung: bool) {
    in_netns(move || {
        let farm = Farm::start(kind, "");
        let mut times = Vec::new();
        for _ in 0..2 {
            if hung {
                let b = farm.sims[1].behaviour.clone();
                let b2 = b.clone();
                times.push((
                    "hung",
                    farm.time_out(
                        move || b.hang.store(true, Ordering::Relaxed),
                        move || b2.hang.store(false, Ordering::Relaxed),
                    ),
                ));
            }
            times.push((
                "dropped",
                farm.time_out(|| iptables("-I", &ip(2)), || iptables("-D", &ip(2))),
            ));
        }
        eprintln!("{kind:?}: out of the answers and the relay after {times:?}");
        for (what, t) in &times {
            assert!(
                t <= &BOUND,
                "{kind:?} {what}: {t:?} > {BOUND:?} ({times:?})"
            );
        }
    });
}

#[test]
fn https_hung_and_dropped_leave_within_the_bound() {
    hung_and_dropped(Kind::Https, true);
}

#[test]
fn smtp_hung_and_dropped_leave_within_the_bound() {
    hung_and_dropped(Kind::Smtp, true);
}

#[test]
fn imap_hung_and_dropped_leave_within_the_bound() {
    hung_and_dropped(Kind::Imap, true);
}

#[test]
fn pop3_hung_and_dropped_leave_within_the_bound() {
    hung_and_dropped(Kind::Pop3, true);
}

/// A bare TCP port has no heartbeat to go unanswered: the kernel's keepalive and user timeout
/// report a dropped path. A hung process behind a TCP-only check is not detectable at all (the
/// kernel completes handshakes and acknowledges keepalives for it): that is what L7 checks are for.
#[test]
fn tcp_dropped_leaves_within_the_bound() {
    hung_and_dropped(Kind::Tcp, false);
}

/// Slow (every answer 300 ms late) for 8 s, then three 1 s pauses: never out of the answers.
fn stays_in(kind: Kind) {
    in_netns(move || {
        let farm = Farm::start(kind, "");
        let b = farm.sims[1].behaviour.clone();
        let watch = |d: Duration| {
            let end = Instant::now() + d;
            while Instant::now() < end {
                let got = farm.answers();
                assert!(
                    got.contains(&ip(2)),
                    "{kind:?}: alive server 2 left: {got:?}"
                );
                std::thread::sleep(Duration::from_millis(25));
            }
        };
        b.answer_delay_ms.store(300, Ordering::Relaxed);
        watch(Duration::from_secs(8));
        b.answer_delay_ms.store(0, Ordering::Relaxed);
        for _ in 0..3 {
            watch(Duration::from_millis(rand::random_range(1500..3000)));
            b.hang.store(true, Ordering::Relaxed);
            watch(Duration::from_secs(1));
            b.hang.store(false, Ordering::Relaxed);
        }
        watch(Duration::from_secs(3));
        farm.assert_never_down(kind);
    });
}

#[test]
fn slow_and_pausing_https_server_stays_in() {
    stays_in(Kind::Https);
}

#[test]
fn slow_and_pausing_smtp_server_stays_in() {
    stays_in(Kind::Smtp);
}

#[test]
fn slow_and_pausing_imap_and_pop3_servers_stay_in() {
    stays_in(Kind::Imap);
    stays_in(Kind::Pop3);
}

/// A server that closes idle connections (1 s) is kept busy by the heartbeat: no new
/// connection beyond the probes'. One that closes every connection after 3 s however busy
/// (Exchange's `ConnectionTimeout`) is reconnected quietly: one connection per close, no
/// re-probe burst, no flap. The heartbeat's requests are counted at the server.
fn closes_itself(kind: Kind) {
    in_netns(move || {
        let farm = Farm::start(kind, "");
        let b = farm.sims[1].behaviour.clone();
        let window = |secs: u64| {
            let (c0, h0) = (
                b.accepted.load(Ordering::Relaxed),
                b.hits.load(Ordering::Relaxed),
            );
            let end = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < end {
                assert!(farm.answers().contains(&ip(2)), "{kind:?}: server 2 left");
                std::thread::sleep(Duration::from_millis(50));
            }
            (
                b.accepted.load(Ordering::Relaxed) - c0,
                b.hits.load(Ordering::Relaxed) - h0,
            )
        };
        // Baseline: probes every 2 s (one connection each), heartbeats twice a second.
        let (conns, hits) = window(10);
        eprintln!("{kind:?} steady: {conns} connections, {hits} requests in 10 s");
        assert!(
            conns <= 7,
            "{kind:?}: {conns} connections in 10 s: only the probes'"
        );
        assert!(
            hits >= 15,
            "{kind:?}: heartbeats reach the server ({hits} requests)"
        );
        b.idle_close_ms.store(1000, Ordering::Relaxed);
        let (conns, _) = window(10);
        eprintln!("{kind:?} idle close 1 s: {conns} connections in 10 s");
        assert!(
            conns <= 7,
            "{kind:?}: the heartbeat keeps the connection from idling"
        );
        b.idle_close_ms.store(0, Ordering::Relaxed);
        b.close_after_ms.store(3000, Ordering::Relaxed);
        let (conns, _) = window(12);
        eprintln!("{kind:?} closed after 3 s: {conns} connections in 12 s");
        assert!(
            conns <= 12,
            "{kind:?}: {conns} connections: a quiet reconnect per close, no bursts"
        );
        farm.assert_never_down(kind);
    });
}

#[test]
fn servers_that_close_connections_are_heartbeated_without_flapping() {
    closes_itself(Kind::Smtp);
    closes_itself(Kind::Https);
}
