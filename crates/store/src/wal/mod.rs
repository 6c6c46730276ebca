//! The write-ahead log: the durable front of the event pipeline.
//!
//! Batches of byte records are appended through a cloneable [`WalWriter`]; an append
//! resolves only after its records are written and fdatasync'd (principle 1: acknowledged
//! means durable). One OS thread group-commits: it drains every queued append, writes them
//! with one write, fsyncs once and answers every waiter. Records get consecutive sequence
//! numbers that are never reused, and live in segment files `wal-<first_seq:020>.log` that
//! roll at `segment_bytes` or on [`WalWriter::roll`]. On open, recovery verifies every
//! record's CRC and cuts a torn tail; a [`WalReader`] lists sealed segments for the
//! compactor, reads everything durable from a sequence number on, and deletes compacted
//! segments.
//!
//! The WAL knows nothing of events: it stores bytes. See `README.md` beside this file for
//! the format and for what happens on a torn write, a crash, a corrupt segment or a full disk.

mod config;
mod error;
mod format;
mod reader;
mod recovery;
mod shared;
mod writer;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

pub use config::{
    CorruptionPolicy, WalConfig, DEFAULT_MAX_RECORD_BYTES, DEFAULT_QUEUE_BYTES,
    DEFAULT_SEGMENT_BYTES,
};
pub use error::WalError;
pub use reader::{SegmentReader, SegmentRecords, WalCursor, WalReader};
pub use recovery::{RecoveryReport, SkippedRange, TornTail};
pub use shared::{SegmentInfo, WalStats, WriterState};
pub use writer::{AppendAck, WalWriter};

use shared::Shared;
use writer::{Msg, WriterThread};

/// An open write-ahead log: owns the writer thread and the directory lock. Hand out
/// [`writer`](Self::writer) and [`reader`](Self::reader) handles; call [`close`](Self::close)
/// to shut down cleanly. Dropping it without closing leaves the writer thread serving the
/// remaining handles until the last one is dropped.
pub struct Wal {
    shared: Arc<Shared>,
    writer: WalWriter,
    thread: Option<JoinHandle<()>>,
    report: RecoveryReport,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.config.dir)
            .field("recovery", &self.report)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens the WAL in `config.dir` (creating it if needed), recovers it (verifying every
    /// record; see [`RecoveryReport`]) and starts the writer thread. Blocking: from async code
    /// call it inside `tokio::task::spawn_blocking`. Needs no runtime itself, but the handles'
    /// async methods use tokio's synchronization primitives.
    pub fn open(config: WalConfig) -> Result<Wal, WalError> {
        config.validate()?;
        let recovered = recovery::recover(&config)?;
        let dir = config.dir.clone();
        let next_seq = recovered.next_seq;
        let active = recovered.segments.active.clone();
        let shared = Arc::new(Shared::new(config, recovered.segments, next_seq));
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = WriterThread::new(
            shared.clone(),
            rx,
            recovered.active_file,
            recovered.lock_file,
            &active,
            next_seq,
        );
        let handle = std::thread::Builder::new()
            .name("cityward-wal".into())
            .spawn(move || thread.run())
            .map_err(|e| WalError::io("start the writer thread for", &dir, e))?;
        Ok(Wal {
            writer: WalWriter {
                shared: shared.clone(),
                tx,
            },
            shared,
            thread: Some(handle),
            report: recovered.report,
        })
    }

    /// A handle for appending.
    pub fn writer(&self) -> WalWriter {
        self.writer.clone()
    }

    /// A handle for reading and compaction.
    pub fn reader(&self) -> WalReader {
        WalReader {
            shared: self.shared.clone(),
        }
    }

    /// What recovery found and did when this WAL was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// A snapshot of the WAL's counters.
    pub fn stats(&self) -> WalStats {
        self.shared.stats()
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.shared.config.dir
    }

    /// Shuts down cleanly: every append queued before this call is written, fsync'd and
    /// acknowledged, later ones fail with [`WalError::Closed`], and the writer thread is
    /// joined. Returns the final counters, or the I/O error that had stopped the writer.
    pub async fn close(mut self) -> Result<WalStats, WalError> {
        let (reply, done) = oneshot::channel();
        if self.writer.tx.send(Msg::Close(reply)).is_ok() {
            let _ = done.await;
        }
        if let Some(thread) = self.thread.take() {
            // The thread answered as its last act, so this join does not wait.
            if thread.join().is_err() {
                tracing::error!(dir = %self.shared.config.dir.display(), "WAL writer thread panicked.");
            }
        }
        let stats = self.shared.stats();
        match self.shared.failure() {
            Some(failure) => Err(failure.to_error()),
            None => Ok(stats),
        }
    }
}
