//! OASIS Common Alerting Protocol 1.2 messages of an alert, for other agencies' systems.
//!
//! The first message of an alert is `Alert`; once the alert's handling has moved on, the
//! message is an `Update` referencing the first, and an alert closed as a false alarm,
//! test, duplicate or device fault is a `Cancel` of it. Element order follows the CAP 1.2
//! schema's sequences; times are whole seconds with a `+00:00` offset, as CAP requires.

use chrono::{DateTime, Utc};

use crate::lifecycle::{Case, Status};

/// What a CAP message says of an alert besides its case.
#[derive(Debug, Clone)]
pub struct CapAlert<'a> {
    /// Alert id.
    pub id: &'a str,
    /// The rule that raised it.
    pub rule: &'a str,
    /// Rule title (the CAP `event`).
    pub title: &'a str,
    /// cityward category (`fire.smoke`).
    pub category: &'a str,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: &'a str,
    /// Event time of its first evidence.
    pub time: DateTime<Utc>,
    /// Its place.
    pub point: Option<(f64, f64)>,
    /// Its grid or zone, for the area's description.
    pub area: Option<&'a str>,
    /// How many times it fired.
    pub count: u64,
}

/// Dispositions that mean the alert should not have been raised: its CAP is a `Cancel`.
const CANCELLING: [&str; 4] = ["false_alarm", "test", "duplicate", "device_fault"];

fn cap_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// Appends `text` to `out` escaped for XML; characters XML 1.0 cannot carry become U+FFFD.
pub fn xml_escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    xml_escape(&mut out, text);
    out
}

/// CAP identifiers and senders may not hold spaces, commas, `<` or `&`.
fn token(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_whitespace() || matches!(c, ',' | '<' | '&' | '>' | '"' | '\'') { '_' } else { c })
        .collect()
}

/// The CAP `category` of a cityward category, by its first part.
fn cap_category(category: &str) -> &'static str {
    let head = category.split('.').next().unwrap_or("");
    match head {
        "fire" | "smoke" => "Fire",
        "hazmat" | "gas" | "chemical" => "CBRNE",
        "traffic" | "transport" | "vehicle" => "Transport",
        "water" | "flood" | "env" | "environment" | "weather" => "Env",
        "device" | "infra" | "infrastructure" | "utility" | "power" => "Infra",
        "crowd" | "safety" => "Safety",
        "security" | "police" | "intrusion" => "Security",
        "health" | "medical" => "Health",
        "rescue" => "Rescue",
        _ => "Other",
    }
}

fn cap_severity(severity: &str) -> &'static str {
    match severity {
        "critical" => "Extreme",
        "high" => "Severe",
        "medium" => "Moderate",
        "low" => "Minor",
        _ => "Unknown",
    }
}

/// The CAP 1.2 message of an alert in its current state, from `sender` (e.g. the node's
/// name).
pub fn cap_message(alert: &CapAlert<'_>, case: &Case, sender: &str) -> String {
    let sender = format!("cityward@{}", token(sender));
    let original = format!("cityward.{}", token(alert.id));
    let first_sent = case.timeline.first().map_or(alert.time, |s| s.at);
    let last_sent = case.timeline.last().map_or(first_sent, |s| s.at);
    let cancelled = case.status == Status::Closed
        && case.disposition.as_deref().is_some_and(|d| CANCELLING.contains(&d));
    let (msg_type, identifier, sent) = if case.timeline.len() <= 1 {
        ("Alert", original.clone(), first_sent)
    } else if cancelled {
        ("Cancel", format!("{original}.v{}", case.timeline.len()), last_sent)
    } else {
        ("Update", format!("{original}.v{}", case.timeline.len()), last_sent)
    };
    let done = !case.status.is_open();
    let urgency = if done {
        "Past"
    } else if matches!(alert.severity, "critical" | "high") {
        "Immediate"
    } else {
        "Expected"
    };
    let certainty = match case.disposition.as_deref() {
        Some("confirmed_incident") => "Observed",
        Some(d) if CANCELLING.contains(&d) => "Unlikely",
        _ => "Likely",
    };
    let response = if done { "AllClear" } else { "Monitor" };
    let mut x = String::with_capacity(2048);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">\n");
    let el = |x: &mut String, indent: &str, name: &str, value: &str| {
        x.push_str(&format!("{indent}<{name}>{}</{name}>\n", escape(value)));
    };
    el(&mut x, "  ", "identifier", &identifier);
    el(&mut x, "  ", "sender", &sender);
    el(&mut x, "  ", "sent", &cap_time(&sent));
    el(&mut x, "  ", "status", "Actual");
    el(&mut x, "  ", "msgType", msg_type);
    el(&mut x, "  ", "scope", "Restricted");
    el(&mut x, "  ", "restriction", "For the units responsible for the alert's place");
    if msg_type != "Alert" {
        el(&mut x, "  ", "references", &format!("{sender},{original},{}", cap_time(&first_sent)));
    }
    x.push_str("  <info>\n");
    el(&mut x, "    ", "language", "en-US");
    el(&mut x, "    ", "category", cap_category(alert.category));
    el(&mut x, "    ", "event", alert.title);
    el(&mut x, "    ", "responseType", response);
    el(&mut x, "    ", "urgency", urgency);
    el(&mut x, "    ", "severity", cap_severity(alert.severity));
    el(&mut x, "    ", "certainty", certainty);
    el(&mut x, "    ", "onset", &cap_time(&alert.time));
    el(&mut x, "    ", "senderName", case.owner.as_deref().unwrap_or("cityward"));
    el(&mut x, "    ", "headline", &format!("{} ({})", alert.title, case.status));
    let mut description = format!("Raised by rule {} ({} time(s)); status {}", alert.rule, alert.count, case.status);
    if let Some(d) = &case.disposition {
        description.push_str(&format!("; closed as {d}"));
    }
    el(&mut x, "    ", "description", &description);
    for (name, value) in [
        ("cityward_alert", alert.id.to_string()),
        ("cityward_category", alert.category.to_string()),
        ("cityward_status", case.status.to_string()),
        ("cityward_owner", case.owner.clone().unwrap_or_default()),
    ] {
        x.push_str(&format!(
            "    <parameter>\n      <valueName>{}</valueName>\n      <value>{}</value>\n    </parameter>\n",
            escape(name),
            escape(&value)
        ));
    }
    if let Some((lon, lat)) = alert.point {
        x.push_str("    <area>\n");
        el(&mut x, "      ", "areaDesc", alert.area.unwrap_or("the alert's place"));
        // A 100 m circle around the place (CAP: "lat,lon radius-km").
        el(&mut x, "      ", "circle", &format!("{lat:.6},{lon:.6} 0.1"));
        x.push_str("    </area>\n");
    }
    x.push_str("  </info>\n</alert>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_identifiers_are_tokens() {
        assert_eq!(escape("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;\u{FFFD}");
        assert_eq!(token("node 1,a&b"), "node_1_a_b");
        assert_eq!(cap_time(&DateTime::from_timestamp(1_795_000_000, 123_000_000).unwrap()), "2026-11-18T11:06:40+00:00");
        assert_eq!(cap_category("fire.smoke"), "Fire");
        assert_eq!(cap_category("hazmat.depot"), "CBRNE");
        assert_eq!(cap_category("parking"), "Other");
    }
}
