//! Detection shared by several processes of one node (`[scale] enabled`).
//!
//! Every process takes events in as usual (WAL, lake) and its **publisher** puts them on
//! the node's JetStream event stream, one subject per partition; the partition is a hash
//! of the event's source (or grid). Each process detects on the partitions it holds the
//! lease of, with one rule engine per partition, so the rule state of a key lives in
//! exactly one process. The **control** task renews the leases and moves partitions when
//! a process joins or leaves: the process giving a partition up saves its engine and its
//! stream position in the shared state store (PostgreSQL), then releases the lease; the
//! one taking it restores that and reads the stream on from there.
//!
//! No alert lost, none doubled: a partition's state is saved only once the alerts raised
//! before it are stored. If a process dies, its leases run out and the others take its
//! partitions from their last saved state, reading the stream again from there; the
//! alerts raised again carry the same ids (rule, key, evidence) and the store has them.
//! An event published twice (a publisher restarting after a crash publishes again from its
//! last recorded WAL position) is applied once: each partition remembers, per publishing
//! process, the last WAL sequence number it applied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use cityward_detect::{Checkpoint, Engine, EngineConfig, EngineStats, Hotlists, Output, Rule};
use cityward_model::{City, Event};
use cityward_store::StateStore;
use cityward_tier::shard::{ShardConfig, Shards};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::alert_writer::AlertWriter;
use crate::config::{DetectSection, ScaleSection};
use crate::detect::{DetectStatus, StageParts};
use crate::metrics::Metrics;
use crate::node::{Node, NodeError, StoredBatch};

/// A published message is closed once its events take this much (so it stays well under
/// NATS's default limit of 1 MiB: one event more at most).
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// What the detection thread is told.
enum Msg {
    /// This process now holds partition `p`; its saved state, if any.
    Take(u32, Option<Box<PartitionState>>),
    /// Messages of partition `p`, decoded, with their stream sequence numbers.
    Events(u32, u64, PartitionBatch),
    /// Save partition `p` and give it up; answer when saved.
    Release(u32, oneshot::Sender<()>),
    /// Partition `p`'s lease was lost: drop it without saving (its new owner goes on from
    /// the last saved state).
    Lost(u32),
    Rules(Vec<Rule>),
    City(Arc<City>, Vec<Rule>),
    Hotlists(Hotlists),
    /// Save every partition now; answer when done.
    Checkpoint(oneshot::Sender<()>),
    /// Save every partition and stop.
    Stop(oneshot::Sender<()>),
    /// Time passes (timers, checkpoints, status).
    Tick,
}

/// One published message: events of one partition from one process's WAL (written by
/// hand in [`publish_round`], event by event, in this shape).
#[derive(Deserialize)]
struct PartitionBatch {
    /// The publishing process's member id.
    member: String,
    /// WAL sequence number of each event in that process.
    seqs: Vec<u64>,
    events: Vec<Event>,
}

/// What is saved of a partition in the state store.
#[derive(Serialize, Deserialize)]
pub(crate) struct PartitionState {
    version: u32,
    /// The stream sequence number to read on from.
    next_stream_seq: u64,
    /// Per publishing process, the WAL sequence number after the last one applied.
    next_wal_seq: BTreeMap<String, u64>,
    written_at: String,
    written_by: String,
    engine: Checkpoint,
}

/// The state-store key of partition `p`'s saved state.
fn state_key(group: &str, p: u32) -> String {
    format!("scale.{group}.partition.{p}")
}

/// Shared detection's handle, kept by the node.
pub(crate) struct SharedDetection {
    tx: mpsc::Sender<Msg>,
    shards: Arc<Shards>,
    state: Arc<dyn StateStore>,
    status: Arc<Mutex<DetectStatus>>,
    /// Partitions held: lease revision and the task reading the partition.
    held: tokio::sync::Mutex<BTreeMap<u32, (u64, tokio::task::JoinHandle<()>)>>,
    stopped: AtomicBool,
    config: ScaleSection,
}


impl SharedDetection {
    /// Connects to the group's stream and starts the detection thread; partitions are
    /// taken by [`run`], once the node runs.
    pub(crate) async fn start(parts: StageParts, scale: ScaleSection, node_name: String) -> Result<SharedDetection, NodeError> {
        let member = match scale.member.as_str() {
            "" => member_id(&parts.data_dir, &node_name)?,
            m => m.to_string(),
        };
        let shards = Shards::open(ShardConfig {
            group: node_name.clone(),
            member: member.clone(),
            nats: scale.nats.clone(),
            partitions: scale.partitions,
            lease: scale.lease,
            keep: scale.keep,
            max_bytes: if scale.max_bytes == 0 { -1 } else { scale.max_bytes as i64 },
        })
        .await
        .map_err(|e| NodeError::Unavailable(format!("[scale]: {e}")))?;
        let (tx, rx) = mpsc::channel(256);
        let status = Arc::new(Mutex::new(DetectStatus::default()));
        let stage = Stage {
            partitions: BTreeMap::new(),
            rules: parts.rules,
            city: parts.city,
            hotlists: parts.hotlists,
            alerts: AlertWriter::start(parts.state.clone(), parts.desk, parts.metrics.clone(), parts.config.max_evidence)?,
            state: parts.state.clone(),
            metrics: parts.metrics,
            status: status.clone(),
            group: node_name,
            member,
            config: parts.config,
            last_checkpoint: Instant::now(),
            last_status: Instant::now(),
            outputs: Vec::new(),
        };
        std::thread::Builder::new()
            .name("cityward-detect-shared".into())
            .spawn(move || stage.run(rx))
            .map_err(|e| NodeError::Internal(format!("cannot start the detection thread: {e}")))?;
        // Time passes for the thread even when no message comes (timers, checkpoints).
        let ticks = tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                if let Err(mpsc::error::TrySendError::Closed(_)) = ticks.try_send(Msg::Tick) {
                    break;
                }
            }
        });
        Ok(SharedDetection {
            tx,
            shards: Arc::new(shards),
            state: parts.state,
            status,
            held: tokio::sync::Mutex::new(BTreeMap::new()),
            stopped: AtomicBool::new(false),
            config: scale,
        })
    }

    pub(crate) fn set_rules(&self, rules: Vec<Rule>) {
        let _ = self.tx.try_send(Msg::Rules(rules)).map_err(|_| tracing::error!("Shared detection is not taking messages; the rule change waits for a restart."));
    }

    pub(crate) fn set_city(&self, city: Arc<City>, rules: Vec<Rule>) {
        let _ = self.tx.try_send(Msg::City(city, rules)).map_err(|_| tracing::error!("Shared detection is not taking messages; the city change waits for a restart."));
    }

    pub(crate) fn set_hotlists(&self, hotlists: Hotlists) {
        let _ = self.tx.try_send(Msg::Hotlists(hotlists)).map_err(|_| tracing::error!("Shared detection is not taking messages; the hotlist change waits for a restart."));
    }

    pub(crate) fn status(&self) -> DetectStatus {
        self.status.lock().expect("status lock").clone()
    }

    pub(crate) async fn checkpoint(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Checkpoint(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Saves every partition, gives the leases up and leaves the group, so the other
    /// processes take the partitions at once rather than after a lease.
    pub(crate) async fn stop(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Stop(done)).await.is_ok() {
            let _ = wait.await;
        }
        let mut held = self.held.lock().await;
        for (p, (revision, reader)) in std::mem::take(&mut *held) {
            reader.abort();
            self.shards.release(p, revision).await;
        }
        self.shards.leave().await;
    }

    /// Takes, keeps and hands on partitions until the node stops.
    async fn control(self: &Arc<Self>, node: Arc<Node>) {
        let every = self.config.lease / 3;
        let mut last_error: Option<String> = None;
        while !self.stopped.load(Ordering::Acquire) {
            if let Err(e) = self.balance().await {
                let e = e.to_string();
                if last_error.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "Shared detection cannot reach its NATS server; keeps the partitions it holds while their leases last.");
                }
                last_error = Some(e);
            } else {
                last_error = None;
            }
            let held: Vec<u32> = self.held.lock().await.keys().copied().collect();
            node.metrics().set("cityward_scale_partitions_held", &[], held.len() as f64);
            self.status.lock().expect("status lock").scale = Some(ScaleStatus {
                member: self.shards.config().member.clone(),
                partitions: self.config.partitions,
                held,
            });
            tokio::time::sleep(every).await;
        }
    }

    /// One round: say alive, renew what is held, give up what another member should own,
    /// take what this one should.
    async fn balance(self: &Arc<Self>) -> Result<(), cityward_tier::LinkError> {
        self.shards.heartbeat().await?;
        let wanted = self.shards.wanted().await?;
        let mut held = self.held.lock().await;
        // Renewed all at once: one round trip, however many partitions are held, so that a
        // busy process still renews well within its lease.
        let keep: Vec<(u32, u64)> = held.iter().filter(|(p, _)| wanted.contains(p)).map(|(p, (rev, _))| (*p, *rev)).collect();
        let renewed = futures_util::future::join_all(keep.iter().map(|(p, rev)| self.shards.renew(*p, *rev))).await;
        for ((p, _), result) in keep.iter().zip(renewed) {
            match result? {
                Some(revision) => held.get_mut(p).expect("held").0 = revision,
                None => {
                    let (_, reader) = held.remove(p).expect("held");
                    reader.abort();
                    let _ = self.tx.send(Msg::Lost(*p)).await;
                    tracing::warn!(partition = p, "Partition lease lost (renewal too late); another process goes on from its last saved state.");
                }
            }
        }
        let give_up: Vec<u32> = held.keys().filter(|p| !wanted.contains(p)).copied().collect();
        for p in give_up {
            if self.stopped.load(Ordering::Acquire) {
                return Ok(());
            }
            let (done, wait) = oneshot::channel();
            if self.tx.send(Msg::Release(p, done)).await.is_ok() {
                let _ = wait.await;
            }
            let (revision, reader) = held.remove(&p).expect("held");
            reader.abort();
            self.shards.release(p, revision).await;
            tracing::info!(partition = p, "Partition handed on to another process.");
        }
        for p in wanted {
            if held.contains_key(&p) || self.stopped.load(Ordering::Acquire) {
                continue;
            }
            let Some(revision) = self.shards.acquire(p).await? else { continue };
            let saved = match self.load(p).await {
                Ok(saved) => saved,
                Err(e) => {
                    tracing::error!(partition = p, error = %e, "Partition state unreadable; giving the partition back.");
                    self.shards.release(p, revision).await;
                    continue;
                }
            };
            let from = saved.as_ref().map_or(1, |s| s.next_stream_seq);
            if self.tx.send(Msg::Take(p, saved)).await.is_err() {
                self.shards.release(p, revision).await;
                return Ok(());
            }
            let reader = tokio::spawn(read_partition(self.shards.clone(), self.tx.clone(), p, from));
            held.insert(p, (revision, reader));
            tracing::info!(partition = p, from, "Partition taken.");
        }
        Ok(())
    }

    async fn load(&self, p: u32) -> Result<Option<Box<PartitionState>>, String> {
        let key = state_key(&self.shards.config().group, p);
        let text = self.state.meta_get(&key).map_err(|e| e.to_string())?;
        match text {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| format!("{key}: {e}")),
        }
    }
}

/// Reads partition `p` into the detection thread, decoding on the way (on the runtime's
/// threads, so decoding and detection use different cores).
async fn read_partition(shards: Arc<Shards>, tx: mpsc::Sender<Msg>, p: u32, from: u64) {
    shards
        .read_partition(p, from, |seq, payload: Bytes| {
            let tx = tx.clone();
            async move {
                match serde_json::from_slice::<PartitionBatch>(&payload) {
                    Ok(batch) => tx.send(Msg::Events(p, seq, batch)).await.is_ok(),
                    Err(e) => {
                        tracing::error!(partition = p, seq, error = %e, "Message on the event stream is not a batch of events; skipped.");
                        true
                    }
                }
            }
        })
        .await;
}

/// Where this process is in its group, for the status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScaleStatus {
    /// This process's member id.
    pub member: String,
    /// Partitions of the node's event stream.
    pub partitions: u32,
    /// Partitions this process detects on.
    pub held: Vec<u32>,
}

/// The member id kept in `data_dir/scale/member`, made on first start.
fn member_id(data_dir: &Path, node: &str) -> Result<String, NodeError> {
    let dir = data_dir.join("scale");
    let path = dir.join("member");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim().to_string();
        cityward_tier::check_node_name(&id)
            .map_err(|e| NodeError::Invalid(format!("{}: member id {e}; delete the file to make a new one", path.display())))?;
        return Ok(id);
    }
    // The id past its 10 characters of time: the process nonce and a counter.
    let id = format!("{node}-{}", &crate::node::new_event_id()[10..]).to_lowercase();
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, &id))
        .map_err(|e| NodeError::Internal(format!("cannot write {}: {e}", path.display())))?;
    Ok(id)
}

/// A partition held by this process.
struct Partition {
    engine: Engine,
    next_stream_seq: u64,
    /// Per publishing process, the WAL sequence number after the last one applied.
    next_wal_seq: BTreeMap<String, u64>,
    last_event: Instant,
}

struct Stage {
    partitions: BTreeMap<u32, Partition>,
    rules: Vec<Rule>,
    city: Arc<City>,
    hotlists: Hotlists,
    alerts: AlertWriter,
    state: Arc<dyn StateStore>,
    metrics: Arc<Metrics>,
    status: Arc<Mutex<DetectStatus>>,
    group: String,
    member: String,
    config: DetectSection,
    last_checkpoint: Instant,
    last_status: Instant,
    outputs: Vec<Output>,
}

impl Stage {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Take(p, saved) => self.take(p, saved),
                Msg::Events(p, seq, batch) => self.apply(p, seq, batch),
                Msg::Release(p, done) => {
                    self.save(&[p]);
                    self.partitions.remove(&p);
                    let _ = done.send(());
                }
                Msg::Lost(p) => {
                    self.partitions.remove(&p);
                }
                Msg::Rules(rules) => {
                    self.flush();
                    for part in self.partitions.values_mut() {
                        part.engine.set_rules(rules.clone());
                    }
                    self.rules = rules;
                }
                Msg::City(city, rules) => {
                    self.flush();
                    for part in self.partitions.values_mut() {
                        part.engine.set_city(city.clone(), rules.clone());
                    }
                    self.city = city;
                    self.rules = rules;
                }
                Msg::Hotlists(h) => {
                    for part in self.partitions.values_mut() {
                        part.engine.set_hotlists(h.clone());
                    }
                    self.hotlists = h;
                }
                Msg::Checkpoint(done) => {
                    self.save_all();
                    let _ = done.send(());
                }
                Msg::Stop(done) => {
                    self.save_all();
                    self.partitions.clear();
                    let _ = done.send(());
                    break;
                }
                Msg::Tick => {
                    self.idle_tick();
                    self.flush();
                    if self.last_checkpoint.elapsed() >= self.config.checkpoint_every {
                        self.save_all();
                    }
                }
            }
            if self.last_status.elapsed() >= Duration::from_secs(1) {
                self.publish_status();
            }
        }
    }

    fn take(&mut self, p: u32, saved: Option<Box<PartitionState>>) {
        let mut engine = Engine::new(
            EngineConfig { lateness: self.config.lateness, max_evidence: self.config.max_evidence, ..EngineConfig::default() },
            self.city.clone(),
            self.rules.clone(),
        );
        engine.set_hotlists(self.hotlists.clone());
        let mut part = Partition { engine, next_stream_seq: 1, next_wal_seq: BTreeMap::new(), last_event: Instant::now() };
        if let Some(saved) = saved {
            match part.engine.restore(&saved.engine) {
                Ok(()) => {
                    part.next_stream_seq = saved.next_stream_seq;
                    part.next_wal_seq = saved.next_wal_seq;
                }
                Err(e) => tracing::warn!(partition = p, error = %e, "Partition state not restored; its rules start empty and the stream is read from its start."),
            }
        }
        self.partitions.insert(p, part);
        self.publish_status();
    }

    fn apply(&mut self, p: u32, seq: u64, batch: PartitionBatch) {
        let Some(part) = self.partitions.get_mut(&p) else { return };
        if seq < part.next_stream_seq {
            return;
        }
        part.next_stream_seq = seq + 1;
        let next = part.next_wal_seq.entry(batch.member).or_insert(0);
        let mut n = 0u64;
        for (wal_seq, event) in batch.seqs.iter().zip(&batch.events) {
            // Published twice (the publisher restarted): applied once.
            if *wal_seq < *next {
                continue;
            }
            *next = wal_seq + 1;
            part.engine.process(event);
            n += 1;
        }
        part.last_event = Instant::now();
        self.metrics.add("cityward_detect_events_total", &[], n as f64);
        self.flush();
    }

    /// With no events in a partition for a while, its event time follows the clock, so
    /// that its timers (absence, dwell) still fire.
    fn idle_tick(&mut self) {
        if self.config.clock != "wall" {
            return;
        }
        let idle = self.config.lateness.max(Duration::from_secs(1)) * 2;
        let now = Utc::now() - chrono::Duration::from_std(self.config.lateness).unwrap_or_default();
        for part in self.partitions.values_mut() {
            if part.last_event.elapsed() >= idle {
                part.engine.advance_to(now);
            }
        }
    }

    fn flush(&mut self) {
        for part in self.partitions.values_mut() {
            part.engine.drain_into(&mut self.outputs);
        }
        if !self.outputs.is_empty() {
            self.alerts.write(std::mem::take(&mut self.outputs), None);
        }
    }

    fn save_all(&mut self) {
        let ps: Vec<u32> = self.partitions.keys().copied().collect();
        self.save(&ps);
        self.last_checkpoint = Instant::now();
    }

    /// Saves partitions once every alert they raised so far is stored.
    fn save(&mut self, ps: &[u32]) {
        if ps.is_empty() {
            return;
        }
        self.flush();
        let stored = self.alerts.barrier();
        if stored.recv().is_err() {
            tracing::error!("Partition state not saved: the alerts before it were not all stored; the stream is read again from the last saved state.");
            return;
        }
        for p in ps {
            let Some(part) = self.partitions.get(p) else { continue };
            let saved = PartitionState {
                version: 1,
                next_stream_seq: part.next_stream_seq,
                next_wal_seq: part.next_wal_seq.clone(),
                written_at: cityward_model::format_time(&Utc::now()),
                written_by: self.member.clone(),
                engine: part.engine.checkpoint(),
            };
            let key = state_key(&self.group, *p);
            let written = serde_json::to_string(&saved)
                .map_err(|e| e.to_string())
                .and_then(|text| self.state.meta_set(&key, &text).map_err(|e| e.to_string()));
            if let Err(e) = written {
                tracing::error!(partition = p, error = %e, "Partition state not saved; the stream is read again from the last saved state.");
            }
        }
        self.status.lock().expect("status lock").checkpoint_at = Some(cityward_model::format_time(&Utc::now()));
    }

    fn publish_status(&mut self) {
        self.last_status = Instant::now();
        let mut stats = EngineStats::default();
        let mut watermark = None;
        for part in self.partitions.values() {
            add_stats(&mut stats, &part.engine.stats());
            if let Some(w) = part.engine.watermark() {
                watermark = Some(watermark.map_or(w, |m: chrono::DateTime<Utc>| m.min(w)));
            }
        }
        let mut status = self.status.lock().expect("status lock");
        status.rules = self.rules.len();
        status.watermark = watermark.map(|w| cityward_model::format_time(&w));
        status.stats = stats;
        if let Some(latency) = self.alerts.latency() {
            status.alert_latency_ms = Some(latency);
        }
        self.metrics.set("cityward_detect_timers", &[], status.stats.timers as f64);
        self.metrics.set("cityward_detect_late_events", &[], status.stats.late as f64);
    }
}

fn add_stats(total: &mut EngineStats, one: &EngineStats) {
    total.events += one.events;
    total.late += one.late;
    total.raised += one.raised;
    total.timers += one.timers;
    total.buffered += one.buffered;
    for (id, r) in &one.rules {
        let t = total.rules.entry(id.clone()).or_default();
        t.matched += r.matched;
        t.raised += r.raised;
        t.repeated += r.repeated;
        t.cleared += r.cleared;
        t.eval_errors += r.eval_errors;
        t.out_of_order += r.out_of_order;
        t.keys += r.keys;
    }
}

/// Starts the node's shared-detection tasks: the publisher, the partition control and the
/// listener for changes made at the node's other processes.
pub(crate) fn start(node: Arc<Node>) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(crate::detect::Detection::Shared(shared)) = node.detection() else { return Vec::new() };
    let shared = shared.clone();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(publish(node.clone(), shared.shards.clone(), node.subscribe())));
    let control = shared.clone();
    let n = node.clone();
    tasks.push(tokio::spawn(async move { control.control(n).await }));
    tasks.push(tokio::spawn(follow_changes(node, shared)));
    tasks
}

impl SharedDetection {
    /// Tells the node's other processes to read `what` again from the state store.
    pub(crate) fn announce(&self, what: &'static str) {
        let shards = self.shards.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { shards.announce(what).await });
        }
    }
}

/// Applies the rule and hotlist changes made through the node's other processes.
async fn follow_changes(node: Arc<Node>, shared: Arc<SharedDetection>) {
    loop {
        match shared.shards.changes().await {
            Ok(changes) => {
                let mut changes = std::pin::pin!(changes);
                while let Some(what) = futures_util::StreamExt::next(&mut changes).await {
                    let state = node.state().clone();
                    let msg = match what.as_str() {
                        "rules" => Msg::Rules(crate::rules::stored_rules(state.as_ref(), &node.city())),
                        "hotlists" => match crate::rules::load_hotlists(state.as_ref()) {
                            Ok(h) => Msg::Hotlists(h),
                            Err(e) => {
                                tracing::error!(error = %e, "Hotlists changed at another process could not be read.");
                                continue;
                            }
                        },
                        _ => continue,
                    };
                    tracing::info!(what = %what, "Changed at another process of this node; applied here.");
                    let _ = shared.tx.send(msg).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "Cannot follow the changes of the node's other processes; retrying."),
        }
        if shared.stopped.load(Ordering::Acquire) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Where the publisher has got to in this process's WAL: the next sequence number to
/// publish, recorded in `data_dir/scale/published` at most once a second.
struct Position {
    path: PathBuf,
    next: u64,
    recorded: u64,
    recorded_at: Instant,
}

impl Position {
    fn load(data_dir: &Path, first_retained: u64) -> Position {
        let path = data_dir.join("scale").join("published");
        let next = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(first_retained);
        Position { path, next, recorded: next, recorded_at: Instant::now() }
    }

    fn record(&mut self, force: bool) {
        if self.next == self.recorded || (!force && self.recorded_at.elapsed() < Duration::from_secs(1)) {
            return;
        }
        let tmp = self.path.with_extension("tmp");
        let written = std::fs::create_dir_all(self.path.parent().unwrap_or(Path::new(".")))
            .and_then(|_| std::fs::write(&tmp, self.next.to_string()))
            .and_then(|_| std::fs::rename(&tmp, &self.path));
        match written {
            Ok(()) => {
                self.recorded = self.next;
                self.recorded_at = Instant::now();
            }
            Err(e) => tracing::error!(path = %self.path.display(), error = %e, "Publishing position not recorded; the WAL is kept from the last one."),
        }
    }
}

/// Publishes what this process's intake stored to the node's partitioned event stream, in
/// WAL order, until the node stops. The WAL is kept from the last recorded position, so a
/// restart publishes again whatever might not have reached the stream.
async fn publish(node: Arc<Node>, shards: Arc<Shards>, mut bus: broadcast::Receiver<Arc<StoredBatch>>) {
    let events = node.events();
    let reader = events.wal_reader().clone();
    let mut position = Position::load(&node.data_dir(), crate::detect::first_retained(&reader).unwrap_or(0));
    events.keep_wal_from(position.next);
    let by_grid = node.config().scale.key == "grid";
    let member = shards.config().member.clone();
    let mut catch_up = true;
    loop {
        let mut pending: Vec<(u64, Arc<StoredBatch>)> = Vec::new();
        if !catch_up {
            match tokio::time::timeout(Duration::from_secs(1), bus.recv()).await {
                Ok(Ok(batch)) => {
                    pending.push((batch.first_seq, batch));
                    // Whatever else is queued goes in the same round.
                    while pending.len() < 64 {
                        match bus.try_recv() {
                            Ok(b) => pending.push((b.first_seq, b)),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                catch_up = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => catch_up = true,
                Ok(Err(broadcast::error::RecvError::Closed)) => return,
                Err(_) => {}
            }
        }
        // Batches finish out of order under concurrent ingests; a gap is read from the WAL.
        pending.sort_by_key(|(first, _)| *first);
        // Borrowed from the batches (or from what was read from the WAL), not copied.
        let wal_events: Vec<(u64, Event)>;
        let mut round: Vec<(u64, &Event)> = Vec::new();
        for (first, batch) in &pending {
            let end = first + batch.events.len() as u64;
            if end <= position.next {
                continue;
            }
            if *first > position.next + round.len() as u64 {
                catch_up = true;
                break;
            }
            let skip = (position.next + round.len() as u64 - first) as usize;
            for (i, e) in batch.events.iter().enumerate().skip(skip) {
                round.push((first + i as u64, e));
            }
        }
        if catch_up {
            wal_events = read_wal(&reader, position.next);
            round = wal_events.iter().map(|(seq, e)| (*seq, e)).collect();
            catch_up = false;
        }
        if let Some((last, _)) = round.last() {
            let last = *last;
            let mut wait = Duration::from_millis(100);
            while let Err(e) = publish_round(&shards, &member, by_grid, &round).await {
                node.metrics().add("cityward_scale_publish_failures_total", &[], 1.0);
                tracing::warn!(error = %e, "Events not published to the node's event stream; retrying (they are safe in the WAL).");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            node.metrics().add("cityward_scale_published_total", &[], round.len() as f64);
            position.next = last + 1;
        }
        position.record(false);
        events.keep_wal_from(position.recorded);
    }
}

/// Every durable WAL record from `from` on.
fn read_wal(reader: &cityward_store::WalReader, from: u64) -> Vec<(u64, Event)> {
    let mut out = Vec::new();
    let mut cursor = match reader.read_from(from) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(from, error = %e, "WAL records not yet published were deleted; publishing goes on from the oldest record left.");
            reader.read_all()
        }
    };
    loop {
        match cursor.next_record() {
            Ok(Some((seq, bytes))) if seq >= from => match serde_json::from_slice::<Event>(bytes) {
                Ok(e) => out.push((seq, e)),
                Err(e) => tracing::error!(seq, error = %e, "WAL record is not an event; not published."),
            },
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "Publishing stopped reading the WAL at an unreadable record.");
                break;
            }
        }
        if out.len() >= 100_000 {
            break; // the next round reads on
        }
    }
    out
}

/// Publishes events grouped by partition, in messages of about `MAX_MESSAGE_BYTES` at
/// most, and waits until the stream has stored them all. Each message is a
/// [`PartitionBatch`], written event by event into one buffer; its id is the member, the
/// WAL sequence number of its first event and the partition.
async fn publish_round(shards: &Shards, member: &str, by_grid: bool, round: &[(u64, &Event)]) -> Result<(), cityward_tier::LinkError> {
    let mut by_partition: BTreeMap<u32, Vec<(u64, &Event)>> = BTreeMap::new();
    for (seq, e) in round {
        let key = if by_grid { e.grid.as_deref().unwrap_or(&e.source) } else { &e.source };
        by_partition.entry(shards.partition_of(key)).or_default().push((*seq, e));
    }
    let member_json = serde_json::to_string(member).unwrap_or_default();
    let mut acks = Vec::new();
    for (p, items) in by_partition {
        let mut events: Vec<u8> = Vec::with_capacity(MAX_MESSAGE_BYTES + 4096);
        let mut seqs = String::new();
        let mut first = None;
        let last = items.len() - 1;
        for (i, (seq, e)) in items.into_iter().enumerate() {
            if first.is_some() {
                events.push(b',');
                seqs.push(',');
            }
            let _ = serde_json::to_writer(&mut events, e); // our own events always serialise
            seqs.push_str(&seq.to_string());
            let first_seq = *first.get_or_insert(seq);
            if events.len() >= MAX_MESSAGE_BYTES || i == last {
                let mut payload = Vec::with_capacity(events.len() + seqs.len() + member_json.len() + 32);
                payload.extend_from_slice(br#"{"member":"#);
                payload.extend_from_slice(member_json.as_bytes());
                payload.extend_from_slice(br#","seqs":["#);
                payload.extend_from_slice(seqs.as_bytes());
                payload.extend_from_slice(br#"],"events":["#);
                payload.extend_from_slice(&events);
                payload.extend_from_slice(b"]}");
                acks.push(shards.publish(p, &format!("{member}:{first_seq}:{p}"), payload.into()).await?);
                events.clear();
                seqs.clear();
                first = None;
            }
        }
    }
    for ack in acks {
        ack.await.map_err(|e| cityward_tier::LinkError::Stream { stream: cityward_tier::shard::event_stream(&shards.config().group), reason: e.to_string() })?;
    }
    Ok(())
}
