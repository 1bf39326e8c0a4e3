//! The bodies of mailns's fuzz targets, one function per input surface.
//!
//! Each takes the fuzzer's bytes, drives the real code (no mocks) and asserts more than "no
//! panic": what a reply must be for any input. The libFuzzer binaries in `fuzz_targets/` call
//! these; `tests/fuzz_corpus.rs` in the main crate includes this file and replays every committed
//! corpus and crash file through them on the stable toolchain, so a crash once found stays fixed.
//! Nothing here touches the network.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, RecordType, TSigner};
use mailns::config::Config;
use mailns::dns::xfr::TransferPolicy;
use mailns::dns::{self, Counters, Edge, Origin, Transport, Worker};
use mailns::health::answer::{Selection, Step};
use mailns::health::view::ServiceView;
use mailns::query::fast::FastTable;
use mailns::query::wire::{self, Parsed};
use mailns::state::Snapshot;

/// The zones every DNS target answers from: health-driven names, a wildcard, CNAME chains and a
/// loop, a delegation with glue and one without, empty non-terminals, an RRset too large for UDP,
/// and a second zone.
pub const ZONE_MAIL: &str = r#"$ORIGIN mail.example.test.
$TTL 300
@ SOA ns1 hostmaster 2026120101 3600 900 604800 300
@ NS ns1
@ NS ns2
@ MX 10 mail
@ TXT "v=spf1 mx -all"
ns1 A 127.0.0.53
ns2 AAAA ::1
mail 30 A 127.0.1.1
mail 30 A 127.0.1.2
owa 30 A 127.0.1.1
owa 30 A 127.0.1.2
owa 30 A 127.0.1.3
owa 30 AAAA ::1
autodiscover 30 A 127.0.1.1
autodiscover 30 A 127.0.1.2
outlook 30 A 127.0.1.1
imap 30 A 127.0.1.3
_autodiscover._tcp SRV 0 0 443 autodiscover
*.wild A 127.0.2.1
*.wild TXT "wildcard"
chain1 CNAME chain2
chain2 CNAME owa
loop1 CNAME loop2
loop2 CNAME loop1
out CNAME www.other.test.
sub NS ns.sub
ns.sub A 127.0.3.1
nog NS ns.elsewhere.test.
a.b.c.ent A 127.0.5.1
"#;

/// The second zone.
pub const ZONE_OTHER: &str = r#"$ORIGIN other.test.
$TTL 3600
@ SOA ns1.other.test. hostmaster.other.test. 7 3600 900 604800 60
@ NS ns1.mail.example.test.
www A 127.0.6.1
www AAAA ::1
into CNAME owa.mail.example.test.
"#;

/// The TSIG key the transfer policy of the fixture requires for other.test.
pub const XFR_SECRET: &[u8] = b"mailns-fuzz-transfer-key-32bytes";

struct Fixture {
    /// Health applied, prebuilt answers on.
    snap: Snapshot,
    /// The same, with the prebuilt table emptied: every query takes the general path.
    slow: Snapshot,
    /// Rate limiting (nobody exempt, a low rate so slips and drops are reached) and cookies.
    edge: Edge,
    policy: TransferPolicy,
    signer: TSigner,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build_fixture)
}

#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a broken fixture is a broken harness"
)]
fn build_fixture() -> Fixture {
    let dir = std::env::temp_dir().join(format!("mailns-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mail.zone"), ZONE_MAIL).unwrap();
    std::fs::write(dir.join("other.zone"), ZONE_OTHER).unwrap();
    let secret = data_encoding::BASE64.encode(XFR_SECRET);
    let toml = format!(
        r#"[dns.rrl]
rate = 50
exempt = []

[[tsig_key]]
name = "xfr"
secret = "{secret}"

# Split horizon: the fuzzed queries come from 127.0.0.9, the trusted resolver, so their ECS
# options pick the view (and other.test exists only inside).
[[view]]
name = "inside"
match = ["127.0.0.8/30"]
match_ecs = true
ecs_from = ["127.0.0.9/32"]
match_keys = ["xfr"]

[[view]]
name = "outside"
match = ["127.0.0.0/8", "::/0"]

[[zone]]
name = "mail.example.test"
file = "mail.zone"
allow_transfer = ["127.0.0.0/8"]

[[zone]]
name = "other.test"
file = "other.zone"
transfer_key = "xfr"
views = ["inside"]
"#
    );
    let config = Config::parse(&dir.join("fuzz.toml"), &toml).expect("the fixture's config");
    let (zones, _) = config.load_zones().expect("the fixture's zones");
    let zones = Arc::new(zones);
    let views = || {
        let sel = |step, ips: &[&str]| Selection {
            step,
            tiers: vec![ips.iter().map(|a| (a.parse().unwrap(), 1)).collect()],
            preferred_down: false,
            wake_at: None,
            why: Vec::new(),
        };
        let view = |name: &str, a: Option<Selection>, aaaa: Option<Selection>| ServiceView {
            name: Name::from_ascii(name).unwrap(),
            zone: 0,
            a,
            aaaa,
            ttl: 5,
            cap: 2,
        };
        vec![
            view(
                "owa.mail.example.test.",
                Some(sel(Step::Healthy, &["127.0.1.1", "127.0.1.2", "127.0.1.3"])),
                Some(sel(Step::Healthy, &["::1"])),
            ),
            view(
                "autodiscover.mail.example.test.",
                Some(sel(Step::OtherSites, &["127.0.1.2"])),
                None,
            ),
            view(
                "outlook.mail.example.test.",
                Some(sel(Step::Servfail, &[])),
                None,
            ),
            view("imap.mail.example.test.", Some(sel(Step::Empty, &[])), None),
            view(
                "mail.mail.example.test.",
                Some(sel(Step::Zone, &["127.0.1.1", "127.0.1.2"])),
                None,
            ),
        ]
    };
    // Each service name counts in its own slot, numbered in the views' order.
    let names: Vec<Name> = views().into_iter().map(|v| v.name).collect();
    let slot_of = |_: &str, name: &Name| {
        let at = names.iter().position(|n| n == name)?;
        u16::try_from(at).ok()
    };
    let layout = Arc::new(config.views.clone());
    // As the health engine publishes: over the snapshot of the zones as loaded, so the
    // prebuilt answers health changes lie over those it cannot.
    let loaded = Snapshot::build(
        zones.clone(),
        layout.clone(),
        Vec::new(),
        Vec::new(),
        slot_of,
        None,
    );
    let snap = Snapshot::build(
        zones.clone(),
        layout.clone(),
        views(),
        Vec::new(),
        slot_of,
        Some(&loaded),
    );
    let mut slow = Snapshot::build(zones, layout, views(), Vec::new(), slot_of, None);
    for v in &mut slow.views {
        v.fast = FastTable::default();
    }
    let signer = TSigner::new(
        XFR_SECRET.to_vec(),
        TsigAlgorithm::HmacSha256,
        Name::from_ascii("xfr.").unwrap(),
        300,
    )
    .unwrap();
    Fixture {
        edge: Edge::new(&config.dns, None, [7; 16]),
        policy: TransferPolicy::new(&config.zones, &config.views),
        snap,
        slow,
        signer,
    }
}

const NOW: u64 = 1_800_000_000;

fn origin(transport: Transport) -> Origin {
    Origin {
        ip: IpAddr::from([127, 0, 0, 9]),
        transport,
        unix: NOW as u32,
        mono: 1_000_000_000,
    }
}

/// What every reply to `request` must be.
#[allow(clippy::indexing_slicing, reason = "lengths checked first")]
fn check_reply(request: &[u8], reply: &[u8], limit: usize) {
    let m = Message::from_vec(reply)
        .unwrap_or_else(|e| panic!("the reply does not parse ({e}): {reply:02x?}"));
    assert!(
        reply.len() <= limit,
        "{} bytes over a {limit}-byte limit",
        reply.len()
    );
    assert_eq!(m.metadata.message_type, MessageType::Response, "QR=1");
    assert!(
        request.len() >= 12,
        "a request too short for a header got a reply"
    );
    assert_eq!(reply[..2], request[..2], "the ID is echoed");
    if let Parsed::Query(q) = wire::parse(request) {
        // The question, as the client wrote it, when the reply has one.
        if m.queries.len() == 1 {
            let end = 12 + q.question.len();
            assert!(
                reply.len() >= end && reply[12..end] == *q.question,
                "the question is echoed"
            );
        }
    }
}

/// One DNS message through the full request path over `transport`, twice: with the fixture's
/// edge (rate limiting, cookies) and without, where the prebuilt answer, when there is one, must
/// equal the general path's to the byte (an NXDOMAIN answer: as a message).
pub fn dns_message(data: &[u8], transport: Transport) {
    let f = fixture();
    let stats = Counters::default();
    let mut out = Vec::new();
    let at = origin(transport);
    let limit = match (transport, wire::parse(data)) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Parsed::Query(q)) => q.udp_limit(),
        (Transport::Udp, _) => usize::from(wire::PLAIN_UDP_PAYLOAD),
    };
    let rotation = data.iter().map(|&b| usize::from(b)).sum::<usize>();

    let mut w = Worker::new(&stats);
    w.rotation = rotation;
    if dns::handle(&f.snap, &f.edge, &at, data, &mut w, &mut out) {
        check_reply(data, &out, limit);
    }

    let plain = Edge::default();
    let before = stats.fast.load(std::sync::atomic::Ordering::Relaxed);
    let mut w = Worker::new(&stats);
    w.rotation = rotation;
    let answered = dns::handle(&f.snap, &plain, &at, data, &mut w, &mut out);
    if !answered {
        return;
    }
    check_reply(data, &out, limit);
    if stats.fast.load(std::sync::atomic::Ordering::Relaxed) == before {
        return;
    }
    let mut general = Vec::new();
    let mut w = Worker::new(&stats);
    w.rotation = rotation;
    assert!(dns::handle(
        &f.slow,
        &plain,
        &at,
        data,
        &mut w,
        &mut general
    ));
    if out.get(3).is_some_and(|b| b & 0x0f == 3) {
        // A prebuilt NXDOMAIN answer points the SOA's names at the apex in the question. The
        // encoder may point at a longer suffix, or, past the 64 suffixes hickory keeps for
        // compression, nowhere: the same message, not the same bytes.
        let parse = |b: &[u8]| Message::from_vec(b).expect("an answer parses");
        assert_eq!(
            parse(&out),
            parse(&general),
            "the prebuilt NXDOMAIN answer says something else than the general path's"
        );
        return;
    }
    assert_eq!(
        out, general,
        "the prebuilt answer differs from the general path's"
    );
}

/// `dns_udp`: the bytes as one UDP datagram.
pub fn dns_udp(data: &[u8]) {
    dns_message(data, Transport::Udp);
}

/// `dns_tcp`: the bytes as a DNS/TCP stream: length-prefixed messages, each answered over TCP,
/// transfer requests by the zone transfer code.
pub fn dns_tcp(data: &[u8]) {
    let f = fixture();
    let mut rest = data;
    for _ in 0..8 {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            return;
        };
        let len = usize::from(u16::from_be_bytes(*len));
        let Some((msg, tail)) = tail.split_at_checked(len) else {
            return;
        };
        rest = tail;
        if dns::is_transfer(&wire::parse(msg)) {
            transfer(f, msg);
        } else {
            dns_message(msg, Transport::Tcp);
        }
    }
}

fn transfer(f: &Fixture, request: &[u8]) {
    let zones = &f.snap.static_zones;
    for peer in [
        IpAddr::from([127, 0, 0, 2]),
        IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
    ] {
        let replies = dns::xfr::answer(zones, &f.policy, request, peer, NOW);
        assert!(
            !replies.is_empty(),
            "a transfer request gets at least one message"
        );
        for r in &replies {
            let m = Message::from_vec(r).unwrap_or_else(|e| panic!("transfer message: {e}"));
            assert_eq!(m.metadata.message_type, MessageType::Response);
            assert!(r.len() <= usize::from(u16::MAX));
        }
    }
}

/// `xfr`: a transfer request built from the bytes: raw, or an AXFR/IXFR for a name taken from
/// them, unsigned, signed with the right key at a time from the bytes, or with a wrong key.
pub fn xfr(data: &[u8]) {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 3 == 0 {
        transfer(f, rest);
        return;
    }
    let (skew, rest) = rest
        .split_first_chunk::<2>()
        .map_or((0, rest), |(s, r)| (i16::from_be_bytes(*s), r));
    let names = [
        "mail.example.test.",
        "other.test.",
        "sub.mail.example.test.",
        "nowhere.test.",
    ];
    let name = rest
        .first()
        .map_or(names[0], |&b| names[usize::from(b) % names.len()]);
    let qtype = if mode & 4 == 0 {
        RecordType::AXFR
    } else {
        RecordType::IXFR
    };
    let mut m = Message::new(u16::from(mode), MessageType::Query, OpCode::Query);
    if let Ok(n) = Name::from_ascii(name) {
        m.add_query(Query::query(n, qtype));
    }
    let at = NOW.saturating_add_signed(i64::from(skew) * 4);
    let key = match mode & 3 {
        2 => Some(f.signer.clone()),
        3 => TSigner::new(
            rest.to_vec(),
            TsigAlgorithm::HmacSha256,
            Name::from_ascii("xfr.").unwrap_or_default(),
            300,
        )
        .ok(),
        _ => None,
    };
    if let Some(k) = key {
        if let Ok((sig, _)) = k.sign_message(&m, at) {
            m.signature = Some(sig);
        }
    }
    if let Ok(bytes) = m.to_vec() {
        transfer(f, &bytes);
    }
}

/// `notify`: the bytes as the reply to a NOTIFY, checked with and without a key; an
/// acknowledgement must be a NOTIFY response with the NOTIFY's ID.
pub fn notify(data: &[u8]) {
    let f = fixture();
    let id = wire::u16_at(data, 0).unwrap_or(0);
    for (signer, mac) in [(None, None), (Some(&f.signer), Some(&[0u8; 32][..]))] {
        if dns::notify::acknowledges(data, id, signer, mac) {
            let m = Message::from_vec(data).unwrap_or_else(|e| panic!("acknowledged but {e}"));
            assert_eq!(m.metadata.op_code, OpCode::Notify);
            assert_eq!(m.metadata.message_type, MessageType::Response);
            assert_eq!(m.metadata.id, id);
        }
    }
}

/// `sni`: the first bytes of a connection through the ClientHello peek and the route choice.
/// Reading more of the same connection never turns a decision back into "need more".
pub fn sni(data: &[u8]) {
    use mailns::config::relay::Route;
    use mailns::relay::sni::{parse, route, Hello};
    let hello = parse(data);
    if let Hello::Tls(Some(name)) = &hello {
        assert!(!name.is_empty());
        let routes = [
            Route {
                names: vec!["owa.mail.example.test".into()],
                servers: vec![0],
            },
            Route {
                names: vec!["*.example.test".into()],
                servers: vec![1],
            },
        ];
        let _ = route(&routes, name);
    }
    if hello != Hello::Incomplete {
        let mut longer = data.to_vec();
        longer.extend_from_slice(&[0; 16]);
        assert_ne!(
            parse(&longer),
            Hello::Incomplete,
            "more bytes undid a decision"
        );
    }
}

/// `redirect`: method, Host and target from the bytes (split at NUL) through `redirect::decide`:
/// only the four statuses, a Location exactly on redirects, and never a CR or LF in it (no
/// header injection).
pub fn redirect(data: &[u8]) {
    use mailns::config::redirect::RedirectConfig;
    use mailns::redirect::decide;
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\0');
    let method = parts.next().unwrap_or("GET");
    let host = parts.next().filter(|h| !h.is_empty());
    let target = parts.next().unwrap_or("/");
    let configs = [
        RedirectConfig {
            listen: Vec::new(),
            host: None,
            root: None,
            autodiscover_host: None,
            accepted_domains: Vec::new(),
        },
        RedirectConfig {
            listen: Vec::new(),
            host: Some("mail.example.test".into()),
            root: Some("/owa".into()),
            autodiscover_host: Some("autodiscover.mail.example.test".into()),
            accepted_domains: vec!["example.test".into(), "contoso.test".into()],
        },
    ];
    for cfg in &configs {
        let a = decide(cfg, method, host, target);
        assert!(
            matches!(a.status, 301 | 302 | 400 | 405),
            "status {}",
            a.status
        );
        assert_eq!(a.location.is_some(), matches!(a.status, 301 | 302));
        if let Some(l) = &a.location {
            assert!(!l.contains(['\r', '\n']), "a CR or LF in Location: {l:?}");
            assert!(l.starts_with("https://"), "Location {l:?}");
        }
    }
}

/// `config`: arbitrary text as mailns.toml through the whole validation. Every error names the
/// file and, where it has a line, a line inside the text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/mailns-fuzz/mailns.toml");
    if let Err(diags) = Config::parse(path, text) {
        let lines = text.lines().count().max(1) + 1;
        for d in diags {
            let shown = d.to_string();
            assert!(
                shown.contains("mailns.toml") || shown.contains("mailns-fuzz"),
                "{shown}"
            );
            if let Some(line) = d.line {
                assert!(
                    (1..=lines).contains(&line),
                    "line {line} of {lines}: {shown}"
                );
            }
        }
    }
}

/// `zone_file`: a master file and its `$INCLUDE`s from the bytes (NUL-separated: the zone's text,
/// then file name, text, file name, text...), served from memory, through the lexer, the loader
/// and validation. Every error names one of those files and a line inside it.
pub fn zone_file(data: &[u8]) {
    use std::collections::HashMap;
    use std::path::PathBuf;
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let dir = Path::new("/nonexistent/mailns-fuzz");
    let main = dir.join("fuzz.test.zone");
    let mut files: HashMap<PathBuf, String> = HashMap::new();
    files.insert(main.clone(), parts.next().unwrap_or_default().to_string());
    while let (Some(name), Some(body)) = (parts.next(), parts.next()) {
        files.insert(dir.join(name), body.to_string());
    }
    let read = |p: &Path| {
        files
            .get(p)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    };
    let Ok(origin) = Name::from_ascii("fuzz.test.") else {
        return;
    };
    let diags = match mailns::zone::load_zone_from(&main, &origin, &read) {
        Ok((zone, warnings)) => {
            assert!(zone.record_count > 0, "a zone with no records loaded");
            warnings
        }
        Err(errors) => errors,
    };
    for d in diags {
        let Some(body) = files.get(&d.path) else {
            panic!("a diagnostic names a file that is not there: {d}");
        };
        if let Some(line) = d.line {
            let lines = body.lines().count().max(1) + 1;
            assert!((1..=lines).contains(&line), "line {line} of {lines}: {d}");
        }
    }
}

/// `admin_route`: method, request target, header lines and body (split at NUL) through the
/// admin router's decision, under four policies (token or none, demo mode or not). Only an
/// authorized POST may act, a demo action only in demo mode, a page only on GET or HEAD; every
/// refusal is a JSON error with the headers its status promises.
pub fn admin_route(data: &[u8]) {
    use hyper::{header, HeaderMap, Method, Uri};
    use mailns::admin::{decide, parse_state, Policy, Route};
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\0');
    let Ok(method) = Method::from_bytes(parts.next().unwrap_or("GET").as_bytes()) else {
        return;
    };
    // What hyper would refuse before routing never reaches the router.
    let Ok(uri) = parts.next().unwrap_or("/").parse::<Uri>() else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in parts.next().unwrap_or_default().split('\n') {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.trim().as_bytes()),
            header::HeaderValue::from_str(value.trim()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let body = parts.next().unwrap_or_default();
    let token = "fuzz-Token-0123";
    let hosts = vec!["mailns1.mail.example.test".to_string()];
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let get = method == Method::GET || method == Method::HEAD;
    for (with_token, demo) in [(false, false), (true, false), (false, true), (true, true)] {
        let policy = Policy {
            token: with_token.then_some(token),
            hosts: &hosts,
            demo,
        };
        match decide(&method, uri.path(), &headers, &policy) {
            Route::Reload | Route::SetState { .. }
                if !(method == Method::POST && with_token && bearer == Some(token)) =>
            {
                panic!("an unauthorized {method} {uri} would act")
            }
            // The raw checks name every server: the token, on GET only.
            Route::ClusterChecks => assert!(
                get && with_token && bearer == Some(token),
                "cluster checks without the token: {method} {uri}"
            ),
            Route::SetState { server } => {
                assert!(!server.is_empty() && !server.contains('/'), "{server:?}");
                let _ = parse_state(body.as_bytes());
            }
            Route::Demo { .. } => assert!(demo && method == Method::POST, "demo {method} {uri}"),
            Route::Dashboard
            | Route::Status
            | Route::History
            | Route::Metrics
            | Route::Livez
            | Route::Readyz => {
                assert!(get, "a page on {method}")
            }
            Route::Reload => {}
            Route::Refuse(reply) => {
                let status = reply.status().as_u16();
                assert!(
                    matches!(status, 401 | 403 | 404 | 405 | 421),
                    "status {status}"
                );
                assert_eq!(status == 405, reply.headers().contains_key(header::ALLOW));
                assert_eq!(
                    status == 401,
                    reply.headers().contains_key(header::WWW_AUTHENTICATE)
                );
            }
        }
    }
}
