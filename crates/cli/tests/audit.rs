//! `cityward audit verify` and `cityward audit head` on a real state database, before and
//! after it is tampered with directly (as someone with access to the disk would).

use std::process::Command;

fn cityward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cityward"))
}

/// Whether the command succeeded, and what it printed (stdout, then stderr).
fn run(args: &[&str]) -> (bool, String) {
    let out = cityward().args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The standard output of a command that must succeed.
fn stdout_of(args: &[&str]) -> String {
    let out = cityward().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn audit_verify_finds_a_tampered_entry_and_a_cut_off_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // A user added through the CLI, then five audited actions.
    let (ok, out) = run(&["user", "add", "--data", data, "--username", "sup", "--role", "analyst", "--password", "pw-1234567", "--supervisor"]);
    assert!(ok, "{out}");
    assert!(out.contains("supervisor"), "{out}");
    {
        use cityward_store::StateStore;
        let state = cityward_store::SqliteState::open(dir.path().join("state.sqlite3")).unwrap();
        assert!(state.user("sup").unwrap().unwrap().supervisor);
        for n in 0..5 {
            let entry = cityward_store::NewAuditEntry {
                actor: "ana".into(),
                action: "search".into(),
                target: "events".into(),
                detail: serde_json::json!({"plate": "粤B12345", "results": n}),
            };
            state.append_audit(&entry, chrono::Utc::now()).unwrap();
        }
    }
    let (ok, out) = run(&["audit", "verify", "--data", data]);
    assert!(ok, "{out}");
    assert!(out.contains("OK: 5 entries"), "{out}");

    // The head, kept elsewhere.
    let head = stdout_of(&["audit", "head", "--data", data]);
    let parsed: serde_json::Value = serde_json::from_str(head.trim()).unwrap();
    assert_eq!(parsed["seq"], 5, "{head}");
    let anchor = dir.path().join("anchor.json");
    std::fs::write(&anchor, head.trim()).unwrap();
    let (ok, out) = run(&["audit", "verify", "--data", data, "--anchor", anchor.to_str().unwrap()]);
    assert!(ok && out.contains("anchored head present"), "{out}");

    // The last entry removed: the chain alone still holds, the anchor tells.
    let db = rusqlite::Connection::open(dir.path().join("state.sqlite3")).unwrap();
    db.execute("DELETE FROM audit_log WHERE seq = 5", []).unwrap();
    let (ok, out) = run(&["audit", "verify", "--data", data]);
    assert!(ok, "a shorter chain is consistent in itself: {out}");
    let (ok, out) = run(&["audit", "verify", "--data", data, "--anchor", anchor.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("BROKEN at entry 5") && out.contains("cut from its end"), "{out}");

    // A result size edited in place.
    db.execute(r#"UPDATE audit_log SET detail = '{"plate":"粤B12345","results":0}' WHERE seq = 3"#, []).unwrap();
    drop(db);
    let (ok, out) = run(&["audit", "verify", "--data", data]);
    assert!(!ok, "{out}");
    assert!(out.contains("BROKEN at entry 3") && out.contains("edited"), "{out}");
    let (ok, out) = run(&["audit", "head", "--data", data]);
    assert!(!ok && out.contains("broken at entry 3"), "{out}");

    let (ok, out) = run(&["audit", "verify", "--data", dir.path().join("nowhere").to_str().unwrap()]);
    assert!(!ok && out.contains("no state database"), "{out}");
}

#[test]
fn a_pruned_audit_log_verifies_from_its_recorded_start_and_removing_its_first_entries_is_found() {
    use cityward_store::StateStore;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let state = cityward_store::SqliteState::open(dir.path().join("state.sqlite3")).unwrap();
    let long_ago = chrono::Utc::now() - chrono::Duration::days(2000);
    for n in 0..6 {
        let entry = cityward_store::NewAuditEntry { actor: "ana".into(), action: "search".into(), target: "events".into(), detail: serde_json::json!({"results": n}) };
        // Four entries from more than five years ago, two recent ones.
        let at = if n < 4 { long_ago + chrono::Duration::minutes(n) } else { chrono::Utc::now() };
        state.append_audit(&entry, at).unwrap();
    }
    let anchor = dir.path().join("anchor.json");
    std::fs::write(&anchor, stdout_of(&["audit", "head", "--data", data]).trim()).unwrap();
    // Retention: what is older than five years goes.
    let start = state.prune_audit(chrono::Utc::now() - chrono::Duration::days(1826), "retention", chrono::Utc::now()).unwrap().unwrap();
    assert_eq!((start.seq, start.deleted), (5, 4));
    drop(state);
    let (ok, out) = run(&["audit", "verify", "--data", data, "--anchor", anchor.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("OK: 3 entries") && out.contains("starts at entry 5") && out.contains("deleted 4 entries"), "{out}");

    // The next entry removed by hand and the recorded start moved past it to hide that.
    let db = rusqlite::Connection::open(dir.path().join("state.sqlite3")).unwrap();
    let hash: String = db.query_row("SELECT hash FROM audit_log WHERE seq = 5", [], |r| r.get(0)).unwrap();
    db.execute("DELETE FROM audit_log WHERE seq = 5", []).unwrap();
    let moved = serde_json::json!({"seq": 6, "prev_hash": hash, "deleted": 5, "before": start.before});
    db.execute("UPDATE meta SET value = ?1 WHERE key = 'audit.start'", [moved.to_string()]).unwrap();
    drop(db);
    let (ok, out) = run(&["audit", "verify", "--data", data]);
    assert!(!ok, "{out}");
    assert!(out.contains("BROKEN") && out.contains("audit.prune"), "{out}");
}
