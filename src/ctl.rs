//! `mailns ctl`: the admin API from a shell, as `knotc`, `rndc` or HAProxy's runtime API are.
//!
//! It speaks HTTP/1.1 to the admin listener (address and token from the config, or flags and
//! `MAILNS_TOKEN`; the token never on the command line). What it prints is built by pure
//! functions from the API's JSON, so the tables are unit-tested without a server.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::{Method, StatusCode};
use rustls::pki_types::ServerName;
use serde_json::Value;

/// Time allowed for connecting and for each answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How often `--wait` looks at the relayed sessions.
const POLL: Duration = Duration::from_millis(500);

/// Where the admin API is, and the bearer token of admin actions.
#[derive(Clone)]
pub struct Target {
    /// The admin listener.
    pub addr: SocketAddr,
    /// The bearer token (from the token file or `MAILNS_TOKEN`).
    pub token: Option<String>,
    /// The listener speaks HTTPS (`admin.tls_cert` is set).
    pub tls: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The admin listener and token a config names, read without validating the rest: `ctl reload`
/// must work while the file is broken, since that is when its error is wanted. Defaults as
/// `[admin]`'s ([`crate::config::admin::default_listen`]), no token.
///
/// # Errors
/// The file cannot be read, is not TOML, or names a token file that cannot be read.
pub fn target_of_config(path: &std::path::Path) -> Result<Target, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("{}: {}", path.display(), e.message()))?;
    let admin = doc.get("admin").and_then(toml::Value::as_table);
    let addr = match admin
        .and_then(|a| a.get("listen"))
        .and_then(toml::Value::as_str)
    {
        None => crate::config::admin::default_listen(),
        Some(listen) => listen.parse().map_err(|_| {
            format!(
                "{}: admin.listen '{listen}' is not an address:port",
                path.display()
            )
        })?,
    };
    let token = match admin
        .and_then(|a| a.get("token_file"))
        .and_then(toml::Value::as_str)
    {
        None => None,
        Some(f) => {
            let file = path.parent().unwrap_or(std::path::Path::new(".")).join(f);
            let t = std::fs::read_to_string(&file)
                .map_err(|e| format!("admin.token_file {}: {e}", file.display()))?;
            Some(t.trim().to_string()).filter(|t| !t.is_empty())
        }
    };
    let tls = admin.is_some_and(|a| a.contains_key("tls_cert"));
    Ok(Target { addr, token, tls })
}

/// Why a command failed, in words an admin can act on.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Nothing accepts connections at the address.
    #[error("mailns is not running at {addr} (or its admin listener is elsewhere): {source}")]
    NotRunning {
        /// The address tried.
        addr: SocketAddr,
        /// The connect error.
        source: std::io::Error,
    },
    /// Something answered, but not mailns's admin API.
    #[error("{addr} does not answer like mailns's admin listener: {detail}")]
    NotMailns {
        /// The address tried.
        addr: SocketAddr,
        /// What was wrong.
        detail: String,
    },
    /// The token is missing or wrong (401).
    #[error(
        "the admin token is missing or wrong (set admin.token_file in the config, or MAILNS_TOKEN)"
    )]
    Unauthorized,
    /// The API refused, with its message (403 admin actions disabled, 404 unknown server...).
    #[error("{status}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's error message.
        message: String,
    },
    /// `--wait` ran out of time.
    #[error("{server} still has {active} relayed session(s) after {waited:?}")]
    StillActive {
        /// The server.
        server: String,
        /// Its open sessions.
        active: u64,
        /// How long it waited.
        waited: Duration,
    },
}

/// One request to the admin API: the JSON answer of a 2xx, or the error.
///
/// # Errors
/// See [`CtlError`].
pub async fn request(
    target: &Target,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> Result<Value, CtlError> {
    let addr = target.addr;
    let not_mailns = |detail: String| CtlError::NotMailns { addr, detail };
    let tls = match target.tls {
        false => None,
        // Its own node, at the address its own config names: nothing to verify it against.
        true => Some(crate::httpclient::Tls {
            config: crate::tls::client::config(&crate::tls::client::TlsCheck {
                verify: false,
                ca_file: None,
            })
            .map_err(|e| not_mailns(e.to_string()))?,
            name: ServerName::IpAddress(addr.ip().into()),
        }),
    };
    let host = addr.to_string();
    let call = crate::httpclient::Call {
        method: &method,
        path,
        host: &host,
        token: target.token.as_deref(),
        body,
        timeout: TIMEOUT,
    };
    let (status, bytes) = match crate::httpclient::request(addr, tls.as_ref(), call).await {
        Ok(answer) => answer,
        Err(crate::httpclient::ClientError::Connect(source)) => {
            return Err(CtlError::NotRunning { addr, source })
        }
        Err(e) => return Err(not_mailns(e.to_string())),
    };
    let json: Option<Value> = serde_json::from_slice(&bytes).ok();
    match (status, json) {
        (s, Some(v)) if s.is_success() => Ok(v),
        (StatusCode::UNAUTHORIZED, _) => Err(CtlError::Unauthorized),
        (s, Some(v)) if v.get("error").is_some() => Err(CtlError::Api {
            status: s.as_u16(),
            message: v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        }),
        (s, _) => Err(not_mailns(format!("HTTP {s} without mailns's JSON"))),
    }
}

/// `status`: the status document.
///
/// # Errors
/// See [`CtlError`].
pub async fn status(target: &Target) -> Result<Value, CtlError> {
    request(target, Method::GET, "/api/v1/status", None).await
}

/// `reload`: asks mailns to reload; the API's error (`path:line: ...`) on failure.
///
/// # Errors
/// See [`CtlError`].
pub async fn reload(target: &Target) -> Result<(), CtlError> {
    request(target, Method::POST, "/api/v1/reload", None)
        .await
        .map(|_| ())
}

/// `drain`, `ready`, `maint`: sets `server`'s admin state. With `wait`, then waits (at most that
/// long) until the server's relayed sessions reach 0, telling `progress` each new count.
///
/// # Errors
/// See [`CtlError`]; [`CtlError::StillActive`] when the wait runs out.
pub async fn set_state(
    target: &Target,
    server: &str,
    state: &str,
    wait: Option<Duration>,
    mut progress: impl FnMut(u64),
) -> Result<(), CtlError> {
    let path = format!("/api/v1/servers/{server}/state");
    request(target, Method::POST, &path, Some(state)).await?;
    let Some(limit) = wait else {
        return Ok(());
    };
    let start = tokio::time::Instant::now();
    let mut last = None;
    loop {
        let active = active_sessions(&status(target).await?, server);
        if last != Some(active) {
            progress(active);
            last = Some(active);
        }
        if active == 0 {
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(CtlError::StillActive {
                server: server.to_string(),
                active,
                waited: start.elapsed(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The relayed sessions open to `server`, over every relay.
pub fn active_sessions(doc: &Value, server: &str) -> u64 {
    list(doc, "relays")
        .iter()
        .flat_map(|r| list(r, "servers"))
        .filter(|b| b["name"] == server)
        .map(|b| b["active"].as_u64().unwrap_or(0))
        .sum()
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Rows as aligned columns, the header first.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect(), &mut out);
    for r in rows {
        line(r.clone(), &mut out);
    }
    out
}

/// `status` as terminal tables: servers × checks, service names, relays, reload state.
pub fn render_status(doc: &Value) -> String {
    let mut out = String::new();
    let mut rows = Vec::new();
    for s in list(doc, "servers") {
        let checks = list(s, "checks");
        if checks.is_empty() {
            rows.push(vec![
                text(&s["name"]),
                text(&s["state"]),
                text(&s["admin"]),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for (i, c) in checks.iter().enumerate() {
            let first = i == 0;
            let latency = c["latency_ms"]
                .as_f64()
                .map_or("-".into(), |l| format!("{l:.1} ms"));
            let result = match c["error"].as_str() {
                Some(e) if !e.is_empty() => e.to_string(),
                _ => "ok".into(),
            };
            rows.push(vec![
                if first {
                    text(&s["name"])
                } else {
                    String::new()
                },
                if first {
                    text(&s["state"])
                } else {
                    String::new()
                },
                if first {
                    text(&s["admin"])
                } else {
                    String::new()
                },
                format!(
                    "{} {}:{}",
                    text(&c["check"]),
                    text(&c["address"]),
                    text(&c["port"])
                ),
                text(&c["status"]),
                text(&c["since"]),
                latency,
                result,
            ]);
        }
    }
    out.push_str(&table(
        &[
            "SERVER",
            "STATE",
            "ADMIN",
            "CHECK",
            "STATUS",
            "SINCE",
            "LATENCY",
            "LAST RESULT",
        ],
        &rows,
    ));
    let split = list(doc, "views").len() > 1;
    let mut rows = Vec::new();
    for v in list(doc, "services") {
        for (t, a) in [("A", &v["a"]), ("AAAA", &v["aaaa"])] {
            if a.is_null() {
                continue;
            }
            let answer: Vec<String> = list(a, "answer").iter().map(text).collect();
            let views: Vec<String> = list(v, "views").iter().map(text).collect();
            let mut row = vec![text(&v["name"])];
            if split {
                row.push(views.join(","));
            }
            row.extend([
                t.to_string(),
                text(&a["step"]),
                if answer.is_empty() {
                    "(no addresses)".into()
                } else {
                    answer.join(" ")
                },
            ]);
            rows.push(row);
        }
    }
    out.push('\n');
    let header: &[&str] = if split {
        &["NAME", "VIEW", "TYPE", "STEP", "ANSWER"]
    } else {
        &["NAME", "TYPE", "STEP", "ANSWER"]
    };
    out.push_str(&table(header, &rows));
    let mut rows = Vec::new();
    for r in list(doc, "relays") {
        for b in list(r, "servers") {
            rows.push(vec![
                text(&r["name"]),
                text(&b["name"]),
                text(&b["address"]),
                if b["usable"] == true { "yes" } else { "no" }.into(),
                text(&b["active"]),
                text(&b["total"]),
                text(&b["failed_connects"]),
            ]);
        }
    }
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &[
                "RELAY", "SERVER", "ADDRESS", "USABLE", "ACTIVE", "TOTAL", "FAILED",
            ],
            &rows,
        ));
    }
    let config = &doc["config"];
    let _ = write!(
        out,
        "\nconfig {} loaded {} ({} reloads); ready: {}\n",
        text(&config["file"]),
        text(&config["loaded_at"]),
        text(&config["reloads"]),
        text(&doc["ready"]),
    );
    if let Some(e) = config["last_reload_error"].as_object() {
        let _ = writeln!(
            out,
            "last reload FAILED at {}:\n{}",
            text(&e["at"].clone()),
            text(&e["message"].clone())
        );
    }
    out
}

/// `transitions [SERVER]`: the last transitions, newest first, of one server or all.
pub fn render_transitions(doc: &Value, server: Option<&str>) -> String {
    let rows: Vec<Vec<String>> = list(doc, "transitions")
        .iter()
        .filter(|t| server.is_none_or(|s| t["server"] == s))
        .map(|t| {
            vec![
                text(&t["at"]),
                text(&t["kind"]),
                text(&t["server"]),
                text(&t["what"]),
                format!("{} -> {}", text(&t["from"]), text(&t["to"])),
                text(&t["detail"]),
                text(&t["by"]),
            ]
        })
        .collect();
    table(
        &["AT", "KIND", "SERVER", "WHAT", "CHANGE", "DETAIL", "BY"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_json::json!({
            "ready": true,
            "config": { "file": "/etc/mailns/mailns.toml", "loaded_at": "2026-12-02T18:00:00Z", "reloads": 2,
                        "last_reload_error": { "at": "2026-12-02T18:05:00Z", "message": "/etc/mailns/mailns.toml:7: bad" } },
            "views": [ { "name": "default" } ],
            "servers": [
                { "name": "cas01", "state": "down", "admin": "ready", "checks": [
                    { "check": "owa", "address": "127.0.1.1", "port": 443, "status": "down",
                      "since": "2026-12-02T18:01:00Z", "latency_ms": 1.25, "error": "HTTP 503" },
                    { "check": "smtp", "address": "127.0.1.1", "port": 25, "status": "up",
                      "since": null, "latency_ms": null, "error": null } ] },
                { "name": "cas02", "state": "drain", "admin": "drain", "checks": [] } ],
            "services": [ { "name": "owa.mail.test.", "views": ["default"], "a": { "step": "healthy", "answer": ["127.0.1.2"] }, "aaaa": null } ],
            "relays": [ { "name": "rpc", "servers": [
                { "name": "cas02", "address": "127.0.1.2", "usable": false, "active": 3, "total": 9, "failed_connects": 0 } ] },
                        { "name": "smtp", "servers": [
                { "name": "cas02", "address": "127.0.1.2", "usable": false, "active": 1, "total": 1, "failed_connects": 0 } ] } ],
            "transitions": [
                { "at": "t2", "server": "cas01", "what": "owa", "from": "up", "to": "down", "detail": "HTTP 503" },
                { "at": "t1", "server": "cas02", "what": "admin", "from": "ready", "to": "drain", "detail": "" } ]
        })
    }

    #[test]
    fn status_tables() {
        let out = render_status(&doc());
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("SERVER  STATE  ADMIN  CHECK"), "{out}");
        assert!(
            lines[1].contains("cas01")
                && lines[1].contains("owa 127.0.1.1:443")
                && lines[1].contains("1.2 ms")
                && lines[1].ends_with("HTTP 503"),
            "{out}"
        );
        assert!(
            lines[2].trim_start().starts_with("smtp 127.0.1.1:25") && lines[2].ends_with("ok"),
            "{out}"
        );
        assert!(
            out.contains("owa.mail.test.  A     healthy  127.0.1.2"),
            "{out}"
        );
        assert!(out.contains("rpc    cas02   127.0.1.2  no      3"), "{out}");
        assert!(
            out.contains(
                "last reload FAILED at 2026-12-02T18:05:00Z:\n/etc/mailns/mailns.toml:7: bad"
            ),
            "{out}"
        );
    }

    #[test]
    fn sessions_and_history() {
        assert_eq!(active_sessions(&doc(), "cas02"), 4, "over every relay");
        assert_eq!(active_sessions(&doc(), "cas01"), 0);
        let h = render_transitions(&doc(), Some("cas02"));
        assert_eq!(h.lines().count(), 2, "{h}");
        assert!(h.contains("ready -> drain"));
        assert_eq!(render_transitions(&doc(), None).lines().count(), 3);
    }
}
