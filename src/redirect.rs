//! The port 80 listener every Exchange namespace needs: `http://` requests are sent to `https://`,
//! and Outlook's autodiscover HTTP redirect method is answered for each accepted domain.
//!
//! No request body is ever read: the answer depends only on the method, the Host and the path.
//! The decision is a pure function; the listener around it is hyper.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::redirect::RedirectConfig;

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// 301, 302, 400 or 405.
    pub status: u16,
    /// The Location header, for redirects.
    pub location: Option<String>,
}

/// The answer to `method` for `host` (the Host header, None if absent) and `target` (path and
/// query as sent). Pure.
pub fn decide(cfg: &RedirectConfig, method: &str, host: Option<&str>, target: &str) -> Answer {
    let bad = Answer {
        status: 400,
        location: None,
    };
    if method != "GET" && method != "HEAD" {
        return Answer {
            status: 405,
            location: None,
        };
    }
    // The Host without its port; it must be a plain host name or address.
    let Some(host) = host.map(|h| h.trim().to_ascii_lowercase()) else {
        return bad;
    };
    let bare = match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host.as_str(),
    }
    .trim_end_matches('.');
    let host_ok = !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    // A target is what hyper parsed from the request line; one with a control character or a
    // space is refused here too, so no caller can put a CR or LF into the Location header.
    let target_ok =
        target.starts_with('/') && !target.bytes().any(|b| b.is_ascii_control() || b == b' ');
    if !host_ok || !target_ok {
        return bad;
    }
    let path = target.split('?').next().unwrap_or(target);
    if let Some(ad) = &cfg.autodiscover_host {
        let domain = bare.strip_prefix("autodiscover.");
        if path.eq_ignore_ascii_case("/autodiscover/autodiscover.xml")
            && domain.is_some_and(|d| cfg.accepted_domains.iter().any(|a| a == d))
        {
            return Answer {
                status: 302,
                location: Some(format!("https://{ad}/Autodiscover/Autodiscover.xml")),
            };
        }
    }
    let to_host = cfg.host.as_deref().unwrap_or(bare);
    let to_path = match (&cfg.root, target) {
        (Some(root), "/") => root.as_str(),
        _ => target,
    };
    Answer {
        status: 301,
        location: Some(format!("https://{to_host}{to_path}")),
    }
}

/// Open port-80 connections at most.
const MAX_CONNECTIONS: usize = 1024;
/// Open port-80 connections per client prefix at most.
const MAX_PER_CLIENT: usize = 64;

/// Serves `listener` until `token` is cancelled: one request per connection, capped per client
/// prefix and in total, with short timeouts, since all it ever sends is a redirect.
pub async fn serve(
    listener: TcpListener,
    cfg: Arc<arc_swap::ArcSwap<RedirectConfig>>,
    token: CancellationToken,
) {
    let slots = crate::limits::Slots::new(crate::limits::Caps {
        total: MAX_CONNECTIONS,
        per_client: MAX_PER_CLIENT,
        ipv4_prefix: 24,
        ipv6_prefix: 56,
    });
    let limits = crate::httpconn::Limits {
        header_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        write_timeout: Duration::from_secs(5),
        keep_alive: false,
    };
    let handler = move |req: Request<Incoming>, _peer| {
        // The settings in force now (a reload swaps them).
        let cfg = cfg.load_full();
        async move { respond(&cfg, &req) }
    };
    crate::httpconn::serve("redirect", listener, slots, limits, handler, None, token).await;
}

fn respond(cfg: &RedirectConfig, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let a = decide(cfg, req.method().as_str(), host, target);
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_REQUEST))
        .header(hyper::header::CONNECTION, "close")
        .header(hyper::header::CONTENT_LENGTH, "0");
    if let Some(l) = a.location {
        resp = resp.header(hyper::header::LOCATION, l);
    }
    if a.status == 405 {
        resp = resp.header(hyper::header::ALLOW, "GET, HEAD");
    }
    resp.body(Full::new(Bytes::new())).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RedirectConfig {
        RedirectConfig {
            listen: vec![],
            host: None,
            root: Some("/owa".into()),
            autodiscover_host: Some("autodiscover.mail.example.test".into()),
            accepted_domains: vec!["contoso.test".into(), "fabrikam.test".into()],
        }
    }

    fn at(a: &Answer) -> (u16, Option<&str>) {
        (a.status, a.location.as_deref())
    }

    #[test]
    fn https_redirects_keep_path_and_query_and_send_the_root_to_owa() {
        let c = cfg();
        let a = decide(&c, "GET", Some("Mail.Example.Test:80"), "/ews/x?a=1");
        assert_eq!(at(&a), (301, Some("https://mail.example.test/ews/x?a=1")));
        let a = decide(&c, "HEAD", Some("mail.example.test"), "/");
        assert_eq!(at(&a), (301, Some("https://mail.example.test/owa")));
        let fixed = RedirectConfig {
            host: Some("owa.mail.example.test".into()),
            ..cfg()
        };
        let a = decide(&fixed, "GET", Some("127.0.0.2"), "/owa/");
        assert_eq!(at(&a), (301, Some("https://owa.mail.example.test/owa/")));
    }

    #[test]
    fn autodiscover_redirect_for_accepted_domains_in_any_case() {
        let c = cfg();
        let want = Some("https://autodiscover.mail.example.test/Autodiscover/Autodiscover.xml");
        for (host, path) in [
            (
                "autodiscover.contoso.test",
                "/autodiscover/autodiscover.xml",
            ),
            (
                "AutoDiscover.Fabrikam.Test",
                "/Autodiscover/Autodiscover.xml",
            ),
            (
                "autodiscover.contoso.test:80",
                "/AUTODISCOVER/AUTODISCOVER.XML",
            ),
        ] {
            assert_eq!(
                at(&decide(&c, "GET", Some(host), path)),
                (302, want),
                "{host}{path}"
            );
        }
        // Not an accepted domain, or another path: the plain https redirect.
        let a = decide(
            &c,
            "GET",
            Some("autodiscover.other.test"),
            "/autodiscover/autodiscover.xml",
        );
        assert_eq!(a.status, 301);
        let a = decide(&c, "GET", Some("autodiscover.contoso.test"), "/owa");
        assert_eq!(at(&a), (301, Some("https://autodiscover.contoso.test/owa")));
    }

    #[test]
    fn other_methods_and_bad_hosts() {
        let c = cfg();
        assert_eq!(
            decide(&c, "POST", Some("mail.example.test"), "/").status,
            405
        );
        assert_eq!(decide(&c, "GET", None, "/").status, 400);
        assert_eq!(decide(&c, "GET", Some("bad host"), "/").status, 400);
        assert_eq!(decide(&c, "GET", Some("a/b"), "/").status, 400);
        assert_eq!(decide(&c, "GET", Some(""), "/").status, 400);
    }
}
