//! The engine: runs compiled rules over events in event time.
//!
//! See the crate README for the semantics (watermark, lateness, ordering, checkpoints).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use cityward_model::{City, Event};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::alert::{Alert, Output};
use crate::hotlist::Hotlists;
use crate::ops::{self, Operator};
use crate::rule::{fnv1a, Rule, RuleKind};
use crate::zones::ZoneSets;

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// How the engine treats time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// How far behind the newest event time an event may arrive and still be applied to
    /// windowed and timed rules (the watermark trails the newest event time by this much).
    #[serde(with = "cityward_model::duration_serde")]
    pub lateness: Duration,
    /// Evidence event ids kept per alert.
    pub max_evidence: usize,
    /// Late events remembered for reporting (the count is kept for all of them).
    pub late_log: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lateness: Duration::from_secs(5),
            max_evidence: 20,
            late_log: 1000,
        }
    }
}

/// An event that arrived after the watermark had passed its time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LateEvent {
    /// The event's id.
    pub id: String,
    /// Its source.
    pub source: String,
    /// Its kind.
    pub kind: String,
    /// Its event time.
    #[serde(with = "cityward_model::event::rfc3339")]
    pub time: DateTime<Utc>,
    /// The watermark when it arrived.
    #[serde(with = "cityward_model::event::rfc3339")]
    pub watermark: DateTime<Utc>,
}

/// Counters of one rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleStats {
    /// Events that passed the rule's `when`.
    pub matched: u64,
    /// Alerts raised.
    pub raised: u64,
    /// Firings counted on an open alert instead of raising a new one.
    pub repeated: u64,
    /// Alerts cleared.
    pub cleared: u64,
    /// Events whose `when` or `key` failed to evaluate (e.g. a missing attribute).
    pub eval_errors: u64,
    /// Events older than an event already applied for the same key, not applied to this
    /// rule's keyed state.
    pub out_of_order: u64,
    /// Keys with state.
    pub keys: u64,
}

/// Counters of the whole engine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Events given to the engine.
    pub events: u64,
    /// Events that arrived behind the watermark: applied only to stateless rules (match,
    /// hotlist) and recorded in the late log.
    pub late: u64,
    /// Alerts raised, all rules.
    pub raised: u64,
    /// Timers pending.
    pub timers: u64,
    /// Events waiting for the watermark (count and sequence rules).
    pub buffered: u64,
    /// Per rule id.
    pub rules: BTreeMap<String, RuleStats>,
}

/// Key texts by id, end to end in one arena. Cloned whole (a few memory copies) when a
/// checkpoint is taken, so that the state can be written out on another thread.
#[derive(Debug, Default, Clone)]
pub(crate) struct KeyNames {
    arena: String,
    /// Per id: (offset, length) in `arena`.
    spans: Vec<(u32, u32)>,
}

impl KeyNames {
    pub(crate) fn name(&self, id: u32) -> &str {
        let (o, l) = self.spans[id as usize];
        &self.arena[o as usize..(o + l) as usize]
    }
}

/// Interns keys: each distinct key string gets a small number that rule state is kept by.
///
/// Key texts live in [`KeyNames`]; the table holds only ids and hashes by the text they
/// point at, so a million keys cost their bytes plus about 13 bytes each.
#[derive(Default)]
pub(crate) struct Interner {
    table: hashbrown::HashTable<u32>,
    names: KeyNames,
    hasher: ahash::RandomState,
}

impl std::fmt::Debug for Interner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interner").field("keys", &self.len()).finish()
    }
}

impl Interner {
    pub(crate) fn intern(&mut self, key: &str) -> u32 {
        let hash = self.hasher.hash_one(key);
        let names = &self.names;
        if let Some(&id) = self.table.find(hash, |&id| names.name(id) == key) {
            return id;
        }
        let names = &mut self.names;
        let id = names.spans.len() as u32;
        names.spans.push((names.arena.len() as u32, key.len() as u32));
        names.arena.push_str(key);
        let (names, hasher) = (&self.names, &self.hasher);
        self.table.insert_unique(hash, id, |&id| hasher.hash_one(names.name(id)));
        id
    }

    pub(crate) fn name(&self, id: u32) -> &str {
        self.names.name(id)
    }

    /// Every key text, for a checkpoint.
    pub(crate) fn names(&self) -> &KeyNames {
        &self.names
    }

    pub(crate) fn len(&self) -> usize {
        self.names.spans.len()
    }
}

/// The key given to a stateless rule's operator: interned by [`Cx::fire`] if it fires.
pub(crate) const PENDING_KEY: u32 = u32::MAX - 1;

/// A timer: at `at` (ms since the epoch, event time), call the rule's operator for `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer {
    pub at: i64,
    pub rule: u32,
    pub key: u32,
    pub aux: u32,
}

/// A firing, as an operator reports it.
pub(crate) struct Fire<'a> {
    /// Suppression scope within (rule, key): a zone index, or 0.
    pub scope: u32,
    /// Event time of the first evidence.
    pub time_ms: i64,
    /// Event time at which the condition was met.
    pub at_ms: i64,
    /// The place.
    pub point: Option<(f64, f64)>,
    /// The grid.
    pub grid: Option<&'a str>,
    /// The zone, for geofence and corridor rules.
    pub zone: Option<&'a str>,
    /// Evidence event ids, oldest first.
    pub evidence: Vec<String>,
    /// Rule-specific figures.
    pub detail: Map<String, Value>,
    /// For rules that group by something other than their key (count by grid, zone or
    /// H3 cell): the group, which becomes the alert's key.
    pub group: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpenAlert {
    id: String,
    last_ms: i64,
    count: u64,
}

/// The part of the engine that operators write to while one of them runs.
pub(crate) struct Cx<'a> {
    pub rule_index: u32,
    pub rule: &'a Rule,
    pub city: &'a City,
    pub zones: &'a ZoneSets,
    pub hotlists: &'a Hotlists,
    pub keys: &'a mut Interner,
    /// The key text of a stateless rule's event, interned only if the rule fires.
    pending_key: &'a str,
    /// A number unique to the event being dispatched (shared geofence trackers work out
    /// each event's transition once).
    pub event_seq: u64,
    timers: &'a mut BinaryHeap<Reverse<Timer>>,
    sink: &'a mut Sink,
}

impl Cx<'_> {
    /// Calls the operator back for `key` when the watermark reaches `at_ms`.
    pub(crate) fn schedule(&mut self, key: u32, at_ms: i64, aux: u32) {
        self.timers.push(Reverse(Timer {
            at: at_ms,
            rule: self.rule_index,
            key,
            aux,
        }));
    }

    /// Reports that the rule fired for `key` (or for the fire's group).
    pub(crate) fn fire(&mut self, key: u32, fire: Fire<'_>) {
        let key = if key == PENDING_KEY { self.keys.intern(self.pending_key) } else { key };
        match fire.group {
            // Groups are not interned; their scope (a hash of the group) tells them apart.
            Some(group) => self.sink.fire(self.rule_index, self.rule, group, u32::MAX, fire),
            None => self.sink.fire(self.rule_index, self.rule, self.keys.name(key), key, fire),
        }
    }

    /// Reports that the condition of the open alert for `key` (and scope) ended.
    pub(crate) fn clear(&mut self, key: u32, scope: u32, at_ms: i64) {
        self.sink.clear(self.rule_index, key, scope, at_ms);
    }
}

/// Suppression of repeats and the output queue.
#[derive(Default)]
struct Sink {
    open: FastMap<(u32, u32, u32), OpenAlert>,
    out: Vec<Output>,
    max_evidence: usize,
    stats: Vec<RuleStats>,
}

impl Sink {
    fn fire(&mut self, rule_index: u32, rule: &Rule, key: &str, key_id: u32, fire: Fire<'_>) {
        let suppress_ms = rule.spec.suppress_period().as_millis() as i64;
        let slot = (rule_index, key_id, fire.scope);
        let stats = &mut self.stats[rule_index as usize];
        if let Some(open) = self.open.get_mut(&slot) {
            if fire.at_ms < open.last_ms + suppress_ms {
                open.count += 1;
                open.last_ms = open.last_ms.max(fire.at_ms);
                stats.repeated += 1;
                let mut evidence = fire.evidence;
                evidence.truncate(self.max_evidence);
                self.out.push(Output::Repeated {
                    alert: open.id.clone(),
                    time: ms_to_time(fire.at_ms),
                    count: open.count,
                    evidence,
                });
                return;
            }
        }
        let first = fire.evidence.first().map(String::as_str).unwrap_or("");
        let id = alert_id(
            fire.time_ms,
            fnv1a(&[
                rule.spec.id.as_bytes(),
                key.as_bytes(),
                first.as_bytes(),
                &fire.time_ms.to_le_bytes(),
                &fire.scope.to_le_bytes(),
            ]),
        );
        let mut evidence = fire.evidence;
        evidence.truncate(self.max_evidence);
        stats.raised += 1;
        self.open.insert(
            slot,
            OpenAlert {
                id: id.clone(),
                last_ms: fire.at_ms,
                count: 1,
            },
        );
        self.out.push(Output::Raised(Alert {
            id,
            rule: rule.spec.id.clone(),
            key: key.to_string(),
            time: ms_to_time(fire.time_ms),
            fired_at: ms_to_time(fire.at_ms),
            severity: rule.spec.severity,
            category: rule.spec.category.clone(),
            title: rule.spec.title.clone().unwrap_or_else(|| rule.spec.id.clone()),
            lon: fire.point.map(|p| p.0),
            lat: fire.point.map(|p| p.1),
            grid: fire.grid.map(str::to_string),
            zone: fire.zone.map(str::to_string),
            evidence,
            count: 1,
            detail: fire.detail,
            cleared_at: None,
        }));
    }

    fn clear(&mut self, rule_index: u32, key: u32, scope: u32, at_ms: i64) {
        if let Some(open) = self.open.remove(&(rule_index, key, scope)) {
            self.stats[rule_index as usize].cleared += 1;
            self.out.push(Output::Cleared {
                alert: open.id,
                time: ms_to_time(at_ms),
            });
        }
    }
}

/// `a` and 16 hex digits.
/// An alert's id: `a`, the firing's event time (milliseconds, 11 hex digits) and a hash of
/// what fired (16). Deterministic, so that a replay or a restart raises the same ids; led
/// by time, so that ids stored one after the other sit side by side in the state store's
/// indexes instead of at random places.
pub(crate) fn alert_id(time_ms: i64, hash: u64) -> String {
    format!("a{:011x}{hash:016x}", time_ms.max(0))
}

pub(crate) fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub(crate) fn time_ms(t: &DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A rule and its running operator.
struct Slot {
    rule: Rule,
    op: Box<dyn Operator>,
    /// Whether events reach the operator in watermark order (count, sequence) rather than
    /// as they arrive.
    ordered: bool,
    /// Stateless rules (match, hotlist) also see late events.
    stateless: bool,
    /// Rules with the same key expression share a class, so a key is evaluated once per
    /// event for all of them.
    key_class: u32,
    /// Likewise for `when`.
    when_class: u32,
}

/// An event held back until the watermark passes it, for the ordered rules it matched.
struct Held {
    event: Arc<Event>,
    /// Shared among held events with the same rules (see [`RuleLists`]).
    rules: Arc<[u32]>,
}

/// The distinct lists of ordered rules that held events name, each stored once: events of
/// a kind mostly match the same rules, so holding one costs no list of its own, and a
/// checkpoint copies a reference, not a list.
#[derive(Default)]
struct RuleLists(std::collections::HashSet<Arc<[u32]>, ahash::RandomState>);

impl RuleLists {
    fn get(&mut self, rules: &[u32]) -> Arc<[u32]> {
        if let Some(list) = self.0.get(rules) {
            return list.clone();
        }
        let list: Arc<[u32]> = Arc::from(rules);
        self.0.insert(list.clone());
        list
    }
}

/// The detection engine: a set of rules, their keyed state and timers.
///
/// Feed it events with [`Engine::process`]; collect what it says with
/// [`Engine::drain`]. Single-threaded by design: run one engine per partition of rules or
/// keys to use more cores.
pub struct Engine {
    config: EngineConfig,
    city: Arc<City>,
    zones: ZoneSets,
    hotlists: Hotlists,
    slots: Vec<Slot>,
    by_kind: FastMap<String, Arc<[u32]>>,
    any_kind: Arc<[u32]>,
    by_source: FastMap<String, Arc<[u32]>>,
    keys: Interner,
    key_buf: String,
    timers: BinaryHeap<Reverse<Timer>>,
    held: BinaryHeap<Reverse<(i64, String, u64)>>,
    held_events: FastMap<u64, Held>,
    held_seq: u64,
    rule_lists: RuleLists,
    /// The ordered rules of the event being dispatched (kept to reuse its allocation).
    ordered_buf: Vec<u32>,
    max_time_ms: i64,
    watermark_ms: i64,
    sink: Sink,
    events: u64,
    late: u64,
    late_log: VecDeque<LateEvent>,
    last_sweep_ms: i64,
    /// Counts events dispatched to operators (see [`Cx::event_seq`]).
    dispatch_seq: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.slots.len())
            .field("keys", &self.keys.len())
            .field("watermark_ms", &self.watermark_ms)
            .finish()
    }
}

impl Engine {
    /// An engine over `city` with the given rules (already compiled against that city).
    pub fn new(config: EngineConfig, city: Arc<City>, rules: Vec<Rule>) -> Engine {
        let mut engine = Engine {
            sink: Sink {
                max_evidence: config.max_evidence.max(1),
                ..Sink::default()
            },
            config,
            zones: ZoneSets::default(),
            city,
            hotlists: Hotlists::default(),
            slots: Vec::new(),
            by_kind: FastMap::default(),
            any_kind: Arc::from(Vec::new()),
            by_source: FastMap::default(),
            keys: Interner::default(),
            key_buf: String::new(),
            timers: BinaryHeap::new(),
            held: BinaryHeap::new(),
            held_events: FastMap::default(),
            held_seq: 0,
            rule_lists: RuleLists::default(),
            ordered_buf: Vec::new(),
            max_time_ms: i64::MIN,
            watermark_ms: i64::MIN,
            events: 0,
            late: 0,
            late_log: VecDeque::new(),
            last_sweep_ms: i64::MIN,
            dispatch_seq: 0,
        };
        engine.set_rules(rules);
        engine
    }

    /// Replaces the rule set. Rules whose spec is unchanged keep their state and open
    /// alerts; changed and new rules start empty; removed rules drop theirs.
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        self.replace_rules(rules, false);
    }

    /// Replaces the city model (zones drawn or edited) and the rules, compiled against it.
    /// Rules that read zones, corridors or roads start over with empty state, since zone
    /// state refers to the old model's zones; the others keep theirs as in
    /// [`Engine::set_rules`].
    pub fn set_city(&mut self, city: Arc<City>, rules: Vec<Rule>) {
        self.city = city;
        self.zones = ZoneSets::default();
        self.replace_rules(rules, true);
    }

    fn replace_rules(&mut self, rules: Vec<Rule>, city_changed: bool) {
        let old_ids: Vec<String> = self.slots.iter().map(|s| s.rule.spec.id.clone()).collect();
        let old_stats = std::mem::take(&mut self.sink.stats);
        let mut old: HashMap<String, (Slot, RuleStats)> = std::mem::take(&mut self.slots)
            .into_iter()
            .zip(old_stats)
            .map(|(slot, stats)| (slot.rule.spec.id.clone(), (slot, stats)))
            .collect();
        let mut slots = Vec::with_capacity(rules.len());
        let mut stats = Vec::with_capacity(rules.len());
        let mut kept: HashMap<String, u32> = HashMap::new();
        for rule in rules.into_iter().filter(|r| r.spec.enabled) {
            let index = slots.len() as u32;
            match old.remove(&rule.spec.id) {
                Some((slot, st)) if slot.rule.fingerprint == rule.fingerprint && !(city_changed && rule.spec.reads_zones()) => {
                    kept.insert(rule.spec.id.clone(), index);
                    slots.push(Slot { rule, ..slot });
                    stats.push(st);
                }
                _ => {
                    let mut op = ops::new_operator(&rule, &self.city, &mut self.zones);
                    op.join(&self.zones, self.watermark_ms);
                    let ordered = matches!(rule.spec.kind, RuleKind::Count | RuleKind::Sequence);
                    let stateless = matches!(rule.spec.kind, RuleKind::Match | RuleKind::Hotlist);
                    slots.push(Slot {
                        rule,
                        op,
                        ordered,
                        stateless,
                        key_class: 0,
                        when_class: 0,
                    });
                    stats.push(RuleStats::default());
                }
            }
        }
        // Open alerts and held events refer to rules by index: re-key the kept ones.
        let remap = |old_index: u32| -> Option<u32> {
            old_ids.get(old_index as usize).and_then(|id| kept.get(id)).copied()
        };
        let open = std::mem::take(&mut self.sink.open);
        for ((rule, key, scope), alert) in open {
            if let Some(new) = remap(rule) {
                self.sink.open.insert((new, key, scope), alert);
            }
        }
        self.rule_lists = RuleLists::default();
        let mut kept_rules = Vec::new();
        for held in self.held_events.values_mut() {
            kept_rules.clear();
            kept_rules.extend(held.rules.iter().filter_map(|&r| remap(r)));
            held.rules = self.rule_lists.get(&kept_rules);
        }
        let mut classes: HashMap<String, u32> = HashMap::new();
        let mut when_classes: HashMap<String, u32> = HashMap::new();
        for slot in &mut slots {
            let n = classes.len() as u32;
            slot.key_class = *classes.entry(slot.rule.key.source().to_string()).or_insert(n);
            let when = slot.rule.when.as_ref().map_or("", |w| w.source()).to_string();
            let n = when_classes.len() as u32;
            slot.when_class = *when_classes.entry(when).or_insert(n);
        }
        let used: Vec<usize> = slots.iter().filter_map(|s| s.op.tracker()).collect();
        self.zones.clear_unused_trackers(&used);
        self.slots = slots;
        self.sink.stats = stats;
        self.reindex();
        self.rebuild_timers();
    }

    fn reindex(&mut self) {
        let mut by_kind: FastMap<String, Vec<u32>> = FastMap::default();
        let mut by_source: FastMap<String, Vec<u32>> = FastMap::default();
        let mut any_kind = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.rule.spec.kind == RuleKind::Sql {
                continue; // run on a schedule by the host, not per event
            }
            // Per-device rules (`event.source == "…"`) are found by source: ten thousand of
            // them cost an event one lookup, not ten thousand predicates.
            if let Some(sources) = slot.rule.when.as_ref().and_then(|w| w.sources()) {
                for s in sources {
                    by_source.entry(s).or_default().push(i as u32);
                }
                continue;
            }
            match &slot.rule.kinds {
                Some(kinds) => {
                    for k in kinds {
                        by_kind.entry(k.clone()).or_default().push(i as u32);
                    }
                }
                None => any_kind.push(i as u32),
            }
        }
        self.by_kind = by_kind.into_iter().map(|(k, v)| (k, Arc::from(v))).collect();
        self.by_source = by_source.into_iter().map(|(k, v)| (k, Arc::from(v))).collect();
        self.any_kind = Arc::from(any_kind);
    }

    fn rebuild_timers(&mut self) {
        self.timers.clear();
        let mut pending = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            pending.clear();
            slot.op.timers(&self.zones, &mut pending);
            for &(key, at, aux) in &pending {
                self.timers.push(Reverse(Timer {
                    at,
                    rule: i as u32,
                    key,
                    aux,
                }));
            }
        }
    }

    /// The rules the engine runs, in order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.slots.iter().map(|s| &s.rule)
    }

    /// Replaces the hotlists that hotlist rules look values up in.
    pub fn set_hotlists(&mut self, hotlists: Hotlists) {
        self.hotlists = hotlists;
    }

    /// The hotlists in use.
    pub fn hotlists(&self) -> &Hotlists {
        &self.hotlists
    }

    /// The current watermark: event time up to which every event is taken to have arrived.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        (self.watermark_ms != i64::MIN).then(|| ms_to_time(self.watermark_ms))
    }

    /// Applies one event. Outputs collect until [`Engine::drain`].
    pub fn process(&mut self, event: &Event) {
        self.events += 1;
        self.dispatch_seq += 1;
        let t = time_ms(&event.time);
        let late = self.watermark_ms != i64::MIN && t < self.watermark_ms;
        if late {
            self.late += 1;
            if self.late_log.len() >= self.config.late_log {
                self.late_log.pop_front();
            }
            self.late_log.push_back(LateEvent {
                id: event.id.clone(),
                source: event.source.clone(),
                kind: event.kind.clone(),
                time: event.time,
                watermark: ms_to_time(self.watermark_ms),
            });
        }
        let mut ordered_rules = std::mem::take(&mut self.ordered_buf);
        ordered_rules.clear();
        let mut last_key: Option<(u32, u32)> = None;
        let mut last_when: Option<(u32, bool)> = None;
        // Candidate rules: those for the event's kind and those for any kind (two sorted
        // lists, visited in rule order), then those for its source. Shared lists, so the
        // walk does not hold a borrow of the engine.
        let by_kind = self.by_kind.get(event.kind.as_str()).cloned();
        let by_kind: &[u32] = by_kind.as_deref().unwrap_or(&[]);
        let any = self.any_kind.clone();
        let by_source = if self.by_source.is_empty() {
            None
        } else {
            self.by_source.get(event.source.as_str()).cloned()
        };
        let (mut a, mut b) = (0, 0);
        loop {
            let next = match (by_kind.get(a), any.get(b)) {
                (Some(&x), Some(&y)) if x <= y => {
                    a += 1;
                    x
                }
                (_, Some(&y)) => {
                    b += 1;
                    y
                }
                (Some(&x), None) => {
                    a += 1;
                    x
                }
                (None, None) => break,
            };
            self.dispatch(next, event, t, late, &mut last_key, &mut last_when, &mut ordered_rules);
        }
        for &next in by_source.as_deref().unwrap_or(&[]) {
            self.dispatch(next, event, t, late, &mut last_key, &mut last_when, &mut ordered_rules);
        }
        if !ordered_rules.is_empty() {
            let seq = self.held_seq;
            self.held_seq += 1;
            self.held.push(Reverse((t, event.id.clone(), seq)));
            self.held_events.insert(
                seq,
                Held {
                    event: Arc::new(event.clone()),
                    rules: self.rule_lists.get(&ordered_rules),
                },
            );
        }
        self.ordered_buf = ordered_rules;
        if t > self.max_time_ms {
            self.max_time_ms = t;
            let wm = t.saturating_sub(self.config.lateness.as_millis() as i64);
            self.advance(wm);
        }
    }

    /// Offers an event to one rule: `when`, then the key, then the operator (or the hold
    /// queue, for ordered rules).
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        next: u32,
        event: &Event,
        t: i64,
        late: bool,
        last_key: &mut Option<(u32, u32)>,
        last_when: &mut Option<(u32, bool)>,
        ordered_rules: &mut Vec<u32>,
    ) {
        let slot = &mut self.slots[next as usize];
        if late && !slot.stateless {
            return;
        }
        let stats = &mut self.sink.stats[next as usize];
        if let Some(when) = &slot.rule.when {
            let matched = match *last_when {
                Some((class, m)) if class == slot.when_class => m,
                _ => {
                    let m = when.matches(event);
                    *last_when = Some((slot.when_class, m));
                    m
                }
            };
            if !matched {
                return;
            }
        }
        stats.matched += 1;
        if slot.ordered {
            ordered_rules.push(next);
            return;
        }
        // Most rules share their key expression (`event.source`): intern it once per event.
        // Stateless rules keep no state per key, so their key is interned only if they fire
        // (a hotlist rule keyed by plate must not remember every plate it sees).
        let key = match *last_key {
            Some((class, id)) if class == slot.key_class => id,
            _ => {
                if !slot.rule.key.key(event, &mut self.key_buf) {
                    stats.eval_errors += 1;
                    return;
                }
                if slot.stateless {
                    PENDING_KEY
                } else {
                    let id = self.keys.intern(&self.key_buf);
                    *last_key = Some((slot.key_class, id));
                    id
                }
            }
        };
        let mut cx = Cx {
            rule_index: next,
            rule: &slot.rule,
            city: &self.city,
            zones: &self.zones,
            hotlists: &self.hotlists,
            keys: &mut self.keys,
            pending_key: &self.key_buf,
            event_seq: self.dispatch_seq,
            timers: &mut self.timers,
            sink: &mut self.sink,
        };
        slot.op.on_event(&mut cx, key, event, t);
    }

    /// Moves the watermark to `to` if that is later: releases held events and fires timers
    /// up to it. A live node calls this with `now - lateness` so that timers (absence,
    /// dwell) fire while no events arrive.
    pub fn advance_to(&mut self, to: DateTime<Utc>) {
        self.advance(time_ms(&to));
    }

    fn advance(&mut self, wm: i64) {
        if wm <= self.watermark_ms {
            return;
        }
        // Held events and timers in time order; at equal times events go first, so a
        // timer sees every event at or before its time.
        loop {
            let next_event = self.held.peek().map(|Reverse((t, _, _))| *t).filter(|&t| t <= wm);
            let next_timer = self.timers.peek().map(|Reverse(tm)| tm.at).filter(|&t| t <= wm);
            match (next_event, next_timer) {
                (Some(te), Some(tt)) if te <= tt => self.release_one(),
                (Some(_), None) => self.release_one(),
                (_, Some(tt)) => {
                    self.watermark_ms = self.watermark_ms.max(tt);
                    let Reverse(timer) = self.timers.pop().expect("peeked");
                    self.fire_timer(timer);
                }
                (None, None) => break,
            }
        }
        self.watermark_ms = wm;
        // Forget open alerts whose suppression period is over, once a minute of event time.
        if wm.saturating_sub(self.last_sweep_ms) >= 60_000 {
            self.last_sweep_ms = wm;
            let slots = &self.slots;
            self.sink.open.retain(|(rule, _, _), open| {
                let rule = &slots[*rule as usize].rule.spec;
                // Alerts of rules that clear stay open until they clear.
                if matches!(rule.kind, RuleKind::Threshold | RuleKind::Absence) {
                    return true;
                }
                open.last_ms + rule.suppress_period().as_millis() as i64 > wm
            });
            self.zones.evict(wm);
        }
    }

    fn release_one(&mut self) {
        let Reverse((t, _, seq)) = self.held.pop().expect("peeked");
        let Some(held) = self.held_events.remove(&seq) else { return };
        self.dispatch_seq += 1;
        self.watermark_ms = self.watermark_ms.max(t);
        for &r in held.rules.iter() {
            let slot = &mut self.slots[r as usize];
            if !slot.rule.key.key(&held.event, &mut self.key_buf) {
                self.sink.stats[r as usize].eval_errors += 1;
                continue;
            }
            let key = self.keys.intern(&self.key_buf);
            let mut cx = Cx {
                rule_index: r,
                rule: &slot.rule,
                city: &self.city,
                zones: &self.zones,
                hotlists: &self.hotlists,
                keys: &mut self.keys,
                pending_key: "",
                event_seq: self.dispatch_seq,
                timers: &mut self.timers,
                sink: &mut self.sink,
            };
            slot.op.on_event(&mut cx, key, &held.event, t);
        }
    }

    fn fire_timer(&mut self, timer: Timer) {
        let Some(slot) = self.slots.get_mut(timer.rule as usize) else { return };
        let mut cx = Cx {
            rule_index: timer.rule,
            rule: &slot.rule,
            city: &self.city,
            zones: &self.zones,
            hotlists: &self.hotlists,
            keys: &mut self.keys,
            pending_key: &self.key_buf,
            event_seq: self.dispatch_seq,
            timers: &mut self.timers,
            sink: &mut self.sink,
        };
        slot.op.on_timer(&mut cx, timer.key, timer.at, timer.aux);
    }

    /// Releases everything held and fires every pending timer up to the newest event time
    /// plus `horizon` (end of a replay: what would happen if time went on that long).
    pub fn finish(&mut self, horizon: Duration) {
        if self.max_time_ms == i64::MIN {
            return;
        }
        let to = self.max_time_ms.saturating_add(horizon.as_millis() as i64);
        self.advance(to);
    }

    /// Takes the outputs gathered so far.
    pub fn drain(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.sink.out)
    }

    /// Moves the outputs gathered so far into `out`.
    pub fn drain_into(&mut self, out: &mut Vec<Output>) {
        out.append(&mut self.sink.out);
    }

    /// Counters, per rule and overall.
    pub fn stats(&self) -> EngineStats {
        let mut rules = BTreeMap::new();
        for (slot, st) in self.slots.iter().zip(&self.sink.stats) {
            let mut st = st.clone();
            st.keys = slot.op.state_len(&self.zones) as u64;
            st.out_of_order = slot.op.out_of_order(&self.zones);
            rules.insert(slot.rule.spec.id.clone(), st);
        }
        EngineStats {
            events: self.events,
            late: self.late,
            raised: self.sink.stats.iter().map(|s| s.raised).sum(),
            timers: self.timers.len() as u64,
            buffered: self.held_events.len() as u64,
            rules,
        }
    }

    /// The most recent late events (see [`EngineConfig::late_log`]).
    pub fn late_events(&self) -> impl Iterator<Item = &LateEvent> {
        self.late_log.iter()
    }

    /// The engine's state, to be stored beside the position of the last event applied.
    ///
    /// Held events are part of it, so a restart from the checkpoint needs only the events
    /// after that position.
    pub fn checkpoint(&self) -> Checkpoint {
        self.snapshot().into_checkpoint()
    }

    /// The engine's state as a copy that is turned into a [`Checkpoint`] later, e.g. on
    /// another thread: taking it costs memory copies of the large keyed states, not their
    /// serialisation, so the engine pauses only for the copies.
    pub fn snapshot(&self) -> CheckpointSnapshot {
        // Open alerts by rule in one pass (a node runs ten thousand rules).
        let mut open_by_rule: Vec<Vec<(String, u32, OpenAlertState)>> = vec![Vec::new(); self.slots.len()];
        for (&(r, k, scope), o) in &self.sink.open {
            open_by_rule[r as usize].push((
                if k == u32::MAX { String::new() } else { self.keys.name(k).to_string() },
                scope,
                OpenAlertState {
                    id: o.id.clone(),
                    last_ms: o.last_ms,
                    count: o.count,
                },
            ));
        }
        let rules = self
            .slots
            .iter()
            .zip(open_by_rule)
            .enumerate()
            .map(|(i, (slot, open))| SnapshotRule {
                id: slot.rule.spec.id.clone(),
                fingerprint: slot.rule.fingerprint,
                state: match slot.op.snapshot() {
                    Some(later) => RuleState::Later(later),
                    None => RuleState::Ready(slot.op.save(&self.keys, &self.zones)),
                },
                open,
                stats: self.sink.stats[i].clone(),
            })
            .collect();
        CheckpointSnapshot {
            keys: self.keys.names().clone(),
            trackers: self.zones.save_trackers(&self.city, &self.keys),
            max_time_ms: self.max_time_ms,
            watermark_ms: self.watermark_ms,
            events: self.events,
            late: self.late,
            rules,
            held: self
                .held
                .iter()
                .filter_map(|Reverse((t, _, seq))| {
                    let h = self.held_events.get(seq)?;
                    Some(SnapshotHeld {
                        time_ms: *t,
                        seq: *seq,
                        event: h.event.clone(),
                        rules: h.rules.clone(),
                    })
                })
                .collect(),
            rule_ids: self.slots.iter().map(|s| s.rule.spec.id.clone()).collect(),
        }
    }

    /// Restores state saved by [`Engine::checkpoint`]. Rules whose spec changed since (or
    /// that are gone) start empty; the rest resume where they were.
    pub fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), String> {
        self.max_time_ms = checkpoint.max_time_ms;
        self.watermark_ms = checkpoint.watermark_ms;
        self.last_sweep_ms = checkpoint.watermark_ms;
        self.events = checkpoint.events;
        self.late = checkpoint.late;
        let index: HashMap<String, u32> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.rule.spec.id.clone(), i as u32))
            .collect();
        for (id, saved) in &checkpoint.rules {
            let Some(&i) = index.get(id) else { continue };
            let slot = &mut self.slots[i as usize];
            if slot.rule.fingerprint != saved.fingerprint {
                continue;
            }
            slot.op
                .load(&saved.state, &mut self.keys, &self.zones)
                .map_err(|e| format!("rule `{id}`: the checkpointed state does not load: {e}"))?;
            self.sink.stats[i as usize] = saved.stats.clone();
            for (key, scope, o) in &saved.open {
                let k = if key.is_empty() { u32::MAX } else { self.keys.intern(key) };
                self.sink.open.insert(
                    (i, k, *scope),
                    OpenAlert {
                        id: o.id.clone(),
                        last_ms: o.last_ms,
                        count: o.count,
                    },
                );
            }
        }
        self.zones
            .load_trackers(&self.city, &mut self.keys, &checkpoint.trackers)
            .map_err(|e| format!("the checkpointed geofence state does not load: {e}"))?;
        for slot in &mut self.slots {
            let restored = checkpoint
                .rules
                .get(&slot.rule.spec.id)
                .is_some_and(|saved| saved.fingerprint == slot.rule.fingerprint);
            if !restored {
                slot.op.join(&self.zones, self.watermark_ms);
            }
        }
        self.held.clear();
        self.held_events.clear();
        for h in &checkpoint.held {
            let rules: Vec<u32> = h.rules.iter().filter_map(|r| index.get(r).copied()).collect();
            if rules.is_empty() {
                continue;
            }
            let seq = self.held_seq;
            self.held_seq += 1;
            self.held.push(Reverse((time_ms(&h.event.time), h.event.id.clone(), seq)));
            self.held_events.insert(
                seq,
                Held {
                    event: h.event.clone(),
                    rules: self.rule_lists.get(&rules),
                },
            );
        }
        self.rebuild_timers();
        Ok(())
    }
}

/// The saved state of an engine (see [`Engine::checkpoint`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Newest event time seen (ms since the epoch).
    pub max_time_ms: i64,
    /// The watermark (ms since the epoch).
    pub watermark_ms: i64,
    /// Events processed.
    pub events: u64,
    /// Late events seen.
    pub late: u64,
    /// Per rule id.
    pub rules: BTreeMap<String, RuleCheckpoint>,
    /// Events waiting for the watermark.
    pub held: Vec<HeldState>,
    /// Where keys are with respect to the zone sets of geofence rules, by zone ids, `when`
    /// and `key`.
    #[serde(default)]
    pub trackers: BTreeMap<String, StateJson>,
}

/// The engine's state as taken by [`Engine::snapshot`], not yet written out.
pub struct CheckpointSnapshot {
    keys: KeyNames,
    trackers: BTreeMap<String, StateJson>,
    max_time_ms: i64,
    watermark_ms: i64,
    events: u64,
    late: u64,
    rules: Vec<SnapshotRule>,
    /// Held events, in no order.
    held: Vec<SnapshotHeld>,
    /// Rule ids by index, for the held events.
    rule_ids: Vec<String>,
}

struct SnapshotHeld {
    time_ms: i64,
    /// Arrival order, which breaks ties in time as the hold queue does.
    seq: u64,
    event: Arc<Event>,
    rules: Arc<[u32]>,
}

struct SnapshotRule {
    id: String,
    fingerprint: u64,
    state: RuleState,
    open: Vec<(String, u32, OpenAlertState)>,
    stats: RuleStats,
}

enum RuleState {
    Ready(StateJson),
    Later(ops::LaterState),
}

impl CheckpointSnapshot {
    /// Writes the copied state out: the same checkpoint [`Engine::checkpoint`] would have
    /// given at the moment the snapshot was taken.
    pub fn into_checkpoint(self) -> Checkpoint {
        let keys = &self.keys;
        let rules = self
            .rules
            .into_iter()
            .map(|r| {
                let mut open = r.open;
                open.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                let state = match r.state {
                    RuleState::Ready(state) => state,
                    RuleState::Later(later) => later(keys),
                };
                (
                    r.id,
                    RuleCheckpoint {
                        fingerprint: r.fingerprint,
                        state,
                        open,
                        stats: r.stats,
                    },
                )
            })
            .collect();
        let mut held = self.held;
        held.sort_unstable_by_key(|h| (h.time_ms, h.seq));
        let rule_ids = &self.rule_ids;
        Checkpoint {
            max_time_ms: self.max_time_ms,
            watermark_ms: self.watermark_ms,
            events: self.events,
            late: self.late,
            rules,
            held: held
                .into_iter()
                .map(|h| HeldState {
                    event: h.event,
                    rules: h.rules.iter().map(|&r| rule_ids[r as usize].clone()).collect(),
                })
                .collect(),
            trackers: self.trackers,
        }
    }
}

/// An operator's saved state: JSON text written straight from the state (no `Value` tree
/// in between, which for a million keys took seconds), compared by its text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StateJson(pub Box<serde_json::value::RawValue>);

impl StateJson {
    /// Serialises `state`.
    pub fn of(state: &impl Serialize) -> StateJson {
        StateJson(
            serde_json::value::to_raw_value(state)
                .unwrap_or_else(|_| serde_json::value::RawValue::from_string("null".into()).expect("null is JSON")),
        )
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// Parsed into a `Value` (for inspection).
    pub fn value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }

    /// From a `Value`.
    pub fn from_value(value: Value) -> StateJson {
        StateJson::of(&value)
    }
}

impl PartialEq for StateJson {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

/// One rule's saved state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleCheckpoint {
    /// The rule's fingerprint when saved: state is restored only into the same rule.
    pub fingerprint: u64,
    /// The operator's keyed state.
    pub state: StateJson,
    /// Open alerts: key, scope, alert.
    pub open: Vec<(String, u32, OpenAlertState)>,
    /// The rule's counters.
    pub stats: RuleStats,
}

/// An open alert in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAlertState {
    /// Alert id.
    pub id: String,
    /// Event time of the last firing (ms).
    pub last_ms: i64,
    /// Firings so far.
    pub count: u64,
}

/// A held event in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldState {
    /// The event (shared with the engine: taking a checkpoint copies no event).
    #[serde(with = "shared_event")]
    pub event: Arc<Event>,
    /// Ids of the ordered rules it is held for.
    pub rules: Vec<String>,
}

/// An `Arc<Event>` written as the event itself.
mod shared_event {
    use std::sync::Arc;

    use cityward_model::Event;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(event: &Arc<Event>, s: S) -> Result<S::Ok, S::Error> {
        event.as_ref().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Event>, D::Error> {
        Event::deserialize(d).map(Arc::new)
    }
}
