//! Sentinels: one held TCP connection per checked (address, port) while its probes pass, kept
//! live by a heartbeat in the port's protocol ([`super::heartbeat`]).
//!
//! - The kernel reports a dead process, a stopped service or a rebooted host as a close or a
//!   reset at once: the sentinel reconnects, and when that fails it wakes every probe of the
//!   port, which re-probe at the sentinel interval until the state settles.
//! - A heartbeat unanswered past its grace makes the port *silent*: each probe of the port then
//!   counts one failure per `timeout / fall` of silence (its state machine still decides), and
//!   the first one wakes it. So a hung server or a dropped path is down after the check's
//!   timeout of silence, not after interval + fall × timeout.
//! - TCP keepalive and `TCP_USER_TIMEOUT` make the kernel give up on a path that stopped
//!   acknowledging; the port is then silent since the user timeout, which is what a bare TCP
//!   port (no heartbeat) relies on.
//! - A server that closes the connection itself (Exchange's `ConnectionTimeout`, an idle
//!   timeout) after it was held a check interval is reconnected quietly, without waking anyone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::heartbeat::{self, Beat, End, Heartbeat, Pulse};
use super::plan::Plan;
use super::probe::TlsConfigs;
use super::report::ProbeSpec;

/// Since when a port's held connection has been silent (None: it answers).
pub(super) type Silence = watch::Receiver<Option<Instant>>;

/// The sentinels of one engine.
#[derive(Debug, Default)]
pub(super) struct Sentinels {
    /// Per probe (plan order): what its sentinel wakes.
    pub(super) wake: Vec<Arc<Notify>>,
    /// Per probe (plan order): its port's silence.
    pub(super) silence: Vec<Silence>,
    /// Per probe (plan order): the port its sentinel watches.
    pub(super) of: Vec<SocketAddr>,
    /// Per port: turns its sentinel on (its probes pass) and off.
    pub(super) up: HashMap<SocketAddr, watch::Sender<bool>>,
}

/// What one sentinel needs to know of its port.
#[derive(Debug)]
struct Port {
    addr: SocketAddr,
    heartbeat: Heartbeat,
    beat: Beat,
    /// `TCP_USER_TIMEOUT`: the shortest check timeout of the port.
    user_timeout: Duration,
    /// Never reconnect after a failure faster than this: the shortest check interval.
    pause: Duration,
}

impl Port {
    /// The port `addr` as its probes in `plan` check it. The heartbeat follows the first probe
    /// that speaks a protocol; grace and timeouts follow the most demanding check.
    fn of(
        addr: SocketAddr,
        probes: &[&ProbeSpec],
        tls: &dyn Fn(&ProbeSpec) -> Option<TlsConfigs>,
        every: Duration,
    ) -> Self {
        let heartbeat = probes
            .iter()
            .map(|p| Heartbeat::of(&p.kind, tls(p).as_ref(), every))
            .find(Heartbeat::is_active)
            .unwrap_or(Heartbeat::Idle);
        let timing = probes.iter().map(|p| p.timing);
        let timeouts = timing.clone().map(|t| t.timeout);
        let user_timeout = timeouts
            .clone()
            .min()
            .unwrap_or(Duration::from_millis(1500));
        Self {
            addr,
            heartbeat,
            beat: Beat {
                every,
                grace: timing
                    .clone()
                    .map(|t| miss_every(&t))
                    .min()
                    .unwrap_or(user_timeout),
                give_up: timeouts.max().unwrap_or(user_timeout),
            },
            user_timeout,
            pause: timing
                .map(|t| t.interval)
                .min()
                .unwrap_or(Duration::from_secs(2)),
        }
    }
}

/// One failure per this much silence, for a check with `timing`: `fall` of them make the
/// check's timeout, so a silent port is down after one timeout of silence.
pub(super) fn miss_every(timing: &crate::config::Timing) -> Duration {
    let every = timing.timeout / timing.fall.max(1);
    every.max(Duration::from_millis(10))
}

impl Sentinels {
    /// One wake-up and silence per probe of `plan`; with `enabled`, one sentinel task per
    /// (address, port), stopped by `token`, heartbeating every `every` (zero: idle).
    pub(super) fn start(
        plan: &Plan,
        enabled: bool,
        every: Duration,
        tls: &dyn Fn(&ProbeSpec) -> Option<TlsConfigs>,
        token: &CancellationToken,
    ) -> Self {
        let mut this = Self::default();
        // Per port: its silence, which the port's sentinel task then owns. Without sentinels
        // it is dropped, and the probes stop listening for it.
        let mut silent: HashMap<SocketAddr, watch::Sender<Option<Instant>>> = HashMap::new();
        let mut by_port: HashMap<SocketAddr, (Vec<Arc<Notify>>, Vec<&ProbeSpec>)> = HashMap::new();
        for spec in &plan.probes {
            let n = Arc::new(Notify::new());
            let sa = SocketAddr::new(spec.addr, spec.port);
            let entry = by_port.entry(sa).or_default();
            entry.0.push(n.clone());
            entry.1.push(spec);
            let tx = silent.entry(sa).or_insert_with(|| watch::channel(None).0);
            this.silence.push(tx.subscribe());
            this.wake.push(n);
            this.of.push(sa);
        }
        if !enabled {
            return this;
        }
        for (sa, (wake, probes)) in by_port {
            let (up_tx, up_rx) = watch::channel(false);
            this.up.insert(sa, up_tx);
            let Some(silent) = silent.remove(&sa) else {
                continue;
            };
            let port = Port::of(sa, &probes, tls, every);
            let signals = Signals { silent, wake };
            tokio::spawn(sentinel(port, up_rx, signals, token.clone()));
        }
        this
    }
}

/// How a sentinel tells its probes.
struct Signals {
    silent: watch::Sender<Option<Instant>>,
    wake: Vec<Arc<Notify>>,
}

impl Signals {
    fn wake(&self) {
        for w in &self.wake {
            w.notify_one();
        }
    }

    fn clear(&self) {
        self.silent.send_if_modified(|s| s.take().is_some());
    }

    /// Silent since `since`, unless it already was (the earlier instant stands).
    fn silent_since(&self, since: Instant) {
        self.silent.send_if_modified(|s| {
            let new = s.is_none();
            if new {
                *s = Some(since);
            }
            new
        });
    }
}

/// A held connection's news, as its sentinel passes it on.
struct Held<'a> {
    signals: &'a Signals,
}

impl Pulse for Held<'_> {
    fn answered(&self) {
        self.signals.clear();
    }

    fn silent(&self, since: Instant) {
        self.signals.silent_since(since);
    }
}

/// One sentinel: while `up` is true, holds a connection to the port and heartbeats on it.
async fn sentinel(
    port: Port,
    mut up: watch::Receiver<bool>,
    signals: Signals,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            r = up.wait_for(|u| *u) => if r.is_err() { return },
            () = token.cancelled() => return,
        }
        let opened = Instant::now();
        let end = tokio::select! {
            end = connect_and_hold(&port, &signals) => end,
            _ = up.wait_for(|u| !*u) => {
                // The port's probes all failed: nothing to watch until one passes again.
                signals.clear();
                continue;
            }
            () = token.cancelled() => return,
        };
        match end {
            End::Closed if opened.elapsed() >= port.pause => {
                debug!(addr = %port.addr, "server closed the held connection; reconnecting");
                continue;
            }
            End::TimedOut => {
                debug!(addr = %port.addr, "the kernel gave up on the held connection");
                let since = Instant::now()
                    .checked_sub(port.user_timeout)
                    .unwrap_or_else(Instant::now);
                signals.silent_since(since);
                signals.wake();
            }
            other => {
                debug!(addr = %port.addr, ?other, "held connection lost; re-probing");
                signals.wake();
            }
        }
        // Never reconnect faster than the check interval after a failure, unless the port's
        // probes have all failed meanwhile: then it reconnects as soon as one passes again.
        tokio::select! {
            () = sleep(port.pause) => {}
            r = up.wait_for(|u| !*u) => {
                signals.clear();
                if r.is_err() { return }
            }
            () = token.cancelled() => return,
        }
    }
}

/// Opens the held connection and keeps it until it ends. A connection that is not answered within the give-up time (no SYN-ACK, no greeting) makes
/// the port silent since the attempt began, as an unanswered heartbeat does.
async fn connect_and_hold(port: &Port, signals: &Signals) -> End {
    let opened = Instant::now();
    let stream = match timeout(port.beat.give_up, TcpStream::connect(port.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return End::Refused,
        Err(_) => {
            signals.silent_since(opened);
            return End::Refused;
        }
    };
    tune(&stream, port.user_timeout);
    heartbeat::hold(stream, &port.heartbeat, port.beat, &Held { signals }).await
}

/// Keepalive after 1 s idle, every 1 s, and the user timeout: the kernel reports a path that
/// stopped acknowledging within about two seconds, even on a port nothing is sent on.
fn tune(stream: &TcpStream, user_timeout: Duration) {
    let sock = socket2::SockRef::from(stream);
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1))
        .with_retries(2);
    let _ = sock.set_tcp_keepalive(&keepalive);
    let _ = sock.set_tcp_user_timeout(Some(user_timeout));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CheckKind, Timing};

    fn spec(kind: CheckKind, timeout_ms: u64, fall: u32) -> ProbeSpec {
        ProbeSpec {
            addr: [127, 0, 0, 1].into(),
            port: 25,
            kind,
            timing: Timing {
                interval: Duration::from_secs(2),
                timeout: Duration::from_millis(timeout_ms),
                rise: 2,
                fall,
                fast_interval: Duration::from_millis(500),
            },
            checks: vec!["c".into()],
        }
    }

    #[test]
    fn a_port_follows_its_most_demanding_check() {
        let smtp = CheckKind::Smtp {
            ehlo: "x".into(),
            mail_from: None,
        };
        let a = spec(CheckKind::Tcp, 1500, 2);
        let b = spec(smtp, 900, 3);
        let port = Port::of(
            SocketAddr::new(a.addr, 25),
            &[&a, &b],
            &|_| None,
            Duration::from_millis(500),
        );
        assert!(
            port.heartbeat.is_active(),
            "the SMTP check's heartbeat, not tcp's nothing"
        );
        assert_eq!(
            port.beat.grace,
            Duration::from_millis(300),
            "900 ms / fall 3"
        );
        assert_eq!(port.beat.give_up, Duration::from_millis(1500));
        assert_eq!(port.user_timeout, Duration::from_millis(900));
        assert_eq!(port.pause, Duration::from_secs(2));
    }

    #[test]
    fn silence_of_one_timeout_is_fall_misses() {
        let t = spec(CheckKind::Tcp, 1500, 2).timing;
        assert_eq!(miss_every(&t), Duration::from_millis(750));
        assert_eq!(miss_every(&t) * t.fall, t.timeout);
    }
}
