//! Commands that work on files and data directories without a running node:
//! `simulate`, `sql`, `deadletter list`.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use chrono::Utc;
use cityward_model::{parse_duration, parse_time, City, Event};
use cityward_store::{DeadLetterFilter, PageRequest, SqliteState, StateStore};

/// `cityward simulate`.
pub fn simulate(
    city_dir: &Path,
    duration: &str,
    out: &Path,
    seed: u64,
    start: Option<&str>,
) -> anyhow::Result<()> {
    let city = City::load(city_dir)
        .with_context(|| format!("cannot load the city model from {}", city_dir.display()))?;
    let duration = parse_duration(duration).map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
    let start = match start {
        Some(s) => {
            parse_time(s).with_context(|| format!("--start `{s}` is not an RFC 3339 time"))?
        }
        None => Utc::now() - chrono::Duration::from_std(duration)?,
    };
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let started = std::time::Instant::now();
    let n = cityward_sim::simulate_to(&city, seed, start, duration, &mut writer)?;
    writer.flush()?;
    println!(
        "Wrote {n} events to {} in {:.1} s.",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cityward sql --data DIR "SELECT …"`: reads the lake and the WAL of a data directory,
/// read-only, so it is safe while a node runs on it.
pub async fn sql(data: &Path, query: &str, max_rows: usize, json: bool) -> anyhow::Result<()> {
    if !data.join("lake").exists() && !data.join("wal").exists() {
        bail!("{} is not a cityward data directory (no lake/ or wal/); pass --data with the node's node.data_dir", data.display());
    }
    let kinds = declared_kinds(data)?;
    let lake = cityward_store::Lake::open_read_only(data.join("lake"), &kinds)?;
    let engine = cityward_store::SqlEngine::new(&lake)?;
    let wal_dir = data.join("wal");
    // The engine pins the lake's extent and asks for the WAL records above it, so a node
    // compacting meanwhile never makes a segment count twice.
    let result = engine
        .query_with_tail(query, max_rows, |through| wal_tail(&wal_dir, through))
        .await?;
    if json {
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    println!("{}", result.columns.join("\t"));
    for row in &result.rows {
        let cells: Vec<String> = row
            .iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "NULL".into(),
                other => other.to_string(),
            })
            .collect();
        println!("{}", cells.join("\t"));
    }
    if result.truncated {
        eprintln!("(only the first {max_rows} rows are shown; raise --max-rows)");
    }
    Ok(())
}

/// The built-in kinds plus those the node declared (written by the node to `DATA/kinds.json`).
pub fn declared_kinds(data: &Path) -> anyhow::Result<cityward_model::KindRegistry> {
    let mut kinds = cityward_model::KindRegistry::builtin();
    let path = data.join("kinds.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let declared: std::collections::BTreeMap<String, cityward_model::KindSchema> =
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid", path.display()))?;
        for (name, schema) in declared {
            kinds.declare(name, schema);
        }
    }
    Ok(kinds)
}

/// Events in WAL segment files after `compacted`, read without opening the WAL for writing.
fn wal_tail(dir: &Path, compacted: Option<u64>) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(events);
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    for path in files {
        let segment =
            cityward_store::SegmentReader::open(&path, cityward_store::CorruptionPolicy::Skip)?;
        for record in segment.records() {
            // A torn tail of a segment being written is where a live node is; stop there.
            let Ok((seq, bytes)) = record else { break };
            if compacted.is_some_and(|c| seq <= c) {
                continue;
            }
            events
                .push(serde_json::from_slice(bytes).with_context(|| {
                    format!("{}: record {seq} is not an event", path.display())
                })?);
        }
    }
    Ok(events)
}

/// `cityward deadletter list`.
pub fn deadletter_list(
    data: &Path,
    limit: usize,
    channel: Option<String>,
    pending: bool,
    json: bool,
) -> anyhow::Result<()> {
    let path = data.join("state.sqlite3");
    if !path.exists() {
        bail!(
            "{} has no state database; pass --data with the node's node.data_dir",
            data.display()
        );
    }
    let state = SqliteState::open(&path)?;
    let channel = channel.map(|c| c.parse()).transpose()?;
    let filter = DeadLetterFilter {
        channel,
        pending_only: pending,
        ..Default::default()
    };
    let page = state.list_dead_letters(
        &filter,
        &PageRequest {
            after: None,
            limit: limit.min(1000),
        },
    )?;
    let total = state.count_dead_letters(&filter)?;
    for letter in &page.items {
        if json {
            println!("{}", serde_json::to_string(letter)?);
        } else {
            println!(
                "#{} {} {} line {} {}: {}",
                letter.id,
                cityward_model::format_time(&letter.received_at),
                letter.channel,
                letter.line.map_or("-".into(), |l| l.to_string()),
                letter.field.as_deref().unwrap_or("-"),
                letter.reason
            );
        }
    }
    if !json {
        println!("{} of {total} dead letters shown. Correct one and send it again with `cityward deadletter resubmit ID --file FIXED.json`.", page.items.len());
    }
    Ok(())
}

fn open_lake(data: &Path) -> anyhow::Result<cityward_store::Lake> {
    if !data.join("lake").exists() {
        bail!(
            "{} has no lake/ directory; pass --data with the node's node.data_dir",
            data.display()
        );
    }
    Ok(cityward_store::Lake::open_read_only(
        data.join("lake"),
        &declared_kinds(data)?,
    )?)
}

/// `cityward retention plan`.
pub fn retention_plan(data: &Path, config: &cityward_server::NodeConfig) -> anyhow::Result<()> {
    let lake = open_lake(data)?;
    let now = Utc::now();
    let state = match data.join("state.sqlite3").exists() {
        true => Some(open_state(data)?),
        false => None,
    };
    let city = cityward_server::load_city(&data.join("city"))?;
    let policy = cityward_server::retention_policy(config, state.as_ref().map(|s| s as &dyn cityward_store::StateStore), &city, now)?;
    let report = lake.plan_retention(&policy, now)?;
    for p in &report.partitions {
        println!(
            "{}\t{}\t{} files\t{} rows\t{} bytes\t{} = {}{}",
            p.kind, p.day, p.files, p.rows, p.bytes, p.rule.rule, p.rule.keep, kept_note(p)
        );
    }
    for p in &report.held {
        println!("{}\t{}\tkept: legal hold {} (case {})", p.kind, p.day, p.hold, p.case_number);
    }
    println!(
        "The next retention run would delete {} partitions, {} rows.",
        report.partitions.len(),
        report.rows()
    );
    Ok(())
}

/// What a partial deletion keeps, e.g. `\tkeeps 12 rows (evidence_kept.plate_read)`.
fn kept_note(p: &cityward_store::ExpiredPartition) -> String {
    if p.kept.is_empty() {
        return String::new();
    }
    let rules: Vec<String> = p.kept.iter().map(|(rule, n)| format!("{n} by {rule}")).collect();
    format!("\tkeeps {} rows ({})", p.kept.values().sum::<u64>(), rules.join(", "))
}

/// `cityward retention report`.
pub fn retention_report(data: &Path) -> anyhow::Result<()> {
    let lake = open_lake(data)?;
    let log = lake.retention_log()?;
    for entry in &log {
        let p = &entry.partition;
        println!(
            "{}\t{}\t{}\t{} rows\t{} bytes\t{} = {}{}",
            entry.deleted_at, p.kind, p.day, p.rows, p.bytes, p.rule.rule, p.rule.keep, kept_note(p)
        );
    }
    println!("{} partitions deleted by retention so far.", log.len());
    Ok(())
}

/// Opens the state database of an existing data directory.
pub fn open_state(data: &Path) -> anyhow::Result<cityward_store::SqliteState> {
    let file = data.join("state.sqlite3");
    if !file.exists() {
        anyhow::bail!("no state database at {}; give the node's data directory with --data", file.display());
    }
    Ok(cityward_store::SqliteState::open(&file)?)
}

/// Checks the audit chain and prints what it found; `false` when it does not hold.
pub fn audit_verify(data: &Path, anchor: Option<&Path>) -> anyhow::Result<bool> {
    let anchor: Option<cityward_store::AuditHead> = match anchor {
        None => None,
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read the anchor {}", file.display()))?;
            Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not a head from `cityward audit head` ({{\"seq\", \"hash\", \"at\"}})", file.display())
            })?)
        }
    };
    let state = open_state(data)?;
    let verdict = cityward_store::verify_audit(&state, anchor.as_ref())?;
    match (&verdict.broken, &verdict.head) {
        (Some(b), _) => {
            println!("BROKEN at entry {}: {}", b.seq, b.reason);
            println!("{} entries read before the break. The log in {} has been changed outside cityward.", verdict.entries, data.display());
            Ok(false)
        }
        (None, Some(h)) => {
            println!("OK: {} entries, chain intact{}.", verdict.entries, if anchor.is_some() { ", anchored head present" } else { "" });
            if let Some(start) = &verdict.start {
                println!(
                    "The log starts at entry {}: retention deleted {} entries written before {} (recorded in the log).",
                    start.seq,
                    start.deleted,
                    cityward_model::format_time(&start.before)
                );
            }
            println!("head: entry {} at {}, hash {}", h.seq, cityward_model::format_time(&h.at), h.hash);
            Ok(true)
        }
        (None, None) => {
            println!("OK: the audit log is empty.");
            Ok(true)
        }
    }
}

/// Prints the audit chain's head as JSON (after checking the chain up to it).
pub fn audit_head(data: &Path) -> anyhow::Result<()> {
    let state = open_state(data)?;
    let verdict = cityward_store::verify_audit(&state, None)?;
    if let Some(b) = verdict.broken {
        anyhow::bail!("the audit chain is broken at entry {} ({}); a head of a broken chain anchors nothing", b.seq, b.reason);
    }
    let head = verdict.head.context("the audit log is empty; there is no head to anchor yet")?;
    println!("{}", serde_json::to_string(&head)?);
    Ok(())
}
