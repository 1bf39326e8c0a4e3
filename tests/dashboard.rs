//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver) loads
//! the page from the real binary, finds each server and its state, sees a killed server turn
//! down without a page reload, and drains a server with the page's own buttons once a token is
//! entered. The screenshot is saved as a test artifact under `target/test-artifacts/`.
//!
//! Reproduce: `cargo test --test dashboard -- --nocapture` (needs chromium, chromium-driver).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;
use mailns::sim;
use serde_json::{json, Value};
use sim::{Proto, Sim};

const TOKEN: &str = "dashboard-test-token";

/// A WebDriver session on a chromedriver of its own; both end on drop.
struct Browser {
    base: String,
    session: String,
    _driver: ChildGuard,
}

impl Browser {
    fn start() -> Self {
        let driver_bin = require_tool("chromedriver");
        let chromium = require_tool("chromium");
        // chromedriver needs a port number: take a free one from the kernel. A driver that does
        // not come up is retried on a new port.
        let mut attempt = 0;
        let (driver, base, port) = loop {
            attempt += 1;
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = std::env::temp_dir().join(format!("mailns-chromedriver-{port}.log"));
            let driver = ChildGuard(
                Command::new(&driver_bin)
                    .args([
                        format!("--port={port}"),
                        "--allowed-ips=127.0.0.1".into(),
                        format!("--log-path={}", log.display()),
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start chromedriver"),
            );
            let base = format!("http://127.0.0.1:{port}");
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            let ready = loop {
                if call("GET", &format!("{base}/status"), None)
                    .is_some_and(|v| v["value"]["ready"] == true)
                {
                    break true;
                }
                if std::time::Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if ready {
                break (driver, base, port);
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                attempt < 3,
                "chromedriver did not come up; its log:\n{text}"
            );
            eprintln!("chromedriver on port {port} did not come up; retrying. Its log:\n{text}");
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1100",
                         "--no-proxy-server", "--user-data-dir=/tmp/mailns-dashboard-test-profile-".to_string() + &port.to_string()]
            }
        }}});
        let v = call("POST", &format!("{base}/session"), Some(&caps)).expect("new session");
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v:#}"))
            .to_string();
        Self {
            base,
            session,
            _driver: driver,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let v = call(method, &url, body).unwrap_or_else(|| panic!("webdriver {method} {path}"));
        assert!(
            v["value"].get("error").is_none(),
            "webdriver {method} {path}: {v:#}"
        );
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page and returns its value.
    fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    /// `name=state` of every server row, in page order.
    fn rows(&self) -> String {
        self.js("return [...document.querySelectorAll('tr[data-server]')]\
             .map(e => e.dataset.server + '=' + e.dataset.state).join(',')")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A screenshot of the whole page: the window grows to the page's height first.
    fn screenshot_page(&self, name: &str) -> PathBuf {
        let height = self
            .js("return document.documentElement.scrollHeight")
            .as_u64()
            .unwrap_or(1100);
        self.cmd(
            "POST",
            "/window/rect",
            Some(&json!({"width": 1400, "height": height.clamp(600, 6000) + 100})),
        );
        let shot = self.screenshot(name);
        self.cmd(
            "POST",
            "/window/rect",
            Some(&json!({"width": 1400, "height": 1100})),
        );
        shot
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd("GET", "/screenshot", None);
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let mut child = Command::new("base64")
            .args(["-d"])
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&path).unwrap())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            &mut child.stdin.take().unwrap(),
            b64.as_str().unwrap().as_bytes(),
        )
        .unwrap();
        assert!(child.wait().unwrap().success());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = call(
            "DELETE",
            &format!("{}/session/{}", self.base, self.session),
            None,
        );
    }
}

/// One WebDriver call with curl; None when the driver does not answer (yet).
fn call(method: &str, url: &str, body: Option<&Value>) -> Option<Value> {
    let mut cmd = Command::new(require_tool("curl"));
    cmd.args([
        "-sS",
        "-m",
        "60",
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
    ]);
    if let Some(b) = body {
        cmd.args(["--data-binary", &b.to_string()]);
    }
    let out = cmd.arg(url).stderr(Stdio::null()).output().ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn dashboard_shows_servers_and_turns_a_killed_one_down_live() {
    // In a network namespace of its own: chromedriver listens on a port number it is given, and
    // on a shared machine another test can take that number on some other loopback address.
    in_netns(dashboard_test);
}

fn dashboard_test() {
    let rt = sim::runtime();
    let net = 169u8;
    let ip = |h: u8| IpAddr::from([127, net, 0, h]);
    let mut http: Vec<Arc<Sim>> = Vec::new();
    for h in 1..=3u8 {
        let port = http.first().map_or(0, |s| s.addr.port());
        http.push(Sim::start(&rt, ip(h), port, Proto::Http));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut zone = String::from("$ORIGIN mail.test.\n$TTL 300\n@ SOA ns1 h 1 3600 900 1209600 60\n@ NS ns1\nns1 A 127.0.0.53\n");
    let mut servers = String::new();
    for h in 1..=3u8 {
        zone += &format!("owa 60 A {}\n", ip(h));
        servers += &format!(
            "[[server]]\nname = \"ex0{h}\"\naddresses = [\"{}\"]\n",
            ip(h)
        );
    }
    std::fs::write(dir.path().join("mail.test.zone"), zone).unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::set_permissions(
        dir.path().join("token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let s = Mailns::start_config(
        dir,
        &format!(
            "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n\n[health]\ninterval = \"1s\"\ntimeout = \"400ms\"\nfast_interval = \"250ms\"\n\n\
             [[zone]]\nname = \"mail.test\"\nfile = \"mail.test.zone\"\n\n\
             [[check]]\nname = \"owa\"\nkind = \"http\"\nport = {}\npath = \"/owa/healthcheck.htm\"\n\n{servers}\n\
             [[service]]\nname = \"owa.mail.test\"\nchecks = [\"owa\"]\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n",
            http[0].addr.port()
        ),
    );

    let b = Browser::start();
    b.go(&format!("http://{}/", s.admin));
    let mut last = String::new();
    let ok = (0..500).any(|_| {
        last = b.rows();
        std::thread::sleep(Duration::from_millis(20));
        last == "ex01=up,ex02=up,ex03=up"
    });
    assert!(
        ok,
        "rows: {last}; page: {}",
        b.js("return document.body.innerText")
    );
    let answer = b.js(
        "return document.querySelector('tr[data-service=\"owa.mail.test.\"][data-type=\"A\"]').dataset.step",
    );
    assert_eq!(answer, "healthy");
    // Marks this page load: a reload would lose it.
    b.js("window.__mailnsTestMark = 42; return null");

    // Kill ex02: the page turns it down by itself, problems first.
    http[1].kill();
    let t = wait_for(Duration::from_secs(5), "ex02 down on the page", || {
        b.rows() == "ex02=down,ex01=up,ex03=up"
    });
    eprintln!("the page showed ex02 down {t:?} after the kill");
    assert_eq!(b.js("return window.__mailnsTestMark"), 42, "no page reload");
    let text = b.js("return document.getElementById('transitions').innerText");
    assert!(
        text.as_str().unwrap().contains("ex02"),
        "transition listed: {text}"
    );

    // Admin actions from the page: buttons stay disabled until a token is entered.
    let disabled = "return document.querySelector('tr[data-server=\"ex03\"] button[data-action=\"drain\"]').disabled";
    assert_eq!(b.js(disabled), true);
    b.js(&format!(
        "const t = document.getElementById('token'); t.value = '{TOKEN}'; \
         t.dispatchEvent(new Event('input')); return null"
    ));
    wait_for(Duration::from_secs(5), "drain button enabled", || {
        b.js(disabled) == false
    });
    b.js("document.querySelector('tr[data-server=\"ex03\"] button[data-action=\"drain\"]').click(); return null");
    wait_for(Duration::from_secs(5), "ex03 drained on the page", || {
        b.rows() == "ex02=down,ex03=drain,ex01=up"
    });
    let shot = b.screenshot("dashboard.png");
    eprintln!("screenshot: {}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
}

#[test]
fn dashboard_explains_answers_and_draws_history() {
    in_netns(history_test);
}

/// Two checks per server (owa, mapi), two names: one server failing OWA alone is down for owa
/// and up for outlook; every server failing OWA puts owa in its zone step, said in words; the
/// history graphs show the down band and the answers per second.
fn history_test() {
    let rt = sim::runtime();
    let ip = |h: u8| IpAddr::from([127, 170, 0, h]);
    let mut http: Vec<Arc<Sim>> = Vec::new();
    for h in 1..=3u8 {
        let port = http.first().map_or(0, |s| s.addr.port());
        http.push(Sim::start(&rt, ip(h), port, Proto::Http));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut zone = String::from("$ORIGIN mail.test.\n$TTL 300\n@ SOA ns1 h 7 3600 900 1209600 60\n@ NS ns1\nns1 A 127.0.0.53\n");
    let mut servers = String::new();
    for h in 1..=3u8 {
        zone += &format!("owa 60 A {}\noutlook 60 A {}\n", ip(h), ip(h));
        servers += &format!(
            "[[server]]\nname = \"ex0{h}\"\naddresses = [\"{}\"]\n",
            ip(h)
        );
    }
    std::fs::write(dir.path().join("mail.test.zone"), zone).unwrap();
    let port = http[0].addr.port();
    let s = Mailns::start_config(
        dir,
        &format!(
            "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n\n\
             [health]\ninterval = \"1s\"\ntimeout = \"400ms\"\nfast_interval = \"250ms\"\n\n\
             [[zone]]\nname = \"mail.test\"\nfile = \"mail.test.zone\"\n\n\
             [[check]]\nname = \"owa\"\nkind = \"http\"\nport = {port}\npath = \"/owa/healthcheck.htm\"\n\n\
             [[check]]\nname = \"mapi\"\nkind = \"http\"\nport = {port}\npath = \"/mapi/healthcheck.htm\"\n\n{servers}\n\
             [[service]]\nname = \"owa.mail.test\"\nchecks = [\"owa\"]\nfallback = [\"zone\"]\n\n\
             [[service]]\nname = \"outlook.mail.test\"\nchecks = [\"mapi\"]\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n"
        ),
    );
    // Queries for owa all along, so its answers per second move.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asker = {
        let (stop, addr) = (stop.clone(), s.addr);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = udp_raw(addr, &query("owa.mail.test.", RecordType::A, None));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let b = Browser::start();
    b.go(&format!("http://{}/", s.admin));
    wait_for(Duration::from_secs(10), "every server up", || {
        b.rows() == "ex01=up,ex02=up,ex03=up"
    });
    let row = |svc: &str, what: &str| {
        b.js(&format!(
            "const r = document.querySelector('tr[data-service=\"{svc}\"][data-type=\"A\"]'); return r ? {what} : null"
        ))
    };
    assert_eq!(
        row(
            "owa.mail.test.",
            "r.dataset.answered + '/' + r.dataset.total"
        ),
        "3/3"
    );
    let answers_line = "const l = document.querySelector('svg[data-series=\"service_answers:owa.mail.test.:\"] polyline'); \
                        return l ? l.dataset.values.split(' ').filter(v => v !== '').map(Number) : []";
    let t = wait_for(Duration::from_secs(20), "answers per second drawn", || {
        b.js(answers_line)
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x.as_f64().unwrap_or(0.0) > 1.0))
    });
    eprintln!("answers per second on the graph after {t:?}");
    b.screenshot_page("dashboard-healthy.png");

    // ex02 fails OWA alone: down for owa, still up (and answered) for outlook.
    http[1].fail_path("/owa/healthcheck.htm", true);
    wait_for(Duration::from_secs(10), "ex02 partial", || {
        b.rows().starts_with("ex02=partial")
    });
    let per_service = b.js(
        "return [...document.querySelectorAll('tr[data-server=\"ex02\"] [data-server-service]')]\
         .map(e => e.dataset.serverService + '=' + e.dataset.state).join(',')",
    );
    assert_eq!(per_service, "outlook.mail.test.=up,owa.mail.test.=down");
    assert_eq!(
        row(
            "owa.mail.test.",
            "r.dataset.answered + '/' + r.dataset.total"
        ),
        "2/3"
    );
    let member = b.js(
        "return document.querySelector('tr[data-service=\"owa.mail.test.\"] li[data-member=\"ex02\"]').innerText",
    );
    assert!(
        member.as_str().unwrap().contains("fails owa"),
        "member reason: {member}"
    );
    let degraded =
        b.js("const d = document.getElementById('degraded-text'); return d ? d.innerText : ''");
    assert!(
        degraded.as_str().unwrap().contains("owa.mail.test."),
        "degraded banner: {degraded}"
    );
    let shot = b.screenshot_page("dashboard-one-check-failing.png");
    eprintln!("screenshot: {}", shot.display());

    // Every server fails OWA: the name fails open, and the page says so in words.
    for h in &http {
        h.fail_path("/owa/healthcheck.htm", true);
    }
    wait_for(Duration::from_secs(10), "owa in its zone step", || {
        row("owa.mail.test.", "r.dataset.step") == "zone"
    });
    let explain = row(
        "owa.mail.test.",
        "r.querySelector('[data-explain]').innerText",
    );
    assert!(
        explain.as_str().unwrap().starts_with("FAILING OPEN"),
        "{explain}"
    );
    let text = b.js("return document.getElementById('transitions').innerText");
    assert!(
        text.as_str().unwrap().contains("owa.mail.test. A"),
        "the step change is a transition: {text}"
    );
    // The state timeline shows ex02's down band for owa, the step band the zone step.
    wait_for(
        Duration::from_secs(15),
        "down band and zone band drawn",
        || {
            b.js("return !!document.querySelector('svg[data-series=\"check_state:ex02:owa\"] rect[data-state=\"down\"]') \
              && !!document.querySelector('svg[data-series=\"service_step:owa.mail.test.:\"] rect[data-state=\"zone\"]')")
            == true
        },
    );
    assert_eq!(
        b.js("return !!document.querySelector('svg[data-series=\"check_state:ex02:mapi\"] rect[data-state=\"down\"]')"),
        false,
        "mapi never went down"
    );
    let shot = b.screenshot_page("dashboard-failing-open.png");
    eprintln!("screenshot: {}", shot.display());

    // The same series as JSON.
    let (code, body) = http_get(s.admin, "/api/v1/history");
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["bucket_seconds"], 5);
    let ex02 = doc["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "check_state" && s["subject"] == "ex02" && s["label"] == "owa")
        .expect("ex02 owa series");
    assert!(
        ex02["points"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "down"),
        "{ex02}"
    );

    // A broken zone and a reload: the banner says what and where; the old zone keeps serving.
    let zone = s.dir.path().join("mail.test.zone");
    let text = std::fs::read_to_string(&zone).unwrap();
    std::fs::write(
        &zone,
        text.replace("outlook 60 A 127.170.0.3", "outlook 60 A 127.170.0.300"),
    )
    .unwrap();
    s.signal("HUP");
    wait_for(
        Duration::from_secs(10),
        "the failed reload's banner",
        || {
            b.js("const e = document.getElementById('reload-error-text'); return e ? e.innerText : ''")
            .as_str()
            .is_some_and(|t| t.contains("mail.test.zone:"))
        },
    );
    let kinds = b.js("return [...document.querySelectorAll('#transitions tr[data-kind=reload]')].map(r => r.innerText).join('|')");
    assert!(
        kinds.as_str().unwrap().contains("SIGHUP"),
        "the reload and who asked: {kinds}"
    );
    b.screenshot_page("dashboard-failed-reload.png");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    asker.join().unwrap();
}
