//! One operator per rule kind. Each keeps its state per key and reports firings through
//! [`Cx`]; the engine decides the order events and timers reach it.


use cityward_model::{City, Event};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::engine::{Cx, Fire, Interner, KeyNames, StateJson};
use crate::rule::{Rule, RuleKind};
use crate::zones::ZoneSets;

mod absence;
mod count;
mod geofence;
mod motion;
mod sequence;
mod simple;
mod threshold;


/// A rule kind's runtime.
pub(crate) trait Operator: Send {
    /// An event for `key` that passed the rule's `when`; `t` is its time in ms.
    fn on_event(&mut self, cx: &mut Cx<'_>, key: u32, event: &Event, t: i64);
    /// A timer scheduled with [`Cx::schedule`] came due.
    fn on_timer(&mut self, _cx: &mut Cx<'_>, _key: u32, _at: i64, _aux: u32) {}
    /// Every timer the operator expects, as (key, at, aux): used to rebuild the timer
    /// queue after a restore or a rule change.
    fn timers(&self, _zones: &ZoneSets, _out: &mut Vec<(u32, i64, u32)>) {}
    /// Called when the operator starts on state it did not build (a rule added or changed
    /// at run time, or restored without its own checkpointed state), with the watermark.
    fn join(&mut self, _zones: &ZoneSets, _watermark_ms: i64) {}
    /// The shared geofence tracker the operator uses, if any.
    fn tracker(&self) -> Option<usize> {
        None
    }
    /// The keyed state, by key name.
    fn save(&self, keys: &Interner, zones: &ZoneSets) -> StateJson;
    /// A copy of a large keyed state, to be written out (as `save` would) on another
    /// thread: the engine waits while the copy is taken, not while it is written. `None`
    /// for state small enough to `save` at once.
    fn snapshot(&self) -> Option<LaterState> {
        None
    }
    /// Loads state written by `save`.
    fn load(&mut self, state: &StateJson, keys: &mut Interner, zones: &ZoneSets) -> Result<(), String>;
    /// How many keys (or groups) have state.
    fn state_len(&self, zones: &ZoneSets) -> usize;
    /// Events older than one already applied for their key.
    fn out_of_order(&self, _zones: &ZoneSets) -> u64 {
        0
    }
}

/// The state methods of an operator whose whole keyed state is the `Keyed` in `self.keys`.
macro_rules! keyed_state_methods {
    () => {
        fn save(&self, keys: &Interner, _zones: &ZoneSets) -> StateJson {
            self.keys.save(keys)
        }

        fn load(&mut self, state: &StateJson, keys: &mut Interner, _zones: &ZoneSets) -> Result<(), String> {
            self.keys.load(state, keys)
        }

        fn snapshot(&self) -> Option<$crate::ops::LaterState> {
            Some(self.keys.snapshot())
        }

        fn state_len(&self, _zones: &ZoneSets) -> usize {
            self.keys.len()
        }

        fn out_of_order(&self, _zones: &ZoneSets) -> u64 {
            self.keys.out_of_order
        }
    };
}
pub(crate) use keyed_state_methods;

/// Per-key state of type `S`, with the save/load every operator needs.
///
/// A slot map rather than a `HashMap<u32, S>`: states sit in chunks (after the first, of a
/// fixed size: no doubling slack) and a small table of 4-byte positions finds them. For the million-key
/// case (an absence rule over every device) this halves the memory per key.
pub(crate) struct Keyed<S> {
    index: hashbrown::HashTable<u32>,
    chunks: Vec<Vec<(u32, S)>>,
    len: usize,
    hasher: ahash::RandomState,
    pub out_of_order: u64,
}

const CHUNK: usize = 1 << 14;

impl<S> Keyed<S> {
    pub fn new() -> Self {
        Keyed {
            index: hashbrown::HashTable::new(),
            chunks: Vec::new(),
            len: 0,
            hasher: ahash::RandomState::new(),
            out_of_order: 0,
        }
    }

    fn slot(&self, pos: u32) -> &(u32, S) {
        &self.chunks[pos as usize / CHUNK][pos as usize % CHUNK]
    }

    fn slot_mut(&mut self, pos: u32) -> &mut (u32, S) {
        &mut self.chunks[pos as usize / CHUNK][pos as usize % CHUNK]
    }

    fn find(&self, key: u32) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.index.find(hash, |&pos| self.slot(pos).0 == key).copied()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get_mut(&mut self, key: u32) -> Option<&mut S> {
        let pos = self.find(key)?;
        Some(&mut self.slot_mut(pos).1)
    }

    /// Inserts or replaces the state of `key`.
    pub fn insert(&mut self, key: u32, state: S) {
        if let Some(pos) = self.find(key) {
            self.slot_mut(pos).1 = state;
            return;
        }
        let pos = self.len as u32;
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            // The first chunk grows as a Vec does (a rule per device has one key: it must not
            // cost a whole chunk); later ones are allocated whole, so none is ever copied.
            self.chunks.push(if self.chunks.is_empty() { Vec::new() } else { Vec::with_capacity(CHUNK) });
        }
        self.chunks[self.len / CHUNK].push((key, state));
        self.len += 1;
        let hash = self.hasher.hash_one(key);
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.index.insert_unique(hash, pos, |&p| {
            hasher.hash_one(chunks[p as usize / CHUNK][p as usize % CHUNK].0)
        });
    }

    /// Removes the state of `key`: the last slot moves into its place.
    pub fn remove(&mut self, key: u32) -> Option<S> {
        let hash = self.hasher.hash_one(key);
        let chunks = &self.chunks;
        let entry = self
            .index
            .find_entry(hash, |&p| chunks[p as usize / CHUNK][p as usize % CHUNK].0 == key)
            .ok()?;
        let (pos, _) = entry.remove();
        let last = (self.len - 1) as u32;
        if pos != last {
            let moved_key = self.slot(last).0;
            let moved_hash = self.hasher.hash_one(moved_key);
            let chunks = &self.chunks;
            if let Some(p) = self.index.find_mut(moved_hash, |&p| chunks[p as usize / CHUNK][p as usize % CHUNK].0 == moved_key) {
                *p = pos;
            }
        }
        // Swap the removed slot to the end and pop it.
        let lc = last as usize / CHUNK;
        let tail = self.chunks[lc].pop().expect("the last slot exists");
        self.len -= 1;
        if self.chunks[lc].is_empty() && lc + 1 == self.chunks.len() && lc > 0 {
            self.chunks.pop();
        }
        if pos == last {
            return Some(tail.1);
        }
        Some(std::mem::replace(self.slot_mut(pos), tail).1)
    }

    /// Every (key, state), in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &S)> {
        self.chunks.iter().flatten().map(|(k, s)| (*k, s))
    }

    pub fn clear(&mut self) {
        self.index.clear();
        self.chunks.clear();
        self.len = 0;
    }
}

impl<S: Default> Keyed<S> {
    /// The state of `key`, inserted as default when absent.
    pub fn get_or_default(&mut self, key: u32) -> &mut S {
        let pos = match self.find(key) {
            Some(pos) => pos,
            None => {
                self.insert(key, S::default());
                (self.len - 1) as u32
            }
        };
        &mut self.slot_mut(pos).1
    }
}

/// State copied out of an operator, written to JSON later with the key names of the same
/// moment.
pub(crate) type LaterState = Box<dyn FnOnce(&KeyNames) -> StateJson + Send>;

impl<S: Serialize + DeserializeOwned> Keyed<S> {
    /// In slot order, which depends only on the order keys came and went, so the same
    /// events give the same text without sorting a million names.
    pub fn save(&self, keys: &Interner) -> StateJson {
        StateJson::of(&SlotMap { chunks: &self.chunks, keys: keys.names() })
    }

    /// A copy of the state that `save` would write, written when called.
    pub fn snapshot(&self) -> LaterState
    where
        S: Clone + Send + 'static,
    {
        let chunks = self.chunks.clone();
        Box::new(move |keys| StateJson::of(&SlotMap { chunks: &chunks, keys }))
    }

    pub fn load(&mut self, state: &StateJson, keys: &mut Interner) -> Result<(), String> {
        let loaded: Vec<(String, S)> = serde_json::from_str::<MapEntries<S>>(state.text())
            .map_err(|e| e.to_string())?
            .0;
        self.clear();
        for (k, s) in loaded {
            self.insert(keys.intern(&k), s);
        }
        Ok(())
    }
}

/// The slots of a `Keyed` written as a JSON object by key name, without collecting it first.
struct SlotMap<'a, S> {
    chunks: &'a [Vec<(u32, S)>],
    keys: &'a KeyNames,
}

impl<S: Serialize> Serialize for SlotMap<'_, S> {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        s.collect_map(self.chunks.iter().flatten().map(|(k, v)| (self.keys.name(*k), v)))
    }
}

/// Entries written as a JSON object in the order given (sorted by the caller, so equal
/// state gives equal text).
pub(crate) struct SortedMap<'a, K: Serialize, V: Serialize>(pub Vec<(K, &'a V)>);

impl<K: Serialize, V: Serialize> Serialize for SortedMap<'_, K, V> {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// A JSON object read as a list of entries (no map built on the way).
pub(crate) struct MapEntries<V>(pub Vec<(String, V)>);

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for MapEntries<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = MapEntries<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of keyed state")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(MapEntries(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// A short text (an event id) kept inline when it fits, so that per-key state of a
/// million keys holds no heap string each: no allocation when it changes, and a checkpoint
/// copies it with the state. Event ids the node assigns (26 characters) fit.
#[derive(Clone)]
pub(crate) enum ShortText {
    Inline { len: u8, bytes: [u8; SHORT_TEXT_INLINE] },
    Heap(Box<str>),
}

const SHORT_TEXT_INLINE: usize = 30;

impl ShortText {
    pub fn as_str(&self) -> &str {
        match self {
            // Only whole `&str`s are copied in, so the bytes are UTF-8.
            ShortText::Inline { len, bytes } => std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default(),
            ShortText::Heap(text) => text,
        }
    }
}

impl From<&str> for ShortText {
    fn from(text: &str) -> Self {
        if text.len() <= SHORT_TEXT_INLINE {
            let mut bytes = [0; SHORT_TEXT_INLINE];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            ShortText::Inline { len: text.len() as u8, bytes }
        } else {
            ShortText::Heap(text.into())
        }
    }
}

impl Default for ShortText {
    fn default() -> Self {
        ShortText::from("")
    }
}

impl std::fmt::Debug for ShortText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl Serialize for ShortText {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ShortText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(ShortText::from(&*text))
    }
}

/// Builds the operator of a rule.
pub(crate) fn new_operator(rule: &Rule, city: &City, zones: &mut ZoneSets) -> Box<dyn Operator> {
    let spec = &rule.spec;
    match spec.kind {
        RuleKind::Match => Box::new(simple::MatchOp),
        RuleKind::Hotlist => Box::new(simple::HotlistOp::new(spec)),
        RuleKind::Sql => Box::new(simple::SqlOp),
        RuleKind::Threshold => Box::new(threshold::ThresholdOp::new(spec)),
        RuleKind::Absence => Box::new(absence::AbsenceOp::new(spec)),
        RuleKind::Geofence => Box::new(geofence::GeofenceOp::new(rule, city, zones)),
        RuleKind::Speed => Box::new(motion::SpeedOp::new(spec, city, zones)),
        RuleKind::Corridor => Box::new(motion::CorridorOp::new(spec, city)),
        RuleKind::Fatigue => Box::new(motion::FatigueOp::new(spec)),
        RuleKind::Count => Box::new(count::CountOp::new(spec, city, zones)),
        RuleKind::Sequence => Box::new(sequence::SequenceOp::new(rule)),
    }
}

/// A firing at one event, with the event's place.
pub(crate) fn fire_at<'a>(
    event: &'a Event,
    scope: u32,
    time_ms: i64,
    at_ms: i64,
    evidence: Vec<String>,
    detail: Map<String, Value>,
) -> Fire<'a> {
    Fire {
        scope,
        time_ms,
        at_ms,
        point: event.point(),
        grid: event.grid.as_deref(),
        zone: None,
        evidence,
        detail,
        group: None,
    }
}

/// A JSON object from pairs.
pub(crate) fn detail<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Rounds for display in alert details (0.1 precision).
pub(crate) fn round1(x: f64) -> Value {
    serde_json::Number::from_f64((x * 10.0).round() / 10.0)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod keyed_tests {
    use super::{Keyed, ShortText};

    #[test]
    fn short_text_keeps_any_text_and_writes_it_as_a_string() {
        for text in ["", "01JD7Q0ZP8V4K2M3N5R6S7T8W9", "a".repeat(30).as_str(), "b".repeat(31).as_str(), "烟感-探测器-0001-二号楼-东侧"] {
            let short = ShortText::from(text);
            assert_eq!(short.as_str(), text);
            let json = serde_json::to_string(&short).unwrap();
            assert_eq!(json, serde_json::to_string(text).unwrap());
            assert_eq!(serde_json::from_str::<ShortText>(&json).unwrap().as_str(), text);
        }
        assert!(matches!(ShortText::from("a".repeat(30).as_str()), ShortText::Inline { .. }));
        assert!(matches!(ShortText::from("b".repeat(31).as_str()), ShortText::Heap(_)));
    }
    use std::collections::HashMap;

    #[test]
    fn keyed_behaves_like_a_map_across_chunks() {
        let mut keyed: Keyed<u64> = Keyed::new();
        let mut model: HashMap<u32, u64> = HashMap::new();
        let mut x: u64 = 12345;
        for step in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 40_000) as u32;
            match x % 5 {
                0 | 1 => {
                    keyed.insert(key, step);
                    model.insert(key, step);
                }
                2 => assert_eq!(keyed.remove(key), model.remove(&key)),
                3 => *keyed.get_or_default(key) += 1,
                _ => assert_eq!(keyed.get_mut(key).copied(), model.get(&key).copied()),
            }
            if x % 5 == 3 {
                *model.entry(key).or_default() += 1;
            }
            assert_eq!(keyed.len(), model.len());
        }
        let mut got: Vec<(u32, u64)> = keyed.iter().map(|(k, v)| (k, *v)).collect();
        let mut want: Vec<(u32, u64)> = model.into_iter().collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
