//! The console's unit tests (`console/tests/unit`, run by Vitest in plain Node, no
//! browser): urgency order and deadlines, the queue's filters, countdowns, which actions
//! fit an alert, the rules' YAML, outlines drawn once, the drawing tool, routes, chart
//! scales and both languages' strings.
//!
//! Needs Node with `console/node_modules` (`npm ci` in `console/`); `.ci/run` installs
//! both. Without them the test is skipped, unless `CITYWARD_REQUIRE_SERVICES` is set (as in
//! CI), which makes their absence a failure.

use std::path::Path;
use std::process::Command;

#[test]
fn the_console_unit_tests_pass() {
    let console = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../console");
    let missing: Vec<&str> = [
        // Checked apart from node_modules itself: an install older than the unit tests lacks it.
        (!console.join("node_modules/vitest").exists()).then_some("console/node_modules/vitest (run `npm ci` in console/)"),
        Command::new("node").arg("--version").output().is_err().then_some("Node.js"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        if std::env::var("CITYWARD_REQUIRE_SERVICES").is_ok() {
            panic!("the console unit tests need {}; .ci/run installs them", missing.join(", "));
        }
        eprintln!("skipped: the console unit tests need {}", missing.join(", "));
        return;
    }
    // Vitest's own entry rather than npx, which could go looking for it on the network.
    let out = Command::new("node")
        .args(["node_modules/vitest/vitest.mjs", "run"])
        .current_dir(&console)
        // Plain text in cargo's output.
        .env("NO_COLOR", "1")
        .env_remove("FORCE_COLOR")
        .output()
        .expect("node runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "console unit tests failed:\n{text}");
}
