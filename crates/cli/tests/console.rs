//! The console in a real Chromium against a real demo node (`console/tests/e2e.mjs`): the
//! node started from this build's `cityward` binary serves the embedded console, and
//! playwright-core drives Debian's Chromium through signing in, the map and its city
//! layers, the live alert queue, keyboard acknowledgement, both languages, the phone view
//! of a responder and refused actions.
//!
//! Needs Node with `console/node_modules` (`npm ci` in `console/`) and `/usr/bin/chromium`;
//! `.ci/run` installs both. Without them the test is skipped, unless
//! `CITYWARD_REQUIRE_SERVICES` is set (as in CI), which makes their absence a failure.

use std::path::Path;
use std::process::Command;

#[test]
fn the_console_works_in_a_real_browser_against_a_demo_node() {
    let console = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../console");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing: Vec<&str> = [
        (!console.join("node_modules/playwright-core").exists()).then_some("console/node_modules (run `npm ci` in console/)"),
        (!Path::new(&chromium).exists()).then_some("Chromium (apt install chromium)"),
        Command::new("node").arg("--version").output().is_err().then_some("Node.js"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        if std::env::var("CITYWARD_REQUIRE_SERVICES").is_ok() {
            panic!("the console test needs {}; .ci/run installs them", missing.join(", "));
        }
        eprintln!("skipped: the console test needs {}", missing.join(", "));
        return;
    }
    let out = Command::new("node")
        .arg("tests/e2e.mjs")
        .current_dir(&console)
        .env("CITYWARD_BIN", env!("CARGO_BIN_EXE_cityward"))
        .env("CHROMIUM", &chromium)
        .env_remove("CITYWARD_CONSOLE_DIST")
        .env_remove("CITYWARD_URL")
        .output()
        .expect("node runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "console end-to-end checks failed:\n{text}");
}
