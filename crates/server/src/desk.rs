//! The alert desk: routes every new alert to its unit as it is stored, keeps the deadline
//! clock, applies people's actions, and streams the changes.
//!
//! The alert row in the state store is the truth; the handling case lives in its body under
//! `handling` (see `cityward-alerts`). Every read-modify-write of an alert row — detection's
//! repeats and clears, actions, the clock — holds [`Desk::write_lock`], so none overwrites
//! another. The clock keeps only (deadline, alert id) pairs in memory; after a restart they
//! are read back from the open alerts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use chrono::{DateTime, Utc};
use cityward_alerts::{
    alert_scopes, Action, Actor, AlertClass, Correlator, AlertPlace, AlertsConfig, Case, Jurisdiction, Router, Routing, RoutingTable,
    Silence, SilenceTarget, Status, Webhook,
};
use cityward_model::City;
use cityward_store::{AlertFilter, AlertRow, NewDelivery, PageRequest, StateStore};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::node::{NodeError, Role, User};

/// One change to an alert, as the live stream sends it.
#[derive(Debug, Clone)]
pub struct AlertChange {
    /// The alert's id.
    pub id: String,
    /// `{"change": …, "alert": …}` as JSON text, serialised once for every listener.
    pub json: String,
}

/// The live stream's channels: one per unit with listeners, one for city-wide listeners.
/// A change goes to the city channel and to the channels of the units that may see it, so
/// a listener gets its jurisdiction's changes without filtering everyone's.
struct Hub {
    city: broadcast::Sender<Arc<AlertChange>>,
    units: Mutex<std::collections::HashMap<String, broadcast::Sender<Arc<AlertChange>>>>,
    /// The units answering for each region (their jurisdiction), from the city model.
    units_by_region: RwLock<std::collections::HashMap<String, Vec<String>>>,
}

const STREAM_BUFFER: usize = 4096;

impl Hub {
    fn new(city: &City) -> Hub {
        let hub = Hub {
            city: broadcast::channel(STREAM_BUFFER).0,
            units: Mutex::new(Default::default()),
            units_by_region: RwLock::new(Default::default()),
        };
        hub.set_city(city);
        hub
    }

    fn set_city(&self, city: &City) {
        let mut map: std::collections::HashMap<String, Vec<String>> = Default::default();
        for u in &city.units {
            if let Some(r) = &u.region {
                map.entry(r.clone()).or_default().push(u.id.clone());
            }
        }
        *self.units_by_region.write().expect("hub lock") = map;
    }

    fn subscribe(&self, jurisdiction: &Jurisdiction, unit: Option<&str>) -> broadcast::Receiver<Arc<AlertChange>> {
        match (jurisdiction, unit) {
            (Jurisdiction::City, _) => self.city.subscribe(),
            (_, Some(unit)) => {
                let mut units = self.units.lock().expect("hub lock");
                // Channels whose listeners all left go when someone new comes.
                units.retain(|_, c| c.receiver_count() > 0);
                units.entry(unit.to_string()).or_insert_with(|| broadcast::channel(STREAM_BUFFER).0).subscribe()
            }
            // Sees nothing: a channel nobody sends to.
            (_, None) => broadcast::channel(1).1,
        }
    }

    /// Whether anyone listens at all (nothing is built for nobody).
    fn listened(&self) -> bool {
        self.city.receiver_count() > 0 || self.units.lock().expect("hub lock").values().any(|c| c.receiver_count() > 0)
    }

    fn send(&self, change: Arc<AlertChange>, scopes: &[String]) {
        let _ = self.city.send(change.clone());
        let by_region = self.units_by_region.read().expect("hub lock");
        let mut targets: Vec<&str> = Vec::new();
        for scope in scopes {
            if let Some(region) = scope.strip_prefix("region:") {
                targets.extend(by_region.get(region).into_iter().flatten().map(String::as_str));
            } else if let Some(unit) = scope.strip_prefix("unit:") {
                targets.push(unit);
            }
        }
        targets.sort_unstable();
        targets.dedup();
        let units = self.units.lock().expect("hub lock");
        for t in targets {
            if let Some(c) = units.get(t) {
                let _ = c.send(change.clone());
            }
        }
    }
}

/// (deadline, alert id), earliest first.
type Due = Reverse<(DateTime<Utc>, String)>;

/// The alert desk of a node.
pub(crate) struct Desk {
    config: AlertsConfig,
    /// The node's name, the sender of CAP messages.
    sender: String,
    state: Arc<dyn StateStore>,
    router: RwLock<Arc<Router>>,
    /// (deadline, alert id); stale entries are skipped when they come up.
    due: Mutex<BinaryHeap<Due>>,
    writes: Mutex<()>,
    /// Silences, as stored under [`SILENCES_KEY`] (expired ones are kept a week for the record).
    silences: RwLock<Vec<Silence>>,
    /// Webhooks, as stored under [`WEBHOOKS_KEY`].
    webhooks: RwLock<Vec<Webhook>>,
    /// The client deliveries are posted with (kept, so connections are reused).
    webhook_agent: ureq::Agent,
    /// Recent alerts by place, for grouping alerts into incidents.
    correlator: Mutex<Correlator>,
    hub: Hub,
    metrics: Arc<Metrics>,
    /// The links to other tiers, when configured: alert changes go up (and down).
    tier: Option<Arc<crate::tier::Tier>>,
}

/// The state store's meta key of the silences.
const SILENCES_KEY: &str = "alert_silences";

/// The state store's meta key of the webhooks (with their secrets).
const WEBHOOKS_KEY: &str = "alert_webhooks";

/// A webhook as stored: with its secret, which the API never shows.
#[derive(Serialize, serde::Deserialize)]
struct StoredWebhook {
    id: String,
    url: String,
    secret: String,
    unit: Option<String>,
    category: Option<String>,
    enabled: bool,
    owner: String,
}

impl From<StoredWebhook> for Webhook {
    fn from(s: StoredWebhook) -> Webhook {
        Webhook { id: s.id, url: s.url, secret: s.secret, unit: s.unit, category: s.category, enabled: s.enabled, owner: s.owner }
    }
}

impl From<&Webhook> for StoredWebhook {
    fn from(w: &Webhook) -> StoredWebhook {
        StoredWebhook {
            id: w.id.clone(),
            url: w.url.clone(),
            secret: w.secret.clone(),
            unit: w.unit.clone(),
            category: w.category.clone(),
            enabled: w.enabled,
            owner: w.owner.clone(),
        }
    }
}

/// The alert as the API shows it: the stored document with its status and last change.
pub(crate) fn alert_json(row: &AlertRow) -> Value {
    let mut v = row.body.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert("status".into(), json!(row.status));
        o.insert("updated_at".into(), json!(cityward_model::format_time(&row.updated_at)));
    }
    v
}

/// An alert as it may leave the city's systems: without a resident reporter's contact
/// details (kept for staff in `open311.reporter`).
fn outward(mut alert: Value) -> Value {
    if let Some(o) = alert.get_mut("open311").and_then(Value::as_object_mut) {
        o.remove("reporter");
    }
    alert
}

fn point_of(row: &AlertRow) -> Option<(f64, f64)> {
    match (row.body.get("lon").and_then(Value::as_f64), row.body.get("lat").and_then(Value::as_f64)) {
        (Some(lon), Some(lat)) => Some((lon, lat)),
        _ => None,
    }
}

/// The handling of an alert's row, as stored in its body.
pub(crate) fn case_of(row: &AlertRow) -> Option<Case> {
    serde_json::from_value(row.body.get("handling")?.clone()).ok()
}

fn put_case(row: &mut AlertRow, case: &Case, city: &City) {
    row.status = case.status.as_str().into();
    let mut scopes = alert_scopes(city, row.grid.as_deref(), case);
    // Scopes only grow: whoever saw the alert keeps seeing it.
    for s in std::mem::take(&mut row.scopes) {
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    scopes.sort();
    row.scopes = scopes;
    if let Some(body) = row.body.as_object_mut() {
        body.insert("handling".into(), serde_json::to_value(case).unwrap_or(Value::Null));
    }
}

impl Desk {
    /// A desk routing with the stored table (or an empty one: every alert to the
    /// administrative unit of its place).
    pub(crate) fn open(
        config: AlertsConfig,
        sender: String,
        state: Arc<dyn StateStore>,
        city: Arc<City>,
        metrics: Arc<Metrics>,
        tier: Option<Arc<crate::tier::Tier>>,
    ) -> Result<Desk, NodeError> {
        let table = match state.routing()? {
            Some(v) => {
                let mut table: RoutingTable = serde_json::from_value(v.body.clone()).map_err(|e| {
                    NodeError::Internal(format!("stored routing table v{} is unreadable: {e}", v.version))
                })?;
                table.version = v.version as u64;
                table
            }
            None => RoutingTable::default(),
        };
        let router = match Router::new(city.clone(), table, config.boundary_m) {
            Ok(r) => r,
            Err(e) => {
                // A city changed under a stored table: route by the region tree until the
                // table is fixed, rather than refusing to start.
                tracing::error!(error = %e, "Stored routing table does not fit the city; alerts go to the administrative unit of their place until it is changed.");
                Router::new(city.clone(), RoutingTable::default(), config.boundary_m).map_err(|e| NodeError::Internal(e.to_string()))?
            }
        };
        let silences: Vec<Silence> = match state.meta_get(SILENCES_KEY)? {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| NodeError::Internal(format!("stored silences are unreadable: {e}")))?,
            None => Vec::new(),
        };
        let hub = Hub::new(&city);
        let webhooks: Vec<Webhook> = match state.meta_get(WEBHOOKS_KEY)? {
            Some(text) => serde_json::from_str::<Vec<StoredWebhook>>(&text)
                .map_err(|e| NodeError::Internal(format!("stored webhooks are unreadable: {e}")))?
                .into_iter()
                .map(Webhook::from)
                .collect(),
            None => Vec::new(),
        };
        let correlator = Correlator::new(config.correlate_m, config.correlate_within.as_millis() as i64);
        let webhook_agent = crate::webhooks::agent(config.webhook_ca_file.as_deref())?;
        let desk = Desk {
            webhook_agent,
            webhooks: RwLock::new(webhooks),
            correlator: Mutex::new(correlator),
            silences: RwLock::new(silences),
            config,
            sender,
            state,
            router: RwLock::new(Arc::new(router)),
            due: Mutex::new(BinaryHeap::new()),
            writes: Mutex::new(()),
            hub,
            metrics,
            tier,
        };
        desk.reload_open_alerts()?;
        Ok(desk)
    }

    /// Serialises read-modify-writes of alert rows.
    pub(crate) fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn router(&self) -> Arc<Router> {
        self.router.read().expect("router lock").clone()
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &AlertsConfig {
        &self.config
    }

    /// Live changes of the alerts `user` may see.
    pub(crate) fn subscribe(&self, user: &User) -> broadcast::Receiver<Arc<AlertChange>> {
        self.hub.subscribe(&self.jurisdiction(user), user.unit.as_deref())
    }

    /// After a (re)start: the deadlines of open alerts, and recent ones for correlation.
    fn reload_open_alerts(&self) -> Result<(), NodeError> {
        let filter = AlertFilter {
            statuses: Status::ALL.iter().filter(|s| s.is_open()).map(|s| s.as_str().to_string()).collect(),
            ..AlertFilter::default()
        };
        let mut page = PageRequest::first(1000);
        let mut n = 0;
        let mut recent = Vec::new();
        let since = Utc::now() - chrono::Duration::from_std(self.config.correlate_within).unwrap_or_default();
        loop {
            let got = self.state.list_alerts(&filter, &page)?;
            for row in &got.items {
                if let Some(due) = case_of(row).and_then(|c| c.next_due()) {
                    self.push_due(due, &row.id);
                    n += 1;
                }
                if let (Some(incident), Some(p), true) = (&row.incident, point_of(row), row.time >= since) {
                    recent.push((row.time.timestamp_millis(), p, incident.clone()));
                }
            }
            match got.next {
                Some(next) => page = PageRequest::after(next, 1000),
                None => break,
            }
        }
        // Oldest first, as the correlator forgets in arrival order.
        let mut correlator = self.correlator.lock().expect("correlator lock");
        for (t, p, incident) in recent.into_iter().rev() {
            correlator.remember(p, t, &incident);
        }
        tracing::info!(alerts = n, "Alert deadlines reloaded.");
        Ok(())
    }

    fn push_due(&self, due: DateTime<Utc>, id: &str) {
        self.due.lock().expect("due lock").push(Reverse((due, id.to_string())));
    }

    /// Routes a new alert's row (owner, deadlines, scopes, status `assigned`) before it is
    /// first stored. A maintenance ticket goes to its device's owning unit; an alert a
    /// silence covers is stored as `suppressed`.
    pub(crate) fn route_new(&self, row: &mut AlertRow, now: DateTime<Utc>) {
        let router = self.router();
        let city = router.city();
        let point = point_of(row);
        let place = AlertPlace { category: &row.category, point, grid: row.grid.as_deref() };
        let maintenance = self.config.is_maintenance(&row.category);
        let mut routing = router.route(&place);
        if maintenance {
            if let Some((device, unit)) = city.device(&row.key).and_then(|d| Some((d, d.owner_unit.clone()?))) {
                routing = Routing {
                    owner: Some(unit),
                    candidates: Vec::new(),
                    table_version: routing.table_version,
                    reason: format!("maintenance ticket for the owner of device {}", device.id),
                    grid: Some(device.grid.clone()),
                };
            } else {
                // A ticket is never a contest between neighbours.
                routing.candidates.clear();
            }
        }
        if row.grid.is_none() {
            row.grid = routing.grid.clone();
        }
        let deadlines = self.config.deadlines_for(&row.category, &row.severity);
        let mut case = Case::open(routing, deadlines, now);
        if maintenance {
            case.class = AlertClass::Maintenance;
        }
        row.class = case.class.as_str().into();
        if case.class == AlertClass::Incident {
            let incident = self.correlator.lock().expect("correlator lock").assign(&row.id, point, row.time.timestamp_millis());
            if let Some(body) = row.body.as_object_mut() {
                body.insert("incident".into(), json!(incident));
            }
            row.incident = Some(incident);
        }
        let target = SilenceTarget { rule: &row.rule, category: &row.category, key: &row.key, grid: row.grid.as_deref() };
        let silences = self.silences.read().expect("silences lock");
        if let Some(s) = silences.iter().find(|s| s.active(now) && s.covers(city, &target)) {
            case.suppress(&s.id, &s.reason, now);
        }
        drop(silences);
        put_case(row, &case, city);
    }

    /// An incident: the alerts grouped in it that `user` may see, oldest first.
    pub(crate) fn incident(&self, user: &User, id: &str) -> Result<Value, NodeError> {
        let filter = AlertFilter {
            incident: Some(id.to_string()),
            scopes: self.jurisdiction(user).scopes().map(<[String]>::to_vec),
            ..AlertFilter::default()
        };
        let mut rows = Vec::new();
        let mut page = PageRequest::first(1000);
        loop {
            let got = self.state.list_alerts(&filter, &page)?;
            rows.extend(got.items);
            match got.next {
                Some(next) if rows.len() < 10_000 => page = PageRequest::after(next, 1000),
                _ => break,
            }
        }
        if rows.is_empty() {
            return Err(NodeError::NotFound(format!("incident `{id}` has no alerts in your jurisdiction")));
        }
        rows.reverse();
        let mut categories: Vec<&str> = rows.iter().map(|r| r.category.as_str()).collect();
        categories.sort_unstable();
        categories.dedup();
        let open = rows.iter().filter(|r| Status::parse(&r.status).is_some_and(Status::is_open)).count();
        Ok(json!({
            "id": id,
            "alerts": rows.iter().map(alert_json).collect::<Vec<_>>(),
            "count": rows.len(),
            "open": open,
            "categories": categories,
            "first_time": cityward_model::format_time(&rows[0].time),
            "last_time": cityward_model::format_time(&rows[rows.len() - 1].time),
        }))
    }

    /// Silences, newest first: those running and those that ended in the last week.
    pub(crate) fn silences(&self) -> Value {
        let mut list = self.silences.read().expect("silences lock").clone();
        list.reverse();
        let now = Utc::now();
        let items: Vec<Value> = list
            .iter()
            .map(|s| {
                let mut v = json!(s);
                v["active"] = json!(s.active(now));
                v
            })
            .collect();
        json!({"items": items, "next": null})
    }

    /// Sets a silence for `user`; within their jurisdiction unless they work city-wide.
    pub(crate) fn add_silence(&self, user: &User, mut silence: Silence) -> Result<Value, NodeError> {
        let now = Utc::now();
        let router = self.router();
        let city = router.city();
        silence.check(city, now).map_err(NodeError::Invalid)?;
        let jurisdiction = self.jurisdiction(user);
        if let Jurisdiction::Scopes(_) = jurisdiction {
            let region = silence.region.clone().or_else(|| silence.grid.as_deref().and_then(|g| city.grid(g)).map(|g| g.region.clone()));
            let inside = region.is_some_and(|r| {
                let scopes: Vec<String> = city.region_chain(&r).iter().map(|reg| format!("region:{}", reg.id)).collect();
                jurisdiction.sees(&scopes)
            });
            if !inside {
                return Err(NodeError::Forbidden(
                    "a silence set by a unit with a region must name a region or grid inside that region".into(),
                ));
            }
        }
        silence.id = format!("sil-{}", crate::auth::random_hex(6)?);
        silence.owner = user.username.clone();
        silence.created_at = Some(now);
        self.store_silences(|list| list.push(silence.clone()))?;
        tracing::info!(silence = %silence.id, user = %user.username, reason = %silence.reason, "Silence set.");
        self.audit(&user.username, "silence.add", &silence.id, json!(silence));
        Ok(json!(silence))
    }

    /// Ends a silence now (it stays listed, ended).
    pub(crate) fn end_silence(&self, user: &User, id: &str) -> Result<Value, NodeError> {
        let now = Utc::now();
        let mut found = None;
        self.store_silences(|list| {
            if let Some(s) = list.iter_mut().find(|s| s.id == id && s.expires > now) {
                s.expires = now;
                found = Some(s.clone());
            }
        })?;
        let s = found.ok_or_else(|| NodeError::NotFound(format!("no running silence `{id}`; list them with GET /api/v1/silences")))?;
        tracing::info!(silence = %id, user = %user.username, "Silence ended.");
        self.audit(&user.username, "silence.end", id, json!({}));
        Ok(json!(s))
    }

    fn store_silences(&self, change: impl FnOnce(&mut Vec<Silence>)) -> Result<(), NodeError> {
        let mut list = self.silences.write().expect("silences lock");
        let mut next = list.clone();
        change(&mut next);
        let week_ago = Utc::now() - chrono::Duration::days(7);
        next.retain(|s| s.expires > week_ago);
        let text = serde_json::to_string(&next).map_err(|e| NodeError::Internal(e.to_string()))?;
        self.state.meta_set(SILENCES_KEY, &text)?;
        *list = next;
        Ok(())
    }

    /// Tells the desk that routed rows were stored: their deadlines start, and the stream
    /// hears of them.
    pub(crate) fn stored_new(&self, rows: &[AlertRow]) {
        for row in rows {
            if let Some(due) = case_of(row).and_then(|c| c.next_due()) {
                self.push_due(due, &row.id);
            }
            self.stream("raised", row);
            if let Some(tier) = &self.tier {
                tier.alert_changed("raised", row);
            }
        }
        self.queue_deliveries(rows.iter().map(|r| ("raised", r)));
        self.metrics.add("cityward_alerts_routed_total", &[], rows.len() as f64);
    }

    /// Routes and stores an alert raised outside the rule engine (a resident's report, a
    /// call-taker's entry); answers the stored row. An id already stored is a conflict.
    pub(crate) fn raise(&self, mut row: AlertRow) -> Result<AlertRow, NodeError> {
        let now = Utc::now();
        self.route_new(&mut row, now);
        let _guard = self.write_lock();
        let inserted = self.state.write_alerts(std::slice::from_ref(&row), &[])?;
        if inserted.is_empty() {
            return Err(NodeError::Conflict(format!("alert `{}` exists already", row.id)));
        }
        self.stored_new(std::slice::from_ref(&row));
        Ok(row)
    }

    /// Tells the live stream, the webhooks and the other tiers of a row changed here.
    pub(crate) fn publish(&self, change: &str, row: &AlertRow) {
        self.announce(change, row);
        if let Some(tier) = &self.tier {
            tier.alert_changed(change, row);
        }
    }

    /// Tells the live stream and the webhooks of a changed row (one that another tier
    /// changed: it does not go back there).
    pub(crate) fn announce(&self, change: &str, row: &AlertRow) {
        self.stream(change, row);
        self.queue_deliveries(std::iter::once((change, row)));
    }

    fn stream(&self, change: &str, row: &AlertRow) {
        if !self.hub.listened() {
            return;
        }
        let json = json!({"change": change, "alert": alert_json(row)}).to_string();
        self.hub.send(Arc::new(AlertChange { id: row.id.clone(), json }), &row.scopes);
    }

    /// Queues a delivery per change for every webhook that wants it, durably, so that a
    /// slow or dead endpoint delays only its own deliveries.
    fn queue_deliveries<'r>(&self, changes: impl Iterator<Item = (&'r str, &'r AlertRow)>) {
        let hooks = self.webhooks.read().expect("webhooks lock");
        if hooks.is_empty() {
            return;
        }
        let now = Utc::now();
        let mut batch = Vec::new();
        for (change, row) in changes {
            let case = case_of(row);
            let units: Vec<&str> = case.as_ref().map(|c| c.units().into_iter().collect()).unwrap_or_default();
            for hook in hooks.iter().filter(|h| h.wants(&row.category, &units)) {
                batch.push(NewDelivery {
                    webhook: hook.id.clone(),
                    alert: row.id.clone(),
                    change: change.to_string(),
                    payload: json!({"change": change, "alert": outward(alert_json(row))}),
                    created_at: now,
                });
            }
        }
        if let Err(e) = self.state.insert_deliveries(&batch) {
            tracing::error!(error = %e, deliveries = batch.len(), "Webhook deliveries could not be queued.");
        }
    }

    /// The webhooks (secrets not shown).
    pub(crate) fn webhooks(&self) -> Value {
        json!({"items": *self.webhooks.read().expect("webhooks lock"), "next": null})
    }

    /// The client webhook deliveries are posted with.
    pub(crate) fn webhook_agent(&self) -> &ureq::Agent {
        &self.webhook_agent
    }

    /// A webhook by id, with its secret (for the sender).
    pub(crate) fn webhook(&self, id: &str) -> Option<Webhook> {
        self.webhooks.read().expect("webhooks lock").iter().find(|w| w.id == id).cloned()
    }

    /// Adds a webhook for `user`.
    pub(crate) fn add_webhook(&self, user: &User, mut hook: Webhook) -> Result<Value, NodeError> {
        let router = self.router();
        hook.check(|u| router.city().unit(u).is_some()).map_err(NodeError::Invalid)?;
        hook.id = format!("wh-{}", crate::auth::random_hex(6)?);
        hook.owner = user.username.clone();
        self.store_webhooks(|list| list.push(hook.clone()))?;
        tracing::info!(webhook = %hook.id, url = %hook.url, user = %user.username, "Webhook added.");
        self.audit(&user.username, "webhook.add", &hook.id, json!(hook));
        Ok(json!(hook))
    }

    /// Removes a webhook (its deliveries stay listed).
    pub(crate) fn remove_webhook(&self, user: &User, id: &str) -> Result<(), NodeError> {
        let mut found = false;
        self.store_webhooks(|list| {
            let before = list.len();
            list.retain(|w| w.id != id);
            found = list.len() < before;
        })?;
        if !found {
            return Err(NodeError::NotFound(format!("no webhook `{id}`; list them with GET /api/v1/webhooks")));
        }
        tracing::info!(webhook = %id, user = %user.username, "Webhook removed.");
        self.audit(&user.username, "webhook.remove", id, json!({}));
        Ok(())
    }

    fn store_webhooks(&self, change: impl FnOnce(&mut Vec<Webhook>)) -> Result<(), NodeError> {
        let mut list = self.webhooks.write().expect("webhooks lock");
        let mut next = list.clone();
        change(&mut next);
        let stored: Vec<StoredWebhook> = next.iter().map(StoredWebhook::from).collect();
        let text = serde_json::to_string(&stored).map_err(|e| NodeError::Internal(e.to_string()))?;
        self.state.meta_set(WEBHOOKS_KEY, &text)?;
        *list = next;
        Ok(())
    }

    /// Appends to the audit log; a failure is logged and counted, never hidden.
    pub(crate) fn audit(&self, actor: &str, action: &str, target: &str, detail: Value) {
        let entry = cityward_store::NewAuditEntry { actor: actor.into(), action: action.into(), target: target.into(), detail };
        if let Err(e) = self.state.append_audit(&entry, Utc::now()) {
            self.metrics.add("cityward_audit_failures_total", &[], 1.0);
            tracing::error!(actor, action, target, error = %e, "Audit entry could not be written.");
        }
    }

    /// The node's metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The state store (for the webhook sender).
    pub(crate) fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// What `user` may see.
    pub(crate) fn jurisdiction(&self, user: &User) -> Jurisdiction {
        match (&user.unit, user.role) {
            (_, Role::Admin) => Jurisdiction::City,
            (Some(unit), _) => Jurisdiction::of_unit(self.router().city(), unit),
            // Analysts, auditors and read tokens without a unit work city-wide; dispatchers
            // and responders act for a unit and see nothing without one.
            (None, Role::Analyst | Role::Auditor | Role::Reader) => Jurisdiction::City,
            (None, _) => Jurisdiction::Scopes(Vec::new()),
        }
    }

    /// The alert `id` if `user` may see it.
    pub(crate) fn visible(&self, user: &User, id: &str) -> Result<AlertRow, NodeError> {
        let missing = || NodeError::NotFound(format!("alert `{id}` does not exist in your jurisdiction; list alerts with GET /api/v1/alerts"));
        let row = self.state.alert(id)?.ok_or_else(missing)?;
        if !self.jurisdiction(user).sees(&row.scopes) {
            return Err(missing());
        }
        Ok(row)
    }

    /// The alert `id` with its evidence, for `user`; the read is audited.
    pub(crate) fn read(&self, user: &User, id: &str) -> Result<AlertRow, NodeError> {
        let row = self.visible(user, id)?;
        let evidence = row.body.get("evidence").and_then(Value::as_array).map_or(0, Vec::len);
        self.audit(&user.username, "alert.read", id, json!({"evidence": evidence}));
        Ok(row)
    }

    /// One page of the alerts `user` may see, narrowed by `filter` (its `scopes` are
    /// set here from the user's jurisdiction).
    pub(crate) fn list(&self, user: &User, mut filter: AlertFilter, page: &PageRequest) -> Result<Value, NodeError> {
        if let Some(c) = &filter.class {
            if ![AlertClass::Incident, AlertClass::Maintenance].iter().any(|k| k.as_str() == c) {
                return Err(NodeError::Invalid(format!("class `{c}` is not a class; use incident or maintenance")));
            }
        }
        for s in &filter.statuses {
            if Status::parse(s).is_none() {
                let names: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
                return Err(NodeError::Invalid(format!("status `{s}` is not a status; use one of {}", names.join(", "))));
            }
        }
        for s in &filter.severities {
            if !["low", "medium", "high", "critical"].contains(&s.as_str()) {
                return Err(NodeError::Invalid(format!("severity `{s}` is not a severity; use one of low, medium, high, critical")));
            }
        }
        filter.scopes = self.jurisdiction(user).scopes().map(<[String]>::to_vec);
        let page = self.state.list_alerts(&filter, page)?;
        let items: Vec<Value> = page.items.iter().map(alert_json).collect();
        Ok(json!({"items": items, "next": page.next}))
    }

    /// Records a photo stored for alert `id` (its file written already): listed in the
    /// alert's `photos` and as a `photo` step of its timeline. Whoever may act on an
    /// alert and sees it may add one.
    pub(crate) fn add_photo(&self, user: &User, id: &str, photo: Value) -> Result<Value, NodeError> {
        if !matches!(user.role, Role::Admin | Role::Dispatcher | Role::Responder) {
            return Err(NodeError::Forbidden(format!("role `{}` may not add photos to alerts", user.role.as_str())));
        }
        let _guard = self.write_lock();
        let mut row = self.visible(user, id)?;
        let router = self.router();
        let now = Utc::now();
        let mut case = case_of(&row).ok_or_else(|| NodeError::Conflict(format!("alert `{id}` is not routed yet; try again in a second")))?;
        case.timeline.push(cityward_alerts::Step {
            at: now,
            actor: user.username.clone(),
            action: "photo".into(),
            from: case.status,
            to: case.status,
            unit: user.unit.clone(),
            note: photo["id"].as_str().map(|p| format!("photo {p}")),
        });
        if let Some(body) = row.body.as_object_mut() {
            let photos = body.entry("photos").or_insert_with(|| json!([]));
            if let Some(list) = photos.as_array_mut() {
                list.push(photo.clone());
            }
        }
        put_case(&mut row, &case, router.city());
        row.updated_at = now;
        self.state.update_alert(&row)?;
        self.audit(&user.username, "alert.photo", id, json!({"photo": photo["id"], "bytes": photo["bytes"]}));
        self.publish("photo", &row);
        Ok(photo)
    }

    /// Applies `user`'s action to alert `id`.
    pub(crate) fn act(&self, user: &User, id: &str, action: &Action, note: Option<&str>) -> Result<Value, NodeError> {
        let may = match action {
            Action::Claim | Action::Ack | Action::Arrive | Action::Resolve => {
                matches!(user.role, Role::Admin | Role::Dispatcher | Role::Responder)
            }
            Action::Dispatch { .. } | Action::Transfer { .. } | Action::Close { .. } | Action::Reopen => {
                matches!(user.role, Role::Admin | Role::Dispatcher)
            }
        };
        if !may {
            return Err(NodeError::Forbidden(format!(
                "role `{}` may not {} alerts; ask a dispatcher",
                user.role.as_str(),
                action.name()
            )));
        }
        let _guard = self.write_lock();
        let mut row = self.visible(user, id)?;
        let router = self.router();
        let city = router.city();
        let now = Utc::now();
        let mut case = match case_of(&row) {
            Some(c) => c,
            None => {
                // Stored before routing existed: route it now.
                self.route_new(&mut row, now);
                case_of(&row).ok_or_else(|| NodeError::Internal(format!("alert `{id}` could not be routed")))?
            }
        };
        let actor = Actor {
            name: user.username.clone(),
            unit: if user.role == Role::Admin { None } else { user.unit.clone() },
        };
        case.apply(action, &actor, note, now, city, &self.config).map_err(|e| match e {
            cityward_alerts::ActionError::NotNow { .. } => NodeError::Conflict(e.to_string()),
            cityward_alerts::ActionError::NotResponsible { .. } => NodeError::Forbidden(e.to_string()),
            cityward_alerts::ActionError::Invalid(m) => NodeError::Invalid(m),
        })?;
        put_case(&mut row, &case, city);
        row.updated_at = now;
        self.state.update_alert(&row)?;
        if let Some(due) = case.next_due() {
            self.push_due(due, &row.id);
        }
        self.metrics.add("cityward_alerts_actions_total", &[("action", action.name())], 1.0);
        self.audit(&user.username, &format!("alert.{}", action.name()), id, json!({"status": case.status, "note": note}));
        tracing::info!(alert = %id, action = action.name(), user = %user.username, status = %case.status, "Alert changed.");
        self.publish(action.name(), &row);
        Ok(alert_json(&row))
    }

    /// The alert as an OASIS CAP 1.2 message, if `user` may see it.
    pub(crate) fn cap(&self, user: &User, id: &str) -> Result<String, NodeError> {
        let row = self.visible(user, id)?;
        self.audit(&user.username, "alert.export", id, json!({"format": "cap"}));
        let case = case_of(&row).ok_or_else(|| NodeError::Conflict(format!("alert `{id}` has not been routed yet; try again in a moment")))?;
        let b = &row.body;
        let text = |k: &str| b.get(k).and_then(Value::as_str);
        let point = match (b.get("lon").and_then(Value::as_f64), b.get("lat").and_then(Value::as_f64)) {
            (Some(lon), Some(lat)) => Some((lon, lat)),
            _ => None,
        };
        let alert = cityward_alerts::CapAlert {
            id: &row.id,
            rule: &row.rule,
            title: text("title").unwrap_or(&row.rule),
            category: &row.category,
            severity: &row.severity,
            time: row.time,
            point,
            area: text("zone").or(row.grid.as_deref()),
            count: b.get("count").and_then(Value::as_u64).unwrap_or(1),
        };
        Ok(cityward_alerts::cap_message(&alert, &case, &self.sender))
    }

    /// Acts on every deadline passed by `now`; returns how many alerts changed.
    pub(crate) fn tick(&self, now: DateTime<Utc>) -> usize {
        let mut changed = 0;
        loop {
            let id = {
                let mut due = self.due.lock().expect("due lock");
                match due.peek() {
                    Some(Reverse((at, _))) if *at <= now => due.pop().map(|Reverse((_, id))| id),
                    _ => None,
                }
            };
            let Some(id) = id else { break };
            match self.clock_one(&id, now) {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(alert = %id, error = %e, "Alert deadline could not be applied; retrying in a minute.");
                    self.push_due(now + chrono::Duration::minutes(1), &id);
                }
            }
        }
        changed
    }

    fn clock_one(&self, id: &str, now: DateTime<Utc>) -> Result<bool, NodeError> {
        let _guard = self.write_lock();
        let Some(mut row) = self.state.alert(id)? else { return Ok(false) };
        // Deadlines of an alert raised at another node are that node's to keep: it
        // escalates, and its changes arrive here.
        if crate::tier::foreign_origin(&row, &self.sender).is_some() {
            return Ok(false);
        }
        let Some(mut case) = case_of(&row) else { return Ok(false) };
        let before = case.clone();
        let router = self.router();
        let steps = case.on_clock(now, router.city());
        if let Some(due) = case.next_due() {
            self.push_due(due, id);
        }
        if case == before {
            return Ok(false);
        }
        put_case(&mut row, &case, router.city());
        let seen = row.updated_at;
        row.updated_at = now;
        // Another process of the node may keep this alert's clock too: whoever writes
        // first acts; the other reads the new row at its next tick.
        if !self.state.update_alert_if_unchanged(&row, seen)? {
            self.push_due(now + chrono::Duration::seconds(1), id);
            return Ok(false);
        }
        for step in &steps {
            self.metrics.add("cityward_alerts_deadline_missed_total", &[("action", if step.action == "retrigger" { "retrigger" } else { "escalate" })], 1.0);
            tracing::warn!(alert = %id, action = %step.action, unit = step.unit.as_deref().unwrap_or("-"), note = step.note.as_deref().unwrap_or(""), "Alert deadline missed.");
            self.publish(&step.action, &row);
        }
        Ok(!steps.is_empty())
    }

    /// The routing table in force.
    pub(crate) fn routing(&self) -> Value {
        let router = self.router();
        let mut v = json!(router.table());
        if let Ok(Some(stored)) = self.state.routing() {
            v["changed_at"] = json!(cityward_model::format_time(&stored.changed_at));
            v["changed_by"] = json!(stored.changed_by);
            v["note"] = json!(stored.note);
        }
        v
    }

    /// Past versions of the routing table, newest first.
    pub(crate) fn routing_history(&self, limit: usize) -> Result<Value, NodeError> {
        let items: Vec<Value> = self
            .state
            .routing_history(limit)?
            .into_iter()
            .map(|v| {
                json!({
                    "version": v.version,
                    "entries": v.body.get("entries").cloned().unwrap_or(json!([])),
                    "changed_at": cityward_model::format_time(&v.changed_at),
                    "changed_by": v.changed_by,
                    "note": v.note,
                })
            })
            .collect();
        Ok(json!({"items": items, "next": null}))
    }

    /// Checks a new routing table against the city, stores it as the next version, and
    /// routes with it from now on (no restart).
    pub(crate) fn set_routing(
        &self,
        user: &User,
        table: RoutingTable,
        note: &str,
        expected_version: Option<u64>,
    ) -> Result<Value, NodeError> {
        let entries = json!({"entries": table.entries});
        let routing = self.set_routing_as(&user.username, table, note, expected_version)?;
        // The tiers below route by the same table (they share the city model).
        if let Some(tier) = &self.tier {
            let mut body = entries;
            body["note"] = json!(note.trim());
            tier.publish_down("routing", format!("routing:{}@{}", self.sender, routing["version"]), body);
        }
        Ok(routing)
    }

    /// Stores and applies a new routing table on behalf of `actor` (a user, or the tier
    /// above that published it).
    pub(crate) fn set_routing_as(
        &self,
        actor: &str,
        table: RoutingTable,
        note: &str,
        expected_version: Option<u64>,
    ) -> Result<Value, NodeError> {
        if note.trim().is_empty() {
            return Err(NodeError::Invalid("a routing change needs a `note` saying why; it is kept with the version".into()));
        }
        let city = self.router().city().clone();
        // Checked before storing, so a table that does not fit never becomes a version.
        Router::new(city.clone(), table.clone(), self.config.boundary_m).map_err(|e| NodeError::Invalid(e.to_string()))?;
        let body = json!({"entries": table.entries});
        let stored = self
            .state
            .put_routing(&body, actor, note.trim(), expected_version.map(|v| v as i64))?;
        let table = RoutingTable { version: stored.version as u64, entries: table.entries };
        let router = Router::new(city, table, self.config.boundary_m).map_err(|e| NodeError::Internal(e.to_string()))?;
        *self.router.write().expect("router lock") = Arc::new(router);
        tracing::info!(version = stored.version, user = %actor, note = %stored.note, "Routing table changed.");
        self.audit(actor, "routing.put", "routing", json!({"version": stored.version, "note": stored.note}));
        Ok(self.routing())
    }

    /// Routes with a new city model from now on; refused when the table names what the new
    /// city lacks.
    pub(crate) fn set_city(&self, city: Arc<City>) -> Result<(), NodeError> {
        let city_for_hub = city.clone();
        let table = self.router().table().clone();
        let router = Router::new(city, table, self.config.boundary_m)
            .map_err(|e| NodeError::Invalid(format!("the new city does not fit the routing table: {e}; change the routing table first")))?;
        *self.router.write().expect("router lock") = Arc::new(router);
        self.hub.set_city(&city_for_hub);
        Ok(())
    }
}

/// Runs the deadline clock until the node stops.
pub(crate) async fn run_clock(desk: Arc<Desk>) {
    let mut tick = tokio::time::interval(desk.config().clock_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let desk = desk.clone();
        // State store writes are blocking.
        let _ = tokio::task::spawn_blocking(move || desk.tick(Utc::now())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_leave_without_the_reporters_contact_details() {
        let alert = json!({"id": "r1", "open311": {"description": "blocked exit", "reporter": {"email": "a@b.c"}}, "status": "new"});
        let out = outward(alert);
        assert_eq!(out, json!({"id": "r1", "open311": {"description": "blocked exit"}, "status": "new"}));
        assert_eq!(outward(json!({"id": "a1"})), json!({"id": "a1"}));
    }
}
