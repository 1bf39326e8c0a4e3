//! Turns loaded records into a [`Zone`], rejecting what would break clients: data outside the
//! zone, a missing or misplaced SOA, no NS at the apex, a CNAME beside other data, MX/SRV/NS
//! targets that are in-zone CNAMEs (RFC 2181 §10.3), delegations whose in-bailiwick name servers
//! have no glue, and data hidden below a delegation.

use std::collections::BTreeSet;
use std::path::Path;

use hickory_proto::rr::{Name, RData, Record, RecordType};
use rustc_hash::FxHashMap;

use super::{label_starts, soa_of, wire_lower, Node, RRset, Zone};
use crate::diag::Diagnostic;

/// A record as the loader read it and where it was written (the file and line every diagnostic
/// names). Defined here, by its consumer, so the loader depends on the validator and not back.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub(crate) record: Record,
    pub(crate) file: std::sync::Arc<Path>,
    pub(crate) line: usize,
}

/// A zone's nodes by lowercase wire name.
type Nodes = FxHashMap<Box<[u8]>, Node>;

/// Groups records into nodes and RRsets and validates the result.
pub(super) fn build(
    path: &Path,
    origin: &Name,
    placed: Vec<Placed>,
    mut diags: Vec<Diagnostic>,
) -> Result<(Zone, Vec<Diagnostic>), Vec<Diagnostic>> {
    let (mut nodes, count) = group(origin, &placed, &mut diags);
    let soa = check_apex(path, origin, &placed, &nodes, &mut diags);
    check_cnames(&placed, &nodes, &mut diags);
    let cuts = mark_cuts(origin, &mut nodes);
    check_below_cuts(&placed, &cuts, &mut diags);
    check_targets(origin, &placed, &nodes, &mut diags);
    sort(&mut diags);
    let Some(soa) = soa.filter(|_| !diags.iter().any(Diagnostic::is_error)) else {
        return Err(diags);
    };
    let origin_wire = wire_lower(origin);
    add_empty_non_terminals(&origin_wire, &mut nodes);
    let mut negative_soa = soa.clone();
    let minimum = soa_of(&soa).map_or(0, |s| s.minimum);
    negative_soa.ttl = soa.ttl.min(minimum);
    Ok((
        Zone {
            origin: origin.clone(),
            origin_wire,
            nodes: std::sync::Arc::new(nodes),
            overlay: std::sync::Arc::default(),
            soa,
            negative_soa,
            file: path.to_path_buf(),
            record_count: count,
        },
        diags,
    ))
}

/// Groups the records inside the zone into nodes and RRsets (duplicates are one record; an
/// RRset takes its first record's TTL); returns the nodes and the records kept.
fn group(origin: &Name, placed: &[Placed], diags: &mut Vec<Diagnostic>) -> (Nodes, usize) {
    let mut nodes: Nodes = FxHashMap::default();
    let mut count = 0usize;
    for p in placed {
        let name = &p.record.name;
        if !origin.zone_of(name) {
            diags.push(Diagnostic::error(
                &p.file,
                Some(p.line),
                format!("owner {name} is outside the zone {origin}"),
            ));
            continue;
        }
        let node = nodes.entry(wire_lower(name)).or_insert_with(|| Node {
            name: name.clone(),
            rrsets: Vec::new(),
            cut: false,
            servfail: Vec::new(),
        });
        let rtype = p.record.record_type();
        match node.rrsets.iter_mut().find(|s| s.rtype == rtype) {
            Some(set) => {
                if set.records.iter().any(|r| r.data == p.record.data) {
                    continue; // RFC 2181 §5: duplicate records are one record
                }
                let ttl = set.records.first().map_or(p.record.ttl, |r| r.ttl);
                let mut r = p.record.clone();
                if r.ttl != ttl {
                    diags.push(Diagnostic::warning(
                        &p.file,
                        Some(p.line),
                        format!(
                            "TTL {} differs from the TTL {ttl} of the other {rtype} records of {name}; using {ttl} (RFC 2181 §5.2)",
                            r.ttl
                        ),
                    ));
                    r.ttl = ttl;
                }
                set.records.push(r);
            }
            None => node.rrsets.push(RRset {
                rtype,
                records: vec![p.record.clone()],
                line: p.line,
                file: p.file.clone(),
                rotations: Vec::new(),
            }),
        }
        count += 1;
    }
    (nodes, count)
}

/// SOA: exactly one, at the apex; NS at the apex. Returns the SOA record (None: reported).
fn check_apex(
    path: &Path,
    origin: &Name,
    placed: &[Placed],
    nodes: &Nodes,
    diags: &mut Vec<Diagnostic>,
) -> Option<Record> {
    for p in placed
        .iter()
        .filter(|p| p.record.record_type() == RecordType::SOA)
    {
        if p.record.name != *origin {
            diags.push(Diagnostic::error(
                &p.file,
                Some(p.line),
                format!(
                    "SOA record at {} is not at the zone apex {origin}",
                    p.record.name
                ),
            ));
        }
    }
    let apex = nodes.get(&wire_lower(origin));
    let soa = apex
        .and_then(|n| n.rrset(RecordType::SOA))
        .and_then(|s| Some((s.records.first()?.clone(), s.records.len(), s.file.clone())));
    match &soa {
        None => diags.push(Diagnostic::error(
            path,
            None,
            format!("zone {origin} has no SOA record at its apex"),
        )),
        Some((_, n, file)) if *n > 1 => diags.push(Diagnostic::error(
            file,
            Some(line_of_nth(placed, origin, RecordType::SOA, 1)),
            format!("zone {origin} has more than one SOA record"),
        )),
        Some(_) => {}
    }
    if apex.and_then(|n| n.rrset(RecordType::NS)).is_none() {
        diags.push(Diagnostic::error(
            path,
            None,
            format!("zone {origin} has no NS records at its apex"),
        ));
    }
    soa.map(|(record, _, _)| record)
}

/// A CNAME must stand alone, and be one record.
fn check_cnames(placed: &[Placed], nodes: &Nodes, diags: &mut Vec<Diagnostic>) {
    // CNAME must stand alone.
    for node in nodes.values() {
        let Some(cname) = node.rrset(RecordType::CNAME) else {
            continue;
        };
        if cname.records.len() > 1 {
            diags.push(Diagnostic::error(
                &cname.file,
                Some(line_of_nth(placed, &node.name, RecordType::CNAME, 1)),
                format!("{} has more than one CNAME record", node.name),
            ));
        }
        let others: Vec<String> = node
            .rrsets
            .iter()
            .filter(|s| s.rtype != RecordType::CNAME)
            .map(|s| s.rtype.to_string())
            .collect();
        if !others.is_empty() {
            diags.push(Diagnostic::error(
                &cname.file,
                Some(cname.line),
                format!(
                    "{} has a CNAME and other data ({}); a CNAME must stand alone (RFC 1034 §3.6.2)",
                    node.name,
                    others.join(", ")
                ),
            ));
        }
    }
}

/// Marks every node below the apex with NS records as a zone cut; returns the cuts.
fn mark_cuts(origin: &Name, nodes: &mut Nodes) -> Vec<Name> {
    let origin_wire = wire_lower(origin);
    let mut cuts: Vec<Name> = Vec::new();
    for (wire, node) in nodes.iter_mut() {
        if **wire != *origin_wire && node.rrset(RecordType::NS).is_some() {
            node.cut = true;
            cuts.push(node.name.clone());
        }
    }
    cuts
}

/// Data at or below a cut: only NS (and DS) at the cut and glue are served. Glue is an address
/// of a name some delegation's NS record names; any other address there is never served.
fn check_below_cuts(placed: &[Placed], cuts: &[Name], diags: &mut Vec<Diagnostic>) {
    let ns_targets: Vec<Name> = placed
        .iter()
        .filter_map(|p| match &p.record.data {
            RData::NS(ns) if cuts.contains(&p.record.name) => Some(ns.0.to_lowercase()),
            _ => None,
        })
        .collect();
    for p in placed {
        let name = &p.record.name;
        let rtype = p.record.record_type();
        let Some(cut) = cuts.iter().find(|c| c.zone_of(name)) else {
            continue;
        };
        let address = matches!(rtype, RecordType::A | RecordType::AAAA);
        let glue = address && ns_targets.contains(&name.to_lowercase());
        if address && !glue {
            diags.push(Diagnostic::error(
                &p.file,
                Some(p.line),
                format!(
                    "{rtype} record at {name} is below the delegation to {cut}, and no NS record names {name}, so it is not glue: it would never be served (move it above the delegation, or into the delegated zone)"
                ),
            ));
            continue;
        }
        let at_cut = name == cut;
        let ok = if at_cut {
            matches!(rtype, RecordType::NS | RecordType::DS) || glue
        } else {
            glue
        };
        if !ok {
            diags.push(Diagnostic::error(
                &p.file,
                Some(p.line),
                format!(
                    "{rtype} record at {name} is at or below the delegation to {cut} and would never be served"
                ),
            ));
        }
    }
}

/// MX, SRV and NS targets must not be CNAMEs; in-bailiwick name servers need glue.
fn check_targets(origin: &Name, placed: &[Placed], nodes: &Nodes, diags: &mut Vec<Diagnostic>) {
    for p in placed {
        let (kind, target) = match &p.record.data {
            RData::MX(mx) => ("MX", &mx.exchange),
            RData::SRV(srv) => ("SRV", &srv.target),
            RData::NS(ns) => ("NS", &ns.0),
            _ => continue,
        };
        if !origin.zone_of(target) || target.is_root() {
            continue;
        }
        let node = nodes.get(&wire_lower(target));
        if node.is_some_and(|n| n.rrset(RecordType::CNAME).is_some()) {
            diags.push(Diagnostic::error(
                &p.file,
                Some(p.line),
                format!("{kind} target {target} is a CNAME; it must be a name with A/AAAA records (RFC 2181 §10.3)"),
            ));
            continue;
        }
        let has_addr = node.is_some_and(|n| {
            n.rrset(RecordType::A).is_some() || n.rrset(RecordType::AAAA).is_some()
        });
        if kind == "NS" && p.record.name != *origin {
            if p.record.name.zone_of(target) && !has_addr {
                diags.push(Diagnostic::error(
                    &p.file,
                    Some(p.line),
                    format!(
                        "delegation {}: name server {target} is inside the delegated zone but has no glue A/AAAA record",
                        p.record.name
                    ),
                ));
            }
        } else if !has_addr {
            diags.push(Diagnostic::warning(
                &p.file,
                Some(p.line),
                format!("{kind} target {target} is in this zone but has no A or AAAA record"),
            ));
        }
    }
}

/// Empty non-terminals: every ancestor between an owner and the apex exists as a node.
fn add_empty_non_terminals(origin_wire: &[u8], nodes: &mut Nodes) {
    let mut starts = Vec::new();
    let mut ents: BTreeSet<Box<[u8]>> = BTreeSet::new();
    for wire in nodes.keys() {
        label_starts(wire, &mut starts);
        for tail in starts.iter().skip(1).filter_map(|&s| wire.get(s..)) {
            if tail.len() <= origin_wire.len() {
                break;
            }
            if !nodes.contains_key(tail) {
                ents.insert(tail.into());
            }
        }
    }
    for wire in ents {
        let Some(name) = name_from_wire(&wire) else {
            continue; // a suffix of a name that parsed: always a name itself
        };
        nodes.insert(
            wire,
            Node {
                name,
                rrsets: Vec::new(),
                cut: false,
                servfail: Vec::new(),
            },
        );
    }
}

fn line_of_nth(placed: &[Placed], name: &Name, rtype: RecordType, nth: usize) -> usize {
    placed
        .iter()
        .filter(|p| p.record.name == *name && p.record.record_type() == rtype)
        .nth(nth)
        .map_or(0, |p| p.line)
}

fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
}

/// A name from its lowercase wire form (the inverse of [`wire_lower`]).
pub(crate) fn name_from_wire(wire: &[u8]) -> Option<Name> {
    let mut labels = Vec::new();
    let mut rest = wire;
    while let Some((&len, tail)) = rest.split_first() {
        if len == 0 {
            break;
        }
        let (label, next) = tail.split_at_checked(usize::from(len))?;
        labels.push(label);
        rest = next;
    }
    let mut n = Name::from_labels(labels).ok()?;
    n.set_fqdn(true);
    Some(n)
}
