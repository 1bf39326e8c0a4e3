//! Simulated Exchange servers: small real servers on loopback addresses, for `mailns demo` and
//! the tests.
//!
//! One `Sim` is one protocol on one address:port. It can be killed (listener closed and every
//! open connection dropped, so new connections are refused and sentinels see a close), revived,
//! made to answer 503 on chosen paths, made to hang (accept and never answer), or made to flap.
//! Test support: failures to bind panic, except through [`Sim::try_start`].
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::missing_panics_doc,
    reason = "test and demo support, not the server: a failure here fails the test"
)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What a simulated server speaks.
#[derive(Clone)]
pub enum Proto {
    /// HTTP: `/owa/healthcheck.htm`, `/Autodiscover/healthcheck.htm`, `/mapi/healthcheck.htm`...
    Http,
    /// The same over TLS with this certificate and key (DER).
    Https(Arc<rustls::ServerConfig>),
    /// SMTP as Exchange's front end speaks it: 220 banner, EHLO, MAIL FROM, RCPT TO, DATA,
    /// RSET, NOOP, QUIT.
    Smtp,
    /// The same, offering STARTTLS with this certificate (the session goes on over TLS).
    SmtpStarttls(Arc<rustls::ServerConfig>),
    /// A hub that insists on STARTTLS (with this certificate) and takes AUTH LOGIN/PLAIN (any
    /// credentials) after it.
    SmtpTls(Arc<rustls::ServerConfig>),
    /// IMAP before login: greeting, CAPABILITY, NOOP, LOGIN (refused), LOGOUT, any tag.
    Imap,
    /// POP3 before login: greeting, CAPA, USER, PASS (refused), QUIT.
    Pop3,
    /// Writes its name and a newline, then echoes every byte (and half-closes when the client does).
    Echo(String),
    /// Reads a PROXY v2 header, writes `src=<client address>` and a newline, then echoes.
    ProxyEcho,
}

/// Peer addresses a sim keeps (a demo runs for days; its probes must not grow the list).
pub const PEERS_KEPT: usize = 1024;

/// Shared behaviour switches.
#[derive(Default)]
pub struct Behaviour {
    /// Accept but never answer.
    pub hang: AtomicBool,
    /// Paths answered 503 (HTTP), or, for SMTP, MAIL FROM answered 421 when the set is non-empty.
    pub failing: Mutex<Vec<String>>,
    /// Alternate 200 and 503 on every other connection (a pool with one broken worker): each
    /// new probe connection sees the other answer; a kept-alive connection keeps its own.
    pub flap: AtomicBool,
    /// Requests seen.
    pub hits: AtomicU32,
    /// Connections accepted.
    pub accepted: AtomicU32,
    /// The peer address of every connection accepted, in order (the last [`PEERS_KEPT`]):
    /// what Exchange's receive connector and message tracking would see (the client's own
    /// behind a transparent relay).
    pub peers: Mutex<Vec<SocketAddr>>,
    /// Milliseconds to wait before answering a new connection (a slow server).
    pub delay_ms: AtomicU32,
    /// Milliseconds to wait before every answer: each greeting, reply and HTTP response.
    pub answer_delay_ms: AtomicU32,
    /// Close a connection this many milliseconds after it opened, however busy (Exchange's
    /// receive connector `ConnectionTimeout`); 0: never.
    pub close_after_ms: AtomicU32,
    /// Close a connection after this many milliseconds without a command (IIS's
    /// `connectionTimeout`, Exchange's `ConnectionInactivityTimeout`); 0: never.
    pub idle_close_ms: AtomicU32,
    /// The server's name (`cas01`): its banners and pages name it, so a client sees which
    /// server a relay picked. None: a generic `cas`.
    pub name: Mutex<Option<String>>,
}

impl Behaviour {
    /// The host name the server gives in banners and pages.
    fn host(&self) -> String {
        let name = self.name.lock().unwrap().clone();
        format!("{}.mail.example.test", name.as_deref().unwrap_or("cas"))
    }

    /// Waits while the server hangs (every connection, open or new, stops answering, as a
    /// stopped process does), then for the answer delay.
    async fn before_answer(&self) {
        while self.hang.load(Ordering::Relaxed) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let delay = self.answer_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(u64::from(delay))).await;
        }
    }

    /// When a connection opened at `opened` and last spoken to at `last` is to be closed.
    fn close_at(
        &self,
        opened: tokio::time::Instant,
        last: tokio::time::Instant,
    ) -> Option<tokio::time::Instant> {
        let ms = |v: &AtomicU32| match v.load(Ordering::Relaxed) {
            0 => None,
            n => Some(std::time::Duration::from_millis(u64::from(n))),
        };
        let a = ms(&self.close_after_ms).map(|d| opened + d);
        let b = ms(&self.idle_close_ms).map(|d| last + d);
        a.into_iter().chain(b).min()
    }
}

/// One simulated server.
pub struct Sim {
    /// Where it listens.
    pub addr: SocketAddr,
    proto: Proto,
    /// What tests switch on and off: hang, flap, failing pages.
    pub behaviour: Arc<Behaviour>,
    token: Mutex<Option<CancellationToken>>,
    rt: tokio::runtime::Handle,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sim({})", self.addr)
    }
}

impl Sim {
    /// Starts `proto` on `ip:port` (port 0: any). Panics if it cannot bind (tests).
    pub fn start(rt: &Arc<Runtime>, ip: IpAddr, port: u16, proto: Proto) -> Arc<Self> {
        Self::try_start(rt.handle(), ip, port, proto).expect("bind sim server")
    }

    /// Starts `proto` on `ip:port` (port 0: any) on the runtime `rt`.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn try_start(
        rt: &tokio::runtime::Handle,
        ip: IpAddr,
        port: u16,
        proto: Proto,
    ) -> std::io::Result<Arc<Self>> {
        let mut sim = Self {
            addr: SocketAddr::new(ip, port),
            proto,
            behaviour: Arc::new(Behaviour::default()),
            token: Mutex::new(None),
            rt: rt.clone(),
        };
        // Port 0 is resolved by the first bind; revive binds the same port again.
        sim.addr = sim.listen()?;
        Ok(Arc::new(sim))
    }

    fn listen(&self) -> std::io::Result<SocketAddr> {
        let std = std::net::TcpListener::bind(self.addr)?;
        std.set_nonblocking(true)?;
        let addr = std.local_addr()?;
        let token = CancellationToken::new();
        *self.token.lock().unwrap() = Some(token.clone());
        let (proto, b) = (self.proto.clone(), self.behaviour.clone());
        self.rt.spawn(async move {
            let listener = TcpListener::from_std(std).unwrap();
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    a = listener.accept() => {
                        let Ok((s, peer)) = a else { continue };
                        b.accepted.fetch_add(1, Ordering::Relaxed);
                        let mut peers = b.peers.lock().unwrap();
                        if peers.len() >= PEERS_KEPT {
                            peers.remove(0);
                        }
                        peers.push(peer);
                        drop(peers);
                        let (proto, b) = (proto.clone(), b.clone());
                        conns.spawn(async move { serve(s, proto, b).await });
                    }
                    () = token.cancelled() => break,
                }
            }
            drop(listener);
            conns.abort_all();
        });
        Ok(addr)
    }

    /// Closes the port and every open connection (the process died).
    pub fn kill(&self) {
        if let Some(t) = self.token.lock().unwrap().take() {
            t.cancel();
        }
        // Wait until the port refuses connections.
        for _ in 0..200 {
            if std::net::TcpStream::connect_timeout(
                &self.addr,
                std::time::Duration::from_millis(100),
            )
            .is_err()
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("sim {} still accepts after kill", self.addr);
    }

    /// Opens the port again. Panics if it cannot bind (tests; see [`Sim::try_revive`]).
    pub fn revive(&self) {
        self.try_revive().expect("rebind sim server");
    }

    /// Opens the port again, unless it is open.
    ///
    /// # Errors
    /// The port cannot be bound again.
    pub fn try_revive(&self) -> std::io::Result<()> {
        if self.token.lock().unwrap().is_some() {
            return Ok(());
        }
        self.listen().map(|_| ())
    }

    /// True while it listens.
    pub fn is_up(&self) -> bool {
        self.token.lock().unwrap().is_some()
    }

    /// Makes `path` answer 503 (or clears it).
    pub fn fail_path(&self, path: &str, fail: bool) {
        let mut f = self.behaviour.failing.lock().unwrap();
        f.retain(|p| p != path);
        if fail {
            f.push(path.to_string());
        }
    }
}

async fn serve(s: TcpStream, proto: Proto, b: Arc<Behaviour>) {
    // A hung server holds the connection open and says nothing until it resumes.
    b.before_answer().await;
    let delay = b.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(u64::from(delay))).await;
    }
    // HTTP answers name the server in `X-Served-By`, so clients can tell which one they reached.
    let me = s
        .local_addr()
        .map_or_else(|_| String::new(), |a| a.ip().to_string());
    match proto {
        Proto::Http => http(s, b, me).await,
        Proto::Https(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            if let Ok(tls) = acceptor.accept(s).await {
                http(tls, b, me).await;
            }
        }
        Proto::Smtp => smtp(s, b, &me, None).await,
        Proto::SmtpStarttls(cfg) => smtp(s, b, &me, Some(cfg)).await,
        Proto::SmtpTls(cfg) => smtp_tls(s, cfg).await,
        Proto::Echo(id) => echo(s, &id).await,
        Proto::ProxyEcho => proxy_echo(s).await,
        Proto::Imap => {
            let greeting = format!(
                "* OK The Microsoft Exchange IMAP4 service is ready. [{}]\r\n",
                b.host()
            );
            line_server(s, b, &greeting, true).await;
        }
        Proto::Pop3 => {
            let greeting = format!(
                "+OK The Microsoft Exchange POP3 service is ready. [{}]\r\n",
                b.host()
            );
            line_server(s, b, &greeting, false).await;
        }
    }
}

async fn http<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>(
    s: S,
    b: Arc<Behaviour>,
    me: String,
) {
    let closer = b.clone();
    let last = Arc::new(Mutex::new(tokio::time::Instant::now()));
    let seen = last.clone();
    let conn_no = b.accepted.load(Ordering::Relaxed);
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (b, me) = (b.clone(), me.clone());
        *seen.lock().unwrap() = tokio::time::Instant::now();
        async move {
            b.hits.fetch_add(1, Ordering::Relaxed);
            b.before_answer().await;
            let path = req.uri().path().to_ascii_lowercase();
            let failing = b
                .failing
                .lock()
                .unwrap()
                .iter()
                .any(|p| p.to_ascii_lowercase() == path);
            let flap_fail = b.flap.load(Ordering::Relaxed) && conn_no.is_multiple_of(2);
            let known = path.ends_with("/healthcheck.htm");
            let (status, body) = if !known {
                (404, "not found".to_string())
            } else if failing || flap_fail {
                (503, "Service Unavailable".to_string())
            } else {
                (200, format!("200 OK<br/>{}", b.host()))
            };
            Ok::<_, std::convert::Infallible>(
                hyper::Response::builder()
                    .status(status)
                    .header("x-served-by", me)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap(),
            )
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(s), svc);
    tokio::pin!(conn);
    let opened = tokio::time::Instant::now();
    loop {
        // Re-read at least every 100 ms: a test may switch the close timers on mid-connection.
        let recheck = tokio::time::Instant::now() + std::time::Duration::from_millis(100);
        let until = closer
            .close_at(opened, *last.lock().unwrap())
            .map_or(recheck, |t| t.min(recheck));
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep_until(until) => {
                // A request since may have moved the idle deadline.
                let due = closer.close_at(opened, *last.lock().unwrap());
                if due.is_some_and(|d| d <= tokio::time::Instant::now()) {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                    return;
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn echo(s: TcpStream, id: &str) {
    use tokio::io::AsyncReadExt;
    let (mut r, mut w) = s.into_split();
    if w.write_all(format!("{id}\n").as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 65536];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = w.shutdown().await;
                return;
            }
            Ok(n) => {
                if w.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn proxy_echo(mut s: TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 16];
    if s.read_exact(&mut head).await.is_err() {
        return;
    }
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    let mut buf = head.to_vec();
    buf.resize(16 + len, 0);
    if s.read_exact(&mut buf[16..]).await.is_err() {
        return;
    }
    let src = match ppp::v2::Header::try_from(&buf[..]) {
        Ok(h) => match h.addresses {
            ppp::v2::Addresses::IPv4(a) => format!("{}:{}", a.source_address, a.source_port),
            other => format!("{other:?}"),
        },
        Err(e) => format!("bad header: {e}"),
    };
    if s.write_all(format!("src={src}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    echo_rest(s).await;
}

async fn echo_rest(s: TcpStream) {
    use tokio::io::AsyncReadExt;
    let (mut r, mut w) = s.into_split();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 || w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// Reads a DATA body up to the lone "." line; false if the client went away.
async fn read_message<R: tokio::io::AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    line: &mut String,
) -> bool {
    loop {
        line.clear();
        if r.read_line(line).await.unwrap_or(0) == 0 {
            return false;
        }
        if line == ".\r\n" || line == ".\n" {
            return true;
        }
    }
}

/// Sends the greeting; false if the client went away.
async fn greet<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    r: &mut BufReader<S>,
    banner: &[u8],
) -> bool {
    r.get_mut().write_all(banner).await.is_ok()
}

/// The next command line, uppercased; None when the client closed.
async fn next_command<S: tokio::io::AsyncRead + Unpin>(
    r: &mut BufReader<S>,
    line: &mut String,
) -> Option<String> {
    line.clear();
    if r.read_line(line).await.unwrap_or(0) == 0 {
        return None;
    }
    Some(line.trim_end().to_ascii_uppercase())
}

/// An SMTP session that upgrades with STARTTLS and accepts AUTH after it.
async fn smtp_tls(s: TcpStream, cfg: Arc<rustls::ServerConfig>) {
    let mut r = BufReader::new(s);
    if !greet(&mut r, b"220 hub.mail.example.test ESMTP ready\r\n").await {
        return;
    }
    let mut line = String::new();
    loop {
        let Some(cmd) = next_command(&mut r, &mut line).await else {
            return;
        };
        let reply: &[u8] = if cmd.starts_with("EHLO") {
            b"250-hub.mail.example.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
        } else if cmd == "STARTTLS" {
            if r.get_mut()
                .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                .await
                .is_err()
            {
                return;
            }
            let Ok(tls) = tokio_rustls::TlsAcceptor::from(cfg)
                .accept(r.into_inner())
                .await
            else {
                return;
            };
            return smtp_after_tls(tls).await;
        } else if cmd.starts_with("QUIT") {
            let _ = r.get_mut().write_all(b"221 2.0.0 Bye\r\n").await;
            return;
        } else {
            b"530 5.7.0 Must issue a STARTTLS command first\r\n"
        };
        if r.get_mut().write_all(reply).await.is_err() {
            return;
        }
    }
}

async fn smtp_after_tls<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: S) {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut login_step = 0;
    loop {
        let Some(cmd) = next_command(&mut r, &mut line).await else {
            return;
        };
        let reply: Vec<u8> = if login_step == 1 {
            login_step = 2;
            b"334 UGFzc3dvcmQ6\r\n".to_vec()
        } else if login_step == 2 {
            login_step = 0;
            b"235 2.7.0 Authentication successful\r\n".to_vec()
        } else if cmd.starts_with("EHLO") {
            b"250-hub.mail.example.test\r\n250-AUTH LOGIN PLAIN\r\n250 8BITMIME\r\n".to_vec()
        } else if cmd.starts_with("AUTH LOGIN") {
            login_step = 1;
            b"334 VXNlcm5hbWU6\r\n".to_vec()
        } else if cmd.starts_with("AUTH PLAIN") {
            b"235 2.7.0 Authentication successful\r\n".to_vec()
        } else if cmd.starts_with("MAIL FROM")
            || cmd.starts_with("RCPT TO")
            || cmd.starts_with("RSET")
        {
            b"250 2.1.0 OK\r\n".to_vec()
        } else if cmd.starts_with("DATA") {
            if r.get_mut().write_all(b"354 Go ahead\r\n").await.is_err() {
                return;
            }
            if !read_message(&mut r, &mut line).await {
                return;
            }
            b"250 2.6.0 Queued after STARTTLS and AUTH\r\n".to_vec()
        } else if cmd.starts_with("QUIT") {
            let _ = r.get_mut().write_all(b"221 2.0.0 Bye\r\n").await;
            let _ = r.get_mut().shutdown().await;
            return;
        } else {
            b"500 5.3.3 Unrecognized command\r\n".to_vec()
        };
        if r.get_mut().write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// An Exchange SMTP session; with `tls`, STARTTLS is offered and the session goes on over
/// TLS after it, as a client that upgrades expects.
async fn smtp(s: TcpStream, b: Arc<Behaviour>, me: &str, tls: Option<Arc<rustls::ServerConfig>>) {
    let mut r = BufReader::new(s);
    // Exchange names itself in the banner; the address tells a client which server it reached.
    let banner = format!(
        "220 {} Microsoft ESMTP MAIL Service ready at {me}\r\n",
        b.host()
    );
    if !greet(&mut r, banner.as_bytes()).await {
        return;
    }
    let opened = tokio::time::Instant::now();
    let Some(cfg) = tls else {
        smtp_session(&mut r, &b, opened, Offer::Plain).await;
        return;
    };
    if smtp_session(&mut r, &b, opened, Offer::StartTls).await != End::StartTls {
        return;
    }
    let Ok(stream) = tokio_rustls::TlsAcceptor::from(cfg)
        .accept(r.into_inner())
        .await
    else {
        return;
    };
    smtp_session(&mut BufReader::new(stream), &b, opened, Offer::Secured).await;
}

/// What an SMTP session offers in its EHLO reply.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Offer {
    /// No TLS.
    Plain,
    /// STARTTLS.
    StartTls,
    /// Already over TLS: AUTH.
    Secured,
}

/// How an SMTP session ended.
#[derive(PartialEq, Eq)]
enum End {
    /// QUIT, a close, or an error.
    Done,
    /// STARTTLS was accepted: the TLS handshake comes next.
    StartTls,
}

/// The commands of one SMTP session, until QUIT, a close or STARTTLS.
async fn smtp_session<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    r: &mut BufReader<S>,
    b: &Behaviour,
    opened: tokio::time::Instant,
    offer: Offer,
) -> End {
    let host = b.host();
    let mut line = String::new();
    loop {
        let goodbye = b"421 4.4.1 Connection timed out\r\n";
        let Some(cmd) = command_or_close(r, &mut line, b, opened, goodbye).await else {
            return End::Done;
        };
        let draining = !b.failing.lock().unwrap().is_empty();
        let reply: Vec<u8> = if cmd == "NOOP" {
            b"250 2.0.0 OK\r\n".to_vec()
        } else if cmd.starts_with("EHLO") {
            let extra = match offer {
                Offer::Plain => "",
                Offer::StartTls => "250-STARTTLS\r\n",
                Offer::Secured => "250-AUTH NTLM LOGIN\r\n",
            };
            format!("250-{host} Hello\r\n250-SIZE 37748736\r\n250-PIPELINING\r\n{extra}250 8BITMIME\r\n").into_bytes()
        } else if cmd == "STARTTLS" && offer == Offer::StartTls {
            let ok = r
                .get_mut()
                .write_all(b"220 2.0.0 SMTP server ready\r\n")
                .await
                .is_ok();
            return if ok { End::StartTls } else { End::Done };
        } else if cmd.starts_with("MAIL FROM") && draining {
            b"421 4.3.2 Service not available\r\n".to_vec()
        } else if cmd.starts_with("MAIL FROM")
            || cmd.starts_with("RSET")
            || cmd.starts_with("RCPT TO")
        {
            b"250 2.1.0 OK\r\n".to_vec()
        } else if cmd.starts_with("DATA") {
            if r.get_mut()
                .write_all(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n")
                .await
                .is_err()
            {
                return End::Done;
            }
            if !read_message(r, &mut line).await {
                return End::Done;
            }
            let tls = if offer == Offer::Secured {
                " over TLS"
            } else {
                ""
            };
            format!("250 2.6.0 Queued mail for delivery by {host}{tls}\r\n").into_bytes()
        } else if cmd.starts_with("QUIT") {
            let _ = r.get_mut().write_all(b"221 2.0.0 Closing\r\n").await;
            return End::Done;
        } else {
            b"500 5.3.3 Unrecognized command\r\n".to_vec()
        };
        if r.get_mut().write_all(&reply).await.is_err() {
            return End::Done;
        }
    }
}

/// IMAP or POP3 before login: the greeting, then what a client (or a prober) sends before it
/// authenticates, answered as Exchange does.
async fn line_server(s: TcpStream, b: Arc<Behaviour>, greeting: &str, imap: bool) {
    let mut r = BufReader::new(s);
    if r.get_mut().write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let goodbye: &[u8] = if imap {
        b"* BYE Connection is closed. 13\r\n"
    } else {
        b"-ERR Connection is closed. 13\r\n"
    };
    let mut line = String::new();
    let opened = tokio::time::Instant::now();
    loop {
        let Some(cmd) = command_or_close(&mut r, &mut line, &b, opened, goodbye).await else {
            return;
        };
        let (reply, bye) = if imap {
            let (_, verb) = cmd.split_once(' ').unwrap_or((cmd.as_str(), ""));
            // The tag goes back as the client wrote it (the command is matched uppercased).
            let tag = line.split_whitespace().next().unwrap_or("*").to_string();
            match verb {
                "NOOP" => (format!("{tag} OK NOOP completed.\r\n"), false),
                "CAPABILITY" => (
                    format!("* CAPABILITY IMAP4 IMAP4rev1 AUTH=NTLM AUTH=GSSAPI AUTH=PLAIN IDLE NAMESPACE LITERAL+\r\n{tag} OK CAPABILITY completed.\r\n"),
                    false,
                ),
                v if v.starts_with("LOGIN") || v.starts_with("AUTHENTICATE") => {
                    (format!("{tag} NO LOGIN failed.\r\n"), false)
                }
                "LOGOUT" => (
                    format!("* BYE Microsoft Exchange Server IMAP4 server signing off.\r\n{tag} OK LOGOUT completed.\r\n"),
                    true,
                ),
                _ => (format!("{tag} BAD Command received in Invalid state.\r\n"), false),
            }
        } else {
            match cmd.as_str() {
                "CAPA" => (
                    "+OK\r\nTOP\r\nUIDL\r\nSASL NTLM GSSAPI PLAIN\r\nUSER\r\n.\r\n".to_string(),
                    false,
                ),
                c if c.starts_with("USER ") => ("+OK\r\n".to_string(), false),
                c if c.starts_with("PASS ") || c.starts_with("AUTH") => (
                    "-ERR Logon failure: unknown user name or bad password.\r\n".to_string(),
                    false,
                ),
                "QUIT" => (
                    "+OK Microsoft Exchange Server POP3 server signing off.\r\n".to_string(),
                    true,
                ),
                _ => (
                    "-ERR Command is not valid in this state.\r\n".to_string(),
                    false,
                ),
            }
        };
        if r.get_mut().write_all(reply.as_bytes()).await.is_err() || bye {
            return;
        }
    }
}

/// The next command line, uppercased, once the server is ready to answer it; None when the
/// client closed, or when the server closes (idle, or open too long) after writing `goodbye`.
async fn command_or_close<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    r: &mut BufReader<S>,
    line: &mut String,
    b: &Behaviour,
    opened: tokio::time::Instant,
    goodbye: &[u8],
) -> Option<String> {
    let until = b.close_at(opened, tokio::time::Instant::now());
    tokio::select! {
        cmd = next_command(r, line) => {
            let cmd = cmd?;
            b.hits.fetch_add(1, Ordering::Relaxed);
            b.before_answer().await;
            Some(cmd)
        }
        () = sleep_until_opt(until) => {
            let _ = r.get_mut().write_all(goodbye).await;
            None
        }
    }
}

/// A self-signed certificate for `names`, as a rustls server config.
pub fn tls_server(names: &[&str]) -> Arc<rustls::ServerConfig> {
    tls_server_with_pem(names).0
}

/// The same, with the certificate as PEM (to trust it as a CA).
///
/// Valid from today for 397 days, as a public CA issues them (rcgen's default, the year 4096,
/// would show as two million days left on the dashboard).
pub fn tls_server_with_pem(names: &[&str]) -> (Arc<rustls::ServerConfig>, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    let today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let num = |r: std::ops::Range<usize>| today[r].parse::<i32>().unwrap();
    let (y, m, d) = (num(0..4), num(5..7) as u8, num(8..10) as u8);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    // A year and a month on, near enough to 397 days.
    let (ny, nm) = if m == 12 { (y + 2, 1) } else { (y + 1, m + 1) };
    params.not_after = rcgen::date_time_ymd(ny, nm, d.min(28));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    tls_server_from(&cert, &key)
}

/// A server whose self-signed certificate for `names` expired in 2021.
pub fn tls_server_expired(names: &[&str]) -> (Arc<rustls::ServerConfig>, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    tls_server_from(&cert, &key)
}

fn tls_server_from(
    cert: &rcgen::Certificate,
    signing_key: &rcgen::KeyPair,
) -> (Arc<rustls::ServerConfig>, String) {
    let pem = cert.pem();
    let cert = cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    (Arc::new(cfg), pem)
}

/// A multi-thread runtime for the simulated servers.
pub fn runtime() -> Arc<Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    )
}

/// Keeps several sims by name.
pub type Farm = HashMap<String, Arc<Sim>>;
