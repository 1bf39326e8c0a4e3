//! Heartbeats: one small request, in the protocol the port speaks, on a sentinel's held
//! connection, so a server that stops answering (a hung process, a dropped path) is noticed
//! within a timeout instead of at the next probe. Never a new connection: the sentinel holds one.
//!
//! - SMTP: `NOOP` → `250` (RFC 5321 allows it at any time, before `EHLO` too).
//! - IMAP: `mns NOOP` → `mns OK` (RFC 3501: any state).
//! - POP3: `CAPA` → `+OK` and its list (RFC 2449: any state). `NOOP` is only valid after login
//!   (RFC 1939) and Exchange answers it `-ERR` before, an error line in its log per heartbeat.
//! - HTTP(S): a keep-alive `GET` of the check's own path over the same (TLS) connection.
//! - Anything else (a bare TCP port, a banner of an unknown protocol): nothing is sent; TCP
//!   keepalive and `TCP_USER_TIMEOUT` make the kernel report a path that stopped answering.
//!
//! The framing of replies is pure ([`Line::parse`]), so it is tested without I/O.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use super::probe::TlsConfigs;
use crate::config::CheckKind;

/// Longest reply kept while framing; a heartbeat's reply is a line or a short list.
const MAX_REPLY: usize = 16 * 1024;
/// Largest body read (and discarded) from an HTTP heartbeat.
const MAX_BODY: usize = 64 * 1024;
/// The IMAP tag of every heartbeat.
const IMAP_TAG: &str = "mns";

/// What a sentinel sends on its held connection.
#[derive(Debug, Clone)]
pub(super) enum Heartbeat {
    /// A line protocol: greeting, then one command per beat.
    Line(Line),
    /// HTTP(S): a keep-alive GET of `path` with `host`, expecting `status`.
    Http {
        /// The check's path.
        path: String,
        /// Host header (and SNI).
        host: String,
        /// The status the check expects (kept for the logs; any status is an answer).
        status: u16,
        /// The TLS client config, for https.
        tls: Option<TlsConfigs>,
    },
    /// Nothing: TCP keepalive only.
    Idle,
}

/// A line protocol's heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Line {
    /// SMTP.
    Smtp,
    /// IMAP.
    Imap,
    /// POP3.
    Pop3,
}

/// One framed reply of a line protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reply {
    /// The answer the protocol gives when all is well.
    Fine,
    /// An answer, but not the expected one (a 4xx/5xx, `-ERR`, `NO`): still an answer.
    Unexpected,
    /// The server says goodbye (SMTP 421, IMAP `* BYE`): it is about to close.
    Closing,
    /// A line to skip (an IMAP untagged response).
    Skip,
}

impl Heartbeat {
    /// The heartbeat for a check's dialogue; `every` zero turns heartbeats off.
    pub(super) fn of(kind: &CheckKind, tls: Option<&TlsConfigs>, every: Duration) -> Self {
        if every.is_zero() {
            return Self::Idle;
        }
        match kind {
            CheckKind::Tcp => Self::Idle,
            CheckKind::Smtp { .. } => Self::Line(Line::Smtp),
            CheckKind::Banner { expect, .. } if expect.starts_with("* ") => Self::Line(Line::Imap),
            CheckKind::Banner { expect, .. } if expect.starts_with("+OK") => Self::Line(Line::Pop3),
            CheckKind::Banner { .. } => Self::Idle,
            CheckKind::Http {
                path,
                host,
                expect_status,
                tls: check_tls,
                ..
            } => match (check_tls, tls) {
                (Some(_), None) => Self::Idle,
                _ => Self::Http {
                    path: path.clone(),
                    host: host.clone().unwrap_or_default(),
                    status: *expect_status,
                    tls: check_tls.as_ref().and(tls.cloned()),
                },
            },
        }
    }

    /// True if it sends anything.
    pub(super) fn is_active(&self) -> bool {
        !matches!(self, Self::Idle)
    }
}

impl Line {
    /// The command of one heartbeat.
    fn command(self) -> &'static [u8] {
        match self {
            Self::Smtp => b"NOOP\r\n",
            Self::Imap => b"mns NOOP\r\n",
            Self::Pop3 => b"CAPA\r\n",
        }
    }

    /// Frames the first complete reply in `buf`: the reply and the bytes it used, or None while
    /// it is incomplete. `greeting` frames the server's greeting instead of a command's reply.
    pub(super) fn parse(self, buf: &[u8], greeting: bool) -> Option<(Reply, usize)> {
        let first = line_end(buf, 0)?;
        let line = buf.get(..first).unwrap_or_default();
        match self {
            Self::Smtp => {
                // "250-..." continues; "250 ..." or a bare "250" ends the reply.
                let mut end = first;
                let mut last = line;
                while last.get(3) == Some(&b'-') {
                    let next = line_end(buf, end)?;
                    last = buf.get(end..next).unwrap_or_default();
                    end = next;
                }
                // A line that is no reply (too short, not a number) is an answer all the same.
                let code = last
                    .get(..3)
                    .and_then(|c| std::str::from_utf8(c).ok())
                    .and_then(|c| c.parse::<u16>().ok());
                let reply = match code {
                    Some(421) => Reply::Closing,
                    Some(c) if (200..300).contains(&c) => Reply::Fine,
                    _ => Reply::Unexpected,
                };
                Some((reply, end))
            }
            Self::Imap => {
                let reply = if starts_with_ci(line, b"* BYE") {
                    Reply::Closing
                } else if greeting {
                    if starts_with_ci(line, b"* OK") || starts_with_ci(line, b"* PREAUTH") {
                        Reply::Fine
                    } else {
                        Reply::Unexpected
                    }
                } else if starts_with_ci(line, format!("{IMAP_TAG} OK").as_bytes()) {
                    Reply::Fine
                } else if starts_with_ci(line, format!("{IMAP_TAG} ").as_bytes()) {
                    Reply::Unexpected
                } else {
                    Reply::Skip
                };
                Some((reply, first))
            }
            Self::Pop3 => {
                if !line.starts_with(b"+OK") {
                    return Some((Reply::Unexpected, first));
                }
                if greeting {
                    return Some((Reply::Fine, first));
                }
                // CAPA's list ends with a line of one dot.
                let mut end = first;
                loop {
                    let next = line_end(buf, end)?;
                    let l = buf.get(end..next).unwrap_or_default();
                    end = next;
                    if l.strip_suffix(b"\r\n").unwrap_or(l) == b"." {
                        return Some((Reply::Fine, end));
                    }
                }
            }
        }
    }
}

/// The index just past the `\n` that ends the line starting at `from`.
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    rest.iter().position(|&b| b == b'\n').map(|i| from + i + 1)
}

fn starts_with_ci(line: &[u8], prefix: &[u8]) -> bool {
    line.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// How a held connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The server closed it, or said goodbye.
    Closed,
    /// The kernel gave up on it: the path stopped acknowledging (keepalive or unacknowledged
    /// data past `TCP_USER_TIMEOUT`).
    TimedOut,
    /// It could not be opened, or the greeting was missing or wrong.
    Refused,
    /// A heartbeat stayed unanswered past the give-up time; the connection is dropped.
    Abandoned,
}

/// What a held connection tells the sentinel while it runs.
pub(super) trait Pulse {
    /// The connection is open and greeted, or a heartbeat was answered (whatever the answer:
    /// a 503 or a 4xx proves the server alive; what it means is the probes' to decide, so a
    /// flapping page flaps no more than its probes see).
    fn answered(&self);
    /// A heartbeat sent at `since` is unanswered past the grace time.
    fn silent(&self, since: Instant);
}

/// The timing of one held connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Beat {
    /// Between heartbeats.
    pub(super) every: Duration,
    /// An answer later than this makes the connection silent.
    pub(super) grace: Duration,
    /// An answer later than this ends the connection; also bounds the greeting.
    pub(super) give_up: Duration,
}

/// Holds `stream` with `hb` until it ends.
pub(super) async fn hold(stream: TcpStream, hb: &Heartbeat, beat: Beat, pulse: &impl Pulse) -> End {
    let opened = Instant::now();
    match hb {
        Heartbeat::Idle => idle(stream, pulse).await,
        Heartbeat::Line(p) => lines(stream, *p, beat, pulse).await,
        Heartbeat::Http {
            path,
            host,
            status,
            tls,
        } => match tls {
            None => http(stream, host, path, *status, beat, pulse).await,
            Some(cfg) => {
                let Ok(name) = ServerName::try_from(host.clone()) else {
                    return End::Refused;
                };
                let connector = tokio_rustls::TlsConnector::from(cfg.clone());
                match timeout(beat.give_up, connector.connect(name, stream)).await {
                    Ok(Ok(tls)) => http(tls, host, path, *status, beat, pulse).await,
                    Ok(Err(_)) => End::Refused,
                    Err(_) => {
                        pulse.silent(opened);
                        End::Refused
                    }
                }
            }
        },
    }
}

/// The end an I/O error means: the kernel's timeout, or a close.
fn ended_by(e: &std::io::Error) -> End {
    if e.kind() == std::io::ErrorKind::TimedOut {
        End::TimedOut
    } else {
        End::Closed
    }
}

/// No heartbeat: wait for the close (greetings and anything else are read and ignored).
async fn idle(mut stream: TcpStream, pulse: &impl Pulse) -> End {
    pulse.answered();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return End::Closed,
            Ok(_) => {}
            Err(e) => return ended_by(&e),
        }
    }
}

/// A line protocol: the greeting, then a command every `beat.every`.
async fn lines(mut stream: TcpStream, p: Line, beat: Beat, pulse: &impl Pulse) -> End {
    let mut buf = Vec::new();
    let opened = Instant::now();
    match timeout(beat.give_up, next_reply(&mut stream, &mut buf, p, true)).await {
        Ok(Ok(Reply::Fine)) => pulse.answered(),
        Ok(Ok(_)) => return End::Refused,
        Ok(Err(end)) => return end,
        Err(_) => {
            // Connected, never greeted: the server hangs.
            pulse.silent(opened);
            return End::Refused;
        }
    }
    loop {
        // Between beats the server may talk (a goodbye before an idle close) or close.
        match timeout(beat.every, next_reply(&mut stream, &mut buf, p, false)).await {
            Err(_) => {}
            Ok(Ok(Reply::Closing)) => return End::Closed,
            Ok(Ok(_)) => continue,
            Ok(Err(end)) => return end,
        }
        if let Err(e) = stream.write_all(p.command()).await {
            return ended_by(&e);
        }
        let sent = Instant::now();
        let reply = awaited(sent, beat, pulse, async {
            loop {
                match next_reply(&mut stream, &mut buf, p, false).await {
                    Ok(Reply::Skip) => continue,
                    other => return other,
                }
            }
        })
        .await;
        match reply {
            Ok(Ok(Reply::Closing)) => return End::Closed,
            Ok(Ok(_)) => pulse.answered(),
            Ok(Err(end)) | Err(end) => return end,
        }
    }
}

/// Waits for `answer` to a heartbeat sent at `sent`: silent past the grace, abandoned past the
/// give-up time.
async fn awaited<T>(
    sent: Instant,
    beat: Beat,
    pulse: &impl Pulse,
    answer: impl std::future::Future<Output = T>,
) -> Result<T, End> {
    tokio::pin!(answer);
    let mut flagged = false;
    loop {
        tokio::select! {
            r = &mut answer => return Ok(r),
            () = sleep_until(sent + beat.grace), if !flagged => {
                flagged = true;
                pulse.silent(sent);
            }
            () = sleep_until(sent + beat.give_up) => return Err(End::Abandoned),
        }
    }
}

/// Reads until one whole reply is framed; cancel-safe, since the bytes live in `buf`.
async fn next_reply(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    p: Line,
    greeting: bool,
) -> Result<Reply, End> {
    let mut chunk = [0u8; 1024];
    loop {
        if let Some((reply, used)) = p.parse(buf, greeting) {
            buf.drain(..used);
            return Ok(reply);
        }
        if buf.len() > MAX_REPLY {
            return Err(End::Refused);
        }
        match stream.read(&mut chunk).await {
            Ok(0) => return Err(End::Closed),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) => return Err(ended_by(&e)),
        }
    }
}

/// HTTP/1.1 keep-alive: a GET of the check's path every `beat.every`.
async fn http<S>(io: S, host: &str, path: &str, status: u16, beat: Beat, pulse: &impl Pulse) -> End
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await
    else {
        return End::Refused;
    };
    let driver = AbortOnDrop(tokio::spawn(conn));
    pulse.answered();
    let mut driver = driver;
    loop {
        // A server that closes the connection between heartbeats is noticed at once.
        tokio::select! {
            () = sleep(beat.every) => {}
            _ = &mut driver.0 => return End::Closed,
        }
        if sender.ready().await.is_err() {
            return End::Closed;
        }
        let Ok(req) = hyper::Request::get(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::USER_AGENT, "mailns-heartbeat")
            .body(Empty::<Bytes>::new())
        else {
            return End::Refused;
        };
        let sent = Instant::now();
        let answer = async {
            let resp = sender.send_request(req).await?;
            if resp.status().as_u16() != status {
                tracing::trace!(got = resp.status().as_u16(), status, "heartbeat status");
            }
            // The body is read (and dropped) so the connection stays usable.
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY);
            let _ = body.collect().await;
            Ok::<_, hyper::Error>(())
        };
        match awaited(sent, beat, pulse, answer).await {
            Ok(Ok(())) => pulse.answered(),
            Ok(Err(e)) => return hyper_end(&e),
            Err(end) => return end,
        }
    }
}

/// What a hyper error means for the connection.
fn hyper_end(e: &hyper::Error) -> End {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return ended_by(io);
        }
        source = s.source();
    }
    End::Closed
}

/// The connection driver stops with the heartbeat.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_replies_are_framed_by_their_last_line() {
        let p = Line::Smtp;
        assert_eq!(p.parse(b"250 2.0.0 OK\r\n", false), Some((Reply::Fine, 14)));
        assert_eq!(p.parse(b"250-a\r\n250", false), None, "incomplete");
        assert_eq!(
            p.parse(b"220-cas\r\n220 ready\r\nnext", true),
            Some((Reply::Fine, 20))
        );
        assert_eq!(
            p.parse(b"421 4.4.1 Connection timed out\r\n", false),
            Some((Reply::Closing, 32))
        );
        assert_eq!(
            p.parse(b"500 5.3.3 no\r\n", false).map(|r| r.0),
            Some(Reply::Unexpected)
        );
        assert_eq!(
            p.parse(b"junk\r\n", false).map(|r| r.0),
            Some(Reply::Unexpected)
        );
        assert_eq!(
            p.parse(b"\n", false),
            Some((Reply::Unexpected, 1)),
            "too short"
        );
        assert_eq!(
            p.parse(b"\xff\xfe\xfd\r\n", false).map(|r| r.0),
            Some(Reply::Unexpected)
        );
    }

    #[test]
    fn imap_skips_untagged_lines_and_sees_bye() {
        let p = Line::Imap;
        assert_eq!(
            p.parse(b"* OK IMAP4rev1 ready\r\n", true).map(|r| r.0),
            Some(Reply::Fine)
        );
        assert_eq!(p.parse(b"* 3 EXISTS\r\n", false), Some((Reply::Skip, 12)));
        assert_eq!(
            p.parse(b"mns OK NOOP completed.\r\n", false).map(|r| r.0),
            Some(Reply::Fine)
        );
        assert_eq!(
            p.parse(b"MNS ok done\r\n", false).map(|r| r.0),
            Some(Reply::Fine)
        );
        assert_eq!(
            p.parse(b"mns BAD what\r\n", false).map(|r| r.0),
            Some(Reply::Unexpected)
        );
        assert_eq!(
            p.parse(b"* BYE Connection is closed. 13\r\n", false)
                .map(|r| r.0),
            Some(Reply::Closing)
        );
        assert_eq!(
            p.parse(b"* BYE\r\n", true).map(|r| r.0),
            Some(Reply::Closing)
        );
        assert_eq!(p.parse(b"mns OK", false), None);
    }

    #[test]
    fn pop3_capa_ends_at_the_dot_line() {
        let p = Line::Pop3;
        assert_eq!(p.parse(b"+OK ready\r\n", true), Some((Reply::Fine, 11)));
        assert_eq!(p.parse(b"+OK\r\nTOP\r\nUIDL\r\n", false), None);
        assert_eq!(
            p.parse(b"+OK\r\nTOP\r\nUIDL\r\n.\r\n+OK", false),
            Some((Reply::Fine, 19))
        );
        assert_eq!(
            p.parse(b"-ERR Connection is closed. 13\r\n", false)
                .map(|r| r.0),
            Some(Reply::Unexpected)
        );
    }

    #[test]
    fn every_check_kind_has_its_heartbeat() {
        let every = Duration::from_millis(500);
        let banner = |e: &str| CheckKind::Banner {
            expect: e.into(),
            send: String::new(),
        };
        assert!(matches!(
            Heartbeat::of(&banner("* OK"), None, every),
            Heartbeat::Line(Line::Imap)
        ));
        assert!(matches!(
            Heartbeat::of(&banner("+OK"), None, every),
            Heartbeat::Line(Line::Pop3)
        ));
        assert!(matches!(
            Heartbeat::of(&banner("SSH-2.0"), None, every),
            Heartbeat::Idle
        ));
        assert!(matches!(
            Heartbeat::of(&CheckKind::Tcp, None, every),
            Heartbeat::Idle
        ));
        let smtp = CheckKind::Smtp {
            ehlo: "x".into(),
            mail_from: None,
        };
        assert!(matches!(
            Heartbeat::of(&smtp, None, every),
            Heartbeat::Line(Line::Smtp)
        ));
        assert!(
            !Heartbeat::of(&smtp, None, Duration::ZERO).is_active(),
            "0s: off"
        );
        let http = CheckKind::Http {
            path: "/owa/healthcheck.htm".into(),
            host: Some("owa.mail.test".into()),
            expect_status: 200,
            expect_body: None,
            tls: None,
        };
        assert!(matches!(
            Heartbeat::of(&http, None, every),
            Heartbeat::Http {
                status: 200,
                tls: None,
                ..
            }
        ));
    }
}
