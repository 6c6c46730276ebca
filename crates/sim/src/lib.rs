//! The test city and its traffic: `cityward-sim` generates a synthetic city around Ningbo
//! in the directory format of DESIGN.md ([`generate_city`]) and simulates the events its
//! perception network would send ([`Simulator`], [`simulate_to`]): regulated vehicles on the
//! road network, ANPR read points, sensors with heartbeats, crowd cameras, and scripted
//! incidents at known times, so demos, tests and benchmarks have realistic input with a
//! known truth.
//!
//! Everything is deterministic for a seed (and, for the simulator, a start time): the same
//! inputs give byte-identical files. The crate only produces data; it does not send it
//! anywhere, and it never reads the wall clock — a live feed calls
//! [`Simulator::next_until`] with the time it wants.
#![deny(missing_docs)]

mod generate;
mod graph;
mod names;
mod simulate;

pub use generate::{generate_city, Size, CENTRE};
pub use graph::{Arc, RoadGraph, Route};
pub use simulate::{
    default_start, hotlist_plates, simulate_to, IncidentKind, ScriptedIncident, SimConfig,
    Simulator, VehicleClass, VehicleProfile, DEFAULT_START, HOTLIST_PLATES, INCIDENT_CYCLE_S,
    MAX_DELIVERY_DELAY_MS,
};
