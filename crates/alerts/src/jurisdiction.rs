//! Who may see an alert. An alert carries scopes (`region:ID` for its place and every
//! region enclosing it, `unit:ID` for every unit it has been with); a user's unit gives
//! the scopes they see. Lists filter on scopes in the store, so a page never holds an alert
//! from outside the caller's jurisdiction.

use cityward_model::City;

use crate::lifecycle::Case;

/// The scopes of an alert at `grid` with this case.
pub fn alert_scopes(city: &City, grid: Option<&str>, case: &Case) -> Vec<String> {
    let mut out = grid.map(|g| grid_scopes(city, g)).unwrap_or_default();
    out.extend(case.units().into_iter().map(|u| format!("unit:{u}")));
    out.sort();
    out.dedup();
    out
}

/// The scopes of a place in `grid`: `region:` and the id of every region holding it, up to
/// the district (none for a grid the city does not know).
pub fn grid_scopes(city: &City, grid: &str) -> Vec<String> {
    match city.grid(grid) {
        Some(g) => city.region_chain(&g.region).into_iter().map(|r| format!("region:{}", r.id)).collect(),
        None => Vec::new(),
    }
}

/// What a user sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jurisdiction {
    /// Everything (a unit for the whole city, or an administrator).
    City,
    /// Alerts carrying any of these scopes.
    Scopes(Vec<String>),
}

impl Jurisdiction {
    /// The jurisdiction of a member of `unit`: the unit's region (and everything in it)
    /// plus whatever was routed, escalated or transferred to the unit; the whole city for a
    /// unit without a region. A unit the city does not know sees only what names it.
    pub fn of_unit(city: &City, unit: &str) -> Jurisdiction {
        match city.unit(unit) {
            Some(u) => match &u.region {
                None => Jurisdiction::City,
                Some(r) => Jurisdiction::Scopes(vec![format!("region:{r}"), format!("unit:{unit}")]),
            },
            None => Jurisdiction::Scopes(vec![format!("unit:{unit}")]),
        }
    }

    /// Whether an alert with `scopes` is visible.
    pub fn sees(&self, scopes: &[String]) -> bool {
        match self {
            Jurisdiction::City => true,
            Jurisdiction::Scopes(mine) => mine.iter().any(|m| scopes.contains(m)),
        }
    }

    /// The scopes to filter on (`None`: no filter).
    pub fn scopes(&self) -> Option<&[String]> {
        match self {
            Jurisdiction::City => None,
            Jurisdiction::Scopes(s) => Some(s),
        }
    }
}
