//! The append handle and the writer thread that group-commits for it.
//!
//! Appenders queue their batches (bounded in bytes by a semaphore); one OS thread drains
//! everything queued, frames it into one buffer, writes it with one `write`, runs one
//! `fdatasync`, and only then answers every waiter. fsync blocks, so it never runs on the
//! async runtime.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::error::WalError;
use super::format::{encode_frame, framed_len, set_sync_flag, SEGMENT_HEADER_LEN};
use super::recovery::create_segment;
use super::shared::{lock, ActiveSegment, Failure, SegmentInfo, Shared, WalStats};

/// The sequence numbers given to the records of one acknowledged append, all durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AppendAck {
    /// Sequence number of the append's first record (for an empty append: the number the
    /// next record will get).
    pub first_seq: u64,
    /// Number of records; record `i` of the append has sequence number `first_seq + i`.
    pub count: u64,
}

impl AppendAck {
    /// Sequence number of the append's last record, `None` for an empty append.
    pub fn last_seq(&self) -> Option<u64> {
        self.count.checked_sub(1).map(|n| self.first_seq + n)
    }

    /// The sequence numbers as a half-open range.
    pub fn seqs(&self) -> std::ops::Range<u64> {
        self.first_seq..self.first_seq + self.count
    }
}

/// A request to the writer thread.
pub(crate) enum Msg {
    Append(AppendReq),
    Roll(oneshot::Sender<Result<Option<SegmentInfo>, WalError>>),
    Close(oneshot::Sender<()>),
}

pub(crate) struct AppendReq {
    records: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<AppendAck, WalError>>,
    /// Queue room held until the records are copied into the write buffer.
    _permit: OwnedSemaphorePermit,
}

/// Cloneable handle that appends batches of records to the WAL. Cheap to clone; every clone
/// feeds the same writer thread.
#[derive(Clone)]
pub struct WalWriter {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tx: mpsc::UnboundedSender<Msg>,
}

impl std::fmt::Debug for WalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalWriter")
            .field("dir", &self.shared.config.dir)
            .finish_non_exhaustive()
    }
}

impl WalWriter {
    /// Appends `records` and resolves once all of them are written and fdatasync'd, with the
    /// sequence numbers they got (consecutive, in order). Waits while the queue is full
    /// (`queue_bytes`). An empty batch resolves once every earlier append is durable.
    ///
    /// Dropping the future does not withdraw the records: once queued they are written; only
    /// the acknowledgement is lost. On error nothing of the batch may be taken as durable.
    pub async fn append(&self, records: Vec<Vec<u8>>) -> Result<AppendAck, WalError> {
        self.shared.check_running()?;
        let max = self.shared.config.max_record_bytes;
        let mut bytes = 0u64;
        for (index, record) in records.iter().enumerate() {
            if record.len() > max as usize {
                return Err(WalError::RecordTooLarge {
                    index,
                    len: record.len(),
                    max,
                });
            }
            bytes += framed_len(record.len());
        }
        let queue_bytes = self.shared.config.queue_bytes;
        if bytes > queue_bytes {
            return Err(WalError::BatchTooLarge { bytes, queue_bytes });
        }
        let permit = self
            .shared
            .queue
            .clone()
            .acquire_many_owned(bytes as u32)
            .await
            .map_err(|_| self.shared.stopped_error())?;
        let (reply, answer) = oneshot::channel();
        self.shared.counters.queued_appends.fetch_add(1, Relaxed);
        if self
            .tx
            .send(Msg::Append(AppendReq {
                records,
                reply,
                _permit: permit,
            }))
            .is_err()
        {
            self.shared.counters.queued_appends.fetch_sub(1, Relaxed);
            return Err(self.shared.stopped_error());
        }
        answer
            .await
            .unwrap_or_else(|_| Err(self.shared.stopped_error()))
    }

    /// Seals the active segment (after making every earlier append durable) and starts a new
    /// one, so a compactor can take it. Returns the sealed segment, or `None` when the active
    /// segment holds no records (nothing is sealed then).
    pub async fn roll(&self) -> Result<Option<SegmentInfo>, WalError> {
        self.shared.check_running()?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Roll(reply))
            .map_err(|_| self.shared.stopped_error())?;
        answer
            .await
            .unwrap_or_else(|_| Err(self.shared.stopped_error()))
    }

    /// A snapshot of the WAL's counters.
    pub fn stats(&self) -> WalStats {
        self.shared.stats()
    }
}

/// An I/O failure inside the writer: operation, file, offset, error.
type IoFailure = (&'static str, PathBuf, u64, io::Error);

/// The state owned by the writer thread.
pub(crate) struct WriterThread {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// The directory lock (flock), held until the thread ends.
    _lock_file: File,
    file: File,
    path: PathBuf,
    seg_first_seq: u64,
    /// Bytes in the file (all written; buffered bytes not included).
    seg_len: u64,
    /// Records in the segment, buffered ones included.
    seg_records: u64,
    seg_last_seq: Option<u64>,
    next_seq: u64,
    buf: Vec<u8>,
    /// Start of the last frame in `buf`.
    last_frame: usize,
    buf_records: u64,
    acks: Vec<(oneshot::Sender<Result<AppendAck, WalError>>, AppendAck)>,
    failure: Option<Failure>,
    closed: bool,
}

impl WriterThread {
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: mpsc::UnboundedReceiver<Msg>,
        file: File,
        lock_file: File,
        active: &ActiveSegment,
        next_seq: u64,
    ) -> WriterThread {
        WriterThread {
            shared,
            rx,
            _lock_file: lock_file,
            file,
            path: active.path.clone(),
            seg_first_seq: active.first_seq,
            seg_len: active.written_len,
            seg_records: active.records,
            seg_last_seq: active.last_seq,
            next_seq,
            buf: Vec::with_capacity(1 << 20),
            last_frame: 0,
            buf_records: 0,
            acks: Vec::new(),
            failure: None,
            closed: false,
        }
    }

    /// The thread's body: serve until closed or until every handle is gone.
    pub(crate) fn run(mut self) {
        let mut batch = Vec::new();
        let mut close_replies = Vec::new();
        while !self.closed {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            batch.push(first);
            // Group commit: take everything that queued up while the last fsync ran.
            while let Ok(msg) = self.rx.try_recv() {
                batch.push(msg);
            }
            for msg in batch.drain(..) {
                self.handle(msg, &mut close_replies);
            }
            self.commit();
        }
        self.shared.set_closed();
        self.rx.close();
        while let Ok(msg) = self.rx.try_recv() {
            self.handle(msg, &mut close_replies);
        }
        tracing::debug!(file = %self.path.display(), next_seq = self.next_seq, "WAL writer stopped.");
        drop(self); // closes the segment and releases the directory lock
        for reply in close_replies {
            let _ = reply.send(());
        }
    }

    fn handle(&mut self, msg: Msg, close_replies: &mut Vec<oneshot::Sender<()>>) {
        match msg {
            Msg::Append(req) => {
                self.shared.counters.queued_appends.fetch_sub(1, Relaxed);
                if let Some(err) = self.refusal() {
                    let _ = req.reply.send(Err(err));
                    return;
                }
                let first_seq = self.next_seq;
                for record in &req.records {
                    if let Err(failure) = self.encode(record) {
                        self.fail(failure);
                        break;
                    }
                }
                match &self.failure {
                    Some(f) => {
                        let _ = req.reply.send(Err(f.to_error()));
                    }
                    None => {
                        let count = req.records.len() as u64;
                        self.acks.push((req.reply, AppendAck { first_seq, count }));
                    }
                }
                self.shared.counters.next_seq.store(self.next_seq, Relaxed);
                // `req` (records and queue permit) is dropped here: the bytes live in `buf` now.
            }
            Msg::Roll(reply) => {
                if let Some(err) = self.refusal() {
                    let _ = reply.send(Err(err));
                    return;
                }
                self.commit();
                let result = match self.failure.as_ref() {
                    Some(f) => Err(f.to_error()),
                    None if self.seg_records == 0 => Ok(None),
                    None => self.roll_segment().map(Some).map_err(|failure| {
                        self.fail(failure);
                        self.failure.as_ref().expect("just failed").to_error()
                    }),
                };
                let _ = reply.send(result);
            }
            Msg::Close(reply) => {
                self.commit();
                self.closed = true;
                self.shared.set_closed();
                close_replies.push(reply);
            }
        }
    }

    /// The error for a request the writer no longer serves.
    fn refusal(&self) -> Option<WalError> {
        match (&self.failure, self.closed) {
            (Some(f), _) => Some(f.to_error()),
            (None, true) => Some(WalError::Closed),
            (None, false) => None,
        }
    }

    /// Frames one record into the buffer, sealing the segment first if it would overflow.
    fn encode(&mut self, record: &[u8]) -> Result<(), IoFailure> {
        let frame = framed_len(record.len());
        if self.seg_records > 0
            && self.seg_len + self.buf.len() as u64 + frame > self.shared.config.segment_bytes
        {
            self.flush()?;
            self.roll_segment()?;
        }
        self.last_frame = self.buf.len();
        encode_frame(&mut self.buf, self.next_seq, record);
        self.seg_last_seq = Some(self.next_seq);
        self.next_seq += 1;
        self.seg_records += 1;
        self.buf_records += 1;
        Ok(())
    }

    /// Writes the buffer with one write and fdatasyncs, then publishes the new durable end.
    fn flush(&mut self) -> Result<(), IoFailure> {
        if self.buf.is_empty() {
            return Ok(());
        }
        set_sync_flag(&mut self.buf[self.last_frame..]);
        let offset = self.seg_len;
        #[cfg(test)]
        if self.shared.inject_write_error.swap(false, Relaxed) {
            return Err((
                "write",
                self.path.clone(),
                offset,
                io::Error::from_raw_os_error(28),
            ));
        }
        self.file
            .write_all(&self.buf)
            .map_err(|e| ("write", self.path.clone(), offset, e))?;
        self.seg_len += self.buf.len() as u64;
        let c = &self.shared.counters;
        c.bytes_written.fetch_add(self.buf.len() as u64, Relaxed);
        self.buf.clear();
        let started = Instant::now();
        c.fsync_started.store(self.shared.now_us() + 1, Relaxed);
        let synced = self.file.sync_data();
        c.fsync_started.store(0, Relaxed);
        synced.map_err(|e| ("fsync", self.path.clone(), offset, e))?;
        let us = started.elapsed().as_micros() as u64;
        c.fsyncs.fetch_add(1, Relaxed);
        c.fsync_total_us.fetch_add(us, Relaxed);
        c.last_fsync_us.store(us, Relaxed);
        c.max_fsync_us.fetch_max(us, Relaxed);
        c.records_written.fetch_add(self.buf_records, Relaxed);
        self.buf_records = 0;
        {
            let mut segments = lock(&self.shared.segments);
            let active = &mut segments.active;
            active.durable_len = self.seg_len;
            active.written_len = self.seg_len;
            active.records = self.seg_records;
            active.last_seq = self.seg_last_seq;
        }
        if let Some(seq) = self.seg_last_seq {
            self.shared.durable.send_replace(seq);
        }
        Ok(())
    }

    /// Makes the buffer durable and answers every waiting append.
    fn commit(&mut self) {
        if self.failure.is_some() {
            return;
        }
        match self.flush() {
            Ok(()) => {
                self.shared
                    .counters
                    .appends_acked
                    .fetch_add(self.acks.len() as u64, Relaxed);
                for (reply, ack) in self.acks.drain(..) {
                    let _ = reply.send(Ok(ack));
                }
            }
            Err(failure) => self.fail(failure),
        }
    }

    /// Seals the active segment (whose data is all durable) and creates the next one.
    fn roll_segment(&mut self) -> Result<SegmentInfo, IoFailure> {
        debug_assert!(self.buf.is_empty());
        let sealed = SegmentInfo {
            path: self.path.clone(),
            first_seq: self.seg_first_seq,
            last_seq: self.seg_last_seq,
            records: self.seg_records,
            bytes: self.seg_len,
        };
        let dir = self.shared.config.dir.clone();
        let (file, path) =
            create_segment(&dir, self.next_seq).map_err(|(op, path, e)| (op, path, 0, e))?;
        self.shared
            .counters
            .bytes_written
            .fetch_add(SEGMENT_HEADER_LEN as u64, Relaxed);
        self.file = file;
        self.path = path.clone();
        self.seg_first_seq = self.next_seq;
        self.seg_len = SEGMENT_HEADER_LEN as u64;
        self.seg_records = 0;
        self.seg_last_seq = None;
        {
            let mut segments = lock(&self.shared.segments);
            segments.sealed.push_back(sealed.clone());
            segments.active = ActiveSegment {
                path,
                first_seq: self.seg_first_seq,
                durable_len: self.seg_len,
                records: 0,
                last_seq: None,
                written_len: self.seg_len,
            };
        }
        tracing::debug!(
            file = %sealed.path.display(),
            first_seq = sealed.first_seq,
            records = sealed.records,
            bytes = sealed.bytes,
            "Sealed a WAL segment."
        );
        Ok(sealed)
    }

    /// Stops the writer: every waiting append, and every later one, gets the error.
    fn fail(&mut self, (op, path, offset, error): IoFailure) {
        tracing::error!(
            file = %path.display(),
            offset,
            op,
            error = %error,
            "WAL writer stopped; appends fail until the WAL is reopened."
        );
        let failure = Failure {
            op,
            path,
            offset,
            source: Arc::new(error),
        };
        self.shared.set_failed(failure.clone());
        self.buf.clear();
        self.buf_records = 0;
        for (reply, _) in self.acks.drain(..) {
            let _ = reply.send(Err(failure.to_error()));
        }
        self.failure = Some(failure);
    }
}
