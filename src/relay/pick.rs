//! Pure backend selection: which server a new relay connection goes to, and in which order the
//! others are tried if the connect fails. No I/O.
//!
//! `source-hash` follows relayd: a keyed hash of the client address modulo *all* configured
//! server slots (weights repeat a server), rehashing past unusable ones. A client of a healthy
//! server therefore never moves when another server fails or returns, and two mailns nodes with
//! the same key map a client to the same server.

use std::net::IpAddr;

use crate::config::relay::Balance;

/// One configured server as the picker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Weight: slots in the hash ring and share in round robin (≥ 1).
    pub weight: u32,
    /// Passes every check of the relay and is `ready`.
    pub usable: bool,
    /// Active connections (for least-connections).
    pub active: u64,
}

/// FNV-1a over `key` then `data`, finished with splitmix64 for a well-spread 64-bit value. It is
/// fixed and documented so that every mailns node computes the same picks.
pub fn keyed_hash(key: &[u8], data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.iter().chain(data) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// The order in which to try servers for a new connection from `client`: the pick first, then
/// the fallbacks. Only usable servers appear; empty means refuse.
pub fn order(
    balance: Balance,
    servers: &[Candidate],
    client: IpAddr,
    key: &[u8],
    turn: u64,
) -> Vec<usize> {
    let usable: Vec<usize> = servers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.usable)
        .map(|(i, _)| i)
        .collect();
    let weight = |i: usize| servers.get(i).map_or(1, |s| s.weight.max(1) as usize);
    if usable.is_empty() {
        return usable;
    }
    match balance {
        Balance::SourceHash => {
            let slots: Vec<usize> = servers
                .iter()
                .enumerate()
                .flat_map(|(i, s)| std::iter::repeat_n(i, s.weight.max(1) as usize))
                .collect();
            let mut out = Vec::with_capacity(usable.len());
            let mut h = keyed_hash(key, &ip_bytes(client));
            // Rehash until every usable server has been placed (bounded: then fill in order).
            for _ in 0..slots.len() * 4 {
                let Some(&i) = slots.get((h % slots.len() as u64) as usize) else {
                    break;
                };
                if servers.get(i).is_some_and(|s| s.usable) && !out.contains(&i) {
                    out.push(i);
                    if out.len() == usable.len() {
                        return out;
                    }
                }
                h = keyed_hash(key, &h.to_be_bytes());
            }
            out.extend(
                usable
                    .iter()
                    .filter(|i| !out.contains(i))
                    .copied()
                    .collect::<Vec<_>>(),
            );
            out
        }
        Balance::RoundRobin => {
            let slots: Vec<usize> = usable
                .iter()
                .flat_map(|&i| std::iter::repeat_n(i, weight(i)))
                .collect();
            // The weighted ring, read from a point that moves each turn.
            let start = (turn % slots.len() as u64) as usize;
            let (head, tail) = slots.split_at(start.min(slots.len()));
            let mut out = Vec::with_capacity(usable.len());
            for &i in tail.iter().chain(head) {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
            out
        }
        Balance::LeastConnections => {
            let mut out = usable;
            // Fewest connections per unit of weight first; ties broken in turn.
            out.sort_by_key(|&i| {
                let active = servers.get(i).map_or(0, |s| s.active);
                (
                    active.saturating_mul(1000) / weight(i) as u64,
                    (i as u64).wrapping_add(turn) % servers.len() as u64,
                )
            });
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn up(n: usize) -> Vec<Candidate> {
        vec![
            Candidate {
                weight: 1,
                usable: true,
                active: 0
            };
            n
        ]
    }

    fn client(i: u32) -> IpAddr {
        IpAddr::from([
            127,
            10u8.wrapping_add((i >> 16) as u8),
            (i >> 8) as u8,
            i as u8,
        ])
    }

    #[test]
    fn source_hash_spreads_and_is_stable() {
        let servers = up(3);
        let mut count = HashMap::new();
        for i in 0..3000 {
            let o = order(Balance::SourceHash, &servers, client(i), b"k", 0);
            assert_eq!(o.len(), 3);
            *count.entry(o[0]).or_insert(0) += 1;
            assert_eq!(
                o,
                order(Balance::SourceHash, &servers, client(i), b"k", 99),
                "deterministic"
            );
        }
        for s in 0..3 {
            assert!((800..1200).contains(&count[&s]), "{count:?}");
        }
    }

    #[test]
    fn only_the_clients_of_a_dead_server_move() {
        let mut servers = up(4);
        let before: Vec<usize> = (0..2000)
            .map(|i| order(Balance::SourceHash, &servers, client(i), b"k", 0)[0])
            .collect();
        servers[2].usable = false;
        for (i, &b) in before.iter().enumerate() {
            let now = order(Balance::SourceHash, &servers, client(i as u32), b"k", 0)[0];
            if b == 2 {
                assert_ne!(now, 2);
            } else {
                assert_eq!(now, b, "client {i} of a healthy server moved");
            }
        }
        servers[2].usable = true;
        for (i, &b) in before.iter().enumerate() {
            assert_eq!(
                order(Balance::SourceHash, &servers, client(i as u32), b"k", 0)[0],
                b,
                "they return"
            );
        }
    }

    #[test]
    fn the_key_changes_the_map_and_weights_count() {
        let servers = up(3);
        let differ = (0..100).filter(|&i| {
            order(Balance::SourceHash, &servers, client(i), b"a", 0)[0]
                != order(Balance::SourceHash, &servers, client(i), b"b", 0)[0]
        });
        assert!(differ.count() > 30);
        let mut w = up(2);
        w[0].weight = 3;
        let zero = (0..4000)
            .filter(|&i| order(Balance::SourceHash, &w, client(i), b"k", 0)[0] == 0)
            .count();
        assert!((2700..3300).contains(&zero), "weight 3 of 4 slots: {zero}");
    }

    #[test]
    fn round_robin_and_least_connections() {
        let mut s = up(3);
        let firsts: Vec<usize> = (0..6)
            .map(|t| order(Balance::RoundRobin, &s, client(0), b"", t)[0])
            .collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
        s[1].usable = false;
        assert_eq!(order(Balance::RoundRobin, &s, client(0), b"", 1), [2, 0]);
        s[1].usable = true;
        s[0].active = 5;
        s[1].active = 1;
        s[2].active = 3;
        assert_eq!(
            order(Balance::LeastConnections, &s, client(0), b"", 0),
            [1, 2, 0]
        );
    }

    #[test]
    fn nothing_usable_means_refuse() {
        let mut s = up(2);
        s[0].usable = false;
        s[1].usable = false;
        for b in [
            Balance::SourceHash,
            Balance::RoundRobin,
            Balance::LeastConnections,
        ] {
            assert!(order(b, &s, client(1), b"k", 0).is_empty());
        }
    }

    proptest! {
        /// Every order lists each usable server exactly once, and no unusable one.
        #[test]
        fn orders_are_permutations_of_the_usable(flags in proptest::collection::vec((any::<bool>(), 1u32..4), 1..8), c in any::<u32>(), t in any::<u64>()) {
            let servers: Vec<Candidate> = flags.iter().map(|&(u, w)| Candidate { weight: w, usable: u, active: u64::from(w) }).collect();
            for b in [Balance::SourceHash, Balance::RoundRobin, Balance::LeastConnections] {
                let mut o = order(b, &servers, client(c), b"key", t);
                o.sort_unstable();
                let want: Vec<usize> = (0..servers.len()).filter(|&i| servers[i].usable).collect();
                prop_assert_eq!(o, want);
            }
        }
    }
}
