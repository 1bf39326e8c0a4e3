//! Response Rate Limiting for DNS over UDP, with the semantics of NSD and Knot DNS.
//!
//! Each response is counted against a token bucket keyed by (the client's prefix: /24 for IPv4,
//! /56 for IPv6 by default; the response's class; its name): positive answers by the query name,
//! NXDOMAIN and NODATA by the zone (so random names under one zone share one bucket), errors all
//! together. A bucket allows `rate` responses a second with a burst of one second's worth. Past
//! it, responses are dropped, except every `slip`-th, which goes out truncated (TC=1, no
//! records): a real client behind a spoofed flood retries over TCP and is answered there.
//!
//! The table has a fixed number of slots, so memory stays bounded whatever the number of
//! spoofed prefixes. A key takes a slot whose bucket is full (idle), which is exactly a fresh
//! bucket; a key that meets a slot still in use by another key shares its bucket, which can
//! only limit sooner, never let more through. Each bucket is one atomic word (GCRA: the
//! theoretical arrival time), so UDP workers share the table without locks.

use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use siphasher::sip::SipHasher13;

const NANOS: u64 = 1_000_000_000;

/// RRL settings, validated (`[dns.rrl]`).
pub use crate::config::edge::RrlConfig as Settings;

/// What a response counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class<'a> {
    /// A positive answer or referral, keyed by the query name (lowercase wire form).
    Answer(&'a [u8]),
    /// NXDOMAIN or NODATA, keyed by the zone's origin.
    Negative(&'a [u8]),
    /// Any error rcode: one bucket per prefix.
    Error,
}

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within the rate: send it.
    Send,
    /// Over the rate: send a truncated reply instead.
    Slip,
    /// Over the rate: send nothing.
    Drop,
}

#[derive(Debug, Default)]
struct Slot {
    /// Fingerprint of the key that holds the slot.
    key: AtomicU64,
    /// GCRA theoretical arrival time, in nanoseconds since the limiter's epoch.
    tat: AtomicU64,
}

/// The bucket table. Shared by every UDP worker.
#[derive(Debug)]
pub struct Limiter {
    settings: Settings,
    slots: Box<[Slot]>,
    mask: usize,
    /// Nanoseconds one response costs.
    interval: u64,
    /// How far ahead of now a bucket may run: one second's burst.
    tolerance: u64,
    /// Keys the hash, so nobody outside can aim at a slot.
    seed: (u64, u64),
}

impl Limiter {
    /// An empty table for `settings`.
    pub fn new(settings: Settings) -> Self {
        let n = settings.table_size.clamp(1, 1 << 26).next_power_of_two();
        let rate = u64::from(settings.rate.max(1));
        let interval = NANOS / rate;
        Self {
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
            interval,
            tolerance: NANOS.saturating_sub(interval),
            seed: (rand::random(), rand::random()),
            settings,
        }
    }

    /// The settings the table was made for.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// True when responses to `ip` are never limited.
    pub fn exempt(&self, ip: IpAddr) -> bool {
        self.settings.exempt.iter().any(|n| n.contains(&ip))
    }

    /// Counts one response of `class` to `ip` at `now` (nanoseconds on a monotonic clock) and
    /// says whether it may go out. `slips` is the caller's count of limited responses, which
    /// picks every `slip`-th for a truncated reply.
    pub fn decide(&self, ip: IpAddr, class: Class<'_>, now: u64, slips: &mut u32) -> Decision {
        let hash = self.key(ip, class);
        let fingerprint = hash | 1;
        let Some(slot) = self.slots.get((hash >> 40) as usize & self.mask) else {
            return Decision::Send;
        };
        let now = now.max(1);
        if slot.key.load(Ordering::Relaxed) != fingerprint
            && slot.tat.load(Ordering::Relaxed) <= now
        {
            // An idle slot: its bucket is full, as a new key's would be.
            slot.key.store(fingerprint, Ordering::Relaxed);
        }
        let taken = slot
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                let start = tat.max(now);
                (start - now <= self.tolerance).then_some(start + self.interval)
            });
        if taken.is_ok() {
            return Decision::Send;
        }
        *slips = slips.wrapping_add(1);
        match self.settings.slip {
            0 => Decision::Drop,
            n if slips.is_multiple_of(n) => Decision::Slip,
            _ => Decision::Drop,
        }
    }

    fn key(&self, ip: IpAddr, class: Class<'_>) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.seed.0, self.seed.1);
        let len = match ip {
            IpAddr::V4(_) => self.settings.ipv4_prefix,
            IpAddr::V6(_) => self.settings.ipv6_prefix,
        };
        let prefix = ipnet::IpNet::new(ip, len).map_or(ip, |n| n.network());
        match prefix {
            IpAddr::V4(v4) => h.write(&v4.octets()),
            IpAddr::V6(v6) => h.write(&v6.octets()),
        }
        h.write_u8(len);
        match class {
            Class::Answer(name) => {
                h.write_u8(1);
                h.write(name);
            }
            Class::Negative(zone) => {
                h.write_u8(2);
                h.write(zone);
            }
            Class::Error => h.write_u8(3),
        }
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, slip: u32, table_size: usize) -> Limiter {
        Limiter::new(Settings {
            rate,
            slip,
            exempt: Vec::new(),
            table_size,
            ..Settings::default()
        })
    }

    fn count(l: &Limiter, ip: &str, class: Class<'_>, n: usize, at: u64) -> [usize; 3] {
        let ip: IpAddr = ip.parse().unwrap();
        let mut slips = 0;
        let mut out = [0; 3];
        for _ in 0..n {
            match l.decide(ip, class, at, &mut slips) {
                Decision::Send => out[0] += 1,
                Decision::Slip => out[1] += 1,
                Decision::Drop => out[2] += 1,
            }
        }
        out
    }

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let l = limiter(100, 2, 1024);
        let name = Class::Answer(b"\x03owa\x04test\x00");
        let [sent, slipped, dropped] = count(&l, "198.18.0.1", name, 1000, 5 * NANOS);
        assert_eq!(sent, 100, "one second's burst");
        assert_eq!(slipped, 450, "every second limited reply slips");
        assert_eq!(dropped, 450);
        // 100 ms later: 10 more.
        let [sent, ..] = count(&l, "198.18.0.1", name, 1000, 5 * NANOS + NANOS / 10);
        assert_eq!(sent, 10);
        // Long idle: the full burst again.
        let [sent, ..] = count(&l, "198.18.0.1", name, 1000, 50 * NANOS);
        assert_eq!(sent, 100);
    }

    #[test]
    fn keys_prefixes_and_classes() {
        let l = limiter(10, 0, 1 << 16);
        let a = Class::Answer(b"\x01a\x00");
        let b = Class::Answer(b"\x01b\x00");
        assert_eq!(count(&l, "198.18.0.1", a, 50, NANOS)[0], 10);
        // Same /24: same client.
        assert_eq!(count(&l, "198.18.0.200", a, 50, NANOS)[0], 0);
        // Another /24, another name, or another class: their own buckets.
        assert_eq!(count(&l, "198.18.1.1", a, 50, NANOS)[0], 10);
        assert_eq!(count(&l, "198.18.0.1", b, 50, NANOS)[0], 10);
        assert_eq!(count(&l, "198.18.0.1", Class::Error, 50, NANOS)[0], 10);
        // Negative answers share the zone's bucket whatever the name.
        let z = Class::Negative(b"\x04test\x00");
        assert_eq!(count(&l, "198.18.0.1", z, 50, NANOS)[0], 10);
        // IPv6: one /56 is one client.
        assert_eq!(count(&l, "2001:db8:0:1::1", a, 50, NANOS)[0], 10);
        assert_eq!(count(&l, "2001:db8:0:ff::2", a, 50, NANOS)[0], 0);
        assert_eq!(count(&l, "2001:db8:0:100::1", a, 50, NANOS)[0], 10);
        // slip = 0: nothing slips.
        assert_eq!(count(&l, "198.18.0.1", a, 50, NANOS)[1], 0);
    }

    #[test]
    fn a_flood_from_many_prefixes_stays_in_a_bounded_table_and_stays_limited() {
        // 16 slots for a million keys: memory stays fixed; no key gets more than its rate.
        let l = limiter(5, 0, 16);
        assert_eq!(l.slots.len(), 16);
        let mut sent = 0;
        let mut slips = 0;
        for i in 0..1_000_000u32 {
            let ip = IpAddr::from((0xc612_0000u32 | (i << 8)).to_be_bytes());
            if l.decide(ip, Class::Error, NANOS, &mut slips) == Decision::Send {
                sent += 1;
            }
        }
        assert!(
            sent <= 16 * 5,
            "{sent} sent within one second from 16 slots"
        );
        // A victim prefix flooded among them is limited too.
        let [sent, ..] = count(&l, "198.18.7.1", Class::Error, 100, NANOS);
        assert!(sent <= 5, "{sent}");
    }

    #[test]
    fn default_exempts_loopback_only() {
        let l = Limiter::new(Settings::default());
        assert!(l.exempt("127.0.0.1".parse().unwrap()));
        assert!(l.exempt("127.9.9.9".parse().unwrap()));
        assert!(l.exempt("::1".parse().unwrap()));
        assert!(!l.exempt("198.18.0.1".parse().unwrap()));
        assert_eq!(Settings::default().rate, 200);
    }
}
