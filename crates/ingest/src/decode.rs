//! Splitting a request body or file into records: NDJSON, a JSON array, or CSV; gzip
//! recognised by its magic bytes. One bad record never spoils its neighbours.

use std::io::Read;

use chrono::{DateTime, Utc};
use cityward_model::{AttrType, Event, KindRegistry};
use serde_json::{Map, Number, Value};

use crate::validate::{Reject, RejectCode, Validator};

/// The records of one body: the good ones in order, and the refused ones with reasons.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Valid events, in the order they appeared.
    pub events: Vec<Event>,
    /// The line (or record number) of each event in `events`, for later refusals.
    pub lines: Vec<u64>,
    /// Refused records.
    pub rejects: Vec<Reject>,
}

impl Decoded {
    /// Events from an in-process producer, numbered 1, 2, … as their lines.
    pub fn from_events(events: Vec<Event>) -> Self {
        let lines = (1..=events.len() as u64).collect();
        Decoded {
            events,
            lines,
            rejects: Vec::new(),
        }
    }

    /// Adds the outcome of validating the record at `line`.
    pub fn push(&mut self, line: u64, result: Result<Event, Reject>) {
        match result {
            Ok(event) => {
                self.events.push(event);
                self.lines.push(line);
            }
            Err(reject) => self.rejects.push(reject),
        }
    }
}

/// Why a whole body could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is gzip but does not decompress.
    #[error("the body looks gzip-compressed but does not decompress: {0}; send valid gzip or plain NDJSON")]
    Gzip(std::io::Error),
    /// The body decompresses to more than the limit.
    #[error("the body is larger than {limit} bytes after decompression; send smaller batches or raise ingest.max_body_bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not UTF-8 text.
    #[error("the body is not UTF-8 text (first bad byte at offset {0}); send UTF-8 JSON")]
    NotUtf8(usize),
}

/// Returns the body decompressed when it starts with the gzip magic bytes, else as is.
pub fn gunzip_if_needed(
    body: &[u8],
    limit: usize,
) -> Result<std::borrow::Cow<'_, [u8]>, BodyError> {
    if body.len() >= 2 && body[0] == 0x1f && body[1] == 0x8b {
        let mut out = Vec::with_capacity(body.len() * 4);
        let mut decoder = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
        decoder.read_to_end(&mut out).map_err(BodyError::Gzip)?;
        if out.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        Ok(std::borrow::Cow::Owned(out))
    } else if body.len() > limit {
        Err(BodyError::TooLarge { limit })
    } else {
        Ok(std::borrow::Cow::Borrowed(body))
    }
}

/// Decodes a JSON array or NDJSON body (already decompressed) and validates each record.
pub fn decode_json_body(
    body: &[u8],
    validator: &Validator,
    now: DateTime<Utc>,
) -> Result<Decoded, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| BodyError::NotUtf8(e.valid_up_to()))?;
    let mut decoded = Decoded::default();
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let offset = text.len() - trimmed.len();
        for (line, record) in split_json_array(&text[offset..], line_of(text, offset)) {
            decoded.push(line, validator.validate_json(record, line, now));
        }
        return Ok(decoded);
    }
    for (index, line) in text.split('\n').enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let line_no = index as u64 + 1;
        decoded.push(line_no, validator.validate_json(line, line_no, now));
    }
    Ok(decoded)
}

fn line_of(text: &str, offset: usize) -> u64 {
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
        + 1
}

/// Splits the top level of a JSON array into element texts with their starting lines,
/// without parsing them, so that a malformed element is refused alone.
fn split_json_array(text: &str, first_line: u64) -> Vec<(u64, &str)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut line = first_line;
    let mut start: Option<(usize, u64)> = None;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            line += 1;
        }
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                if depth == 1 && start.is_none() {
                    start = Some((i, line));
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth == 2 && start.is_none() {
                    start = Some((i, line));
                }
            }
            b']' | b'}' => {
                if depth == 1 && b == b']' {
                    if let Some((s, l)) = start.take() {
                        out.push((l, text[s..i].trim()));
                    }
                    return out;
                }
                depth = depth.saturating_sub(1);
            }
            b',' if depth == 1 => {
                if let Some((s, l)) = start.take() {
                    out.push((l, text[s..i].trim()));
                }
            }
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ => {
                if depth == 1 && start.is_none() {
                    start = Some((i, line));
                }
            }
        }
    }
    // Unterminated array: keep what was there so its records are still judged one by one.
    if let Some((s, l)) = start {
        out.push((l, text[s..].trim()));
    }
    out
}

/// Decodes CSV with a header row. Columns `id`, `source`, `kind`, `time`, `lon`, `lat`,
/// `crs` are event fields; every other column is an attribute (numbers and `true`/`false`
/// are typed, empty cells omitted).
pub fn decode_csv<R: Read>(reader: R, validator: &Validator, now: DateTime<Utc>) -> Decoded {
    let mut decoded = Decoded::default();
    let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers = match csv.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            decoded.rejects.push(Reject::new(
                1,
                None,
                RejectCode::Malformed,
                format!("the CSV header row could not be read: {e}"),
                "",
            ));
            return decoded;
        }
    };
    let mut record = csv::StringRecord::new();
    loop {
        let line = csv.position().line();
        match csv.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let raw = record.iter().collect::<Vec<_>>().join(",");
                if record.len() != headers.len() {
                    decoded.rejects.push(Reject::new(
                        line,
                        None,
                        RejectCode::Malformed,
                        format!(
                            "row has {} cells but the header has {}",
                            record.len(),
                            headers.len()
                        ),
                        &raw,
                    ));
                    continue;
                }
                let value = csv_row_to_value(&headers, &record, validator.kinds());
                decoded.push(
                    line,
                    validator.validate_value(value, line, now).map_err(|mut r| {
                        r.raw = raw;
                        r
                    }),
                );
            }
            Err(e) => {
                decoded.rejects.push(Reject::new(
                    line,
                    None,
                    RejectCode::Malformed,
                    format!("row could not be read as CSV: {e}"),
                    "",
                ));
            }
        }
    }
    decoded
}

fn csv_row_to_value(
    headers: &csv::StringRecord,
    record: &csv::StringRecord,
    kinds: &KindRegistry,
) -> Value {
    // A declared string attribute stays text even when it looks like a number (plates, codes).
    let kind = headers
        .iter()
        .position(|h| h == "kind")
        .and_then(|i| record.get(i))
        .and_then(|k| kinds.get(k));
    let mut object = Map::new();
    let mut attrs = Map::new();
    for (name, cell) in headers.iter().zip(record.iter()) {
        if cell.is_empty() {
            continue;
        }
        match name {
            "id" | "source" | "kind" | "time" | "crs" => {
                object.insert(name.to_string(), Value::String(cell.to_string()));
            }
            "lon" | "lat" => {
                let v = cell
                    .parse::<f64>()
                    .ok()
                    .and_then(Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or_else(|| Value::String(cell.to_string()));
                object.insert(name.to_string(), v);
            }
            _ => {
                let declared_text = kind
                    .and_then(|k| k.attrs.get(name))
                    .is_some_and(|spec| spec.ty == AttrType::String);
                let value = if declared_text {
                    Value::String(cell.to_string())
                } else {
                    typed_cell(cell)
                };
                attrs.insert(name.to_string(), value);
            }
        }
    }
    if !attrs.is_empty() {
        object.insert("attrs".into(), Value::Object(attrs));
    }
    Value::Object(object)
}

fn typed_cell(cell: &str) -> Value {
    if let Ok(i) = cell.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Some(n) = cell.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    match cell {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(cell.to_string()),
    }
}
