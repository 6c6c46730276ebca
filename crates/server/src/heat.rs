//! The map's heat layer: `GET /api/v1/city/heat?of=events|alerts&since=&until=&res=7|8|9`
//! answers H3 hexagons (GeoJSON polygons, property `count`) over a time range (default
//! the last 24 hours).
//!
//! Events are counted in the lake first on a 0.001° grid (about 100 m, finer than any
//! offered hexagon), so the query returns at most a few hundred thousand rows however
//! many events there are; alerts are those the caller may see. Counts only: no event or
//! source leaves here.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cityward_model::format_time;
use cityward_store::AlertFilter;
use h3o::{CellIndex, LatLng, Resolution};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{blocking, require, ApiError, ApiQuery, Caller, ALERT_NEED, ALERT_ROLES};
use crate::node::{Node, NodeError};

/// Grid cells read from the lake at most.
const MAX_CELLS: usize = 500_000;

/// The heat route; `crate::http::router` merges it.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new().route("/api/v1/city/heat", get(heat))
}

#[derive(Deserialize)]
struct HeatQuery {
    of: Option<String>,
    since: Option<String>,
    until: Option<String>,
    res: Option<u8>,
}

async fn heat(State(node): State<Arc<Node>>, Caller(user): Caller, ApiQuery(q): ApiQuery<HeatQuery>) -> Result<Response, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    let (since, until) = crate::stats::time_range(q.since.as_deref(), q.until.as_deref())?;
    let res = match q.res.unwrap_or(8) {
        r @ 7..=9 => Resolution::try_from(r).expect("7 to 9 are resolutions"),
        other => return Err(NodeError::Invalid(format!("`res` must be 7, 8 or 9, not {other}")).into()),
    };
    let mut counts: HashMap<CellIndex, u64> = HashMap::new();
    let mut add = |lon: f64, lat: f64, n: u64| {
        if let Ok(ll) = LatLng::new(lat, lon) {
            *counts.entry(ll.to_cell(res)).or_default() += n;
        }
    };
    match q.of.as_deref().unwrap_or("events") {
        "events" => {
            let sql = format!(
                "SELECT round(lon, 3) AS x, round(lat, 3) AS y, count(*) AS n FROM events \
                 WHERE time >= TIMESTAMP '{}' AND time < TIMESTAMP '{}' AND lon IS NOT NULL AND lat IS NOT NULL GROUP BY 1, 2",
                format_time(&since),
                format_time(&until)
            );
            let result = node.events().sql(&sql, MAX_CELLS).await?;
            for row in &result.rows {
                if let (Some(x), Some(y), Some(n)) = (row[0].as_f64(), row[1].as_f64(), row[2].as_u64()) {
                    add(x, y, n);
                }
            }
        }
        "alerts" => {
            let node = node.clone();
            let filter = AlertFilter { since: Some(since), until: Some(until), ..AlertFilter::default() };
            let (rows, _) = blocking(move || crate::stats::read_alerts(&node, &user, filter)).await?;
            for row in &rows {
                if let (Some(lon), Some(lat)) = (row.body["lon"].as_f64(), row.body["lat"].as_f64()) {
                    add(lon, lat, 1);
                }
            }
        }
        other => return Err(NodeError::Invalid(format!("`of` must be events or alerts, not `{other}`")).into()),
    }
    let features: Vec<Value> = counts.iter().map(|(cell, n)| hexagon(*cell, *n)).collect();
    let body = json!({"type": "FeatureCollection", "features": features}).to_string();
    Ok(([(header::CONTENT_TYPE, "application/geo+json")], body).into_response())
}

/// A cell as a GeoJSON polygon feature.
fn hexagon(cell: CellIndex, count: u64) -> Value {
    let mut ring: Vec<[f64; 2]> = cell.boundary().iter().map(|v| [v.lng(), v.lat()]).collect();
    if let Some(&first) = ring.first() {
        ring.push(first);
    }
    json!({
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"cell": cell.to_string(), "count": count},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hexagon_is_a_closed_ring_around_its_cell() {
        let cell = LatLng::new(31.2, 121.4).unwrap().to_cell(Resolution::Eight);
        let f = hexagon(cell, 3);
        let ring = f["geometry"]["coordinates"][0].as_array().unwrap();
        assert_eq!(ring.len(), 7, "six corners and the first again");
        assert_eq!(ring[0], ring[6]);
        let (lon, lat) = (ring[0][0].as_f64().unwrap(), ring[0][1].as_f64().unwrap());
        assert!((lon - 121.4).abs() < 0.02 && (lat - 31.2).abs() < 0.02, "corner near the point: {lon},{lat}");
        assert_eq!(f["properties"]["count"], 3);
    }
}
