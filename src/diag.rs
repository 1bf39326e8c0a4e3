//! Diagnostics: one problem in a config or zone file, printed as `path:line: message`.
//!
//! Admins run `mailns check` in a git pre-commit hook, so every problem must point at the file
//! and line to fix; hickory's own zone parser reports neither, which is why this type exists.

use std::fmt;
use std::path::{Path, PathBuf};

/// How bad a problem is: errors stop a load, warnings are printed and the load goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The file cannot be served as written.
    Error,
    /// The file is served, but something is probably not what the admin meant.
    Warning,
}

/// One problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub path: PathBuf,
    /// 1-based line, where one applies.
    pub line: Option<usize>,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl Diagnostic {
    /// An error at `path:line`.
    pub fn error(path: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            line,
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// A warning at `path:line`.
    pub fn warning(path: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(path, line, message)
        }
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let warn = if self.is_error() { "" } else { "warning: " };
        match self.line {
            Some(line) => write!(
                f,
                "{}:{}: {}{}",
                self.path.display(),
                line,
                warn,
                self.message
            ),
            None => write!(f, "{}: {}{}", self.path.display(), warn, self.message),
        }
    }
}

/// A failed load: every problem found (at least one error), warnings included.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", display_all(.0))]
pub struct Diagnostics(pub Vec<Diagnostic>);

fn display_all(d: &[Diagnostic]) -> String {
    d.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Line number (1-based) of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
