//! `[admin]`: the dashboard, API and metrics listener, its bearer token and the admin state file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// PEM certificate chain: the listener speaks HTTPS (peers off loopback need it).
    tls_cert: Option<Spanned<String>>,
    /// Its PEM private key.
    tls_key: Option<Spanned<String>>,
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
    /// HTTPS: the server config from `tls_cert` and `tls_key`, read when the config is (so a
    /// reload picks up a renewed certificate, and a broken one fails the reload). None: HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token_file", &self.token_file)
            .field("state_file", &self.state_file)
            .field("tls", &self.tls.is_some())
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
    let listen = admin_listen(cx, &raw, relays, dns, redirect);
    let token_file = raw.token_file.as_ref().map(|t| base.join(t.get_ref()));
    let token = match (&raw.token_file, &token_file) {
        (Some(t), Some(file)) => read_token(cx, t, file),
        _ => None,
    };
    if !listen.ip().is_loopback() && raw.token_file.is_none() {
        cx.error(
            raw.listen.as_ref().map(Spanned::span),
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
    let hosts = admin_hosts(cx, &raw.hosts);
    let tls = admin_tls(cx, &raw, &base);
    AdminConfig {
        listen,
        token_file,
        token,
        state_file,
        hosts,
        tls,
    }
}

/// `admin.tls_cert` and `admin.tls_key`: both or neither; loaded now, so that a broken file is
/// an error with its name.
fn admin_tls(cx: &mut Cx<'_>, raw: &RawAdmin, base: &Path) -> Option<Arc<rustls::ServerConfig>> {
    let (cert, key) = match (&raw.tls_cert, &raw.tls_key) {
        (None, None) => return None,
        (Some(c), Some(k)) => (c, k),
        (Some(one), None) | (None, Some(one)) => {
            cx.error(
                Some(one.span()),
                "admin: tls_cert and tls_key go together (a PEM chain and its key)".into(),
            );
            return None;
        }
    };
    let loaded = crate::tls::load(&base.join(cert.get_ref()), &base.join(key.get_ref()));
    let set = loaded.map(|c| crate::tls::CertSet::new(vec![c]));
    match set.and_then(|set| {
        crate::tls::server_config(Arc::new(crate::tls::Resolver(
            arc_swap::ArcSwap::from_pointee(set),
        )))
    }) {
        Ok(cfg) => Some(cfg),
        Err(e) => {
            cx.error(Some(cert.span()), format!("admin.tls_cert: {e}"));
            None
        }
    }
}

/// Where the admin listener is when `admin.listen` is left out: 127.0.0.1:8053.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, DEFAULT_PORT))
}

/// `admin.listen` (127.0.0.1:8053 by default), colliding with no relay, DNS or redirect listener.
fn admin_listen(
    cx: &mut Cx<'_>,
    raw: &RawAdmin,
    relays: &[RelayDef],
    dns: &[SocketAddr],
    redirect: &[SocketAddr],
) -> SocketAddr {
    let default = default_listen();
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
            span,
            format!(
                "admin.listen: {listen} overlaps a listener of relay '{}'",
                r.name
            ),
        );
    } else if dns.iter().chain(redirect).any(|d| overlaps(*d, listen)) {
        cx.error(
            span,
            format!("admin.listen: {listen} overlaps the DNS or redirect listener"),
        );
    }
    listen
}

/// The bearer token from `file` (None, reported, when it cannot be read or is empty).
fn read_token(cx: &mut Cx<'_>, key: &Spanned<String>, file: &Path) -> Option<String> {
    match super::edge::read_secret(file) {
        Err(e) => {
            cx.error(Some(key.span()), format!("admin.token_file: {e}"));
            None
        }
        Ok(text) if text.trim().is_empty() => {
            cx.error(
                Some(key.span()),
                format!("admin.token_file: {} is empty", file.display()),
            );
            None
        }
        Ok(text) => Some(text.trim().to_string()),
    }
}

/// `admin.hosts`: lowercase host names without the final dot.
fn admin_hosts(cx: &mut Cx<'_>, raw: &[Spanned<String>]) -> Vec<String> {
    let mut hosts = Vec::new();
    for h in raw {
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
    hosts
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::config::testing::{errors, has, valid};

    #[test]
    fn defaults() {
        let a = valid("").admin;
        assert_eq!(a.listen, "127.0.0.1:8053".parse().unwrap());
        assert_eq!(
            a.state_file,
            Path::new("/cfg/admin-state.json"),
            "next to the config"
        );
        assert!(a.token.is_none() && a.token_file.is_none() && a.hosts.is_empty());
    }

    #[test]
    fn the_token_is_read_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let a = valid(&format!(
            "[admin]\ntoken_file = \"{}\"\nhosts = [\"Mailns1.Z.test.\"]\n",
            file.display()
        ))
        .admin;
        assert_eq!(a.token.as_deref(), Some("s3cret"));
        assert_eq!(a.hosts, ["mailns1.z.test"]);
        assert!(
            !format!("{a:?}").contains("s3cret"),
            "Debug never prints the token"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = errors(concat!(
            "[admin]\nlisten = \"127.0.0.1:5353\"\ntoken_file = \"/nonexistent/token\"\n",
            "hosts = [\"https://x.test\"]\n",
        ));
        assert!(has(&e, 5, "overlaps the DNS or redirect listener"), "{e:?}");
        assert!(has(&e, 6, "admin.token_file:"), "{e:?}");
        assert!(
            has(&e, 7, "admin.hosts: 'https://x.test' is not a host name"),
            "{e:?}"
        );
        let e = errors("[admin]\nlisten = \"[::]:9053\"\n");
        assert!(
            has(
                &e,
                5,
                "is not a loopback address; set admin.token_file first"
            ),
            "{e:?}"
        );
        let e = errors("[admin]\nlisten = \"localhost\"\n");
        assert!(
            has(&e, 5, "admin.listen: 'localhost' is not an address:port"),
            "{e:?}"
        );
    }
}
