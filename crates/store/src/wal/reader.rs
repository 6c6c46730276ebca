//! Reading the WAL: sealed segments for a compactor, a cursor over everything durable from
//! a sequence number on, and deletion of compacted segments.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use super::config::CorruptionPolicy;
use super::error::WalError;
use super::format::{
    check_segment_header, decode_frame, parse_segment_file_name, resync, Damage, Decoded,
    SEGMENT_HEADER_LEN,
};
use super::recovery::sync_dir;
use super::shared::{lock, SegmentInfo, Shared, WalStats, WriterState};

/// Cloneable handle for reading the WAL and deleting compacted segments. Its methods do
/// blocking file I/O: from async code call them inside `tokio::task::spawn_blocking`.
#[derive(Clone)]
pub struct WalReader {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for WalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReader")
            .field("dir", &self.shared.config.dir)
            .finish_non_exhaustive()
    }
}

impl WalReader {
    /// The sealed segments, oldest first, with their sequence ranges. They no longer change
    /// until `delete_through` removes them.
    pub fn sealed_segments(&self) -> Vec<SegmentInfo> {
        lock(&self.shared.segments).sealed.iter().cloned().collect()
    }

    /// The active segment as far as it is durable (`bytes` is its durable length).
    pub fn active_segment(&self) -> SegmentInfo {
        lock(&self.shared.segments).active.info()
    }

    /// Loads a segment (normally one from [`sealed_segments`](Self::sealed_segments)) for
    /// iterating its records. Reads at most `segment.bytes` bytes, so a snapshot of the active
    /// segment yields only its durable records.
    pub fn open_segment(&self, segment: &SegmentInfo) -> Result<SegmentReader, WalError> {
        SegmentReader::load(
            &segment.path,
            segment.first_seq,
            Some(segment.bytes),
            self.shared.config.on_corruption,
        )
        .map_err(|e| gone_if_missing(e, &segment.path, segment.first_seq))
    }

    /// A cursor over every durable record with sequence number `seq` or later, across sealed
    /// segments and the active one, as far as it was durable when the cursor was made. Fails
    /// with [`WalError::NotRetained`] if compaction already deleted record `seq`.
    pub fn read_from(&self, seq: u64) -> Result<WalCursor, WalError> {
        let segments = lock(&self.shared.segments);
        let oldest = segments
            .sealed
            .front()
            .map_or(segments.active.first_seq, |s| s.first_seq);
        if seq < oldest {
            return Err(WalError::NotRetained { seq, oldest });
        }
        let mut queue: VecDeque<SegmentInfo> = segments.sealed.iter().cloned().collect();
        queue.push_back(segments.active.info());
        Ok(WalCursor {
            queue,
            current: None,
            next_seq: seq,
            policy: self.shared.config.on_corruption,
        })
    }

    /// A cursor over every durable record still retained, oldest first.
    pub fn read_all(&self) -> WalCursor {
        let oldest = {
            let segments = lock(&self.shared.segments);
            segments
                .sealed
                .front()
                .map_or(segments.active.first_seq, |s| s.first_seq)
        };
        self.read_from(oldest)
            .expect("the oldest retained seq is retained")
    }

    /// Deletes the oldest sealed segments whose records all have sequence numbers `<= seq`
    /// (those a compactor has stored elsewhere), then fsyncs the directory. Never deletes the
    /// active segment, so sequence numbers are not reused. Returns the deleted segments.
    /// Refused with [`WalError::Closed`] once the WAL is closed (the directory lock is gone).
    pub fn delete_through(&self, seq: u64) -> Result<Vec<SegmentInfo>, WalError> {
        let _one_at_a_time = lock(&self.shared.delete_lock);
        if self.shared.state() == WriterState::Closed {
            return Err(WalError::Closed);
        }
        let victims: Vec<SegmentInfo> = lock(&self.shared.segments)
            .sealed
            .iter()
            .take_while(|s| s.last_seq.is_none_or(|last| last <= seq))
            .cloned()
            .collect();
        let mut deleted = Vec::with_capacity(victims.len());
        let mut error = None;
        for victim in victims {
            match fs::remove_file(&victim.path) {
                Ok(()) => deleted.push(victim),
                Err(e) if e.kind() == io::ErrorKind::NotFound => deleted.push(victim),
                Err(e) => {
                    error = Some(WalError::io("delete segment", &victim.path, e));
                    break;
                }
            }
        }
        if !deleted.is_empty() {
            {
                let mut segments = lock(&self.shared.segments);
                for _ in 0..deleted.len() {
                    segments.sealed.pop_front();
                }
            }
            let dir = &self.shared.config.dir;
            sync_dir(dir).map_err(|e| WalError::io("fsync directory", dir, e))?;
            tracing::info!(
                segments = deleted.len(),
                through_seq = seq,
                oldest_file = %deleted[0].path.display(),
                "Deleted compacted WAL segments."
            );
        }
        match error {
            Some(e) => Err(e),
            None => Ok(deleted),
        }
    }

    /// Sequence number of the newest durable record, `None` if there is none.
    pub fn last_durable_seq(&self) -> Option<u64> {
        Some(*self.shared.durable.borrow()).filter(|&s| s > 0)
    }

    /// A receiver that changes whenever more records become durable; its value is the newest
    /// durable sequence number (0 while there is none). A tailing reader waits on it, then
    /// reads on with `read_from(cursor.next_seq())`.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.durable.subscribe()
    }

    /// A snapshot of the WAL's counters.
    pub fn stats(&self) -> WalStats {
        self.shared.stats()
    }
}

fn gone_if_missing(error: WalError, path: &Path, next_seq: u64) -> WalError {
    match error {
        WalError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            WalError::SegmentGone {
                path: path.to_path_buf(),
                next_seq,
            }
        }
        other => other,
    }
}

/// One segment loaded into memory, for iterating its records with [`records`](Self::records).
#[derive(Debug)]
pub struct SegmentReader {
    path: PathBuf,
    first_seq: u64,
    data: Vec<u8>,
    policy: CorruptionPolicy,
}

impl SegmentReader {
    /// Loads a segment file by path (its first sequence number comes from its name), e.g. for
    /// an offline tool. Damage is reported by the iterator, or skipped under
    /// [`CorruptionPolicy::Skip`].
    pub fn open(
        path: impl AsRef<Path>,
        policy: CorruptionPolicy,
    ) -> Result<SegmentReader, WalError> {
        let path = path.as_ref();
        let first_seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_segment_file_name)
            .ok_or_else(|| WalError::Corrupt {
                path: path.to_path_buf(),
                offset: 0,
                reason: "the file name is not a WAL segment name (wal-<20 digits>.log)".into(),
            })?;
        SegmentReader::load(path, first_seq, None, policy)
    }

    pub(crate) fn load(
        path: &Path,
        first_seq: u64,
        limit: Option<u64>,
        policy: CorruptionPolicy,
    ) -> Result<SegmentReader, WalError> {
        let mut data = Vec::new();
        let file = File::open(path).map_err(|e| WalError::io("open segment", path, e))?;
        match limit {
            Some(limit) => file.take(limit).read_to_end(&mut data),
            None => (&file).read_to_end(&mut data),
        }
        .map_err(|e| WalError::io("read segment", path, e))?;
        Ok(SegmentReader {
            path: path.to_path_buf(),
            first_seq,
            data,
            policy,
        })
    }

    /// The segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sequence number in the segment's name.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The records, in order, as `(seq, payload)`, each checked against its CRC. Damage ends
    /// the iteration with one [`WalError::Corrupt`] (or is skipped under
    /// [`CorruptionPolicy::Skip`]).
    pub fn records(&self) -> SegmentRecords<'_> {
        SegmentRecords {
            reader: self,
            frames: FrameCursor::new(self.first_seq),
        }
    }
}

/// Iterator over the records of a [`SegmentReader`].
#[derive(Debug)]
pub struct SegmentRecords<'a> {
    reader: &'a SegmentReader,
    frames: FrameCursor,
}

impl<'a> Iterator for SegmentRecords<'a> {
    type Item = Result<(u64, &'a [u8]), WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        let r = self.reader;
        Some(
            self.frames
                .next(&r.data, &r.path, r.policy)?
                .map(|(seq, start, end)| (seq, &r.data[start..end])),
        )
    }
}

/// Walks the frames of one segment's bytes, checking CRCs and the sequence.
#[derive(Debug)]
struct FrameCursor {
    offset: usize,
    expected: u64,
    started: bool,
    done: bool,
}

impl FrameCursor {
    fn new(first_seq: u64) -> FrameCursor {
        FrameCursor {
            offset: SEGMENT_HEADER_LEN,
            expected: first_seq,
            started: false,
            done: false,
        }
    }

    /// The next record as `(seq, payload start, payload end)`.
    fn next(
        &mut self,
        data: &[u8],
        path: &Path,
        policy: CorruptionPolicy,
    ) -> Option<Result<(u64, usize, usize), WalError>> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            if let Err(damage) = check_segment_header(data, self.expected) {
                match policy {
                    CorruptionPolicy::Fail => {
                        self.done = true;
                        return Some(Err(WalError::Corrupt {
                            path: path.to_path_buf(),
                            offset: 0,
                            reason: damage.to_string(),
                        }));
                    }
                    CorruptionPolicy::Skip => {
                        tracing::warn!(file = %path.display(), reason = %damage, "Skipped a damaged WAL segment header.");
                    }
                }
            }
        }
        loop {
            if self.done {
                return None;
            }
            let damage = match decode_frame(data, self.offset) {
                Decoded::End => {
                    self.done = true;
                    return None;
                }
                Decoded::Record {
                    seq, start, end, ..
                } if seq == self.expected
                    || (seq > self.expected && policy == CorruptionPolicy::Skip) =>
                {
                    if seq != self.expected {
                        tracing::warn!(
                            file = %path.display(),
                            expected = self.expected,
                            found = seq,
                            "Skipped a gap in WAL sequence numbers."
                        );
                    }
                    self.expected = seq + 1;
                    self.offset = end;
                    return Some(Ok((seq, start, end)));
                }
                Decoded::Record { seq, .. } => Damage::Sequence {
                    expected: self.expected,
                    found: seq,
                },
                Decoded::Damaged(damage) => damage,
            };
            if let Some(e) = self.damaged(data, path, policy, self.offset, damage) {
                return Some(Err(e));
            }
        }
    }

    /// Handles damage at `at`: under `fail` stops with the error; under `skip` moves past it.
    fn damaged(
        &mut self,
        data: &[u8],
        path: &Path,
        policy: CorruptionPolicy,
        at: usize,
        damage: Damage,
    ) -> Option<WalError> {
        match policy {
            CorruptionPolicy::Fail => {
                self.done = true;
                Some(WalError::Corrupt {
                    path: path.to_path_buf(),
                    offset: at as u64,
                    reason: damage.to_string(),
                })
            }
            CorruptionPolicy::Skip => {
                let next = resync(data, at + 1, self.expected);
                tracing::warn!(
                    file = %path.display(),
                    offset = at,
                    bytes = next.unwrap_or(data.len()) - at,
                    reason = %damage,
                    "Skipped damaged WAL records; they are lost."
                );
                match next {
                    Some(next) => self.offset = next,
                    None => self.done = true,
                }
                None
            }
        }
    }
}

/// A cursor over the WAL's durable records from some sequence number on, across segments.
/// It sees the records that were durable when it was made; make a new one with
/// `read_from(cursor.next_seq())` to see more.
#[derive(Debug)]
pub struct WalCursor {
    queue: VecDeque<SegmentInfo>,
    current: Option<(SegmentReader, FrameCursor)>,
    next_seq: u64,
    policy: CorruptionPolicy,
}

impl WalCursor {
    /// The next record as `(seq, payload)`, `None` at the end. The payload borrows from the
    /// cursor until the next call. Fails on damage (unless skipping) and with
    /// [`WalError::SegmentGone`] if compaction deleted a segment before it was read.
    pub fn next_record(&mut self) -> Result<Option<(u64, &[u8])>, WalError> {
        let (seq, start, end) = loop {
            let (reader, frames) = match &mut self.current {
                Some(current) => (&current.0, &mut current.1),
                None => {
                    let Some(segment) = self.queue.pop_front() else {
                        return Ok(None);
                    };
                    if segment.last_seq.is_none_or(|last| last < self.next_seq) {
                        continue;
                    }
                    let reader = SegmentReader::load(
                        &segment.path,
                        segment.first_seq,
                        Some(segment.bytes),
                        self.policy,
                    )
                    .map_err(|e| gone_if_missing(e, &segment.path, self.next_seq))?;
                    let current = self
                        .current
                        .insert((reader, FrameCursor::new(segment.first_seq)));
                    (&current.0, &mut current.1)
                }
            };
            match frames.next(&reader.data, &reader.path, self.policy) {
                None => self.current = None,
                Some(Err(e)) => return Err(e),
                Some(Ok((seq, start, end))) if seq >= self.next_seq => break (seq, start, end),
                Some(Ok(_)) => {}
            }
        };
        self.next_seq = seq + 1;
        let data = &self.current.as_ref().expect("a segment is loaded").0.data;
        Ok(Some((seq, &data[start..end])))
    }

    /// The sequence number this cursor reads next: one past the last record it returned.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}
