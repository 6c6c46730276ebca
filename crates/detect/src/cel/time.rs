//! Timestamps, durations and time zones with CEL's syntax and ranges, and the canonical
//! string forms of doubles, timestamps and durations.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, FixedOffset, SecondsFormat, TimeDelta, Utc};

/// CEL durations span at most ±10000 years (in seconds).
const MAX_DURATION_SECONDS: i128 = 315_576_000_000;
const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// The duration, when within CEL's range.
pub(crate) fn check_duration(d: TimeDelta) -> Option<TimeDelta> {
    (i128::from(d.num_seconds()).abs() <= MAX_DURATION_SECONDS).then_some(d)
}

/// The timestamp, when within CEL's range (years 1 to 9999).
pub(crate) fn check_timestamp(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (1..=9999).contains(&t.year()).then_some(t)
}

fn nanos_to_duration(total: i128) -> Option<TimeDelta> {
    if total.abs() > MAX_DURATION_SECONDS * NANOS_PER_SECOND {
        return None;
    }
    let seconds = i64::try_from(total / NANOS_PER_SECOND).ok()?;
    let nanos = i64::try_from(total % NANOS_PER_SECOND).ok()?;
    Some(TimeDelta::seconds(seconds) + TimeDelta::nanoseconds(nanos))
}

/// Total nanoseconds of a duration (always fits in i128).
fn duration_nanos(d: TimeDelta) -> i128 {
    i128::from(d.num_seconds()) * NANOS_PER_SECOND + i128::from(d.subsec_nanos())
}

/// Parses a CEL duration string: an optional sign and a sequence of decimal numbers, each with
/// a unit (`h`, `m`, `s`, `ms`, `us`, `ns`), e.g. `1h30m`, `1.5s`, `-90s`, `0`.
pub(crate) fn parse_duration(text: &str) -> Result<TimeDelta, String> {
    let invalid = |why: &str| {
        format!("invalid duration \"{text}\": {why} (write a number and a unit such as \"1h30m\", \"90s\" or \"250ms\")")
    };
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(TimeDelta::zero());
    }
    if rest.is_empty() {
        return Err(invalid("it is empty"));
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid("expected a number"));
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SECOND,
            "m" => 60 * NANOS_PER_SECOND,
            "h" => 3600 * NANOS_PER_SECOND,
            "" => return Err(invalid(&format!("missing unit after \"{int_part}\""))),
            other => return Err(invalid(&format!("unknown unit \"{other}\""))),
        };
        let too_long = || invalid("out of range");
        let whole: i128 = if int_part.is_empty() {
            0
        } else if int_part.len() > 20 {
            return Err(too_long());
        } else {
            int_part.parse().map_err(|_| too_long())?
        };
        // Up to 18 fractional digits; anything finer than a nanosecond is dropped.
        let frac_digits = &frac_part[..frac_part.len().min(18)];
        let frac: i128 = if frac_digits.is_empty() {
            0
        } else {
            frac_digits.parse().map_err(|_| too_long())?
        };
        let frac_scale = 10i128.pow(frac_digits.len() as u32);
        total = whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(frac * scale / frac_scale))
            .and_then(|v| total.checked_add(v))
            .ok_or_else(too_long)?;
        if total > MAX_DURATION_SECONDS * NANOS_PER_SECOND {
            return Err(too_long());
        }
    }
    nanos_to_duration(if negative { -total } else { total }).ok_or_else(|| invalid("out of range"))
}

/// Parses an RFC 3339 timestamp.
pub(crate) fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .and_then(check_timestamp)
        .ok_or_else(|| {
            format!(
                "invalid timestamp \"{text}\": expected RFC 3339 such as \"2026-11-22T03:00:00Z\""
            )
        })
}

/// Parses a time-zone argument: a fixed offset `+08:00`, `-05:30` (sign optional) or `UTC`.
pub(crate) fn parse_time_zone(text: &str) -> Result<FixedOffset, String> {
    if text.eq_ignore_ascii_case("utc") || text == "Z" {
        return Ok(FixedOffset::east_opt(0).expect("zero offset"));
    }
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'-') => (-1, &text[1..]),
        Some(b'+') => (1, &text[1..]),
        _ => (1, text),
    };
    let parsed = rest.split_once(':').and_then(|(h, m)| {
        let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(h) || !digits(m) {
            return None;
        }
        let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
        if h > 23 || m > 59 {
            return None;
        }
        FixedOffset::east_opt(sign * (h * 3600 + m * 60))
    });
    parsed.ok_or_else(|| {
        if text.contains('/') || text.chars().all(|c| c.is_ascii_alphabetic()) {
            format!("time zone \"{text}\" is not supported: named zones need a time-zone database; use a fixed offset like \"+08:00\"")
        } else {
            format!("invalid time zone \"{text}\": use a fixed offset like \"+08:00\" or \"-05:30\"")
        }
    })
}

/// Canonical decimal form of a double: shortest round-trip digits, no exponent between
/// 1e-6 and 1e21 (`3`, `2.5`, `0.001`), exponent outside (`1e21`, `1.5e-7`), `NaN`,
/// `+Inf`, `-Inf`.
pub(crate) fn write_double(out: &mut String, d: f64) {
    if d.is_nan() {
        out.push_str("NaN");
    } else if d.is_infinite() {
        out.push_str(if d > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let a = d.abs();
        if a == 0.0 || (1e-6..1e21).contains(&a) {
            let _ = write!(out, "{d}");
        } else {
            let _ = write!(out, "{d:e}");
        }
    }
}

/// RFC 3339 in UTC with `Z`, and 0, 3, 6 or 9 fractional digits as needed.
pub(crate) fn write_timestamp(out: &mut String, t: &DateTime<Utc>) {
    out.push_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
}

/// CEL's string form of a duration: seconds with the fraction as needed and an `s` (`5400s`,
/// `1.5s`, `-0.25s`).
pub(crate) fn write_duration(out: &mut String, d: TimeDelta) {
    let total = duration_nanos(d);
    if total < 0 {
        out.push('-');
    }
    let abs = total.unsigned_abs();
    let seconds = abs / NANOS_PER_SECOND as u128;
    let nanos = abs % NANOS_PER_SECOND as u128;
    let _ = write!(out, "{seconds}");
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('s');
}
