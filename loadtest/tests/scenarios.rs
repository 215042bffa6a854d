//! Every scenario at tiny scale against a real `connect-proxy --dev` (its
//! embedded control plane and connect-client Studio): each must run, verify
//! what it moved, and report it. These check behaviour, not speed.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use testkit::Dev;

const LOADTEST: &str = env!("CARGO_BIN_EXE_connect-loadtest");

/// Runs a scenario against `dev` as its demo user; returns the output and
/// the JSON report.
fn run(dev: &Dev, scenario: &str, args: &[&str]) -> (Output, Value) {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let json = out_dir.path().join("report.json");
    let mut cmd = Command::new(LOADTEST);
    cmd.arg(scenario)
        .args(["--target", &dev.ssh_addr, "--progress", "off", "--json"])
        .arg(&json)
        .arg("--key")
        .arg(dev.demo_key());
    if !args.contains(&"--provision-users") && !args.contains(&"--login") {
        cmd.args(["--login", "demo@01ac8894"]);
    }
    let out = cmd.args(args).output().expect("connect-loadtest");
    let report = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    (out, report)
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(report: &Value, op: &str) -> u64 {
    report["ops"][op]["ok"].as_u64().unwrap_or(0)
}

fn assert_clean(out: &Output, report: &Value) {
    assert!(out.status.success(), "{}", text(out));
    assert_eq!(report["errors"], serde_json::json!({}), "{}", text(out));
}

#[test]
fn connect_logs_in_runs_the_command_and_reports_both() {
    let dev = Dev::start();
    let (out, report) = run(
        &dev,
        "connect",
        &["-c", "2", "-n", "6", "--command", "exit 0"],
    );
    assert_clean(&out, &report);
    assert_eq!(
        (ok(&report, "login"), ok(&report, "exec")),
        (6, 6),
        "{}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("p99.9") && stdout.contains("login"),
        "{stdout}"
    );
    // A command that fails is an error, not a success.
    let (out, report) = run(
        &dev,
        "connect",
        &["-c", "1", "-n", "2", "--command", "exit 3"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(report["errors"]["exec: exit status not 0"], 2, "{report}");
}

#[test]
fn idle_holds_sessions_and_measures_the_watched_process() {
    let dev = Dev::start();
    let pid = dev.process.pid().to_string();
    let (out, report) = run(
        &dev,
        "idle",
        &[
            "--sessions",
            "6",
            "-c",
            "3",
            "--hold",
            "1s",
            "--watch",
            &format!("proxy={pid}"),
        ],
    );
    assert_clean(&out, &report);
    assert_eq!(ok(&report, "session"), 6);
    assert_eq!(report["peak_open"], 6);
    let cost = &report["meta"]["idle_cost"][0];
    assert_eq!(cost["sessions_held"], 6, "{report}");
    // Each proxied session holds the user's socket and the Studio's.
    assert!(
        cost["fds_held"].as_u64() >= cost["fds_before"].as_u64().map(|f| f + 12),
        "{cost}"
    );
    let sampled = report["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .any(|t| t["samples"]["proxy rss_kib"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(sampled, "{report}");
    // --count bounds the sessions opened.
    let (out, report) = run(
        &dev,
        "idle",
        &["--sessions", "4", "-n", "2", "--hold", "0s"],
    );
    assert_clean(&out, &report);
    assert_eq!(ok(&report, "session"), 2, "{}", text(&out));
}

#[test]
fn interactive_gets_every_keystroke_echoed() {
    let dev = Dev::start();
    let (out, report) = run(
        &dev,
        "interactive",
        &["-c", "2", "-n", "50", "--think", "0s", "--line", "7"],
    );
    assert_clean(&out, &report);
    assert_eq!(ok(&report, "keystroke"), 50, "{}", text(&out));
}

#[test]
fn bulk_moves_and_verifies_both_directions() {
    let dev = Dev::start();
    let (out, report) = run(
        &dev,
        "bulk",
        &[
            "-c",
            "2",
            "-n",
            "4",
            "--bytes",
            "3MiB",
            "--direction",
            "both",
        ],
    );
    assert_clean(&out, &report);
    assert_eq!(
        ok(&report, "download") + ok(&report, "upload"),
        4,
        "{}",
        text(&out)
    );
    assert!(
        ok(&report, "download") >= 1 && ok(&report, "upload") >= 1,
        "{report}"
    );
    assert_eq!(report["bytes"], 4 * 3 * 1024 * 1024);
}

#[test]
fn churn_opens_sessions_at_the_rate_and_closes_them() {
    let dev = Dev::start();
    let (out, report) = run(
        &dev,
        "churn",
        &[
            "--rate",
            "10",
            "--hold",
            "300ms",
            "-d",
            "2s",
            "--command",
            "true",
        ],
    );
    assert_clean(&out, &report);
    // 10/s for 2 s: 20 arrivals (the last may not start before the end).
    let logins = ok(&report, "login");
    assert!(
        (19..=20).contains(&logins),
        "{logins} logins\n{}",
        text(&out)
    );
    assert_eq!(ok(&report, "exec"), logins);
    assert!(report["peak_open"].as_i64() >= Some(2), "{report}");
}

#[test]
fn mixed_runs_everything_as_users_it_created_through_the_api() {
    let dev = Dev::start();
    let plots = tempfile::tempdir().expect("tempdir");
    let (out, report) = run(
        &dev,
        "mixed",
        &[
            "--provision-users",
            "3",
            "--control-url",
            &dev.control_url,
            "--admin-token-file",
            dev.admin_token_file().to_str().expect("utf-8"),
            "--provision-sessions",
            "01ac8894",
            "-c",
            "4",
            "--sessions",
            "3",
            "--bytes",
            "256KiB",
            "-d",
            "3s",
            "--plots",
            plots.path().to_str().expect("utf-8"),
        ],
    );
    assert_clean(&out, &report);
    for op in ["login", "exec", "keystroke", "session"] {
        assert!(ok(&report, op) > 0, "no {op}\n{}", text(&out));
    }
    assert!(
        ok(&report, "download") + ok(&report, "upload") > 0,
        "{}",
        text(&out)
    );
    assert_eq!(
        report["meta"]["logins"], 3,
        "only the provisioned users log in"
    );
    for png in ["latency.png", "sessions.png"] {
        let bytes = std::fs::read(plots.path().join(png)).expect(png);
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{png}");
    }
}

#[test]
fn sessions_created_for_a_run_are_served_and_removed_afterwards() {
    let dev = Dev::start();
    let token_file = dev.admin_token_file();
    let (out, report) = run(
        &dev,
        "connect",
        &[
            "--provision-users",
            "5",
            "--provision-new-sessions",
            "3",
            "--provision-sessions",
            "01ac8894",
            "--provision-prefix",
            "lt",
            "--control-url",
            &dev.control_url,
            "--admin-token-file",
            token_file.to_str().expect("utf-8"),
            "-c",
            "2",
            "-n",
            "10",
        ],
    );
    assert_clean(&out, &report);
    // 5 users over 3 sessions: two sessions have an owner and a member,
    // and every one of the 5 logins (round-robin over 10 runs) works.
    assert_eq!(ok(&report, "exec"), 10, "{}", text(&out));
    assert_eq!(report["meta"]["provisioned"]["sessions_created"], 3);
    // Logged in to the new sessions, not to the one whose Studio serves them.
    assert_eq!(report["meta"]["logins"], 5);
    // Afterwards: no key left for the users, no member added to 01ac8894.
    let api = |path: &str| -> Value {
        let text = testkit::sh(&format!(
            "curl -sf -H \"Authorization: Bearer $(cat {})\" {}{path}",
            token_file.display(),
            dev.control_url
        ));
        serde_json::from_str(&text).expect("json")
    };
    assert_eq!(api("/v1/users/lt-0001/keys")["keys"], serde_json::json!([]));
    assert_eq!(
        api("/v1/sessions/01ac8894")["members"],
        serde_json::json!([])
    );
    let created = report["meta"]["provisioned"]["sessions"]
        .as_array()
        .expect("created session ids")
        .clone();
    assert_eq!(created.len(), 3);
    for id in created {
        let status = testkit::sh(&format!(
            "curl -s -o /dev/null -w '%{{http_code}}' -H \"Authorization: Bearer $(cat {})\" {}/v1/sessions/{}",
            token_file.display(),
            dev.control_url,
            id.as_str().expect("id")
        ));
        assert_eq!(status, "404", "session {id} was left behind");
    }
}

#[test]
fn a_jump_host_carries_the_inner_connection() {
    // connect-proxy is its own jump host here: the outer login's Studio
    // opens direct-tcpip back to the proxy, where the inner login lands.
    let dev = Dev::start();
    let jump = format!("demo@01ac8894@{}", dev.ssh_addr);
    let (out, report) = run(
        &dev,
        "connect",
        &["--jump", &jump, "-c", "1", "-n", "3", "--command", "true"],
    );
    assert_clean(&out, &report);
    assert_eq!(ok(&report, "exec"), 3, "{}", text(&out));
}

#[test]
fn refusals_are_counted_by_kind_and_fail_the_run() {
    let dev = Dev::start();
    let other = tempfile::tempdir().expect("tempdir");
    let key =
        testkit::keys::KeyPair::generate(other.path(), "stranger", testkit::keys::KeyType::Ed25519);
    let out = Command::new(LOADTEST)
        .args([
            "connect",
            "--target",
            &dev.ssh_addr,
            "--progress",
            "off",
            "-n",
            "3",
            "-c",
            "1",
        ])
        .args(["--login", "demo@01ac8894", "--key"])
        .arg(&key.private)
        .output()
        .expect("connect-loadtest");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("3  login: authentication refused"),
        "{stdout}"
    );
    // A login without its session gets told what connect-proxy expects.
    let (out, _) = run(&dev, "connect", &["-n", "1", "-c", "1", "--login", "demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("logins are USER@SESSION"), "{stdout}");
}

#[test]
fn non_loopback_targets_are_refused_unless_allowed() {
    let out = Command::new(LOADTEST)
        .args([
            "connect",
            "--target",
            "192.0.2.1:22",
            "--login",
            "x",
            "--key",
        ])
        .arg(Path::new("/nonexistent"))
        .output()
        .expect("connect-loadtest");
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--allow-remote"),
        "{stderr}"
    );
    let out = Command::new(LOADTEST)
        .args([
            "idle",
            "--sessions",
            "100000",
            "--login",
            "x",
            "--key",
            "/nonexistent",
        ])
        .output()
        .expect("connect-loadtest");
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("file descriptors"),
        "{}",
        text(&out)
    );
}
