//! The alert writer: routes and stores what the rule engine outputs, on a thread of its
//! own, so that detection and persistence each have a core.
//!
//! Happy path: the detection stage hands over the outputs of each batch it applied; the
//! writer takes whatever has queued up since its last write, routes the new alerts
//! (owner, deadlines, scopes), stores raised, repeated and cleared alerts in one state
//! transaction, and tells the live stream and the webhooks.
//!
//! Checkpoints: the detection stage may only record a WAL position once every alert raised
//! before it is stored, or a crash between the two would lose those alerts. A checkpoint
//! therefore asks for a [`AlertWriter::barrier`], answered when everything handed over
//! before it is written; the checkpoint file is written after that answer. On a crash the
//! WAL after the last checkpoint is applied again and the store already holds the alerts
//! raised again (same ids), so none is lost and none doubled.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use chrono::Utc;
use cityward_detect::Output;
use cityward_store::{AlertRow, StateStore};

use crate::desk::Desk;
use crate::detect::{apply_output, new_alert_row, LatencySummary};
use crate::metrics::Metrics;
use crate::node::NodeError;

/// Outputs held at most before the stage waits for the writer (backpressure: detection
/// then reads what it missed from the WAL, so memory stays bounded).
const QUEUE: usize = 256;
/// Outputs written at most in one transaction.
const MAX_WRITE: usize = 8192;
/// Latencies kept for the status.
const LATENCY_SAMPLE: usize = 10_000;

enum Job {
    /// What the engine output for one batch, and when that batch was acknowledged by the
    /// WAL (None while reading the WAL back after a restart).
    Outputs(Vec<Output>, Option<Instant>),
    /// Answer once everything before is stored.
    Barrier(std::sync::mpsc::Sender<()>),
}

/// The handle the detection stage keeps; dropping it stores what is queued and stops the
/// thread.
pub(crate) struct AlertWriter {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    latencies: Arc<Mutex<VecDeque<f64>>>,
}

impl AlertWriter {
    /// Starts the writer thread.
    pub(crate) fn start(
        state: Arc<dyn StateStore>,
        desk: Arc<Desk>,
        metrics: Arc<Metrics>,
        max_evidence: usize,
    ) -> Result<AlertWriter, NodeError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let latencies = Arc::new(Mutex::new(VecDeque::new()));
        let mut worker = Worker { state, desk, metrics, max_evidence, latencies: latencies.clone(), failed: false };
        let thread = std::thread::Builder::new()
            .name("cityward-alerts".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| NodeError::Internal(format!("cannot start the alert writer thread: {e}")))?;
        Ok(AlertWriter { tx: Some(tx), thread: Some(thread), latencies })
    }

    /// Hands over the outputs of one batch.
    pub(crate) fn write(&self, outputs: Vec<Output>, stored_at: Option<Instant>) {
        if let Some(tx) = &self.tx {
            if tx.send(Job::Outputs(outputs, stored_at)).is_err() {
                tracing::error!("The alert writer has stopped; alerts are not stored until the node restarts (the WAL keeps their events).");
            }
        }
    }

    /// A receiver answered once every output handed over before this call is stored;
    /// it fails if the writer died first.
    pub(crate) fn barrier(&self) -> std::sync::mpsc::Receiver<()> {
        let (done, wait) = std::sync::mpsc::channel();
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job::Barrier(done));
        }
        wait
    }

    /// From the WAL's acknowledgement of an event to its alert stored, over the last
    /// alerts raised from live batches.
    pub(crate) fn latency(&self) -> Option<LatencySummary> {
        let sample = self.latencies.lock().expect("latency lock");
        if sample.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = sample.iter().copied().collect();
        drop(sample);
        sorted.sort_by(|a, b| a.total_cmp(b));
        let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p) as usize];
        Some(LatencySummary { alerts: sorted.len(), p50: at(0.5), p99: at(0.99), max: sorted[sorted.len() - 1] })
    }
}

impl Drop for AlertWriter {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker {
    state: Arc<dyn StateStore>,
    desk: Arc<Desk>,
    metrics: Arc<Metrics>,
    max_evidence: usize,
    latencies: Arc<Mutex<VecDeque<f64>>>,
    /// A write failed: its alerts are not stored, so no checkpoint may pass them (barriers
    /// go unanswered; after a restart the WAL from the last checkpoint raises them again).
    failed: bool,
}

impl Worker {
    fn run(&mut self, rx: Receiver<Job>) {
        let mut outputs: Vec<(Output, Option<Instant>)> = Vec::new();
        while let Ok(job) = rx.recv() {
            let mut barriers = Vec::new();
            let mut next = Some(job);
            // Everything queued meanwhile goes into the same transaction.
            while let Some(job) = next.take() {
                match job {
                    Job::Outputs(batch, stored_at) => outputs.extend(batch.into_iter().map(|o| (o, stored_at))),
                    Job::Barrier(done) => barriers.push(done),
                }
                if outputs.len() < MAX_WRITE {
                    next = rx.try_recv().ok();
                }
            }
            if !outputs.is_empty() {
                self.store(std::mem::take(&mut outputs));
            }
            if !self.failed {
                for done in barriers {
                    let _ = done.send(());
                }
            }
        }
    }

    /// One transaction for all `outputs` (an alert raised and repeated or cleared in the
    /// same write is stored once, as it ends up).
    fn store(&mut self, outputs: Vec<(Output, Option<Instant>)>) {
        let now = Utc::now();
        // Actions and the deadline clock also rewrite alert rows: one writer at a time.
        let desk = self.desk.clone();
        let _writing = desk.write_lock();
        let mut inserts: Vec<AlertRow> = Vec::new();
        let mut acknowledged: Vec<Option<Instant>> = Vec::new();
        let mut pending: HashMap<String, usize> = HashMap::new();
        let mut updates: Vec<AlertRow> = Vec::new();
        let mut updating: HashMap<String, usize> = HashMap::new();
        // Repeats and clears applied to a row about to be inserted, by its index: if the
        // row turns out to be stored already (raised again while re-applying the WAL after
        // a restart), they are applied to the stored row instead.
        let mut followups: HashMap<usize, Vec<Output>> = HashMap::new();
        for (output, stored_at) in outputs {
            match output {
                Output::Raised(alert) => {
                    pending.insert(alert.id.clone(), inserts.len());
                    let mut row = new_alert_row(&alert, now);
                    desk.route_new(&mut row, now);
                    inserts.push(row);
                    acknowledged.push(stored_at);
                }
                other => {
                    let id = other.alert_id().to_string();
                    let row = if let Some(&i) = pending.get(&id) {
                        followups.entry(i).or_default().push(other.clone());
                        &mut inserts[i]
                    } else {
                        if !updating.contains_key(&id) {
                            match self.state.alert(&id) {
                                Ok(Some(row)) => {
                                    updating.insert(id.clone(), updates.len());
                                    updates.push(row);
                                }
                                Ok(None) => continue,
                                Err(e) => {
                                    tracing::error!(alert = %id, error = %e, "Alert could not be read for an update.");
                                    continue;
                                }
                            }
                        }
                        &mut updates[updating[&id]]
                    };
                    apply_output(row, &other, self.max_evidence, now);
                }
            }
        }
        match self.state.write_alerts(&inserts, &updates) {
            Ok(inserted) => {
                // Raised again while re-applying the WAL after a restart: already stored.
                let inserted: HashSet<String> = inserted.into_iter().collect();
                let mut kept = Vec::with_capacity(inserted.len());
                let mut sample = self.latencies.lock().expect("latency lock");
                let mut late_updates = Vec::new();
                for (i, (row, stored_at)) in inserts.into_iter().zip(acknowledged).enumerate() {
                    if !inserted.contains(&row.id) {
                        if let Some(outputs) = followups.remove(&i) {
                            late_updates.push((row.id, outputs));
                        }
                        continue;
                    }
                    if let Some(at) = stored_at {
                        if sample.len() == LATENCY_SAMPLE {
                            sample.pop_front();
                        }
                        sample.push_back(at.elapsed().as_secs_f64() * 1000.0);
                    }
                    kept.push(row);
                }
                drop(sample);
                if !kept.is_empty() {
                    self.metrics.add("cityward_detect_alerts_raised_total", &[], kept.len() as f64);
                    desk.stored_new(&kept);
                }
                for row in &updates {
                    desk.publish("updated", row);
                }
                if !late_updates.is_empty() {
                    self.update_stored(late_updates, now);
                }
            }
            Err(e) => self.fail(&e, inserts.len(), updates.len()),
        }
    }

    /// Applies repeats and clears to alerts already stored (the write-lock is held).
    fn update_stored(&mut self, outputs: Vec<(String, Vec<Output>)>, now: chrono::DateTime<Utc>) {
        let mut rows = Vec::with_capacity(outputs.len());
        for (id, outputs) in outputs {
            match self.state.alert(&id) {
                Ok(Some(mut row)) => {
                    for output in &outputs {
                        apply_output(&mut row, output, self.max_evidence, now);
                    }
                    rows.push(row);
                }
                Ok(None) => {}
                Err(e) => tracing::error!(alert = %id, error = %e, "Alert could not be read for an update."),
            }
        }
        match self.state.write_alerts(&[], &rows) {
            Ok(_) => {
                for row in &rows {
                    self.desk.publish("updated", row);
                }
            }
            Err(e) => self.fail(&e, 0, rows.len()),
        }
    }

    fn fail(&mut self, e: &cityward_store::StateError, alerts: usize, updates: usize) {
        self.failed = true;
        tracing::error!(error = %e, alerts, updates, "Alerts could not be stored; detection writes no checkpoint from now on, so a restart raises them again from the WAL.");
    }
}
