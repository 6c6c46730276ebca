//! Zone sets and the road index: the geography rules ask about, built once per distinct
//! set of zones and shared by every rule that names the same set.

use std::cell::RefCell;
use std::collections::HashMap;

use cityward_model::geo::{segment_distance_m, BBox, PolygonIndex};
use cityward_model::City;

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
    roads: Option<RoadIndex>,
}

impl ZoneSets {
    /// The set of the given zone ids and zone kinds (ids unknown to the city are skipped:
    /// rules are checked against the city before they get here).
    pub(crate) fn register(&mut self, city: &City, ids: &[String], kinds: &[String]) -> usize {
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
        self.by_members.insert(members, self.sets.len() - 1);
        self.sets.len() - 1
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
