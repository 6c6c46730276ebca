//! Silences: a person's decision that alerts of a scope (a rule, a category, a device, an
//! area) need no handling for a while — planned works, a known faulty sensor. A silenced
//! alert is still stored and visible, as `suppressed`, with the silence that covered it.

use chrono::{DateTime, Duration, Utc};
use cityward_model::City;
use serde::{Deserialize, Serialize};

use crate::routing::{category_matches, check_category_pattern};

/// The longest a silence may run; a longer need is a rule or routing change.
pub const MAX_SILENCE_DAYS: i64 = 30;

/// One silence. Every scope field given must match an alert for it to be covered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    /// Set when stored.
    #[serde(default)]
    pub id: String,
    /// Alerts of this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Alerts of this category (`fire.smoke`, `fire.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Alerts whose key is this source (a device, a vehicle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Alerts in this region (district, street or community) or below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Alerts in this patrol grid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<String>,
    /// Why (required).
    pub reason: String,
    /// Who set it (set by the server from the caller).
    #[serde(default)]
    pub owner: String,
    /// When it ends (required; at most [`MAX_SILENCE_DAYS`] ahead).
    #[serde(with = "cityward_model::event::rfc3339")]
    pub expires: DateTime<Utc>,
    /// When it was set (set by the server).
    #[serde(default, with = "cityward_model::event::rfc3339_option", skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// What a silence looks at in an alert.
#[derive(Debug, Clone, Copy)]
pub struct SilenceTarget<'a> {
    /// The alert's rule.
    pub rule: &'a str,
    /// Its category.
    pub category: &'a str,
    /// Its key (source).
    pub key: &'a str,
    /// Its grid.
    pub grid: Option<&'a str>,
}

impl Silence {
    /// Checks a new silence against the city and the clock; the message says what to fix.
    pub fn check(&self, city: &City, now: DateTime<Utc>) -> Result<(), String> {
        if self.rule.is_none() && self.category.is_none() && self.source.is_none() && self.region.is_none() && self.grid.is_none() {
            return Err("a silence needs a scope: at least one of rule, category, source, region, grid".into());
        }
        if self.reason.trim().is_empty() {
            return Err("a silence needs a `reason`; it is shown on every alert it covers".into());
        }
        if self.expires <= now {
            return Err(format!("`expires` {} is not in the future", cityward_model::format_time(&self.expires)));
        }
        if self.expires > now + Duration::days(MAX_SILENCE_DAYS) {
            return Err(format!("`expires` is more than {MAX_SILENCE_DAYS} days ahead; change the rule or the routing instead of silencing for longer"));
        }
        if let Some(c) = &self.category {
            check_category_pattern(c)?;
        }
        if let Some(r) = &self.region {
            if city.region(r).is_none() {
                return Err(format!("region `{r}` is not in the city's regions.geojson"));
            }
        }
        if let Some(g) = &self.grid {
            if city.grid(g).is_none() {
                return Err(format!("grid `{g}` is not in the city's grids.geojson"));
            }
        }
        Ok(())
    }

    /// Whether the silence runs at `now`.
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        now < self.expires && self.created_at.is_none_or(|c| c <= now)
    }

    /// Whether it covers an alert.
    pub fn covers(&self, city: &City, target: &SilenceTarget<'_>) -> bool {
        let rule = self.rule.as_deref().is_none_or(|r| r == target.rule);
        let category = self.category.as_deref().is_none_or(|c| category_matches(c, target.category).is_some());
        let source = self.source.as_deref().is_none_or(|s| s == target.key);
        let grid = self.grid.as_deref().is_none_or(|g| Some(g) == target.grid);
        let region = self.region.as_deref().is_none_or(|r| {
            target
                .grid
                .and_then(|g| city.grid(g))
                .is_some_and(|g| city.region_chain(&g.region).iter().any(|reg| reg.id == r))
        });
        rule && category && source && grid && region
    }
}
