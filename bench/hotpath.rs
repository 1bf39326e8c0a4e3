//! Micro-benchmarks of the two costs a regression in the DNS path would show in first, without a
//! full side-by-side run (bench/dns.py):
//! - the per-query hot path: `dns::handle` on a wire query (parse, prebuilt answer or general
//!   lookup, encode), one query kind at a time;
//! - the snapshot rebuild after a health change: `Snapshot::build` with every service name's
//!   selection applied, on a small zone and on a 100,000-record zone with 50 service names.
//!
//! Usage: `cargo bench --bench hotpath` (divan; `-- --sample-count 500` for steadier figures).
//! Everything is built in process; no network, no files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs,
    reason = "benchmark code: a panic here is a failed run, not a crashed server"
)]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, LazyLock};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use mailns::config::view::Views;
use mailns::dns::{self, Counters, Edge, Origin, Transport, Worker};
use mailns::health::answer::{Selection, Step};
use mailns::health::view::ServiceView;
use mailns::state::Snapshot;
use mailns::zone::{load_zone, Zone};

fn main() {
    divan::main();
}

const ORIGIN: &str = "mail.example.test.";

/// A mail namespace: SOA, NS, MX, the client-access names (3 addresses each), the
/// autodiscover SRV, `services` more health-driven names and `hosts` plain hosts.
fn zone_text(services: usize, hosts: usize) -> String {
    let mut z = String::from(
        "$ORIGIN mail.example.test.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 900 1209600 60\n\
         @ NS ns1\n@ NS ns2\nns1 A 127.0.0.53\nns2 A 127.0.0.54\n@ MX 10 mail\n\
         _autodiscover._tcp SRV 0 0 443 autodiscover\n",
    );
    let names = ["owa", "autodiscover", "outlook", "mail"];
    for (s, name) in names.iter().enumerate() {
        for i in 1..=3 {
            z.push_str(&format!("{name} 30 A 127.0.{}.{i}\n", s + 1));
        }
    }
    for s in 0..services {
        for i in 1..=3 {
            z.push_str(&format!("svc{s} 30 A 127.1.{s}.{i}\n"));
        }
    }
    for h in 0..hosts {
        z.push_str(&format!(
            "host{h} A 127.{}.{}.{}\n",
            2 + h / 65536 % 250,
            h / 256 % 256,
            h % 256
        ));
    }
    z
}

fn load(text: &str) -> Zone {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    load_zone(f.path(), &Name::from_ascii(ORIGIN).unwrap())
        .unwrap()
        .0
}

/// Every service name healthy but its first address: each gets a health-driven RRset.
fn services(zone: &Zone, names: impl Iterator<Item = String>) -> Vec<ServiceView> {
    names
        .map(|n| {
            let name = Name::from_ascii(format!("{n}.{ORIGIN}")).unwrap();
            let ips: Vec<(IpAddr, u32)> = zone
                .nodes
                .get(&mailns::zone::wire_lower(&name))
                .and_then(|node| node.rrset(RecordType::A))
                .map(|set| {
                    set.records
                        .iter()
                        .filter_map(|r| match &r.data {
                            hickory_proto::rr::RData::A(a) => Some((IpAddr::V4(a.0), 1)),
                            _ => None,
                        })
                        .skip(1)
                        .collect()
                })
                .unwrap_or_default();
            ServiceView {
                name,
                zone: 0,
                a: Some(Selection {
                    step: Step::Healthy,
                    tiers: vec![ips],
                    preferred_down: false,
                    wake_at: None,
                    why: Vec::new(),
                }),
                aaaa: None,
                ttl: 20,
                cap: 8,
            }
        })
        .collect()
}

/// A snapshot of `zones` with `services` applied, over `previous` as the health engine's
/// publisher builds it on a change (None: as a start or a reload does).
fn build(
    zones: &Arc<Vec<Zone>>,
    services: &[ServiceView],
    previous: Option<&Snapshot>,
) -> Snapshot {
    Snapshot::build(
        Arc::clone(zones),
        Arc::clone(&LAYOUT),
        services.to_vec(),
        Vec::new(),
        |_, _| Some(0),
        previous,
    )
}

/// One layout for every snapshot: a health change shares the base only with a snapshot of the
/// same zones and views.
static LAYOUT: LazyLock<Arc<Views>> = LazyLock::new(|| Arc::new(Views::single(1)));

fn client_access() -> impl Iterator<Item = String> {
    ["owa", "autodiscover", "outlook", "mail"]
        .into_iter()
        .map(String::from)
}

/// The small zone served as a health change leaves it (the client-access names health-driven).
static SMALL: LazyLock<Snapshot> = LazyLock::new(|| {
    let z = load(&zone_text(0, 200));
    let s = services(&z, client_access());
    let zones = Arc::new(vec![z]);
    let loaded = build(&zones, &[], None);
    build(&zones, &s, Some(&loaded))
});

fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if edns {
        m.edns = Some(hickory_proto::op::Edns::new());
    }
    m.to_vec().unwrap()
}

/// A query kind: the name (relative to the zone), the type, EDNS or not.
#[derive(Debug, Clone, Copy)]
struct Kind(&'static str, RecordType, bool);

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}{}",
            self.0,
            self.1,
            if self.2 { " +edns" } else { "" }
        )
    }
}

const KINDS: [Kind; 7] = [
    Kind("owa", RecordType::A, false), // health-driven, prebuilt
    Kind("owa", RecordType::A, true),  // the same with an OPT record
    Kind("@", RecordType::MX, false),  // prebuilt
    Kind("_autodiscover._tcp", RecordType::SRV, false),
    Kind("host7", RecordType::A, false),    // a plain host
    Kind("host7", RecordType::AAAA, false), // no data
    Kind("nx123", RecordType::A, false),    // NXDOMAIN
];

/// One query kind through `dns::handle`, with the edge (rate limiting, cookies) off.
#[divan::bench(args = KINDS)]
fn hot_path(bencher: divan::Bencher, kind: Kind) {
    let name = match kind.0 {
        "@" => ORIGIN.to_string(),
        n => format!("{n}.{ORIGIN}"),
    };
    let packet = query(&name, kind.1, kind.2);
    let snap = &*SMALL;
    let edge = Edge::default();
    let stats = Counters::default();
    let mut worker = Worker::new(&stats);
    let mut out = Vec::with_capacity(1500);
    let origin = Origin {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        transport: Transport::Udp,
        unix: 1_800_000_000,
        mono: 1,
    };
    assert!(dns::handle(
        snap,
        &edge,
        &origin,
        &packet,
        &mut worker,
        &mut out
    ));
    bencher.bench_local(|| {
        dns::handle(
            divan::black_box(snap),
            &edge,
            &origin,
            divan::black_box(&packet),
            &mut worker,
            &mut out,
        )
    });
}

/// The zones as loaded and every service name's selection: (services beyond the client-access
/// names, plain hosts).
fn big(extra: usize, hosts: usize) -> (Arc<Vec<Zone>>, Vec<ServiceView>) {
    let z = load(&zone_text(extra, hosts));
    let names = client_access().chain((0..extra).map(|s| format!("svc{s}")));
    let s = services(&z, names);
    (Arc::new(vec![z]), s)
}

/// The snapshot rebuild one health change costs, over the snapshot before it.
#[divan::bench(args = [(0, 200), (50, 100_000)], sample_count = 10, sample_size = 1)]
fn snapshot_rebuild(bencher: divan::Bencher, (extra, hosts): (usize, usize)) {
    let (zones, s) = big(extra, hosts);
    let before = build(&zones, &s, None);
    bencher.bench_local(|| build(divan::black_box(&zones), &s, Some(&before)));
}

/// The snapshot a start or a reload builds: every prebuilt answer of the zones.
#[divan::bench(args = [(0, 200), (50, 100_000)], sample_count = 10, sample_size = 1)]
fn snapshot_load(bencher: divan::Bencher, (extra, hosts): (usize, usize)) {
    let (zones, s) = big(extra, hosts);
    bencher.bench_local(|| build(divan::black_box(&zones), &s, None));
}
