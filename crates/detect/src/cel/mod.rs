//! A compiler and evaluator for the subset of CEL (the Common Expression Language,
//! <https://github.com/google/cel-spec>) that rules use for their `when` predicate and `key`.
//!
//! An expression sees one variable, `event`, with the fields `id`, `source`, `kind` (strings),
//! `time` (timestamp), `lon`, `lat` (doubles; absent → error), `grid`, `unit` (strings;
//! absent → error, so guard with `has(event.grid)`) and `attrs` (a map read from the event's
//! JSON attributes: numbers are doubles, as in CEL's JSON mapping).
//!
//! [`Program::compile`] parses, resolves names (event fields become direct field reads), checks
//! arity and the operand types it can know without an event, and folds constants; every error
//! carries a line and column. Evaluation walks the compiled tree, borrowing strings from the
//! event and the program, so predicates such as
//! `event.kind == "gps" && event.attrs.class == "hazmat"` allocate nothing.
//!
//! Semantics follow the CEL language definition: `&&`/`||` are commutative over errors
//! (`false && error` is false), numbers compare across int, uint and double but arithmetic
//! does not mix them (`1 + 1.0` is an error), integer overflow and division by zero are errors,
//! and the accessors of timestamps (`getHours()`, `getDayOfMonth()`, ...) use CEL's
//! zero-based conventions (`getDayOfMonth()` of the 1st is 0; `getDate()` is one-based).
//! Time zones are fixed offsets such as `"+08:00"`; named IANA zones and `matches()` (regular
//! expressions) are not supported.

mod check;
mod eval;
mod lexer;
mod parser;
mod time;
mod value;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;

use cityward_model::Event;

pub use value::{CelList, CelMap, CelMapIter, CelValue};

use eval::{EventField, Node};
use parser::BinOp;

/// A compiled CEL expression, ready to evaluate against events from any thread.
#[derive(Debug, Clone)]
pub struct Program {
    source: String,
    root: Node,
}

/// Why an expression does not compile, with the position of the offending token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CelError {
    /// What is wrong and, where it helps, what was expected.
    pub message: String,
    /// Byte offset of the offending token in the source.
    pub offset: usize,
    /// Line of the offending token, from 1.
    pub line: usize,
    /// Column of the offending token, in characters from 1.
    pub column: usize,
}

impl CelError {
    fn at(source: &str, message: String, offset: usize) -> Self {
        let mut offset = offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &source[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        CelError {
            message,
            offset,
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for CelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for CelError {}

/// Why evaluating an expression against one event failed (a missing attribute, a type
/// mismatch, an overflow...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError {
    /// What went wrong, e.g. `no such key: 'class'`.
    pub message: String,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EvalError {}

impl Program {
    /// Compiles an expression: parses it, resolves `event` fields and functions, checks arity
    /// and the types known without an event, and folds constant parts.
    pub fn compile(source: &str) -> Result<Program, CelError> {
        let to_error = |e: lexer::SourceError| CelError::at(source, e.message, e.offset);
        let expr = parser::parse(source).map_err(to_error)?;
        let root = check::check(&expr).map_err(to_error)?;
        Ok(Program {
            source: source.to_string(),
            root,
        })
    }

    /// The source text the program was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression against `event`. The value may borrow from both the event and
    /// the program; use [`CelValue::into_owned`] to keep it longer.
    pub fn eval<'a>(&'a self, event: &'a Event) -> Result<CelValue<'a>, EvalError> {
        eval::eval(&self.root, event, None).map_err(|fault| EvalError {
            message: fault.to_string(),
        })
    }

    /// True only when the expression evaluates to `true`; errors and non-bool values are false
    /// (use [`Program::eval`] to see the error).
    pub fn matches(&self, event: &Event) -> bool {
        eval::truth(&self.root, event) == eval::Truth::True
    }

    /// Writes the string form of the value into `out` (cleared first): strings as they are,
    /// ints and uints in decimal, doubles in shortest round-trip form without exponent between
    /// 1e-6 and 1e21 (`90`, `62.5`), bools as `true`/`false`, timestamps in RFC 3339, durations
    /// in seconds (`90s`). Returns false, leaving `out` empty, on an error, null, a list or a
    /// map. Allocates nothing beyond `out`'s growth for strings and numbers.
    pub fn key(&self, event: &Event, out: &mut String) -> bool {
        out.clear();
        // Direct paths for the usual keys (`event.source`, `event.attrs.plate`).
        let direct = match &self.root {
            Node::Field(EventField::Source) => Some(event.source.as_str()),
            Node::Field(EventField::Kind) => Some(event.kind.as_str()),
            Node::Field(EventField::Id) => Some(event.id.as_str()),
            Node::Attr(key) => match eval::attr(&event.attrs, key) {
                Some(serde_json::Value::String(s)) => Some(s.as_str()),
                _ => None,
            },
            _ => None,
        };
        if let Some(text) = direct {
            out.push_str(text);
            return true;
        }
        // `a + "/" + b` of strings: write the parts instead of building the concatenation.
        if let Node::Binary(BinOp::Add, _, _) = &self.root {
            if append_strings(&self.root, event, out) {
                return true;
            }
            out.clear();
        }
        match eval::eval(&self.root, event, None) {
            Ok(value) => value.write_string_form(out),
            Err(_) => false,
        }
    }

    /// The event kinds the expression can match, for indexing rules by kind: the kinds named by
    /// `event.kind == "x"` or `event.kind in ["a", "b"]` among its top-level `&&` conjuncts
    /// (several such conjuncts intersect; an `||` whose every branch names kinds unites them).
    /// Sorted and deduplicated. `None` when any kind may match (no such conjunct, or `true`);
    /// an empty list when no event can match (`false`, or contradicting kind tests).
    pub fn kinds(&self) -> Option<Vec<String>> {
        values_of(&self.root, EventField::Kind).map(|set| set.into_iter().collect())
    }

    /// Like [`Program::kinds`] for `event.source`: the sources the expression restricts the
    /// event to (`event.source == "x"` or `event.source in [...]` as a top-level conjunct),
    /// or `None`. Lets the engine index per-device rules by source.
    pub fn sources(&self) -> Option<Vec<String>> {
        values_of(&self.root, EventField::Source).map(|set| set.into_iter().collect())
    }

    /// True when the expression is the constant `true` (after folding), so it matches every
    /// event.
    pub fn is_constant_true(&self) -> bool {
        matches!(self.root, Node::Const(CelValue::Bool(true)))
    }
}

/// Appends a chain of string `+` to `out`; false when a part is not a string or fails (the
/// caller then evaluates the expression the ordinary way).
fn append_strings(node: &Node, event: &Event, out: &mut String) -> bool {
    match node {
        Node::Binary(BinOp::Add, lhs, rhs) => {
            append_strings(lhs, event, out) && append_strings(rhs, event, out)
        }
        other => match eval::eval(other, event, None) {
            Ok(CelValue::String(s)) => {
                out.push_str(&s);
                true
            }
            _ => false,
        },
    }
}

/// The set of values of a string `field` (kind, source) `node` restricts the event to, when
/// it restricts it.
fn values_of(node: &Node, field: EventField) -> Option<BTreeSet<String>> {
    match node {
        Node::Const(CelValue::Bool(false)) => Some(BTreeSet::new()),
        Node::And(terms) => terms
            .iter()
            .filter_map(|t| values_of(t, field))
            .reduce(|a, b| a.intersection(&b).cloned().collect()),
        Node::Or(terms) => {
            terms
                .iter()
                .map(|t| values_of(t, field))
                .try_fold(BTreeSet::new(), |mut all, kinds| {
                    all.extend(kinds?);
                    Some(all)
                })
        }
        Node::FieldCmp(f, BinOp::Eq, CelValue::String(value)) if *f == field => {
            Some(BTreeSet::from([value.to_string()]))
        }
        Node::Binary(BinOp::In, lhs, rhs) => match (&**lhs, &**rhs) {
            (Node::Field(f), Node::Const(CelValue::List(list))) if *f == field => Some(
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            ),
            _ => None,
        },
        _ => None,
    }
}
