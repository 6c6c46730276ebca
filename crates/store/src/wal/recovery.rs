//! Recovery on open: lock the directory, scan every segment, verify every frame, cut a torn
//! tail off the last segment, and find the next sequence number. See `README.md` beside this
//! file for the cases.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::config::{CorruptionPolicy, WalConfig};
use super::error::WalError;
use super::format::{
    check_segment_header, decode_frame, resync, segment_file_name, segment_header,
    synced_data_after, Damage, Decoded, FIRST_SEQ, SEGMENT_HEADER_LEN,
};
use super::shared::{ActiveSegment, SegmentInfo, Segments};

/// Name of the lock file in the WAL directory.
pub(crate) const LOCK_FILE: &str = "wal.lock";

/// What recovery found and did when the WAL was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// Segment files after recovery, the active one included.
    pub segments: usize,
    /// Intact records found.
    pub records: u64,
    /// Sequence number the next appended record gets.
    pub next_seq: u64,
    /// The torn tail cut off the last segment, if there was one.
    pub torn_tail: Option<TornTail>,
    /// Damaged ranges skipped under `on_corruption = "skip"` (empty under `fail`).
    pub skipped: Vec<SkippedRange>,
}

/// A torn tail: the end of the last segment after the last intact record, left by a write
/// that was cut short (a crash before its fsync finished) and never acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TornTail {
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset where the file was cut (its new length).
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes_cut: u64,
    /// What was found at `offset`.
    pub reason: String,
}

/// A damaged range skipped under `on_corruption = "skip"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedRange {
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset where the damage starts.
    pub offset: u64,
    /// Bytes skipped.
    pub bytes: u64,
    /// What was found at `offset`.
    pub reason: String,
}

/// The outcome of recovery, handed to the writer.
pub(crate) struct Recovered {
    pub segments: Segments,
    pub active_file: File,
    pub next_seq: u64,
    pub lock_file: File,
    pub report: RecoveryReport,
}

/// Fsyncs a directory, so that file creations and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates segment `first_seq` in `dir`: header written and fsync'd, then the directory fsync'd.
/// Fails if the file exists. Returns the file (opened for appending) and its path.
pub(crate) fn create_segment(
    dir: &Path,
    first_seq: u64,
) -> Result<(File, PathBuf), (&'static str, PathBuf, std::io::Error)> {
    let path = dir.join(segment_file_name(first_seq));
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| ("create segment", path.clone(), e))?;
    file.write_all(&segment_header(first_seq))
        .map_err(|e| ("write segment header", path.clone(), e))?;
    file.sync_all()
        .map_err(|e| ("fsync new segment", path.clone(), e))?;
    sync_dir(dir).map_err(|e| ("fsync directory", dir.to_path_buf(), e))?;
    Ok((file, path))
}

/// Opens (creating if needed) and recovers the WAL in `config.dir`.
pub(crate) fn recover(config: &WalConfig) -> Result<Recovered, WalError> {
    let dir = config.dir.as_path();
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(|e| WalError::io("create directory", dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(|e| WalError::io("fsync directory", parent, e))?;
        }
    }
    let lock_path = dir.join(LOCK_FILE);
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| WalError::io("open lock file", &lock_path, e))?;
    match lock_file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(WalError::Locked {
                dir: dir.to_path_buf(),
                lock: lock_path,
            })
        }
        Err(TryLockError::Error(e)) => return Err(WalError::io("lock", &lock_path, e)),
    }

    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| WalError::io("list directory", dir, e))? {
        let entry = entry.map_err(|e| WalError::io("list directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match super::format::parse_segment_file_name(name) {
            Some(first_seq) => names.push((first_seq, entry.path())),
            None if name == LOCK_FILE => {}
            None => {
                tracing::debug!(file = %entry.path().display(), "Ignored a file that is not a WAL segment.")
            }
        }
    }
    names.sort();

    let mut report = RecoveryReport::default();
    if names.is_empty() {
        let (file, path) =
            create_segment(dir, FIRST_SEQ).map_err(|(op, p, e)| WalError::io(op, p, e))?;
        report.segments = 1;
        report.next_seq = FIRST_SEQ;
        let active = ActiveSegment {
            path,
            first_seq: FIRST_SEQ,
            durable_len: SEGMENT_HEADER_LEN as u64,
            records: 0,
            last_seq: None,
            written_len: SEGMENT_HEADER_LEN as u64,
        };
        return Ok(Recovered {
            segments: Segments {
                sealed: VecDeque::new(),
                active,
            },
            active_file: file,
            next_seq: FIRST_SEQ,
            lock_file,
            report,
        });
    }

    let mut sealed = VecDeque::with_capacity(names.len());
    let mut data = Vec::new();
    // The sequence number the next segment must start at.
    let mut next_seq: Option<u64> = None;
    let last_index = names.len() - 1;
    let mut active = None;
    for (i, (name_seq, path)) in names.iter().enumerate() {
        let is_last = i == last_index;
        data.clear();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| WalError::io("read segment", path, e))?;
        if let Some(expected) = next_seq {
            if *name_seq != expected {
                let reason = format!(
                    "the segment starts at seq {name_seq}, but the segment before it ends at seq {}: \
                     a segment file is missing, renamed or damaged",
                    expected.saturating_sub(1)
                );
                match config.on_corruption {
                    CorruptionPolicy::Fail => {
                        return Err(WalError::Corrupt {
                            path: path.clone(),
                            offset: 0,
                            reason,
                        })
                    }
                    CorruptionPolicy::Skip => {
                        tracing::warn!(file = %path.display(), expected, found = name_seq, "Skipped a gap in WAL sequence numbers.");
                        report.skipped.push(SkippedRange {
                            path: path.clone(),
                            offset: 0,
                            bytes: 0,
                            reason,
                        });
                    }
                }
            }
        }
        let scan = scan_segment(
            &data,
            path,
            *name_seq,
            is_last,
            config.on_corruption,
            &mut report,
        )?;
        report.records += scan.records;
        let seg_next = scan.last_seq.map_or(*name_seq, |s| s + 1);
        next_seq = Some(seg_next);
        if is_last {
            active = Some((scan, path.clone(), *name_seq));
        } else {
            sealed.push_back(SegmentInfo {
                path: path.clone(),
                first_seq: *name_seq,
                last_seq: scan.last_seq,
                records: scan.records,
                bytes: data.len() as u64,
            });
        }
    }

    let (scan, path, first_seq) = active.expect("at least one segment");
    let next_seq = next_seq.expect("at least one segment");
    let mut file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| WalError::io("open segment for appending", &path, e))?;
    let mut len = data.len() as u64;
    if let Some(cut) = scan.cut_at {
        let bytes_cut = len - cut as u64;
        let reason = scan.cut_reason.clone().unwrap_or_default();
        file.set_len(cut as u64)
            .map_err(|e| WalError::io("truncate torn tail of", &path, e))?;
        if cut < SEGMENT_HEADER_LEN {
            // The header itself was torn: the crash came while the segment was being created.
            file.set_len(0)
                .map_err(|e| WalError::io("truncate torn tail of", &path, e))?;
            file.write_all(&segment_header(first_seq))
                .map_err(|e| WalError::io("rewrite segment header of", &path, e))?;
        }
        file.sync_all()
            .map_err(|e| WalError::io("fsync truncated segment", &path, e))?;
        len = (cut as u64).max(SEGMENT_HEADER_LEN as u64);
        tracing::warn!(
            file = %path.display(),
            offset = cut,
            bytes_cut,
            reason = %reason,
            "Cut a torn tail off the last WAL segment; these bytes were never acknowledged."
        );
        report.torn_tail = Some(TornTail {
            path: path.clone(),
            offset: cut as u64,
            bytes_cut,
            reason,
        });
    }
    report.segments = sealed.len() + 1;
    report.next_seq = next_seq;
    if report.torn_tail.is_some() || !report.skipped.is_empty() {
        tracing::info!(
            segments = report.segments,
            records = report.records,
            next_seq,
            "Recovered the WAL."
        );
    } else {
        tracing::debug!(
            segments = report.segments,
            records = report.records,
            next_seq,
            "Recovered the WAL."
        );
    }
    let active = ActiveSegment {
        path,
        first_seq,
        durable_len: len,
        records: scan.records,
        last_seq: scan.last_seq,
        written_len: len,
    };
    Ok(Recovered {
        segments: Segments { sealed, active },
        active_file: file,
        next_seq,
        lock_file,
        report,
    })
}

/// What one segment holds.
struct SegmentScan {
    records: u64,
    last_seq: Option<u64>,
    /// For the last segment: where to cut a torn tail.
    cut_at: Option<usize>,
    cut_reason: Option<String>,
}

/// Verifies every frame of one segment.
fn scan_segment(
    data: &[u8],
    path: &Path,
    name_seq: u64,
    is_last: bool,
    policy: CorruptionPolicy,
    report: &mut RecoveryReport,
) -> Result<SegmentScan, WalError> {
    let mut scan = SegmentScan {
        records: 0,
        last_seq: None,
        cut_at: None,
        cut_reason: None,
    };
    let mut expected = name_seq;
    let mut offset = SEGMENT_HEADER_LEN;
    if let Err(damage) = check_segment_header(data, name_seq) {
        if is_last && !synced_data_after(data, 0, name_seq) {
            scan.cut_at = Some(0);
            scan.cut_reason = Some(damage.to_string());
            return Ok(scan);
        }
        match policy {
            CorruptionPolicy::Fail => {
                return Err(WalError::Corrupt {
                    path: path.to_path_buf(),
                    offset: 0,
                    reason: damage.to_string(),
                })
            }
            CorruptionPolicy::Skip => {
                // Trust the file name and look for frames after where the header would end.
                let reason = damage.to_string();
                tracing::warn!(file = %path.display(), offset = 0, reason = %reason, "Skipped a damaged WAL segment header.");
                report.skipped.push(SkippedRange {
                    path: path.to_path_buf(),
                    offset: 0,
                    bytes: 0,
                    reason,
                });
            }
        }
    }
    loop {
        let damage = match decode_frame(data, offset) {
            Decoded::End => break,
            Decoded::Record { seq, end, .. } if seq == expected => {
                scan.records += 1;
                scan.last_seq = Some(seq);
                expected = seq + 1;
                offset = end;
                continue;
            }
            Decoded::Record { seq, end, .. }
                if seq > expected && policy == CorruptionPolicy::Skip =>
            {
                let reason = Damage::Sequence {
                    expected,
                    found: seq,
                }
                .to_string();
                tracing::warn!(file = %path.display(), offset, reason = %reason, "Skipped a gap in WAL sequence numbers.");
                report.skipped.push(SkippedRange {
                    path: path.to_path_buf(),
                    offset: offset as u64,
                    bytes: 0,
                    reason,
                });
                scan.records += 1;
                scan.last_seq = Some(seq);
                expected = seq + 1;
                offset = end;
                continue;
            }
            Decoded::Record { seq, .. } => Damage::Sequence {
                expected,
                found: seq,
            },
            Decoded::Damaged(damage) => damage,
        };
        if is_last && !synced_data_after(data, offset, expected) {
            // Nothing that was synced follows: the last write was torn. Cut it.
            scan.cut_at = Some(offset);
            scan.cut_reason = Some(damage.to_string());
            break;
        }
        match policy {
            CorruptionPolicy::Fail => {
                return Err(WalError::Corrupt {
                    path: path.to_path_buf(),
                    offset: offset as u64,
                    reason: damage.to_string(),
                })
            }
            CorruptionPolicy::Skip => {
                let next = resync(data, offset + 1, expected).unwrap_or(data.len());
                let reason = damage.to_string();
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    bytes = next - offset,
                    reason = %reason,
                    "Skipped damaged WAL records; they are lost."
                );
                report.skipped.push(SkippedRange {
                    path: path.to_path_buf(),
                    offset: offset as u64,
                    bytes: (next - offset) as u64,
                    reason,
                });
                offset = next;
            }
        }
    }
    Ok(scan)
}
