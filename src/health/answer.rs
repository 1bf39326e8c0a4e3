//! Pure answer selection: which addresses a service name is answered with, given the health of
//! its members, and which step of the all-down chain is in force. No I/O, no clock: `now` and the
//! time the preferred site went down are arguments.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::Status;
use crate::config::{AdminState, Fallback, OtherSites, ServiceDef};

/// One member of a service name: an address the zone gives the name, with what config and health
/// say of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's address, from the zone.
    pub addr: IpAddr,
    /// Its server's site.
    pub site: Option<String>,
    /// Its server's weight (share of first places).
    pub weight: u32,
    /// Its server's admin state.
    pub admin: AdminState,
    /// Combined health of every check the service requires: Up only if all are Up.
    pub health: Status,
    /// The required checks this member fails (empty unless `health` is Down).
    pub failing: Vec<String>,
}

/// Which rule produced an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Health is not known yet for some member: the zone's full set.
    Unknown,
    /// Healthy members (of the preferred site, where there is one).
    Healthy,
    /// The preferred site is down but the failover delay has not passed: its members, as before.
    FailoverPending,
    /// Healthy members of other sites.
    OtherSites,
    /// The configured relay addresses.
    Relay,
    /// The zone's full set (fail open).
    Zone,
    /// No addresses.
    Empty,
    /// SERVFAIL.
    Servfail,
}

impl Step {
    /// Every step, in [`Step::index`] order.
    pub const ALL: [Self; 8] = [
        Self::Unknown,
        Self::Healthy,
        Self::FailoverPending,
        Self::OtherSites,
        Self::Relay,
        Self::Zone,
        Self::Empty,
        Self::Servfail,
    ];

    /// Its position in [`Step::ALL`] (a counter index).
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    /// Name shown on the dashboard and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::FailoverPending => "failover-pending",
            Self::OtherSites => "other-sites",
            Self::Relay => "relay",
            Self::Zone => "zone",
            Self::Empty => "empty",
            Self::Servfail => "servfail",
        }
    }
}

/// What to answer for one service name and one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The rule in force.
    pub step: Step,
    /// Addresses in tiers: each tier is rotated on its own, earlier tiers come first.
    pub tiers: Vec<Vec<(IpAddr, u32)>>,
    /// True when the preferred site (or every site) has no healthy member.
    pub preferred_down: bool,
    /// When the answer will change by itself (a pending failover delay ends).
    pub wake_at: Option<Instant>,
    /// Per member (the order `select` was given them): why it is or is not answered. The
    /// dashboard and the status API show it; nothing on the query path reads it.
    pub why: Vec<(IpAddr, Why)>,
}

/// Why one member is or is not in a service name's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Why {
    /// Its address is in the answer set. A member answered for a reason other than
    /// [`Reason::Healthy`] or [`Reason::Rotating`] is answered by a fallback step.
    pub answered: bool,
    /// What config and health say of it.
    pub reason: Reason,
}

/// What config and health say of one member, as far as its answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// It passes every check the name requires and is `ready`.
    Healthy,
    /// Healthy, but more addresses qualify than `max_answers`, so each response carries a
    /// rotating share and the first rotation leaves it out.
    Rotating,
    /// It fails these checks.
    Failing(Vec<String>),
    /// Its server is drained.
    Drain,
    /// Its server is in maintenance.
    Maint,
    /// Healthy, but in a site the step in force does not answer.
    OtherSite,
    /// Its health is not known yet.
    Unknown,
}

impl Selection {
    /// True when at least one address is answered because it is healthy.
    pub fn has_healthy(&self) -> bool {
        matches!(self.step, Step::Healthy | Step::OtherSites | Step::Unknown)
    }
}

fn eligible(m: &Member) -> bool {
    m.health == Status::Up && m.admin == AdminState::Ready
}

fn addrs<'a>(it: impl Iterator<Item = &'a Member>) -> Vec<(IpAddr, u32)> {
    it.map(|m| (m.addr, m.weight)).collect()
}

/// Selects the answer for `svc` from `members` (one address family). `down_since` is when the
/// preferred site (or, without one, every member) last stopped having a healthy member.
pub fn select(
    svc: &ServiceDef,
    members: &[Member],
    down_since: Option<Instant>,
    now: Instant,
) -> Selection {
    let mut sel = choose(svc, members, down_since, now);
    sel.why = explain(members, &sel.tiers, svc.max_answers);
    sel
}

/// Why each member is or is not in `tiers` (a selection's answer set, `cap` addresses a
/// response).
fn explain(members: &[Member], tiers: &[Vec<(IpAddr, u32)>], cap: usize) -> Vec<(IpAddr, Why)> {
    let first = rotate(tiers, 0, cap);
    let why = |m: &Member| {
        let answered = tiers.iter().flatten().any(|(a, _)| *a == m.addr);
        let reason = match (m.admin, m.health) {
            (AdminState::Maint, _) => Reason::Maint,
            (AdminState::Drain, _) => Reason::Drain,
            (_, Status::Down) => Reason::Failing(m.failing.clone()),
            (_, Status::Unknown) => Reason::Unknown,
            (_, Status::Up) if !answered => Reason::OtherSite,
            (_, Status::Up) if first.contains(&m.addr) => Reason::Healthy,
            (_, Status::Up) => Reason::Rotating,
        };
        Why { answered, reason }
    };
    members.iter().map(|m| (m.addr, why(m))).collect()
}

fn choose(
    svc: &ServiceDef,
    members: &[Member],
    down_since: Option<Instant>,
    now: Instant,
) -> Selection {
    let zone_set = || {
        let live: Vec<&Member> = members
            .iter()
            .filter(|m| m.admin != AdminState::Maint)
            .collect();
        if live.is_empty() {
            addrs(members.iter())
        } else {
            addrs(live.into_iter())
        }
    };
    let sel = |step, tiers| Selection {
        step,
        tiers,
        preferred_down: false,
        wake_at: None,
        why: Vec::new(),
    };
    if members
        .iter()
        .any(|m| m.health == Status::Unknown && m.admin != AdminState::Maint)
    {
        return sel(Step::Unknown, vec![zone_set()]);
    }
    let in_pref = |m: &&Member| svc.site.is_none() || m.site == svc.site;
    let preferred: Vec<&Member> = members.iter().filter(in_pref).collect();
    let others: Vec<&Member> = members.iter().filter(|m| !in_pref(m)).collect();
    let pref_ok = addrs(preferred.iter().copied().filter(|m| eligible(m)));
    let others_ok = addrs(others.iter().copied().filter(|m| eligible(m)));

    if !pref_ok.is_empty() {
        let mut tiers = vec![pref_ok];
        if svc.other_sites == OtherSites::Include && !others_ok.is_empty() {
            tiers.push(others_ok);
        }
        return sel(Step::Healthy, tiers);
    }

    let mut out = sel(Step::Zone, vec![zone_set()]);
    out.preferred_down = true;
    for step in &svc.fallback {
        match step {
            Fallback::OtherSites => {
                if svc.site.is_none() || others_ok.is_empty() {
                    continue;
                }
                let since = down_since.unwrap_or(now);
                let due = since + svc.failover_delay;
                if svc.other_sites == OtherSites::Include || now >= due {
                    out.step = Step::OtherSites;
                    out.tiers = vec![others_ok];
                } else {
                    out.step = Step::FailoverPending;
                    out.tiers = vec![addrs(
                        preferred
                            .iter()
                            .copied()
                            .filter(|m| m.admin != AdminState::Maint),
                    )];
                    out.wake_at = Some(due);
                }
                return out;
            }
            Fallback::Relay => {
                let fam: Vec<(IpAddr, u32)> = svc
                    .relay_addresses
                    .iter()
                    .filter(|a| {
                        members
                            .first()
                            .is_none_or(|m| m.addr.is_ipv4() == a.is_ipv4())
                    })
                    .map(|&a| (a, 1))
                    .collect();
                if fam.is_empty() {
                    continue;
                }
                out.step = Step::Relay;
                out.tiers = vec![fam];
                return out;
            }
            Fallback::Zone => return out,
            Fallback::Empty => {
                out.step = Step::Empty;
                out.tiers = Vec::new();
                return out;
            }
            Fallback::Servfail => {
                out.step = Step::Servfail;
                out.tiers = Vec::new();
                return out;
            }
        }
    }
    out
}

/// The order of answer `rotation` for `tiers`: each tier rotated so that each member comes first
/// in proportion to its weight, tiers concatenated, at most `cap` addresses.
pub fn rotate(tiers: &[Vec<(IpAddr, u32)>], rotation: usize, cap: usize) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for tier in tiers {
        if tier.is_empty() {
            continue;
        }
        let total: usize = tier.iter().map(|(_, w)| *w as usize).sum();
        let mut slot = rotation % total.max(1);
        let mut start = 0;
        for (i, (_, w)) in tier.iter().enumerate() {
            if slot < *w as usize {
                start = i;
                break;
            }
            slot -= *w as usize;
        }
        let (head, tail) = tier.split_at(start);
        out.extend(tail.iter().chain(head).map(|(a, _)| *a));
    }
    out.truncate(cap);
    out
}

/// How many distinct rotations `tiers` has (the longest weighted cycle), at least 1.
pub fn rotation_count(tiers: &[Vec<(IpAddr, u32)>]) -> usize {
    tiers
        .iter()
        .map(|t| t.iter().map(|(_, w)| *w as usize).sum::<usize>())
        .max()
        .unwrap_or(1)
        .max(1)
}

/// How long a pending failover has left, for display.
pub fn remaining(sel: &Selection, now: Instant) -> Option<Duration> {
    sel.wake_at.map(|t| t.saturating_duration_since(now))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hickory_proto::rr::Name;

    use super::*;

    fn svc(site: Option<&str>, fallback: Vec<Fallback>) -> ServiceDef {
        ServiceDef {
            name: Name::from_ascii("owa.z.test.").unwrap(),
            checks: vec!["owa".into()],
            ttl: 30,
            max_answers: 8,
            site: site.map(String::from),
            other_sites: OtherSites::Failover,
            failover_delay: Duration::from_secs(60),
            fallback,
            relay_addresses: vec!["127.0.9.9".parse().unwrap()],
        }
    }

    fn m(last: u8, site: &str, health: Status) -> Member {
        Member {
            addr: IpAddr::from([127, 0, 1, last]),
            site: Some(site.into()),
            weight: 1,
            admin: AdminState::Ready,
            failing: if health == Status::Down {
                vec!["owa".into()]
            } else {
                Vec::new()
            },
            health,
        }
    }

    fn flat(s: &Selection) -> Vec<u8> {
        s.tiers
            .iter()
            .flatten()
            .map(|(a, _)| match a {
                IpAddr::V4(v) => v.octets()[3],
                IpAddr::V6(_) => 0,
            })
            .collect()
    }

    const ALL: [Fallback; 5] = [
        Fallback::OtherSites,
        Fallback::Relay,
        Fallback::Zone,
        Fallback::Empty,
        Fallback::Servfail,
    ];

    #[test]
    fn healthy_members_only() {
        let now = Instant::now();
        let ms = [
            m(1, "a", Status::Up),
            m(2, "a", Status::Down),
            m(3, "a", Status::Up),
        ];
        let s = select(&svc(None, ALL.to_vec()), &ms, None, now);
        assert_eq!((s.step, flat(&s)), (Step::Healthy, vec![1, 3]));
    }

    #[test]
    fn unknown_health_answers_the_zone_set() {
        let ms = [m(1, "a", Status::Up), m(2, "a", Status::Unknown)];
        let s = select(&svc(None, ALL.to_vec()), &ms, None, Instant::now());
        assert_eq!((s.step, flat(&s)), (Step::Unknown, vec![1, 2]));
    }

    #[test]
    fn drain_and_maint_leave_the_answer() {
        let mut ms = vec![
            m(1, "a", Status::Up),
            m(2, "a", Status::Up),
            m(3, "a", Status::Up),
        ];
        ms[0].admin = AdminState::Drain;
        ms[1].admin = AdminState::Maint;
        let s = select(&svc(None, ALL.to_vec()), &ms, None, Instant::now());
        assert_eq!(flat(&s), vec![3]);
        // All down: the zone set leaves maint out, keeps drain.
        ms[2].health = Status::Down;
        let s = select(&svc(None, vec![Fallback::Zone]), &ms, None, Instant::now());
        assert_eq!((s.step, flat(&s)), (Step::Zone, vec![1, 3]));
    }

    #[test]
    fn preferred_site_then_delayed_failover() {
        let now = Instant::now();
        let up = [m(1, "a", Status::Up), m(2, "b", Status::Up)];
        let s = select(&svc(Some("a"), ALL.to_vec()), &up, None, now);
        assert_eq!((s.step, flat(&s)), (Step::Healthy, vec![1]));
        let down = [m(1, "a", Status::Down), m(2, "b", Status::Up)];
        let s = select(
            &svc(Some("a"), ALL.to_vec()),
            &down,
            Some(now),
            now + Duration::from_secs(10),
        );
        assert_eq!((s.step, flat(&s)), (Step::FailoverPending, vec![1]));
        assert_eq!(s.wake_at, Some(now + Duration::from_secs(60)));
        let s = select(
            &svc(Some("a"), ALL.to_vec()),
            &down,
            Some(now),
            now + Duration::from_secs(60),
        );
        assert_eq!((s.step, flat(&s)), (Step::OtherSites, vec![2]));
    }

    #[test]
    fn include_puts_other_sites_after_the_preferred_one() {
        let mut d = svc(Some("a"), ALL.to_vec());
        d.other_sites = OtherSites::Include;
        let ms = [m(2, "b", Status::Up), m(1, "a", Status::Up)];
        let s = select(&d, &ms, None, Instant::now());
        assert_eq!(s.tiers.len(), 2);
        assert_eq!(flat(&s), vec![1, 2]);
    }

    #[test]
    fn the_chain_in_order() {
        let now = Instant::now();
        let down = [m(1, "a", Status::Down), m(2, "a", Status::Down)];
        let pick = |f: Vec<Fallback>| select(&svc(None, f), &down, Some(now), now).step;
        assert_eq!(
            pick(ALL.to_vec()),
            Step::Relay,
            "no site: other-sites is skipped"
        );
        assert_eq!(pick(vec![Fallback::Zone, Fallback::Empty]), Step::Zone);
        assert_eq!(pick(vec![Fallback::Empty]), Step::Empty);
        assert_eq!(pick(vec![Fallback::Servfail]), Step::Servfail);
        assert_eq!(pick(vec![]), Step::Zone, "an exhausted chain fails open");
        let s = select(&svc(None, vec![Fallback::Relay]), &down, None, now);
        assert_eq!(s.tiers, vec![vec![("127.0.9.9".parse().unwrap(), 1)]]);
    }

    fn reasons(s: &Selection) -> Vec<(bool, Reason)> {
        s.why
            .iter()
            .map(|(_, w)| (w.answered, w.reason.clone()))
            .collect()
    }

    #[test]
    fn each_member_says_why() {
        let now = Instant::now();
        let owa = || Reason::Failing(vec!["owa".into()]);
        let mut ms = vec![
            m(1, "a", Status::Up),
            m(2, "a", Status::Down),
            m(3, "a", Status::Up),
            m(4, "b", Status::Up),
            m(5, "a", Status::Up),
        ];
        ms[2].admin = AdminState::Drain;
        ms[4].admin = AdminState::Maint;
        let s = select(&svc(Some("a"), ALL.to_vec()), &ms, None, now);
        assert_eq!(
            reasons(&s),
            vec![
                (true, Reason::Healthy),
                (false, owa()),
                (false, Reason::Drain),
                (false, Reason::OtherSite),
                (false, Reason::Maint)
            ]
        );
        // Failing open: the failing and the drained members are answered, maint is not.
        ms[0].health = Status::Down;
        ms[0].failing = vec!["owa".into()];
        ms[3].site = Some("a".into());
        ms[3].health = Status::Down;
        ms[3].failing = vec!["owa".into()];
        let s = select(&svc(None, vec![Fallback::Zone]), &ms, None, now);
        assert_eq!(s.step, Step::Zone);
        assert_eq!(
            reasons(&s),
            vec![
                (true, owa()),
                (true, owa()),
                (true, Reason::Drain),
                (true, owa()),
                (false, Reason::Maint)
            ]
        );
        // More healthy members than max_answers: the rest rotate.
        let mut d = svc(None, ALL.to_vec());
        d.max_answers = 2;
        let up: Vec<Member> = (1..=3).map(|i| m(i, "a", Status::Up)).collect();
        let s = select(&d, &up, None, now);
        assert_eq!(
            reasons(&s),
            vec![
                (true, Reason::Healthy),
                (true, Reason::Healthy),
                (true, Reason::Rotating)
            ]
        );
    }

    #[test]
    fn rotation_is_per_tier_weighted_and_capped() {
        let a = |x: u8| IpAddr::from([127, 0, 0, x]);
        let tiers = vec![vec![(a(1), 1), (a(2), 2)], vec![(a(9), 1)]];
        assert_eq!(rotation_count(&tiers), 3);
        assert_eq!(rotate(&tiers, 0, 8), vec![a(1), a(2), a(9)]);
        assert_eq!(rotate(&tiers, 1, 8), vec![a(2), a(1), a(9)]);
        assert_eq!(rotate(&tiers, 2, 8), vec![a(2), a(1), a(9)]);
        assert_eq!(rotate(&tiers, 3, 2), vec![a(1), a(2)]);
    }
}
