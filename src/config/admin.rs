//! `[admin]`: the dashboard, API and metrics listener, its bearer token and the admin state file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::health::Cx;
use super::relay::{overlaps, RelayDef};

/// The port the admin listener binds on 127.0.0.1 when the config does not say.
const DEFAULT_PORT: u16 = 8053;
/// The admin state file's name, next to the config, when the config does not say.
pub const DEFAULT_STATE_FILE: &str = "admin-state.json";

/// `[admin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    /// Listening address.
    listen: Option<Spanned<String>>,
    /// File holding the bearer token of admin actions.
    token_file: Option<Spanned<String>>,
    /// File keeping admin states across restarts.
    state_file: Option<Spanned<String>>,
    /// Host names the dashboard may be reached by, besides loopback names and addresses.
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
}

/// The validated `[admin]`.
#[derive(Clone)]
pub struct AdminConfig {
    /// Listening address.
    pub listen: SocketAddr,
    /// The token file, if any.
    pub token_file: Option<PathBuf>,
    /// The bearer token read from it (None: admin actions are disabled).
    pub token: Option<String>,
    /// Where admin states set through the API are kept.
    pub state_file: PathBuf,
    /// Host names accepted in the Host header besides `localhost` and IP addresses
    /// (lowercase, no port): a page that rebinds another name to this address is refused.
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token_file", &self.token_file)
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

/// Validates `[admin]`: the address parses and collides with no other listener; off loopback a
/// token file is required (the dashboard names every server and address); the token file is
/// readable, not empty, and not readable by others.
pub(super) fn validate(
    cx: &mut Cx<'_>,
    raw: RawAdmin,
    relays: &[RelayDef],
    dns: &[SocketAddr],
    redirect: &[SocketAddr],
) -> AdminConfig {
    let base = cx.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let default = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, DEFAULT_PORT));
    let listen = match &raw.listen {
        None => default,
        Some(l) => match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                cx.error(
                    Some(l.span()),
                    format!(
                        "admin.listen: '{}' is not an address:port (e.g. \"127.0.0.1:8053\")",
                        l.get_ref()
                    ),
                );
                default
            }
        },
    };
    let span = raw.listen.as_ref().map(Spanned::span);
    if let Some(r) = relays
        .iter()
        .find(|r| r.listen.iter().any(|y| overlaps(*y, listen)))
    {
        cx.error(
            span.clone(),
            format!(
                "admin.listen: {listen} overlaps a listener of relay '{}'",
                r.name
            ),
        );
    } else if dns.iter().chain(redirect).any(|d| overlaps(*d, listen)) {
        cx.error(
            span.clone(),
            format!("admin.listen: {listen} overlaps the DNS or redirect listener"),
        );
    }
    let mut token = None;
    let token_file = raw.token_file.as_ref().map(|t| base.join(t.get_ref()));
    if let (Some(t), Some(file)) = (&raw.token_file, &token_file) {
        match super::edge::read_secret(file) {
            Err(e) => cx.error(Some(t.span()), format!("admin.token_file: {e}")),
            Ok(text) if text.trim().is_empty() => cx.error(
                Some(t.span()),
                format!("admin.token_file: {} is empty", file.display()),
            ),
            Ok(text) => token = Some(text.trim().to_string()),
        }
    }
    if !listen.ip().is_loopback() && raw.token_file.is_none() {
        cx.error(
            span,
            format!(
                "admin.listen: {listen} is not a loopback address; set admin.token_file first \
                 (the dashboard shows every server and admin actions must need a token)"
            ),
        );
    }
    let state_file = base.join(
        raw.state_file
            .as_ref()
            .map_or(DEFAULT_STATE_FILE, |s| s.get_ref().as_str()),
    );
    let mut hosts = Vec::new();
    for h in &raw.hosts {
        let name = h.get_ref().trim_end_matches('.').to_ascii_lowercase();
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if ok {
            hosts.push(name);
        } else {
            cx.error(
                Some(h.span()),
                format!(
                    "admin.hosts: '{}' is not a host name (e.g. \"mailns1.mail.example.test\"; no port, no scheme)",
                    h.get_ref()
                ),
            );
        }
    }
    AdminConfig {
        listen,
        token_file,
        token,
        state_file,
        hosts,
    }
}
