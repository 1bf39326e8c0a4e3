//! The admin listener end to end: the real binary probing simulated servers, driven with curl
//! (every endpoint, the 401 paths, drain and its effect on DNS and the relay within a second,
//! admin state across a restart, reload with a broken zone) and promtool (the metrics).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;
use mailns::sim;
use serde_json::Value;
use sim::{Proto, Sim};

const TOKEN: &str = "s3cret-token-for-tests";

/// Two Exchange servers (ex01, ex02 on 127.N.0.1-2): HTTP health pages and an id-echo port.
struct Pair {
    net: u8,
    http: Vec<Arc<Sim>>,
    echo: Vec<Arc<Sim>>,
    _rt: Arc<tokio::runtime::Runtime>,
}

impl Pair {
    fn start(net: u8) -> Self {
        let rt = sim::runtime();
        let (mut http, mut echo): (Vec<Arc<Sim>>, Vec<Arc<Sim>>) = (vec![], vec![]);
        for h in 1..=2u8 {
            let ip = IpAddr::from([127, net, 0, h]);
            let port = |v: &Vec<Arc<Sim>>| v.first().map_or(0, |s| s.addr.port());
            http.push(Sim::start(&rt, ip, port(&http), Proto::Http));
            echo.push(Sim::start(
                &rt,
                ip,
                port(&echo),
                Proto::Echo(format!("ex0{h}")),
            ));
        }
        Self {
            net,
            http,
            echo,
            _rt: rt,
        }
    }

    fn ip(&self, h: u8) -> String {
        format!("127.{}.0.{h}", self.net)
    }

    fn zone(&self) -> String {
        format!(
            "$ORIGIN mail.test.\n$TTL 300\n@ SOA ns1 h 1 3600 900 1209600 60\n@ NS ns1\nns1 A 127.0.0.53\nowa 60 A {}\nowa 60 A {}\n",
            self.ip(1),
            self.ip(2)
        )
    }

    fn config(&self, admin: &str) -> String {
        format!(
            r#"[dns]
listen = ["127.0.0.1:0"]
udp_workers = 1

[health]
interval = "1s"
timeout = "400ms"
fast_interval = "250ms"

[[zone]]
name = "mail.test"
file = "mail.test.zone"

[[check]]
name = "owa"
kind = "http"
port = {http}
path = "/owa/healthcheck.htm"

[[server]]
name = "ex01"
addresses = ["{ip1}"]

[[server]]
name = "ex02"
addresses = ["{ip2}"]

[[service]]
name = "owa.mail.test"
checks = ["owa"]

[[relay]]
name = "rpc"
listen = ["127.0.0.1:0"]
servers = ["ex01", "ex02"]
backend_port = {echo}
checks = ["owa"]
balance = "round-robin"

{admin}
"#,
            http = self.http[0].addr.port(),
            echo = self.echo[0].addr.port(),
            ip1 = self.ip(1),
            ip2 = self.ip(2),
        )
    }

    /// Starts mailns with a token file and `[admin]` on an ephemeral port.
    fn start_mailns(&self) -> Mailns {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mail.test.zone"), self.zone()).unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        Mailns::start_config(
            dir,
            &self.config("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n"),
        )
    }
}

/// An HTTP request with curl: (status, body).
fn curl(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new(require_tool("curl"));
    cmd.args(["-sS", "-m", "10", "-X", method, "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    let out = cmd
        .arg(url)
        .stderr(Stdio::inherit())
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status code"), body.to_string())
}

fn server<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("server {name} in {doc:#}"))
}

/// The id line of the server a new relay connection reaches.
fn relayed_to(relay: SocketAddr) -> String {
    let s = TcpStream::connect_timeout(&relay, Duration::from_secs(2)).expect("relay accepts");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("id line");
    line.trim().to_string()
}

#[test]
fn read_only_endpoints_and_promtool() {
    let p = Pair::start(167);
    let s = p.start_mailns();
    let base = format!("http://{}", s.admin);
    assert_eq!(
        curl("GET", &format!("{base}/livez"), None, None),
        (200, "ok\n".into())
    );
    assert_eq!(
        curl("GET", &format!("{base}/readyz"), None, None),
        (200, "ready\n".into())
    );
    let (code, html) = curl("GET", &format!("{base}/"), None, None);
    assert_eq!(code, 200);
    assert!(html.contains("<title>mailns</title>") && html.contains("/api/v1/status"));
    // The SVG namespace name is an identifier, never fetched.
    let loads = html.replace("\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !loads.contains("http://") && !loads.contains("https://"),
        "self-contained: no CDN"
    );
    assert_eq!(curl("GET", &format!("{base}/nope"), None, None).0, 404);
    assert_eq!(
        curl("POST", &format!("{base}/api/v1/status"), None, None).0,
        405
    );

    // Some traffic to count.
    assert_eq!(a_set(s.addr, "owa.mail.test."), [p.ip(1), p.ip(2)]);
    let _ = udp(s.addr, "nx.mail.test.", RecordType::A, None);
    let mut seen: Vec<String> = (0..4).map(|_| relayed_to(s.relay("rpc")[0])).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["ex01", "ex02"]);

    let doc = status_json(&s);
    assert_eq!(doc["ready"], true);
    for name in ["ex01", "ex02"] {
        let sv = server(&doc, name);
        assert_eq!(sv["state"], "up", "{sv:#}");
        assert_eq!(sv["admin"], "ready");
        let c = &sv["checks"][0];
        assert_eq!(c["check"], "owa");
        assert_eq!(c["status"], "up");
        assert!(
            c["latency_ms"].as_f64().is_some() && c["since"].is_string(),
            "{c:#}"
        );
        assert_eq!((c["rise"].as_u64(), c["fall"].as_u64()), (Some(2), Some(2)));
    }
    let svc = &doc["services"][0];
    assert_eq!(svc["name"], "owa.mail.test.");
    assert_eq!(svc["a"]["step"], "healthy");
    assert_eq!(svc["a"]["answer"].as_array().unwrap().len(), 2);
    let relay = &doc["relays"][0];
    assert_eq!(relay["name"], "rpc");
    let total: u64 = relay["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["total"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 4, "{relay:#}");
    assert_eq!(doc["dns"]["responses"]["NXDOMAIN"], 1);
    // The first round's unknown → up results are one entry, not one per pair.
    let transitions = doc["transitions"].as_array().unwrap();
    let startup: Vec<&Value> = transitions
        .iter()
        .filter(|t| t["kind"] == "startup")
        .collect();
    assert_eq!(startup.len(), 1, "{transitions:#?}");
    assert_eq!(startup[0]["what"], "first probe round");
    assert!(
        transitions
            .iter()
            .all(|t| !(t["kind"] == "check" && t["from"] == "unknown" && t["to"] == "up")),
        "{transitions:#?}"
    );
    // Why DNS answers what it does.
    assert_eq!(doc["degraded"], false);
    let a = &svc["a"];
    assert_eq!(
        (a["answered"].as_u64(), a["total"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(a["degraded"], false);
    assert!(
        a["explain"]
            .as_str()
            .unwrap()
            .starts_with("answering 2 of 2"),
        "{a:#}"
    );
    for m in a["members"].as_array().unwrap() {
        assert_eq!(
            (m["reason"].as_str(), m["answered"].as_bool()),
            (Some("healthy"), Some(true)),
            "{m:#}"
        );
    }
    let ex01 = server(&doc, "ex01");
    assert_eq!(ex01["services"][0]["service"], "owa.mail.test.");
    assert_eq!(ex01["services"][0]["state"], "up");
    assert_eq!(ex01["checks"][0]["code"], "L7OK 200");
    for b in relay["servers"].as_array().unwrap() {
        assert_eq!(b["weight"], 1);
        assert!(b["max_active"].as_u64().unwrap() >= 1, "{b:#}");
        assert_eq!(b["reason"], "passes owa", "{b:#}");
    }
    let zone = &doc["config"]["zones"][0];
    assert_eq!(zone["origin"], "mail.test.");
    assert!(zone["serial"].as_u64().unwrap() > 0, "{zone:#}");
    assert_eq!(doc["config"]["admin_actions"], true);

    // Metrics: promtool accepts them, and they carry what the issue lists.
    let (code, metrics) = curl("GET", &format!("{base}/metrics"), None, None);
    assert_eq!(code, 200);
    let mut promtool = Command::new(require_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ip1 = p.ip(1);
    for want in [
        format!("mailns_check_up{{server=\"ex01\",address=\"{ip1}\",port=\"{}\",check=\"owa\"}} 1", p.http[0].addr.port()),
        "mailns_check_state_changes_total{".into(),
        "mailns_check_duration_seconds_bucket{".into(),
        "mailns_dns_responses_total{rcode=\"NXDOMAIN\"} 1".into(),
        "mailns_dns_service_answers_total{service=\"owa.mail.test.\",type=\"A\",step=\"healthy\"} 1".into(),
        "mailns_service_step{service=\"owa.mail.test.\",type=\"A\",step=\"healthy\"} 1".into(),
        "mailns_relay_connections_total{relay=\"rpc\",server=\"ex01\",".into(),
        "mailns_relay_bytes_total{".into(),
        "mailns_server_admin_state{server=\"ex01\",state=\"ready\"} 1".into(),
        "mailns_build_info{version=".into(),
    ] {
        assert!(metrics.contains(&want), "missing {want} in\n{metrics}");
    }
}

#[test]
fn drain_needs_the_token_acts_within_a_second_and_survives_restart() {
    let p = Pair::start(168);
    let s = p.start_mailns();
    let url = |path: &str| format!("http://{}{path}", s.admin);
    let state_file = s.dir.path().join("admin-state.json");

    // No token, a wrong token: 401, nothing changes.
    for token in [None, Some("wrong"), Some("")] {
        let (code, body) = curl(
            "POST",
            &url("/api/v1/servers/ex01/state"),
            token,
            Some("drain"),
        );
        assert_eq!(code, 401, "{body}");
        assert_eq!(curl("POST", &url("/api/v1/reload"), token, None).0, 401);
    }
    assert_eq!(server(&status_json(&s), "ex01")["admin"], "ready");
    assert!(!state_file.exists(), "nothing written without the token");
    assert_eq!(a_set(s.addr, "owa.mail.test."), [p.ip(1), p.ip(2)]);
    // Bad requests.
    assert_eq!(
        curl(
            "POST",
            &url("/api/v1/servers/ex09/state"),
            Some(TOKEN),
            Some("drain")
        )
        .0,
        404
    );
    assert_eq!(
        curl(
            "POST",
            &url("/api/v1/servers/ex01/state"),
            Some(TOKEN),
            Some("sleep")
        )
        .0,
        400
    );
    assert_eq!(
        curl("GET", &url("/api/v1/servers/ex01/state"), None, None).0,
        405
    );

    // Drain ex01: once the API answers, DNS and new relay connections leave it (the answer
    // comes after the snapshot is published; a second is the issue's bound).
    let (code, body) = curl(
        "POST",
        &url("/api/v1/servers/ex01/state"),
        Some(TOKEN),
        Some(r#"{"state": "drain"}"#),
    );
    assert_eq!(code, 200, "{body}");
    let t = wait_for(
        Duration::from_secs(1),
        "ex01 out of DNS and the relay",
        || {
            a_set(s.addr, "owa.mail.test.") == [p.ip(2)]
                && (0..4).all(|_| relayed_to(s.relay("rpc")[0]) == "ex02")
        },
    );
    eprintln!("drain in force {t:?} after the API answered");
    let doc = status_json(&s);
    assert_eq!(server(&doc, "ex01")["admin"], "drain");
    assert_eq!(server(&doc, "ex01")["state"], "drain");
    assert_eq!(doc["transitions"][0]["what"], "admin");
    assert_eq!(doc["transitions"][0]["to"], "drain");
    assert_eq!(doc["transitions"][0]["kind"], "admin");
    assert_eq!(
        doc["transitions"][0]["by"], "127.0.0.1",
        "who made the change"
    );
    // Why: the drained member is out of owa's answer, the relay backend takes nothing new, and
    // a drain alone does not make the name degraded.
    let owa = &doc["services"][0]["a"];
    assert_eq!(owa["degraded"], false, "{owa:#}");
    let ex01 = owa["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["server"] == "ex01")
        .unwrap();
    assert_eq!(
        (ex01["answered"].as_bool(), ex01["reason"].as_str()),
        (Some(false), Some("drain"))
    );
    let backend = doc["relays"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "ex01")
        .unwrap();
    assert_eq!(backend["usable"], false);
    assert!(
        backend["reason"]
            .as_str()
            .unwrap()
            .starts_with("drained (admin)"),
        "{backend:#}"
    );
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert_eq!(saved["servers"]["ex01"], "drain");

    // maint via a plain-text body, then restart: the state file wins over the config.
    assert_eq!(
        curl(
            "POST",
            &url("/api/v1/servers/ex02/state"),
            Some(TOKEN),
            Some("maint")
        )
        .0,
        200
    );
    let dir = s.stop_keeping_dir();
    let path = dir.path().join("mailns.toml");
    let s = Mailns::start_path(dir, &path);
    let doc = status_json(&s);
    assert_eq!(
        server(&doc, "ex01")["admin"],
        "drain",
        "drain survived the restart"
    );
    assert_eq!(
        server(&doc, "ex02")["admin"],
        "maint",
        "maint survived the restart"
    );
    // Back to ready: both answered again.
    for name in ["ex01", "ex02"] {
        let (code, body) = curl(
            "POST",
            &format!("http://{}/api/v1/servers/{name}/state", s.admin),
            Some(TOKEN),
            Some("ready"),
        );
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(a_set(s.addr, "owa.mail.test."), [p.ip(1), p.ip(2)]);
}

#[test]
fn reload_keeps_serving_through_a_broken_zone_and_shows_the_error() {
    let p = Pair::start(170);
    let s = p.start_mailns();
    let url = |path: &str| format!("http://{}{path}", s.admin);
    let zone = s.dir.path().join("mail.test.zone");

    // A good reload: a new static name appears; health state carries over (no unknown flash).
    std::fs::write(&zone, p.zone() + "extra A 127.0.0.77\n").unwrap();
    let (code, body) = curl("POST", &url("/api/v1/reload"), Some(TOKEN), None);
    assert_eq!(code, 200, "{body}");
    let m = udp(s.addr, "extra.mail.test.", RecordType::A, None);
    assert_eq!(m.answers.len(), 1);
    let doc = status_json(&s);
    assert_eq!(doc["config"]["reloads"], 1);
    assert_eq!(
        server(&doc, "ex01")["checks"][0]["status"],
        "up",
        "carried over"
    );
    assert_eq!(a_set(s.addr, "owa.mail.test."), [p.ip(1), p.ip(2)]);

    // A broken zone: 422 with path:line, the old data keeps serving, the dashboard shows it.
    std::fs::write(
        &zone,
        p.zone() + "extra A 127.0.0.77\nbroken A not-an-address\n",
    )
    .unwrap();
    let (code, body) = curl("POST", &url("/api/v1/reload"), Some(TOKEN), None);
    assert_eq!(code, 422, "{body}");
    let want = format!("{}:9:", zone.display());
    assert!(body.contains(&want), "want {want} in {body}");
    let doc = status_json(&s);
    let err = doc["config"]["last_reload_error"]["message"]
        .as_str()
        .unwrap();
    assert!(err.contains(&want), "{err}");
    assert_eq!(a_set(s.addr, "owa.mail.test."), [p.ip(1), p.ip(2)]);
    assert_eq!(
        udp(s.addr, "extra.mail.test.", RecordType::A, None)
            .answers
            .len(),
        1
    );
    let (_, metrics) = curl("GET", &url("/metrics"), None, None);
    assert!(
        metrics.contains("mailns_config_last_reload_successful 0"),
        "{metrics}"
    );

    // SIGHUP with the zone fixed: the error clears.
    std::fs::write(&zone, p.zone()).unwrap();
    Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    wait_for(
        Duration::from_secs(5),
        "SIGHUP reload clears the error",
        || status_json(&s)["config"]["last_reload_error"].is_null(),
    );
    assert_eq!(
        udp(s.addr, "extra.mail.test.", RecordType::A, None)
            .answers
            .len(),
        0
    );
}

#[test]
fn without_a_token_file_admin_actions_are_disabled() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("z.zone"),
        "$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 127.0.0.53\n",
    )
    .unwrap();
    let s = Mailns::start_config(
        dir,
        "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n[[zone]]\nname = \"z.test\"\nfile = \"z.zone\"\n[[server]]\nname = \"ex01\"\naddresses = [\"127.0.0.9\"]\n",
    );
    let url = |path: &str| format!("http://{}{path}", s.admin);
    let (code, body) = curl(
        "POST",
        &url("/api/v1/servers/ex01/state"),
        Some("x"),
        Some("drain"),
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("token_file"), "{body}");
    assert_eq!(curl("POST", &url("/api/v1/reload"), None, None).0, 403);
    assert_eq!(curl("GET", &url("/readyz"), None, None).0, 200);
    assert_eq!(status_json(&s)["config"]["admin_actions"], false);
}

#[test]
fn readyz_waits_for_the_first_probe_round() {
    let p = Pair::start(171);
    // ex02 accepts and never answers: the first round ends only when its probe times out.
    p.http[1]
        .behaviour
        .hang
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mail.test.zone"), p.zone()).unwrap();
    let config = p
        .config("[admin]\nlisten = \"127.0.0.1:0\"\n")
        .replace("timeout = \"400ms\"", "timeout = \"3s\"");
    let path = dir.path().join("mailns.toml");
    std::fs::write(&path, config).unwrap();
    let mut while_starting = None;
    let s = Mailns::start_watching(dir, &path, |line| {
        if line.contains("listening for admin") {
            let addr = line
                .split("local_addr=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            let base = format!("http://{addr}");
            while_starting = Some((
                curl("GET", &format!("{base}/readyz"), None, None),
                curl("GET", &format!("{base}/livez"), None, None).0,
            ));
        }
    });
    let ((code, body), live) = while_starting.expect("admin listener logged before ready");
    assert_eq!((code, body.as_str(), live), (503, "starting\n", 200));
    assert_eq!(
        curl("GET", &format!("http://{}/readyz", s.admin), None, None).0,
        200
    );
    assert_eq!(server(&status_json(&s), "ex02")["state"], "down");
}

/// A server failing its check: the API says why it is out of the name and of the relay, the
/// name is degraded; every server failing: the name fails open, said in words, logged at WARN
/// once and listed as a service transition; back to healthy, logged again.
#[test]
fn the_api_says_why_a_server_is_out() {
    let p = Pair::start(174);
    let s = p.start_mailns();
    p.http[1].fail_path("/owa/healthcheck.htm", true);
    wait_for(Duration::from_secs(10), "ex02 out of owa", || {
        a_set(s.addr, "owa.mail.test.") == [p.ip(1)]
    });
    let doc = status_json(&s);
    assert_eq!(doc["degraded"], true);
    let owa = &doc["services"][0]["a"];
    assert_eq!(
        (
            owa["step"].as_str(),
            owa["answered"].as_u64(),
            owa["total"].as_u64()
        ),
        (Some("healthy"), Some(1), Some(2))
    );
    assert_eq!(owa["degraded"], true);
    let ex02 = owa["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["server"] == "ex02")
        .unwrap();
    assert_eq!(ex02["reason"], "failing");
    assert_eq!(ex02["detail"], "fails owa; left out of the answer");
    let backend = doc["relays"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "ex02")
        .unwrap();
    assert_eq!(backend["usable"], false);
    assert_eq!(
        backend["reason"],
        "check owa fails: status 503 (expected 200)"
    );
    let sv = server(&doc, "ex02");
    assert_eq!(sv["checks"][0]["code"], "L7STS 503");
    assert_eq!(sv["checks"][0]["down_count"], 1);
    assert_eq!(sv["services"][0]["state"], "down");

    // Every server failing: the zone step, in words, at WARN once.
    p.http[0].fail_path("/owa/healthcheck.htm", true);
    wait_for(Duration::from_secs(10), "owa fails open", || {
        status_json(&s)["services"][0]["a"]["step"] == "zone"
    });
    let doc = status_json(&s);
    let owa = &doc["services"][0]["a"];
    assert!(
        owa["explain"]
            .as_str()
            .unwrap()
            .starts_with("FAILING OPEN: no member passes its checks, so the zone's full set is answered (2 of 2, including 2 members failing its checks)"),
        "{owa:#}"
    );
    let step = doc["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "service")
        .expect("a service transition");
    assert_eq!(
        (
            step["what"].as_str(),
            step["from"].as_str(),
            step["to"].as_str()
        ),
        (Some("owa.mail.test. A"), Some("healthy"), Some("zone"))
    );
    p.http[0].fail_path("/owa/healthcheck.htm", false);
    p.http[1].fail_path("/owa/healthcheck.htm", false);
    wait_for(Duration::from_secs(10), "both servers back", || {
        let a = &status_json(&s)["services"][0]["a"];
        a["step"] == "healthy" && a["answered"] == 2
    });
    let warns: Vec<String> = std::iter::from_fn(|| s.log.try_recv().ok())
        .filter(|l| l.contains("WARN") && l.contains("fallback step"))
        .collect();
    assert_eq!(
        warns.len(),
        2,
        "entering and leaving, once each: {warns:#?}"
    );
    assert!(
        warns[0].contains("name answers from a fallback step") && warns[0].contains("to=\"zone\""),
        "{warns:#?}"
    );
    assert!(
        warns[1].contains("name left its fallback step"),
        "{warns:#?}"
    );
    let metrics = http_get(s.admin, "/metrics").1;
    assert!(
        metrics.contains("mailns_transitions_total{kind=\"service\"} 2"),
        "{metrics}"
    );

    // The history: relay connections per second, for the relay and per server.
    let history =
        || -> Value { serde_json::from_str(&http_get(s.admin, "/api/v1/history").1).unwrap() };
    wait_for(Duration::from_secs(10), "a first sample", || {
        !history()["times"].as_array().unwrap().is_empty()
    });
    for _ in 0..6 {
        relayed_to(s.relay("rpc")[0]);
    }
    let rate = |label: &str| {
        history()["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| {
                x["kind"] == "relay_connections" && x["subject"] == "rpc" && x["label"] == label
            })
            .map_or(0.0, |x| {
                x["points"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_f64)
                    .fold(0.0, f64::max)
            })
    };
    wait_for(
        Duration::from_secs(15),
        "the relay's rate in the history",
        || rate("") > 0.0,
    );
    assert!(
        rate("ex01") > 0.0 && rate("ex02") > 0.0,
        "round robin: both servers"
    );
}
