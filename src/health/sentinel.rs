//! Sentinels: one idle TCP connection per checked (address, port) while its probes pass. The
//! kernel reports a dead process, a stopped service or a rebooted host as a close or reset at
//! once; the sentinel then wakes every probe on that port, which re-probe at the sentinel
//! interval until the state settles. A close from the server's own idle timeout just causes a
//! probe that passes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::plan::Plan;

/// The sentinels of one engine.
#[derive(Debug, Default)]
pub(super) struct Sentinels {
    /// Per probe (plan order): what its sentinel wakes.
    pub(super) wake: Vec<Arc<Notify>>,
    /// Per probe (plan order): the port its sentinel watches.
    pub(super) of: Vec<SocketAddr>,
    /// Per port: turns its sentinel on (its probes pass) and off.
    pub(super) up: HashMap<SocketAddr, watch::Sender<bool>>,
}

impl Sentinels {
    /// One wake-up per probe of `plan`; with `enabled`, one sentinel task per (address, port),
    /// stopped by `token`. A sentinel never reconnects faster than the shortest interval of its
    /// port's checks.
    pub(super) fn start(plan: &Plan, enabled: bool, token: &CancellationToken) -> Self {
        let mut this = Self::default();
        let mut by_port: HashMap<SocketAddr, Vec<Arc<Notify>>> = HashMap::new();
        for spec in &plan.probes {
            let n = Arc::new(Notify::new());
            let sa = SocketAddr::new(spec.addr, spec.port);
            by_port.entry(sa).or_default().push(n.clone());
            this.wake.push(n);
            this.of.push(sa);
        }
        if !enabled {
            return this;
        }
        for (sa, ns) in by_port {
            let (up_tx, up_rx) = watch::channel(false);
            this.up.insert(sa, up_tx);
            let pause = plan
                .probes
                .iter()
                .filter(|p| SocketAddr::new(p.addr, p.port) == sa)
                .map(|p| p.timing.interval)
                .min()
                .unwrap_or(Duration::from_secs(2));
            tokio::spawn(sentinel(sa, up_rx, ns, pause, token.clone()));
        }
        this
    }
}

/// One sentinel: while `up` is true, holds an idle connection to `addr`; when it closes (or
/// cannot be opened), wakes every probe of the port, then pauses `pause`.
async fn sentinel(
    addr: SocketAddr,
    mut up: watch::Receiver<bool>,
    wake: Vec<Arc<Notify>>,
    pause: Duration,
    token: CancellationToken,
) {
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            r = up.wait_for(|u| *u) => if r.is_err() { return },
            () = token.cancelled() => return,
        }
        let stream = match timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            _ => {
                for w in &wake {
                    w.notify_one();
                }
                tokio::select! { () = sleep(pause) => continue, () = token.cancelled() => return }
            }
        };
        let _ = socket2::SockRef::from(&stream).set_keepalive(true);
        let mut stream = stream;
        loop {
            tokio::select! {
                r = stream.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue, // a greeting (SMTP, IMAP, POP3): ignore
                },
                () = token.cancelled() => return,
            }
        }
        debug!(%addr, "sentinel closed; re-probing");
        for w in &wake {
            w.notify_one();
        }
        // Never reconnect faster than the check interval, whatever the server does.
        tokio::select! { () = sleep(pause) => {}, () = token.cancelled() => return }
    }
}
