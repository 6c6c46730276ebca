//! Hotlists: named lists of values (plates, RFID tags) that hotlist rules look up.
//!
//! Each entry carries why it is listed, who listed it, and when it expires; an expired
//! entry stops matching events from its expiry on. Values are compared normalised
//! (uppercase, without spaces, `-` and `·`), so `沪A·12345` and `沪a 12345` are one plate.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One listed value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotlistEntry {
    /// The value as listed (e.g. a plate).
    pub value: String,
    /// Why it is listed (e.g. a case reference); required.
    pub reason: String,
    /// Who listed it (a user or unit); required.
    pub owner: String,
    /// When it was listed.
    #[serde(with = "cityward_model::event::rfc3339")]
    pub added: DateTime<Utc>,
    /// From when it no longer matches; `None` never expires.
    #[serde(
        default,
        with = "cityward_model::event::rfc3339_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires: Option<DateTime<Utc>>,
}

impl HotlistEntry {
    /// Whether the entry matches an event at `time`.
    pub fn active_at(&self, time: DateTime<Utc>) -> bool {
        self.expires.is_none_or(|e| time < e)
    }
}

/// All hotlists, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hotlists {
    lists: BTreeMap<String, BTreeMap<String, HotlistEntry>>,
}

/// The form values are compared in.
pub fn normalize_value(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '·' | '.'))
        .flat_map(char::to_uppercase)
        .collect()
}

impl Hotlists {
    /// Empty.
    pub fn new() -> Self {
        Hotlists::default()
    }

    /// Adds or replaces an entry; refuses an empty value, reason or owner, and an expiry
    /// before the entry was added.
    pub fn put(&mut self, list: &str, entry: HotlistEntry) -> Result<(), String> {
        if list.trim().is_empty() {
            return Err("the hotlist name must not be empty".into());
        }
        let key = normalize_value(&entry.value);
        if key.is_empty() {
            return Err("the value must not be empty".into());
        }
        if entry.reason.trim().is_empty() {
            return Err(format!("`{}`: give a reason for listing it (e.g. the case number)", entry.value));
        }
        if entry.owner.trim().is_empty() {
            return Err(format!("`{}`: give the owner of the entry", entry.value));
        }
        if entry.expires.is_some_and(|e| e <= entry.added) {
            return Err(format!("`{}`: the expiry must be after the time it is added", entry.value));
        }
        self.lists.entry(list.to_string()).or_default().insert(key, entry);
        Ok(())
    }

    /// Removes an entry; whether it was there.
    pub fn remove(&mut self, list: &str, value: &str) -> bool {
        self.lists
            .get_mut(list)
            .is_some_and(|l| l.remove(&normalize_value(value)).is_some())
    }

    /// The entry for `value` in `list` that is active at `time`.
    pub fn lookup(&self, list: &str, value: &str, time: DateTime<Utc>) -> Option<&HotlistEntry> {
        let entries = self.lists.get(list)?;
        let entry = if value.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
            entries.get(value)
        } else {
            entries.get(&normalize_value(value))
        }?;
        entry.active_at(time).then_some(entry)
    }

    /// The entries of one list, by normalised value.
    pub fn list(&self, list: &str) -> impl Iterator<Item = &HotlistEntry> {
        self.lists.get(list).into_iter().flat_map(|l| l.values())
    }

    /// The list names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.lists.keys().map(String::as_str)
    }

    /// Drops entries that expired before `now`; how many.
    pub fn purge_expired(&mut self, now: DateTime<Utc>) -> usize {
        let mut n = 0;
        for l in self.lists.values_mut() {
            let before = l.len();
            l.retain(|_, e| e.active_at(now));
            n += before - l.len();
        }
        n
    }
}
