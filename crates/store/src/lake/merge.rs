//! Merging the small files of a partition into one, idempotently and crash-safely.
//!
//! Only files of segments the manifest records as compacted are merged, so a segment that
//! is rewritten after a crash (its files are not yet recorded) never meets a merged copy
//! of itself. The switch-over is recorded in the manifest first (`pending_merge`), then
//! the merged file is renamed into place and the inputs deleted; [`recover_pending`]
//! finishes that sequence after a crash. Queries hold the lake's files lock shared, the
//! switch-over holds it exclusively, so a query never sees both the inputs and the output.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use super::manifest::{sync_dir, PendingMerge};
use super::schema::align_batch;
use super::{partition_rel_path, sort_rows, temp_name, write_parquet, Lake, LakeFile, RowOrder, PARQUET_EXT};
use crate::error::{Result, StoreError};

/// One merge: several small files of a partition replaced by one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergedPartition {
    /// The partition's kind.
    pub kind: String,
    /// The partition's UTC day.
    pub day: NaiveDate,
    /// The files that were replaced (now deleted).
    pub inputs: Vec<PathBuf>,
    /// The merged file.
    pub output: PathBuf,
    /// Rows in the merged file (the sum of the inputs' rows).
    pub rows: u64,
    /// Bytes of the inputs.
    pub input_bytes: u64,
    /// Bytes of the merged file.
    pub bytes: u64,
}

/// What [`Lake::merge_small_files`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MergeReport {
    /// One entry per merged group of files.
    pub merges: Vec<MergedPartition>,
}

/// The WAL sequence range a data file name stands for: `seg-N` is the segment starting at
/// `N`; `merge-LO-HI` holds the segments starting at `LO` through `HI`.
pub(crate) fn seq_range(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(PARQUET_EXT)?;
    if let Some(n) = stem.strip_prefix("seg-") {
        let n = n.parse().ok()?;
        return Some((n, n));
    }
    let (lo, hi) = stem.strip_prefix("merge-")?.split_once('-')?;
    Some((lo.parse().ok()?, hi.parse().ok()?))
}

fn merge_file_name(lo: u64, hi: u64) -> String {
    format!("merge-{lo:020}-{hi:020}{PARQUET_EXT}")
}

/// A planned merge of `inputs` (sorted by sequence) in one partition.
struct Job {
    kind: String,
    day: NaiveDate,
    inputs: Vec<LakeFile>,
    rows: u64,
    lo: u64,
    hi: u64,
}

impl Lake {
    /// Merges the small files of each partition (see [`LakeOptions`](super::LakeOptions):
    /// `merge_min_files`, `merge_small_file_bytes`, `merge_max_rows`) into one file per
    /// group, rows sorted by `source` then `time`.
    ///
    /// Reading and writing run on a blocking thread; only the switch-over (rename and
    /// deletes) waits for running queries to finish. Safe to run again at any time; a crash
    /// at any point loses and duplicates nothing (see `lake/README.md`).
    pub async fn merge_small_files(&self) -> Result<MergeReport> {
        self.check_writable()?;
        let _one_at_a_time = self.merge_lock.lock().await;
        let mut report = MergeReport::default();
        for job in self.merge_jobs()? {
            let dir = self.partition_dir(&job.kind, job.day);
            let output = merge_file_name(job.lo, job.hi);
            let temp = dir.join(temp_name(&output));
            let inputs: Vec<PathBuf> = job.inputs.iter().map(|f| f.path.clone()).collect();
            let order = self.row_order(&job.kind);
            let props = self.writer_properties(job.lo, job.hi, order);
            let schema = self.file_schema.clone();
            let (temp_for_task, inputs_for_task) = (temp.clone(), inputs.clone());
            let (rows, bytes) = tokio::task::spawn_blocking(move || {
                merge_into(&inputs_for_task, &temp_for_task, &schema, order, props)
            })
            .await
            .map_err(|e| StoreError::Task { message: format!("the merge task stopped: {e}") })??;
            if rows != job.rows {
                let _ = fs::remove_file(&temp);
                return Err(StoreError::Metadata {
                    path: dir,
                    message: format!(
                        "merging {} files read {rows} rows but their footers count {}; the merge was \
                         abandoned and the files left as they are",
                        inputs.len(),
                        job.rows
                    ),
                });
            }

            let _exclusive = self.files_lock.write().await;
            if !inputs.iter().all(|p| p.exists()) {
                // Retention removed the partition meanwhile.
                let _ = fs::remove_file(&temp);
                continue;
            }
            let pending = PendingMerge {
                partition: partition_rel_path(&job.kind, job.day),
                temp: temp_name(&output),
                output: output.clone(),
                inputs: job.inputs.iter().map(|f| f.name().to_string()).collect(),
            };
            self.update_manifest(|m| m.pending_merge = Some(pending.clone()))?;
            finish_merge(&self.dir, &pending)?;
            self.update_manifest(|m| m.pending_merge = None)?;
            tracing::info!(
                kind = %job.kind,
                day = %job.day,
                inputs = inputs.len(),
                rows,
                bytes,
                "Merged small lake files."
            );
            report.merges.push(MergedPartition {
                kind: job.kind.clone(),
                day: job.day,
                inputs,
                output: dir.join(&output),
                rows,
                input_bytes: job.inputs.iter().map(|f| f.bytes).sum(),
                bytes,
            });
        }
        Ok(report)
    }

    /// Groups of committed small files worth merging.
    fn merge_jobs(&self) -> Result<Vec<Job>> {
        let Some(through) = self.compacted_through() else { return Ok(Vec::new()) };
        let o = &self.options;
        let mut jobs = Vec::new();
        let files = self.files()?;
        let mut start = 0;
        while start < files.len() {
            let (kind, day) = (&files[start].kind, files[start].day);
            let end = start + files[start..].iter().take_while(|f| &f.kind == kind && f.day == day).count();
            let mut small: Vec<(u64, u64, &LakeFile)> = files[start..end]
                .iter()
                .filter(|f| f.bytes < o.merge_small_file_bytes)
                .filter_map(|f| seq_range(f.name()).map(|(lo, hi)| (lo, hi, f)))
                .filter(|(_, hi, _)| *hi <= through)
                .collect();
            start = end;
            if small.len() < o.merge_min_files.max(2) {
                continue;
            }
            small.sort_by_key(|(lo, _, _)| *lo);
            let mut job: Option<Job> = None;
            for (lo, hi, file) in small {
                let rows = self.file_rows(&file.path, file.bytes)?;
                if let Some(j) = &job {
                    if j.rows + rows > o.merge_max_rows {
                        jobs.extend(job.take().filter(|j| j.inputs.len() >= 2));
                    }
                }
                let j = job.get_or_insert_with(|| Job {
                    kind: kind.clone(),
                    day,
                    inputs: Vec::new(),
                    rows: 0,
                    lo,
                    hi,
                });
                j.inputs.push(file.clone());
                j.rows += rows;
                j.lo = j.lo.min(lo);
                j.hi = j.hi.max(hi);
            }
            jobs.extend(job.filter(|j| j.inputs.len() >= 2));
        }
        Ok(jobs)
    }
}

/// Reads `inputs`, sorts their rows in `order` and writes them to `temp`.
pub(super) fn merge_into(inputs: &[PathBuf], temp: &Path, schema: &SchemaRef, order: RowOrder, props: WriterProperties) -> Result<(u64, u64)> {
    let all = read_files(inputs, schema)?;
    let sorted = sort_rows(&all, order)?;
    let bytes = write_parquet(temp, &sorted, props)?;
    Ok((sorted.num_rows() as u64, bytes))
}

/// Every row of `inputs`, in `schema`.
pub(crate) fn read_files(inputs: &[PathBuf], schema: &SchemaRef) -> Result<RecordBatch> {
    let mut batches = Vec::new();
    for path in inputs {
        let file = File::open(path).map_err(StoreError::io("open", path))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(StoreError::parquet(path))?
            .with_batch_size(65_536)
            .build()
            .map_err(StoreError::parquet(path))?;
        for batch in reader {
            let batch = batch.map_err(StoreError::arrow(format!("reading `{}`", path.display())))?;
            batches.push(align_batch(&batch, schema)?);
        }
    }
    concat_batches(schema, &batches).map_err(StoreError::arrow("concatenating the files of a partition"))
}

impl Lake {
    /// Replaces the files of a partition by one holding only the rows `keep` selects
    /// (retention that deletes some rows of a day and keeps others). Crash-safe like a
    /// merge: the switch-over is recorded in the manifest first. The caller holds the files
    /// lock exclusively. Returns the rows kept and the bytes of the new file.
    pub(crate) fn rewrite_partition(
        &self,
        kind: &str,
        day: NaiveDate,
        files: &[LakeFile],
        keep: &BooleanArray,
    ) -> Result<(u64, u64)> {
        let dir = self.partition_dir(kind, day);
        let inputs: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
        let ranges: Vec<(u64, u64)> = files.iter().filter_map(|f| seq_range(f.name())).collect();
        let (Some(lo), Some(hi)) = (ranges.iter().map(|r| r.0).min(), ranges.iter().map(|r| r.1).max()) else {
            return Err(StoreError::Metadata { path: dir, message: "no data file of the partition names its WAL range".into() });
        };
        let all = read_files(&inputs, &self.file_schema)?;
        let kept = filter_record_batch(&all, keep).map_err(StoreError::arrow("selecting the rows retention keeps"))?;
        let order = self.row_order(kind);
        let kept = sort_rows(&kept, order)?;
        let output = merge_file_name(lo, hi);
        let bytes = write_parquet(&dir.join(temp_name(&output)), &kept, self.writer_properties(lo, hi, order))?;
        let pending = PendingMerge {
            partition: partition_rel_path(kind, day),
            temp: temp_name(&output),
            output: output.clone(),
            // The output may take the name of its only input: the rename replaces it.
            inputs: files.iter().map(|f| f.name().to_string()).filter(|n| *n != output).collect(),
        };
        self.update_manifest(|m| m.pending_merge = Some(pending.clone()))?;
        finish_merge(&self.dir, &pending)?;
        self.update_manifest(|m| m.pending_merge = None)?;
        Ok((kept.num_rows() as u64, bytes))
    }
}

/// Switches a merge in: merged file into place, inputs deleted. Every step may be repeated.
fn finish_merge(lake_dir: &Path, pending: &PendingMerge) -> Result<()> {
    let dir = lake_dir.join(&pending.partition);
    let temp = dir.join(&pending.temp);
    let output = dir.join(&pending.output);
    if temp.exists() {
        fs::rename(&temp, &output).map_err(StoreError::io("rename into place", &output))?;
        sync_dir(&dir)?;
    }
    if !output.exists() {
        // Neither the merged file nor its temporary copy: the inputs were never touched.
        return Ok(());
    }
    for name in &pending.inputs {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("remove merged input", &path)(e)),
        }
    }
    sync_dir(&dir)
}

/// Completes a merge that a crash interrupted (called by [`Lake::open`]).
pub(crate) fn recover_pending(lake: &Lake) -> Result<()> {
    let Some(pending) = lake.manifest_snapshot().pending_merge else { return Ok(()) };
    if lake.dir.join(&pending.partition).exists() {
        finish_merge(&lake.dir, &pending)?;
        tracing::info!(
            partition = %pending.partition,
            output = %pending.output,
            "Finished a merge of lake files that was interrupted."
        );
    }
    lake.update_manifest(|m| m.pending_merge = None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_give_sequence_ranges() {
        assert_eq!(seq_range("seg-00000000000000000042.parquet"), Some((42, 42)));
        assert_eq!(seq_range(&merge_file_name(3, 90)), Some((3, 90)));
        assert_eq!(seq_range("notes.parquet"), None);
        assert_eq!(seq_range("seg-12.csv"), None);
    }
}
