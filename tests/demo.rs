//! `mailns demo` end to end, in a private network namespace (the demo binds fixed ports such as
//! 127.0.0.1:5353 and :8053, which must collide with nothing on the machine): dig, swaks and curl
//! against it, a server failed and healed through the demo API, and a clean SIGTERM exit.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::process::Command;

use common::*;

const SCRIPT: &str = r#"
set -u
ip link set lo up
"$MAILNS" demo > "$LOG" 2>&1 &
pid=$!
# Wait for readiness (bounded), not for a fixed time.
for i in $(seq 1 200); do curl -sf http://127.0.0.1:8053/readyz >/dev/null && break; sleep 0.05; done
owa() { dig @127.0.0.1 -p 5353 owa.mail.example.test +short | sort | tr '\n' ' '; }
echo "before: $(owa)"
echo "mx: $(dig @127.0.0.1 -p 5353 mail.example.test MX +short)"
curl -s -X POST http://127.0.0.1:8053/api/v1/demo/servers/cas02/fail > /dev/null
for i in $(seq 1 200); do [ "$(owa)" = "127.0.1.1 127.0.1.3 " ] && break; sleep 0.05; done
echo "failed: $(owa)"
echo "status: $(curl -s http://127.0.0.1:8053/api/v1/status | tr -d ' \n' | grep -o '"demo":\[[^]]*\]')"
swaks --server 127.0.0.1:10025 --to user@example.test --from app@example.test 2>&1 | grep -o '250 2.6.0 Queued' | sed 's/^/smtp: /'
echo "https: $(curl -sk --resolve owa.mail.example.test:10443:127.0.0.1 https://owa.mail.example.test:10443/owa/healthcheck.htm)"
echo "redirect: $(curl -si -H 'Host: mail.example.test' http://127.0.0.1:10080/ | tr -d '\r' | grep -i -e '^HTTP' -e '^location' | tr '\n' ' ')"
curl -s -X POST http://127.0.0.1:8053/api/v1/demo/servers/cas02/heal > /dev/null
for i in $(seq 1 200); do [ "$(owa)" = "127.0.1.1 127.0.1.2 127.0.1.3 " ] && break; sleep 0.05; done
echo "healed: $(owa)"
kill -TERM $pid
wait $pid
echo "exit: $?"
"#;

#[test]
fn demo_answers_relays_fails_over_and_exits_cleanly() {
    for tool in ["unshare", "ip", "dig", "swaks", "curl"] {
        require_tool(tool);
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let out = Command::new(require_tool("unshare"))
        .args(["-n", "bash", "-c", SCRIPT])
        .env("MAILNS", env!("CARGO_BIN_EXE_mailns"))
        .env("LOG", &log)
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let demo_log = std::fs::read_to_string(&log).unwrap_or_default();
    let ctx = format!(
        "{text}\nstderr: {}\ndemo log:\n{demo_log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no '{key}:' line in\n{ctx}"))
            .trim()
            .to_string()
    };
    assert_eq!(line("before"), "127.0.1.1 127.0.1.2 127.0.1.3", "{ctx}");
    assert_eq!(line("mx"), "10 smtp.mail.example.test.", "{ctx}");
    assert_eq!(line("failed"), "127.0.1.1 127.0.1.3", "{ctx}");
    assert!(
        line("status").contains(r#"{"name":"cas02","address":"127.0.1.2","running":false"#),
        "{ctx}"
    );
    assert_eq!(line("smtp"), "250 2.6.0 Queued", "{ctx}");
    assert!(line("https").starts_with("200 OK"), "{ctx}");
    assert_eq!(
        line("redirect"),
        "HTTP/1.1 301 Moved Permanently location: https://mail.example.test/owa",
        "{ctx}"
    );
    assert_eq!(line("healed"), "127.0.1.1 127.0.1.2 127.0.1.3", "{ctx}");
    assert_eq!(line("exit"), "0", "{ctx}");
    assert!(
        demo_log.contains("dashboard     http://127.0.0.1:8053/"),
        "{ctx}"
    );
}

/// Runs every command the demo prints under "Try", as printed, in the demo's namespace: each
/// exits 0 within its bound and prints something.
const TRY_SCRIPT: &str = r#"
set -u
ip link set lo up
"$MAILNS" demo > "$LOG" 2>&1 &
pid=$!
for i in $(seq 1 200); do grep -q '^Then fail' "$LOG" && break; sleep 0.05; done
sed -n '/^Try/,/^Then fail/p' "$LOG" | grep '^  ' | sed 's/^  //' > "$CMDS"
n=0
while IFS= read -r cmd; do
  n=$((n + 1))
  out=$(timeout 20 bash -o pipefail -c "$cmd" 2>&1 < /dev/null)
  rc=$?
  printf 'cmd %s rc=%s: %s\n' "$n" "$rc" "$cmd"
  printf '%s\n' "$out" | sed "s/^/out $n: /"
done < "$CMDS"
kill -TERM $pid
wait $pid
"#;

#[test]
fn every_command_the_demo_prints_works_as_printed() {
    for tool in ["unshare", "ip", "dig", "swaks", "curl", "timeout"] {
        require_tool(tool);
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let out = Command::new(require_tool("unshare"))
        .args(["-n", "bash", "-c", TRY_SCRIPT])
        .env("MAILNS", env!("CARGO_BIN_EXE_mailns"))
        .env("LOG", &log)
        .env("CMDS", dir.path().join("cmds"))
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let ctx = format!(
        "{text}\nstderr: {}\ndemo log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let runs: Vec<&str> = text.lines().filter(|l| l.starts_with("cmd ")).collect();
    assert!(runs.len() >= 7, "the demo prints what to try: {ctx}");
    for run in &runs {
        assert!(run.contains(" rc=0: "), "{run}\n{ctx}");
    }
    let output = |needle: &str| {
        assert!(
            text.lines()
                .any(|l| l.starts_with("out ") && l.contains(needle)),
            "no output with {needle:?}: {ctx}"
        );
    };
    output("127.0.1.");
    output("10 smtp.mail.example.test.");
    // The HTTPS page, the SMTP banner and the IMAP greeting name the server behind the relay.
    output("200 OK<br/>cas0");
    output("<-  220 cas0");
    output("250 2.6.0 Queued mail for delivery by cas0");
    output("over TLS");
    output("* OK The Microsoft Exchange IMAP4 service is ready. [cas0");
    output("< * CAPABILITY IMAP4");
    output("301 Moved Permanently");
}
