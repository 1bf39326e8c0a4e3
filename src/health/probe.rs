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
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::config::health::TlsCheck;
use crate::config::CheckKind;

/// Largest body read for a body match; Exchange's healthcheck.htm is a few dozen bytes.
const MAX_BODY: usize = 64 * 1024;
/// Longest reply line read from a banner or SMTP server.
const MAX_LINE: usize = 4096;

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// Passed.
    pub ok: bool,
    /// Time taken.
    pub latency: Duration,
    /// Why it failed.
    pub error: Option<String>,
    /// When the peer certificate expires, in Unix seconds (https only).
    pub cert_not_after: Option<i64>,
}

impl ProbeResult {
    /// Days from now until the peer certificate expires (negative when expired).
    pub fn cert_days_left(&self) -> Option<i64> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        Some((self.cert_not_after? - now).div_euclid(86_400))
    }
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
    let mut cert_not_after = None;
    let res = timeout(
        limit,
        dialogue(kind, SocketAddr::new(addr, port), tls, &mut cert_not_after),
    )
    .await;
    let (ok, error) = match res {
        Ok(Ok(())) => (true, None),
        Ok(Err(e)) => (false, Some(e)),
        Err(_) => (
            false,
            Some(format!("no answer within {} ms", limit.as_millis())),
        ),
    };
    ProbeResult {
        ok,
        latency: start.elapsed(),
        error,
        cert_not_after,
    }
}

async fn dialogue(
    kind: &CheckKind,
    addr: SocketAddr,
    tls: Option<&TlsConfigs>,
    cert_days: &mut Option<i64>,
) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
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
                    let name = ServerName::try_from(host.clone())
                        .map_err(|e| format!("bad TLS name {host}: {e}"))?;
                    let conn = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name, stream)
                        .await
                        .map_err(|e| format!("tls: {e}"))?;
                    *cert_days = conn
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(not_after);
                    http(conn, &host, path, *expect_status, expect_body.as_deref()).await
                }
                (Some(_), None) => Err("https check without a TLS config".into()),
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
) -> Result<(), String> {
    line.clear();
    let n = (&mut *r)
        .take(MAX_LINE as u64)
        .read_line(line)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("connection closed by the server".into());
    }
    Ok(())
}

use tokio::io::AsyncReadExt;

async fn banner(stream: TcpStream, expect: &str, send: &str) -> Result<(), String> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    read_line(&mut r, &mut line).await?;
    if !line.starts_with(expect) {
        return Err(format!(
            "greeting {:?} does not start with {expect:?}",
            line.trim_end()
        ));
    }
    if !send.is_empty() {
        let _ = r.get_mut().write_all(send.as_bytes()).await;
    }
    let _ = r.get_mut().shutdown().await;
    Ok(())
}

/// Reads one (possibly multi-line) SMTP reply; returns its code.
async fn smtp_reply<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<u16, String> {
    let mut line = String::new();
    loop {
        read_line(r, &mut line).await?;
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("not an SMTP reply: {:?}", line.trim_end()))?;
        // "250-..." continues, "250 ..." (or a bare "250") ends the reply.
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(code);
        }
    }
}

async fn smtp(stream: TcpStream, ehlo: &str, mail_from: Option<&str>) -> Result<(), String> {
    let mut r = BufReader::new(stream);
    let code = smtp_reply(&mut r).await?;
    if !(200..300).contains(&code) {
        return Err(format!("banner {code}"));
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
    what: &str,
) -> Result<(), String> {
    r.get_mut()
        .write_all(cmd.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let code = smtp_reply(r).await?;
    if want(code) {
        Ok(())
    } else {
        Err(format!("{what} answered {code}"))
    }
}

async fn http<S>(
    io: S,
    host: &str,
    path: &str,
    expect: u16,
    body: Option<&str>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| format!("http: {e}"))?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "mailns-healthcheck")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("http: {e}"));
    let result = match resp {
        Err(e) => Err(e),
        Ok(resp) if resp.status().as_u16() != expect => Err(format!(
            "status {} (expected {expect})",
            resp.status().as_u16()
        )),
        Ok(resp) => match body {
            None => Ok(()),
            Some(needle) => {
                let limited = http_body_util::Limited::new(resp.into_body(), MAX_BODY);
                match limited.collect().await {
                    Ok(b) => {
                        if memfind(&b.to_bytes(), needle.as_bytes()) {
                            Ok(())
                        } else {
                            Err(format!("body does not contain {needle:?}"))
                        }
                    }
                    Err(e) => Err(format!("body: {e}")),
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

/// The certificate's notAfter, in Unix seconds.
fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// Builds the rustls client config of an https check.
///
/// # Errors
/// An unreadable or empty CA file.
pub fn tls_config(t: &TlsCheck) -> Result<TlsConfigs, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let cfg = if t.verify {
        let file = t
            .ca_file
            .clone()
            .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
        let pem = std::fs::read(&file)
            .map_err(|e| format!("cannot read CA file {}: {e}", file.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> =
            rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("no CA certificate in {}", file.display()));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(cfg))
}

/// Accepts any certificate (the admin turned verification off), still checking handshake
/// signatures so the session is a real TLS session.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        msg: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            msg,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        msg: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            msg,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
