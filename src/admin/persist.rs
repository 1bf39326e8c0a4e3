//! The admin state file: server states set through the API, kept across restarts and reloads.
//!
//! It is written only by admin actions, atomically (a temporary file in the same folder, synced,
//! then renamed over the old one), so a crash leaves either the old or the new file, never half
//! of one. The config's `state = ...` is the default; the file's entry for a server wins.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{AdminState, HealthConfig};

/// Server name → admin state set through the API.
pub type Overrides = BTreeMap<String, AdminState>;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Format version.
    version: u32,
    /// Each server's admin state as last set through the API.
    servers: Overrides,
}

/// Reads the state file; a missing file is no overrides.
///
/// # Errors
/// An unreadable or malformed file, naming it.
pub fn load(path: &Path) -> Result<Overrides, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Overrides::new()),
        Err(e) => {
            return Err(format!(
                "{}: cannot read admin state file: {e}",
                path.display()
            ))
        }
    };
    let file: File = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}: admin state file is malformed: {e}",
            path.display(),
            e.line()
        )
    })?;
    if file.version != 1 {
        return Err(format!(
            "{}: admin state file version {} is not supported (expected 1)",
            path.display(),
            file.version
        ));
    }
    Ok(file.servers)
}

/// Writes `servers` to the state file atomically.
///
/// # Errors
/// The folder is not writable, or the disk is full.
pub fn save(path: &Path, servers: &Overrides) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let body = serde_json::to_vec_pretty(&File {
        version: 1,
        servers: servers.clone(),
    })
    .map_err(|e| e.to_string())?;
    let fail =
        |e: std::io::Error| format!("{}: cannot write admin state file: {e}", path.display());
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.write_all(&body).map_err(fail)?;
    tmp.write_all(b"\n").map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    // The rename is durable once the folder is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Applies `overrides` to the servers of `health`; returns the names it does not know.
pub fn apply(health: &mut HealthConfig, overrides: &Overrides) -> Vec<String> {
    let mut unknown = Vec::new();
    for (name, state) in overrides {
        match health.servers.iter_mut().find(|s| s.name == *name) {
            Some(s) => s.admin = *state,
            None => unknown.push(name.clone()),
        }
    }
    unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(load(&path).unwrap().is_empty());
        let mut o = Overrides::new();
        o.insert("ex1".into(), AdminState::Drain);
        o.insert("ex2".into(), AdminState::Maint);
        save(&path, &o).unwrap();
        assert_eq!(load(&path).unwrap(), o);
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn malformed_file_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(
            &path,
            "{\"version\": 1,\n \"servers\": {\"ex1\": \"sleeping\"}}",
        )
        .unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.contains("state.json:2:"), "{e}");
    }
}
