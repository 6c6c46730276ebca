//! What the retention task deletes by: the configured retention per data class, kind and
//! jurisdiction, the legal holds in force, the events that are evidence of an alert (kept
//! longer), and the city's grids and regions (which place an event in a jurisdiction).
//! `cityward retention plan` builds the same policy, so the plan shows what a run does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cityward_model::City;
use cityward_store::{AlertFilter, PageRequest, RetentionPolicy, StateStore};

use crate::config::NodeConfig;
use crate::holds::load_holds;
use crate::node::{Node, NodeError};

/// The policy a retention run at `now` applies; without a state store (a node that never
/// ran) there are no legal holds and no alerts.
pub fn retention_policy(config: &NodeConfig, state: Option<&dyn StateStore>, city: &City, now: DateTime<Utc>) -> Result<RetentionPolicy, NodeError> {
    let lake = &config.lake;
    let longest_evidence = lake.retention_evidence.values().max().copied();
    let evidence = match (state, longest_evidence) {
        (Some(state), Some(keep)) => {
            evidence_since(state, now - chrono::TimeDelta::from_std(keep).unwrap_or(chrono::TimeDelta::MAX / 2))?
        }
        _ => HashSet::new(),
    };
    for region in lake.retention_regions.keys().filter(|r| city.region(r).is_none()) {
        // Not an error: the city model may be replaced later; but its events go by the
        // class's retention meanwhile, which the operator should know.
        tracing::warn!(region = %region, "[lake.retention_regions] names a region the city model does not have; its entries apply to no event.");
    }
    let grid_regions: HashMap<String, Vec<String>> = city
        .grids
        .iter()
        .map(|g| (g.id.clone(), city.region_chain(&g.region).into_iter().map(|r| r.id.clone()).collect()))
        .collect();
    Ok(RetentionPolicy {
        default: None,
        classes: lake.retention.clone(),
        kinds: lake.retention.clone(),
        evidence_kept: lake.retention_evidence.clone(),
        regions: lake.retention_regions.clone(),
        holds: state.map(load_holds).transpose()?.unwrap_or_default(),
        evidence,
        grid_regions,
    })
}

/// Who the audit log names for deletions by retention.
const RETENTION_ACTOR: &str = "retention";
/// Alert statuses after which nothing more happens to an alert.
const FINAL_STATUSES: &[&str] = &["closed", "resolved", "suppressed"];

impl Node {
    /// One retention run: builds the policy (configuration, holds, evidence, jurisdictions)
    /// and deletes what it expires now; returns the rows deleted.
    pub async fn run_retention(self: &Arc<Node>) -> Result<u64, NodeError> {
        let node = self.clone();
        let policy = tokio::task::spawn_blocking(move || {
            retention_policy(node.config(), Some(node.state().as_ref()), &node.city(), Utc::now())
        })
        .await
        .map_err(|e| NodeError::Internal(format!("the task reading the retention policy stopped: {e}")))??;
        let rows = self.events().enforce_retention(&policy).await?;
        let node = self.clone();
        tokio::task::spawn_blocking(move || node.prune_state(Utc::now()))
            .await
            .map_err(|e| NodeError::Internal(format!("the task pruning the state store stopped: {e}")))??;
        Ok(rows)
    }

    /// Deletes finished alerts and audit entries past `[lake] alert_retention` and
    /// `audit_retention`; both deletions are on the audit record.
    fn prune_state(&self, now: DateTime<Utc>) -> Result<(), NodeError> {
        let lake = &self.config().lake;
        let cutoff = |keep| now - chrono::TimeDelta::from_std(keep).unwrap_or(chrono::TimeDelta::MAX / 2);
        let fail = |what: &'static str| move |e: cityward_store::StateError| NodeError::Internal(format!("retention could not prune {what}: {e}"));
        let before = cutoff(lake.alert_retention);
        let alerts = self.state().prune_alerts(before, FINAL_STATUSES).map_err(fail("alerts"))?;
        if alerts > 0 {
            self.metrics().add("cityward_state_retention_deleted_total", &[("table", "alerts")], alerts as f64);
            self.desk().audit(RETENTION_ACTOR, "alert.prune", "", serde_json::json!({"deleted": alerts, "before": before}));
        }
        if let Some(start) = self.state().prune_audit(cutoff(lake.audit_retention), RETENTION_ACTOR, now).map_err(fail("the audit log"))? {
            self.metrics().add("cityward_state_retention_deleted_total", &[("table", "audit_log")], start.deleted as f64);
            tracing::info!(first_seq = start.seq, deleted = start.deleted, "Deleted audit entries past their retention.");
        }
        Ok(())
    }
}

/// Ids of the evidence events of every alert whose first evidence is at or after `since`.
fn evidence_since(state: &dyn StateStore, since: DateTime<Utc>) -> Result<HashSet<String>, NodeError> {
    let filter = AlertFilter { since: Some(since), ..AlertFilter::default() };
    let mut page = PageRequest { after: None, limit: 1000 };
    let mut ids = HashSet::new();
    loop {
        let alerts = state
            .list_alerts(&filter, &page)
            .map_err(|e| NodeError::Internal(format!("retention cannot read the alerts' evidence: {e}")))?;
        for alert in &alerts.items {
            let evidence = alert.body.get("evidence").and_then(|e| e.as_array());
            ids.extend(evidence.into_iter().flatten().filter_map(|id| id.as_str()).map(str::to_string));
        }
        match alerts.next {
            Some(next) => page.after = Some(next),
            None => return Ok(ids),
        }
    }
}
