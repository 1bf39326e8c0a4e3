//! `mailns ctl` against a running mailns with simulated servers: the status tables and JSON,
//! drain with `--wait` on a relayed session, ready, transitions, a failed reload, and the clear
//! errors (wrong token, nothing listening).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use mailns::sim::{self, Proto, Sim};

const TOKEN: &str = "ctl-test-token-of-some-length";

/// `mailns ctl --config <mailns's config> --admin <its admin address> args...`.
fn ctl(s: &Mailns, env_token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailns"));
    cmd.arg("ctl")
        .arg("--config")
        .arg(s.dir.path().join("mailns.toml"))
        .args(["--admin", &s.admin.to_string()])
        .args(args)
        .env("RUST_LOG", "off")
        .env_remove("MAILNS_TOKEN");
    if let Some(t) = env_token {
        cmd.env("MAILNS_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn ctl_against_a_running_mailns() {
    let rt = sim::runtime();
    // One Exchange server, ex01 on 127.161.0.1: its health page and an id-echo port.
    let ip = |h: u8| IpAddr::from([127, 161, 0, h]);
    let http = Sim::start(&rt, ip(1), 0, Proto::Http);
    let echo1 = Sim::start(&rt, ip(1), 0, Proto::Echo("ex01".into()));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mail.test.zone"),
        format!(
            "$ORIGIN mail.test.\n$TTL 300\n@ SOA ns1 h 1 3600 900 1209600 60\n@ NS ns1\nns1 A 127.0.0.53\nowa 60 A {}\n",
            ip(1)
        ),
    )
    .unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = format!(
        "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n\n[health]\ninterval = \"1s\"\ntimeout = \"400ms\"\n\n\
         [[zone]]\nname = \"mail.test\"\nfile = \"mail.test.zone\"\n\n\
         [[check]]\nname = \"owa\"\nkind = \"http\"\nport = {http}\npath = \"/owa/healthcheck.htm\"\n\n\
         [[server]]\nname = \"ex01\"\naddresses = [\"{ip1}\"]\n\n\
         [[service]]\nname = \"owa.mail.test\"\nchecks = [\"owa\"]\n\n\
         [[relay]]\nname = \"rpc\"\nlisten = [\"127.0.0.1:0\"]\nservers = [\"ex01\"]\nbackend_port = {echo}\nchecks = [\"owa\"]\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n",
        http = http.addr.port(),
        echo = echo1.addr.port(),
        ip1 = ip(1),
    );
    let s = Mailns::start_config(dir, &config);

    // status: the tables, and --json is the API's document.
    let out = ctl(&s, None, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("SERVER"), "{text}");
    assert!(
        text.contains("ex01") && text.contains("owa 127.161.0.1"),
        "{text}"
    );
    assert!(
        text.contains("owa.mail.test.") && text.contains("healthy"),
        "{text}"
    );
    assert!(text.contains("rpc") && text.contains("USABLE"), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&ctl(&s, None, &["status", "--json"]).stdout).unwrap();
    assert_eq!(json["servers"][0]["name"], "ex01");

    // A session through the relay; drain --wait waits for it and reports its count.
    let relay = s.relay("rpc")[0];
    let session = std::net::TcpStream::connect(relay).unwrap();
    session
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut hello = String::new();
    BufReader::new(&session).read_line(&mut hello).unwrap();
    assert_eq!(hello.trim(), "ex01");
    let admin = s.admin;
    let dir = s.dir.path().to_path_buf();
    let waiting = std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_mailns"))
            .arg("ctl")
            .arg("--config")
            .arg(dir.join("mailns.toml"))
            .args([
                "--admin",
                &admin.to_string(),
                "drain",
                "ex01",
                "--wait",
                "--timeout",
                "20s",
            ])
            .env("RUST_LOG", "off")
            .output()
            .unwrap()
    });
    wait_for(Duration::from_secs(10), "ex01 drained", || {
        status_json(&s)["servers"][0]["admin"] == "drain"
    });
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !waiting.is_finished(),
        "--wait returns only when the session closes"
    );
    drop(session);
    let out = waiting.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("ex01: 1 relayed session(s) open"), "{said}");
    assert!(said.contains("ex01: 0 relayed session(s) open"), "{said}");

    // ready, and the transitions record both changes.
    assert!(ctl(&s, None, &["ready", "ex01"]).status.success());
    let history = stdout(&ctl(&s, None, &["history", "ex01"]));
    assert!(
        history.contains("ready -> drain") && history.contains("drain -> ready"),
        "{history}"
    );

    // A broken config: reload exits non-zero with the path:line error; mailns keeps serving.
    let path = s.dir.path().join("mailns.toml");
    std::fs::write(
        &path,
        config.replace("kind = \"http\"", "kind = \"gopher\""),
    )
    .unwrap();
    let out = ctl(&s, None, &["reload"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("mailns.toml:") && stderr(&out).contains("gopher"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&path, &config).unwrap();
    assert!(ctl(&s, None, &["reload"]).status.success());

    // Clear errors: a wrong token (from MAILNS_TOKEN), and nothing listening.
    let out = ctl(&s, Some("not-the-token"), &["drain", "ex01"]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("admin token is missing or wrong"),
        "{}",
        stderr(&out)
    );
    let out = ctl(&s, None, &["drain", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    let free = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let out = Command::new(env!("CARGO_BIN_EXE_mailns"))
        .args([
            "ctl",
            "--config",
            "/nonexistent.toml",
            "--admin",
            &free.to_string(),
            "status",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    assert!(
        stderr(&out).contains(&format!("mailns is not running at {free}")),
        "{}",
        stderr(&out)
    );
}
