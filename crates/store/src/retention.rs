//! Retention: day partitions of the lake are deleted once every event in them is older than
//! its data class may be kept (principle 5, "retention is configured per data class").
//! Two rules keep single events of a day longer than the rest: events that are evidence of
//! an alert (a plate read that matched a hotlist) and events in a jurisdiction (region)
//! with its own retention; a day that holds some of them is rewritten without the others.
//! Each deletion is logged and appended to `DIR/_retention.log` (JSON lines), so past runs
//! can be listed and audited.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use cityward_model::{duration_serde, format_duration, format_time, KindRegistry};
use serde::{Deserialize, Serialize};

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::error::{Result, StoreError};
use crate::lake::{merge, sync_dir, Lake, LakeFile, TRASH_DIR};
use crate::ID_COLUMN;

/// The patrol-grid column, which places an event in a jurisdiction.
const GRID_COLUMN: &str = "grid";

/// File name of the deletion log inside the lake directory.
pub const RETENTION_LOG: &str = "_retention.log";

/// How long events are kept, per kind, per data class, or by default. The most specific
/// entry wins: `kinds`, then `classes` (the kind's `class`), then `default`; a kind none of
/// them covers is kept forever.
///
/// In configuration: `{ "default": "365d", "classes": { "plate_read": "30d" }, "kinds": {} }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// How long events are kept when neither their kind nor their class has an entry;
    /// absent means forever.
    #[serde(default, with = "duration_serde::option", skip_serializing_if = "Option::is_none")]
    pub default: Option<Duration>,
    /// How long events are kept per data class (`class` of the kind schema), e.g.
    /// `plate_read: 30d`.
    #[serde(default, with = "duration_map")]
    pub classes: BTreeMap<String, Duration>,
    /// How long events are kept per kind; wins over the class.
    #[serde(default, with = "duration_map")]
    pub kinds: BTreeMap<String, Duration>,
    /// How long events that are evidence of an alert (a hotlist match, a rule's trigger)
    /// are kept, per kind or class, when that is longer than their kind's retention; the
    /// evidence itself is [`RetentionPolicy::evidence`].
    #[serde(default, with = "duration_map")]
    pub evidence_kept: BTreeMap<String, Duration>,
    /// Retention in a jurisdiction: region id → kind or class → how long, for events whose
    /// grid lies in that region or a region inside it. The innermost region with an entry
    /// for the event's kind or class wins over `kinds`, `classes` and `default`; the map
    /// from grids to regions is [`RetentionPolicy::grid_regions`].
    #[serde(default)]
    pub regions: BTreeMap<String, RegionRetention>,
    /// Legal holds in force: partitions they cover are kept past their retention.
    #[serde(skip)]
    pub holds: Vec<LegalHold>,
    /// Ids of the events that are evidence of an alert (from the state store).
    #[serde(skip)]
    pub evidence: HashSet<String>,
    /// Each patrol grid's regions, innermost first (from the city model).
    #[serde(skip)]
    pub grid_regions: HashMap<String, Vec<String>>,
}

/// The retention of one jurisdiction, per kind or class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegionRetention(#[serde(with = "duration_map")] pub BTreeMap<String, Duration>);

/// A legal hold: the data of a case (kinds, time range) kept past its retention until the
/// hold is released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalHold {
    /// `h` and 16 hex digits.
    pub id: String,
    /// The case the data is held for.
    pub case_number: String,
    /// Why (the court order, the investigation).
    pub reason: String,
    /// Kinds held; empty: every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Held from (inclusive).
    pub since: DateTime<Utc>,
    /// Held until (exclusive).
    pub until: DateTime<Utc>,
    /// Who placed it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it was released (it holds nothing since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<DateTime<Utc>>,
    /// Who released it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
}

impl LegalHold {
    /// Whether the hold keeps the day partition `day` of `kind`: it is in force, names the
    /// kind (or none), and its time range meets the day.
    pub fn covers(&self, kind: &str, day: NaiveDate) -> bool {
        let start = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        self.released_at.is_none()
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
            && self.since < end_of_day(day)
            && start < self.until
    }
}

/// An expired partition kept because a legal hold covers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldPartition {
    /// The kind.
    pub kind: String,
    /// The UTC day.
    pub day: NaiveDate,
    /// The hold that keeps it.
    pub hold: String,
    /// The hold's case.
    pub case_number: String,
}

mod duration_map {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<String, Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, d)| (k, cityward_model::format_duration(*d))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, text)| {
                let duration = cityward_model::parse_duration(&text)
                    .map_err(|e| serde::de::Error::custom(format!("`{k}`: {e}")))?;
                Ok((k, duration))
            })
            .collect()
    }
}

/// Which entry of a [`RetentionPolicy`] applies to a kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRule {
    /// The entry: `kinds.<kind>`, `classes.<class>` or `default`.
    pub rule: String,
    /// Its duration as written, e.g. `30d`.
    pub keep: String,
    /// Its duration.
    #[serde(skip)]
    pub duration: Duration,
}

impl RetentionPolicy {
    /// The entry that governs `kind`, or `None` when its events are kept forever.
    pub fn rule_for(&self, kind: &str, kinds: &KindRegistry) -> Option<AppliedRule> {
        let applied = |rule: String, duration: &Duration| AppliedRule {
            rule,
            keep: format_duration(*duration),
            duration: *duration,
        };
        if let Some(d) = self.kinds.get(kind) {
            return Some(applied(format!("kinds.{kind}"), d));
        }
        if let Some(class) = kinds.get(kind).map(|s| s.class.as_str()) {
            if let Some(d) = self.classes.get(class) {
                return Some(applied(format!("classes.{class}"), d));
            }
        }
        self.default.as_ref().map(|d| applied("default".to_string(), d))
    }

    /// The entry of `map` (named `prefix.KEY`) for `kind` or, failing that, its class.
    fn entry_in(map: &BTreeMap<String, Duration>, prefix: &str, kind: &str, kinds: &KindRegistry) -> Option<AppliedRule> {
        let class = kinds.get(kind).map(|s| s.class.as_str());
        [Some(kind), class].into_iter().flatten().find_map(|key| {
            map.get(key).map(|d| AppliedRule { rule: format!("{prefix}.{key}"), keep: format_duration(*d), duration: *d })
        })
    }

    /// Every rule that may decide an event of `kind`: the kind's own, each region's, and
    /// the longer retention of evidence.
    fn rules_of(&self, kind: &str, kinds: &KindRegistry) -> KindRules {
        KindRules {
            base: self.rule_for(kind, kinds),
            regions: self
                .regions
                .iter()
                .filter_map(|(id, r)| Some((id.clone(), Self::entry_in(&r.0, &format!("regions.{id}"), kind, kinds)?)))
                .collect(),
            evidence: Self::entry_in(&self.evidence_kept, "evidence_kept", kind, kinds),
        }
    }

    /// Refuses zero durations, which would delete every finished day at once — almost
    /// certainly a typo.
    pub fn validate(&self) -> Result<()> {
        let entries = self
            .default
            .iter()
            .map(|d| ("default".to_string(), d))
            .chain(self.classes.iter().map(|(k, d)| (format!("classes.{k}"), d)))
            .chain(self.kinds.iter().map(|(k, d)| (format!("kinds.{k}"), d)))
            .chain(self.evidence_kept.iter().map(|(k, d)| (format!("evidence_kept.{k}"), d)))
            .chain(self.regions.iter().flat_map(|(r, m)| m.0.iter().map(move |(k, d)| (format!("regions.{r}.{k}"), d))));
        for (setting, duration) in entries {
            if duration.is_zero() {
                return Err(StoreError::Retention {
                    setting,
                    message: "a retention of zero would delete all data as soon as its day ends; \
                              write how long to keep it, e.g. 30d, or remove the entry to keep it forever"
                        .to_string(),
                });
            }
        }
        Ok(())
    }
}

/// The rules that may decide the events of one kind.
struct KindRules {
    base: Option<AppliedRule>,
    regions: Vec<(String, AppliedRule)>,
    evidence: Option<AppliedRule>,
}

/// Whether `rule` has expired a day: its whole day lies before `now − keep`.
fn expires(rule: &AppliedRule, day: NaiveDate, now: DateTime<Utc>) -> bool {
    let keep = chrono::TimeDelta::from_std(rule.duration).unwrap_or(chrono::TimeDelta::MAX);
    now.checked_sub_signed(keep).is_some_and(|cutoff| end_of_day(day) <= cutoff)
}

/// What retention does to each row of one day: which rule deletes it, or which longer rule
/// keeps it (`None`: kept, as the day's own rule has not expired it).
enum RowVerdict<'a> {
    Delete(&'a AppliedRule),
    Keep(Option<&'a AppliedRule>),
}

impl KindRules {
    /// Whether every row of `day` goes by the kind's own rule alone: no region has its own
    /// retention for it and no evidence is kept longer.
    fn whole_day(&self, policy: &RetentionPolicy, day: NaiveDate, now: DateTime<Utc>) -> bool {
        self.regions.is_empty()
            && (policy.evidence.is_empty() || self.evidence.as_ref().is_none_or(|e| expires(e, day, now)))
    }

    /// The verdict on one row, given its id and grid.
    fn verdict<'a>(&'a self, policy: &RetentionPolicy, day: NaiveDate, now: DateTime<Utc>, id: &str, grid: Option<&str>) -> RowVerdict<'a> {
        let regional = grid.and_then(|g| policy.grid_regions.get(g)).and_then(|chain| {
            chain.iter().find_map(|region| self.regions.iter().find(|(id, _)| id == region).map(|(_, rule)| rule))
        });
        let Some(rule) = regional.or(self.base.as_ref()) else { return RowVerdict::Keep(None) };
        if !expires(rule, day, now) {
            return RowVerdict::Keep(regional);
        }
        match &self.evidence {
            Some(longer) if policy.evidence.contains(id) && !expires(longer, day, now) => RowVerdict::Keep(Some(longer)),
            _ => RowVerdict::Delete(rule),
        }
    }
}

/// A partition past its retention: deleted whole, or — when some of its rows fall under a
/// longer rule (evidence, a region's own retention) — rewritten without the expired rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpiredPartition {
    /// The kind.
    pub kind: String,
    /// The UTC day.
    pub day: NaiveDate,
    /// The policy entry that expired it (that deleted most of its rows).
    #[serde(flatten)]
    pub rule: AppliedRule,
    /// Data files in the partition.
    pub files: u64,
    /// Rows deleted (from the Parquet footers for a whole partition).
    pub rows: u64,
    /// Bytes on disk of the partition's files (a plan), or bytes freed (a run).
    pub bytes: u64,
    /// Rows deleted per rule, when rows of the day fall under more than one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deleted_by: BTreeMap<String, u64>,
    /// Rows kept, per rule that keeps them (`evidence_kept.plate_read`,
    /// `regions.d1.plate_read`, or the kind's own rule); empty when the day goes whole.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kept: BTreeMap<String, u64>,
}

impl ExpiredPartition {
    /// Whether the whole day goes (nothing in it is kept).
    pub fn whole(&self) -> bool {
        self.kept.is_empty()
    }
}

/// The partitions a retention run deletes ([`Lake::apply_retention`]) or would delete
/// ([`Lake::plan_retention`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetentionReport {
    /// The time the run measured ages against.
    pub now: DateTime<Utc>,
    /// False for a plan, true once the partitions are deleted.
    pub applied: bool,
    /// The expired partitions, by kind and day.
    pub partitions: Vec<ExpiredPartition>,
    /// Expired partitions kept by a legal hold (whole days: a hold keeps every event of the
    /// day it meets).
    pub held: Vec<HeldPartition>,
}

impl RetentionReport {
    /// Files over all partitions.
    pub fn files(&self) -> u64 {
        self.partitions.iter().map(|p| p.files).sum()
    }

    /// Rows over all partitions.
    pub fn rows(&self) -> u64 {
        self.partitions.iter().map(|p| p.rows).sum()
    }

    /// Bytes over all partitions.
    pub fn bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.bytes).sum()
    }
}

/// One line of `DIR/_retention.log`: a partition deleted by retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionLogEntry {
    /// When it was deleted (RFC 3339).
    pub deleted_at: String,
    /// The `now` of the run (RFC 3339).
    pub run_now: String,
    /// What was deleted.
    #[serde(flatten)]
    pub partition: ExpiredPartition,
}

/// Rows of a day judged by retention.
struct Judged {
    /// What goes, when anything does.
    partition: Option<ExpiredPartition>,
    /// Per row: stays.
    keep: BooleanArray,
}

/// The named columns of every file of one day, concatenated.
fn read_columns(files: &[LakeFile], columns: &[&str]) -> Result<RecordBatch> {
    let mut batches = Vec::new();
    for file in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&file.path).map_err(StoreError::io("open", &file.path))?)
            .map_err(StoreError::parquet(&file.path))?;
        let mask = ProjectionMask::columns(reader.parquet_schema(), columns.iter().copied());
        for batch in reader.with_projection(mask).with_batch_size(65_536).build().map_err(StoreError::parquet(&file.path))? {
            batches.push(batch.map_err(StoreError::arrow(format!("reading `{}`", file.path.display())))?);
        }
    }
    match batches.first() {
        Some(first) => concat_batches(&first.schema(), &batches).map_err(StoreError::arrow("concatenating a day's columns")),
        None => Ok(RecordBatch::new_empty(std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(
            columns.iter().map(|c| datafusion::arrow::datatypes::Field::new(*c, datafusion::arrow::datatypes::DataType::Utf8, true)).collect::<Vec<_>>(),
        )))),
    }
}

/// The first instant after `day`.
fn end_of_day(day: NaiveDate) -> DateTime<Utc> {
    day.succ_opt()
        .unwrap_or(NaiveDate::MAX)
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

impl Lake {
    /// Lists the partitions `policy` expires at `now`, deleting nothing: a partition is
    /// expired when its whole day lies before `now − retention` of its kind. Where a region's
    /// own retention or the longer retention of evidence may decide some of a day's rows,
    /// their ids and grids are read to tell which rows go.
    pub fn plan_retention(&self, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<RetentionReport> {
        policy.validate()?;
        let mut partitions: Vec<ExpiredPartition> = Vec::new();
        let mut held: Vec<HeldPartition> = Vec::new();
        let files = self.files()?;
        let mut rules: HashMap<String, KindRules> = HashMap::new();
        for day_files in files.chunk_by(|a, b| a.kind == b.kind && a.day == b.day) {
            let (kind, day) = (&day_files[0].kind, day_files[0].day);
            let rules = rules.entry(kind.clone()).or_insert_with(|| policy.rules_of(kind, self.kinds()));
            let any_expires = rules.base.iter().chain(rules.regions.iter().map(|(_, r)| r)).any(|r| expires(r, day, now));
            if !any_expires {
                continue;
            }
            let bytes: u64 = day_files.iter().map(|f| f.bytes).sum();
            let whole_rule = rules.base.clone().filter(|_| rules.whole_day(policy, day, now));
            let partition = match whole_rule {
                Some(rule) => {
                    let rows = day_files.iter().map(|f| self.file_rows(&f.path, f.bytes)).sum::<Result<u64>>()?;
                    ExpiredPartition { kind: kind.clone(), day, rule, files: day_files.len() as u64, rows, bytes, deleted_by: BTreeMap::new(), kept: BTreeMap::new() }
                }
                None => {
                    let batch = read_columns(day_files, &[ID_COLUMN, GRID_COLUMN])?;
                    match self.judge_rows(rules, policy, kind, day, now, &batch)? {
                        Judged { partition: Some(mut p), .. } => {
                            p.files = day_files.len() as u64;
                            p.bytes = bytes;
                            p
                        }
                        _ => continue,
                    }
                }
            };
            if let Some(hold) = policy.holds.iter().find(|h| h.covers(kind, day)) {
                held.push(HeldPartition { kind: kind.clone(), day, hold: hold.id.clone(), case_number: hold.case_number.clone() });
                continue;
            }
            partitions.push(partition);
        }
        Ok(RetentionReport { now, applied: false, partitions, held })
    }

    /// Judges each row of a day (a batch with at least `id` and `grid`): the partition to
    /// report when any row goes, and which rows stay.
    fn judge_rows(&self, rules: &KindRules, policy: &RetentionPolicy, kind: &str, day: NaiveDate, now: DateTime<Utc>, batch: &RecordBatch) -> Result<Judged> {
        let strings = |name: &str| {
            batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>()).ok_or_else(|| StoreError::Arrow {
                context: format!("judging rows for retention: no Utf8 `{name}` column"),
                source: datafusion::arrow::error::ArrowError::SchemaError(name.into()),
            })
        };
        let (ids, grids) = (strings(ID_COLUMN)?, strings(GRID_COLUMN)?);
        // Per rule that deletes rows: how many, and the rule.
        let mut deleting: BTreeMap<&str, (u64, &AppliedRule)> = BTreeMap::new();
        let mut kept: BTreeMap<String, u64> = BTreeMap::new();
        let mut keep = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let grid = grids.is_valid(i).then(|| grids.value(i));
            match rules.verdict(policy, day, now, ids.value(i), grid) {
                RowVerdict::Delete(rule) => {
                    deleting.entry(rule.rule.as_str()).or_insert((0, rule)).0 += 1;
                    keep.push(false);
                }
                RowVerdict::Keep(rule) => {
                    let name = rule.or(rules.base.as_ref()).map_or("forever", |r| r.rule.as_str());
                    *kept.entry(name.to_string()).or_default() += 1;
                    keep.push(true);
                }
            }
        }
        let partition = deleting.values().max_by_key(|(n, _)| *n).map(|(_, top)| {
            let rows = deleting.values().map(|(n, _)| n).sum();
            let deleted_by = match deleting.len() > 1 || !kept.is_empty() {
                true => deleting.iter().map(|(rule, (n, _))| (rule.to_string(), *n)).collect(),
                false => BTreeMap::new(),
            };
            ExpiredPartition { kind: kind.to_string(), day, rule: (*top).clone(), files: 0, rows, bytes: 0, deleted_by, kept }
        });
        Ok(Judged { partition, keep: BooleanArray::from(keep) })
    }

    /// Deletes what `policy` expires at `now` and returns what was deleted.
    ///
    /// Waits for running queries. A day that goes whole is moved into `DIR/_trash` (one
    /// atomic rename, so no query ever sees half a day) and removed; a day of which some
    /// rows stay is rewritten into one file of those rows, switched in like a merge. Each
    /// deletion is logged (`tracing::info!`) and appended to `DIR/_retention.log`. A crash
    /// mid-way leaves at most a `_trash` directory or a pending rewrite, which
    /// [`Lake::open`] clears.
    pub async fn apply_retention(&self, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<RetentionReport> {
        self.check_writable()?;
        let _exclusive = self.files_lock.write().await;
        let mut report = self.plan_retention(policy, now)?;
        let trash = self.dir().join(TRASH_DIR);
        let files = self.files()?;
        for partition in &mut report.partitions {
            let dir = self.partition_dir(&partition.kind, partition.day);
            if !partition.whole() {
                let day_files: Vec<LakeFile> = files.iter().filter(|f| f.kind == partition.kind && f.day == partition.day).cloned().collect();
                let all = merge::read_files(&day_files.iter().map(|f| f.path.clone()).collect::<Vec<_>>(), &self.file_schema)?;
                let rules = policy.rules_of(&partition.kind, self.kinds());
                let judged = self.judge_rows(&rules, policy, &partition.kind, partition.day, now, &all)?;
                let (_, bytes) = self.rewrite_partition(&partition.kind, partition.day, &day_files, &judged.keep)?;
                partition.bytes = partition.bytes.saturating_sub(bytes);
            } else {
                fs::create_dir_all(&trash).map_err(StoreError::io("create", &trash))?;
                let doomed = trash.join(format!(
                    "{}-{}",
                    dir.parent().and_then(|k| k.file_name()).and_then(|n| n.to_str()).unwrap_or("kind"),
                    partition.day
                ));
                fs::rename(&dir, &doomed).map_err(StoreError::io("move an expired partition out of", &dir))?;
                if let Some(kind_dir) = dir.parent() {
                    sync_dir(kind_dir)?;
                }
                fs::remove_dir_all(&doomed).map_err(StoreError::io("remove", &doomed))?;
                if let Some(kind_dir) = dir.parent() {
                    // Drop the kind directory once its last day is gone (fails harmlessly otherwise).
                    let _ = fs::remove_dir(kind_dir);
                }
            }
            tracing::info!(
                kind = %partition.kind,
                day = %partition.day,
                files = partition.files,
                rows = partition.rows,
                kept = partition.kept.values().sum::<u64>(),
                bytes = partition.bytes,
                rule = %partition.rule.rule,
                keep = %partition.rule.keep,
                "Deleted expired lake data."
            );
            self.append_retention_log(&RetentionLogEntry {
                deleted_at: format_time(&Utc::now()),
                run_now: format_time(&now),
                partition: partition.clone(),
            })?;
        }
        if trash.exists() {
            let _ = fs::remove_dir(&trash);
        }
        report.applied = true;
        Ok(report)
    }

    /// Every past deletion, oldest first, from `DIR/_retention.log`.
    pub fn retention_log(&self) -> Result<Vec<RetentionLogEntry>> {
        let path = self.dir().join(RETENTION_LOG);
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io("open", &path)(e)),
        };
        let mut entries = Vec::new();
        for (number, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(StoreError::io("read", &path))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line) {
                Ok(entry) => entries.push(entry),
                // A crash can tear the last line; earlier lines are still worth listing.
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    line = number + 1,
                    error = %e,
                    "Skipped an unreadable line of the retention log."
                ),
            }
        }
        Ok(entries)
    }

    fn append_retention_log(&self, entry: &RetentionLogEntry) -> Result<()> {
        let path = self.dir().join(RETENTION_LOG);
        let mut line = serde_json::to_vec(entry).expect("a log entry always serializes");
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(StoreError::io("open", &path))?;
        file.write_all(&line).map_err(StoreError::io("append to", &path))?;
        file.sync_data().map_err(StoreError::io("sync", &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cityward_model::{parse_time, Event};

    fn event(kind: &str, time: &str, i: usize) -> Event {
        let e = Event::new(format!("dev-{i}"), kind, parse_time(time).unwrap()).at(121.0, 31.0);
        let mut e = match kind {
            "plate_read" => e.with("plate", format!("沪A{i:05}")),
            _ => e.with("value", i as f64),
        };
        e.id = format!("{kind}-{i}");
        e
    }

    fn lake_with_days() -> (tempfile::TempDir, Lake) {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path(), &KindRegistry::builtin()).unwrap();
        let mut events = Vec::new();
        for (i, day) in ["2026-10-01", "2026-10-20", "2026-11-21", "2026-11-22"].iter().enumerate() {
            for j in 0..10 {
                events.push(event("plate_read", &format!("{day}T0{}:00:00Z", j % 10), i * 100 + j));
                events.push(event("smoke", &format!("{day}T12:00:00Z"), i * 100 + j));
            }
        }
        lake.write_segment(1, &events[..40]).unwrap();
        lake.write_segment(41, &events[40..]).unwrap();
        (dir, lake)
    }

    fn policy() -> RetentionPolicy {
        serde_json::from_str(r#"{"default": "365d", "classes": {"plate_read": "30d"}, "kinds": {"smoke": "7d"}}"#)
            .unwrap()
    }

    #[test]
    fn rules_resolve_kind_then_class_then_default() {
        let kinds = KindRegistry::builtin();
        let p = policy();
        assert_eq!(p.rule_for("smoke", &kinds).unwrap().rule, "kinds.smoke");
        let plate = p.rule_for("plate_read", &kinds).unwrap();
        assert_eq!((plate.rule.as_str(), plate.keep.as_str()), ("classes.plate_read", "30d"));
        assert_eq!(p.rule_for("gps", &kinds).unwrap().rule, "default");
        assert_eq!(RetentionPolicy::default().rule_for("gps", &kinds), None);
        let zero: RetentionPolicy = serde_json::from_str(r#"{"classes": {"sensor": "0s"}}"#).unwrap();
        let err = zero.validate().unwrap_err();
        assert!(err.to_string().contains("classes.sensor"), "{err}");
        assert!(serde_json::from_str::<RetentionPolicy>(r#"{"classes": {"x": "soon"}}"#).is_err());
        assert!(serde_json::from_str::<RetentionPolicy>(r#"{"defualt": "1d"}"#).is_err());
    }

    #[test]
    fn plan_lists_whole_expired_days_only() {
        let (_dir, lake) = lake_with_days();
        let now = parse_time("2026-11-22T18:00:00Z").unwrap();
        let plan = lake.plan_retention(&policy(), now).unwrap();
        let listed: Vec<(String, String)> =
            plan.partitions.iter().map(|p| (p.kind.clone(), p.day.to_string())).collect();
        // plate_read keeps 30d: 2026-10-01 and (ending 10-21 00:00 ≤ 10-23 18:00) 10-20 expire.
        // smoke keeps 7d: everything up to 2026-10-20 expires, 11-21 does not.
        assert_eq!(
            listed,
            vec![
                ("plate_read".into(), "2026-10-01".into()),
                ("plate_read".into(), "2026-10-20".into()),
                ("smoke".into(), "2026-10-01".into()),
                ("smoke".into(), "2026-10-20".into()),
            ]
        );
        assert!(plan.partitions.iter().all(|p| p.rows == 10 && p.files >= 1 && p.bytes > 0));
        assert!(!plan.applied);
        assert_eq!(lake.files().unwrap().len(), 8, "a plan deletes nothing");
        // The boundary: a day expires exactly when its end is `retention` old.
        let edge = parse_time("2026-10-28T00:00:00Z").unwrap(); // smoke 10-20 ends 10-21 + 7d
        let plan = lake.plan_retention(&policy(), edge).unwrap();
        assert!(plan.partitions.iter().any(|p| p.kind == "smoke" && p.day.to_string() == "2026-10-20"));
        let before = parse_time("2026-10-27T23:59:59Z").unwrap();
        let plan = lake.plan_retention(&policy(), before).unwrap();
        assert!(!plan.partitions.iter().any(|p| p.kind == "smoke" && p.day.to_string() == "2026-10-20"));
    }

    #[tokio::test]
    async fn a_legal_hold_keeps_the_days_it_covers_until_released() {
        let (_dir, lake) = lake_with_days();
        let now = parse_time("2026-11-22T18:00:00Z").unwrap();
        let hold = LegalHold {
            id: "h1".into(),
            case_number: "2026-117".into(),
            reason: "court order 12/2026".into(),
            kinds: vec!["plate_read".into()],
            // Ends in the first minute of 10-20: the hold meets that day too.
            since: parse_time("2026-10-19T00:00:00Z").unwrap(),
            until: parse_time("2026-10-20T00:01:00Z").unwrap(),
            created_by: "admin".into(),
            created_at: now,
            released_at: None,
            released_by: None,
        };
        let mut policy = policy();
        policy.holds = vec![hold.clone()];
        let plan = lake.plan_retention(&policy, now).unwrap();
        let held: Vec<(String, String, String)> = plan.held.iter().map(|p| (p.kind.clone(), p.day.to_string(), p.case_number.clone())).collect();
        assert_eq!(held, [("plate_read".to_string(), "2026-10-20".to_string(), "2026-117".to_string())]);
        assert!(!plan.partitions.iter().any(|p| p.kind == "plate_read" && p.day.to_string() == "2026-10-20"), "held, not deleted");
        assert_eq!(plan.partitions.len(), 3, "the other kind's day and the unheld day still go");
        let report = lake.apply_retention(&policy, now).await.unwrap();
        assert_eq!(report.rows(), 30);
        assert!(lake.files().unwrap().iter().any(|f| f.kind == "plate_read" && f.day.to_string() == "2026-10-20"), "the held day is on disk");
        // Released, it goes at the next run.
        policy.holds[0].released_at = Some(now);
        let report = lake.apply_retention(&policy, now).await.unwrap();
        assert_eq!((report.partitions.len(), report.held.len()), (1, 0));
    }

    #[tokio::test]
    async fn apply_deletes_logs_and_lists_history() {
        let (_dir, lake) = lake_with_days();
        let now = parse_time("2026-11-22T18:00:00Z").unwrap();
        let report = lake.apply_retention(&policy(), now).await.unwrap();
        assert!(report.applied);
        assert_eq!(report.partitions.len(), 4);
        assert_eq!(report.rows(), 40);
        let left: Vec<String> = lake.files().unwrap().iter().map(|f| format!("{}/{}", f.kind, f.day)).collect();
        assert!(left.iter().all(|p| p.ends_with("2026-11-21") || p.ends_with("2026-11-22")), "{left:?}");
        assert!(!lake.dir().join(TRASH_DIR).exists());
        let log = lake.retention_log().unwrap();
        assert_eq!(log.len(), 4);
        assert_eq!(log[0].partition.kind, "plate_read");
        assert_eq!(log[0].partition.rows, 10);
        assert_eq!(log[0].run_now, "2026-11-22T18:00:00.000Z");
        // Running again finds nothing more and keeps the history.
        let again = lake.apply_retention(&policy(), now).await.unwrap();
        assert!(again.partitions.is_empty());
        assert_eq!(lake.retention_log().unwrap().len(), 4);
        let stats = lake.stats().unwrap();
        assert_eq!(stats.total().rows, 40);
    }

    #[tokio::test]
    async fn evidence_of_an_alert_outlives_the_rest_of_its_day() {
        let (_dir, lake) = lake_with_days();
        let now = parse_time("2026-11-22T18:00:00Z").unwrap();
        let mut policy = policy();
        policy.evidence_kept.insert("plate_read".into(), Duration::from_secs(365 * 86_400));
        // Two reads of 2026-10-01 matched a hotlist; one smoke reading is evidence too, but
        // smoke has no longer retention for evidence.
        policy.evidence = ["plate_read-3", "plate_read-7", "smoke-5"].map(String::from).into();
        let plan = lake.plan_retention(&policy, now).unwrap();
        let oct1 = plan.partitions.iter().find(|p| p.kind == "plate_read" && p.day.to_string() == "2026-10-01").unwrap();
        assert_eq!(oct1.rows, 8, "the eight reads that matched nothing go");
        assert_eq!(oct1.kept, BTreeMap::from([("evidence_kept.plate_read".to_string(), 2)]));
        assert_eq!(oct1.rule.rule, "classes.plate_read");
        assert!(!oct1.whole());
        let smoke = plan.partitions.iter().find(|p| p.kind == "smoke" && p.day.to_string() == "2026-10-01").unwrap();
        assert!(smoke.whole() && smoke.rows == 10);

        let report = lake.apply_retention(&policy, now).await.unwrap();
        assert_eq!(report.rows(), 38);
        let engine = crate::SqlEngine::new(&lake).unwrap();
        let left = engine.query("SELECT id FROM events WHERE kind = 'plate_read' AND day = DATE '2026-10-01' ORDER BY id", Vec::new(), 100).await.unwrap();
        assert_eq!(left.rows, vec![vec![serde_json::json!("plate_read-3")], vec![serde_json::json!("plate_read-7")]]);
        let files: Vec<_> = lake.files().unwrap().into_iter().filter(|f| f.kind == "plate_read" && f.day.to_string() == "2026-10-01").collect();
        assert_eq!(files.len(), 1, "the day is one rewritten file: {files:?}");
        assert!(lake.manifest_snapshot().pending_merge.is_none());
        let log = lake.retention_log().unwrap();
        assert!(log.iter().any(|e| e.partition.kind == "plate_read" && e.partition.rows == 8 && e.partition.kept.values().sum::<u64>() == 2));
        // The next run finds nothing more to delete in that day.
        let again = lake.plan_retention(&policy, now).unwrap();
        assert!(!again.partitions.iter().any(|p| p.kind == "plate_read" && p.day.to_string() == "2026-10-01"), "{again:?}");
        // A year on, the evidence goes too.
        let later = lake.apply_retention(&policy, parse_time("2027-10-05T00:00:00Z").unwrap()).await.unwrap();
        assert!(later.partitions.iter().any(|p| p.kind == "plate_read" && p.day.to_string() == "2026-10-01" && p.whole() && p.rows == 2));
    }

    #[tokio::test]
    async fn a_jurisdiction_keeps_its_events_by_its_own_retention() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path(), &KindRegistry::builtin()).unwrap();
        // One day of plate reads, in grids of two districts and in no grid at all.
        let events: Vec<Event> = (0..9)
            .map(|i| {
                let mut e = event("plate_read", &format!("2026-11-01T0{i}:00:00Z"), i);
                e.grid = match i % 3 {
                    0 => Some("g-east".into()),
                    1 => Some("g-west".into()),
                    _ => None,
                };
                e
            })
            .collect();
        lake.write_segment(1, &events).unwrap();
        let mut policy = policy(); // plate reads: 30 days
        policy.grid_regions = HashMap::from([
            ("g-east".to_string(), vec!["community-e".to_string(), "east".to_string()]),
            ("g-west".to_string(), vec!["community-w".to_string(), "west".to_string()]),
        ]);
        // East keeps plate reads 7 days only, west 90 days.
        let region = |d: u64| RegionRetention(BTreeMap::from([("plate_read".to_string(), Duration::from_secs(d * 86_400))]));
        policy.regions = BTreeMap::from([("east".to_string(), region(7)), ("west".to_string(), region(90))]);
        policy.validate().unwrap();

        // 10 days on: only east's reads are past their retention.
        let plan = lake.plan_retention(&policy, parse_time("2026-11-12T00:00:00Z").unwrap()).unwrap();
        assert_eq!(plan.partitions.len(), 1);
        let p = &plan.partitions[0];
        assert_eq!((p.rows, p.rule.rule.as_str()), (3, "regions.east.plate_read"));
        assert_eq!(p.kept, BTreeMap::from([("classes.plate_read".to_string(), 3), ("regions.west.plate_read".to_string(), 3)]));
        // 40 days on: east's and the unplaced reads go, west's stay.
        let report = lake.apply_retention(&policy, parse_time("2026-12-11T00:00:00Z").unwrap()).await.unwrap();
        let p = &report.partitions[0];
        assert_eq!(p.rows, 6);
        assert_eq!(p.deleted_by, BTreeMap::from([("classes.plate_read".to_string(), 3), ("regions.east.plate_read".to_string(), 3)]));
        let engine = crate::SqlEngine::new(&lake).unwrap();
        let left = engine.query("SELECT DISTINCT grid FROM events", Vec::new(), 10).await.unwrap();
        assert_eq!(left.rows, vec![vec![serde_json::json!("g-west")]]);
        // A zero duration in a region is refused by its name.
        policy.regions.insert("north".into(), region(0));
        assert!(policy.validate().unwrap_err().to_string().contains("regions.north.plate_read"));
    }

    #[test]
    fn a_torn_last_log_line_is_skipped() {
        let (_dir, lake) = lake_with_days();
        fs::write(lake.dir().join(RETENTION_LOG), "{\"deleted_at\":").unwrap();
        assert!(lake.retention_log().unwrap().is_empty());
    }
}
