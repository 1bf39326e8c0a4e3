//! Connection slots per listener: a global cap, a cap per client prefix, and eviction of the
//! connection idle the longest when a cap is reached.
//!
//! One client cannot take every slot (its prefix's cap stops it first: /24 for IPv4 and /56 for
//! IPv6 by default, since one host holds a whole IPv6 /64), and a newcomer is not turned away by
//! connections that merely sit open: the one idle the longest goes instead, as Knot DNS and NSD
//! treat their TCP slots. Only a connection that says it is idle (waiting for its next request)
//! can be evicted; one in the middle of a request is bounded by its own I/O timeout.
//!
//! The decision ([`choose`]) is pure; [`Slots`] wraps it in a mutex held only to admit and
//! release, never across I/O.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

/// Caps of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Open connections at most.
    pub total: usize,
    /// Open connections per client prefix at most.
    pub per_client: usize,
    /// Prefix length that makes one IPv4 client.
    pub ipv4_prefix: u8,
    /// Prefix length that makes one IPv6 client.
    pub ipv6_prefix: u8,
}

impl Caps {
    /// The client prefix `ip` belongs to (v4-mapped addresses folded to IPv4 first).
    pub fn client(&self, ip: IpAddr) -> IpNet {
        let ip = crate::addr::canonical(ip);
        let len = match ip {
            IpAddr::V4(_) => self.ipv4_prefix.min(32),
            IpAddr::V6(_) => self.ipv6_prefix.min(128),
        };
        IpNet::new(ip, len).map_or_else(|_| IpNet::from(ip), |n| n.trunc())
    }
}

#[derive(Debug)]
struct Conn {
    client: IpNet,
    /// When it became idle (monotonic nanoseconds), while it is.
    idle_since: Option<u64>,
    evict: CancellationToken,
}

/// The open connections of one listener.
#[derive(Debug, Default)]
pub struct Table {
    next: u64,
    conns: HashMap<u64, Conn>,
    per_client: HashMap<IpNet, usize>,
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Room: take it.
    Admit,
    /// Take it once connection `id` (idle the longest, of its client when the client's cap is
    /// what is reached) is closed.
    Evict(u64),
    /// Full of busy connections: close the new one.
    Refuse,
}

/// The decision for a new connection from `client`.
pub fn choose(table: &Table, caps: &Caps, client: IpNet) -> Choice {
    let mine = table.per_client.get(&client).copied().unwrap_or(0);
    let scope = if mine >= caps.per_client {
        Some(client)
    } else if table.conns.len() >= caps.total {
        None
    } else {
        return Choice::Admit;
    };
    table
        .conns
        .iter()
        .filter(|(_, c)| scope.is_none_or(|s| c.client == s))
        .filter_map(|(&id, c)| Some((c.idle_since?, id)))
        .min()
        .map_or(Choice::Refuse, |(_, id)| Choice::Evict(id))
}

/// The slots of one listener.
#[derive(Debug)]
pub struct Slots {
    caps: Caps,
    table: Mutex<Table>,
}

/// A held slot: released when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    /// Cancelled when the slot is evicted: the connection should close.
    pub evicted: CancellationToken,
}

impl Slots {
    /// Empty slots with `caps`.
    pub fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Self {
            caps,
            table: Mutex::new(Table::default()),
        })
    }

    /// The caps this slot counts against.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// A slot for a connection from `ip`, evicting the connection idle the longest if a cap is
    /// reached; None if every connection in the way is busy.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let client = self.caps.client(ip);
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        match choose(&t, &self.caps, client) {
            Choice::Refuse => return None,
            Choice::Evict(id) => {
                if let Some(old) = remove(&mut t, id) {
                    old.evict.cancel();
                }
            }
            Choice::Admit => {}
        }
        t.next += 1;
        let id = t.next;
        let evicted = CancellationToken::new();
        t.conns.insert(
            id,
            Conn {
                client,
                idle_since: None,
                evict: evicted.clone(),
            },
        );
        *t.per_client.entry(client).or_insert(0) += 1;
        Some(Slot {
            slots: self.clone(),
            id,
            evicted,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .conns
            .len()
    }
}

fn remove(t: &mut Table, id: u64) -> Option<Conn> {
    let conn = t.conns.remove(&id)?;
    if let Some(n) = t.per_client.get_mut(&conn.client) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            t.per_client.remove(&conn.client);
        }
    }
    Some(conn)
}

impl Slot {
    /// Marks the connection idle since `now` (monotonic nanoseconds): it may be evicted.
    pub fn idle(&self, now: u64) {
        self.set(Some(now));
    }

    /// Marks the connection busy: it is not evicted until idle again.
    pub fn busy(&self) {
        self.set(None);
    }

    fn set(&self, idle_since: Option<u64>) {
        let mut t = self
            .slots
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = t.conns.get_mut(&self.id) {
            c.idle_since = idle_since;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self
            .slots
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        remove(&mut t, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, per_client: usize) -> Caps {
        Caps {
            total,
            per_client,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_prefix_cannot_take_every_slot() {
        let slots = Slots::new(caps(10, 3));
        let mine: Vec<Slot> = (1..=3)
            .map(|i| slots.admit(ip(&format!("198.18.0.{i}"))).unwrap())
            .collect();
        // The fourth from the same /24, all three busy: refused.
        assert!(slots.admit(ip("198.18.0.9")).is_none());
        // Another /24 is let in.
        let other = slots.admit(ip("198.18.1.1")).unwrap();
        // v4-mapped is the same client as plain IPv4.
        assert!(slots.admit(ip("::ffff:198.18.0.77")).is_none());
        // One of mine goes idle: the newcomer of the same prefix evicts it.
        mine[1].idle(5);
        let newcomer = slots.admit(ip("198.18.0.10")).unwrap();
        assert!(mine[1].evicted.is_cancelled());
        assert!(!mine[0].evicted.is_cancelled() && !other.evicted.is_cancelled());
        assert_eq!(slots.open(), 4);
        drop(newcomer);
        assert_eq!(slots.open(), 3);
    }

    #[test]
    fn a_full_listener_evicts_the_longest_idle() {
        let slots = Slots::new(caps(3, 3));
        let a = slots.admit(ip("198.18.0.1")).unwrap();
        let b = slots.admit(ip("198.18.1.1")).unwrap();
        let c = slots.admit(ip("198.18.2.1")).unwrap();
        // All busy: a fourth is refused.
        assert!(slots.admit(ip("198.18.3.1")).is_none());
        b.idle(20);
        c.idle(10);
        let _d = slots.admit(ip("198.18.3.1")).unwrap();
        assert!(c.evicted.is_cancelled(), "idle since 10: the longest");
        assert!(!b.evicted.is_cancelled() && !a.evicted.is_cancelled());
        // Busy again: not evictable.
        b.busy();
        assert!(slots.admit(ip("198.18.4.1")).is_none());
    }

    #[test]
    fn ipv6_clients_are_prefixes() {
        let c = caps(10, 1);
        assert_eq!(
            c.client(ip("2001:db8:0:1:aaaa::1")),
            c.client(ip("2001:db8:0:ff::2"))
        );
        assert_ne!(
            c.client(ip("2001:db8:0:100::1")),
            c.client(ip("2001:db8::1"))
        );
        let slots = Slots::new(c);
        let _one = slots.admit(ip("2001:db8:0:1::1")).unwrap();
        assert!(slots.admit(ip("2001:db8:0:2::1")).is_none());
    }
}
