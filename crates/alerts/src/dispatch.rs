//! Who to send: the nearest available responders for an alert's place, with an ETA.
//!
//! [`Responders`] keeps, for every registered responder, their unit, their availability
//! (`available`, `busy`, `off_duty`) and the last position their own device reported in a
//! `gps` event (by event time; a later fix replaces an earlier one, never the other way
//! round). A position older than [`DispatchConfig::stale_after`] does not count: whoever has
//! not been heard from lately is not recommended.
//!
//! [`RoadNetwork`] is the city's roads as an undirected graph, built once per city: a node at
//! every polyline vertex (vertices of different roads within [`DispatchConfig::join_m`] of
//! each other are one node, which is how roads meet), an edge along every segment weighted
//! by the travel time at its road's speed limit, and a bucket index of the segments for
//! snapping a place to its nearest road. [`recommend`] snaps the alert's place, runs one
//! Dijkstra search outward from it (roads are two-way, so the time from the alert to a
//! responder is the time from the responder to the alert) and stops as soon as the `k`
//! nearest responders are settled. The way from a place to its road (and from the road to
//! a responder) is counted in straight line at [`DispatchConfig::urban_speed_kmh`].
//!
//! Where the roads cannot tell — a city without roads, an alert or a responder farther than
//! [`DispatchConfig::snap_m`] from every road, a responder on a road not connected to the
//! alert's — the distance is the great-circle distance and the ETA assumes the urban speed;
//! such a recommendation says `by: straight_line`.
//!
//! Pure: the caller passes the clock, keeps the registry, and feeds the events.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cityward_model::city::Road;
use cityward_model::geo::{haversine_m, segment_distance_m, BBox, LocalProjection, Point};
use cityward_model::Event;
use serde::{Deserialize, Serialize};

/// How positions age and how recommendations are measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// A position older than this (by the event's own time) does not count.
    #[serde(with = "cityward_model::duration_serde")]
    pub stale_after: Duration,
    /// Speed assumed off the road network and for straight-line estimates, in km/h.
    pub urban_speed_kmh: f64,
    /// A place farther than this (metres) from every road is not on the road network and is
    /// measured in straight line.
    pub snap_m: f64,
    /// Road vertices closer than this (metres) are one node: where roads meet.
    pub join_m: f64,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            stale_after: Duration::from_secs(600),
            urban_speed_kmh: 30.0,
            snap_m: 500.0,
            join_m: 1.0,
        }
    }
}

impl DispatchConfig {
    /// The urban speed in metres per second (1 m/s when configured as zero or less).
    fn urban_mps(&self) -> f64 {
        if self.urban_speed_kmh.is_finite() && self.urban_speed_kmh > 0.0 {
            self.urban_speed_kmh / 3.6
        } else {
            1.0
        }
    }
}

/// Whether a responder can take a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// Free to be sent.
    Available,
    /// On a job.
    Busy,
    /// Not working now.
    OffDuty,
}

impl Availability {
    /// Every availability.
    pub const ALL: [Availability; 3] = [Availability::Available, Availability::Busy, Availability::OffDuty];

    /// The availability's name (`available`, `busy`, `off_duty`).
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Available => "available",
            Availability::Busy => "busy",
            Availability::OffDuty => "off_duty",
        }
    }

    /// Parses a name, or says which names there are.
    pub fn parse(text: &str) -> Result<Availability, String> {
        Availability::ALL.into_iter().find(|a| a.as_str() == text).ok_or_else(|| {
            format!("status `{text}` is not an availability; use available, busy or off_duty")
        })
    }
}

/// A reported position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fix {
    /// Longitude (WGS84).
    pub lon: f64,
    /// Latitude (WGS84).
    pub lat: f64,
    /// The event time of the report.
    #[serde(with = "cityward_model::event::rfc3339")]
    pub time: DateTime<Utc>,
}

/// One registered responder as [`Responders`] knows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Responder {
    /// The responder's id: the `source` of their device's events.
    pub id: String,
    /// The unit they belong to.
    pub unit: String,
    /// Display name.
    pub name: String,
    /// Whether they can take a job.
    pub status: Availability,
    /// The last position reported, if any.
    pub fix: Option<Fix>,
}

impl Responder {
    /// How old the last position is at `now` (zero for one from the future); `None` without
    /// a position.
    pub fn age(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.fix.map(|f| (now - f.time).to_std().unwrap_or_default())
    }
}

/// A responder who may be recommended: available, with a position that is not stale.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The responder's id.
    pub responder: String,
    /// Their unit.
    pub unit: String,
    /// Their display name.
    pub name: String,
    /// Their last position.
    pub point: Point,
}

/// The registered responders with their availability and last known position.
#[derive(Debug, Clone, Default)]
pub struct Responders {
    config: DispatchConfig,
    by_id: BTreeMap<String, Responder>,
}

impl Responders {
    /// No responders yet.
    pub fn new(config: DispatchConfig) -> Responders {
        Responders { config, by_id: BTreeMap::new() }
    }

    /// The configuration.
    pub fn config(&self) -> &DispatchConfig {
        &self.config
    }

    /// Registers a responder, or changes a registered one's unit, name and availability (a
    /// known position is kept).
    pub fn register(&mut self, id: &str, unit: &str, name: &str, status: Availability) {
        let entry = self.by_id.entry(id.to_string()).or_insert_with(|| Responder {
            id: id.to_string(),
            unit: String::new(),
            name: String::new(),
            status,
            fix: None,
        });
        entry.unit = unit.to_string();
        entry.name = name.to_string();
        entry.status = status;
    }

    /// Sets a registered responder's availability; `false` for an unknown id.
    pub fn set_status(&mut self, id: &str, status: Availability) -> bool {
        match self.by_id.get_mut(id) {
            Some(r) => {
                r.status = status;
                true
            }
            None => false,
        }
    }

    /// Takes a reported position of a registered responder unless a later one is known;
    /// `true` when it was taken.
    pub fn observe(&mut self, id: &str, point: Point, time: DateTime<Utc>) -> bool {
        if !(point.0.is_finite() && point.1.is_finite()) {
            return false;
        }
        match self.by_id.get_mut(id) {
            Some(r) if r.fix.is_none_or(|f| f.time <= time) => {
                r.fix = Some(Fix { lon: point.0, lat: point.1, time });
                true
            }
            _ => false,
        }
    }

    /// Takes the position of a `gps` event whose source is a registered responder; other
    /// events are ignored. `true` when a position was taken.
    pub fn apply(&mut self, event: &Event) -> bool {
        if event.kind != "gps" {
            return false;
        }
        match (event.lon, event.lat) {
            (Some(lon), Some(lat)) => self.observe(&event.source, (lon, lat), event.time),
            _ => false,
        }
    }

    /// A responder by id.
    pub fn get(&self, id: &str) -> Option<&Responder> {
        self.by_id.get(id)
    }

    /// Every responder, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Responder> {
        self.by_id.values()
    }

    /// Number of registered responders.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no responder is registered.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether the responder's position is missing or older than the staleness limit.
    pub fn is_stale(&self, responder: &Responder, now: DateTime<Utc>) -> bool {
        responder.age(now).is_none_or(|age| age > self.config.stale_after)
    }

    /// The responders who may be recommended at `now`: available, with a fresh position.
    pub fn candidates(&self, now: DateTime<Utc>) -> Vec<Candidate> {
        self.by_id
            .values()
            .filter(|r| r.status == Availability::Available && !self.is_stale(r, now))
            .filter_map(|r| {
                let fix = r.fix?;
                Some(Candidate { responder: r.id.clone(), unit: r.unit.clone(), name: r.name.clone(), point: (fix.lon, fix.lat) })
            })
            .collect()
    }

    /// The `k` nearest candidates to `at` by travel time (see [`recommend`]).
    pub fn recommend(&self, roads: &RoadNetwork, at: Point, k: usize, now: DateTime<Utc>) -> Recommendations {
        recommend(roads, &self.config, at, &self.candidates(now), k)
    }
}

/// How a distance was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Along the roads, at their speed limits.
    Road,
    /// In straight line, at the urban speed.
    StraightLine,
}

impl Measure {
    /// The measure's name (`road`, `straight_line`).
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Road => "road",
            Measure::StraightLine => "straight_line",
        }
    }
}

/// One recommended responder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// The responder's id.
    pub responder: String,
    /// Their unit.
    pub unit: String,
    /// Their display name.
    pub name: String,
    /// Distance to the alert's place in metres (along the roads when `by` is `road`).
    pub distance_m: f64,
    /// Estimated travel time in seconds.
    pub eta_s: f64,
    /// How the distance was measured.
    pub by: Measure,
}

/// The answer of [`recommend`]: the nearest responders, soonest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendations {
    /// Soonest ETA first (ties by responder id).
    pub items: Vec<Recommendation>,
    /// `road` when the alert's place is on the road network (each item says how it was
    /// measured), `straight_line` when the city has no roads or the place is too far from
    /// them.
    pub by: Measure,
}

/// The nearest `k` of `candidates` to `at`, by travel time over `roads` where both are on the
/// network and connected, in straight line otherwise (see the module documentation).
pub fn recommend(roads: &RoadNetwork, config: &DispatchConfig, at: Point, candidates: &[Candidate], k: usize) -> Recommendations {
    let speed = config.urban_mps();
    let item = |c: &Candidate, distance_m: f64, eta_s: f64, by: Measure| Recommendation {
        responder: c.responder.clone(),
        unit: c.unit.clone(),
        name: c.name.clone(),
        distance_m,
        eta_s,
        by,
    };
    let straight = |c: &Candidate| {
        let d = haversine_m(at, c.point);
        item(c, d, d / speed, Measure::StraightLine)
    };
    let mut items: Vec<Recommendation> = Vec::new();
    let by = match roads.snap(at, config.snap_m) {
        None => {
            items.extend(candidates.iter().map(straight));
            Measure::StraightLine
        }
        Some(origin) => {
            let mut on_roads: Vec<(&Candidate, Snap)> = Vec::new();
            for c in candidates {
                match roads.snap(c.point, config.snap_m) {
                    Some(s) => on_roads.push((c, s)),
                    None => items.push(straight(c)),
                }
            }
            let snaps: Vec<Snap> = on_roads.iter().map(|(_, s)| *s).collect();
            let search = roads.nearest(&origin, &snaps, k, speed);
            for ((c, _), found) in on_roads.iter().zip(search.found) {
                match found {
                    Some(leg) => items.push(item(c, leg.distance_m, leg.time_s, Measure::Road)),
                    // Not connected to the alert's roads.
                    None if search.exhausted => items.push(straight(c)),
                    // Farther by road than the `k` found.
                    None => {}
                }
            }
            Measure::Road
        }
    };
    // Ordered on the exact times, shown to the decimetre and the tenth of a second.
    items.sort_by(|a, b| a.eta_s.total_cmp(&b.eta_s).then_with(|| a.responder.cmp(&b.responder)));
    items.truncate(k);
    for i in &mut items {
        i.distance_m = (i.distance_m * 10.0).round() / 10.0;
        i.eta_s = (i.eta_s * 10.0).round() / 10.0;
    }
    Recommendations { items, by }
}

/// Where a place meets the road network: a point on an edge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snap {
    /// The edge.
    edge: u32,
    /// How far along the edge, from its first node (0) to its second (1).
    t: f64,
    /// Distance from the place to the edge, in metres.
    off_m: f64,
}

impl Snap {
    /// Distance in metres from the place to its road.
    pub fn off_road_m(&self) -> f64 {
        self.off_m
    }
}

/// A way through the network: travel time and length.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Leg {
    time_s: f64,
    distance_m: f64,
}

/// The result of [`RoadNetwork::nearest`].
struct Search {
    /// Per target: the fastest way, when settled.
    found: Vec<Option<Leg>>,
    /// Whether the whole reachable network was searched (an unsettled target is then not
    /// connected), rather than stopping at `k`.
    exhausted: bool,
}

/// One road segment between two nodes, driveable both ways.
#[derive(Debug, Clone, Copy)]
struct Edge {
    a: u32,
    b: u32,
    length_m: f64,
    time_s: f64,
}

/// Side of the square buckets of the segment index, in metres.
const BUCKET_M: f64 = 250.0;

/// The city's roads as a graph for travel times (see the module documentation).
#[derive(Debug, Clone)]
pub struct RoadNetwork {
    proj: LocalProjection,
    nodes: Vec<Point>,
    xy: Vec<(f64, f64)>,
    edges: Vec<Edge>,
    /// CSR: the (neighbour, edge) pairs of node `n` are `adjacent[first[n]..first[n + 1]]`.
    first: Vec<u32>,
    adjacent: Vec<(u32, u32)>,
    /// Segment index: the edges whose bounding box touches each bucket.
    buckets: HashMap<(i64, i64), Vec<u32>>,
}

impl RoadNetwork {
    /// Builds the network of `roads`. A road without a usable speed limit is driven at the
    /// urban speed; vertices that are not finite are skipped.
    pub fn new(roads: &[Road], config: &DispatchConfig) -> RoadNetwork {
        let vertices = roads.iter().flat_map(|r| r.line.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
        let extent = BBox::of_points(vertices);
        let origin = if extent.is_empty() { (0.0, 0.0) } else { extent.center() };
        let proj = LocalProjection::new(origin);
        let join_m = if config.join_m.is_finite() { config.join_m.max(0.0) } else { 0.0 };
        let join_cell = join_m.max(0.01);
        let cell = |xy: (f64, f64), size: f64| ((xy.0 / size).floor() as i64, (xy.1 / size).floor() as i64);

        let mut nodes: Vec<Point> = Vec::new();
        let mut xy: Vec<(f64, f64)> = Vec::new();
        let mut joins: HashMap<(i64, i64), Vec<u32>> = HashMap::new();
        let mut node_at = |p: Point, nodes: &mut Vec<Point>, xy: &mut Vec<(f64, f64)>| -> u32 {
            let q = proj.to_xy(p);
            let (cx, cy) = cell(q, join_cell);
            let mut best: Option<(f64, u32)> = None;
            for dx in -1..=1 {
                for dy in -1..=1 {
                    for &n in joins.get(&(cx + dx, cy + dy)).into_iter().flatten() {
                        let o = xy[n as usize];
                        let d = ((o.0 - q.0).powi(2) + (o.1 - q.1).powi(2)).sqrt();
                        if d <= join_m && best.is_none_or(|(bd, bn)| (d, n) < (bd, bn)) {
                            best = Some((d, n));
                        }
                    }
                }
            }
            if let Some((_, n)) = best {
                return n;
            }
            let n = nodes.len() as u32;
            nodes.push(p);
            xy.push(q);
            joins.entry((cx, cy)).or_default().push(n);
            n
        };

        let mut edges: Vec<Edge> = Vec::new();
        for road in roads {
            let speed_kmh = if road.speed_limit_kmh.is_finite() && road.speed_limit_kmh > 0.0 {
                road.speed_limit_kmh
            } else {
                config.urban_mps() * 3.6
            };
            let mut prev: Option<u32> = None;
            for &p in road.line.iter().filter(|p| p.0.is_finite() && p.1.is_finite()) {
                let n = node_at(p, &mut nodes, &mut xy);
                if let Some(a) = prev.filter(|&a| a != n) {
                    let length_m = haversine_m(nodes[a as usize], nodes[n as usize]);
                    edges.push(Edge { a, b: n, length_m, time_s: length_m / (speed_kmh / 3.6) });
                }
                prev = Some(n);
            }
        }

        let mut first = vec![0u32; nodes.len() + 1];
        for e in &edges {
            first[e.a as usize + 1] += 1;
            first[e.b as usize + 1] += 1;
        }
        for i in 0..nodes.len() {
            first[i + 1] += first[i];
        }
        let mut fill = first.clone();
        let mut adjacent = vec![(0u32, 0u32); edges.len() * 2];
        for (i, e) in edges.iter().enumerate() {
            for (from, to) in [(e.a, e.b), (e.b, e.a)] {
                adjacent[fill[from as usize] as usize] = (to, i as u32);
                fill[from as usize] += 1;
            }
        }

        let mut buckets: HashMap<(i64, i64), Vec<u32>> = HashMap::new();
        for (i, e) in edges.iter().enumerate() {
            let (pa, pb) = (xy[e.a as usize], xy[e.b as usize]);
            let lo = cell((pa.0.min(pb.0), pa.1.min(pb.1)), BUCKET_M);
            let hi = cell((pa.0.max(pb.0), pa.1.max(pb.1)), BUCKET_M);
            for bx in lo.0..=hi.0 {
                for by in lo.1..=hi.1 {
                    buckets.entry((bx, by)).or_default().push(i as u32);
                }
            }
        }
        RoadNetwork { proj, nodes, xy, edges, first, adjacent, buckets }
    }

    /// Number of nodes (distinct road vertices after joining).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of edges (road segments).
    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// Whether the network has no road segment.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// The nearest point of the network to `p`, when a road is within `max_m` metres.
    pub fn snap(&self, p: Point, max_m: f64) -> Option<Snap> {
        if self.edges.is_empty() || !(p.0.is_finite() && p.1.is_finite()) || max_m.is_nan() || max_m < 0.0 {
            return None;
        }
        let q = self.proj.to_xy(p);
        let reach = (max_m / BUCKET_M).ceil().min(400.0) as i64;
        let (cx, cy) = ((q.0 / BUCKET_M).floor() as i64, (q.1 / BUCKET_M).floor() as i64);
        let mut best: Option<(f64, u32)> = None;
        for bx in cx - reach..=cx + reach {
            for by in cy - reach..=cy + reach {
                for &i in self.buckets.get(&(bx, by)).into_iter().flatten() {
                    let e = self.edges[i as usize];
                    let d = segment_distance_m(p, self.nodes[e.a as usize], self.nodes[e.b as usize]);
                    if best.is_none_or(|(bd, bi)| (d, i) < (bd, bi)) {
                        best = Some((d, i));
                    }
                }
            }
        }
        let (off_m, edge) = best.filter(|(d, _)| *d <= max_m)?;
        let e = self.edges[edge as usize];
        let (a, b) = (self.xy[e.a as usize], self.xy[e.b as usize]);
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        let t = if len2 > 0.0 { (((q.0 - a.0) * dx + (q.1 - a.1) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
        Some(Snap { edge, t, off_m })
    }

    /// One Dijkstra search outward from `origin` that stops once the `k` nearest `targets`
    /// (by travel time) are settled. Off-road legs are travelled at `off_road_mps`.
    fn nearest(&self, origin: &Snap, targets: &[Snap], k: usize, off_road_mps: f64) -> Search {
        let mut found: Vec<Option<Leg>> = vec![None; targets.len()];
        if k == 0 || targets.is_empty() {
            return Search { found, exhausted: false };
        }
        // The legs from a node of a target's edge to the target, by node.
        let mut exits: HashMap<u32, Vec<(usize, Leg)>> = HashMap::new();
        // The best way to each target known so far, and a queue of them by time.
        let mut best: Vec<Leg> = vec![Leg { time_s: f64::INFINITY, distance_m: f64::INFINITY }; targets.len()];
        let mut queue: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
        let o = self.edges[origin.edge as usize];
        let start = Leg { time_s: origin.off_m / off_road_mps, distance_m: origin.off_m };
        for (i, s) in targets.iter().enumerate() {
            let e = self.edges[s.edge as usize];
            let off = s.off_m / off_road_mps;
            exits.entry(e.a).or_default().push((i, Leg { time_s: s.t * e.time_s + off, distance_m: s.t * e.length_m + s.off_m }));
            exits.entry(e.b).or_default().push((i, Leg { time_s: (1.0 - s.t) * e.time_s + off, distance_m: (1.0 - s.t) * e.length_m + s.off_m }));
            if s.edge == origin.edge {
                // Along the shared segment, without passing a node.
                let along = (s.t - origin.t).abs();
                best[i] = Leg {
                    time_s: start.time_s + along * e.time_s + off,
                    distance_m: start.distance_m + along * e.length_m + s.off_m,
                };
                queue.push(Reverse((best[i].time_s.to_bits(), i)));
            }
        }

        let n = self.nodes.len();
        let mut reached: Vec<Leg> = vec![Leg { time_s: f64::INFINITY, distance_m: f64::INFINITY }; n];
        let mut settled = vec![false; n];
        let mut frontier: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
        let seed = |node: u32, leg: Leg, reached: &mut Vec<Leg>, frontier: &mut BinaryHeap<Reverse<(u64, u32)>>| {
            if leg.time_s < reached[node as usize].time_s {
                reached[node as usize] = leg;
                // Times are finite and not negative, so their bits order as the numbers do.
                frontier.push(Reverse((leg.time_s.to_bits(), node)));
            }
        };
        let along_a = Leg { time_s: start.time_s + origin.t * o.time_s, distance_m: start.distance_m + origin.t * o.length_m };
        let along_b = Leg {
            time_s: start.time_s + (1.0 - origin.t) * o.time_s,
            distance_m: start.distance_m + (1.0 - origin.t) * o.length_m,
        };
        seed(o.a, along_a, &mut reached, &mut frontier);
        seed(o.b, along_b, &mut reached, &mut frontier);

        let mut done = 0;
        loop {
            // Nothing still in the frontier can reach a target sooner than this.
            let bound = frontier.peek().map_or(f64::INFINITY, |Reverse((t, _))| f64::from_bits(*t));
            while let Some(&Reverse((t, i))) = queue.peek() {
                if f64::from_bits(t) > bound {
                    break;
                }
                queue.pop();
                if found[i].is_some() || t != best[i].time_s.to_bits() {
                    continue;
                }
                found[i] = Some(best[i]);
                done += 1;
                if done == k {
                    return Search { found, exhausted: false };
                }
            }
            let Some(Reverse((_, v))) = frontier.pop() else { break };
            if settled[v as usize] {
                continue;
            }
            settled[v as usize] = true;
            let here = reached[v as usize];
            for &(i, leg) in exits.get(&v).into_iter().flatten() {
                let time_s = here.time_s + leg.time_s;
                if found[i].is_none() && time_s < best[i].time_s {
                    best[i] = Leg { time_s, distance_m: here.distance_m + leg.distance_m };
                    queue.push(Reverse((time_s.to_bits(), i)));
                }
            }
            let (from, to) = (self.first[v as usize] as usize, self.first[v as usize + 1] as usize);
            for &(w, edge) in &self.adjacent[from..to] {
                let e = self.edges[edge as usize];
                let leg = Leg { time_s: here.time_s + e.time_s, distance_m: here.distance_m + e.length_m };
                if !settled[w as usize] {
                    seed(w, leg, &mut reached, &mut frontier);
                }
            }
        }
        Search { found, exhausted: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cityward_model::geo::offset_m;
    use serde_json::json;

    const O: Point = (121.55, 29.87);

    /// A point `x` metres east and `y` metres north of the origin.
    fn at(x: f64, y: f64) -> Point {
        offset_m(O, x, y)
    }

    fn road(id: &str, speed_limit_kmh: f64, line: &[(f64, f64)]) -> Road {
        Road {
            id: id.into(),
            name: id.into(),
            speed_limit_kmh,
            class: "local".into(),
            line: line.iter().map(|&(x, y)| at(x, y)).collect(),
        }
    }

    /// A river along y = 0 with a road on each bank (y = ±100) and one bridge at x = 2000;
    /// all at 36 km/h (10 m/s).
    fn river_city() -> Vec<Road> {
        let bank = |y: f64| [(0.0, y), (1000.0, y), (2000.0, y), (3000.0, y)];
        vec![
            road("south-bank", 36.0, &bank(-100.0)),
            road("north-bank", 36.0, &bank(100.0)),
            road("bridge", 36.0, &[(2000.0, -100.0), (2000.0, 100.0)]),
        ]
    }

    fn now() -> DateTime<Utc> {
        "2026-11-22T03:00:00Z".parse().unwrap()
    }

    fn responders(at_points: &[(&str, Point)]) -> Responders {
        let mut r = Responders::new(DispatchConfig::default());
        for (id, p) in at_points {
            r.register(id, "fire-d01", &format!("Engine {id}"), Availability::Available);
            assert!(r.observe(id, *p, now() - chrono::Duration::seconds(30)));
        }
        r
    }

    fn ids(recs: &Recommendations) -> Vec<&str> {
        recs.items.iter().map(|r| r.responder.as_str()).collect()
    }

    #[test]
    fn across_a_river_the_nearest_by_road_is_not_the_nearest_in_straight_line() {
        let config = DispatchConfig::default();
        let net = RoadNetwork::new(&river_city(), &config);
        assert_eq!(net.node_count(), 8, "the bridge ends join the bank roads");
        assert_eq!(net.edge_count(), 7);
        // The alert on the south bank at the west end; one engine just across the river,
        // one 1.5 km down the same bank.
        let alert = at(0.0, -100.0);
        let r = responders(&[("across", at(0.0, 100.0)), ("along", at(1500.0, -100.0))]);
        let recs = r.recommend(&net, alert, 5, now());
        assert_eq!(recs.by, Measure::Road);
        assert_eq!(ids(&recs), ["along", "across"], "{recs:#?}");
        let along = &recs.items[0];
        assert_eq!(along.by, Measure::Road);
        assert!((along.distance_m - 1500.0).abs() < 2.0, "{along:?}");
        assert!((along.eta_s - 150.0).abs() < 0.5, "{along:?}");
        let across = &recs.items[1];
        // East 2 km, over the bridge, back 2 km.
        assert!((across.distance_m - 4200.0).abs() < 5.0, "{across:?}");
        assert!((across.eta_s - 420.0).abs() < 1.0, "{across:?}");
        assert!(across.distance_m >= haversine_m(alert, at(0.0, 100.0)));
        // With k = 1 the search stops at the first and answers the same first.
        let one = r.recommend(&net, alert, 1, now());
        assert_eq!(ids(&one), ["along"]);
        assert_eq!(one.items[0], recs.items[0]);
        // Without roads the straight line decides, at the urban speed (30 km/h).
        let none = RoadNetwork::new(&[], &config);
        assert!(none.is_empty());
        let straight = r.recommend(&none, alert, 5, now());
        assert_eq!(straight.by, Measure::StraightLine);
        assert_eq!(ids(&straight), ["across", "along"]);
        assert!(straight.items.iter().all(|i| i.by == Measure::StraightLine));
        assert!((straight.items[0].distance_m - 200.0).abs() < 0.5);
        assert!((straight.items[0].eta_s - 24.0).abs() < 0.1, "{straight:#?}");
    }

    #[test]
    fn places_off_the_road_walk_to_it_and_places_far_from_roads_go_in_straight_line() {
        let config = DispatchConfig::default();
        let net = RoadNetwork::new(&river_city(), &config);
        // 50 m north of the south bank road (in the river), halfway along a segment.
        let alert = at(500.0, -50.0);
        let snap = net.snap(alert, config.snap_m).unwrap();
        assert!((snap.off_road_m() - 50.0).abs() < 0.1);
        let r = responders(&[
            ("same-segment", at(800.0, -100.0)),
            ("far-away", at(500.0, -3000.0)),
            ("near-bridge", at(2000.0, -130.0)),
        ]);
        let recs = r.recommend(&net, alert, 5, now());
        assert_eq!(ids(&recs), ["same-segment", "near-bridge", "far-away"], "{recs:#?}");
        let same = &recs.items[0];
        // 50 m to the road at 30 km/h, then 300 m along it at 36 km/h.
        assert!((same.distance_m - 350.0).abs() < 1.0, "{same:?}");
        assert!((same.eta_s - (6.0 + 30.0)).abs() < 0.5, "{same:?}");
        let bridge = &recs.items[1];
        assert!((bridge.distance_m - (50.0 + 1500.0 + 30.0)).abs() < 1.0, "{bridge:?}");
        // 2.9 km from the nearest road: no snapping, straight line.
        let far = &recs.items[2];
        assert_eq!(far.by, Measure::StraightLine);
        assert!((far.distance_m - 2950.0).abs() < 2.0, "{far:?}");
        // An alert far from every road is measured in straight line to everyone.
        let remote = r.recommend(&net, at(500.0, 5000.0), 5, now());
        assert_eq!(remote.by, Measure::StraightLine);
        assert!(remote.items.iter().all(|i| i.by == Measure::StraightLine));
    }

    #[test]
    fn roads_meet_where_vertices_are_within_a_metre_and_unconnected_roads_fall_back() {
        let config = DispatchConfig::default();
        let roads = vec![
            road("main", 36.0, &[(0.0, 0.0), (1000.0, 0.0)]),
            // Starts 0.5 m from the end of `main`: joined.
            road("joined", 36.0, &[(1000.5, 0.0), (1000.5, 1000.0)]),
            // Starts 20 m from the end of `joined`: an island.
            road("island", 36.0, &[(1000.0, 1020.0), (1000.0, 2000.0)]),
        ];
        let net = RoadNetwork::new(&roads, &config);
        assert_eq!(net.node_count(), 5);
        let alert = at(0.0, 0.0);
        let r = responders(&[("on-joined", at(1000.0, 900.0)), ("on-island", at(1000.0, 1500.0))]);
        let recs = r.recommend(&net, alert, 5, now());
        let by: Vec<(&str, Measure)> = recs.items.iter().map(|i| (i.responder.as_str(), i.by)).collect();
        assert_eq!(by, [("on-joined", Measure::Road), ("on-island", Measure::StraightLine)], "{recs:#?}");
        assert!((recs.items[0].distance_m - 1900.0).abs() < 2.0, "{recs:#?}");
    }

    #[test]
    fn only_available_responders_with_fresh_positions_are_recommended() {
        let net = RoadNetwork::new(&river_city(), &DispatchConfig::default());
        let mut r = Responders::new(DispatchConfig::default());
        let minutes = |m: i64| now() - chrono::Duration::minutes(m);
        for (id, status, age) in [
            ("fresh", Availability::Available, Some(9)),
            ("stale", Availability::Available, Some(11)),
            ("unheard", Availability::Available, None),
            ("busy", Availability::Busy, Some(1)),
            ("off", Availability::OffDuty, Some(1)),
        ] {
            r.register(id, "fire-d01", id, status);
            if let Some(m) = age {
                assert!(r.observe(id, at(1000.0, -100.0), minutes(m)));
            }
        }
        assert_eq!(ids(&r.recommend(&net, at(0.0, -100.0), 10, now())), ["fresh"]);
        assert!(r.is_stale(r.get("stale").unwrap(), now()) && r.is_stale(r.get("unheard").unwrap(), now()));
        // Becoming available counts at once; a registration change keeps the position.
        assert!(r.set_status("busy", Availability::Available));
        r.register("off", "fire-d02", "Engine 2", Availability::Available);
        assert_eq!(r.get("off").unwrap().unit, "fire-d02");
        assert_eq!(ids(&r.recommend(&net, at(0.0, -100.0), 10, now())), ["busy", "fresh", "off"]);
        assert!(!r.set_status("nobody", Availability::Busy));
        assert!(r.recommend(&net, at(0.0, -100.0), 0, now()).items.is_empty());
        assert_eq!(Availability::parse("off_duty"), Ok(Availability::OffDuty));
        let err = Availability::parse("lunch").unwrap_err();
        assert!(err.contains("available, busy or off_duty"), "{err}");
    }

    /// A small pseudo-random generator, so the test is the same on every run.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn stopping_at_k_answers_the_first_k_of_the_full_search() {
        // A 6 x 6 street grid, 200 m blocks, streets of mixed speeds, and a few gaps.
        let mut rng = Lcg(7);
        let mut roads = Vec::new();
        for i in 0..6 {
            let c = i as f64 * 200.0;
            for (name, line) in [("ew", [(0.0, c), (200.0, c), (400.0, c), (600.0, c), (800.0, c), (1000.0, c)]), ("ns", [(c, 0.0), (c, 200.0), (c, 400.0), (c, 600.0), (c, 800.0), (c, 1000.0)])] {
                for w in line.windows(2) {
                    if rng.next() < 0.9 {
                        let speed = [20.0, 30.0, 50.0, 60.0][(rng.next() * 4.0) as usize];
                        roads.push(road(&format!("{name}-{}", roads.len()), speed, w));
                    }
                }
            }
        }
        let config = DispatchConfig::default();
        let net = RoadNetwork::new(&roads, &config);
        let points: Vec<(String, Point)> =
            (0..30).map(|i| (format!("r{i:02}"), at(rng.next() * 1400.0 - 200.0, rng.next() * 1400.0 - 200.0))).collect();
        let r = responders(&points.iter().map(|(id, p)| (id.as_str(), *p)).collect::<Vec<_>>());
        for alert in [at(500.0, 500.0), at(10.0, 990.0), at(1300.0, -150.0)] {
            let all = r.recommend(&net, alert, 100, now());
            assert_eq!(all.items.len(), 30);
            assert!(all.items.windows(2).all(|w| w[0].eta_s <= w[1].eta_s), "{all:#?}");
            for item in &all.items {
                let p = points.iter().find(|(id, _)| *id == item.responder).unwrap().1;
                assert!(item.distance_m + 0.5 >= haversine_m(alert, p), "{item:?} is nearer than the straight line");
            }
            for k in 1..=30 {
                let first = r.recommend(&net, alert, k, now());
                assert_eq!(first.items[..], all.items[..k], "k = {k}");
            }
        }
    }

    #[test]
    fn positions_come_from_gps_events_of_registered_responders_in_event_time_order() {
        let mut r = Responders::new(DispatchConfig::default());
        r.register("engine-7", "fire-d01", "Engine 7", Availability::Available);
        let gps = |source: &str, kind: &str, time: &str, x: f64| -> Event {
            let (lon, lat) = at(x, 0.0);
            serde_json::from_value(json!({"source": source, "kind": kind, "time": time, "lon": lon, "lat": lat})).unwrap()
        };
        assert!(r.apply(&gps("engine-7", "gps", "2026-11-22T02:59:00Z", 100.0)));
        assert!(!r.apply(&gps("truck-1", "gps", "2026-11-22T02:59:00Z", 100.0)), "not a responder");
        assert!(!r.apply(&gps("engine-7", "smoke", "2026-11-22T02:59:30Z", 200.0)), "not a position report");
        // A late report of an earlier time does not move the responder back.
        assert!(!r.apply(&gps("engine-7", "gps", "2026-11-22T02:58:00Z", 300.0)));
        let fix = r.get("engine-7").unwrap().fix.unwrap();
        assert_eq!((fix.lon, fix.lat), at(100.0, 0.0));
        assert_eq!(r.get("engine-7").unwrap().age(now()), Some(Duration::from_secs(60)));
        let no_place: Event =
            serde_json::from_value(json!({"source": "engine-7", "kind": "gps", "time": "2026-11-22T03:00:00Z"})).unwrap();
        assert!(!r.apply(&no_place));
    }
}
