//! The compiled form of an expression (a tree of [`Node`]s with event fields, functions and
//! local variables resolved) and its interpreter.
//!
//! Hot-path rules: evaluating a node never looks a name up by string except a map key, never
//! clones a literal (literals are lent out with [`CelValue::reborrow`]), and errors are a
//! small [`Fault`] that only becomes a `String` when the caller asks for the message.

use std::borrow::Cow;
use std::fmt;

use chrono::{Datelike, FixedOffset, TimeDelta, Timelike};
use cityward_model::Event;

use super::parser::BinOp;
use super::time;
use super::value::{compare, equal, CelList, CelMap, CelValue, TypeTag};

/// A field of the `event` variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventField {
    Id,
    Source,
    Kind,
    Time,
    Lon,
    Lat,
    Grid,
    Unit,
    Attrs,
}

impl EventField {
    pub const ALL: [EventField; 9] = [
        EventField::Id,
        EventField::Source,
        EventField::Kind,
        EventField::Time,
        EventField::Lon,
        EventField::Lat,
        EventField::Grid,
        EventField::Unit,
        EventField::Attrs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventField::Id => "id",
            EventField::Source => "source",
            EventField::Kind => "kind",
            EventField::Time => "time",
            EventField::Lon => "lon",
            EventField::Lat => "lat",
            EventField::Grid => "grid",
            EventField::Unit => "unit",
            EventField::Attrs => "attrs",
        }
    }

    pub fn from_name(name: &str) -> Option<EventField> {
        EventField::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A part of a timestamp (or duration) read by an accessor method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimePart {
    FullYear,
    Month,
    DayOfYear,
    DayOfMonth,
    Date,
    DayOfWeek,
    Hours,
    Minutes,
    Seconds,
    Milliseconds,
}

impl TimePart {
    pub const ALL: [TimePart; 10] = [
        TimePart::FullYear,
        TimePart::Month,
        TimePart::DayOfYear,
        TimePart::DayOfMonth,
        TimePart::Date,
        TimePart::DayOfWeek,
        TimePart::Hours,
        TimePart::Minutes,
        TimePart::Seconds,
        TimePart::Milliseconds,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TimePart::FullYear => "getFullYear",
            TimePart::Month => "getMonth",
            TimePart::DayOfYear => "getDayOfYear",
            TimePart::DayOfMonth => "getDayOfMonth",
            TimePart::Date => "getDate",
            TimePart::DayOfWeek => "getDayOfWeek",
            TimePart::Hours => "getHours",
            TimePart::Minutes => "getMinutes",
            TimePart::Seconds => "getSeconds",
            TimePart::Milliseconds => "getMilliseconds",
        }
    }

    /// Whether a duration has this part too (as a total: `duration("90m").getHours() == 1`).
    pub fn on_duration(self) -> bool {
        matches!(
            self,
            TimePart::Hours | TimePart::Minutes | TimePart::Seconds | TimePart::Milliseconds
        )
    }
}

/// The time zone of a timestamp accessor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Zone {
    Utc,
    Fixed(FixedOffset),
    /// Given by the second argument, read at evaluation time.
    Dynamic,
}

/// A built-in function; the receiver of a method call is the first argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Func {
    Size,
    StartsWith,
    EndsWith,
    Contains,
    Int,
    Uint,
    Double,
    String,
    Bool,
    Timestamp,
    Duration,
    Dyn,
    Time(TimePart, Zone),
}

impl Func {
    pub fn name(self) -> &'static str {
        match self {
            Func::Size => "size",
            Func::StartsWith => "startsWith",
            Func::EndsWith => "endsWith",
            Func::Contains => "contains",
            Func::Int => "int",
            Func::Uint => "uint",
            Func::Double => "double",
            Func::String => "string",
            Func::Bool => "bool",
            Func::Timestamp => "timestamp",
            Func::Duration => "duration",
            Func::Dyn => "dyn",
            Func::Time(part, _) => part.name(),
        }
    }
}

/// The comprehension macros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompKind {
    All,
    Exists,
    ExistsOne,
    Map,
    Filter,
}

impl CompKind {
    pub fn name(self) -> &'static str {
        match self {
            CompKind::All => "all",
            CompKind::Exists => "exists",
            CompKind::ExistsOne => "exists_one",
            CompKind::Map => "map",
            CompKind::Filter => "filter",
        }
    }
}

/// `range.kind(x, body)`; for `map(x, filter, body)` the filter is the optional predicate.
#[derive(Debug, Clone)]
pub(crate) struct Comprehension {
    pub kind: CompKind,
    pub range: Node,
    pub body: Node,
    pub filter: Option<Node>,
}

/// A compiled expression node.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Const(CelValue<'static>),
    Field(EventField),
    /// `event.attrs.<key>` / `event.attrs["key"]`.
    Attr(Box<str>),
    /// `has(event.<field>)`.
    HasField(EventField),
    /// `has(event.attrs.<key>)`.
    HasAttr(Box<str>),
    /// `event.<field> <op> <literal>` for ==, !=, <, <=, >, >= (literal first is mirrored).
    FieldCmp(EventField, BinOp, CelValue<'static>),
    /// `event.attrs.<key> <op> <literal>`, comparing the JSON value in place.
    AttrCmp(Box<str>, BinOp, CelValue<'static>),
    /// A comprehension variable, as the number of scopes to walk out.
    Local(usize),
    Select(Box<Node>, Box<str>),
    Has(Box<Node>, Box<str>),
    Index(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Neg(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    List(Vec<Node>),
    Map(Vec<(Node, Node)>),
    Call(Func, Vec<Node>),
    Comprehension(Box<Comprehension>),
}

impl Node {
    pub fn is_const(&self) -> bool {
        matches!(self, Node::Const(_))
    }

    /// Whether every direct child is a constant, so that the node evaluates to the same value
    /// for every event (it may still fail).
    pub fn children_are_const(&self) -> bool {
        match self {
            Node::Const(_)
            | Node::Field(_)
            | Node::Attr(_)
            | Node::HasField(_)
            | Node::HasAttr(_)
            | Node::Local(_)
            | Node::FieldCmp(..)
            | Node::AttrCmp(..)
            | Node::Comprehension(_) => false,
            Node::Select(o, _) | Node::Has(o, _) | Node::Not(o) | Node::Neg(o) => o.is_const(),
            Node::Index(a, b) | Node::Binary(_, a, b) => a.is_const() && b.is_const(),
            Node::Cond(a, b, c) => a.is_const() && b.is_const() && c.is_const(),
            Node::And(v) | Node::Or(v) | Node::List(v) | Node::Call(_, v) => {
                v.iter().all(Node::is_const)
            }
            Node::Map(entries) => entries.iter().all(|(k, v)| k.is_const() && v.is_const()),
        }
    }
}

/// How a missing overload is written in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    Infix,
    Prefix,
    Call,
    Method,
}

/// An evaluation error, cheap to create; [`fmt::Display`] writes the message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fault<'a> {
    NoSuchKey(Cow<'a, str>),
    /// An optional event field that this event does not have.
    Absent(EventField),
    NoOverload {
        op: &'static str,
        form: Form,
        lhs: TypeTag,
        rhs: Option<TypeTag>,
    },
    NoSuchField {
        field: &'a str,
        on: TypeTag,
    },
    Overflow(&'static str),
    DivisionByZero,
    ModulusByZero,
    IndexOutOfRange {
        index: i64,
        len: usize,
    },
    Message(String),
}

impl fmt::Display for Fault<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::NoSuchKey(key) => write!(f, "no such key: '{key}'"),
            Fault::Absent(field) => {
                let what = if matches!(field, EventField::Lon | EventField::Lat) {
                    "field"
                } else {
                    "key"
                };
                let name = field.name();
                write!(
                    f,
                    "no such {what}: '{name}' (this event has no {name}; guard with has(event.{name}))"
                )
            }
            Fault::NoOverload { op, form, lhs, rhs } => {
                write!(f, "no such overload: ")?;
                let lhs = lhs.name();
                let rhs = rhs.map(TypeTag::name);
                match (form, rhs) {
                    (Form::Infix, Some(rhs)) => write!(f, "{lhs} {op} {rhs}"),
                    (Form::Infix | Form::Prefix, _) => write!(f, "{op}{lhs}"),
                    (Form::Call, None) => write!(f, "{op}({lhs})"),
                    (Form::Call, Some(rhs)) => write!(f, "{op}({lhs}, {rhs})"),
                    (Form::Method, None) => write!(f, "{lhs}.{op}()"),
                    (Form::Method, Some(rhs)) => write!(f, "{lhs}.{op}({rhs})"),
                }
            }
            Fault::NoSuchField { field, on } => {
                write!(
                    f,
                    "no such field: '{field}' (a {} has no fields)",
                    on.name()
                )
            }
            Fault::Overflow(op) => write!(f, "overflow in '{op}'"),
            Fault::DivisionByZero => write!(f, "division by zero"),
            Fault::ModulusByZero => write!(f, "modulus by zero"),
            Fault::IndexOutOfRange { index, len } => {
                write!(f, "index {index} out of range for a list of size {len}")
            }
            Fault::Message(m) => f.write_str(m),
        }
    }
}

fn infix<'a>(op: &'static str, a: &CelValue<'_>, b: &CelValue<'_>) -> Fault<'a> {
    Fault::NoOverload {
        op,
        form: Form::Infix,
        lhs: a.type_tag(),
        rhs: Some(b.type_tag()),
    }
}

fn call<'a>(func: Func, args: &[&CelValue<'_>], method: bool) -> Fault<'a> {
    Fault::NoOverload {
        op: func.name(),
        form: if method { Form::Method } else { Form::Call },
        lhs: args.first().map_or(TypeTag::Null, |a| a.type_tag()),
        rhs: args.get(1).map(|a| a.type_tag()),
    }
}

/// A comprehension variable in scope; scopes chain outwards on the stack (no allocation).
pub(crate) struct Scope<'s, 'a> {
    value: CelValue<'a>,
    parent: Option<&'s Scope<'s, 'a>>,
}

pub(crate) type Outcome<'a> = Result<CelValue<'a>, Fault<'a>>;

/// Evaluates `node` against `event`.
pub(crate) fn eval<'a>(
    node: &'a Node,
    event: &'a Event,
    scope: Option<&Scope<'_, 'a>>,
) -> Outcome<'a> {
    use CelValue as V;
    match node {
        Node::Const(v) => Ok(v.reborrow()),
        Node::Field(field) => field_value(*field, event),
        Node::Attr(key) => match attr(&event.attrs, key) {
            Some(v) => Ok(V::from_json(v)),
            None => Err(Fault::NoSuchKey(Cow::Borrowed(key))),
        },
        Node::HasField(field) => Ok(V::Bool(match field {
            EventField::Id => !event.id.is_empty(),
            EventField::Source => !event.source.is_empty(),
            EventField::Kind => !event.kind.is_empty(),
            EventField::Time => true,
            EventField::Lon => event.lon.is_some(),
            EventField::Lat => event.lat.is_some(),
            EventField::Grid => event.grid.is_some(),
            EventField::Unit => event.unit.is_some(),
            EventField::Attrs => !event.attrs.is_empty(),
        })),
        Node::HasAttr(key) => Ok(V::Bool(attr(&event.attrs, key).is_some())),
        Node::FieldCmp(field, op, literal) => {
            let value = field_value(*field, event)?;
            compare_op(*op, &value, literal).map(V::Bool)
        }
        Node::AttrCmp(key, op, literal) => match attr(&event.attrs, key) {
            Some(value) => json_compare(*op, value, literal).map(V::Bool),
            None => Err(Fault::NoSuchKey(Cow::Borrowed(key))),
        },
        Node::Local(depth) => {
            let mut s = scope.expect("local variables are resolved inside their comprehension");
            for _ in 0..*depth {
                s = s
                    .parent
                    .expect("local variables are resolved inside their comprehension");
            }
            Ok(s.value.clone())
        }
        Node::Select(operand, field) => match eval(operand, event, scope)? {
            V::Map(m) => m
                .get_str(field)
                .ok_or(Fault::NoSuchKey(Cow::Borrowed(field))),
            other => Err(Fault::NoSuchField {
                field,
                on: other.type_tag(),
            }),
        },
        Node::Has(operand, field) => match eval(operand, event, scope)? {
            V::Map(m) => Ok(V::Bool(m.contains_key(&V::String(Cow::Borrowed(field))))),
            other => Err(Fault::Message(format!(
                "has() needs a map to test for '{field}', found {}",
                other.type_name()
            ))),
        },
        Node::Index(operand, index) => {
            let container = eval(operand, event, scope)?;
            let index = eval(index, event, scope)?;
            index_value(container, index)
        }
        Node::Not(operand) => match eval(operand, event, scope)? {
            V::Bool(b) => Ok(V::Bool(!b)),
            other => Err(Fault::NoOverload {
                op: "!",
                form: Form::Prefix,
                lhs: other.type_tag(),
                rhs: None,
            }),
        },
        Node::Neg(operand) => match eval(operand, event, scope)? {
            V::Int(i) => i.checked_neg().map(V::Int).ok_or(Fault::Overflow("-")),
            V::Double(d) => Ok(V::Double(-d)),
            other => Err(Fault::NoOverload {
                op: "-",
                form: Form::Prefix,
                lhs: other.type_tag(),
                rhs: None,
            }),
        },
        Node::And(terms) => logical(terms, false, event, scope),
        Node::Or(terms) => logical(terms, true, event, scope),
        Node::Cond(cond, then, otherwise) => match eval(cond, event, scope)? {
            V::Bool(true) => eval(then, event, scope),
            V::Bool(false) => eval(otherwise, event, scope),
            other => Err(Fault::NoOverload {
                op: "?:",
                form: Form::Prefix,
                lhs: other.type_tag(),
                rhs: None,
            }),
        },
        Node::Binary(op, lhs, rhs) => {
            let a = eval(lhs, event, scope)?;
            let b = eval(rhs, event, scope)?;
            binary(*op, a, b)
        }
        Node::List(items) => {
            let mut values = Vec::with_capacity(items.len());
            for item in items {
                values.push(eval(item, event, scope)?);
            }
            Ok(V::List(CelList::new(values)))
        }
        Node::Map(entries) => {
            let mut values: Vec<(CelValue<'a>, CelValue<'a>)> = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let key = eval(k, event, scope)?;
                if !matches!(key, V::String(_) | V::Int(_) | V::Uint(_) | V::Bool(_)) {
                    return Err(Fault::Message(format!(
                        "a map key must be a string, int, uint or bool, found {}",
                        key.type_name()
                    )));
                }
                if values.iter().any(|(existing, _)| equal(existing, &key)) {
                    let mut text = String::new();
                    key.write_string_form(&mut text);
                    return Err(Fault::Message(format!("duplicate map key '{text}'")));
                }
                let value = eval(v, event, scope)?;
                values.push((key, value));
            }
            Ok(V::Map(CelMap::new(values)))
        }
        Node::Call(func, args) => call_func(*func, args, event, scope),
        Node::Comprehension(c) => comprehension(c, event, scope),
    }
}

/// `attrs[key]`. Small maps (the usual case) are scanned comparing lengths first, which beats
/// the ordered search's `memcmp` on every key it passes.
#[inline]
pub(crate) fn attr<'e>(
    attrs: &'e serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Option<&'e serde_json::Value> {
    if attrs.len() <= 16 {
        let key = key.as_bytes();
        attrs
            .iter()
            .find(|(k, _)| bytes_eq(k.as_bytes(), key))
            .map(|(_, v)| v)
    } else {
        attrs.get(key)
    }
}

/// The outcome of a predicate for [`truth`]: errors and non-bool values are both `Fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Truth {
    True,
    False,
    Fail,
}

impl From<bool> for Truth {
    #[inline]
    fn from(b: bool) -> Truth {
        if b {
            Truth::True
        } else {
            Truth::False
        }
    }
}

/// Evaluates a top-level predicate to true, false or failed, without building values for the
/// boolean structure and the specialised comparisons; same result as [`eval`] otherwise.
pub(crate) fn truth(node: &Node, event: &Event) -> Truth {
    match node {
        Node::And(terms) => logical_truth(terms, Truth::False, event),
        Node::Or(terms) => logical_truth(terms, Truth::True, event),
        Node::Not(operand) => match truth(operand, event) {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Fail => Truth::Fail,
        },
        Node::FieldCmp(field, op, literal) => {
            let text = match field {
                EventField::Id => Some(event.id.as_str()),
                EventField::Source => Some(event.source.as_str()),
                EventField::Kind => Some(event.kind.as_str()),
                _ => None,
            };
            match (text, literal) {
                (Some(text), CelValue::String(lit)) => str_op(*op, text, lit).into(),
                _ => match field_value(*field, event) {
                    Ok(value) => compare_op(*op, &value, literal).map_or(Truth::Fail, Truth::from),
                    Err(_) => Truth::Fail,
                },
            }
        }
        Node::AttrCmp(key, op, literal) => match attr(&event.attrs, key) {
            Some(value) => json_truth(*op, value, literal),
            None => Truth::Fail,
        },
        Node::HasAttr(key) => attr(&event.attrs, key).is_some().into(),
        Node::Const(CelValue::Bool(b)) => (*b).into(),
        _ => match eval(node, event, None) {
            Ok(CelValue::Bool(b)) => b.into(),
            _ => Truth::Fail,
        },
    }
}

/// `&&` (`deciding` = False) or `||` (`deciding` = True) for [`truth`].
fn logical_truth(terms: &[Node], deciding: Truth, event: &Event) -> Truth {
    let mut failed = false;
    for term in terms {
        match truth(term, event) {
            Truth::Fail => failed = true,
            t if t == deciding => return deciding,
            _ => {}
        }
    }
    if failed {
        Truth::Fail
    } else if deciding == Truth::False {
        Truth::True
    } else {
        Truth::False
    }
}

fn field_value(field: EventField, event: &Event) -> Outcome<'_> {
    use CelValue as V;
    let absent = || Fault::Absent(field);
    Ok(match field {
        EventField::Id => V::String(Cow::Borrowed(&event.id)),
        EventField::Source => V::String(Cow::Borrowed(&event.source)),
        EventField::Kind => V::String(Cow::Borrowed(&event.kind)),
        EventField::Time => V::Timestamp(event.time),
        EventField::Lon => V::Double(event.lon.ok_or_else(absent)?),
        EventField::Lat => V::Double(event.lat.ok_or_else(absent)?),
        EventField::Grid => V::String(Cow::Borrowed(event.grid.as_deref().ok_or_else(absent)?)),
        EventField::Unit => V::String(Cow::Borrowed(event.unit.as_deref().ok_or_else(absent)?)),
        EventField::Attrs => V::Map(CelMap::from_json(&event.attrs)),
    })
}

/// `&&` (`short` = false) and `||` (`short` = true) over any number of terms, with CEL's
/// commutative semantics: a deciding value wins over errors in any other term; otherwise the
/// first error (or non-bool) is the result.
fn logical<'a>(
    terms: &'a [Node],
    short: bool,
    event: &'a Event,
    scope: Option<&Scope<'_, 'a>>,
) -> Outcome<'a> {
    let mut fault = None;
    for term in terms {
        match eval(term, event, scope) {
            Ok(CelValue::Bool(b)) if b == short => return Ok(CelValue::Bool(short)),
            Ok(CelValue::Bool(_)) => {}
            Ok(other) => {
                if fault.is_none() {
                    fault = Some(Fault::NoOverload {
                        op: if short { "||" } else { "&&" },
                        form: Form::Infix,
                        lhs: other.type_tag(),
                        rhs: Some(TypeTag::Bool),
                    });
                }
            }
            Err(e) => {
                if fault.is_none() {
                    fault = Some(e);
                }
            }
        }
    }
    match fault {
        Some(e) => Err(e),
        None => Ok(CelValue::Bool(!short)),
    }
}

#[inline(never)]
fn index_value<'a>(container: CelValue<'a>, index: CelValue<'a>) -> Outcome<'a> {
    use CelValue as V;
    match &container {
        V::List(list) => {
            let i: i64 = match index {
                V::Int(i) => i,
                V::Uint(u) => i64::try_from(u).unwrap_or(i64::MAX),
                V::Double(d) if d.fract() == 0.0 && d.abs() < 9.2e18 => d as i64,
                _ => return Err(infix("[]", &container, &index)),
            };
            usize::try_from(i)
                .ok()
                .and_then(|i| list.get(i))
                .ok_or(Fault::IndexOutOfRange {
                    index: i,
                    len: list.len(),
                })
        }
        V::Map(map) => match map.get(&index) {
            Some(v) => Ok(v),
            None => Err(Fault::NoSuchKey(match index {
                V::String(s) => s,
                other => {
                    let mut text = String::new();
                    other.write_string_form(&mut text);
                    Cow::Owned(text)
                }
            })),
        },
        _ => Err(infix("[]", &container, &index)),
    }
}

/// `a <op> b` for the equality and ordering operators.
#[inline]
fn compare_op<'a>(op: BinOp, a: &CelValue<'_>, b: &CelValue<'_>) -> Result<bool, Fault<'a>> {
    match op {
        BinOp::Eq => Ok(equal(a, b)),
        BinOp::Ne => Ok(!equal(a, b)),
        _ => match compare(a, b) {
            Ok(Some(ord)) => Ok(match op {
                BinOp::Lt => ord.is_lt(),
                BinOp::Le => ord.is_le(),
                BinOp::Gt => ord.is_gt(),
                _ => ord.is_ge(),
            }),
            Ok(None) => Ok(false),
            Err(()) => Err(infix(op.symbol(), a, b)),
        },
    }
}

/// Byte equality that stays inline for short strings (kinds, classes, attribute names), where
/// a call to `memcmp` would cost more than the comparison.
#[inline]
pub(crate) fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    let half = |s: &[u8], i: usize| u32::from_le_bytes(s[i..i + 4].try_into().expect("4 bytes"));
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

#[inline]
fn str_op(op: BinOp, a: &str, b: &str) -> bool {
    match op {
        BinOp::Eq => bytes_eq(a.as_bytes(), b.as_bytes()),
        BinOp::Ne => !bytes_eq(a.as_bytes(), b.as_bytes()),
        BinOp::Lt => a < b,
        BinOp::Le => a <= b,
        BinOp::Gt => a > b,
        _ => a >= b,
    }
}

/// IEEE comparison, which is CEL's for doubles (NaN is unequal to everything, unordered).
#[inline]
fn f64_op(op: BinOp, a: f64, b: f64) -> bool {
    match op {
        BinOp::Eq => a == b,
        BinOp::Ne => a != b,
        BinOp::Lt => a < b,
        BinOp::Le => a <= b,
        BinOp::Gt => a > b,
        _ => a >= b,
    }
}

/// `json <op> literal` without converting the JSON value when both are strings or numbers.
#[inline]
fn json_compare<'a>(
    op: BinOp,
    json: &serde_json::Value,
    literal: &CelValue<'_>,
) -> Result<bool, Fault<'a>> {
    use serde_json::Value as J;
    match (json, literal) {
        (J::String(s), CelValue::String(lit)) => Ok(str_op(op, s, lit)),
        (J::Number(n), CelValue::Double(lit)) => {
            Ok(f64_op(op, n.as_f64().unwrap_or(f64::NAN), *lit))
        }
        _ => compare_op(op, &CelValue::from_json(json), literal),
    }
}

/// [`json_compare`] for [`truth`].
#[inline]
fn json_truth(op: BinOp, json: &serde_json::Value, literal: &CelValue<'_>) -> Truth {
    use serde_json::Value as J;
    match (json, literal) {
        (J::String(s), CelValue::String(lit)) => str_op(op, s, lit).into(),
        (J::Number(n), CelValue::Double(lit)) => {
            f64_op(op, n.as_f64().unwrap_or(f64::NAN), *lit).into()
        }
        _ => compare_op(op, &CelValue::from_json(json), literal).map_or(Truth::Fail, Truth::from),
    }
}

fn binary<'a>(op: BinOp, a: CelValue<'a>, b: CelValue<'a>) -> Outcome<'a> {
    use CelValue as V;
    match op {
        BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            compare_op(op, &a, &b).map(V::Bool)
        }
        BinOp::In => match &b {
            V::List(list) => Ok(V::Bool(list.iter().any(|item| equal(&item, &a)))),
            V::Map(map) => Ok(V::Bool(map.contains_key(&a))),
            _ => Err(infix("in", &a, &b)),
        },
        BinOp::Add => add(a, b),
        BinOp::Sub => subtract(a, b),
        BinOp::Mul | BinOp::Div | BinOp::Rem => arithmetic(op, a, b),
    }
}

#[inline(never)]
fn add<'a>(a: CelValue<'a>, b: CelValue<'a>) -> Outcome<'a> {
    use CelValue as V;
    let overflow = Fault::Overflow("+");
    match (a, b) {
        (V::Int(x), V::Int(y)) => x.checked_add(y).map(V::Int).ok_or(overflow),
        (V::Uint(x), V::Uint(y)) => x.checked_add(y).map(V::Uint).ok_or(overflow),
        (V::Double(x), V::Double(y)) => Ok(V::Double(x + y)),
        (V::String(x), V::String(y)) => {
            if y.is_empty() {
                Ok(V::String(x))
            } else if x.is_empty() {
                Ok(V::String(y))
            } else {
                let mut s = x.into_owned();
                s.push_str(&y);
                Ok(V::String(Cow::Owned(s)))
            }
        }
        (V::List(x), V::List(y)) => {
            if y.is_empty() {
                Ok(V::List(x))
            } else if x.is_empty() {
                Ok(V::List(y))
            } else {
                let mut values: Vec<CelValue<'a>> = Vec::with_capacity(x.len() + y.len());
                values.extend(x.iter());
                values.extend(y.iter());
                Ok(V::List(CelList::new(values)))
            }
        }
        (V::Timestamp(t), V::Duration(d)) | (V::Duration(d), V::Timestamp(t)) => t
            .checked_add_signed(d)
            .and_then(time::check_timestamp)
            .map(V::Timestamp)
            .ok_or(overflow),
        (V::Duration(x), V::Duration(y)) => x
            .checked_add(&y)
            .and_then(time::check_duration)
            .map(V::Duration)
            .ok_or(overflow),
        (a, b) => Err(infix("+", &a, &b)),
    }
}

#[inline(never)]
fn subtract<'a>(a: CelValue<'a>, b: CelValue<'a>) -> Outcome<'a> {
    use CelValue as V;
    let overflow = Fault::Overflow("-");
    match (a, b) {
        (V::Int(x), V::Int(y)) => x.checked_sub(y).map(V::Int).ok_or(overflow),
        (V::Uint(x), V::Uint(y)) => x.checked_sub(y).map(V::Uint).ok_or(overflow),
        (V::Double(x), V::Double(y)) => Ok(V::Double(x - y)),
        (V::Timestamp(x), V::Timestamp(y)) => time::check_duration(x.signed_duration_since(y))
            .map(V::Duration)
            .ok_or(overflow),
        (V::Timestamp(t), V::Duration(d)) => t
            .checked_sub_signed(d)
            .and_then(time::check_timestamp)
            .map(V::Timestamp)
            .ok_or(overflow),
        (V::Duration(x), V::Duration(y)) => x
            .checked_sub(&y)
            .and_then(time::check_duration)
            .map(V::Duration)
            .ok_or(overflow),
        (a, b) => Err(infix("-", &a, &b)),
    }
}

#[inline(never)]
fn arithmetic<'a>(op: BinOp, a: CelValue<'a>, b: CelValue<'a>) -> Outcome<'a> {
    use CelValue as V;
    let symbol = op.symbol();
    match (op, &a, &b) {
        (BinOp::Mul, V::Int(x), V::Int(y)) => {
            x.checked_mul(*y).map(V::Int).ok_or(Fault::Overflow(symbol))
        }
        (BinOp::Mul, V::Uint(x), V::Uint(y)) => x
            .checked_mul(*y)
            .map(V::Uint)
            .ok_or(Fault::Overflow(symbol)),
        (BinOp::Mul, V::Double(x), V::Double(y)) => Ok(V::Double(x * y)),
        (BinOp::Div, V::Int(_), V::Int(0)) | (BinOp::Div, V::Uint(_), V::Uint(0)) => {
            Err(Fault::DivisionByZero)
        }
        (BinOp::Div, V::Int(x), V::Int(y)) => {
            x.checked_div(*y).map(V::Int).ok_or(Fault::Overflow(symbol))
        }
        (BinOp::Div, V::Uint(x), V::Uint(y)) => Ok(V::Uint(x / y)),
        (BinOp::Div, V::Double(x), V::Double(y)) => Ok(V::Double(x / y)),
        (BinOp::Rem, V::Int(_), V::Int(0)) | (BinOp::Rem, V::Uint(_), V::Uint(0)) => {
            Err(Fault::ModulusByZero)
        }
        (BinOp::Rem, V::Int(x), V::Int(y)) => {
            x.checked_rem(*y).map(V::Int).ok_or(Fault::Overflow(symbol))
        }
        (BinOp::Rem, V::Uint(x), V::Uint(y)) => Ok(V::Uint(x % y)),
        _ => Err(infix(symbol, &a, &b)),
    }
}

#[inline(never)]
fn call_func<'a>(
    func: Func,
    args: &'a [Node],
    event: &'a Event,
    scope: Option<&Scope<'_, 'a>>,
) -> Outcome<'a> {
    use CelValue as V;
    let first = eval(&args[0], event, scope)?;
    match func {
        Func::Size => {
            let n = match &first {
                V::String(s) => s.chars().count(),
                V::List(l) => l.len(),
                V::Map(m) => m.len(),
                other => return Err(call(func, &[other], false)),
            };
            Ok(V::Int(n as i64))
        }
        Func::StartsWith | Func::EndsWith | Func::Contains => {
            let second = eval(&args[1], event, scope)?;
            match (&first, &second) {
                (V::String(s), V::String(p)) => Ok(V::Bool(match func {
                    Func::StartsWith => s.starts_with(p.as_ref()),
                    Func::EndsWith => s.ends_with(p.as_ref()),
                    _ => s.contains(p.as_ref()),
                })),
                _ => Err(call(func, &[&first, &second], true)),
            }
        }
        Func::Dyn => Ok(first),
        Func::Int => to_int(first),
        Func::Uint => to_uint(first),
        Func::Double => match first {
            V::Double(_) => Ok(first),
            V::Int(i) => Ok(V::Double(i as f64)),
            V::Uint(u) => Ok(V::Double(u as f64)),
            V::String(s) => s
                .trim()
                .parse::<f64>()
                .map(V::Double)
                .map_err(|_| Fault::Message(format!("double(\"{s}\"): not a number"))),
            other => Err(call(func, &[&other], false)),
        },
        Func::String => match first {
            V::String(_) => Ok(first),
            other => {
                let mut text = String::new();
                if other.write_string_form(&mut text) {
                    Ok(V::String(Cow::Owned(text)))
                } else {
                    Err(call(func, &[&other], false))
                }
            }
        },
        Func::Bool => match first {
            V::Bool(_) => Ok(first),
            V::String(s) => match s.as_ref() {
                "true" | "True" | "TRUE" | "t" | "1" => Ok(V::Bool(true)),
                "false" | "False" | "FALSE" | "f" | "0" => Ok(V::Bool(false)),
                _ => Err(Fault::Message(format!("bool(\"{s}\"): not a boolean"))),
            },
            other => Err(call(func, &[&other], false)),
        },
        Func::Timestamp => match first {
            V::Timestamp(_) => Ok(first),
            V::String(s) => time::parse_timestamp(&s)
                .map(V::Timestamp)
                .map_err(Fault::Message),
            V::Int(secs) => chrono::DateTime::from_timestamp(secs, 0)
                .and_then(time::check_timestamp)
                .map(V::Timestamp)
                .ok_or_else(|| Fault::Message(format!("timestamp({secs}): out of range"))),
            other => Err(call(func, &[&other], false)),
        },
        Func::Duration => match first {
            V::Duration(_) => Ok(first),
            V::String(s) => time::parse_duration(&s)
                .map(V::Duration)
                .map_err(Fault::Message),
            other => Err(call(func, &[&other], false)),
        },
        Func::Time(part, zone) => {
            let offset = match zone {
                Zone::Utc => None,
                Zone::Fixed(offset) => Some(offset),
                Zone::Dynamic => match eval(&args[1], event, scope)? {
                    V::String(s) => Some(time::parse_time_zone(&s).map_err(Fault::Message)?),
                    other => return Err(call(func, &[&first, &other], true)),
                },
            };
            match first {
                V::Timestamp(t) => Ok(V::Int(match offset {
                    None => time_part(part, &t),
                    Some(offset) => time_part(part, &t.with_timezone(&offset)),
                })),
                V::Duration(d) if part.on_duration() && offset.is_none() => {
                    Ok(V::Int(duration_part(part, d)))
                }
                other => Err(call(func, &[&other], true)),
            }
        }
    }
}

fn time_part<T: Datelike + Timelike>(part: TimePart, t: &T) -> i64 {
    i64::from(match part {
        TimePart::FullYear => return i64::from(t.year()),
        TimePart::Month => t.month0(),
        TimePart::DayOfYear => t.ordinal0(),
        TimePart::DayOfMonth => t.day0(),
        TimePart::Date => t.day(),
        TimePart::DayOfWeek => t.weekday().num_days_from_sunday(),
        TimePart::Hours => t.hour(),
        TimePart::Minutes => t.minute(),
        TimePart::Seconds => t.second(),
        TimePart::Milliseconds => t.nanosecond() % 1_000_000_000 / 1_000_000,
    })
}

fn duration_part(part: TimePart, d: TimeDelta) -> i64 {
    match part {
        TimePart::Hours => d.num_hours(),
        TimePart::Minutes => d.num_minutes(),
        TimePart::Seconds => d.num_seconds(),
        _ => d.num_milliseconds(),
    }
}

const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

#[inline(never)]
fn to_int(value: CelValue<'_>) -> Outcome<'_> {
    use CelValue as V;
    let range = |what: String| Fault::Message(format!("int({what}): out of range"));
    match value {
        V::Int(_) => Ok(value),
        V::Uint(u) => i64::try_from(u)
            .map(V::Int)
            .map_err(|_| range(format!("{u}u"))),
        V::Double(d) => {
            if !(-TWO_POW_63..TWO_POW_63).contains(&d) {
                let mut text = String::new();
                time::write_double(&mut text, d);
                Err(range(text))
            } else {
                Ok(V::Int(d as i64))
            }
        }
        V::String(s) => s
            .parse::<i64>()
            .map(V::Int)
            .map_err(|_| Fault::Message(format!("int(\"{s}\"): not an integer"))),
        V::Timestamp(t) => Ok(V::Int(t.timestamp())),
        other => Err(call(Func::Int, &[&other], false)),
    }
}

#[inline(never)]
fn to_uint(value: CelValue<'_>) -> Outcome<'_> {
    use CelValue as V;
    let range = |what: String| Fault::Message(format!("uint({what}): out of range"));
    match value {
        V::Uint(_) => Ok(value),
        V::Int(i) => u64::try_from(i)
            .map(V::Uint)
            .map_err(|_| range(i.to_string())),
        V::Double(d) => {
            if !(0.0..TWO_POW_64).contains(&d) {
                let mut text = String::new();
                time::write_double(&mut text, d);
                Err(range(text))
            } else {
                Ok(V::Uint(d as u64))
            }
        }
        V::String(s) => s
            .parse::<u64>()
            .map(V::Uint)
            .map_err(|_| Fault::Message(format!("uint(\"{s}\"): not an unsigned integer"))),
        other => Err(call(Func::Uint, &[&other], false)),
    }
}

/// The elements a comprehension ranges over: a list's elements or a map's keys.
enum RangeIter<'l, 'a> {
    List(&'l CelList<'a>, usize),
    Keys(super::value::CelMapIter<'l, 'a>),
}

impl<'a> Iterator for RangeIter<'_, 'a> {
    type Item = CelValue<'a>;

    fn next(&mut self) -> Option<CelValue<'a>> {
        match self {
            RangeIter::List(list, i) => {
                let item = list.get(*i)?;
                *i += 1;
                Some(item)
            }
            RangeIter::Keys(it) => it.next().map(|(k, _)| k),
        }
    }
}

#[inline(never)]
fn comprehension<'a>(
    c: &'a Comprehension,
    event: &'a Event,
    scope: Option<&Scope<'_, 'a>>,
) -> Outcome<'a> {
    use CelValue as V;
    let range = eval(&c.range, event, scope)?;
    let items = match &range {
        V::List(list) => RangeIter::List(list, 0),
        V::Map(map) => RangeIter::Keys(map.iter()),
        other => {
            return Err(Fault::NoOverload {
                op: c.kind.name(),
                form: Form::Method,
                lhs: other.type_tag(),
                rhs: None,
            })
        }
    };
    let predicate = |node: &'a Node, inner: &Scope<'_, 'a>| -> Result<bool, Fault<'a>> {
        match eval(node, event, Some(inner))? {
            V::Bool(b) => Ok(b),
            other => Err(Fault::Message(format!(
                "the predicate of {}() must be a bool, found {}",
                c.kind.name(),
                other.type_name()
            ))),
        }
    };
    match c.kind {
        CompKind::All | CompKind::Exists => {
            // Like a chain of && (all) or || (exists): a deciding element wins over errors.
            let deciding = c.kind == CompKind::Exists;
            let mut fault = None;
            for item in items {
                let inner = Scope {
                    value: item,
                    parent: scope,
                };
                match predicate(&c.body, &inner) {
                    Ok(b) if b == deciding => return Ok(V::Bool(deciding)),
                    Ok(_) => {}
                    Err(e) => {
                        if fault.is_none() {
                            fault = Some(e);
                        }
                    }
                }
            }
            match fault {
                Some(e) => Err(e),
                None => Ok(V::Bool(!deciding)),
            }
        }
        CompKind::ExistsOne => {
            let mut count = 0usize;
            for item in items {
                let inner = Scope {
                    value: item,
                    parent: scope,
                };
                if predicate(&c.body, &inner)? {
                    count += 1;
                }
            }
            Ok(V::Bool(count == 1))
        }
        CompKind::Filter => {
            let mut kept = Vec::new();
            for item in items {
                let inner = Scope {
                    value: item,
                    parent: scope,
                };
                if predicate(&c.body, &inner)? {
                    kept.push(inner.value);
                }
            }
            Ok(V::List(CelList::new(kept)))
        }
        CompKind::Map => {
            let mut mapped = Vec::new();
            for item in items {
                let inner = Scope {
                    value: item,
                    parent: scope,
                };
                if let Some(filter) = &c.filter {
                    if !predicate(filter, &inner)? {
                        continue;
                    }
                }
                mapped.push(eval(&c.body, event, Some(&inner))?);
            }
            Ok(V::List(CelList::new(mapped)))
        }
    }
}
