//! The shared vocabulary of cityward: the [`Event`] every source is turned into, the
//! declared event kinds and their attribute schemas ([`KindRegistry`]), coordinate systems
//! ([`Crs`], GCJ-02/BD-09 to WGS84), durations as operators write them (`15m`, `4h`), and
//! the city model ([`City`]: regions, grids, zones, roads, units, devices) with the
//! geometry needed to place a point in it.
//!
//! This crate owns data shapes and pure functions only: it does no I/O beyond reading and
//! writing a city directory, and knows nothing about transport, storage or rules.
#![deny(missing_docs)]

pub mod city;
mod crs;
mod duration;
pub mod event;
pub mod geo;
mod kinds;

pub use city::{City, CityError};
pub use crs::{bd09_to_wgs84, gcj02_to_wgs84, wgs84_to_bd09, wgs84_to_gcj02, Crs};
pub use duration::{duration_serde, format_duration, parse_duration};
pub use event::{format_time, parse_time, Event};
pub use kinds::{AttrSpec, AttrType, KindRegistry, KindSchema, Place};
