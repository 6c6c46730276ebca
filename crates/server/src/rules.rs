//! Rules, hotlists and alerts as the node keeps them: rules in the state store (from the
//! configured rule files at start-up, then the API), compiled against the city and handed
//! to the detection stage on every change; hotlists in the state store's `meta`; alerts
//! as the detection stage stored them.

use chrono::{DateTime, Utc};
use cityward_detect::{compile_rules, parse_rule, HotlistEntry, Hotlists, Rule, RuleSpec};
use cityward_model::City;
use cityward_store::{AlertFilter, PageRequest, RulePut, RuleRow, StateStore};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::NodeConfig;
use crate::node::{Node, NodeError, User};

const HOTLISTS_KEY: &str = "hotlists";

/// Loads the configured rule files into the store (a rule whose text changed in its file
/// is replaced), then compiles every enabled stored rule. A stored rule that no longer
/// compiles (say a zone left the city) is logged and left out rather than stopping the
/// node; a broken rule file stops it, naming the file, line and key.
pub(crate) fn startup_rules(config: &NodeConfig, state: &dyn StateStore, city: &City) -> Result<Vec<Rule>, NodeError> {
    for path in &config.detect.rules {
        let text = std::fs::read_to_string(path).map_err(|e| {
            NodeError::Invalid(format!("cannot read rule file {} (detect.rules): {e}", path.display()))
        })?;
        let rules = compile_rules(&text, Some(path), city).map_err(|e| NodeError::Invalid(e.to_string()))?;
        for rule in rules {
            let body = serde_json::to_string(&rule.spec).map_err(|e| NodeError::Internal(e.to_string()))?;
            let same = state.rule(&rule.spec.id)?.is_some_and(|r| r.body == body);
            if !same {
                state.put_rule(&RulePut {
                    id: rule.spec.id.clone(),
                    body,
                    enabled: rule.spec.enabled,
                    updated_by: format!("file:{}", path.display()),
                    expected_version: None,
                })?;
            }
        }
    }
    Ok(stored_rules(state, city))
}

/// Every enabled stored rule that compiles against `city`.
pub(crate) fn stored_rules(state: &dyn StateStore, city: &City) -> Vec<Rule> {
    let rows = match state.list_rules() {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "Rules could not be read; detection runs without them.");
            return Vec::new();
        }
    };
    rows.into_iter()
        .filter(|r| r.enabled)
        .filter_map(|row| match spec_of(&row).and_then(|s| s.compile(city).map_err(|e| e.to_string())) {
            Ok(rule) => Some(rule),
            Err(e) => {
                tracing::error!(rule = %row.id, error = %e, "Stored rule does not compile; it is not run. Fix it with PUT /api/v1/rules/ID.");
                None
            }
        })
        .collect()
}

/// The ids of the enabled stored rules that do not compile against `city`.
pub(crate) fn rules_not_compiling(state: &dyn StateStore, city: &City) -> Result<Vec<String>, NodeError> {
    Ok(state
        .list_rules()?
        .into_iter()
        .filter(|r| r.enabled && spec_of(r).and_then(|s| s.compile(city).map_err(|e| e.to_string())).is_err())
        .map(|r| r.id)
        .collect())
}

fn spec_of(row: &RuleRow) -> Result<RuleSpec, String> {
    let yaml = !row.body.trim_start().starts_with('{');
    parse_rule(&row.body, yaml).map_err(|e| e.to_string())
}

/// Reads the hotlists from the store.
pub(crate) fn load_hotlists(state: &dyn StateStore) -> Result<Hotlists, NodeError> {
    match state.meta_get(HOTLISTS_KEY)? {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| NodeError::Internal(format!("the stored hotlists are unreadable: {e}"))),
        None => Ok(Hotlists::new()),
    }
}

/// A hotlist entry as the API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotlistEntryInput {
    /// The value (plate, tag).
    pub value: String,
    /// Why it is listed.
    pub reason: String,
    /// Who answers for it; the caller's unit or name when absent.
    #[serde(default)]
    pub owner: Option<String>,
    /// When it stops matching (RFC 3339); required unless the list allows permanent entries.
    #[serde(default, with = "cityward_model::event::rfc3339_option")]
    pub expires: Option<DateTime<Utc>>,
}

impl Node {
    /// Every stored rule, with its text, version, engine counters and the alerts it has
    /// open and raised in the last 24 hours that `user` may see.
    pub fn list_rules(&self, user: &User) -> Result<Value, NodeError> {
        let rows = self.state().list_rules()?;
        let stats = self.detection().map(|d| d.status().stats.rules).unwrap_or_default();
        let day = AlertFilter { since: Some(Utc::now() - chrono::Duration::hours(24)), ..AlertFilter::default() };
        let open = AlertFilter {
            statuses: cityward_alerts::Status::ALL.iter().filter(|s| s.is_open()).map(|s| s.as_str().to_string()).collect(),
            ..AlertFilter::default()
        };
        let mut counts: std::collections::HashMap<String, (u64, u64)> = std::collections::HashMap::new();
        for row in crate::stats::read_alerts(self, user, open)?.0 {
            counts.entry(row.rule).or_default().0 += 1;
        }
        for row in crate::stats::read_alerts(self, user, day)?.0 {
            counts.entry(row.rule).or_default().1 += 1;
        }
        let items: Vec<Value> = rows
            .iter()
            .map(|r| {
                let mut v = rule_json(r);
                if let Some(st) = stats.get(&r.id) {
                    v["stats"] = json!(st);
                }
                let (open, day) = counts.get(&r.id).copied().unwrap_or_default();
                v["alerts"] = json!({"open": open, "last_24h": day});
                v
            })
            .collect();
        Ok(json!({"items": items, "next": null}))
    }

    /// One stored rule.
    pub fn get_rule(&self, id: &str) -> Result<Value, NodeError> {
        let row = self.state().rule(id)?.ok_or_else(|| not_found_rule(id))?;
        Ok(rule_json(&row))
    }

    /// Creates or replaces a rule: parsed (YAML when `yaml`), checked against the city, stored,
    /// and running at once; unchanged rules keep their state.
    pub fn put_rule(&self, id: &str, body: &str, yaml: bool, user: &User, expected_version: Option<i64>) -> Result<Value, NodeError> {
        let spec = parse_rule(body, yaml).map_err(|e| NodeError::Invalid(format!("the rule is not valid: {e}")))?;
        if spec.id != id {
            return Err(NodeError::Invalid(format!(
                "the rule's id `{}` differs from the id in the path `{id}`; make them the same",
                spec.id
            )));
        }
        spec.compile(&self.city()).map_err(|e| NodeError::Invalid(e.to_string()))?;
        let row = self.state().put_rule(&RulePut {
            id: id.to_string(),
            body: serde_json::to_string(&spec).map_err(|e| NodeError::Internal(e.to_string()))?,
            enabled: spec.enabled,
            updated_by: user.username.clone(),
            expected_version,
        })?;
        self.reload_rules();
        if let Some(tier) = self.tier() {
            tier.publish_down("rule", format!("rule:{}@{}", row.id, row.version), json!({"id": row.id, "body": row.body, "enabled": row.enabled}));
        }
        Ok(rule_json(&row))
    }

    /// Deletes a rule; its state goes with it.
    pub fn delete_rule(&self, id: &str, expected_version: Option<i64>) -> Result<(), NodeError> {
        self.state().delete_rule(id, expected_version)?;
        self.reload_rules();
        if let Some(tier) = self.tier() {
            tier.publish_down("rule.delete", format!("rule-delete:{id}@{}", Utc::now().timestamp_micros()), json!({"id": id}));
        }
        Ok(())
    }

    pub(crate) fn reload_rules(&self) {
        if let Some(d) = self.detection() {
            d.set_rules(stored_rules(self.state().as_ref(), &self.city()));
        }
    }

    /// All hotlists with their entries.
    pub fn hotlists(&self) -> Result<Value, NodeError> {
        let lists = load_hotlists(self.state().as_ref())?;
        let now = Utc::now();
        let items: Vec<Value> = lists
            .names()
            .map(|name| {
                let entries: Vec<Value> = lists
                    .list(name)
                    .map(|e| {
                        let mut v = json!(e);
                        v["active"] = json!(e.active_at(now));
                        v
                    })
                    .collect();
                json!({"name": name, "entries": entries})
            })
            .collect();
        Ok(json!({"items": items, "next": null}))
    }

    /// Adds or replaces an entry of a hotlist.
    pub fn put_hotlist_entry(&self, list: &str, input: HotlistEntryInput, user: &User) -> Result<Value, NodeError> {
        let mut lists = load_hotlists(self.state().as_ref())?;
        let entry = HotlistEntry {
            value: input.value,
            reason: input.reason,
            owner: input
                .owner
                .or_else(|| user.unit.clone())
                .unwrap_or_else(|| user.username.clone()),
            added: Utc::now(),
            expires: input.expires,
        };
        lists.put(list, entry.clone()).map_err(|e| NodeError::Invalid(format!("hotlist `{list}`: {e}")))?;
        self.save_hotlists(lists)?;
        Ok(json!(entry))
    }

    /// Removes an entry of a hotlist.
    pub fn delete_hotlist_entry(&self, list: &str, value: &str) -> Result<(), NodeError> {
        let mut lists = load_hotlists(self.state().as_ref())?;
        if !lists.remove(list, value) {
            return Err(NodeError::NotFound(format!(
                "`{value}` is not on hotlist `{list}`; see GET /api/v1/hotlists"
            )));
        }
        self.save_hotlists(lists)
    }

    /// Stores and applies the hotlists; the tiers below get them too.
    fn save_hotlists(&self, lists: Hotlists) -> Result<(), NodeError> {
        let body = serde_json::to_value(&lists).map_err(|e| NodeError::Internal(e.to_string()))?;
        self.store_hotlists(lists)?;
        if let Some(tier) = self.tier() {
            tier.publish_down("hotlists", format!("hotlists@{}", Utc::now().timestamp_micros()), body);
        }
        Ok(())
    }

    /// Stores and applies the hotlists.
    pub(crate) fn store_hotlists(&self, lists: Hotlists) -> Result<(), NodeError> {
        let text = serde_json::to_string(&lists).map_err(|e| NodeError::Internal(e.to_string()))?;
        self.state().meta_set(HOTLISTS_KEY, &text)?;
        if let Some(d) = self.detection() {
            d.set_hotlists(lists);
        }
        Ok(())
    }

    /// One page of the alerts `user` may see, newest first, of any of `statuses` (all
    /// when empty), of `class` (`incident`, `maintenance`) when given.
    pub fn alerts(&self, user: &User, filter: AlertFilter, cursor: Option<String>, limit: usize) -> Result<Value, NodeError> {
        let page = match cursor {
            Some(c) => PageRequest::after(c, limit),
            None => PageRequest::first(limit),
        };
        self.desk().list(user, filter, &page)
    }

    /// One alert, if `user` may see it.
    pub fn alert(&self, user: &User, id: &str) -> Result<Value, NodeError> {
        Ok(crate::desk::alert_json(&self.desk().read(user, id)?))
    }

    /// Applies `user`'s action (ack, dispatch, …) to alert `id`; answers the changed alert.
    pub fn act_on_alert(&self, user: &User, id: &str, action: &cityward_alerts::Action, note: Option<&str>) -> Result<Value, NodeError> {
        self.desk().act(user, id, action, note)
    }

    /// Live changes of the alerts `user` may see.
    pub fn subscribe_alert_changes(&self, user: &User) -> tokio::sync::broadcast::Receiver<std::sync::Arc<crate::AlertChange>> {
        self.desk().subscribe(user)
    }

    /// The detection stage's state: position, watermark, counters, late events.
    pub fn detect_status(&self) -> Value {
        match self.detection() {
            Some(d) => json!(d.status()),
            None => json!({"enabled": false}),
        }
    }

    /// Saves the detection checkpoint now (tests, and before planned restarts).
    pub async fn checkpoint_detection(&self) {
        if let Some(d) = self.detection() {
            d.checkpoint().await;
        }
    }
}

/// Runs the `sql` rules on their schedules: each enabled rule's query runs once every
/// `every` (default 24h, the last run kept in the state store's meta so a restart does not
/// re-run it early), and each row becomes an alert. Rows that give an alert already stored
/// (same rule, same row) are not stored again.
pub(crate) async fn run_sql_rules(node: std::sync::Arc<Node>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let city = node.city();
        // Only the SQL rules are parsed (the stored text is the rule as JSON).
        let rows = match node.state().list_rules() {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "Rules could not be read; SQL rules wait for the next turn.");
                continue;
            }
        };
        let rules: Vec<Rule> = rows
            .iter()
            .filter(|r| r.enabled && r.body.contains("\"sql\""))
            .filter_map(|r| spec_of(r).ok()?.compile(&city).ok())
            .filter(|r| r.spec.kind == cityward_detect::RuleKind::Sql)
            .collect();
        for rule in rules {
            if let Err(e) = run_sql_rule(&node, &rule).await {
                tracing::error!(rule = %rule.spec.id, error = %e, "SQL rule failed; it runs again at its next turn.");
            }
        }
    }
}

async fn run_sql_rule(node: &Node, rule: &Rule) -> Result<(), NodeError> {
    let every = rule.spec.every.unwrap_or(std::time::Duration::from_secs(86_400));
    let meta_key = format!("sql_rule_last_run:{}", rule.spec.id);
    let now = Utc::now();
    if let Some(last) = node.state().meta_get(&meta_key)?.and_then(|t| cityward_model::parse_time(&t)) {
        if (now - last).to_std().unwrap_or_default() < every {
            return Ok(());
        }
    }
    let query = rule.spec.query.clone().unwrap_or_default();
    let result = node.sql(&query, 10_000).await?;
    let columns: Vec<String> = serde_json::from_value(result["columns"].clone()).unwrap_or_default();
    let rows: Vec<Vec<Value>> = serde_json::from_value(result["rows"].clone()).unwrap_or_default();
    let alerts = cityward_detect::sql_alerts(rule, &columns, &rows, now);
    // Rows that give an alert already stored (same rule, same row) are skipped.
    let desk = node.desk();
    let mut rows_to_store: Vec<_> = alerts.iter().map(|a| crate::detect::new_alert_row(a, now)).collect();
    for row in &mut rows_to_store {
        desk.route_new(row, now);
    }
    let inserted = node.state().write_alerts(&rows_to_store, &[])?;
    rows_to_store.retain(|r| inserted.contains(&r.id));
    desk.stored_new(&rows_to_store);
    let stored = rows_to_store.len();
    node.state().meta_set(&meta_key, &cityward_model::format_time(&now))?;
    tracing::info!(rule = %rule.spec.id, rows = rows.len(), new_alerts = stored, "SQL rule ran.");
    Ok(())
}

fn rule_json(row: &RuleRow) -> Value {
    let spec = spec_of(row).ok();
    let rule: Value = spec
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_else(|| Value::String(row.body.clone()));
    // The text an analyst edits.
    let yaml = spec.as_ref().and_then(|s| serde_yaml::to_string(s).ok());
    json!({
        "id": row.id,
        "rule": rule,
        "yaml": yaml,
        "enabled": row.enabled,
        "version": row.version,
        "updated_at": cityward_model::format_time(&row.updated_at),
        "updated_by": row.updated_by,
    })
}

fn not_found_rule(id: &str) -> NodeError {
    NodeError::NotFound(format!("rule `{id}` does not exist; list rules with GET /api/v1/rules"))
}
