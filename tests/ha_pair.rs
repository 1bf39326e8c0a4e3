//! Two mailns nodes as one: `config/examples/ha-pair/` as shipped, with Debian's keepalived
//! moving the VIP, in network namespaces the test builds (a client side and a server side,
//! each a bridge, joined to node A and node B by veth pairs; addresses from 198.18.0.0/15).
//!
//! What an admin relies on: the backup takes the VIP over when mailns or keepalived stops on
//! the master, and new connections succeed again; source-hash sends each client to the same
//! server through either node; a session open through the failed node ends; the master's
//! return does not move the VIP back (nopreempt); behind the transparent SMTP VIP, Exchange
//! sees each application's own address.
//!
//! `takeover_times` (ignored; run by bench/ha.sh) repeats the kill and reports the times.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mailns::sim::{self, Proto, Sim};

const VIP: &str = "198.18.1.100";
const SERVERS: [(&str, &str); 2] = [("ex01", "198.18.2.10"), ("ex02", "198.18.2.11")];
/// Application addresses on the client side (one session each, so each is recognisable).
const CLIENTS: std::ops::Range<u8> = 10..40;
/// What keepalived logs when the track script (mailns's /readyz) passes after failing.
const READY: &str = "VRRP_Script(mailns_ready) succeeded";

fn client_ip(i: u8) -> IpAddr {
    IpAddr::from([198, 18, 1, i])
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.parse().unwrap(), port)
}

/// The namespaces of one lab: `sw` holds the two bridges, `c` the applications, `a` and `b`
/// the mailns nodes, `s` the Exchange servers. Deleted on drop.
struct Lab {
    prefix: String,
}

impl Lab {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "ha{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Self { prefix };
        for n in ["sw", "c", "a", "b", "s"] {
            ip(&["netns", "add", &lab.ns(n)]);
            lab.ip(n, &["link", "set", "lo", "up"]);
        }
        for br in ["brc", "brs"] {
            // No multicast snooping: VRRP adverts reach their group without an IGMP join.
            lab.ip(
                "sw",
                &["link", "add", br, "type", "bridge", "mcast_snooping", "0"],
            );
            lab.ip("sw", &["link", "set", br, "up"]);
        }
        let apps: Vec<String> = CLIENTS.map(|i| format!("198.18.1.{i}/24")).collect();
        lab.link(
            "c",
            "eth0",
            "brc",
            &apps.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        lab.link("a", "eth0", "brc", &["198.18.1.2/24"]);
        lab.link("a", "eth1", "brs", &["198.18.2.2/24"]);
        lab.link("b", "eth0", "brc", &["198.18.1.3/24"]);
        lab.link("b", "eth1", "brs", &["198.18.2.3/24"]);
        lab.link("s", "eth0", "brs", &["198.18.2.10/24", "198.18.2.11/24"]);
        // The servers reach the applications through the pair's floating gateway (the return
        // path of the transparent SMTP VIP), as README.md in the example tells the admin.
        lab.ip("s", &["route", "add", "198.18.1.0/24", "via", "198.18.2.1"]);
        for n in ["a", "b"] {
            // Replies from the servers' SMTP port to an application's address are delivered
            // to mailns's transparent socket instead of being forwarded.
            lab.ip(
                n,
                &[
                    "rule", "add", "iif", "eth1", "ipproto", "tcp", "sport", "25", "lookup", "100",
                ],
            );
            lab.ip(
                n,
                &[
                    "route",
                    "add",
                    "local",
                    "0.0.0.0/0",
                    "dev",
                    "lo",
                    "table",
                    "100",
                ],
            );
        }
        lab
    }

    fn ns(&self, n: &str) -> String {
        format!("{}{n}", self.prefix)
    }

    /// `ip -n <ns> args...`, which must succeed.
    fn ip(&self, n: &str, args: &[&str]) {
        let mut all = vec!["-n".to_string(), self.ns(n)];
        all.extend(args.iter().map(|s| s.to_string()));
        ip(&all.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// A veth from namespace `n` (named `ifname` there) to bridge `br` in `sw`.
    fn link(&self, n: &str, ifname: &str, br: &str, addrs: &[&str]) {
        let (here, there) = (
            format!("{}{n}{ifname}", self.prefix),
            format!("{n}{ifname}"),
        );
        let sw = self.ns("sw");
        ip(&[
            "link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &sw,
        ]);
        ip(&["link", "set", &here, "netns", &self.ns(n)]);
        self.ip(n, &["link", "set", &here, "name", ifname]);
        self.ip("sw", &["link", "set", &there, "master", br, "up"]);
        for a in addrs {
            self.ip(n, &["addr", "add", a, "dev", ifname]);
        }
        self.ip(n, &["link", "set", ifname, "up"]);
    }

    /// `cmd` run inside namespace `n`.
    fn command(&self, n: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(n)]).arg(program);
        c
    }

    /// Runs `f` on a thread inside namespace `n` (its sockets are that namespace's).
    fn within<T: Send + 'static>(&self, n: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns(n));
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).expect("namespace file");
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in namespace")
    }

    /// True when node `n` holds the VIP.
    fn holds_vip(&self, n: &str) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.ns(n), "-br", "addr", "show", "dev", "eth0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in ["c", "a", "b", "s", "sw"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// keepalived in one node's namespace, stopped with SIGTERM (its VRRP child gives the VIP up
/// and exits with it; SIGKILL would leave the child running).
struct Keepalived {
    child: Child,
    log: PathBuf,
    pids: Vec<PathBuf>,
}

impl Keepalived {
    fn start(lab: &Lab, node: &str, dir: &Path, edit: &dyn Fn(String) -> String) -> Self {
        let conf = dir.join(format!("keepalived-{node}.conf"));
        let text =
            std::fs::read_to_string(example().join(format!("keepalived-{node}.conf"))).unwrap();
        std::fs::write(&conf, edit(text)).unwrap();
        let log = dir.join(format!("keepalived-{node}.log"));
        let pid = |k: &str| dir.join(format!("{node}-{k}.pid"));
        let child = lab
            .command(node, &require_tool("keepalived"))
            .args([
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--vrrp",
                "-f",
            ])
            .arg(&conf)
            .arg("-p")
            .arg(pid("main"))
            .arg("-r")
            .arg(pid("vrrp"))
            .arg("-c")
            .arg(pid("checkers"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start keepalived");
        let pids = ["main", "vrrp", "checkers"].map(pid).to_vec();
        Self { child, log, pids }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL to keepalived and its VRRP child: nothing is given up, as in a crash. Its pid
    /// files go too (a rebooted node has none), or the restart takes the unreaped child for a
    /// running daemon.
    fn kill_hard(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        let _ = self.child.wait();
        for f in &self.pids {
            let _ = std::fs::remove_file(f);
        }
    }

    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.stop();
    }
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/ha-pair")
}

/// A copy of the example for one node (its state files land there).
fn node_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["mailns.toml", "mail.example.test.zone"] {
        std::fs::copy(example().join(f), dir.path().join(f)).unwrap();
    }
    dir
}

/// mailns on node `n`, as shipped.
fn start_mailns(lab: &Lab, n: &str, dir: tempfile::TempDir) -> Mailns {
    let mut cmd = lab.command(n, Path::new(env!("CARGO_BIN_EXE_mailns")));
    cmd.args(["run", "--config"])
        .arg(dir.path().join("mailns.toml"));
    Mailns::start_command(dir, cmd, |_| {})
}

/// The Exchange servers: SMTP on 25 and an echo on 443, each naming its server, in `s`.
fn start_servers(lab: &Lab) -> (Arc<tokio::runtime::Runtime>, Vec<Arc<Sim>>) {
    lab.within("s", || {
        let rt = sim::runtime();
        let mut sims = Vec::new();
        for (name, addr) in SERVERS {
            let ip: IpAddr = addr.parse().unwrap();
            let smtp = Sim::start(&rt, ip, 25, Proto::Smtp);
            *smtp.behaviour.name.lock().unwrap() = Some(name.to_string());
            sims.push(smtp);
            sims.push(Sim::start(&rt, ip, 443, Proto::Echo(name.to_string())));
        }
        (rt, sims)
    })
}

/// From application `from`, connects to `to` and reads the first line (the server's banner
/// or name), within `limit`.
fn first_line(from: IpAddr, to: SocketAddr, limit: Duration) -> Option<(String, TcpStream)> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    sock.bind(&SocketAddr::new(from, 0).into()).ok()?;
    sock.connect_timeout(&to.into(), limit).ok()?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut line = String::new();
    BufReader::new(s.try_clone().ok()?)
        .read_line(&mut line)
        .ok()?;
    (!line.is_empty()).then(|| (line.trim().to_string(), s))
}

/// Which server each application reaches through the VIP's HTTPS relay (source-hash).
fn https_servers(lab: &Lab) -> Vec<(IpAddr, String)> {
    lab.within("c", || {
        CLIENTS
            .map(|i| {
                let from = client_ip(i);
                let (name, _) = first_line(from, vip(443), Duration::from_secs(3))
                    .unwrap_or_else(|| panic!("no answer through the VIP from {from}"));
                (from, name)
            })
            .collect()
    })
}

/// Opens an SMTP session through the VIP from `from`; returns its banner and the stream.
fn smtp_session(lab: &Lab, from: IpAddr) -> (String, TcpStream) {
    lab.within("c", move || {
        first_line(from, vip(25), Duration::from_secs(3))
            .unwrap_or_else(|| panic!("no SMTP banner through the VIP from {from}"))
    })
}

/// True when the session still answers a NOOP with 250 (within 3 s).
fn session_alive(s: &TcpStream) -> bool {
    let mut w = s.try_clone().unwrap();
    if w.write_all(b"NOOP\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    matches!(BufReader::new(s.try_clone().unwrap()).read_line(&mut line), Ok(n) if n > 0)
        && line.starts_with("250")
}

/// Polls new connections through the VIP from the client side until one is answered; returns
/// how long that took from `since`.
fn until_vip_answers(lab: &Lab, since: Instant, limit: Duration) -> Duration {
    lab.within("c", move || loop {
        if first_line(
            client_ip(CLIENTS.start),
            vip(443),
            Duration::from_millis(100),
        )
        .is_some()
        {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "the VIP did not answer again within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    })
}

/// The whole pair, up: servers, mailns on both nodes, keepalived on A (master) then B.
struct Pair {
    // Dropped in this order: keepalived first (the VIP is given up), mailns, servers, lab.
    ka: Vec<Keepalived>,
    nodes: Vec<Option<Mailns>>,
    sims: Vec<Arc<Sim>>,
    _rt: Arc<tokio::runtime::Runtime>,
    dir: tempfile::TempDir,
    lab: Lab,
}

impl Pair {
    fn up(edit: &dyn Fn(String) -> String) -> Self {
        require_tool("curl");
        let lab = Lab::new();
        let (rt, sims) = start_servers(&lab);
        let nodes = vec![
            Some(start_mailns(&lab, "a", node_dir())),
            Some(start_mailns(&lab, "b", node_dir())),
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut pair = Self {
            ka: Vec::new(),
            nodes,
            sims,
            _rt: rt,
            dir,
            lab,
        };
        pair.ka
            .push(Keepalived::start(&pair.lab, "a", pair.dir.path(), edit));
        pair.wait_vip("a", Duration::from_secs(20));
        pair.ka
            .push(Keepalived::start(&pair.lab, "b", pair.dir.path(), edit));
        // B is up and backup once its track script has passed (rise 2).
        wait_for(Duration::from_secs(20), "keepalived on B in BACKUP", || {
            pair.ka[1].log().contains("Entering BACKUP STATE") && pair.ka[1].log().contains(READY)
        });
        pair
    }

    fn wait_vip(&self, node: &str, limit: Duration) {
        wait_for(limit, &format!("the VIP on node {node}"), || {
            self.lab.holds_vip(node)
        });
    }

    /// Restarts mailns on node `i` (0: A) and waits until keepalived there sees it ready again.
    fn restart_mailns(&mut self, i: usize) {
        let successes = |log: &str| log.matches(READY).count();
        let before = successes(&self.ka[i].log());
        self.nodes[i] = Some(start_mailns(&self.lab, ["a", "b"][i], node_dir()));
        wait_for(
            Duration::from_secs(15),
            "the track script passing again",
            || successes(&self.ka[i].log()) > before,
        );
    }

    /// Every address the SMTP servers saw a session come from.
    fn smtp_peers(&self) -> Vec<IpAddr> {
        self.sims
            .iter()
            .step_by(2)
            .flat_map(|s| s.behaviour.peers.lock().unwrap().clone())
            .map(|p| p.ip())
            .collect()
    }

    fn logs(&self) -> String {
        self.ka
            .iter()
            .map(Keepalived::log)
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

#[test]
fn killing_mailns_on_the_master_moves_the_vip_and_its_return_does_not() {
    let mut pair = Pair::up(&|c| c);
    assert!(pair.lab.holds_vip("a") && !pair.lab.holds_vip("b"));
    let through_a = https_servers(&pair.lab);
    let served: std::collections::BTreeSet<&str> =
        through_a.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        served.len(),
        2,
        "source-hash spreads the clients: {through_a:?}"
    );

    // Transparent: the SMTP server sees the application, not node A.
    let app = client_ip(CLIENTS.start + 1);
    let (banner, open_via_a) = smtp_session(&pair.lab, app);
    assert!(banner.starts_with("220 ex0"), "{banner}");
    assert!(session_alive(&open_via_a));
    assert!(
        pair.smtp_peers().contains(&app),
        "peers: {:?}",
        pair.smtp_peers()
    );

    // mailns dies on A: the track script fails, A gives up the VIP, B takes it.
    let killed = Instant::now();
    let a = pair.nodes[0].take().unwrap();
    Command::new("kill")
        .args(["-KILL", &a.pid().to_string()])
        .status()
        .unwrap();
    let took = until_vip_answers(&pair.lab, killed, Duration::from_secs(15));
    eprintln!("takeover after killing mailns on the master: {took:?}");
    pair.wait_vip("b", Duration::from_secs(5));
    assert!(!pair.lab.holds_vip("a"), "{}", pair.logs());

    // The session open through A is gone; a new one through B works, transparently too.
    assert!(
        !session_alive(&open_via_a),
        "a session through the dead node went on"
    );
    let app2 = client_ip(CLIENTS.start + 2);
    let (_, open_via_b) = smtp_session(&pair.lab, app2);
    assert!(session_alive(&open_via_b));
    assert!(
        pair.smtp_peers().contains(&app2),
        "peers: {:?}",
        pair.smtp_peers()
    );
    // Every session from the client side came from an application, none from a node.
    let client_side: Vec<IpAddr> = pair
        .smtp_peers()
        .into_iter()
        .filter(|p| p.to_string().starts_with("198.18.1."))
        .collect();
    assert!(
        client_side
            .iter()
            .all(|p| CLIENTS.map(client_ip).any(|c| c == *p)),
        "sessions from a node's client-side address: {client_side:?}"
    );

    // Source-hash: every client reaches the same server through B as through A.
    assert_eq!(https_servers(&pair.lab), through_a);

    // mailns is back on A: A becomes ready and backup, and stays backup (nopreempt), so the
    // session open through B carries on.
    drop(a);
    pair.restart_mailns(0);
    // Three advert intervals and more: a preempting master would have taken the VIP by now.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        pair.lab.holds_vip("b") && !pair.lab.holds_vip("a"),
        "{}",
        pair.logs()
    );
    assert!(
        session_alive(&open_via_b),
        "the master's return broke a session"
    );
}

#[test]
fn stopping_keepalived_on_the_master_moves_the_vip() {
    let mut pair = Pair::up(&|c| c);
    let app = client_ip(CLIENTS.start + 3);
    let (_, open_via_a) = smtp_session(&pair.lab, app);
    let stopped = Instant::now();
    pair.ka[0].stop();
    let took = until_vip_answers(&pair.lab, stopped, Duration::from_secs(15));
    eprintln!("takeover after stopping keepalived on the master: {took:?}");
    pair.wait_vip("b", Duration::from_secs(5));
    // mailns on A still runs, but the client's packets now reach B, which knows no such
    // connection: the session ends (reset), and the client reconnects.
    assert!(pair.nodes[0].as_mut().unwrap().alive());
    assert!(
        !session_alive(&open_via_a),
        "a session through the old master went on"
    );
    let (_, s) = smtp_session(&pair.lab, app);
    assert!(session_alive(&s));
}

/// The benchmark of BENCHMARKS.md (bench/ha.sh): takes the node holding the VIP out
/// `HA_KILLS` times (default 20) and prints the takeover times, median and max, at keepalived's
/// advert interval `HA_ADVERT` (seconds; default 1, keepalived's default). `HA_KILL=mailns`
/// (default) kills mailns there (the track script notices within its 1 s interval, and the
/// node gives the VIP up at once); `HA_KILL=node` kills keepalived with SIGKILL and takes the
/// node's links down, as a crash would (the backup waits out 3 adverts and the skew time).
#[test]
#[ignore = "a benchmark: bench/ha.sh runs it"]
fn takeover_times() {
    let kills = env_or("HA_KILLS", 20);
    let advert = std::env::var("HA_ADVERT").unwrap_or_else(|_| "1".into());
    let whole_node = std::env::var("HA_KILL").is_ok_and(|k| k == "node");
    let edit = move |c: String| c.replace("advert_int 1", &format!("advert_int {advert}"));
    let mut pair = Pair::up(&edit);
    let mut times = Vec::new();
    let mut master = 0;
    for k in 0..kills {
        let node = ["a", "b"][master];
        pair.wait_vip(node, Duration::from_secs(20));
        // The kill lands at a different point of the track script's and the adverts' 1 s
        // cycles each time (a step of 0.37 s), as a real failure would: the waits above end
        // right after a script run, which would otherwise fix the phase.
        std::thread::sleep(Duration::from_millis(k * 370 % 1000));
        let t0 = Instant::now();
        if whole_node {
            pair.ka[master].kill_hard();
            for dev in ["eth0", "eth1"] {
                pair.lab.ip(node, &["link", "set", dev, "down"]);
            }
        } else {
            let pid = pair.nodes[master].as_ref().unwrap().pid();
            Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
        }
        times.push(until_vip_answers(&pair.lab, t0, Duration::from_secs(20)));
        if whole_node {
            // Back as a rebooted node: links up without the VIP, keepalived started again.
            for (dev, vip) in [("eth0", "198.18.1.100/24"), ("eth1", "198.18.2.1/24")] {
                let _ = Command::new("ip")
                    .args(["-n", &pair.lab.ns(node), "addr", "del", vip, "dev", dev])
                    .status();
                pair.lab.ip(node, &["link", "set", dev, "up"]);
            }
            let dir = pair.dir.path().to_path_buf();
            pair.ka[master] = Keepalived::start(&pair.lab, node, &dir, &edit);
            let t = Instant::now();
            while !pair.ka[master].log().contains("Entering BACKUP STATE") {
                let log = pair.ka[master].log();
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "not in BACKUP:\n{log}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        } else {
            drop(pair.nodes[master].take());
            pair.restart_mailns(master);
        }
        master = 1 - master;
    }
    times.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "takeover over {} kills of {} at advert_int {}: median {:.0} ms, max {:.0} ms, all {:?}",
        times.len(),
        if whole_node { "the node" } else { "mailns" },
        std::env::var("HA_ADVERT").unwrap_or_else(|_| "1".into()),
        ms(&times[times.len() / 2]),
        ms(times.last().unwrap()),
        times.iter().map(|d| ms(d).round()).collect::<Vec<_>>()
    );
}

/// `mailns check` on the example, outside the lab: the VIP is not on this host (bound anyway),
/// and without CAP_NET_ADMIN and CAP_NET_RAW (either allows IP_TRANSPARENT; dropped with setpriv) the transparent relay is flagged; `mailns
/// run` then refuses to start with the same words.
#[test]
fn check_says_what_the_pair_needs_of_the_host() {
    let config = example().join("mailns.toml");
    let check = |prefix: &[&str]| {
        let mut cmd = match prefix.split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(require_tool(p));
                c.args(rest);
                c.arg(env!("CARGO_BIN_EXE_mailns"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_mailns")),
        };
        let out = cmd
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let plain = check(&[]);
    assert!(
        plain.contains("warning: relay 'smtp' listens on 198.18.1.100:25, which is not an address of this host now; it is bound anyway (IP_FREEBIND)"),
        "{plain}"
    );
    assert!(!plain.contains("CAP_NET_ADMIN"), "{plain}");
    let drop_cap = [
        "setpriv",
        "--bounding-set",
        "-net_admin,-net_raw",
        "--inh-caps",
        "-net_admin,-net_raw",
    ];
    let without = check(&drop_cap);
    assert!(
        without.contains("warning: relay 'smtp': transparent = true needs CAP_NET_ADMIN"),
        "{without}"
    );

    let dir = node_dir();
    let toml = dir.path().join("mailns.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    // Loopback listeners, so that only the capability stands in the way.
    let text = text
        .replace("0.0.0.0:53", "127.0.0.1:0")
        .replace("198.18.1.100:25", "127.0.0.1:0")
        .replace("198.18.1.100:443", "127.0.0.1:0")
        .replace("127.0.0.1:8053", "127.0.0.1:0");
    std::fs::write(&toml, text).unwrap();
    let out = Command::new(require_tool("setpriv"))
        .args(&drop_cap[1..])
        .arg(env!("CARGO_BIN_EXE_mailns"))
        .args(["run", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("relay 'smtp': transparent = true needs CAP_NET_ADMIN"),
        "{err}"
    );
}

/// CPU time of every thread of `pid`, from the scheduler's nanosecond counters.
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// The benchmark of BENCHMARKS.md (bench/ha.sh): mailns's CPU per SMTP session through the VIP
/// (connect, banner, QUIT, 221, close), transparent (port 25) against plain (a second relay on
/// port 2525 to the same servers), alternating `HA_ROUNDS` rounds of `HA_CONNS` sessions.
#[test]
#[ignore = "a benchmark: bench/ha.sh runs it"]
fn transparent_cost() {
    let rounds = env_or("HA_ROUNDS", 3);
    let conns = env_or("HA_CONNS", 3000);
    let lab = Lab::new();
    let (_rt, _sims) = start_servers(&lab);
    let dir = node_dir();
    let toml = dir.path().join("mailns.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let plain = concat!(
        "\n[[relay]]\nname = \"smtp-plain\"\nkind = \"smtp\"\nlisten = [\"198.18.1.100:2525\"]\n",
        "backend_port = 25\nservers = [\"ex01\", \"ex02\"]\nchecks = [\"smtp\"]\n",
        "allow = [\"198.18.1.0/24\"]\nmax_per_client = 100000\n"
    );
    let text = text.replacen("[admin]", &format!("{plain}\n[admin]"), 1);
    std::fs::write(
        &toml,
        text.replace(
            "transparent = true\n",
            "transparent = true\nmax_per_client = 100000\n",
        ),
    )
    .unwrap();
    let node = start_mailns(&lab, "a", dir);
    // The VIP by hand: this measures the relay, not keepalived.
    lab.ip("a", &["addr", "add", "198.18.1.100/24", "dev", "eth0"]);
    lab.ip("a", &["addr", "add", "198.18.2.1/24", "dev", "eth1"]);
    let pid = node.pid();
    let session = move |port: u16, i: u64| {
        let from = client_ip(CLIENTS.start + (i % u64::from(CLIENTS.end - CLIENTS.start)) as u8);
        let (banner, mut s) = first_line(from, vip(port), Duration::from_secs(3)).expect("banner");
        assert!(banner.starts_with("220"), "{banner}");
        s.write_all(b"QUIT\r\n").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        assert!(line.starts_with("221"), "{line}");
    };
    let mut per = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (k, port) in [(0, 25u16), (1, 2525)] {
            let (cpu, wall) = lab.within("c", move || {
                let (c0, t0) = (cpu_ns(pid), Instant::now());
                for i in 0..conns {
                    session(port, i);
                }
                (cpu_ns(pid) - c0, t0.elapsed())
            });
            let us = cpu as f64 / conns as f64 / 1000.0;
            eprintln!(
                "round {round} {}: {us:.1} us of mailns CPU per session, {:.0} sessions/s",
                ["transparent", "plain"][k],
                conns as f64 / wall.as_secs_f64()
            );
            per[k].push(us);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (t, p) = (median(&mut per[0].clone()), median(&mut per[1].clone()));
    let ratios: Vec<String> = per[0]
        .iter()
        .zip(&per[1])
        .map(|(a, b)| format!("{:.2}", a / b))
        .collect();
    eprintln!(
        "transparent {t:.1} us vs plain {p:.1} us per session (median of {rounds} rounds of {conns}): {:.2}x, per round {}",
        t / p,
        ratios.join(" ")
    );
}

/// Two nodes with `[cluster]`: each reads the other's raw checks over HTTPS (one self-signed
/// certificate naming both node addresses, which is also the `ca_file`), with one admin token.
/// No keepalived: this is about the answers. `mail.mail.example.test` answers ex01 and ex02 by
/// their SMTP check.
struct Cluster {
    nodes: Vec<Mailns>,
    _sims: Vec<Arc<Sim>>,
    _rt: Arc<tokio::runtime::Runtime>,
    lab: Lab,
}

const NODES: [(&str, &str); 2] = [("a", "198.18.1.2"), ("b", "198.18.1.3")];

impl Cluster {
    fn up(policy: &str) -> Self {
        let lab = Lab::new();
        let (rt, sims) = start_servers(&lab);
        let ck =
            rcgen::generate_simple_self_signed(vec![NODES[0].1.into(), NODES[1].1.into()]).unwrap();
        let nodes = NODES
            .iter()
            .enumerate()
            .map(|(i, (n, _))| {
                let dir = node_dir();
                let p = |f: &str| dir.path().join(f);
                std::fs::write(p("node.pem"), ck.cert.pem()).unwrap();
                std::fs::write(p("node.key"), ck.signing_key.serialize_pem()).unwrap();
                std::fs::write(p("token"), "cluster-test-token\n").unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(p("token"), std::fs::Permissions::from_mode(0o600))
                    .unwrap();
                let zone = std::fs::read_to_string(p("mail.example.test.zone")).unwrap();
                std::fs::write(
                    p("mail.example.test.zone"),
                    zone + "mail A 198.18.2.10\nmail A 198.18.2.11\n",
                )
                .unwrap();
                let peer = NODES[1 - i].1;
                let toml = std::fs::read_to_string(p("mailns.toml")).unwrap();
                let toml = toml
                    .replace("interval = \"2s\"\ntimeout = \"1s\"", "interval = \"500ms\"\ntimeout = \"300ms\"")
                    .replace(
                        "listen = \"127.0.0.1:8053\"",
                        "listen = \"0.0.0.0:8053\"\ntoken_file = \"token\"\ntls_cert = \"node.pem\"\ntls_key = \"node.key\"",
                    )
                    .replace(
                        "[admin]",
                        "[[service]]\nname = \"mail.mail.example.test\"\nchecks = [\"smtp\"]\nttl = 5\n\n[admin]",
                    );
                let toml = format!(
                    "{toml}\n[cluster]\npeers = [\"https://{peer}:8053\"]\npolicy = \"{policy}\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\nca_file = \"node.pem\"\n"
                );
                std::fs::write(p("mailns.toml"), toml).unwrap();
                start_mailns(&lab, n, dir)
            })
            .collect();
        let c = Self {
            nodes,
            _sims: sims,
            _rt: rt,
            lab,
        };
        for n in ["a", "b"] {
            wait_for(
                Duration::from_secs(20),
                &format!("node {n} hearing its peer"),
                || c.status(n)["cluster"]["peers"][0]["reachable"] == true,
            );
        }
        c
    }

    /// The node's status document, over HTTPS from inside its namespace.
    fn status(&self, n: &str) -> serde_json::Value {
        let body = self.curl(n, "/api/v1/status");
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    fn curl(&self, n: &str, path: &str) -> String {
        let out = self
            .lab
            .command(n, &require_tool("curl"))
            .args(["-sk", "-m", "2", &format!("https://127.0.0.1:8053{path}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// What node `n` answers for mail.mail.example.test.
    fn answer(&self, n: &str) -> Vec<String> {
        self.lab.within(n, || {
            a_set("127.0.0.1:53".parse().unwrap(), "mail.mail.example.test")
        })
    }

    /// This node's own status of ex02's SMTP check.
    fn own_ex02(&self, n: &str) -> (String, String) {
        let doc = self.status(n);
        let smtp = doc["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["name"] == "ex02")
            .flat_map(|s| s["checks"].as_array().into_iter().flatten())
            .find(|c| c["check"] == "smtp")
            .cloned()
            .unwrap_or_default();
        (
            smtp["status"].as_str().unwrap_or("").to_string(),
            smtp["decided"].as_str().unwrap_or("").to_string(),
        )
    }

    /// Cuts node `n`'s path to ex02 (every packet to it dropped, as a broken link would).
    fn cut_ex02(&self, n: &str) {
        iptables(
            &self.lab,
            n,
            &["-A", "OUTPUT", "-d", "198.18.2.11", "-j", "DROP"],
        );
    }
}

fn iptables(lab: &Lab, n: &str, args: &[&str]) {
    let ok = lab
        .command(n, &require_tool("iptables"))
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "iptables {args:?} in {n}");
}

const BOTH: [&str; 2] = ["198.18.2.10", "198.18.2.11"];

/// An iptables rule (after -A or -D) that cuts node A's polls of node B's admin API.
const TO_B_ADMIN: [&str; 9] = [
    "OUTPUT",
    "-d",
    "198.18.1.3",
    "-p",
    "tcp",
    "--dport",
    "8053",
    "-j",
    "DROP",
];

/// quorum on two nodes means both: a node that alone sees a server down keeps answering it (as
/// its peer does) until the peer sees it down too. A node that hears no peer decides alone,
/// and says so in its status and metrics.
#[test]
fn quorum_keeps_a_server_until_both_nodes_see_it_down() {
    let c = Cluster::up("quorum");
    // mailns ctl follows the config to the HTTPS admin listener, token included.
    let ctl = |args: &[&str]| {
        let out = c
            .lab
            .command("a", Path::new(env!("CARGO_BIN_EXE_mailns")))
            .arg("ctl")
            .arg("--config")
            .arg(c.nodes[0].dir.path().join("mailns.toml"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(ctl(&["status"]).contains("ex02"));
    ctl(&["drain", "ex01"]);
    ctl(&["ready", "ex01"]);
    for n in ["a", "b"] {
        wait_for(Duration::from_secs(15), "both servers answered", || {
            c.answer(n) == BOTH
        });
    }
    c.cut_ex02("a");
    wait_for(Duration::from_secs(15), "A seeing ex02 down itself", || {
        c.own_ex02("a").0 == "down"
    });
    // Outvoted: A's answers and relays go on using ex02, as B's do.
    assert_eq!(c.own_ex02("a"), ("down".into(), "up".into()));
    assert_eq!(c.answer("a"), BOTH);
    assert_eq!(c.answer("b"), BOTH);
    assert!(c.status("a")["cluster"]["outvoted"].as_u64().unwrap() >= 1);
    assert_eq!(c.status("b")["cluster"]["outvoted"], 0);

    // A stops hearing B: it decides alone, drops ex02, and says so.
    iptables(&c.lab, "a", &[&["-A"], TO_B_ADMIN.as_slice()].concat());
    wait_for(Duration::from_secs(10), "A deciding alone", || {
        c.status("a")["cluster"]["alone"] == true
    });
    wait_for(Duration::from_secs(5), "A dropping ex02 on its own", || {
        c.answer("a") == ["198.18.2.10"]
    });
    assert!(c.curl("a", "/metrics").contains("mailns_cluster_alone 1"));
    assert!(c
        .curl("a", "/metrics")
        .contains("mailns_cluster_peer_up{peer=\"https://198.18.1.3:8053\"} 0"));
    // B still hears A (A's answers to B's polls go out from port 8053) and keeps ex02.
    assert_eq!(c.answer("b"), BOTH);
    iptables(&c.lab, "a", &[&["-D"], TO_B_ADMIN.as_slice()].concat());
    wait_for(
        Duration::from_secs(10),
        "A hearing B again and keeping ex02",
        || c.status("a")["cluster"]["alone"] == false && c.answer("a") == BOTH,
    );

    // B's path breaks too: both drop ex02.
    c.cut_ex02("b");
    for n in ["a", "b"] {
        wait_for(
            Duration::from_secs(15),
            &format!("{n} dropping ex02"),
            || c.answer(n) == ["198.18.2.10"],
        );
    }
}

/// any: one node seeing a server down takes it out on both.
#[test]
fn any_drops_a_server_on_both_nodes_when_one_sees_it_down() {
    let c = Cluster::up("any");
    for n in ["a", "b"] {
        wait_for(Duration::from_secs(15), "both servers answered", || {
            c.answer(n) == BOTH
        });
    }
    c.cut_ex02("a");
    for n in ["a", "b"] {
        wait_for(
            Duration::from_secs(15),
            &format!("{n} dropping ex02"),
            || c.answer(n) == ["198.18.2.10"],
        );
    }
    // B's own check still passes; the cluster's decision is what it answers by.
    assert_eq!(c.own_ex02("b"), ("up".into(), "down".into()));
}
