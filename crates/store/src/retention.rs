//! Retention: whole day partitions of the lake are deleted once every event in them is
//! older than its data class may be kept (principle 5, "retention is configured per data
//! class"). Each deletion is logged and appended to `DIR/_retention.log` (JSON lines), so
//! past runs can be listed and audited.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use cityward_model::{duration_serde, format_duration, format_time, KindRegistry};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::lake::{sync_dir, Lake, TRASH_DIR};

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
    /// Legal holds in force: partitions they cover are kept past their retention.
    #[serde(skip)]
    pub holds: Vec<LegalHold>,
}

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

    /// Refuses zero durations, which would delete every finished day at once — almost
    /// certainly a typo.
    pub fn validate(&self) -> Result<()> {
        let entries = self
            .default
            .iter()
            .map(|d| ("default".to_string(), d))
            .chain(self.classes.iter().map(|(k, d)| (format!("classes.{k}"), d)))
            .chain(self.kinds.iter().map(|(k, d)| (format!("kinds.{k}"), d)));
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

/// One whole partition past its retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpiredPartition {
    /// The kind.
    pub kind: String,
    /// The UTC day.
    pub day: NaiveDate,
    /// The policy entry that expired it.
    #[serde(flatten)]
    pub rule: AppliedRule,
    /// Data files in the partition.
    pub files: u64,
    /// Rows, from the Parquet footers.
    pub rows: u64,
    /// Bytes on disk.
    pub bytes: u64,
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
    /// expired when its whole day lies before `now − retention` of its kind.
    pub fn plan_retention(&self, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<RetentionReport> {
        policy.validate()?;
        let mut partitions: Vec<ExpiredPartition> = Vec::new();
        let mut held: Vec<HeldPartition> = Vec::new();
        for file in self.files()? {
            let Some(rule) = policy.rule_for(&file.kind, self.kinds()) else { continue };
            let keep = chrono::TimeDelta::from_std(rule.duration).unwrap_or(chrono::TimeDelta::MAX);
            let expired = now.checked_sub_signed(keep).is_some_and(|cutoff| end_of_day(file.day) <= cutoff);
            if !expired {
                continue;
            }
            if let Some(hold) = policy.holds.iter().find(|h| h.covers(&file.kind, file.day)) {
                if !held.last().is_some_and(|p| p.kind == file.kind && p.day == file.day) {
                    held.push(HeldPartition { kind: file.kind.clone(), day: file.day, hold: hold.id.clone(), case_number: hold.case_number.clone() });
                }
                continue;
            }
            let rows = self.file_rows(&file.path, file.bytes)?;
            match partitions.last_mut() {
                Some(p) if p.kind == file.kind && p.day == file.day => {
                    p.files += 1;
                    p.rows += rows;
                    p.bytes += file.bytes;
                }
                _ => partitions.push(ExpiredPartition {
                    kind: file.kind.clone(),
                    day: file.day,
                    rule,
                    files: 1,
                    rows,
                    bytes: file.bytes,
                }),
            }
        }
        Ok(RetentionReport { now, applied: false, partitions, held })
    }

    /// Deletes the partitions `policy` expires at `now` and returns what was deleted.
    ///
    /// Waits for running queries, then moves each partition directory into `DIR/_trash`
    /// (one atomic rename, so no query ever sees half a day) and removes it; each deletion
    /// is logged (`tracing::info!`) and appended to `DIR/_retention.log`. A crash mid-way
    /// leaves at most a `_trash` directory, which [`Lake::open`] empties.
    pub async fn apply_retention(&self, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<RetentionReport> {
        self.check_writable()?;
        let _exclusive = self.files_lock.write().await;
        let mut report = self.plan_retention(policy, now)?;
        let trash = self.dir().join(TRASH_DIR);
        for partition in &report.partitions {
            let dir = self.partition_dir(&partition.kind, partition.day);
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
            tracing::info!(
                kind = %partition.kind,
                day = %partition.day,
                files = partition.files,
                rows = partition.rows,
                bytes = partition.bytes,
                rule = %partition.rule.rule,
                keep = %partition.rule.keep,
                "Deleted an expired lake partition."
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

    #[test]
    fn a_torn_last_log_line_is_skipped() {
        let (_dir, lake) = lake_with_days();
        fs::write(lake.dir().join(RETENTION_LOG), "{\"deleted_at\":").unwrap();
        assert!(lake.retention_log().unwrap().is_empty());
    }
}
