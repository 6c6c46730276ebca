//! Correlation: alerts close in place and time (a smoke sensor, a camera's fire event and a
//! hazmat truck stopping in the same block) belong to one incident. Each new alert joins
//! the incident of the nearest recent alert within the distance and time window, or starts
//! its own (named after itself).

use std::collections::{HashMap, VecDeque};

use cityward_model::geo::haversine_m;

const M_PER_DEG_LAT: f64 = 111_320.0;

/// Recent alerts by place, for finding an incident to join.
#[derive(Debug)]
pub struct Correlator {
    distance_m: f64,
    window_ms: i64,
    /// Cell size in degrees of latitude (the distance); longitude cells use the same size,
    /// which at city latitudes is larger than the distance in metres, so the 3×3
    /// neighbourhood still holds every candidate.
    cell_deg: f64,
    cells: HashMap<(i64, i64), Vec<Recent>>,
    /// Insertion order, for eviction.
    order: VecDeque<(i64, (i64, i64))>,
}

#[derive(Debug, Clone)]
struct Recent {
    time_ms: i64,
    point: (f64, f64),
    incident: String,
}

impl Correlator {
    /// Groups alerts within `distance_m` metres and `window_ms` of each other (0 metres:
    /// every alert is its own incident).
    pub fn new(distance_m: f64, window_ms: i64) -> Correlator {
        Correlator {
            distance_m,
            window_ms,
            cell_deg: (distance_m / M_PER_DEG_LAT).max(1e-6),
            cells: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn cell(&self, p: (f64, f64)) -> (i64, i64) {
        ((p.0 / self.cell_deg).floor() as i64, (p.1 / self.cell_deg).floor() as i64)
    }

    /// The incident of a new alert `id` at `point` (event time `time_ms`): that of the
    /// nearest alert seen within the distance and window, else its own, `inc-{id}`.
    pub fn assign(&mut self, id: &str, point: Option<(f64, f64)>, time_ms: i64) -> String {
        let own = format!("inc-{id}");
        let Some(p) = point.filter(|p| p.0.is_finite() && p.1.is_finite()) else { return own };
        if self.distance_m <= 0.0 {
            return own;
        }
        self.evict(time_ms);
        let (cx, cy) = self.cell(p);
        let mut best: Option<(f64, &Recent)> = None;
        for dx in -1..=1 {
            for dy in -1..=1 {
                for r in self.cells.get(&(cx + dx, cy + dy)).into_iter().flatten() {
                    if (r.time_ms - time_ms).abs() > self.window_ms {
                        continue;
                    }
                    let d = haversine_m(p, r.point);
                    if d <= self.distance_m && best.is_none_or(|(bd, _)| d < bd) {
                        best = Some((d, r));
                    }
                }
            }
        }
        let incident = best.map_or(own, |(_, r)| r.incident.clone());
        self.remember(p, time_ms, &incident);
        incident
    }

    /// Adds an alert already assigned (after a restart).
    pub fn remember(&mut self, p: (f64, f64), time_ms: i64, incident: &str) {
        let cell = self.cell(p);
        self.cells.entry(cell).or_default().push(Recent { time_ms, point: p, incident: incident.to_string() });
        self.order.push_back((time_ms, cell));
    }

    /// Forgets alerts older than the window before `now_ms` (in insertion order, which is
    /// close to time order; a late alert lingers a little longer, which is harmless).
    fn evict(&mut self, now_ms: i64) {
        while let Some(&(t, cell)) = self.order.front() {
            if t >= now_ms - self.window_ms {
                break;
            }
            self.order.pop_front();
            if let Some(list) = self.cells.get_mut(&cell) {
                list.retain(|r| r.time_ms >= now_ms - self.window_ms);
                if list.is_empty() {
                    self.cells.remove(&cell);
                }
            }
        }
    }

    /// Alerts remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cityward_model::geo::offset_m;

    #[test]
    fn alerts_near_in_place_and_time_share_an_incident() {
        let mut c = Correlator::new(200.0, 600_000);
        let home = (121.5, 29.8);
        assert_eq!(c.assign("a1", Some(home), 0), "inc-a1");
        // 150 m away a minute later: the same incident.
        assert_eq!(c.assign("a2", Some(offset_m(home, 150.0, 0.0)), 60_000), "inc-a1");
        // Chained: near a2, 290 m from a1.
        assert_eq!(c.assign("a3", Some(offset_m(home, 290.0, 0.0)), 120_000), "inc-a1");
        // 500 m from everything: its own.
        assert_eq!(c.assign("b1", Some(offset_m(home, 0.0, 800.0)), 130_000), "inc-b1");
        // Near, but after the window of every earlier alert.
        assert_eq!(c.assign("c1", Some(home), 900_000), "inc-c1");
        // No place, or correlation off: its own.
        assert_eq!(c.assign("d1", None, 900_001), "inc-d1");
        let mut off = Correlator::new(0.0, 600_000);
        off.assign("x", Some(home), 0);
        assert_eq!(off.assign("y", Some(home), 1), "inc-y");
    }

    #[test]
    fn the_nearest_earlier_alert_decides_and_old_ones_are_forgotten() {
        let mut c = Correlator::new(200.0, 60_000);
        let home = (121.5, 29.8);
        c.assign("far", Some(offset_m(home, 180.0, 0.0)), 0);
        c.assign("near", Some(offset_m(home, 0.0, 300.0)), 0);
        assert_eq!(c.assign("q", Some(offset_m(home, 0.0, 250.0)), 1000), "inc-near");
        for i in 0..100 {
            c.assign(&format!("n{i}"), Some(offset_m(home, 5_000.0 + i as f64 * 500.0, 0.0)), 10_000);
        }
        c.assign("late", Some(home), 200_000);
        assert_eq!(c.len(), 1, "everything before the window is gone");
    }
}
