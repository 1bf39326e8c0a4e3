//! `[redirect]`: the port 80 listener's settings (`crate::redirect` serves them).

use std::net::SocketAddr;

use serde::Deserialize;

use super::health::Cx;
use super::relay::{euid_is_root, overlaps, RelayDef};

/// `[redirect]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedirect {
    #[serde(default)]
    pub(crate) listen: Vec<toml::Spanned<String>>,
    pub(crate) host: Option<String>,
    pub(crate) root: Option<String>,
    pub(crate) autodiscover_host: Option<String>,
    #[serde(default)]
    pub(crate) accepted_domains: Vec<String>,
}

/// The validated port 80 settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectConfig {
    /// Listening addresses (empty: no port 80 listener).
    pub listen: Vec<SocketAddr>,
    /// Host of every `https://` target (None: the request's own Host).
    pub host: Option<String>,
    /// Where a request for `/` goes (`/owa`, say; None: `/`).
    pub root: Option<String>,
    /// Autodiscover redirect target host (None: no autodiscover redirect).
    pub autodiscover_host: Option<String>,
    /// Lowercase domains whose `autodiscover.<domain>` gets the autodiscover redirect.
    pub accepted_domains: Vec<String>,
}

/// The `[redirect]` table: its listeners must not collide with the relays' or DNS's.
pub(super) fn validate(
    cx: &mut Cx<'_>,
    raw: RawRedirect,
    relays: &[RelayDef],
    dns: &[SocketAddr],
) -> RedirectConfig {
    let mut listen = Vec::new();
    for l in &raw.listen {
        match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => {
                if let Some(r) = relays
                    .iter()
                    .find(|r| r.listen.iter().any(|y| overlaps(*y, a)))
                {
                    cx.error(
                        Some(l.span()),
                        format!(
                            "redirect.listen: {a} overlaps a listener of relay '{}'",
                            r.name
                        ),
                    );
                } else if dns.iter().any(|d| overlaps(*d, a)) {
                    cx.error(
                        Some(l.span()),
                        format!("redirect.listen: {a} overlaps the DNS listener"),
                    );
                } else {
                    if a.port() != 0 && a.port() < 1024 && !euid_is_root() {
                        cx.warn(
                            Some(l.span()),
                            format!(
                                "redirect.listen: port {} needs root or CAP_NET_BIND_SERVICE",
                                a.port()
                            ),
                        );
                    }
                    listen.push(a);
                }
            }
            Err(_) => cx.error(
                Some(l.span()),
                format!("redirect.listen: '{}' is not an address:port", l.get_ref()),
            ),
        }
    }
    let lower = |s: &String| s.trim_end_matches('.').to_ascii_lowercase();
    if raw.root.as_ref().is_some_and(|r| !r.starts_with('/')) {
        cx.error(
            None,
            "redirect.root must start with '/' (e.g. \"/owa\")".into(),
        );
    }
    if !raw.accepted_domains.is_empty() && raw.autodiscover_host.is_none() {
        cx.error(
            None,
            "redirect: accepted_domains needs autodiscover_host (where Outlook is sent)".into(),
        );
    }
    RedirectConfig {
        listen,
        host: raw.host.as_ref().map(lower),
        root: raw.root.clone(),
        autodiscover_host: raw.autodiscover_host.as_ref().map(lower),
        accepted_domains: raw.accepted_domains.iter().map(lower).collect(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{errors, has, valid};

    #[test]
    fn names_are_lowercase_without_the_final_dot() {
        let c = valid(concat!(
            "[redirect]\nlisten = [\"127.0.0.1:8080\"]\nhost = \"Mail.Z.test.\"\nroot = \"/owa\"\n",
            "autodiscover_host = \"Autodiscover.z.test\"\naccepted_domains = [\"Z.test.\"]\n",
        ));
        let r = &c.redirect;
        assert_eq!(r.listen, ["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(r.host.as_deref(), Some("mail.z.test"));
        assert_eq!(r.root.as_deref(), Some("/owa"));
        assert_eq!(r.autodiscover_host.as_deref(), Some("autodiscover.z.test"));
        assert_eq!(r.accepted_domains, ["z.test"]);
    }

    #[test]
    fn no_redirect_by_default() {
        assert!(valid("").redirect.listen.is_empty());
    }

    #[test]
    fn errors_name_the_line_or_the_table() {
        let e = errors(concat!(
            "[redirect]\nlisten = [\"127.0.0.1:5353\", \"port80\"]\nroot = \"owa\"\n",
            "accepted_domains = [\"z.test\"]\n",
        ));
        assert!(
            has(
                &e,
                5,
                "redirect.listen: 127.0.0.1:5353 overlaps the DNS listener"
            ),
            "{e:?}"
        );
        assert!(
            has(&e, 5, "redirect.listen: 'port80' is not an address:port"),
            "{e:?}"
        );
        let whole = |text: &str| e.iter().any(|(l, m)| l.is_none() && m.contains(text));
        assert!(whole("redirect.root must start with '/'"), "{e:?}");
        assert!(whole("accepted_domains needs autodiscover_host"), "{e:?}");
    }
}
