//! What the city can publish about its own use of personal data, and the check of the audit
//! log behind it — for the auditor role (and administrators).
//!
//! - `GET /api/v1/audit/head`: the audit chain checked from its first entry, with its head
//!   (position, hash, time) to anchor elsewhere; `intact: false` and where it breaks when
//!   an entry was edited, removed or reordered in the store.
//! - `GET /api/v1/audit/transparency?since=&until=`: per month, searches by legal basis and
//!   unit (with how many reached personal data and how many results they gave), approval
//!   requests and decisions, evidence views and exports; hotlist sizes; retention deletions
//!   per kind. Aggregates only: no plate, case number or person appears in it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use cityward_model::{format_time, parse_time};
use cityward_store::{verify_audit, AuditEntry};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{blocking, require, ApiError, ApiQuery, Caller};
use crate::node::{Node, NodeError, Role};

const AUDIT_ROLES: &[Role] = &[Role::Admin, Role::Auditor];
const AUDIT_NEED: &str = "the auditor or admin role";

/// Every audit entry for which `keep` holds, oldest first, read in batches.
pub(crate) fn scan_audit(state: &dyn cityward_store::StateStore, mut keep: impl FnMut(&AuditEntry) -> bool) -> Result<Vec<AuditEntry>, NodeError> {
    let mut found = Vec::new();
    let mut after = 0;
    loop {
        let batch = state.audit_after(after, 10_000)?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        found.extend(batch.into_iter().filter(|e| keep(e)));
    }
    Ok(found)
}

/// The routes; `crate::http::router` merges them.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/v1/audit/head", get(head))
        .route("/api/v1/audit/transparency", get(report))
}

async fn head(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    require(&user, AUDIT_ROLES, AUDIT_NEED)?;
    let verdict = blocking(move || Ok(verify_audit(node.state().as_ref(), None)?)).await?;
    Ok(Json(json!({"intact": verdict.broken.is_none(), "entries": verdict.entries, "head": verdict.head, "broken": verdict.broken, "start": verdict.start})))
}

#[derive(Deserialize)]
struct ReportQuery {
    since: Option<String>,
    until: Option<String>,
}

/// Counts kept per month and some key.
#[derive(Default)]
struct Tally(BTreeMap<(String, String, String), (u64, u64)>);

impl Tally {
    fn add(&mut self, month: &str, a: &str, b: &str, results: u64) {
        let slot = self.0.entry((month.to_string(), a.to_string(), b.to_string())).or_default();
        slot.0 += 1;
        slot.1 += results;
    }
}

/// The month (`2026-12`) of a time.
fn month(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m").to_string()
}

/// The report over audit `entries` (already limited to the time range).
fn summarize(entries: &[AuditEntry]) -> Value {
    let mut searches = Tally::default();
    let mut personal = Tally::default();
    let mut other = Tally::default();
    for e in entries {
        let m = month(&e.at);
        let d = &e.detail;
        let text = |key: &str| d.get(key).and_then(Value::as_str).unwrap_or("").to_string();
        let results = d.get("results").and_then(Value::as_u64).unwrap_or(0);
        match e.action.as_str() {
            "search" | "search.csv" | "search.export" => {
                let basis = d.pointer("/purpose/legal_basis").and_then(Value::as_str).unwrap_or("none");
                let unit = text("unit");
                searches.add(&m, basis, &unit, results);
                if d.get("personal").and_then(Value::as_bool).unwrap_or(false) {
                    personal.add(&m, basis, &unit, results);
                }
            }
            "search.request" | "search.approve" | "search.reject" | "alert.evidence" | "search.export.download" => {
                other.add(&m, &e.action, "", results);
            }
            _ => {}
        }
    }
    let rows = |tally: &Tally, a: &str, b: &str| -> Vec<Value> {
        tally
            .0
            .iter()
            .map(|((m, x, y), (count, results))| {
                let mut row = json!({"month": m, a: x, "count": count, "results": results});
                if !b.is_empty() {
                    row[b] = if y.is_empty() { Value::Null } else { json!(y) };
                }
                row
            })
            .collect()
    };
    json!({
        "searches": rows(&searches, "legal_basis", "unit"),
        "personal_searches": rows(&personal, "legal_basis", "unit"),
        "other_reads_and_decisions": rows(&other, "action", ""),
    })
}

async fn report(State(node): State<Arc<Node>>, Caller(user): Caller, ApiQuery(q): ApiQuery<ReportQuery>) -> Result<Json<Value>, ApiError> {
    require(&user, AUDIT_ROLES, AUDIT_NEED)?;
    let time = |name: &str, text: Option<&str>| -> Result<Option<DateTime<Utc>>, NodeError> {
        text.map(|t| parse_time(t).ok_or_else(|| NodeError::Invalid(format!("`{name}` must be an RFC 3339 time, not `{t}`"))))
            .transpose()
    };
    let until = time("until", q.until.as_deref())?.unwrap_or_else(Utc::now);
    let since = time("since", q.since.as_deref())?.unwrap_or(until - chrono::Duration::days(365));
    if since >= until {
        return Err(NodeError::Invalid("`since` must be before `until`".into()).into());
    }
    let report = blocking(move || {
        let entries = scan_audit(node.state().as_ref(), |e| e.at >= since && e.at < until)?;
        let mut report = summarize(&entries);
        report["since"] = json!(format_time(&since));
        report["until"] = json!(format_time(&until));
        // Hotlists: how many entries, never which.
        let lists = node.hotlists()?;
        let now_sizes: Vec<Value> = lists["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|l| {
                        let entries = l["entries"].as_array().map(Vec::as_slice).unwrap_or_default();
                        let active = entries.iter().filter(|e| e["active"] == true).count();
                        json!({"name": l["name"], "active": active, "inactive": entries.len() - active})
                    })
                    .collect()
            })
            .unwrap_or_default();
        report["hotlists"] = json!(now_sizes);
        // Retention deletions in the range, per month and kind.
        let mut deleted: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
        for entry in node.events().lake().retention_log().map_err(|e| NodeError::Internal(e.to_string()))? {
            let Some(at) = parse_time(&entry.deleted_at).filter(|t| *t >= since && *t < until) else { continue };
            let p = &entry.partition;
            let slot = deleted.entry((month(&at), p.kind.clone(), p.rule.rule.clone())).or_default();
            slot.0 += 1;
            slot.1 += p.rows;
        }
        report["retention"] = json!(deleted
            .into_iter()
            .map(|((m, kind, rule), (partitions, rows))| json!({"month": m, "kind": kind, "rule": rule, "partitions": partitions, "rows": rows}))
            .collect::<Vec<_>>());
        Ok(report)
    })
    .await?;
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64, at: &str, action: &str, detail: Value) -> AuditEntry {
        AuditEntry {
            seq,
            at: parse_time(at).unwrap(),
            actor: "ana".into(),
            action: action.into(),
            target: "events".into(),
            detail,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn the_report_counts_by_month_basis_and_unit_without_plates() {
        let purpose = json!({"case_number": "C-7", "legal_basis": "court_order"});
        let entries = [
            entry(1, "2026-11-30T10:00:00Z", "search", json!({"plate": "粤B12345", "purpose": purpose, "unit": "u-1", "personal": true, "results": 4})),
            entry(2, "2026-12-01T10:00:00Z", "search", json!({"plate": "粤B1*", "purpose": purpose, "unit": "u-1", "personal": true, "results": 6})),
            entry(3, "2026-12-02T10:00:00Z", "search.csv", json!({"plate": "粤B1*", "purpose": purpose, "unit": "u-1", "personal": true, "results": 1})),
            entry(4, "2026-12-02T11:00:00Z", "search", json!({"kind": "smoke", "purpose": null, "unit": null, "personal": false, "results": 9})),
            entry(5, "2026-12-02T12:00:00Z", "search.approve", json!({"reason": "ok"})),
            entry(6, "2026-12-02T12:00:00Z", "alert.ack", json!({})),
        ];
        let report = summarize(&entries);
        let text = report.to_string();
        assert!(!text.contains("粤B") && !text.contains("C-7"), "no plate or case in the report: {text}");
        let personal = report["personal_searches"].as_array().unwrap();
        assert_eq!(personal.len(), 2, "{personal:?}");
        assert_eq!(personal[1], json!({"month": "2026-12", "legal_basis": "court_order", "unit": "u-1", "count": 2, "results": 7}));
        let all = report["searches"].as_array().unwrap();
        assert!(all.contains(&json!({"month": "2026-12", "legal_basis": "none", "unit": null, "count": 1, "results": 9})), "{all:?}");
        assert_eq!(report["other_reads_and_decisions"], json!([{"month": "2026-12", "action": "search.approve", "count": 1, "results": 0}]));
    }
}
