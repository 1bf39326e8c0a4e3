//! The cluster poller: every `[cluster] interval`, asks each peer's admin API for its raw check
//! states (`GET /api/v1/cluster/checks`, with the admin token) and hands them to the health
//! engine as [`Votes`]; the engine decides with them ([`crate::health::cluster`]).
//!
//! A peer that does not answer within the timeout, answers with an error, or is not trusted
//! (HTTPS against `ca_file`) does not vote until it answers again. The config is read at each
//! round, so a reload that adds, removes or changes peers applies at the next one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::{Method, StatusCode};
use rustls::pki_types::ServerName;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::app::Live;
use crate::config::cluster::{ClusterConfig, Peer};
use crate::health::cluster::{PeerVotes, Votes};
use crate::health::Status;
use crate::httpclient::{self, Call};

/// Polls the peers until `token` is cancelled.
pub async fn run(live: Arc<Live>, token: CancellationToken) {
    let mut tls: Option<(Option<std::path::PathBuf>, Arc<rustls::ClientConfig>)> = None;
    let mut was: Vec<(String, bool)> = Vec::new();
    loop {
        let loaded = live.loaded.load_full();
        let cfg = &loaded.config.cluster;
        let pause = if cfg.peers.is_empty() {
            if !live.out.votes.borrow().peers.is_empty() {
                live.out.votes.send_replace(Arc::new(Votes::default()));
            }
            Duration::from_secs(1)
        } else {
            let client = client_config(&mut tls, cfg);
            let admin_token = loaded.config.admin.token.clone();
            // All peers at once: a peer that times out does not delay the others' votes.
            let mut polls = tokio::task::JoinSet::new();
            for (i, p) in cfg.peers.iter().enumerate() {
                let (p, client, token, limit) =
                    (p.clone(), client.clone(), admin_token.clone(), cfg.timeout);
                polls.spawn(async move { (i, poll(&p, limit, client, token.as_deref()).await) });
            }
            let mut peers: Vec<PeerVotes> = cfg
                .peers
                .iter()
                .map(|p| PeerVotes {
                    url: p.url.clone(),
                    error: Some("poll did not finish".into()),
                    ..PeerVotes::default()
                })
                .collect();
            while let Some(done) = polls.join_next().await {
                if let Ok((i, votes)) = done {
                    if let Some(slot) = peers.get_mut(i) {
                        *slot = votes;
                    }
                }
            }
            note_changes(&mut was, &peers);
            live.out.votes.send_replace(Arc::new(Votes { peers }));
            cfg.interval
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = token.cancelled() => return,
        }
    }
}

/// The TLS client config for `cfg.ca_file`, built again only when the file setting changes.
fn client_config(
    cache: &mut Option<(Option<std::path::PathBuf>, Arc<rustls::ClientConfig>)>,
    cfg: &ClusterConfig,
) -> Result<Arc<rustls::ClientConfig>, String> {
    if let Some((file, c)) = cache {
        if *file == cfg.ca_file {
            return Ok(c.clone());
        }
    }
    let built = crate::tls::client::config(&crate::tls::client::TlsCheck {
        verify: true,
        ca_file: cfg.ca_file.clone(),
    })
    .map_err(|e| format!("cluster.ca_file: {e}"))?;
    *cache = Some((cfg.ca_file.clone(), built.clone()));
    Ok(built)
}

/// Logs a peer that stops or starts answering, and a node left to decide alone, once each.
fn note_changes(was: &mut Vec<(String, bool)>, peers: &[PeerVotes]) {
    let alone_before = !was.is_empty() && was.iter().all(|(_, r)| !r);
    for p in peers {
        let before = was.iter().find(|(u, _)| *u == p.url).map(|(_, r)| *r);
        match (before, p.reachable) {
            (Some(true) | None, false) => {
                warn!(peer = %p.url, error = p.error.as_deref().unwrap_or(""), "cluster: peer not answering; deciding without its checks")
            }
            (Some(false), true) => info!(peer = %p.url, "cluster: peer answering again"),
            _ => {}
        }
    }
    *was = peers.iter().map(|p| (p.url.clone(), p.reachable)).collect();
    let alone = !peers.is_empty() && peers.iter().all(|p| !p.reachable);
    if alone && !alone_before {
        warn!(
            peers = peers.len(),
            "cluster: no peer answers; this node decides alone"
        );
    }
}

/// One peer's votes, or why it has none.
async fn poll(
    peer: &Peer,
    timeout: Duration,
    client: Result<Arc<rustls::ClientConfig>, String>,
    token: Option<&str>,
) -> PeerVotes {
    let url = peer.url.clone();
    match ask(peer, timeout, client, token).await {
        Ok(checks) => PeerVotes {
            url,
            reachable: true,
            error: None,
            last_ok: Some(SystemTime::now()),
            checks,
        },
        Err(error) => PeerVotes {
            url,
            reachable: false,
            error: Some(error),
            last_ok: None,
            checks: HashMap::new(),
        },
    }
}

async fn ask(
    peer: &Peer,
    timeout: Duration,
    client: Result<Arc<rustls::ClientConfig>, String>,
    token: Option<&str>,
) -> Result<HashMap<(IpAddr, String), Status>, String> {
    let addr = resolve(peer).await?;
    let tls = match peer.tls {
        false => None,
        true => Some(httpclient::Tls {
            config: client?,
            name: ServerName::try_from(peer.host.clone())
                .map_err(|e| format!("{}: {e}", peer.host))?,
        }),
    };
    let host = if peer.host.contains(':') {
        format!("[{}]:{}", peer.host, peer.port)
    } else {
        format!("{}:{}", peer.host, peer.port)
    };
    let call = Call {
        method: &Method::GET,
        path: "/api/v1/cluster/checks",
        host: &host,
        token,
        body: None,
        timeout,
    };
    let (status, body) = httpclient::request(addr, tls.as_ref(), call)
        .await
        .map_err(|e| e.to_string())?;
    match status {
        StatusCode::OK => parse(&body),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(format!(
            "HTTP {status}: the peer refuses this node's admin token (every node needs the same one)"
        )),
        other => Err(format!("HTTP {other}")),
    }
}

async fn resolve(peer: &Peer) -> Result<SocketAddr, String> {
    if let Ok(ip) = peer.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, peer.port));
    }
    tokio::net::lookup_host((peer.host.as_str(), peer.port))
        .await
        .map_err(|e| format!("{}: {e}", peer.host))?
        .next()
        .ok_or_else(|| format!("{}: no address", peer.host))
}

/// The peer's answer: `{"checks": [{"address", "check", "status"}]}`.
fn parse(body: &[u8]) -> Result<HashMap<(IpAddr, String), Status>, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let list = doc
        .get("checks")
        .and_then(serde_json::Value::as_array)
        .ok_or("no checks list")?;
    let mut out = HashMap::new();
    for c in list {
        let field = |k: &str| c.get(k).and_then(serde_json::Value::as_str);
        let (Some(addr), Some(check), Some(status)) =
            (field("address"), field("check"), field("status"))
        else {
            return Err(format!("malformed entry {c}"));
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("bad address {addr}"))?;
        let status = match status {
            "up" => Status::Up,
            "down" => Status::Down,
            _ => Status::Unknown,
        };
        out.insert((addr, check.to_string()), status);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_answer_parses_and_a_bad_one_is_refused() {
        let body = br#"{"checks":[{"address":"198.18.2.11","check":"smtp","status":"down"},
            {"address":"198.18.2.10","check":"smtp","status":"up"},
            {"address":"198.18.2.10","check":"https","status":"unknown"}]}"#;
        let m = parse(body).unwrap();
        assert_eq!(
            m[&("198.18.2.11".parse().unwrap(), "smtp".into())],
            Status::Down
        );
        assert_eq!(m.len(), 3);
        assert!(parse(b"<html>").unwrap_err().contains("not JSON"));
        assert!(
            parse(br#"{"checks":[{"address":"x","check":"a","status":"up"}]}"#)
                .unwrap_err()
                .contains("bad address")
        );
    }
}
