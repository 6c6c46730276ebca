//! The city model as the console draws it, and who the caller is.
//!
//! - `GET /api/v1/me`: the caller's name, role, unit and jurisdiction (the regions they see).
//! - `GET /api/v1/city`: the city's extent and units.
//! - `GET /api/v1/city/layers/{layer}`: one layer as a GeoJSON FeatureCollection (RFC 7946),
//!   each feature's `id` the object's id: `regions`, `grids`, `roads`, `zones` (the shared
//!   map, the same for everyone) and `devices` (only those in the caller's jurisdiction).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cityward_alerts::{grid_scopes, Jurisdiction};
use cityward_model::geo::Geometry;
use cityward_model::City;
use serde_json::{json, Value};

use crate::http::{blocking, require, ApiError, Caller, ALERT_NEED, ALERT_ROLES};
use crate::node::Node;

/// The layers `GET /api/v1/city/layers/{layer}` serves.
const LAYERS: [&str; 5] = ["regions", "grids", "roads", "zones", "devices"];

/// The city routes; `crate::http::router` merges them.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/v1/me", get(me))
        .route("/api/v1/city", get(city))
        .route("/api/v1/city/layers/{layer}", get(layer))
}

async fn me(State(node): State<Arc<Node>>, Caller(user): Caller) -> Json<Value> {
    let city = node.city();
    let unit = user.unit.as_deref().and_then(|u| city.unit(u));
    let regions = match node.desk().jurisdiction(&user) {
        Jurisdiction::City => Value::from("city"),
        Jurisdiction::Scopes(scopes) => {
            scopes.iter().filter_map(|s| s.strip_prefix("region:")).map(Value::from).collect::<Vec<_>>().into()
        }
    };
    Json(json!({
        "username": user.username,
        "role": user.role.as_str(),
        "unit": user.unit,
        "unit_name": unit.map(|u| u.name.clone()),
        "unit_kind": unit.map(|u| u.kind.clone()),
        "jurisdiction": regions,
    }))
}

async fn city(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    let city = node.city();
    let bbox = city.bbox();
    Ok(Json(json!({
        "bbox": [bbox.min_lon, bbox.min_lat, bbox.max_lon, bbox.max_lat],
        "units": city.units.iter().map(|u| json!({
            "id": u.id, "name": u.name, "kind": u.kind, "region": u.region, "parent_unit": u.parent_unit,
        })).collect::<Vec<_>>(),
        "counts": {
            "regions": city.regions.len(),
            "grids": city.grids.len(),
            "roads": city.roads.len(),
            "zones": city.zones.len(),
            "devices": city.devices.len(),
        },
    })))
}

async fn layer(State(node): State<Arc<Node>>, Caller(user): Caller, Path(layer): Path<String>) -> Result<Response, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    if !LAYERS.contains(&layer.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no city layer `{layer}`; the layers are {}", LAYERS.join(", ")),
        ));
    }
    let jurisdiction = node.desk().jurisdiction(&user);
    let body = blocking(move || Ok(layer_geojson(&node.city(), &layer, &jurisdiction))).await?;
    Ok(([(header::CONTENT_TYPE, "application/geo+json")], body).into_response())
}

/// One layer as GeoJSON text; devices only where `jurisdiction` reaches.
fn layer_geojson(city: &City, layer: &str, jurisdiction: &Jurisdiction) -> String {
    let feature = |id: &str, geometry: Value, properties: Value| json!({"type": "Feature", "id": id, "geometry": geometry, "properties": properties});
    let features: Vec<Value> = match layer {
        "regions" => city
            .regions
            .iter()
            .map(|r| {
                let geometry = Geometry::MultiPolygon(r.area.clone()).to_geojson();
                feature(&r.id, geometry, json!({"id": r.id, "name": r.name, "level": r.level.as_str(), "parent": r.parent}))
            })
            .collect(),
        "grids" => city
            .grids
            .iter()
            .map(|g| feature(&g.id, Geometry::MultiPolygon(g.area.clone()).to_geojson(), json!({"id": g.id, "region": g.region})))
            .collect(),
        "roads" => city
            .roads
            .iter()
            .map(|r| {
                feature(
                    &r.id,
                    Geometry::LineString(r.line.clone()).to_geojson(),
                    json!({"id": r.id, "name": r.name, "class": r.class, "speed_limit_kmh": r.speed_limit_kmh}),
                )
            })
            .collect(),
        "zones" => city
            .zones
            .iter()
            .map(|z| {
                let mut properties = json!({"id": z.id, "name": z.name, "kind": z.kind, "width_m": z.width_m});
                for (k, v) in &z.properties {
                    properties.as_object_mut().expect("object").entry(k.clone()).or_insert_with(|| v.clone());
                }
                feature(&z.id, z.geometry.to_geojson(), properties)
            })
            .collect(),
        _ => {
            // Visibility is a property of the grid: decided once per grid, not per device.
            let visible: std::collections::HashSet<&str> =
                city.grids.iter().filter(|g| jurisdiction.sees(&grid_scopes(city, &g.id))).map(|g| g.id.as_str()).collect();
            city.devices
                .iter()
                .filter(|d| matches!(jurisdiction, Jurisdiction::City) || visible.contains(d.grid.as_str()))
            .map(|d| {
                feature(
                    &d.id,
                    json!({"type": "Point", "coordinates": [d.lon, d.lat]}),
                        json!({"id": d.id, "kind": d.kind, "grid": d.grid, "owner_unit": d.owner_unit}),
                    )
                })
                .collect()
        }
    };
    json!({"type": "FeatureCollection", "features": features}).to_string()
}
