//! Tests of the write-ahead log: round trips, concurrency, recovery from torn and corrupt
//! files, compaction, failure handling, and a crash test that SIGKILLs a child process.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::format::{segment_file_name, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::*;

/// A scratch directory removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "cityward-wal-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        TestDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &Path) -> WalConfig {
    WalConfig::new(dir)
}

/// A recognisable payload of 60..=259 bytes.
fn payload(tag: u64) -> Vec<u8> {
    let mut p = format!("record-{tag}:").into_bytes();
    p.resize(60 + (tag as usize * 37) % 200, b'a' + (tag % 26) as u8);
    p
}

fn batch(tags: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    tags.map(payload).collect()
}

fn read_all(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
    let mut cursor = wal.reader().read_all();
    let mut out = Vec::new();
    while let Some((seq, data)) = cursor.next_record().expect("readable") {
        out.push((seq, data.to_vec()));
    }
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn flip_byte(path: &Path, offset: u64) {
    let mut data = fs::read(path).unwrap();
    data[offset as usize] ^= 0x5a;
    fs::write(path, data).unwrap();
}

#[tokio::test]
async fn append_and_reopen_round_trip() {
    let dir = TestDir::new("roundtrip");
    let wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.recovery_report().next_seq, 1);
    let writer = wal.writer();
    let a = writer.append(batch(0..10)).await.unwrap();
    assert_eq!((a.first_seq, a.count, a.last_seq()), (1, 10, Some(10)));
    let odd = vec![Vec::new(), vec![0u8; 100_000], b"x".to_vec()];
    let b = writer.append(odd.clone()).await.unwrap();
    assert_eq!(b.seqs(), 11..14);
    let empty = writer.append(Vec::new()).await.unwrap();
    assert_eq!(
        (empty.first_seq, empty.count, empty.last_seq()),
        (14, 0, None)
    );
    let stats = wal.close().await.unwrap();
    assert_eq!(stats.records_written, 13);
    assert_eq!(stats.state, WriterState::Closed);

    let wal = Wal::open(config(dir.path())).unwrap();
    let report = wal.recovery_report().clone();
    assert_eq!(
        (report.records, report.next_seq, report.segments),
        (13, 14, 1)
    );
    assert!(report.torn_tail.is_none() && report.skipped.is_empty());
    let mut expected: Vec<Vec<u8>> = batch(0..10);
    expected.extend(odd);
    let got = read_all(&wal);
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..14).collect::<Vec<_>>()
    );
    assert_eq!(got.into_iter().map(|r| r.1).collect::<Vec<_>>(), expected);
    wal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_disjoint_ranges() {
    let dir = TestDir::new("concurrent");
    let wal = Wal::open(WalConfig {
        segment_bytes: 64 << 10,
        ..config(dir.path())
    })
    .unwrap();
    let (tasks, appends, per) = (8u64, 25u64, 40u64);
    let mut handles = Vec::new();
    for task in 0..tasks {
        let writer = wal.writer();
        handles.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for n in 0..appends {
                let base = (task * appends + n) * per;
                acks.push((base, writer.append(batch(base..base + per)).await.unwrap()));
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for h in handles {
        acks.extend(h.await.unwrap());
    }
    acks.sort_by_key(|(_, ack)| ack.first_seq);
    let mut next = 1;
    for (_, ack) in &acks {
        assert_eq!(ack.first_seq, next, "ranges are disjoint and leave no gap");
        assert_eq!(ack.count, per);
        next += ack.count;
    }
    let total = tasks * appends * per;
    assert_eq!(next, total + 1);

    let records = read_all(&wal);
    assert_eq!(
        records.len() as u64,
        total,
        "every record comes back exactly once"
    );
    for (base, ack) in &acks {
        for (i, seq) in ack.seqs().enumerate() {
            let (got_seq, data) = &records[(seq - 1) as usize];
            assert_eq!(*got_seq, seq);
            assert_eq!(data, &payload(base + i as u64));
        }
    }
    let stats = wal.stats();
    assert!(stats.segments > 2, "64 KiB segments rolled: {stats:?}");
    assert!(
        stats.fsyncs <= tasks * appends + stats.segments,
        "appends were grouped: {stats:?}"
    );
    wal.close().await.unwrap();
}

/// Writes 20 records in two appends, closes, damages the end of the file with `damage`,
/// reopens, and checks that the damage was cut and the WAL goes on after the intact records.
async fn check_torn_tail(name: &str, damage: impl FnOnce(&Path, &[u64]), intact: u64) {
    let dir = TestDir::new(name);
    let wal = Wal::open(config(dir.path())).unwrap();
    wal.writer().append(batch(0..10)).await.unwrap();
    wal.writer().append(batch(10..20)).await.unwrap();
    wal.close().await.unwrap();
    let path = dir.path().join(segment_file_name(1));
    // Start offset of each record's frame, and the file's end.
    let mut offsets = vec![SEGMENT_HEADER_LEN as u64];
    for tag in 0..20 {
        offsets.push(offsets.last().unwrap() + (FRAME_HEADER_LEN + payload(tag).len()) as u64);
    }
    let clean_len = fs::metadata(&path).unwrap().len();
    assert_eq!(clean_len, *offsets.last().unwrap());
    damage(&path, &offsets);
    let damaged_len = fs::metadata(&path).unwrap().len();

    let wal = Wal::open(config(dir.path())).unwrap();
    let report = wal.recovery_report().clone();
    let torn = report.torn_tail.clone().expect("a torn tail was cut");
    assert_eq!(torn.path, path);
    assert_eq!(torn.offset, offsets[intact as usize]);
    assert_eq!(torn.bytes_cut, damaged_len - offsets[intact as usize]);
    assert_eq!(fs::metadata(&path).unwrap().len(), offsets[intact as usize]);
    assert_eq!((report.records, report.next_seq), (intact, intact + 1));
    let ack = wal.writer().append(batch(100..105)).await.unwrap();
    assert_eq!(
        ack.first_seq,
        intact + 1,
        "the sequence continues after the last good record"
    );
    let records = read_all(&wal);
    assert_eq!(records.len() as u64, intact + 5);
    for (i, (seq, data)) in records.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        let tag = if (i as u64) < intact {
            i as u64
        } else {
            100 + i as u64 - intact
        };
        assert_eq!(data, &payload(tag));
    }
    wal.close().await.unwrap();
    let wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(
        wal.recovery_report().torn_tail,
        None,
        "the repaired file is clean"
    );
    assert_eq!(wal.recovery_report().next_seq, intact + 6);
    wal.close().await.unwrap();
}

#[tokio::test]
async fn torn_tail_partial_record_header_is_cut() {
    check_torn_tail(
        "torn-header",
        |p, _| append_bytes(p, &[7, 0, 0, 0, 1, 2, 3]),
        20,
    )
    .await;
}

#[tokio::test]
async fn torn_tail_partial_payload_is_cut() {
    // The last record lost its final bytes.
    check_torn_tail(
        "torn-payload",
        |p, offsets| {
            let f = OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(offsets[20] - 3).unwrap();
        },
        19,
    )
    .await;
}

#[tokio::test]
async fn torn_tail_garbage_is_cut() {
    check_torn_tail("torn-garbage", |p, _| append_bytes(p, &[0xde; 3000]), 20).await;
}

#[tokio::test]
async fn torn_tail_zeros_are_cut() {
    // A crash can leave the file extended with zeros where the data never landed.
    check_torn_tail("torn-zeros", |p, _| append_bytes(p, &[0; 8192]), 20).await;
}

#[tokio::test]
async fn torn_tail_inside_last_write_is_cut() {
    // Damage in the middle of the last write (records 10..20): pages of one write can land
    // out of order, so intact records after the damage are still part of the torn write.
    check_torn_tail(
        "torn-last-write",
        |p, offsets| flip_byte(p, offsets[15] + 20),
        15,
    )
    .await;
}

#[tokio::test]
async fn torn_header_of_a_new_segment_is_rewritten() {
    let dir = TestDir::new("torn-segment-header");
    let wal = Wal::open(config(dir.path())).unwrap();
    wal.writer().append(batch(0..5)).await.unwrap();
    wal.close().await.unwrap();
    // A crash while the next segment was being created left 5 bytes of its header.
    let next = dir.path().join(segment_file_name(6));
    fs::write(&next, &b"CWWAL"[..]).unwrap();
    let wal = Wal::open(config(dir.path())).unwrap();
    let torn = wal.recovery_report().torn_tail.clone().unwrap();
    assert_eq!(
        (torn.path.as_path(), torn.offset, torn.bytes_cut),
        (next.as_path(), 0, 5)
    );
    assert_eq!(
        fs::metadata(&next).unwrap().len(),
        SEGMENT_HEADER_LEN as u64
    );
    assert_eq!(wal.writer().append(batch(5..6)).await.unwrap().first_seq, 6);
    assert_eq!(read_all(&wal).len(), 6);
    wal.close().await.unwrap();
}

#[tokio::test]
async fn corrupt_middle_of_a_sealed_segment_is_an_error() {
    let dir = TestDir::new("corrupt-sealed");
    let wal = Wal::open(config(dir.path())).unwrap();
    wal.writer().append(batch(0..10)).await.unwrap();
    let sealed = wal
        .writer()
        .roll()
        .await
        .unwrap()
        .expect("a segment was sealed");
    assert_eq!(
        (sealed.first_seq, sealed.last_seq, sealed.records),
        (1, Some(10), 10)
    );
    wal.writer().append(batch(10..20)).await.unwrap();
    wal.close().await.unwrap();

    // Damage the payload of record 4 (index 3).
    let offset: u64 = SEGMENT_HEADER_LEN as u64
        + (0..3)
            .map(|t| (FRAME_HEADER_LEN + payload(t).len()) as u64)
            .sum::<u64>();
    flip_byte(&sealed.path, offset + FRAME_HEADER_LEN as u64 + 2);
    let err = Wal::open(config(dir.path())).unwrap_err();
    match &err {
        WalError::Corrupt {
            path,
            offset: at,
            reason,
        } => {
            assert_eq!(path, &sealed.path);
            assert_eq!(*at, offset);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("wal-00000000000000000001.log")
            && message.contains(&format!("offset {offset}")),
        "{message}"
    );
    assert!(
        message.contains("on_corruption"),
        "the message says what to do: {message}"
    );

    // With `skip`, the WAL opens without the damaged record.
    let wal = Wal::open(WalConfig {
        on_corruption: CorruptionPolicy::Skip,
        ..config(dir.path())
    })
    .unwrap();
    let report = wal.recovery_report().clone();
    assert_eq!(
        report.skipped.len(),
        2,
        "the damage and the resulting gap: {report:?}"
    );
    assert_eq!(report.skipped[0].offset, offset);
    assert_eq!((report.records, report.next_seq), (19, 21));
    let seqs: Vec<u64> = read_all(&wal).into_iter().map(|r| r.0).collect();
    assert_eq!(seqs, (1..21).filter(|&s| s != 4).collect::<Vec<_>>());
    wal.close().await.unwrap();
}

#[tokio::test]
async fn corrupt_middle_of_the_active_segment_is_an_error() {
    let dir = TestDir::new("corrupt-active");
    let wal = Wal::open(config(dir.path())).unwrap();
    wal.writer().append(batch(0..10)).await.unwrap();
    wal.writer().append(batch(10..20)).await.unwrap();
    wal.close().await.unwrap();
    let path = dir.path().join(segment_file_name(1));
    // Record 3 lies in the first write, which was fsync'd before the second: not a torn tail.
    let offset: u64 = SEGMENT_HEADER_LEN as u64
        + (0..2)
            .map(|t| (FRAME_HEADER_LEN + payload(t).len()) as u64)
            .sum::<u64>();
    flip_byte(&path, offset + 1);
    match Wal::open(config(dir.path())).unwrap_err() {
        WalError::Corrupt {
            path: p,
            offset: at,
            ..
        } => assert_eq!((p, at), (path, offset)),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn sequence_continues_after_restart() {
    let dir = TestDir::new("restart");
    let small = || WalConfig {
        segment_bytes: 4096,
        ..config(dir.path())
    };
    let mut next = 1;
    for round in 0..4u64 {
        let wal = Wal::open(small()).unwrap();
        assert_eq!(wal.recovery_report().next_seq, next);
        let ack = wal
            .writer()
            .append(batch(round * 50..round * 50 + 50))
            .await
            .unwrap();
        assert_eq!(ack.first_seq, next);
        next += 50;
        if round == 2 {
            // Compact everything sealed; the active segment keeps the numbering.
            wal.writer().roll().await.unwrap();
            let deleted = wal.reader().delete_through(next - 1).unwrap();
            assert!(!deleted.is_empty());
            assert!(wal.reader().sealed_segments().is_empty());
        }
        wal.close().await.unwrap();
    }
    let wal = Wal::open(small()).unwrap();
    assert_eq!(
        wal.recovery_report().next_seq,
        next,
        "numbers are never reused, even after compaction"
    );
    let seqs: Vec<u64> = read_all(&wal).into_iter().map(|r| r.0).collect();
    assert_eq!(seqs, (151..201).collect::<Vec<_>>());
    wal.close().await.unwrap();
}

#[tokio::test]
async fn delete_through_removes_only_compacted_segments() {
    let dir = TestDir::new("delete");
    let wal = Wal::open(config(dir.path())).unwrap();
    let writer = wal.writer();
    for i in 0..4u64 {
        writer.append(batch(i * 10..i * 10 + 10)).await.unwrap();
        writer.roll().await.unwrap();
    }
    writer.append(batch(40..45)).await.unwrap();
    let sealed = wal.reader().sealed_segments();
    let ranges: Vec<(u64, Option<u64>)> =
        sealed.iter().map(|s| (s.first_seq, s.last_seq)).collect();
    assert_eq!(
        ranges,
        vec![
            (1, Some(10)),
            (11, Some(20)),
            (21, Some(30)),
            (31, Some(40))
        ]
    );

    // Seq 25 covers the first two segments fully, the third only partly.
    let deleted = wal.reader().delete_through(25).unwrap();
    assert_eq!(
        deleted.iter().map(|s| s.first_seq).collect::<Vec<_>>(),
        vec![1, 11]
    );
    assert!(!deleted[0].path.exists() && !deleted[1].path.exists());
    assert_eq!(segment_files(dir.path()).len(), 3);
    assert!(wal.reader().delete_through(25).unwrap().is_empty());
    match wal.reader().read_from(5) {
        Err(WalError::NotRetained { seq: 5, oldest: 21 }) => {}
        other => panic!("expected NotRetained, got {other:?}"),
    }
    let mut cursor = wal.reader().read_from(28).unwrap();
    let mut seqs = Vec::new();
    while let Some((seq, _)) = cursor.next_record().unwrap() {
        seqs.push(seq);
    }
    assert_eq!(seqs, (28..46).collect::<Vec<_>>());
    assert_eq!(cursor.next_seq(), 46);

    // Nothing ever deletes the active segment.
    let deleted = wal.reader().delete_through(u64::MAX).unwrap();
    assert_eq!(deleted.len(), 2);
    assert_eq!(
        segment_files(dir.path()),
        vec![dir.path().join(segment_file_name(41))]
    );
    wal.close().await.unwrap();
    let wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(
        (
            wal.recovery_report().records,
            wal.recovery_report().next_seq
        ),
        (5, 46)
    );
    wal.close().await.unwrap();
}

#[tokio::test]
async fn roll_seals_on_request_and_by_size() {
    let dir = TestDir::new("roll");
    let wal = Wal::open(WalConfig {
        segment_bytes: 4096,
        ..config(dir.path())
    })
    .unwrap();
    let writer = wal.writer();
    assert_eq!(
        writer.roll().await.unwrap(),
        None,
        "an empty segment is not sealed"
    );
    writer.append(batch(0..3)).await.unwrap();
    let sealed = writer.roll().await.unwrap().unwrap();
    assert_eq!(
        (sealed.first_seq, sealed.last_seq, sealed.records),
        (1, Some(3), 3),
        "{sealed:?}"
    );
    assert_eq!(sealed.bytes, fs::metadata(&sealed.path).unwrap().len());
    assert_eq!(wal.reader().active_segment().first_seq, 4);

    // ~200-byte records into 4 KiB segments: rolls by size, within one append too.
    writer.append(batch(3..103)).await.unwrap();
    let sealed = wal.reader().sealed_segments();
    assert!(sealed.len() >= 5, "{sealed:?}");
    let mut next = 1;
    for seg in &sealed {
        assert_eq!(
            seg.path.file_name().unwrap().to_str().unwrap(),
            segment_file_name(seg.first_seq)
        );
        assert_eq!(seg.first_seq, next);
        assert!(seg.bytes <= 4096, "{seg:?}");
        let reader = wal.reader().open_segment(seg).unwrap();
        let seqs: Vec<u64> = reader.records().map(|r| r.unwrap().0).collect();
        assert_eq!(
            seqs,
            (seg.first_seq..=seg.last_seq.unwrap()).collect::<Vec<_>>()
        );
        next = seg.last_seq.unwrap() + 1;
    }
    assert_eq!(wal.reader().active_segment().first_seq, next);
    assert_eq!(wal.stats().segments, sealed.len() as u64 + 1);
    assert_eq!(read_all(&wal).len(), 103);
    wal.close().await.unwrap();
}

#[tokio::test]
async fn writer_io_error_fails_waiters_and_later_appends() {
    let dir = TestDir::new("io-error");
    let wal = Wal::open(config(dir.path())).unwrap();
    let writer = wal.writer();
    writer.append(batch(0..5)).await.unwrap();
    wal.shared.inject_write_error.store(true, Ordering::Relaxed);
    let err = writer.append(batch(5..10)).await.unwrap_err();
    let message = err.to_string();
    match &err {
        WalError::WriterFailed {
            op,
            path,
            offset,
            source,
        } => {
            assert_eq!(*op, "write");
            assert_eq!(path, &dir.path().join(segment_file_name(1)));
            assert!(*offset > 0);
            assert_eq!(source.raw_os_error(), Some(28));
        }
        other => panic!("expected WriterFailed, got {other:?}"),
    }
    assert!(
        message.contains("wal-00000000000000000001.log") && message.contains("os error 28"),
        "{message}"
    );
    // Later appends and rolls fail at once, with the same cause.
    let started = Instant::now();
    assert!(matches!(
        writer.append(batch(10..11)).await,
        Err(WalError::WriterFailed { .. })
    ));
    assert!(matches!(
        writer.roll().await,
        Err(WalError::WriterFailed { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(wal.stats().state, WriterState::Failed);
    assert!(matches!(
        wal.close().await,
        Err(WalError::WriterFailed { .. })
    ));

    // Nothing acknowledged was lost, and the numbers go on after it.
    let wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.recovery_report().next_seq, 6);
    assert_eq!(read_all(&wal).len(), 5);
    wal.close().await.unwrap();
}

#[tokio::test]
async fn limits_and_misuse_are_reported() {
    let dir = TestDir::new("limits");
    assert!(matches!(
        Wal::open(WalConfig {
            segment_bytes: 10,
            ..config(dir.path())
        }),
        Err(WalError::InvalidConfig {
            field: "segment_bytes",
            ..
        })
    ));
    let cfg = WalConfig {
        max_record_bytes: 1000,
        queue_bytes: 10_000,
        ..config(dir.path())
    };
    let wal = Wal::open(cfg.clone()).unwrap();
    let writer = wal.writer();
    match writer.append(vec![vec![1; 10], vec![1; 1001]]).await {
        Err(WalError::RecordTooLarge {
            index: 1,
            len: 1001,
            max: 1000,
        }) => {}
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert!(matches!(
        writer.append(vec![vec![1; 900]; 20]).await,
        Err(WalError::BatchTooLarge { .. })
    ));
    // A second open of the same directory is refused while the first holds it.
    assert!(matches!(
        Wal::open(cfg.clone()),
        Err(WalError::Locked { .. })
    ));
    // Back-pressure: many appends larger than half the queue all get through, in turn.
    let mut handles = Vec::new();
    for i in 0..20u64 {
        let writer = writer.clone();
        handles.push(tokio::spawn(async move {
            writer.append(vec![vec![i as u8; 1000]; 6]).await.unwrap()
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap().count, 6);
    }
    assert_eq!(wal.stats().queued_bytes, 0);
    wal.close().await.unwrap();
    assert!(matches!(
        writer.append(batch(0..1)).await,
        Err(WalError::Closed)
    ));
    assert!(matches!(writer.roll().await, Err(WalError::Closed)));
    // Closing released the lock.
    Wal::open(cfg).unwrap().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_only_durable_records_while_appends_go_on() {
    let dir = TestDir::new("tail");
    let wal = Wal::open(WalConfig {
        segment_bytes: 32 << 10,
        ..config(dir.path())
    })
    .unwrap();
    let writer = wal.writer();
    let reader = wal.reader();
    let mut durable = reader.subscribe();
    let producer = tokio::spawn(async move {
        for i in 0..200u64 {
            writer.append(batch(i * 10..i * 10 + 10)).await.unwrap();
        }
    });
    // Tail the WAL as it grows, the way the enrich stage does.
    let mut next = 1;
    while next <= 2000 {
        let seen = *durable.borrow_and_update();
        let reader = reader.clone();
        next = tokio::task::spawn_blocking(move || {
            let mut cursor = reader.read_from(next).unwrap();
            while let Some((seq, data)) = cursor.next_record().unwrap() {
                assert_eq!(seq, next);
                assert_eq!(data, payload(seq - 1).as_slice());
                next += 1;
            }
            next
        })
        .await
        .unwrap();
        assert!(next > seen, "everything durable at the snapshot was read");
        if next <= 2000 {
            durable.changed().await.unwrap();
        }
    }
    producer.await.unwrap();
    let stats = wal.stats();
    assert_eq!(
        (
            stats.records_written,
            stats.appends_acked,
            stats.last_durable_seq
        ),
        (2000, 200, Some(2000))
    );
    assert!(stats.fsyncs >= 1 && stats.max_fsync_us >= stats.avg_fsync_us);
    assert_eq!(
        stats.disk_bytes,
        segment_files(dir.path())
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum::<u64>()
    );
    wal.close().await.unwrap();
}

// ---- Crash test: a child process appends until SIGKILL; every acknowledged record survives.

const CRASH_DIR_ENV: &str = "CITYWARD_WAL_CRASH_DIR";
const CRASH_ROUND_ENV: &str = "CITYWARD_WAL_CRASH_ROUND";

fn crash_payload(round: u64, task: u64, batch: u64, i: u64) -> Vec<u8> {
    let mut p = format!("round {round} task {task} batch {batch} record {i};").into_bytes();
    p.resize(120 + ((batch * 31 + i * 17) % 160) as usize, b'#');
    p
}

/// Not a test on its own: the body of the child process of
/// `crash_with_sigkill_loses_no_acknowledged_append`, which runs it with `CITYWARD_WAL_CRASH_DIR`
/// set. It prints `OPENED next_seq torn_bytes_cut`, then appends in a loop and prints
/// `ACK round task batch first_seq count` after each ack.
#[test]
fn crash_child_process() {
    let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
        return;
    };
    let round: u64 = std::env::var(CRASH_ROUND_ENV).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let wal = Wal::open(WalConfig {
            segment_bytes: 256 << 10,
            ..WalConfig::new(dir)
        })
        .unwrap();
        let report = wal.recovery_report();
        println!(
            "OPENED {} {}",
            report.next_seq,
            report.torn_tail.as_ref().map_or(0, |t| t.bytes_cut)
        );
        let mut tasks = Vec::new();
        for task in 0..4u64 {
            let writer = wal.writer();
            tasks.push(tokio::spawn(async move {
                for batch in 0u64.. {
                    let n = 1 + (batch * 7 + task) % 60;
                    let records = (0..n)
                        .map(|i| crash_payload(round, task, batch, i))
                        .collect();
                    let ack = writer.append(records).await.unwrap();
                    println!("ACK {round} {task} {batch} {} {}", ack.first_seq, ack.count);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn crash_with_sigkill_loses_no_acknowledged_append() {
    let dir = TestDir::new("crash");
    let exe = std::env::current_exe().unwrap();
    let module = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, rest)| rest);
    let child_test = format!("{module}::crash_child_process");
    // (round, task, batch, first_seq, count) of every acknowledged append.
    let mut acked: Vec<[u64; 5]> = Vec::new();
    let mut torn_bytes = Vec::new();
    for round in 0..4u64 {
        let mut child = Command::new(&exe)
            .args([
                child_test.as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .env(CRASH_ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = std::sync::mpsc::channel();
        let pump = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if lines_tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        // Kill at a different point each round, while appends are in flight.
        let kill_after = 150 + round * 211;
        let mut seen = 0u64;
        let mut killed = false;
        loop {
            let line = match lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => line,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!("the child process made no progress for 60 s");
                }
            };
            // libtest prints `test NAME ... ` without a newline before running the child's
            // test, so the first line printed may follow it.
            if let Some(fields) = line.split_once("OPENED ").map(|(_, f)| f) {
                let f: Vec<u64> = fields.split(' ').map(|x| x.parse().unwrap()).collect();
                let acked_before = acked.iter().map(|a| a[3] + a[4]).max().unwrap_or(1);
                assert!(
                    f[0] >= acked_before,
                    "the sequence continues after every acknowledged record"
                );
                torn_bytes.push(f[1]);
                continue;
            }
            let Some((_, fields)) = line.split_once("ACK ") else {
                continue;
            };
            let f: Vec<u64> = fields.split(' ').map(|x| x.parse().unwrap()).collect();
            acked.push([f[0], f[1], f[2], f[3], f[4]]);
            seen += 1;
            if seen == kill_after && !killed {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
        pump.join().unwrap();
        let status = child.wait().unwrap();
        assert!(
            killed,
            "the child exited by itself ({status}) after {seen} acks"
        );
    }

    let wal = Wal::open(WalConfig::new(dir.path())).unwrap();
    torn_bytes.push(
        wal.recovery_report()
            .torn_tail
            .as_ref()
            .map_or(0, |t| t.bytes_cut),
    );
    eprintln!(
        "crash test: torn tail cut on each reopen (bytes): {torn_bytes:?}; {} acks",
        acked.len()
    );
    let records = read_all(&wal);
    for (i, (seq, _)) in records.iter().enumerate() {
        assert_eq!(
            *seq,
            i as u64 + 1,
            "sequence numbers are unique and contiguous"
        );
    }
    for [round, task, batch, first, count] in &acked {
        for i in 0..*count {
            let seq = first + i;
            let (got, data) = records
                .get(seq as usize - 1)
                .unwrap_or_else(|| panic!("acknowledged seq {seq} is missing"));
            assert_eq!(*got, seq);
            assert_eq!(
                data,
                &crash_payload(*round, *task, *batch, i),
                "acknowledged seq {seq} holds its record"
            );
        }
    }
    let acked_records: u64 = acked.iter().map(|a| a[4]).sum();
    assert!(acked_records > 0 && records.len() as u64 >= acked_records);
    let report = wal.recovery_report();
    assert!(report.skipped.is_empty(), "{report:?}");
    drop(wal);
}

// ---- Throughput, measured by hand: not a timed test.

/// `cargo test -p cityward-store --release --lib wal::tests::throughput -- --ignored --nocapture`
/// (`CITYWARD_WAL_BENCH_APPENDERS=N` changes the number of concurrent appenders, default 8).
#[test]
#[ignore = "benchmark; run by hand in release mode"]
fn throughput() {
    let dir = TestDir::new("throughput");
    let appenders: u64 = std::env::var("CITYWARD_WAL_BENCH_APPENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let batches = 300u64; // per appender, of 1,000 records of 200 bytes
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (elapsed, stats) = runtime.block_on(async {
        let wal = Wal::open(WalConfig::new(dir.path())).unwrap();
        let record = vec![b'e'; 200];
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..appenders {
            let writer = wal.writer();
            let record = record.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..batches {
                    writer.append(vec![record.clone(); 1000]).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = started.elapsed();
        (elapsed, wal.close().await.unwrap())
    });
    let records = appenders * batches * 1000;
    let secs = elapsed.as_secs_f64();
    println!(
        "WAL throughput: {records} records of 200 B from {appenders} appenders in {secs:.2} s = {:.0} records/s, \
         {:.0} MB/s; {} fsyncs (avg {} us, max {} us), {:.1} appends per group commit, {} segments",
        records as f64 / secs,
        stats.bytes_written as f64 / secs / 1e6,
        stats.fsyncs,
        stats.avg_fsync_us,
        stats.max_fsync_us,
        stats.appends_acked as f64 / stats.fsyncs.max(1) as f64,
        stats.segments,
    );
}
