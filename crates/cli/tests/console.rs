//! The console's tests, both run with Node against `console/`:
//!
//! - end to end (`console/tests/e2e.mjs`): a node started from this build's `cityward`
//!   binary serves the embedded console, and playwright-core drives Debian's Chromium
//!   through signing in, the map and its city layers, the live alert queue, keyboard
//!   acknowledgement, both languages, the phone view of a responder and refused actions;
//! - unit (`console/tests/unit`, Vitest in plain Node, no browser): urgency order and
//!   deadlines, the queue's filters, countdowns, which actions fit an alert, the rules'
//!   YAML, outlines drawn once, the drawing tool, routes, chart scales, device health and
//!   both languages' strings.
//!
//! They need Node with `console/node_modules` (`npm ci` in `console/`), and the end-to-end
//! test `/usr/bin/chromium`; `.ci/run` installs them. Without them a test is skipped, unless
//! `CITYWARD_REQUIRE_SERVICES` is set (as in CI), which makes their absence a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The console directory when everything in `needs` (a path under it, or an absolute
/// path, with what to do when it is absent) and Node are there; `None` (skip) otherwise.
fn console_with(test: &str, needs: &[(&Path, &str)]) -> Option<PathBuf> {
    let console = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../console");
    let mut missing: Vec<&str> = needs.iter().filter(|(path, _)| !console.join(path).exists()).map(|(_, what)| *what).collect();
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("Node.js");
    }
    if missing.is_empty() {
        return Some(console);
    }
    if std::env::var("CITYWARD_REQUIRE_SERVICES").is_ok() {
        panic!("the {test} needs {}; .ci/run installs them", missing.join(", "));
    }
    eprintln!("skipped: the {test} needs {}", missing.join(", "));
    None
}

/// Prints what a run said and fails the test when it failed.
fn expect_success(out: Output, what: &str) {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "{what} failed:\n{text}");
}

#[test]
fn the_console_works_in_a_real_browser_against_a_demo_node() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let needs = [
        (Path::new("node_modules/playwright-core"), "console/node_modules (run `npm ci` in console/)"),
        (Path::new(&chromium), "Chromium (apt install chromium)"),
    ];
    let Some(console) = console_with("console test", &needs) else { return };
    let out = Command::new("node")
        .arg("tests/e2e.mjs")
        .current_dir(&console)
        .env("CITYWARD_BIN", env!("CARGO_BIN_EXE_cityward"))
        .env("CHROMIUM", &chromium)
        .env_remove("CITYWARD_CONSOLE_DIST")
        .env_remove("CITYWARD_URL")
        .output()
        .expect("node runs");
    expect_success(out, "console end-to-end checks");
}

#[test]
fn the_console_unit_tests_pass() {
    // Checked apart from node_modules itself: an install older than the unit tests lacks it.
    let needs = [(Path::new("node_modules/vitest"), "console/node_modules/vitest (run `npm ci` in console/)")];
    let Some(console) = console_with("console unit tests", &needs) else { return };
    // Vitest's own entry rather than npx, which could go looking for it on the network.
    let out = Command::new("node")
        .args(["node_modules/vitest/vitest.mjs", "run"])
        .current_dir(&console)
        // Plain text in cargo's output.
        .env("NO_COLOR", "1")
        .env_remove("FORCE_COLOR")
        .output()
        .expect("node runs");
    expect_success(out, "console unit tests");
}
