//! State shared by the writer thread and the handles: segment list, durable position,
//! counters and the failure that stopped the writer.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{watch, Semaphore};

use super::config::WalConfig;
use super::error::WalError;

/// A segment file and the records it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentInfo {
    /// Path of the segment file.
    pub path: PathBuf,
    /// Sequence number in the file name: the first record's, or the one it would have had.
    pub first_seq: u64,
    /// Sequence number of the last intact record, `None` if the segment holds none.
    pub last_seq: Option<u64>,
    /// Number of intact records.
    pub records: u64,
    /// Size of the file in bytes (header included).
    pub bytes: u64,
}

/// Whether the writer thread still accepts appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriterState {
    /// Accepting appends.
    Running,
    /// Stopped by an I/O error; every append fails with [`WalError::WriterFailed`].
    Failed,
    /// Closed by [`Wal::close`](super::Wal::close); every append fails with [`WalError::Closed`].
    Closed,
}

/// A snapshot of the WAL's counters and gauges, for `/metrics`, the console and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalStats {
    /// Whether the writer accepts appends.
    pub state: WriterState,
    /// Bytes written to segment files by this process (frames and segment headers).
    pub bytes_written: u64,
    /// Records made durable by this process.
    pub records_written: u64,
    /// Appends acknowledged as durable by this process.
    pub appends_acked: u64,
    /// fdatasync calls made on segment files (each is one group commit or a segment seal).
    pub fsyncs: u64,
    /// Duration of the latest fdatasync, in microseconds.
    pub last_fsync_us: u64,
    /// Mean duration of the fdatasync calls so far, in microseconds.
    pub avg_fsync_us: u64,
    /// Longest fdatasync so far, in microseconds.
    pub max_fsync_us: u64,
    /// How long the fdatasync now running has been running, in microseconds, 0 when none is:
    /// the heartbeat that shows a stuck disk.
    pub fsync_in_progress_us: u64,
    /// Appends waiting in the queue for the writer thread.
    pub queued_appends: u64,
    /// Framed bytes waiting in the queue (bounded by `queue_bytes`).
    pub queued_bytes: u64,
    /// Segment files, sealed and active.
    pub segments: u64,
    /// Bytes of all segment files on disk.
    pub disk_bytes: u64,
    /// Sequence number the next appended record will get.
    pub next_seq: u64,
    /// Sequence number of the newest durable record, `None` if the WAL holds none yet.
    pub last_durable_seq: Option<u64>,
}

/// The segment being appended to.
#[derive(Debug, Clone)]
pub(crate) struct ActiveSegment {
    pub path: PathBuf,
    pub first_seq: u64,
    /// Length of the file up to the last fsync: readers read no further.
    pub durable_len: u64,
    /// Records up to the last fsync.
    pub records: u64,
    /// Last record up to the last fsync.
    pub last_seq: Option<u64>,
    /// Length of the file including writes not yet fsync'd.
    pub written_len: u64,
}

impl ActiveSegment {
    pub(crate) fn info(&self) -> SegmentInfo {
        SegmentInfo {
            path: self.path.clone(),
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            records: self.records,
            bytes: self.durable_len,
        }
    }
}

/// Sealed segments (oldest first) and the active one.
#[derive(Debug, Clone)]
pub(crate) struct Segments {
    pub sealed: VecDeque<SegmentInfo>,
    pub active: ActiveSegment,
}

/// The I/O error that stopped the writer.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub op: &'static str,
    pub path: PathBuf,
    pub offset: u64,
    pub source: Arc<io::Error>,
}

impl Failure {
    pub(crate) fn to_error(&self) -> WalError {
        WalError::WriterFailed {
            op: self.op,
            path: self.path.clone(),
            offset: self.offset,
            source: self.source.clone(),
        }
    }
}

const RUNNING: u8 = 0;
const FAILED: u8 = 1;
const CLOSED: u8 = 2;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes_written: AtomicU64,
    pub records_written: AtomicU64,
    pub appends_acked: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_total_us: AtomicU64,
    pub last_fsync_us: AtomicU64,
    pub max_fsync_us: AtomicU64,
    /// Start of the running fsync, in µs since `Shared::epoch` plus one; 0 when none runs.
    pub fsync_started: AtomicU64,
    pub queued_appends: AtomicU64,
    pub next_seq: AtomicU64,
}

pub(crate) struct Shared {
    pub config: WalConfig,
    pub epoch: Instant,
    pub segments: Mutex<Segments>,
    /// Sequence number of the newest durable record (0 while there is none).
    pub durable: watch::Sender<u64>,
    /// Permits are framed bytes: the bound of the append queue.
    pub queue: Arc<Semaphore>,
    pub counters: Counters,
    /// Serializes `delete_through` calls.
    pub delete_lock: Mutex<()>,
    state: AtomicU8,
    failure: Mutex<Option<Failure>>,
    /// Makes the writer's next write fail, to test failure handling.
    #[cfg(test)]
    pub inject_write_error: std::sync::atomic::AtomicBool,
}

/// Locks a mutex, ignoring poisoning: the protected data stays consistent at every unlock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(config: WalConfig, segments: Segments, next_seq: u64) -> Shared {
        let durable = segments
            .active
            .last_seq
            .or_else(|| segments.sealed.back().and_then(|s| s.last_seq))
            .unwrap_or(0);
        let counters = Counters::default();
        counters.next_seq.store(next_seq, Relaxed);
        Shared {
            queue: Arc::new(Semaphore::new(config.queue_bytes as usize)),
            config,
            epoch: Instant::now(),
            segments: Mutex::new(segments),
            durable: watch::Sender::new(durable),
            counters,
            delete_lock: Mutex::new(()),
            state: AtomicU8::new(RUNNING),
            failure: Mutex::new(None),
            #[cfg(test)]
            inject_write_error: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn state(&self) -> WriterState {
        match self.state.load(std::sync::atomic::Ordering::Acquire) {
            RUNNING => WriterState::Running,
            FAILED => WriterState::Failed,
            _ => WriterState::Closed,
        }
    }

    /// Ok while running; otherwise the error an append gets.
    pub(crate) fn check_running(&self) -> Result<(), WalError> {
        match self.state() {
            WriterState::Running => Ok(()),
            _ => Err(self.stopped_error()),
        }
    }

    /// The error for an append that cannot be (or was not) served.
    pub(crate) fn stopped_error(&self) -> WalError {
        match &*lock(&self.failure) {
            Some(f) => f.to_error(),
            None => WalError::Closed,
        }
    }

    pub(crate) fn set_failed(&self, failure: Failure) {
        *lock(&self.failure) = Some(failure);
        self.state
            .store(FAILED, std::sync::atomic::Ordering::Release);
        // Wake appenders waiting for queue room: they fail at once.
        self.queue.close();
    }

    pub(crate) fn set_closed(&self) {
        let _ = self.state.compare_exchange(
            RUNNING,
            CLOSED,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        );
        self.queue.close();
    }

    pub(crate) fn failure(&self) -> Option<Failure> {
        lock(&self.failure).clone()
    }

    pub(crate) fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    pub(crate) fn stats(&self) -> WalStats {
        let c = &self.counters;
        let (segments, disk_bytes, last_durable_seq) = {
            let s = lock(&self.segments);
            let sealed_bytes: u64 = s.sealed.iter().map(|x| x.bytes).sum();
            let last = s
                .active
                .last_seq
                .or_else(|| s.sealed.back().and_then(|x| x.last_seq));
            (
                s.sealed.len() as u64 + 1,
                sealed_bytes + s.active.written_len,
                last,
            )
        };
        let fsyncs = c.fsyncs.load(Relaxed);
        let started = c.fsync_started.load(Relaxed);
        let queued_bytes =
            (self.config.queue_bytes as usize).saturating_sub(self.queue.available_permits());
        WalStats {
            state: self.state(),
            bytes_written: c.bytes_written.load(Relaxed),
            records_written: c.records_written.load(Relaxed),
            appends_acked: c.appends_acked.load(Relaxed),
            fsyncs,
            last_fsync_us: c.last_fsync_us.load(Relaxed),
            avg_fsync_us: c
                .fsync_total_us
                .load(Relaxed)
                .checked_div(fsyncs)
                .unwrap_or(0),
            max_fsync_us: c.max_fsync_us.load(Relaxed),
            fsync_in_progress_us: if started == 0 {
                0
            } else {
                self.now_us().saturating_sub(started - 1)
            },
            queued_appends: c.queued_appends.load(Relaxed),
            queued_bytes: if self.state() == WriterState::Running {
                queued_bytes as u64
            } else {
                0
            },
            segments,
            disk_bytes,
            next_seq: c.next_seq.load(Relaxed),
            last_durable_seq,
        }
    }
}
