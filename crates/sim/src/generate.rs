//! A synthetic city around Ningbo, deterministic for a seed.
//!
//! The city is laid out on a jittered, slightly rotated lattice of quadrilateral cells
//! (about 300 m across). Every patrol grid is one cell; communities, streets and districts
//! are blocks of cells cut with jittered guillotine cuts, and every outline runs through the
//! lattice vertices it passes. So neighbours share exactly the same vertices, each level
//! tiles its parent exactly, and the boundary rule of `cityward_model::geo` gives every
//! point to exactly one grid.
//!
//! Roads run through cell centres: arterial lines every fourth row and column (the middle
//! ones are expressways), and local roads between them. Zones, units and devices are placed
//! relative to this network; see [`generate_city`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use cityward_model::city::{City, Device, Grid, Level, Region, Road, Unit, Zone};
use cityward_model::geo::{
    offset_m, BBox, Geometry, LocalProjection, MultiPolygon, Point, Polygon,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};

use crate::graph::RoadGraph;
use crate::names::{NameMaker, ARTERIALS, DISTRICTS};

/// The centre of generated cities: central Ningbo (lon, lat).
pub const CENTRE: Point = (121.55, 29.87);

/// How big a generated city is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    /// 120 grids and a few hundred devices; generated and simulated in a blink, for tests.
    Small,
    /// About 770 grids and 4,000 devices.
    Medium,
    /// About 3,000 grids and more than 20,000 devices; the simulator drives about 1,000
    /// vehicles with GPS.
    Large,
}

impl Size {
    /// The name used on the command line: `small`, `medium` or `large`.
    pub fn as_str(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "small" => Ok(Size::Small),
            "medium" => Ok(Size::Medium),
            "large" => Ok(Size::Large),
            _ => Err(format!(
                "`{s}` is not a city size; use small, medium or large"
            )),
        }
    }
}

/// The layout parameters of one size.
struct Spec {
    cols: usize,
    rows: usize,
    cell_m: f64,
    districts: (usize, usize),
    streets: (usize, usize),
    communities: (usize, usize),
    /// Per grid, inclusive ranges of smoke, gas, door and heartbeat-only sensors.
    smoke: (u32, u32),
    gas: (u32, u32),
    door: (u32, u32),
    heartbeat: (u32, u32),
    depots: usize,
    squares: usize,
    underpasses: usize,
    school_every: usize,
    bus_routes: usize,
    cameras_per_square: usize,
}

fn spec(size: Size) -> Spec {
    match size {
        Size::Small => Spec {
            cols: 12,
            rows: 10,
            cell_m: 350.0,
            districts: (2, 1),
            streets: (2, 2),
            communities: (2, 2),
            smoke: (1, 2),
            gas: (0, 1),
            door: (0, 1),
            heartbeat: (0, 1),
            depots: 2,
            squares: 2,
            underpasses: 2,
            school_every: 3,
            bus_routes: 2,
            cameras_per_square: 2,
        },
        Size::Medium => Spec {
            cols: 32,
            rows: 24,
            cell_m: 320.0,
            districts: (2, 2),
            streets: (3, 2),
            communities: (2, 3),
            smoke: (2, 3),
            gas: (1, 2),
            door: (1, 1),
            heartbeat: (0, 1),
            depots: 4,
            squares: 4,
            underpasses: 5,
            school_every: 3,
            bus_routes: 8,
            cameras_per_square: 2,
        },
        Size::Large => Spec {
            cols: 64,
            rows: 48,
            cell_m: 300.0,
            districts: (3, 2),
            streets: (3, 3),
            communities: (3, 3),
            smoke: (3, 5),
            gas: (2, 3),
            door: (1, 2),
            heartbeat: (1, 1),
            depots: 6,
            squares: 8,
            underpasses: 12,
            school_every: 3,
            bus_routes: 30,
            cameras_per_square: 3,
        },
    }
}

/// Rounds to 1e-7 degrees (about 1 cm), so files are compact and read back bit-identical.
fn round7(p: Point) -> Point {
    ((p.0 * 1e7).round() / 1e7, (p.1 * 1e7).round() / 1e7)
}

/// The jittered lattice: `(rows + 1) x (cols + 1)` vertices and a centre per cell.
struct Lattice {
    cols: usize,
    vertices: Vec<Point>,
    centres: Vec<Point>,
}

impl Lattice {
    fn new(spec: &Spec, rng: &mut ChaCha8Rng) -> Lattice {
        let proj = LocalProjection::new(CENTRE);
        let angle: f64 = rng.random_range(-0.25..0.25);
        let (sin, cos) = angle.sin_cos();
        let (cols, rows, cell) = (spec.cols, spec.rows, spec.cell_m);
        let mut vertices = Vec::with_capacity((rows + 1) * (cols + 1));
        for r in 0..=rows {
            for c in 0..=cols {
                let x = (c as f64 - cols as f64 / 2.0 + rng.random_range(-0.2..0.2)) * cell;
                let y = (r as f64 - rows as f64 / 2.0 + rng.random_range(-0.2..0.2)) * cell;
                vertices.push(round7(
                    proj.to_lonlat((x * cos - y * sin, x * sin + y * cos)),
                ));
            }
        }
        let mut lattice = Lattice {
            cols,
            vertices,
            centres: Vec::with_capacity(rows * cols),
        };
        for r in 0..rows {
            for c in 0..cols {
                let pts = [
                    lattice.v(r, c),
                    lattice.v(r, c + 1),
                    lattice.v(r + 1, c + 1),
                    lattice.v(r + 1, c),
                ];
                let lon = pts.iter().map(|p| p.0).sum::<f64>() / 4.0;
                let lat = pts.iter().map(|p| p.1).sum::<f64>() / 4.0;
                lattice.centres.push(round7((lon, lat)));
            }
        }
        lattice
    }

    fn v(&self, r: usize, c: usize) -> Point {
        self.vertices[r * (self.cols + 1) + c]
    }

    fn centre(&self, r: usize, c: usize) -> Point {
        self.centres[r * self.cols + c]
    }

    fn cell_polygon(&self, r: usize, c: usize) -> Polygon {
        Polygon::new(
            vec![
                self.v(r, c),
                self.v(r, c + 1),
                self.v(r + 1, c + 1),
                self.v(r + 1, c),
            ],
            Vec::new(),
        )
    }

    /// The outline of a block of cells, counter-clockwise through every lattice vertex on it.
    fn outline(&self, b: &Block) -> Polygon {
        let mut ring = Vec::new();
        for c in b.c0..b.c1 {
            ring.push(self.v(b.r0, c));
        }
        for r in b.r0..b.r1 {
            ring.push(self.v(r, b.c1));
        }
        for c in (b.c0 + 1..=b.c1).rev() {
            ring.push(self.v(b.r1, c));
        }
        for r in (b.r0 + 1..=b.r1).rev() {
            ring.push(self.v(r, b.c0));
        }
        Polygon::new(ring, Vec::new())
    }
}

/// A block of cells: columns `c0..c1`, rows `r0..r1`.
#[derive(Debug, Clone, Copy)]
struct Block {
    c0: usize,
    c1: usize,
    r0: usize,
    r1: usize,
}

/// Cuts a length into `k` parts of at least 1 with jittered sizes.
fn split_len(len: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let k = k.clamp(1, len.max(1));
    let mut cuts = vec![0];
    for i in 1..k {
        let ideal = i as f64 * len as f64 / k as f64
            + rng.random_range(-0.25..0.25) * len as f64 / k as f64;
        let lo = cuts[i - 1] + 1;
        let hi = len - (k - i);
        cuts.push((ideal.round() as usize).clamp(lo, hi));
    }
    cuts.push(len);
    cuts.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Guillotine partition: columns first, then each column strip into rows.
fn partition(b: Block, split: (usize, usize), rng: &mut ChaCha8Rng) -> Vec<Block> {
    let mut out = Vec::new();
    let mut c0 = b.c0;
    for w in split_len(b.c1 - b.c0, split.0, rng) {
        let mut r0 = b.r0;
        for h in split_len(b.r1 - b.r0, split.1, rng) {
            out.push(Block {
                c0,
                c1: c0 + w,
                r0,
                r1: r0 + h,
            });
            r0 += h;
        }
        c0 += w;
    }
    out
}

/// A random point inside a polygon, rounded like every generated position.
fn point_in(poly: &Polygon, rng: &mut ChaCha8Rng) -> Point {
    let b = poly.bbox();
    for _ in 0..100 {
        let p = round7((
            rng.random_range(b.min_lon..b.max_lon),
            rng.random_range(b.min_lat..b.max_lat),
        ));
        if poly.contains(p.0, p.1) {
            return p;
        }
    }
    round7(poly.interior_point().unwrap_or_else(|| b.center()))
}

fn square_around(p: Point, half_w: f64, half_h: f64) -> Polygon {
    let sw = round7(offset_m(p, -half_w, -half_h));
    let ne = round7(offset_m(p, half_w, half_h));
    Polygon::rect(BBox::new(sw.0, sw.1, ne.0, ne.1))
}

fn props(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Everything the generator knows about a cell.
struct CellInfo {
    grid: usize,
    community: usize,
    street: usize,
    district: usize,
}

/// Generates a city of the given size around Ningbo; the same seed always gives the same
/// city (and byte-identical files from [`City::write`]).
///
/// Contents:
/// - **regions**: districts (named after Ningbo's), streets and communities, each tiling
///   its parent exactly; **grids**: one per lattice cell, ids `<community>-g<n>`.
/// - **roads**: expressways (80 km/h), arterials (60), secondary roads (50) and local
///   roads (30 or 40), all joined into one routable network.
/// - **zones**: hazardous-goods depots (`depot-north`, `depot-south`, …), hazmat
///   corridors between them and school-bus corridors (`kind` `corridor`, LineStrings with
///   `width_m` and a `vehicle_class` property), schools, squares (with `capacity`),
///   underpasses, and restricted areas: one with a hole, one MultiPolygon.
/// - **units**: `unit-city`, one administrative unit per region (`unit-<region id>`), fire
///   brigades per district under `fire-city`, police bureaus per district and stations per
///   street under `police-city`, and maintenance units per district.
/// - **devices**: smoke, gas, door and heartbeat-only sensors in every grid (owned by the
///   community), ANPR read points at arterial intersections and crowd cameras at squares
///   (owned by the police station), water-level sensors in underpasses (owned by
///   maintenance).
pub fn generate_city(seed: u64, size: Size) -> City {
    let spec = spec(size);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let lattice = Lattice::new(&spec, &mut rng);
    let mut names = NameMaker::new();
    for d in DISTRICTS.iter().chain(ARTERIALS) {
        names.reserve(d);
    }

    // --- Regions and grids -------------------------------------------------------------
    let mut regions: Vec<Region> = Vec::new();
    let mut grids: Vec<Grid> = Vec::new();
    let mut cells: Vec<Option<CellInfo>> = (0..spec.cols * spec.rows).map(|_| None).collect();
    let whole = Block {
        c0: 0,
        c1: spec.cols,
        r0: 0,
        r1: spec.rows,
    };
    let mut district_ids = Vec::new();
    let mut street_ids = Vec::new();
    let mut community_ids = Vec::new();
    let mut street_district = Vec::new();
    let mut community_street = Vec::new();
    let mut street_names = Vec::new();
    let mut district_names = Vec::new();
    let mut community_names = Vec::new();
    for (di, db) in partition(whole, spec.districts, &mut rng)
        .into_iter()
        .enumerate()
    {
        let did = format!("d{}", di + 1);
        let dname = DISTRICTS
            .get(di)
            .map(|s| s.to_string())
            .unwrap_or_else(|| names.make(&mut rng));
        regions.push(Region {
            id: did.clone(),
            name: format!("{dname} District"),
            level: Level::District,
            parent: None,
            area: lattice.outline(&db).into(),
        });
        let district = district_ids.len();
        district_ids.push(did.clone());
        district_names.push(dname);
        for (si, sb) in partition(db, spec.streets, &mut rng)
            .into_iter()
            .enumerate()
        {
            let sid = format!("{did}-s{}", si + 1);
            let sname = names.make(&mut rng);
            regions.push(Region {
                id: sid.clone(),
                name: format!("{sname} Street"),
                level: Level::Street,
                parent: Some(did.clone()),
                area: lattice.outline(&sb).into(),
            });
            let street = street_ids.len();
            street_ids.push(sid.clone());
            street_names.push(sname);
            street_district.push(district);
            for (ci, cb) in partition(sb, spec.communities, &mut rng)
                .into_iter()
                .enumerate()
            {
                let cid = format!("{sid}-c{}", ci + 1);
                let cname = names.make(&mut rng);
                regions.push(Region {
                    id: cid.clone(),
                    name: format!("{cname} Community"),
                    level: Level::Community,
                    parent: Some(sid.clone()),
                    area: lattice.outline(&cb).into(),
                });
                let community = community_ids.len();
                community_ids.push(cid.clone());
                community_names.push(cname);
                community_street.push(street);
                let mut gi = 0;
                for r in cb.r0..cb.r1 {
                    for c in cb.c0..cb.c1 {
                        gi += 1;
                        cells[r * spec.cols + c] = Some(CellInfo {
                            grid: grids.len(),
                            community,
                            street,
                            district,
                        });
                        grids.push(Grid {
                            id: format!("{cid}-g{gi}"),
                            region: cid.clone(),
                            area: lattice.cell_polygon(r, c).into(),
                        });
                    }
                }
            }
        }
    }
    let cells: Vec<CellInfo> = cells
        .into_iter()
        .map(|c| c.expect("the partition covers every cell"))
        .collect();
    let cell = |r: usize, c: usize| &cells[r * spec.cols + c];

    // --- Units ---------------------------------------------------------------------------
    let mut units = vec![Unit {
        id: "unit-city".into(),
        name: "Ningbo City Operations Centre".into(),
        kind: "city".into(),
        region: None,
        parent_unit: None,
    }];
    let unit = |id: String, name: String, kind: &str, region: Option<&str>, parent: &str| Unit {
        id,
        name,
        kind: kind.into(),
        region: region.map(Into::into),
        parent_unit: Some(parent.into()),
    };
    units.push(unit(
        "fire-city".into(),
        "Ningbo Fire and Rescue Command".into(),
        "fire",
        None,
        "unit-city",
    ));
    units.push(unit(
        "police-city".into(),
        "Ningbo Public Security Command".into(),
        "police",
        None,
        "unit-city",
    ));
    for (d, did) in district_ids.iter().enumerate() {
        let n = &district_names[d];
        units.push(unit(
            format!("unit-{did}"),
            format!("{n} District Office"),
            "district",
            Some(did),
            "unit-city",
        ));
        units.push(unit(
            format!("fire-{did}"),
            format!("{n} Fire Brigade"),
            "fire",
            Some(did),
            "fire-city",
        ));
        units.push(unit(
            format!("police-{did}"),
            format!("{n} Public Security Bureau"),
            "police",
            Some(did),
            "police-city",
        ));
        units.push(unit(
            format!("maint-{did}"),
            format!("{n} Municipal Maintenance"),
            "maintenance",
            Some(did),
            &format!("unit-{did}"),
        ));
    }
    for (s, sid) in street_ids.iter().enumerate() {
        let did = &district_ids[street_district[s]];
        let n = &street_names[s];
        units.push(unit(
            format!("unit-{sid}"),
            format!("{n} Street Office"),
            "street",
            Some(sid),
            &format!("unit-{did}"),
        ));
        units.push(unit(
            format!("police-{sid}"),
            format!("{n} Police Station"),
            "police",
            Some(sid),
            &format!("police-{did}"),
        ));
    }
    for (c, cid) in community_ids.iter().enumerate() {
        let sid = &street_ids[community_street[c]];
        let n = &community_names[c];
        units.push(unit(
            format!("unit-{cid}"),
            format!("{n} Community Committee"),
            "community",
            Some(cid),
            &format!("unit-{sid}"),
        ));
    }

    // --- Roads ---------------------------------------------------------------------------
    let arterial_cols: Vec<usize> = (1..spec.cols).step_by(4).collect();
    let arterial_rows: Vec<usize> = (1..spec.rows).step_by(4).collect();
    let middle = |lines: &[usize], n: usize| {
        *lines
            .iter()
            .min_by_key(|&&l| (l as i64 - n as i64 / 2).abs())
            .expect("at least one arterial")
    };
    let express_col = middle(&arterial_cols, spec.cols);
    let express_row = middle(&arterial_rows, spec.rows);
    let mut roads: Vec<Road> = Vec::new();
    let mut arterial_names = ARTERIALS.iter();
    let mut road_name = |rng: &mut ChaCha8Rng, names: &mut NameMaker| {
        arterial_names
            .next()
            .map(|s| s.to_string())
            .unwrap_or_else(|| names.make(rng))
    };
    let push_road =
        |roads: &mut Vec<Road>, name: String, class: &str, speed: f64, line: Vec<Point>| {
            let id = format!("road-{:04}", roads.len() + 1);
            roads.push(Road {
                id,
                name,
                speed_limit_kmh: speed,
                class: class.into(),
                line,
            });
        };
    let class_of = |k: usize, is_express: bool| -> (&'static str, f64, &'static str) {
        if is_express {
            ("expressway", 80.0, "Expressway")
        } else if k.is_multiple_of(2) {
            ("arterial", 60.0, "Road")
        } else {
            ("secondary", 50.0, "Road")
        }
    };
    for (k, &r) in arterial_rows.iter().enumerate() {
        let (class, speed, suffix) = class_of(k, r == express_row);
        let name = format!("{} {suffix}", road_name(&mut rng, &mut names));
        push_road(
            &mut roads,
            name,
            class,
            speed,
            (0..spec.cols).map(|c| lattice.centre(r, c)).collect(),
        );
    }
    for (k, &c) in arterial_cols.iter().enumerate() {
        let (class, speed, suffix) = class_of(k, c == express_col);
        let name = format!("{} {suffix}", road_name(&mut rng, &mut names));
        push_road(
            &mut roads,
            name,
            class,
            speed,
            (0..spec.rows).map(|r| lattice.centre(r, c)).collect(),
        );
    }
    let stops = |lines: &[usize], n: usize| {
        let mut s: Vec<usize> = std::iter::once(0)
            .chain(lines.iter().copied())
            .chain(std::iter::once(n - 1))
            .collect();
        s.dedup();
        s
    };
    let col_stops = stops(&arterial_cols, spec.cols);
    let row_stops = stops(&arterial_rows, spec.rows);
    for r in (0..spec.rows).filter(|r| !arterial_rows.contains(r)) {
        for w in col_stops.windows(2) {
            if rng.random_bool(0.5) {
                let speed = if rng.random_bool(0.5) { 30.0 } else { 40.0 };
                let name = format!("{} Lane", names.make(&mut rng));
                push_road(
                    &mut roads,
                    name,
                    "local",
                    speed,
                    (w[0]..=w[1]).map(|c| lattice.centre(r, c)).collect(),
                );
            }
        }
    }
    for c in (0..spec.cols).filter(|c| !arterial_cols.contains(c)) {
        for w in row_stops.windows(2) {
            if rng.random_bool(0.5) {
                let speed = if rng.random_bool(0.5) { 30.0 } else { 40.0 };
                let name = format!("{} Lane", names.make(&mut rng));
                push_road(
                    &mut roads,
                    name,
                    "local",
                    speed,
                    (w[0]..=w[1]).map(|r| lattice.centre(r, c)).collect(),
                );
            }
        }
    }
    let graph = RoadGraph::from_roads(&roads);
    let node_of = |r: usize, c: usize| {
        graph
            .node_at(lattice.centre(r, c))
            .expect("arterial cells are road nodes")
    };

    // --- Zones ---------------------------------------------------------------------------
    let mut zones: Vec<Zone> = Vec::new();
    let mut used_cells: BTreeSet<(usize, usize)> = BTreeSet::new();
    let pick = |rng: &mut ChaCha8Rng, v: &[usize]| v[rng.random_range(0..v.len())];

    // Depots at the ends of arterial lines, on the city's edges.
    let sides = [
        ("north", "North"),
        ("south", "South"),
        ("east", "East"),
        ("west", "West"),
    ];
    let mut depots: Vec<(String, u32)> = Vec::new();
    for k in 0..spec.depots {
        let (side, side_name) = sides[k % 4];
        let (r, c) = match side {
            "north" => (spec.rows - 1, pick(&mut rng, &arterial_cols)),
            "south" => (0, pick(&mut rng, &arterial_cols)),
            "east" => (pick(&mut rng, &arterial_rows), spec.cols - 1),
            _ => (pick(&mut rng, &arterial_rows), 0),
        };
        if !used_cells.insert((r, c)) {
            continue;
        }
        let id = if k < 4 {
            format!("depot-{side}")
        } else {
            format!("depot-{side}-{}", k / 4 + 1)
        };
        let name = if k < 4 {
            format!("{side_name} Hazardous Goods Depot")
        } else {
            format!("{side_name} Hazardous Goods Depot {}", k / 4 + 1)
        };
        zones.push(Zone {
            id: id.clone(),
            name,
            kind: "depot".into(),
            geometry: Geometry::Polygon(square_around(lattice.centre(r, c), 110.0, 110.0)),
            width_m: None,
            properties: props(&[(
                "hazmat_class",
                Value::from(if k % 2 == 0 { "3" } else { "2.1" }),
            )]),
        });
        depots.push((id, node_of(r, c)));
    }
    // Hazmat corridors between depots.
    let pairs: Vec<(usize, usize)> = match depots.len() {
        0 | 1 => Vec::new(),
        2 => vec![(0, 1)],
        n => (0..n).map(|i| (i, (i + 1) % n)).collect(),
    };
    for (k, (a, b)) in pairs.into_iter().enumerate() {
        let (ref ida, na) = depots[a];
        let (ref idb, nb) = depots[b];
        if let Some(route) = graph.shortest_path(na, nb) {
            zones.push(Zone {
                id: format!("corridor-hazmat-{:02}", k + 1),
                name: format!("Hazmat route {ida} to {idb}"),
                kind: "corridor".into(),
                geometry: Geometry::LineString(graph.line(&route)),
                width_m: Some(120.0),
                properties: props(&[
                    ("vehicle_class", Value::from("hazmat")),
                    ("from", Value::from(ida.as_str())),
                    ("to", Value::from(idb.as_str())),
                ]),
            });
        }
    }
    // Schools, one every few communities, in a cell of the community off the road.
    let mut schools: Vec<(String, Point)> = Vec::new();
    for (ci, _) in community_ids
        .iter()
        .enumerate()
        .filter(|(ci, _)| ci.is_multiple_of(spec.school_every))
    {
        let cells_of: Vec<usize> = (0..cells.len())
            .filter(|&k| cells[k].community == ci)
            .collect();
        let k = cells_of[rng.random_range(0..cells_of.len())];
        let (r, c) = (k / spec.cols, k % spec.cols);
        let at = round7(offset_m(
            lattice.centre(r, c),
            spec.cell_m * 0.18,
            spec.cell_m * 0.18,
        ));
        let id = format!("school-{:02}", schools.len() + 1);
        let kind = if schools.len() % 3 == 2 {
            "Middle"
        } else {
            "Primary"
        };
        zones.push(Zone {
            id: id.clone(),
            name: format!("{} {kind} School", community_names[ci]),
            kind: "school".into(),
            geometry: Geometry::Polygon(square_around(at, 60.0, 45.0)),
            width_m: None,
            properties: Map::new(),
        });
        schools.push((id, at));
    }
    // School-bus corridors: from a residential node to a school.
    let component = graph.largest_component();
    for k in 0..spec.bus_routes.min(schools.len()) {
        let (ref school, at) = schools[(k * 7) % schools.len()];
        let Some((school_node, _)) = graph.nearest_node(at) else {
            continue;
        };
        let mut start = None;
        for _ in 0..200 {
            let n = component[rng.random_range(0..component.len())];
            let d = cityward_model::geo::haversine_m(graph.node(n), at);
            if (1500.0..5000.0).contains(&d) {
                start = Some(n);
                break;
            }
        }
        let Some(start) = start else { continue };
        if let Some(route) = graph.shortest_path(start, school_node) {
            zones.push(Zone {
                id: format!("corridor-bus-{:02}", k + 1),
                name: format!("School bus route {} to {school}", k + 1),
                kind: "corridor".into(),
                geometry: Geometry::LineString(graph.line(&route)),
                width_m: Some(100.0),
                properties: props(&[
                    ("vehicle_class", Value::from("school_bus")),
                    ("school", Value::from(school.as_str())),
                ]),
            });
        }
    }
    // Squares and underpasses at arterial intersections.
    let mut crossings: Vec<(usize, usize)> = Vec::new();
    for &r in &arterial_rows {
        for &c in &arterial_cols {
            crossings.push((r, c));
        }
    }
    let mut free: Vec<(usize, usize)> = crossings
        .iter()
        .copied()
        .filter(|rc| !used_cells.contains(rc))
        .collect();
    let mut squares: Vec<(String, Point)> = Vec::new();
    for k in 0..spec.squares {
        if free.is_empty() {
            break;
        }
        let (r, c) = free.remove(rng.random_range(0..free.len()));
        used_cells.insert((r, c));
        let at = lattice.centre(r, c);
        let id = format!("square-{:02}", k + 1);
        let name = if k == 0 {
            "Tianyi Square".to_string()
        } else {
            format!("{} Square", names.make(&mut rng))
        };
        let capacity = 1500 + 500 * rng.random_range(0..8);
        zones.push(Zone {
            id: id.clone(),
            name,
            kind: "square".into(),
            geometry: Geometry::Polygon(square_around(at, 80.0, 80.0)),
            width_m: None,
            properties: props(&[("capacity", Value::from(capacity))]),
        });
        squares.push((id, at));
    }
    let mut underpasses: Vec<(String, Point)> = Vec::new();
    for k in 0..spec.underpasses {
        if free.is_empty() {
            break;
        }
        let (r, c) = free.remove(rng.random_range(0..free.len()));
        used_cells.insert((r, c));
        let at = lattice.centre(r, c);
        let id = format!("underpass-{:02}", k + 1);
        let road = roads
            .iter()
            .find(|rd| rd.line.contains(&at))
            .map(|rd| rd.name.clone())
            .unwrap_or_default();
        zones.push(Zone {
            id: id.clone(),
            name: format!("{road} Underpass"),
            kind: "underpass".into(),
            geometry: Geometry::Polygon(square_around(at, 45.0, 20.0)),
            width_m: None,
            properties: Map::new(),
        });
        underpasses.push((id, at));
    }
    // Restricted areas: a ring with a hole, and a two-part area by the first depot.
    {
        let (r, c) = (
            rng.random_range(1..spec.rows - 1),
            rng.random_range(1..spec.cols - 1),
        );
        let at = lattice.centre(r, c);
        let outer = square_around(at, spec.cell_m * 1.2, spec.cell_m * 1.2);
        let inner = square_around(at, spec.cell_m * 0.4, spec.cell_m * 0.4);
        zones.push(Zone {
            id: "restricted-01".into(),
            name: "Reservoir protection area".into(),
            kind: "restricted".into(),
            geometry: Geometry::Polygon(Polygon::new(outer.exterior, vec![inner.exterior])),
            width_m: None,
            properties: props(&[(
                "note",
                Value::from("no hazardous goods; the keeper's compound in the middle is excluded"),
            )]),
        });
        // Beside the first depot, on the side towards the city centre.
        let base = zones
            .iter()
            .find(|z| z.kind == "depot")
            .map(|z| z.geometry.bbox().center())
            .unwrap_or(at);
        let proj = LocalProjection::new(base);
        let (dx, dy) = proj.to_xy(CENTRE);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let (ux, uy) = (dx / len, dy / len);
        let a = square_around(
            proj.to_lonlat((450.0 * ux - 300.0 * uy, 450.0 * uy + 300.0 * ux)),
            150.0,
            100.0,
        );
        let b = square_around(
            proj.to_lonlat((450.0 * ux + 300.0 * uy, 450.0 * uy - 300.0 * ux)),
            100.0,
            120.0,
        );
        zones.push(Zone {
            id: "restricted-02".into(),
            name: "Petrochemical storage security area".into(),
            kind: "restricted".into(),
            geometry: Geometry::MultiPolygon(MultiPolygon::new(vec![a, b])),
            width_m: None,
            properties: Map::new(),
        });
    }

    // --- Devices -------------------------------------------------------------------------
    let mut devices: Vec<Device> = Vec::new();
    let mut counters: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut next_id = |kind: &str| {
        let prefix: &'static str = match kind {
            "water_level" => "water",
            "heartbeat_sensor" => "hbs",
            "crowd_camera" => "cam",
            "smoke" => "smoke",
            "gas" => "gas",
            "door" => "door",
            "anpr" => "anpr",
            _ => "dev",
        };
        let n = counters.entry(prefix).or_insert(0);
        *n += 1;
        format!("{prefix}-{n:05}")
    };
    for r in 0..spec.rows {
        for c in 0..spec.cols {
            let info = cell(r, c);
            let poly = lattice.cell_polygon(r, c);
            let owner = format!("unit-{}", community_ids[info.community]);
            for (kind, (lo, hi)) in [
                ("smoke", spec.smoke),
                ("gas", spec.gas),
                ("door", spec.door),
                ("heartbeat_sensor", spec.heartbeat),
            ] {
                for _ in 0..rng.random_range(lo..=hi) {
                    let p = point_in(&poly, &mut rng);
                    devices.push(Device {
                        id: next_id(kind),
                        kind: kind.into(),
                        lon: p.0,
                        lat: p.1,
                        grid: grids[info.grid].id.clone(),
                        owner_unit: Some(owner.clone()),
                    });
                }
            }
        }
    }
    // Positions on the road network: the grid is looked up from the cell, checked, and in
    // the rare case of a point just across a cell edge, found by search.
    let grid_for = |p: Point, r: usize, c: usize| -> usize {
        let g = cell(r, c).grid;
        if grids[g].area.contains(p.0, p.1) {
            return g;
        }
        grids
            .iter()
            .position(|gr| gr.area.contains(p.0, p.1))
            .unwrap_or(g)
    };
    let street_of_grid = |g: usize| {
        let k = cells
            .iter()
            .position(|ci| ci.grid == g)
            .expect("every grid is a cell");
        cells[k].street
    };
    for &(r, c) in &crossings {
        let p = lattice.centre(r, c);
        let g = grid_for(p, r, c);
        devices.push(Device {
            id: next_id("anpr"),
            kind: "anpr".into(),
            lon: p.0,
            lat: p.1,
            grid: grids[g].id.clone(),
            owner_unit: Some(format!("police-{}", street_ids[street_of_grid(g)])),
        });
    }
    let cell_of_point = |p: Point| -> (usize, usize) {
        let k = (0..cells.len())
            .min_by(|&a, &b| {
                let da = cityward_model::geo::haversine_m(lattice.centres[a], p);
                let db = cityward_model::geo::haversine_m(lattice.centres[b], p);
                da.total_cmp(&db)
            })
            .expect("the city has cells");
        (k / spec.cols, k % spec.cols)
    };
    for (_, at) in &underpasses {
        let p = round7(offset_m(*at, 6.0, 0.0));
        let (r, c) = cell_of_point(p);
        let g = grid_for(p, r, c);
        devices.push(Device {
            id: next_id("water_level"),
            kind: "water_level".into(),
            lon: p.0,
            lat: p.1,
            grid: grids[g].id.clone(),
            owner_unit: Some(format!("maint-{}", district_ids[cell(r, c).district])),
        });
    }
    let corners = [(-50.0, -50.0), (50.0, 50.0), (50.0, -50.0), (-50.0, 50.0)];
    for (_, at) in &squares {
        for &(dx, dy) in corners.iter().take(spec.cameras_per_square) {
            let p = round7(offset_m(*at, dx, dy));
            let (r, c) = cell_of_point(p);
            let g = grid_for(p, r, c);
            devices.push(Device {
                id: next_id("crowd_camera"),
                kind: "crowd_camera".into(),
                lon: p.0,
                lat: p.1,
                grid: grids[g].id.clone(),
                owner_unit: Some(format!("police-{}", street_ids[street_of_grid(g)])),
            });
        }
    }

    City::from_parts(regions, grids, zones, roads, units, devices)
        .expect("a generated city is consistent; this is a bug in the generator")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("cityward-gen-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn sizes_parse_from_the_command_line() {
        assert_eq!("large".parse::<Size>().unwrap(), Size::Large);
        assert_eq!(" Small ".parse::<Size>().unwrap(), Size::Small);
        let err = "huge".parse::<Size>().unwrap_err();
        assert!(err.contains("small, medium or large"), "{err}");
        for s in [Size::Small, Size::Medium, Size::Large] {
            assert_eq!(s.to_string().parse::<Size>().unwrap(), s);
        }
    }

    #[test]
    fn same_seed_same_bytes_and_files_load_back() {
        let a = TempDir::new("a");
        let b = TempDir::new("b");
        let city = generate_city(7, Size::Small);
        city.write(&a.0).unwrap();
        generate_city(7, Size::Small).write(&b.0).unwrap();
        let fa = files(&a.0);
        assert_eq!(fa.len(), 6);
        assert_eq!(fa, files(&b.0));
        let loaded = City::load(&a.0).unwrap();
        assert_eq!(loaded, city, "a written city loads back identical");
        let other = generate_city(8, Size::Small);
        assert_ne!(other.grids, city.grids, "another seed gives another city");
    }

    #[test]
    fn regions_nest_and_tile() {
        let city = generate_city(11, Size::Small);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // Every region lies inside its parent; every grid inside its community.
        for r in &city.regions {
            let Some(parent) = &r.parent else {
                assert_eq!(r.level, Level::District);
                continue;
            };
            let parent = city.region(parent).expect("parent exists");
            assert_eq!(Some(parent.level), r.level.parent_level());
            for poly in &r.area.polygons {
                for _ in 0..20 {
                    let p = point_in(poly, &mut rng);
                    assert!(
                        parent.area.contains(p.0, p.1),
                        "{} pokes out of {}",
                        r.id,
                        parent.id
                    );
                }
            }
        }
        for g in &city.grids {
            let region = city.region(&g.region).expect("grid region exists");
            assert_eq!(region.level, Level::Community);
            let p = g.area.interior_point().unwrap();
            assert!(region.area.contains(p.0, p.1));
            assert_eq!(city.grid_at(p.0, p.1).unwrap().id, g.id);
        }
        // Each level tiles the city: random points inside the city lie in exactly one
        // region of each level and exactly one grid.
        let b = city.bbox();
        let mut inside = 0;
        for _ in 0..5000 {
            let (x, y) = (
                rng.random_range(b.min_lon..b.max_lon),
                rng.random_range(b.min_lat..b.max_lat),
            );
            let districts = city
                .regions
                .iter()
                .filter(|r| r.level == Level::District && r.area.contains(x, y))
                .count();
            assert!(districts <= 1);
            if districts == 0 {
                continue;
            }
            inside += 1;
            for level in Level::ALL {
                let n = city
                    .regions
                    .iter()
                    .filter(|r| r.level == level && r.area.contains(x, y))
                    .count();
                assert_eq!(n, 1, "({x}, {y}) in {n} regions of level {level}");
            }
            let n = city.grids.iter().filter(|g| g.area.contains(x, y)).count();
            assert_eq!(n, 1, "({x}, {y}) in {n} grids");
            let grid = city.grid_at(x, y).unwrap();
            let community = city.region_at(x, y, Level::Community).unwrap();
            assert_eq!(
                grid.region, community.id,
                "the grid's community is the community at the point"
            );
        }
        assert!(inside > 3000);
    }

    #[test]
    fn devices_sit_in_their_grid_and_have_owners() {
        let city = generate_city(3, Size::Small);
        assert!(
            (200..1000).contains(&city.devices.len()),
            "{} devices",
            city.devices.len()
        );
        for d in &city.devices {
            let g = city
                .grid_at(d.lon, d.lat)
                .unwrap_or_else(|| panic!("{} is in no grid", d.id));
            assert_eq!(g.id, d.grid, "{}", d.id);
            let owner = d.owner_unit.as_deref().unwrap();
            assert!(city.unit(owner).is_some(), "{owner}");
        }
        for kind in [
            "smoke",
            "gas",
            "door",
            "heartbeat_sensor",
            "anpr",
            "crowd_camera",
            "water_level",
        ] {
            assert!(
                city.devices.iter().any(|d| d.kind == kind),
                "no {kind} device"
            );
        }
        // Every community escalates to the city.
        for r in city.regions.iter().filter(|r| r.level == Level::Community) {
            let unit = city.unit_for_region(&r.id).unwrap();
            let chain = city.unit_chain(&unit.id);
            assert_eq!(chain.len(), 4);
            assert_eq!(chain.last().unwrap().id, "unit-city");
        }
    }

    #[test]
    fn zones_roads_and_network_are_usable() {
        let city = generate_city(5, Size::Small);
        for kind in [
            "depot",
            "corridor",
            "school",
            "square",
            "underpass",
            "restricted",
        ] {
            assert!(city.zones.iter().any(|z| z.kind == kind), "no {kind} zone");
        }
        assert!(city.zone("depot-north").is_some() && city.zone("depot-south").is_some());
        let holed = city
            .zones
            .iter()
            .any(|z| matches!(&z.geometry, Geometry::Polygon(p) if !p.holes.is_empty()));
        assert!(holed, "a restricted area has a hole");
        for z in city.zones.iter().filter(|z| z.kind == "corridor") {
            assert!(z.width_m.unwrap() > 0.0);
            assert!(matches!(z.geometry, Geometry::LineString(_)));
        }
        for r in &city.roads {
            assert!(
                (30.0..=80.0).contains(&r.speed_limit_kmh),
                "{}",
                r.speed_limit_kmh
            );
        }
        let graph = RoadGraph::from_roads(&city.roads);
        assert_eq!(
            graph.largest_component().len(),
            graph.node_count(),
            "the network is connected"
        );
        // Squares and depots are on the network.
        for z in &city.zones {
            let c = z.geometry.bbox().center();
            assert!(
                city.region_at(c.0, c.1, Level::District).is_some(),
                "{} lies outside the city",
                z.id
            );
        }
        for z in city
            .zones
            .iter()
            .filter(|z| z.kind == "square" || z.kind == "depot")
        {
            let c = z.geometry.bbox().center();
            let (_, d) = graph.nearest_node(c).unwrap();
            assert!(d < 5.0, "{} is {d} m from the network", z.id);
        }
    }

    #[test]
    fn large_city_is_large() {
        let city = generate_city(1, Size::Large);
        assert!(city.grids.len() >= 2000, "{} grids", city.grids.len());
        assert!(
            city.devices.len() >= 20_000,
            "{} devices",
            city.devices.len()
        );
        let medium = generate_city(1, Size::Medium);
        assert!(medium.devices.len() > 1000 && medium.devices.len() < city.devices.len());
        // About 20 km across, centred on Ningbo.
        let b = city.bbox();
        assert!(
            (15_000.0..30_000.0).contains(&b.width_m()),
            "{}",
            b.width_m()
        );
        let c = b.center();
        assert!((c.0 - CENTRE.0).abs() < 0.05 && (c.1 - CENTRE.1).abs() < 0.05);
        // The simulator drives about a thousand GPS vehicles in it.
        let config = crate::SimConfig::for_city(&city);
        assert!(
            (900..=1500).contains(&config.gps_vehicles),
            "{}",
            config.gps_vehicles
        );
    }
}
