//! Health the nodes agree on: this node's raw check states and its peers' (read by the cluster
//! poller from their admin APIs) combined by `[cluster] policy` into the state that answers
//! and relays use. Pure: the engine calls [`decide`] per probe, the poller fills [`Votes`].
//!
//! A peer that did not answer its last poll has no vote: a node that reaches none of its peers
//! decides alone, and says so ([`Votes::alone`]). A peer with no result for a pair (starting,
//! or a config that differs) has no vote on that pair.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::SystemTime;

use super::Status;
use crate::config::cluster::Policy;

/// What one peer said at its last poll.
#[derive(Debug, Clone, Default)]
pub struct PeerVotes {
    /// The peer's URL, as configured.
    pub url: String,
    /// Its last poll answered.
    pub reachable: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
    /// When it last answered.
    pub last_ok: Option<SystemTime>,
    /// Its raw state per (address, check name).
    pub checks: HashMap<(IpAddr, String), Status>,
}

/// Every peer's latest votes.
#[derive(Debug, Clone, Default)]
pub struct Votes {
    /// One per configured peer, in config order.
    pub peers: Vec<PeerVotes>,
}

impl Votes {
    /// True when peers are configured and none answered: this node decides alone.
    pub fn alone(&self) -> bool {
        !self.peers.is_empty() && self.peers.iter().all(|p| !p.reachable)
    }

    /// The reachable peers' votes on a probe known by `keys` (its address and check names;
    /// the first key a peer has a state for is its vote).
    pub fn on<'a>(&'a self, keys: &'a [(IpAddr, String)]) -> impl Iterator<Item = Status> + 'a {
        self.peers
            .iter()
            .filter(|p| p.reachable)
            .filter_map(move |p| {
                keys.iter()
                    .find_map(|k| p.checks.get(k).copied())
                    .filter(|s| *s != Status::Unknown)
            })
    }
}

/// The state that counts, from this node's own and the peers' votes. Unknown votes do not
/// count; with no known vote at all the state is unknown.
pub fn decide(policy: Policy, own: Status, peers: impl Iterator<Item = Status>) -> Status {
    let known = std::iter::once(own)
        .chain(peers)
        .filter(|s| *s != Status::Unknown);
    let (mut n, mut down) = (0usize, 0usize);
    for s in known {
        n += 1;
        down += usize::from(s == Status::Down);
    }
    if n == 0 {
        return Status::Unknown;
    }
    let is_down = match policy {
        Policy::Any => down > 0,
        Policy::All => down == n,
        Policy::Quorum => down * 2 > n,
    };
    if is_down {
        Status::Down
    } else {
        Status::Up
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::{Down, Unknown, Up};

    fn d(policy: Policy, own: Status, peers: &[Status]) -> Status {
        decide(policy, own, peers.iter().copied())
    }

    #[test]
    fn two_nodes_under_each_policy() {
        // Only this node sees the server down.
        assert_eq!(d(Policy::Quorum, Down, &[Up]), Up);
        assert_eq!(d(Policy::All, Down, &[Up]), Up);
        assert_eq!(d(Policy::Any, Down, &[Up]), Down);
        // Only the peer does: the same answer on both nodes.
        assert_eq!(d(Policy::Quorum, Up, &[Down]), Up);
        assert_eq!(d(Policy::Any, Up, &[Down]), Down);
        // Both do.
        for p in [Policy::Quorum, Policy::All, Policy::Any] {
            assert_eq!(d(p, Down, &[Down]), Down);
            assert_eq!(d(p, Up, &[Up]), Up);
        }
    }

    #[test]
    fn three_nodes_and_missing_votes() {
        assert_eq!(d(Policy::Quorum, Up, &[Down, Down]), Down);
        assert_eq!(d(Policy::Quorum, Down, &[Up, Down]), Down);
        assert_eq!(d(Policy::Quorum, Down, &[Up, Up]), Up);
        assert_eq!(d(Policy::All, Down, &[Down, Up]), Up);
        // A peer without a result does not vote; alone, the own state counts.
        assert_eq!(d(Policy::Quorum, Down, &[Unknown]), Down);
        assert_eq!(d(Policy::Quorum, Down, &[]), Down);
        assert_eq!(d(Policy::Quorum, Unknown, &[Down]), Down);
        assert_eq!(d(Policy::Any, Unknown, &[]), Unknown);
    }

    #[test]
    fn only_reachable_peers_vote_and_alone_says_so() {
        let key = ("198.18.2.11".parse().unwrap(), "smtp".to_string());
        let peer = |reachable, s| PeerVotes {
            reachable,
            checks: [(key.clone(), s)].into(),
            ..PeerVotes::default()
        };
        let v = Votes {
            peers: vec![peer(true, Down), peer(false, Up)],
        };
        let keys = [key.clone()];
        assert_eq!(v.on(&keys).collect::<Vec<_>>(), [Down]);
        assert!(!v.alone());
        let v = Votes {
            peers: vec![peer(false, Down)],
        };
        assert!(v.alone() && v.on(&keys).next().is_none());
        assert!(!Votes::default().alone());
    }
}
