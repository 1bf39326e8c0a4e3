//! Who is probed: every member address of every service name (the zone's A/AAAA records) times
//! the service's checks, and every relay backend times the relay's checks. Two checks with the
//! same dialogue on the same address and port are one probe.
//!
//! A service name has members in every zone that holds it, one per view in a split-horizon
//! config. A member at a server's public (NAT) address is probed at the server's own address,
//! so a server is probed once however many views answer it.

use std::collections::HashMap;
use std::net::IpAddr;

use tracing::warn;

use super::report::ProbeSpec;
use crate::config::relay::RelayDef;
use crate::config::HealthConfig;
use crate::zone::{wire_lower, Zone};

/// A service name and its members from the zone.
#[derive(Debug, Clone)]
pub(super) struct ServicePlan {
    /// The service's index in the config.
    pub(super) idx: usize,
    /// The zone (index in the loaded zones) these members come from.
    pub(super) zone: usize,
    /// Its IPv4 members.
    pub(super) v4: Vec<IpAddr>,
    /// Its IPv6 members.
    pub(super) v6: Vec<IpAddr>,
}

/// Who is probed, derived from the config and the zones.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Distinct probes.
    pub probes: Vec<ProbeSpec>,
    /// (address, check name) → probe index.
    pub pairs: HashMap<(IpAddr, String), usize>,
    /// Per service (config order): its members.
    pub(super) services: Vec<ServicePlan>,
}

impl Plan {
    /// Builds the plan: every member address of every service name, times its checks, and every
    /// relay backend times the relay's checks.
    pub fn new(health: &HealthConfig, relays: &[RelayDef], zones: &[Zone]) -> Self {
        let mut plan = Self::default();
        for relay in relays {
            for (_, addr, _) in &relay.servers {
                for check in &relay.checks {
                    plan.add_pair(health, *addr, check);
                }
            }
        }
        for (idx, svc) in health.services.iter().enumerate() {
            let wire = wire_lower(&svc.name);
            let mut found = false;
            for (zone, node) in zones
                .iter()
                .enumerate()
                .filter_map(|(i, z)| Some((i, z.node(&wire)?)))
            {
                let (mut v4, mut v6) = (Vec::new(), Vec::new());
                for ip in node
                    .rrsets
                    .iter()
                    .flat_map(|set| &set.records)
                    .filter_map(|r| r.data.ip_addr())
                {
                    if ip.is_ipv4() {
                        v4.push(ip);
                    } else {
                        v6.push(ip);
                    }
                }
                found |= !v4.is_empty() || !v6.is_empty();
                for &addr in v4.iter().chain(&v6) {
                    for check in &svc.checks {
                        plan.add_pair(health, health.probed_address(addr), check);
                    }
                }
                plan.services.push(ServicePlan { idx, zone, v4, v6 });
            }
            if !found {
                // Still listed (with no members), so every service has a view to show.
                let zone = zones
                    .iter()
                    .position(|z| z.origin.zone_of(&svc.name))
                    .unwrap_or(0);
                if !plan.services.iter().any(|p| p.idx == idx) {
                    plan.services.push(ServicePlan {
                        idx,
                        zone,
                        v4: Vec::new(),
                        v6: Vec::new(),
                    });
                }
                warn!(service = %svc.name, "service name has no A or AAAA records in its zone; nothing to check");
            }
        }
        plan
    }

    /// Adds the pair (addr, check), sharing a probe with an identical dialogue.
    fn add_pair(&mut self, health: &HealthConfig, addr: IpAddr, check: &str) {
        let Some(def) = health.check(check) else {
            return;
        };
        let key = (addr, check.to_string());
        if self.pairs.contains_key(&key) {
            return;
        }
        let existing = self
            .probes
            .iter()
            .position(|p| p.addr == addr && p.port == def.port && p.kind == def.kind);
        let shared = existing.and_then(|i| Some((i, self.probes.get_mut(i)?)));
        let i = match shared {
            Some((i, probe)) => {
                probe.checks.push(check.to_string());
                i
            }
            None => {
                self.probes.push(ProbeSpec {
                    addr,
                    port: def.port,
                    kind: def.kind.clone(),
                    timing: def.timing,
                    checks: vec![check.to_string()],
                });
                self.probes.len() - 1
            }
        };
        self.pairs.insert(key, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const CONFIG: &str = r#"
[[zone]]
name = "z.test"
file = "z.zone"
[[check]]
name = "owa"
kind = "https"
path = "/owa/healthcheck.htm"
tls_verify = false
[[check]]
name = "owa-again"
kind = "https"
path = "/owa/healthcheck.htm"
tls_verify = false
interval = "5s"
[[check]]
name = "ad"
kind = "https"
path = "/Autodiscover/healthcheck.htm"
tls_verify = false
[[service]]
name = "owa.z.test"
checks = ["owa", "ad"]
[[service]]
name = "autodiscover.z.test"
checks = ["owa-again", "ad"]
"#;

    #[test]
    fn identical_dialogues_are_probed_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("z.zone"),
            "$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 127.0.0.1\n\
             owa A 127.0.1.1\nowa A 127.0.1.2\nautodiscover A 127.0.1.2\nautodiscover A 127.0.1.3\n",
        )
        .unwrap();
        let cfg = Config::parse(&dir.path().join("m.toml"), CONFIG).unwrap();
        let (zones, _) = cfg.load_zones().unwrap();
        let plan = Plan::new(&cfg.health, &cfg.relays, &zones);
        // Addresses 1..3; /owa/ on 1 and 2 (shared by "owa" and "owa-again" on 2), /Autodiscover/ on 1..3.
        assert_eq!(plan.probes.len(), 6, "{:#?}", plan.probes);
        let shared = plan.pairs[&("127.0.1.2".parse().unwrap(), "owa".to_string())];
        assert_eq!(
            plan.pairs[&("127.0.1.2".parse().unwrap(), "owa-again".to_string())],
            shared
        );
        assert_eq!(plan.probes[shared].checks, ["owa", "owa-again"]);
    }
}
