//! The shipped alert rules (`config/prometheus/mailns-alerts.yml`): `promtool` checks them and
//! runs their unit tests, then a real Prometheus server scrapes a running mailns with them, a
//! simulated server fails, and its alerts go pending, fire, and resolve after the heal. Every
//! query of the Grafana dashboard (`config/grafana/mailns-dashboard.json`) must return data from
//! the same Prometheus.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use mailns::sim::{self, Proto, Sim};

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/prometheus")
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let promtool = require_tool("promtool");
    let dir = rules_dir();
    for args in [
        &["check", "rules", "mailns-alerts.yml"][..],
        &["test", "rules", "mailns-alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The body of `GET path` from Prometheus, or None while it does not answer (it is starting).
fn get(prometheus: SocketAddr, path: &str) -> Option<String> {
    let out = Command::new(require_tool("curl"))
        .args(["-sf", "-m", "2", &format!("http://{prometheus}{path}")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// How many series the PromQL `expr` returns now (0 while Prometheus is not answering).
fn series(prometheus: SocketAddr, expr: &str) -> usize {
    let out = Command::new(require_tool("curl"))
        .args([
            "-sf",
            "-m",
            "2",
            "-G",
            &format!("http://{prometheus}/api/v1/query"),
        ])
        .arg("--data-urlencode")
        .arg(format!("query={expr}"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["data"]["result"].as_array().map_or(0, Vec::len)
}

/// (alert name, state) of every alert Prometheus has now.
fn alerts(prometheus: SocketAddr) -> BTreeSet<(String, String)> {
    let Some(body) = get(prometheus, "/api/v1/alerts") else {
        return BTreeSet::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["alerts"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|a| {
                    (
                        a["labels"]["alertname"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        a["state"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_real_prometheus_fires_and_resolves_the_alerts() {
    let prometheus_bin = require_tool("prometheus");
    let rt = sim::runtime();
    let ip = IpAddr::from([127, 162, 0, 1]);
    let http = Sim::start(
        &rt,
        ip,
        0,
        Proto::Https(sim::tls_server(&["owa.mail.test"])),
    );
    let echo = Sim::start(&rt, ip, 0, Proto::Echo("cas01".into()));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mail.test.zone"),
        format!("$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 127.0.0.1\nowa A {ip}\n"),
    )
    .unwrap();
    let s = Mailns::start_config(
        dir,
        &format!(
            "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n\n[health]\ninterval = \"1s\"\ntimeout = \"400ms\"\n\n\
             [[zone]]\nname = \"mail.test\"\nfile = \"mail.test.zone\"\n\n\
             [[check]]\nname = \"owa\"\nkind = \"https\"\nport = {}\npath = \"/owa/healthcheck.htm\"\ntls_verify = false\n\n\
             [[server]]\nname = \"cas01\"\naddresses = [\"{ip}\"]\n\n\
             [[service]]\nname = \"owa.mail.test\"\nchecks = [\"owa\"]\n\n\
             [[relay]]\nname = \"rpc\"\nlisten = [\"127.0.0.1:0\"]\nservers = [\"cas01\"]\nbackend_port = {}\nchecks = [\"owa\"]\n",
            http.addr.port(),
            echo.addr.port()
        ),
    );

    // The shipped rules, with their `for` durations shortened so the test takes seconds.
    let work = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(rules_dir().join("mailns-alerts.yml"))
        .unwrap()
        .replace("for: 5m", "for: 2s")
        .replace("for: 1m", "for: 2s");
    std::fs::write(work.path().join("rules.yml"), rules).unwrap();
    std::fs::write(
        work.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n\
             scrape_configs:\n  - job_name: mailns\n    static_configs:\n      - targets: [\"{}\"]\n",
            s.admin
        ),
    )
    .unwrap();
    let port = free_port();
    let prometheus = SocketAddr::from(([127, 0, 0, 1], port));
    let _server = ChildGuard(
        Command::new(prometheus_bin)
            .arg(format!(
                "--config.file={}",
                work.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prometheus}"))
            .current_dir(work.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let scraped = |q: &str| {
        get(prometheus, &format!("/api/v1/query?query={q}"))
            .is_some_and(|body| body.contains("\"value\""))
    };
    wait_for(Duration::from_secs(30), "prometheus scrapes mailns", || {
        scraped("mailns_ready%3D%3D1")
    });
    assert!(alerts(prometheus).is_empty(), "{:?}", alerts(prometheus));

    // The Grafana dashboard: every query in it returns data from this Prometheus, once there is
    // traffic (DNS answers for owa, a relayed session) for its rates.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(rules_dir().join("../grafana/mailns-dashboard.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 9, "{exprs:?}");
    let relay = s.relay("rpc")[0];
    let mut missing = Vec::new();
    wait_for(
        Duration::from_secs(30),
        "every dashboard query has data",
        || {
            for _ in 0..5 {
                udp(
                    s.addr,
                    "owa.mail.test.",
                    hickory_proto::rr::RecordType::A,
                    None,
                );
            }
            if let Ok(mut c) = std::net::TcpStream::connect(relay) {
                use std::io::{Read, Write};
                let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = c.write_all(b"ping\n");
                let mut buf = [0u8; 64];
                let _ = c.read(&mut buf);
            }
            missing = exprs
                .iter()
                .filter(|e| series(prometheus, e) == 0)
                .cloned()
                .collect();
            missing.is_empty()
        },
    );
    assert!(missing.is_empty(), "{missing:?}");

    // cas01 dies: its check fails, owa falls back to the zone, the relay has no server.
    http.kill();
    let mut seen = BTreeSet::new();
    let want = [
        "MailnsServiceDegraded",
        "MailnsServerCheckFailing",
        "MailnsServiceInFallback",
        "MailnsRelayHasNoServer",
    ];
    wait_for(Duration::from_secs(30), "the alerts fire", || {
        seen.extend(alerts(prometheus));
        want.iter()
            .all(|a| seen.contains(&(a.to_string(), "firing".to_string())))
    });
    assert!(
        want.iter()
            .all(|a| seen.contains(&(a.to_string(), "pending".to_string()))),
        "each was pending before it fired: {seen:?}"
    );

    // Healed: every alert resolves.
    http.revive();
    wait_for(Duration::from_secs(30), "the alerts resolve", || {
        alerts(prometheus).is_empty()
    });
}
