//! Rough throughput figures for the generator, the simulator and point lookups.
//!
//! `cargo run --release -p cityward-sim --example throughput [small|medium|large]`
//!
//! Prints timings only; correctness is covered by the tests.

use std::time::Instant;

use cityward_model::city::Level;
use cityward_sim::{default_start, generate_city, Simulator, Size};

fn main() {
    let size: Size = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("large")
        .parse()
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        });

    let t = Instant::now();
    let city = generate_city(1, size);
    println!(
        "generate {size}: {:.2} s ({} regions, {} grids, {} roads, {} zones, {} devices)",
        t.elapsed().as_secs_f64(),
        city.regions.len(),
        city.grids.len(),
        city.roads.len(),
        city.zones.len(),
        city.devices.len()
    );

    // Point lookups: a fixed pseudo-random walk over the city's extent.
    let b = city.bbox();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let points: Vec<(f64, f64)> = (0..1_000_000)
        .map(|_| {
            (
                b.min_lon + next() * (b.max_lon - b.min_lon),
                b.min_lat + next() * (b.max_lat - b.min_lat),
            )
        })
        .collect();
    let t = Instant::now();
    let hits = points
        .iter()
        .filter(|p| city.grid_at(p.0, p.1).is_some())
        .count();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "grid_at: {:.1} M lookups/s over {} grids ({hits} hits)",
        points.len() as f64 / secs / 1e6,
        city.grids.len()
    );
    let t = Instant::now();
    let hits = points
        .iter()
        .filter(|p| city.region_at(p.0, p.1, Level::District).is_some())
        .count();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "region_at(district): {:.1} M lookups/s ({hits} hits)",
        points.len() as f64 / secs / 1e6
    );

    let t = Instant::now();
    let mut sim = Simulator::new(&city, 1, default_start());
    println!(
        "simulator setup: {:.2} s, {} GPS vehicles",
        t.elapsed().as_secs_f64(),
        sim.vehicles().len()
    );
    let t = Instant::now();
    let mut events = 0usize;
    let mut bytes = 0usize;
    let start = default_start();
    for minute in 1..=60 {
        for e in sim.next_until(start + chrono::TimeDelta::minutes(minute)) {
            bytes += e.to_json_line().len() + 1;
            events += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "simulate 1 h: {events} events ({:.0}/s of simulated time), {:.1} MB NDJSON, in {secs:.2} s",
        events as f64 / 3600.0,
        bytes as f64 / 1e6
    );
}
