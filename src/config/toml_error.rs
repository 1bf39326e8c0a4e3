//! A TOML syntax or type error in words an admin can act on: the key it is about (with its
//! table), the value found and what is allowed. serde's own text ("invalid type: string
//! "two", expected u32") names neither the key nor a range.

/// The message for a `toml` error at byte `at` of `text`.
pub(super) fn explain(text: &str, message: &str, at: Option<usize>) -> String {
    let message = message.trim();
    if let Some((found, expected)) = found_and_expected(message) {
        let key = at.and_then(|at| key_at(text, at));
        let range = key
            .as_deref()
            .and_then(range_of_key)
            .map_or_else(|| allowed(expected), String::from);
        let said = format!("expected {range}, found {found}");
        return match key {
            Some(k) => format!("{k}: {said}"),
            None => said,
        };
    }
    // An unknown key names itself, on its own line: say which table it is in. A missing key
    // is reported at the table that lacks it.
    let table = if message.starts_with("unknown field") {
        at.and_then(|at| table_at(text, at, false))
    } else if message.starts_with("missing field") {
        at.and_then(|at| table_at(text, at, true))
    } else {
        None
    };
    match table {
        Some(t) => format!("[{t}]: {message}"),
        None => message.to_string(),
    }
}

/// The table (`health`, `server`) the line at byte `at` is in; with `heads`, a table header
/// at `at` counts.
fn table_at(text: &str, at: usize, heads: bool) -> Option<String> {
    let head = text.get(..at.min(text.len()))?;
    let line_start = head.rfind('\n').map_or(0, |i| i + 1);
    let end = if heads {
        text.get(line_start..)?
            .find('\n')
            .map_or(text.len(), |i| line_start + i)
    } else {
        line_start
    };
    text.get(..end)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .filter(|t| !t.is_empty())
}

/// `invalid type: X, expected Y` or `invalid value: X, expected Y` → (X, Y).
fn found_and_expected(message: &str) -> Option<(&str, &str)> {
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))?;
    let (found, expected) = rest.rsplit_once(", expected ")?;
    Some((found, expected))
}

/// What a key whose range is narrower than its type's allows.
fn range_of_key(key: &str) -> Option<&'static str> {
    let last = key.rsplit('.').next().unwrap_or(key);
    match last {
        "rise" | "fall" => Some("a whole number, 1 or more"),
        "weight" => Some("a whole number from 1 to 16"),
        "port" | "backend_port" => Some("a port number from 1 to 65535"),
        _ => None,
    }
}

/// serde's name of a type, as a range an admin can read.
fn allowed(expected: &str) -> String {
    match expected {
        "u8" => "a whole number from 0 to 255".into(),
        "u16" => "a whole number from 0 to 65535".into(),
        "u32" => "a whole number from 0 to 4294967295".into(),
        "u64" | "usize" => "a whole number, 0 or more".into(),
        "i64" | "i32" => "a whole number".into(),
        "a boolean" => "true or false".into(),
        "a string" => "a string in double quotes".into(),
        "a sequence" => "a list in brackets, such as [\"a\", \"b\"]".into(),
        other => other.to_string(),
    }
}

/// The dotted key whose value is at byte `at`: the `key = value` line's key, after the name of
/// the table it is in (`[health]`, `[[server]]`).
fn key_at(text: &str, at: usize) -> Option<String> {
    let head = text.get(..at.min(text.len()))?;
    let line_start = head.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(line_start..)?.lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with('[') || key.contains(char::is_whitespace) {
        return None;
    }
    let table = head
        .get(..line_start)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_key_and_what_is_allowed() {
        let text = "[dns]\nlisten = []\n\n[health]\nrise = \"two\"\n\n[[server]]\nname = \"a\"\nweight = -1\n";
        let at = |needle: &str| text.find(needle);
        assert_eq!(
            explain(
                text,
                "invalid type: string \"two\", expected u32",
                at("\"two\"")
            ),
            "health.rise: expected a whole number, 1 or more, found string \"two\""
        );
        assert_eq!(
            explain(text, "invalid value: integer `-1`, expected u32", at("-1")),
            "server.weight: expected a whole number from 1 to 16, found integer `-1`"
        );
        // An unknown or missing key names itself: the table is added.
        assert_eq!(
            explain(text, "missing field `addresses`", at("[[server]]")),
            "[server]: missing field `addresses`"
        );
        assert_eq!(
            explain(text, "unknown field `x`, expected `a`", at("weight")),
            "[server]: unknown field `x`, expected `a`"
        );
        assert_eq!(
            explain(
                "port = 70000\n",
                "invalid value: integer `70000`, expected u16",
                Some(7)
            ),
            "port: expected a port number from 1 to 65535, found integer `70000`"
        );
    }
}
