//! `cityward replay` and `cityward rules test|check`: the detection engine over an event
//! file, offline.
//!
//! Events are read, validated and enriched as intake would (grid, device, CRS), then fed
//! to one engine per thread. Threads split the rules, not the events: every rule sees
//! every event in file order in exactly one engine, so the output is the same whatever
//! the thread count.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use cityward_detect::{Alert, AlertBook, Engine, EngineConfig, Hotlists, Rule};
use cityward_ingest::{IngestConfig, Validator};
use cityward_model::{City, Event, KindRegistry};

/// What a run over an event file gave.
pub struct RunSummary {
    /// Alerts, in the deterministic order of [`AlertBook::into_sorted`].
    pub alerts: Vec<Alert>,
    /// Events applied.
    pub events: u64,
    /// Lines refused (with the first few reasons).
    pub rejected: u64,
    pub first_rejects: Vec<String>,
    /// Events behind the watermark.
    pub late: u64,
}

/// Options of a run.
pub struct RunOptions {
    pub lateness: Duration,
    pub threads: usize,
    pub horizon: Duration,
    pub progress: bool,
}

/// Loads a city directory, or an empty city when none is given.
pub fn load_city(dir: Option<&Path>) -> anyhow::Result<City> {
    match dir {
        Some(dir) => City::load(dir).with_context(|| format!("cannot load the city model from {}", dir.display())),
        None => City::from_parts(vec![], vec![], vec![], vec![], vec![], vec![])
            .context("cannot build an empty city"),
    }
}

/// Reads hotlists from a JSON file (`{"lists": {"NAME": {"VALUE": entry}}}` as the API
/// stores them, or `{"NAME": [entry, …]}`).
pub fn load_hotlists(path: Option<&Path>) -> anyhow::Result<Hotlists> {
    let Some(path) = path else { return Ok(Hotlists::new()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Ok(h) = serde_json::from_str::<Hotlists>(&text) {
        return Ok(h);
    }
    let lists: BTreeMap<String, Vec<cityward_detect::HotlistEntry>> = serde_json::from_str(&text)
        .with_context(|| format!("{}: expected {{\"LIST\": [{{\"value\", \"reason\", \"owner\", \"added\", \"expires\"}}, …]}}", path.display()))?;
    let mut h = Hotlists::new();
    for (name, entries) in lists {
        for e in entries {
            h.put(&name, e).map_err(|m| anyhow::anyhow!("{}: list `{name}`: {m}", path.display()))?;
        }
    }
    Ok(h)
}

fn open_events(path: &Path) -> anyhow::Result<(Box<dyn BufRead + Send>, u64)> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let gz = reader.fill_buf().map(|b| b.starts_with(&[0x1f, 0x8b])).unwrap_or(false);
    let reader: Box<dyn BufRead + Send> = if gz {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(reader)))
    } else {
        Box::new(reader)
    };
    Ok((reader, len))
}

/// Runs `rules` over the events of `path`.
pub fn run(city: Arc<City>, rules: Vec<Rule>, hotlists: Hotlists, path: &Path, options: &RunOptions) -> anyhow::Result<RunSummary> {
    let threads = options.threads.max(1).min(rules.len().max(1));
    let mut partitions: Vec<Vec<Rule>> = vec![Vec::new(); threads];
    for (i, rule) in rules.into_iter().enumerate() {
        partitions[i % threads].push(rule);
    }
    let config = EngineConfig {
        lateness: options.lateness,
        ..EngineConfig::default()
    };
    let horizon = options.horizon;
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for rules in partitions {
        let (tx, rx) = sync_channel::<Arc<Vec<Event>>>(4);
        senders.push(tx);
        let mut engine = Engine::new(config.clone(), city.clone(), rules);
        engine.set_hotlists(hotlists.clone());
        let max_evidence = config.max_evidence;
        workers.push(std::thread::spawn(move || {
            let mut book = AlertBook::new();
            for chunk in rx {
                for event in chunk.iter() {
                    engine.process(event);
                }
                for out in engine.drain() {
                    book.apply(out, max_evidence);
                }
            }
            engine.finish(horizon);
            for out in engine.drain() {
                book.apply(out, max_evidence);
            }
            (book.into_sorted(), engine.stats().late)
        }));
    }

    let (reader, len) = open_events(path)?;
    let bar = if options.progress {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let mut config = IngestConfig::default();
    // History is replayed as it is: no clock-based refusal.
    config.max_future = Duration::from_secs(100 * 365 * 86_400);
    config.max_past = None;
    let validator = Validator::new(KindRegistry::builtin(), &config);
    let now = Utc::now();
    let (mut events, mut rejected) = (0u64, 0u64);
    let mut first_rejects = Vec::new();
    let mut chunk = Vec::with_capacity(65_536);
    let mut counter = CountingReader { inner: reader, count: 0 };
    let mut line = String::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        let n = counter.read_line(&mut line).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match validator.validate_json(text, line_no, now) {
            Ok(mut event) => {
                cityward_ingest::enrich(&city, &mut event);
                if event.id.is_empty() {
                    event.id = format!("line-{line_no}");
                }
                chunk.push(event);
                events += 1;
            }
            Err(reject) => {
                rejected += 1;
                if first_rejects.len() < 5 {
                    first_rejects.push(format!("line {}: {}: {}", reject.line, reject.field.as_deref().unwrap_or("record"), reject.reason));
                }
            }
        }
        if chunk.len() == chunk.capacity() {
            let shared = Arc::new(std::mem::replace(&mut chunk, Vec::with_capacity(65_536)));
            for tx in &senders {
                tx.send(shared.clone()).context("a detection thread stopped")?;
            }
            if let Some(bar) = &bar {
                // For a gzip file this counts decompressed bytes: keep the bar's end ahead.
                bar.set_length(len.max(counter.count));
                bar.set_position(counter.count);
                bar.set_message(format!("{events} events"));
            }
        }
    }
    if !chunk.is_empty() {
        let shared = Arc::new(chunk);
        for tx in &senders {
            tx.send(shared.clone()).context("a detection thread stopped")?;
        }
    }
    drop(senders);
    let mut alerts = Vec::new();
    let mut late = 0;
    for w in workers {
        let (a, l) = w.join().map_err(|_| anyhow::anyhow!("a detection thread panicked"))?;
        alerts.extend(a);
        late = l;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    alerts.sort_by(|a, b| (a.time, &a.rule, &a.key, &a.id).cmp(&(b.time, &b.rule, &b.key, &b.id)));
    Ok(RunSummary {
        alerts,
        events,
        rejected,
        first_rejects,
        late,
    })
}

struct CountingReader {
    inner: Box<dyn BufRead + Send>,
    count: u64,
}

impl CountingReader {
    fn read_line(&mut self, buf: &mut String) -> std::io::Result<usize> {
        let n = self.inner.read_line(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

/// Per-rule alert counts and distinct keys, every rule listed (zero included), rule order.
pub fn per_rule(rules: &[String], alerts: &[Alert]) -> Vec<(String, usize, usize)> {
    let mut by_rule: std::collections::HashMap<&str, (usize, std::collections::HashSet<&str>)> =
        std::collections::HashMap::new();
    for a in alerts {
        let entry = by_rule.entry(a.rule.as_str()).or_default();
        entry.0 += 1;
        entry.1.insert(a.key.as_str());
    }
    rules
        .iter()
        .map(|id| {
            let (n, keys) = by_rule.get(id.as_str()).map_or((0, 0), |(n, k)| (*n, k.len()));
            (id.clone(), n, keys)
        })
        .collect()
}

fn print_summary(summary: &RunSummary, rules: &[String], elapsed: Duration) {
    println!(
        "{} events in {:.1} s ({:.0} events/s); {} refused; {} late (behind the watermark).",
        summary.events,
        elapsed.as_secs_f64(),
        summary.events as f64 / elapsed.as_secs_f64().max(1e-9),
        summary.rejected,
        summary.late
    );
    for r in &summary.first_rejects {
        println!("  refused {r}");
    }
    println!("{:<40} {:>8} {:>8}", "rule", "alerts", "keys");
    for (id, n, keys) in per_rule(rules, &summary.alerts) {
        println!("{id:<40} {n:>8} {keys:>8}");
    }
}

/// `cityward replay`.
#[allow(clippy::too_many_arguments)]
pub fn replay(
    city: Option<&Path>,
    rules_path: &Path,
    events: &Path,
    out: &Path,
    hotlists: Option<&Path>,
    options: RunOptions,
) -> anyhow::Result<()> {
    let city = Arc::new(load_city(city)?);
    let rules = cityward_detect::load_rules(rules_path, &city).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ids: Vec<String> = rules.iter().map(|r| r.spec.id.clone()).collect();
    let hotlists = load_hotlists(hotlists)?;
    let started = Instant::now();
    let summary = run(city, rules, hotlists, events, &options)?;
    let file = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for alert in &summary.alerts {
        serde_json::to_writer(&mut w, alert)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    print_summary(&summary, &ids, started.elapsed());
    println!("Wrote {} alerts to {}.", summary.alerts.len(), out.display());
    Ok(())
}

/// `cityward rules test FILE --events FILE`.
pub fn rules_test(city: Option<&Path>, rules_path: &Path, events: &Path, hotlists: Option<&Path>, options: RunOptions) -> anyhow::Result<()> {
    let city = Arc::new(load_city(city)?);
    let rules = cityward_detect::load_rules(rules_path, &city).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ids: Vec<String> = rules.iter().map(|r| r.spec.id.clone()).collect();
    let hotlists = load_hotlists(hotlists)?;
    let started = Instant::now();
    let summary = run(city, rules, hotlists, events, &options)?;
    print_summary(&summary, &ids, started.elapsed());
    Ok(())
}

/// `cityward rules check FILE`: parses and checks a rule file against a city.
pub fn rules_check(city: Option<&Path>, rules_path: &Path) -> anyhow::Result<()> {
    let city = load_city(city)?;
    match cityward_detect::load_rules(rules_path, &city) {
        Ok(rules) => {
            println!("{}: {} rules, all valid.", rules_path.display(), rules.len());
            Ok(())
        }
        Err(e) => bail!("{e}"),
    }
}
