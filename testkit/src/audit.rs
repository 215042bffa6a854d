//! ssh-audit (https://github.com/jtesta/ssh-audit) and the pass rule both
//! of the project's SSH servers are held to (the proxy in
//! `dataplane/tests/audit.rs`, connect-client in `studio/tests/hardening.rs`):
//! no CVE, nothing rated "fail", and the only "warn" ssh-audit's
//! post-quantum note on curve25519-sha256 and curve25519-sha256@libssh.org,
//! kept for clients older than OpenSSH 9.9.
//!
//! ssh-audit comes from the venv `.ci/run` makes at `target/interop-venv`,
//! at the version it pins; without it the caller's test fails, saying how
//! to make it. Its connection-rate (DHEat) test is skipped: ssh-audit runs
//! it only against finite-field Diffie-Hellman, which neither server offers.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The one warning allowed, and the key exchanges it is allowed on.
const NOT_POST_QUANTUM: &str = "does not provide protection against post-quantum attacks";
const CLASSIC_KEX: [&str; 2] = ["curve25519-sha256", "curve25519-sha256@libssh.org"];
/// The algorithm sections of ssh-audit's JSON report.
const SECTIONS: [&str; 4] = ["kex", "key", "enc", "mac"];
const VENV_HINT: &str = "run .ci/run, which makes it: `python3 -m venv target/interop-venv` \
     then `target/interop-venv/bin/pip install` ssh-audit at the version .ci/run pins";

/// Runs ssh-audit against 127.0.0.1:`port`; its JSON report.
pub fn ssh_audit(port: u16) -> Value {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/interop-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing, so ssh-audit cannot run: {VENV_HINT}",
        python.display()
    );
    let out = Command::new(&python)
        .args([
            "-m",
            "ssh_audit",
            "--json",
            "--skip-rate-test",
            "--timeout",
            "20",
        ])
        .args(["--port", &port.to_string(), "127.0.0.1"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run ssh-audit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named ssh_audit") {
        panic!("{} has no ssh_audit: {VENV_HINT}", python.display());
    }
    // Exit status: 0 nothing found, 2 warnings, 3 failures, 1 cannot
    // connect; failures are reported from the JSON, with the reasons.
    assert!(
        matches!(out.status.code(), Some(0 | 2 | 3)),
        "ssh-audit did not complete an audit ({}):\n{stdout}\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "ssh-audit's output is not JSON ({e}), {}:\n{stdout}\n{stderr}",
            out.status
        )
    })
}

/// What in `report` breaks the pass rule, one line each (empty: passes).
pub fn problems(report: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if report["cves"].as_array().is_none_or(|c| !c.is_empty()) {
        problems.push(format!("cves: {}", report["cves"]));
    }
    for section in SECTIONS {
        let Some(algorithms) = report[section].as_array().filter(|a| !a.is_empty()) else {
            problems.push(format!("{section}: no algorithms in the report"));
            continue;
        };
        for entry in algorithms {
            let name = entry["algorithm"].as_str().unwrap_or("?");
            let notes = &entry["notes"];
            if let Some(fail) = notes.get("fail").filter(|f| !is_empty_list(f)) {
                problems.push(format!("{section} {name}: fail {fail}"));
            }
            if let Some(warn) = notes.get("warn").filter(|w| !is_empty_list(w)) {
                let allowed = section == "kex"
                    && CLASSIC_KEX.contains(&name)
                    && *warn == Value::from(vec![NOT_POST_QUANTUM]);
                if !allowed {
                    problems.push(format!("{section} {name}: warn {warn}"));
                }
            }
        }
    }
    problems
}

fn is_empty_list(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.is_empty())
}
