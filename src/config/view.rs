//! `[[view]]`: split horizon. Which clients get which zones, and the pure choice of a query's
//! view, from its source address, a trusted resolver's EDNS Client Subnet (RFC 7871) or the TSIG
//! key a transfer is signed with.
//!
//! The views' client prefixes are flattened once, at load, into sorted disjoint ranges (first
//! view that matches wins), so choosing a view for a query is one binary search. The same
//! ranges give an ECS answer its scope: the shortest prefix around the client's address inside
//! which every address gets the same view (gdnsd computes its scopes from its nets tree the same
//! way), so a resolver never hands one view's answer to another view's clients.

use std::net::IpAddr;

use hickory_proto::rr::Name;
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::health::Cx;
use super::TsigKey;

/// `[[view]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawView {
    /// Its name, as zones' `views` lists and the dashboard give it.
    name: Spanned<String>,
    /// Client source prefixes (addresses count as /32 or /128).
    #[serde(default, rename = "match")]
    matches: Vec<Spanned<String>>,
    /// Match queries from `ecs_from` on their ECS address instead of their source.
    #[serde(default)]
    match_ecs: Option<Spanned<bool>>,
    /// Resolvers whose ECS option is trusted.
    #[serde(default)]
    ecs_from: Vec<Spanned<String>>,
    /// TSIG keys whose signed requests (transfers, SOA queries) get this view, whatever their
    /// source (BIND's `match-clients { key ...; }`).
    #[serde(default)]
    match_keys: Vec<Spanned<String>>,
}

/// One validated view.
#[derive(Debug, Clone)]
pub struct ViewDef {
    /// Its name.
    pub name: String,
    /// Client prefixes it matches.
    pub matches: Vec<IpNet>,
    /// Queries from `ecs_from` are matched on their ECS address.
    pub match_ecs: bool,
    /// Resolvers whose ECS is trusted (for this view).
    pub ecs_from: Vec<IpNet>,
    /// TSIG keys whose verified signature selects this view.
    pub keys: Vec<TsigKey>,
}

/// One flattened range of addresses (as u128; IPv4 in its own table) and the view it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: u128,
    end: u128,
    view: u16,
}

/// Every view, flattened for lookups, and which zones each serves.
#[derive(Debug, Clone)]
pub struct Views {
    /// The views, config order (one implicit "default" view matching everyone when the config
    /// has none).
    pub defs: Vec<ViewDef>,
    /// True when the config has no `[[view]]`: one implicit view.
    pub implicit: bool,
    /// Per zone (config order): the views it is in.
    pub zone_views: Vec<Vec<usize>>,
    v4: Vec<Range>,
    v6: Vec<Range>,
}

/// A query's view and, for a trusted ECS query, the scope to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The view, or None: no view matches (REFUSED).
    pub view: Option<usize>,
    /// The SCOPE PREFIX-LENGTH of the answer's ECS option.
    pub scope: u8,
}

/// The implicit view's name.
pub const DEFAULT_VIEW: &str = "default";

impl Default for Views {
    fn default() -> Self {
        Self::new(
            vec![ViewDef {
                name: DEFAULT_VIEW.to_string(),
                matches: vec![
                    IpNet::V4(ipnet::Ipv4Net::default()),
                    IpNet::V6(ipnet::Ipv6Net::default()),
                ],
                match_ecs: false,
                ecs_from: Vec::new(),
                keys: Vec::new(),
            }],
            true,
        )
    }
}

impl Views {
    /// The implicit view, serving `zones` zones.
    pub fn single(zones: usize) -> Self {
        Self {
            zone_views: vec![vec![0]; zones],
            ..Self::default()
        }
    }

    /// Flattens `defs` (first match wins).
    pub fn new(defs: Vec<ViewDef>, implicit: bool) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (i, d) in defs.iter().enumerate() {
            let view = u16::try_from(i).unwrap_or(u16::MAX);
            for net in &d.matches {
                let (table, (start, end)) = match net {
                    IpNet::V4(_) => (&mut v4, bounds(net)),
                    IpNet::V6(_) => (&mut v6, bounds(net)),
                };
                insert_uncovered(table, start, end, view);
            }
        }
        Self {
            defs,
            implicit,
            zone_views: Vec::new(),
            v4,
            v6,
        }
    }

    /// The view of a client at `ip` (its source address), or None.
    pub fn by_source(&self, ip: IpAddr) -> Option<usize> {
        let (table, x) = table_of(self, ip);
        range_at(table, x).map(|r| usize::from(r.view))
    }

    /// The view of a query from `source` carrying ECS `subnet`/`len` (already validated: the
    /// bits past `len` are zero). ECS decides only for a view with `match_ecs` that trusts
    /// `source`; otherwise the source does, and the scope is 0 (RFC 7871 §7.2.1: the answer does
    /// not depend on the ECS the query carried).
    pub fn by_subnet(&self, source: IpAddr, subnet: IpAddr, len: u8) -> Choice {
        let trusted = len > 0 && self.trusts(source);
        if !trusted {
            return Choice {
                view: self.by_source(source),
                scope: 0,
            };
        }
        let mut scope = 0u8;
        for (i, v) in self.defs.iter().enumerate() {
            let by_ecs = v.match_ecs && v.ecs_from.iter().any(|n| n.contains(&source));
            if !by_ecs {
                if v.matches.iter().any(|n| n.contains(&source)) {
                    return Choice {
                        view: Some(i),
                        scope,
                    };
                }
                continue;
            }
            let inside = v
                .matches
                .iter()
                .filter(|n| n.contains(&subnet))
                .map(IpNet::prefix_len)
                .min();
            match inside {
                Some(p) => {
                    return Choice {
                        view: Some(i),
                        scope: scope.max(p),
                    }
                }
                None => scope = scope.max(separation(&v.matches, subnet)),
            }
        }
        Choice { view: None, scope }
    }

    /// True when some view takes ECS from `source`.
    pub fn trusts(&self, source: IpAddr) -> bool {
        self.defs
            .iter()
            .any(|v| v.match_ecs && v.ecs_from.iter().any(|n| n.contains(&source)))
    }

    /// The view a request signed with key `name` gets, if a view lists the key, and the key
    /// (to verify the signature with: the name alone never selects a view).
    pub fn by_key(&self, name: &Name) -> Option<(usize, &TsigKey)> {
        self.defs
            .iter()
            .enumerate()
            .find_map(|(i, v)| Some((i, v.keys.iter().find(|k| k.name == *name)?)))
    }

    /// The names of the views zone `zone` is in.
    pub fn names_of_zone(&self, zone: usize) -> Vec<String> {
        self.zone_views
            .get(zone)
            .into_iter()
            .flatten()
            .filter_map(|&v| self.defs.get(v).map(|d| d.name.clone()))
            .collect()
    }

    /// The first client prefix no view matches, per family, if any.
    pub fn uncovered(&self) -> Vec<IpNet> {
        [(&self.v4, 32u8), (&self.v6, 128u8)]
            .into_iter()
            .filter_map(|(table, bits)| first_gap(table, bits))
            .collect()
    }
}

/// The flattened table for `ip`'s family, and `ip` as a number in it.
fn table_of(views: &Views, ip: IpAddr) -> (&[Range], u128) {
    match ip {
        IpAddr::V4(a) => (&views.v4, u128::from(u32::from(a))),
        IpAddr::V6(a) => (&views.v6, u128::from(a)),
    }
}

/// The range holding `x`.
fn range_at(table: &[Range], x: u128) -> Option<&Range> {
    let i = table.partition_point(|r| r.end < x);
    table.get(i).filter(|r| r.start <= x)
}

/// First and last address of `net`, as numbers.
fn bounds(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Adds the parts of `[start, end]` no range covers yet, keeping the table sorted and disjoint.
fn insert_uncovered(table: &mut Vec<Range>, start: u128, end: u128, view: u16) {
    let mut gaps = Vec::new();
    // The first address not yet accounted for (None: past the end of the address space).
    let mut at = Some(start);
    for r in table.iter().filter(|r| r.end >= start && r.start <= end) {
        let Some(a) = at else { break };
        if r.start > a {
            gaps.push(Range {
                start: a,
                end: r.start - 1,
                view,
            });
        }
        at = if r.end >= a {
            r.end.checked_add(1)
        } else {
            Some(a)
        };
    }
    if let Some(a) = at.filter(|a| *a <= end) {
        gaps.push(Range {
            start: a,
            end,
            view,
        });
    }
    table.extend(gaps);
    table.sort_by_key(|r| r.start);
}

/// The shortest prefix length around `a` that keeps clear of every prefix of `nets` (of `a`'s
/// family): a block around `a` meets a prefix `q` without `a` exactly while the block is no
/// longer than the bits `a` and `q` share, so it must be one bit longer than that.
fn separation(nets: &[IpNet], a: IpAddr) -> u8 {
    nets.iter()
        .filter(|q| q.addr().is_ipv4() == a.is_ipv4() && !q.contains(&a))
        .map(|q| common_bits(a, q.network()).min(q.prefix_len()) + 1)
        .max()
        .unwrap_or(0)
}

/// How many leading bits `a` and `b` (one family) share.
fn common_bits(a: IpAddr, b: IpAddr) -> u8 {
    let n = match (a, b) {
        (IpAddr::V4(x), IpAddr::V4(y)) => (u32::from(x) ^ u32::from(y)).leading_zeros(),
        (IpAddr::V6(x), IpAddr::V6(y)) => (u128::from(x) ^ u128::from(y)).leading_zeros(),
        _ => 0,
    };
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// The largest aligned prefix at the start of the first address range the table leaves out.
fn first_gap(table: &[Range], bits: u8) -> Option<IpNet> {
    let max = if bits == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    let mut at = 0u128;
    let mut gap_end = max;
    let mut found = false;
    for r in table {
        if r.start > at {
            gap_end = r.start - 1;
            found = true;
            break;
        }
        match r.end.checked_add(1) {
            Some(n) if r.end < max => at = n,
            _ => return None,
        }
    }
    if !found && table.last().is_some_and(|r| r.end >= max) {
        return None;
    }
    // The longest block starting at `at` that fits before `gap_end`.
    let mut len = bits;
    while len > 0 {
        let size_bits = u32::from(bits - len + 1);
        let mask = if size_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << size_bits) - 1
        };
        if at & mask != 0 || at.checked_add(mask).is_none_or(|e| e > gap_end) {
            break;
        }
        len -= 1;
    }
    let addr: IpAddr = if bits == 32 {
        IpAddr::V4(u32::try_from(at).unwrap_or(0).into())
    } else {
        IpAddr::V6(at.into())
    };
    IpNet::new(addr, len).ok()
}

/// Parses a prefix or a bare address.
fn prefix(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .map(|n| n.trunc())
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A list of prefixes, each error named with `what`.
fn prefixes(cx: &mut Cx<'_>, raw: &[Spanned<String>], what: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    for p in raw {
        match prefix(p.get_ref()) {
            Some(n) => out.push(n),
            None => cx.error(
                Some(p.span()),
                format!(
                    "{what}: '{}' is not an address or prefix (e.g. \"127.0.8.0/24\", \"::1/128\")",
                    p.get_ref()
                ),
            ),
        }
    }
    out
}

/// The `[[view]]` tables: each name once, `match` not empty, ECS trust only with `match_ecs`,
/// keys that exist. With none, the one implicit view.
pub(super) fn validate(cx: &mut Cx<'_>, raw: Vec<RawView>, keys: &[TsigKey]) -> Views {
    if raw.is_empty() {
        return Views::default();
    }
    let mut defs: Vec<ViewDef> = Vec::new();
    let mut spans = Vec::new();
    for v in raw {
        let name = v.name.get_ref().clone();
        if name.is_empty() || defs.iter().any(|d| d.name == name) {
            cx.error(
                Some(v.name.span()),
                format!("view '{name}' is defined twice (or has no name)"),
            );
            continue;
        }
        let what = format!("view '{name}': match");
        let matches = prefixes(cx, &v.matches, &what);
        if v.matches.is_empty() {
            cx.error(
                Some(v.name.span()),
                format!("view '{name}': match is empty: list the client prefixes it is for (\"0.0.0.0/0\", \"::/0\" for everyone else)"),
            );
        }
        let ecs_from = prefixes(cx, &v.ecs_from, &format!("view '{name}': ecs_from"));
        let match_ecs = v.match_ecs.as_ref().is_some_and(|b| *b.get_ref());
        if match_ecs && ecs_from.is_empty() {
            let span = v.match_ecs.as_ref().map(Spanned::span);
            cx.error(span, format!("view '{name}': match_ecs needs ecs_from, the resolvers whose client subnet is trusted (ECS from anyone else could pick any view)"));
        }
        if !match_ecs && !ecs_from.is_empty() {
            cx.warn(
                v.ecs_from.first().map(Spanned::span),
                format!("view '{name}': ecs_from has no effect without match_ecs = true"),
            );
        }
        let mut view_keys = Vec::new();
        for k in &v.match_keys {
            let want = super::fqdn_lower(k.get_ref()).ok();
            match keys.iter().find(|x| Some(&x.name) == want.as_ref()) {
                Some(key) => view_keys.push(key.clone()),
                None => cx.error(
                    Some(k.span()),
                    format!(
                        "view '{name}': match_keys: '{}' is not a [[tsig_key]]",
                        k.get_ref()
                    ),
                ),
            }
        }
        spans.push(v.name.span());
        defs.push(ViewDef {
            name,
            matches,
            match_ecs,
            ecs_from,
            keys: view_keys,
        });
    }
    for (i, d) in defs.iter().enumerate() {
        let mut mine = d.matches.clone();
        mine.sort();
        let same = defs.iter().take(i).find(|e| {
            let mut theirs = e.matches.clone();
            theirs.sort();
            theirs == mine && !d.match_ecs
        });
        if let Some(e) = same {
            cx.warn(
                spans.get(i).cloned(),
                format!(
                    "view '{}' matches exactly the clients view '{}' matches, which comes first: it is never chosen",
                    d.name, e.name
                ),
            );
        }
    }
    let views = Views::new(defs, false);
    for gap in views.uncovered() {
        cx.warn(
            None,
            format!("views: no view matches clients in {gap} (their queries are REFUSED); end with a catch-all view (match = [\"0.0.0.0/0\", \"::/0\"]) if that is not meant"),
        );
    }
    views
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn view(name: &str, matches: &[&str], ecs_from: &[&str]) -> ViewDef {
        ViewDef {
            name: name.into(),
            matches: matches.iter().map(|s| net(s)).collect(),
            match_ecs: !ecs_from.is_empty(),
            ecs_from: ecs_from.iter().map(|s| net(s)).collect(),
            keys: Vec::new(),
        }
    }

    /// The shape: internal 127.0.8.0/24 and ::1, trusted resolver 127.0.8.53, everyone
    /// else external.
    fn split() -> Views {
        Views::new(
            vec![
                view("internal", &["127.0.8.0/24", "::1/128"], &["127.0.8.53/32"]),
                view("external", &["0.0.0.0/0", "::/0"], &[]),
            ],
            false,
        )
    }

    #[test]
    fn first_matching_view_wins() {
        let v = split();
        assert_eq!(v.by_source(ip("127.0.8.9")), Some(0));
        assert_eq!(v.by_source(ip("127.0.9.9")), Some(1));
        assert_eq!(v.by_source(ip("::1")), Some(0));
        assert_eq!(v.by_source(ip("::2")), Some(1));
        assert!(v.uncovered().is_empty());
        assert_eq!(Views::default().by_source(ip("127.0.0.1")), Some(0));
    }

    #[test]
    fn overlapping_prefixes_flatten_in_order() {
        let v = Views::new(
            vec![
                view("a", &["127.0.8.128/25"], &[]),
                view("b", &["127.0.8.0/24", "127.0.8.0/23"], &[]),
                view("c", &["127.0.0.0/8"], &[]),
            ],
            false,
        );
        assert_eq!(v.by_source(ip("127.0.8.200")), Some(0));
        assert_eq!(v.by_source(ip("127.0.8.1")), Some(1));
        assert_eq!(v.by_source(ip("127.0.9.1")), Some(1));
        assert_eq!(v.by_source(ip("127.0.10.1")), Some(2));
        assert_eq!(v.by_source(ip("127.255.255.255")), Some(2));
        assert_eq!(v.by_source(ip("::2")), None, "no view has IPv6 clients");
        assert_eq!(
            v.uncovered(),
            [net("0.0.0.0/2"), net("::/0")],
            "the first gap of each family"
        );
    }

    #[test]
    fn trusted_ecs_picks_the_view_with_a_safe_scope() {
        let v = split();
        let resolver = ip("127.0.8.53");
        // A /24 inside the internal /24: that /24.
        let c = v.by_subnet(resolver, ip("127.0.8.0"), 24);
        assert_eq!(
            c,
            Choice {
                view: Some(0),
                scope: 24
            }
        );
        // A /32 inside it: still the /24 (every address of it gets the internal view).
        assert_eq!(v.by_subnet(resolver, ip("127.0.8.7"), 32).scope, 24);
        // Outside: the length that separates it from 127.0.8.0/24, never shorter.
        let c = v.by_subnet(resolver, ip("127.0.9.0"), 24);
        assert_eq!(
            c,
            Choice {
                view: Some(1),
                scope: 24
            }
        );
        assert_eq!(v.by_subnet(resolver, ip("127.0.0.0"), 24).scope, 21);
        let far = v.by_subnet(resolver, ip("127.128.0.0"), 24);
        assert_eq!(
            far,
            Choice {
                view: Some(1),
                scope: 9
            }
        );
        // A source prefix too short to tell: the scope is longer than the source (RFC 7871 §7.2.1).
        let c = v.by_subnet(resolver, ip("127.0.0.0"), 16);
        assert_eq!(
            c,
            Choice {
                view: Some(1),
                scope: 21
            }
        );
    }

    #[test]
    fn ecs_from_anyone_else_is_ignored() {
        let v = split();
        // An outside resolver claiming an internal client: external, scope 0.
        let c = v.by_subnet(ip("127.0.9.53"), ip("127.0.8.0"), 24);
        assert_eq!(
            c,
            Choice {
                view: Some(1),
                scope: 0
            }
        );
        // An internal host that is not the trusted resolver: its own source decides.
        let c = v.by_subnet(ip("127.0.8.9"), ip("127.0.5.0"), 24);
        assert_eq!(
            c,
            Choice {
                view: Some(0),
                scope: 0
            }
        );
        // SOURCE PREFIX-LENGTH 0 (the client opted out): the resolver's own address.
        let c = v.by_subnet(ip("127.0.8.53"), IpAddr::from([0u8; 4]), 0);
        assert_eq!(
            c,
            Choice {
                view: Some(0),
                scope: 0
            }
        );
    }

    /// Brute force: every address in the scope block around a client gets the chosen view.
    #[test]
    fn every_scope_block_is_uniform() {
        let v = Views::new(
            vec![
                view("a", &["127.0.8.0/24", "127.0.12.0/22"], &["127.0.0.0/8"]),
                view("b", &["127.0.9.128/25"], &["127.0.0.0/8"]),
                view("c", &["0.0.0.0/0"], &[]),
            ],
            false,
        );
        let resolver = ip("127.0.0.1");
        for third in 0u8..20 {
            for fourth in (0u8..=255).step_by(17) {
                let a = ip(&format!("127.0.{third}.{fourth}"));
                let c = v.by_subnet(resolver, a, 32);
                let block = IpNet::new(a, c.scope).unwrap().trunc();
                let probe = |x: IpAddr| v.by_subnet(resolver, x, 32).view;
                for x in block.hosts().take(4096).step_by(7) {
                    assert_eq!(probe(x), c.view, "{a} scope {} but {x} differs", c.scope);
                }
            }
        }
    }

    #[test]
    fn keys_pick_views() {
        let mut d = split();
        let k = Name::from_ascii("xfr-internal.").unwrap();
        if let Some(v) = d.defs.get_mut(0) {
            v.keys.push(TsigKey {
                name: k.clone(),
                algorithm: hickory_proto::rr::rdata::tsig::TsigAlgorithm::HmacSha256,
                secret: vec![7; 32],
            });
        }
        assert_eq!(d.by_key(&k).map(|(v, _)| v), Some(0));
        assert!(d.by_key(&Name::root()).is_none());
    }
}
