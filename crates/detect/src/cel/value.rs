//! Runtime values, CEL equality and ordering.
//!
//! Strings, lists and maps borrow from the event (JSON attributes are read in place, never
//! converted up front) or from the compiled program (literals), so evaluating a typical
//! predicate allocates nothing.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};

use super::time;

/// A CEL value; `'a` is the lifetime of the event and program it may borrow from.
///
/// `==` is CEL equality: numbers compare by value across int, uint and double
/// (`Int(1) == Double(1.0)`), values of different kinds are unequal, NaN is unequal to
/// itself, lists compare element-wise and maps entry-wise.
#[derive(Clone, Debug)]
pub enum CelValue<'a> {
    /// `null` (also JSON `null` in `event.attrs`).
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer (`1`, `-0x10`).
    Int(i64),
    /// An unsigned 64-bit integer (`1u`).
    Uint(u64),
    /// A 64-bit float (`1.5`); every JSON number in `event.attrs` becomes one.
    Double(f64),
    /// A string, borrowed from the event or the program where possible.
    String(Cow<'a, str>),
    /// A point in time, in UTC.
    Timestamp(DateTime<Utc>),
    /// A signed span of time.
    Duration(TimeDelta),
    /// A list.
    List(CelList<'a>),
    /// A map.
    Map(CelMap<'a>),
}

impl<'a> CelValue<'a> {
    /// The value of a JSON attribute, read in place: numbers become `Double`, arrays `List`,
    /// objects `Map`.
    pub fn from_json(value: &'a Value) -> CelValue<'a> {
        match value {
            Value::Null => CelValue::Null,
            Value::Bool(b) => CelValue::Bool(*b),
            Value::Number(n) => CelValue::Double(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => CelValue::String(Cow::Borrowed(s)),
            Value::Array(items) => CelValue::List(CelList(ListRepr::Json(items))),
            Value::Object(map) => CelValue::Map(CelMap(MapRepr::Json(map))),
        }
    }

    /// The CEL name of the value's type: `null_type`, `bool`, `int`, `uint`, `double`,
    /// `string`, `timestamp`, `duration`, `list` or `map`.
    pub fn type_name(&self) -> &'static str {
        self.type_tag().name()
    }

    pub(crate) fn type_tag(&self) -> TypeTag {
        match self {
            CelValue::Null => TypeTag::Null,
            CelValue::Bool(_) => TypeTag::Bool,
            CelValue::Int(_) => TypeTag::Int,
            CelValue::Uint(_) => TypeTag::Uint,
            CelValue::Double(_) => TypeTag::Double,
            CelValue::String(_) => TypeTag::String,
            CelValue::Timestamp(_) => TypeTag::Timestamp,
            CelValue::Duration(_) => TypeTag::Duration,
            CelValue::List(_) => TypeTag::List,
            CelValue::Map(_) => TypeTag::Map,
        }
    }

    /// The boolean, when the value is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            CelValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The string, when the value is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            CelValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// A copy that borrows nothing, to keep beyond the event and program.
    pub fn into_owned(self) -> CelValue<'static> {
        match self {
            CelValue::Null => CelValue::Null,
            CelValue::Bool(b) => CelValue::Bool(b),
            CelValue::Int(i) => CelValue::Int(i),
            CelValue::Uint(u) => CelValue::Uint(u),
            CelValue::Double(d) => CelValue::Double(d),
            CelValue::String(s) => CelValue::String(Cow::Owned(s.into_owned())),
            CelValue::Timestamp(t) => CelValue::Timestamp(t),
            CelValue::Duration(d) => CelValue::Duration(d),
            CelValue::List(l) => {
                CelValue::List(CelList::new(l.iter().map(CelValue::into_owned).collect()))
            }
            CelValue::Map(m) => CelValue::Map(CelMap(MapRepr::Shared(
                m.iter()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
            ))),
        }
    }

    /// A view of this value that borrows its strings, lists and maps instead of cloning them.
    pub(crate) fn reborrow<'b>(&'b self) -> CelValue<'b>
    where
        'a: 'b,
    {
        match self {
            CelValue::String(s) => CelValue::String(Cow::Borrowed(s)),
            CelValue::List(l) => CelValue::List(l.reborrow()),
            CelValue::Map(m) => CelValue::Map(m.reborrow()),
            CelValue::Null => CelValue::Null,
            CelValue::Bool(b) => CelValue::Bool(*b),
            CelValue::Int(i) => CelValue::Int(*i),
            CelValue::Uint(u) => CelValue::Uint(*u),
            CelValue::Double(d) => CelValue::Double(*d),
            CelValue::Timestamp(t) => CelValue::Timestamp(*t),
            CelValue::Duration(d) => CelValue::Duration(*d),
        }
    }

    /// Appends the string form used by `string()` and rule keys: strings as they are,
    /// numbers in canonical decimal form (`3`, `2.5`, `1e21`), `true`/`false`, timestamps in
    /// RFC 3339, durations in seconds (`90s`). Returns false (writing nothing) for null,
    /// lists and maps, which have no string form.
    pub(crate) fn write_string_form(&self, out: &mut String) -> bool {
        use std::fmt::Write as _;
        match self {
            CelValue::String(s) => out.push_str(s),
            CelValue::Int(i) => {
                let _ = write!(out, "{i}");
            }
            CelValue::Uint(u) => {
                let _ = write!(out, "{u}");
            }
            CelValue::Double(d) => time::write_double(out, *d),
            CelValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            CelValue::Timestamp(t) => time::write_timestamp(out, t),
            CelValue::Duration(d) => time::write_duration(out, *d),
            CelValue::Null | CelValue::List(_) | CelValue::Map(_) => return false,
        }
        true
    }
}

/// The type of a value, in one byte (keeps evaluation errors small).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeTag {
    Null,
    Bool,
    Int,
    Uint,
    Double,
    String,
    Timestamp,
    Duration,
    List,
    Map,
}

impl TypeTag {
    pub fn name(self) -> &'static str {
        match self {
            TypeTag::Null => "null_type",
            TypeTag::Bool => "bool",
            TypeTag::Int => "int",
            TypeTag::Uint => "uint",
            TypeTag::Double => "double",
            TypeTag::String => "string",
            TypeTag::Timestamp => "timestamp",
            TypeTag::Duration => "duration",
            TypeTag::List => "list",
            TypeTag::Map => "map",
        }
    }
}

impl<'b> PartialEq<CelValue<'b>> for CelValue<'_> {
    fn eq(&self, other: &CelValue<'b>) -> bool {
        equal(self, other)
    }
}

impl From<bool> for CelValue<'_> {
    fn from(b: bool) -> Self {
        CelValue::Bool(b)
    }
}

impl From<i64> for CelValue<'_> {
    fn from(i: i64) -> Self {
        CelValue::Int(i)
    }
}

impl From<f64> for CelValue<'_> {
    fn from(d: f64) -> Self {
        CelValue::Double(d)
    }
}

impl<'a> From<&'a str> for CelValue<'a> {
    fn from(s: &'a str) -> Self {
        CelValue::String(Cow::Borrowed(s))
    }
}

impl From<String> for CelValue<'_> {
    fn from(s: String) -> Self {
        CelValue::String(Cow::Owned(s))
    }
}

/// A CEL list: a JSON array read in place, a literal of the program, or values built while
/// evaluating.
#[derive(Clone)]
pub struct CelList<'a>(ListRepr<'a>);

#[derive(Clone)]
enum ListRepr<'a> {
    Json(&'a [Value]),
    Borrowed(&'a [CelValue<'a>]),
    Shared(Arc<[CelValue<'a>]>),
}

impl<'a> CelList<'a> {
    /// A list of the given values.
    pub fn new(values: Vec<CelValue<'a>>) -> Self {
        CelList(ListRepr::Shared(values.into()))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.0 {
            ListRepr::Json(items) => items.len(),
            ListRepr::Borrowed(items) => items.len(),
            ListRepr::Shared(items) => items.len(),
        }
    }

    /// True when the list has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element at `index`.
    pub fn get(&self, index: usize) -> Option<CelValue<'a>> {
        match &self.0 {
            ListRepr::Json(items) => items.get(index).map(CelValue::from_json),
            ListRepr::Borrowed(items) => items.get(index).map(CelValue::reborrow),
            ListRepr::Shared(items) => items.get(index).cloned(),
        }
    }

    /// The elements in order.
    pub fn iter(&self) -> impl Iterator<Item = CelValue<'a>> + '_ {
        (0..self.len()).map_while(|i| self.get(i))
    }

    fn reborrow<'b>(&'b self) -> CelList<'b>
    where
        'a: 'b,
    {
        CelList(match &self.0 {
            ListRepr::Json(items) => ListRepr::Json(items),
            ListRepr::Borrowed(items) => ListRepr::Borrowed(items),
            ListRepr::Shared(items) => ListRepr::Borrowed(items),
        })
    }
}

impl fmt::Debug for CelList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A CEL map: a JSON object read in place (such as `event.attrs`), a literal of the program,
/// or entries built while evaluating. Keys are strings, ints, uints or bools.
#[derive(Clone)]
pub struct CelMap<'a>(MapRepr<'a>);

type Entry<'a> = (CelValue<'a>, CelValue<'a>);

#[derive(Clone)]
enum MapRepr<'a> {
    Json(&'a Map<String, Value>),
    Borrowed(&'a [Entry<'a>]),
    Shared(Arc<[Entry<'a>]>),
}

impl<'a> CelMap<'a> {
    /// A map of the given entries; keys must be distinct under CEL equality (the first wins).
    pub fn new(entries: Vec<(CelValue<'a>, CelValue<'a>)>) -> Self {
        CelMap(MapRepr::Shared(entries.into()))
    }

    /// A map reading a JSON object in place.
    pub fn from_json(map: &'a Map<String, Value>) -> Self {
        CelMap(MapRepr::Json(map))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match &self.0 {
            MapRepr::Json(map) => map.len(),
            MapRepr::Borrowed(entries) => entries.len(),
            MapRepr::Shared(entries) => entries.len(),
        }
    }

    /// True when the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value under `key`; numeric keys match across int, uint and double (`m[1u]`
    /// finds the key `1`).
    pub fn get(&self, key: &CelValue<'_>) -> Option<CelValue<'a>> {
        match &self.0 {
            MapRepr::Json(map) => match key {
                CelValue::String(s) => map.get(s.as_ref()).map(CelValue::from_json),
                _ => None,
            },
            MapRepr::Borrowed(entries) => entries
                .iter()
                .find(|(k, _)| equal(k, key))
                .map(|(_, v)| v.reborrow()),
            MapRepr::Shared(entries) => entries
                .iter()
                .find(|(k, _)| equal(k, key))
                .map(|(_, v)| v.clone()),
        }
    }

    /// The value under the string key `key`.
    pub fn get_str(&self, key: &str) -> Option<CelValue<'a>> {
        match &self.0 {
            MapRepr::Json(map) => map.get(key).map(CelValue::from_json),
            _ => self.get(&CelValue::String(Cow::Borrowed(key))),
        }
    }

    /// True when the map has an entry under `key`.
    pub fn contains_key(&self, key: &CelValue<'_>) -> bool {
        match &self.0 {
            MapRepr::Json(map) => match key {
                CelValue::String(s) => map.contains_key(s.as_ref()),
                _ => false,
            },
            MapRepr::Borrowed(entries) => entries.iter().any(|(k, _)| equal(k, key)),
            MapRepr::Shared(entries) => entries.iter().any(|(k, _)| equal(k, key)),
        }
    }

    /// The entries, in the map's order (for JSON objects, serde_json's: sorted by key unless
    /// its `preserve_order` feature is on).
    pub fn iter(&self) -> CelMapIter<'_, 'a> {
        CelMapIter(match &self.0 {
            MapRepr::Json(map) => MapIterRepr::Json(map.iter()),
            MapRepr::Borrowed(entries) => MapIterRepr::Borrowed(entries.iter()),
            MapRepr::Shared(entries) => MapIterRepr::Shared(entries.iter()),
        })
    }

    fn reborrow<'b>(&'b self) -> CelMap<'b>
    where
        'a: 'b,
    {
        CelMap(match &self.0 {
            MapRepr::Json(map) => MapRepr::Json(map),
            MapRepr::Borrowed(entries) => MapRepr::Borrowed(entries),
            MapRepr::Shared(entries) => MapRepr::Borrowed(entries),
        })
    }
}

impl fmt::Debug for CelMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Iterator over the entries of a [`CelMap`].
pub struct CelMapIter<'l, 'a>(MapIterRepr<'l, 'a>);

enum MapIterRepr<'l, 'a> {
    Json(serde_json::map::Iter<'a>),
    Borrowed(std::slice::Iter<'a, Entry<'a>>),
    Shared(std::slice::Iter<'l, Entry<'a>>),
}

impl<'a> Iterator for CelMapIter<'_, 'a> {
    type Item = (CelValue<'a>, CelValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            MapIterRepr::Json(it) => it
                .next()
                .map(|(k, v)| (CelValue::String(Cow::Borrowed(k)), CelValue::from_json(v))),
            MapIterRepr::Borrowed(it) => it.next().map(|(k, v)| (k.reborrow(), v.reborrow())),
            MapIterRepr::Shared(it) => it.next().cloned(),
        }
    }
}

/// CEL equality (`==`): see [`CelValue`].
pub(crate) fn equal(a: &CelValue<'_>, b: &CelValue<'_>) -> bool {
    use CelValue as V;
    match (a, b) {
        (V::String(x), V::String(y)) => super::eval::bytes_eq(x.as_bytes(), y.as_bytes()),
        (V::Null, V::Null) => true,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Timestamp(x), V::Timestamp(y)) => x == y,
        (V::Duration(x), V::Duration(y)) => x == y,
        (V::List(x), V::List(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| equal(&p, &q))
        }
        (V::Map(x), V::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(&k).is_some_and(|w| equal(&v, &w)))
        }
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
            _ => false,
        },
    }
}

/// CEL ordering (`<`, `<=`, `>`, `>=`): `Err` when the two values cannot be ordered,
/// `Ok(None)` when a NaN is involved (every comparison is then false).
pub(crate) fn compare(a: &CelValue<'_>, b: &CelValue<'_>) -> Result<Option<Ordering>, ()> {
    use CelValue as V;
    match (a, b) {
        (V::String(x), V::String(y)) => Ok(Some(x.as_ref().cmp(y.as_ref()))),
        (V::Bool(x), V::Bool(y)) => Ok(Some(x.cmp(y))),
        (V::Timestamp(x), V::Timestamp(y)) => Ok(Some(x.cmp(y))),
        (V::Duration(x), V::Duration(y)) => Ok(Some(x.cmp(y))),
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => Ok(compare_numbers(x, y)),
            _ => Err(()),
        },
    }
}

#[derive(Clone, Copy)]
enum Number {
    I(i64),
    U(u64),
    D(f64),
}

fn number(v: &CelValue<'_>) -> Option<Number> {
    match v {
        CelValue::Int(i) => Some(Number::I(*i)),
        CelValue::Uint(u) => Some(Number::U(*u)),
        CelValue::Double(d) => Some(Number::D(*d)),
        _ => None,
    }
}

/// Exact comparison across int, uint and double (no rounding of large integers).
fn compare_numbers(a: Number, b: Number) -> Option<Ordering> {
    use Number::*;
    match (a, b) {
        (I(x), I(y)) => Some(x.cmp(&y)),
        (U(x), U(y)) => Some(x.cmp(&y)),
        (D(x), D(y)) => x.partial_cmp(&y),
        (I(x), U(y)) => Some(if x < 0 {
            Ordering::Less
        } else {
            (x as u64).cmp(&y)
        }),
        (U(_), I(_)) => compare_numbers(b, a).map(Ordering::reverse),
        (I(x), D(y)) => compare_int_double(x, y),
        (D(_), I(_)) => compare_numbers(b, a).map(Ordering::reverse),
        (U(x), D(y)) => compare_uint_double(x, y),
        (D(_), U(_)) => compare_numbers(b, a).map(Ordering::reverse),
    }
}

const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

fn compare_int_double(i: i64, d: f64) -> Option<Ordering> {
    if d.is_nan() {
        return None;
    }
    if d >= TWO_POW_63 {
        return Some(Ordering::Less);
    }
    if d < -TWO_POW_63 {
        return Some(Ordering::Greater);
    }
    let whole = d.trunc();
    // `whole` is integral and within i64 range here, so the cast is exact.
    match i.cmp(&(whole as i64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(d - whole)),
        other => Some(other),
    }
}

fn compare_uint_double(u: u64, d: f64) -> Option<Ordering> {
    if d.is_nan() {
        return None;
    }
    if d < 0.0 {
        return Some(Ordering::Greater);
    }
    if d >= TWO_POW_64 {
        return Some(Ordering::Less);
    }
    let whole = d.trunc();
    match u.cmp(&(whole as u64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(d - whole)),
        other => Some(other),
    }
}
