//! This node's place among the tiers: what it sends up, what it applies from below and
//! from above (the transport is `cityward-tier`, over NATS JetStream).
//!
//! Up go every change of every alert this node holds (its own, and those that came from
//! below, so the city sees the whole city), and per-minute summaries of its events (counts
//! per grid and kind). Down go rules, routing tables, zones and hotlists published here, and
//! changes made here to alerts raised below, so that the community sees what the street did with its escalated
//! alert. Raw events stay where they were taken.
//!
//! Applying is idempotent: an alert change carries the alert's whole row and is applied
//! only when newer (`updated_at`) than the stored row; a summary is an event with a fixed
//! id, which the node's duplicate index refuses the second time. After a crash the node
//! sends again every alert changed since the last change its outbox took, and summarises
//! again from the last minute it recorded as sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use cityward_store::{AlertFilter, AlertRow, PageRequest, RulePut};
use cityward_tier::{Envelope, Link, LinkConfig};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::node::{Channel, Node, NodeError, User};

/// Envelopes waiting for the outbox or the downlink; beyond it they are counted as lost
/// for the other tier (and an alert's next change carries its whole row again).
const PIPE: usize = 65_536;
/// Most envelopes appended to the outbox as one message.
const OUTBOX_BATCH: usize = 1024;
/// `meta` key: the `updated_at` (µs) of the newest alert change the outbox took.
const SENT_UPTO_KEY: &str = "tier.up.sent_upto";
/// `meta` key: the first minute not yet summarised for the tier above.
const SUMMARY_UPTO_KEY: &str = "tier.summary.upto";
/// The kind summaries are stored as at the tiers above.
pub(crate) const SUMMARY_KIND: &str = "tier_summary";

/// The node's tier links.
pub(crate) struct Tier {
    link: Arc<Link>,
    node: String,
    has_parent: bool,
    up: mpsc::Sender<Envelope>,
    down: mpsc::Sender<Envelope>,
    receivers: Mutex<Option<(mpsc::Receiver<Envelope>, mpsc::Receiver<Envelope>)>>,
    lost: AtomicU64,
}

impl Tier {
    /// Connects to this node's NATS server when `[tier]` is enabled.
    pub(crate) async fn open(config: &NodeConfig) -> Result<Option<Arc<Tier>>, NodeError> {
        let t = &config.tier;
        if !t.enabled {
            return Ok(None);
        }
        let link = Link::open(LinkConfig {
            node: config.node.name.clone(),
            nats: t.nats.clone(),
            parent: t.parent.clone(),
            outbox_max_bytes: t.outbox_max_bytes as i64,
            downlink_keep: t.downlink_keep,
        })
        .await
        .map_err(|e| NodeError::Unavailable(e.to_string()))?;
        let (up, up_rx) = mpsc::channel(PIPE);
        let (down, down_rx) = mpsc::channel(PIPE);
        tracing::info!(node = %config.node.name, parent = %t.parent, nats = %t.nats, "Tier links open.");
        Ok(Some(Arc::new(Tier {
            link: Arc::new(link),
            node: config.node.name.clone(),
            has_parent: !t.parent.is_empty(),
            up,
            down,
            receivers: Mutex::new(Some((up_rx, down_rx))),
            lost: AtomicU64::new(0),
        })))
    }

    fn send(&self, pipe: &mpsc::Sender<Envelope>, envelope: Envelope) {
        if pipe.try_send(envelope).is_err() {
            let lost = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
            if lost.is_power_of_two() {
                tracing::error!(lost, "Tier pipe full: changes are not reaching the other tier; is this node's NATS server up?");
            }
        }
    }

    /// An alert changed here (raised, acted on, escalated by the clock): tell the tier
    /// above, and the tier below when the alert came from there.
    pub(crate) fn alert_changed(&self, change: &str, row: &AlertRow) {
        let envelope = alert_envelope(&self.node, change, row);
        if foreign_origin(row, &self.node).is_some() {
            self.send(&self.down, envelope.clone());
        }
        if self.has_parent {
            self.send(&self.up, envelope);
        }
    }

    /// Something the tiers below should apply (rules, hotlists).
    pub(crate) fn publish_down(&self, kind: &str, id: String, body: Value) {
        self.send(&self.down, Envelope::new(kind, id, &self.node, &body));
    }

    /// Asks the node `origin` below for the evidence events of its alert `id`, for `user`
    /// (who may see the alert here); that node answers from its lake and records the read
    /// in its own audit log.
    pub(crate) async fn ask_evidence(&self, origin: &str, id: &str, user: &User) -> Result<Vec<Value>, NodeError> {
        let ask = json!({"alert": id, "user": user.username, "unit": user.unit, "from": self.node});
        let reply = self
            .link
            .request(origin, "evidence", ask.to_string().into(), Duration::from_secs(15))
            .await
            .map_err(|e| NodeError::Unavailable(format!("the evidence of alert `{id}` is at node `{origin}`: {e}")))?
            .ok_or_else(|| NodeError::Unavailable(format!("the evidence of alert `{id}` is at node `{origin}`, which does not answer now (link cut or node down); try again later")))?;
        let answer: Value = serde_json::from_slice(&reply).map_err(|e| NodeError::Internal(format!("node `{origin}` answered the evidence request unreadably: {e}")))?;
        match answer["items"].as_array() {
            Some(items) => Ok(items.clone()),
            None => Err(NodeError::Unavailable(format!("node `{origin}`: {}", answer["error"].as_str().unwrap_or("no evidence")))),
        }
    }

    /// For `/api/v1/status`.
    pub(crate) fn status(&self) -> Value {
        let s = self.link.stats();
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "parent": self.link.config().parent,
            "uplink_up": self.has_parent.then(|| s.up.load(Ordering::Relaxed)),
            "queued_up": n(&s.queued),
            "forwarded_up": n(&s.forwarded),
            "duplicate_batches": n(&s.duplicate_batches),
            "uplink_failures": n(&s.up_failures),
            "outbox_failures": n(&s.outbox_failures),
            "applied_from_below": n(&s.inbox_applied),
            "applied_from_above": n(&s.downlink_applied),
            "lost": self.lost.load(Ordering::Relaxed),
        })
    }
}

/// The origin of an alert that came from another node, if it did.
pub(crate) fn foreign_origin<'r>(row: &'r AlertRow, node: &str) -> Option<&'r str> {
    row.body.pointer("/tier/origin").and_then(Value::as_str).filter(|o| *o != node)
}

/// An alert change as it crosses tiers: the whole row, applied when newer.
#[derive(serde::Serialize, serde::Deserialize)]
struct AlertChangeBody<R> {
    change: String,
    row: R,
}

/// The envelope of a change; its id is the alert's id and the row's `updated_at` (µs).
fn alert_envelope(node: &str, change: &str, row: &AlertRow) -> Envelope {
    let id = format!("{}@{}", row.id, row.updated_at.timestamp_micros());
    Envelope::new("alert", id, node, &AlertChangeBody { change: change.to_string(), row })
}

/// The `updated_at` (µs) an alert envelope's id ends with.
fn change_time(e: &Envelope) -> Option<i64> {
    e.id.rsplit_once('@').and_then(|(_, t)| t.parse().ok())
}

/// Starts the tasks that move envelopes: outbox and downlink pumps, the forwarder, the
/// inbox and downlink appliers, the summariser and the resend after a restart.
pub(crate) fn start(node: Arc<Node>) -> Vec<JoinHandle<()>> {
    let Some(tier) = node.tier().cloned() else { return Vec::new() };
    let Some((up_rx, down_rx)) = tier.receivers.lock().expect("tier lock").take() else { return Vec::new() };
    let mut tasks = Vec::new();
    let link = tier.link.clone();
    tasks.push(tokio::spawn(pump(node.clone(), link.clone(), up_rx, true)));
    tasks.push(tokio::spawn(pump(node.clone(), link.clone(), down_rx, false)));
    tasks.push(tokio::spawn(link.clone().run_forwarder()));
    let n = node.clone();
    tasks.push(tokio::spawn(link.clone().run_inbox(move |batch| apply_from_below(n.clone(), batch))));
    let n = node.clone();
    tasks.push(tokio::spawn(link.clone().run_downlink(move |batch| apply_from_above(n.clone(), batch))));
    let n = node.clone();
    tasks.push(tokio::spawn(link.clone().serve("evidence", move |ask| answer_evidence(n.clone(), ask))));
    if tier.has_parent {
        tasks.push(tokio::spawn(resend_after_restart(node.clone())));
        tasks.push(tokio::spawn(summarise(node.clone())));
    }
    tasks
}

/// Moves envelopes from a pipe to the outbox (`up`) or the downlink, in batches; while
/// this node's own NATS server refuses them, keeps trying with the same batch.
async fn pump(node: Arc<Node>, link: Arc<Link>, mut rx: mpsc::Receiver<Envelope>, up: bool) {
    let mut batch = Vec::with_capacity(OUTBOX_BATCH);
    // The newest alert change stored in the outbox and not yet recorded, and when the
    // last one was.
    let mut newest: Option<i64> = None;
    let mut recorded: Option<std::time::Instant> = None;
    loop {
        if rx.recv_many(&mut batch, OUTBOX_BATCH).await == 0 {
            return;
        }
        let mut wait = Duration::from_millis(100);
        loop {
            let sent = if up { link.send_up(&batch).await } else { link.send_down(&batch).await };
            match sent {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, envelopes = batch.len(), "Tier envelopes not stored yet; retrying.");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        if up {
            newest = batch.iter().filter(|e| e.kind == "alert").filter_map(change_time).max().max(newest);
            // Recorded at most once a second, not per batch: the resend after a restart
            // starts a minute earlier anyway.
            if let Some(micros) = newest.filter(|_| recorded.is_none_or(|r| r.elapsed() >= Duration::from_secs(1))) {
                let state = node.state().clone();
                let _ = tokio::task::spawn_blocking(move || state.meta_set(SENT_UPTO_KEY, &micros.to_string())).await;
                newest = None;
                recorded = Some(std::time::Instant::now());
            }
        }
        batch.clear();
    }
}

/// After a restart, the changes that may have been lost with the pipe: every alert written
/// since the newest change the outbox took (the parent ignores what it has).
async fn resend_after_restart(node: Arc<Node>) {
    let state = node.state().clone();
    let tier = node.tier().cloned().expect("tier");
    let found = tokio::task::spawn_blocking(move || -> Result<Vec<AlertRow>, NodeError> {
        let Some(since) = state.meta_get(SENT_UPTO_KEY)?.and_then(|s| s.parse::<i64>().ok()) else { return Ok(Vec::new()) };
        // A minute's margin: changes are written from more than one thread, so the pipe's
        // order is the order of their times only roughly; what the parent has it ignores.
        let since = DateTime::<Utc>::from_timestamp_micros(since).unwrap_or_default() - chrono::Duration::minutes(1);
        let filter = AlertFilter { updated_since: Some(since), ..AlertFilter::default() };
        let mut rows = Vec::new();
        let mut page = PageRequest::first(1000);
        loop {
            let got = state.list_alerts(&filter, &page)?;
            rows.extend(got.items);
            match got.next {
                Some(next) => page = PageRequest::after(next, 1000),
                None => return Ok(rows),
            }
        }
    })
    .await;
    match found {
        Ok(Ok(rows)) => {
            tracing::info!(alerts = rows.len(), "Alerts changed since the last acknowledged change sent up again.");
            for row in rows {
                tier.alert_changed("resent", &row);
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "Alerts changed before the restart could not be listed for the tier above."),
        Err(e) => tracing::error!(error = %e, "Resend task failed."),
    }
}

/// Applies what a node below forwarded: alert changes (newer wins) and summaries; both go
/// on up when this node has a parent.
async fn apply_from_below(node: Arc<Node>, batch: Vec<Envelope>) -> Result<(), String> {
    let tier = node.tier().cloned().expect("tier");
    let mut summaries = Vec::new();
    let mut alerts = Vec::new();
    for envelope in batch {
        match envelope.kind.as_str() {
            "alert" => alerts.push(envelope),
            "summary" => summaries.push(envelope),
            other => tracing::warn!(kind = other, origin = %envelope.origin, "Envelope of an unknown kind from below ignored."),
        }
    }
    let applied: std::collections::HashSet<String> = apply_alerts(&node, &alerts, true).await?.into_iter().map(|(id, _)| id).collect();
    if tier.has_parent {
        for envelope in alerts.into_iter().filter(|e| applied.contains(&e.id)) {
            tier.send(&tier.up, envelope);
        }
    }
    if !summaries.is_empty() {
        let records = summaries
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 1, summary_event(e)))
            .collect();
        node.ingest_values(records, Channel::Internal, "tier").await.map_err(|e| e.to_string())?;
        if tier.has_parent {
            for envelope in summaries {
                tier.send(&tier.up, envelope);
            }
        }
    }
    Ok(())
}

/// A summary envelope as an event of this node's lake.
fn summary_event(e: &Envelope) -> Result<Value, (String, String)> {
    let b: Value = e.body().map_err(|reason| (reason, e.body.get().to_string()))?;
    Ok(json!({
        "id": e.id,
        "source": b["node"].as_str().unwrap_or(&e.origin),
        "kind": SUMMARY_KIND,
        "time": b["minute"],
        "attrs": {"grid_id": b["grid"], "of_kind": b["kind"], "count": b["count"]},
    }))
}

/// Stores the rows of alert envelopes that are newer than what this node holds; from
/// above (`from_below` false) only alerts this node already holds. Returns the ids of
/// the envelopes applied with their rows, and tells the live stream.
async fn apply_alerts(node: &Arc<Node>, envelopes: &[Envelope], from_below: bool) -> Result<Vec<(String, AlertRow)>, String> {
    if envelopes.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows = Vec::with_capacity(envelopes.len());
    for e in envelopes {
        let AlertChangeBody { change, mut row } = e.body::<AlertChangeBody<AlertRow>>()?;
        if from_below && row.body.pointer("/tier/origin").is_none() {
            row.body["tier"] = json!({"origin": e.origin});
        }
        rows.push((e.id.clone(), change, row));
    }
    let desk = node.desk().clone();
    let applied = tokio::task::spawn_blocking(move || -> Result<Vec<(String, String, AlertRow)>, String> {
        let state = desk.state().clone();
        let _guard = desk.write_lock();
        let mut inserts = Vec::new();
        let mut updates = Vec::new();
        let mut applied = Vec::new();
        for (id, change, row) in rows {
            match state.alert(&row.id).map_err(|e| e.to_string())? {
                None if from_below => inserts.push(row.clone()),
                Some(stored) if stored.updated_at < row.updated_at => updates.push(row.clone()),
                _ => continue,
            }
            applied.push((id, change, row));
        }
        state.write_alerts(&inserts, &updates).map_err(|e| e.to_string())?;
        Ok(applied)
    })
    .await
    .map_err(|e| e.to_string())??;
    let desk = node.desk();
    for (_, change, row) in &applied {
        desk.announce(change, row);
    }
    Ok(applied.into_iter().map(|(id, _, row)| (id, row)).collect())
}

/// Answers a tier above asking for the evidence of an alert raised here; the read goes
/// into this node's audit log under the asker's name.
async fn answer_evidence(node: Arc<Node>, ask: bytes::Bytes) -> bytes::Bytes {
    let answer = async {
        let ask: Value = serde_json::from_slice(&ask).map_err(|e| format!("unreadable request: {e}"))?;
        let id = ask["alert"].as_str().ok_or("the request names no alert")?.to_string();
        let state = node.state().clone();
        let alert_id = id.clone();
        let row = tokio::task::spawn_blocking(move || state.alert(&alert_id))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no alert `{id}` here"))?;
        let items = crate::search::evidence_of(&node, &row).await.map_err(|e| e.to_string())?;
        let actor = format!("{}:{}", ask["from"].as_str().unwrap_or("?"), ask["user"].as_str().unwrap_or("?"));
        node.desk().audit(&actor, "alert.evidence", &id, json!({"results": items.len(), "unit": ask["unit"], "for_node": ask["from"]}));
        Ok::<_, String>(json!({"items": items}))
    }
    .await;
    let value = answer.unwrap_or_else(|error| json!({"error": error}));
    bytes::Bytes::from(value.to_string())
}

/// Applies what the tier above published: rules, hotlists, and changes to alerts this
/// node holds; rules and hotlists go on down to the tiers below.
async fn apply_from_above(node: Arc<Node>, batch: Vec<Envelope>) -> Result<(), String> {
    let tier = node.tier().cloned().expect("tier");
    let alerts: Vec<Envelope> = batch.iter().filter(|e| e.kind == "alert").cloned().collect();
    // An alert change from above about an alert from further below goes on down.
    let further_below: std::collections::HashSet<String> = apply_alerts(&node, &alerts, false)
        .await?
        .into_iter()
        .filter(|(_, row)| foreign_origin(row, &tier.node).is_some())
        .map(|(id, _)| id)
        .collect();
    for envelope in alerts.into_iter().filter(|e| further_below.contains(&e.id)) {
        tier.send(&tier.down, envelope);
    }
    for envelope in batch.into_iter().filter(|e| e.kind != "alert") {
        let n = node.clone();
        let e = envelope.clone();
        let applied = tokio::task::spawn_blocking(move || n.apply_published(&e)).await.map_err(|e| e.to_string())?;
        match applied {
            Ok(()) => tier.send(&tier.down, envelope),
            // What can never apply here (it does not fit this node's city) is said and
            // passed over, rather than holding back everything published after it.
            Err(NodeError::Invalid(reason)) => {
                tracing::error!(kind = %envelope.kind, id = %envelope.id, origin = %envelope.origin, %reason, "Published from above but not applicable here; skipped.");
            }
            Err(err) => return Err(format!("{} `{}` from {}: {err}", envelope.kind, envelope.id, envelope.origin)),
        }
    }
    Ok(())
}

impl Node {
    /// Applies a rule, routing table, zone or hotlists published by the tier above.
    fn apply_published(&self, e: &Envelope) -> Result<(), NodeError> {
        let b: Value = e.body().map_err(NodeError::Invalid)?;
        match e.kind.as_str() {
            "rule" => {
                self.state().put_rule(&RulePut {
                    id: b["id"].as_str().unwrap_or_default().to_string(),
                    body: b["body"].as_str().unwrap_or_default().to_string(),
                    enabled: b["enabled"].as_bool().unwrap_or(true),
                    updated_by: format!("tier:{}", e.origin),
                    expected_version: None,
                })?;
                self.reload_rules();
            }
            "rule.delete" => {
                match self.state().delete_rule(b["id"].as_str().unwrap_or_default(), None) {
                    Ok(()) => {}
                    Err(err) if err.status() == cityward_store::Status::NotFound => {}
                    Err(err) => return Err(err.into()),
                }
                self.reload_rules();
            }
            "routing" => {
                let entries = serde_json::from_value(b["entries"].clone()).map_err(|err| NodeError::Invalid(format!("routing table from above is unreadable: {err}")))?;
                let table = cityward_alerts::RoutingTable { version: 0, entries };
                let note = b["note"].as_str().unwrap_or("published from above");
                self.desk().set_routing_as(&format!("tier:{}", e.origin), table, note, None)?;
            }
            "zone" => {
                let zone = cityward_model::city::Zone::from_feature(&b).map_err(|err| NodeError::Invalid(format!("zone from above: {err}")))?;
                self.edit_city(|city| city.with_zone(zone).map_err(|err| NodeError::Invalid(err.to_string())))?;
            }
            "zone.delete" => {
                let id = b["id"].as_str().unwrap_or_default();
                let gone = self.edit_city(|city| match city.without_zone(id) {
                    None => Err(NodeError::NotFound(String::new())),
                    Some(without) => {
                        let without = without.map_err(|err| NodeError::Invalid(err.to_string()))?;
                        let needing = crate::rules::rules_not_compiling(self.state().as_ref(), &without)?;
                        if !needing.is_empty() {
                            return Err(NodeError::Invalid(format!("zone `{id}` is needed here by rules {}", needing.join(", "))));
                        }
                        Ok(without)
                    }
                });
                match gone {
                    Ok(_) | Err(NodeError::NotFound(_)) => {}
                    Err(err) => return Err(err),
                }
            }
            "hotlists" => {
                let lists = serde_json::from_value(b).map_err(|err| NodeError::Invalid(format!("hotlists from above are unreadable: {err}")))?;
                self.store_hotlists(lists)?;
            }
            other => tracing::warn!(kind = other, origin = %e.origin, "Envelope of an unknown kind from above ignored."),
        }
        Ok(())
    }
}

/// Sends the tier above, every minute, counts per grid and kind of each minute of events
/// once it is `summary_lateness` in the past.
async fn summarise(node: Arc<Node>) {
    let lateness = chrono::Duration::from_std(node.config().tier.summary_lateness).unwrap_or_default();
    let minute = chrono::Duration::minutes(1);
    let closed_now = || (Utc::now() - lateness).duration_trunc(minute).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    // Where summarising stands, read once: the first time, from the last hour, not the
    // whole history.
    let mut from = loop {
        tick.tick().await;
        let state = node.state().clone();
        match tokio::task::spawn_blocking(move || state.meta_get(SUMMARY_UPTO_KEY)).await {
            Ok(Ok(Some(t))) => match DateTime::parse_from_rfc3339(&t) {
                Ok(t) => break t.with_timezone(&Utc),
                Err(_) => tracing::warn!(value = %t, "Unreadable summary position; summarising from the last hour."),
            },
            Ok(Ok(None)) => {}
            _ => continue,
        }
        if let Some(closed) = closed_now() {
            break closed - chrono::Duration::hours(1);
        }
    };
    loop {
        let Some(closed) = closed_now() else {
            tick.tick().await;
            continue;
        };
        if from < closed {
            match summary_envelopes(&node, from, closed).await {
                Ok(envelopes) => {
                    let tier = node.tier().cloned().expect("tier");
                    match tier.link.send_up(&envelopes).await {
                        Ok(()) => {
                            let _ = store_summary_upto(&node, closed).await;
                            from = closed;
                        }
                        Err(e) => tracing::warn!(error = %e, "Summaries not stored for the tier above; retrying."),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Summaries could not be computed; retrying."),
            }
        }
        tick.tick().await;
    }
}

async fn store_summary_upto(node: &Arc<Node>, t: DateTime<Utc>) -> Result<(), String> {
    let state = node.state().clone();
    let text = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    tokio::task::spawn_blocking(move || state.meta_set(SUMMARY_UPTO_KEY, &text)).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

/// Counts per minute, grid and kind of the events in `[from, to)`.
async fn summary_envelopes(node: &Arc<Node>, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<Envelope>, String> {
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let sql = format!(
        "SELECT date_trunc('minute', time) AS minute, grid, kind, count(*) AS n FROM events \
         WHERE time >= '{}' AND time < '{}' AND kind <> '{SUMMARY_KIND}' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        fmt(from),
        fmt(to)
    );
    // Counts of every kind, personal ones too: a count names no one.
    let result = node.events().sql(&sql, 1_000_000).await.map_err(|e| e.to_string())?;
    let result = serde_json::to_value(result).map_err(|e| e.to_string())?;
    let rows: Vec<Vec<Value>> = serde_json::from_value(result["rows"].clone()).map_err(|e| e.to_string())?;
    let name = &node.config().node.name;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let minute = r.first()?.as_str()?.to_string();
            let grid = r.get(1).and_then(Value::as_str).unwrap_or("").to_string();
            let kind = r.get(2)?.as_str()?.to_string();
            let count = r.get(3)?.as_u64()?;
            Some(Envelope::new(
                "summary",
                format!("sum:{name}:{minute}:{grid}:{kind}"),
                name,
                &json!({"node": name, "minute": minute, "grid": grid, "kind": kind, "count": count}),
            ))
        })
        .collect())
}
