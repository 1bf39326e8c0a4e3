//! The admin listener: the dashboard, `/api/v1/status`, `/metrics`, `/livez`, `/readyz`, and the
//! admin actions (server state, reload) behind a bearer token.
//!
//! Everything it shows is read from the application's state ([`Live`]) on request; it never sits on the
//! DNS or relay paths. Admin actions answer only after their effect is in force: a drain returns
//! once the snapshot without the server is published.

pub mod history;
pub mod metrics;
pub mod persist;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{header, HeaderMap, Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, Instrument};

use crate::app::{Command, DemoAction, Live};
use crate::config::AdminState;
use crate::health::engine::AdminCmd;
use crate::limits::{Caps, Slots};

/// The dashboard page: one self-contained file (no CDN, no build step).
const DASHBOARD: &str = include_str!("dashboard.html");
/// Request bodies read at most (admin actions carry a few words).
const MAX_BODY: usize = 4096;
/// Open admin connections at most.
const MAX_CONNECTIONS: usize = 64;
/// Open admin connections per client address at most.
const MAX_PER_CLIENT: usize = 16;

/// An admin reply (every body is small and built whole).
pub type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn json(status: StatusCode, v: &impl serde::Serialize) -> Reply {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    reply(status, "application/json", body)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Reply {
    json(status, &serde_json::json!({ "error": msg.into() }))
}

/// Serves the admin listener until `token` is cancelled.
pub async fn serve(listener: TcpListener, live: Arc<Live>, token: CancellationToken) {
    // A few per client address (a dashboard holds one or two, a scraper one); keep-alive
    // connections idle the longest make room for newcomers.
    let slots = Slots::new(Caps {
        total: MAX_CONNECTIONS,
        per_client: MAX_PER_CLIENT,
        ipv4_prefix: 32,
        ipv6_prefix: 128,
    });
    let limits = crate::httpconn::Limits {
        header_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(60),
        write_timeout: Duration::from_secs(10),
        keep_alive: true,
    };
    let config = live.clone();
    let tls: crate::httpconn::TlsSource =
        Arc::new(move || config.loaded.load().config.admin.tls.clone());
    let handler = move |req: Request<Incoming>, peer: SocketAddr| {
        let live = live.clone();
        // Every event of a request carries who asked for what.
        let span = info_span!("admin", %peer, method = %req.method(), path = req.uri().path());
        async move { route(&live, req, peer).await }.instrument(span)
    };
    crate::httpconn::serve("admin", listener, slots, limits, handler, Some(tls), token).await;
}

/// This node's own check states, before any peer's vote: what its peers combine with theirs.
/// (The decided states would feed every node's decision back into the others'.)
fn raw_checks(live: &Live) -> serde_json::Value {
    let reports = live.out.reports.borrow().clone();
    let checks: Vec<serde_json::Value> = reports
        .iter()
        .flat_map(|r| {
            r.spec.checks.iter().map(|c| {
                serde_json::json!({
                    "address": r.spec.addr.to_string(),
                    "check": c,
                    "status": r.state.status.as_str(),
                })
            })
        })
        .collect();
    serde_json::json!({ "checks": checks })
}

/// True when `host` (a Host header) names this listener in a way no DNS-rebinding page can:
/// an IP address, `localhost` (or a name under it), or a name the config lists.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed.contains(&name)
}

/// What the admin listener does with one request, decided from its method, path and headers
/// alone (no I/O, no state): pure, so the fuzzer can drive it with any request.
#[derive(Debug)]
pub enum Route {
    /// The dashboard page.
    Dashboard,
    /// `GET /api/v1/status`.
    Status,
    /// `GET /api/v1/history`.
    History,
    /// `GET /metrics`.
    Metrics,
    /// `GET /livez`.
    Livez,
    /// `GET /readyz`.
    Readyz,
    /// An authorized `POST /api/v1/reload`.
    Reload,
    /// An authorized `GET /api/v1/cluster/checks`: this node's raw check states, for its peers.
    ClusterChecks,
    /// A demo action on a simulated server (demo mode only).
    Demo {
        /// The simulated server.
        server: String,
        /// What to do to it.
        action: DemoAction,
    },
    /// An authorized `POST /api/v1/servers/{server}/state`; the body names the state.
    SetState {
        /// The `[[server]]` name from the path.
        server: String,
    },
    /// Answered at once with this refusal or error; nothing changes.
    Refuse(Reply),
}

/// What `decide` needs from the config in force.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The admin token (`admin.token_file`'s contents); None disables admin actions.
    pub token: Option<&'a str>,
    /// Extra Host names the listener answers to (`admin.hosts`).
    pub hosts: &'a [String],
    /// Running as `mailns demo` (simulated servers can be failed from the dashboard).
    pub demo: bool,
}

/// Routes a request: a Host no DNS-rebinding page can use, then the path and method, then the
/// token for anything that changes state. Only `Reload` and `SetState` act, and only with the
/// token.
pub fn decide(method: &Method, path: &str, headers: &HeaderMap, policy: &Policy<'_>) -> Route {
    if let Some(host) = headers.get(header::HOST) {
        if !host.to_str().is_ok_and(|h| host_allowed(h, policy.hosts)) {
            debug!(host = ?host, "admin: Host not allowed");
            return Route::Refuse(error(
                StatusCode::MISDIRECTED_REQUEST,
                "this Host is not one of the admin listener's names: use an IP address, localhost, or add the name to admin.hosts",
            ));
        }
    }
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    match path {
        "/" | "/index.html" if get => Route::Dashboard,
        "/api/v1/status" if get => Route::Status,
        "/api/v1/history" if get => Route::History,
        "/metrics" if get => Route::Metrics,
        "/livez" if get => Route::Livez,
        "/readyz" if get => Route::Readyz,
        "/api/v1/reload" if post => match authorize(policy.token, headers) {
            Some(refusal) => Route::Refuse(refusal),
            None => Route::Reload,
        },
        // The token, though it changes nothing: the raw states name every server and are
        // what a peer acts on.
        "/api/v1/cluster/checks" if get => match authorize(policy.token, headers) {
            Some(refusal) => Route::Refuse(refusal),
            None => Route::ClusterChecks,
        },
        p if p.starts_with("/api/v1/demo/servers/") => {
            if !post {
                return Route::Refuse(allow_only("POST"));
            }
            let rest = p.strip_prefix("/api/v1/demo/servers/").unwrap_or_default();
            demo_route(policy.demo, rest)
        }
        p if server_of_state_path(p).is_some() => {
            if !post {
                return Route::Refuse(allow_only("POST"));
            }
            if let Some(refusal) = authorize(policy.token, headers) {
                return Route::Refuse(refusal);
            }
            let server = server_of_state_path(p).unwrap_or_default().to_string();
            Route::SetState { server }
        }
        "/"
        | "/index.html"
        | "/api/v1/status"
        | "/api/v1/history"
        | "/metrics"
        | "/livez"
        | "/readyz"
        | "/api/v1/cluster/checks" => Route::Refuse(allow_only("GET, HEAD")),
        "/api/v1/reload" => Route::Refuse(allow_only("POST")),
        _ => Route::Refuse(error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {path}"),
        )),
    }
}

/// Carries out what `decide` chose.
async fn route(live: &Arc<Live>, req: Request<Incoming>, peer: SocketAddr) -> Reply {
    let decision = {
        let loaded = live.loaded.load();
        let admin = &loaded.config.admin;
        let policy = Policy {
            token: admin.token.as_deref(),
            hosts: &admin.hosts,
            demo: live.demo.is_some(),
        };
        decide(req.method(), req.uri().path(), req.headers(), &policy)
    };
    match decision {
        Route::Refuse(reply) => reply,
        Route::Dashboard => reply(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD),
        Route::Status => json(StatusCode::OK, &status::build(live)),
        Route::History => {
            let doc = live
                .history
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .doc();
            json(StatusCode::OK, &doc)
        }
        Route::Metrics => reply(StatusCode::OK, metrics::CONTENT_TYPE, metrics::encode(live)),
        Route::Livez => reply(StatusCode::OK, "text/plain", "ok\n"),
        Route::ClusterChecks => json(StatusCode::OK, &raw_checks(live)),
        Route::Readyz => {
            if live.shutting_down() {
                let text = format!("shutting down, {} relayed sessions left\n", live.sessions());
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", text)
            } else if live.ready.load(std::sync::atomic::Ordering::Relaxed) {
                reply(StatusCode::OK, "text/plain", "ready\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n")
            }
        }
        Route::Reload => {
            info!("admin: reload requested");
            let (done, outcome) = oneshot::channel();
            let by = peer.ip().to_string();
            if live
                .commands
                .send(Command::Reload { done, by })
                .await
                .is_err()
            {
                return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
            }
            match outcome.await {
                Ok(Ok(())) => json(StatusCode::OK, &serde_json::json!({ "reloaded": true })),
                Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
                Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            }
        }
        Route::Demo { server, action } => demo_action(live, server, action, peer).await,
        Route::SetState { server } => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
            };
            let Some(state) = parse_state(&body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "expected a body of ready, drain or maint (or {\"state\": \"drain\"})",
                );
            };
            set_state(live, &server, state, peer).await
        }
    }
}

/// The server name in `/api/v1/servers/{name}/state`; None for any other path (an empty name
/// included: `/api/v1/servers/state` is not a server's state).
fn server_of_state_path(path: &str) -> Option<&str> {
    let name = path
        .strip_prefix("/api/v1/servers/")?
        .strip_suffix("/state")?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

fn allow_only(allow: &'static str) -> Reply {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, format!("use {allow}"));
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    r
}

/// Admin actions need the configured token as `Authorization: Bearer <token>`: without a token
/// file they are disabled (403); a missing or wrong token is 401 and changes nothing. Returns the
/// refusal, if any.
fn authorize(want: Option<&str>, headers: &HeaderMap) -> Option<Reply> {
    let Some(want) = want else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "admin actions are disabled: set admin.token_file in the config",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), want.as_bytes()) => None,
        _ => {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"mailns\""),
            );
            Some(r)
        }
    }
}

/// Compares without an early exit, so response timing does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /api/v1/demo/servers/{name}/{fail|heal|fail-owa}`: demo mode only. No token: the
/// demo serves loopback, and these act on simulated servers only.
fn demo_route(demo: bool, rest: &str) -> Route {
    if !demo {
        return Route::Refuse(error(StatusCode::NOT_FOUND, "not in demo mode"));
    }
    let Some((server, action)) = rest.split_once('/') else {
        return Route::Refuse(error(
            StatusCode::NOT_FOUND,
            "use /api/v1/demo/servers/{name}/{fail|heal|fail-owa}",
        ));
    };
    match DemoAction::parse(action) {
        Some(action) => Route::Demo {
            server: server.to_string(),
            action,
        },
        None => Route::Refuse(error(
            StatusCode::NOT_FOUND,
            format!("no demo action '{action}'"),
        )),
    }
}

/// Acts on a simulated server.
async fn demo_action(live: &Live, server: String, action: DemoAction, peer: SocketAddr) -> Reply {
    let Some(farm) = live.demo.clone() else {
        return error(StatusCode::NOT_FOUND, "not in demo mode");
    };
    let name = server.clone();
    // Killing waits until the ports refuse connections: off the async threads.
    let done = tokio::task::spawn_blocking(move || farm.act(&server, action)).await;
    match done {
        Ok(Ok(true)) => {
            info!(server = name, action = action.as_str(), "demo: action");
            live.out.record(crate::health::report::Transition {
                at: std::time::SystemTime::now(),
                server: name,
                what: "demo".into(),
                kind: "demo",
                by: peer.ip().to_string(),
                from: "-",
                to: action.as_str(),
                detail: "simulated server changed by the demo panel".into(),
            });
            json(StatusCode::OK, &serde_json::json!({ "done": true }))
        }
        Ok(Ok(false)) => error(StatusCode::NOT_FOUND, "no such demo server"),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `drain`, `"drain"` or `{"state": "drain"}`.
pub fn parse_state(body: &[u8]) -> Option<AdminState> {
    let text = std::str::from_utf8(body).ok()?.trim();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        let s = match &v {
            serde_json::Value::String(s) => s.as_str(),
            serde_json::Value::Object(o) => o.get("state")?.as_str()?,
            _ => return None,
        };
        return AdminState::parse(s);
    }
    AdminState::parse(text)
}

/// Has the engine apply the new state, then persists it; answers once it is published. If the
/// state file cannot be written, the previous state is put back and nothing has changed: what
/// the file says and what is served never disagree for longer than the request.
async fn set_state(live: &Live, name: &str, state: AdminState, peer: SocketAddr) -> Reply {
    let by = peer.ip().to_string();
    let _guard = live.admin_lock.lock().await;
    let before = live
        .out
        .health
        .load()
        .servers
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.admin);
    let Some(before) = before else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no [[server]] named '{name}'"),
        );
    };
    let file = live.loaded.load().config.admin.state_file.clone();
    let mut overrides = match persist::load(&file) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    if let Err(refusal) = apply_state(live, name, state, &by).await {
        return refusal;
    }
    overrides.insert(name.to_string(), state);
    if let Err(e) = persist::save(&file, &overrides) {
        let _ = apply_state(live, name, before, &by).await;
        return error(StatusCode::INTERNAL_SERVER_ERROR, e);
    }
    info!(
        server = name,
        state = state.as_str(),
        "admin: server state set"
    );
    json(
        StatusCode::OK,
        &serde_json::json!({ "server": name, "admin": state }),
    )
}

/// Has the engine put `state` in force for `name`; returns once the snapshot is published.
async fn apply_state(live: &Live, name: &str, state: AdminState, by: &str) -> Result<(), Reply> {
    let sender = live.engine.lock().await.as_ref().map(|h| h.admin.clone());
    let Some(sender) = sender else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the health engine is not running",
        ));
    };
    let (done, applied) = oneshot::channel();
    let cmd = AdminCmd {
        server: name.to_string(),
        state,
        by: by.to_string(),
        done,
    };
    if sender.send(cmd).await.is_err() || applied.await.is_err() {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the health engine stopped",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_bodies() {
        assert_eq!(parse_state(b"drain"), Some(AdminState::Drain));
        assert_eq!(parse_state(b" maint\n"), Some(AdminState::Maint));
        assert_eq!(parse_state(b"\"ready\""), Some(AdminState::Ready));
        assert_eq!(
            parse_state(br#"{"state": "drain"}"#),
            Some(AdminState::Drain)
        );
        assert_eq!(parse_state(br#"{"state": 1}"#), None);
        assert_eq!(parse_state(b"sleep"), None);
        assert_eq!(parse_state(&[0xff, 0xfe]), None);
    }

    #[test]
    fn hosts_that_a_rebinding_page_cannot_use() {
        let allowed = vec!["mailns1.mail.example.test".to_string()];
        for ok in [
            "127.0.0.1:8053",
            "127.0.0.1",
            "[::1]:8053",
            "localhost:8053",
            "LOCALHOST",
            "mailns1.mail.example.test:8053",
            "Mailns1.Mail.Example.Test.",
            "198.18.0.1",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example:8053",
            "mailns1.mail.example.test.evil",
            "[zz]:1",
            "localhost.evil",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }

    #[test]
    fn state_paths() {
        assert_eq!(
            server_of_state_path("/api/v1/servers/ex01/state"),
            Some("ex01")
        );
        assert_eq!(server_of_state_path("/api/v1/servers/state"), None);
        assert_eq!(server_of_state_path("/api/v1/servers//state"), None);
        assert_eq!(server_of_state_path("/api/v1/servers/a/b/state"), None);
        assert_eq!(server_of_state_path("/api/v1/servers/ex01"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, header::HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn status_of(route: Route) -> Option<StatusCode> {
        match route {
            Route::Refuse(r) => Some(r.status()),
            _ => None,
        }
    }

    #[test]
    fn decisions() {
        let hosts = Vec::new();
        let with = Policy {
            token: Some("t0ken"),
            hosts: &hosts,
            demo: false,
        };
        let without = Policy {
            token: None,
            ..with
        };
        let good = headers(&[("authorization", "Bearer t0ken")]);
        let bad = headers(&[("authorization", "Bearer t0kem")]);
        let path = "/api/v1/servers/ex01/state";
        assert!(matches!(
            decide(&Method::POST, path, &good, &with),
            Route::SetState { server } if server == "ex01"
        ));
        let refused = |m, p, h, pol| status_of(decide(m, p, h, pol));
        assert_eq!(
            refused(&Method::POST, path, &bad, &with),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            refused(&Method::POST, path, &good, &without),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            refused(&Method::GET, path, &good, &with),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert!(matches!(
            decide(&Method::POST, "/api/v1/reload", &good, &with),
            Route::Reload
        ));
        assert!(matches!(
            decide(&Method::HEAD, "/metrics", &HeaderMap::new(), &without),
            Route::Metrics
        ));
        let rebinding = headers(&[("host", "evil.example"), ("authorization", "Bearer t0ken")]);
        assert_eq!(
            refused(&Method::POST, "/api/v1/reload", &rebinding, &with),
            Some(StatusCode::MISDIRECTED_REQUEST)
        );
        let demo = "/api/v1/demo/servers/ex01/fail";
        assert_eq!(
            refused(&Method::POST, demo, &HeaderMap::new(), &with),
            Some(StatusCode::NOT_FOUND)
        );
        let demo_mode = Policy { demo: true, ..with };
        assert!(matches!(
            decide(&Method::POST, demo, &HeaderMap::new(), &demo_mode),
            Route::Demo { server, .. } if server == "ex01"
        ));
        // A peer's read of the raw checks needs the token, on GET.
        let raw = "/api/v1/cluster/checks";
        assert!(matches!(
            decide(&Method::GET, raw, &good, &with),
            Route::ClusterChecks
        ));
        assert_eq!(
            status_of(decide(&Method::GET, raw, &bad, &with)),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status_of(decide(&Method::GET, raw, &good, &without)),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status_of(decide(&Method::POST, raw, &good, &with)),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
    }
}
