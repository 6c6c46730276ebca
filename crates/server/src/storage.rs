//! The node's event storage: the WAL that makes an ingest durable, the compactor that moves
//! sealed WAL segments into the Parquet lake, retention, and SQL over both.

use std::path::Path;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use cityward_model::{Event, KindRegistry};
use cityward_store::{Lake, SqlEngine, Wal, WalConfig, WalReader, WalWriter};

use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::node::{Node, NodeError};

/// WAL + lake + SQL of one node.
pub struct EventStore {
    wal: Mutex<Option<Wal>>,
    writer: WalWriter,
    reader: WalReader,
    lake: Arc<Lake>,
    sql: SqlEngine,
    max_backlog_bytes: u64,
    metrics: Arc<Metrics>,
    compacting: tokio::sync::Mutex<()>,
    /// WAL records from this sequence number on are still needed by the detection stage
    /// (its checkpoint is behind them), so compaction must not delete them.
    keep_from: Arc<AtomicU64>,
}

fn internal(what: &str) -> impl Fn(cityward_store::StoreError) -> NodeError + '_ {
    move |e| NodeError::Internal(format!("{what}: {e}"))
}

impl EventStore {
    /// Opens (recovering) the WAL under `DATA/wal` and the lake under `DATA/lake`.
    pub async fn open(
        data: &Path,
        config: &NodeConfig,
        kinds: &KindRegistry,
        metrics: Arc<Metrics>,
    ) -> Result<EventStore, NodeError> {
        let mut wal_config = WalConfig::new(data.join("wal"));
        wal_config.segment_bytes = config.wal.segment_bytes;
        wal_config.queue_bytes = config.wal.queue_bytes;
        let wal = Wal::open(wal_config)
            .map_err(|e| NodeError::Internal(format!("cannot open the WAL: {e}")))?;
        let recovery = wal.recovery_report();
        if let Some(torn) = &recovery.torn_tail {
            tracing::warn!(torn = ?torn, "WAL tail was torn by a crash and cut; nothing acknowledged was lost.");
        }
        let lake = Arc::new(
            Lake::open(data.join("lake"), kinds).map_err(internal("cannot open the lake"))?,
        );
        let sql_config = cityward_store::SqlConfig { metadata_cache_bytes: config.lake.metadata_cache_bytes, ..Default::default() };
        let sql = SqlEngine::with_config(&lake, &sql_config).map_err(internal("cannot start the SQL engine"))?;
        let store = EventStore {
            writer: wal.writer(),
            reader: wal.reader(),
            wal: Mutex::new(Some(wal)),
            lake,
            sql,
            max_backlog_bytes: config.wal.max_backlog_bytes,
            metrics,
            compacting: tokio::sync::Mutex::new(()),
            keep_from: Arc::new(AtomicU64::new(0)),
        };
        // Segments compacted before a crash but not yet deleted go at the next compaction
        // round, once detection has said which records it still needs (`keep_wal_from`).
        Ok(store)
    }

    /// Appends events to the WAL; returns their sequence numbers once they are fsync'd.
    /// Refuses (503) while the WAL holds more than `wal.max_backlog_bytes` not yet
    /// compacted (or not yet seen by detection).
    pub async fn append(&self, events: &[Event]) -> Result<Range<u64>, NodeError> {
        let backlog = self.writer.stats().disk_bytes;
        if backlog > self.max_backlog_bytes {
            return Err(NodeError::Unavailable(format!(
                "the node is {} MiB behind in moving the WAL into the lake or through detection (wal.max_backlog_bytes); retry in a few seconds",
                backlog >> 20
            )));
        }
        let records: Vec<Vec<u8>> = events
            .iter()
            .map(|e| serde_json::to_vec(e).expect("an Event always serializes"))
            .collect();
        let ack = self.writer.append(records).await.map_err(|e| {
            NodeError::Unavailable(format!(
                "the write-ahead log cannot take writes: {e}; the batch was not stored, retry it"
            ))
        })?;
        Ok(ack.seqs())
    }

    /// The WAL reader (detection tails the WAL with it).
    pub fn wal_reader(&self) -> &WalReader {
        &self.reader
    }

    /// Keeps WAL records from `seq` on: compaction moves them into the lake but does not
    /// delete them until this moves past them. `u64::MAX` keeps nothing back.
    pub fn keep_wal_from(&self, seq: u64) {
        self.keep_from.store(seq, Ordering::Release);
    }

    /// The shared "keep from" position, for the detection stage to move.
    pub(crate) fn keep_handle(&self) -> Arc<AtomicU64> {
        self.keep_from.clone()
    }

    /// Deletes compacted WAL segments through `last`, but never a record still kept for
    /// detection.
    fn delete_compacted(reader: &WalReader, keep_from: u64, last: u64) -> Result<(), NodeError> {
        if last >= keep_from {
            return Ok(()); // a later round deletes it, once detection has moved on
        }
        reader
            .delete_through(last)
            .map(|_| ())
            .map_err(|e| NodeError::Internal(format!("cannot delete compacted WAL segment: {e}")))
    }

    /// Events still only in the WAL (not yet compacted), oldest first.
    pub fn wal_tail(&self) -> Result<Vec<Event>, NodeError> {
        let from = self.lake.compacted_through().map_or(0, |s| s + 1);
        read_events(&self.reader, from)
    }

    /// Feeds the ids of recent events to `remember`: those in the lake newer than
    /// `window` (in no particular order), then every id still in the WAL, oldest first. Returns how many. Streams: after a
    /// crash with a long WAL backlog this reads ids only, never whole events.
    pub async fn reload_ids(
        &self,
        window: Duration,
        mut remember: impl FnMut(&str),
    ) -> Result<u64, NodeError> {
        use datafusion::arrow::array::AsArray;
        let since =
            Utc::now() - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(1));
        let query = format!(
            "SELECT id FROM events WHERE time >= TIMESTAMP '{}'",
            since.format("%Y-%m-%dT%H:%M:%S")
        );
        let batches = self
            .sql
            .query_batches(&query, Vec::new(), None)
            .await
            .map_err(internal("cannot reload ids from the lake"))?;
        let mut count = 0;
        for batch in &batches {
            if let Some(ids) = batch.column(0).as_string_opt::<i32>() {
                for id in ids.iter().flatten() {
                    remember(id);
                    count += 1;
                }
            }
        }
        #[derive(serde::Deserialize)]
        struct IdOnly<'a> {
            #[serde(borrow, default)]
            id: std::borrow::Cow<'a, str>,
        }
        let from = self.lake.compacted_through().map_or(0, |s| s + 1);
        let mut cursor = match self.reader.read_from(from) {
            Ok(c) => c,
            Err(cityward_store::WalError::NotRetained { .. }) => self.reader.read_all(),
            Err(e) => return Err(NodeError::Internal(format!("cannot read the WAL: {e}"))),
        };
        while let Some((seq, bytes)) = cursor
            .next_record()
            .map_err(|e| NodeError::Internal(format!("WAL unreadable: {e}")))?
        {
            let record: IdOnly = serde_json::from_slice(bytes).map_err(|e| {
                NodeError::Internal(format!("WAL record {seq} is not an event: {e}"))
            })?;
            remember(&record.id);
            count += 1;
        }
        Ok(count)
    }

    /// Moves sealed WAL segments into the lake; with `roll`, seals the active one first.
    pub async fn compact(&self, roll: bool) -> Result<usize, NodeError> {
        let _one = self.compacting.lock().await;
        if roll && self.reader.active_segment().records > 0 {
            self.writer
                .roll()
                .await
                .map_err(|e| NodeError::Internal(format!("cannot roll the WAL: {e}")))?;
        }
        let mut compacted = 0;
        for segment in self.reader.sealed_segments() {
            let Some(last) = segment.last_seq else {
                continue;
            };
            let keep_from = self.keep_from.load(Ordering::Acquire);
            if self.lake.compacted_through().is_some_and(|c| c >= last) {
                let _ = Self::delete_compacted(&self.reader, keep_from, last);
                continue;
            }
            let reader = self.reader.clone();
            let lake = self.lake.clone();
            let seg = segment.clone();
            tokio::task::spawn_blocking(move || -> Result<(), NodeError> {
                let events = read_segment(&reader, &seg)?;
                lake.write_segment_range(seg.first_seq, last, &events)
                    .map_err(internal("compaction failed"))?;
                Self::delete_compacted(&reader, keep_from, last)
            })
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))??;
            compacted += 1;
            self.metrics
                .add("cityward_lake_compactions_total", &[], 1.0);
        }
        Ok(compacted)
    }

    /// Deletes what `policy` expires now (see [`crate::retention_policy`]); returns the
    /// number of rows deleted.
    pub async fn enforce_retention(&self, policy: &cityward_store::RetentionPolicy) -> Result<u64, NodeError> {
        let report = self
            .lake
            .apply_retention(policy, Utc::now())
            .await
            .map_err(internal("retention failed"))?;
        let rows = report.rows();
        self.metrics.add(
            "cityward_lake_retention_deleted_rows_total",
            &[],
            rows as f64,
        );
        Ok(rows)
    }

    /// Runs a read-only query over the lake and the WAL tail.
    pub async fn sql(
        &self,
        sql: &str,
        max_rows: usize,
    ) -> Result<cityward_store::QueryResult, NodeError> {
        self.sql_where(sql, max_rows, None).await
    }

    /// [`EventStore::sql`] over only the events for which the SQL condition `rows_where`
    /// holds.
    pub async fn sql_where(
        &self,
        sql: &str,
        max_rows: usize,
        rows_where: Option<&str>,
    ) -> Result<cityward_store::QueryResult, NodeError> {
        // The engine pins how far the lake reaches and asks for the WAL records above it,
        // so a compaction running meanwhile never counts a segment twice.
        let reader = self.reader.clone();
        self.sql
            .query_with_tail_where(sql, max_rows, rows_where, |through| {
                read_events(&reader, through.map_or(0, |s| s + 1))
            })
            .await
            .map_err(|e| match e.status() {
                cityward_store::Status::InvalidInput => NodeError::Invalid(e.to_string()),
                _ => NodeError::Internal(e.to_string()),
            })
    }

    /// `Err(reason)` once the WAL writer has failed.
    pub fn wal_health(&self) -> Result<(), String> {
        let stats = self.writer.stats();
        match stats.state {
            cityward_store::WriterState::Running => Ok(()),
            other => Err(format!("WAL writer is {other:?}")),
        }
    }

    /// Updates the WAL and lake gauges.
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        let w = self.writer.stats();
        m.set(
            "cityward_wal_written_bytes_total",
            &[],
            w.bytes_written as f64,
        );
        m.set("cityward_wal_records_total", &[], w.records_written as f64);
        m.set("cityward_wal_fsyncs_total", &[], w.fsyncs as f64);
        m.set(
            "cityward_wal_fsync_latency_last_microseconds",
            &[],
            w.last_fsync_us as f64,
        );
        m.set(
            "cityward_wal_fsync_latency_max_microseconds",
            &[],
            w.max_fsync_us as f64,
        );
        m.set(
            "cityward_wal_fsync_latency_avg_microseconds",
            &[],
            w.avg_fsync_us as f64,
        );
        m.set("cityward_wal_disk_bytes", &[], w.disk_bytes as f64);
        m.set("cityward_wal_segments", &[], w.segments as f64);
        let compacted = self.lake.compacted_through();
        let lag = match (w.last_durable_seq, compacted) {
            (Some(d), Some(c)) => d.saturating_sub(c),
            (Some(d), None) => d + 1,
            _ => 0,
        };
        m.set("cityward_lake_lag_records", &[], lag as f64);
        if let Ok(stats) = self.lake.stats() {
            for (kind, s) in &stats.kinds {
                m.set("cityward_lake_files", &[("kind", kind)], s.files as f64);
                m.set("cityward_lake_rows", &[("kind", kind)], s.rows as f64);
                m.set("cityward_lake_bytes", &[("kind", kind)], s.bytes as f64);
            }
        }
    }

    /// The lake.
    pub fn lake(&self) -> &Arc<Lake> {
        &self.lake
    }

    /// Flushes and closes the WAL.
    pub async fn shutdown(&self) {
        let wal = self.wal.lock().expect("wal lock").take();
        if let Some(wal) = wal {
            if let Err(e) = wal.close().await {
                tracing::error!(error = %e, "WAL did not close cleanly.");
            }
        }
    }
}

fn read_segment(
    reader: &WalReader,
    segment: &cityward_store::SegmentInfo,
) -> Result<Vec<Event>, NodeError> {
    let seg = reader
        .open_segment(segment)
        .map_err(|e| NodeError::Internal(format!("cannot read WAL segment: {e}")))?;
    let mut events = Vec::with_capacity(segment.records as usize);
    for record in seg.records() {
        let (seq, bytes) =
            record.map_err(|e| NodeError::Internal(format!("WAL segment unreadable: {e}")))?;
        events.push(decode_record(seq, bytes)?);
    }
    Ok(events)
}

fn read_events(reader: &WalReader, from: u64) -> Result<Vec<Event>, NodeError> {
    let mut cursor = match reader.read_from(from) {
        Ok(c) => c,
        Err(cityward_store::WalError::NotRetained { .. }) => reader.read_all(),
        Err(e) => return Err(NodeError::Internal(format!("cannot read the WAL: {e}"))),
    };
    let mut events = Vec::new();
    while let Some((seq, bytes)) = cursor
        .next_record()
        .map_err(|e| NodeError::Internal(format!("WAL unreadable: {e}")))?
    {
        events.push(decode_record(seq, bytes)?);
    }
    Ok(events)
}

fn decode_record(seq: u64, bytes: &[u8]) -> Result<Event, NodeError> {
    serde_json::from_slice(bytes)
        .map_err(|e| NodeError::Internal(format!("WAL record {seq} is not an event: {e}")))
}

/// Starts the compactor and the retention task.
pub fn start_background(node: Arc<Node>) -> Vec<tokio::task::JoinHandle<()>> {
    let compactor = {
        let node = node.clone();
        tokio::spawn(async move {
            // Sealed segments are compacted as soon as they appear (at full load a segment
            // seals every second or so); the active one is sealed every `compact_every`, so
            // that quiet streams reach the lake too.
            let roll_every = node.config().lake.compact_every;
            let mut last_roll = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let roll = last_roll.elapsed() >= roll_every;
                if roll {
                    last_roll = tokio::time::Instant::now();
                }
                match node.events().compact(roll).await {
                    Ok(n) if n > 0 => {
                        tracing::debug!(segments = n, "Compacted WAL segments into the lake.")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        node.metrics()
                            .add("cityward_lake_compaction_errors_total", &[], 1.0);
                        tracing::error!(error = %e, "Compaction failed; it will be retried. The events stay in the WAL.");
                    }
                }
            }
        })
    };
    let merger = {
        let node = node.clone();
        tokio::spawn(async move {
            // Each compaction writes one file per (kind, day); quiet streams would leave many
            // small files, which slow queries. Merge them now and then.
            let mut tick = tokio::time::interval(node.config().lake.merge_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = node.events().lake().merge_small_files().await {
                    tracing::error!(error = %e, "Merging small lake files failed; it will be retried.");
                }
            }
        })
    };
    let retention = tokio::spawn(async move {
        let mut tick = tokio::time::interval(node.config().lake.retention_every);
        loop {
            tick.tick().await;
            // Without the holds and the evidence a run could destroy what must stay: it
            // fails whole and is retried at the next tick.
            if let Err(e) = node.run_retention().await {
                tracing::error!(error = %e, "Retention run failed; it will be retried.");
            }
        }
    });
    vec![compactor, merger, retention]
}
