//! The reference deployments under `config/examples/`, each started as shipped (standard ports,
//! in a private network namespace) against simulated Exchange servers, with one server failure.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mailns::sim::{self, Proto, Sim};

fn example_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/examples")
        .join(name)
}

/// Copies an example (and its subfolders) into a fresh folder, so state files land there.
fn copy_example(name: &str) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&example_dir(name), dir.path());
    dir
}

/// Starts mailns on an example, as shipped.
fn start_example(name: &str) -> Mailns {
    start_example_with(name, |c| c)
}

/// Starts mailns on an example whose config `edit` changed (a delay in seconds, say).
fn start_example_with(name: &str, edit: impl Fn(String) -> String) -> Mailns {
    let dir = copy_example(name);
    let path = dir.path().join("mailns.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(config)).unwrap();
    Mailns::start_path(dir, &path)
}

/// The first line a server behind `addr` says.
fn banner(addr: SocketAddr) -> Option<String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    Some(line.trim_end().to_string())
}

/// Simulated servers for one host: (port, protocol) each.
fn host(rt: &Arc<tokio::runtime::Runtime>, ip: IpAddr, ports: &[(u16, Proto)]) -> Vec<Arc<Sim>> {
    ports
        .iter()
        .map(|(port, proto)| Sim::start(rt, ip, *port, proto.clone()))
        .collect()
}

/// The state the dashboard gives server `name`.
fn server_state(s: &Mailns, name: &str) -> String {
    status_json(s)["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .map(|x| x["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// An HTTPS GET through a relay, verified against `ca`, with `name` resolving to `ip`.
fn https_get(name: &str, ip: &str, path: &str, ca: &Path) -> String {
    let out = Command::new(require_tool("curl"))
        .args([
            "-sS",
            "-m",
            "5",
            "--cacert",
            &ca.display().to_string(),
            "--resolve",
            &format!("{name}:443:{ip}"),
            &format!("https://{name}{path}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn every_example_passes_mailns_check() {
    for e in
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples")).unwrap()
    {
        let config = e.unwrap().path().join("mailns.toml");
        let out = Command::new(env!("CARGO_BIN_EXE_mailns"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn exchange2016_farms() {
    in_netns(|| {
        let rt = sim::runtime();
        let ports = |h: u8| {
            vec![
                (25, Proto::Smtp),
                (143, Proto::Imap),
                (993, Proto::Imap),
                (110, Proto::Pop3),
                (995, Proto::Pop3),
                (135, Proto::Echo(format!("cas0{h}"))),
                (60000, Proto::Echo(format!("cas0{h}"))),
                (60001, Proto::Echo(format!("cas0{h}"))),
                (80, Proto::Http),
            ]
        };
        let cas01 = host(&rt, [127, 0, 1, 1].into(), &ports(1));
        let _cas02 = host(&rt, [127, 0, 1, 2].into(), &ports(2));
        let s = start_example("exchange2016-farms");
        let ca = s.dir.path().join("certs/mail.example.test.pem");
        let vip = |port: u16| SocketAddr::from(([127, 0, 0, 10], port));
        let check_every_port = |want_rpc: Option<&str>| {
            for (port, greeting) in [
                (25, "220 "),
                (143, "* OK"),
                (993, "* OK"),
                (110, "+OK"),
                (995, "+OK"),
            ] {
                let b = banner(vip(port)).unwrap_or_default();
                assert!(b.starts_with(greeting), "port {port}: {b:?}");
            }
            // One client reaches one CAS on 135, 60000 and 60001.
            for i in 0..20 {
                let ids: Vec<String> = [135, 60000, 60001]
                    .iter()
                    .map(|p| hello(vip(*p), client(i)).expect("rpc relayed").0)
                    .collect();
                assert!(ids.iter().all(|x| *x == ids[0]), "client {i}: {ids:?}");
                if let Some(w) = want_rpc {
                    assert_eq!(ids[0], w, "client {i}");
                }
            }
            let body = https_get(
                "owa.mail.example.test",
                "127.0.0.10",
                "/owa/healthcheck.htm",
                &ca,
            );
            assert!(body.starts_with("200 OK"), "{body}");
            let (code, _) = http_get(vip(80), "/");
            assert_eq!(code, 301);
        };
        check_every_port(None);
        // The DNS names point at the virtual address.
        assert_eq!(
            a_set(
                SocketAddr::from(([127, 0, 0, 1], 53)),
                "owa.mail.example.test."
            ),
            ["127.0.0.10"]
        );

        // cas01 dies: every farm moves new connections to cas02.
        for sim in &cas01 {
            sim.kill();
        }
        wait_for(
            Duration::from_secs(8),
            "cas01 down on the dashboard",
            || server_state(&s, "cas01") == "down",
        );
        check_every_port(Some("cas02"));
    });
}

/// Which server (its address, from `X-Served-By`) answers `path` through the relay at
/// `vip:443` for a client bound to `from`.
fn served_by(name: &str, vip: &str, path: &str, from: IpAddr) -> String {
    let out = Command::new(require_tool("curl"))
        .args([
            "-sk",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "--interface",
            &from.to_string(),
            "-w",
            "%{http_code} %header{x-served-by}",
            "--resolve",
            &format!("{name}:443:{vip}"),
            &format!("https://{name}{path}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn unified_namespace() {
    in_netns(|| {
        let rt = sim::runtime();
        let tls = sim::tls_server(&["outlook.mail.example.test"]);
        let cas: Vec<Arc<Sim>> = (1..=3u8)
            .map(|h| Sim::start(&rt, [127, 0, 2, h].into(), 443, Proto::Https(tls.clone())))
            .collect();
        let _mailns = start_example("unified-namespace");
        let dns = SocketAddr::from(([127, 0, 0, 1], 53));
        let name = "outlook.mail.example.test";
        let all = ["127.0.2.1", "127.0.2.2", "127.0.2.3"];
        assert_eq!(a_set(dns, "outlook.mail.example.test."), all);
        assert_eq!(
            a_set(dns, "autodiscover.mail.example.test."),
            all,
            "CNAME to outlook"
        );
        // Every virtual directory through the one address.
        let me: IpAddr = "127.0.0.1".parse().unwrap();
        for vdir in [
            "owa",
            "ews",
            "mapi",
            "Microsoft-Server-ActiveSync",
            "oab",
            "ecp",
        ] {
            let r = served_by(name, "127.0.0.20", &format!("/{vdir}/healthcheck.htm"), me);
            assert!(r.starts_with("200 127.0.2."), "{vdir}: {r}");
        }
        // Persistence: each client keeps its server across requests and virtual directories.
        let pick = |i: u32| {
            let got: Vec<String> = [
                "/owa/healthcheck.htm",
                "/mapi/healthcheck.htm",
                "/ews/healthcheck.htm",
            ]
            .iter()
            .map(|p| served_by(name, "127.0.0.20", p, client(i)))
            .collect();
            assert!(got.iter().all(|g| *g == got[0]), "client {i}: {got:?}");
            got[0].trim_start_matches("200 ").to_string()
        };
        let before: Vec<String> = (0..12).map(pick).collect();
        assert!(
            before
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                >= 2,
            "{before:?}"
        );

        // cas02's MAPI fails: the name leaves cas02 in DNS, and only its relay clients move.
        cas[1].fail_path("/mapi/healthcheck.htm", true);
        wait_for(Duration::from_secs(8), "cas02 out of DNS", || {
            a_set(dns, "outlook.mail.example.test.") == ["127.0.2.1", "127.0.2.3"]
        });
        wait_for(Duration::from_secs(5), "cas02 out of the relay", || {
            (0..12).all(|i| pick(i) != "127.0.2.2")
        });
        for (i, b) in before.iter().enumerate() {
            if b != "127.0.2.2" {
                assert_eq!(&pick(i as u32), b, "client {i} keeps its server");
            }
        }
        // cas01 dies too: everything goes to cas03.
        cas[0].kill();
        wait_for(Duration::from_secs(8), "only cas03 left", || {
            a_set(dns, "outlook.mail.example.test.") == ["127.0.2.3"]
                && (0..12).all(|i| pick(i) == "127.0.2.3")
        });
    });
}

#[test]
fn dns_round_robin() {
    in_netns(|| {
        let rt = sim::runtime();
        let tls = sim::tls_server(&["owa.mail.example.test", "autodiscover.mail.example.test"]);
        let cas: Vec<Arc<Sim>> = (1..=3u8)
            .map(|h| Sim::start(&rt, [127, 0, 3, h].into(), 443, Proto::Https(tls.clone())))
            .collect();
        let _mailns = start_example("dns-round-robin");
        let dns = SocketAddr::from(([127, 0, 0, 1], 53));
        // A resolver in front, as clients see mailns.
        let resolver = Unbound::start("127.0.0.2", "mail.example.test", dns, Some(53));
        let all = ["127.0.3.1", "127.0.3.2", "127.0.3.3"];
        for name in ["owa.mail.example.test.", "autodiscover.mail.example.test."] {
            assert_eq!(a_set(dns, name), all);
            let m = udp(dns, name, hickory_proto::rr::RecordType::A, None);
            assert!(
                m.answers.iter().all(|r| r.ttl == 30),
                "policy TTL: {:?}",
                m.answers
            );
        }
        wait_for(Duration::from_secs(10), "unbound answers", || {
            resolver
                .ask("owa.mail.example.test.")
                .is_some_and(|m| m.answers.len() == 3)
        });
        // Static names keep the zone's TTL.
        let m = udp(
            dns,
            "mail.mail.example.test.",
            hickory_proto::rr::RecordType::A,
            None,
        );
        assert_eq!(m.answers[0].ttl, 300);

        // cas02 dies. Detection window: a probe interval (2 s) plus fall × timeout; the sentinel
        // usually sees the close at once.
        cas[1].kill();
        let t = wait_for(Duration::from_secs(5), "no answer has cas02", || {
            (0..10).all(|_| {
                a_set(dns, "owa.mail.example.test.") == ["127.0.3.1", "127.0.3.3"]
                    && a_set(dns, "autodiscover.mail.example.test.") == ["127.0.3.1", "127.0.3.3"]
            })
        });
        eprintln!("cas02 out of every answer {t:?} after the kill");
        // The resolver sees the same: a name it has not cached since the failure comes back with
        // the live set at once (a cached one follows within the 30 s policy TTL, not the zone's
        // 5 minutes).
        let m = resolver.ask("autodiscover.mail.example.test.").unwrap();
        let got: std::collections::BTreeSet<String> =
            m.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(
            got,
            ["127.0.3.1", "127.0.3.3"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "the resolver sees the same"
        );
    });
}

/// The MX hosts answered for `zone`, sorted.
fn mx_hosts(dns: SocketAddr, zone: &str) -> Vec<String> {
    let m = udp(dns, zone, hickory_proto::rr::RecordType::MX, None);
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::MX(mx) => Some(mx.exchange.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[test]
fn relayd_source_hash() {
    in_netns(|| {
        const PORTS: [u16; 8] = [443, 110, 995, 143, 993, 135, 59532, 59533];
        let rt = sim::runtime();
        let cas: Vec<Vec<Arc<Sim>>> = (1..=3u8)
            .map(|h| {
                let ports: Vec<(u16, Proto)> = PORTS
                    .iter()
                    .map(|p| (*p, Proto::Echo(format!("cas0{h}"))))
                    .collect();
                host(&rt, [127, 0, 4, h].into(), &ports)
            })
            .collect();
        let mx: Vec<Arc<Sim>> = [11u8, 12]
            .iter()
            .map(|h| Sim::start(&rt, [127, 0, 4, *h].into(), 25, Proto::Smtp))
            .collect();
        let s = start_example("relayd-source-hash");
        let dns = SocketAddr::from(([127, 0, 0, 1], 53));
        let vip = |port: u16| SocketAddr::from(([127, 0, 0, 30], port));
        // Each client's server, the same on all eight ports.
        let picks = || -> Vec<String> {
            (0..60)
                .map(|i| {
                    let ids: Vec<String> = PORTS
                        .iter()
                        .map(|p| hello(vip(*p), client(i)).expect("relayed").0)
                        .collect();
                    assert!(ids.iter().all(|x| *x == ids[0]), "client {i}: {ids:?}");
                    ids[0].clone()
                })
                .collect()
        };
        let before = picks();
        for h in 1..=3 {
            assert!(before.contains(&format!("cas0{h}")), "{before:?}");
        }
        assert_eq!(
            mx_hosts(dns, "mail.example.test."),
            ["mx1.mail.example.test.", "mx2.mail.example.test."]
        );
        assert!(banner(vip(25)).unwrap_or_default().starts_with("220 "));

        // cas02 dies on every port: only its clients move, and still consistently.
        for sim in &cas[1] {
            sim.kill();
        }
        wait_for(
            Duration::from_secs(8),
            "cas02 unusable in every relay",
            || {
                let doc = status_json(&s);
                doc["relays"].as_array().unwrap().iter().take(8).all(|r| {
                    r["servers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|b| b["name"] == "cas02" && b["usable"] == false)
                })
            },
        );
        let after = picks();
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            if b == "cas02" {
                assert_ne!(a, "cas02", "client {i} moved");
            } else {
                assert_eq!(a, b, "client {i} kept its server");
            }
        }

        // A transport host fails its SMTP check: the MX answer leaves it out.
        mx[1].kill();
        wait_for(Duration::from_secs(8), "mx2 out of the MX answer", || {
            mx_hosts(dns, "mail.example.test.") == ["mx1.mail.example.test."]
        });
        assert!(
            banner(vip(25)).unwrap_or_default().starts_with("220 "),
            "25 relays to mx1"
        );
    });
}

/// swaks through `server` from `from`: its output.
fn swaks(server: SocketAddr, from: &str) -> String {
    let out = Command::new(require_tool("swaks"))
        .args([
            "--server",
            &server.ip().to_string(),
            "--port",
            &server.port().to_string(),
            "--local-interface",
            from,
            "--to",
            "user@example.test",
            "--from",
            "app@example.test",
            "--timeout",
            "5",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn exchange2007_sites() {
    in_netns(|| {
        let rt = sim::runtime();
        let tls = sim::tls_server(&["owa.mail.example.test"]);
        let smtp = |ip: [u8; 4]| Sim::start(&rt, ip.into(), 25, Proto::Smtp);
        let edges = [
            smtp([127, 0, 5, 1]),
            smtp([127, 0, 5, 2]),
            smtp([127, 0, 6, 1]),
        ];
        let _hubs = [smtp([127, 0, 5, 11]), smtp([127, 0, 5, 12])];
        let cas: Vec<Arc<Sim>> = [[127, 0, 5, 21], [127, 0, 5, 22], [127, 0, 6, 21]]
            .iter()
            .map(|ip| Sim::start(&rt, (*ip).into(), 443, Proto::Https(tls.clone())))
            .collect();
        // 20 minutes in the example; 3 seconds here.
        let delay = Duration::from_secs(3);
        let _mailns = start_example_with("exchange2007-sites", |c| {
            c.replace("failover_delay = \"20m\"", "failover_delay = \"3s\"")
        });
        let dns = SocketAddr::from(([127, 0, 0, 1], 53));
        let zone = "mail.example.test.";

        // MX: every Edge while healthy; a failing one leaves the answer.
        assert_eq!(
            mx_hosts(dns, zone),
            [
                "edge01.mail.example.test.",
                "edge02.mail.example.test.",
                "edge03.mail.example.test."
            ]
        );
        edges[1].kill();
        wait_for(Duration::from_secs(8), "edge02 out of MX", || {
            mx_hosts(dns, zone) == ["edge01.mail.example.test.", "edge03.mail.example.test."]
        });

        // The application relay: an application server relays, anyone else is refused.
        let vip = SocketAddr::from(([127, 0, 0, 40], 25));
        let ok = swaks(vip, "127.0.7.5");
        assert!(ok.contains("250 2.6.0 Queued"), "{ok}");
        let denied = swaks(vip, "127.0.8.5");
        assert!(
            denied.contains("554 5.7.1 <127.0.8.5> is not allowed to relay through this address"),
            "{denied}"
        );
        assert_eq!(a_set(dns, "relay.mail.example.test."), ["127.0.0.40"]);

        // owa: dc1 only while any of its CAS is up.
        let dc1 = ["127.0.5.21", "127.0.5.22"];
        assert_eq!(a_set(dns, "owa.mail.example.test."), dc1);
        cas[0].kill();
        wait_for(Duration::from_secs(8), "cas01 out", || {
            a_set(dns, "owa.mail.example.test.") == ["127.0.5.22"]
        });
        // dc1 entirely down: dc2 is answered only once the delay has passed.
        cas[1].kill();
        let down = std::time::Instant::now();
        let t = wait_for(
            Duration::from_secs(15),
            "dc2 answered after the delay",
            || a_set(dns, "owa.mail.example.test.") == ["127.0.6.21"],
        );
        assert!(t >= delay, "dc2 only after the failover delay: {t:?}");
        eprintln!("dc2 answered {:?} after dc1 went down", down.elapsed());
        // dc1 back: it takes over again.
        cas[0].revive();
        wait_for(Duration::from_secs(10), "dc1 back", || {
            a_set(dns, "owa.mail.example.test.") == ["127.0.5.21"]
        });
    });
}
