//! On-disk layout: segment file names, the segment header and record frames.
//!
//! ```text
//! segment  = header frame*
//! header   = magic "CWWAL01\n" (8 bytes) | first_seq u64 LE            (16 bytes)
//! frame    = word u32 LE | crc u32 LE | seq u64 LE | payload (len bytes)
//! word     = len (low 31 bits) | SYNC flag (bit 31)
//! crc      = CRC-32 (IEEE) of  word LE ++ seq LE ++ payload
//! ```
//! Sequence numbers start at 1 and rise by one per record, across segments. The SYNC flag
//! marks the last frame of each write that the writer followed with an fdatasync: recovery
//! uses it to tell a torn tail (damage in the last write, which was never acknowledged) from
//! damage to data that was synced before (intact frames of a later write follow it).

use std::fmt;

/// Magic bytes that open every segment (format version 1).
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"CWWAL01\n";
/// Length of the segment header.
pub(crate) const SEGMENT_HEADER_LEN: usize = 16;
/// Length of a record frame's header.
pub(crate) const FRAME_HEADER_LEN: usize = 16;
/// Largest payload the format accepts (256 MiB); a larger length field is damage.
pub(crate) const MAX_RECORD_LEN: u32 = 256 << 20;
/// Bit of the frame's first word that marks a sync point.
const SYNC_FLAG: u32 = 1 << 31;
/// First sequence number of a new WAL.
pub(crate) const FIRST_SEQ: u64 = 1;

/// The file name of the segment whose first record is `first_seq`.
pub(crate) fn segment_file_name(first_seq: u64) -> String {
    format!("wal-{first_seq:020}.log")
}

/// The first sequence number encoded in a segment file name, if it is one.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The 16-byte header of a segment starting at `first_seq`.
pub(crate) fn segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// Checks a segment's header against the sequence number in its file name.
pub(crate) fn check_segment_header(data: &[u8], first_seq: u64) -> Result<(), Damage> {
    if data.len() < SEGMENT_HEADER_LEN {
        return Err(Damage::ShortSegmentHeader { have: data.len() });
    }
    if data[..8] != SEGMENT_MAGIC {
        return Err(Damage::BadMagic);
    }
    let stored = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    if stored != first_seq {
        return Err(Damage::HeaderSeq {
            stored,
            name: first_seq,
        });
    }
    Ok(())
}

/// Framed size of a payload of `len` bytes.
#[inline]
pub(crate) fn framed_len(len: usize) -> u64 {
    FRAME_HEADER_LEN as u64 + len as u64
}

#[inline]
fn frame_crc(word: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let mut head = [0u8; 12];
    head[..4].copy_from_slice(&word.to_le_bytes());
    head[4..].copy_from_slice(&seq.to_le_bytes());
    h.update(&head);
    h.update(payload);
    h.finalize()
}

/// Appends the frame of one record (without the sync flag) to `buf`. The caller checked
/// `payload.len() <= MAX_RECORD_LEN`.
#[inline]
pub(crate) fn encode_frame(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let len = payload.len() as u32;
    let crc = frame_crc(len, seq, payload);
    buf.reserve(FRAME_HEADER_LEN + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Sets the sync flag on the frame that starts `frame` (a whole frame) and re-seals its CRC.
pub(crate) fn set_sync_flag(frame: &mut [u8]) {
    let word = u32::from_le_bytes(frame[0..4].try_into().expect("4 bytes")) | SYNC_FLAG;
    let seq = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
    let crc = frame_crc(word, seq, &frame[FRAME_HEADER_LEN..]);
    frame[0..4].copy_from_slice(&word.to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Why the bytes at some offset are not a valid frame (or header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Damage {
    ShortSegmentHeader { have: usize },
    BadMagic,
    HeaderSeq { stored: u64, name: u64 },
    ShortFrameHeader { have: usize },
    TooLong { len: u32 },
    ShortPayload { len: u32, have: usize },
    Checksum { stored: u32, computed: u32 },
    Sequence { expected: u64, found: u64 },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::ShortSegmentHeader { have } => {
                write!(
                    f,
                    "the segment header is cut short ({have} of {SEGMENT_HEADER_LEN} bytes)"
                )
            }
            Damage::BadMagic => write!(
                f,
                "the segment header does not start with the WAL magic bytes"
            ),
            Damage::HeaderSeq { stored, name } => write!(
                f,
                "the segment header says it starts at seq {stored}, but its file name says {name}"
            ),
            Damage::ShortFrameHeader { have } => {
                write!(
                    f,
                    "a record header is cut short ({have} of {FRAME_HEADER_LEN} bytes)"
                )
            }
            Damage::TooLong { len } => {
                write!(
                    f,
                    "a record claims {len} bytes, over the format's limit of {MAX_RECORD_LEN}"
                )
            }
            Damage::ShortPayload { len, have } => {
                write!(
                    f,
                    "a record of {len} bytes is cut short (only {have} bytes follow its header)"
                )
            }
            Damage::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Damage::Sequence { expected, found } => {
                write!(
                    f,
                    "expected the record with seq {expected}, found seq {found}"
                )
            }
        }
    }
}

/// One step of decoding at an offset.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A valid frame: its sequence number, payload range (`end` is also the offset of the
    /// next frame) and whether it is a sync point.
    Record {
        seq: u64,
        start: usize,
        end: usize,
        sync: bool,
    },
    /// Exactly at the end of the data.
    End,
    /// Not a valid frame.
    Damaged(Damage),
}

/// Decodes the frame at `offset` (checks length and CRC, not the sequence).
#[inline]
pub(crate) fn decode_frame(data: &[u8], offset: usize) -> Decoded {
    let rest = &data[offset.min(data.len())..];
    if rest.is_empty() {
        return Decoded::End;
    }
    if rest.len() < FRAME_HEADER_LEN {
        return Decoded::Damaged(Damage::ShortFrameHeader { have: rest.len() });
    }
    let word = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
    let len = word & !SYNC_FLAG;
    let stored = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
    if len > MAX_RECORD_LEN {
        return Decoded::Damaged(Damage::TooLong { len });
    }
    let have = rest.len() - FRAME_HEADER_LEN;
    if (len as usize) > have {
        return Decoded::Damaged(Damage::ShortPayload { len, have });
    }
    let payload = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len as usize];
    let computed = frame_crc(word, seq, payload);
    if computed != stored {
        return Decoded::Damaged(Damage::Checksum { stored, computed });
    }
    let start = offset + FRAME_HEADER_LEN;
    Decoded::Record {
        seq,
        start,
        end: start + len as usize,
        sync: word & SYNC_FLAG != 0,
    }
}

/// The first offset at or after `from` where a valid frame with `seq >= min_seq` starts.
/// Used to skip over damage.
pub(crate) fn resync(data: &[u8], from: usize, min_seq: u64) -> Option<usize> {
    let last = data.len().checked_sub(FRAME_HEADER_LEN)?;
    (from..=last).find(
        |&off| matches!(decode_frame(data, off), Decoded::Record { seq, .. } if seq >= min_seq),
    )
}

/// Whether damage at `damaged` hides data that had been synced: true when, after it, an
/// intact sync-point frame is followed by another intact frame (so the write holding the
/// damage was fsync'd, and acknowledged, before a later write). False means the damage lies
/// in the last write before the end: a torn tail that was never acknowledged.
pub(crate) fn synced_data_after(data: &[u8], damaged: usize, min_seq: u64) -> bool {
    let mut from = damaged + 1;
    let mut seen_sync = false;
    while let Some(at) = resync(data, from, min_seq) {
        if seen_sync {
            return true;
        }
        let Decoded::Record { end, sync, .. } = decode_frame(data, at) else {
            unreachable!("resync found a frame")
        };
        seen_sync = sync;
        from = end.max(at + 1);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_file_name(42), "wal-00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("wal-42.log"), None);
        assert_eq!(
            parse_segment_file_name("wal-0000000000000000004x.log"),
            None
        );
        assert_eq!(parse_segment_file_name("wal.lock"), None);
    }

    #[test]
    fn frame_round_trip_and_damage() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 7, b"hello");
        encode_frame(&mut buf, 8, b"");
        let Decoded::Record {
            seq,
            start,
            end,
            sync,
        } = decode_frame(&buf, 0)
        else {
            panic!()
        };
        assert_eq!((seq, &buf[start..end], sync), (7, &b"hello"[..], false));
        let next = end;
        set_sync_flag(&mut buf[next..]);
        let Decoded::Record {
            seq,
            start,
            end,
            sync,
        } = decode_frame(&buf, next)
        else {
            panic!()
        };
        assert_eq!((seq, start, end, sync), (8, next + 16, next + 16, true));
        assert!(matches!(decode_frame(&buf, end), Decoded::End));
        // Zeros are never a valid frame.
        assert!(matches!(
            decode_frame(&[0u8; 64], 0),
            Decoded::Damaged(Damage::Checksum { .. })
        ));
        let mut bad = buf.clone();
        bad[20] ^= 1;
        assert!(matches!(
            decode_frame(&bad, 0),
            Decoded::Damaged(Damage::Checksum { .. })
        ));
        assert_eq!(resync(&bad, 1, 0), Some(21));
        assert!(
            !synced_data_after(&bad, 0, 0),
            "only the sync point follows: a torn tail"
        );
        encode_frame(&mut bad, 9, b"later write");
        assert!(
            synced_data_after(&bad, 0, 0),
            "a later write follows the sync point"
        );
        assert!(matches!(
            decode_frame(&buf[..10], 0),
            Decoded::Damaged(Damage::ShortFrameHeader { have: 10 })
        ));
        assert!(matches!(
            decode_frame(&buf[..18], 0),
            Decoded::Damaged(Damage::ShortPayload { len: 5, have: 2 })
        ));
    }
}
