//! Reads a master file (and its `$INCLUDE`s) into records with file and line, then hands them to
//! validation.
//!
//! Directives, owners, TTLs and classes are handled here, so each error can name its line; the
//! record data of each entry is parsed by hickory's zone `Parser`, one record at a time. Unlike
//! hickory's parser this loader rejects a record with no type (hickory drops it silently),
//! keeps `$ORIGIN` and `$TTL` inside the file that sets them (RFC 1035 §5.1: an include's origin
//! does not leak into its parent), supports `$INCLUDE file origin`, and accepts `@` in record data.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, HINFO, MX, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::{parse_ttl, Parser};

use super::lex::{self, Entry, Token};
use super::validate::{self, Placed};
use super::Zone;
use crate::diag::Diagnostic;

/// `$INCLUDE` nesting deeper than this is an error (it is almost always a loop).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Files read for one zone at most: a file that includes another twice, nested, would otherwise
/// be read 2^16 times (found by the `zone_file` fuzzer).
const MAX_FILES: usize = 256;

/// The largest TTL RFC 2181 §8 allows.
const MAX_TTL: u32 = 0x7fff_ffff;

/// Loads and validates the zone `origin` from `path`.
///
/// # Errors
/// Every problem found, as `path:line: message` diagnostics; warnings ride along in the `Ok` case.
pub fn load_zone(path: &Path, origin: &Name) -> Result<(Zone, Vec<Diagnostic>), Vec<Diagnostic>> {
    load_zone_from(path, origin, &|p| fs::read_to_string(p))
}

/// [`load_zone`] with the files (`path` and every `$INCLUDE`) read by `read`: the fuzzer serves
/// them from memory.
///
/// # Errors
/// As [`load_zone`].
pub fn load_zone_from(
    path: &Path,
    origin: &Name,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<(Zone, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut origin = origin.to_lowercase();
    origin.set_fqdn(true);
    let mut loader = Loader {
        diags: Vec::new(),
        records: Vec::new(),
        read,
        chain: Vec::new(),
        files_read: 0,
        last_file: None,
    };
    loader.file(path, &origin, None, None, 0);
    if loader.diags.iter().any(Diagnostic::is_error) {
        return Err(loader.diags);
    }
    validate::build(path, &origin, loader.records, loader.diags)
}

struct Loader<'r> {
    diags: Vec<Diagnostic>,
    records: Vec<Placed>,
    read: &'r dyn Fn(&Path) -> std::io::Result<String>,
    /// The files being read, outermost first: a file in it that is included again is a loop.
    chain: Vec<PathBuf>,
    /// Files read so far.
    files_read: usize,
    /// The file the last record came from, shared by every record read from it.
    last_file: Option<std::sync::Arc<Path>>,
}

/// Per-file parsing state (RFC 1035: `$ORIGIN`/`$TTL` hold until the end of the file).
struct FileState {
    origin: Name,
    default_ttl: Option<u32>,
    last_ttl: Option<u32>,
    last_owner: Option<Name>,
}

impl Loader<'_> {
    fn file(
        &mut self,
        path: &Path,
        origin: &Name,
        ttl: Option<u32>,
        from: Option<(&Path, usize)>,
        depth: usize,
    ) {
        self.files_read += 1;
        self.chain.push(path.to_path_buf());
        self.read_file(path, origin, ttl, from, depth);
        self.chain.pop();
    }

    fn read_file(
        &mut self,
        path: &Path,
        origin: &Name,
        ttl: Option<u32>,
        from: Option<(&Path, usize)>,
        depth: usize,
    ) {
        let text = match (self.read)(path) {
            Ok(t) => t,
            Err(e) => {
                let d = match from {
                    Some((parent, line)) => Diagnostic::error(
                        parent,
                        Some(line),
                        format!("cannot read included file {}: {e}", path.display()),
                    ),
                    None => Diagnostic::error(path, None, format!("cannot read zone file: {e}")),
                };
                self.diags.push(d);
                return;
            }
        };
        let entries = match lex::entries(&text) {
            Ok(e) => e,
            Err(e) => {
                self.diags
                    .push(Diagnostic::error(path, Some(e.line), e.message));
                return;
            }
        };
        let mut st = FileState {
            origin: origin.clone(),
            default_ttl: ttl,
            last_ttl: None,
            last_owner: None,
        };
        for entry in &entries {
            if let Err(message) = self.entry(path, entry, &mut st, depth) {
                self.diags
                    .push(Diagnostic::error(path, Some(entry.line), message));
            }
        }
    }

    fn entry(
        &mut self,
        path: &Path,
        entry: &Entry,
        st: &mut FileState,
        depth: usize,
    ) -> Result<(), String> {
        let toks = &entry.tokens;
        let Some(first_token) = toks.first() else {
            return Ok(()); // the lexer makes no empty entries; nothing to load if it did
        };
        if !entry.blank_owner && first_token.text.starts_with('$') {
            return self.directive(path, entry, st, depth);
        }

        // Owner.
        let mut i = 0;
        let owner = if entry.blank_owner {
            st.last_owner
                .clone()
                .ok_or("record has no owner name and no previous record to take it from")?
        } else {
            i = 1;
            parse_name(first_token, &st.origin)?
        };
        st.last_owner = Some(owner.clone());

        // [TTL] [class] in either order, then the type.
        let mut ttl = None;
        let mut rtype = None;
        while let Some(t) = toks.get(i) {
            i += 1;
            let s = t.text.as_str();
            if s.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                if ttl.is_some() {
                    return Err(format!("unexpected '{s}': the TTL is already given"));
                }
                if s.parse::<std::net::IpAddr>().is_ok() {
                    return Err(format!(
                        "record for {owner} has no type: '{s}' is an address, so the type is missing before it (write e.g. '{} A {s}')",
                        first_token.text
                    ));
                }
                ttl = Some(parse_ttl_checked(s)?);
            } else if is_class(s) {
                if !s.eq_ignore_ascii_case("IN") {
                    return Err(format!(
                        "class {s} is not supported; mailns serves class IN only"
                    ));
                }
            } else {
                let upper = s.to_ascii_uppercase();
                let t = RecordType::from_str(&upper)
                    .map_err(|_| format!("unknown record type '{s}'"))?;
                if matches!(t, RecordType::Unknown(_)) || t.is_any() || t == RecordType::OPT {
                    return Err(format!(
                        "record type '{s}' cannot be loaded from a zone file"
                    ));
                }
                rtype = Some(t);
                break;
            }
        }
        let rtype = rtype.ok_or_else(|| {
            format!("record for {owner} has no type (expected e.g. A, MX, TXT after the owner, TTL and class)")
        })?;
        let ttl = match ttl {
            Some(t) => {
                st.last_ttl = Some(t);
                t
            }
            None => st.default_ttl.or(st.last_ttl).ok_or(
                "record has no TTL and none is set before it: add a $TTL line or a TTL to the record",
            )?,
        };
        let rdata_tokens = toks.get(i..).unwrap_or_default();
        if rdata_tokens.is_empty() {
            return Err(format!("{rtype} record for {owner} has no data"));
        }
        let data = parse_rdata(rtype, rdata_tokens, &st.origin)?;
        let mut record = Record::from_rdata(owner.to_lowercase(), ttl, data);
        record.name.set_fqdn(true);
        let file = match &self.last_file {
            Some(f) if **f == *path => f.clone(),
            _ => self.last_file.insert(path.into()).clone(),
        };
        self.records.push(Placed {
            record,
            file,
            line: entry.line,
        });
        Ok(())
    }

    fn directive(
        &mut self,
        path: &Path,
        entry: &Entry,
        st: &mut FileState,
        depth: usize,
    ) -> Result<(), String> {
        let Some((directive, args)) = entry.tokens.split_first() else {
            return Ok(());
        };
        match directive.text.to_ascii_uppercase().as_str() {
            "$ORIGIN" => {
                let [name] = args else {
                    return Err("$ORIGIN takes exactly one domain name".into());
                };
                st.origin = parse_name(name, &st.origin)?;
                Ok(())
            }
            "$TTL" => {
                let [ttl] = args else {
                    return Err("$TTL takes exactly one TTL".into());
                };
                // A broken $TTL is one error: the records after it are not each reported for
                // lacking a TTL (the zone is rejected anyway).
                let parsed = parse_ttl_checked(&ttl.text);
                st.default_ttl = Some(*parsed.as_ref().unwrap_or(&0));
                parsed.map(|_| ())
            }
            "$INCLUDE" => {
                let (file, origin) = match args {
                    [f] => (f, st.origin.clone()),
                    [f, o] => (f, parse_name(o, &st.origin)?),
                    _ => return Err("$INCLUDE takes a file name and an optional origin".into()),
                };
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(format!(
                        "$INCLUDE nested more than {MAX_INCLUDE_DEPTH} deep (an include loop?)"
                    ));
                }
                let name = file.text.trim_matches('"');
                let target = path.parent().unwrap_or(Path::new(".")).join(name);
                if self.chain.contains(&target) {
                    return Err(format!(
                        "$INCLUDE loop: {} is already being read",
                        target.display()
                    ));
                }
                if self.files_read >= MAX_FILES {
                    return Err(format!(
                        "more than {MAX_FILES} files read for this zone ($INCLUDE)"
                    ));
                }
                // The included file starts with this file's TTL default (as BIND and Knot do).
                let ttl = st.default_ttl.or(st.last_ttl);
                self.file(&target, &origin, ttl, Some((path, entry.line)), depth + 1);
                Ok(())
            }
            d => Err(format!("unsupported directive {d}")),
        }
    }
}

fn is_class(s: &str) -> bool {
    ["IN", "CH", "CS", "HS", "NONE", "ANY"]
        .iter()
        .any(|c| s.eq_ignore_ascii_case(c))
}

fn parse_ttl_checked(s: &str) -> Result<u32, String> {
    let ttl = parse_ttl(s).map_err(|_| {
        format!(
            "invalid TTL '{s}': a TTL is a number of seconds, or a duration such as 1h30m or 2d"
        )
    })?;
    if ttl > MAX_TTL {
        return Err(format!("TTL {ttl} is larger than {MAX_TTL} (RFC 2181 §8)"));
    }
    Ok(ttl)
}

fn parse_name(tok: &Token, origin: &Name) -> Result<Name, String> {
    if tok.is_quoted() {
        return Err(format!("a domain name cannot be quoted: {}", tok.text));
    }
    if tok.text == "@" {
        return Ok(origin.clone());
    }
    if !tok.text.is_ascii() {
        // Clients turn an internationalized name into its A-label before they ask (RFC 5891):
        // the UTF-8 octets as written would never be asked for.
        let hint = Name::from_utf8(&tok.text)
            .map(|n| format!(": write its A-label '{}'", n.to_ascii()))
            .unwrap_or_default();
        return Err(format!(
            "the name '{}' is not ASCII; resolvers ask for internationalized names in their IDNA form (RFC 5891){hint}",
            tok.text
        ));
    }
    super::text::name(&tok.text, origin)
        .map_err(|e| format!("invalid domain name '{}': {e}", tok.text))
}

fn parse_u16(tok: &Token, field: &str) -> Result<u16, String> {
    tok.text.parse().map_err(|_| {
        format!(
            "{field} must be a number from 0 to 65535, found '{}'",
            tok.text
        )
    })
}

/// A timer of the SOA (seconds, or a TTL with units as BIND allows), within i32 (RFC 1035).
fn parse_timer(tok: &Token, field: &str) -> Result<i32, String> {
    parse_ttl(&tok.text)
        .ok()
        .and_then(|v| i32::try_from(v).ok())
        .ok_or_else(|| {
            format!(
                "SOA {field} must be a number of seconds up to 2147483647, found '{}'",
                tok.text
            )
        })
}

/// Record data whose fields hold domain names, parsed here so names follow master-file rules
/// (see `zone::name`); None for every other type.
fn parse_named_rdata(
    rtype: RecordType,
    toks: &[Token],
    origin: &Name,
) -> Option<Result<RData, String>> {
    let fields = match rtype {
        RecordType::CNAME | RecordType::NS | RecordType::PTR => "a domain name",
        RecordType::MX => "a preference and a mail server name",
        RecordType::SRV => "priority, weight, port and a target name",
        RecordType::SOA => "mname, rname, serial, refresh, retry, expire and minimum",
        RecordType::TXT => return Some(txt(toks)),
        RecordType::HINFO => "a CPU and an OS string",
        _ => return None,
    };
    let wrong = || {
        format!(
            "{rtype} record data takes {fields}, found {} fields",
            toks.len()
        )
    };
    let name = |t: &Token| parse_name(t, origin);
    Some((|| {
        Ok(match (rtype, toks) {
            (RecordType::CNAME, [n]) => RData::CNAME(CNAME(name(n)?)),
            (RecordType::NS, [n]) => RData::NS(NS(name(n)?)),
            (RecordType::PTR, [n]) => RData::PTR(PTR(name(n)?)),
            (RecordType::MX, [p, n]) => {
                RData::MX(MX::new(parse_u16(p, "MX preference")?, name(n)?))
            }
            (RecordType::SRV, [p, w, port, n]) => RData::SRV(SRV::new(
                parse_u16(p, "SRV priority")?,
                parse_u16(w, "SRV weight")?,
                parse_u16(port, "SRV port")?,
                name(n)?,
            )),
            (RecordType::SOA, [m, r, serial, refresh, retry, expire, minimum]) => {
                let serial = parse_ttl(&serial.text).map_err(|_| {
                    format!(
                        "SOA serial must be a number up to 4294967295, found '{}'",
                        serial.text
                    )
                })?;
                let minimum = parse_ttl(&minimum.text).map_err(|_| {
                    format!(
                        "SOA minimum must be a number of seconds, found '{}'",
                        minimum.text
                    )
                })?;
                RData::SOA(SOA::new(
                    name(m)?,
                    name(r)?,
                    serial,
                    parse_timer(refresh, "refresh")?,
                    parse_timer(retry, "retry")?,
                    parse_timer(expire, "expire")?,
                    minimum,
                ))
            }
            (RecordType::HINFO, [cpu, os]) => RData::HINFO(HINFO::from_bytes(
                string(cpu)?.into_boxed_slice(),
                string(os)?.into_boxed_slice(),
            )),
            _ => return Err(wrong()),
        })
    })())
}

fn string(tok: &Token) -> Result<Vec<u8>, String> {
    super::text::character_string(&tok.text).map_err(|e| format!("{e}: {}", tok.text))
}

/// TXT: one or more character-strings.
fn txt(toks: &[Token]) -> Result<RData, String> {
    let strings = toks.iter().map(string).collect::<Result<Vec<_>, _>>()?;
    Ok(RData::TXT(TXT::from_bytes(
        strings.iter().map(Vec::as_slice).collect(),
    )))
}

/// Parses record data. A and AAAA are parsed here (the bulk of a mail zone); everything else goes
/// through hickory's zone parser so every type it knows is supported with its own rules.
fn parse_rdata(rtype: RecordType, toks: &[Token], origin: &Name) -> Result<RData, String> {
    let bad = |e: &dyn std::fmt::Display| format!("invalid {rtype} record data: {e}");
    match rtype {
        RecordType::A | RecordType::AAAA => {
            let [t] = toks else {
                return Err(format!(
                    "{rtype} record takes exactly one address, found {}",
                    toks.len()
                ));
            };
            return if rtype == RecordType::A {
                Ipv4Addr::from_str(&t.text)
                    .map(|a| RData::A(A(a)))
                    .map_err(|_| format!("invalid IPv4 address '{}'", t.text))
            } else {
                Ipv6Addr::from_str(&t.text)
                    .map(|a| RData::AAAA(AAAA(a)))
                    .map_err(|_| format!("invalid IPv6 address '{}'", t.text))
            };
        }
        _ => {}
    }
    if let Some(parsed) = parse_named_rdata(rtype, toks, origin) {
        return parsed.map_err(|e| bad(&e));
    }
    // hickory reads `\DDD` in names as octal: in the other types that hold names, refuse an
    // escape outside quotes rather than load a name other than the one written.
    let holds_names = matches!(
        rtype,
        RecordType::NAPTR | RecordType::SVCB | RecordType::HTTPS
    );
    let escaped = toks
        .iter()
        .find(|t| !t.is_quoted() && t.text.contains('\\'));
    if let Some(t) = escaped.filter(|_| holds_names) {
        return Err(format!(
            "escapes (\\) in unquoted {rtype} record data are not supported: '{}'",
            t.text
        ));
    }
    let origin_text = origin.to_string();
    let mut line = format!("@ 0 IN {rtype}");
    for t in toks {
        line.push(' ');
        line.push_str(if t.text == "@" { &origin_text } else { &t.text });
    }
    line.push('\n');
    let (_, sets) = Parser::new(line, None, Some(origin.clone()))
        .parse()
        .map_err(|e| bad(&e))?;
    let set = sets
        .into_values()
        .next()
        .ok_or_else(|| bad(&"no record parsed"))?;
    let record = set
        .records_without_rrsigs()
        .next()
        .cloned()
        .ok_or_else(|| bad(&"no record parsed"))?;
    if record.record_type() != rtype {
        return Err(bad(&format!("parsed as {}", record.record_type())));
    }
    Ok(record.data)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The digest of `text` as `main.zone` of z.test.
    fn digest(text: &str) -> u64 {
        let read = |_: &Path| Ok(text.to_string());
        let origin = Name::from_ascii("z.test.").unwrap();
        let (zone, _) = load_zone_from(Path::new("/z/main.zone"), &origin, &read).unwrap();
        zone.content_digest()
    }

    /// The content digest ignores the order of the records and the SOA serial, and sees a
    /// change of data or TTL, and a record more or less.
    #[test]
    fn the_content_digest_follows_content_only() {
        let zone = |serial: u32, rest: &str| {
            format!("$TTL 300\n@ SOA ns h {serial} 1 1 1 1\n@ NS ns\nns A 127.0.0.53\n{rest}")
        };
        let base = digest(&zone(1, "a A 127.0.0.1\nb MX 10 a\n"));
        assert_eq!(base, digest(&zone(2, "b MX 10 a\na A 127.0.0.1\n")));
        for other in [
            "a A 127.0.0.2\nb MX 10 a\n",
            "a 301 A 127.0.0.1\nb MX 10 a\n",
            "a A 127.0.0.1\nb MX 20 a\n",
            "a A 127.0.0.1\n",
        ] {
            assert_ne!(base, digest(&zone(1, other)), "{other}");
        }
    }

    /// Loads `main.zone` from `files`, served from memory; the error messages.
    fn errors(files: &[(&str, &str)]) -> Vec<String> {
        let map: HashMap<PathBuf, String> = files
            .iter()
            .map(|(n, t)| (Path::new("/z").join(n), t.to_string()))
            .collect();
        let read = |p: &Path| {
            map.get(p)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        };
        let origin = Name::from_ascii("z.test.").unwrap();
        match load_zone_from(Path::new("/z/main.zone"), &origin, &read) {
            Ok(_) => Vec::new(),
            Err(d) => d.iter().map(|d| d.message.clone()).collect(),
        }
    }

    const HEAD: &str = "$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 127.0.0.1\n";

    #[test]
    fn an_include_loop_is_one_error_not_sixteen_levels() {
        let main = format!("{HEAD}$INCLUDE a.inc\n");
        let e = errors(&[
            ("main.zone", &main),
            ("a.inc", "$INCLUDE a.inc\nx A 127.0.0.2\n"),
        ]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("$INCLUDE loop"), "{e:?}");
    }

    #[test]
    fn a_doubling_include_tree_stops_at_the_file_limit() {
        // f0 includes f1 twice, f1 includes f2 twice...: 2^16 reads without a limit.
        let mut files: Vec<(String, String)> = (0..16)
            .map(|i| {
                let next = format!("$INCLUDE f{}.inc\n", i + 1);
                (format!("f{i}.inc"), format!("{next}{next}"))
            })
            .collect();
        files.push(("f16.inc".into(), "y A 127.0.0.3\n".into()));
        files.push(("main.zone".into(), format!("{HEAD}$INCLUDE f0.inc\n")));
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let e = errors(&refs);
        assert!(e.iter().any(|m| m.contains("more than 256 files")), "{e:?}");
        assert!(e.len() < 1000, "{} errors", e.len());
    }
}
