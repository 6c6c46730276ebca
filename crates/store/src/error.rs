//! The store's error type: every failure names what was wrong, where (file, partition,
//! sequence number, statement) and what to do next, and maps to a small [`Status`] set
//! that the HTTP layer turns into a status code.

use std::io;
use std::path::{Path, PathBuf};

use datafusion::error::DataFusionError;

/// The kind of failure, shared by all error types of the workspace that face users:
/// the HTTP layer maps it to a status code and a stable `code` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The request itself is wrong (bad SQL, a refused statement, a bad setting): 400.
    InvalidInput,
    /// The thing asked for does not exist: 404.
    NotFound,
    /// The caller may not do this: 403.
    Forbidden,
    /// The request contradicts the current state (e.g. an out-of-order WAL segment): 409.
    Conflict,
    /// A resource is exhausted or temporarily unusable; retrying later may succeed: 503.
    Unavailable,
    /// A fault of the node (disk, corrupt file, bug): 500.
    Internal,
}

impl Status {
    /// The stable machine-readable code, e.g. `invalid_input`.
    pub fn code(self) -> &'static str {
        match self {
            Status::InvalidInput => "invalid_input",
            Status::NotFound => "not_found",
            Status::Forbidden => "forbidden",
            Status::Conflict => "conflict",
            Status::Unavailable => "unavailable",
            Status::Internal => "internal",
        }
    }

    /// The HTTP status code that fits.
    pub fn http_status(self) -> u16 {
        match self {
            Status::InvalidInput => 400,
            Status::NotFound => 404,
            Status::Forbidden => 403,
            Status::Conflict => 409,
            Status::Unavailable => 503,
            Status::Internal => 500,
        }
    }
}

/// Errors of the event lake, its SQL engine and retention.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("could not {action} `{path}`: {source}; check that the disk is mounted, writable and not full")]
    Io {
        /// What was being done, e.g. "create directory", "rename".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A Parquet file could not be written or read.
    #[error("Parquet file `{path}`: {source}; if the file is corrupt, move it out of the lake directory and re-run compaction from the WAL")]
    Parquet {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// Building or converting Arrow data failed.
    #[error("{context}: {source}")]
    Arrow {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: datafusion::arrow::error::ArrowError,
    },

    /// The lake manifest (`_manifest.json`) or deletion log could not be understood.
    #[error("lake metadata file `{path}` is not valid: {message}; restore it from a backup, or delete it and re-compact the WAL segments that are still on disk")]
    Metadata {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// The declared kinds cannot be turned into a lake schema.
    #[error("the event kinds cannot be stored in the lake: {message}")]
    Kinds {
        /// What is wrong, naming the kinds and attributes.
        message: String,
    },

    /// A WAL segment overlaps the sequence numbers already compacted into the lake.
    #[error(
        "WAL segment with sequence numbers {first_seq}..={last_seq} overlaps the lake, which \
         already holds everything up to {compacted_through}; segments must be compacted whole \
         and in order — delete WAL segments only up to the lake manifest's compacted_through_seq"
    )]
    SegmentOverlap {
        /// First sequence number of the segment.
        first_seq: u64,
        /// Last sequence number of the segment.
        last_seq: u64,
        /// The highest sequence number already in the lake.
        compacted_through: u64,
    },

    /// A WAL segment's sequence range cannot hold its events.
    #[error(
        "WAL segment range {first_seq}..={last_seq} cannot hold {events} events; pass the \
         segment's first and last sequence numbers"
    )]
    SegmentRange {
        /// First sequence number given.
        first_seq: u64,
        /// Last sequence number given.
        last_seq: u64,
        /// Number of events given.
        events: usize,
    },

    /// The lake was opened read-only and cannot be changed.
    #[error("the lake at `{dir}` was opened read-only (e.g. by `cityward sql` beside a running node); only the node that owns it writes, merges or deletes")]
    LakeReadOnly {
        /// The lake directory.
        dir: PathBuf,
    },

    /// The caller could not supply the events still only in the WAL.
    #[error("could not read the events still in the WAL: {message}")]
    Tail {
        /// The caller's message.
        message: String,
    },

    /// The SQL text is not valid or refers to something that does not exist.
    #[error("SQL error: {message}")]
    Sql {
        /// DataFusion's message.
        message: String,
    },

    /// The statement would change data or settings; only queries are allowed.
    #[error("only SELECT queries are allowed (also EXPLAIN, DESCRIBE and WITH … SELECT); `{statement}` was refused: {reason}")]
    ReadOnly {
        /// The start of the refused statement.
        statement: String,
        /// What kind of statement it is, from DataFusion.
        reason: String,
    },

    /// The query ran out of a resource (memory, time).
    #[error("the query needs more resources than allowed: {message}; add filters on `kind`, `day`, `source` or `time`, or select fewer rows")]
    Exhausted {
        /// DataFusion's message.
        message: String,
    },

    /// The query failed while running for a reason inside the node.
    #[error("the query failed: {message}")]
    Query {
        /// DataFusion's message.
        message: String,
    },

    /// A retention setting is not usable.
    #[error("retention setting `{setting}`: {message}")]
    Retention {
        /// The setting concerned, e.g. `classes.plate_read`.
        setting: String,
        /// What is wrong with it.
        message: String,
    },

    /// A background task died.
    #[error("internal task failed: {message}; this is a bug, please report it with the log")]
    Task {
        /// What happened.
        message: String,
    },
}

impl StoreError {
    /// The kind of failure, for the HTTP layer.
    pub fn status(&self) -> Status {
        match self {
            StoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Status::NotFound
            }
            StoreError::Io { source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::ResourceBusy
                ) =>
            {
                Status::Unavailable
            }
            StoreError::Io { .. } => Status::Internal,
            StoreError::Parquet { .. } | StoreError::Arrow { .. } | StoreError::Metadata { .. } => {
                Status::Internal
            }
            StoreError::Kinds { .. } | StoreError::Retention { .. } => Status::InvalidInput,
            StoreError::SegmentOverlap { .. } => Status::Conflict,
            StoreError::SegmentRange { .. } => Status::InvalidInput,
            StoreError::LakeReadOnly { .. } => Status::Forbidden,
            StoreError::Tail { .. } => Status::Unavailable,
            StoreError::Sql { .. } | StoreError::ReadOnly { .. } => Status::InvalidInput,
            StoreError::Exhausted { .. } => Status::Unavailable,
            StoreError::Query { .. } | StoreError::Task { .. } => Status::Internal,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.as_ref().to_path_buf();
        move |source| StoreError::Io { action, path, source }
    }

    pub(crate) fn parquet(path: impl AsRef<Path>) -> impl FnOnce(parquet::errors::ParquetError) -> StoreError {
        let path = path.as_ref().to_path_buf();
        move |source| StoreError::Parquet { path, source }
    }

    pub(crate) fn arrow(context: impl Into<String>) -> impl FnOnce(datafusion::arrow::error::ArrowError) -> StoreError {
        let context = context.into();
        move |source| StoreError::Arrow { context, source }
    }

    /// Classifies a DataFusion error met while planning or running a user's query.
    pub(crate) fn from_query(error: DataFusionError) -> StoreError {
        let message = error.strip_backtrace();
        match error.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_)
            | DataFusionError::Execution(_)
            | DataFusionError::ArrowError(..) => StoreError::Sql { message },
            DataFusionError::ResourcesExhausted(_) => StoreError::Exhausted { message },
            _ => StoreError::Query { message },
        }
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_have_codes() {
        let e = StoreError::Sql { message: "no such column".into() };
        assert_eq!(e.status(), Status::InvalidInput);
        assert_eq!(e.status().code(), "invalid_input");
        assert_eq!(e.status().http_status(), 400);
        let e = StoreError::SegmentOverlap { first_seq: 5, last_seq: 9, compacted_through: 7 };
        assert_eq!(e.status(), Status::Conflict);
        assert!(e.to_string().contains("5..=9"), "{e}");
        let e = StoreError::io("rename", "/x")(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(e.status(), Status::NotFound);
        assert!(e.to_string().contains("`/x`"));
    }

    #[test]
    fn datafusion_plan_errors_are_invalid_input() {
        let e = StoreError::from_query(DataFusionError::Plan("table 'x' not found".into()));
        assert_eq!(e.status(), Status::InvalidInput);
        assert!(e.to_string().contains("table 'x' not found"));
        let e = StoreError::from_query(DataFusionError::ResourcesExhausted("memory".into()));
        assert_eq!(e.status(), Status::Unavailable);
    }
}
