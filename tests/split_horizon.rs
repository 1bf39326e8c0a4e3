//! Split horizon with real clients: the reference example (`config/examples/split-horizon/`)
//! behind two unbound resolvers (one inside, one outside), `dig +subnet` straight at mailns, and
//! a Knot secondary per view over TSIG. Each test runs in a network namespace of its own, on the
//! standard ports, against simulated CAS servers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mailns::sim::{self, Proto, Sim};

const INTERNAL: [&str; 3] = ["127.0.2.1", "127.0.2.2", "127.0.2.3"];
const EXTERNAL: [&str; 3] = ["127.0.9.1", "127.0.9.2", "127.0.9.3"];
/// The example's trusted resolver, and an inside client.
const RESOLVER: &str = "127.0.8.53";
const INSIDE: &str = "127.0.8.7";
/// An outside host (outside 127.0.8.0/24) that runs a resolver too.
const OUTSIDE_RESOLVER: &str = "127.0.7.53";
const DNS: &str = "127.0.0.1:53";

/// The CAS servers of the example: HTTPS, SMTP and RPC (135) on 127.0.2.1-3.
struct Cas {
    https: Vec<Arc<Sim>>,
    _rest: Vec<Arc<Sim>>,
}

fn start_cas(rt: &Arc<tokio::runtime::Runtime>) -> Cas {
    let tls = sim::tls_server(&["owa.mail.example.test", "autodiscover.mail.example.test"]);
    let ip = |h: u8| IpAddr::from([127, 0, 2, h]);
    let https = (1..=3)
        .map(|h| Sim::start(rt, ip(h), 443, Proto::Https(tls.clone())))
        .collect();
    let rest = (1..=3)
        .flat_map(|h| {
            [
                Sim::start(rt, ip(h), 25, Proto::Smtp),
                Sim::start(rt, ip(h), 135, Proto::Echo(format!("cas0{h}"))),
            ]
        })
        .collect();
    Cas { https, _rest: rest }
}

/// Copies the example into a fresh folder, `edit` applied to its config, and starts mailns.
fn start_example(edit: impl Fn(String) -> String) -> Mailns {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/split-horizon");
    let dir = tempfile::tempdir().unwrap();
    for sub in ["internal", "external"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        let f = format!("{sub}/mail.example.test.zone");
        std::fs::copy(src.join(&f), dir.path().join(&f)).unwrap();
    }
    let config = std::fs::read_to_string(src.join("mailns.toml")).unwrap();
    let path = dir.path().join("mailns.toml");
    std::fs::write(&path, edit(config)).unwrap();
    Mailns::start_path(dir, &path)
}

/// `dig` from `from` at mailns, with `extra` arguments; its whole output.
fn dig_from(from: &str, name: &str, extra: &[&str]) -> String {
    let dns: SocketAddr = DNS.parse().unwrap();
    let mut args = vec!["-b", from, name, "A", "+norecurse", "+tries=1", "+time=2"];
    args.extend_from_slice(extra);
    dig(dns, &args)
}

/// The A addresses in a dig output's answer section, sorted.
fn addresses(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| f[4].to_string())
        })
        .collect();
    v.sort();
    v
}

/// The answer's ECS option as dig prints it ("127.0.8.0/24/24"), if any.
fn client_subnet(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.split("CLIENT-SUBNET: ").nth(1))
        .map(|s| s.trim().to_string())
}

fn set(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The example end to end: each side gets its own addresses, one OWA failure leaves both
/// views (the internal address inside, the NAT address outside), the NAT address follows
/// maint from the admin state, and the RPC VIP takes inside clients only.
#[test]
fn split_horizon_example() {
    in_netns(|| {
        let rt = sim::runtime();
        let cas = start_cas(&rt);
        let s = start_example(|c| c);
        let owa = "owa.mail.example.test.";
        assert_eq!(addresses(&dig_from(INSIDE, owa, &[])), set(&INTERNAL));
        assert_eq!(addresses(&dig_from("127.0.0.1", owa, &[])), set(&EXTERNAL));
        // CNAMEs into service names, MX and SRV additional sections follow the view.
        let outlook = dig_from(INSIDE, "outlook.mail.example.test.", &[]);
        assert_eq!(addresses(&outlook), set(&INTERNAL), "{outlook}");
        let mx = dig(
            DNS.parse().unwrap(),
            &["-b", "127.0.0.1", "mail.example.test.", "MX", "+norecurse"],
        );
        assert!(
            mx.contains("127.0.9.1") && !mx.contains("127.0.2.1"),
            "{mx}"
        );
        // The internal-only name does not exist outside.
        let rpc = dig_from("127.0.0.1", "outlook-rpc.mail.example.test.", &[]);
        assert!(rpc.contains("NXDOMAIN"), "{rpc}");
        assert!(
            addresses(&dig_from(INSIDE, "outlook-rpc.mail.example.test.", &[])) == ["127.0.2.20"]
        );

        // cas02's OWA fails: 127.0.2.2 leaves inside, its NAT address 127.0.9.2 outside.
        cas.https[1].fail_path("/owa/healthcheck.htm", true);
        let t = wait_for(Duration::from_secs(8), "cas02 out of both views", || {
            addresses(&dig_from(INSIDE, owa, &[])) == ["127.0.2.1", "127.0.2.3"]
                && addresses(&dig_from("127.0.0.1", owa, &[])) == ["127.0.9.1", "127.0.9.3"]
        });
        eprintln!("both views dropped cas02 after {t:?}");
        let ad = "autodiscover.mail.example.test.";
        assert_eq!(addresses(&dig_from("127.0.0.1", ad, &[])), set(&EXTERNAL));
        cas.https[1].fail_path("/owa/healthcheck.htm", false);
        wait_for(Duration::from_secs(8), "cas02 back in both views", || {
            addresses(&dig_from(INSIDE, owa, &[])) == set(&INTERNAL)
                && addresses(&dig_from("127.0.0.1", owa, &[])) == set(&EXTERNAL)
        });

        // The metrics and the status carry the views.
        let (_, metrics) = http_get(s.admin, "/metrics");
        assert!(
            metrics.contains("view=\"external\"") && metrics.contains("view=\"internal\""),
            "{metrics}"
        );
        let status = status_json(&s);
        let views: Vec<&str> = status["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["name"] == owa)
            .flat_map(|v| {
                v["views"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap())
            })
            .collect();
        assert_eq!(views, ["internal", "external"], "{status}");
        // The dashboard, rendered by a real browser: a row per view, each with its answer.
        let dom = dashboard_dom(s.admin);
        for (view, addr) in [("internal", "127.0.2.1"), ("external", "127.0.9.1")] {
            let row = dom
                .split("<tr ")
                .find(|r| {
                    r.contains(&format!("data-service=\"{owa}\""))
                        && r.contains(&format!("data-view=\"{view}\""))
                })
                .unwrap_or_else(|| panic!("no {view} row for {owa}: {dom}"));
            assert!(row.contains(addr), "{view}: {row}");
        }

        // The RPC VIP: inside clients reach a server, outside clients are turned away.
        let vip: SocketAddr = "127.0.2.20:135".parse().unwrap();
        let line = |from: &str| {
            use std::io::{BufRead, BufReader};
            let c = connect_from(from.parse().unwrap(), vip).ok()?;
            c.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
            let mut l = String::new();
            BufReader::new(c).read_line(&mut l).ok()?;
            Some(l.trim().to_string()).filter(|l| !l.is_empty())
        };
        assert!(line(INSIDE).is_some_and(|l| l.starts_with("cas0")));
        assert_eq!(line("127.0.0.1"), None, "outside clients get no server");
    });
}

/// The dashboard's DOM once its script has drawn the status: headless Chromium, given virtual
/// time for the page's fetch.
fn dashboard_dom(admin: SocketAddr) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(require_tool("chromium"))
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", profile.path().display()),
            "--virtual-time-budget=5000",
            "--dump-dom",
            &format!("http://{admin}/"),
        ])
        .stderr(Stdio::null())
        .output()
        .expect("chromium");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// dig straight at mailns with ECS: the trusted resolver's subnet picks the view, with a scope
/// under which every address gets that view; the same ECS from anyone else is ignored (scope
/// 0); malformed ECS is FORMERR; a name answered alike everywhere gets scope 0.
#[test]
fn client_subnet_from_the_trusted_resolver_only() {
    in_netns(|| {
        let rt = sim::runtime();
        let _cas = start_cas(&rt);
        let _s = start_example(|c| c);
        let owa = "owa.mail.example.test.";

        let inside = dig_from(RESOLVER, owa, &["+subnet=127.0.8.0/24"]);
        assert_eq!(addresses(&inside), set(&INTERNAL), "{inside}");
        assert_eq!(
            client_subnet(&inside).as_deref(),
            Some("127.0.8.0/24/24"),
            "{inside}"
        );
        // An outside client of the trusted resolver: external, and the scope keeps its /24 apart
        // from 127.0.8.0/24 (127.0.5.0 and 127.0.8.0 share 20 bits: scope 21).
        let away = dig_from(RESOLVER, owa, &["+subnet=127.0.5.0/24"]);
        assert_eq!(addresses(&away), set(&EXTERNAL), "{away}");
        assert_eq!(
            client_subnet(&away).as_deref(),
            Some("127.0.5.0/24/21"),
            "{away}"
        );
        // A /32 of an inside client: the scope is the view's /24.
        let one = dig_from(RESOLVER, owa, &["+subnet=127.0.8.9/32"]);
        assert_eq!(
            client_subnet(&one).as_deref(),
            Some("127.0.8.9/32/24"),
            "{one}"
        );

        // A forged ECS from outside never selects the internal view.
        let forged = dig_from("127.0.0.1", owa, &["+subnet=127.0.8.0/24"]);
        assert_eq!(addresses(&forged), set(&EXTERNAL), "{forged}");
        assert_eq!(
            client_subnet(&forged).as_deref(),
            Some("127.0.8.0/24/0"),
            "{forged}"
        );
        // Nor from an inside host that is not the trusted resolver: its own address decides.
        let other = dig_from(INSIDE, owa, &["+subnet=127.0.5.0/24"]);
        assert_eq!(addresses(&other), set(&INTERNAL), "{other}");
        assert_eq!(
            client_subnet(&other).as_deref(),
            Some("127.0.5.0/24/0"),
            "{other}"
        );

        // A zone outside every view's difference: same answer for all, scope 0. The example's
        // zone differs per view; the REFUSED answer for a name no view serves is the same.
        let refused = dig_from(RESOLVER, "nowhere.test.", &["+subnet=127.0.8.0/24"]);
        assert!(refused.contains("REFUSED"), "{refused}");
        assert_eq!(
            client_subnet(&refused).as_deref(),
            Some("127.0.8.0/24/0"),
            "{refused}"
        );

        // Malformed ECS (bits set past the source prefix): FORMERR, as RFC 7871 §7.1.2 says.
        let bad = kdig(
            DNS.parse().unwrap(),
            &[
                owa,
                "A",
                "+norecurse",
                "+ednsopt=8:00011800", /* family 1, /24, no address */
            ],
        );
        assert!(bad.contains("FORMERR"), "{bad}");
    });
}

/// A resolver: unbound on `ip`:53 with mailns as its stub zone, querying from its own address.
/// `ecs` turns on unbound's subnetcache, which sends each client's /24 to mailns.
fn resolver(ip: &str, ecs: bool) -> (ChildGuard, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (modules, subnet) = if ecs {
        (
            "subnetcache iterator",
            "  send-client-subnet: 127.0.0.1\n  max-client-subnet-ipv4: 24\n",
        )
    } else {
        ("iterator", "")
    };
    let conf = format!(
        "server:\n  interface: {ip}\n  port: 53\n  outgoing-interface: {ip}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n\
         directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  logfile: \"\"\n  do-ip6: no\n\
         access-control: 127.0.0.0/8 allow\n  module-config: \"{modules}\"\n  do-not-query-localhost: no\n\
         qname-minimisation: no\n  prefetch: no\n  num-threads: 1\n{subnet}\
         local-zone: \"test.\" nodefault\n\
         stub-zone:\n  name: \"mail.example.test\"\n  stub-addr: 127.0.0.1@53\n\
         stub-zone:\n  name: \".\"\n  stub-addr: 127.0.0.1@9\n"
    );
    let path = dir.path().join("unbound.conf");
    std::fs::write(&path, conf).unwrap();
    let child = ChildGuard(
        Command::new(require_tool("unbound"))
            .args(["-d", "-c"])
            .arg(&path)
            .stderr(Stdio::null())
            .spawn()
            .expect("start unbound"),
    );
    (child, dir)
}

/// Asks the resolver at `ip` from `from`, recursion desired.
fn via(ip: &str, from: &str, name: &str) -> Vec<String> {
    let server: SocketAddr = format!("{ip}:53").parse().unwrap();
    addresses(&dig(
        server,
        &["-b", from, name, "A", "+tries=1", "+time=2"],
    ))
}

/// Two unbound resolvers, one inside and one outside, each with mailns as its stub zone: each
/// one's clients get their view's addresses, and one failed OWA check removes the server from
/// both, within detection time plus the short TTL. The inside resolver sends ECS: its outside
/// (VPN) clients get the external view, cached apart from its inside clients' answers.
#[test]
fn two_resolvers_each_see_their_view() {
    in_netns(|| {
        let rt = sim::runtime();
        let cas = start_cas(&rt);
        let _s = start_example(|c| c.replace("ttl = 30", "ttl = 2"));
        let (_inside, _d1) = resolver(RESOLVER, true);
        let (_outside, _d2) = resolver(OUTSIDE_RESOLVER, false);
        let owa = "owa.mail.example.test.";
        wait_for(Duration::from_secs(10), "both resolvers answer", || {
            via(RESOLVER, INSIDE, owa) == set(&INTERNAL)
                && via(OUTSIDE_RESOLVER, "127.0.0.1", owa) == set(&EXTERNAL)
        });
        // An outside client of the inside resolver (its ECS is 127.0.5.0/24): external.
        assert_eq!(via(RESOLVER, "127.0.5.5", owa), set(&EXTERNAL));
        assert_eq!(via(RESOLVER, INSIDE, owa), set(&INTERNAL), "cached apart");

        cas.https[0].kill();
        let t = wait_for(Duration::from_secs(10), "cas01 leaves both views", || {
            via(RESOLVER, INSIDE, owa) == ["127.0.2.2", "127.0.2.3"]
                && via(OUTSIDE_RESOLVER, "127.0.0.1", owa) == ["127.0.9.2", "127.0.9.3"]
                && via(RESOLVER, "127.0.5.5", owa) == ["127.0.9.2", "127.0.9.3"]
        });
        eprintln!("both resolvers dropped cas01 after {t:?}");
    });
}

const INTERNAL_KEY: &str = "aW50ZXJuYWwtdHJhbnNmZXIta2V5LW9mLTMyLWJ5dGVz";
const EXTERNAL_KEY: &str = "ZXh0ZXJuYWwtdHJhbnNmZXIta2V5LW9mLTMyLWJ5dGVz";

/// A Knot secondary of mail.example.test on `port`, transferring from mailns from `via` with
/// TSIG key `key` (name and secret).
fn knot(port: u16, via: &str, key: (&str, &str)) -> (ChildGuard, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (name, secret) = key;
    let conf = format!(
        "server:\n  rundir: \"{d}\"\n  listen: 127.0.0.1@{port}\n  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n\
         log:\n  - target: stderr\n    any: info\n\
         database:\n  storage: \"{d}/db\"\n\
         key:\n  - id: {name}\n    algorithm: hmac-sha256\n    secret: {secret}\n\
         remote:\n  - id: primary\n    address: 127.0.0.1@53\n    via: {via}\n    key: {name}\n\
         acl:\n  - id: notify_from_primary\n    address: 127.0.0.1\n    action: notify\n    key: {name}\n\
         template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    semantic-checks: off\n\
         zone:\n  - domain: mail.example.test\n    master: primary\n    acl: notify_from_primary\n"
    );
    let path = dir.path().join("knot.conf");
    std::fs::write(&path, conf).unwrap();
    let child = ChildGuard(
        Command::new(require_tool("knotd"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("knot.log")).unwrap())
            .spawn()
            .expect("start knotd"),
    );
    (child, dir)
}

/// A Knot secondary per view, each with its view's key (both from an outside address), receives
/// its view's zone; the key alone picks the view for a transfer; unsigned transfers are refused;
/// a change to one view's zone NOTIFYs that view's secondary, which takes it.
#[test]
fn knot_secondaries_per_view_over_tsig() {
    in_netns(|| {
        let rt = sim::runtime();
        let _cas = start_cas(&rt);
        let s = start_example(|c| {
            c.replace(
                "transfer_key = \"xfr-internal\"",
                "transfer_key = \"xfr-internal\"\nnotify = [\"127.0.0.1:5301\"]",
            )
            .replace(
                "transfer_key = \"xfr-external\"",
                "transfer_key = \"xfr-external\"\nnotify = [\"127.0.0.1:5302\"]",
            )
        });
        // Both from an outside address: the key alone decides their view, for the SOA refresh
        // (a signed query) and the transfer alike.
        let (_k1, _d1) = knot(5301, "127.0.0.1", ("xfr-internal", INTERNAL_KEY));
        let (_k2, _d2) = knot(5302, "127.0.0.1", ("xfr-external", EXTERNAL_KEY));
        // Knot may not be listening yet: dig gives no answer rather than failing.
        let ask = |port: u16, name: &str| {
            let at = SocketAddr::from(([127, 0, 0, 1], port));
            addresses(&dig(at, &[name, "A", "+norecurse", "+tries=1", "+time=1"]))
        };
        wait_for(Duration::from_secs(30), "both secondaries transfer", || {
            ask(5301, "owa.mail.example.test.") == INTERNAL
                && ask(5302, "owa.mail.example.test.") == EXTERNAL
        });
        assert_eq!(
            ask(5301, "outlook-rpc.mail.example.test."),
            ["127.0.2.20"],
            "the internal zone whole"
        );
        assert!(ask(5302, "outlook-rpc.mail.example.test.").is_empty());

        // From outside, signed with the internal key: the internal zone. Unsigned: refused.
        let dns: SocketAddr = DNS.parse().unwrap();
        let axfr = |extra: &[&str]| {
            let mut args = vec![
                "-b",
                "127.0.0.1",
                "AXFR",
                "mail.example.test",
                "+noall",
                "+answer",
            ];
            args.extend_from_slice(extra);
            kdig(dns, &args)
        };
        let key = format!("hmac-sha256:xfr-internal:{INTERNAL_KEY}");
        let signed = axfr(&["-y", &key]);
        assert!(signed.contains("127.0.2.20"), "{signed}");
        let unsigned = axfr(&[]);
        assert!(!unsigned.contains("127.0.9.1"), "{unsigned}");
        // An ordinary query signed with the internal key gets the internal view; the key's name
        // with a wrong secret gets nothing from it.
        let signed_query = |secret: &str| {
            let key = format!("hmac-sha256:xfr-internal:{secret}");
            kdig(
                dns,
                &[
                    "-b",
                    "127.0.0.1",
                    "-y",
                    &key,
                    "outlook-rpc.mail.example.test",
                    "A",
                    "+norecurse",
                ],
            )
        };
        let good = signed_query(INTERNAL_KEY);
        assert!(good.contains("127.0.2.20"), "{good}");
        let forged = signed_query(EXTERNAL_KEY);
        assert!(!forged.contains("127.0.2.20"), "{forged}");

        // The internal zone changes: its secondary is notified and takes it; the other is not.
        let file = s.dir.path().join("internal/mail.example.test.zone");
        let zone = std::fs::read_to_string(&file).unwrap();
        std::fs::write(
            &file,
            zone.replace("2026120201", "2026120202") + "late A 127.0.2.99\n",
        )
        .unwrap();
        s.signal("HUP");
        wait_for(
            Duration::from_secs(15),
            "the internal secondary takes the change",
            || ask(5301, "late.mail.example.test.") == ["127.0.2.99"],
        );
        assert!(ask(5302, "late.mail.example.test.").is_empty());
        assert_eq!(ask(5302, "owa.mail.example.test."), EXTERNAL);
    });
}

/// A public (NAT) address follows its server's admin state: a drained server leaves the
/// internal answers at its own address and the external ones at its NAT address.
#[test]
fn public_addresses_follow_drain() {
    in_netns(|| {
        let rt = sim::runtime();
        let _cas = start_cas(&rt);
        let _s = start_example(|c| {
            c.replace(
                "public_addresses = [\"127.0.9.3\"]",
                "public_addresses = [\"127.0.9.3\"]\nstate = \"drain\"",
            )
        });
        let owa = "owa.mail.example.test.";
        wait_for(Duration::from_secs(8), "cas03 is out of both views", || {
            addresses(&dig_from(INSIDE, owa, &[])) == ["127.0.2.1", "127.0.2.2"]
                && addresses(&dig_from("127.0.0.1", owa, &[])) == ["127.0.9.1", "127.0.9.2"]
        });
    });
}

/// A reload moves clients between views; a reload with a broken view keeps the views in force.
#[test]
fn reload_changes_views_and_a_broken_one_keeps_serving() {
    in_netns(|| {
        let rt = sim::runtime();
        let _cas = start_cas(&rt);
        let s = start_example(|c| c);
        let owa = "owa.mail.example.test.";
        assert_eq!(addresses(&dig_from(INSIDE, owa, &[])), set(&INTERNAL));
        let path = s.dir.path().join("mailns.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        // 127.0.8.0/24 is no longer inside: its clients get the external answers.
        std::fs::write(
            &path,
            config.replace(
                "\"127.0.8.0/24\", \"::1/128\"]\nmatch_ecs",
                "\"127.0.6.0/24\"]\nmatch_ecs",
            ),
        )
        .unwrap();
        s.signal("HUP");
        wait_for(Duration::from_secs(10), "127.0.8.7 is outside now", || {
            addresses(&dig_from(INSIDE, owa, &[])) == set(&EXTERNAL)
        });
        assert_eq!(addresses(&dig_from("127.0.6.1", owa, &[])), set(&INTERNAL));
        // A zone naming a view that does not exist: the reload fails, the views stay.
        std::fs::write(
            &path,
            config.replace("views = [\"internal\"]", "views = [\"inside\"]"),
        )
        .unwrap();
        s.signal("HUP");
        wait_for(
            Duration::from_secs(10),
            "the failed reload is reported",
            || {
                status_json(&s)["config"]["last_reload_error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no [[view]] named 'inside'"))
            },
        );
        assert_eq!(addresses(&dig_from("127.0.6.1", owa, &[])), set(&INTERNAL));
        assert_eq!(addresses(&dig_from(INSIDE, owa, &[])), set(&EXTERNAL));
    });
}
