//! The event simulator: a discrete-event simulation of vehicles on the road graph and of
//! the city's devices, with scripted incidents, delivering events in arrival order.
//!
//! # How time works
//!
//! Every actor (a vehicle, a device, the incident director) has a wake-up time in a queue;
//! waking at time `t` it emits events whose event time is exactly `t`, so events of one
//! source always have non-decreasing times. Each event then gets a delivery delay of up to
//! [`MAX_DELIVERY_DELAY_MS`], never overtaking an earlier event of the same source, and is
//! handed out by [`Simulator::next_until`] once its arrival time has passed. Events of
//! different sources therefore arrive slightly out of order, by at most 3 s of event time.
//!
//! All randomness comes from one ChaCha8 generator seeded with the seed, consumed in the
//! order of the queue, so the output depends only on the city, the seed and the start time:
//! not on how the run is cut into `next_until` calls.
//!
//! # What happens
//!
//! - **Regulated vehicles** (`gps`, attributes `speed_kmh`, `heading`, `class`, `plate`,
//!   and `route` for corridor-bound ones): hazmat tankers shuttle between depots along
//!   their `corridor-hazmat-*` corridor, school buses along `corridor-bus-*`, heavy trucks
//!   drive across the city, patrol cars around their beat. Fixes come every 1–5 s while
//!   driving and every 60 s while parked. Speeds follow the posted limits (mostly a little
//!   under), with congestion, traffic lights and stops. Some drivers speed on fast roads,
//!   some hazmat and bus drivers leave their corridor for a detour, and some drivers never
//!   take the 20-minute rest the others take after 2–3.5 h of driving (so after 4 h they
//!   are fatigued). [`Simulator::vehicles`] says who is who.
//! - **Background traffic**: cars without GPS that only show up as `plate_read` events
//!   (`plate`, `confidence`, `color`, `vehicle_type`, `lane`, `direction`) when they pass an
//!   ANPR read point, as do all vehicles; reads are occasionally missed or misread.
//! - **Devices**: every device sends a `heartbeat` (`battery`, `rssi`, `tamper`) every
//!   5 minutes; smoke (`value` in %obs/m, `alarm`, `temperature_c`) and gas (`value` in
//!   %LEL, `alarm`, `gas`) sensors report every 15 and 10 minutes, water-level sensors
//!   (`value` in metres) every 5, crowd cameras (`crowd_count`, `count`) every minute with a
//!   daily rhythm, door sensors (`door`, `open`) when opened and closed.
//! - **Scripted incidents**, every [`INCIDENT_CYCLE_S`] seconds starting at the start time
//!   (offsets from the cycle start): a hotlisted vehicle ([`HOTLIST_PLATES`]) crosses the
//!   city past several read points (+8 min); a fire (+12 min: a smoke alarm within a
//!   minute, neighbouring sensors above 60 °C within about five); a flooded underpass
//!   (+15 min: water rising past 0.3 m within about 20 minutes); a gas leak (+20 min); a
//!   crowd building at a square past its capacity (+25 min); and about 1 % of devices
//!   going silent for 2–3 hours (between +5 and +40 min). [`Simulator::incidents`] lists
//!   them with times, places and the devices involved.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io::{self, BufWriter, Write};

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use cityward_model::city::City;
use cityward_model::geo::{haversine_m, polyline_distance_m, Geometry, Point};
use cityward_model::Event;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::graph::{RoadGraph, Route};

/// The start time used when none is given: 2026-11-22 08:00 in Ningbo (00:00 UTC).
pub const DEFAULT_START: &str = "2026-11-22T00:00:00Z";

/// [`DEFAULT_START`] as a time.
pub fn default_start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(DEFAULT_START)
        .expect("DEFAULT_START is RFC 3339")
        .with_timezone(&Utc)
}

/// Plates on the hotlist. The first appears in the first incident cycle, the second in the
/// second, and so on; the list is the same for every seed.
pub const HOTLIST_PLATES: [&str; 3] = ["浙B7Q5X9", "浙A3K8M1", "苏E9L2D6"];

/// The hotlisted plates, as a hotlist file or rule would list them.
pub fn hotlist_plates() -> Vec<String> {
    HOTLIST_PLATES.iter().map(|p| p.to_string()).collect()
}

/// The longest delay between an event's time and its arrival, in milliseconds.
pub const MAX_DELIVERY_DELAY_MS: i64 = 3_000;

/// The scripted incidents repeat with this period, in seconds (4 hours).
pub const INCIDENT_CYCLE_S: i64 = 4 * 3600;

const CYCLE_MS: i64 = INCIDENT_CYCLE_S * 1000;
const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;

/// What a scripted incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// A fire: smoke alarm at the origin, then high temperatures at neighbouring sensors.
    Fire,
    /// A gas leak: gas concentration rising past the alarm level.
    GasLeak,
    /// A flooded underpass: the water level rising past 0.3 m.
    Flood,
    /// A hotlisted vehicle passing ANPR read points.
    HotlistVehicle,
    /// A crowd building at a square beyond its capacity.
    Crowd,
    /// A device going silent (no events at all) for a while.
    DeviceSilent,
}

impl IncidentKind {
    /// A short name: `fire`, `gas_leak`, `flood`, `hotlist_vehicle`, `crowd`, `device_silent`.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Fire => "fire",
            IncidentKind::GasLeak => "gas_leak",
            IncidentKind::Flood => "flood",
            IncidentKind::HotlistVehicle => "hotlist_vehicle",
            IncidentKind::Crowd => "crowd",
            IncidentKind::DeviceSilent => "device_silent",
        }
    }
}

/// One scripted incident: what, when, where, and the sources whose events show it.
/// Serializes to JSON (times in RFC 3339) for a "ground truth" file next to the events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptedIncident {
    /// What happens.
    pub kind: IncidentKind,
    /// When it starts.
    pub time: DateTime<Utc>,
    /// When it is over: a silent device speaks again, a hazard is back to normal, a
    /// hotlisted vehicle has arrived (an estimate).
    pub until: DateTime<Utc>,
    /// Where: the origin device, or the hotlisted vehicle's starting point.
    pub lon: f64,
    /// Where (latitude).
    pub lat: f64,
    /// The zone involved (underpass, square), if any.
    pub zone: Option<String>,
    /// The sources whose events show the incident: the origin device first, then
    /// neighbours; for a hotlisted vehicle the read points on its way, in order.
    pub sources: Vec<String>,
    /// The plate, for a hotlisted vehicle.
    pub plate: Option<String>,
}

/// The kind of a simulated vehicle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VehicleClass {
    /// A hazardous-goods tanker (regulated).
    Hazmat,
    /// A heavy truck (regulated).
    Heavy,
    /// A school bus (regulated).
    SchoolBus,
    /// A police patrol car.
    Patrol,
    /// A private car (no GPS; only seen by read points).
    Car,
}

impl VehicleClass {
    /// The value of the `class` attribute: `hazmat`, `heavy`, `school_bus`, `patrol`, `car`.
    pub fn as_str(self) -> &'static str {
        match self {
            VehicleClass::Hazmat => "hazmat",
            VehicleClass::Heavy => "heavy",
            VehicleClass::SchoolBus => "school_bus",
            VehicleClass::Patrol => "patrol",
            VehicleClass::Car => "car",
        }
    }

    fn regulated(self) -> bool {
        matches!(
            self,
            VehicleClass::Hazmat | VehicleClass::Heavy | VehicleClass::SchoolBus
        )
    }
}

/// A GPS-reporting vehicle and the behaviour the simulator gives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VehicleProfile {
    /// The `source` of its events, e.g. `hazmat-0003`.
    pub id: String,
    /// Its plate.
    pub plate: String,
    /// Its class.
    pub class: VehicleClass,
    /// The corridor zone it must keep to, if any (also its `route` attribute).
    pub route: Option<String>,
    /// Drives well above the limit on fast roads from time to time.
    pub speeder: bool,
    /// Leaves its corridor for a detour: on its first trip and on about a third of the rest.
    pub deviator: bool,
    /// Never takes a 20-minute rest, so it drives more than 4 h without one.
    pub skips_rest: bool,
    /// Seconds between GPS fixes while driving.
    pub fix_interval_s: f64,
}

/// How much the simulator runs; [`SimConfig::for_city`] scales it with the city.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Vehicles that report GPS (hazmat, heavy, school bus, patrol).
    pub gps_vehicles: usize,
    /// Cars seen only by ANPR read points.
    pub background_cars: usize,
    /// Seconds between heartbeats of a device.
    pub heartbeat_interval_s: u32,
    /// Share of devices that go silent in each incident cycle (at least two do).
    pub silent_fraction: f64,
}

impl SimConfig {
    /// About one GPS vehicle per three grids (40 in a small city, about 1,000 in a large
    /// one) and twice as many background cars.
    pub fn for_city(city: &City) -> SimConfig {
        let gps = (city.grids.len() / 3).clamp(20, 1500);
        SimConfig {
            gps_vehicles: gps,
            background_cars: 2 * gps,
            heartbeat_interval_s: 300,
            silent_fraction: 0.01,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Internal state

#[derive(Debug, Clone, Copy, PartialEq)]
enum DevKind {
    Smoke,
    Gas,
    Water,
    Door,
    Camera,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum EpisodeKind {
    FireOrigin,
    FireNearby { delay_s: f64 },
    GasOrigin { peak: f64 },
    GasNearby { peak: f64 },
    Flood { peak: f64 },
    Crowd { extra: f64 },
}

#[derive(Debug, Clone, Copy)]
struct Episode {
    kind: EpisodeKind,
    start: i64,
    /// Readings come fast until this time.
    fast_until: i64,
    /// The episode is over (values back to normal) at this time.
    end: i64,
}

struct DevState {
    id: String,
    kind: DevKind,
    lon: f64,
    lat: f64,
    next_hb: i64,
    next_read: i64,
    battery: f64,
    drain: f64,
    rssi: f64,
    silent: Option<(i64, i64)>,
    episode: Option<Episode>,
    baseline: f64,
    temp_base: f64,
    door_open: bool,
    /// Crowd cameras: the normal count scale and the number of cameras at the square.
    crowd_scale: f64,
    wake: i64,
    last_arrival: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    Light,
    Dwell,
    Rest,
    Hidden,
}

#[derive(Debug, Clone, Copy)]
enum Mission {
    Shuttle { corridor: usize, forward: bool },
    Roam { home: u32, radius_m: f64 },
    Through,
}

struct Vehicle {
    id: String,
    plate: String,
    class: VehicleClass,
    color: &'static str,
    vtype: &'static str,
    route_zone: Option<String>,
    gps: bool,
    hotlist: bool,
    fix_ms: i64,
    next_fix: i64,
    plan: Vec<u32>,
    step: usize,
    arc: Option<u32>,
    arc_from: i64,
    arc_to: i64,
    speed_kmh: f64,
    heading: f64,
    node: u32,
    stop: Option<(Stop, i64, i64)>,
    drive_since: i64,
    rest_after: i64,
    speeder: bool,
    deviator: bool,
    fatigued: bool,
    mission: Mission,
    trips: u32,
    parked: bool,
    wake: i64,
    last_arrival: i64,
}

struct Corridor {
    zone: String,
    class: VehicleClass,
    there: Route,
    back: Route,
    /// Nodes 500–1,500 m off the corridor, for detours.
    detours: Vec<u32>,
}

struct World {
    graph: RoadGraph,
    component: Vec<u32>,
    anpr_at: Vec<Vec<u32>>,
    corridors: Vec<Corridor>,
    /// Devices by kind, for choosing incident locations.
    smoke: Vec<u32>,
    gas: Vec<u32>,
    /// Water-level devices with their underpass zone (if in one).
    water: Vec<(u32, Option<String>)>,
    /// Squares: zone id, capacity, cameras.
    squares: Vec<(String, f64, Vec<u32>)>,
    anpr_nodes: Vec<u32>,
}

struct Pending {
    arrival: i64,
    seq: u64,
    event: Event,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.arrival, self.seq) == (other.arrival, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.arrival, self.seq).cmp(&(other.arrival, other.seq))
    }
}

/// Events on their way: numbered, delayed, and released in arrival order.
struct Outbox {
    seed: u64,
    start: DateTime<Utc>,
    seq: u64,
    pending: BinaryHeap<Reverse<Pending>>,
}

impl Outbox {
    fn time(&self, t: i64) -> DateTime<Utc> {
        self.start + TimeDelta::milliseconds(t)
    }

    fn send(&mut self, rng: &mut ChaCha8Rng, t: i64, last_arrival: &mut i64, mut event: Event) {
        let u: f64 = rng.random();
        let delay = if u < 0.7 {
            rng.random_range(0..300)
        } else if u < 0.95 {
            rng.random_range(300..1500)
        } else {
            rng.random_range(1500..MAX_DELIVERY_DELAY_MS)
        };
        let arrival = (t + delay).max(*last_arrival);
        *last_arrival = arrival;
        event.id = format!("sim-{}-{}", self.seed, self.seq);
        self.pending.push(Reverse(Pending {
            arrival,
            seq: self.seq,
            event,
        }));
        self.seq += 1;
    }
}

const TAG_DIRECTOR: u8 = 0;
const TAG_VEHICLE: u8 = 1;
const TAG_DEVICE: u8 = 2;

/// Generates the events of a city, deterministically for a seed and start time.
///
/// Build it with [`Simulator::new`], then call [`Simulator::next_until`] with increasing
/// times (for a live feed, the wall clock; for a file, steps up to the end) and
/// [`Simulator::flush`] at the end of a finite run. See the module docs for what is
/// simulated.
pub struct Simulator {
    start: DateTime<Utc>,
    rng: ChaCha8Rng,
    world: World,
    vehicles: Vec<Vehicle>,
    devices: Vec<DevState>,
    out: Outbox,
    queue: BinaryHeap<Reverse<(i64, u8, u32)>>,
    incidents: Vec<ScriptedIncident>,
    profiles: Vec<VehicleProfile>,
    config: SimConfig,
}

fn r6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

fn smooth(x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

/// 0 before `a` seconds, 1 after `b`, smooth in between.
fn ramp(tau: f64, a: f64, b: f64) -> f64 {
    smooth((tau - a) / (b - a))
}

/// 1 before `a` seconds, 0 after `b`.
fn fade(tau: f64, a: f64, b: f64) -> f64 {
    1.0 - ramp(tau, a, b)
}

const PLATE_LETTERS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";

fn plate_char(rng: &mut ChaCha8Rng) -> char {
    if rng.random_bool(0.7) {
        char::from(b'0' + rng.random_range(0..10u8))
    } else {
        char::from(PLATE_LETTERS[rng.random_range(0..PLATE_LETTERS.len())])
    }
}

/// A plate, its colour and the vehicle type for a class.
fn new_plate(rng: &mut ChaCha8Rng, class: VehicleClass) -> (String, &'static str, &'static str) {
    loop {
        let (plate, color, vtype) = match class {
            VehicleClass::Patrol => {
                let digits: String = (0..4)
                    .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                    .collect();
                (format!("浙B{digits}警"), "white", "car")
            }
            VehicleClass::Car if rng.random_bool(0.15) => {
                let rest: String = (0..5)
                    .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                    .collect();
                let prefix = if rng.random_bool(0.9) { "浙B" } else { "浙A" };
                (format!("{prefix}D{rest}"), "green", "car")
            }
            _ => {
                let prefix = if rng.random_bool(if class == VehicleClass::Car {
                    0.88
                } else {
                    0.7
                }) {
                    "浙B"
                } else {
                    ["浙A", "沪A", "苏E", "皖A", "浙D"][rng.random_range(0..5)]
                };
                let body: String = (0..5).map(|_| plate_char(rng)).collect();
                let (color, vtype) = match class {
                    VehicleClass::Hazmat => ("yellow", "tanker"),
                    VehicleClass::Heavy => ("yellow", "truck"),
                    VehicleClass::SchoolBus => ("yellow", "bus"),
                    _ => ("blue", ["car", "car", "suv", "van"][rng.random_range(0..4)]),
                };
                (format!("{prefix}{body}"), color, vtype)
            }
        };
        if !HOTLIST_PLATES.contains(&plate.as_str()) {
            return (plate, color, vtype);
        }
    }
}

/// A plausible misreading: one character of the plate body replaced.
fn misread(rng: &mut ChaCha8Rng, plate: &str) -> String {
    let chars: Vec<char> = plate.chars().collect();
    if chars.len() < 4 {
        return plate.to_string();
    }
    let k = rng.random_range(2..chars.len());
    let mut out = chars.clone();
    out[k] = plate_char(rng);
    out.into_iter().collect()
}

fn compass(heading: f64) -> &'static str {
    match ((heading.rem_euclid(360.0) + 45.0) / 90.0) as u32 % 4 {
        0 => "N",
        1 => "E",
        2 => "S",
        _ => "W",
    }
}

impl Simulator {
    /// A simulator for a city with the configuration [`SimConfig::for_city`].
    pub fn new(city: &City, seed: u64, start: DateTime<Utc>) -> Simulator {
        Simulator::with_config(city, seed, start, SimConfig::for_city(city))
    }

    /// A simulator with an explicit configuration.
    pub fn with_config(
        city: &City,
        seed: u64,
        start: DateTime<Utc>,
        config: SimConfig,
    ) -> Simulator {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5157_4152_445f_5349);
        let world = build_world(city);
        let mut sim = Simulator {
            start,
            rng: ChaCha8Rng::seed_from_u64(0),
            world,
            vehicles: Vec::new(),
            devices: Vec::new(),
            out: Outbox {
                seed,
                start,
                seq: 0,
                pending: BinaryHeap::new(),
            },
            queue: BinaryHeap::new(),
            incidents: Vec::new(),
            profiles: Vec::new(),
            config,
        };
        sim.devices = init_devices(city, &sim.world, &sim.config, &mut rng);
        for (i, d) in sim.devices.iter().enumerate() {
            sim.queue.push(Reverse((d.wake, TAG_DEVICE, i as u32)));
        }
        sim.rng = rng;
        sim.init_vehicles();
        sim.run_director(0);
        sim
    }

    /// The scripted incidents planned so far (the current incident cycle and those before
    /// it), in order of planning.
    pub fn incidents(&self) -> &[ScriptedIncident] {
        &self.incidents
    }

    /// The GPS-reporting vehicles and their behaviour.
    pub fn vehicles(&self) -> &[VehicleProfile] {
        &self.profiles
    }

    /// The start time of the simulation.
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// Runs the simulation up to `until` and returns the events that have arrived by then,
    /// in arrival order. Events whose time is before `until` but that are still on their
    /// way come with a later call (or [`Simulator::flush`]).
    pub fn next_until(&mut self, until: DateTime<Utc>) -> Vec<Event> {
        let until_ms = (until - self.start).num_milliseconds();
        while let Some(&Reverse((t, tag, idx))) = self.queue.peek() {
            if t > until_ms {
                break;
            }
            self.queue.pop();
            self.dispatch(t, tag, idx);
        }
        let mut out = Vec::new();
        while let Some(Reverse(p)) = self.out.pending.peek() {
            if p.arrival > until_ms {
                break;
            }
            let Reverse(p) = self.out.pending.pop().expect("peeked");
            out.push(p.event);
        }
        out
    }

    /// Hands out every event still on its way (all have times up to the last `until`), in
    /// arrival order: the end of a finite run.
    pub fn flush(&mut self) -> Vec<Event> {
        let mut out = Vec::with_capacity(self.out.pending.len());
        while let Some(Reverse(p)) = self.out.pending.pop() {
            out.push(p.event);
        }
        out
    }

    fn dispatch(&mut self, t: i64, tag: u8, idx: u32) {
        match tag {
            TAG_DIRECTOR => self.run_director(t),
            TAG_VEHICLE => {
                let v = &mut self.vehicles[idx as usize];
                if v.wake != t {
                    return;
                }
                if let Some(next) = step_vehicle(
                    v,
                    t,
                    &self.world,
                    &mut self.devices,
                    &mut self.out,
                    &mut self.rng,
                ) {
                    v.wake = next;
                    self.queue.push(Reverse((next, TAG_VEHICLE, idx)));
                }
            }
            _ => {
                let d = &mut self.devices[idx as usize];
                if d.wake != t {
                    return;
                }
                let next = step_device(d, t, &self.config, &mut self.out, &mut self.rng);
                d.wake = next;
                self.queue.push(Reverse((next, TAG_DEVICE, idx)));
            }
        }
    }

    fn reschedule_device(&mut self, i: u32, at: i64) {
        let d = &mut self.devices[i as usize];
        if at < d.wake {
            d.wake = at;
            self.queue.push(Reverse((at, TAG_DEVICE, i)));
        }
    }

    fn init_vehicles(&mut self) {
        if self.world.component.is_empty() {
            // No roads, no traffic.
            return;
        }
        let n = self.config.gps_vehicles;
        let rng = &mut self.rng;
        let world = &self.world;
        let hazmat_corridors: Vec<usize> = (0..world.corridors.len())
            .filter(|&c| world.corridors[c].class == VehicleClass::Hazmat)
            .collect();
        let bus_corridors: Vec<usize> = (0..world.corridors.len())
            .filter(|&c| world.corridors[c].class == VehicleClass::SchoolBus)
            .collect();
        let mut counts = [0usize; 5];
        for k in 0..n + self.config.background_cars {
            let class = if k >= n {
                VehicleClass::Car
            } else {
                // 22 % hazmat, 33 % heavy, 15 % school bus, 30 % patrol, interleaved.
                match (k * 100 / n.max(1)) % 100 {
                    0..=21 => VehicleClass::Hazmat,
                    22..=54 => VehicleClass::Heavy,
                    55..=69 => VehicleClass::SchoolBus,
                    _ => VehicleClass::Patrol,
                }
            };
            let ci = class as usize;
            counts[ci] += 1;
            let nth = counts[ci];
            let id = match class {
                VehicleClass::Hazmat => format!("hazmat-{nth:04}"),
                VehicleClass::Heavy => format!("truck-{nth:04}"),
                VehicleClass::SchoolBus => format!("bus-{nth:04}"),
                VehicleClass::Patrol => format!("patrol-{nth:04}"),
                VehicleClass::Car => format!("car-{nth:05}"),
            };
            let (plate, color, vtype) = new_plate(rng, class);
            // The first hazmat tankers get one behaviour each, so every city shows them.
            let first = class == VehicleClass::Hazmat && nth <= 3;
            let speeder =
                class != VehicleClass::Car && ((first && nth == 1) || rng.random_bool(0.12));
            let deviator = matches!(class, VehicleClass::Hazmat | VehicleClass::SchoolBus)
                && ((first && nth == 2) || rng.random_bool(0.15));
            let fatigued = matches!(class, VehicleClass::Hazmat | VehicleClass::Heavy)
                && ((first && nth == 3) || rng.random_bool(0.08));
            let fix_ms = match class {
                VehicleClass::Hazmat => [1000, 2000][rng.random_range(0..2)],
                VehicleClass::Heavy => [2000, 3000, 5000][rng.random_range(0..3)],
                VehicleClass::SchoolBus => [2000, 3000][rng.random_range(0..2)],
                VehicleClass::Patrol => [1000, 2000, 5000][rng.random_range(0..3)],
                VehicleClass::Car => 0,
            };
            let corridor = match class {
                VehicleClass::Hazmat if !hazmat_corridors.is_empty() => {
                    Some(hazmat_corridors[(nth - 1) % hazmat_corridors.len()])
                }
                VehicleClass::SchoolBus if !bus_corridors.is_empty() => {
                    Some(bus_corridors[(nth - 1) % bus_corridors.len()])
                }
                _ => None,
            };
            let comp = &world.component;
            let random_node = |rng: &mut ChaCha8Rng| comp[rng.random_range(0..comp.len())];
            let (mission, node, plan) = match corridor {
                Some(c) => {
                    let cor = &world.corridors[c];
                    // Deviators start at the corridor's start so their first (detour) trip
                    // comes early; the others anywhere along it.
                    let k0 = if deviator {
                        0
                    } else {
                        rng.random_range(0..cor.there.arcs.len())
                    };
                    let node = world.graph.arc(cor.there.arcs[k0]).from;
                    let plan = if deviator {
                        detour(world, c, true, node, rng).unwrap_or_else(|| cor.there.arcs.clone())
                    } else {
                        cor.there.arcs[k0..].to_vec()
                    };
                    (
                        Mission::Shuttle {
                            corridor: c,
                            forward: true,
                        },
                        node,
                        plan,
                    )
                }
                None => {
                    let radius_m = match class {
                        VehicleClass::Patrol => 2500.0,
                        VehicleClass::Car => 6000.0,
                        _ => f64::INFINITY,
                    };
                    let home = random_node(rng);
                    (Mission::Roam { home, radius_m }, home, Vec::new())
                }
            };
            let gps = class != VehicleClass::Car;
            let depart = rng.random_range(0..60 * SEC);
            let mut v = Vehicle {
                id: id.clone(),
                plate: plate.clone(),
                class,
                color,
                vtype,
                route_zone: corridor.map(|c| world.corridors[c].zone.clone()),
                gps,
                hotlist: false,
                fix_ms,
                next_fix: if gps {
                    rng.random_range(0..fix_ms)
                } else {
                    i64::MAX
                },
                plan,
                step: 0,
                arc: None,
                arc_from: 0,
                arc_to: 0,
                speed_kmh: 0.0,
                heading: 0.0,
                node,
                stop: Some((Stop::Light, 0, depart)),
                drive_since: 0,
                rest_after: rng.random_range(2 * HOUR..(7 * HOUR) / 2),
                speeder,
                deviator,
                fatigued,
                mission,
                trips: 0,
                parked: false,
                wake: 0,
                last_arrival: i64::MIN,
            };
            v.wake = if gps { v.next_fix.min(depart) } else { depart };
            if gps {
                self.profiles.push(VehicleProfile {
                    id,
                    plate,
                    class,
                    route: v.route_zone.clone(),
                    speeder,
                    deviator,
                    skips_rest: fatigued,
                    fix_interval_s: fix_ms as f64 / 1000.0,
                });
            }
            self.queue
                .push(Reverse((v.wake, TAG_VEHICLE, self.vehicles.len() as u32)));
            self.vehicles.push(v);
        }
    }

    /// Plans the incidents of the cycle starting at `t` and wakes again at the next cycle.
    fn run_director(&mut self, t: i64) {
        let cycle = (t / CYCLE_MS) as usize;
        self.plan_hotlist(t + 8 * MIN, cycle);
        self.plan_fire(t + 12 * MIN);
        self.plan_flood(t + 15 * MIN);
        self.plan_gas(t + 20 * MIN);
        self.plan_crowd(t + 25 * MIN);
        self.plan_silence(t);
        self.queue.push(Reverse((t + CYCLE_MS, TAG_DIRECTOR, 0)));
    }

    /// Records an incident of `kind` between `start` and `end` at a point.
    fn incident(
        &mut self,
        kind: IncidentKind,
        (start, end): (i64, i64),
        at: Point,
    ) -> &mut ScriptedIncident {
        self.incidents.push(ScriptedIncident {
            kind,
            time: self.out.time(start),
            until: self.out.time(end),
            lon: at.0,
            lat: at.1,
            zone: None,
            sources: Vec::new(),
            plate: None,
        });
        self.incidents.last_mut().expect("just pushed")
    }

    fn free(&self, i: u32, from: i64) -> bool {
        let d = &self.devices[i as usize];
        d.episode.is_none_or(|e| e.end < from) && d.silent.is_none_or(|(_, until)| until < from)
    }

    fn give_episode(&mut self, i: u32, kind: EpisodeKind, start: i64, fast_for: i64, end: i64) {
        let d = &mut self.devices[i as usize];
        d.episode = Some(Episode {
            kind,
            start,
            fast_until: start + fast_for,
            end,
        });
        d.next_read = d.next_read.min(start);
        self.reschedule_device(i, start);
    }

    /// Up to `max` devices from `pool` within `radius_m` of device `origin`, nearest first.
    fn neighbours(
        &self,
        pool: &[u32],
        origin: u32,
        radius_m: f64,
        max: usize,
        from: i64,
    ) -> Vec<u32> {
        let o = &self.devices[origin as usize];
        let mut near: Vec<(f64, u32)> = pool
            .iter()
            .filter(|&&j| j != origin && self.free(j, from))
            .map(|&j| {
                let d = &self.devices[j as usize];
                (haversine_m((o.lon, o.lat), (d.lon, d.lat)), j)
            })
            .filter(|(dist, _)| *dist <= radius_m)
            .collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        near.into_iter().take(max).map(|(_, j)| j).collect()
    }

    fn pick_free(&mut self, pool: &[u32], from: i64) -> Option<u32> {
        let free: Vec<u32> = pool
            .iter()
            .copied()
            .filter(|&i| self.free(i, from))
            .collect();
        if free.is_empty() {
            return None;
        }
        Some(free[self.rng.random_range(0..free.len())])
    }

    fn plan_fire(&mut self, start: i64) {
        let pool = self.world.smoke.clone();
        // Prefer an origin with neighbours, so the spread is visible.
        let mut origin = None;
        for _ in 0..50 {
            let Some(o) = self.pick_free(&pool, start) else {
                break;
            };
            if !self.neighbours(&pool, o, 400.0, 1, start).is_empty() {
                origin = Some(o);
                break;
            }
            origin.get_or_insert(o);
        }
        let Some(o) = origin else { return };
        let near = self.neighbours(&pool, o, 400.0, 3, start);
        let end = start + 70 * MIN;
        self.give_episode(o, EpisodeKind::FireOrigin, start, 40 * MIN, end);
        for &j in &near {
            let delay_s = self.rng.random_range(60.0..150.0);
            self.give_episode(j, EpisodeKind::FireNearby { delay_s }, start, 40 * MIN, end);
        }
        self.sensor_incident(IncidentKind::Fire, o, near, (start, end));
    }

    fn plan_gas(&mut self, start: i64) {
        let pool = self.world.gas.clone();
        let Some(o) = self.pick_free(&pool, start) else {
            return;
        };
        let near = self.neighbours(&pool, o, 300.0, 2, start);
        let end = start + 75 * MIN;
        let peak = self.rng.random_range(35.0..60.0);
        self.give_episode(o, EpisodeKind::GasOrigin { peak }, start, 45 * MIN, end);
        for &j in &near {
            let peak = self.rng.random_range(6.0..14.0);
            self.give_episode(j, EpisodeKind::GasNearby { peak }, start, 45 * MIN, end);
        }
        self.sensor_incident(IncidentKind::GasLeak, o, near, (start, end));
    }

    /// Records an incident at sensor `origin` whose sources are it and its `near` neighbours.
    fn sensor_incident(
        &mut self,
        kind: IncidentKind,
        origin: u32,
        near: Vec<u32>,
        window: (i64, i64),
    ) {
        let d = &self.devices[origin as usize];
        let at = (d.lon, d.lat);
        let sources = std::iter::once(origin)
            .chain(near)
            .map(|i| self.devices[i as usize].id.clone())
            .collect();
        self.incident(kind, window, at).sources = sources;
    }

    fn plan_flood(&mut self, start: i64) {
        let in_underpass: Vec<u32> = self
            .world
            .water
            .iter()
            .filter(|(_, z)| z.is_some())
            .map(|(i, _)| *i)
            .collect();
        let pool = if in_underpass.is_empty() {
            self.world.water.iter().map(|(i, _)| *i).collect()
        } else {
            in_underpass
        };
        let Some(o) = self.pick_free(&pool, start) else {
            return;
        };
        let peak = self.rng.random_range(0.55..0.8);
        let end = start + 95 * MIN;
        self.give_episode(o, EpisodeKind::Flood { peak }, start, 95 * MIN, end);
        let zone = self
            .world
            .water
            .iter()
            .find(|(i, _)| *i == o)
            .and_then(|(_, z)| z.clone());
        let d = &self.devices[o as usize];
        let (at, id) = ((d.lon, d.lat), d.id.clone());
        let incident = self.incident(IncidentKind::Flood, (start, end), at);
        incident.zone = zone;
        incident.sources = vec![id];
    }

    fn plan_crowd(&mut self, start: i64) {
        let candidates: Vec<usize> = (0..self.world.squares.len())
            .filter(|&s| {
                let cams = &self.world.squares[s].2;
                !cams.is_empty() && cams.iter().all(|&c| self.free(c, start))
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let s = candidates[self.rng.random_range(0..candidates.len())];
        let (zone, capacity, cams) = self.world.squares[s].clone();
        let end = start + 65 * MIN;
        let extra = capacity * self.rng.random_range(1.25..1.5) / cams.len() as f64;
        for &c in &cams {
            self.give_episode(c, EpisodeKind::Crowd { extra }, start, 65 * MIN, end);
        }
        let d = &self.devices[cams[0] as usize];
        let at = (d.lon, d.lat);
        let sources = cams
            .iter()
            .map(|&i| self.devices[i as usize].id.clone())
            .collect();
        let incident = self.incident(IncidentKind::Crowd, (start, end), at);
        incident.zone = Some(zone);
        incident.sources = sources;
    }

    fn plan_silence(&mut self, cycle_start: i64) {
        let n = ((self.devices.len() as f64 * self.config.silent_fraction).round() as usize).max(2);
        // The read points the hotlisted vehicle will pass stay on, so it is seen.
        let keep: Vec<&str> = self
            .incidents
            .iter()
            .rev()
            .find(|i| i.kind == IncidentKind::HotlistVehicle)
            .map(|i| i.sources.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let pool: Vec<u32> = (0..self.devices.len() as u32)
            .filter(|&i| !keep.contains(&self.devices[i as usize].id.as_str()))
            .collect();
        for _ in 0..n {
            let from = cycle_start + self.rng.random_range(5 * MIN..40 * MIN);
            let until = from + self.rng.random_range(2 * HOUR..3 * HOUR);
            let Some(i) = self.pick_free(&pool, cycle_start) else {
                return;
            };
            let d = &mut self.devices[i as usize];
            d.silent = Some((from, until));
            let (at, id) = ((d.lon, d.lat), d.id.clone());
            self.incident(IncidentKind::DeviceSilent, (from, until), at)
                .sources = vec![id];
        }
    }

    fn plan_hotlist(&mut self, start: i64, cycle: usize) {
        let nodes = &self.world.anpr_nodes;
        if nodes.len() < 2 {
            return;
        }
        // A far pair of read points whose fastest route passes several others.
        let mut best: Option<(usize, Route, Vec<u32>)> = None;
        for _ in 0..30 {
            let a = nodes[self.rng.random_range(0..nodes.len())];
            let b = nodes[self.rng.random_range(0..nodes.len())];
            if a == b {
                continue;
            }
            let Some(route) = self.world.graph.shortest_path(a, b) else {
                continue;
            };
            let mut passed: Vec<u32> = vec![a];
            passed.extend(route.arcs.iter().map(|&arc| self.world.graph.arc(arc).to));
            passed.retain(|n| !self.world.anpr_at[*n as usize].is_empty());
            if best.as_ref().is_none_or(|(n, _, _)| passed.len() > *n) {
                best = Some((passed.len(), route, passed));
            }
            if best.as_ref().is_some_and(|(n, _, _)| *n >= 4) {
                break;
            }
        }
        let Some((_, route, passed)) = best else {
            return;
        };
        let first = self.world.graph.arc(route.arcs[0]).from;
        let plate = HOTLIST_PLATES[cycle % HOTLIST_PLATES.len()].to_string();
        // Reads at the departure node happen only on arrival, so list the others.
        let sources: Vec<String> = passed
            .iter()
            .filter(|&&n| n != first)
            .flat_map(|&n| {
                self.world.anpr_at[n as usize]
                    .iter()
                    .map(|&d| self.devices[d as usize].id.clone())
            })
            .collect();
        let travel = (route.time_s / 0.8 * 1000.0) as i64;
        let at = self.world.graph.node(first);
        let v = Vehicle {
            id: format!("hotlist-{}", cycle + 1),
            plate: plate.clone(),
            class: VehicleClass::Car,
            color: "blue",
            vtype: "suv",
            route_zone: None,
            gps: false,
            hotlist: true,
            fix_ms: 0,
            next_fix: i64::MAX,
            plan: route.arcs,
            step: 0,
            arc: None,
            arc_from: 0,
            arc_to: 0,
            speed_kmh: 0.0,
            heading: 0.0,
            node: first,
            stop: Some((Stop::Hidden, start, start)),
            drive_since: start,
            rest_after: i64::MAX,
            speeder: false,
            deviator: false,
            fatigued: false,
            mission: Mission::Through,
            trips: 0,
            parked: false,
            wake: start,
            last_arrival: i64::MIN,
        };
        self.queue
            .push(Reverse((start, TAG_VEHICLE, self.vehicles.len() as u32)));
        self.vehicles.push(v);
        let incident = self.incident(IncidentKind::HotlistVehicle, (start, start + travel), at);
        incident.sources = sources;
        incident.plate = Some(plate);
    }
}

fn build_world(city: &City) -> World {
    let graph = RoadGraph::from_roads(&city.roads);
    let component = graph.largest_component();
    let mut anpr_at: Vec<Vec<u32>> = vec![Vec::new(); graph.node_count()];
    let mut smoke = Vec::new();
    let mut gas = Vec::new();
    let mut water = Vec::new();
    let mut squares: Vec<(String, f64, Vec<u32>)> = Vec::new();
    for (i, d) in city.devices.iter().enumerate() {
        let i = i as u32;
        match d.kind.as_str() {
            "anpr" => {
                let node = graph.node_at((d.lon, d.lat)).or_else(|| {
                    graph
                        .nearest_node((d.lon, d.lat))
                        .filter(|(_, dist)| *dist <= 30.0)
                        .map(|(n, _)| n)
                });
                if let Some(n) = node {
                    anpr_at[n as usize].push(i);
                }
            }
            "smoke" => smoke.push(i),
            "gas" => gas.push(i),
            "water_level" => {
                let zone = city
                    .zones_at(d.lon, d.lat)
                    .into_iter()
                    .find(|z| z.kind == "underpass")
                    .map(|z| z.id.clone());
                water.push((i, zone));
            }
            "crowd_camera" => {
                if let Some(z) = city
                    .zones_at(d.lon, d.lat)
                    .into_iter()
                    .find(|z| z.kind == "square")
                {
                    match squares.iter_mut().find(|(id, _, _)| *id == z.id) {
                        Some(s) => s.2.push(i),
                        None => {
                            let capacity = z
                                .properties
                                .get("capacity")
                                .and_then(|v| v.as_f64())
                                .unwrap_or(2000.0);
                            squares.push((z.id.clone(), capacity, vec![i]));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let anpr_nodes: Vec<u32> = (0..graph.node_count() as u32)
        .filter(|&n| !anpr_at[n as usize].is_empty())
        .collect();
    let mut corridors = Vec::new();
    let in_component = {
        let mut v = vec![false; graph.node_count()];
        for &n in &component {
            v[n as usize] = true;
        }
        v
    };
    for z in city.zones.iter().filter(|z| z.kind == "corridor") {
        let Geometry::LineString(line) = &z.geometry else {
            continue;
        };
        let Some(there) = graph.route_along(line, 30.0) else {
            continue;
        };
        let Some(back) = graph.reversed(&there) else {
            continue;
        };
        if there.arcs.is_empty() || !in_component[graph.arc(there.arcs[0]).from as usize] {
            continue;
        }
        let class = match z.properties.get("vehicle_class").and_then(|v| v.as_str()) {
            Some("school_bus") => VehicleClass::SchoolBus,
            _ => VehicleClass::Hazmat,
        };
        let detours: Vec<u32> = component
            .iter()
            .copied()
            .filter(|&n| (500.0..1500.0).contains(&polyline_distance_m(graph.node(n), line)))
            .collect();
        corridors.push(Corridor {
            zone: z.id.clone(),
            class,
            there,
            back,
            detours,
        });
    }
    World {
        graph,
        component,
        anpr_at,
        corridors,
        smoke,
        gas,
        water,
        squares,
        anpr_nodes,
    }
}

fn init_devices(
    city: &City,
    world: &World,
    config: &SimConfig,
    rng: &mut ChaCha8Rng,
) -> Vec<DevState> {
    let hb = config.heartbeat_interval_s as i64 * SEC;
    let mut cams_at: Vec<f64> = vec![0.0; city.devices.len()];
    for (_, capacity, cams) in &world.squares {
        for &c in cams {
            cams_at[c as usize] = capacity * 0.08 / cams.len() as f64;
        }
    }
    city.devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let kind = match d.kind.as_str() {
                "smoke" => DevKind::Smoke,
                "gas" => DevKind::Gas,
                "water_level" => DevKind::Water,
                "door" => DevKind::Door,
                "crowd_camera" => DevKind::Camera,
                _ => DevKind::Other,
            };
            let next_read = match kind {
                DevKind::Smoke => rng.random_range(0..15 * MIN),
                DevKind::Gas => rng.random_range(0..10 * MIN),
                DevKind::Water => rng.random_range(0..5 * MIN),
                DevKind::Camera => rng.random_range(0..MIN),
                DevKind::Door => rng.random_range(0..90 * MIN),
                DevKind::Other => i64::MAX,
            };
            let next_hb = rng.random_range(0..hb);
            let battery = if rng.random_bool(0.03) {
                rng.random_range(5.0..20.0)
            } else {
                rng.random_range(35.0..100.0)
            };
            DevState {
                id: d.id.clone(),
                kind,
                lon: d.lon,
                lat: d.lat,
                next_hb,
                next_read,
                battery,
                drain: rng.random_range(0.002..0.01),
                rssi: rng.random_range(-105.0..-55.0),
                silent: None,
                episode: None,
                baseline: match kind {
                    DevKind::Smoke => rng.random_range(0.0..0.2),
                    DevKind::Gas => rng.random_range(0.0..2.0),
                    DevKind::Water => rng.random_range(0.0..0.04),
                    _ => 0.0,
                },
                temp_base: rng.random_range(18.0..26.0),
                door_open: false,
                crowd_scale: cams_at[i].max(20.0),
                wake: next_hb.min(next_read),
                last_arrival: i64::MIN,
            }
        })
        .collect()
}

/// Local hour of day in Ningbo (UTC+8), fractional.
fn local_hour(out: &Outbox, t: i64) -> f64 {
    let time = out.time(t) + TimeDelta::hours(8);
    time.hour() as f64 + time.minute() as f64 / 60.0
}

/// Crowd level over the day: quiet at night, busiest in the evening.
fn diurnal(hour: f64) -> f64 {
    if !(6.0..23.0).contains(&hour) {
        return 0.08;
    }
    0.15 + 0.85
        * (std::f64::consts::PI * (hour - 6.0) / 17.0).sin().powf(0.7)
        * if hour > 17.0 { 1.0 } else { 0.8 }
}

fn step_device(
    d: &mut DevState,
    t: i64,
    config: &SimConfig,
    out: &mut Outbox,
    rng: &mut ChaCha8Rng,
) -> i64 {
    let hb = config.heartbeat_interval_s as i64 * SEC;
    if let Some(e) = d.episode {
        if t > e.end {
            d.episode = None;
        }
    }
    let silent = d.silent.is_some_and(|(from, until)| t >= from && t < until);
    if let Some((_, until)) = d.silent {
        if t >= until {
            // Back with a new battery.
            d.silent = None;
            d.battery = 100.0;
        }
    }
    if t >= d.next_hb {
        if !silent {
            d.battery = (d.battery - d.drain).max(0.0);
            let event = Event::new(d.id.clone(), "heartbeat", out.time(t))
                .at(d.lon, d.lat)
                .with("battery", round_to(d.battery, 1))
                .with("rssi", (d.rssi + rng.random_range(-3.0..3.0)).round())
                .with("tamper", false);
            out.send(rng, t, &mut d.last_arrival, event);
        }
        d.next_hb = t + hb + rng.random_range(-SEC..SEC);
    }
    if t >= d.next_read {
        let interval = reading(d, t, silent, out, rng);
        d.next_read = t + interval;
        // An episode about to start brings the next reading forward.
        if let Some(e) = d.episode.filter(|e| e.start > t) {
            d.next_read = d.next_read.min(e.start);
        }
    }
    let mut next = d.next_hb.min(d.next_read);
    if let Some((from, until)) = d.silent {
        if t < from {
            next = next.min(from);
        } else if t < until {
            // Nothing to say until the battery is swapped.
            next = until;
        }
    }
    next.max(t + 1)
}

/// Emits one reading (unless silent) and returns the time to the next one.
fn reading(d: &mut DevState, t: i64, silent: bool, out: &mut Outbox, rng: &mut ChaCha8Rng) -> i64 {
    let ep = d.episode.filter(|e| t >= e.start && t <= e.end);
    let fast = ep.is_some_and(|e| t < e.fast_until);
    let tau = ep.map_or(0.0, |e| (t - e.start) as f64 / 1000.0);
    let time = out.time(t);
    let (event, interval) = match d.kind {
        DevKind::Smoke => {
            let (mut value, mut temp) = (
                d.baseline + rng.random_range(0.0..0.1),
                d.temp_base + rng.random_range(-0.4..0.4),
            );
            match ep.map(|e| e.kind) {
                Some(EpisodeKind::FireOrigin) => {
                    let f = fade(tau, 1500.0, 2100.0);
                    value += 14.0 * ramp(tau, 0.0, 150.0) * f;
                    temp += 75.0 * ramp(tau, 30.0, 330.0) * f;
                }
                Some(EpisodeKind::FireNearby { delay_s }) => {
                    let f = fade(tau, 1500.0, 2100.0);
                    value += 6.0 * ramp(tau, delay_s, delay_s + 240.0) * f;
                    temp += 70.0 * ramp(tau, delay_s, delay_s + 300.0) * f;
                }
                _ => {}
            }
            let e = Event::new(d.id.clone(), "smoke", time)
                .at(d.lon, d.lat)
                .with("value", round_to(value, 2))
                .with("alarm", value >= 2.5)
                .with("temperature_c", round_to(temp, 1));
            (Some(e), if fast { 30 * SEC } else { 15 * MIN })
        }
        DevKind::Gas => {
            let mut value = d.baseline + rng.random_range(0.0..0.8);
            match ep.map(|e| e.kind) {
                Some(EpisodeKind::GasOrigin { peak }) => {
                    value += peak * ramp(tau, 0.0, 360.0) * fade(tau, 1800.0, 2400.0)
                }
                Some(EpisodeKind::GasNearby { peak }) => {
                    value += peak * ramp(tau, 120.0, 600.0) * fade(tau, 1800.0, 2400.0)
                }
                _ => {}
            }
            let e = Event::new(d.id.clone(), "gas", time)
                .at(d.lon, d.lat)
                .with("value", round_to(value, 1))
                .with("alarm", value >= 20.0)
                .with("gas", "methane");
            (Some(e), if fast { 30 * SEC } else { 10 * MIN })
        }
        DevKind::Water => {
            let mut value = d.baseline + rng.random_range(0.0..0.01);
            if let Some(EpisodeKind::Flood { peak }) = ep.map(|e| e.kind) {
                value += peak * ramp(tau, 0.0, 1800.0) * fade(tau, 3000.0, 5400.0);
            }
            let e = Event::new(d.id.clone(), "water_level", time)
                .at(d.lon, d.lat)
                .with("value", round_to(value, 3));
            (Some(e), if fast { MIN } else { 5 * MIN })
        }
        DevKind::Camera => {
            let mut count =
                d.crowd_scale * diurnal(local_hour(out, t)) * rng.random_range(0.8..1.2);
            if let Some(EpisodeKind::Crowd { extra }) = ep.map(|e| e.kind) {
                count += extra
                    * ramp(tau, 0.0, 1200.0)
                    * fade(tau, 2400.0, 3600.0)
                    * rng.random_range(0.95..1.05);
            }
            let e = Event::new(d.id.clone(), "crowd_count", time)
                .at(d.lon, d.lat)
                .with("count", count.round() as i64);
            (Some(e), MIN)
        }
        DevKind::Door => {
            d.door_open = !d.door_open;
            let e = Event::new(d.id.clone(), "door", time)
                .at(d.lon, d.lat)
                .with("open", d.door_open);
            let next = if d.door_open {
                if rng.random_bool(0.03) {
                    rng.random_range(15 * MIN..45 * MIN)
                } else {
                    rng.random_range(5 * SEC..120 * SEC)
                }
            } else {
                // Exponential gaps with a mean of 40 minutes.
                let u: f64 = rng.random_range(1e-6..1.0);
                ((-u.ln()) * 40.0 * MIN as f64) as i64 + SEC
            };
            (Some(e), next)
        }
        DevKind::Other => (None, i64::MAX / 4),
    };
    if let Some(e) = event {
        if !silent {
            out.send(rng, t, &mut d.last_arrival, e);
        }
    }
    interval
}

/// A detour for corridor `c` from `from` to the far end: via a node well off the corridor.
fn detour(
    world: &World,
    c: usize,
    forward: bool,
    from: u32,
    rng: &mut ChaCha8Rng,
) -> Option<Vec<u32>> {
    let cor = &world.corridors[c];
    if cor.detours.is_empty() {
        return None;
    }
    let target_route = if forward { &cor.there } else { &cor.back };
    let to = world.graph.arc(*target_route.arcs.last()?).to;
    let via = cor.detours[rng.random_range(0..cor.detours.len())];
    let a = world.graph.shortest_path(from, via)?;
    let b = world.graph.shortest_path(via, to)?;
    let mut arcs = a.arcs;
    arcs.extend(b.arcs);
    (!arcs.is_empty()).then_some(arcs)
}

fn class_cap(class: VehicleClass) -> f64 {
    match class {
        VehicleClass::Hazmat => 70.0,
        VehicleClass::Heavy => 80.0,
        VehicleClass::SchoolBus => 60.0,
        VehicleClass::Patrol => 70.0,
        VehicleClass::Car => 90.0,
    }
}

fn start_arc(v: &mut Vehicle, arc: u32, t: i64, world: &World, rng: &mut ChaCha8Rng) {
    let a = world.graph.arc(arc);
    let limit = a.speed_limit_kmh;
    let mut speed = limit.min(class_cap(v.class)) * rng.random_range(0.72..0.97);
    if v.class == VehicleClass::Patrol {
        speed *= 0.85;
    }
    if v.speeder && limit >= 40.0 && rng.random_bool(0.4) {
        speed = limit * rng.random_range(1.12..1.35);
    } else if rng.random_bool(0.12) {
        speed *= rng.random_range(0.35..0.7);
    }
    if v.hotlist {
        speed = limit * 0.85;
    }
    let speed = speed.max(6.0);
    let travel = ((a.length_m / (speed / 3.6)) * 1000.0).round().max(1.0) as i64;
    v.arc = Some(arc);
    v.arc_from = t;
    v.arc_to = t + travel;
    v.speed_kmh = speed;
    v.heading = a.heading;
}

/// Plans the next trip from the vehicle's node; returns the dwell before it.
fn next_trip(v: &mut Vehicle, world: &World, rng: &mut ChaCha8Rng) -> (Stop, i64) {
    v.trips += 1;
    v.step = 0;
    match v.mission {
        Mission::Shuttle { corridor, forward } => {
            let forward = !forward;
            v.mission = Mission::Shuttle { corridor, forward };
            let cor = &world.corridors[corridor];
            let normal = if forward { &cor.there } else { &cor.back };
            let start = world.graph.arc(normal.arcs[0]).from;
            v.plan = if v.node != start {
                // Not at the corridor's end (e.g. a loaded city with odd geometry): go there.
                world
                    .graph
                    .shortest_path(v.node, start)
                    .map(|r| r.arcs)
                    .unwrap_or_default()
            } else if v.deviator && rng.random_bool(0.35) {
                detour(world, corridor, forward, v.node, rng).unwrap_or_else(|| normal.arcs.clone())
            } else {
                normal.arcs.clone()
            };
            let dwell = match v.class {
                VehicleClass::SchoolBus => rng.random_range(MIN..3 * MIN),
                _ if v.fatigued => rng.random_range(3 * MIN..8 * MIN),
                _ => rng.random_range(3 * MIN..15 * MIN),
            };
            (Stop::Dwell, dwell)
        }
        Mission::Roam { home, radius_m } => {
            if v.class == VehicleClass::Car {
                // The car leaves the network; another one enters elsewhere.
                let (plate, color, vtype) = new_plate(rng, VehicleClass::Car);
                v.plate = plate;
                v.color = color;
                v.vtype = vtype;
                v.node = world.component[rng.random_range(0..world.component.len())];
            }
            let home_p = world.graph.node(home);
            let mut dest = v.node;
            for _ in 0..30 {
                let n = world.component[rng.random_range(0..world.component.len())];
                dest = n;
                if n != v.node && haversine_m(world.graph.node(n), home_p) <= radius_m {
                    break;
                }
            }
            v.plan = world
                .graph
                .shortest_path(v.node, dest)
                .map(|r| r.arcs)
                .unwrap_or_default();
            let dwell = match v.class {
                VehicleClass::Car => rng.random_range(SEC..20 * SEC),
                VehicleClass::Patrol => rng.random_range(MIN..6 * MIN),
                _ if v.fatigued => rng.random_range(2 * MIN..8 * MIN),
                _ => rng.random_range(5 * MIN..15 * MIN),
            };
            (
                if v.class == VehicleClass::Car {
                    Stop::Hidden
                } else {
                    Stop::Dwell
                },
                dwell,
            )
        }
        Mission::Through => {
            v.parked = true;
            v.plan.clear();
            (Stop::Hidden, 0)
        }
    }
}

fn vehicle_position(v: &Vehicle, t: i64, world: &World) -> Point {
    match v.arc {
        Some(a) if v.stop.is_none() => {
            let arc = world.graph.arc(a);
            let (p, q) = (world.graph.node(arc.from), world.graph.node(arc.to));
            let f =
                ((t - v.arc_from) as f64 / (v.arc_to - v.arc_from).max(1) as f64).clamp(0.0, 1.0);
            (p.0 + f * (q.0 - p.0), p.1 + f * (q.1 - p.1))
        }
        _ => world.graph.node(v.node),
    }
}

fn plate_reads(
    v: &Vehicle,
    t: i64,
    node: u32,
    world: &World,
    devices: &mut [DevState],
    out: &mut Outbox,
    rng: &mut ChaCha8Rng,
) {
    for &di in &world.anpr_at[node as usize] {
        if !v.hotlist && rng.random_bool(0.05) {
            continue; // missed read
        }
        let (plate, confidence) = if !v.hotlist && rng.random_bool(0.02) {
            (misread(rng, &v.plate), rng.random_range(0.45..0.7))
        } else {
            (v.plate.clone(), rng.random_range(0.86..0.99))
        };
        let d = &mut devices[di as usize];
        if d.silent.is_some_and(|(from, until)| t >= from && t < until) {
            continue;
        }
        let event = Event::new(d.id.clone(), "plate_read", out.time(t))
            .at(d.lon, d.lat)
            .with("plate", plate)
            .with("confidence", round_to(confidence, 2))
            .with("color", v.color)
            .with("vehicle_type", v.vtype)
            .with("lane", rng.random_range(1..=3i64))
            .with("direction", compass(v.heading));
        out.send(rng, t, &mut d.last_arrival, event);
    }
}

/// Advances a vehicle to time `t`, emitting its events; returns its next wake-up.
fn step_vehicle(
    v: &mut Vehicle,
    t: i64,
    world: &World,
    devices: &mut [DevState],
    out: &mut Outbox,
    rng: &mut ChaCha8Rng,
) -> Option<i64> {
    if v.parked {
        return None;
    }
    // Transitions happen exactly at wake-ups, so at most one of these applies per step
    // (plus an immediate departure after an arrival without a stop).
    if let (Some(a), None) = (v.arc, v.stop) {
        if t >= v.arc_to {
            let node = world.graph.arc(a).to;
            v.node = node;
            v.step += 1;
            plate_reads(v, t, node, world, devices, out, rng);
            let driven = t - v.drive_since;
            let regulated = v.class.regulated();
            if v.step >= v.plan.len() {
                let (kind, dwell) = next_trip(v, world, rng);
                let (kind, dwell) =
                    if regulated && !v.fatigued && driven >= v.rest_after && dwell < 20 * MIN {
                        (Stop::Rest, rng.random_range(20 * MIN..35 * MIN))
                    } else {
                        (kind, dwell)
                    };
                v.stop = Some((kind, t, t + dwell));
                if v.parked {
                    return None;
                }
            } else if regulated && !v.fatigued && driven >= v.rest_after {
                v.stop = Some((Stop::Rest, t, t + rng.random_range(20 * MIN..35 * MIN)));
            } else if world.graph.degree(node) >= 3 && rng.random_bool(0.3) {
                v.stop = Some((Stop::Light, t, t + rng.random_range(10 * SEC..50 * SEC)));
            } else {
                let next = v.plan[v.step];
                start_arc(v, next, t, world, rng);
            }
        }
    }
    if let Some((kind, since, until)) = v.stop {
        if t >= until {
            if until - since >= 20 * MIN {
                v.drive_since = t;
                if kind == Stop::Rest || v.class.regulated() {
                    v.rest_after = rng.random_range(2 * HOUR..(7 * HOUR) / 2);
                }
            }
            v.stop = None;
            if v.step >= v.plan.len() {
                // Nothing planned (start-up, or an empty trip): plan one now.
                let (_, _) = next_trip(v, world, rng);
                if v.parked {
                    return None;
                }
            }
            match v.plan.get(v.step) {
                Some(&next) => start_arc(v, next, t, world, rng),
                None => {
                    // Still nowhere to go (isolated node): wait and try again.
                    v.stop = Some((Stop::Dwell, t, t + MIN));
                }
            }
        }
    }
    if v.gps && t >= v.next_fix {
        let p = vehicle_position(v, t, world);
        let moving = v.stop.is_none();
        let p = cityward_model::geo::offset_m(
            p,
            rng.random_range(-3.0..3.0),
            rng.random_range(-3.0..3.0),
        );
        let speed = if moving {
            (v.speed_kmh * rng.random_range(0.98..1.02)).max(0.0)
        } else {
            0.0
        };
        let heading = (v.heading + rng.random_range(-2.0..2.0))
            .rem_euclid(360.0)
            .round()
            % 360.0;
        let mut event = Event::new(v.id.clone(), "gps", out.time(t))
            .at(r6(p.0), r6(p.1))
            .with("speed_kmh", round_to(speed, 1))
            .with("heading", heading)
            .with("class", v.class.as_str())
            .with("plate", v.plate.as_str());
        if let Some(route) = &v.route_zone {
            event = event.with("route", route.as_str());
        }
        out.send(rng, t, &mut v.last_arrival, event);
        let parked = matches!(v.stop, Some((Stop::Dwell | Stop::Rest, _, _)));
        v.next_fix = t + if parked {
            v.fix_ms.max(60 * SEC)
        } else {
            v.fix_ms
        };
    }
    let motion = match v.stop {
        Some((_, _, until)) => until,
        None => v.arc_to,
    };
    let next = if v.gps {
        motion.min(v.next_fix)
    } else {
        motion
    };
    Some(next.max(t + 1))
}

/// Simulates a city for `duration` from `start` and writes the events as NDJSON (one
/// [`Event::to_json_line`] per line, in arrival order). Returns the number of events.
pub fn simulate_to(
    city: &City,
    seed: u64,
    start: DateTime<Utc>,
    duration: std::time::Duration,
    writer: impl Write,
) -> io::Result<u64> {
    let mut sim = Simulator::new(city, seed, start);
    let end = TimeDelta::from_std(duration)
        .ok()
        .and_then(|d| start.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let mut w = BufWriter::with_capacity(1 << 16, writer);
    let mut n = 0u64;
    let mut t = start;
    let mut write = |events: Vec<Event>, w: &mut BufWriter<_>| -> io::Result<()> {
        for e in events {
            w.write_all(e.to_json_line().as_bytes())?;
            w.write_all(b"\n")?;
            n += 1;
        }
        Ok(())
    };
    while t < end {
        t = (t + TimeDelta::minutes(1)).min(end);
        let events = sim.next_until(t);
        write(events, &mut w)?;
    }
    let events = sim.flush();
    write(events, &mut w)?;
    w.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashSet};

    use super::*;
    use crate::{generate_city, Size};

    fn run(sim: &mut Simulator, hours: f64) -> Vec<Event> {
        let end = sim.start() + TimeDelta::milliseconds((hours * HOUR as f64) as i64);
        let mut events = sim.next_until(end);
        events.extend(sim.flush());
        events
    }

    fn by_source(events: &[Event]) -> BTreeMap<&str, Vec<&Event>> {
        let mut map: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
        for e in events {
            map.entry(e.source.as_str()).or_default().push(e);
        }
        map
    }

    /// A run: the city, the incidents and vehicles the simulator reports, and the events.
    type Run = (City, Vec<ScriptedIncident>, Vec<VehicleProfile>, Vec<Event>);

    /// One simulated hour of a small city, shared by several tests.
    fn hour() -> &'static Run {
        static HOUR: std::sync::OnceLock<Run> = std::sync::OnceLock::new();
        HOUR.get_or_init(|| {
            let city = generate_city(42, Size::Small);
            let mut sim = Simulator::new(&city, 9, default_start());
            let events = run(&mut sim, 1.0);
            let incidents = sim.incidents().to_vec();
            let vehicles = sim.vehicles().to_vec();
            (city, incidents, vehicles, events)
        })
    }

    #[test]
    fn same_seed_same_bytes_however_the_run_is_cut() {
        let city = generate_city(1, Size::Small);
        let start = default_start();
        let mut a = Vec::new();
        let mut b = Vec::new();
        let n = simulate_to(&city, 5, start, std::time::Duration::from_secs(900), &mut a).unwrap();
        simulate_to(&city, 5, start, std::time::Duration::from_secs(900), &mut b).unwrap();
        assert!(n > 1000, "{n} events");
        assert_eq!(a, b);
        assert_eq!(
            String::from_utf8(a.clone()).unwrap().lines().count() as u64,
            n
        );

        // Cutting the run into uneven steps changes nothing.
        let mut sim = Simulator::new(&city, 5, start);
        let mut lines = Vec::new();
        let mut t = start;
        let end = start + TimeDelta::seconds(900);
        for step in [1, 7, 45, 180, 3, 600].iter().cycle() {
            t = (t + TimeDelta::seconds(*step)).min(end);
            lines.extend(sim.next_until(t).iter().map(Event::to_json_line));
            if t == end {
                break;
            }
        }
        lines.extend(sim.flush().iter().map(Event::to_json_line));
        let joined: String = lines.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(joined.as_bytes(), a.as_slice());

        let mut other = Vec::new();
        simulate_to(
            &city,
            6,
            start,
            std::time::Duration::from_secs(900),
            &mut other,
        )
        .unwrap();
        assert_ne!(other, a, "another seed gives other events");
    }

    #[test]
    fn events_are_well_formed_and_ordered_per_source() {
        let (city, _, _, events) = hour();
        let mut ids = HashSet::new();
        let mut latest = 0;
        let mut out_of_order = 0;
        let mut kinds = BTreeSet::new();
        for e in events {
            assert!(ids.insert(e.id.as_str()), "duplicate id {}", e.id);
            assert!(e.id.starts_with("sim-9-"));
            kinds.insert(e.kind.as_str());
            let (lon, lat) = e.point().expect("every simulated event has a place");
            assert!(city.contains(lon, lat), "{} at ({lon}, {lat})", e.id);
            let t = e.time_micros() / 1000;
            assert!(
                latest - t <= MAX_DELIVERY_DELAY_MS,
                "{} is {} ms late",
                e.id,
                latest - t
            );
            if t < latest {
                out_of_order += 1;
            }
            latest = latest.max(t);
        }
        assert!(
            out_of_order > 0,
            "delivery jitter reorders events across sources"
        );
        for (source, list) in by_source(events) {
            for w in list.windows(2) {
                assert!(
                    w[0].time <= w[1].time,
                    "{source}: {} after {}",
                    w[1].time,
                    w[0].time
                );
            }
        }
        for kind in [
            "gps",
            "plate_read",
            "smoke",
            "gas",
            "water_level",
            "door",
            "heartbeat",
            "crowd_count",
        ] {
            assert!(kinds.contains(kind), "no {kind} events");
        }
        // Attributes use the names of the built-in kinds.
        let gps = events
            .iter()
            .find(|e| e.kind == "gps" && e.attrs.contains_key("route"))
            .unwrap();
        for attr in ["speed_kmh", "heading", "class", "plate", "route"] {
            assert!(gps.attrs.contains_key(attr), "gps without {attr}");
        }
        let read = events.iter().find(|e| e.kind == "plate_read").unwrap();
        for attr in ["plate", "confidence", "color", "vehicle_type"] {
            assert!(read.attrs.contains_key(attr), "plate_read without {attr}");
        }
        let registry = cityward_model::KindRegistry::builtin();
        for e in events.iter().step_by(37) {
            let schema = registry.get(&e.kind).unwrap();
            for name in e.attrs.keys() {
                assert!(
                    schema.attrs.contains_key(name),
                    "{} has undeclared attribute {name}",
                    e.kind
                );
            }
        }
    }

    #[test]
    fn heartbeats_come_every_five_minutes_until_a_device_goes_silent() {
        let (city, incidents, _, events) = hour();
        let start = default_start();
        let silent: BTreeMap<&str, (DateTime<Utc>, DateTime<Utc>)> = incidents
            .iter()
            .filter(|i| i.kind == IncidentKind::DeviceSilent)
            .map(|i| (i.sources[0].as_str(), (i.time, i.until)))
            .collect();
        assert!(silent.len() >= 2);
        let sources = by_source(events);
        for d in &city.devices {
            let list = sources.get(d.id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            let beats: Vec<&&Event> = list.iter().filter(|e| e.kind == "heartbeat").collect();
            match silent.get(d.id.as_str()) {
                Some(&(from, until)) => {
                    assert!(from < start + TimeDelta::minutes(41));
                    assert!(
                        list.iter().all(|e| e.time < from || e.time >= until),
                        "{} spoke while silent",
                        d.id
                    );
                    assert!(!beats.is_empty() && beats.iter().all(|e| e.time < from));
                }
                None => {
                    assert!(
                        beats.len() >= 11,
                        "{}: {} heartbeats in an hour",
                        d.id,
                        beats.len()
                    );
                    for w in beats.windows(2) {
                        let gap = (w[1].time - w[0].time).num_milliseconds();
                        assert!(
                            (298_000..=302_000).contains(&gap),
                            "{}: heartbeat gap {gap} ms",
                            d.id
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_scripted_incident_shows_in_the_events() {
        let (city, incidents, _, events) = hour();
        let sources = by_source(events);
        let find = |kind| {
            incidents
                .iter()
                .find(|i| i.kind == kind)
                .unwrap_or_else(|| panic!("no {kind:?}"))
        };
        let of = |id: &str| sources.get(id).cloned().unwrap_or_default();

        // Fire: a smoke alarm at the origin, then > 60 °C at a neighbour within minutes.
        let fire = find(IncidentKind::Fire);
        assert!(
            fire.sources.len() >= 2,
            "the fire has neighbours: {:?}",
            fire.sources
        );
        let alarm = of(&fire.sources[0])
            .into_iter()
            .find(|e| e.kind == "smoke" && e.attrs["alarm"] == true)
            .expect("smoke alarm at the origin");
        assert!(
            alarm.time >= fire.time && alarm.time <= fire.time + TimeDelta::minutes(2),
            "alarm at {} for a fire at {}",
            alarm.time,
            fire.time
        );
        let hot = fire.sources[1..]
            .iter()
            .flat_map(|s| of(s))
            .filter(|e| e.kind == "smoke" && e.attr_f64("temperature_c").unwrap() > 60.0)
            .map(|e| e.time)
            .min()
            .expect("a neighbour above 60 °C");
        assert!(
            hot > alarm.time && hot <= alarm.time + TimeDelta::minutes(10),
            "{hot} vs {}",
            alarm.time
        );
        let (a, b) = (
            city.device(&fire.sources[0]).unwrap(),
            city.device(&fire.sources[1]).unwrap(),
        );
        assert!(haversine_m((a.lon, a.lat), (b.lon, b.lat)) <= 400.0);

        // Gas leak: the origin goes into alarm.
        let gas = find(IncidentKind::GasLeak);
        assert!(of(&gas.sources[0])
            .iter()
            .any(|e| e.kind == "gas" && e.attrs["alarm"] == true));

        // Flood: the underpass sensor rises past 0.3 m within 25 minutes.
        let flood = find(IncidentKind::Flood);
        let zone = city
            .zone(flood.zone.as_deref().expect("flood zone"))
            .unwrap();
        assert_eq!(zone.kind, "underpass");
        let sensor = city.device(&flood.sources[0]).unwrap();
        assert!(zone.contains(sensor.lon, sensor.lat));
        let high = of(&flood.sources[0])
            .into_iter()
            .find(|e| e.kind == "water_level" && e.attr_f64("value").unwrap() > 0.3)
            .expect("water above 0.3 m");
        assert!(high.time <= flood.time + TimeDelta::minutes(25));

        // Hotlisted vehicle: read by several read points, all listed, after it sets off.
        let hot = find(IncidentKind::HotlistVehicle);
        let plate = hot.plate.as_deref().unwrap();
        assert_eq!(plate, HOTLIST_PLATES[0]);
        assert!(hotlist_plates().contains(&plate.to_string()));
        let reads: Vec<&Event> = events
            .iter()
            .filter(|e| e.kind == "plate_read" && e.attr_str("plate") == Some(plate))
            .collect();
        let readers: BTreeSet<&str> = reads.iter().map(|e| e.source.as_str()).collect();
        assert!(readers.len() >= 2, "read by {readers:?}");
        assert!(readers.iter().all(|r| hot.sources.iter().any(|s| s == r)));
        assert!(reads.iter().all(|e| e.time >= hot.time));

        // Crowd: the cameras at the square together count more than its capacity.
        let crowd = find(IncidentKind::Crowd);
        let square = city.zone(crowd.zone.as_deref().unwrap()).unwrap();
        let capacity = square.properties["capacity"].as_f64().unwrap();
        let mut per_minute: BTreeMap<i64, i64> = BTreeMap::new();
        for s in &crowd.sources {
            for e in of(s).into_iter().filter(|e| e.kind == "crowd_count") {
                *per_minute.entry(e.time.timestamp() / 60).or_default() +=
                    e.attrs["count"].as_i64().unwrap();
            }
        }
        let peak = per_minute.values().copied().max().unwrap();
        assert!(peak as f64 > capacity, "peak {peak} of capacity {capacity}");
        // No other plate is a hotlisted one.
        assert!(events
            .iter()
            .filter(|e| e.kind == "plate_read"
                && e.attr_str("plate")
                    .is_some_and(|p| HOTLIST_PLATES.contains(&p)))
            .all(|e| e.attr_str("plate") == Some(plate)));
    }

    #[test]
    fn speeds_are_plausible_and_speeders_speed() {
        let (city, _, vehicles, events) = hour();
        let sources = by_source(events);
        let mut speeding_seen = false;
        for v in vehicles {
            let fixes = sources
                .get(v.id.as_str())
                .unwrap_or_else(|| panic!("{} sent nothing", v.id));
            assert!(fixes.len() > 100, "{}: {} fixes", v.id, fixes.len());
            for e in fixes {
                assert_eq!(e.kind, "gps");
                assert_eq!(e.attr_str("class"), Some(v.class.as_str()));
                assert_eq!(e.attr_str("plate"), Some(v.plate.as_str()));
                let speed = e.attr_f64("speed_kmh").unwrap();
                assert!((0.0..=115.0).contains(&speed), "{}: {speed} km/h", v.id);
                if !v.speeder {
                    assert!(speed <= 80.0, "{} is no speeder but drives {speed}", v.id);
                } else if !speeding_seen && speed > 0.0 {
                    // Compare with the limit of the road it is on, where that is unambiguous.
                    let p = e.point().unwrap();
                    let mut near: Vec<(f64, f64)> = city
                        .roads
                        .iter()
                        .map(|r| (polyline_distance_m(p, &r.line), r.speed_limit_kmh))
                        .collect();
                    near.sort_by(|a, b| a.0.total_cmp(&b.0));
                    if near[0].0 < 10.0 && near[1].0 > 40.0 && speed > near[0].1 * 1.1 {
                        speeding_seen = true;
                    }
                }
            }
            // Between fixes at least 5 s apart, the distance fits the speed.
            for w in fixes.windows(2) {
                let dt = (w[1].time - w[0].time).num_milliseconds() as f64 / 1000.0;
                if dt >= 5.0 {
                    let d = haversine_m(w[0].point().unwrap(), w[1].point().unwrap());
                    assert!((d - 12.0) / dt <= 120.0 / 3.6, "{}: {d} m in {dt} s", v.id);
                }
            }
        }
        assert!(speeding_seen, "a speeder exceeds a limit by more than 10 %");
        assert!(vehicles
            .iter()
            .any(|v| v.speeder && v.class == VehicleClass::Hazmat));
    }

    #[test]
    fn a_city_without_roads_or_zones_still_simulates_its_devices() {
        let full = generate_city(2, Size::Small);
        let devices: Vec<_> = full
            .devices
            .iter()
            .filter(|d| d.kind == "door" || d.kind == "heartbeat_sensor")
            .cloned()
            .collect();
        let city = City::from_parts(
            full.regions.clone(),
            full.grids.clone(),
            vec![],
            vec![],
            full.units.clone(),
            devices,
        )
        .unwrap();
        let mut sim = Simulator::new(&city, 1, default_start());
        let events = run(&mut sim, 0.5);
        assert!(sim.vehicles().is_empty());
        assert!(
            events.iter().any(|e| e.kind == "heartbeat") && events.iter().any(|e| e.kind == "door")
        );
        assert!(sim
            .incidents()
            .iter()
            .all(|i| i.kind == IncidentKind::DeviceSilent));
    }

    #[test]
    fn incidents_serialize_for_a_truth_file() {
        let (_, incidents, vehicles, _) = hour();
        let json = serde_json::to_value(&incidents[0]).unwrap();
        assert!(
            json["kind"].is_string() && json["time"].as_str().unwrap().starts_with("2026-11-22T")
        );
        let json = serde_json::to_value(&vehicles[0]).unwrap();
        assert!(json["class"].is_string());
    }

    #[test]
    fn some_drive_too_long_and_some_leave_their_corridor() {
        let city = generate_city(42, Size::Small);
        let config = SimConfig {
            gps_vehicles: 12,
            background_cars: 0,
            ..SimConfig::for_city(&city)
        };
        let mut sim = Simulator::with_config(&city, 3, default_start(), config);
        let events = run(&mut sim, 4.6);
        let sources = by_source(&events);
        let mut fatigued_seen = false;
        let mut deviation_seen = false;
        for v in sim.vehicles() {
            let fixes = &sources[v.id.as_str()];
            // Longest stretch of driving without 20 minutes standing still.
            let mut longest = TimeDelta::zero();
            let mut driving_since = fixes[0].time;
            let mut still_since: Option<DateTime<Utc>> = None;
            for e in fixes {
                if e.attr_f64("speed_kmh").unwrap() < 1.0 {
                    let since = *still_since.get_or_insert(e.time);
                    if e.time - since >= TimeDelta::minutes(20) {
                        driving_since = e.time;
                    }
                } else {
                    still_since = None;
                    longest = longest.max(e.time - driving_since);
                }
            }
            if v.class.regulated() {
                if v.skips_rest {
                    fatigued_seen |= longest > TimeDelta::hours(4);
                } else {
                    assert!(
                        longest <= TimeDelta::hours(4),
                        "{} drove {longest} without rest",
                        v.id
                    );
                }
            }
            if let Some(route) = &v.route {
                let zone = city.zone(route).unwrap();
                let half = zone.width_m.unwrap() / 2.0;
                let off = fixes
                    .iter()
                    .filter(|e| !zone.contains(e.lon.unwrap(), e.lat.unwrap()))
                    .count();
                if v.deviator {
                    deviation_seen |= off > 0;
                } else {
                    assert_eq!(off, 0, "{} left its corridor (half width {half} m)", v.id);
                }
            }
        }
        assert!(
            fatigued_seen,
            "a driver who skips rests drives more than 4 h"
        );
        assert!(deviation_seen, "a deviator leaves its corridor");
        // The incidents of the second cycle are planned once it starts.
        assert!(sim
            .incidents()
            .iter()
            .any(|i| i.time > default_start() + TimeDelta::hours(4)));
    }
}
