//! `[dns.rrl]` and `[dns.cookies]`: what protects the DNS listener on the internet edge, and
//! the secret files every table reads (mode-checked here, once).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::health::Cx;

/// `[dns.rrl]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRrl {
    /// On by default.
    enabled: Option<bool>,
    /// Responses per second per (client prefix, class, name).
    rate: Option<Spanned<u32>>,
    /// Every Nth limited response goes out truncated; 0 drops them all.
    slip: Option<Spanned<u32>>,
    /// Sources never limited.
    exempt: Option<Vec<Spanned<String>>>,
    /// Buckets at most.
    table_size: Option<Spanned<usize>>,
}

/// `[dns.cookies]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCookies {
    /// On by default.
    enabled: Option<bool>,
    /// A file holding the 16-byte secret, hex: the same on every node of a namespace.
    secret_file: Option<Spanned<String>>,
    /// The secret before a rotation, still accepted.
    previous_secret_file: Option<Spanned<String>>,
}

/// Response rate limiting (see `dns::rrl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlConfig {
    /// Responses per second per bucket.
    pub rate: u32,
    /// Every `slip`-th limited response goes out truncated; 0: none.
    pub slip: u32,
    /// Prefix length that makes one IPv4 client.
    pub ipv4_prefix: u8,
    /// Prefix length that makes one IPv6 client.
    pub ipv6_prefix: u8,
    /// Sources never limited.
    pub exempt: Vec<IpNet>,
    /// Buckets at most (rounded up to a power of two).
    pub table_size: usize,
}

impl Default for RrlConfig {
    fn default() -> Self {
        Self {
            // NSD's default rrl-ratelimit, and NSD's and BIND's slip.
            rate: 200,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            // A spoofed loopback source cannot arrive from the network.
            exempt: loopback(),
            table_size: 1 << 19,
        }
    }
}

/// 127.0.0.0/8 and ::1.
pub fn loopback() -> Vec<IpNet> {
    let v4 = ipnet::Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).map(IpNet::V4);
    let v6 = ipnet::Ipv6Net::new(Ipv6Addr::LOCALHOST, 128).map(IpNet::V6);
    [v4, v6].into_iter().flatten().collect()
}

/// DNS cookie secrets as configured.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct CookieConfig {
    /// Cookies are answered and honoured.
    pub enabled: bool,
    /// The shared secret; None: one made at random when the process starts.
    pub secret: Option<[u8; 16]>,
    /// The previous secret, accepted during a rotation.
    pub previous: Option<[u8; 16]>,
}

impl std::fmt::Debug for CookieConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.debug_struct("CookieConfig")
            .field("enabled", &self.enabled)
            .field("secret", &self.secret.is_some())
            .field("previous", &self.previous.is_some())
            .finish()
    }
}

/// The `[dns]` keys of the edge, as written.
pub(super) struct RawDnsEdge {
    pub(super) tcp_max_per_client: Option<Spanned<usize>>,
    pub(super) tcp_io_timeout: Option<Spanned<String>>,
    pub(super) client_ipv4_prefix: Option<Spanned<u8>>,
    pub(super) client_ipv6_prefix: Option<Spanned<u8>>,
    pub(super) rrl: RawRrl,
    pub(super) cookies: RawCookies,
}

/// The `[dns]` keys of the edge, validated.
pub(super) struct DnsEdge {
    pub(super) tcp_max_per_client: usize,
    pub(super) tcp_io_timeout: std::time::Duration,
    pub(super) client_prefixes: (u8, u8),
    pub(super) rrl: Option<RrlConfig>,
    pub(super) cookies: CookieConfig,
}

/// Validates the edge keys of `[dns]`; `tcp_max` is `dns.tcp_max_connections`.
pub(super) fn dns_edge(cx: &mut Cx<'_>, raw: RawDnsEdge, tcp_max: usize, base: &Path) -> DnsEdge {
    let mut prefix = |v: Option<Spanned<u8>>, key: &str, max: u8, default: u8| match v {
        Some(p) if !(8..=max).contains(p.get_ref()) => {
            cx.error(
                Some(p.span()),
                format!(
                    "dns.{key}: {} is not a prefix length from 8 to {max}",
                    p.get_ref()
                ),
            );
            default
        }
        Some(p) => *p.get_ref(),
        None => default,
    };
    let v4 = prefix(raw.client_ipv4_prefix, "client_ipv4_prefix", 32, 24);
    let v6 = prefix(raw.client_ipv6_prefix, "client_ipv6_prefix", 128, 56);
    // Knot's tcp-max-clients is global only; one client prefix gets a sixteenth by default,
    // so at least sixteen prefixes are needed to fill the listener.
    let per_client = match raw.tcp_max_per_client {
        Some(n) if *n.get_ref() == 0 || *n.get_ref() > tcp_max => {
            cx.error(
                Some(n.span()),
                format!(
                    "dns.tcp_max_per_client: {} is not between 1 and dns.tcp_max_connections ({tcp_max})",
                    n.get_ref()
                ),
            );
            tcp_max
        }
        Some(n) => *n.get_ref(),
        None => (tcp_max / 16).max(1),
    };
    DnsEdge {
        tcp_max_per_client: per_client,
        tcp_io_timeout: cx.duration(
            &raw.tcp_io_timeout,
            "dns.tcp_io_timeout",
            std::time::Duration::from_secs(2),
        ),
        client_prefixes: (v4, v6),
        rrl: rrl(cx, raw.rrl, (v4, v6)),
        cookies: cookies(cx, raw.cookies, base),
    }
}

/// Validates `[dns.rrl]`; None when it is switched off.
fn rrl(cx: &mut Cx<'_>, raw: RawRrl, prefixes: (u8, u8)) -> Option<RrlConfig> {
    let d = RrlConfig::default();
    let rate = match raw.rate {
        Some(r) if *r.get_ref() == 0 => {
            cx.error(
                Some(r.span()),
                "dns.rrl.rate: must be at least 1 response a second (set enabled = false to switch rate limiting off)".into(),
            );
            d.rate
        }
        Some(r) => *r.get_ref(),
        None => d.rate,
    };
    let table_size = match raw.table_size {
        Some(t) if !(1024..=1 << 26).contains(t.get_ref()) => {
            cx.error(
                Some(t.span()),
                format!(
                    "dns.rrl.table_size: {} is not between 1024 and 67108864",
                    t.get_ref()
                ),
            );
            d.table_size
        }
        Some(t) => *t.get_ref(),
        None => d.table_size,
    };
    let exempt = match raw.exempt {
        None => d.exempt,
        Some(list) => list
            .iter()
            .filter_map(|e| network(cx, e, "dns.rrl.exempt"))
            .collect(),
    };
    let settings = RrlConfig {
        rate,
        slip: raw.slip.map_or(d.slip, |s| *s.get_ref()),
        ipv4_prefix: prefixes.0,
        ipv6_prefix: prefixes.1,
        exempt,
        table_size,
    };
    raw.enabled.unwrap_or(true).then_some(settings)
}

/// Validates `[dns.cookies]`; `base` is the config's folder.
fn cookies(cx: &mut Cx<'_>, raw: RawCookies, base: &Path) -> CookieConfig {
    let mut read = |f: &Option<Spanned<String>>, key: &str| -> Option<[u8; 16]> {
        let f = f.as_ref()?;
        let file = base.join(f.get_ref());
        let text = match read_secret(&file) {
            Ok(t) => t,
            Err(e) => {
                cx.error(Some(f.span()), format!("dns.cookies.{key}: {e}"));
                return None;
            }
        };
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.trim().as_bytes())
            .ok()
            .and_then(|b| <[u8; 16]>::try_from(b).ok());
        if bytes.is_none() {
            cx.error(
                Some(f.span()),
                format!(
                    "dns.cookies.{key}: {} does not hold 16 bytes in hex (32 hex digits; e.g. from `openssl rand -hex 16`)",
                    file.display()
                ),
            );
        }
        bytes
    };
    let secret = read(&raw.secret_file, "secret_file");
    let previous = read(&raw.previous_secret_file, "previous_secret_file");
    if previous.is_some() && raw.secret_file.is_none() {
        if let Some(p) = &raw.previous_secret_file {
            cx.error(
                Some(p.span()),
                "dns.cookies.previous_secret_file: needs secret_file (the secret now in force)"
                    .into(),
            );
        }
    }
    CookieConfig {
        enabled: raw.enabled.unwrap_or(true),
        secret,
        previous,
    }
}

/// An address or network (`127.0.0.1`, `198.18.0.0/15`, `::1`), or None with an error.
pub(super) fn network(cx: &mut Cx<'_>, s: &Spanned<String>, key: &str) -> Option<IpNet> {
    let text = s.get_ref();
    let net = text
        .parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
    match net {
        Ok(n) => Some(n),
        Err(_) => {
            cx.error(
                Some(s.span()),
                format!("{key}: '{text}' is not an address or network (e.g. \"127.0.0.1\", \"198.18.0.0/15\", \"::1\")"),
            );
            None
        }
    }
}

/// Reads a file that holds a secret (a token, a TSIG or cookie secret). Refuses one that
/// other users can read or write: a secret anyone on the host can read protects nothing.
///
/// # Errors
/// The reason, naming the file: unreadable, or its mode.
pub(crate) fn read_secret(file: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mode = std::fs::metadata(file).map_or(0, |m| m.permissions().mode());
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} can be read or written by other users (mode {:o}); chmod 600 it",
            file.display(),
            mode & 0o777
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn secret_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_secret(&f).unwrap_err();
        assert!(e.contains("mode 640") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&f).unwrap(), "x");
        assert!(read_secret(&dir.path().join("none"))
            .unwrap_err()
            .contains("cannot read"));
    }

    #[test]
    fn defaults_follow_nsd() {
        let d = RrlConfig::default();
        assert_eq!(
            (d.rate, d.slip, d.ipv4_prefix, d.ipv6_prefix),
            (200, 2, 24, 56)
        );
        assert_eq!(d.exempt.len(), 2);
    }
}
