//! Zone sets and the road index: the geography rules ask about, built once per distinct
//! set of zones and shared by every rule that names the same set.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use cityward_model::geo::{segment_distance_m, BBox, PolygonIndex};
use cityward_model::{City, Event};
use serde::{Deserialize, Serialize};
use crate::engine::{Interner, StateJson};

/// A set of zones (areas and corridors) with an index answering "which contain this point".
pub(crate) struct ZoneSet {
    /// Area zones, valued by their index in `city.zones`.
    areas: PolygonIndex<u32>,
    /// Corridor zones: box (grown by half the width) and index in `city.zones`.
    corridors: Vec<(BBox, u32)>,
    /// The last query and its answer: rules sharing a set ask about the same fix in turn.
    last: RefCell<((u64, u64), Vec<u32>)>,
}

impl ZoneSet {
    fn new(city: &City, zones: &[u32]) -> ZoneSet {
        let mut areas = Vec::new();
        let mut corridors = Vec::new();
        for &z in zones {
            let zone = &city.zones[z as usize];
            match zone.geometry.to_multi_polygon() {
                Some(mp) if !zone.is_corridor() => areas.push((mp, z)),
                _ => corridors.push((zone.bbox(), z)),
            }
        }
        ZoneSet {
            areas: PolygonIndex::new(areas),
            corridors,
            last: RefCell::new(((u64::MAX, u64::MAX), Vec::new())),
        }
    }

    /// Calls `f` with the indexes (into `city.zones`, ascending) of the zones containing the
    /// point.
    pub(crate) fn with_containing<R>(
        &self,
        city: &City,
        lon: f64,
        lat: f64,
        f: impl FnOnce(&[u32]) -> R,
    ) -> R {
        let bits = (lon.to_bits(), lat.to_bits());
        let mut last = self.last.borrow_mut();
        if last.0 != bits {
            last.0 = bits;
            last.1.clear();
            last.1.extend(self.areas.containing(lon, lat).copied());
            for &(bbox, z) in &self.corridors {
                if bbox.contains(lon, lat) && city.zones[z as usize].contains(lon, lat) {
                    last.1.push(z);
                }
            }
            last.1.sort_unstable();
        }
        f(&last.1)
    }
}

/// Every zone set the rules use, deduplicated, plus the road index when a rule needs it.
#[derive(Default)]
pub(crate) struct ZoneSets {
    sets: Vec<ZoneSet>,
    by_members: HashMap<Vec<u32>, usize>,
    /// The zone ids of each set, for naming trackers in checkpoints.
    members: Vec<Vec<u32>>,
    trackers: Vec<RefCell<Tracker>>,
    /// Tracker by its signature: zone set, `when`, `key`.
    by_signature: BTreeMap<String, usize>,
    /// Every zone id of the city, by index, and back.
    zone_ids: Vec<String>,
    zone_index: HashMap<String, u32>,
    roads: Option<RoadIndex>,
}

impl ZoneSets {
    /// The set of the given zone ids and zone kinds (ids unknown to the city are skipped:
    /// rules are checked against the city before they get here).
    pub(crate) fn register(&mut self, city: &City, ids: &[String], kinds: &[String]) -> usize {
        if self.zone_ids.is_empty() {
            self.zone_ids = city.zones.iter().map(|z| z.id.clone()).collect();
            self.zone_index = self.zone_ids.iter().enumerate().map(|(i, z)| (z.clone(), i as u32)).collect();
        }
        let mut members: Vec<u32> = city
            .zones
            .iter()
            .enumerate()
            .filter(|(_, z)| ids.contains(&z.id) || kinds.contains(&z.kind))
            .map(|(i, _)| i as u32)
            .collect();
        members.sort_unstable();
        if let Some(&i) = self.by_members.get(&members) {
            return i;
        }
        let set = ZoneSet::new(city, &members);
        self.sets.push(set);
        self.members.push(members.clone());
        self.by_members.insert(members, self.sets.len() - 1);
        self.sets.len() - 1
    }

    /// The tracker of geofence rules on `set` with this `when` and `key`.
    pub(crate) fn tracker_for(&mut self, set: usize, when: &str, key: &str) -> usize {
        let signature = format!("{set}\u{1f}{when}\u{1f}{key}");
        if let Some(&t) = self.by_signature.get(&signature) {
            return t;
        }
        self.trackers.push(RefCell::new(Tracker {
            set,
            ..Tracker::default()
        }));
        self.by_signature.insert(signature, self.trackers.len() - 1);
        self.trackers.len() - 1
    }

    pub(crate) fn tracker(&self, t: usize) -> &RefCell<Tracker> {
        &self.trackers[t]
    }

    /// Forgets the positions kept by trackers no rule uses any more (a rule added later
    /// with the same signature starts from nothing).
    pub(crate) fn clear_unused_trackers(&self, used: &[usize]) {
        for (i, t) in self.trackers.iter().enumerate() {
            if !used.contains(&i) {
                t.borrow_mut().keys.clear();
            }
        }
    }

    /// Lets trackers forget keys that no longer need remembering.
    pub(crate) fn evict(&self, watermark_ms: i64) {
        for t in &self.trackers {
            t.borrow_mut().evict(watermark_ms);
        }
    }

    /// Tracker state by a signature that names zones by id (indexes can change with the
    /// city), and keys by name.
    pub(crate) fn save_trackers(&self, city: &City, keys: &Interner) -> BTreeMap<String, StateJson> {
        let mut out = BTreeMap::new();
        for (signature, &t) in &self.by_signature {
            let tracker = self.trackers[t].borrow();
            let stable = self.stable_signature(city, signature, tracker.set);
            let mut state: Vec<(&str, SavedTrack)> = tracker
                .keys
                .iter()
                .map(|(&k, track)| {
                    (
                        keys.name(k),
                        SavedTrack {
                            last_ms: track.last_ms,
                            last_point: track.last_point,
                            inside: track
                                .inside
                                .iter()
                                .map(|s| {
                                    (
                                        city.zones[s.zone as usize].id.clone(),
                                        s.since_ms,
                                        s.enter_id.to_string(),
                                        s.enter_point,
                                        s.enter_grid.as_deref().map(str::to_string),
                                    )
                                })
                                .collect(),
                        },
                    )
                })
                .collect();
            state.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let state: Vec<(&str, &SavedTrack)> = state.iter().map(|(k, t)| (*k, t)).collect();
            out.insert(stable, StateJson::of(&crate::ops::SortedMap(state)));
        }
        out
    }

    /// Restores tracker state saved by `save_trackers` into trackers with the same signature.
    pub(crate) fn load_trackers(&self, city: &City, keys: &mut Interner, saved: &BTreeMap<String, StateJson>) -> Result<(), String> {
        let zone_index: HashMap<&str, u32> = city.zones.iter().enumerate().map(|(i, z)| (z.id.as_str(), i as u32)).collect();
        for (signature, &t) in &self.by_signature {
            let mut tracker = self.trackers[t].borrow_mut();
            let stable = self.stable_signature(city, signature, tracker.set);
            let Some(state) = saved.get(&stable) else { continue };
            let state = serde_json::from_str::<crate::ops::MapEntries<SavedTrack>>(state.text()).map_err(|e| e.to_string())?.0;
            tracker.keys.clear();
            for (key, s) in state {
                let inside = s
                    .inside
                    .into_iter()
                    .filter_map(|(zone, since_ms, enter_id, enter_point, enter_grid)| {
                        Some(Stay {
                            zone: *zone_index.get(zone.as_str())?,
                            since_ms,
                            enter_id: enter_id.into(),
                            enter_point,
                            enter_grid: enter_grid.map(Into::into),
                        })
                    })
                    .collect();
                let track = Track {
                    last_ms: s.last_ms,
                    last_point: s.last_point,
                    inside,
                };
                tracker.keys.insert(keys.intern(&key), track);
            }
        }
        Ok(())
    }

    fn stable_signature(&self, city: &City, signature: &str, set: usize) -> String {
        let rest = signature.split_once('\u{1f}').map_or("", |(_, r)| r);
        let ids: Vec<&str> = self.members[set].iter().map(|&z| city.zones[z as usize].id.as_str()).collect();
        format!("{}\u{1f}{rest}", ids.join(","))
    }

    /// The id of the zone with index `zone` in the city.
    pub(crate) fn zone_id(&self, zone: u32) -> &str {
        self.zone_ids.get(zone as usize).map_or("", String::as_str)
    }

    /// The index of the zone with `id`.
    pub(crate) fn zone_index(&self, id: &str) -> Option<u32> {
        self.zone_index.get(id).copied()
    }

    pub(crate) fn get(&self, set: usize) -> &ZoneSet {
        &self.sets[set]
    }

    pub(crate) fn ensure_roads(&mut self, city: &City) {
        if self.roads.is_none() {
            self.roads = Some(RoadIndex::new(city));
        }
    }

    pub(crate) fn roads(&self) -> Option<&RoadIndex> {
        self.roads.as_ref()
    }
}

/// Road segments bucketed on a grid of ~200 m cells, for "nearest road within d metres".
pub(crate) struct RoadIndex {
    extent: BBox,
    cell_deg: f64,
    cols: usize,
    rows: usize,
    /// Per cell, (road, segment start index) pairs.
    cells: Vec<Vec<(u32, u32)>>,
}

impl RoadIndex {
    fn new(city: &City) -> RoadIndex {
        let mut extent = BBox::EMPTY;
        for r in &city.roads {
            for &p in &r.line {
                extent.extend(p);
            }
        }
        let cell_deg = 0.002;
        let extent = extent.expand_deg(cell_deg);
        let cols = (((extent.max_lon - extent.min_lon) / cell_deg).ceil() as usize).clamp(1, 4096);
        let rows = (((extent.max_lat - extent.min_lat) / cell_deg).ceil() as usize).clamp(1, 4096);
        let mut index = RoadIndex {
            extent,
            cell_deg,
            cols,
            rows,
            cells: vec![Vec::new(); cols * rows],
        };
        for (ri, road) in city.roads.iter().enumerate() {
            for (si, seg) in road.line.windows(2).enumerate() {
                let b = BBox::of_points([&seg[0], &seg[1]]);
                let (c0, r0) = index.cell(b.min_lon, b.min_lat);
                let (c1, r1) = index.cell(b.max_lon, b.max_lat);
                for r in r0..=r1 {
                    for c in c0..=c1 {
                        index.cells[r * cols + c].push((ri as u32, si as u32));
                    }
                }
            }
        }
        index
    }

    fn cell(&self, lon: f64, lat: f64) -> (usize, usize) {
        let c = ((lon - self.extent.min_lon) / self.cell_deg).floor().max(0.0) as usize;
        let r = ((lat - self.extent.min_lat) / self.cell_deg).floor().max(0.0) as usize;
        (c.min(self.cols - 1), r.min(self.rows - 1))
    }

    /// The nearest road within `max_m` metres: (index in `city.roads`, distance).
    pub(crate) fn nearest(&self, city: &City, lon: f64, lat: f64, max_m: f64) -> Option<(u32, f64)> {
        if self.extent.is_empty() || !self.extent.expand_m(max_m).contains(lon, lat) {
            return None;
        }
        let probe = BBox::new(lon, lat, lon, lat).expand_m(max_m);
        let (c0, r0) = self.cell(probe.min_lon, probe.min_lat);
        let (c1, r1) = self.cell(probe.max_lon, probe.max_lat);
        let mut best: Option<(u32, f64)> = None;
        for r in r0..=r1 {
            for c in c0..=c1 {
                for &(ri, si) in &self.cells[r * self.cols + c] {
                    let line = &city.roads[ri as usize].line;
                    let d = segment_distance_m((lon, lat), line[si as usize], line[si as usize + 1]);
                    // Ties go to the lower road index, so the answer does not depend on
                    // the order cells are visited in.
                    if d <= max_m && best.is_none_or(|(bi, bd)| d < bd || (d == bd && ri < bi)) {
                        best = Some((ri, d));
                    }
                }
            }
        }
        best
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedTrack {
    last_ms: i64,
    last_point: Option<(f64, f64)>,
    /// (zone id, since, entering fix, its place, its grid)
    inside: Vec<(String, i64, String, (f64, f64), Option<String>)>,
}

/// One stay of a key in a zone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stay {
    /// Index of the zone in `city.zones`.
    pub zone: u32,
    /// When the key entered it (ms).
    pub since_ms: i64,
    /// The entering fix, its place and grid.
    pub enter_id: Box<str>,
    pub enter_point: (f64, f64),
    pub enter_grid: Option<Box<str>>,
}

/// Where one key is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Track {
    last_ms: i64,
    last_point: Option<(f64, f64)>,
    inside: Vec<Stay>,
}

/// What the current event changed for its key.
#[derive(Debug, Default)]
pub(crate) struct Diff {
    pub entered: Vec<u32>,
    pub exited: Vec<Stay>,
}

/// Where each key is with respect to one zone set, shared by the geofence rules with the
/// same zones, `when` and `key` (they see the same events, so they agree on every
/// transition); each event's transition is worked out once.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    set: usize,
    keys: HashMap<u32, Track, ahash::RandomState>,
    out_of_order: u64,
    /// The event the diff is for (engine dispatch number) and its key.
    seq: u64,
    key: u32,
    /// `None` when the current event was not applied (older than the key's last fix).
    diff: Option<Diff>,
    spare: Diff,
}

impl Tracker {
    /// Applies the event `seq` of `key` (once, whichever rule of the group comes first).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update(&mut self, seq: u64, key: u32, t: i64, p: (f64, f64), event: &Event, zones: &ZoneSets, city: &City) {
        if self.seq == seq && self.key == key && seq != 0 {
            return;
        }
        self.seq = seq;
        self.key = key;
        let mut diff = self.diff.take().unwrap_or_else(|| std::mem::take(&mut self.spare));
        diff.entered.clear();
        diff.exited.clear();
        let keys = &mut self.keys;
        let applied = zones.get(self.set).with_containing(city, p.0, p.1, |now| {
            let track = match keys.get_mut(&key) {
                Some(track) => track,
                // A key outside every zone that we know nothing of: nothing to remember.
                None if now.is_empty() => return true,
                None => keys.entry(key).or_default(),
            };
            if t < track.last_ms {
                return false;
            }
            track.last_ms = t;
            track.last_point = Some(p);
            let mut i = 0;
            while i < track.inside.len() {
                if now.binary_search(&track.inside[i].zone).is_ok() {
                    i += 1;
                } else {
                    diff.exited.push(track.inside.swap_remove(i));
                }
            }
            for &zone in now {
                if !track.inside.iter().any(|s| s.zone == zone) {
                    track.inside.push(Stay {
                        zone,
                        since_ms: t,
                        enter_id: event.id.as_str().into(),
                        enter_point: p,
                        enter_grid: event
                            .grid
                            .as_deref()
                            .or_else(|| city.grid_at(p.0, p.1).map(|g| g.id.as_str()))
                            .map(Into::into),
                    });
                    diff.entered.push(zone);
                }
            }
            // Stays in zone order, so every rule walks them the same way.
            track.inside.sort_unstable_by_key(|s| s.zone);
            true
        });
        if applied {
            self.diff = Some(diff);
        } else {
            self.out_of_order += 1;
            self.spare = diff;
        }
    }

    /// The transition of the current event, if it was applied.
    pub(crate) fn diff(&self) -> Option<&Diff> {
        self.diff.as_ref()
    }

    /// The key's current stays.
    pub(crate) fn inside(&self, key: u32) -> &[Stay] {
        self.keys.get(&key).map_or(&[], |t| t.inside.as_slice())
    }


    /// Each stay with its key and the key's last fix time.
    pub(crate) fn for_each_stay_with_time(&self, mut f: impl FnMut(u32, &Stay, i64)) {
        for (&k, t) in &self.keys {
            for s in &t.inside {
                f(k, s, t.last_ms);
            }
        }
    }

    pub(crate) fn for_each_stay(&self, mut f: impl FnMut(u32, &Stay)) {
        for (&k, t) in &self.keys {
            for s in &t.inside {
                f(k, s);
            }
        }
    }

    /// Forgets keys outside every zone whose last fix is behind the watermark: any older
    /// fix of theirs would be late anyway, so their time is no longer needed.
    fn evict(&mut self, watermark_ms: i64) {
        self.keys.retain(|_, t| !t.inside.is_empty() || t.last_ms >= watermark_ms);
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn out_of_order(&self) -> u64 {
        self.out_of_order
    }
}
