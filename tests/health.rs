//! Health-driven answers end to end: the real binary probing simulated Exchange servers on
//! distinct loopback addresses, answers checked over DNS while servers die, revive, fail one
//! protocol, hang or flap.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use mailns::sim;
use sim::{Proto, Sim};

/// A farm of three CAS (127.N.0.1-3) with HTTPS (owa, autodiscover), HTTP (mapi), SMTP, IMAP.
struct Farm {
    net: u8,
    https: Vec<Arc<Sim>>,
    http: Vec<Arc<Sim>>,
    smtp: Vec<Arc<Sim>>,
    imap: Vec<Arc<Sim>>,
    _rt: Arc<tokio::runtime::Runtime>,
}

impl Farm {
    fn start(net: u8) -> Self {
        let rt = sim::runtime();
        let tls = sim::tls_server(&["owa.mail.test", "autodiscover.mail.test"]);
        let ip = |h: u8| IpAddr::from([127, net, 0, h]);
        let mut farm = Self {
            net,
            https: vec![],
            http: vec![],
            smtp: vec![],
            imap: vec![],
            _rt: rt.clone(),
        };
        for h in 1..=3u8 {
            let port = |v: &Vec<Arc<Sim>>| v.first().map_or(0, |s| s.addr.port());
            let s = Sim::start(&rt, ip(h), port(&farm.https), Proto::Https(tls.clone()));
            farm.https.push(s);
            let s = Sim::start(&rt, ip(h), port(&farm.http), Proto::Http);
            farm.http.push(s);
            let s = Sim::start(&rt, ip(h), port(&farm.smtp), Proto::Smtp);
            farm.smtp.push(s);
            let s = Sim::start(&rt, ip(h), port(&farm.imap), Proto::Imap);
            farm.imap.push(s);
        }
        farm
    }

    fn ip(&self, h: u8) -> String {
        format!("127.{}.0.{h}", self.net)
    }

    fn zone(&self) -> String {
        let ip = |h| self.ip(h);
        let mut z = String::from("$ORIGIN mail.test.\n$TTL 300\n@ SOA ns1 h 1 3600 900 1209600 60\n@ NS ns1\nns1 A 127.0.0.53\n");
        z += &format!(
            "@ MX 10 mx1\n@ MX 20 mx2\nmx1 A {}\nmx2 A {}\n",
            ip(1),
            ip(2)
        );
        for name in ["owa", "autodiscover", "outlook", "imap"] {
            for h in 1..=3 {
                z += &format!("{name} 60 A {}\n", ip(h));
            }
        }
        z +=
            "_autodiscover._tcp SRV 0 0 443 autodiscover\nwebmail CNAME owa\nstatic A 127.0.0.99\n";
        z
    }

    /// A config with the given extra TOML (servers, service tweaks) appended.
    fn config(&self, extra: &str, services: &str) -> String {
        format!(
            r#"[dns]
listen = ["127.0.0.1:0"]
udp_workers = 1

[health]
interval = "1s"
timeout = "400ms"
rise = 2
fall = 2
fast_interval = "250ms"
startup_timeout = "5s"

[[zone]]
name = "mail.test"
file = "mail.test.zone"

[[check]]
name = "owa"
kind = "https"
port = {https}
path = "/owa/healthcheck.htm"
host = "owa.mail.test"
tls_verify = false

[[check]]
name = "autodiscover"
kind = "https"
port = {https}
path = "/Autodiscover/healthcheck.htm"
host = "autodiscover.mail.test"
tls_verify = false

[[check]]
name = "mapi"
kind = "http"
port = {http}
path = "/mapi/healthcheck.htm"

[[check]]
name = "smtp"
kind = "smtp"
port = {smtp}
mail_from = "probe@mail.test"

[[check]]
name = "imap"
kind = "imap"
port = {imap}

{services}
{extra}
"#,
            https = self.https[0].addr.port(),
            http = self.http[0].addr.port(),
            smtp = self.smtp[0].addr.port(),
            imap = self.imap[0].addr.port(),
        )
    }

    fn start_mailns(&self, extra: &str, services: &str) -> Mailns {
        self.start_mailns_zone("", extra, services)
    }

    /// Starts mailns with `zone_extra` appended to the farm's zone.
    fn start_mailns_zone(&self, zone_extra: &str, extra: &str, services: &str) -> Mailns {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mail.test.zone"), self.zone() + zone_extra).unwrap();
        Mailns::start_config(dir, &self.config(extra, services))
    }
}

const SERVICES: &str = r#"
[[service]]
name = "owa.mail.test"
checks = ["owa"]

[[service]]
name = "autodiscover.mail.test"
checks = ["autodiscover"]

[[service]]
name = "outlook.mail.test"
checks = ["mapi"]

[[service]]
name = "imap.mail.test"
checks = ["imap"]

[[service]]
name = "mx1.mail.test"
checks = ["smtp"]

[[service]]
name = "mx2.mail.test"
checks = ["smtp"]
"#;

#[test]
fn killed_server_leaves_every_name_and_returns_after_rise() {
    let farm = Farm::start(101);
    let s = farm.start_mailns("", SERVICES);
    let all = vec![farm.ip(1), farm.ip(2), farm.ip(3)];
    assert_eq!(
        a_set(s.addr, "owa.mail.test."),
        all,
        "health known at ready"
    );
    // Kill every service of server 2.
    farm.https[1].kill();
    farm.http[1].kill();
    farm.imap[1].kill();
    let without = vec![farm.ip(1), farm.ip(3)];
    // Bound: interval × fall + one interval (1 s × 2 + 1 s); the sentinel makes it much faster.
    let t = wait_for(
        Duration::from_secs(3),
        "server 2 out of owa, autodiscover, outlook, imap",
        || {
            ["owa", "autodiscover", "outlook", "imap"]
                .iter()
                .all(|n| a_set(s.addr, &format!("{n}.mail.test.")) == without)
        },
    );
    eprintln!("detected in {t:?}");
    // A CNAME to a service name follows health too.
    assert_eq!(a_set(s.addr, "webmail.mail.test."), without);
    farm.https[1].revive();
    farm.http[1].revive();
    farm.imap[1].revive();
    wait_for(Duration::from_secs(4), "server 2 back after rise", || {
        a_set(s.addr, "owa.mail.test.") == all
    });
    wait_for(Duration::from_secs(4), "server 2 back in outlook", || {
        a_set(s.addr, "outlook.mail.test.") == all
    });
    // Static names never change.
    assert_eq!(a_set(s.addr, "static.mail.test."), ["127.0.0.99"]);
    // The certificates the https checks saw are on the dashboard, one per probed port.
    let doc = status_json(&s);
    let seen = doc["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["source"].as_str().unwrap().starts_with("check "))
        .count();
    assert_eq!(seen, 6, "owa and autodiscover on three servers: {doc:#}");
}

#[test]
fn owa_failing_leaves_owa_but_not_autodiscover() {
    let farm = Farm::start(102);
    let s = farm.start_mailns("", SERVICES);
    farm.https[0].fail_path("/owa/healthcheck.htm", true);
    wait_for(Duration::from_secs(4), "server 1 out of owa", || {
        a_set(s.addr, "owa.mail.test.") == vec![farm.ip(2), farm.ip(3)]
    });
    assert_eq!(
        a_set(s.addr, "autodiscover.mail.test."),
        vec![farm.ip(1), farm.ip(2), farm.ip(3)]
    );
}

#[test]
fn a_hung_server_is_detected() {
    let farm = Farm::start(103);
    let s = farm.start_mailns("", SERVICES);
    // Accepts connections, never answers: TCP-connect checks never notice this.
    farm.https[2].behaviour.hang.store(true, Ordering::Relaxed);
    // Bound: interval + fall × timeout (+ the fast interval between the two failures).
    wait_for(Duration::from_secs(3), "hung server 3 out of owa", || {
        a_set(s.addr, "owa.mail.test.") == vec![farm.ip(1), farm.ip(2)]
    });
}

#[test]
fn a_flapping_server_does_not_flap_answers() {
    let farm = Farm::start(104);
    let s = farm.start_mailns("", SERVICES);
    let all = vec![farm.ip(1), farm.ip(2), farm.ip(3)];
    farm.http[0].behaviour.flap.store(true, Ordering::Relaxed);
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(
            a_set(s.addr, "outlook.mail.test."),
            all,
            "alternating 200/503 never reaches fall = 2"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        farm.http[0].behaviour.hits.load(Ordering::Relaxed) >= 4,
        "it was probed throughout"
    );
}

#[test]
fn mx_and_srv_leave_out_dead_targets() {
    let farm = Farm::start(105);
    let s = farm.start_mailns("", SERVICES);
    let mx = udp(s.addr, "mail.test.", RecordType::MX, Some(1232));
    assert_eq!(mx.answers.len(), 2);
    // mx1's transport drains: 220 still, 421 to MAIL FROM.
    farm.smtp[0].fail_path("draining", true);
    wait_for(Duration::from_secs(4), "mx1 out of the MX answer", || {
        let m = udp(s.addr, "mail.test.", RecordType::MX, Some(1232));
        m.answers.len() == 1 && m.answers[0].data.to_string().contains("mx2")
    });
    let m = udp(s.addr, "mail.test.", RecordType::MX, Some(1232));
    let extra: Vec<String> = m
        .additionals
        .iter()
        .filter(|r| r.record_type() == RecordType::A)
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(
        extra,
        ["mx2.mail.test."],
        "additional: only healthy targets"
    );
    // Both down: all MX records again (never an empty MX set).
    farm.smtp[1].fail_path("draining", true);
    wait_for(
        Duration::from_secs(4),
        "both MX back when all are down",
        || {
            udp(s.addr, "mail.test.", RecordType::MX, Some(1232))
                .answers
                .len()
                == 2
        },
    );
    // SRV: autodiscover has healthy members, so the SRV stays.
    let srv = udp(
        s.addr,
        "_autodiscover._tcp.mail.test.",
        RecordType::SRV,
        Some(1232),
    );
    assert_eq!(srv.answers.len(), 1);
    assert_eq!(
        srv.additionals
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .count(),
        3
    );
}

#[test]
fn answers_rotate_with_the_policy_ttl() {
    let farm = Farm::start(106);
    let s = farm.start_mailns("", SERVICES);
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let m = udp(s.addr, "owa.mail.test.", RecordType::A, None);
        assert_eq!(m.answers.len(), 3);
        assert!(
            m.answers.iter().all(|r| r.ttl == 30),
            "policy TTL 30 (zone says 60)"
        );
        firsts.insert(m.answers[0].data.to_string());
        let t = tcp(s.addr, "owa.mail.test.", RecordType::A, None);
        firsts.insert(t.answers[0].data.to_string());
    }
    assert_eq!(
        firsts.len(),
        3,
        "every server comes first in turn: {firsts:?}"
    );
}

#[test]
fn drain_and_maint_from_config() {
    let farm = Farm::start(107);
    let servers = format!(
        "[[server]]\nname = \"cas01\"\naddresses = [\"{}\"]\nstate = \"drain\"\n\n[[server]]\nname = \"cas02\"\naddresses = [\"{}\"]\nstate = \"maint\"\n",
        farm.ip(1),
        farm.ip(2)
    );
    let s = farm.start_mailns(&servers, SERVICES);
    assert_eq!(a_set(s.addr, "owa.mail.test."), vec![farm.ip(3)]);
}

fn all_down_with(fallback: &str, extra_service: &str) -> (Farm, Mailns) {
    let farm = Farm::start(110 + fallback.len() as u8 % 20);
    let services = format!(
        "[[service]]\nname = \"owa.mail.test\"\nchecks = [\"owa\"]\nfallback = [{fallback}]\n{extra_service}\n"
    );
    let s = farm.start_mailns("", &services);
    for h in &farm.https {
        h.fail_path("/owa/healthcheck.htm", true);
    }
    (farm, s)
}

#[test]
fn all_down_fails_open_to_the_zone_set_by_default() {
    let farm = Farm::start(121);
    let s = farm.start_mailns(
        "",
        "[[service]]\nname = \"owa.mail.test\"\nchecks = [\"owa\"]\n",
    );
    for h in &farm.https {
        h.fail_path("/owa/healthcheck.htm", true);
    }
    // Wait for two to go down, then the third: the answer must become the full set, not one.
    wait_for(
        Duration::from_secs(4),
        "the probes see every server down",
        || {
            farm.https
                .iter()
                .all(|h| h.behaviour.hits.load(Ordering::Relaxed) >= 3)
        },
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        a_set(s.addr, "owa.mail.test."),
        vec![farm.ip(1), farm.ip(2), farm.ip(3)]
    );
}

#[test]
fn all_down_to_relay_addresses() {
    let (farm, s) = all_down_with("\"relay\", \"zone\"", "relay_addresses = [\"127.0.9.1\"]");
    wait_for(Duration::from_secs(4), "relay address answered", || {
        a_set(s.addr, "owa.mail.test.") == ["127.0.9.1"]
    });
    drop(farm);
}

#[test]
fn all_down_to_an_empty_answer() {
    let (farm, s) = all_down_with("\"empty\"", "");
    wait_for(Duration::from_secs(4), "empty answer", || {
        let m = udp(s.addr, "owa.mail.test.", RecordType::A, None);
        m.metadata.response_code == ResponseCode::NoError && m.answers.is_empty()
    });
    drop(farm);
}

#[test]
fn all_down_to_servfail() {
    let (farm, s) = all_down_with("\"servfail\"", "");
    wait_for(Duration::from_secs(4), "SERVFAIL", || {
        udp(s.addr, "owa.mail.test.", RecordType::A, None)
            .metadata
            .response_code
            == ResponseCode::ServFail
    });
    drop(farm);
}

#[test]
fn preferred_site_and_delayed_failover_to_the_standby() {
    let farm = Farm::start(122);
    let servers = format!(
        "[[server]]\nname = \"cas01\"\naddresses = [\"{}\"]\nsite = \"primary\"\n\n\
         [[server]]\nname = \"cas02\"\naddresses = [\"{}\"]\nsite = \"primary\"\n\n\
         [[server]]\nname = \"cas03\"\naddresses = [\"{}\"]\nsite = \"standby\"\n",
        farm.ip(1),
        farm.ip(2),
        farm.ip(3)
    );
    let services = "[[service]]\nname = \"owa.mail.test\"\nchecks = [\"owa\"]\nsite = \"primary\"\nfailover_delay = \"3s\"\nfallback = [\"other-sites\", \"zone\"]\n";
    let s = farm.start_mailns(&servers, services);
    assert_eq!(
        a_set(s.addr, "owa.mail.test."),
        vec![farm.ip(1), farm.ip(2)],
        "standby not answered"
    );
    farm.https[0].kill();
    farm.https[1].kill();
    let down_at = Instant::now();
    // During the delay: the primary is still answered (as a plain round robin would).
    wait_for(Duration::from_secs(2), "primary detected down", || {
        udp(s.addr, "owa.mail.test.", RecordType::A, None)
            .answers
            .len()
            == 2
    });
    let t = wait_for(Duration::from_secs(6), "standby activated", || {
        a_set(s.addr, "owa.mail.test.") == vec![farm.ip(3)]
    });
    assert!(
        down_at.elapsed() >= Duration::from_secs(3),
        "not before the 3 s delay ({t:?})"
    );
    // The primary returns: it is answered again at once (after rise), the standby leaves.
    farm.https[0].revive();
    wait_for(Duration::from_secs(4), "primary back", || {
        a_set(s.addr, "owa.mail.test.") == vec![farm.ip(1)]
    });
}

/// A real resolver in front: unbound with a stub-zone to mailns answers clients with the live set
/// and honours the short TTL.
#[test]
fn unbound_in_front_sees_the_live_set_and_the_short_ttl() {
    let farm = Farm::start(123);
    let services = "[[service]]\nname = \"owa.mail.test\"\nchecks = [\"owa\"]\nttl = 2\n";
    let s = farm.start_mailns("", services);
    let resolver = Unbound::start("127.0.0.1", "mail.test", s.addr, None);
    let via = |name: &str| resolver.ask(name);
    wait_for(Duration::from_secs(10), "unbound answers", || {
        via("owa.mail.test.").is_some_and(|m| m.answers.len() == 3)
    });
    let m = via("owa.mail.test.").unwrap();
    assert!(
        m.answers.iter().all(|r| r.ttl <= 2),
        "the short TTL reaches the client: {:?}",
        m.answers
    );
    farm.https[0].kill();
    // Detection plus the 2 s TTL: the resolver's cache never holds the dead server for longer.
    let t = wait_for(
        Duration::from_secs(6),
        "unbound drops the dead server",
        || {
            via("owa.mail.test.").is_some_and(|m| {
                m.answers.len() == 2 && m.answers.iter().all(|r| r.data.to_string() != farm.ip(1))
            })
        },
    );
    eprintln!("resolver saw the change after {t:?}");
}

/// AAAA members are checked and answered exactly like A members, each family on its own.
#[test]
fn aaaa_members_follow_health_like_a() {
    let farm = Farm::start(124);
    let rt = sim::runtime();
    let v6 = Sim::start(
        &rt,
        "::1".parse().unwrap(),
        farm.https[0].addr.port(),
        Proto::Https(sim::tls_server(&["owa.mail.test"])),
    );
    let services =
        "[[service]]\nname = \"owa.mail.test\"\nchecks = [\"owa\"]\nfallback = [\"empty\"]\n";
    let s = farm.start_mailns_zone("owa 60 AAAA ::1\n", "", services);
    let aaaa = |s: &Mailns| udp(s.addr, "owa.mail.test.", RecordType::AAAA, None);
    let m = aaaa(&s);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].ttl, 30);
    v6.kill();
    wait_for(
        Duration::from_secs(4),
        "the dead IPv6 member leaves the AAAA answer",
        || {
            let m = aaaa(&s);
            m.metadata.response_code == ResponseCode::NoError && m.answers.is_empty()
        },
    );
    assert_eq!(
        a_set(s.addr, "owa.mail.test.").len(),
        3,
        "the A family is unaffected"
    );
    v6.revive();
    wait_for(Duration::from_secs(4), "back after rise", || {
        aaaa(&s).answers.len() == 1
    });
}

/// Reloads keep probes running: a reload every 150 ms, each inside a probe's 400 ms timeout,
/// still lets a hung server be found within the same bound as without reloads, and lets it
/// back in after it recovers. An engine that restarted its probes on every reload never
/// finished one, and so never saw the hang.
#[test]
fn reloads_inside_every_probe_do_not_delay_detection() {
    let farm = Farm::start(125);
    let s = farm.start_mailns("", SERVICES);
    let all = vec![farm.ip(1), farm.ip(2), farm.ip(3)];
    wait_for(Duration::from_secs(10), "all three in owa", || {
        a_set(s.addr, "owa.mail.test.") == all
    });
    let reloads = |s: &Mailns| status_json(s)["config"]["reloads"].as_u64().unwrap_or(0);
    let before = reloads(&s);
    let storm = |s: &Mailns, what: &str, want: &[String], limit: Duration| {
        let started = Instant::now();
        loop {
            s.signal("HUP");
            if a_set(s.addr, "owa.mail.test.") == want {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "{what}: not after {limit:?} of reloads"
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    };
    farm.https[2].behaviour.hang.store(true, Ordering::Relaxed);
    // interval + fall × timeout, and the fast interval between the two failures, as without
    // reloads (a_hung_server_is_detected).
    let out = storm(
        &s,
        "hung server 3 out of owa",
        &all[..2],
        Duration::from_secs(3),
    );
    farm.https[2].behaviour.hang.store(false, Ordering::Relaxed);
    // The probe in flight times out, then rise passes at the fast interval.
    let back = storm(&s, "server 3 back in owa", &all, Duration::from_secs(4));
    let done = reloads(&s) - before;
    assert!(done >= 10, "the reloads took effect: {done}");
    eprintln!("out after {out:?}, back after {back:?}, {done} reloads");
}
