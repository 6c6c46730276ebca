//! The node's detection stage: the rule engine of `cityward-detect` on its own thread,
//! fed from the WAL, writing alerts to the state store.
//!
//! Happy path: an ingest appends to the WAL and puts the stored batch (with its sequence
//! numbers) on the node's bus; this stage takes batches in WAL order, runs the rules, and
//! stores what they raise. Every `detect.checkpoint_every` it saves the engine's state
//! with the sequence number of the next event to apply (`DATA/detect/checkpoint.json`)
//! and lets compaction delete the WAL before that point, never after it.
//!
//! Failures: a batch missing from the bus (a slow stage lags, concurrent ingests finish
//! out of order) is read back from the WAL. After a crash the stage restores the last
//! checkpoint and re-applies the WAL from its position: the alerts raised again carry
//! the same ids (derived from rule, key and evidence) and the store already has them, so
//! none is lost and none doubled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use cityward_detect::{Alert, Checkpoint, Engine, EngineConfig, EngineStats, Hotlists, Output, Rule};
use cityward_model::{City, Event};
use cityward_store::{AlertRow, StateStore, WalReader};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{broadcast, oneshot};

use crate::alert_writer::AlertWriter;
use crate::config::DetectSection;
use crate::metrics::Metrics;
use crate::node::{NodeError, StoredBatch};
use crate::storage::EventStore;

/// What the stage is told.
pub(crate) enum Msg {
    /// Events stored in the WAL.
    Batch(Arc<StoredBatch>),
    /// The bus dropped batches: read the WAL.
    Lagged,
    /// A new rule set.
    Rules(Vec<Rule>),
    /// A new city model, with the rules compiled against it.
    City(Arc<City>, Vec<Rule>),
    /// New hotlists.
    Hotlists(Hotlists),
    /// Save a checkpoint now; answer when done.
    Checkpoint(oneshot::Sender<()>),
    /// Save a checkpoint and stop.
    Stop(oneshot::Sender<()>),
}

/// A snapshot of the stage, for `GET /api/v1/detect/status`, metrics and tests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DetectStatus {
    /// Sequence number of the next WAL record to apply.
    pub next_seq: u64,
    /// The engine's watermark (RFC 3339), once events have arrived.
    pub watermark: Option<String>,
    /// Rules running.
    pub rules: usize,
    /// Counters.
    pub stats: EngineStats,
    /// When the last checkpoint was written (RFC 3339).
    pub checkpoint_at: Option<String>,
    /// How long taking the last checkpoint held the engine, ms (writing it is done on
    /// another thread).
    pub checkpoint_pause_ms: Option<f64>,
    /// The most recent late events.
    pub late_events: Vec<cityward_detect::LateEvent>,
    /// From the WAL's acknowledgement of an event to the alert it raised being stored, over
    /// the last alerts raised from live batches: milliseconds at p50, p99 and max.
    pub alert_latency_ms: Option<LatencySummary>,
    /// With `[scale]`: this process's member id and the partitions it detects on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<crate::shards::ScaleStatus>,
}

/// Percentiles of a latency sample.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    /// Alerts in the sample.
    pub alerts: usize,
    /// Median, ms.
    pub p50: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Largest, ms.
    pub max: f64,
}

/// The node's detection: this process detects on everything it takes in (the WAL stage
/// here), or shares detection with the node's other processes (`[scale]`).
pub(crate) enum Detection {
    Wal(WalDetection),
    Shared(Arc<crate::shards::SharedDetection>),
}

impl Detection {
    /// Replaces the rule set (unchanged rules keep their state); the node's other
    /// processes read it again from the shared store.
    pub(crate) fn set_rules(&self, rules: Vec<Rule>) {
        match self {
            Detection::Wal(d) => d.set_rules(rules),
            Detection::Shared(d) => {
                d.set_rules(rules);
                d.announce("rules");
            }
        }
    }

    /// Replaces the city model: rules that read zones, corridors or roads start over.
    pub(crate) fn set_city(&self, city: Arc<City>, rules: Vec<Rule>) {
        match self {
            Detection::Wal(d) => d.set_city(city, rules),
            Detection::Shared(d) => d.set_city(city, rules),
        }
    }

    /// Replaces the hotlists (at the node's other processes too).
    pub(crate) fn set_hotlists(&self, hotlists: Hotlists) {
        match self {
            Detection::Wal(d) => d.set_hotlists(hotlists),
            Detection::Shared(d) => {
                d.set_hotlists(hotlists);
                d.announce("hotlists");
            }
        }
    }

    /// A snapshot of the stage.
    pub(crate) fn status(&self) -> DetectStatus {
        match self {
            Detection::Wal(d) => d.status(),
            Detection::Shared(d) => d.status(),
        }
    }

    /// Saves a checkpoint now.
    pub(crate) async fn checkpoint(&self) {
        match self {
            Detection::Wal(d) => d.checkpoint().await,
            Detection::Shared(d) => d.checkpoint().await,
        }
    }

    /// Saves a checkpoint and stops.
    pub(crate) async fn stop(&self) {
        match self {
            Detection::Wal(d) => d.stop().await,
            Detection::Shared(d) => d.stop().await,
        }
    }
}

/// The handle of the WAL stage.
pub(crate) struct WalDetection {
    tx: SyncSender<Msg>,
    status: Arc<Mutex<DetectStatus>>,
    stopped: Arc<AtomicBool>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    next_seq: u64,
    written_at: String,
    engine: Checkpoint,
}

pub(crate) struct StageParts {
    pub config: DetectSection,
    pub data_dir: PathBuf,
    pub city: Arc<City>,
    pub rules: Vec<Rule>,
    pub hotlists: Hotlists,
    pub state: Arc<dyn StateStore>,
    pub metrics: Arc<Metrics>,
    pub bus: broadcast::Receiver<Arc<StoredBatch>>,
    /// Routes the alerts raised before they are stored.
    pub desk: Arc<crate::desk::Desk>,
}

impl WalDetection {
    /// Starts the stage; `events` gives it the WAL and holds compaction back.
    pub(crate) fn start(parts: StageParts, events: &EventStore) -> Result<WalDetection, NodeError> {
        let dir = parts.data_dir.join("detect");
        std::fs::create_dir_all(&dir).map_err(|e| {
            NodeError::Internal(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join("checkpoint.json");
        let mut engine = Engine::new(
            EngineConfig {
                lateness: parts.config.lateness,
                max_evidence: parts.config.max_evidence,
                ..EngineConfig::default()
            },
            parts.city.clone(),
            parts.rules,
        );
        engine.set_hotlists(parts.hotlists);
        let mut next_seq = 0;
        if let Some(saved) = read_checkpoint(&path)? {
            match engine.restore(&saved.engine) {
                Ok(()) => {
                    next_seq = saved.next_seq;
                    tracing::info!(next_seq, "Detection resumes from its checkpoint.");
                }
                Err(e) => tracing::warn!(error = %e, "Detection checkpoint not restored; rules start with empty state."),
            }
        } else {
            // A first start: apply what the WAL still holds.
            next_seq = first_retained(events.wal_reader()).unwrap_or(0);
        }
        events.keep_wal_from(next_seq);
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let status = Arc::new(Mutex::new(DetectStatus::default()));
        let stopped = Arc::new(AtomicBool::new(false));
        let mut stage = Stage {
            engine,
            next_seq,
            path,
            reader: events.wal_reader().clone(),
            alerts: AlertWriter::start(parts.state, parts.desk, parts.metrics.clone(), parts.config.max_evidence)?,
            metrics: parts.metrics,
            status: status.clone(),
            config: parts.config,
            pending: BTreeMap::new(),
            pending_since: None,
            last_checkpoint: Instant::now(),
            last_event: Instant::now(),
            outputs: Vec::new(),
            keep: events.keep_handle(),
            writer: None,
            last_status: Instant::now(),
            batch_stored_at: None,
            has_rules: true,
        };
        stage.has_rules = stage.engine.rules().next().is_some();
        let stop_flag = stopped.clone();
        std::thread::Builder::new()
            .name("cityward-detect".into())
            .spawn(move || {
                stage.run(rx);
                stop_flag.store(true, Ordering::Release);
            })
            .map_err(|e| NodeError::Internal(format!("cannot start the detection thread: {e}")))?;
        // Forward the bus to the stage. A thread, so that a busy stage holds back here (the
        // bounded channel is full): the bus then drops batches for this subscriber, which
        // the stage reads back from the WAL. Memory stays bounded however far behind it is.
        let forward = tx.clone();
        let mut bus = parts.bus;
        std::thread::Builder::new()
            .name("cityward-detect-feed".into())
            .spawn(move || loop {
                let msg = match bus.blocking_recv() {
                    Ok(batch) => Msg::Batch(batch),
                    Err(broadcast::error::RecvError::Lagged(_)) => Msg::Lagged,
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if forward.send(msg).is_err() {
                    break;
                }
            })
            .map_err(|e| NodeError::Internal(format!("cannot start the detection feed: {e}")))?;
        Ok(WalDetection {
            tx,
            status,
            stopped,
        })
    }

    /// Replaces the rule set (unchanged rules keep their state).
    pub(crate) fn set_rules(&self, rules: Vec<Rule>) {
        let _ = self.tx.send(Msg::Rules(rules));
    }

    /// Replaces the city model: rules that read zones, corridors or roads start over.
    pub(crate) fn set_city(&self, city: Arc<City>, rules: Vec<Rule>) {
        let _ = self.tx.send(Msg::City(city, rules));
    }

    /// Replaces the hotlists.
    pub(crate) fn set_hotlists(&self, hotlists: Hotlists) {
        let _ = self.tx.send(Msg::Hotlists(hotlists));
    }

    /// A snapshot of the stage.
    pub(crate) fn status(&self) -> DetectStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// Saves a checkpoint now.
    pub(crate) async fn checkpoint(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Checkpoint(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Saves a checkpoint and stops the stage.
    pub(crate) async fn stop(&self) {
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Stop(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// The stored row of a newly raised alert (status `new`, the alert itself as the body).
pub(crate) fn new_alert_row(alert: &Alert, now: chrono::DateTime<Utc>) -> AlertRow {
    AlertRow {
        id: alert.id.clone(),
        rule: alert.rule.clone(),
        key: alert.key.clone(),
        status: "new".into(),
        severity: alert.severity.as_str().into(),
        category: alert.category.clone(),
        time: alert.time,
        grid: alert.grid.clone(),
        body: serde_json::to_value(alert).unwrap_or(Value::Null),
        updated_at: now,
        scopes: Vec::new(),
        class: "incident".into(),
        incident: None,
    }
}

/// Applies a repeat or a clear to a stored alert's row.
pub(crate) fn apply_output(row: &mut AlertRow, output: &Output, max_evidence: usize, now: chrono::DateTime<Utc>) {
    row.updated_at = now;
    let Some(body) = row.body.as_object_mut() else { return };
    match output {
        Output::Repeated { time, count, evidence, .. } => {
            body.insert("count".into(), json!(count));
            body.insert("last_fired_at".into(), json!(cityward_model::format_time(time)));
            let list = body.entry("evidence").or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut() {
                for id in evidence {
                    if list.len() < max_evidence && !list.iter().any(|v| v == id) {
                        list.push(json!(id));
                    }
                }
            }
        }
        Output::Cleared { time, .. } => {
            body.entry("cleared_at")
                .or_insert_with(|| json!(cityward_model::format_time(time)));
        }
        Output::Raised(_) => {}
    }
}

/// The sequence number of the oldest record the WAL still holds.
pub(crate) fn first_retained(reader: &WalReader) -> Option<u64> {
    reader
        .sealed_segments()
        .first()
        .map(|s| s.first_seq)
        .or_else(|| Some(reader.active_segment().first_seq))
}

fn read_checkpoint(path: &Path) -> Result<Option<CheckpointFile>, NodeError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            NodeError::Internal(format!(
                "the detection checkpoint {} is unreadable: {e}; move it away to start detection afresh from the WAL",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::Internal(format!("cannot read {}: {e}", path.display()))),
    }
}

struct Stage {
    engine: Engine,
    next_seq: u64,
    path: PathBuf,
    reader: WalReader,
    metrics: Arc<Metrics>,
    status: Arc<Mutex<DetectStatus>>,
    /// Routes and stores the alerts raised, on its own thread.
    alerts: AlertWriter,
    config: DetectSection,
    /// Batches that came before an earlier one, by first sequence number.
    pending: BTreeMap<u64, Arc<StoredBatch>>,
    pending_since: Option<Instant>,
    last_checkpoint: Instant,
    last_event: Instant,
    outputs: Vec<Output>,
    keep: Arc<std::sync::atomic::AtomicU64>,
    /// The checkpoint being written, if any.
    writer: Option<std::thread::JoinHandle<()>>,
    /// When the counters in the status were last refreshed.
    last_status: Instant,
    /// When the batch being applied was stored (None while reading the WAL back).
    batch_stored_at: Option<Instant>,
    /// Whether any rule runs (without, events only move the position).
    has_rules: bool,
}

/// How long a batch may wait for an earlier one before the gap is read from the WAL.
const REORDER_WAIT: Duration = Duration::from_millis(50);

impl Stage {
    fn run(&mut self, rx: Receiver<Msg>) {
        self.catch_up();
        self.flush();
        loop {
            match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(Msg::Batch(batch)) => {
                    self.take(batch);
                    // Apply whatever else is queued before storing outputs.
                    while let Ok(msg) = rx.try_recv() {
                        if !self.handle_other(msg) {
                            return;
                        }
                    }
                }
                Ok(msg) => {
                    if !self.handle_other(msg) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.checkpoint(true);
                    return;
                }
            }
            if self.pending_since.is_some_and(|t| t.elapsed() > REORDER_WAIT) {
                self.catch_up();
            }
            self.idle_tick();
            self.flush();
            if self.last_status.elapsed() >= Duration::from_secs(1) {
                self.publish_status(true);
            }
            let every = if self.has_rules { self.config.checkpoint_every } else { Duration::from_secs(1) };
            if self.last_checkpoint.elapsed() >= every {
                self.checkpoint(false);
            }
        }
    }

    /// Handles a message; false to stop.
    fn handle_other(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Batch(batch) => self.take(batch),
            Msg::Lagged => self.catch_up(),
            Msg::Rules(rules) => {
                self.flush();
                self.engine.set_rules(rules);
                self.rules_changed();
            }
            Msg::City(city, rules) => {
                self.flush();
                self.engine.set_city(city, rules);
                self.rules_changed();
            }
            Msg::Hotlists(h) => self.engine.set_hotlists(h),
            Msg::Checkpoint(done) => {
                self.checkpoint(true);
                let _ = done.send(());
            }
            Msg::Stop(done) => {
                self.checkpoint(true);
                let _ = done.send(());
                return false;
            }
        }
        true
    }

    fn rules_changed(&mut self) {
        let had_rules = std::mem::replace(&mut self.has_rules, self.engine.rules().next().is_some());
        if self.has_rules && !had_rules {
            // From now on the WAL after this point is needed again.
            self.keep.store(self.next_seq, Ordering::Release);
        }
    }

    /// Applies a batch from the bus if it is next; holds it if an earlier one is missing.
    fn take(&mut self, batch: Arc<StoredBatch>) {
        let end = batch.first_seq + batch.events.len() as u64;
        if end <= self.next_seq {
            return; // already applied (read from the WAL)
        }
        if batch.first_seq > self.next_seq {
            self.pending.insert(batch.first_seq, batch);
            self.pending_since.get_or_insert_with(Instant::now);
            if self.pending.len() > 64 {
                self.catch_up();
            }
            return;
        }
        self.apply_batch(&batch);
        // Batches that were waiting for this one.
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > self.next_seq {
                break;
            }
            let b = entry.remove();
            self.apply_batch(&b);
        }
        if self.pending.is_empty() {
            self.pending_since = None;
        }
    }

    fn apply_batch(&mut self, batch: &StoredBatch) {
        let skip = self.next_seq.saturating_sub(batch.first_seq) as usize;
        // A node without rules only keeps its position (rules added later start from here).
        if self.has_rules {
            for event in batch.events.iter().skip(skip) {
                self.engine.process(event);
            }
        }
        // Alerts of this batch are stored now, so their latency counts from its storing.
        self.batch_stored_at = Some(batch.stored_at);
        self.flush();
        self.batch_stored_at = None;
        self.next_seq = self.next_seq.max(batch.first_seq + batch.events.len() as u64);
        self.last_event = Instant::now();
        self.metrics.add("cityward_detect_events_total", &[], (batch.events.len() - skip.min(batch.events.len())) as f64);
    }

    /// Applies every durable WAL record from `next_seq` on.
    fn catch_up(&mut self) {
        let mut cursor = match self.reader.read_from(self.next_seq) {
            Ok(c) => c,
            Err(cityward_store::WalError::NotRetained { .. }) => {
                if self.has_rules {
                    tracing::error!(next_seq = self.next_seq, "WAL records detection had not applied were deleted; detection continues from the oldest record left.");
                }
                self.reader.read_all()
            }
            Err(e) => {
                tracing::error!(error = %e, "Detection cannot read the WAL; retrying.");
                return;
            }
        };
        let mut n = 0u64;
        loop {
            match cursor.next_record() {
                Ok(Some((seq, bytes))) => {
                    if seq < self.next_seq {
                        continue;
                    }
                    if self.has_rules {
                        match serde_json::from_slice::<Event>(bytes) {
                            Ok(event) => self.engine.process(&event),
                            Err(e) => tracing::error!(seq, error = %e, "WAL record is not an event; detection skips it."),
                        }
                    }
                    self.next_seq = seq + 1;
                    n += 1;
                    if n % 8192 == 0 {
                        self.flush();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "Detection stopped reading the WAL at an unreadable record.");
                    break;
                }
            }
        }
        if n > 0 {
            self.metrics.add("cityward_detect_events_total", &[], n as f64);
            self.last_event = Instant::now();
        }
        self.pending.retain(|first, b| *first + b.events.len() as u64 > self.next_seq);
        let waiting: Vec<Arc<StoredBatch>> = std::mem::take(&mut self.pending).into_values().collect();
        for b in waiting {
            if b.first_seq <= self.next_seq {
                self.apply_batch(&b);
            } else {
                self.pending.insert(b.first_seq, b);
            }
        }
        self.pending_since = (!self.pending.is_empty()).then(Instant::now);
    }

    /// With no events for a while, event time follows the clock so that timers (absence,
    /// dwell) still fire.
    fn idle_tick(&mut self) {
        if self.config.clock != "wall" {
            return;
        }
        let idle = self.config.lateness.max(Duration::from_secs(1)) * 2;
        if self.last_event.elapsed() >= idle {
            let now = Utc::now() - chrono::Duration::from_std(self.config.lateness).unwrap_or_default();
            self.engine.advance_to(now);
        }
    }

    /// Hands the engine's outputs to the alert writer.
    fn flush(&mut self) {
        self.engine.drain_into(&mut self.outputs);
        if !self.outputs.is_empty() {
            self.alerts.write(std::mem::take(&mut self.outputs), self.batch_stored_at);
        }
        self.publish_status(false);
    }

    /// Saves the engine's state with `next_seq`: the state is taken here (between events),
    /// and written on another thread (temp file, fsync, rename), after which compaction may
    /// delete the WAL before `next_seq`. With `wait`, returns once it is on disk; without,
    /// skips the round while the previous write is still going.
    fn checkpoint(&mut self, wait: bool) {
        if let Some(writer) = self.writer.take() {
            if writer.is_finished() || wait {
                let _ = writer.join();
            } else {
                self.writer = Some(writer);
                return;
            }
        }
        self.flush();
        self.last_checkpoint = Instant::now();
        // Taken here, between events; turned into JSON and written on the writer thread.
        let snapshot = self.engine.snapshot();
        let next_seq = self.next_seq;
        // The position may be recorded only once the alerts raised before it are stored.
        let alerts_stored = self.alerts.barrier();
        let pause = self.last_checkpoint.elapsed().as_secs_f64();
        self.metrics.set("cityward_detect_checkpoint_pause_seconds", &[], pause);
        self.status.lock().expect("status lock").checkpoint_pause_ms = Some(pause * 1000.0);
        let (path, keep, status) = (self.path.clone(), self.keep.clone(), self.status.clone());
        // Without rules there is no state to rebuild from the WAL: keep none of it back.
        let keep_from = if self.has_rules { self.next_seq } else { u64::MAX };
        let writer = std::thread::spawn(move || {
            if alerts_stored.recv().is_err() {
                tracing::error!(next_seq, "Detection checkpoint not written: the alerts before it were not all stored; the WAL is kept.");
                return;
            }
            let file = CheckpointFile {
                version: 1,
                next_seq,
                written_at: cityward_model::format_time(&Utc::now()),
                engine: snapshot.into_checkpoint(),
            };
            let tmp = path.with_extension("json.tmp");
            let written = (|| -> std::io::Result<()> {
                let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
                let mut f = std::fs::File::create(&tmp)?;
                std::io::Write::write_all(&mut f, &bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok(())
            })();
            match written {
                Ok(()) => {
                    keep.store(keep_from, Ordering::Release);
                    status.lock().expect("status lock").checkpoint_at = Some(file.written_at);
                }
                Err(e) => tracing::error!(path = %path.display(), error = %e, "Detection checkpoint not written; the WAL is kept until one is."),
            }
        });
        if wait {
            let _ = writer.join();
        } else {
            self.writer = Some(writer);
        }
        self.publish_status(true);
    }

    fn publish_status(&mut self, full: bool) {
        let mut status = self.status.lock().expect("status lock");
        status.next_seq = self.next_seq;
        let watermark = self.engine.watermark();
        status.watermark = watermark.map(|w| cityward_model::format_time(&w));
        if let Some(w) = watermark {
            let lag = (Utc::now() - w).num_milliseconds() as f64 / 1000.0;
            self.metrics.set("cityward_detect_watermark_lag_seconds", &[], lag);
        }
        if full || status.rules == 0 {
            self.last_status = Instant::now();
            status.rules = self.engine.rules().count();
            status.stats = self.engine.stats();
            status.late_events = self.engine.late_events().cloned().collect();
            if let Some(latency) = self.alerts.latency() {
                status.alert_latency_ms = Some(latency);
            }
            self.metrics.set("cityward_detect_late_events", &[], status.stats.late as f64);
            self.metrics.set("cityward_detect_timers", &[], status.stats.timers as f64);
        }
    }
}
