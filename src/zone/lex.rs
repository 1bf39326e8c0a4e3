//! Splits an RFC 1035 master file into entries (one resource record or directive each), keeping
//! the line every token came from.
//!
//! hickory's lexer is crate-private and tracks no positions, so mailns splits the file itself and
//! hands hickory one record at a time. Rules (RFC 1035 §5.1): `;` starts a comment outside quotes,
//! `(` `)` join lines, `"..."` groups with `\"` escapes, `\X` and `\DDD` escape inside a token, and
//! a line that starts with white space has no owner (it repeats the previous one).

/// One token: its raw text (quotes kept, parentheses removed) and the line it started on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) text: String,
    pub(crate) line: usize,
}

impl Token {
    /// True for a `"quoted"` token.
    pub(crate) fn is_quoted(&self) -> bool {
        self.text.starts_with('"')
    }
}

/// One logical entry of a master file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Line the entry starts on.
    pub(crate) line: usize,
    /// The entry began with white space: its owner is the previous entry's.
    pub(crate) blank_owner: bool,
    /// Its tokens, in order.
    pub(crate) tokens: Vec<Token>,
}

/// A lexing error with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

/// Splits `text` into entries. Fails on the first unbalanced parenthesis or unterminated quote.
pub(crate) fn entries(text: &str) -> Result<Vec<Entry>, LexError> {
    let mut out = Vec::new();
    let mut line = 1usize;
    let mut depth = 0usize;
    let mut paren_line = 0usize;
    let mut current: Option<Entry> = None;
    let mut chars = text.chars().peekable();
    let mut at_line_start = true;

    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                line += 1;
                if depth == 0 {
                    out.extend(current.take().filter(|e| !e.tokens.is_empty()));
                    at_line_start = true;
                }
            }
            ';' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            ' ' | '\t' | '\r' => {
                if at_line_start && depth == 0 {
                    current = Some(Entry {
                        line,
                        blank_owner: true,
                        tokens: Vec::new(),
                    });
                }
                at_line_start = false;
            }
            '(' => {
                start_entry(&mut current, line, &mut at_line_start);
                if depth == 0 {
                    paren_line = line;
                }
                depth += 1;
            }
            ')' => {
                if depth == 0 {
                    return Err(LexError {
                        line,
                        message: "')' without a matching '('".into(),
                    });
                }
                depth -= 1;
            }
            '"' => {
                let start_line = line;
                let mut s = String::from('"');
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            s.push('\\');
                            if let Some(n) = chars.next() {
                                if n == '\n' {
                                    line += 1;
                                }
                                s.push(n);
                            }
                        }
                        '"' => {
                            s.push('"');
                            closed = true;
                            break;
                        }
                        '\n' => {
                            return Err(LexError {
                                line: start_line,
                                message: "unterminated quoted string".into(),
                            })
                        }
                        c => s.push(c),
                    }
                }
                if !closed {
                    return Err(LexError {
                        line: start_line,
                        message: "unterminated quoted string".into(),
                    });
                }
                start_entry(&mut current, line, &mut at_line_start);
                push(&mut current, s, start_line);
            }
            c => {
                start_entry(&mut current, line, &mut at_line_start);
                let mut s = String::new();
                s.push(c);
                let mut escaped = c == '\\';
                while let Some(&n) = chars.peek() {
                    if escaped {
                        escaped = false;
                    } else if matches!(n, ' ' | '\t' | '\r' | '\n' | ';' | '(' | ')' | '"') {
                        break;
                    } else if n == '\\' {
                        escaped = true;
                    }
                    s.push(n);
                    chars.next();
                }
                push(&mut current, s, line);
            }
        }
    }
    if depth > 0 {
        return Err(LexError {
            line: paren_line,
            message: "'(' is never closed".into(),
        });
    }
    out.extend(current.take().filter(|e| !e.tokens.is_empty()));
    Ok(out)
}

fn start_entry(current: &mut Option<Entry>, line: usize, at_line_start: &mut bool) {
    if current.is_none() {
        *current = Some(Entry {
            line,
            blank_owner: false,
            tokens: Vec::new(),
        });
    }
    *at_line_start = false;
}

fn push(current: &mut Option<Entry>, text: String, line: usize) {
    if let Some(e) = current {
        e.tokens.push(Token { text, line });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(e: &Entry) -> Vec<&str> {
        e.tokens.iter().map(|t| t.text.as_str()).collect()
    }

    #[test]
    fn splits_lines_comments_and_blank_owners() {
        let e = entries("a A 127.0.0.1 ; c\n  AAAA ::1\n\n; only\nb\tTXT \"x ; y\" z\n").unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(texts(&e[0]), ["a", "A", "127.0.0.1"]);
        assert!(!e[0].blank_owner);
        assert!(e[1].blank_owner);
        assert_eq!(e[1].line, 2);
        assert_eq!(texts(&e[2]), ["b", "TXT", "\"x ; y\"", "z"]);
        assert_eq!(e[2].line, 5);
    }

    #[test]
    fn parentheses_join_lines() {
        let e = entries("@ SOA ns h (\n 1 ; serial\n 2 3\n 4 5 )\nx A 127.0.0.2\n").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            texts(&e[0]),
            ["@", "SOA", "ns", "h", "1", "2", "3", "4", "5"]
        );
        assert_eq!(e[0].tokens[4].line, 2);
        assert_eq!(e[1].line, 5);
    }

    #[test]
    fn escapes_stay_in_the_token() {
        let e = entries("a\\ b\\;c TXT \"q\\\"x\"\n").unwrap();
        assert_eq!(texts(&e[0]), ["a\\ b\\;c", "TXT", "\"q\\\"x\""]);
    }

    #[test]
    fn reports_unbalanced_and_unterminated() {
        assert_eq!(entries("a (\n b\n").unwrap_err().line, 1);
        assert_eq!(entries("x\na )\n").unwrap_err().line, 2);
        assert_eq!(entries("x\n\ny TXT \"abc\n").unwrap_err().line, 3);
    }
}
