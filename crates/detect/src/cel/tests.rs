use std::hint::black_box;
use std::time::Instant;

use cityward_model::event::parse_time;
use cityward_model::Event;
use serde_json::{json, Value};

use super::{CelError, CelValue, Program};

/// 2026-11-22 is a Sunday; 03:04:05.250 UTC is 11:04 in +08:00 and 21:34 the day before in -05:30.
fn event() -> Event {
    let mut event = Event::new(
        "truck-0042",
        "gps",
        parse_time("2026-11-22T03:04:05.250Z").unwrap(),
    )
    .at(121.2654, 31.3751)
    .with("speed_kmh", 62.5)
    .with("heading", 90)
    .with("class", "hazmat")
    .with("temperature", 72.5)
    .with("flag", true)
    .with("nothing", Value::Null)
    .with("tz", "+08:00")
    .with("tags", json!(["a", "b"]))
    .with("nested", json!({"x": 1, "y": {"z": "deep"}}));
    event.grid = Some("G-12".to_string());
    event
}

fn compile(src: &str) -> Program {
    Program::compile(src).unwrap_or_else(|e| panic!("`{src}` does not compile: {e}"))
}

fn compile_err(src: &str) -> CelError {
    match Program::compile(src) {
        Ok(p) => panic!("`{src}` compiled to {p:?}"),
        Err(e) => e,
    }
}

/// The value with its type, e.g. `int 3`, `string abc`, `[int 1, double 2.5]`.
fn show(value: &CelValue<'_>) -> String {
    match value {
        CelValue::Null => "null".to_string(),
        CelValue::List(l) => {
            let items: Vec<String> = l.iter().map(|v| show(&v)).collect();
            format!("[{}]", items.join(", "))
        }
        CelValue::Map(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", show(&k), show(&v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        other => {
            let mut text = String::new();
            assert!(other.write_string_form(&mut text));
            format!("{} {text}", other.type_name())
        }
    }
}

fn eval(src: &str) -> String {
    let program = compile(src);
    let event = event();
    match program.eval(&event) {
        Ok(v) => show(&v),
        Err(e) => panic!("`{src}` failed: {e}"),
    }
}

fn eval_err(src: &str) -> String {
    let program = compile(src);
    let event = event();
    match program.eval(&event) {
        Ok(v) => panic!("`{src}` gave {}", show(&v)),
        Err(e) => e.message,
    }
}

fn assert_true(src: &str) {
    assert_eq!(eval(src), "bool true", "{src}");
}

fn assert_false(src: &str) {
    assert_eq!(eval(src), "bool false", "{src}");
}

#[test]
fn literals() {
    assert_eq!(eval("42"), "int 42");
    assert_eq!(eval("0x1F"), "int 31");
    assert_eq!(eval("-0x10"), "int -16");
    assert_eq!(eval("7u"), "uint 7");
    assert_eq!(eval("0xffU"), "uint 255");
    assert_eq!(eval("18446744073709551615u"), "uint 18446744073709551615");
    assert_eq!(eval("2.5"), "double 2.5");
    assert_eq!(eval("1e3"), "double 1000");
    assert_eq!(eval(".5"), "double 0.5");
    assert_eq!(eval("1.5e-3"), "double 0.0015");
    assert_eq!(eval("true"), "bool true");
    assert_eq!(eval("null"), "null");
    assert_eq!(eval("-9223372036854775808"), "int -9223372036854775808");
    assert_eq!(eval("[1, 'a', 2.0,]"), "[int 1, string a, double 2]");
    assert_eq!(
        eval("{'a': 1, 2: true}"),
        "{string a: int 1, int 2: bool true}"
    );
    assert_eq!(eval("[]"), "[]");
    assert_eq!(eval("{}"), "{}");
    let e = compile_err("9223372036854775808");
    assert!(e.message.contains("out of range for an int"), "{e}");
    assert_eq!(compile_err("1 + 99999999999999999999").column, 5);
    assert_eq!(compile_err("12abc").message, "invalid number '12abc'");
}

#[test]
fn strings_and_escapes() {
    assert_true(r#""a\tb" == 'a\u0009b'"#);
    assert_true(r#""\x41\101\u0041\U00000041" == "AAAA""#);
    assert_true(r#"'it\'s' == "it's""#);
    assert_true(r#""say \"hi\"\\" == 'say "hi"\\'"#);
    assert_true(r#"r"\d+" == "\\d+""#);
    assert_true(r#"R'\n' == "\\n""#);
    assert_true(r#""""a "quoted" word""" == 'a "quoted" word'"#);
    assert_true("'''two\nlines''' == \"two\\nlines\"");
    assert_true(r#""\u00e9" == "é""#);
    assert_eq!(
        eval(r#""gps" + "/" + event.source"#),
        "string gps/truck-0042"
    );
    assert_true(r#"size("héllo") == 5"#);
    assert_true(r#""abc" < "abd" && "Z" < "a" && "" < "a" && "ab" < "abc""#);
    assert_true(r#""b" >= "abc" && "a" <= "a""#);
    assert_true(r#"event.source.startsWith("truck-")"#);
    assert_true(r#"event.source.endsWith("0042")"#);
    assert_true(r#"event.source.contains("k-00")"#);
    assert_false(r#"event.source.contains("car")"#);
    assert_true(r#"event.attrs.class.startsWith("haz")"#);
    let e = compile_err(r#""a\qb""#);
    assert_eq!((e.line, e.column), (1, 3));
    assert!(
        e.message.starts_with("invalid escape sequence '\\q'"),
        "{e}"
    );
    let e = compile_err(r#""\ud800""#);
    assert!(e.message.contains("not a valid code point"), "{e}");
    let e = compile_err(r#"event.kind == "gps"#);
    assert_eq!(
        (e.column, e.message.as_str()),
        (15, "unterminated string literal")
    );
    let e = compile_err("b'bytes'");
    assert_eq!(e.message, "bytes literals are not supported; use a string");
}

#[test]
fn arithmetic() {
    assert_eq!(eval("1 + 2"), "int 3");
    assert_eq!(eval("10 - 4 - 3"), "int 3");
    assert_eq!(eval("12 / 2 / 3"), "int 2");
    assert_eq!(eval("-7 / 2"), "int -3");
    assert_eq!(eval("7 % 4"), "int 3");
    assert_eq!(eval("-7 % 4"), "int -3");
    assert_eq!(eval("6 * 7"), "int 42");
    assert_eq!(eval("3u * 2u + 1u"), "uint 7");
    assert_eq!(eval("7u / 2u"), "uint 3");
    assert_eq!(eval("7u % 4u"), "uint 3");
    assert_eq!(eval("1.5 + 2.25"), "double 3.75");
    assert_eq!(eval("1.0 / 4.0"), "double 0.25");
    assert_eq!(eval("2.5 * -2.0"), "double -5");
    assert_eq!(eval("-event.attrs.heading"), "double -90");
    assert_eq!(eval("event.attrs.speed_kmh * 2.0"), "double 125");
    assert_eq!(eval("[1] + [2, 3]"), "[int 1, int 2, int 3]");
    assert_eq!(
        eval("event.attrs.tags + ['c']"),
        "[string a, string b, string c]"
    );
    assert_true("1.0 / 0.0 == double('inf')");
}

#[test]
fn arithmetic_errors() {
    assert_eq!(eval_err("9223372036854775807 + 1"), "overflow in '+'");
    assert_eq!(eval_err("-9223372036854775808 - 1"), "overflow in '-'");
    assert_eq!(eval_err("-9223372036854775808 / -1"), "overflow in '/'");
    assert_eq!(eval_err("4611686018427387904 * 2"), "overflow in '*'");
    assert_eq!(eval_err("- -9223372036854775808"), "overflow in '-'");
    assert_eq!(eval_err("0u - 1u"), "overflow in '-'");
    assert_eq!(eval_err("1 / 0"), "division by zero");
    assert_eq!(eval_err("1u / 0u"), "division by zero");
    assert_eq!(eval_err("1 % 0"), "modulus by zero");
    assert_eq!(
        eval_err("event.attrs.heading + 1"),
        "no such overload: double + int"
    );
    assert_eq!(
        eval_err("event.attrs.class - 'a'"),
        "no such overload: string - string"
    );
    let e = compile_err("1 + 1.0");
    assert_eq!(e.column, 3);
    assert!(
        e.message.starts_with(
            "no operator '+' for int and double: CEL does not convert numbers implicitly"
        ),
        "{e}"
    );
    assert_eq!(
        compile_err("1.5 % 2.0").message,
        "no operator '%' for double and double"
    );
    assert_eq!(
        compile_err("'a' * 2").message,
        "no operator '*' for string and int"
    );
    assert_eq!(
        compile_err("-'a'").message,
        "'-' needs an int or double, found string"
    );
    assert_eq!(compile_err("!1").message, "'!' needs a bool, found int");
}

#[test]
fn precedence() {
    assert_eq!(eval("1 + 2 * 3"), "int 7");
    assert_eq!(eval("(1 + 2) * 3"), "int 9");
    assert_eq!(eval("- 1 + 2"), "int 1");
    assert_eq!(eval("10 - 2 * 3 % 4"), "int 8");
    assert_true("1 + 1 == 2");
    assert_true("1 < 2 == true");
    assert_true("true || false && false");
    assert_false("(true || false) && false");
    assert_false("!false && false");
    assert_true("!!true");
    assert_eq!(eval("false ? 1 : true ? 2 : 3"), "int 2");
    assert_eq!(eval("true || false ? 'a' : 'b'"), "string a");
    assert_true("'gps' in ['gps'] && 1 + 1 in [2]");
    assert_true("event.attrs.tags[0] + 'x' == 'ax'");
    assert_true("-event.attrs.nested.x < 0.0");
}

#[test]
fn comparisons() {
    assert_true("1 < 2 && 2 <= 2 && 3 > 2 && 3 >= 3 && 1 != 2 && 1 == 1");
    assert_false("2 < 1 || 2 <= 1 || 1 > 2 || 1 >= 2 || 1 != 1 || 1 == 2");
    assert_true("false < true");
    assert_true("[1, 'a'] == [1, 'a'] && [1] != [1, 2]");
    assert_true("{'a': 1, 'b': [2]} == {'b': [2], 'a': 1}");
    assert_true("{'a': 1} != {'a': 2}");
    assert_true("event.attrs.nothing == null");
    assert_true("event.attrs.nested == {'x': 1, 'y': {'z': 'deep'}}");
    assert_false("dyn(1) == '1'");
    assert_true("dyn('a') != 1");
    assert_eq!(eval_err("dyn(1) < 'a'"), "no such overload: int < string");
    assert_eq!(
        eval_err("event.attrs.tags < event.attrs.tags"),
        "no such overload: list < list"
    );
    let e = compile_err("event.kind == 1");
    assert_eq!(e.column, 12);
    assert_eq!(
        e.message,
        "'==' between string and int is always false: values of different types are never equal"
    );
    let e = compile_err("event.grid != null");
    assert_eq!(e.message, "'!=' between string and null is always true; to test whether a field is present use has(), as in has(event.grid)");
    assert_eq!(
        compile_err("event.kind < 2").message,
        "cannot compare string with int using '<'"
    );
}

#[test]
fn heterogeneous_numbers() {
    assert_true("1 == 1.0");
    assert_true("1u == 1");
    assert_true("1u == 1.0");
    assert_true("2 < 2.5 && 2.5 < 3");
    assert_true("3u > 2.5");
    assert_true("-1 < 0u");
    assert_true("9223372036854775807 < 9223372036854775808.0");
    assert_true("18446744073709551615u > 9223372036854775807");
    assert_true("-2.5 < -2 && -2 > -2.5");
    assert_true("event.attrs.heading == 90");
    assert_true("event.attrs.heading >= 90u");
    assert_true("event.attrs.temperature > 60");
    assert_true("[1, 2.0] == [1.0, 2u]");
    assert_true("1 in [1.0] && 2u in [2]");
    assert_true("{1: 'x'}[1u] == 'x' && {1: 'x'}[1.0] == 'x'");
    assert_false("double('NaN') == double('NaN')");
    assert_false("double('NaN') < 1.0 || double('NaN') >= 1.0 || 1 < double('NaN')");
    assert_true("double('NaN') != double('NaN')");
}

#[test]
fn logical_operators_are_commutative_over_errors() {
    // A false (&&) or true (||) term decides the result even when another term fails.
    assert_false("event.kind == 'smoke' && event.attrs.missing > 1.0");
    assert_false("event.attrs.missing > 1.0 && event.kind == 'smoke'");
    assert_true("event.kind == 'gps' || event.attrs.missing > 1.0");
    assert_true("event.attrs.missing > 1.0 || event.kind == 'gps'");
    assert_false("event.attrs.class && event.kind == 'smoke'");
    // Otherwise the error is the result.
    assert_eq!(
        eval_err("event.kind == 'gps' && event.attrs.missing > 1.0"),
        "no such key: 'missing'"
    );
    assert_eq!(
        eval_err("event.attrs.missing > 1.0 && event.kind == 'gps'"),
        "no such key: 'missing'"
    );
    assert_eq!(
        eval_err("event.kind == 'smoke' || event.attrs.missing > 1.0"),
        "no such key: 'missing'"
    );
    assert_eq!(
        eval_err("event.attrs.class && true"),
        "no such overload: string && bool"
    );
    assert_eq!(
        eval_err("event.attrs.class || false"),
        "no such overload: string || bool"
    );
    // Constant deciding terms fold away at compile time.
    let folded = compile("false && event.attrs.missing > 1.0");
    assert_eq!(show(&folded.eval(&event()).unwrap()), "bool false");
    assert!(!folded.is_constant_true());
    assert!(compile("true || event.attrs.missing > 1.0").is_constant_true());
    let e = compile_err("event.kind == 'gps' && event.kind");
    assert_eq!(e.message, "'&&' needs bool operands, found string");
    // The conditional evaluates only the chosen branch.
    assert_eq!(eval("event.attrs.flag ? 1 : event.attrs.missing"), "int 1");
    assert_eq!(
        eval("event.kind == 'smoke' ? event.attrs.missing : 'no'"),
        "string no"
    );
    assert_eq!(
        eval_err("event.attrs.class ? 1 : 2"),
        "no such overload: ?:string"
    );
    assert_eq!(
        compile_err("1 ? 2 : 3").message,
        "the condition before '?' must be a bool, found int"
    );
    // A long flat chain is fine.
    let chain = vec!["event.kind == 'gps'"; 400].join(" && ");
    assert!(compile(&chain).matches(&event()));
}

#[test]
fn event_fields() {
    assert_eq!(eval("event.source"), "string truck-0042");
    assert_eq!(eval("event.kind"), "string gps");
    assert_eq!(eval("event.id"), "string ");
    assert_eq!(eval("event.time"), "timestamp 2026-11-22T03:04:05.250Z");
    assert_eq!(eval("event.lon"), "double 121.2654");
    assert_eq!(eval("event.lat"), "double 31.3751");
    assert_eq!(eval("event.grid"), "string G-12");
    assert_eq!(eval("event['kind']"), "string gps");
    assert_eq!(eval(".event.kind"), "string gps");
    assert_eq!(eval("size(event.attrs)"), "int 9");
    assert_eq!(
        eval_err("event.unit"),
        "no such key: 'unit' (this event has no unit; guard with has(event.unit))"
    );
    let bare = Event::new(
        "cam-1",
        "smoke",
        parse_time("2026-01-01T00:00:00Z").unwrap(),
    );
    let lon = compile("event.lon > 0.0");
    assert_eq!(
        lon.eval(&bare).unwrap_err().message,
        "no such field: 'lon' (this event has no lon; guard with has(event.lon))"
    );
    assert!(!lon.matches(&bare));
    assert!(compile("!has(event.lon) || event.lon > 0.0").matches(&bare));
    let e = compile_err("event.kinds == 'gps'");
    assert_eq!((e.line, e.column), (1, 7));
    assert_eq!(
        e.message,
        "event has no field 'kinds'; fields are id, source, kind, time, lon, lat, grid, unit, attrs"
    );
    let e = compile_err("event == 1");
    assert!(
        e.message.starts_with("'event' is not a value on its own"),
        "{e}"
    );
    let e = compile_err("evnt.kind == 'gps'");
    assert_eq!(
        (e.column, e.message.as_str()),
        (1, "unknown variable 'evnt'; the only variable is 'event'")
    );
}

#[test]
fn attributes_select_and_index() {
    assert_eq!(eval("event.attrs.speed_kmh"), "double 62.5");
    assert_eq!(eval("event.attrs['speed_kmh']"), "double 62.5");
    assert_eq!(eval("event.attrs.heading"), "double 90");
    assert_eq!(eval("event.attrs.flag"), "bool true");
    assert_eq!(eval("event.attrs.nothing"), "null");
    assert_eq!(eval("event.attrs.tags"), "[string a, string b]");
    assert_eq!(eval("event.attrs.tags[1]"), "string b");
    assert_eq!(eval("event.attrs.tags[1u]"), "string b");
    assert_eq!(eval("event.attrs.nested.y.z"), "string deep");
    assert_eq!(eval("event.attrs.nested['y']['z']"), "string deep");
    assert_eq!(
        eval_err("event.attrs[event.attrs.tags[0] + 'bc']"),
        "no such key: 'abc'"
    );
    assert_eq!(eval("{'a': {'b': 2}}.a.b"), "int 2");
    assert_eq!(eval("[10, 20, 30][2]"), "int 30");
    assert_eq!(
        eval_err("event.attrs.tags[2]"),
        "index 2 out of range for a list of size 2"
    );
    assert_eq!(
        eval_err("event.attrs.tags[-1]"),
        "index -1 out of range for a list of size 2"
    );
    assert_eq!(eval_err("event.attrs.nested.q"), "no such key: 'q'");
    assert_eq!(eval_err("{'a': 1}['b']"), "no such key: 'b'");
    assert_eq!(eval_err("{1: 1}[2]"), "no such key: '2'");
    assert_eq!(
        eval_err("event.attrs.class.x"),
        "no such field: 'x' (a string has no fields)"
    );
    assert_eq!(
        eval_err("event.attrs.class[0]"),
        "no such overload: string [] int"
    );
    assert_eq!(
        compile_err("event.kind.x").message,
        "cannot select 'x': a string has no fields"
    );
    assert_eq!(
        compile_err("event.kind[0]").message,
        "cannot index a string"
    );
    assert_eq!(
        compile_err("event.attrs.tags + [1]['a']").message,
        "a list index must be an int, found string"
    );
    assert_eq!(compile_err("{'a': 1, 'a': 2}").message, "duplicate map key");
    assert_eq!(
        compile_err("{1.5: 2}").message,
        "a map key must be a string, int, uint or bool, found double"
    );
    assert_eq!(
        eval_err("{event.kind: 1, 'gps': 2}"),
        "duplicate map key 'gps'"
    );
}

#[test]
fn has_macro() {
    assert_true("has(event.attrs.class)");
    assert_false("has(event.attrs.missing)");
    assert_true("has(event.attrs.nothing)");
    assert_true("has(event.attrs.nested.x)");
    assert_false("has(event.attrs.nested.q)");
    assert_true("has(event.attrs.nested.y.z)");
    assert_true("has(event.grid) && has(event.lon) && has(event.lat) && has(event.attrs)");
    assert_false("has(event.unit)");
    assert_false("has(event.id)");
    assert_true("has(event.source) && has(event.time)");
    assert_true("has({'a': 1}.a) && !has({'a': 1}.b)");
    assert_eq!(
        eval_err("has(event.attrs.class.x)"),
        "has() needs a map to test for 'x', found string"
    );
    assert_eq!(
        eval_err("has(event.attrs.missing.x)"),
        "no such key: 'missing'"
    );
    assert_eq!(compile_err("has(event.kinds)").column, 11);
    assert_eq!(
        compile_err("has(event.attrs['x'])").message,
        "has() needs a field selection, as in has(event.attrs.speed_kmh) or has(event.grid)"
    );
    assert_eq!(
        compile_err("has(event.kind.x)").message,
        "has() tests a field of a map, but this is a string"
    );
    assert_eq!(
        compile_err("has()").message,
        "has() takes 1 argument, found 0"
    );
}

#[test]
fn in_operator() {
    assert_true("event.kind in ['smoke', 'gps']");
    assert_false("event.kind in ['smoke']");
    assert_false("event.kind in []");
    assert_true("'class' in event.attrs");
    assert_false("'missing' in event.attrs");
    assert_false("1 in event.attrs");
    assert_true("'b' in event.attrs.tags");
    assert_true("1 in {1: 'one'} && !(2 in {1: 'one'})");
    assert_true("[1] in [[1], [2]]");
    assert_eq!(
        compile_err("'x' in 'xyz'").message,
        "'in' needs a list or map on its right, found string"
    );
    assert_eq!(
        eval_err("'x' in event.attrs.class"),
        "no such overload: string in string"
    );
}

#[test]
fn comprehensions() {
    assert_true("event.attrs.tags.exists(t, t == 'b')");
    assert_false("event.attrs.tags.exists(t, t == 'z')");
    assert_true("[1, 2, 3].all(x, x > 0)");
    assert_false("[1, 2, 3].all(x, x > 1)");
    assert_true("[].all(x, x > 1) && ![].exists(x, x > 1)");
    assert_true("[1, 2].exists_one(x, x > 1)");
    assert_false("[1, 2, 3].exists_one(x, x > 1)");
    assert_eq!(eval("[1, 2, 3].map(x, x * 2)"), "[int 2, int 4, int 6]");
    assert_eq!(eval("[1, 2, 3].map(x, x > 1, x * 10)"), "[int 20, int 30]");
    assert_eq!(eval("[1, 2, 3, 4].filter(x, x % 2 == 1)"), "[int 1, int 3]");
    assert_eq!(eval("event.attrs.nested.map(k, k)"), "[string x, string y]");
    assert_true("{'a': 1, 'bb': 2}.exists(k, k.size() == 2)");
    assert_true("event.attrs.exists(k, k == 'class' && event.attrs[k] == 'hazmat')");
    // Inner comprehensions see outer variables.
    assert_true("[1, 2].all(x, [3, 4].exists(y, y > x))");
    assert_true("[[1, 2], [3]].exists(l, l.all(x, x > 2))");
    assert_eq!(
        eval("[1, 2].map(x, [10, 20].map(y, x + y))"),
        "[[int 11, int 21], [int 12, int 22]]"
    );
    // Shadowing: the innermost x wins.
    assert_eq!(eval("[1].map(x, [5].map(x, x))"), "[[int 5]]");
    // exists/all decide like ||/&& even when another element fails.
    assert_true("[0, 1].exists(x, 1 / x == 1)");
    assert_eq!(eval_err("[0, 1].all(x, 1 / x == 1)"), "division by zero");
    assert_false("[0, 2].all(x, 1 / x == 5)");
    assert_eq!(
        eval_err("[0, 1].exists_one(x, 1 / x == 1)"),
        "division by zero"
    );
    assert_eq!(
        eval_err("event.attrs.tags.exists(t, t)"),
        "the predicate of exists() must be a bool, found string"
    );
    assert_eq!(
        eval_err("event.attrs.class.exists(t, true)"),
        "no such overload: string.exists()"
    );
    let e = compile_err("[1].exists(x, y > 1)");
    assert_eq!(
        (e.column, e.message.as_str()),
        (
            15,
            "unknown variable 'y'; the variables here are 'event', 'x'"
        )
    );
    assert_eq!(
        compile_err("[1].all(event, true)").message,
        "the variable of all() cannot be named 'event'"
    );
    assert_eq!(
        compile_err("[1].all(1, true)").message,
        "the first argument of all() must be a variable name, as in list.all(x, x > 0)"
    );
    assert_eq!(
        compile_err("[1].all(x)").message,
        "all() takes 2 arguments (a variable name and a predicate), found 1"
    );
    assert_eq!(
        compile_err("1.0.all(x, true)").message,
        "all() needs a list or map, found double"
    );
    assert_eq!(
        compile_err("[1].all(x, 1)").message,
        "the predicate of all() must be a bool, found int"
    );
    assert_eq!(
        compile_err("[1].map(x, 1, x)").message,
        "the predicate of map() must be a bool, found int"
    );
    assert_eq!(
        compile_err("exists(x, true)").message,
        "exists() is a method: call it on a value, as in x.exists(...)"
    );
}

#[test]
fn timestamps_and_durations() {
    assert_true("event.time > timestamp('2026-11-22T03:04:05Z')");
    assert_true("event.time == timestamp('2026-11-22T11:04:05.25+08:00')");
    assert_eq!(
        eval("event.time - timestamp('2026-11-22T03:00:00Z')"),
        "duration 245.25s"
    );
    assert_true("event.time - timestamp('2026-11-22T03:00:00Z') == duration('4m5.25s')");
    assert_eq!(
        eval("event.time + duration('1h')"),
        "timestamp 2026-11-22T04:04:05.250Z"
    );
    assert_eq!(
        eval("duration('30m') + event.time"),
        "timestamp 2026-11-22T03:34:05.250Z"
    );
    assert_eq!(
        eval("event.time - duration('3h4m5.25s')"),
        "timestamp 2026-11-22T00:00:00Z"
    );
    assert_true("duration('1h30m') == duration('90m') && duration('1.5h') == duration('5400s')");
    assert_true("duration('-30s') < duration('0') && duration('1ms') > duration('999us')");
    assert_true("duration('1h') - duration('30m') == duration('30m')");
    assert_true("duration('1h') + duration('1ns') > duration('1h')");
    assert_eq!(eval("duration('1h30m')"), "duration 5400s");
    assert_eq!(eval("duration('-1.5s')"), "duration -1.5s");
    assert_eq!(eval("duration('250ms')"), "duration 0.25s");
    assert_eq!(eval("string(duration('1h30m'))"), "string 5400s");
    assert_eq!(
        eval("string(event.time)"),
        "string 2026-11-22T03:04:05.250Z"
    );
    assert_eq!(eval("int(event.time)"), "int 1795316645");
    assert_eq!(eval("timestamp(0)"), "timestamp 1970-01-01T00:00:00Z");
    assert_true("timestamp('2026-01-01T00:00:00Z') < timestamp('2026-01-01T00:00:01Z')");
    assert_eq!(
        eval_err("timestamp('9999-12-31T23:59:59Z') + duration('1s')"),
        "overflow in '+'"
    );
    let e = compile_err("event.time > timestamp('yesterday')");
    assert_eq!(e.column, 14);
    assert!(
        e.message.starts_with("invalid timestamp \"yesterday\""),
        "{e}"
    );
    let e = compile_err("duration('1d')");
    assert!(
        e.message
            .starts_with("invalid duration \"1d\": unknown unit \"d\""),
        "{e}"
    );
    assert!(compile_err("duration('1h30')")
        .message
        .contains("missing unit"));
    assert!(compile_err("duration('')").message.contains("empty"));
    assert!(compile_err("duration('999999999h')")
        .message
        .contains("out of range"));
    assert_eq!(
        compile_err("event.time + 1").message,
        "no operator '+' for timestamp and int"
    );
    assert_eq!(
        eval_err("event.time + duration(event.attrs.class)"),
        "invalid duration \"hazmat\": expected a number (write a number and a unit such as \"1h30m\", \"90s\" or \"250ms\")"
    );
}

#[test]
fn timestamp_accessors_and_time_zones() {
    assert_eq!(eval("event.time.getHours()"), "int 3");
    assert_eq!(eval("event.time.getHours('+08:00')"), "int 11");
    assert_eq!(eval("event.time.getHours('-05:30')"), "int 21");
    assert_eq!(eval("event.time.getMinutes('-05:30')"), "int 34");
    assert_eq!(eval("event.time.getHours('UTC')"), "int 3");
    assert_eq!(eval("event.time.getHours('08:00')"), "int 11");
    assert_eq!(eval("event.time.getHours(event.attrs.tz)"), "int 11");
    assert_eq!(eval("event.time.getMinutes()"), "int 4");
    assert_eq!(eval("event.time.getSeconds()"), "int 5");
    assert_eq!(eval("event.time.getMilliseconds()"), "int 250");
    assert_eq!(eval("event.time.getDayOfWeek()"), "int 0");
    assert_eq!(eval("event.time.getDayOfWeek('-05:00')"), "int 6");
    assert_eq!(eval("event.time.getDayOfMonth()"), "int 21");
    assert_eq!(eval("event.time.getDate()"), "int 22");
    assert_eq!(eval("event.time.getDate('-05:00')"), "int 21");
    assert_eq!(eval("event.time.getMonth()"), "int 10");
    assert_eq!(eval("event.time.getFullYear()"), "int 2026");
    assert_eq!(eval("event.time.getDayOfYear()"), "int 325");
    assert_eq!(eval("duration('90m').getHours()"), "int 1");
    assert_eq!(eval("duration('90m').getMinutes()"), "int 90");
    assert_eq!(eval("duration('1.5s').getMilliseconds()"), "int 1500");
    assert_true("event.time.getHours('+08:00') >= 8 && event.time.getHours('+08:00') < 18");
    let e = compile_err("event.time.getHours('Asia/Shanghai')");
    assert_eq!(e.column, 21);
    assert_eq!(
        e.message,
        "time zone \"Asia/Shanghai\" is not supported: named zones need a time-zone database; use a fixed offset like \"+08:00\""
    );
    assert!(compile_err("event.time.getHours('+25:00')")
        .message
        .starts_with("invalid time zone"));
    assert_eq!(
        compile_err("event.time.getHours(8)").message,
        "the time zone of getHours() must be a string such as \"+08:00\", found int"
    );
    assert_eq!(
        compile_err("event.kind.getHours()").message,
        "getHours() needs a timestamp, found string"
    );
    assert_eq!(
        compile_err("duration('1h').getHours('+08:00')").message,
        "getHours() on a duration takes no time zone"
    );
    assert!(compile_err("duration('1h').getDayOfWeek()")
        .message
        .starts_with("getDayOfWeek() needs a timestamp"));
    assert_eq!(
        compile_err("event.time.getHours('+08:00', 1)").message,
        "getHours() takes 0 or 1 arguments (a time zone such as \"+08:00\"), found 2"
    );
    assert_eq!(
        eval_err("event.time.getHours(event.attrs.class)"),
        "time zone \"hazmat\" is not supported: named zones need a time-zone database; use a fixed offset like \"+08:00\""
    );
    assert_eq!(
        eval_err("event.time.getHours(event.source)"),
        "invalid time zone \"truck-0042\": use a fixed offset like \"+08:00\" or \"-05:30\""
    );
    assert_eq!(
        eval_err("event.attrs.class.getHours()"),
        "no such overload: string.getHours()"
    );
}

#[test]
fn conversions() {
    assert_eq!(eval("int('42')"), "int 42");
    assert_eq!(eval("int('-42')"), "int -42");
    assert_eq!(eval("int(2.9)"), "int 2");
    assert_eq!(eval("int(-2.9)"), "int -2");
    assert_eq!(eval("int(7u)"), "int 7");
    assert_eq!(eval("int(event.attrs.heading)"), "int 90");
    assert_eq!(eval("uint(3)"), "uint 3");
    assert_eq!(eval("uint('3')"), "uint 3");
    assert_eq!(eval("uint(3.7)"), "uint 3");
    assert_eq!(eval("double(3)"), "double 3");
    assert_eq!(eval("double('2.5')"), "double 2.5");
    assert_eq!(eval("double(7u)"), "double 7");
    assert_eq!(eval("string(2.5)"), "string 2.5");
    assert_eq!(eval("string(3.0)"), "string 3");
    assert_eq!(eval("string(-7)"), "string -7");
    assert_eq!(eval("string(1u)"), "string 1");
    assert_eq!(eval("string(true)"), "string true");
    assert_eq!(eval("string(event.attrs.speed_kmh)"), "string 62.5");
    assert_eq!(eval("bool('true')"), "bool true");
    assert_eq!(eval("bool('f')"), "bool false");
    assert_eq!(eval("dyn(1)"), "int 1");
    assert_eq!(
        eval("size('abc') + size([1, 2]) + size({'a': 1}) + 'xy'.size()"),
        "int 8"
    );
    assert_eq!(
        compile_err("int(1e19)").message,
        "int(10000000000000000000): out of range"
    );
    assert_eq!(compile_err("uint(-1)").message, "uint(-1): out of range");
    assert_eq!(
        compile_err("int('x')").message,
        "int(\"x\"): not an integer"
    );
    assert_eq!(
        compile_err("bool('yes')").message,
        "bool(\"yes\"): not a boolean"
    );
    assert_eq!(
        eval_err("int(event.attrs.class)"),
        "int(\"hazmat\"): not an integer"
    );
    assert_eq!(
        eval_err("size(event.attrs.heading)"),
        "no such overload: size(double)"
    );
    assert_eq!(
        eval_err("string(event.attrs.tags)"),
        "no such overload: string(list)"
    );
    assert_eq!(
        compile_err("size(1)").message,
        "size() takes a string, list, map, found int"
    );
    assert_eq!(
        compile_err("int([1])").message,
        "int() takes a int, uint, double, string, timestamp, found list"
    );
}

#[test]
fn functions_are_checked_at_compile_time() {
    let e = compile_err("event.kind == 'gps' && foo(event.kind)");
    assert_eq!(e.column, 24);
    assert!(
        e.message
            .starts_with("unknown function 'foo'; supported functions are size, has, int"),
        "{e}"
    );
    assert!(
        e.message.contains("methods startsWith, endsWith, contains"),
        "{e}"
    );
    assert!(compile_err("event.kind.lower()")
        .message
        .starts_with("unknown function 'lower'"));
    assert_eq!(
        compile_err("size(1, 2)").message,
        "size() takes 1 argument, found 2 arguments"
    );
    assert_eq!(
        compile_err("'a'.size(1)").message,
        "size() takes no arguments, found 1 argument"
    );
    let e = compile_err("event.kind.startsWith()");
    assert_eq!(
        (e.column, e.message.as_str()),
        (12, "startsWith() takes 1 argument, found 0 arguments")
    );
    assert_eq!(
        compile_err("startsWith('a')").message,
        "startsWith() is a method: call it on a value, as in x.startsWith(...)"
    );
    assert_eq!(
        compile_err("event.kind.int()").message,
        "int() is a function, not a method: call it as int(x)"
    );
    assert_eq!(
        compile_err("event.kind.startsWith(1)").message,
        "the argument of startsWith() must be a string, found int"
    );
    assert_eq!(
        compile_err("event.time.contains('a')").message,
        "contains() needs a string, found timestamp"
    );
    assert_eq!(
        compile_err("event.kind.matches('^g')").message,
        "matches() is not supported: this build has no regular-expression engine; use startsWith(), endsWith() or contains()"
    );
}

#[test]
fn kinds_analysis() {
    let kinds = |src: &str| compile(src).kinds();
    let some = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(kinds("event.kind == 'gps'"), some(&["gps"]));
    assert_eq!(kinds("'gps' == event.kind"), some(&["gps"]));
    assert_eq!(
        kinds("event.kind == 'gps' && event.attrs.class == 'hazmat'"),
        some(&["gps"])
    );
    assert_eq!(
        kinds("event.attrs.speed_kmh > 80.0 && event.kind == 'gps'"),
        some(&["gps"])
    );
    assert_eq!(
        kinds("event.kind in ['smoke', 'gps', 'smoke']"),
        some(&["gps", "smoke"])
    );
    assert_eq!(
        kinds("event.source != 'x' && (event.kind == 'gps' && has(event.lon))"),
        some(&["gps"])
    );
    assert_eq!(
        kinds("event.kind in ['a', 'b'] && event.kind == 'b'"),
        some(&["b"])
    );
    assert_eq!(
        kinds("event.kind == 'gps' || event.kind in ['smoke', 'fire']"),
        some(&["fire", "gps", "smoke"])
    );
    assert_eq!(
        kinds("(event.kind == 'a' || event.kind == 'b') && event.attrs.x > 1.0"),
        some(&["a", "b"])
    );
    assert_eq!(kinds("event.kind == 'a' && event.kind == 'b'"), some(&[]));
    assert_eq!(kinds("false"), some(&[]));
    assert_eq!(kinds("event.kind == 'gps' || event.attrs.x == 1.0"), None);
    assert_eq!(kinds("event.kind == 'gps' || true"), None);
    assert_eq!(kinds("true"), None);
    assert_eq!(kinds("event.attrs.speed_kmh > 80.0"), None);
    assert_eq!(kinds("event.kind != 'gps'"), None);
    assert_eq!(kinds("!(event.kind == 'gps')"), None);
    assert_eq!(kinds("event.kind.startsWith('gp')"), None);
    assert_eq!(kinds("event.source == 'gps'"), None);
    assert_eq!(kinds("event.kind == 'gps' ? true : false"), None);
}

#[test]
fn constant_true() {
    assert!(compile("true").is_constant_true());
    assert!(compile("1 < 2").is_constant_true());
    assert!(compile("true && true").is_constant_true());
    assert!(compile("event.kind == 'x' || true").is_constant_true());
    assert!(compile("size('ab') == 2").is_constant_true());
    assert!(!compile("false").is_constant_true());
    assert!(!compile("event.kind == 'gps'").is_constant_true());
    assert!(!compile("true && event.kind == 'gps'").is_constant_true());
    assert!(!compile("1").is_constant_true());
}

#[test]
fn key_forms() {
    let event = event();
    let key = |src: &str| {
        let mut out = String::from("stale");
        let ok = compile(src).key(&event, &mut out);
        (ok, out)
    };
    let written = |s: &str| (true, s.to_string());
    assert_eq!(key("event.source"), written("truck-0042"));
    assert_eq!(key("event.attrs.class"), written("hazmat"));
    assert_eq!(key("event.attrs.heading"), written("90"));
    assert_eq!(key("event.attrs.speed_kmh"), written("62.5"));
    assert_eq!(key("42"), written("42"));
    assert_eq!(key("-42"), written("-42"));
    assert_eq!(key("1u"), written("1"));
    assert_eq!(key("0.1 + 0.2"), written("0.30000000000000004"));
    assert_eq!(key("1e21"), written("1e21"));
    assert_eq!(key("123456789.0"), written("123456789"));
    assert_eq!(key("0.000001"), written("0.000001"));
    assert_eq!(key("1.5e-7"), written("1.5e-7"));
    assert_eq!(key("true"), written("true"));
    assert_eq!(key("event.attrs.flag"), written("true"));
    assert_eq!(
        key("event.kind + '/' + event.source"),
        written("gps/truck-0042")
    );
    assert_eq!(
        key("event.kind + '/' + (event.attrs.class + '!')"),
        written("gps/hazmat!")
    );
    assert_eq!(
        key("event.attrs.tags[0] + event.attrs.class"),
        written("ahazmat")
    );
    assert_eq!(key("1 + 2"), written("3"));
    assert_eq!(key("dyn(1) + event.attrs.heading"), (false, String::new()));
    assert_eq!(
        key("event.kind + event.attrs.missing"),
        (false, String::new())
    );
    assert_eq!(key("event.attrs.tags + ['c']"), (false, String::new()));
    assert_eq!(key("event.time"), written("2026-11-22T03:04:05.250Z"));
    assert_eq!(key("duration('90s')"), written("90s"));
    assert_eq!(key("event.grid"), written("G-12"));
    assert_eq!(key("event.unit"), (false, String::new()));
    assert_eq!(key("event.attrs.missing"), (false, String::new()));
    assert_eq!(key("event.attrs.nothing"), (false, String::new()));
    assert_eq!(key("event.attrs.tags"), (false, String::new()));
    assert_eq!(key("event.attrs.nested"), (false, String::new()));
}

#[test]
fn matches_and_eval_errors() {
    let event = event();
    let p = compile("event.kind == 'gps' && event.attrs.class == 'hazmat'");
    assert!(p.matches(&event));
    assert_eq!(
        p.source(),
        "event.kind == 'gps' && event.attrs.class == 'hazmat'"
    );
    assert!(!compile("event.attrs.class == 'other'").matches(&event));
    // Errors and non-bool values never match.
    let missing = compile("event.attrs.missing > 1.0");
    assert!(!missing.matches(&event));
    assert_eq!(
        missing.eval(&event).unwrap_err().to_string(),
        "no such key: 'missing'"
    );
    assert!(!compile("event.kind").matches(&event));
    // Values can outlive the program and event once owned.
    let owned = {
        let p = compile("event.attrs.tags + [event.source]");
        p.eval(&event).unwrap().into_owned()
    };
    assert_eq!(show(&owned), "[string a, string b, string truck-0042]");
    assert_eq!(
        owned,
        CelValue::List(super::CelList::new(vec![
            "a".into(),
            "b".into(),
            "truck-0042".into()
        ]))
    );
}

#[test]
fn parse_errors_have_exact_positions() {
    let e = compile_err("event.kind == \"gps\" && ");
    assert_eq!((e.offset, e.line, e.column), (23, 1, 24));
    assert_eq!(
        e.to_string(),
        "line 1, column 24: expected an expression after '&&', found end of input"
    );

    let e = compile_err("event.kind == \"gps\"\n  && event.attrs.x >");
    assert_eq!((e.line, e.column), (2, 21));
    assert_eq!(
        e.message,
        "expected an expression after '>', found end of input"
    );

    let e = compile_err("event.kind = \"gps\"");
    assert_eq!(
        (e.column, e.message.as_str()),
        (12, "unexpected '='; use '==' to compare values")
    );

    let e = compile_err("event.kind == 'a' & true");
    assert_eq!(
        (e.column, e.message.as_str()),
        (19, "unexpected '&'; use '&&' for a logical and")
    );

    let e = compile_err("(event.kind == 'gps'");
    assert_eq!(
        (e.column, e.message.as_str()),
        (
            21,
            "expected ')' to close the '(' at column 1, found end of input"
        )
    );

    let e = compile_err("event.kind == 'gps')");
    assert_eq!((e.column, e.message.as_str()), (20, "unmatched ')'"));

    let e = compile_err("event.kind event");
    assert_eq!(
        (e.column, e.message.as_str()),
        (
            12,
            "expected an operator or the end of the expression, found identifier 'event'"
        )
    );

    let e = compile_err("[1, 2");
    assert_eq!(
        (e.column, e.message.as_str()),
        (6, "expected ',' or ']' in a list, found end of input")
    );

    let e = compile_err("{'a' 1}");
    assert_eq!(
        (e.column, e.message.as_str()),
        (6, "expected ':' after a map key, found number 1")
    );

    let e = compile_err("{'a': 1 'b': 2}");
    assert_eq!(
        (e.column, e.message.as_str()),
        (9, "expected ',' or '}' in a map, found string 'b'")
    );

    let e = compile_err("event.");
    assert_eq!(
        (e.column, e.message.as_str()),
        (
            7,
            "expected a field or method name after '.', found end of input"
        )
    );

    let e = compile_err("size(event.kind");
    assert_eq!(
        (e.column, e.message.as_str()),
        (
            16,
            "expected ',' or ')' in the arguments of size(), found end of input"
        )
    );

    let e = compile_err("event.attrs.tags[0");
    assert_eq!(
        (e.column, e.message.as_str()),
        (
            19,
            "expected ']' to close the '[' at column 17, found end of input"
        )
    );

    let e = compile_err("true ? 1");
    assert_eq!(
        (e.column, e.message.as_str()),
        (
            9,
            "expected ':' of the conditional started by '?' at column 6, found end of input"
        )
    );

    let e = compile_err("1 + * 2");
    assert_eq!(
        (e.column, e.message.as_str()),
        (5, "expected an expression after '+', found '*'")
    );

    let e = compile_err("");
    assert_eq!(
        (e.column, e.message.as_str()),
        (1, "the expression is empty")
    );

    let e = compile_err("   // only a comment");
    assert_eq!(e.message, "the expression is empty");

    let e = compile_err("event.kind == 'a' # b");
    assert_eq!(
        (e.column, e.message.as_str()),
        (19, "unexpected character '#'")
    );

    let e = compile_err("if == 1");
    assert_eq!(
        e.message,
        "'if' is a reserved word and cannot be used as a name"
    );

    let e = compile_err("Foo{a: 1}");
    assert_eq!(
        e.message,
        "message construction 'Foo{...}' is not supported"
    );

    // Columns count characters, offsets count bytes.
    let e = compile_err("\"héllo\" == evnt");
    assert_eq!((e.offset, e.column), (12, 12));

    let deep = format!("{}1{}", "(".repeat(150), ")".repeat(150));
    assert!(compile_err(&deep)
        .message
        .starts_with("the expression is nested too deeply"));
    let long = vec!["1"; 400].join(" + ");
    assert!(compile_err(&long)
        .message
        .starts_with("the expression is nested too deeply"));
    let fine = format!("{}1{} == 1", "(".repeat(40), ")".repeat(40));
    assert!(compile(&fine).is_constant_true());
    // Just inside both limits, compiling and evaluating stay within a test thread's stack.
    let parens = format!(
        "{}event.attrs.heading{} > 1.0",
        "(".repeat(98),
        ")".repeat(98)
    );
    assert!(compile(&parens).matches(&event()));
    let chain = format!("event.attrs.heading{} == 334.0", " + 1.0".repeat(244));
    assert_eq!(eval(&chain), "bool true");
}

#[test]
fn comments_and_whitespace() {
    let p = compile("event.kind == 'gps' // the kind\n\t&& event.attrs.flag // and a flag\n");
    assert!(p.matches(&event()));
}

#[test]
fn program_is_shareable() {
    fn assert_traits<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    assert_traits::<Program>();
    assert_traits::<CelError>();
    assert_traits::<super::EvalError>();
    let p = compile("event.kind == 'gps'");
    let copy = p.clone();
    let handle = std::thread::spawn(move || copy.matches(&event()));
    assert!(handle.join().unwrap());
    assert!(p.matches(&event()));
}

/// Best of several rounds, in ns per call.
fn time_per_call(rounds: u32, n: u32, mut f: impl FnMut() -> bool) -> (f64, u32) {
    let mut best = f64::INFINITY;
    let mut hits = 0;
    for _ in 0..rounds {
        hits = 0;
        let start = Instant::now();
        for _ in 0..n {
            hits += u32::from(f());
        }
        best = best.min(start.elapsed().as_nanos() as f64 / f64::from(n));
    }
    (best, hits)
}

/// Run with `cargo test -p cityward-detect --release cel::tests::micro_benchmark -- --ignored --nocapture`.
#[test]
#[ignore]
fn micro_benchmark() {
    let gps = event();
    let smoke = Event::new(
        "cam-7",
        "smoke",
        parse_time("2026-11-22T03:00:00Z").unwrap(),
    )
    .with("temperature", 55.0);
    let first = "event.kind == \"gps\" && event.attrs.class == \"hazmat\"";
    let second = "event.attrs.temperature > 60.0";
    let cases: [(&str, &Event, bool); 5] = [
        (first, &gps, true),
        (first, &smoke, false),
        (second, &gps, true),
        (second, &smoke, false),
        ("event.attrs.missing > 60.0", &gps, false),
    ];
    let (rounds, n) = (7, 2_000_000);
    for (src, event, expected) in cases {
        let program = compile(src);
        let (ns, hits) = time_per_call(rounds, n, || program.matches(black_box(event)));
        println!(
            "matches {src:<55} on {:<5} ({:>2} attrs): {ns:5.1} ns",
            event.kind,
            event.attrs.len()
        );
        assert_eq!(hits, if expected { n } else { 0 });
        let (ns, _) = time_per_call(rounds, n, || program.eval(black_box(event)).is_ok());
        println!(
            "   eval {src:<55} on {:<5} ({:>2} attrs): {ns:5.1} ns",
            event.kind,
            event.attrs.len()
        );
    }
    let mut out = String::with_capacity(64);
    for src in [
        "event.source",
        "event.attrs.class",
        "event.kind + \"/\" + event.source",
    ] {
        let program = compile(src);
        let (ns, hits) = time_per_call(rounds, n, || program.key(black_box(&gps), &mut out));
        println!("    key {src:<55} on gps   ( 9 attrs): {ns:5.1} ns");
        assert_eq!(hits, n);
    }
    // Baseline: the first predicate written by hand in Rust.
    let native = |e: &Event| {
        e.kind == "gps" && e.attrs.get("class").and_then(Value::as_str) == Some("hazmat")
    };
    for event in [&gps, &smoke] {
        let (ns, _) = time_per_call(rounds, n, || native(black_box(event)));
        println!(
            "native Rust version of the first predicate{:<21} on {:<5}: {ns:5.1} ns",
            "", event.kind
        );
    }
}
