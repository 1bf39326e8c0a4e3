//! Domain names and character-strings as RFC 1035 §5.1 master files write them.
//!
//! hickory's text parser reads `\DDD` as octal (RFC 1035 says decimal: `\032` is a space), in
//! names and in TXT strings alike, and runs every label through IDNA, which rejects labels a zone
//! may hold (a leading hyphen, a space, a quote) and rewrites non-ASCII bytes as punycode. The
//! differential fuzz against Knot found all three. A master-file label or string is any octets,
//! so mailns reads them itself: `\DDD` is one decimal octet, `\X` is X itself, every other
//! character stands for its own bytes, and case is kept.

use hickory_proto::rr::Name;

/// The longest label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;
/// The longest name in wire form, root label included.
const MAX_NAME: usize = 255;

/// Parses a master-file name; a name without a trailing dot is relative to `origin`.
///
/// # Errors
/// What is wrong with the name, for a diagnostic.
pub(crate) fn name(text: &str, origin: &Name) -> Result<Name, String> {
    if text == "." {
        return Ok(Name::root());
    }
    let (labels, absolute) = labels(text)?;
    let mut all = labels;
    if !absolute {
        all.extend(origin.iter().map(<[u8]>::to_vec));
    }
    let wire_len = all.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    if wire_len > MAX_NAME {
        return Err(format!(
            "the name is {wire_len} bytes long in DNS form (its parts and one length byte each); at most {MAX_NAME} fit (RFC 1035 §2.3.4)"
        ));
    }
    let mut name = Name::from_labels(all).map_err(|e| e.to_string())?;
    name.set_fqdn(true);
    Ok(name)
}

/// The longest character-string (RFC 1035 §3.3: one length octet).
const MAX_STRING: usize = 255;

/// One character-string: a token with its quotes (if any) removed and escapes resolved.
///
/// # Errors
/// A bad escape or more than 255 octets.
pub(crate) fn character_string(token: &str) -> Result<Vec<u8>, String> {
    let inner = token
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(token);
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.bytes();
    while let Some(b) = bytes.next() {
        out.push(if b == b'\\' { escape(&mut bytes)? } else { b });
    }
    if out.len() > MAX_STRING {
        return Err(format!(
            "a character-string holds at most {MAX_STRING} octets, this one {} (split it into several quoted strings)",
            out.len()
        ));
    }
    Ok(out)
}

/// The labels of `text` as octets, and whether it ends in an unescaped dot.
fn labels(text: &str) -> Result<(Vec<Vec<u8>>, bool), String> {
    let mut labels = Vec::new();
    let mut label = Vec::new();
    let mut bytes = text.bytes();
    let mut ended_with_dot = false;
    while let Some(b) = bytes.next() {
        ended_with_dot = false;
        match b {
            b'.' => {
                if label.is_empty() {
                    return Err("empty label (two dots in a row, or a leading dot)".into());
                }
                labels.push(std::mem::take(&mut label));
                ended_with_dot = true;
            }
            b'\\' => label.push(escape(&mut bytes)?),
            _ => label.push(b),
        }
        if label.len() > MAX_LABEL {
            return Err(format!(
                "the part '{}…' between two dots is longer than {MAX_LABEL} characters, the most one part of a DNS name may have (RFC 1035 §2.3.4)",
                String::from_utf8_lossy(&label)
            ));
        }
    }
    if !label.is_empty() {
        labels.push(label);
    } else if !ended_with_dot {
        return Err("empty name".into());
    }
    Ok((labels, ended_with_dot))
}

/// The octet after a backslash: `\DDD` (three decimal digits, at most 255) or `\X`.
fn escape(bytes: &mut std::str::Bytes<'_>) -> Result<u8, String> {
    let first = bytes
        .next()
        .ok_or("a name cannot end in a lone backslash")?;
    if !first.is_ascii_digit() {
        return Ok(first);
    }
    let mut value = u32::from(first - b'0');
    for _ in 0..2 {
        match bytes.next() {
            Some(d) if d.is_ascii_digit() => value = value * 10 + u32::from(d - b'0'),
            _ => return Err("\\DDD needs exactly three decimal digits".into()),
        }
    }
    u8::try_from(value).map_err(|_| format!("\\{value:03} is more than 255"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Name {
        Name::from_ascii("z.test.").unwrap()
    }

    fn wire_labels(text: &str) -> Vec<Vec<u8>> {
        name(text, &origin())
            .unwrap()
            .iter()
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn decimal_escapes_and_raw_octets() {
        assert_eq!(
            wire_labels("sp\\032ace"),
            [b"sp ace".to_vec(), b"z".to_vec(), b"test".to_vec()]
        );
        assert_eq!(wire_labels("a\\.b.")[0], b"a.b");
        assert_eq!(wire_labels("caf\\195\\169.")[0], "café".as_bytes());
        assert_eq!(wire_labels("café.")[0], "café".as_bytes());
        assert_eq!(wire_labels("-lead.")[0], b"-lead");
        assert_eq!(wire_labels("q\\\"uote.")[0], b"q\"uote");
        assert_eq!(wire_labels("back\\\\slash.")[0], b"back\\slash");
        assert_eq!(wire_labels("\\065.")[0], b"A", "case is kept");
        assert_eq!(wire_labels("*.w").len(), 4);
        assert!(name(".", &origin()).unwrap().is_root());
    }

    #[test]
    fn character_strings() {
        assert_eq!(character_string("\"a b\"").unwrap(), b"a b");
        assert_eq!(character_string("\"\\065\\066\"").unwrap(), b"AB");
        assert_eq!(character_string("q\\\"x").unwrap(), b"q\"x");
        assert_eq!(character_string("\"semi;colon\"").unwrap(), b"semi;colon");
        assert_eq!(character_string("\"\"").unwrap(), b"");
        assert_eq!(character_string("\"\\255\"").unwrap(), [255]);
        assert!(character_string(&"x".repeat(256)).is_err());
        assert!(character_string("\"\\300\"").is_err());
    }

    #[test]
    fn errors() {
        for bad in ["a..b", ".a", "a\\25", "a\\256", "a\\", ""] {
            assert!(name(bad, &origin()).is_err(), "{bad:?}");
        }
        assert!(name(&"a".repeat(64), &origin()).is_err());
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(name(&long, &origin()).is_err(), "over 255 octets");
    }
}
