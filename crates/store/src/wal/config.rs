//! Configuration of the write-ahead log.
//!
//! The `///` docs on [`WalConfig`]'s fields are the configuration reference: keep them exact.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::WalError;
use super::format::{FRAME_HEADER_LEN, MAX_RECORD_LEN};

/// Default size at which the active segment is sealed: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Default bound on framed bytes waiting in the append queue: 32 MiB.
pub const DEFAULT_QUEUE_BYTES: u64 = 32 << 20;
/// Default largest record payload: 16 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 16 << 20;

/// Settings of one write-ahead log (a directory of segment files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Directory that holds the segment files `wal-<first_seq>.log` and the lock file
    /// `wal.lock`. Created (with its parents) if missing. One process at a time may open it.
    pub dir: PathBuf,
    /// Size in bytes at which the active segment is sealed and a new one is started, so a
    /// compactor can take the sealed one. A segment holds at least one record, so a single
    /// record larger than this makes a segment larger than this. Default 64 MiB.
    pub segment_bytes: u64,
    /// Bound, in framed bytes (payload plus 16 bytes per record), on the appends waiting for
    /// the writer thread. Appenders wait (back-pressure) when it is full; an append larger
    /// than this is refused. The writer thread holds up to as much again while it writes, so
    /// the WAL's memory stays under twice this. At most 4 GiB. Default 32 MiB.
    pub queue_bytes: u64,
    /// Largest payload of one record, in bytes; a larger record is refused with an error that
    /// names it. At most 256 MiB. Default 16 MiB.
    pub max_record_bytes: u32,
    /// What recovery and readers do with a damaged record that is not part of a torn tail:
    /// `fail` (default) stops with an error naming the file and byte offset; `skip` logs a
    /// warning, skips to the next intact record and goes on (the damaged records are lost).
    pub on_corruption: CorruptionPolicy,
}

/// What to do with a damaged record found before the torn tail of the last segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorruptionPolicy {
    /// Stop with [`WalError::Corrupt`], naming the file and byte offset.
    #[default]
    Fail,
    /// Log a warning, skip to the next intact record and continue; the damaged records are
    /// lost and the gap in sequence numbers is reported.
    Skip,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            dir: PathBuf::from("data/wal"),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            on_corruption: CorruptionPolicy::Fail,
        }
    }
}

impl WalConfig {
    /// The default settings with the segment files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalConfig {
            dir: dir.into(),
            ..WalConfig::default()
        }
    }

    /// Checks the limits; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<(), WalError> {
        let invalid =
            |field: &'static str, reason: String| Err(WalError::InvalidConfig { field, reason });
        if self.dir.as_os_str().is_empty() {
            return invalid(
                "dir",
                "is empty; give the directory for the segment files".into(),
            );
        }
        if self.segment_bytes < 4096 {
            return invalid(
                "segment_bytes",
                format!(
                    "is {}; use at least 4096 (the default is {DEFAULT_SEGMENT_BYTES})",
                    self.segment_bytes
                ),
            );
        }
        if self.max_record_bytes > MAX_RECORD_LEN {
            return invalid(
                "max_record_bytes",
                format!(
                    "is {}; the format allows at most {MAX_RECORD_LEN}",
                    self.max_record_bytes
                ),
            );
        }
        let smallest_queue = self.max_record_bytes as u64 + FRAME_HEADER_LEN as u64;
        if self.queue_bytes < smallest_queue {
            return invalid(
                "queue_bytes",
                format!(
                    "is {}; it must hold at least one record of `max_record_bytes` ({} bytes with its frame)",
                    self.queue_bytes, smallest_queue
                ),
            );
        }
        if self.queue_bytes > u32::MAX as u64 {
            return invalid(
                "queue_bytes",
                format!("is {}; use at most {} (4 GiB)", self.queue_bytes, u32::MAX),
            );
        }
        Ok(())
    }
}
