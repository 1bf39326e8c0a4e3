//! `[cluster]`: the other mailns nodes whose raw check results count in this node's health.
//!
//! Two nodes that probe on their own can disagree: one with a broken path to a server answers
//! without it while the other answers with it (gdnsd#206 and CoreDNS-GSLB#83 report exactly
//! this). With peers, each node reads the others' raw results over their admin API and
//! decides by a policy (NS1's monitoring policies): `quorum` (a majority of the nodes that
//! answered), `all` or `any`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::health::Cx;

/// `[cluster]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    #[serde(default)]
    peers: Vec<Spanned<String>>,
    policy: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

/// How the nodes' votes on one (server, check) make its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Down when more than half of the nodes that have a result say down (on two nodes: both).
    #[default]
    Quorum,
    /// Down only when every node that has a result says down.
    All,
    /// Down as soon as one node says down.
    Any,
}

impl Policy {
    /// The config's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quorum => "quorum",
            Self::All => "all",
            Self::Any => "any",
        }
    }
}

/// One peer: its admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// As written (`https://198.18.1.3:8053`), for logs, the dashboard and metric labels.
    pub url: String,
    /// Host as written: an address, or a name to resolve and to verify the certificate by.
    pub host: String,
    /// The port.
    pub port: u16,
    /// HTTPS (plain HTTP only to a loopback address).
    pub tls: bool,
}

/// The validated `[cluster]` (no peers: this node decides alone, as without the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The other nodes.
    pub peers: Vec<Peer>,
    /// How votes combine.
    pub policy: Policy,
    /// How often each peer is asked.
    pub interval: Duration,
    /// How long an answer may take; a peer that does not answer in time does not vote.
    pub timeout: Duration,
    /// CA bundle that verifies HTTPS peers (None: the system bundle).
    pub ca_file: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            policy: Policy::Quorum,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            ca_file: None,
        }
    }
}

/// Validates `[cluster]`. Peers need the admin token (each node presents its own, so every
/// node has the same one) and, off loopback, HTTPS.
pub(super) fn validate(
    cx: &mut Cx<'_>,
    raw: RawCluster,
    has_token: bool,
    base: &std::path::Path,
) -> ClusterConfig {
    let d = ClusterConfig::default();
    let mut peers: Vec<Peer> = Vec::new();
    for p in &raw.peers {
        match parse_peer(p.get_ref()) {
            Ok(peer) if peers.iter().any(|x| x.url == peer.url) => cx.error(
                Some(p.span()),
                format!("cluster.peers: '{}' is listed twice", p.get_ref()),
            ),
            Ok(peer) => peers.push(peer),
            Err(why) => cx.error(
                Some(p.span()),
                format!("cluster.peers: '{}' {why}", p.get_ref()),
            ),
        }
    }
    if !peers.is_empty() && !has_token {
        cx.error(
            raw.peers.first().map(Spanned::span),
            "cluster.peers: peers read each other's checks with the admin token; set admin.token_file (the same token on every node)".into(),
        );
    }
    let policy = match raw.policy.as_ref().map(|p| p.get_ref().as_str()) {
        None | Some("quorum") => Policy::Quorum,
        Some("all") => Policy::All,
        Some("any") => Policy::Any,
        Some(other) => {
            cx.error(
                raw.policy.as_ref().map(Spanned::span),
                format!("cluster.policy: unknown policy '{other}' (quorum, all, any)"),
            );
            d.policy
        }
    };
    let interval = cx.duration(&raw.interval, "cluster.interval", d.interval);
    let timeout = cx.duration(&raw.timeout, "cluster.timeout", d.timeout);
    if timeout > interval {
        cx.warn(
            raw.timeout.as_ref().map(Spanned::span),
            format!("cluster.timeout ({timeout:?}) is longer than cluster.interval ({interval:?}): a slow peer delays the next round"),
        );
    }
    ClusterConfig {
        peers,
        policy,
        interval,
        timeout,
        ca_file: raw.ca_file.map(|f| base.join(f.get_ref())),
    }
}

/// `https://host:port` (or `http://` to a loopback address); a path is not allowed.
fn parse_peer(text: &str) -> Result<Peer, String> {
    let (tls, rest) = if let Some(r) = text.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = text.strip_prefix("http://") {
        (false, r)
    } else {
        return Err("is not an https:// URL (e.g. \"https://198.18.1.3:8053\")".into());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err("has a path; give the admin listener only (scheme, host, port)".into());
    }
    let (host, port) = match rest.parse::<SocketAddr>() {
        Ok(a) => (a.ip().to_string(), a.port()),
        Err(_) => {
            let (h, p) = rest
                .rsplit_once(':')
                .ok_or("has no port (the admin listener's, e.g. :8053)")?;
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("has a bad port '{p}'"))?;
            (h.trim_matches(['[', ']']).to_string(), port)
        }
    };
    if port == 0 || host.is_empty() {
        return Err("needs a host and a port from 1 to 65535".into());
    }
    let loopback = host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !tls && !loopback {
        return Err("is plain HTTP off loopback: the admin token would cross the network in the clear; use https:// (admin.tls_cert on the peer)".into());
    }
    Ok(Peer {
        url: text.to_string(),
        host,
        port,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::errors;

    #[test]
    fn errors_say_what_is_allowed() {
        let e = errors("[cluster]\npeers = [\"http://198.18.1.3:8053\", \"https://198.18.1.4:8053\"]\npolicy = \"majority\"\n[admin]\ntls_cert = \"node.pem\"\n");
        let text = format!("{e:?}");
        for want in [
            "in the clear",
            "set admin.token_file (the same token on every node)",
            "unknown policy 'majority' (quorum, all, any)",
            "tls_cert and tls_key go together",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
    }

    #[test]
    fn peers_are_https_or_loopback_http() {
        let p = parse_peer("https://198.18.1.3:8053").unwrap();
        assert_eq!((p.host.as_str(), p.port, p.tls), ("198.18.1.3", 8053, true));
        let p = parse_peer("https://node-b.mail.example.test:8053/").unwrap();
        assert_eq!(p.host, "node-b.mail.example.test");
        let p = parse_peer("http://[::1]:8054").unwrap();
        assert_eq!((p.host.as_str(), p.tls), ("::1", false));
        for (url, why) in [
            ("http://198.18.1.3:8053", "in the clear"),
            ("198.18.1.3:8053", "not an https:// URL"),
            ("https://198.18.1.3", "no port"),
            ("https://198.18.1.3:8053/api", "path"),
            ("https://198.18.1.3:0", "1 to 65535"),
        ] {
            let e = parse_peer(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
