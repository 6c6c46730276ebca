//! A routable graph built from a city's road centrelines.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use cityward_model::city::Road;
use cityward_model::geo::{bearing_deg, haversine_m, polyline_distance_m, LocalProjection, Point};

/// Coordinates are joined into one node when they agree to 1e-7 degrees (about 1 cm).
const NODE_QUANTUM: f64 = 1e7;

fn key(p: Point) -> (i64, i64) {
    (
        (p.0 * NODE_QUANTUM).round() as i64,
        (p.1 * NODE_QUANTUM).round() as i64,
    )
}

/// One directed arc of the road graph (every road segment gives one arc each way).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arc {
    /// Start node.
    pub from: u32,
    /// End node.
    pub to: u32,
    /// Index of the road in the city's `roads`.
    pub road: u32,
    /// Length in metres.
    pub length_m: f64,
    /// Speed limit of the road in km/h.
    pub speed_limit_kmh: f64,
    /// Bearing from `from` to `to` in degrees (0 = north, clockwise).
    pub heading: f64,
}

impl Arc {
    /// Travel time at the speed limit, in seconds.
    pub fn time_s(&self) -> f64 {
        self.length_m / (self.speed_limit_kmh / 3.6)
    }
}

/// A path through the graph: the arcs in driving order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Route {
    /// Arc indices (see [`RoadGraph::arc`]).
    pub arcs: Vec<u32>,
    /// Total length in metres.
    pub length_m: f64,
    /// Travel time at the speed limits, in seconds.
    pub time_s: f64,
}

/// The road network as a directed graph: a node at every road vertex (vertices of different
/// roads at the same position are joined, which is how roads meet at intersections), and
/// an arc each way along every segment.
#[derive(Debug, Clone)]
pub struct RoadGraph {
    ids: HashMap<(i64, i64), u32>,
    nodes: Vec<Point>,
    xy: Vec<(f64, f64)>,
    arcs: Vec<Arc>,
    /// CSR: the arcs leaving node `n` are `out[first[n]..first[n + 1]]`.
    first: Vec<u32>,
    out: Vec<u32>,
    max_speed_mps: f64,
}

impl RoadGraph {
    /// Builds the graph from road centrelines. Node and arc numbering follow the order of
    /// the roads and their vertices, so the same roads always give the same graph.
    pub fn from_roads(roads: &[Road]) -> RoadGraph {
        let mut ids: HashMap<(i64, i64), u32> = HashMap::new();
        let mut nodes: Vec<Point> = Vec::new();
        let mut arcs: Vec<Arc> = Vec::new();
        let mut node = |p: Point, nodes: &mut Vec<Point>| -> u32 {
            *ids.entry(key(p)).or_insert_with(|| {
                nodes.push(p);
                (nodes.len() - 1) as u32
            })
        };
        for (r, road) in roads.iter().enumerate() {
            let mut prev: Option<u32> = None;
            for &p in &road.line {
                let n = node(p, &mut nodes);
                if let Some(a) = prev {
                    if a != n {
                        let (pa, pb) = (nodes[a as usize], nodes[n as usize]);
                        let length_m = haversine_m(pa, pb).max(0.1);
                        let speed_limit_kmh = road.speed_limit_kmh.max(1.0);
                        arcs.push(Arc {
                            from: a,
                            to: n,
                            road: r as u32,
                            length_m,
                            speed_limit_kmh,
                            heading: bearing_deg(pa, pb),
                        });
                        arcs.push(Arc {
                            from: n,
                            to: a,
                            road: r as u32,
                            length_m,
                            speed_limit_kmh,
                            heading: bearing_deg(pb, pa),
                        });
                    }
                }
                prev = Some(n);
            }
        }
        let mut first = vec![0u32; nodes.len() + 1];
        for a in &arcs {
            first[a.from as usize + 1] += 1;
        }
        for i in 0..nodes.len() {
            first[i + 1] += first[i];
        }
        let mut fill = first.clone();
        let mut out = vec![0u32; arcs.len()];
        for (i, a) in arcs.iter().enumerate() {
            out[fill[a.from as usize] as usize] = i as u32;
            fill[a.from as usize] += 1;
        }
        let origin = nodes.first().copied().unwrap_or((0.0, 0.0));
        let proj = LocalProjection::new(origin);
        let xy = nodes.iter().map(|p| proj.to_xy(*p)).collect();
        let max_speed_mps = arcs
            .iter()
            .map(|a| a.speed_limit_kmh / 3.6)
            .fold(1.0, f64::max);
        RoadGraph {
            ids,
            nodes,
            xy,
            arcs,
            first,
            out,
            max_speed_mps,
        }
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of directed arcs.
    pub fn arc_count(&self) -> usize {
        self.arcs.len()
    }

    /// The node at exactly this position (to about 1 cm), if any.
    pub fn node_at(&self, p: Point) -> Option<u32> {
        self.ids.get(&key(p)).copied()
    }

    /// Position of a node.
    pub fn node(&self, n: u32) -> Point {
        self.nodes[n as usize]
    }

    /// An arc by index.
    pub fn arc(&self, a: u32) -> &Arc {
        &self.arcs[a as usize]
    }

    /// Indices of the arcs leaving a node.
    pub fn arcs_from(&self, n: u32) -> &[u32] {
        &self.out[self.first[n as usize] as usize..self.first[n as usize + 1] as usize]
    }

    /// Number of distinct neighbours of a node (3 or more at an intersection).
    pub fn degree(&self, n: u32) -> usize {
        let mut to: Vec<u32> = self
            .arcs_from(n)
            .iter()
            .map(|&a| self.arcs[a as usize].to)
            .collect();
        to.sort_unstable();
        to.dedup();
        to.len()
    }

    /// The arc the other way along the same road segment.
    pub fn reverse(&self, a: u32) -> Option<u32> {
        let arc = &self.arcs[a as usize];
        self.arcs_from(arc.to).iter().copied().find(|&b| {
            self.arcs[b as usize].to == arc.from && self.arcs[b as usize].road == arc.road
        })
    }

    /// The arc from `from` to `to`, if they are adjacent (the fastest when several roads
    /// join them).
    pub fn arc_between(&self, from: u32, to: u32) -> Option<u32> {
        self.arcs_from(from)
            .iter()
            .copied()
            .filter(|&a| self.arcs[a as usize].to == to)
            .min_by(|&a, &b| {
                self.arcs[a as usize]
                    .time_s()
                    .total_cmp(&self.arcs[b as usize].time_s())
            })
    }

    /// The node nearest to a point, with its distance in metres.
    pub fn nearest_node(&self, p: Point) -> Option<(u32, f64)> {
        let mut best: Option<(u32, f64)> = None;
        for (i, &q) in self.nodes.iter().enumerate() {
            let d = haversine_m(p, q);
            if best.is_none_or(|(_, bd)| d < bd) {
                best = Some((i as u32, d));
            }
        }
        best
    }

    /// The fastest route at the speed limits (A* with a straight-line bound), `None` when
    /// `to` cannot be reached. Ties are broken by node number, so routes are deterministic.
    pub fn shortest_path(&self, from: u32, to: u32) -> Option<Route> {
        let n = self.nodes.len();
        if from as usize >= n || to as usize >= n {
            return None;
        }
        if from == to {
            return Some(Route::default());
        }
        let target = self.xy[to as usize];
        let h = |v: u32| {
            let p = self.xy[v as usize];
            ((p.0 - target.0).powi(2) + (p.1 - target.1).powi(2)).sqrt() / self.max_speed_mps
                * 0.999
        };
        let mut dist = vec![f64::INFINITY; n];
        let mut via: Vec<u32> = vec![u32::MAX; n];
        let mut heap = BinaryHeap::new();
        dist[from as usize] = 0.0;
        heap.push(Reverse((h(from).to_bits(), from)));
        while let Some(Reverse((_, v))) = heap.pop() {
            if v == to {
                break;
            }
            let dv = dist[v as usize];
            for &a in self.arcs_from(v) {
                let arc = &self.arcs[a as usize];
                let nd = dv + arc.time_s();
                if nd < dist[arc.to as usize] {
                    dist[arc.to as usize] = nd;
                    via[arc.to as usize] = a;
                    heap.push(Reverse(((nd + h(arc.to)).to_bits(), arc.to)));
                }
            }
        }
        if !dist[to as usize].is_finite() {
            return None;
        }
        let mut arcs = Vec::new();
        let mut cur = to;
        while cur != from {
            let a = via[cur as usize];
            arcs.push(a);
            cur = self.arcs[a as usize].from;
        }
        arcs.reverse();
        Some(self.route(arcs))
    }

    /// A route from its arcs, with length and time filled in.
    pub fn route(&self, arcs: Vec<u32>) -> Route {
        let length_m = arcs.iter().map(|&a| self.arcs[a as usize].length_m).sum();
        let time_s = arcs.iter().map(|&a| self.arcs[a as usize].time_s()).sum();
        Route {
            arcs,
            length_m,
            time_s,
        }
    }

    /// The same route driven the other way, when every segment can be driven back.
    pub fn reversed(&self, route: &Route) -> Option<Route> {
        let arcs = route
            .arcs
            .iter()
            .rev()
            .map(|&a| self.reverse(a))
            .collect::<Option<Vec<_>>>()?;
        Some(self.route(arcs))
    }

    /// The polyline of a route, starting at its first node.
    pub fn line(&self, route: &Route) -> Vec<Point> {
        let mut line = Vec::with_capacity(route.arcs.len() + 1);
        if let Some(&a) = route.arcs.first() {
            line.push(self.nodes[self.arcs[a as usize].from as usize]);
        }
        line.extend(
            route
                .arcs
                .iter()
                .map(|&a| self.nodes[self.arcs[a as usize].to as usize]),
        );
        line
    }

    /// A route that follows a polyline through the graph: each vertex is snapped to its
    /// nearest node (within `snap_m`) and consecutive nodes are joined by the fastest route.
    pub fn route_along(&self, line: &[Point], snap_m: f64) -> Option<Route> {
        let mut nodes: Vec<u32> = Vec::new();
        for &p in line {
            let (n, d) = self.nearest_node(p)?;
            if d <= snap_m && nodes.last() != Some(&n) {
                nodes.push(n);
            }
        }
        if nodes.len() < 2 {
            return None;
        }
        let mut arcs = Vec::new();
        for w in nodes.windows(2) {
            match self.arc_between(w[0], w[1]) {
                Some(a) => arcs.push(a),
                None => arcs.extend(self.shortest_path(w[0], w[1])?.arcs),
            }
        }
        Some(self.route(arcs))
    }

    /// The nodes of the largest connected part of the network, in node order.
    pub fn largest_component(&self) -> Vec<u32> {
        let n = self.nodes.len();
        let mut comp = vec![u32::MAX; n];
        let mut best: (usize, u32) = (0, 0);
        let mut stack = Vec::new();
        for s in 0..n {
            if comp[s] != u32::MAX {
                continue;
            }
            let id = s as u32;
            comp[s] = id;
            stack.push(s as u32);
            let mut size = 0;
            while let Some(v) = stack.pop() {
                size += 1;
                for &a in self.arcs_from(v) {
                    let t = self.arcs[a as usize].to as usize;
                    if comp[t] == u32::MAX {
                        comp[t] = id;
                        stack.push(t as u32);
                    }
                }
            }
            if size > best.0 {
                best = (size, id);
            }
        }
        (0..n as u32)
            .filter(|&v| comp[v as usize] == best.1)
            .collect()
    }

    /// Distance in metres from a point to a route's polyline.
    pub fn distance_to_route_m(&self, p: Point, route: &Route) -> f64 {
        polyline_distance_m(p, &self.line(route))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cityward_model::geo::offset_m;

    fn road(id: &str, speed: f64, line: Vec<Point>) -> Road {
        Road {
            id: id.into(),
            name: id.into(),
            speed_limit_kmh: speed,
            class: "local".into(),
            line,
        }
    }

    #[test]
    fn routes_prefer_fast_roads_and_reverse_exactly() {
        let o = (121.55, 29.87);
        let a = o;
        let b = offset_m(o, 1000.0, 0.0);
        let c = offset_m(o, 1000.0, 1000.0);
        let d = offset_m(o, 0.0, 1000.0);
        // Slow direct road a-c, fast detour a-b-c, and a road c-d that reaches d.
        let roads = vec![
            road("slow", 10.0, vec![a, c]),
            road("fast", 80.0, vec![a, b, c]),
            road("side", 40.0, vec![c, d]),
        ];
        let g = RoadGraph::from_roads(&roads);
        assert_eq!(g.node_count(), 4);
        assert_eq!(g.degree(1), 3, "c joins a, b and d");
        let r = g.shortest_path(0, 3).unwrap();
        let line = g.line(&r);
        assert_eq!(line, vec![a, b, c, d]);
        assert!((r.length_m - 3000.0).abs() < 5.0);
        let back = g.reversed(&r).unwrap();
        assert_eq!(g.line(&back), vec![d, c, b, a]);
        let along = g.route_along(&[a, c, d], 5.0).unwrap();
        assert_eq!(
            g.line(&along),
            vec![a, c, d],
            "adjacent vertices use the arc between them"
        );
        assert_eq!(g.largest_component().len(), 4);
    }
}
