//! Point-in-polygon assignment benchmark for `cityward_model::geo::PolygonIndex`.
//!
//! Generates (once per data directory) a deterministic set of random star-shaped simple
//! polygons and uniform random points, written as `polygons.csv` (`id,wkt`) and
//! `points.csv` (`id,lon,lat`) so that the peers in `bench/pip_peers.py` read exactly the
//! same coordinates. The benchmark itself always reads the CSV files back, so cityward also
//! works on the coordinates as printed, not on the unrounded values it generated.
//!
//! It then builds the index (timed on its own) and assigns every point to the polygons
//! containing it (timed: the lookups and collecting the (point, polygon) pairs), on one
//! thread or with the points split across `--threads` threads, either point by point in
//! input order (`--mode input`, `PolygonIndex::containing`) or as batches (`--mode batch`,
//! `PolygonIndex::assign` on each thread's part, its bucketing of the points included in
//! the time). It reports points/s, the number of pairs and an order-independent checksum
//! of the pairs (wrapping sum of [`pair_mix`]); `bench/pip_peers.py` computes the same
//! checksum for every peer.
//!
//! ```text
//! pip-bench --polygons 10000 --points 1000000 --vertices 50 --seed 7 \
//!           --data /tmp/pip-data --threads 1 --mode batch --out results.json
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use cityward_bench::{mix64, SplitMix64};
use cityward_model::geo::{LocalProjection, MultiPolygon, Point, Polygon, PolygonIndex};
use clap::Parser;
use serde_json::json;

/// The box polygon centres and points are drawn from (lon, lat degrees).
const MIN_LON: f64 = 121.40;
const MAX_LON: f64 = 121.80;
const MIN_LAT: f64 = 29.70;
const MAX_LAT: f64 = 30.00;
/// Polygon radius range in metres.
const MIN_RADIUS_M: f64 = 50.0;
const MAX_RADIUS_M: f64 = 400.0;

#[derive(Parser)]
#[command(about = "Point-in-polygon assignment benchmark of cityward's PolygonIndex")]
struct Args {
    /// Number of polygons to generate.
    #[arg(long, default_value_t = 10_000)]
    polygons: usize,
    /// Number of points to generate.
    #[arg(long, default_value_t = 1_000_000)]
    points: usize,
    /// Mean vertices per polygon; each polygon gets vertices-5 ..= vertices+5.
    #[arg(long, default_value_t = 50)]
    vertices: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Directory holding polygons.csv and points.csv (written when missing).
    #[arg(long, default_value = "pip-data")]
    data: PathBuf,
    /// Threads for the assignment; the points are split into this many contiguous parts.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed assignment runs; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Results as JSON.
    #[arg(long, default_value = "pip-results.json")]
    out: PathBuf,
    /// Also write the (point_id, polygon_id) pairs, sorted, as CSV (not timed).
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// How points are looked up: `input`, one `containing` call per point in file order
    /// (i.e. random), or `batch`, one `assign` call per thread.
    #[arg(long, value_enum, default_value_t = Mode::Input)]
    mode: Mode,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Input,
    Batch,
}

impl Mode {
    /// The name used in the results (`mode` in the JSON).
    fn name(self) -> &'static str {
        match self {
            Mode::Input => "input",
            Mode::Batch => "batch",
        }
    }
}

/// The checksum term of one pair: `mix64(point_id << 32 | polygon_id)`. The checksum of an
/// assignment is the wrapping sum of its terms, so it does not depend on order.
#[inline]
fn pair_mix(point_id: u32, polygon_id: u32) -> u64 {
    mix64(((point_id as u64) << 32) | polygon_id as u64)
}

/// One random star-shaped simple polygon: vertex angles strictly increasing around the
/// centre (one per equal sector, jittered inside it), radii 35–100 % of the polygon's radius.
fn star_polygon(rng: &mut SplitMix64, n: usize) -> Vec<Point> {
    let centre = (rng.range(MIN_LON, MAX_LON), rng.range(MIN_LAT, MAX_LAT));
    let radius = rng.range(MIN_RADIUS_M, MAX_RADIUS_M);
    let proj = LocalProjection::new(centre);
    let sector = std::f64::consts::TAU / n as f64;
    let phase = rng.range(0.0, sector);
    (0..n)
        .map(|i| {
            let angle = phase + sector * (i as f64 + rng.range(0.05, 0.95));
            let r = radius * rng.range(0.35, 1.0);
            proj.to_lonlat((r * angle.cos(), r * angle.sin()))
        })
        .collect()
}

/// Writes `path` through a temporary file renamed into place, so an interrupted run leaves
/// no half-written data behind.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    let tmp = path.with_extension("csv.tmp");
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    fill(&mut out)?;
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Generates the data files that are missing. `params.txt` records how they were made, so a
/// directory made with other parameters is refused rather than silently reused.
fn ensure_data(args: &Args) -> Result<()> {
    std::fs::create_dir_all(&args.data)?;
    let params = format!(
        "polygons={} points={} vertices={} seed={} box={MIN_LON},{MIN_LAT},{MAX_LON},{MAX_LAT} radius_m={MIN_RADIUS_M}-{MAX_RADIUS_M}\n",
        args.polygons, args.points, args.vertices, args.seed
    );
    let params_path = args.data.join("params.txt");
    match std::fs::read_to_string(&params_path) {
        Ok(existing) if existing != params => bail!(
            "{} holds data made with `{}`, not `{}`; use another --data directory",
            args.data.display(),
            existing.trim(),
            params.trim()
        ),
        Ok(_) => {}
        Err(_) => {
            // Files without a matching params.txt are of unknown origin: make them anew.
            let _ = std::fs::remove_file(args.data.join("polygons.csv"));
            let _ = std::fs::remove_file(args.data.join("points.csv"));
            std::fs::write(&params_path, &params)?;
        }
    }
    if args.vertices < 8 {
        bail!("--vertices must be at least 8");
    }
    let polygons_path = args.data.join("polygons.csv");
    if !polygons_path.exists() {
        let started = Instant::now();
        let mut rng = SplitMix64(args.seed);
        write_atomically(&polygons_path, |out| {
            writeln!(out, "id,wkt")?;
            for id in 0..args.polygons {
                let n = rng.range_int(args.vertices - 5, args.vertices + 5);
                let ring = star_polygon(&mut rng, n);
                write!(out, "{id},\"POLYGON ((")?;
                for (i, p) in ring.iter().chain(std::iter::once(&ring[0])).enumerate() {
                    if i > 0 {
                        out.write_all(b", ")?;
                    }
                    write!(out, "{:.9} {:.9}", p.0, p.1)?;
                }
                writeln!(out, "))\"")?;
            }
            Ok(())
        })?;
        eprintln!(
            "wrote {} polygons to {} in {:.1} s",
            args.polygons,
            polygons_path.display(),
            started.elapsed().as_secs_f64()
        );
    }
    let points_path = args.data.join("points.csv");
    if !points_path.exists() {
        let started = Instant::now();
        let mut rng = SplitMix64(args.seed ^ 0xD1B5_4A32_D192_ED03);
        write_atomically(&points_path, |out| {
            writeln!(out, "id,lon,lat")?;
            for id in 0..args.points {
                let lon = rng.range(MIN_LON, MAX_LON);
                let lat = rng.range(MIN_LAT, MAX_LAT);
                writeln!(out, "{id},{lon:.9},{lat:.9}")?;
            }
            Ok(())
        })?;
        eprintln!(
            "wrote {} points to {} in {:.1} s",
            args.points,
            points_path.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Parses one ring's coordinate list `x y, x y, ...`.
fn parse_ring(text: &str) -> Result<Vec<Point>> {
    text.split(',')
        .map(|pair| {
            let mut it = pair.split_ascii_whitespace();
            match (it.next(), it.next(), it.next()) {
                (Some(x), Some(y), None) => Ok((x.parse()?, y.parse()?)),
                _ => bail!("bad WKT position `{pair}`"),
            }
        })
        .collect()
}

/// Parses `POLYGON ((x y, ...), (x y, ...))` (exterior ring, then holes).
fn parse_wkt_polygon(wkt: &str) -> Result<Polygon> {
    let body = wkt
        .trim()
        .strip_prefix("POLYGON")
        .map(str::trim)
        .and_then(|s| s.strip_prefix("(("))
        .and_then(|s| s.strip_suffix("))"))
        .with_context(|| format!("not a WKT POLYGON: `{:.60}`", wkt))?;
    let mut rings = body
        .split("),")
        .map(|r| parse_ring(r.trim().trim_start_matches('(').trim_end_matches(')')));
    let exterior = rings.next().context("polygon without rings")??;
    let holes = rings.collect::<Result<Vec<_>>>()?;
    Ok(Polygon::new(exterior, holes))
}

fn read_polygons(path: &Path) -> Result<Vec<(u32, Polygon)>> {
    let file = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut out = Vec::new();
    for (n, line) in file.lines().enumerate().skip(1) {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let (id, wkt) = line
            .split_once(',')
            .with_context(|| format!("{}:{}: no comma", path.display(), n + 1))?;
        let id: u32 = id
            .parse()
            .with_context(|| format!("{}:{}", path.display(), n + 1))?;
        let wkt = wkt.trim_matches('"');
        let poly =
            parse_wkt_polygon(wkt).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        out.push((id, poly));
    }
    Ok(out)
}

struct Points {
    ids: Vec<u32>,
    coords: Vec<Point>,
}

fn read_points(path: &Path) -> Result<Points> {
    let file = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut pts = Points {
        ids: Vec::new(),
        coords: Vec::new(),
    };
    for (n, line) in file.lines().enumerate().skip(1) {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let mut f = line.split(',');
        let parsed = (|| -> Result<(u32, f64, f64)> {
            Ok((
                f.next().context("id")?.parse()?,
                f.next().context("lon")?.parse()?,
                f.next().context("lat")?.parse()?,
            ))
        })()
        .with_context(|| format!("{}:{}", path.display(), n + 1))?;
        pts.ids.push(parsed.0);
        pts.coords.push((parsed.1, parsed.2));
    }
    Ok(pts)
}

/// Assigns every point in `ids`/`coords` to the polygons containing it, as
/// `(point_id, polygon_id)` pairs.
fn assign(index: &PolygonIndex<u32>, ids: &[u32], coords: &[Point], mode: Mode) -> Vec<(u32, u32)> {
    let mut pairs = Vec::with_capacity(coords.len());
    match mode {
        Mode::Input => {
            for (&id, &(lon, lat)) in ids.iter().zip(coords) {
                for &poly in index.containing(lon, lat) {
                    pairs.push((id, poly));
                }
            }
        }
        Mode::Batch => {
            index.assign(coords, &mut pairs);
            // `assign` gives positions in the slice and insertion indices: map them to ids.
            for pair in &mut pairs {
                *pair = (
                    ids[pair.0 as usize],
                    *index.get(pair.1 as usize).expect("item"),
                );
            }
        }
    }
    pairs
}

/// One timed assignment of all points on `threads` threads; returns the seconds and the
/// pairs of each thread.
fn timed_run(
    index: &PolygonIndex<u32>,
    pts: &Points,
    threads: usize,
    mode: Mode,
) -> (f64, Vec<Vec<(u32, u32)>>) {
    let started = Instant::now();
    let chunk = pts.coords.len().div_ceil(threads).max(1);
    let parts: Vec<Vec<(u32, u32)>> = if threads == 1 {
        vec![assign(index, &pts.ids, &pts.coords, mode)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = pts
                .ids
                .chunks(chunk)
                .zip(pts.coords.chunks(chunk))
                .map(|(ids, coords)| s.spawn(move || assign(index, ids, coords, mode)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("worker"))
                .collect()
        })
    };
    (started.elapsed().as_secs_f64(), parts)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.threads == 0 || args.repeat == 0 {
        bail!("--threads and --repeat must be at least 1");
    }
    ensure_data(&args)?;

    let started = Instant::now();
    let polygons = read_polygons(&args.data.join("polygons.csv"))?;
    let pts = read_points(&args.data.join("points.csv"))?;
    let read_s = started.elapsed().as_secs_f64();
    let vertices: usize = polygons.iter().map(|(_, p)| p.exterior.len()).sum();

    let started = Instant::now();
    let index = PolygonIndex::new(
        polygons
            .into_iter()
            .map(|(id, poly)| (MultiPolygon::from(poly), id)),
    );
    let build_s = started.elapsed().as_secs_f64();

    let mut runs = Vec::with_capacity(args.repeat);
    let mut result = Vec::new();
    for _ in 0..args.repeat {
        let (secs, parts) = timed_run(&index, &pts, args.threads, args.mode);
        runs.push(secs);
        result = parts;
    }
    let mut sorted_runs = runs.clone();
    sorted_runs.sort_by(f64::total_cmp);
    let median = sorted_runs[sorted_runs.len() / 2];
    let best = sorted_runs[0];

    let pairs: u64 = result.iter().map(|p| p.len() as u64).sum();
    let checksum = result.iter().flatten().fold(0u64, |acc, &(pt, poly)| {
        acc.wrapping_add(pair_mix(pt, poly))
    });
    let n = pts.coords.len() as f64;
    let how = match args.mode {
        Mode::Input => "PolygonIndex::containing per point, input order",
        Mode::Batch => "PolygonIndex::assign per thread (bucketing timed)",
    };
    let report = json!({
        "tool": "cityward",
        "how": format!("{how}, {} thread(s)", args.threads),
        "mode": args.mode.name(),
        "threads": args.threads,
        "polygons": index.len(),
        "vertices": vertices,
        "points": pts.coords.len(),
        "read_s": read_s,
        "build_s": build_s,
        "query_s": median,
        "query_runs_s": runs,
        "points_per_s": n / median,
        "points_per_s_best": n / best,
        "ns_per_point": median * 1e9 / n,
        "pairs": pairs,
        "checksum": format!("{checksum:016x}"),
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!(
        "cityward {how}, {} thread(s): {} polygons ({} vertices), {} points; build {:.3} s; \
         query median {:.3} s of {} runs = {:.0} points/s ({:.0} ns/point); {} pairs, checksum {:016x}",
        args.threads,
        index.len(),
        vertices,
        pts.coords.len(),
        build_s,
        median,
        runs.len(),
        n / median,
        median * 1e9 / n,
        pairs,
        checksum
    );

    if let Some(path) = &args.pairs {
        let mut all: Vec<(u32, u32)> = result.into_iter().flatten().collect();
        all.sort_unstable();
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        writeln!(out, "point_id,polygon_id")?;
        for (pt, poly) in all {
            writeln!(out, "{pt},{poly}")?;
        }
        out.flush()?;
    }
    Ok(())
}
