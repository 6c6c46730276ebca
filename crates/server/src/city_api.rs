//! The city model as the console draws it, and who the caller is.
//!
//! - `GET /api/v1/me`: the caller's name, role, unit and jurisdiction (the regions they see).
//! - `GET /api/v1/city`: the city's extent and units.
//! - `GET /api/v1/city/layers/{layer}`: one layer as a GeoJSON FeatureCollection (RFC 7946),
//!   each feature's `id` the object's id: `regions`, `grids`, `roads`, `zones` (the shared
//!   map, the same for everyone) and `devices` (only those in the caller's jurisdiction).
//! - `PUT /api/v1/city/zones/{id}`, `DELETE /api/v1/city/zones/{id}`: zones and corridors
//!   drawn in the console, saved to the city model and read by rules at once; a zone a
//!   rule needs cannot be deleted.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use cityward_alerts::{grid_scopes, Jurisdiction};
use cityward_model::geo::Geometry;
use cityward_model::city::Zone;
use cityward_model::City;
use serde_json::{json, Value};

use crate::http::{blocking, require, ApiError, Body, Caller, ALERT_NEED, ALERT_ROLES, RULE_NEED, RULE_ROLES};
use crate::node::{Node, NodeError};

/// The layers `GET /api/v1/city/layers/{layer}` serves.
const LAYERS: [&str; 5] = ["regions", "grids", "roads", "zones", "devices"];

/// The city routes; `crate::http::router` merges them.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/v1/me", get(me))
        .route("/api/v1/city", get(city))
        .route("/api/v1/city/layers/{layer}", get(layer))
        .route("/api/v1/city/zones/{id}", put(put_zone).delete(delete_zone))
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
        "supervisor": user.supervisor,
        // What the search form needs: the legal bases to choose from, and how far this
        // role searches personal data without approval.
        "search": {
            "legal_bases": node.config().search.legal_bases,
            "limit": node.config().search.limits.get(user.role.as_str()),
        },
    }))
}

async fn city(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    let city = node.city();
    let bbox = city.bbox();
    let c = &node.config().city;
    let basemap = match (&c.basemap_style, &c.basemap_xyz) {
        (Some(style), _) => json!({"style_url": style, "attribution": c.basemap_attribution}),
        (None, Some(xyz)) => json!({"xyz": xyz, "attribution": c.basemap_attribution}),
        (None, None) => Value::Null,
    };
    Ok(Json(json!({
        "basemap": basemap,
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

/// A zone id: what rules and the city files can name.
fn check_zone_id(id: &str) -> Result<(), NodeError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(NodeError::Invalid(format!(
            "zone id `{id}` must be 1 to 64 letters, digits, `-`, `_` or `.`"
        )));
    }
    Ok(())
}

async fn put_zone(State(node): State<Arc<Node>>, Caller(user): Caller, Path(id): Path<String>, body: Body) -> Result<Json<Value>, ApiError> {
    let body = body.0?;
    require(&user, RULE_ROLES, RULE_NEED)?;
    check_zone_id(&id)?;
    let mut feature: Value = serde_json::from_slice(&body).map_err(|e| {
        NodeError::Invalid(format!("body must be a GeoJSON Feature with properties `name`, `kind` (and `width_m` for a corridor): {e}"))
    })?;
    let properties = feature
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| NodeError::Invalid("the feature needs `properties` with `name` and `kind`".into()))?;
    match properties.get("id").and_then(Value::as_str) {
        Some(other) if other != id => {
            return Err(NodeError::Invalid(format!("the feature's id `{other}` differs from the id in the path `{id}`; make them the same")).into())
        }
        _ => {
            properties.insert("id".into(), json!(id));
        }
    }
    let zone = Zone::from_feature(&feature).map_err(|e| NodeError::Invalid(format!("zone `{id}`: {e}")))?;
    if zone.is_corridor() && zone.width_m.is_none() {
        return Err(NodeError::Invalid(format!("zone `{id}` is a line: give the corridor's full width in metres as `width_m`")).into());
    }
    let stored = blocking(move || {
        let city = node.edit_city(|city| city.with_zone(zone).map_err(|e| NodeError::Invalid(e.to_string())))?;
        node.desk().audit(&user.username, "zone.put", &id, json!({"kind": feature["properties"]["kind"]}));
        let zone = city.zone(&id).expect("the zone just stored");
        let mut properties = json!({"id": zone.id, "name": zone.name, "kind": zone.kind, "width_m": zone.width_m});
        for (k, v) in &zone.properties {
            properties[k] = v.clone();
        }
        let stored = json!({"type": "Feature", "id": zone.id, "geometry": zone.geometry.to_geojson(), "properties": properties});
        // The nodes below share the city model: they get the zone too.
        if let Some(tier) = node.tier() {
            tier.publish_down("zone", format!("zone:{id}@{}", chrono::Utc::now().timestamp_micros()), stored.clone());
        }
        Ok(stored)
    })
    .await?;
    Ok(Json(stored))
}

async fn delete_zone(State(node): State<Arc<Node>>, Caller(user): Caller, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    require(&user, RULE_ROLES, RULE_NEED)?;
    blocking(move || {
        node.edit_city(|city| {
            let without = city
                .without_zone(&id)
                .ok_or_else(|| NodeError::NotFound(format!("no zone `{id}`; see GET /api/v1/city/layers/zones")))?
                .map_err(|e| NodeError::Invalid(e.to_string()))?;
            let needing = crate::rules::rules_not_compiling(node.state().as_ref(), &without)?;
            if !needing.is_empty() {
                return Err(NodeError::Conflict(format!(
                    "zone `{id}` is needed by rule{} {}; change or delete {} first",
                    if needing.len() == 1 { "" } else { "s" },
                    needing.join(", "),
                    if needing.len() == 1 { "it" } else { "them" },
                )));
            }
            Ok(without)
        })?;
        node.desk().audit(&user.username, "zone.delete", &id, json!({}));
        if let Some(tier) = node.tier() {
            tier.publish_down("zone.delete", format!("zone-delete:{id}@{}", chrono::Utc::now().timestamp_micros()), json!({"id": id}));
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
