//! The city model of DESIGN.md: administrative regions (districts → streets → communities),
//! patrol grids, named zones and corridors, road centrelines, responsible units and the
//! device registry, read from and written to a city directory:
//!
//! | file | content |
//! |---|---|
//! | `regions.geojson` | FeatureCollection; properties `id`, `name`, `level` (`district`, `street`, `community`), `parent` (id or null) |
//! | `grids.geojson` | patrol grids; properties `id`, `region` (a region id, normally a community) |
//! | `zones.geojson` | properties `id`, `name`, `kind` (`school`, `depot`, `restricted`, `corridor`, `square`, `underpass`, …); corridors are LineStrings with `width_m`; other properties are kept |
//! | `roads.geojson` | LineStrings; properties `id`, `name`, `speed_limit_kmh`, `class` |
//! | `devices.csv` | `id,kind,lon,lat,grid,owner_unit` (an empty `grid` is filled from the position) |
//! | `units.csv` | `id,name,kind,region,parent_unit` |
//!
//! `regions.geojson` and `grids.geojson` are required; a missing zones, roads, devices or
//! units file stands for an empty list. Loading checks every reference (parent regions,
//! grid regions, device grids and owners, unit regions and parents) and every error names
//! the file, the feature or line, the field and what to do about it.
//!
//! Point lookups ([`City::grid_at`], [`City::region_at`], [`City::zones_at`]) go through
//! [`PolygonIndex`] and follow the boundary rule of
//! [`crate::geo`]: grids that tile a community give every point to exactly one grid.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::geo::{BBox, Geometry, MultiPolygon, Point, PolygonIndex};

/// The file names of a city directory.
pub mod files {
    /// Administrative regions.
    pub const REGIONS: &str = "regions.geojson";
    /// Patrol grids.
    pub const GRIDS: &str = "grids.geojson";
    /// Named zones and corridors.
    pub const ZONES: &str = "zones.geojson";
    /// Road centrelines.
    pub const ROADS: &str = "roads.geojson";
    /// The device registry.
    pub const DEVICES: &str = "devices.csv";
    /// Responsible units.
    pub const UNITS: &str = "units.csv";
}

/// How far outside the extent of its regions a point still counts as "in the city"
/// for [`City::contains`], in metres.
pub const CONTAINS_MARGIN_M: f64 = 1_000.0;

/// The administrative level of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// A district (区), directly under the city.
    District,
    /// A street (街道), inside a district.
    Street,
    /// A community (社区), inside a street; patrol grids tile communities.
    Community,
}

impl Level {
    /// All levels, top down.
    pub const ALL: [Level; 3] = [Level::District, Level::Street, Level::Community];

    /// The name used in files: `district`, `street` or `community`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::District => "district",
            Level::Street => "street",
            Level::Community => "community",
        }
    }

    /// The level a region of this level must have as its parent (`None` for districts,
    /// whose parent is the city itself).
    pub fn parent_level(self) -> Option<Level> {
        match self {
            Level::District => None,
            Level::Street => Some(Level::District),
            Level::Community => Some(Level::Street),
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "district" => Ok(Level::District),
            "street" => Ok(Level::Street),
            "community" => Ok(Level::Community),
            other => Err(format!(
                "`{other}` is not a level; use district, street or community"
            )),
        }
    }
}

/// An administrative region (a feature of `regions.geojson`).
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// Unique region id, e.g. `d1-s2-c3`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// District, street or community.
    pub level: Level,
    /// The enclosing region: a district for a street, a street for a community; `None` for
    /// a district.
    pub parent: Option<String>,
    /// The region's area.
    pub area: MultiPolygon,
}

/// A patrol grid (a feature of `grids.geojson`): the smallest area a responder is
/// responsible for.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Unique grid id.
    pub id: String,
    /// The region (normally a community) the grid belongs to.
    pub region: String,
    /// The grid's area.
    pub area: MultiPolygon,
}

/// A named zone or corridor (a feature of `zones.geojson`) that rules refer to by id.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// Unique zone id, e.g. `depot-north`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What the zone is: `school`, `depot`, `restricted`, `corridor`, `square`,
    /// `underpass`, or a kind of the city's own.
    pub kind: String,
    /// A Polygon or MultiPolygon for an area; a LineString or MultiLineString (or a Point)
    /// for a corridor.
    pub geometry: Geometry,
    /// Full width of a corridor in metres: a point is inside when it is within
    /// `width_m / 2` of the line. Required for line and point geometries, ignored for areas.
    pub width_m: Option<f64>,
    /// Any other properties of the feature (e.g. `capacity` of a square), kept as read.
    pub properties: Map<String, Value>,
}

impl Zone {
    /// Whether the zone is a line with a width rather than an area.
    pub fn is_corridor(&self) -> bool {
        !matches!(
            self.geometry,
            Geometry::Polygon(_) | Geometry::MultiPolygon(_)
        )
    }

    /// Whether the point is in the zone: inside the area (boundary rule of [`crate::geo`]),
    /// or within half the width of a corridor's line.
    pub fn contains(&self, lon: f64, lat: f64) -> bool {
        match &self.geometry {
            Geometry::Polygon(p) => p.contains(lon, lat),
            Geometry::MultiPolygon(mp) => mp.contains(lon, lat),
            g => self
                .width_m
                .is_some_and(|w| g.distance_m((lon, lat)) <= w / 2.0),
        }
    }

    /// The bounding box of the zone, corridors grown by half their width.
    pub fn bbox(&self) -> BBox {
        let b = self.geometry.bbox();
        match (self.is_corridor(), self.width_m) {
            (true, Some(w)) => b.expand_m(w / 2.0),
            _ => b,
        }
    }
}

/// A road centreline (a feature of `roads.geojson`).
#[derive(Debug, Clone, PartialEq)]
pub struct Road {
    /// Unique road id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Posted speed limit in km/h.
    pub speed_limit_kmh: f64,
    /// Road class, e.g. `expressway`, `arterial`, `secondary`, `local`.
    pub class: String,
    /// The centreline, in driving order of the digitisation (roads are two-way).
    pub line: Vec<Point>,
}

/// A registered device (a row of `devices.csv`).
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// Unique device id; the `source` of its events.
    pub id: String,
    /// Device kind, e.g. `smoke`, `gas`, `water_level`, `door`, `heartbeat_sensor`, `anpr`,
    /// `crowd_camera`.
    pub kind: String,
    /// Longitude (WGS84).
    pub lon: f64,
    /// Latitude (WGS84).
    pub lat: f64,
    /// The patrol grid the device is in.
    pub grid: String,
    /// The unit that owns and answers for the device, if any.
    pub owner_unit: Option<String>,
}

/// A responsible unit (a row of `units.csv`): an administrative office or a fire, police or
/// maintenance unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    /// Unique unit id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `city`, `district`, `street`, `community`, `fire`, `police`, `maintenance`, or a kind
    /// of the city's own.
    pub kind: String,
    /// The region the unit answers for (its jurisdiction); `None` for the whole city.
    pub region: Option<String>,
    /// The unit above it in the escalation chain; `None` for the top (the city).
    pub parent_unit: Option<String>,
}

/// What was wrong with a city directory or city parts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CityError {
    /// A file could not be read.
    #[error("{}", read_message(path, source))]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}; check that the directory exists and is writable", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A record is malformed or refers to something that does not exist.
    #[error("{file}, {location}{}: {message}", field_suffix(field))]
    Invalid {
        /// The file name inside the city directory, e.g. `devices.csv`.
        file: String,
        /// Where in the file: `feature 3 (id `d1-s2`)`, `line 7`, or `whole file`.
        location: String,
        /// The field, e.g. `parent` or `geometry.coordinates[0][2]`; empty when the whole
        /// record is concerned.
        field: String,
        /// What was wrong and what to do.
        message: String,
    },
}

fn read_message(path: &Path, source: &io::Error) -> String {
    if source.kind() == io::ErrorKind::NotFound {
        format!(
            "cannot read {}: file not found; a city directory holds {}, {}, {}, {}, {} and {} \
             (create one with `cityward city generate --out DIR`)",
            path.display(),
            files::REGIONS,
            files::GRIDS,
            files::ZONES,
            files::ROADS,
            files::DEVICES,
            files::UNITS
        )
    } else {
        format!("cannot read {}: {source}", path.display())
    }
}

fn field_suffix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!(", field `{field}`")
    }
}

fn invalid(
    file: &str,
    location: impl Into<String>,
    field: &str,
    message: impl Into<String>,
) -> CityError {
    CityError::Invalid {
        file: file.to_string(),
        location: location.into(),
        field: field.to_string(),
        message: message.into(),
    }
}

/// The city: regions, grids, zones, roads, units and devices, with indexes for point and id
/// lookups.
///
/// Built by [`City::load`] or [`City::from_parts`], which check all references. The lists
/// are public for reading; the indexes are built once, so change a city by taking its parts
/// and building a new one.
#[derive(Clone)]
pub struct City {
    /// Districts, streets and communities, in file order.
    pub regions: Vec<Region>,
    /// Patrol grids, in file order.
    pub grids: Vec<Grid>,
    /// Zones and corridors, in file order.
    pub zones: Vec<Zone>,
    /// Road centrelines, in file order.
    pub roads: Vec<Road>,
    /// Responsible units, in file order.
    pub units: Vec<Unit>,
    /// The device registry, in file order.
    pub devices: Vec<Device>,
    grid_index: PolygonIndex<u32>,
    region_index: [PolygonIndex<u32>; 3],
    zone_index: PolygonIndex<u32>,
    corridors: Vec<(BBox, u32)>,
    region_ids: HashMap<String, u32>,
    grid_ids: HashMap<String, u32>,
    zone_ids: HashMap<String, u32>,
    road_ids: HashMap<String, u32>,
    unit_ids: HashMap<String, u32>,
    device_ids: HashMap<String, u32>,
    admin_units: HashMap<String, u32>,
    bbox: BBox,
}

impl fmt::Debug for City {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("City")
            .field("regions", &self.regions.len())
            .field("grids", &self.grids.len())
            .field("zones", &self.zones.len())
            .field("roads", &self.roads.len())
            .field("units", &self.units.len())
            .field("devices", &self.devices.len())
            .field("bbox", &self.bbox)
            .finish()
    }
}

/// Two cities are equal when their lists are equal (the indexes follow from them).
impl PartialEq for City {
    fn eq(&self, other: &Self) -> bool {
        self.regions == other.regions
            && self.grids == other.grids
            && self.zones == other.zones
            && self.roads == other.roads
            && self.units == other.units
            && self.devices == other.devices
    }
}

/// Where each record came from, so errors found after parsing still name the line.
#[derive(Default)]
struct Lines {
    devices: Vec<usize>,
    units: Vec<usize>,
}

fn feature_location(index: usize, id: &str) -> String {
    if id.is_empty() {
        format!("feature {index}")
    } else {
        format!("feature {index} (id `{id}`)")
    }
}

impl City {
    /// Reads a city directory (see the module docs for the files).
    pub fn load(dir: &Path) -> Result<City, CityError> {
        let regions = read_features(dir, files::REGIONS, true)?
            .into_iter()
            .map(parse_region)
            .collect::<Result<Vec<_>, _>>()?;
        let grids = read_features(dir, files::GRIDS, true)?
            .into_iter()
            .map(parse_grid)
            .collect::<Result<Vec<_>, _>>()?;
        let zones = read_features(dir, files::ZONES, false)?
            .into_iter()
            .map(parse_zone)
            .collect::<Result<Vec<_>, _>>()?;
        let roads = read_features(dir, files::ROADS, false)?
            .into_iter()
            .map(parse_road)
            .collect::<Result<Vec<_>, _>>()?;
        let mut lines = Lines::default();
        let units = read_units(dir, &mut lines.units)?;
        let devices = read_devices(dir, &mut lines.devices)?;
        City::build(regions, grids, zones, roads, units, devices, &lines)
    }

    /// Builds a city from its parts, checking ids and references and building the indexes.
    ///
    /// Errors name the file and place the record would have in a city directory (feature
    /// index, or CSV line counting the header as line 1). A device with an empty `grid` gets
    /// the grid at its position.
    pub fn from_parts(
        regions: Vec<Region>,
        grids: Vec<Grid>,
        zones: Vec<Zone>,
        roads: Vec<Road>,
        units: Vec<Unit>,
        devices: Vec<Device>,
    ) -> Result<City, CityError> {
        City::build(
            regions,
            grids,
            zones,
            roads,
            units,
            devices,
            &Lines::default(),
        )
    }

    fn build(
        regions: Vec<Region>,
        grids: Vec<Grid>,
        zones: Vec<Zone>,
        roads: Vec<Road>,
        units: Vec<Unit>,
        mut devices: Vec<Device>,
        lines: &Lines,
    ) -> Result<City, CityError> {
        let device_line =
            |i: usize| format!("line {}", lines.devices.get(i).copied().unwrap_or(i + 2));
        let unit_line = |i: usize| format!("line {}", lines.units.get(i).copied().unwrap_or(i + 2));

        let region_ids = unique_ids(
            files::REGIONS,
            regions.iter().map(|r| r.id.as_str()),
            feature_location,
        )?;
        let grid_ids = unique_ids(
            files::GRIDS,
            grids.iter().map(|g| g.id.as_str()),
            feature_location,
        )?;
        let zone_ids = unique_ids(
            files::ZONES,
            zones.iter().map(|z| z.id.as_str()),
            feature_location,
        )?;
        let road_ids = unique_ids(
            files::ROADS,
            roads.iter().map(|r| r.id.as_str()),
            feature_location,
        )?;
        let unit_ids = unique_ids(files::UNITS, units.iter().map(|u| u.id.as_str()), |i, _| {
            unit_line(i)
        })?;
        let device_ids = unique_ids(
            files::DEVICES,
            devices.iter().map(|d| d.id.as_str()),
            |i, _| device_line(i),
        )?;

        for (i, r) in regions.iter().enumerate() {
            let loc = || feature_location(i, &r.id);
            match (r.level.parent_level(), &r.parent) {
                (None, None) => {}
                (None, Some(p)) => {
                    return Err(invalid(
                        files::REGIONS,
                        loc(),
                        "parent",
                        format!("a district has no parent region (it lies directly in the city), but `{p}` is given; set it to null"),
                    ))
                }
                (Some(want), None) => {
                    return Err(invalid(
                        files::REGIONS,
                        loc(),
                        "parent",
                        format!("a {} needs the id of its {want} as parent", r.level),
                    ))
                }
                (Some(want), Some(p)) => match region_ids.get(p) {
                    None => {
                        return Err(invalid(
                            files::REGIONS,
                            loc(),
                            "parent",
                            format!("region `{p}` does not exist; give the id of a {want} in {}", files::REGIONS),
                        ))
                    }
                    Some(&j) if regions[j as usize].level != want => {
                        return Err(invalid(
                            files::REGIONS,
                            loc(),
                            "parent",
                            format!(
                                "the parent of a {} must be a {want}, but `{p}` is a {}",
                                r.level, regions[j as usize].level
                            ),
                        ))
                    }
                    Some(_) => {}
                },
            }
        }
        for (i, g) in grids.iter().enumerate() {
            if !region_ids.contains_key(&g.region) {
                return Err(invalid(
                    files::GRIDS,
                    feature_location(i, &g.id),
                    "region",
                    format!(
                        "region `{}` does not exist; give the id of a community in {}",
                        g.region,
                        files::REGIONS
                    ),
                ));
            }
        }
        for (i, z) in zones.iter().enumerate() {
            if z.is_corridor() && !z.width_m.is_some_and(|w| w > 0.0) {
                return Err(invalid(
                    files::ZONES,
                    feature_location(i, &z.id),
                    "width_m",
                    format!(
                        "a {} zone needs a positive `width_m` (the corridor's full width in metres)",
                        z.geometry.type_name()
                    ),
                ));
            }
        }
        for (i, u) in units.iter().enumerate() {
            if let Some(r) = &u.region {
                if !region_ids.contains_key(r) {
                    return Err(invalid(
                        files::UNITS,
                        unit_line(i),
                        "region",
                        format!("region `{r}` does not exist; give a region id from {} or leave it empty for the whole city", files::REGIONS),
                    ));
                }
            }
            if let Some(p) = &u.parent_unit {
                if !unit_ids.contains_key(p) {
                    return Err(invalid(
                        files::UNITS,
                        unit_line(i),
                        "parent_unit",
                        format!("unit `{p}` does not exist; give a unit id from {} or leave it empty for the top unit", files::UNITS),
                    ));
                }
            }
            // Walk up: a chain longer than the number of units has a cycle.
            let mut cur = u.parent_unit.as_deref();
            let mut steps = 0;
            while let Some(p) = cur {
                steps += 1;
                if steps > units.len() {
                    return Err(invalid(
                        files::UNITS,
                        unit_line(i),
                        "parent_unit",
                        format!("the chain of parent units starting at `{}` loops; the chain must end at a unit without parent", u.id),
                    ));
                }
                cur = unit_ids
                    .get(p)
                    .and_then(|&j| units[j as usize].parent_unit.as_deref());
            }
        }

        let grid_index = PolygonIndex::new(
            grids
                .iter()
                .enumerate()
                .map(|(i, g)| (g.area.clone(), i as u32)),
        );
        for (i, d) in devices.iter_mut().enumerate() {
            if !(-180.0..=180.0).contains(&d.lon) || !(-90.0..=90.0).contains(&d.lat) {
                return Err(invalid(
                    files::DEVICES,
                    device_line(i),
                    "lon",
                    format!(
                        "({}, {}) is not a WGS84 position; give lon then lat in degrees",
                        d.lon, d.lat
                    ),
                ));
            }
            if d.grid.is_empty() {
                match grid_index.first_containing(d.lon, d.lat) {
                    Some(&g) => d.grid = grids[g as usize].id.clone(),
                    None => {
                        return Err(invalid(
                            files::DEVICES,
                            device_line(i),
                            "grid",
                            format!(
                                "device `{}` at ({}, {}) lies in no grid; give its grid or correct its position",
                                d.id, d.lon, d.lat
                            ),
                        ))
                    }
                }
            } else if !grid_ids.contains_key(&d.grid) {
                return Err(invalid(
                    files::DEVICES,
                    device_line(i),
                    "grid",
                    format!("grid `{}` does not exist; give a grid id from {} or leave it empty to place the device by position", d.grid, files::GRIDS),
                ));
            }
            if let Some(u) = &d.owner_unit {
                if !unit_ids.contains_key(u) {
                    return Err(invalid(
                        files::DEVICES,
                        device_line(i),
                        "owner_unit",
                        format!(
                            "unit `{u}` does not exist; give a unit id from {} or leave it empty",
                            files::UNITS
                        ),
                    ));
                }
            }
        }

        let region_index = Level::ALL.map(|level| {
            PolygonIndex::new(
                regions
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.level == level)
                    .map(|(i, r)| (r.area.clone(), i as u32)),
            )
        });
        let zone_index = PolygonIndex::new(
            zones
                .iter()
                .enumerate()
                .filter_map(|(i, z)| z.geometry.to_multi_polygon().map(|mp| (mp, i as u32))),
        );
        let corridors = zones
            .iter()
            .enumerate()
            .filter(|(_, z)| z.is_corridor())
            .map(|(i, z)| (z.bbox(), i as u32))
            .collect();
        let mut admin_units = HashMap::new();
        for (i, u) in units.iter().enumerate() {
            if let Some(r) = &u.region {
                let admin = region_ids
                    .get(r)
                    .is_some_and(|&j| regions[j as usize].level.as_str() == u.kind);
                if admin {
                    admin_units.entry(r.clone()).or_insert(i as u32);
                }
            }
        }
        let bbox = regions
            .iter()
            .fold(BBox::EMPTY, |b, r| b.union(&r.area.bbox()));

        Ok(City {
            regions,
            grids,
            zones,
            roads,
            units,
            devices,
            grid_index,
            region_index,
            zone_index,
            corridors,
            region_ids,
            grid_ids,
            zone_ids,
            road_ids,
            unit_ids,
            device_ids,
            admin_units,
            bbox,
        })
    }

    /// Writes the city as a city directory, creating the directory when needed.
    ///
    /// The output is deterministic: the same city always gives byte-identical files, one
    /// feature per line in the GeoJSON files.
    pub fn write(&self, dir: &Path) -> Result<(), CityError> {
        fs::create_dir_all(dir).map_err(|source| CityError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let regions = self.regions.iter().map(|r| {
            feature_line(
                &[
                    ("id", Value::from(r.id.as_str())),
                    ("name", Value::from(r.name.as_str())),
                    ("level", Value::from(r.level.as_str())),
                    (
                        "parent",
                        r.parent.as_deref().map_or(Value::Null, Value::from),
                    ),
                ],
                None,
                &area_geometry(&r.area),
            )
        });
        write_file(dir, files::REGIONS, &feature_collection(regions))?;
        let grids = self.grids.iter().map(|g| {
            feature_line(
                &[
                    ("id", Value::from(g.id.as_str())),
                    ("region", Value::from(g.region.as_str())),
                ],
                None,
                &area_geometry(&g.area),
            )
        });
        write_file(dir, files::GRIDS, &feature_collection(grids))?;
        let zones = self.zones.iter().map(|z| {
            let mut props = vec![
                ("id", Value::from(z.id.as_str())),
                ("name", Value::from(z.name.as_str())),
                ("kind", Value::from(z.kind.as_str())),
            ];
            if let Some(w) = z.width_m {
                props.push(("width_m", number(w)));
            }
            feature_line(&props, Some(&z.properties), &z.geometry)
        });
        write_file(dir, files::ZONES, &feature_collection(zones))?;
        let roads = self.roads.iter().map(|r| {
            feature_line(
                &[
                    ("id", Value::from(r.id.as_str())),
                    ("name", Value::from(r.name.as_str())),
                    ("speed_limit_kmh", number(r.speed_limit_kmh)),
                    ("class", Value::from(r.class.as_str())),
                ],
                None,
                &Geometry::LineString(r.line.clone()),
            )
        });
        write_file(dir, files::ROADS, &feature_collection(roads))?;

        let mut devices = String::from("id,kind,lon,lat,grid,owner_unit\n");
        for d in &self.devices {
            csv_row(
                &mut devices,
                &[
                    &d.id,
                    &d.kind,
                    &d.lon.to_string(),
                    &d.lat.to_string(),
                    &d.grid,
                    d.owner_unit.as_deref().unwrap_or(""),
                ],
            );
        }
        write_file(dir, files::DEVICES, &devices)?;
        let mut units = String::from("id,name,kind,region,parent_unit\n");
        for u in &self.units {
            csv_row(
                &mut units,
                &[
                    &u.id,
                    &u.name,
                    &u.kind,
                    u.region.as_deref().unwrap_or(""),
                    u.parent_unit.as_deref().unwrap_or(""),
                ],
            );
        }
        write_file(dir, files::UNITS, &units)
    }

    /// The patrol grid containing the point (indexed; boundary rule of [`crate::geo`]).
    #[inline]
    pub fn grid_at(&self, lon: f64, lat: f64) -> Option<&Grid> {
        self.grid_index
            .first_containing(lon, lat)
            .map(|&i| &self.grids[i as usize])
    }

    /// The region of the given level containing the point (indexed).
    pub fn region_at(&self, lon: f64, lat: f64, level: Level) -> Option<&Region> {
        self.region_index[level.slot()]
            .first_containing(lon, lat)
            .map(|&i| &self.regions[i as usize])
    }

    /// All zones containing the point, areas then corridors, each in file order.
    pub fn zones_at(&self, lon: f64, lat: f64) -> Vec<&Zone> {
        let mut out: Vec<&Zone> = self
            .zone_index
            .containing(lon, lat)
            .map(|&i| &self.zones[i as usize])
            .collect();
        for (b, i) in &self.corridors {
            if b.contains(lon, lat) {
                let z = &self.zones[*i as usize];
                if z.contains(lon, lat) {
                    out.push(z);
                }
            }
        }
        out
    }

    /// The region with this id.
    pub fn region(&self, id: &str) -> Option<&Region> {
        self.region_ids.get(id).map(|&i| &self.regions[i as usize])
    }

    /// The grid with this id.
    pub fn grid(&self, id: &str) -> Option<&Grid> {
        self.grid_ids.get(id).map(|&i| &self.grids[i as usize])
    }

    /// The zone with this id.
    pub fn zone(&self, id: &str) -> Option<&Zone> {
        self.zone_ids.get(id).map(|&i| &self.zones[i as usize])
    }

    /// The road with this id.
    pub fn road(&self, id: &str) -> Option<&Road> {
        self.road_ids.get(id).map(|&i| &self.roads[i as usize])
    }

    /// The unit with this id.
    pub fn unit(&self, id: &str) -> Option<&Unit> {
        self.unit_ids.get(id).map(|&i| &self.units[i as usize])
    }

    /// The registered device with this id.
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.device_ids.get(id).map(|&i| &self.devices[i as usize])
    }

    /// The region and its ancestors, innermost first (community, street, district).
    pub fn region_chain(&self, id: &str) -> Vec<&Region> {
        let mut out = Vec::new();
        let mut cur = self.region(id);
        while let Some(r) = cur {
            out.push(r);
            if out.len() > self.regions.len() {
                break;
            }
            cur = r.parent.as_deref().and_then(|p| self.region(p));
        }
        out
    }

    /// The administrative unit of a region: the first unit whose `region` is the region and
    /// whose `kind` is the region's level (`community`, `street` or `district`).
    pub fn unit_for_region(&self, region: &str) -> Option<&Unit> {
        self.admin_units
            .get(region)
            .map(|&i| &self.units[i as usize])
    }

    /// The unit responsible for a grid: the administrative unit of the grid's region, or of
    /// the nearest ancestor region that has one.
    pub fn grid_unit(&self, grid: &str) -> Option<&Unit> {
        let grid = self.grid(grid)?;
        self.region_chain(&grid.region)
            .into_iter()
            .find_map(|r| self.unit_for_region(&r.id))
    }

    /// The unit and the units above it, in escalation order (the unit first, the top last).
    pub fn unit_chain(&self, id: &str) -> Vec<&Unit> {
        let mut out = Vec::new();
        let mut cur = self.unit(id);
        while let Some(u) = cur {
            out.push(u);
            if out.len() > self.units.len() {
                break;
            }
            cur = u.parent_unit.as_deref().and_then(|p| self.unit(p));
        }
        out
    }

    /// The extent of all regions ([`BBox::EMPTY`] for a city without regions).
    pub fn bbox(&self) -> BBox {
        self.bbox
    }

    /// Whether the point is in the city's extent grown by [`CONTAINS_MARGIN_M`]: a cheap
    /// plausibility check for positions (e.g. to catch swapped lon/lat or a wrong CRS).
    pub fn contains(&self, lon: f64, lat: f64) -> bool {
        self.bbox.expand_m(CONTAINS_MARGIN_M).contains(lon, lat)
    }
}

fn unique_ids<'a>(
    file: &str,
    ids: impl Iterator<Item = &'a str>,
    location: impl Fn(usize, &str) -> String,
) -> Result<HashMap<String, u32>, CityError> {
    let mut map: HashMap<String, u32> = HashMap::new();
    for (i, id) in ids.enumerate() {
        if id.is_empty() {
            return Err(invalid(
                file,
                location(i, id),
                "id",
                "the id is empty; every record needs a unique id",
            ));
        }
        if let Some(first) = map.insert(id.to_string(), i as u32) {
            return Err(invalid(
                file,
                location(i, id),
                "id",
                format!(
                    "id `{id}` is used twice (also by {}); ids must be unique",
                    location(first as usize, id)
                ),
            ));
        }
    }
    Ok(map)
}

// ---------------------------------------------------------------------------------------
// GeoJSON features

/// One feature as read: its index, properties and geometry.
struct Feature {
    file: &'static str,
    index: usize,
    id: String,
    props: Map<String, Value>,
    geometry: Value,
}

impl Feature {
    fn location(&self) -> String {
        feature_location(self.index, &self.id)
    }

    fn err(&self, field: &str, message: impl Into<String>) -> CityError {
        invalid(self.file, self.location(), field, message)
    }

    fn string(&self, name: &str) -> Result<String, CityError> {
        match self.props.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            None | Some(Value::Null) => {
                Err(self.err(name, "missing; add it to the feature's properties"))
            }
            Some(other) => Err(self.err(name, format!("expected a string, found {other}"))),
        }
    }

    fn opt_string(&self, name: &str) -> Result<Option<String>, CityError> {
        match self.props.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            _ => self.string(name).map(Some),
        }
    }

    fn opt_number(&self, name: &str) -> Result<Option<f64>, CityError> {
        match self.props.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map(Some)
                .map_err(|_| self.err(name, format!("`{s}` is not a number"))),
            Some(other) => Err(self.err(name, format!("expected a number, found {other}"))),
        }
    }

    fn geometry(&self) -> Result<Geometry, CityError> {
        if self.geometry.is_null() {
            return Err(self.err("geometry", "missing; every feature needs a geometry"));
        }
        Geometry::from_geojson(&self.geometry).map_err(|e| {
            let field = if e.path.is_empty() {
                "geometry".to_string()
            } else {
                format!("geometry.{}", e.path)
            };
            self.err(&field, e.message)
        })
    }

    fn area(&self) -> Result<MultiPolygon, CityError> {
        let g = self.geometry()?;
        g.to_multi_polygon().ok_or_else(|| {
            self.err(
                "geometry",
                format!(
                    "expected a Polygon or MultiPolygon, found a {}",
                    g.type_name()
                ),
            )
        })
    }
}

fn read_text(dir: &Path, file: &str) -> Result<Option<String>, CityError> {
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim_start_matches('\u{feff}').to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CityError::Read { path, source }),
    }
}

fn read_features(
    dir: &Path,
    file: &'static str,
    required: bool,
) -> Result<Vec<Feature>, CityError> {
    let Some(text) = read_text(dir, file)? else {
        if required {
            return Err(CityError::Read {
                path: dir.join(file),
                source: io::Error::new(io::ErrorKind::NotFound, "file not found"),
            });
        }
        return Ok(Vec::new());
    };
    let root: Value = serde_json::from_str(&text).map_err(|e| {
        invalid(
            file,
            format!("line {} column {}", e.line(), e.column()),
            "",
            format!("not valid JSON ({e}); the file must be a GeoJSON FeatureCollection"),
        )
    })?;
    let whole = "whole file";
    if root.get("type").and_then(Value::as_str) != Some("FeatureCollection") {
        return Err(invalid(
            file,
            whole,
            "type",
            "expected a GeoJSON object with \"type\": \"FeatureCollection\"",
        ));
    }
    let Some(Value::Array(features)) = root.get("features") else {
        return Err(invalid(
            file,
            whole,
            "features",
            "expected an array of features",
        ));
    };
    let mut out = Vec::with_capacity(features.len());
    for (index, f) in features.iter().enumerate() {
        let Some(obj) = f.as_object() else {
            return Err(invalid(
                file,
                feature_location(index, ""),
                "",
                "expected a GeoJSON Feature object",
            ));
        };
        let props = match obj.get("properties") {
            Some(Value::Object(m)) => m.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(_) => {
                return Err(invalid(
                    file,
                    feature_location(index, ""),
                    "properties",
                    "expected an object",
                ))
            }
        };
        let id = match props.get("id").or_else(|| obj.get("id")) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        out.push(Feature {
            file,
            index,
            id,
            props,
            geometry: obj.get("geometry").cloned().unwrap_or(Value::Null),
        });
    }
    Ok(out)
}

fn parse_region(f: Feature) -> Result<Region, CityError> {
    let level = f.string("level")?;
    Ok(Region {
        id: f.string("id")?,
        name: f.opt_string("name")?.unwrap_or_default(),
        level: level.parse().map_err(|m: String| f.err("level", m))?,
        parent: f.opt_string("parent")?,
        area: f.area()?,
    })
}

fn parse_grid(f: Feature) -> Result<Grid, CityError> {
    Ok(Grid {
        id: f.string("id")?,
        region: f.string("region")?,
        area: f.area()?,
    })
}

impl Zone {
    /// A zone from one GeoJSON Feature with the properties of `zones.geojson` (`id`,
    /// `name`, `kind`, `width_m` for a corridor), e.g. one drawn in the console.
    pub fn from_feature(feature: &Value) -> Result<Zone, CityError> {
        let props = feature.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
        let id = props.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let geometry = feature.get("geometry").cloned().unwrap_or(Value::Null);
        parse_zone(Feature { file: files::ZONES, index: 0, id, props, geometry })
    }
}

impl City {
    /// The same city with `zone` added, or in place of the zone with its id.
    pub fn with_zone(&self, zone: Zone) -> Result<City, CityError> {
        let mut zones = self.zones.clone();
        match zones.iter_mut().find(|z| z.id == zone.id) {
            Some(old) => *old = zone,
            None => zones.push(zone),
        }
        City::from_parts(self.regions.clone(), self.grids.clone(), zones, self.roads.clone(), self.units.clone(), self.devices.clone())
    }

    /// The same city without zone `id`; None when it has no such zone.
    pub fn without_zone(&self, id: &str) -> Option<Result<City, CityError>> {
        let zones: Vec<Zone> = self.zones.iter().filter(|z| z.id != id).cloned().collect();
        (zones.len() < self.zones.len()).then(|| {
            City::from_parts(self.regions.clone(), self.grids.clone(), zones, self.roads.clone(), self.units.clone(), self.devices.clone())
        })
    }
}

fn parse_zone(f: Feature) -> Result<Zone, CityError> {
    let mut properties = f.props.clone();
    for known in ["id", "name", "kind", "width_m"] {
        properties.remove(known);
    }
    let width_m = f.opt_number("width_m")?;
    if let Some(w) = width_m {
        if w <= 0.0 || !w.is_finite() {
            return Err(f.err("width_m", format!("{w} is not a positive width in metres")));
        }
    }
    Ok(Zone {
        id: f.string("id")?,
        name: f.opt_string("name")?.unwrap_or_default(),
        kind: f.string("kind")?,
        geometry: f.geometry()?,
        width_m,
        properties,
    })
}

fn parse_road(f: Feature) -> Result<Road, CityError> {
    let line = match f.geometry()? {
        Geometry::LineString(l) => l,
        g => {
            return Err(f.err(
                "geometry",
                format!("a road is a LineString, found a {}", g.type_name()),
            ))
        }
    };
    let speed = f
        .opt_number("speed_limit_kmh")?
        .ok_or_else(|| f.err("speed_limit_kmh", "missing; give the posted limit in km/h"))?;
    if speed <= 0.0 || !speed.is_finite() {
        return Err(f.err(
            "speed_limit_kmh",
            format!("{speed} is not a speed limit; give km/h above 0"),
        ));
    }
    Ok(Road {
        id: f.string("id")?,
        name: f.opt_string("name")?.unwrap_or_default(),
        speed_limit_kmh: speed,
        class: f
            .opt_string("class")?
            .unwrap_or_else(|| "local".to_string()),
        line,
    })
}

fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

fn area_geometry(area: &MultiPolygon) -> Geometry {
    match area.polygons.as_slice() {
        [one] => Geometry::Polygon(one.clone()),
        _ => Geometry::MultiPolygon(area.clone()),
    }
}

fn feature_line(
    props: &[(&str, Value)],
    extra: Option<&Map<String, Value>>,
    geometry: &Geometry,
) -> String {
    let mut out = String::from("{\"type\":\"Feature\",\"properties\":{");
    let mut first = true;
    let mut push = |k: &str, v: &Value, out: &mut String| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&Value::from(k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    };
    for (k, v) in props {
        push(k, v, &mut out);
    }
    if let Some(extra) = extra {
        for (k, v) in extra {
            push(k, v, &mut out);
        }
    }
    out.push_str("},\"geometry\":");
    out.push_str(&geometry.to_geojson_string());
    out.push('}');
    out
}

fn feature_collection(features: impl Iterator<Item = String>) -> String {
    let mut out = String::from("{\"type\":\"FeatureCollection\",\"features\":[\n");
    let mut first = true;
    for f in features {
        if !first {
            out.push_str(",\n");
        }
        first = false;
        out.push_str(&f);
    }
    out.push_str("\n]}\n");
    out
}

fn write_file(dir: &Path, file: &str, text: &str) -> Result<(), CityError> {
    let path = dir.join(file);
    fs::write(&path, text).map_err(|source| CityError::Write { path, source })
}

// ---------------------------------------------------------------------------------------
// CSV (RFC 4180: quoted fields, doubled quotes, CRLF or LF)

/// Splits CSV text into records, each with the line it starts on (1-based).
fn parse_csv(file: &str, text: &str) -> Result<Vec<(usize, Vec<String>)>, CityError> {
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut record_line = 1;
    let mut in_quotes = false;
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut at_record_start = true;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        if at_record_start {
            record_line = line;
            at_record_start = false;
        }
        match c {
            '"' if field.is_empty() && !quoted => {
                in_quotes = true;
                quoted = true;
            }
            '"' => {
                return Err(invalid(
                    file,
                    format!("line {line}"),
                    "",
                    "a quote inside an unquoted field; quote the whole field and double the quote (\"\")",
                ))
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                quoted = false;
            }
            '\r' => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                quoted = false;
                if !(fields.len() == 1 && fields[0].trim().is_empty()) {
                    records.push((record_line, std::mem::take(&mut fields)));
                }
                fields.clear();
                line += 1;
                at_record_start = true;
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(invalid(
            file,
            format!("line {record_line}"),
            "",
            "a quoted field is not closed; add the closing quote",
        ));
    }
    if !at_record_start {
        fields.push(field);
        if !(fields.len() == 1 && fields[0].trim().is_empty()) {
            records.push((record_line, fields));
        }
    }
    Ok(records)
}

fn csv_row(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if f.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push('\n');
}

/// Reads a CSV file with the given columns (in any order; extra columns are ignored) into
/// rows of those columns, with their line numbers. A missing file gives no rows.
fn read_table(
    dir: &Path,
    file: &str,
    columns: &[&str],
) -> Result<Vec<(usize, Vec<String>)>, CityError> {
    let Some(text) = read_text(dir, file)? else {
        return Ok(Vec::new());
    };
    let mut records = parse_csv(file, &text)?.into_iter();
    let Some((header_line, header)) = records.next() else {
        return Ok(Vec::new());
    };
    let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    let mut positions = Vec::with_capacity(columns.len());
    for col in columns {
        match header.iter().position(|h| h == col) {
            Some(p) => positions.push(p),
            None => {
                return Err(invalid(
                    file,
                    format!("line {header_line}"),
                    col,
                    format!(
                        "the header has no column `{col}`; the header must name the columns {}",
                        columns.join(",")
                    ),
                ))
            }
        }
    }
    records
        .map(|(line, fields)| {
            if fields.len() != header.len() {
                return Err(invalid(
                    file,
                    format!("line {line}"),
                    "",
                    format!(
                        "{} fields, but the header has {}; quote fields that contain commas",
                        fields.len(),
                        header.len()
                    ),
                ));
            }
            Ok((
                line,
                positions
                    .iter()
                    .map(|&p| fields[p].trim().to_string())
                    .collect(),
            ))
        })
        .collect()
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

fn read_units(dir: &Path, lines: &mut Vec<usize>) -> Result<Vec<Unit>, CityError> {
    let rows = read_table(
        dir,
        files::UNITS,
        &["id", "name", "kind", "region", "parent_unit"],
    )?;
    let mut units = Vec::with_capacity(rows.len());
    for (line, mut f) in rows {
        let parent_unit = non_empty(f.pop().unwrap_or_default());
        let region = non_empty(f.pop().unwrap_or_default());
        let kind = f.pop().unwrap_or_default();
        let name = f.pop().unwrap_or_default();
        let id = f.pop().unwrap_or_default();
        if kind.is_empty() {
            return Err(invalid(files::UNITS, format!("line {line}"), "kind", "empty; give city, district, street, community, fire, police, maintenance or a kind of your own"));
        }
        lines.push(line);
        units.push(Unit {
            id,
            name,
            kind,
            region,
            parent_unit,
        });
    }
    Ok(units)
}

fn read_devices(dir: &Path, lines: &mut Vec<usize>) -> Result<Vec<Device>, CityError> {
    let rows = read_table(
        dir,
        files::DEVICES,
        &["id", "kind", "lon", "lat", "grid", "owner_unit"],
    )?;
    let mut devices = Vec::with_capacity(rows.len());
    for (line, f) in rows {
        let coord = |i: usize, name: &str| {
            f[i].parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    invalid(
                        files::DEVICES,
                        format!("line {line}"),
                        name,
                        format!("`{}` is not a number in degrees", f[i]),
                    )
                })
        };
        let lon = coord(2, "lon")?;
        let lat = coord(3, "lat")?;
        if f[1].is_empty() {
            return Err(invalid(
                files::DEVICES,
                format!("line {line}"),
                "kind",
                "empty; give the device kind, e.g. smoke or anpr",
            ));
        }
        lines.push(line);
        devices.push(Device {
            id: f[0].clone(),
            kind: f[1].clone(),
            lon,
            lat,
            grid: f[4].clone(),
            owner_unit: non_empty(f[5].clone()),
        });
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::Polygon;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("cityward-city-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn rect(x0: f64, y0: f64, x1: f64, y1: f64) -> MultiPolygon {
        Polygon::rect(BBox::new(x0, y0, x1, y1)).into()
    }

    /// One district, one street, two communities side by side, two grids each.
    fn tiny() -> City {
        let region = |id: &str, level, parent: Option<&str>, area| Region {
            id: id.into(),
            name: format!("{id} name"),
            level,
            parent: parent.map(Into::into),
            area,
        };
        let regions = vec![
            region(
                "d1",
                Level::District,
                None,
                rect(121.50, 29.80, 121.60, 29.90),
            ),
            region(
                "d1-s1",
                Level::Street,
                Some("d1"),
                rect(121.50, 29.80, 121.60, 29.90),
            ),
            region(
                "d1-s1-c1",
                Level::Community,
                Some("d1-s1"),
                rect(121.50, 29.80, 121.55, 29.90),
            ),
            region(
                "d1-s1-c2",
                Level::Community,
                Some("d1-s1"),
                rect(121.55, 29.80, 121.60, 29.90),
            ),
        ];
        let grid = |id: &str, region: &str, area| Grid {
            id: id.into(),
            region: region.into(),
            area,
        };
        let grids = vec![
            grid("g1", "d1-s1-c1", rect(121.50, 29.80, 121.55, 29.85)),
            grid("g2", "d1-s1-c1", rect(121.50, 29.85, 121.55, 29.90)),
            grid("g3", "d1-s1-c2", rect(121.55, 29.80, 121.60, 29.85)),
            grid("g4", "d1-s1-c2", rect(121.55, 29.85, 121.60, 29.90)),
        ];
        let mut props = Map::new();
        props.insert("capacity".into(), Value::from(2000));
        let zones = vec![
            Zone {
                id: "square-1".into(),
                name: "Tianyi Square, \"the\" square".into(),
                kind: "square".into(),
                geometry: Geometry::Polygon(Polygon::new(
                    vec![
                        (121.51, 29.81),
                        (121.54, 29.81),
                        (121.54, 29.84),
                        (121.51, 29.84),
                    ],
                    vec![vec![
                        (121.52, 29.82),
                        (121.53, 29.82),
                        (121.53, 29.83),
                        (121.52, 29.83),
                    ]],
                )),
                width_m: None,
                properties: props,
            },
            Zone {
                id: "corridor-1".into(),
                name: "Hazmat route 1".into(),
                kind: "corridor".into(),
                geometry: Geometry::LineString(vec![(121.50, 29.86), (121.60, 29.86)]),
                width_m: Some(100.0),
                properties: Map::new(),
            },
        ];
        let roads = vec![Road {
            id: "road-1".into(),
            name: "Zhongshan Road".into(),
            speed_limit_kmh: 60.0,
            class: "arterial".into(),
            line: vec![(121.50, 29.86), (121.60, 29.86)],
        }];
        let unit = |id: &str, kind: &str, region: Option<&str>, parent: Option<&str>| Unit {
            id: id.into(),
            name: format!("{id}, office"),
            kind: kind.into(),
            region: region.map(Into::into),
            parent_unit: parent.map(Into::into),
        };
        let units = vec![
            unit("u-city", "city", None, None),
            unit("u-d1", "district", Some("d1"), Some("u-city")),
            unit("u-d1-s1", "street", Some("d1-s1"), Some("u-d1")),
            unit("u-c1", "community", Some("d1-s1-c1"), Some("u-d1-s1")),
            unit("fire-d1", "fire", Some("d1"), Some("u-d1")),
        ];
        let devices = vec![
            Device {
                id: "smoke-1".into(),
                kind: "smoke".into(),
                lon: 121.52,
                lat: 29.86,
                grid: "g2".into(),
                owner_unit: Some("u-c1".into()),
            },
            Device {
                id: "gas-1".into(),
                kind: "gas".into(),
                lon: 121.57,
                lat: 29.82,
                grid: String::new(),
                owner_unit: None,
            },
        ];
        City::from_parts(regions, grids, zones, roads, units, devices).unwrap()
    }

    #[test]
    fn point_lookups_find_the_right_places() {
        let city = tiny();
        assert_eq!(city.grid_at(121.52, 29.82).unwrap().id, "g1");
        assert_eq!(city.grid_at(121.58, 29.88).unwrap().id, "g4");
        // On the shared edge between g1 and g3 the eastern grid wins.
        assert_eq!(city.grid_at(121.55, 29.82).unwrap().id, "g3");
        assert!(city.grid_at(121.7, 29.82).is_none());
        assert_eq!(
            city.region_at(121.58, 29.82, Level::Community).unwrap().id,
            "d1-s1-c2"
        );
        assert_eq!(
            city.region_at(121.58, 29.82, Level::District).unwrap().id,
            "d1"
        );
        // The device with an empty grid got the grid at its position.
        assert_eq!(city.device("gas-1").unwrap().grid, "g3");
        let zones: Vec<&str> = city
            .zones_at(121.515, 29.86)
            .iter()
            .map(|z| z.id.as_str())
            .collect();
        assert_eq!(zones, ["corridor-1"]);
        let zones: Vec<&str> = city
            .zones_at(121.515, 29.815)
            .iter()
            .map(|z| z.id.as_str())
            .collect();
        assert_eq!(zones, ["square-1"]);
        assert!(city.zones_at(121.525, 29.825).is_empty(), "inside the hole");
        assert!(city.contains(121.60, 29.905));
        assert!(!city.contains(121.9, 29.85));
    }

    #[test]
    fn units_escalate_up_the_chain() {
        let city = tiny();
        let chain: Vec<&str> = city
            .unit_chain("u-c1")
            .iter()
            .map(|u| u.id.as_str())
            .collect();
        assert_eq!(chain, ["u-c1", "u-d1-s1", "u-d1", "u-city"]);
        assert_eq!(city.grid_unit("g1").unwrap().id, "u-c1");
        // Community c2 has no unit of its own: its street answers.
        assert_eq!(city.grid_unit("g3").unwrap().id, "u-d1-s1");
        assert_eq!(city.unit_for_region("d1").unwrap().id, "u-d1");
    }

    #[test]
    fn write_then_load_gives_the_same_city_and_the_same_bytes() {
        let city = tiny();
        let dir = TempDir::new("roundtrip");
        city.write(&dir.0).unwrap();
        let loaded = City::load(&dir.0).unwrap();
        assert_eq!(loaded, city);
        let first = fs::read(dir.0.join(files::ZONES)).unwrap();
        loaded.write(&dir.0).unwrap();
        assert_eq!(fs::read(dir.0.join(files::ZONES)).unwrap(), first);
        assert_eq!(
            loaded.zone("square-1").unwrap().properties["capacity"],
            2000
        );
        assert_eq!(loaded.unit("u-c1").unwrap().name, "u-c1, office");
    }

    #[test]
    fn errors_name_file_place_and_field() {
        let city = tiny();
        let dir = TempDir::new("errors");
        city.write(&dir.0).unwrap();

        let regions = fs::read_to_string(dir.0.join(files::REGIONS)).unwrap();
        fs::write(
            dir.0.join(files::REGIONS),
            regions.replace("\"level\":\"street\"", "\"level\":\"town\""),
        )
        .unwrap();
        let err = City::load(&dir.0).unwrap_err().to_string();
        assert!(
            err.contains("regions.geojson")
                && err.contains("feature 1 (id `d1-s1`)")
                && err.contains("`level`"),
            "{err}"
        );
        assert!(err.contains("district, street or community"), "{err}");
        fs::write(dir.0.join(files::REGIONS), regions).unwrap();

        let devices = fs::read_to_string(dir.0.join(files::DEVICES)).unwrap();
        fs::write(dir.0.join(files::DEVICES), devices.replace(",g3,", ",g9,")).unwrap();
        let err = City::load(&dir.0).unwrap_err().to_string();
        assert!(
            err.contains("devices.csv, line 3, field `grid`: grid `g9` does not exist"),
            "{err}"
        );
        fs::write(
            dir.0.join(files::DEVICES),
            devices.replace("121.57", "east"),
        )
        .unwrap();
        let err = City::load(&dir.0).unwrap_err().to_string();
        assert!(err.contains("line 3, field `lon`"), "{err}");
        fs::write(dir.0.join(files::DEVICES), devices).unwrap();

        let zones = fs::read_to_string(dir.0.join(files::ZONES)).unwrap();
        fs::write(
            dir.0.join(files::ZONES),
            zones.replace(",\"width_m\":100", ""),
        )
        .unwrap();
        let err = City::load(&dir.0).unwrap_err().to_string();
        assert!(
            err.contains("zones.geojson, feature 1 (id `corridor-1`), field `width_m`"),
            "{err}"
        );
        fs::write(dir.0.join(files::ZONES), zones).unwrap();

        fs::remove_file(dir.0.join(files::GRIDS)).unwrap();
        let err = City::load(&dir.0).unwrap_err().to_string();
        assert!(
            err.contains("grids.geojson") && err.contains("cityward city generate"),
            "{err}"
        );
    }

    #[test]
    fn references_are_checked() {
        let city = tiny();
        let mut units = city.units.clone();
        units[0].parent_unit = Some("u-c1".into());
        let err = City::from_parts(
            city.regions.clone(),
            city.grids.clone(),
            vec![],
            vec![],
            units,
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("units.csv, line 2, field `parent_unit`") && err.contains("loops"),
            "{err}"
        );
        let mut regions = city.regions.clone();
        regions[3].parent = Some("d1".into());
        let err = City::from_parts(regions, vec![], vec![], vec![], vec![], vec![])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("must be a street, but `d1` is a district"),
            "{err}"
        );
        let mut grids = city.grids.clone();
        grids.push(grids[0].clone());
        let err = City::from_parts(city.regions.clone(), grids, vec![], vec![], vec![], vec![])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("feature 4 (id `g1`)") && err.contains("used twice"),
            "{err}"
        );
    }

    #[test]
    fn csv_handles_quotes_and_blank_lines() {
        let rows = parse_csv(
            "x.csv",
            "a,b\r\n\"1,2\",\"say \"\"hi\"\"\"\n\n3,\"multi\nline\"\n4,5",
        )
        .unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[1],
            (2, vec!["1,2".to_string(), "say \"hi\"".to_string()])
        );
        assert_eq!(rows[2].0, 4);
        assert_eq!(rows[3], (6, vec!["4".to_string(), "5".to_string()]));
        assert!(parse_csv("x.csv", "a,\"b\n").is_err());
    }
}
