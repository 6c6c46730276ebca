use std::fs::File;

use cityward_model::{parse_time, Event, KindRegistry};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::serialized_reader::ReadOptionsBuilder;

use super::manifest::{Manifest, PendingMerge};
use super::*;

/// `n` events over sources, kinds and two days, in WAL (arrival) order.
pub(crate) fn sample_events(seed: usize, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let k = seed * 1_000_000 + i;
            let day = if i % 5 == 0 { "2026-11-21" } else { "2026-11-22" };
            let time = parse_time(&format!("{day}T{:02}:{:02}:{:02}.{:03}Z", (k / 3600) % 24, (k / 60) % 60, k % 60, k % 1000))
                .unwrap();
            let mut event = match i % 3 {
                0 => Event::new(format!("truck-{:03}", k % 17), "gps", time)
                    .at(121.0 + (k % 100) as f64 * 1e-3, 31.0)
                    .with("speed_kmh", (k % 90) as f64)
                    .with("plate", format!("沪A{:05}", k % 17)),
                1 => Event::new(format!("cam-{:02}", k % 11), "plate_read", time)
                    .at(121.5, 31.2)
                    .with("plate", format!("苏E{:05}", k % 97))
                    .with("lane", (k % 4) as i64),
                _ => Event::new(format!("smoke-{:02}", k % 5), "smoke", time).with("alarm", k.is_multiple_of(7)),
            };
            event.id = format!("e-{k}");
            event.grid = Some(format!("g{}", k % 4));
            event
        })
        .collect()
}

fn open(dir: &Path) -> Lake {
    Lake::open(dir, &KindRegistry::builtin()).unwrap()
}

fn read_all(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// Plate reads are sorted by plate and time, every other kind by source and time.
fn assert_sorted_for(kind: &str, batch: &RecordBatch) {
    let key_column = if kind == "plate_read" { "plate" } else { "source" };
    let key = batch.column_by_name(key_column).unwrap().as_string::<i32>();
    let time = batch.column_by_name("time").unwrap().as_primitive::<TimestampMicrosecondType>();
    for i in 1..batch.num_rows() {
        let prev = (key.value(i - 1), time.value(i - 1));
        let next = (key.value(i), time.value(i));
        assert!(prev <= next, "{kind} row {i}: {prev:?} > {next:?} by {key_column}, time");
    }
}

#[test]
fn segments_are_partitioned_by_kind_and_day_and_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let events = sample_events(1, 3000);
    let report = lake.write_segment(100, &events).unwrap();
    assert_eq!((report.first_seq, report.last_seq), (100, 3099));
    assert!(!report.already_compacted);
    // 3 kinds × 2 days.
    assert_eq!(report.files.len(), 6);
    assert_eq!(report.files.iter().map(|f| f.rows).sum::<u64>(), 3000);
    let gps = report.files.iter().find(|f| f.kind == "gps" && f.day.to_string() == "2026-11-22").unwrap();
    assert_eq!(
        gps.path,
        lake.dir().join("kind=gps/day=2026-11-22/seg-00000000000000000100.parquet")
    );
    for file in &report.files {
        let batch = read_all(&file.path);
        assert_eq!(batch.num_rows() as u64, file.rows);
        assert!(batch.schema().field_with_name("kind").is_err(), "kind lives in the directory only");
        assert_sorted_for(&file.kind, &batch);
    }
    assert_eq!(lake.compacted_through(), Some(3099));
    assert_eq!(Lake::open(dir.path(), &KindRegistry::builtin()).unwrap().compacted_through(), Some(3099));
}

#[test]
fn files_carry_statistics_page_index_bloom_filters_and_snappy() {
    let dir = tempfile::tempdir().unwrap();
    let options = LakeOptions { row_group_rows: 200, data_page_rows: 50, ..LakeOptions::default() };
    let lake = Lake::open_with(dir.path(), &KindRegistry::builtin(), options).unwrap();
    let report = lake.write_segment(1, &sample_events(2, 3000)).unwrap();
    let file = report.files.iter().find(|f| f.kind == "gps" && f.rows > 400).unwrap();
    let reader = SerializedFileReader::new_with_options(
        File::open(&file.path).unwrap(),
        ReadOptionsBuilder::new().with_page_index().build(),
    )
    .unwrap();
    let meta = reader.metadata();
    assert!(meta.num_row_groups() > 1, "row groups are capped at 200 rows");
    assert!(meta.column_index().is_some() && meta.offset_index().is_some(), "page index written");
    let schema = meta.file_metadata().schema_descr();
    let kv = meta.file_metadata().key_value_metadata().unwrap();
    assert!(kv.iter().any(|kv| kv.key == "cityward.wal_seq" && kv.value.as_deref() == Some("1-3000")));
    let group = meta.row_group(0);
    assert_eq!(group.sorting_columns().map(|c| c.len()), Some(2));
    for (i, column) in group.columns().iter().enumerate() {
        let name = schema.column(i).name().to_string();
        assert_eq!(column.compression(), Compression::SNAPPY, "{name}");
        assert!(column.statistics().is_some(), "{name} has statistics");
        let bloom = column.bloom_filter_offset().is_some();
        assert_eq!(bloom, ["id", "source", "plate"].contains(&name.as_str()), "bloom filter on {name}");
    }
}

#[test]
fn plate_read_row_groups_hold_disjoint_plate_ranges() {
    // Sorted by plate, each row group covers its own slice of plates, so a search for one
    // plate or prefix reads one row group per file instead of all of them.
    let dir = tempfile::tempdir().unwrap();
    let options = LakeOptions { row_group_rows: 100, data_page_rows: 25, ..LakeOptions::default() };
    let lake = Lake::open_with(dir.path(), &KindRegistry::builtin(), options).unwrap();
    let report = lake.write_segment(1, &sample_events(5, 3000)).unwrap();
    let file = report.files.iter().find(|f| f.kind == "plate_read" && f.rows > 500).unwrap();
    let reader = SerializedFileReader::new(File::open(&file.path).unwrap()).unwrap();
    let meta = reader.metadata();
    let schema = meta.file_metadata().schema_descr();
    let plate = (0..schema.num_columns()).find(|&i| schema.column(i).name() == "plate").unwrap();
    let sorting = meta.row_group(0).sorting_columns().unwrap();
    assert_eq!(sorting[0].column_idx as usize, plate, "the footer names plate as the first sort column");
    let ranges: Vec<(Vec<u8>, Vec<u8>)> = (0..meta.num_row_groups())
        .map(|g| {
            let stats = meta.row_group(g).column(plate).statistics().unwrap();
            (stats.min_bytes_opt().unwrap().to_vec(), stats.max_bytes_opt().unwrap().to_vec())
        })
        .collect();
    assert!(ranges.len() > 4, "{} row groups", ranges.len());
    for pair in ranges.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "row groups overlap: {:?}", pair);
    }
    // Other kinds keep the source order.
    let gps = report.files.iter().find(|f| f.kind == "gps").unwrap();
    let reader = SerializedFileReader::new(File::open(&gps.path).unwrap()).unwrap();
    let gps_schema = reader.metadata().file_metadata().schema_descr();
    let first_sorted = reader.metadata().row_group(0).sorting_columns().unwrap()[0].column_idx as usize;
    assert_eq!(gps_schema.column(first_sorted).name(), "source");
}

#[test]
fn rewriting_a_segment_after_a_crash_replaces_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let first = sample_events(3, 500);
    lake.write_segment(1, &first).unwrap();
    let before = Manifest::load(lake.dir()).unwrap();
    let second = sample_events(4, 700);
    let written = lake.write_segment(501, &second).unwrap();
    let files_after_first_write = lake.files().unwrap();
    // Crash after the files were renamed but before the manifest was replaced: the
    // manifest still says 500, and the node compacts segment 501 again.
    let mut old = before.clone();
    old.store(lake.dir()).unwrap();
    drop(lake);
    let lake = open(dir.path());
    assert_eq!(lake.compacted_through(), Some(500));
    let again = lake.write_segment(501, &second).unwrap();
    assert_eq!(
        written.files.iter().map(|f| &f.path).collect::<Vec<_>>(),
        again.files.iter().map(|f| &f.path).collect::<Vec<_>>()
    );
    assert_eq!(lake.files().unwrap(), files_after_first_write);
    assert_eq!(lake.stats().unwrap().total().rows, 1200);
    // With the manifest up to date, the segment is recognised and skipped.
    let skipped = lake.write_segment(501, &second).unwrap();
    assert!(skipped.already_compacted && skipped.files.is_empty());
    // A segment overlapping the compacted range is a conflict.
    let err = lake.write_segment(1000, &sample_events(5, 500)).unwrap_err();
    assert_eq!(err.status(), crate::Status::Conflict, "{err}");
    assert!(matches!(err, StoreError::SegmentOverlap { compacted_through: 1200, .. }));
    let err = lake.write_segment_range(2000, 2001, &sample_events(9, 3)).unwrap_err();
    assert!(matches!(err, StoreError::SegmentRange { .. }), "{err}");
    // An explicit range without events (all records unreadable) still counts as compacted.
    let empty = lake.write_segment_range(1201, 1210, &[]).unwrap();
    assert!(empty.files.is_empty());
    assert_eq!(lake.compacted_through(), Some(1210));
    assert!(lake.write_segment(1211, &[]).unwrap().files.is_empty());
    assert_eq!(lake.compacted_through(), Some(1210));
}

#[test]
fn open_removes_temporary_files_of_interrupted_writes() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    lake.write_segment(1, &sample_events(6, 30)).unwrap();
    let partition = lake.partition_dir("gps", NaiveDate::from_ymd_opt(2026, 11, 22).unwrap());
    let stray = partition.join(temp_name(&segment_file_name(31)));
    fs::write(&stray, b"half a parquet file").unwrap();
    drop(lake);
    let lake = open(dir.path());
    assert!(!stray.exists());
    assert_eq!(lake.stats().unwrap().total().rows, 30);
}

#[test]
fn files_and_stats_count_per_kind() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    lake.write_segment(1, &sample_events(7, 300)).unwrap();
    lake.write_segment(301, &sample_events(8, 300)).unwrap();
    let files = lake.files().unwrap();
    assert_eq!(files.len(), 12);
    assert!(files.windows(2).all(|w| w[0] <= w[1]));
    let stats = lake.stats().unwrap();
    assert_eq!(stats.kinds.len(), 3);
    assert_eq!(stats.kinds["gps"].rows, 200);
    assert_eq!(stats.kinds["gps"].files, 4);
    assert_eq!(stats.kinds["gps"].partitions, 2);
    assert_eq!(stats.kinds["gps"].first_day, NaiveDate::from_ymd_opt(2026, 11, 21));
    assert_eq!(stats.total().rows, 600);
    assert_eq!(stats.total().bytes, files.iter().map(|f| f.bytes).sum::<u64>());
    assert_eq!(stats.compacted_through_seq, Some(600));
}

#[test]
fn odd_kind_names_are_encoded_in_paths() {
    assert_eq!(encode_partition_value("gps"), "gps");
    assert_eq!(encode_partition_value("a/b c"), "a%2Fb%20c");
    assert_eq!(decode_partition_value("a%2Fb%20c"), "a/b c");
    assert_eq!(decode_partition_value("100%"), "100%");
    assert_eq!(day_from_number(20_779).to_string(), "2026-11-22");
    assert_eq!(day_from_number(-1).to_string(), "1969-12-31");
}

#[test]
fn kinds_that_cannot_be_stored_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut kinds = KindRegistry::builtin();
    let mut schema = kinds.get("door").unwrap().clone();
    schema.attrs.insert(
        "plate".into(),
        cityward_model::AttrSpec { ty: cityward_model::AttrType::Integer, required: false },
    );
    kinds.declare("gate", schema);
    let err = Lake::open(dir.path(), &kinds).unwrap_err();
    assert_eq!(err.status(), crate::Status::InvalidInput);
    assert!(err.to_string().contains("plate"), "{err}");
}

fn merge_options() -> LakeOptions {
    LakeOptions { merge_min_files: 3, ..LakeOptions::default() }
}

#[tokio::test]
async fn small_files_are_merged_once_and_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open_with(dir.path(), &KindRegistry::builtin(), merge_options()).unwrap();
    let mut seq = 1;
    for seed in 0..4 {
        lake.write_segment(seq, &sample_events(10 + seed, 250)).unwrap();
        seq += 250;
    }
    let before = lake.stats().unwrap();
    assert_eq!(before.total().files, 24);
    let report = lake.merge_small_files().await.unwrap();
    assert_eq!(report.merges.len(), 6, "one merge per partition");
    let after = lake.stats().unwrap();
    assert_eq!(after.total().files, 6);
    assert_eq!(after.total().rows, before.total().rows);
    for merge in &report.merges {
        assert_eq!(merge.inputs.len(), 4);
        assert!(merge.inputs.iter().all(|p| !p.exists()));
        let name = merge.output.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "merge-00000000000000000001-00000000000000000751.parquet");
        let batch = read_all(&merge.output);
        assert_eq!(batch.num_rows() as u64, merge.rows);
        assert_sorted_for(&merge.kind, &batch);
    }
    assert!(lake.merge_small_files().await.unwrap().merges.is_empty(), "nothing left to merge");
    // A later segment and the merged file merge again once there are enough small files.
    lake.write_segment(seq, &sample_events(20, 250)).unwrap();
    lake.write_segment(seq + 250, &sample_events(21, 250)).unwrap();
    let report = lake.merge_small_files().await.unwrap();
    assert_eq!(report.merges.len(), 6);
    assert_eq!(lake.stats().unwrap().total().rows, 1500);
}

#[tokio::test]
async fn uncommitted_segments_are_not_merged() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open_with(dir.path(), &KindRegistry::builtin(), merge_options()).unwrap();
    for (i, seed) in (30..33).enumerate() {
        lake.write_segment(1 + 100 * i as u64, &sample_events(seed, 100)).unwrap();
    }
    // The third segment's files exist but the manifest does not record it (a crash).
    lake.update_manifest(|m| m.compacted_through_seq = Some(200)).unwrap();
    let report = lake.merge_small_files().await.unwrap();
    assert!(report.merges.is_empty(), "only two committed files per partition: {report:?}");
    assert_eq!(lake.files().unwrap().len(), 18);
}

#[tokio::test]
async fn an_interrupted_merge_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open_with(dir.path(), &KindRegistry::builtin(), merge_options()).unwrap();
    for (i, seed) in (40..43).enumerate() {
        lake.write_segment(1 + 100 * i as u64, &sample_events(seed, 100)).unwrap();
    }
    let smoke_rows = lake.stats().unwrap().kinds["smoke"].rows;
    let day = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
    let partition = lake.partition_dir("smoke", day);
    let inputs: Vec<String> = fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let rows: u64 = inputs.iter().map(|n| parquet_rows(&partition.join(n)).unwrap()).sum();
    // Simulate a crash right after the pending merge was recorded and the merged file
    // renamed into place, before the inputs were deleted.
    let mut sorted_inputs: Vec<PathBuf> = inputs.iter().map(|n| partition.join(n)).collect();
    sorted_inputs.sort();
    let output = "merge-00000000000000000001-00000000000000000201.parquet";
    let (merged_rows, _) =
        merge::merge_into(&sorted_inputs, &partition.join(output), &lake.file_schema, RowOrder::SourceTime, lake.writer_properties(1, 201, RowOrder::SourceTime))
            .unwrap();
    assert_eq!(merged_rows, rows);
    lake.update_manifest(|m| {
        m.pending_merge = Some(PendingMerge {
            partition: partition_rel_path("smoke", day),
            temp: temp_name(output),
            output: output.to_string(),
            inputs: inputs.clone(),
        })
    })
    .unwrap();
    drop(lake);
    let lake = open(dir.path());
    let left: Vec<String> = fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, vec![output.to_string()]);
    assert_eq!(lake.manifest_snapshot().pending_merge, None);
    assert_eq!(lake.stats().unwrap().kinds["smoke"].rows, smoke_rows);
}

/// Informal throughput figures; run with
/// `cargo test -p cityward-store --release -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput() {
    let kinds = KindRegistry::builtin();
    let schema = events_schema(&kinds);
    let events = sample_events(99, 1_000_000);
    for _ in 0..2 {
        let started = Instant::now();
        let batch = events_to_batch(&events, &schema);
        let secs = started.elapsed().as_secs_f64();
        println!(
            "events_to_batch: {} events in {:.3}s = {:.2}M events/s",
            batch.num_rows(),
            secs,
            events.len() as f64 / secs / 1e6
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path(), &kinds).unwrap();
    let started = Instant::now();
    let report = lake.write_segment(1, &events).unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "write_segment: {} events, {} files, {:.1} MB in {:.3}s = {:.2}M events/s ({:.1} bytes/event)",
        report.events,
        report.files.len(),
        report.bytes as f64 / 1e6,
        secs,
        events.len() as f64 / secs / 1e6,
        report.bytes as f64 / events.len() as f64
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let engine = crate::SqlEngine::new(&lake).unwrap();
    for sql in [
        "SELECT count(*) FROM events",
        "SELECT count(*) FROM events WHERE source = 'truck-003' AND time > TIMESTAMP '2026-11-22T06:00:00Z'",
        "SELECT id, time, speed_kmh FROM events WHERE kind = 'gps' AND day = DATE '2026-11-22' AND source = 'truck-003' ORDER BY time DESC LIMIT 10",
        "SELECT kind, count(*), avg(speed_kmh) FROM events GROUP BY kind",
        "SELECT * FROM events WHERE plate = '苏E00042' LIMIT 100",
    ] {
        for round in 0..2 {
            let started = Instant::now();
            let result = runtime.block_on(engine.query(sql, vec![], 1000)).unwrap();
            if round == 1 {
                println!("{:>7.1} ms, {:>4} rows: {sql}", started.elapsed().as_secs_f64() * 1e3, result.rows.len());
            }
        }
    }
}

/// Where `write_segment` spends its time (informal, like [`throughput`]).
#[test]
#[ignore]
fn throughput_breakdown() {
    let kinds = KindRegistry::builtin();
    let lake_dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(lake_dir.path(), &kinds).unwrap();
    let events = sample_events(98, 1_000_000);
    let gps: Vec<&Event> = events.iter().filter(|e| e.kind == "gps").collect();
    let started = Instant::now();
    let mut sorted = gps.clone();
    sorted.sort_by(|a, b| (a.source.as_str(), a.time).cmp(&(b.source.as_str(), b.time)));
    println!("sort {} gps events: {:.3}s", sorted.len(), started.elapsed().as_secs_f64());
    let started = Instant::now();
    let batch = schema::try_events_to_batch(&sorted, &lake.file_schema).unwrap();
    println!("convert: {:.3}s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let unsorted = schema::try_events_to_batch(&gps, &lake.file_schema).unwrap();
    println!("convert in WAL order: {:.3}s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let resorted = sort_rows(&unsorted, RowOrder::SourceTime).unwrap();
    println!("lexsort + take: {:.3}s ({} rows)", started.elapsed().as_secs_f64(), resorted.num_rows());
    let base = |props: WriterProperties, label: &str| {
        let path = lake_dir.path().join(format!("{label}.parquet"));
        let started = Instant::now();
        let bytes = write_parquet(&path, &batch, props).unwrap();
        println!("write {label}: {:.3}s, {:.1} MB", started.elapsed().as_secs_f64(), bytes as f64 / 1e6);
    };
    base(lake.writer_properties(1, 2, RowOrder::SourceTime), "lake-properties");
    base(WriterProperties::builder().set_compression(Compression::SNAPPY).build(), "snappy-defaults");
    base(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_statistics_enabled(EnabledStatistics::Page)
            .build(),
        "snappy-page-stats",
    );
    let no_bloom = || {
        let mut b = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(65_536))
            .set_data_page_row_count_limit(8192);
        for c in ["id", "attrs"] {
            b = b.set_column_dictionary_enabled(ColumnPath::from(c), false);
        }
        b
    };
    base(no_bloom().build(), "no-bloom");
    base(
        no_bloom().set_column_dictionary_enabled(ColumnPath::from("attrs"), true).build(),
        "no-bloom-attrs-dict",
    );
    base(
        no_bloom().set_column_bloom_filter_enabled(ColumnPath::from("id"), true).set_column_bloom_filter_fpp(ColumnPath::from("id"), 0.01).set_column_bloom_filter_max_ndv(ColumnPath::from("id"), 65_536).build(),
        "bloom-id-only",
    );
    base(
        no_bloom().set_column_bloom_filter_enabled(ColumnPath::from("source"), true).set_column_bloom_filter_fpp(ColumnPath::from("source"), 0.01).set_column_bloom_filter_max_ndv(ColumnPath::from("source"), 65_536).build(),
        "bloom-source-only",
    );
    for column in ["attrs", "id"] {
        let i = lake.file_schema.index_of(column).unwrap();
        let one = batch.project(&[i]).unwrap();
        let path = lake_dir.path().join(format!("{column}.parquet"));
        let started = Instant::now();
        let bytes = write_parquet(&path, &one, lake.writer_properties(1, 2, RowOrder::SourceTime)).unwrap();
        println!("write only {column}: {:.3}s, {:.1} MB", started.elapsed().as_secs_f64(), bytes as f64 / 1e6);
    }
}
