//! Probes: one real protocol dialogue against a server's address, bounded by the check's timeout.
//!
//! - `tcp`: connect.
//! - `banner`: expect a greeting prefix (IMAP `* OK`, POP3 `+OK`), then log out politely.
//! - `smtp`: 2xx banner → `EHLO` → 250 → optional `MAIL FROM` → 250 → `QUIT` → 2xx (HAProxy's
//!   smtpchk, plus the step that catches a draining transport answering 421).
//! - `http`/`https`: `GET <path>` to the address with Host (and SNI) set, expecting a status and
//!   optionally a body substring; hyper speaks HTTP, rustls TLS. The peer certificate's days to
//!   expiry are reported as data.
//!
//! A dialogue that connects but never answers fails at the timeout: this is what catches a hung
//! server, which TCP-connect checks never notice.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::config::CheckKind;

/// Largest body read for a body match; Exchange's healthcheck.htm is a few dozen bytes.
const MAX_BODY: usize = 64 * 1024;
/// Longest reply line read from a banner or SMTP server.
const MAX_LINE: usize = 4096;

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// The dialogue got what the check expects.
    pub ok: bool,
    /// Time taken.
    pub latency: Duration,
    /// Why it failed.
    pub error: Option<String>,
    /// The certificate the server presented (https only, once the handshake completed).
    pub cert: Option<PeerCert>,
    /// The result in short, as HAProxy's stats page shows it: `L4OK`, `L7OK 200`, `L4CON`,
    /// `L4TOUT`, `L6RSP`, `L7STS 503`, `L7RSP`, `L7TOUT`.
    pub code: String,
}

/// What a probe learnt of a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// Its notAfter, in Unix seconds.
    pub not_after: i64,
    /// Its DNS names (subjectAltName).
    pub names: Vec<String>,
}

impl ProbeResult {
    /// Days from now until the peer certificate expires (negative when expired).
    pub fn cert_days_left(&self) -> Option<i64> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        Some((self.cert.as_ref()?.not_after - now).div_euclid(86_400))
    }
}

/// Why a probe failed; its text is what the dashboard, the metrics and the logs show.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The TCP connection failed (refused, unreachable).
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The check's host is no TLS server name.
    #[error("bad TLS name {host}: {source}")]
    TlsName {
        /// The check's host.
        host: String,
        /// rustls's complaint.
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// The TLS handshake failed (a certificate that does not verify, say).
    #[error("tls: {0}")]
    Tls(std::io::Error),
    /// An https check reached the prober without its client config (a bug, not the server's).
    #[error("https check without a TLS config")]
    NoTlsConfig,
    /// Reading the server's reply failed.
    #[error("read: {0}")]
    Read(std::io::Error),
    /// Writing a command failed.
    #[error("write: {0}")]
    Write(std::io::Error),
    /// The server closed the connection before its reply.
    #[error("connection closed by the server")]
    Closed,
    /// The greeting is not the expected one.
    #[error("greeting {got:?} does not start with {expect:?}")]
    Greeting {
        /// The greeting line.
        got: String,
        /// The prefix the check expects.
        expect: String,
    },
    /// A line that is no SMTP reply.
    #[error("not an SMTP reply: {0:?}")]
    NotSmtp(String),
    /// The SMTP banner is not 2xx.
    #[error("banner {0}")]
    SmtpBanner(u16),
    /// An SMTP command got an unexpected reply.
    #[error("{what} answered {code}")]
    SmtpReply {
        /// The SMTP command (EHLO, MAIL FROM, RSET, QUIT).
        what: &'static str,
        /// The reply code.
        code: u16,
    },
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(hyper::Error),
    /// The request could not be built (a path that is no URI).
    #[error("request: {0}")]
    Request(hyper::http::Error),
    /// An unexpected HTTP status.
    #[error("status {got} (expected {expect})")]
    Status {
        /// The status received.
        got: u16,
        /// The status the check expects.
        expect: u16,
    },
    /// The body lacks the expected text.
    #[error("body does not contain {0:?}")]
    Body(String),
    /// The body could not be read (or exceeded the limit).
    #[error("body: {0}")]
    BodyRead(Box<dyn std::error::Error + Send + Sync>),
    /// No answer within the check's timeout.
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
}

/// A TLS client config per check, built once.
pub type TlsConfigs = Arc<rustls::ClientConfig>;

/// Runs the `kind` dialogue against `addr:port`, failing at `limit`.
pub async fn run(
    kind: &CheckKind,
    addr: IpAddr,
    port: u16,
    limit: Duration,
    tls: Option<&TlsConfigs>,
) -> ProbeResult {
    let start = Instant::now();
    let mut seen = Seen::default();
    let res = timeout(
        limit,
        dialogue(kind, SocketAddr::new(addr, port), tls, &mut seen),
    )
    .await;
    let code = short_code(kind, res.as_ref().map_err(|_| ()), seen.connected);
    let (ok, error) = match res {
        Ok(Ok(())) => (true, None),
        Ok(Err(e)) => (false, Some(e.to_string())),
        Err(_) => (false, Some(ProbeError::Timeout(limit).to_string())),
    };
    ProbeResult {
        ok,
        latency: start.elapsed(),
        error,
        cert: seen.cert,
        code,
    }
}

/// What a dialogue got to before it ended (or was cut off by the timeout).
#[derive(Debug, Default)]
struct Seen {
    /// The TCP connection was established.
    connected: bool,
    /// The certificate the server presented.
    cert: Option<PeerCert>,
}

/// A probe's outcome in HAProxy's short form (`Err(())`: the timeout cut it off). Layer 4 is
/// the TCP connection, layer 6 TLS, layer 7 the protocol dialogue.
fn short_code(
    kind: &CheckKind,
    res: Result<&Result<(), ProbeError>, ()>,
    connected: bool,
) -> String {
    let code = match (res, kind) {
        (Err(()), _) if !connected => "L4TOUT",
        (Err(()), _) => "L7TOUT",
        (Ok(Ok(())), CheckKind::Tcp) => "L4OK",
        (Ok(Ok(())), CheckKind::Http { expect_status, .. }) => {
            return format!("L7OK {expect_status}")
        }
        (Ok(Ok(())), _) => "L7OK",
        (Ok(Err(e)), _) => match e {
            ProbeError::Connect(_) => "L4CON",
            ProbeError::TlsName { .. } | ProbeError::Tls(_) | ProbeError::NoTlsConfig => "L6RSP",
            ProbeError::Status { got, .. } => return format!("L7STS {got}"),
            ProbeError::SmtpBanner(code) | ProbeError::SmtpReply { code, .. } => {
                return format!("L7STS {code}")
            }
            ProbeError::Timeout(_) => "L7TOUT",
            _ => "L7RSP",
        },
    };
    code.to_string()
}

async fn dialogue(
    kind: &CheckKind,
    addr: SocketAddr,
    tls: Option<&TlsConfigs>,
    seen: &mut Seen,
) -> Result<(), ProbeError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(ProbeError::Connect)?;
    seen.connected = true;
    let _ = stream.set_nodelay(true);
    match kind {
        CheckKind::Tcp => Ok(()),
        CheckKind::Banner { expect, send } => banner(stream, expect, send).await,
        CheckKind::Smtp { ehlo, mail_from } => smtp(stream, ehlo, mail_from.as_deref()).await,
        CheckKind::Http {
            path,
            host,
            expect_status,
            expect_body,
            tls: tls_check,
        } => {
            let host = host.clone().unwrap_or_else(|| addr.ip().to_string());
            match (tls_check, tls) {
                (Some(_), Some(cfg)) => {
                    let name = ServerName::try_from(host.clone()).map_err(|source| {
                        ProbeError::TlsName {
                            host: host.clone(),
                            source,
                        }
                    })?;
                    let conn = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name, stream)
                        .await
                        .map_err(ProbeError::Tls)?;
                    seen.cert = conn
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|der| {
                            let (not_after, names) = crate::tls::leaf_facts(der)?;
                            Some(PeerCert { not_after, names })
                        });
                    http(conn, &host, path, *expect_status, expect_body.as_deref()).await
                }
                (Some(_), None) => Err(ProbeError::NoTlsConfig),
                (None, _) => {
                    http(stream, &host, path, *expect_status, expect_body.as_deref()).await
                }
            }
        }
    }
}

async fn read_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    line: &mut String,
) -> Result<(), ProbeError> {
    line.clear();
    let n = (&mut *r)
        .take(MAX_LINE as u64)
        .read_line(line)
        .await
        .map_err(ProbeError::Read)?;
    if n == 0 {
        return Err(ProbeError::Closed);
    }
    Ok(())
}

use tokio::io::AsyncReadExt;

async fn banner(stream: TcpStream, expect: &str, send: &str) -> Result<(), ProbeError> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    read_line(&mut r, &mut line).await?;
    if !line.starts_with(expect) {
        return Err(ProbeError::Greeting {
            got: line.trim_end().to_string(),
            expect: expect.to_string(),
        });
    }
    if !send.is_empty() {
        let _ = r.get_mut().write_all(send.as_bytes()).await;
    }
    let _ = r.get_mut().shutdown().await;
    Ok(())
}

/// Reads one (possibly multi-line) SMTP reply; returns its code.
async fn smtp_reply<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<u16, ProbeError> {
    let mut line = String::new();
    loop {
        read_line(r, &mut line).await?;
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| ProbeError::NotSmtp(line.trim_end().to_string()))?;
        // "250-..." continues, "250 ..." (or a bare "250") ends the reply.
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(code);
        }
    }
}

async fn smtp(stream: TcpStream, ehlo: &str, mail_from: Option<&str>) -> Result<(), ProbeError> {
    let mut r = BufReader::new(stream);
    let code = smtp_reply(&mut r).await?;
    if !(200..300).contains(&code) {
        return Err(ProbeError::SmtpBanner(code));
    }
    smtp_step(&mut r, &format!("EHLO {ehlo}\r\n"), |c| c == 250, "EHLO").await?;
    if let Some(from) = mail_from {
        smtp_step(
            &mut r,
            &format!("MAIL FROM:<{from}>\r\n"),
            |c| c == 250,
            "MAIL FROM",
        )
        .await?;
        smtp_step(&mut r, "RSET\r\n", |c| (200..300).contains(&c), "RSET").await?;
    }
    smtp_step(&mut r, "QUIT\r\n", |c| (200..300).contains(&c), "QUIT").await?;
    Ok(())
}

/// Sends one SMTP command and checks the reply code.
async fn smtp_step(
    r: &mut BufReader<TcpStream>,
    cmd: &str,
    want: fn(u16) -> bool,
    what: &'static str,
) -> Result<(), ProbeError> {
    r.get_mut()
        .write_all(cmd.as_bytes())
        .await
        .map_err(ProbeError::Write)?;
    let code = smtp_reply(r).await?;
    if want(code) {
        Ok(())
    } else {
        Err(ProbeError::SmtpReply { what, code })
    }
}

async fn http<S>(
    io: S,
    host: &str,
    path: &str,
    expect: u16,
    body: Option<&str>,
) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(ProbeError::Http)?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "mailns-healthcheck")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(ProbeError::Request)?;
    let resp = sender.send_request(req).await.map_err(ProbeError::Http);
    let result = match resp {
        Err(e) => Err(e),
        Ok(resp) if resp.status().as_u16() != expect => Err(ProbeError::Status {
            got: resp.status().as_u16(),
            expect,
        }),
        Ok(resp) => match body {
            None => Ok(()),
            Some(needle) => {
                let limited = http_body_util::Limited::new(resp.into_body(), MAX_BODY);
                match limited.collect().await {
                    Ok(b) => {
                        if memfind(&b.to_bytes(), needle.as_bytes()) {
                            Ok(())
                        } else {
                            Err(ProbeError::Body(needle.to_string()))
                        }
                    }
                    Err(e) => Err(ProbeError::BodyRead(e)),
                }
            }
        },
    };
    driver.abort();
    result
}

fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_codes_name_the_layer_that_failed() {
        let http = CheckKind::Http {
            path: "/owa/healthcheck.htm".into(),
            host: None,
            expect_status: 200,
            expect_body: None,
            tls: None,
        };
        let refused = Err(ProbeError::Connect(
            std::io::ErrorKind::ConnectionRefused.into(),
        ));
        let status = Err(ProbeError::Status {
            got: 503,
            expect: 200,
        });
        assert_eq!(short_code(&http, Ok(&Ok(())), true), "L7OK 200");
        assert_eq!(short_code(&CheckKind::Tcp, Ok(&Ok(())), true), "L4OK");
        assert_eq!(short_code(&http, Ok(&refused), false), "L4CON");
        assert_eq!(short_code(&http, Ok(&status), true), "L7STS 503");
        assert_eq!(short_code(&http, Err(()), false), "L4TOUT");
        assert_eq!(short_code(&http, Err(()), true), "L7TOUT");
        assert_eq!(
            short_code(&http, Ok(&Err(ProbeError::Closed)), true),
            "L7RSP"
        );
    }
}
