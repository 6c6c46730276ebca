//! Turns the syntax tree into evaluable [`Node`]s: resolves `event` fields, functions, macros
//! and comprehension variables, checks what can be checked without an event (arity, operand
//! types that are known statically, time zones, constant conversions) and folds constant
//! sub-expressions.

use chrono::DateTime;
use cityward_model::Event;

use super::eval::{eval, CompKind, Comprehension, EventField, Func, Node, TimePart, Zone};
use super::lexer::SourceError;
use super::parser::{BinOp, Expr, ExprKind};
use super::time;
use super::value::{equal, CelValue};

/// Deepest syntax tree the checker accepts (long operator chains nest without parentheses).
const MAX_TREE_DEPTH: usize = 250;

/// The statically known type of a node; `Dyn` when it depends on the event (attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Dyn,
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

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Dyn => "dyn",
            Ty::Null => "null",
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::Uint => "uint",
            Ty::Double => "double",
            Ty::String => "string",
            Ty::Timestamp => "timestamp",
            Ty::Duration => "duration",
            Ty::List => "list",
            Ty::Map => "map",
        }
    }

    fn of(value: &CelValue<'_>) -> Ty {
        match value {
            CelValue::Null => Ty::Null,
            CelValue::Bool(_) => Ty::Bool,
            CelValue::Int(_) => Ty::Int,
            CelValue::Uint(_) => Ty::Uint,
            CelValue::Double(_) => Ty::Double,
            CelValue::String(_) => Ty::String,
            CelValue::Timestamp(_) => Ty::Timestamp,
            CelValue::Duration(_) => Ty::Duration,
            CelValue::List(_) => Ty::List,
            CelValue::Map(_) => Ty::Map,
        }
    }

    fn is_number(self) -> bool {
        matches!(self, Ty::Int | Ty::Uint | Ty::Double)
    }

    /// True when the type is unknown or one of `allowed`.
    fn fits(self, allowed: &[Ty]) -> bool {
        self == Ty::Dyn || allowed.contains(&self)
    }
}

fn field_type(field: EventField) -> Ty {
    match field {
        EventField::Id
        | EventField::Source
        | EventField::Kind
        | EventField::Grid
        | EventField::Unit => Ty::String,
        EventField::Time => Ty::Timestamp,
        EventField::Lon | EventField::Lat => Ty::Double,
        EventField::Attrs => Ty::Map,
    }
}

type Typed = (Node, Ty);

const GLOBAL_FUNCTIONS: &str =
    "size, has, int, uint, double, string, bool, timestamp, duration, dyn";
const METHODS: &str =
    "startsWith, endsWith, contains, size, exists, all, exists_one, map, filter, \
    getFullYear, getMonth, getDayOfYear, getDayOfMonth, getDate, getDayOfWeek, getHours, \
    getMinutes, getSeconds, getMilliseconds";

fn field_list() -> String {
    EventField::ALL
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compiles a parsed expression.
pub(crate) fn check(expr: &Expr) -> Result<Node, SourceError> {
    let mut checker = Checker {
        locals: Vec::new(),
        scratch: Event::new(String::new(), String::new(), DateTime::UNIX_EPOCH),
        depth: 0,
    };
    Ok(checker.expr(expr)?.0)
}

struct Checker {
    /// Comprehension variables in scope, innermost last.
    locals: Vec<String>,
    /// An empty event to evaluate constant sub-expressions against (they never read it).
    scratch: Event,
    depth: usize,
}

fn err<T>(message: impl Into<String>, offset: usize) -> Result<T, SourceError> {
    Err(SourceError::new(message, offset))
}

fn is_event(e: &Expr) -> bool {
    matches!(&e.kind, ExprKind::Ident { name, .. } if name == "event")
}

impl Checker {
    fn expr(&mut self, e: &Expr) -> Result<Typed, SourceError> {
        self.depth += 1;
        if self.depth > MAX_TREE_DEPTH {
            return err(
                format!("the expression is nested too deeply (more than {MAX_TREE_DEPTH} levels)"),
                e.offset,
            );
        }
        let result = self.expr_inner(e);
        self.depth -= 1;
        result
    }

    /// Replaces a node whose children are all constant by its value, unless evaluating it fails
    /// (the failure is then left for evaluation time, as CEL specifies).
    fn fold(&self, node: Node, ty: Ty) -> Typed {
        if !node.children_are_const() {
            return (node, ty);
        }
        let folded = eval(&node, &self.scratch, None)
            .map(CelValue::into_owned)
            .map_err(|_| ());
        match folded {
            Ok(value) => {
                let ty = Ty::of(&value);
                (Node::Const(value), ty)
            }
            Err(()) => (node, ty),
        }
    }

    fn expr_inner(&mut self, e: &Expr) -> Result<Typed, SourceError> {
        let constant = |v: CelValue<'static>| {
            let ty = Ty::of(&v);
            Ok((Node::Const(v), ty))
        };
        match &e.kind {
            ExprKind::Null => constant(CelValue::Null),
            ExprKind::Bool(b) => constant(CelValue::Bool(*b)),
            ExprKind::Uint(u) => constant(CelValue::Uint(*u)),
            ExprKind::Double(d) => constant(CelValue::Double(*d)),
            ExprKind::Str(s) => constant(CelValue::String(s.clone().into())),
            ExprKind::Int(m) => match i64::try_from(*m) {
                Ok(i) => constant(CelValue::Int(i)),
                Err(_) => err(
                    format!("integer literal {m} is out of range for an int; add a 'u' suffix for a uint or write it as a double"),
                    e.offset,
                ),
            },
            ExprKind::Neg(inner) if matches!(inner.kind, ExprKind::Int(_)) => {
                let ExprKind::Int(m) = inner.kind else { unreachable!() };
                match i64::try_from(-i128::from(m)) {
                    Ok(i) => constant(CelValue::Int(i)),
                    Err(_) => err(
                        format!("integer literal -{m} is out of range for an int"),
                        inner.offset,
                    ),
                }
            }
            ExprKind::Ident { name, root } => self.ident(e, name, *root),
            ExprKind::Select { operand, field } => self.select(e, operand, field),
            ExprKind::Index { operand, index } => self.index(e, operand, index),
            ExprKind::Call { target, name, args } => self.call(e, target.as_deref(), name, args),
            ExprKind::List(items) => {
                let mut nodes = Vec::with_capacity(items.len());
                for item in items {
                    nodes.push(self.expr(item)?.0);
                }
                Ok(self.fold(Node::List(nodes), Ty::List))
            }
            ExprKind::Map(entries) => self.map(entries),
            ExprKind::Not(operand) => {
                let (node, ty) = self.expr(operand)?;
                if !ty.fits(&[Ty::Bool]) {
                    return err(format!("'!' needs a bool, found {}", ty.name()), e.offset);
                }
                Ok(self.fold(Node::Not(Box::new(node)), Ty::Bool))
            }
            ExprKind::Neg(operand) => {
                let (node, ty) = self.expr(operand)?;
                if !ty.fits(&[Ty::Int, Ty::Double]) {
                    return err(
                        format!("'-' needs an int or double, found {}", ty.name()),
                        e.offset,
                    );
                }
                Ok(self.fold(Node::Neg(Box::new(node)), ty))
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let (l, lt) = self.expr(lhs)?;
                let (r, rt) = self.expr(rhs)?;
                let ty = binary_type(*op, lt, rt).map_err(|m| SourceError::new(m, e.offset))?;
                Ok(match specialize(*op, l, r) {
                    Ok(node) => (node, ty),
                    Err((l, r)) => self.fold(Node::Binary(*op, Box::new(l), Box::new(r)), ty),
                })
            }
            ExprKind::And(terms) => self.logical(terms, false),
            ExprKind::Or(terms) => self.logical(terms, true),
            ExprKind::Cond {
                cond,
                then,
                otherwise,
            } => {
                let (c, ct) = self.expr(cond)?;
                if !ct.fits(&[Ty::Bool]) {
                    return err(
                        format!("the condition before '?' must be a bool, found {}", ct.name()),
                        e.offset,
                    );
                }
                let (t, tt) = self.expr(then)?;
                let (f, ft) = self.expr(otherwise)?;
                if let Node::Const(CelValue::Bool(b)) = c {
                    return Ok(if b { (t, tt) } else { (f, ft) });
                }
                let ty = if tt == ft { tt } else { Ty::Dyn };
                Ok((Node::Cond(Box::new(c), Box::new(t), Box::new(f)), ty))
            }
        }
    }

    fn ident(&mut self, e: &Expr, name: &str, root: bool) -> Result<Typed, SourceError> {
        if !root {
            if let Some(i) = self.locals.iter().rposition(|l| l == name) {
                return Ok((Node::Local(self.locals.len() - 1 - i), Ty::Dyn));
            }
        }
        if name == "event" {
            return err(
                format!(
                    "'event' is not a value on its own; use one of its fields: {}",
                    field_list()
                ),
                e.offset,
            );
        }
        let message = if self.locals.is_empty() {
            format!("unknown variable '{name}'; the only variable is 'event'")
        } else {
            let names: Vec<String> = std::iter::once("event")
                .chain(self.locals.iter().rev().map(String::as_str))
                .map(|n| format!("'{n}'"))
                .collect();
            format!(
                "unknown variable '{name}'; the variables here are {}",
                names.join(", ")
            )
        };
        err(message, e.offset)
    }

    fn event_field(&self, name: &str, offset: usize) -> Result<EventField, SourceError> {
        EventField::from_name(name).ok_or_else(|| {
            SourceError::new(
                format!("event has no field '{name}'; fields are {}", field_list()),
                offset,
            )
        })
    }

    fn select(&mut self, e: &Expr, operand: &Expr, field: &str) -> Result<Typed, SourceError> {
        if is_event(operand) {
            let f = self.event_field(field, e.offset)?;
            return Ok((Node::Field(f), field_type(f)));
        }
        let (node, ty) = self.expr(operand)?;
        if let Node::Field(EventField::Attrs) = node {
            return Ok((Node::Attr(field.into()), Ty::Dyn));
        }
        if !ty.fits(&[Ty::Map]) {
            return err(
                format!("cannot select '{field}': a {} has no fields", ty.name()),
                e.offset,
            );
        }
        Ok(self.fold(Node::Select(Box::new(node), field.into()), Ty::Dyn))
    }

    fn index(&mut self, e: &Expr, operand: &Expr, index: &Expr) -> Result<Typed, SourceError> {
        if is_event(operand) {
            return match &index.kind {
                ExprKind::Str(name) => {
                    let f = self.event_field(name, index.offset)?;
                    Ok((Node::Field(f), field_type(f)))
                }
                _ => err(
                    "index 'event' with a field name in quotes, or write event.<field>",
                    index.offset,
                ),
            };
        }
        let (container, ct) = self.expr(operand)?;
        let (key, kt) = self.expr(index)?;
        if let (Node::Field(EventField::Attrs), Node::Const(CelValue::String(name))) =
            (&container, &key)
        {
            return Ok((Node::Attr(name.as_ref().into()), Ty::Dyn));
        }
        match ct {
            Ty::List if !kt.fits(&[Ty::Int, Ty::Uint, Ty::Double]) => {
                return err(
                    format!("a list index must be an int, found {}", kt.name()),
                    index.offset,
                )
            }
            Ty::Dyn | Ty::List | Ty::Map => {}
            other => return err(format!("cannot index a {}", other.name()), e.offset),
        }
        Ok(self.fold(Node::Index(Box::new(container), Box::new(key)), Ty::Dyn))
    }

    fn map(&mut self, entries: &[(Expr, Expr)]) -> Result<Typed, SourceError> {
        let mut nodes: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let (key, kt) = self.expr(k)?;
            if !kt.fits(&[Ty::String, Ty::Int, Ty::Uint, Ty::Bool]) {
                return err(
                    format!(
                        "a map key must be a string, int, uint or bool, found {}",
                        kt.name()
                    ),
                    k.offset,
                );
            }
            if let Node::Const(new_key) = &key {
                let duplicate = nodes
                    .iter()
                    .any(|(existing, _)| matches!(existing, Node::Const(c) if equal(c, new_key)));
                if duplicate {
                    return err("duplicate map key", k.offset);
                }
            }
            let (value, _) = self.expr(v)?;
            nodes.push((key, value));
        }
        Ok(self.fold(Node::Map(nodes), Ty::Map))
    }

    fn logical(&mut self, terms: &[Expr], is_or: bool) -> Result<Typed, SourceError> {
        let symbol = if is_or { "||" } else { "&&" };
        let mut nodes: Vec<Typed> = Vec::with_capacity(terms.len());
        for term in terms {
            let (node, ty) = self.expr(term)?;
            if !ty.fits(&[Ty::Bool]) {
                return err(
                    format!("'{symbol}' needs bool operands, found {}", ty.name()),
                    term.offset,
                );
            }
            match node {
                Node::And(inner) if !is_or => nodes.extend(inner.into_iter().map(|n| (n, Ty::Dyn))),
                Node::Or(inner) if is_or => nodes.extend(inner.into_iter().map(|n| (n, Ty::Dyn))),
                other => nodes.push((other, ty)),
            }
        }
        // `false && x` is false and `true || x` is true whatever x is, even an error.
        let deciding = |n: &Node| matches!(n, Node::Const(CelValue::Bool(b)) if *b == is_or);
        if nodes.iter().any(|(n, _)| deciding(n)) {
            return Ok((Node::Const(CelValue::Bool(is_or)), Ty::Bool));
        }
        nodes.retain(|(n, _)| !matches!(n, Node::Const(CelValue::Bool(_))));
        if nodes.is_empty() {
            return Ok((Node::Const(CelValue::Bool(!is_or)), Ty::Bool));
        }
        if nodes.len() == 1 && nodes[0].1 == Ty::Bool {
            return Ok(nodes.pop().expect("one node"));
        }
        let nodes = nodes.into_iter().map(|(n, _)| n).collect();
        Ok((
            if is_or {
                Node::Or(nodes)
            } else {
                Node::And(nodes)
            },
            Ty::Bool,
        ))
    }

    fn call(
        &mut self,
        e: &Expr,
        target: Option<&Expr>,
        name: &str,
        args: &[Expr],
    ) -> Result<Typed, SourceError> {
        let arity = |expected: &str| -> Result<Typed, SourceError> {
            let n = args.len();
            let plural = if n == 1 { "" } else { "s" };
            err(
                format!("{name}() takes {expected}, found {n} argument{plural}"),
                e.offset,
            )
        };
        if name == "matches" {
            return err(
                "matches() is not supported: this build has no regular-expression engine; use startsWith(), endsWith() or contains()",
                e.offset,
            );
        }
        let Some(target) = target else {
            let func = match name {
                "has" => return self.has(e, args),
                "size" => Func::Size,
                "int" => Func::Int,
                "uint" => Func::Uint,
                "double" => Func::Double,
                "string" => Func::String,
                "bool" => Func::Bool,
                "timestamp" => Func::Timestamp,
                "duration" => Func::Duration,
                "dyn" => Func::Dyn,
                _ if is_method_name(name) => {
                    return err(
                        format!("{name}() is a method: call it on a value, as in x.{name}(...)"),
                        e.offset,
                    )
                }
                _ => return err(unknown_function(name), e.offset),
            };
            if args.len() != 1 {
                return arity("1 argument");
            }
            let (arg, ty) = self.expr(&args[0])?;
            return self.unary_function(e, func, arg, ty);
        };
        if let Some(kind) = comprehension_kind(name) {
            return self.comprehension(e, kind, target, args);
        }
        if let Some(part) = TimePart::ALL.into_iter().find(|p| p.name() == name) {
            return self.time_part(e, part, target, args);
        }
        let func = match name {
            "size" => Func::Size,
            "startsWith" => Func::StartsWith,
            "endsWith" => Func::EndsWith,
            "contains" => Func::Contains,
            "has" | "int" | "uint" | "double" | "string" | "bool" | "timestamp" | "duration"
            | "dyn" => {
                return err(
                    format!("{name}() is a function, not a method: call it as {name}(x)"),
                    e.offset,
                )
            }
            _ => return err(unknown_function(name), e.offset),
        };
        let (receiver, rt) = self.expr(target)?;
        if func == Func::Size {
            if !args.is_empty() {
                return arity("no arguments");
            }
            return self.unary_function(e, func, receiver, rt);
        }
        if args.len() != 1 {
            return arity("1 argument");
        }
        let (arg, at) = self.expr(&args[0])?;
        if !rt.fits(&[Ty::String]) {
            return err(
                format!("{name}() needs a string, found {}", rt.name()),
                e.offset,
            );
        }
        if !at.fits(&[Ty::String]) {
            return err(
                format!(
                    "the argument of {name}() must be a string, found {}",
                    at.name()
                ),
                args[0].offset,
            );
        }
        Ok(self.fold(Node::Call(func, vec![receiver, arg]), Ty::Bool))
    }

    /// size, int, uint, double, string, bool, timestamp, duration, dyn of one argument.
    fn unary_function(
        &self,
        e: &Expr,
        func: Func,
        arg: Node,
        ty: Ty,
    ) -> Result<Typed, SourceError> {
        let (accepts, result): (&[Ty], Ty) = match func {
            Func::Size => (&[Ty::String, Ty::List, Ty::Map], Ty::Int),
            Func::Int => (
                &[Ty::Int, Ty::Uint, Ty::Double, Ty::String, Ty::Timestamp],
                Ty::Int,
            ),
            Func::Uint => (&[Ty::Int, Ty::Uint, Ty::Double, Ty::String], Ty::Uint),
            Func::Double => (&[Ty::Int, Ty::Uint, Ty::Double, Ty::String], Ty::Double),
            Func::String => (
                &[
                    Ty::String,
                    Ty::Int,
                    Ty::Uint,
                    Ty::Double,
                    Ty::Bool,
                    Ty::Timestamp,
                    Ty::Duration,
                ],
                Ty::String,
            ),
            Func::Bool => (&[Ty::Bool, Ty::String], Ty::Bool),
            Func::Timestamp => (&[Ty::Timestamp, Ty::String, Ty::Int], Ty::Timestamp),
            Func::Duration => (&[Ty::Duration, Ty::String], Ty::Duration),
            _ => return Ok((Node::Call(func, vec![arg]), Ty::Dyn)),
        };
        let name = func.name();
        if !ty.fits(accepts) {
            let names: Vec<&str> = accepts.iter().map(|t| t.name()).collect();
            return err(
                format!("{name}() takes a {}, found {}", names.join(", "), ty.name()),
                e.offset,
            );
        }
        let arg_is_const = arg.is_const();
        let node = Node::Call(func, vec![arg]);
        if arg_is_const && func != Func::Size {
            // A conversion of a constant that fails is a typo in the rule: say so now.
            let folded = eval(&node, &self.scratch, None)
                .map(CelValue::into_owned)
                .map_err(|f| f.to_string());
            return match folded {
                Ok(value) => Ok((Node::Const(value), result)),
                Err(message) => err(message, e.offset),
            };
        }
        Ok(self.fold(node, result))
    }

    fn has(&mut self, e: &Expr, args: &[Expr]) -> Result<Typed, SourceError> {
        let [arg] = args else {
            return err(
                format!("has() takes 1 argument, found {}", args.len()),
                e.offset,
            );
        };
        let ExprKind::Select { operand, field } = &arg.kind else {
            return err(
                "has() needs a field selection, as in has(event.attrs.speed_kmh) or has(event.grid)",
                arg.offset,
            );
        };
        if is_event(operand) {
            let f = self.event_field(field, arg.offset)?;
            return Ok((Node::HasField(f), Ty::Bool));
        }
        let (node, ty) = self.expr(operand)?;
        if let Node::Field(EventField::Attrs) = node {
            return Ok((Node::HasAttr(field.as_str().into()), Ty::Bool));
        }
        if !ty.fits(&[Ty::Map]) {
            return err(
                format!("has() tests a field of a map, but this is a {}", ty.name()),
                arg.offset,
            );
        }
        Ok(self.fold(Node::Has(Box::new(node), field.as_str().into()), Ty::Bool))
    }

    fn time_part(
        &mut self,
        e: &Expr,
        part: TimePart,
        target: &Expr,
        args: &[Expr],
    ) -> Result<Typed, SourceError> {
        let name = part.name();
        let (receiver, rt) = self.expr(target)?;
        match rt {
            Ty::Dyn | Ty::Timestamp => {}
            Ty::Duration if part.on_duration() => {
                if !args.is_empty() {
                    return err(format!("{name}() on a duration takes no time zone"), e.offset);
                }
            }
            Ty::Duration => {
                return err(
                    format!("{name}() needs a timestamp; a duration has getHours(), getMinutes(), getSeconds() and getMilliseconds()"),
                    e.offset,
                )
            }
            other => {
                return err(format!("{name}() needs a timestamp, found {}", other.name()), e.offset)
            }
        }
        let (zone, mut nodes) = match args {
            [] => (Zone::Utc, vec![receiver]),
            [tz] => {
                let (node, ty) = self.expr(tz)?;
                match (&node, ty) {
                    (Node::Const(CelValue::String(s)), _) => {
                        let offset = time::parse_time_zone(s)
                            .map_err(|m| SourceError::new(m, tz.offset))?;
                        (Zone::Fixed(offset), vec![receiver])
                    }
                    (_, Ty::String | Ty::Dyn) => (Zone::Dynamic, vec![receiver, node]),
                    (_, other) => {
                        return err(
                            format!("the time zone of {name}() must be a string such as \"+08:00\", found {}", other.name()),
                            tz.offset,
                        )
                    }
                }
            }
            _ => return err(
                format!(
                    "{name}() takes 0 or 1 arguments (a time zone such as \"+08:00\"), found {}",
                    args.len()
                ),
                e.offset,
            ),
        };
        nodes.shrink_to_fit();
        Ok(self.fold(Node::Call(Func::Time(part, zone), nodes), Ty::Int))
    }

    fn comprehension(
        &mut self,
        e: &Expr,
        kind: CompKind,
        target: &Expr,
        args: &[Expr],
    ) -> Result<Typed, SourceError> {
        let name = kind.name();
        let arity_ok = match kind {
            CompKind::Map => args.len() == 2 || args.len() == 3,
            _ => args.len() == 2,
        };
        if !arity_ok {
            let expected = if kind == CompKind::Map {
                "2 or 3 arguments (a variable name, an optional filter and a transform)"
            } else {
                "2 arguments (a variable name and a predicate)"
            };
            return err(
                format!("{name}() takes {expected}, found {}", args.len()),
                e.offset,
            );
        }
        let var = match &args[0].kind {
            ExprKind::Ident { name, root: false } => name.clone(),
            _ => {
                return err(
                    format!("the first argument of {name}() must be a variable name, as in list.{name}(x, x > 0)"),
                    args[0].offset,
                )
            }
        };
        if var == "event" {
            return err(
                format!("the variable of {name}() cannot be named 'event'"),
                args[0].offset,
            );
        }
        let (range, rt) = self.expr(target)?;
        if !rt.fits(&[Ty::List, Ty::Map]) {
            return err(
                format!("{name}() needs a list or map, found {}", rt.name()),
                e.offset,
            );
        }
        self.locals.push(var);
        let result = self.comprehension_body(kind, range, args);
        self.locals.pop();
        result
    }

    fn comprehension_body(
        &mut self,
        kind: CompKind,
        range: Node,
        args: &[Expr],
    ) -> Result<Typed, SourceError> {
        let predicate = |checker: &mut Self, arg: &Expr| -> Result<Node, SourceError> {
            let (node, ty) = checker.expr(arg)?;
            if !ty.fits(&[Ty::Bool]) {
                return err(
                    format!(
                        "the predicate of {}() must be a bool, found {}",
                        kind.name(),
                        ty.name()
                    ),
                    arg.offset,
                );
            }
            Ok(node)
        };
        let (body, filter, ty) = match kind {
            CompKind::Map if args.len() == 3 => {
                let filter = predicate(self, &args[1])?;
                (self.expr(&args[2])?.0, Some(filter), Ty::List)
            }
            CompKind::Map => (self.expr(&args[1])?.0, None, Ty::List),
            CompKind::Filter => (predicate(self, &args[1])?, None, Ty::List),
            _ => (predicate(self, &args[1])?, None, Ty::Bool),
        };
        Ok((
            Node::Comprehension(Box::new(Comprehension {
                kind,
                range,
                body,
                filter,
            })),
            ty,
        ))
    }
}

/// A comparison of an event field or attribute with a literal, as one node that reads the
/// field in place; the operands back when the comparison has another shape.
fn specialize(op: BinOp, l: Node, r: Node) -> Result<Node, (Node, Node)> {
    let mirrored = match op {
        BinOp::Eq | BinOp::Ne => op,
        BinOp::Lt => BinOp::Gt,
        BinOp::Le => BinOp::Ge,
        BinOp::Gt => BinOp::Lt,
        BinOp::Ge => BinOp::Le,
        _ => return Err((l, r)),
    };
    match (l, r) {
        (Node::Field(f), Node::Const(c)) if f != EventField::Attrs => Ok(Node::FieldCmp(f, op, c)),
        (Node::Const(c), Node::Field(f)) if f != EventField::Attrs => {
            Ok(Node::FieldCmp(f, mirrored, c))
        }
        (Node::Attr(key), Node::Const(c)) => Ok(Node::AttrCmp(key, op, c)),
        (Node::Const(c), Node::Attr(key)) => Ok(Node::AttrCmp(key, mirrored, c)),
        (l, r) => Err((l, r)),
    }
}

fn comprehension_kind(name: &str) -> Option<CompKind> {
    Some(match name {
        "all" => CompKind::All,
        "exists" => CompKind::Exists,
        "exists_one" => CompKind::ExistsOne,
        "map" => CompKind::Map,
        "filter" => CompKind::Filter,
        _ => return None,
    })
}

fn is_method_name(name: &str) -> bool {
    matches!(name, "startsWith" | "endsWith" | "contains")
        || comprehension_kind(name).is_some()
        || TimePart::ALL.iter().any(|p| p.name() == name)
}

fn unknown_function(name: &str) -> String {
    format!("unknown function '{name}'; supported functions are {GLOBAL_FUNCTIONS}, and methods {METHODS}")
}

/// The static result type of a binary operator, or why the operand types cannot work.
fn binary_type(op: BinOp, l: Ty, r: Ty) -> Result<Ty, String> {
    use Ty::*;
    let symbol = op.symbol();
    let mismatch = || {
        if l.is_number() && r.is_number() && l != r {
            format!(
                "no operator '{symbol}' for {} and {}: CEL does not convert numbers implicitly; write 2.0 for a double or convert with double(x) / int(x)",
                l.name(),
                r.name()
            )
        } else {
            format!("no operator '{symbol}' for {} and {}", l.name(), r.name())
        }
    };
    match op {
        BinOp::Eq | BinOp::Ne => {
            if l == Dyn || r == Dyn || l == r || (l.is_number() && r.is_number()) {
                Ok(Bool)
            } else if l == Null || r == Null {
                Err(format!(
                    "'{symbol}' between {} and {} is always {}; to test whether a field is present use has(), as in has(event.grid)",
                    l.name(),
                    r.name(),
                    op == BinOp::Ne
                ))
            } else {
                Err(format!(
                    "'{symbol}' between {} and {} is always {}: values of different types are never equal",
                    l.name(),
                    r.name(),
                    op == BinOp::Ne
                ))
            }
        }
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ordered = l == Dyn
                || r == Dyn
                || (l.is_number() && r.is_number())
                || (l == r && matches!(l, Bool | String | Timestamp | Duration));
            if ordered {
                Ok(Bool)
            } else {
                Err(format!(
                    "cannot compare {} with {} using '{symbol}'",
                    l.name(),
                    r.name()
                ))
            }
        }
        BinOp::In => match r {
            Dyn | List | Map => Ok(Bool),
            _ => Err(format!(
                "'in' needs a list or map on its right, found {}",
                r.name()
            )),
        },
        _ if l == Dyn || r == Dyn => Ok(Dyn),
        BinOp::Add => match (l, r) {
            (Int, Int) => Ok(Int),
            (Uint, Uint) => Ok(Uint),
            (Double, Double) => Ok(Double),
            (String, String) => Ok(String),
            (List, List) => Ok(List),
            (Timestamp, Duration) | (Duration, Timestamp) => Ok(Timestamp),
            (Duration, Duration) => Ok(Duration),
            _ => Err(mismatch()),
        },
        BinOp::Sub => match (l, r) {
            (Int, Int) => Ok(Int),
            (Uint, Uint) => Ok(Uint),
            (Double, Double) => Ok(Double),
            (Timestamp, Timestamp) => Ok(Duration),
            (Timestamp, Duration) => Ok(Timestamp),
            (Duration, Duration) => Ok(Duration),
            _ => Err(mismatch()),
        },
        BinOp::Mul | BinOp::Div => match (l, r) {
            (Int, Int) | (Uint, Uint) | (Double, Double) => Ok(l),
            _ => Err(mismatch()),
        },
        BinOp::Rem => match (l, r) {
            (Int, Int) | (Uint, Uint) => Ok(l),
            _ => Err(mismatch()),
        },
    }
}
