//! Errors of the write-ahead log.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong in the write-ahead log. Each variant names the file, offset,
/// record or setting involved and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A configuration value is out of range.
    #[error("invalid WAL setting `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field of `WalConfig`.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// A file operation failed outside the writer thread (open, recovery, read, delete).
    #[error(
        "WAL could not {op} {path}: {source}; check that the directory exists, is writable by \
         this user and that the disk has room"
    )]
    Io {
        /// What was being done, e.g. "read segment".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Another handle or process holds the WAL directory's lock.
    #[error(
        "the WAL in {dir} is already open (its lock file {lock} is held by another process or \
         handle); stop the other one, or give this one its own directory"
    )]
    Locked {
        /// The WAL directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },

    /// A damaged record (or segment header, or a break in the sequence) that is not a torn
    /// tail: acknowledged data may be lost.
    #[error(
        "WAL segment {path} is corrupt at byte offset {offset}: {reason}; restore the file from a \
         backup, or set `on_corruption = \"skip\"` to skip the damaged records (they will be lost)"
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the damaged frame or header within the file.
        offset: u64,
        /// What was found there.
        reason: String,
    },

    /// A record of an append is larger than `max_record_bytes`.
    #[error(
        "record {index} of the append is {len} bytes, over the WAL's limit of {max} bytes \
         (`max_record_bytes`); nothing of this append was written: split or shrink the record"
    )]
    RecordTooLarge {
        /// Position of the record in the appended batch.
        index: usize,
        /// Its length in bytes.
        len: usize,
        /// The configured limit.
        max: u32,
    },

    /// An append is larger than the whole queue (`queue_bytes`), so it could never be queued.
    #[error(
        "the append holds {bytes} framed bytes, more than the WAL queue's {queue_bytes} bytes \
         (`queue_bytes`); nothing was written: split it into smaller appends"
    )]
    BatchTooLarge {
        /// Framed size of the append (payloads plus 16 bytes per record).
        bytes: u64,
        /// The configured queue bound.
        queue_bytes: u64,
    },

    /// The writer thread hit an I/O error; this append (and every later one) was not made
    /// durable. The WAL must be reopened once the cause is fixed.
    #[error(
        "WAL writer stopped: {op} of {path} at byte offset {offset} failed: {source}; appends \
         that were not acknowledged before this were not made durable. Fix the cause (for \
         example free disk space) and reopen the WAL; recovery cuts any partial write"
    )]
    WriterFailed {
        /// What the writer was doing, e.g. "write", "fsync", "create segment".
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// Byte offset in that file where the failed operation started.
        offset: u64,
        /// The operating system's error, shared by every waiter that gets it.
        #[source]
        source: Arc<io::Error>,
    },

    /// The WAL was closed; appends and rolls are refused.
    #[error("the WAL is closed; reopen it with `Wal::open` to append again")]
    Closed,

    /// A segment disappeared while it was being read, normally because `delete_through`
    /// compacted it away.
    #[error(
        "WAL segment {path} was deleted while it was being read (compaction); records from seq \
         {next_seq} on can no longer be read from it: restart reading from the oldest retained seq"
    )]
    SegmentGone {
        /// The segment file.
        path: PathBuf,
        /// The next sequence number the reader expected.
        next_seq: u64,
    },

    /// A read asked for records that compaction already deleted.
    #[error(
        "WAL record {seq} is no longer retained: the oldest retained sequence number is \
         {oldest}; records before it were deleted by compaction. Read from {oldest} (and \
         recover the rest from the event lake) instead"
    )]
    NotRetained {
        /// The sequence number asked for.
        seq: u64,
        /// The oldest sequence number still in the WAL.
        oldest: u64,
    },
}

impl WalError {
    /// A short, stable class for mapping onto the crate's shared status set:
    /// `"invalid_input"`, `"conflict"`, `"not_found"`, `"unavailable"` or `"internal"`.
    pub fn class(&self) -> &'static str {
        match self {
            WalError::InvalidConfig { .. }
            | WalError::RecordTooLarge { .. }
            | WalError::BatchTooLarge { .. } => "invalid_input",
            WalError::Locked { .. } => "conflict",
            WalError::NotRetained { .. } | WalError::SegmentGone { .. } => "not_found",
            WalError::WriterFailed { .. } | WalError::Closed | WalError::Io { .. } => "unavailable",
            WalError::Corrupt { .. } => "internal",
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> WalError {
        WalError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
