//! Enrichment: what the city model knows about an event's place and source.

use cityward_model::{City, Event};

/// Adds the patrol grid of the event's place and the owner unit of its registered device.
///
/// Sources that are not registered (vehicles, responders' phones, imported history) are
/// left without a unit; places outside every grid are left without a grid.
pub fn enrich(city: &City, event: &mut Event) {
    if event.grid.is_none() {
        if let Some((lon, lat)) = event.point() {
            event.grid = city.grid_at(lon, lat).map(|grid| grid.id.clone());
        }
    }
    if let Some(device) = city.device(&event.source) {
        if event.unit.is_none() {
            event.unit = device.owner_unit.clone();
        }
        // A fixed sensor that reports no place is where the registry says it is.
        if event.point().is_none() {
            event.lon = Some(device.lon);
            event.lat = Some(device.lat);
            if event.grid.is_none() && !device.grid.is_empty() {
                event.grid = Some(device.grid.clone());
            }
        }
    }
}
