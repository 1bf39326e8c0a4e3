//! Shared test harness: start the real `mailns` binary on 127.0.0.1 with an ephemeral port,
//! find its port in the log, and talk DNS to it (and to peers) over real sockets.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "shared by every test binary; each uses part of it"
)]

pub mod knot;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

/// Folder of the test data files.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Fails the test with an install hint when a tool the tests need is missing.
pub fn require_tool(tool: &str) -> PathBuf {
    for dir in [
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/bin",
        "/sbin",
    ] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} is not installed; run the README's test command, which installs what the tests need");
}

/// Kills and reaps a child process when dropped, panics included.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running mailns.
pub struct Mailns {
    /// The process; killed when the Mailns is dropped.
    child: ChildGuard,
    /// Where it answers DNS (UDP and TCP): the first listener.
    pub addr: SocketAddr,
    /// Every DNS listener, in config order.
    pub addrs: Vec<SocketAddr>,
    /// Relay listeners: (relay name, bound address), in config order.
    pub relays: Vec<(String, SocketAddr)>,
    /// Port 80 redirect listeners, in config order.
    pub redirects: Vec<SocketAddr>,
    /// The admin listener (dashboard, API, metrics).
    pub admin: SocketAddr,
    /// Its working folder (config, zones).
    pub dir: tempfile::TempDir,
    /// Log lines after start-up.
    pub log: mpsc::Receiver<String>,
    /// Log lines up to "mailns ready" (warnings about the config, say).
    pub startup_log: Vec<String>,
}

impl Mailns {
    /// Starts mailns serving `zone_file` (copied with `extra` files from tests/data) as `origin`.
    pub fn start(origin: &str, zone_file: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in std::iter::once(&zone_file).chain(extra) {
            std::fs::copy(data_dir().join(f), dir.path().join(f)).expect("copy test data");
        }
        let config = format!(
            "[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 2\ntcp_idle_timeout = \"2s\"\ntcp_io_timeout = \"1s\"\ntcp_max_connections = 8\ntcp_max_per_client = 8\n\n[[zone]]\nname = \"{origin}\"\nfile = \"{zone_file}\"\n"
        );
        Self::start_config(dir, &config)
    }

    /// Starts mailns with `config` written into `dir`. Without an `[admin]` table, the admin
    /// listener gets an ephemeral port (tests run in parallel; the default port would collide).
    pub fn start_config(dir: tempfile::TempDir, config: &str) -> Self {
        let path = dir.path().join("mailns.toml");
        let config = if config.contains("[admin]") {
            config.to_string()
        } else {
            format!("{config}\n[admin]\nlisten = \"127.0.0.1:0\"\n")
        };
        std::fs::write(&path, config).expect("write config");
        Self::start_path(dir, &path)
    }

    /// Starts mailns on the config already at `path` inside `dir` (a restart, say).
    pub fn start_path(dir: tempfile::TempDir, path: &Path) -> Self {
        Self::start_watching(dir, path, |_| {})
    }

    /// Like [`Mailns::start_path`], calling `on_line` with each log line before "mailns ready"
    /// (to act while it starts).
    pub fn start_watching(dir: tempfile::TempDir, path: &Path, on_line: impl FnMut(&str)) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailns"));
        cmd.args(["run", "--config"]).arg(path);
        Self::start_command(dir, cmd, on_line)
    }

    /// Starts mailns by `cmd` (`mailns run --config ...`, or that under `ip netns exec`), and
    /// waits for it to be ready as [`Mailns::start_watching`] does.
    pub fn start_command(
        dir: tempfile::TempDir,
        mut cmd: Command,
        mut on_line: impl FnMut(&str),
    ) -> Self {
        let mut guard = ChildGuard(
            cmd.env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start mailns"),
        );
        let stderr = guard.0.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addrs = Vec::new();
        let mut relays = Vec::new();
        let mut redirects = Vec::new();
        let mut admin = None;
        let mut seen = Vec::new();
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(l) => l,
                Err(e) => panic!(
                    "mailns did not become ready ({e}); its log:\n{}",
                    seen.join("\n")
                ),
            };
            seen.push(line.clone());
            on_line(&line);
            if line.contains("listening for DNS/TCP") {
                let addr: Option<SocketAddr> = line
                    .split("local_addr=")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse().ok());
                addrs.extend(addr);
            }
            if line.contains("listening for relay") {
                let field = |k: &str| {
                    line.split(k)
                        .nth(1)
                        .and_then(|s| s.split_whitespace().next())
                        .map(String::from)
                };
                if let (Some(name), Some(addr)) = (field("relay="), field("local_addr=")) {
                    relays.push((name, addr.parse().expect("relay address")));
                }
            }
            if line.contains("listening for redirect") {
                let addr: Option<SocketAddr> = line
                    .split("local_addr=")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse().ok());
                redirects.extend(addr);
            }
            if line.contains("listening for admin") {
                admin = line
                    .split("local_addr=")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse().ok());
            }
            if line.contains("mailns ready") {
                break;
            }
        }
        Self {
            child: guard,
            addr: *addrs
                .first()
                .expect("a DNS/TCP listener address in the log"),
            addrs,
            relays,
            redirects,
            admin: admin.expect("an admin listener address in the log"),
            dir,
            log: rx,
            startup_log: seen,
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.0.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        self.child.0.wait().expect("wait")
    }

    /// Sends SIGTERM, waits for the exit, and hands back the working folder (to restart on it).
    pub fn stop_keeping_dir(mut self) -> tempfile::TempDir {
        let pid = self.child.0.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let status = self.child.0.wait().expect("wait");
        assert!(status.success(), "mailns exited with {status}");
        self.dir
    }

    /// The addresses of relay `name`, in listen order.
    pub fn relay(&self, name: &str) -> Vec<SocketAddr> {
        self.relays
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .collect()
    }

    /// Sends `signal` (e.g. "TERM", "HUP") to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.child.0.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal}");
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        loop {
            if let Some(st) = self.child.0.try_wait().expect("try_wait") {
                return Some(st);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child.0.try_wait().expect("try_wait").is_none()
    }
}

/// A query message: `name`/`rtype`, RD off, with EDNS at `payload` if given.
pub fn query(name: &str, rtype: RecordType, payload: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    if let Some(p) = payload {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.edns = Some(e);
    }
    m.to_vec().expect("encode query")
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(4242);
    NEXT.fetch_add(7919, Ordering::Relaxed)
}

/// Sends `packet` over UDP and returns the raw reply, or None after a 2 s timeout.
pub fn udp_raw(addr: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind(if addr.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    })
    .expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(packet, addr).expect("send");
    let mut buf = vec![0u8; 65535];
    match sock.recv(&mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Sends `packet` over a new TCP connection and returns the reply.
pub fn tcp_raw(addr: SocketAddr, packet: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    s.write_all(&framed).expect("write");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("read length");
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).expect("read message");
    buf
}

/// UDP query, parsed.
pub fn udp(addr: SocketAddr, name: &str, rtype: RecordType, payload: Option<u16>) -> Message {
    let raw = udp_raw(addr, &query(name, rtype, payload)).expect("an answer over UDP");
    Message::from_vec(&raw).expect("a parsable answer")
}

/// TCP query, parsed.
pub fn tcp(addr: SocketAddr, name: &str, rtype: RecordType, payload: Option<u16>) -> Message {
    Message::from_vec(&tcp_raw(addr, &query(name, rtype, payload))).expect("a parsable answer")
}

/// Runs `dig @addr -p port args...` and returns its stdout.
pub fn dig(addr: SocketAddr, args: &[&str]) -> String {
    tool_query("dig", addr, args)
}

/// Runs `kdig @addr -p port args...` and returns its stdout.
pub fn kdig(addr: SocketAddr, args: &[&str]) -> String {
    tool_query("kdig", addr, args)
}

fn tool_query(tool: &str, addr: SocketAddr, args: &[&str]) -> String {
    let bin = require_tool(tool);
    let out = Command::new(bin)
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+time=2"])
        .arg(if tool == "kdig" {
            "+retry=0"
        } else {
            "+tries=1"
        })
        .args(args)
        .output()
        .expect("run the tool");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `openssl s_client` to `addr` (with `servername` as SNI, or none), trusting only `ca`: its
/// output, and whether the server's chain verified against `ca`.
pub fn openssl_verifies(addr: SocketAddr, servername: Option<&str>, ca: &Path) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string()]);
    match servername {
        Some(n) => cmd.args(["-servername", n]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd
        .arg("-CAfile")
        .arg(ca)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (text.contains("Verify return code: 0 (ok)"), text)
}

/// A free port on 127.0.0.1 for both UDP and TCP (for peers that cannot be told port 0).
pub fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `f` (every 20 ms) until it is true; returns the time it took. Fails after `limit`,
/// naming `what` was awaited. Tests wait for conditions this way, never for a fixed time.
pub fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses `s` as a name.
pub fn name(s: &str) -> Name {
    Name::from_str(s).expect("name")
}

/// A plain HTTP/1.0 GET of `path` on `addr`: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// mailns's `/api/v1/status`, parsed.
pub fn status_json(s: &Mailns) -> serde_json::Value {
    let (code, body) = http_get(s.admin, "/api/v1/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status is JSON")
}

/// Connects to `relay` from `from`, returns the backend's id line and the stream.
pub fn hello(relay: SocketAddr, from: IpAddr) -> Option<(String, TcpStream)> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    sock.bind(&SocketAddr::new(from, 0).into()).ok()?;
    sock.connect_timeout(&relay.into(), Duration::from_secs(2))
        .ok()?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut line = String::new();
    BufReader::new(s.try_clone().ok()?)
        .read_line(&mut line)
        .ok()?;
    if line.is_empty() {
        return None;
    }
    Some((line.trim().to_string(), s))
}

/// The `i`-th of many distinct client addresses (127.50.1.1 onwards).
pub fn client(i: u32) -> IpAddr {
    IpAddr::from([127, 50 + (i / 250) as u8, 1, (i % 250) as u8 + 1])
}

/// The A addresses answered for `name` over UDP, sorted.
pub fn a_set(addr: SocketAddr, name: &str) -> Vec<String> {
    let m = udp(addr, name, RecordType::A, Some(1232));
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// Runs `f` on a thread of its own in a fresh network namespace with its loopback up, so a
/// test can use the standard ports (25, 80, 443, 135) without colliding with anything. Threads
/// and processes it starts (simulated servers' runtimes, mailns, dig) inherit the namespace.
pub fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET) needs root (the README's test command runs as root)");
        let ok = Command::new(require_tool("ip"))
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip")
            .success();
        assert!(ok, "ip link set lo up");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A real resolver: unbound on `ip` (a free port, or 53 with `port`), with a stub zone for
/// `zone` pointing at mailns's `primary`. The root is stubbed to a dead loopback port, so nothing
/// ever leaves the machine.
pub struct Unbound {
    _child: ChildGuard,
    /// Where it answers.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Unbound {
    /// Starts it; `port` None takes a free one.
    pub fn start(ip: &str, zone: &str, primary: SocketAddr, port: Option<u16>) -> Self {
        let unbound = require_tool("unbound");
        let dir = tempfile::tempdir().unwrap();
        let port = port.unwrap_or_else(free_port);
        let d = dir.path().display();
        let conf = format!(
            "server:\n  interface: {ip}\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n\
             directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  logfile: \"\"\n  do-ip6: no\n\
             access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n  do-not-query-localhost: no\n\
             qname-minimisation: no\n  prefetch: no\n  num-threads: 1\n\
             local-zone: \"test.\" nodefault\n\
             stub-zone:\n  name: \"{zone}\"\n  stub-addr: {}@{}\n\
             stub-zone:\n  name: \".\"\n  stub-addr: 127.0.0.1@9\n",
            primary.ip(),
            primary.port()
        );
        let conf_path = dir.path().join("unbound.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = ChildGuard(
            Command::new(unbound)
                .args(["-d", "-c"])
                .arg(&conf_path)
                .stderr(Stdio::null())
                .spawn()
                .expect("start unbound"),
        );
        Self {
            _child: child,
            addr: SocketAddr::new(ip.parse().expect("ip"), port),
            _dir: dir,
        }
    }

    /// Asks it for `name`'s A records, recursion desired.
    pub fn ask(&self, name: &str) -> Option<Message> {
        let mut q = Message::from_vec(&query(name, RecordType::A, None)).unwrap();
        q.metadata.recursion_desired = true;
        udp_raw(self.addr, &q.to_vec().unwrap()).and_then(|r| Message::from_vec(&r).ok())
    }
}

/// A TCP connection to `to` from the local address `from` (any 127.0.0.0/8 address is this
/// machine's), with a 2 s connect timeout.
pub fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )?;
    sock.bind(&SocketAddr::new(from, 0).into())?;
    sock.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(sock.into())
}

/// An integer from the environment, or `default` (the long modes of the differential and
/// chaos runs).
pub fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
