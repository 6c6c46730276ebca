//! The `events` table schema and the conversion of events into Arrow record batches.
//!
//! The conversion is on the compaction hot path (every event passes it once), so it works
//! column-wise with pre-sized builders, touches only the attributes an event actually has
//! (one hash look-up each) and reuses one buffer for the attribute JSON.

use std::borrow::Borrow;
use std::sync::Arc;

use ahash::AHashMap;
use cityward_model::{AttrType, Event, KindRegistry};
use datafusion::arrow::array::{
    new_null_array, Array, ArrayBuilder, ArrayRef, BooleanBuilder, Date32Array, Float64Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use serde_json::Value;

use crate::error::{Result, StoreError};

/// Column `id`: the event id (Utf8).
pub const ID_COLUMN: &str = "id";
/// Column `source`: the producing device or vehicle (Utf8).
pub const SOURCE_COLUMN: &str = "source";
/// Column `kind`: the event kind (Utf8). In lake files it is not stored; it comes from
/// the `kind=…` directory (see [`crate::Lake`]).
pub const KIND_COLUMN: &str = "kind";
/// Column `time`: event time, `Timestamp(Microsecond, "UTC")`.
pub const TIME_COLUMN: &str = "time";
/// Column `attrs`: the full attribute object as JSON text (Utf8).
pub const ATTRS_COLUMN: &str = "attrs";
/// Column `day`: the UTC day of `time` (Date32). Only in the SQL `events` table, where it
/// is the `day=…` partition directory of the lake.
pub const DAY_COLUMN: &str = "day";

/// Names no typed attribute column may take, because the table already has them.
pub const RESERVED_COLUMNS: [&str; 10] =
    [ID_COLUMN, SOURCE_COLUMN, KIND_COLUMN, TIME_COLUMN, "lon", "lat", "grid", "unit", ATTRS_COLUMN, DAY_COLUMN];

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The Arrow type of `time`: microseconds since the epoch, UTC.
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn attr_data_type(ty: AttrType) -> DataType {
    match ty {
        AttrType::Number => DataType::Float64,
        AttrType::Integer => DataType::Int64,
        AttrType::String => DataType::Utf8,
        AttrType::Bool => DataType::Boolean,
    }
}

/// The typed attribute columns for `kinds`, sorted by name.
///
/// Lenient: an attribute whose name is a [reserved column](RESERVED_COLUMNS), or that two
/// kinds declare with different types, gets no typed column (its values stay in `attrs`);
/// [`check_kinds`] reports those cases as errors for configuration checks.
fn typed_attribute_columns(kinds: &KindRegistry) -> Vec<(String, AttrType)> {
    let mut columns: std::collections::BTreeMap<&str, Option<AttrType>> = Default::default();
    for kind in kinds.names() {
        let Some(schema) = kinds.get(kind) else { continue };
        for (name, spec) in &schema.attrs {
            if RESERVED_COLUMNS.contains(&name.as_str()) {
                continue;
            }
            let slot = columns.entry(name.as_str()).or_insert(Some(spec.ty));
            if *slot != Some(spec.ty) {
                *slot = None;
            }
        }
    }
    columns
        .into_iter()
        .filter_map(|(name, ty)| Some((name.to_string(), ty?)))
        .collect()
}

/// Checks that every declared attribute gets a typed lake column: no two kinds give one
/// attribute different types, and no attribute takes a [reserved column](RESERVED_COLUMNS)
/// name. [`crate::Lake::open`] refuses kinds that fail this check.
pub fn check_kinds(kinds: &KindRegistry) -> Result<()> {
    kinds.attribute_columns().map_err(|message| StoreError::Kinds { message })?;
    for kind in kinds.names() {
        let Some(schema) = kinds.get(kind) else { continue };
        for name in schema.attrs.keys() {
            if RESERVED_COLUMNS.contains(&name.as_str()) {
                return Err(StoreError::Kinds {
                    message: format!(
                        "kind `{kind}` declares attribute `{name}`, which is also a column of every \
                         event ({}); rename the attribute",
                        RESERVED_COLUMNS.join(", ")
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The schema of the `events` table for the declared kinds.
///
/// Columns, in order: `id`, `source`, `kind` (Utf8, not null), `time`
/// (`Timestamp(Microsecond, "UTC")`, not null), `lon`, `lat` (Float64), `grid`, `unit`
/// (Utf8), then one nullable column per typed attribute of any kind, sorted by name
/// (number → Float64, integer → Int64, string → Utf8, bool → Boolean), then `attrs` (Utf8,
/// not null): the event's whole attribute object as JSON.
pub fn events_schema(kinds: &KindRegistry) -> SchemaRef {
    let mut fields = vec![
        Field::new(ID_COLUMN, DataType::Utf8, false),
        Field::new(SOURCE_COLUMN, DataType::Utf8, false),
        Field::new(KIND_COLUMN, DataType::Utf8, false),
        Field::new(TIME_COLUMN, time_type(), false),
        Field::new("lon", DataType::Float64, true),
        Field::new("lat", DataType::Float64, true),
        Field::new("grid", DataType::Utf8, true),
        Field::new("unit", DataType::Utf8, true),
    ];
    for (name, ty) in typed_attribute_columns(kinds) {
        fields.push(Field::new(name, attr_data_type(ty), true));
    }
    fields.push(Field::new(ATTRS_COLUMN, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// The schema of lake files: the events schema without `kind`, which the `kind=…`
/// directory carries instead (so that the SQL table has exactly one `kind` column).
pub(crate) fn file_schema(events: &SchemaRef) -> SchemaRef {
    let fields: Vec<_> = events
        .fields()
        .iter()
        .filter(|f| f.name() != KIND_COLUMN)
        .cloned()
        .collect();
    Arc::new(Schema::new(fields))
}

/// Converts events into one record batch of `schema`.
///
/// `schema` is normally [`events_schema`] (or a subset of its columns, in any order); a
/// `day` column of type Date32 is filled with the UTC day of `time`. Attribute values that
/// do not fit their column's type (e.g. text in a number column) are null in the typed
/// column and kept in `attrs`; integers accept numbers without a fraction.
///
/// # Panics
/// When `schema` declares a non-nullable column this function does not know (it would have
/// to invent values); use a schema derived from [`events_schema`].
pub fn events_to_batch<E: Borrow<Event>>(events: &[E], schema: &SchemaRef) -> RecordBatch {
    try_events_to_batch(events, schema).unwrap_or_else(|e| panic!("events_to_batch: {e}"))
}

#[derive(Clone, Copy)]
enum Slot {
    Id,
    Source,
    Kind,
    Time,
    Lon,
    Lat,
    Grid,
    Unit,
    Attrs,
    Day,
    Attr(usize),
    Unknown,
}

/// A builder for one typed attribute column, filled sparsely: nulls are padded in only
/// when a later row has a value, or at the end.
enum AttrBuilder {
    F64(Float64Builder),
    I64(Int64Builder),
    Str(StringBuilder),
    Bool(BooleanBuilder),
}

impl AttrBuilder {
    fn new(ty: &DataType, rows: usize) -> Option<Self> {
        Some(match ty {
            DataType::Float64 => AttrBuilder::F64(Float64Builder::with_capacity(rows)),
            DataType::Int64 => AttrBuilder::I64(Int64Builder::with_capacity(rows)),
            DataType::Utf8 => AttrBuilder::Str(StringBuilder::with_capacity(rows, rows * 8)),
            DataType::Boolean => AttrBuilder::Bool(BooleanBuilder::with_capacity(rows)),
            _ => return None,
        })
    }

    fn len(&self) -> usize {
        match self {
            AttrBuilder::F64(b) => b.len(),
            AttrBuilder::I64(b) => b.len(),
            AttrBuilder::Str(b) => b.len(),
            AttrBuilder::Bool(b) => b.len(),
        }
    }

    fn pad_to(&mut self, row: usize) {
        let missing = row - self.len();
        if missing == 0 {
            return;
        }
        match self {
            AttrBuilder::F64(b) => b.append_nulls(missing),
            AttrBuilder::I64(b) => b.append_nulls(missing),
            AttrBuilder::Str(b) => {
                for _ in 0..missing {
                    b.append_null()
                }
            }
            AttrBuilder::Bool(b) => b.append_nulls(missing),
        }
    }

    fn push(&mut self, row: usize, value: &Value) {
        if self.len() > row {
            return; // a repeated key cannot happen in a JSON map, but never write a row twice
        }
        self.pad_to(row);
        match self {
            AttrBuilder::F64(b) => b.append_option(value.as_f64()),
            AttrBuilder::I64(b) => b.append_option(value.as_i64().or_else(|| {
                let f = value.as_f64()?;
                (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
            })),
            AttrBuilder::Str(b) => match value {
                Value::String(s) => b.append_value(s),
                _ => b.append_null(),
            },
            AttrBuilder::Bool(b) => b.append_option(value.as_bool()),
        }
    }

    fn finish(mut self, rows: usize) -> ArrayRef {
        self.pad_to(rows);
        match self {
            AttrBuilder::F64(mut b) => Arc::new(b.finish()),
            AttrBuilder::I64(mut b) => Arc::new(b.finish()),
            AttrBuilder::Str(mut b) => Arc::new(b.finish()),
            AttrBuilder::Bool(mut b) => Arc::new(b.finish()),
        }
    }
}

fn string_builder<E: Borrow<Event>>(
    wanted: bool,
    events: &[E],
    len: impl Fn(&Event) -> usize,
) -> Option<StringBuilder> {
    wanted.then(|| {
        let bytes = events.iter().map(|e| len(e.borrow())).sum();
        StringBuilder::with_capacity(events.len(), bytes)
    })
}

fn append_opt(builder: &mut Option<StringBuilder>, value: Option<&str>) {
    if let Some(b) = builder {
        b.append_option(value);
    }
}

/// [`events_to_batch`] that reports a schema it cannot fill instead of panicking.
pub(crate) fn try_events_to_batch<E: Borrow<Event>>(events: &[E], schema: &SchemaRef) -> Result<RecordBatch> {
    let rows = events.len();
    let mut attr_builders: Vec<AttrBuilder> = Vec::new();
    let mut attr_index: AHashMap<&str, usize> = AHashMap::new();
    let slots: Vec<Slot> = schema
        .fields()
        .iter()
        .map(|field| match field.name().as_str() {
            ID_COLUMN => Slot::Id,
            SOURCE_COLUMN => Slot::Source,
            KIND_COLUMN => Slot::Kind,
            TIME_COLUMN => Slot::Time,
            "lon" => Slot::Lon,
            "lat" => Slot::Lat,
            "grid" => Slot::Grid,
            "unit" => Slot::Unit,
            ATTRS_COLUMN => Slot::Attrs,
            DAY_COLUMN => Slot::Day,
            name => match AttrBuilder::new(field.data_type(), rows) {
                Some(builder) if !attr_index.contains_key(name) => {
                    attr_index.insert(name, attr_builders.len());
                    attr_builders.push(builder);
                    Slot::Attr(attr_builders.len() - 1)
                }
                _ => Slot::Unknown,
            },
        })
        .collect();
    let has = |want: fn(&Slot) -> bool| slots.iter().any(want);

    let mut id = string_builder(has(|s| matches!(s, Slot::Id)), events, |e| e.id.len());
    let mut source = string_builder(has(|s| matches!(s, Slot::Source)), events, |e| e.source.len());
    let mut kind = string_builder(has(|s| matches!(s, Slot::Kind)), events, |e| e.kind.len());
    let mut grid = string_builder(has(|s| matches!(s, Slot::Grid)), events, |e| {
        e.grid.as_ref().map_or(0, String::len)
    });
    let mut unit = string_builder(has(|s| matches!(s, Slot::Unit)), events, |e| {
        e.unit.as_ref().map_or(0, String::len)
    });
    let want_lon = has(|s| matches!(s, Slot::Lon));
    let want_lat = has(|s| matches!(s, Slot::Lat));
    let mut lon = Float64Builder::with_capacity(if want_lon { rows } else { 0 });
    let mut lat = Float64Builder::with_capacity(if want_lat { rows } else { 0 });
    let mut time: Vec<i64> = Vec::with_capacity(rows);
    let mut attrs = has(|s| matches!(s, Slot::Attrs))
        .then(|| StringBuilder::with_capacity(rows, rows * 48));
    let mut json = Vec::with_capacity(256);

    for (row, event) in events.iter().enumerate() {
        let e: &Event = event.borrow();
        append_opt(&mut id, Some(&e.id));
        append_opt(&mut source, Some(&e.source));
        append_opt(&mut kind, Some(&e.kind));
        append_opt(&mut grid, e.grid.as_deref());
        append_opt(&mut unit, e.unit.as_deref());
        if want_lon {
            lon.append_option(e.lon);
        }
        if want_lat {
            lat.append_option(e.lat);
        }
        time.push(e.time_micros());
        if !attr_index.is_empty() {
            for (name, value) in &e.attrs {
                if let Some(&i) = attr_index.get(name.as_str()) {
                    attr_builders[i].push(row, value);
                }
            }
        }
        if let Some(b) = &mut attrs {
            json.clear();
            serde_json::to_writer(&mut json, &e.attrs).expect("a JSON map always serializes");
            b.append_value(std::str::from_utf8(&json).expect("serde_json writes UTF-8"));
        }
    }

    let day_array: Option<ArrayRef> = has(|s| matches!(s, Slot::Day)).then(|| {
        Arc::new(Date32Array::from_iter_values(time.iter().map(|&t| day_number(t)))) as ArrayRef
    });
    let time_array: ArrayRef = Arc::new(TimestampMicrosecondArray::from(time).with_timezone("UTC"));
    let lon_array: ArrayRef = Arc::new(lon.finish());
    let lat_array: ArrayRef = Arc::new(lat.finish());
    let mut attr_arrays: Vec<Option<ArrayRef>> =
        attr_builders.into_iter().map(|b| Some(b.finish(rows))).collect();
    let string_arrays: [Option<ArrayRef>; 6] = [id, source, kind, grid, unit, attrs]
        .map(|b| b.map(|mut b| Arc::new(b.finish()) as ArrayRef));
    let mut columns = Vec::with_capacity(slots.len());
    for (slot, field) in slots.iter().zip(schema.fields()) {
        let string = |i: usize| string_arrays[i].clone().expect("builder exists for a wanted column");
        let array: ArrayRef = match slot {
            Slot::Id => string(0),
            Slot::Source => string(1),
            Slot::Kind => string(2),
            Slot::Grid => string(3),
            Slot::Unit => string(4),
            Slot::Attrs => string(5),
            Slot::Time => time_array.clone(),
            Slot::Lon => lon_array.clone(),
            Slot::Lat => lat_array.clone(),
            Slot::Day => day_array.clone().expect("day wanted"),
            Slot::Attr(i) => attr_arrays[*i].take().expect("each attribute column is used once"),
            Slot::Unknown => new_null_array(field.data_type(), rows),
        };
        let array = if array.data_type() == field.data_type() {
            array
        } else {
            cast(&array, field.data_type()).map_err(StoreError::arrow(format!(
                "column `{}` of the events schema has type {}, which events cannot be converted to",
                field.name(),
                field.data_type()
            )))?
        };
        columns.push(array);
    }
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(StoreError::arrow(
        "the schema given for events has a non-nullable column that events cannot fill; \
         use a schema derived from events_schema",
    ))
}

/// The UTC day number (days since 1970-01-01) of a time in microseconds.
pub(crate) fn day_number(micros: i64) -> i32 {
    micros.div_euclid(MICROS_PER_DAY) as i32
}

/// Rearranges a batch to `target`, matching columns by name: casts where types differ and
/// fills columns the batch lacks with nulls. A missing `day` is derived from `time`.
pub(crate) fn align_batch(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == target.fields() {
        return Ok(batch.clone());
    }
    let rows = batch.num_rows();
    let mut columns = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let array = match batch.column_by_name(field.name()) {
            Some(a) if a.data_type() == field.data_type() => a.clone(),
            Some(a) => cast(a, field.data_type()).map_err(StoreError::arrow(format!(
                "column `{}` has type {} where the events table needs {}",
                field.name(),
                a.data_type(),
                field.data_type()
            )))?,
            None if field.name() == DAY_COLUMN => {
                let time = batch
                    .column_by_name(TIME_COLUMN)
                    .map(|t| cast(t, &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))))
                    .transpose()
                    .map_err(StoreError::arrow("column `time` cannot be read as a timestamp"))?;
                match time {
                    Some(t) => {
                        let t = t
                            .as_any()
                            .downcast_ref::<TimestampMicrosecondArray>()
                            .expect("cast to microseconds");
                        let days: Date32Array = t.unary(day_number);
                        Arc::new(days) as ArrayRef
                    }
                    None => new_null_array(field.data_type(), rows),
                }
            }
            None => new_null_array(field.data_type(), rows),
        };
        columns.push(array);
    }
    RecordBatch::try_new_with_options(target.clone(), columns, &RecordBatchOptions::new().with_row_count(Some(rows)))
        .map_err(StoreError::arrow(
            "a batch of events lacks a column the events table requires (id, source, kind, time, attrs)",
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cityward_model::{parse_time, AttrSpec, KindSchema};
    use datafusion::arrow::array::{AsArray, BooleanArray, Float64Array, Int64Array, StringArray};

    fn gps(i: usize) -> Event {
        Event::new(format!("truck-{:03}", i % 7), "gps", parse_time("2026-11-22T03:00:00.250Z").unwrap())
            .at(121.2 + i as f64 * 1e-4, 31.3)
            .with("speed_kmh", 40.0 + i as f64)
            .with("heading", 90)
            .with("plate", format!("沪A{i:05}"))
    }

    #[test]
    fn schema_has_base_attribute_and_json_columns_in_order() {
        let schema = events_schema(&KindRegistry::builtin());
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(&names[..8], &["id", "source", "kind", "time", "lon", "lat", "grid", "unit"]);
        assert_eq!(names.last(), Some(&"attrs"));
        assert_eq!(schema.field_with_name("time").unwrap().data_type(), &time_type());
        assert_eq!(schema.field_with_name("speed_kmh").unwrap().data_type(), &DataType::Float64);
        assert_eq!(schema.field_with_name("lane").unwrap().data_type(), &DataType::Int64);
        assert_eq!(schema.field_with_name("alarm").unwrap().data_type(), &DataType::Boolean);
        assert_eq!(schema.field_with_name("plate").unwrap().data_type(), &DataType::Utf8);
        let attrs = &names[8..names.len() - 1];
        assert!(attrs.windows(2).all(|w| w[0] < w[1]), "attributes sorted: {attrs:?}");
        assert!(file_schema(&schema).field_with_name("kind").is_err());
    }

    #[test]
    fn batch_holds_typed_attributes_and_json() {
        let kinds = KindRegistry::builtin();
        let schema = events_schema(&kinds);
        let mut events: Vec<Event> = (0..5).map(gps).collect();
        events[1].attrs.insert("lane".into(), Value::from(2.0)); // integral float → Int64
        events[2].attrs.insert("speed_kmh".into(), Value::from("fast")); // wrong type → null
        events.push(
            Event::new("door-1", "door", parse_time("2026-11-23T00:00:00Z").unwrap())
                .with("open", true)
                .with("note", "not declared"),
        );
        let batch = events_to_batch(&events, &schema);
        assert_eq!(batch.num_rows(), 6);
        let col = |name: &str| batch.column_by_name(name).unwrap().clone();
        let speed = col("speed_kmh");
        let speed = speed.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(speed.value(0), 40.0);
        assert!(speed.is_null(2) && speed.is_null(5));
        let lane = col("lane");
        let lane = lane.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(lane.value(1), 2);
        assert!(lane.is_null(0));
        let open = col("open");
        let open = open.as_any().downcast_ref::<BooleanArray>().unwrap();
        assert!(open.value(5) && open.is_null(4));
        let attrs = col("attrs");
        let attrs = attrs.as_any().downcast_ref::<StringArray>().unwrap();
        let json: Value = serde_json::from_str(attrs.value(5)).unwrap();
        assert_eq!(json["note"], "not declared");
        assert_eq!(col("kind").as_string::<i32>().value(5), "door");
        let lon = col("lon");
        assert!(lon.is_null(5) && !lon.is_null(0));
        let time = col("time");
        let time = time.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(time.value(0) % 1_000_000, 250_000);
    }

    #[test]
    fn subset_schemas_and_day_column() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("day", DataType::Date32, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("plate", DataType::Utf8, true),
            Field::new("mystery", DataType::Int64, true),
        ]));
        let events = [gps(1), gps(2)];
        let refs: Vec<&Event> = events.iter().collect();
        let batch = events_to_batch(&refs, &schema);
        let day = batch.column(0).as_primitive::<datafusion::arrow::datatypes::Date32Type>();
        assert_eq!(day.value(0), 20_779); // 2026-11-22
        assert_eq!(batch.column(2).as_string::<i32>().value(1), "沪A00002");
        assert_eq!(batch.column(3).null_count(), 2);
    }

    #[test]
    fn conflicting_and_reserved_attributes_are_reported() {
        let mut kinds = KindRegistry::builtin();
        check_kinds(&kinds).unwrap();
        let mut schema = KindSchema { place: Default::default(), class: "sensor".into(), attrs: Default::default() };
        schema.attrs.insert("grid".into(), AttrSpec { ty: AttrType::String, required: false });
        kinds.declare("valve", schema);
        let err = check_kinds(&kinds).unwrap_err();
        assert!(err.to_string().contains("`grid`") && err.to_string().contains("valve"), "{err}");
        // The schema itself stays usable: the reserved name just gets no second column.
        let s = events_schema(&kinds);
        assert_eq!(s.fields().iter().filter(|f| f.name() == "grid").count(), 1);
    }

    #[test]
    fn align_fills_missing_columns_and_day() {
        let kinds = KindRegistry::builtin();
        let schema = events_schema(&kinds);
        let batch = events_to_batch(&[gps(0)], &schema);
        let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("day", DataType::Date32, false)));
        fields.push(Arc::new(Field::new("later_attr", DataType::Float64, true)));
        let target = Arc::new(Schema::new(fields));
        let aligned = align_batch(&batch, &target).unwrap();
        assert_eq!(aligned.num_columns(), target.fields().len());
        assert_eq!(aligned.column_by_name("later_attr").unwrap().null_count(), 1);
        assert_eq!(
            aligned.column_by_name("day").unwrap().as_primitive::<datafusion::arrow::datatypes::Date32Type>().value(0),
            20_779
        );
    }
}
