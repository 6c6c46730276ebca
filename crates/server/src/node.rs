//! A running node: the pipeline `decode → validate → dedup → enrich → WAL (durable ack)`,
//! the background stages (compactor, retention, MQTT subscriber) and the state behind the
//! HTTP API.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use chrono::Utc;
use cityward_ingest::{Decoded, Reject, RejectCode, Validator};
use cityward_model::{City, Event, KindRegistry};
use cityward_store::StateStore;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::config::NodeConfig;
use crate::dedup::DedupIndex;
use crate::metrics::Metrics;
use crate::storage::EventStore;

/// The channel a record came by (a metrics label and the dead-letter `channel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `POST /api/v1/events`.
    Http,
    /// The MQTT subscriber.
    Mqtt,
    /// In-process producers (the demo's simulator).
    Internal,
}

impl Channel {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Http => "http",
            Channel::Mqtt => "mqtt",
            Channel::Internal => "internal",
        }
    }
}

/// What a node tells a caller about a batch.
#[derive(Debug, Default, Serialize)]
pub struct IngestOutcome {
    /// Records now durably stored.
    pub accepted: usize,
    /// Records whose id was already stored (not stored again; safe to retry a batch).
    pub duplicates: usize,
    /// Refused records: line, field, code and reason. They are in the dead-letter store.
    pub rejected: Vec<Reject>,
}

/// Roles of users (DESIGN.md); `ingest` is for machines that post events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including SQL and user management.
    Admin,
    /// Rules, models, search, dead letters.
    Analyst,
    /// The alert queue and dispatch.
    Dispatcher,
    /// Their own assigned alerts.
    Responder,
    /// The audit log and transparency reports.
    Auditor,
    /// Machines posting events.
    Ingest,
    /// Machines reading alerts and rules (read-only API tokens), within their unit's
    /// jurisdiction.
    Reader,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 7] = [
        Role::Admin,
        Role::Analyst,
        Role::Dispatcher,
        Role::Responder,
        Role::Auditor,
        Role::Ingest,
        Role::Reader,
    ];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::Dispatcher => "dispatcher",
            Role::Responder => "responder",
            Role::Auditor => "auditor",
            Role::Ingest => "ingest",
            Role::Reader => "reader",
        }
    }

    /// Parses a role name.
    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// An authenticated user.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// Login name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Unit the user belongs to, if any.
    pub unit: Option<String>,
    /// Approves searches beyond the limits of a role.
    pub supervisor: bool,
}

/// A login token handed to a user.
pub struct Token {
    /// The bearer token (shown once; only its hash is stored).
    pub token: String,
    /// The user's role.
    pub role: Role,
    /// Expiry, RFC 3339.
    pub expires_at: String,
}

/// Errors of node operations, mapped to HTTP statuses by the API.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The body is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// Wrong credentials.
    #[error("unknown user or wrong password")]
    BadLogin,
    /// The caller may not do this (role or unit).
    #[error("{0}")]
    Forbidden(String),
    /// Nothing with that id.
    #[error("{0}")]
    NotFound(String),
    /// The write conflicts with the stored state (e.g. someone changed it since it was read).
    #[error("{0}")]
    Conflict(String),
    /// The node cannot take writes now (e.g. the WAL failed); retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an environment failure.
    #[error("{0}")]
    Internal(String),
}

impl NodeError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            NodeError::Invalid(_) => 400,
            NodeError::BadLogin => 401,
            NodeError::Forbidden(_) => 403,
            NodeError::NotFound(_) => 404,
            NodeError::Conflict(_) => 409,
            NodeError::TooLarge(_) => 413,
            NodeError::Unavailable(_) => 503,
            NodeError::Internal(_) => 500,
        }
    }
}

impl From<cityward_store::StateError> for NodeError {
    fn from(e: cityward_store::StateError) -> Self {
        use cityward_store::Status;
        match e.status() {
            Status::InvalidInput | Status::Forbidden => NodeError::Invalid(e.to_string()),
            Status::Conflict => NodeError::Conflict(e.to_string()),
            Status::NotFound => NodeError::NotFound(e.to_string()),
            Status::Unavailable => NodeError::Unavailable(e.to_string()),
            Status::Internal => NodeError::Internal(e.to_string()),
        }
    }
}

/// A record mapped from a transport's message: the wire-format value, or why it could not
/// be mapped together with its raw text.
pub type MappedRecord = Result<Value, (String, String)>;

/// One running node.
pub struct Node {
    config: NodeConfig,
    kinds: KindRegistry,
    city: RwLock<Arc<City>>,
    validator: RwLock<Arc<Validator>>,
    dedup: Mutex<DedupIndex>,
    events: EventStore,
    state: Arc<dyn StateStore>,
    metrics: Arc<Metrics>,
    bus: broadcast::Sender<Arc<StoredBatch>>,
    detection: Option<crate::detect::Detection>,
    desk: Arc<crate::desk::Desk>,
    /// Responders and road routing, opened on first use.
    dispatch: std::sync::OnceLock<Arc<crate::dispatch::Dispatch>>,
    /// Long operations started through the API (rule trials).
    jobs: crate::jobs::Jobs,
    /// The last position of every moving source, for the live map.
    positions: crate::positions::Positions,
    /// Held while the city model is edited through the API.
    city_edits: Mutex<()>,
    /// Links to the other tiers, when `[tier]` is enabled.
    tier: Option<Arc<crate::tier::Tier>>,
    started: Instant,
}

/// Events as stored: the WAL sequence number of the first, then the rest in order.
#[derive(Debug)]
pub struct StoredBatch {
    /// WAL sequence number of `events[0]`; the others follow without gaps.
    pub first_seq: u64,
    /// The stored (enriched) events.
    pub events: Vec<Event>,
    /// When the WAL acknowledged them (detection measures its latency from here).
    pub stored_at: Instant,
}

impl Node {
    /// Opens the node's data directory (recovering the WAL), loads or imports the city,
    /// and rebuilds the duplicate index. Background stages are started by [`crate::run`].
    pub async fn open(config: NodeConfig) -> Result<Arc<Node>, NodeError> {
        config.check().map_err(NodeError::Invalid)?;
        let data = config.node.data_dir.clone();
        std::fs::create_dir_all(&data).map_err(|e| {
            NodeError::Internal(format!(
                "cannot create data directory {}: {e}; check permissions or set node.data_dir",
                data.display()
            ))
        })?;
        let state = config.state.open(&data)?;
        let city = load_city(&config, state.as_ref(), &data.join("city"))?;
        let kinds = config.kind_registry();
        // Offline tools (`cityward sql --data`) read the lake with the kinds the node declared.
        let declared = serde_json::to_string_pretty(&config.kinds)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        std::fs::write(data.join("kinds.json"), declared).map_err(|e| {
            NodeError::Internal(format!(
                "cannot write {}: {e}",
                data.join("kinds.json").display()
            ))
        })?;
        let metrics = Arc::new(Metrics::default());
        let events = EventStore::open(&data, &config, &kinds, metrics.clone()).await?;
        let mut dedup = DedupIndex::new(config.dedup.capacity);
        let reloaded = events
            .reload_ids(config.dedup.reload_window, |id| {
                dedup.insert(id);
            })
            .await?;
        tracing::info!(ids = reloaded, "Duplicate index rebuilt.");
        let validator = build_validator(&config, &kinds, &city);
        let (bus, _) = broadcast::channel(1024);
        let city = Arc::new(city);
        if config.tier.enabled && !config.tier.region.is_empty() && !city.regions.iter().any(|r| r.id == config.tier.region) {
            return Err(NodeError::Invalid(format!(
                "tier.region `{}` is not a region of the city; use an id from regions.geojson",
                config.tier.region
            )));
        }
        let tier = crate::tier::Tier::open(&config).await?;
        let desk = Arc::new(crate::desk::Desk::open(config.alerts.clone(), config.node.name.clone(), state.clone(), city.clone(), metrics.clone(), tier.clone())?);
        let detection = if config.detect.enabled {
            let rules = crate::rules::startup_rules(&config, state.as_ref(), &city)?;
            let hotlists = crate::rules::load_hotlists(state.as_ref())?;
            let parts = crate::detect::StageParts {
                config: config.detect.clone(),
                data_dir: data.clone(),
                city: city.clone(),
                rules,
                hotlists,
                state: state.clone(),
                metrics: metrics.clone(),
                bus: bus.subscribe(),
                desk: desk.clone(),
            };
            if config.scale.enabled {
                // The publisher keeps the WAL from its own position once it runs.
                events.keep_wal_from(0);
                let shared = crate::shards::SharedDetection::start(parts, config.scale.clone(), config.node.name.clone()).await?;
                Some(crate::detect::Detection::Shared(Arc::new(shared)))
            } else {
                Some(crate::detect::Detection::Wal(crate::detect::WalDetection::start(parts, &events)?))
            }
        } else {
            events.keep_wal_from(u64::MAX);
            None
        };
        Ok(Arc::new(Node {
            detection,
            desk,
            dispatch: std::sync::OnceLock::new(),
            jobs: crate::jobs::Jobs::default(),
            city_edits: Mutex::new(()),
            tier,
            positions: crate::positions::Positions::default(),
            kinds,
            city: RwLock::new(city),
            validator: RwLock::new(Arc::new(validator)),
            dedup: Mutex::new(dedup),
            events,
            state,
            metrics,
            bus,
            started: Instant::now(),
            config,
        }))
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The state store.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// The event store (WAL and lake).
    pub fn events(&self) -> &EventStore {
        &self.events
    }

    /// The city model in force.
    pub fn city(&self) -> Arc<City> {
        self.city.read().expect("city lock").clone()
    }

    /// Where the dispatch state is kept.
    pub(crate) fn dispatch_slot(&self) -> &std::sync::OnceLock<Arc<crate::dispatch::Dispatch>> {
        &self.dispatch
    }

    /// The last position of every moving source.
    pub(crate) fn positions(&self) -> &crate::positions::Positions {
        &self.positions
    }

    /// Long operations started through the API.
    pub(crate) fn jobs(&self) -> &crate::jobs::Jobs {
        &self.jobs
    }

    /// The alert desk (routing, deadlines, actions).
    pub(crate) fn desk(&self) -> &Arc<crate::desk::Desk> {
        &self.desk
    }

    /// Replaces the city model (stored in the state database; takes effect for new events
    /// and new alerts, and rules that read zones restart against it). Refused when the
    /// routing table names what the new city lacks.
    pub fn set_city(&self, city: City) -> Result<(), NodeError> {
        let city = Arc::new(city);
        self.desk.set_city(city.clone())?;
        crate::citystate::save_city(
            self.state.as_ref(),
            &city,
            &self.config.node.data_dir.join("city"),
        )?;
        let validator = build_validator(&self.config, &self.kinds, &city);
        *self.validator.write().expect("validator lock") = Arc::new(validator);
        *self.city.write().expect("city lock") = city.clone();
        if let Some(d) = self.detection() {
            d.set_city(city.clone(), crate::rules::stored_rules(self.state.as_ref(), &city));
        }
        Ok(())
    }

    /// Changes the city model by `change` (one change at a time, so two edits never lose
    /// one another) and puts the result in force; answers it.
    pub(crate) fn edit_city(&self, change: impl FnOnce(&City) -> Result<City, NodeError>) -> Result<Arc<City>, NodeError> {
        let _one_at_a_time = self.city_edits.lock().unwrap_or_else(|p| p.into_inner());
        let changed = change(&self.city())?;
        self.set_city(changed)?;
        Ok(self.city())
    }

    /// Subscribes to the stream of stored events (batches in WAL order), for the detection
    /// engine and live views. A slow subscriber misses batches rather than slowing intake.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredBatch>> {
        self.bus.subscribe()
    }

    /// Decodes, validates and stores a JSON array or NDJSON body, or CSV with a header row
    /// when `csv`; gzip is recognised by its magic bytes.
    pub async fn ingest_body(
        &self,
        body: &[u8],
        channel: Channel,
        csv: bool,
    ) -> Result<IngestOutcome, NodeError> {
        let limit = self.config.ingest.max_body_bytes;
        let body = cityward_ingest::gunzip_if_needed(body, limit).map_err(|e| match e {
            cityward_ingest::BodyError::TooLarge { .. } => NodeError::TooLarge(e.to_string()),
            other => NodeError::Invalid(other.to_string()),
        })?;
        let validator = self.validator.read().expect("validator lock").clone();
        let decoded = if csv {
            cityward_ingest::decode_csv(&body[..], &validator, Utc::now())
        } else {
            cityward_ingest::decode_json_body(&body, &validator, Utc::now())
                .map_err(|e| NodeError::Invalid(e.to_string()))?
        };
        self.ingest_decoded(decoded, channel, "").await
    }

    /// Validates records already turned into JSON values (MQTT mappings), then stores them.
    /// An `Err` record carries the reason it could not be mapped and its raw text.
    pub async fn ingest_values(
        &self,
        records: Vec<(u64, MappedRecord)>,
        channel: Channel,
        origin: &str,
    ) -> Result<IngestOutcome, NodeError> {
        let validator = self.validator.read().expect("validator lock").clone();
        let now = Utc::now();
        let mut decoded = Decoded::default();
        for (line, record) in records {
            match record.map(|v| validator.validate_value(v, line, now)) {
                Ok(result) => decoded.push(line, result),
                Err((reason, raw)) => decoded.rejects.push(Reject {
                    line,
                    field: None,
                    code: RejectCode::Malformed,
                    reason,
                    raw,
                }),
            }
        }
        self.ingest_decoded(decoded, channel, origin).await
    }

    /// Stores already valid events (in-process producers such as the demo's simulator).
    pub async fn ingest_events(
        &self,
        events: Vec<Event>,
        channel: Channel,
    ) -> Result<IngestOutcome, NodeError> {
        self.ingest_decoded(Decoded::from_events(events), channel, "")
            .await
    }

    async fn ingest_decoded(
        &self,
        decoded: Decoded,
        channel: Channel,
        origin: &str,
    ) -> Result<IngestOutcome, NodeError> {
        let Decoded {
            mut events,
            lines,
            rejects,
        } = decoded;
        let ch = channel.as_str();
        self.metrics
            .add("cityward_ingest_batches_total", &[("channel", ch)], 1.0);
        self.metrics.add(
            "cityward_ingest_events_received_total",
            &[("channel", ch)],
            (events.len() + rejects.len()) as f64,
        );
        let mut rejects = rejects;
        let city = self.city();
        let require_registered = &self.config.ingest.require_registered;
        // Refuse unregistered sources where required, and enrich (outside any lock).
        let mut kept = Vec::with_capacity(events.len());
        for (line, mut event) in lines.into_iter().zip(events.drain(..)) {
            if !require_registered.is_empty()
                && require_registered.contains(&event.kind)
                && city.device(&event.source).is_none()
            {
                rejects.push(Reject {
                    line,
                    field: Some("source".into()),
                    code: RejectCode::UnregisteredSource,
                    reason: format!("source `{}` is not in the device registry, which kind `{}` requires; register the device first", event.source, event.kind),
                    raw: event.to_json_line(),
                });
                continue;
            }
            cityward_ingest::enrich(&city, &mut event);
            kept.push((event.id.is_empty(), event));
        }
        // Reserve the ids sent: a repeated id is a duplicate, not stored twice. Ids made
        // here are new by construction and need no check.
        let mut duplicates = 0;
        let mut reserved: Vec<String> = Vec::new();
        for (generated, event) in kept.iter_mut() {
            if *generated {
                event.id = new_event_id();
            }
        }
        events = {
            let mut dedup = self.dedup.lock().expect("dedup lock");
            kept.into_iter()
                .filter_map(|(generated, event)| {
                    if generated || dedup.insert(&event.id) {
                        if !generated {
                            reserved.push(event.id.clone());
                        }
                        Some(event)
                    } else {
                        duplicates += 1;
                        None
                    }
                })
                .collect()
        };
        if !rejects.is_empty() {
            self.dead_letter(&rejects, channel, origin).await;
        }
        if duplicates > 0 {
            self.metrics.add(
                "cityward_ingest_events_duplicate_total",
                &[("channel", ch)],
                duplicates as f64,
            );
        }
        let accepted = events.len();
        if accepted > 0 {
            let seqs = match self.events.append(&events).await {
                Ok(seqs) => seqs,
                Err(e) => {
                // Nothing of this batch is stored: let a retry through the duplicate check.
                    let mut dedup = self.dedup.lock().expect("dedup lock");
                    for id in &reserved {
                        dedup.remove(id);
                    }
                    return Err(e);
                }
            };
            let mut per_kind: std::collections::BTreeMap<&str, usize> = Default::default();
            for event in &events {
                *per_kind.entry(event.kind.as_str()).or_default() += 1;
            }
            for (kind, n) in per_kind {
                self.metrics.add(
                    "cityward_ingest_events_accepted_total",
                    &[("channel", ch), ("kind", kind)],
                    n as f64,
                );
            }
            let _ = self.bus.send(Arc::new(StoredBatch {
                first_seq: seqs.start,
                events,
                stored_at: Instant::now(),
            }));
        }
        Ok(IngestOutcome {
            accepted,
            duplicates,
            rejected: rejects,
        })
    }

    async fn dead_letter(&self, rejects: &[Reject], channel: Channel, origin: &str) {
        let ch = channel.as_str();
        let origin = match (origin, channel) {
            ("", Channel::Http) => "POST /api/v1/events",
            ("", Channel::Mqtt) => "mqtt",
            ("", Channel::Internal) => "in-process producer",
            (given, _) => given,
        };
        for code in RejectCode::ALL {
            let n = rejects.iter().filter(|r| r.code == code).count();
            if n > 0 {
                self.metrics.add(
                    "cityward_ingest_events_rejected_total",
                    &[("channel", ch), ("reason", code.as_str())],
                    n as f64,
                );
            }
        }
        let rows: Vec<cityward_store::NewDeadLetter> = rejects
            .iter()
            .map(|r| cityward_store::NewDeadLetter {
                received_at: Utc::now(),
                channel: match channel {
                    Channel::Http => cityward_store::DeadLetterChannel::Http,
                    Channel::Mqtt => cityward_store::DeadLetterChannel::Mqtt,
                    Channel::Internal => cityward_store::DeadLetterChannel::File,
                },
                origin: origin.to_string(),
                line: Some(r.line),
                field: r.field.clone(),
                reason: format!("{}: {}", r.code.as_str(), r.reason),
                raw: r.raw.clone(),
            })
            .collect();
        let state = self.state.clone();
        let n = rows.len();
        match tokio::task::spawn_blocking(move || state.insert_dead_letters(&rows)).await {
            Ok(Ok(_)) => self
                .metrics
                .add("cityward_deadletter_records_total", &[], n as f64),
            Ok(Err(e)) => {
                tracing::error!(error = %e, records = n, "Could not write rejected records to the dead-letter store.")
            }
            Err(e) => tracing::error!(error = %e, "Dead-letter task failed."),
        }
    }

    /// Lists dead letters, newest first.
    pub fn deadletters(
        &self,
        cursor: Option<String>,
        limit: usize,
        channel: Option<String>,
        pending_only: bool,
    ) -> Result<Value, NodeError> {
        let channel = channel.map(|c| c.parse()).transpose()?;
        let filter = cityward_store::DeadLetterFilter {
            channel,
            pending_only,
            ..Default::default()
        };
        let page = self.state.list_dead_letters(
            &filter,
            &cityward_store::PageRequest {
                after: cursor,
                limit,
            },
        )?;
        Ok(json!({"items": page.items, "next": page.next}))
    }

    /// One dead letter.
    pub fn deadletter(&self, id: i64) -> Result<Value, NodeError> {
        let item = self
            .state
            .dead_letter(id)?
            .ok_or_else(|| not_found_letter(id))?;
        serde_json::to_value(item).map_err(|e| NodeError::Internal(e.to_string()))
    }

    /// Re-submits a dead letter: `body` is the corrected record (empty: the stored one as is).
    pub async fn resubmit(&self, id: i64, body: &[u8]) -> Result<IngestOutcome, NodeError> {
        let state = self.state.clone();
        let letter = tokio::task::spawn_blocking(move || state.dead_letter(id))
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))??
            .ok_or_else(|| not_found_letter(id))?;
        let record = if body.iter().all(u8::is_ascii_whitespace) {
            letter.raw.as_bytes().to_vec()
        } else {
            body.to_vec()
        };
        let validator = self.validator.read().expect("validator lock").clone();
        let text = String::from_utf8(record)
            .map_err(|_| NodeError::Invalid("the corrected record is not UTF-8".into()))?;
        let outcome =
            match validator.validate_json(text.trim(), letter.line.unwrap_or(1), Utc::now()) {
                Ok(event) => {
                    self.ingest_decoded(
                        Decoded::from_events(vec![event]),
                        Channel::Http,
                        &format!("deadletter:{id}"),
                    )
                    .await?
                }
                // Still wrong: answer why, without filing a second dead letter for the same record.
                Err(reject) => IngestOutcome {
                    accepted: 0,
                    duplicates: 0,
                    rejected: vec![reject],
                },
            };
        if outcome.accepted + outcome.duplicates > 0 {
            let state = self.state.clone();
            tokio::task::spawn_blocking(move || state.mark_resubmitted(&[id], Utc::now()))
                .await
                .map_err(|e| NodeError::Internal(e.to_string()))??;
        }
        Ok(outcome)
    }

    /// Runs a read-only SQL query over the lake and the WAL tail, which holds no personal
    /// data: plate reads and private vehicles' GPS are reached by purpose-bound search and
    /// hotlists only (see [`crate::purpose`]).
    pub async fn sql(&self, sql: &str, max_rows: usize) -> Result<Value, NodeError> {
        let public = crate::purpose::PersonalKinds::of(self.events.lake().kinds(), &self.config.search).public_rows();
        let result = self.events.sql_where(sql, max_rows, public.as_deref()).await?;
        serde_json::to_value(result).map_err(|e| NodeError::Internal(e.to_string()))
    }

    /// Checks a password and opens a session.
    pub fn login(&self, username: &str, password: &str) -> Result<Token, NodeError> {
        crate::auth::login(
            self.state.as_ref(),
            username,
            password,
            self.config.auth.token_ttl,
        )
    }

    /// The user behind a bearer token, if it is valid.
    pub fn authenticate(&self, token: &str) -> Result<Option<User>, NodeError> {
        crate::auth::authenticate(self.state.as_ref(), token)
    }

    /// Creates a user (e.g. the demo's users).
    pub fn create_user(
        &self,
        username: &str,
        password: &str,
        role: Role,
        unit: Option<&str>,
    ) -> Result<(), NodeError> {
        if let Some(u) = unit {
            if self.city().unit(u).is_none() {
                return Err(NodeError::Invalid(format!(
                    "unit `{u}` is not in the city's units.csv; give `{username}` an existing unit"
                )));
            }
        }
        crate::auth::create_user(self.state.as_ref(), username, password, role, unit)?;
        self.desk.audit("system", "user.create", username, json!({"role": role.as_str(), "unit": unit}));
        Ok(())
    }

    /// `GET /healthz`.
    pub fn health(&self) -> Value {
        let wal = self.events.wal_health();
        json!({
            "status": if wal.is_ok() { "ok" } else { "failing" },
            "wal": wal.err(),
            "uptime_s": self.started.elapsed().as_secs(),
            "role": self.config.node.role,
            "name": self.config.node.name,
        })
    }

    /// Refreshes gauges that are read, not counted (WAL, lake, dedup).
    pub fn refresh_gauges(&self) {
        self.events.refresh_gauges();
        let ids = self.dedup.lock().expect("dedup lock").len();
        self.metrics.set("cityward_dedup_ids", &[], ids as f64);
        if let Some(tier) = &self.tier {
            let status = tier.status();
            for (key, metric) in [
                ("queued_up", "cityward_tier_queued_up_total"),
                ("forwarded_up", "cityward_tier_forwarded_up_total"),
                ("uplink_failures", "cityward_tier_uplink_failures_total"),
                ("outbox_failures", "cityward_tier_outbox_failures_total"),
                ("applied_from_below", "cityward_tier_applied_from_below_total"),
                ("applied_from_above", "cityward_tier_applied_from_above_total"),
                ("lost", "cityward_tier_lost_total"),
            ] {
                self.metrics.set(metric, &[], status[key].as_f64().unwrap_or(0.0));
            }
            if let Some(up) = status["uplink_up"].as_bool() {
                self.metrics.set("cityward_tier_uplink_up", &[], if up { 1.0 } else { 0.0 });
            }
        }
    }

    /// A summary for the console and `GET /api/v1/status`.
    pub fn status(&self) -> Value {
        self.refresh_gauges();
        let m = &self.metrics;
        let city = self.city();
        json!({
            "name": self.config.node.name,
            "role": self.config.node.role,
            "uptime_s": self.started.elapsed().as_secs(),
            "events_accepted": m.sum("cityward_ingest_events_accepted_total"),
            "events_rejected": m.sum("cityward_ingest_events_rejected_total"),
            "events_duplicate": m.sum("cityward_ingest_events_duplicate_total"),
            "lake_rows": m.sum("cityward_lake_rows"),
            "lake_files": m.sum("cityward_lake_files"),
            "wal_lag_records": m.sum("cityward_lake_lag_records"),
            "city": {
                "regions": city.regions.len(), "grids": city.grids.len(), "zones": city.zones.len(),
                "roads": city.roads.len(), "units": city.units.len(), "devices": city.devices.len(),
            },
            "tier": self.tier.as_ref().map(|t| {
                let mut v = t.status();
                v["region"] = json!(self.config.tier.region);
                v
            }),
        })
    }

    /// Flushes what is pending (graceful shutdown).
    pub async fn shutdown(&self) {
        if let Some(d) = &self.detection {
            d.stop().await;
        }
        self.events.shutdown().await;
    }

    /// The detection stage, when `detect.enabled`.
    pub(crate) fn detection(&self) -> Option<&crate::detect::Detection> {
        self.detection.as_ref()
    }

    /// The links to other tiers, when configured.
    pub(crate) fn tier(&self) -> Option<&Arc<crate::tier::Tier>> {
        self.tier.as_ref()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.config.node.data_dir.clone()
    }
}

fn not_found_letter(id: i64) -> NodeError {
    NodeError::NotFound(format!(
        "dead letter {id} does not exist; list them with GET /api/v1/deadletter"
    ))
}

fn build_validator(config: &NodeConfig, kinds: &KindRegistry, city: &City) -> Validator {
    let validator = Validator::new(kinds.clone(), &config.ingest);
    if config.ingest.reject_outside_city && !city.regions.is_empty() {
        let b = city.bbox();
        let m = config.ingest.bounds_margin_deg;
        validator.with_bounds((b.min_lon - m, b.min_lat - m, b.max_lon + m, b.max_lat + m))
    } else {
        validator
    }
}

fn load_city(
    config: &NodeConfig,
    state: &dyn StateStore,
    own_copy: &std::path::Path,
) -> Result<City, NodeError> {
    if let Some(dir) = &config.city.dir {
        let city = City::load(dir).map_err(|e| NodeError::Invalid(e.to_string()))?;
        crate::citystate::save_city(state, &city, own_copy)?;
        tracing::info!(dir = %dir.display(), devices = city.devices.len(), grids = city.grids.len(), "City model imported.");
        return Ok(city);
    }
    crate::citystate::load_city(own_copy)
}

/// A new event id: 48 bits of milliseconds, a 32-bit random process nonce and a 48-bit
/// counter, in Crockford base32 like a ULID (26 characters), so generated ids sort by
/// arrival and are unique without a system call per event.
pub fn new_event_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    static NONCE: OnceLock<(u32, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (nonce, start) = *NONCE.get_or_init(|| {
        let mut bytes = [0u8; 12];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        let nonce = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
        let start = u64::from_le_bytes(bytes[4..].try_into().expect("8 bytes")) >> 20;
        (nonce, start)
    });
    let count = (start.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed))) & ((1 << 48) - 1);
    let ms = (Utc::now().timestamp_millis() as u128) & ((1 << 48) - 1);
    let mut value = (ms << 80) | ((nonce as u128) << 48) | count as u128;
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    String::from_utf8(out.to_vec()).expect("ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_ulid_shaped() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| new_event_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 26 && id.bytes().all(|b| b.is_ascii_alphanumeric())));
    }
}
