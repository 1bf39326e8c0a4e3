//! The cost of the DNS edge (rate limiting, cookies) per query, measured in process: the same
//! query mix through `dns::handle` with the edge off and on, alternating, several rounds. On
//! this noisy two-core box an end-to-end run (bench/rrl.py) moves ±10 % between rounds, more
//! than the cost it looks for; here the cost shows as nanoseconds per query, to be set against
//! the server CPU per answer that bench/rrl.py measures.
//!
//! Usage: cargo bench --bench handle -- [ZONE_FILE [QUERIES_FILE [ROUNDS]]]
//! (defaults: the peers' zone and query mix under ../shared/peers). No network is used.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic here is a failed test, not a crashed server"
)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use mailns::config::Config;
use mailns::dns::{self, Counters, Edge, Origin, Transport, Worker};

/// Each variant's config: the edge off, rate limiting on (at a rate no bucket reaches in process, a billion a second, and
/// nobody exempt, so every query pays the bookkeeping), and rate limiting plus cookies.
const VARIANTS: [(&str, &str); 3] = [
    (
        "edge off",
        "[dns.rrl]\nenabled = false\n[dns.cookies]\nenabled = false\n",
    ),
    (
        "rrl on",
        "[dns.rrl]\nrate = 1000000000\nexempt = []\n[dns.cookies]\nenabled = false\n",
    ),
    (
        "rrl + cookies on",
        "[dns.rrl]\nrate = 1000000000\nexempt = []\n",
    ),
];

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers");
    let zone = args
        .first()
        .map_or_else(|| peers.join("zone/mail.example.test.zone"), PathBuf::from);
    let queries = args
        .get(1)
        .map_or_else(|| peers.join("queries.txt"), PathBuf::from);
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(9);
    let zone = std::fs::canonicalize(&zone).unwrap_or_else(|e| fail(&zone, e));
    let packets = read_queries(&queries);
    let setups: Vec<_> = VARIANTS
        .iter()
        .map(|(name, edge)| (*name, setup(&zone, edge)))
        .collect();

    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    let per_round = 2_000_000;
    for round in 0..rounds {
        // Rotate which variant goes first, so drift in the machine's speed spreads evenly.
        for k in 0..setups.len() {
            let i = (k + round) % setups.len();
            let (name, (snap, edge)) = &setups[i];
            let t = run(snap, edge, &packets, per_round);
            println!("round {} {name:18} {t:7.1} ns/query", round + 1);
            ns[i].push(t);
        }
    }
    println!("\n| variant | ns per query (median of {rounds}) | min-max | vs edge off |");
    println!("|---|---|---|---|");
    let base = median(&ns[0]);
    for ((name, _), t) in setups.iter().zip(&ns) {
        let (lo, hi) = t
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
        println!(
            "| {name} | {:.1} | {lo:.1}-{hi:.1} | {:+.1} % |",
            median(t),
            (median(t) / base - 1.0) * 100.0
        );
    }
}

fn setup(zone: &Path, edge_toml: &str) -> (mailns::state::Snapshot, Edge) {
    let toml = format!(
        "{edge_toml}\n[[zone]]\nname = \"mail.example.test\"\nfile = \"{}\"\n",
        zone.display()
    );
    let path = Path::new("bench.toml");
    let config = Config::parse(path, &toml).unwrap_or_else(|d| panic!("{d:?}"));
    let snap = mailns::runtime::load_snapshot(&config, &[]).unwrap_or_else(|d| panic!("{d:?}"));
    let edge = Edge::new(&config.dns, None, [7; 16]);
    (snap, edge)
}

/// Mean nanoseconds per `dns::handle` over `n` queries from the mix, with the clock read once
/// per 32 queries as the UDP worker reads it once per receive batch.
fn run(snap: &mailns::state::Snapshot, edge: &Edge, packets: &[Vec<u8>], n: usize) -> f64 {
    let stats = Counters::default();
    let mut worker = Worker::new(&stats);
    let mut out = Vec::with_capacity(1500);
    let mut answered = 0usize;
    let mut origin = Origin {
        ip: IpAddr::from([127, 0, 0, 1]),
        transport: Transport::Udp,
        unix: 0,
        mono: 0,
    };
    let start = Instant::now();
    for (i, p) in packets.iter().cycle().take(n).enumerate() {
        if i % 32 == 0 {
            origin.unix = mailns::addr::unix_seconds();
            origin.mono = mailns::addr::mono_nanos();
        }
        answered += usize::from(dns::handle(snap, edge, &origin, p, &mut worker, &mut out));
    }
    let t = start.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(answered, n, "every query answered (none rate limited)");
    t
}

/// The dnsperf-format query file ("name TYPE" per line) as wire-format queries.
fn read_queries(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| fail(path, e));
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let name = Name::from_ascii(it.next()?).ok()?;
            let rtype = RecordType::from_str(it.next().unwrap_or("A")).ok()?;
            let mut m = Message::query();
            m.add_query(Query::query(name, rtype));
            m.to_vec().ok()
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

fn fail(path: &Path, e: std::io::Error) -> ! {
    eprintln!("{}: {e}", path.display());
    std::process::exit(2)
}
