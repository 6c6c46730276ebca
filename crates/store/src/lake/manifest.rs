//! `DIR/_manifest.json`: the small, atomically replaced record of what the lake holds.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

/// File name of the manifest inside the lake directory.
pub(crate) const MANIFEST_FILE: &str = "_manifest.json";

/// The lake manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// Format version of this file.
    #[serde(default = "format_version")]
    pub format: u32,
    /// Highest WAL sequence number whose segment is completely in the lake; `None` when no
    /// segment was compacted yet.
    #[serde(default)]
    pub compacted_through_seq: Option<u64>,
    /// How many segments were compacted into this lake, for metrics.
    #[serde(default)]
    pub segments_compacted: u64,
    /// When the manifest was last replaced (RFC 3339).
    #[serde(default)]
    pub updated_at: Option<String>,
    /// A merge of small files that was being switched in; finished or rolled back on open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_merge: Option<PendingMerge>,
}

fn format_version() -> u32 {
    1
}

/// A merge whose output is about to replace its inputs (see `lake/README.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PendingMerge {
    /// The partition directory, relative to the lake (`kind=…/day=…`).
    pub partition: String,
    /// The temporary file holding the merged rows.
    pub temp: String,
    /// The merged file's final name.
    pub output: String,
    /// The files it replaces.
    pub inputs: Vec<String>,
}

impl Manifest {
    /// Reads the manifest of `dir`, or an empty one when there is none yet.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Manifest { format: format_version(), ..Manifest::default() })
            }
            Err(e) => return Err(StoreError::io("read", &path)(e)),
        };
        serde_json::from_str(&text).map_err(|e| StoreError::Metadata { path, message: e.to_string() })
    }

    /// Replaces the manifest of `dir` atomically: write a temporary file, fsync, rename,
    /// fsync the directory.
    pub fn store(&mut self, dir: &Path) -> Result<()> {
        self.format = format_version();
        self.updated_at = Some(cityward_model::format_time(&chrono::Utc::now()));
        let mut text = serde_json::to_vec_pretty(self).expect("the manifest always serializes");
        text.push(b'\n');
        write_atomically(dir, MANIFEST_FILE, &text)
    }
}

/// Writes `bytes` to `dir/name` so that readers see either the old or the new content.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let temp: PathBuf = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut file = File::create(&temp).map_err(StoreError::io("create", &temp))?;
    file.write_all(bytes).map_err(StoreError::io("write", &temp))?;
    file.sync_all().map_err(StoreError::io("sync", &temp))?;
    drop(file);
    fs::rename(&temp, &path).map_err(StoreError::io("rename into place", &path))?;
    sync_dir(dir)
}

/// Makes a rename or removal in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io("sync directory", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Manifest::load(dir.path()).unwrap();
        assert_eq!(m.compacted_through_seq, None);
        m.compacted_through_seq = Some(41);
        m.store(dir.path()).unwrap();
        let back = Manifest::load(dir.path()).unwrap();
        assert_eq!(back.compacted_through_seq, Some(41));
        assert!(back.updated_at.is_some());
        assert!(!dir.path().join(".\u{5f}manifest.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_manifest_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MANIFEST_FILE), "{not json").unwrap();
        let err = Manifest::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("_manifest.json"), "{err}");
    }
}
