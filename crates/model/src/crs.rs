//! Coordinate systems used by Chinese map providers, and their conversion to WGS84.
//!
//! GCJ-02 is the obfuscated datum that maps published in China must use; BD-09 is Baidu's
//! further offset of GCJ-02. Devices and apps built on those maps report positions in them,
//! so intake converts every tagged position to WGS84 before it is stored or evaluated.
//! The forward transforms follow the published formulae; the inverses are computed by
//! fixed-point iteration, accurate to well below a millimetre rather than the 1–2 m of the
//! common one-step approximation.

use serde::{Deserialize, Serialize};

/// The coordinate system of an event's `lon`/`lat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Crs {
    /// WGS84, as GPS receivers report it. The stored form.
    #[default]
    Wgs84,
    /// GCJ-02 ("Mars coordinates"), used by AMap/Tencent and most apps in China.
    Gcj02,
    /// BD-09, used by Baidu Maps.
    Bd09,
}

impl Crs {
    /// Whether this is WGS84 (serde helper: WGS84 is not written out).
    pub fn is_wgs84(&self) -> bool {
        *self == Crs::Wgs84
    }

    /// Parses `wgs84`, `gcj02` or `bd09` (case-insensitive).
    pub fn parse(text: &str) -> Option<Crs> {
        match text.to_ascii_lowercase().as_str() {
            "wgs84" => Some(Crs::Wgs84),
            "gcj02" => Some(Crs::Gcj02),
            "bd09" => Some(Crs::Bd09),
            _ => None,
        }
    }

    /// Converts `(lon, lat)` in this system to WGS84.
    pub fn to_wgs84(self, lon: f64, lat: f64) -> (f64, f64) {
        match self {
            Crs::Wgs84 => (lon, lat),
            Crs::Gcj02 => gcj02_to_wgs84(lon, lat),
            Crs::Bd09 => bd09_to_wgs84(lon, lat),
        }
    }
}

const KRASOVSKY_A: f64 = 6_378_245.0;
const KRASOVSKY_EE: f64 = 0.006_693_421_622_965_943;
const BD_X_PI: f64 = std::f64::consts::PI * 3000.0 / 180.0;

/// GCJ-02 leaves positions outside mainland China unchanged; this is the usual rough box.
fn outside_china(lon: f64, lat: f64) -> bool {
    !(72.004..=137.8347).contains(&lon) || !(0.8293..=55.8271).contains(&lat)
}

fn offset_lat(x: f64, y: f64) -> f64 {
    use std::f64::consts::PI;
    let mut d = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * x.abs().sqrt();
    d += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    d += (20.0 * (y * PI).sin() + 40.0 * (y / 3.0 * PI).sin()) * 2.0 / 3.0;
    d += (160.0 * (y / 12.0 * PI).sin() + 320.0 * (y * PI / 30.0).sin()) * 2.0 / 3.0;
    d
}

fn offset_lon(x: f64, y: f64) -> f64 {
    use std::f64::consts::PI;
    let mut d = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * x.abs().sqrt();
    d += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    d += (20.0 * (x * PI).sin() + 40.0 * (x / 3.0 * PI).sin()) * 2.0 / 3.0;
    d += (150.0 * (x / 12.0 * PI).sin() + 300.0 * (x / 30.0 * PI).sin()) * 2.0 / 3.0;
    d
}

/// WGS84 → GCJ-02 (the published forward transform).
pub fn wgs84_to_gcj02(lon: f64, lat: f64) -> (f64, f64) {
    use std::f64::consts::PI;
    if outside_china(lon, lat) {
        return (lon, lat);
    }
    let rad_lat = lat / 180.0 * PI;
    let magic = 1.0 - KRASOVSKY_EE * rad_lat.sin() * rad_lat.sin();
    let sqrt_magic = magic.sqrt();
    let d_lat = offset_lat(lon - 105.0, lat - 35.0) * 180.0
        / ((KRASOVSKY_A * (1.0 - KRASOVSKY_EE)) / (magic * sqrt_magic) * PI);
    let d_lon = offset_lon(lon - 105.0, lat - 35.0) * 180.0
        / (KRASOVSKY_A / sqrt_magic * rad_lat.cos() * PI);
    (lon + d_lon, lat + d_lat)
}

/// GCJ-02 → WGS84, inverting [`wgs84_to_gcj02`] by iteration to < 1e-9°.
pub fn gcj02_to_wgs84(lon: f64, lat: f64) -> (f64, f64) {
    if outside_china(lon, lat) {
        return (lon, lat);
    }
    let (mut wlon, mut wlat) = (lon, lat);
    for _ in 0..30 {
        let (glon, glat) = wgs84_to_gcj02(wlon, wlat);
        let (dlon, dlat) = (glon - lon, glat - lat);
        wlon -= dlon;
        wlat -= dlat;
        if dlon.abs() < 1e-10 && dlat.abs() < 1e-10 {
            break;
        }
    }
    (wlon, wlat)
}

fn gcj02_to_bd09(lon: f64, lat: f64) -> (f64, f64) {
    let z = (lon * lon + lat * lat).sqrt() + 0.00002 * (lat * BD_X_PI).sin();
    let theta = lat.atan2(lon) + 0.000003 * (lon * BD_X_PI).cos();
    (z * theta.cos() + 0.0065, z * theta.sin() + 0.006)
}

/// BD-09 → GCJ-02: the published one-step formula, refined by iteration until
/// [`gcj02_to_bd09`] maps the result back to the input.
fn bd09_to_gcj02(lon: f64, lat: f64) -> (f64, f64) {
    let (mut glon, mut glat) = bd09_to_gcj02_one_step(lon, lat);
    for _ in 0..30 {
        let (blon, blat) = gcj02_to_bd09(glon, glat);
        let (dlon, dlat) = (blon - lon, blat - lat);
        glon -= dlon;
        glat -= dlat;
        if dlon.abs() < 1e-11 && dlat.abs() < 1e-11 {
            break;
        }
    }
    (glon, glat)
}

fn bd09_to_gcj02_one_step(lon: f64, lat: f64) -> (f64, f64) {
    let x = lon - 0.0065;
    let y = lat - 0.006;
    let z = (x * x + y * y).sqrt() - 0.00002 * (y * BD_X_PI).sin();
    let theta = y.atan2(x) - 0.000003 * (x * BD_X_PI).cos();
    (z * theta.cos(), z * theta.sin())
}

/// WGS84 → BD-09.
pub fn wgs84_to_bd09(lon: f64, lat: f64) -> (f64, f64) {
    let (glon, glat) = wgs84_to_gcj02(lon, lat);
    gcj02_to_bd09(glon, glat)
}

/// BD-09 → WGS84.
pub fn bd09_to_wgs84(lon: f64, lat: f64) -> (f64, f64) {
    let (glon, glat) = bd09_to_gcj02(lon, lat);
    gcj02_to_wgs84(glon, glat)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: (f64, f64), b: (f64, f64), tol: f64) -> bool {
        (a.0 - b.0).abs() < tol && (a.1 - b.1).abs() < tol
    }

    // Reference values published with the widely used `coordtransform` library
    // (Tiananmen, 116.404 E 39.915 N).
    #[test]
    fn forward_transforms_match_published_reference_points() {
        let gcj = wgs84_to_gcj02(116.404, 39.915);
        assert!(
            close(gcj, (116.41024449916938, 39.91640428150164), 1e-12),
            "{gcj:?}"
        );
        let bd = gcj02_to_bd09(116.404, 39.915);
        assert!(
            close(bd, (116.41036949371029, 39.92133699351021), 1e-12),
            "{bd:?}"
        );
        let back = bd09_to_gcj02_one_step(116.404, 39.915);
        assert!(
            close(back, (116.39762729119315, 39.90865673957631), 1e-12),
            "{back:?}"
        );
        // The refined inverse stays within the one-step formula's error of it.
        assert!(close(bd09_to_gcj02(116.404, 39.915), back, 2e-5));
    }

    #[test]
    fn inverse_agrees_with_the_one_step_reference_within_its_error() {
        // The published one-step inverse is off by up to ~2 m; ours must be within that
        // of it, and exact under the forward transform.
        let wgs = gcj02_to_wgs84(116.404, 39.915);
        assert!(
            close(wgs, (116.39775550083061, 39.91359571849836), 3e-5),
            "{wgs:?}"
        );
        assert!(close(wgs84_to_gcj02(wgs.0, wgs.1), (116.404, 39.915), 1e-9));
    }

    #[test]
    fn round_trips_across_ningbo_and_shanghai() {
        for &(lon, lat) in &[(121.55, 29.87), (121.4737, 31.2304), (121.2654, 31.3751)] {
            let g = wgs84_to_gcj02(lon, lat);
            assert!(!close(g, (lon, lat), 1e-4), "GCJ-02 offsets inside China");
            assert!(close(gcj02_to_wgs84(g.0, g.1), (lon, lat), 1e-9));
            let b = wgs84_to_bd09(lon, lat);
            assert!(close(bd09_to_wgs84(b.0, b.1), (lon, lat), 1e-8));
            assert!(close(Crs::Bd09.to_wgs84(b.0, b.1), (lon, lat), 1e-8));
        }
    }

    #[test]
    fn outside_china_is_unchanged() {
        assert_eq!(wgs84_to_gcj02(-2.98, 53.40), (-2.98, 53.40));
        assert_eq!(Crs::parse("GCJ02"), Some(Crs::Gcj02));
        assert_eq!(Crs::parse("utm"), None);
    }
}
