//! Each probe dialogue against real simulated servers: what passes, what fails and why, TLS
//! verification, and certificate expiry reported as data.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mailns::config::CheckKind;
use mailns::health::probe::{self, ProbeResult};
use mailns::sim::{self, Proto, Sim};
use mailns::tls::client::{self, TlsCheck};

const LIMIT: Duration = Duration::from_millis(800);

fn ip(h: u8) -> IpAddr {
    IpAddr::from([127, 140, 0, h])
}

fn run(kind: &CheckKind, addr: IpAddr, port: u16, tls: Option<&TlsCheck>) -> ProbeResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfg = tls.map(|t| client::config(t).expect("tls config"));
    rt.block_on(probe::run(kind, addr, port, LIMIT, cfg.as_ref()))
}

fn http(path: &str, host: Option<&str>, body: Option<&str>, tls: Option<TlsCheck>) -> CheckKind {
    CheckKind::Http {
        path: path.into(),
        host: host.map(String::from),
        expect_status: 200,
        expect_body: body.map(String::from),
        tls,
    }
}

#[test]
fn tcp_connects_or_is_refused() {
    let rt = sim::runtime();
    let s = Sim::start(&rt, ip(1), 0, Proto::Http);
    assert!(run(&CheckKind::Tcp, ip(1), s.addr.port(), None).ok);
    s.kill();
    let r = run(&CheckKind::Tcp, ip(1), s.addr.port(), None);
    assert!(!r.ok);
    assert!(r.error.unwrap().starts_with("connect:"));
}

#[test]
fn banners_imap_and_pop3() {
    let rt = sim::runtime();
    let imap = Sim::start(&rt, ip(2), 0, Proto::Imap);
    let pop = Sim::start(&rt, ip(2), 0, Proto::Pop3);
    let imap_check = CheckKind::Banner {
        expect: "* OK".into(),
        send: "a1 LOGOUT\r\n".into(),
    };
    let pop_check = CheckKind::Banner {
        expect: "+OK".into(),
        send: "QUIT\r\n".into(),
    };
    assert!(run(&imap_check, ip(2), imap.addr.port(), None).ok);
    assert!(run(&pop_check, ip(2), pop.addr.port(), None).ok);
    // The wrong greeting fails with the greeting in the error.
    let r = run(&pop_check, ip(2), imap.addr.port(), None);
    assert!(!r.ok);
    assert!(r.error.unwrap().contains("does not start with \"+OK\""));
}

#[test]
fn smtp_dialogue_and_draining_transport() {
    let rt = sim::runtime();
    let s = Sim::start(&rt, ip(3), 0, Proto::Smtp);
    let plain = CheckKind::Smtp {
        ehlo: "mailns.test".into(),
        mail_from: None,
    };
    let deep = CheckKind::Smtp {
        ehlo: "mailns.test".into(),
        mail_from: Some("probe@mail.test".into()),
    };
    assert!(run(&plain, ip(3), s.addr.port(), None).ok);
    assert!(run(&deep, ip(3), s.addr.port(), None).ok);
    // Draining: still 220 and 250 to EHLO, but 421 to MAIL FROM.
    s.fail_path("draining", true);
    assert!(
        run(&plain, ip(3), s.addr.port(), None).ok,
        "the banner-only dialogue cannot see it"
    );
    let r = run(&deep, ip(3), s.addr.port(), None);
    assert!(!r.ok);
    assert_eq!(r.error.as_deref(), Some("MAIL FROM answered 421"));
    // An HTTP server is not an SMTP server.
    let h = Sim::start(&rt, ip(3), 0, Proto::Http);
    assert!(!run(&plain, ip(3), h.addr.port(), None).ok);
}

#[test]
fn http_status_and_body() {
    let rt = sim::runtime();
    let s = Sim::start(&rt, ip(4), 0, Proto::Http);
    let p = s.addr.port();
    assert!(
        run(
            &http("/owa/healthcheck.htm", Some("owa.mail.test"), None, None),
            ip(4),
            p,
            None
        )
        .ok
    );
    assert!(
        run(
            &http("/owa/healthcheck.htm", None, Some("200 OK"), None),
            ip(4),
            p,
            None
        )
        .ok
    );
    let r = run(
        &http("/owa/healthcheck.htm", None, Some("EXCH99"), None),
        ip(4),
        p,
        None,
    );
    assert_eq!(r.error.as_deref(), Some("body does not contain \"EXCH99\""));
    s.fail_path("/owa/healthcheck.htm", true);
    let r = run(
        &http("/owa/healthcheck.htm", None, None, None),
        ip(4),
        p,
        None,
    );
    assert_eq!(r.error.as_deref(), Some("status 503 (expected 200)"));
    // "/" is not a health page (Exchange redirects it).
    assert!(!run(&http("/", None, None, None), ip(4), p, None).ok);
}

#[test]
fn a_hung_server_fails_at_the_timeout() {
    let rt = sim::runtime();
    let s = Sim::start(&rt, ip(5), 0, Proto::Http);
    s.behaviour.hang.store(true, Ordering::Relaxed);
    let r = run(
        &http("/owa/healthcheck.htm", None, None, None),
        ip(5),
        s.addr.port(),
        None,
    );
    assert!(!r.ok);
    assert_eq!(r.error.as_deref(), Some("no answer within 800 ms"));
    assert!(r.latency >= LIMIT);
}

#[test]
fn https_verification_and_certificate_expiry() {
    let rt = sim::runtime();
    let (cfg, pem) = sim::tls_server_with_pem(&["owa.mail.test"]);
    let s = Sim::start(&rt, ip(6), 0, Proto::Https(cfg));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let verify = TlsCheck {
        verify: true,
        ca_file: Some(ca),
    };
    let kind = http(
        "/owa/healthcheck.htm",
        Some("owa.mail.test"),
        None,
        Some(verify.clone()),
    );
    let r = run(&kind, ip(6), s.addr.port(), Some(&verify));
    assert!(r.ok, "{r:?}");
    let days = r.cert_days_left().expect("expiry reported");
    assert!(
        (360..=400).contains(&days),
        "a year and a month, as a public CA issues: {days}"
    );
    // The wrong name fails verification...
    let wrong = http(
        "/owa/healthcheck.htm",
        Some("mail.other.test"),
        None,
        Some(verify.clone()),
    );
    let r = run(&wrong, ip(6), s.addr.port(), Some(&verify));
    assert!(!r.ok);
    assert!(r.error.unwrap().starts_with("tls:"));
    // ... and passes when the admin turned verification off.
    let off = TlsCheck {
        verify: false,
        ca_file: None,
    };
    let kind = http(
        "/owa/healthcheck.htm",
        Some("mail.other.test"),
        None,
        Some(off.clone()),
    );
    assert!(run(&kind, ip(6), s.addr.port(), Some(&off)).ok);
    // A CA file with no certificate is a clear error.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = client::config(&TlsCheck {
        verify: true,
        ca_file: Some(empty),
    })
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("no CA certificate in"), "{err}");
}

/// The simulated IMAP and POP3 servers answer what a client sends before login, as Exchange
/// does, for any tag: `curl imap://` and a prober's CAPABILITY get answers, not a hang.
#[test]
fn simulated_imap_and_pop3_answer_before_login() {
    use std::io::{BufRead, BufReader, Write};
    let rt = sim::runtime();
    let imap = Sim::start(&rt, ip(40), 0, Proto::Imap);
    let pop3 = Sim::start(&rt, ip(41), 0, Proto::Pop3);
    *imap.behaviour.name.lock().unwrap() = Some("ex01".into());
    let talk = |addr: std::net::SocketAddr, lines: &[&str], want: usize| {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        for l in lines {
            (&s).write_all(l.as_bytes()).unwrap();
        }
        let mut r = BufReader::new(s);
        (0..want)
            .map(|_| {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                line.trim_end().to_string()
            })
            .collect::<Vec<_>>()
    };
    let got = talk(
        imap.addr,
        &[
            "x7 CAPABILITY\r\n",
            "x8 noop\r\n",
            "x9 LOGIN user pass\r\n",
            "y1 SELECT inbox\r\n",
            "Z2 LOGOUT\r\n",
        ],
        8,
    );
    assert_eq!(
        got[0],
        "* OK The Microsoft Exchange IMAP4 service is ready. [ex01.mail.example.test]"
    );
    assert!(
        got[1].starts_with("* CAPABILITY IMAP4 IMAP4rev1"),
        "{got:?}"
    );
    assert_eq!(got[2], "x7 OK CAPABILITY completed.");
    assert_eq!(got[3], "x8 OK NOOP completed.");
    assert_eq!(got[4], "x9 NO LOGIN failed.");
    assert_eq!(got[5], "y1 BAD Command received in Invalid state.");
    assert!(got[6].starts_with("* BYE"), "{got:?}");
    assert_eq!(got[7], "Z2 OK LOGOUT completed.");

    let got = talk(
        pop3.addr,
        &["CAPA\r\n", "USER u\r\n", "PASS p\r\n", "QUIT\r\n"],
        10,
    );
    assert!(got[0].starts_with("+OK The Microsoft Exchange POP3 service is ready."));
    assert_eq!(got[1], "+OK");
    assert_eq!(got[6], ".", "{got:?}");
    assert_eq!(got[7], "+OK");
    assert!(got[8].starts_with("-ERR Logon failure"), "{got:?}");
    assert!(got[9].starts_with("+OK Microsoft Exchange Server POP3 server signing off."));

    // curl, as a user would try it: CAPABILITY answered, and curl exits at once.
    let curl = common::require_tool("curl");
    let out = std::process::Command::new(curl)
        .args(["-s", "-m", "5", "-X", "CAPABILITY"])
        .arg(format!("imap://{}/", imap.addr))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("CAPABILITY IMAP4"));
}
