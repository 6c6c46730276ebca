//! The routing table: which unit answers for an alert of a category at a place.

use std::collections::BTreeSet;
use std::sync::Arc;

use cityward_model::geo::{MultiPolygon, Polygon, PolygonIndex};
use cityward_model::City;
use serde::{Deserialize, Serialize};

/// A versioned table of routing entries. The version is set by whoever stores the table
/// (it goes up by one with every change) and is written into each routing decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingTable {
    /// Version of the table; 0 for the built-in empty table.
    #[serde(default)]
    pub version: u64,
    /// The entries; order only breaks ties between equally specific entries.
    pub entries: Vec<RouteEntry>,
}

/// One entry: alerts of `category` in `region` (or `grid`) go to `unit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    /// A category (`fire.smoke`), a prefix (`fire.*`) or `*`.
    pub category: String,
    /// A region (district, street or community) the entry covers, with everything in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A single patrol grid the entry covers (instead of a region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<String>,
    /// The unit that gets the alerts.
    pub unit: String,
}

/// A routing table that does not fit the city.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoutingError {
    /// An entry names a unit the city does not have.
    #[error("routing entry {entry}: unit `{unit}` is not in the city's units.csv; name an existing unit")]
    UnknownUnit {
        /// Index of the entry.
        entry: usize,
        /// The unit named.
        unit: String,
    },
    /// An entry names a region the city does not have.
    #[error("routing entry {entry}: region `{region}` is not in the city's regions.geojson")]
    UnknownRegion {
        /// Index of the entry.
        entry: usize,
        /// The region named.
        region: String,
    },
    /// An entry names a grid the city does not have.
    #[error("routing entry {entry}: grid `{grid}` is not in the city's grids.geojson")]
    UnknownGrid {
        /// Index of the entry.
        entry: usize,
        /// The grid named.
        grid: String,
    },
    /// An entry gives both a region and a grid.
    #[error("routing entry {entry} gives both a region and a grid; give one (a grid is the narrower)")]
    RegionAndGrid {
        /// Index of the entry.
        entry: usize,
    },
    /// A category pattern that is not a category, a `prefix.*` or `*`.
    #[error("routing entry {entry}: category `{category}` is not a category, a prefix such as `fire.*`, or `*`")]
    BadCategory {
        /// Index of the entry.
        entry: usize,
        /// The pattern.
        category: String,
    },
}

/// How specific a category pattern is for `category`: `None` when it does not match;
/// higher is more specific (an exact name beats any prefix, a longer prefix a shorter).
pub(crate) fn category_matches(pattern: &str, category: &str) -> Option<usize> {
    if pattern == "*" {
        return Some(0);
    }
    if let Some(prefix) = pattern.strip_suffix(".*") {
        let rest = category.strip_prefix(prefix)?;
        return rest.starts_with('.').then_some(prefix.len() + 1);
    }
    (pattern == category).then_some(usize::MAX)
}

/// Checks a category pattern; the message says what a pattern may be.
pub(crate) fn check_category_pattern(p: &str) -> Result<(), String> {
    if valid_category_pattern(p) {
        Ok(())
    } else {
        Err(format!("category `{p}` is not a category, a prefix such as `fire.*`, or `*`"))
    }
}

pub(crate) fn valid_category_pattern(p: &str) -> bool {
    let name = p.strip_suffix(".*").unwrap_or(p);
    p == "*" || (!name.is_empty() && !name.contains('*') && !name.contains(char::is_whitespace))
}

/// Where an alert is, and what it is about: all routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct AlertPlace<'a> {
    /// The alert's category.
    pub category: &'a str,
    /// Its place, when it has one.
    pub point: Option<(f64, f64)>,
    /// Its patrol grid, when known (else found from the point).
    pub grid: Option<&'a str>,
}

/// The routing decision for one alert, kept on the alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    /// The owning unit (`None` only in a city without units).
    pub owner: Option<String>,
    /// For an alert near a boundary: every unit that may claim it, the owner first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
    /// Version of the routing table used.
    pub table_version: u64,
    /// Why this unit, in words.
    pub reason: String,
    /// The grid routed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<String>,
}

/// A routing table checked against a city, ready to route.
pub struct Router {
    city: Arc<City>,
    table: RoutingTable,
    boundary_m: f64,
    /// Every grid's box grown by the boundary distance, indexed: "which grids are near"
    /// without looking at every grid of the city.
    near_boxes: PolygonIndex<()>,
}

impl Router {
    /// Checks `table` against `city`.
    pub fn new(city: Arc<City>, table: RoutingTable, boundary_m: f64) -> Result<Router, RoutingError> {
        for (i, e) in table.entries.iter().enumerate() {
            if !valid_category_pattern(&e.category) {
                return Err(RoutingError::BadCategory { entry: i, category: e.category.clone() });
            }
            if city.unit(&e.unit).is_none() {
                return Err(RoutingError::UnknownUnit { entry: i, unit: e.unit.clone() });
            }
            match (&e.region, &e.grid) {
                (Some(_), Some(_)) => return Err(RoutingError::RegionAndGrid { entry: i }),
                (Some(r), None) if city.region(r).is_none() => {
                    return Err(RoutingError::UnknownRegion { entry: i, region: r.clone() })
                }
                (None, Some(g)) if city.grid(g).is_none() => {
                    return Err(RoutingError::UnknownGrid { entry: i, grid: g.clone() })
                }
                _ => {}
            }
        }
        let near_boxes = PolygonIndex::new(
            city.grids.iter().map(|g| (MultiPolygon::from(Polygon::rect(g.area.bbox().expand_m(boundary_m))), ())),
        );
        Ok(Router { city, table, boundary_m, near_boxes })
    }

    /// The table routed with.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The city routed in.
    pub fn city(&self) -> &Arc<City> {
        &self.city
    }

    /// Routes one alert: the most specific entry for its category at its grid, then at
    /// each enclosing region (innermost first), then city-wide; failing that, the
    /// administrative unit of the grid's region or the nearest ancestor that has one; for
    /// an alert without a place, the top unit.
    pub fn route(&self, place: &AlertPlace<'_>) -> Routing {
        let grid = place
            .grid
            .and_then(|g| self.city.grid(g))
            .or_else(|| place.point.and_then(|(lon, lat)| self.city.grid_at(lon, lat)))
            .map(|g| g.id.as_str());
        let (owner, reason) = self.unit_for(place.category, grid);
        let mut candidates = Vec::new();
        if let (Some(owner), Some(p), true) = (&owner, place.point, self.boundary_m > 0.0) {
            let mut units = BTreeSet::new();
            for i in self.near_boxes.containing_indices(p.0, p.1) {
                let g = &self.city.grids[i];
                if Some(g.id.as_str()) == grid {
                    continue;
                }
                if g.area.distance_m(p) <= self.boundary_m {
                    if let (Some(u), _) = self.unit_for(place.category, Some(&g.id)) {
                        if u != *owner {
                            units.insert(u);
                        }
                    }
                }
            }
            if !units.is_empty() {
                candidates.push(owner.clone());
                candidates.extend(units);
            }
        }
        Routing {
            owner,
            candidates,
            table_version: self.table.version,
            reason,
            grid: grid.map(str::to_string),
        }
    }

    fn unit_for(&self, category: &str, grid: Option<&str>) -> (Option<String>, String) {
        let best = |matches: &dyn Fn(&RouteEntry) -> bool| {
            self.table
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| matches(e))
                .filter_map(|(i, e)| category_matches(&e.category, category).map(|s| (s, i, e)))
                // Most specific category; the earlier entry on a tie.
                .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
                .map(|(_, i, e)| (i, e))
        };
        let version = self.table.version;
        if let Some(grid_id) = grid {
            if let Some((i, e)) = best(&|e| e.grid.as_deref() == Some(grid_id)) {
                return (Some(e.unit.clone()), format!("routing table v{version}, entry {i}: `{}` in grid {grid_id}", e.category));
            }
            let region = self.city.grid(grid_id).map(|g| g.region.as_str()).unwrap_or("");
            for r in self.city.region_chain(region) {
                if let Some((i, e)) = best(&|e| e.region.as_deref() == Some(r.id.as_str())) {
                    return (Some(e.unit.clone()), format!("routing table v{version}, entry {i}: `{}` in {} {}", e.category, r.level, r.id));
                }
            }
        }
        if let Some((i, e)) = best(&|e| e.region.is_none() && e.grid.is_none()) {
            return (Some(e.unit.clone()), format!("routing table v{version}, entry {i}: `{}` city-wide", e.category));
        }
        if let Some(unit) = grid.and_then(|g| self.city.grid_unit(g)) {
            let region = unit.region.as_deref().unwrap_or("the city");
            return (Some(unit.id.clone()), format!("no routing entry for `{category}`; the administrative unit of {region}"));
        }
        match self.city.units.iter().find(|u| u.parent_unit.is_none()) {
            Some(top) => (Some(top.id.clone()), format!("no routing entry for `{category}` and no grid; the top unit")),
            None => (None, "the city has no units".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_patterns_rank_exact_over_prefix_over_any() {
        assert_eq!(category_matches("*", "fire.smoke"), Some(0));
        assert!(category_matches("fire.*", "fire.smoke") > category_matches("*", "fire.smoke"));
        assert!(category_matches("fire.smoke", "fire.smoke") > category_matches("fire.*", "fire.smoke"));
        assert!(category_matches("fire.smoke.*", "fire.smoke.kitchen") > category_matches("fire.*", "fire.smoke.kitchen"));
        // A prefix matches at a dot only, and not the bare prefix itself.
        assert_eq!(category_matches("fire.*", "firearm"), None);
        assert_eq!(category_matches("fire.*", "fire"), None);
        assert_eq!(category_matches("fire.smoke", "fire.smokes"), None);
        assert!(valid_category_pattern("fire.*") && valid_category_pattern("*") && valid_category_pattern("a.b"));
        assert!(!valid_category_pattern("") && !valid_category_pattern("fi*re") && !valid_category_pattern("*.x"));
    }
}
