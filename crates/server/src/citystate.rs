//! Keeping the city model with the node: a copy of the model directory under
//! `DATA/city/` (what the node loads at start-up), mirrored feature by feature into the
//! state store (regions, grids, zones, roads, units, devices), where the API and other
//! processes read it.

use std::path::Path;

use chrono::Utc;
use cityward_model::City;
use cityward_store::{DeviceRow, FeatureRow, Layer, StateStore, UnitRow};
use serde_json::Value;

use crate::node::NodeError;

/// Writes `city` to `dir` and mirrors it into the state store.
pub fn save_city(state: &dyn StateStore, city: &City, dir: &Path) -> Result<(), NodeError> {
    city.write(dir).map_err(|e| {
        NodeError::Internal(format!(
            "cannot keep the city model in {}: {e}",
            dir.display()
        ))
    })?;
    for layer in Layer::ALL {
        let path = dir.join(format!("{}.geojson", layer.as_str()));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| NodeError::Internal(format!("cannot read {}: {e}", path.display())))?;
        let collection: Value = serde_json::from_str(&text)
            .map_err(|e| NodeError::Internal(format!("{}: {e}", path.display())))?;
        let rows: Vec<FeatureRow> = collection["features"]
            .as_array()
            .map(|features| {
                features
                    .iter()
                    .map(|f| FeatureRow {
                        layer,
                        id: f["properties"]["id"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| f["properties"]["id"].to_string()),
                        properties: f["properties"].clone(),
                        geometry: f["geometry"].clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        state.replace_layer(layer, &rows)?;
    }
    let now = Utc::now();
    let devices: Vec<DeviceRow> = city
        .devices
        .iter()
        .map(|d| DeviceRow {
            id: d.id.clone(),
            kind: d.kind.clone(),
            lon: d.lon,
            lat: d.lat,
            grid: non_empty(&d.grid),
            owner_unit: d.owner_unit.clone(),
            attrs: Value::Object(Default::default()),
            registered_at: now,
        })
        .collect();
    state.upsert_devices(&devices)?;
    let units: Vec<UnitRow> = city
        .units
        .iter()
        .map(|u| UnitRow {
            id: u.id.clone(),
            name: u.name.clone(),
            kind: u.kind.clone(),
            region: u.region.clone(),
            parent_unit: u.parent_unit.clone(),
        })
        .collect();
    state.replace_units(&units)?;
    Ok(())
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Loads the node's copy of the city model, or an empty city when there is none yet.
pub fn load_city(dir: &Path) -> Result<City, NodeError> {
    if dir.join("regions.geojson").exists() {
        City::load(dir).map_err(|e| {
            NodeError::Internal(format!(
                "the node's copy of the city model is unreadable: {e}"
            ))
        })
    } else {
        City::from_parts(vec![], vec![], vec![], vec![], vec![], vec![])
            .map_err(|e| NodeError::Internal(e.to_string()))
    }
}
