//! The event lake: Parquet files partitioned Hive-style by kind and UTC day, written from
//! sealed WAL segments. See `README.md` beside this file for the layout and for what
//! happens at each crash point.

pub(crate) mod manifest;
pub(crate) mod merge;
pub(crate) mod schema;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use chrono::NaiveDate;
use cityward_model::{Event, KindRegistry};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
pub(crate) use manifest::sync_dir;
use manifest::Manifest;
pub use merge::{MergeReport, MergedPartition};
pub use schema::{
    check_kinds, events_schema, events_to_batch, time_type, ATTRS_COLUMN, DAY_COLUMN, ID_COLUMN,
    KIND_COLUMN, RESERVED_COLUMNS, SOURCE_COLUMN, TIME_COLUMN,
};

/// Directory of partitions being deleted by retention; emptied on [`Lake::open`].
pub(crate) const TRASH_DIR: &str = "_trash";
/// Extension of lake data files.
pub(crate) const PARQUET_EXT: &str = ".parquet";
/// Columns that get a Bloom filter when the schema has them.
const BLOOM_COLUMNS: [&str; 3] = [ID_COLUMN, SOURCE_COLUMN, PLATE_COLUMN];
/// The attribute column plate searches filter on.
const PLATE_COLUMN: &str = "plate";

/// Tuning of the lake's Parquet files. The defaults suit a city node; tests shrink them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeOptions {
    /// Most rows in one Parquet row group, the unit that statistics and Bloom filters let a
    /// query skip. Default 65536.
    pub row_group_rows: usize,
    /// Most rows in one data page, the unit that the page index lets a query skip.
    /// Default 8192.
    pub data_page_rows: usize,

    /// False-positive rate of the Bloom filters on `id`, `source` and `plate`. Default 0.01.
    pub bloom_filter_fpp: f64,
    /// A partition is merged once it holds at least this many small files. Default 8.
    pub merge_min_files: usize,
    /// Files of at least this many bytes count as large and are never merged. Default 64 MiB.
    pub merge_small_file_bytes: u64,
    /// Most rows in one merged file. Default 4,000,000.
    pub merge_max_rows: u64,
}

impl Default for LakeOptions {
    fn default() -> Self {
        LakeOptions {
            row_group_rows: 65_536,
            data_page_rows: 8_192,
            bloom_filter_fpp: 0.01,
            merge_min_files: 8,
            merge_small_file_bytes: 64 << 20,
            merge_max_rows: 4_000_000,
        }
    }
}

/// One Parquet file the lake wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WrittenFile {
    /// The partition's kind.
    pub kind: String,
    /// The partition's UTC day.
    pub day: NaiveDate,
    /// Where the file is.
    pub path: PathBuf,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// What [`Lake::write_segment`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WriteReport {
    /// First WAL sequence number of the segment.
    pub first_seq: u64,
    /// Last WAL sequence number of the segment.
    pub last_seq: u64,
    /// Events in the segment.
    pub events: usize,
    /// One file per (kind, day) partition the segment touched.
    pub files: Vec<WrittenFile>,
    /// Bytes written in all files.
    pub bytes: u64,
    /// True when the manifest showed the segment was already in the lake, so nothing was
    /// written (the WAL segment may simply be deleted).
    pub already_compacted: bool,
    /// Time spent converting and writing.
    #[serde(with = "duration_ms")]
    pub elapsed: Duration,
}

mod duration_ms {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
}

/// One data file in the lake, as listed by [`Lake::files`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LakeFile {
    /// The partition's kind.
    pub kind: String,
    /// The partition's UTC day.
    pub day: NaiveDate,
    /// Where the file is.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
}

impl LakeFile {
    /// The file name, e.g. `seg-00000000000000000042.parquet`.
    pub fn name(&self) -> &str {
        self.path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
    }
}

/// Counts for one kind (or for the whole lake), for metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindStats {
    /// Data files.
    pub files: u64,
    /// Rows, from the files' Parquet footers.
    pub rows: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Day partitions.
    pub partitions: u64,
    /// The oldest day held.
    pub first_day: Option<NaiveDate>,
    /// The newest day held.
    pub last_day: Option<NaiveDate>,
}

impl KindStats {
    fn add(&mut self, other: &KindStats) {
        self.files += other.files;
        self.rows += other.rows;
        self.bytes += other.bytes;
        self.partitions += other.partitions;
        self.first_day = match (self.first_day, other.first_day) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_day = self.last_day.max(other.last_day);
    }
}

/// What the lake holds, per kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LakeStats {
    /// Counts per kind.
    pub kinds: BTreeMap<String, KindStats>,
    /// Highest WAL sequence number in the lake.
    pub compacted_through_seq: Option<u64>,
}

impl LakeStats {
    /// Counts over all kinds.
    pub fn total(&self) -> KindStats {
        let mut total = KindStats::default();
        for stats in self.kinds.values() {
            total.add(stats);
        }
        total
    }
}

/// The Parquet event lake in one directory.
///
/// Layout: `DIR/kind=<kind>/day=<YYYY-MM-DD>/seg-<first_seq:020>.parquet` (one file per WAL
/// segment and partition, rows sorted by `source` then `time`) and
/// `merge-<lo:020>-<hi:020>.parquet` (small files merged), plus `DIR/_manifest.json` (the
/// highest WAL sequence number compacted) and `DIR/_retention.log` (deletions).
///
/// `kind` is not stored inside the files: it is the `kind=` directory, so that the SQL
/// table sees one `kind` column. One process owns a lake directory at a time.
/// `Lake` is `Send + Sync`; share it with an `Arc`. Its writing methods block on disk I/O:
/// call them from a blocking thread (`tokio::task::spawn_blocking`).
#[derive(Debug)]
pub struct Lake {
    pub(crate) dir: PathBuf,
    kinds: KindRegistry,
    pub(crate) schema: SchemaRef,
    pub(crate) file_schema: SchemaRef,
    pub(crate) options: LakeOptions,
    pub(crate) manifest: Arc<Mutex<Manifest>>,
    /// Opened with [`Lake::open_read_only`]: nothing is written or deleted.
    read_only: bool,
    /// Serialises writers (segments, merges) so the manifest is read-modify-written once at a time.
    write_lock: Mutex<()>,
    /// Held shared by running queries and exclusively while files are deleted or replaced.
    pub(crate) files_lock: Arc<tokio::sync::RwLock<()>>,
    /// One merge at a time.
    merge_lock: tokio::sync::Mutex<()>,
    row_cache: Mutex<AHashMap<PathBuf, (u64, u64)>>,
}

impl Lake {
    /// Opens (creating if needed) the lake in `dir` for the declared kinds, with default
    /// [`LakeOptions`].
    ///
    /// Finishes or rolls back a merge that a crash interrupted and removes temporary files
    /// left by interrupted writes. Fails when the kinds cannot all be given typed columns
    /// (see [`check_kinds`]) or the manifest is unreadable.
    pub fn open(dir: impl AsRef<Path>, kinds: &KindRegistry) -> Result<Lake> {
        Lake::open_with(dir, kinds, LakeOptions::default())
    }

    /// [`Lake::open`] with explicit options.
    pub fn open_with(dir: impl AsRef<Path>, kinds: &KindRegistry, options: LakeOptions) -> Result<Lake> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(StoreError::io("create the lake directory", dir))?;
        let lake = Lake::new(dir, kinds, options, false)?;
        lake.recover()?;
        Ok(lake)
    }

    /// Opens an existing lake for reading only, e.g. for `cityward sql` beside a running
    /// node: no recovery, no writes; [`Lake::write_segment`], merges and retention fail
    /// with [`StoreError::LakeReadOnly`]. Queries through it do not wait for the owning
    /// process's merges and retention, so one that overlaps them may fail and can simply
    /// be repeated.
    pub fn open_read_only(dir: impl AsRef<Path>, kinds: &KindRegistry) -> Result<Lake> {
        Lake::new(dir.as_ref(), kinds, LakeOptions::default(), true)
    }

    fn new(dir: &Path, kinds: &KindRegistry, options: LakeOptions, read_only: bool) -> Result<Lake> {
        check_kinds(kinds)?;
        let dir = dir.canonicalize().map_err(StoreError::io("open the lake directory", dir))?;
        let schema = events_schema(kinds);
        let file_schema = schema::file_schema(&schema);
        let manifest = Manifest::load(&dir)?;
        let lake = Lake {
            dir,
            kinds: kinds.clone(),
            schema,
            file_schema,
            options,
            manifest: Arc::new(Mutex::new(manifest)),
            read_only,
            write_lock: Mutex::new(()),
            files_lock: Arc::new(tokio::sync::RwLock::new(())),
            merge_lock: tokio::sync::Mutex::new(()),
            row_cache: Mutex::new(AHashMap::new()),
        };
        Ok(lake)
    }

    /// Fails when the lake was opened read-only.
    pub(crate) fn check_writable(&self) -> Result<()> {
        match self.read_only {
            true => Err(StoreError::LakeReadOnly { dir: self.dir.clone() }),
            false => Ok(()),
        }
    }

    /// Takes the files lock exclusively: waits for running queries; new ones wait.
    ///
    /// From synchronous code this must run on a blocking thread (`spawn_blocking`) when the
    /// lock is contended, as tokio's `blocking_write` requires.
    fn lock_files_blocking(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        match self.files_lock.try_write() {
            Ok(guard) => guard,
            Err(_) => self.files_lock.blocking_write(),
        }
    }

    /// The lake directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The declared kinds the lake was opened with.
    pub fn kinds(&self) -> &KindRegistry {
        &self.kinds
    }

    /// The `events` schema ([`events_schema`] of the kinds).
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// True when opened with [`Lake::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The options the lake was opened with.
    pub fn options(&self) -> &LakeOptions {
        &self.options
    }

    /// Highest WAL sequence number whose segment is completely in the lake: WAL segments
    /// whose records are all at or below it may be deleted, and records above it are only
    /// in the WAL (pass them to the SQL engine as the WAL tail).
    pub fn compacted_through(&self) -> Option<u64> {
        self.manifest.lock().expect("manifest lock").compacted_through_seq
    }

    /// Writes a sealed WAL segment whose records carry the consecutive sequence numbers
    /// `first_seq ..= first_seq + events.len() - 1`. See [`Lake::write_segment_range`].
    /// An empty `events` covers no sequence numbers and changes nothing.
    pub fn write_segment(&self, first_seq: u64, events: &[Event]) -> Result<WriteReport> {
        if events.is_empty() {
            self.check_writable()?;
            return Ok(WriteReport {
                first_seq,
                last_seq: first_seq,
                events: 0,
                files: Vec::new(),
                bytes: 0,
                already_compacted: false,
                elapsed: Duration::ZERO,
            });
        }
        self.write_segment_range(first_seq, first_seq + events.len() as u64 - 1, events)
    }

    /// Writes the events of the WAL segment holding sequence numbers `first_seq ..= last_seq`
    /// into the lake, one file per (kind, UTC day), then records `last_seq` in the manifest
    /// (also when `events` is empty: the range is then known to hold no events).
    ///
    /// Idempotent: the file names depend only on the partition and `first_seq`, and each
    /// file is written under a temporary name and renamed, so writing a segment again after
    /// a crash replaces the same files. A segment the manifest already covers is skipped
    /// (`already_compacted`). Segments must come in sequence order: one that overlaps what
    /// the lake holds fails with [`StoreError::SegmentOverlap`].
    ///
    /// Call it from a blocking thread (`tokio::task::spawn_blocking`): it does disk I/O
    /// and waits for running queries before switching the new files in.
    pub fn write_segment_range(&self, first_seq: u64, last_seq: u64, events: &[Event]) -> Result<WriteReport> {
        self.check_writable()?;
        let started = Instant::now();
        let _writer = self.write_lock.lock().expect("write lock");
        let mut report = WriteReport {
            first_seq,
            last_seq,
            events: events.len(),
            files: Vec::new(),
            bytes: 0,
            already_compacted: false,
            elapsed: Duration::ZERO,
        };
        if let Some(through) = self.compacted_through() {
            if last_seq <= through {
                report.already_compacted = true;
                report.elapsed = started.elapsed();
                return Ok(report);
            }
            if first_seq <= through {
                return Err(StoreError::SegmentOverlap { first_seq, last_seq, compacted_through: through });
            }
        }
        if last_seq < first_seq || last_seq - first_seq < (events.len() as u64).saturating_sub(1) {
            return Err(StoreError::SegmentRange { first_seq, last_seq, events: events.len() });
        }

        let mut partitions: AHashMap<(&str, i32), Vec<&Event>> = AHashMap::new();
        for event in events {
            partitions
                .entry((event.kind.as_str(), schema::day_number(event.time_micros())))
                .or_default()
                .push(event);
        }
        let mut partitions: Vec<_> = partitions.into_iter().collect();
        partitions.sort_unstable_by(|a, b| a.0.cmp(&b.0));

        let name = segment_file_name(first_seq);
        let temp = temp_name(&name);
        // Phase 1: every partition file under its temporary name, invisible to queries.
        let written = (|| -> Result<()> {
            for ((kind, day_number), rows) in partitions {
                // Converted in WAL order (memory order), then sorted column-wise; the sort is
                // stable, so a rewrite of the segment gives the same rows in the same order.
                let batch = schema::try_events_to_batch(&rows, &self.file_schema)?;
                let order = self.row_order(kind);
                let batch = sort_rows(&batch, order)?;
                let day = day_from_number(day_number);
                let dir = self.partition_dir(kind, day);
                fs::create_dir_all(&dir).map_err(StoreError::io("create partition directory", &dir))?;
                let path = dir.join(&name);
                let bytes = write_parquet(&dir.join(&temp), &batch, self.writer_properties(first_seq, last_seq, order))?;
                report.bytes += bytes;
                report.files.push(WrittenFile { kind: kind.to_string(), day, path, rows: rows.len() as u64, bytes });
            }
            Ok(())
        })();
        if let Err(e) = written {
            for file in &report.files {
                let _ = fs::remove_file(file.path.with_file_name(&temp));
            }
            return Err(e);
        }
        // Phase 2: switch all files in and record the segment, while no query runs, so a
        // query sees the segment either in the lake or (by its sequence numbers) in the WAL.
        {
            let _exclusive = self.lock_files_blocking();
            for file in &report.files {
                let dir = file.path.parent().expect("a partition directory");
                fs::rename(dir.join(&temp), &file.path).map_err(StoreError::io("rename into place", &file.path))?;
            }
            let mut synced: ahash::AHashSet<&Path> = ahash::AHashSet::new();
            for file in &report.files {
                let day_dir = file.path.parent().expect("a partition directory");
                // The partition directories may be new: make their entries durable too.
                for dir in [day_dir, day_dir.parent().expect("a kind directory")] {
                    if synced.insert(dir) {
                        sync_dir(dir)?;
                    }
                }
            }
            sync_dir(&self.dir)?;
            self.update_manifest(|m| {
                m.compacted_through_seq = Some(last_seq);
                m.segments_compacted += 1;
            })?;
        }
        report.elapsed = started.elapsed();
        tracing::debug!(
            first_seq,
            last_seq,
            events = events.len(),
            files = report.files.len(),
            bytes = report.bytes,
            "Compacted WAL segment into the lake."
        );
        Ok(report)
    }

    /// Every data file in the lake, sorted by kind, day and name. Cheap: directory
    /// listings and file sizes only.
    pub fn files(&self) -> Result<Vec<LakeFile>> {
        let mut files = Vec::new();
        for (kind, kind_dir) in list_dirs(&self.dir, "kind=")? {
            let kind = decode_partition_value(&kind);
            for (day, day_dir) in list_dirs(&kind_dir, "day=")? {
                let Ok(day) = NaiveDate::parse_from_str(&day, "%Y-%m-%d") else {
                    tracing::debug!(path = %day_dir.display(), "Skipped a directory that is not a day partition.");
                    continue;
                };
                for entry in fs::read_dir(&day_dir).map_err(StoreError::io("list", &day_dir))? {
                    let entry = entry.map_err(StoreError::io("list", &day_dir))?;
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if name.starts_with('.') || !name.ends_with(PARQUET_EXT) {
                        continue;
                    }
                    let meta = entry.metadata().map_err(StoreError::io("read metadata of", entry.path()))?;
                    if meta.is_file() {
                        files.push(LakeFile { kind: kind.clone(), day, path: entry.path(), bytes: meta.len() });
                    }
                }
            }
        }
        files.sort();
        Ok(files)
    }

    /// Files, rows and bytes per kind. Rows come from the Parquet footers, cached by path
    /// and size, so repeated calls (a metrics scrape) read only new files.
    pub fn stats(&self) -> Result<LakeStats> {
        let files = self.files()?;
        let mut stats = LakeStats { compacted_through_seq: self.compacted_through(), ..Default::default() };
        let mut last_partition: Option<(&str, NaiveDate)> = None;
        for file in &files {
            let rows = self.file_rows(&file.path, file.bytes)?;
            let entry = stats.kinds.entry(file.kind.clone()).or_default();
            entry.files += 1;
            entry.rows += rows;
            entry.bytes += file.bytes;
            if last_partition != Some((file.kind.as_str(), file.day)) {
                entry.partitions += 1;
                last_partition = Some((file.kind.as_str(), file.day));
            }
            entry.first_day = Some(entry.first_day.map_or(file.day, |d| d.min(file.day)));
            entry.last_day = Some(entry.last_day.map_or(file.day, |d| d.max(file.day)));
        }
        let live: ahash::AHashSet<&Path> = files.iter().map(|f| f.path.as_path()).collect();
        self.row_cache.lock().expect("row cache").retain(|p, _| live.contains(p.as_path()));
        Ok(stats)
    }

    /// Rows in one data file, from its footer (cached by path and size).
    pub(crate) fn file_rows(&self, path: &Path, bytes: u64) -> Result<u64> {
        if let Some(&(size, rows)) = self.row_cache.lock().expect("row cache").get(path) {
            if size == bytes {
                return Ok(rows);
            }
        }
        let rows = parquet_rows(path)?;
        self.row_cache.lock().expect("row cache").insert(path.to_path_buf(), (bytes, rows));
        Ok(rows)
    }

    /// The directory of one partition.
    pub(crate) fn partition_dir(&self, kind: &str, day: NaiveDate) -> PathBuf {
        self.dir.join(partition_rel_path(kind, day))
    }

    /// How the rows of a partition of `kind` are ordered: by plate for kinds whose every
    /// event carries one (plate reads, which are searched by plate), by source otherwise.
    pub(crate) fn row_order(&self, kind: &str) -> RowOrder {
        let requires_plate = self
            .kinds
            .get(kind)
            .and_then(|k| k.attrs.get(PLATE_COLUMN))
            .is_some_and(|a| a.required && a.ty == cityward_model::AttrType::String);
        if requires_plate && self.file_schema.index_of(PLATE_COLUMN).is_ok() {
            RowOrder::PlateTime
        } else {
            RowOrder::SourceTime
        }
    }

    /// Properties of every lake file: SNAPPY, page-level statistics, Bloom filters on
    /// `id`, `source`, `plate`, the sort order, and the WAL range in the footer.
    pub(crate) fn writer_properties(&self, first_seq: u64, last_seq: u64, order: RowOrder) -> WriterProperties {
        let o = &self.options;
        let index = |name: &str| self.file_schema.index_of(name).ok();
        let sorting: Vec<SortingColumn> = [index(order.key_column()), index(TIME_COLUMN)]
            .into_iter()
            .flatten()
            .map(|i| SortingColumn { column_idx: i as i32, descending: false, nulls_first: false })
            .collect();
        let mut builder = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(o.row_group_rows.max(1)))
            .set_data_page_row_count_limit(o.data_page_rows.max(1))
            .set_sorting_columns(Some(sorting))
            .set_created_by(format!("cityward {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "cityward.wal_seq".to_string(),
                format!("{first_seq}-{last_seq}"),
            )]));
        for column in BLOOM_COLUMNS {
            if index(column).is_some() {
                let path = ColumnPath::from(column);
                builder = builder
                    .set_column_bloom_filter_enabled(path.clone(), true)
                    .set_column_bloom_filter_fpp(path.clone(), o.bloom_filter_fpp)
                    .set_column_bloom_filter_max_ndv(path, o.row_group_rows as u64);
            }
        }
        builder.build()
    }

    /// Finishes or rolls back an interrupted merge and removes leftovers of interrupted
    /// writes and deletions.
    fn recover(&self) -> Result<()> {
        let _writer = self.write_lock.lock().expect("write lock");
        merge::recover_pending(self)?;
        let trash = self.dir.join(TRASH_DIR);
        if trash.exists() {
            fs::remove_dir_all(&trash).map_err(StoreError::io("remove", &trash))?;
            tracing::info!(path = %trash.display(), "Removed partitions left half-deleted by an interrupted retention run.");
        }
        for (_, kind_dir) in list_dirs(&self.dir, "kind=")? {
            for (_, day_dir) in list_dirs(&kind_dir, "day=")? {
                for entry in fs::read_dir(&day_dir).map_err(StoreError::io("list", &day_dir))? {
                    let entry = entry.map_err(StoreError::io("list", &day_dir))?;
                    let name = entry.file_name();
                    if name.to_str().is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp")) {
                        let path = entry.path();
                        fs::remove_file(&path).map_err(StoreError::io("remove", &path))?;
                        tracing::info!(path = %path.display(), "Removed a temporary file left by an interrupted lake write.");
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn manifest_snapshot(&self) -> Manifest {
        self.manifest.lock().expect("manifest lock").clone()
    }

    pub(crate) fn update_manifest(&self, change: impl FnOnce(&mut Manifest)) -> Result<()> {
        let mut manifest = self.manifest.lock().expect("manifest lock");
        let mut next = manifest.clone();
        change(&mut next);
        next.store(&self.dir)?;
        *manifest = next;
        Ok(())
    }
}

/// `seg-<first_seq:020>.parquet`.
pub(crate) fn segment_file_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}{PARQUET_EXT}")
}

/// The hidden temporary name a file is written under before it is renamed into place.
pub(crate) fn temp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

/// `kind=<kind>/day=<YYYY-MM-DD>`.
pub(crate) fn partition_rel_path(kind: &str, day: NaiveDate) -> String {
    format!("kind={}/day={}", encode_partition_value(kind), day.format("%Y-%m-%d"))
}

/// The calendar day of a UTC day number (days since 1970-01-01).
pub(crate) fn day_from_number(days: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .expect("epoch")
        .checked_add_signed(chrono::TimeDelta::days(days as i64))
        .unwrap_or(NaiveDate::MAX)
}

/// Percent-encodes everything but ASCII letters, digits, `_` and `-`, as Hive and
/// DataFusion decode partition values.
fn encode_partition_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn decode_partition_value(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sub-directories of `dir` named `<prefix><value>`, as (value, path), sorted.
pub(crate) fn list_dirs(dir: &Path, prefix: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::io("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(StoreError::io("list", dir))?;
        let name = entry.file_name();
        let Some(value) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else { continue };
        if entry.file_type().map_err(StoreError::io("read metadata of", entry.path()))?.is_dir() {
            out.push((value.to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `batch` to a new Parquet file at `path` and makes it durable; returns its size.
pub(crate) fn write_parquet(path: &Path, batch: &RecordBatch, props: WriterProperties) -> Result<u64> {
    let file = File::create(path).map_err(StoreError::io("create", path))?;
    let mut writer = ArrowWriter::try_new(BufWriter::with_capacity(1 << 20, file), batch.schema(), Some(props))
        .map_err(StoreError::parquet(path))?;
    writer.write(batch).map_err(StoreError::parquet(path))?;
    let file = writer
        .into_inner()
        .map_err(StoreError::parquet(path))?
        .into_inner()
        .map_err(|e| StoreError::io("write", path)(e.into_error()))?;
    file.sync_all().map_err(StoreError::io("sync", path))?;
    file.metadata().map(|m| m.len()).map_err(StoreError::io("read metadata of", path))
}

/// The order of the rows in a lake file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowOrder {
    /// By `source`, then `time`: a device's or vehicle's events lie together.
    SourceTime,
    /// By `plate`, then `time`: a plate's reads lie together, so min/max statistics skip
    /// every row group and page but the few that can hold a plate or a plate prefix.
    PlateTime,
}

impl RowOrder {
    /// The string column sorted first.
    pub(crate) fn key_column(self) -> &'static str {
        match self {
            RowOrder::SourceTime => SOURCE_COLUMN,
            RowOrder::PlateTime => PLATE_COLUMN,
        }
    }
}

/// Sorts a batch of the file schema by `order`'s key column, then `time`, keeping the
/// order of equal rows. Columnar, so much faster than sorting the events, whose strings lie
/// all over the heap.
pub(crate) fn sort_rows(batch: &RecordBatch, order: RowOrder) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Array, AsArray, UInt32Array};
    use datafusion::arrow::compute::take_record_batch;
    use datafusion::arrow::datatypes::TimestampMicrosecondType;
    let column = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| StoreError::Arrow {
            context: format!("sorting rows: the batch has no `{name}` column"),
            source: datafusion::arrow::error::ArrowError::SchemaError(name.to_string()),
        })
    };
    let key_name = order.key_column();
    let key = column(key_name)?.as_string_opt::<i32>().ok_or_else(|| StoreError::Arrow {
        context: format!("sorting rows: `{key_name}` is not Utf8"),
        source: datafusion::arrow::error::ArrowError::SchemaError(key_name.into()),
    })?;
    let time = column(TIME_COLUMN)?.as_primitive_opt::<TimestampMicrosecondType>().ok_or_else(|| StoreError::Arrow {
        context: "sorting rows: `time` is not a microsecond timestamp".into(),
        source: datafusion::arrow::error::ArrowError::SchemaError(TIME_COLUMN.into()),
    })?;
    let times = time.values();
    // Keys repeat (a few thousand devices per segment, a plate read again and again): rank
    // the distinct ones once, then sort rows by (rank, time) as integers instead of
    // comparing strings row against row. Nulls rank first, as `Option` orders them.
    let mut ranks: AHashMap<Option<&str>, u32> = AHashMap::new();
    let row_key = |i: usize| key.is_valid(i).then(|| key.value(i));
    for i in 0..batch.num_rows() {
        let next = ranks.len() as u32;
        ranks.entry(row_key(i)).or_insert(next);
    }
    let mut distinct: Vec<Option<&str>> = ranks.keys().copied().collect();
    distinct.sort_unstable();
    for (rank, key) in distinct.iter().enumerate() {
        ranks.insert(*key, rank as u32);
    }
    let mut keyed: Vec<(u32, i64, u32)> = (0..batch.num_rows())
        .map(|i| (ranks[&row_key(i)], times[i], i as u32))
        .collect();
    keyed.sort_unstable();
    let order: Vec<u32> = keyed.into_iter().map(|(_, _, i)| i).collect();
    if order.windows(2).all(|w| w[0] < w[1]) {
        return Ok(batch.clone());
    }
    take_record_batch(batch, &UInt32Array::from(order)).map_err(StoreError::arrow(format!("sorting rows by {key_name} and time")))
}

/// Rows in a Parquet file, from its footer.
pub(crate) fn parquet_rows(path: &Path) -> Result<u64> {
    let file = File::open(path).map_err(StoreError::io("open", path))?;
    let reader = SerializedFileReader::new(file).map_err(StoreError::parquet(path))?;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as u64)
}

#[cfg(test)]
pub(crate) mod tests;
