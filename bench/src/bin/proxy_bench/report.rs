//! What the results file holds besides the measurements: the run's
//! metadata, and the summary (medians per system) written into the JSON
//! and as markdown tables.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bench::median;
use serde_json::{Value, json};

use crate::args::Args;

/// Targets from the issue.
const TARGET_CPU_S_PER_GIB_AES: f64 = 0.85;
const TARGET_US_PER_CONN: f64 = 500.0;
const TARGET_KIB_PER_SESSION: f64 = 32.0;

pub fn meta(args: &Args, bin: &Path) -> Value {
    let sh = |c: &str| -> String {
        Command::new("sh")
            .args(["-c", c])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    json!({
        "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
        "git_head": sh("git rev-parse --short HEAD 2>/dev/null"),
        "git_dirty_files": sh("git status --porcelain 2>/dev/null | wc -l").parse::<u64>().unwrap_or(0),
        "git_dirty_dataplane": sh("git status --porcelain -- dataplane 2>/dev/null | awk '{print $2}' | tr '\\n' ' '"),
        "kernel": sh("uname -r"),
        "cpus": sh("nproc"),
        "cpu_model": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "mem_total": sh("grep MemTotal /proc/meminfo | awk '{print $2\" kB\"}'"),
        "loadavg_at_start": sh("cat /proc/loadavg"),
        "openssh": sh("ssh -V 2>&1"),
        "nofile_limit": sh("ulimit -n"),
        "binaries": sh(&format!("cd '{}' && sha256sum connect-proxy connect-client connect-control | cut -c1-16,65-", bin.display())),
        "args": format!("{args:?}"),
    })
}

fn group_median(
    rows: &[Value],
    key: impl Fn(&Value) -> String,
    field: &str,
) -> BTreeMap<String, (f64, usize)> {
    let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in rows {
        if let Some(x) = pointer_f64(r, field) {
            groups.entry(key(r)).or_default().push(x);
        }
    }
    groups
        .into_iter()
        .map(|(k, v)| (k, (median(&v).unwrap_or(f64::NAN), v.len())))
        .collect()
}

pub fn pointer_f64(v: &Value, field: &str) -> Option<f64> {
    v.pointer(field).and_then(Value::as_f64)
}

pub fn summarize(results: &Value) -> (Value, String) {
    let mut md = String::new();
    let mut summary = serde_json::Map::new();
    let empty = Vec::new();

    // Throughput.
    let rows = results["throughput"].as_array().unwrap_or(&empty);
    if !rows.is_empty() {
        let key = |r: &Value| {
            format!(
                "{}|{}|{}",
                r["cipher"].as_str().unwrap_or(""),
                r["direction"].as_str().unwrap_or(""),
                r["system"].as_str().unwrap_or("")
            )
        };
        let fields = [
            "/mib_per_s",
            "/proxy_cpu_s_per_gib",
            "/studio_cpu_s_per_gib",
            "/client_cpu_s_per_gib",
        ];
        let meds: Vec<_> = fields.iter().map(|f| group_median(rows, key, f)).collect();
        md.push_str("### Bulk throughput (1 stream, OpenSSH client; medians)\n\n");
        md.push_str("| cipher (user leg) | direction | system | MiB/s | proxy CPU-s/GiB | target | Studio CPU-s/GiB | client CPU-s/GiB | runs |\n|---|---|---|---|---|---|---|---|---|\n");
        let mut out = Vec::new();
        for (k, (mib, n)) in &meds[0] {
            let parts: Vec<&str> = k.split('|').collect();
            let cpu = meds[1].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let studio = meds[2].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let client = meds[3].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let target =
                if parts[0].starts_with("aes256-gcm") && parts[2].starts_with("connect-proxy") {
                    format!(
                        "≤ {TARGET_CPU_S_PER_GIB_AES} {}",
                        if cpu <= TARGET_CPU_S_PER_GIB_AES {
                            "met"
                        } else {
                            "**missed**"
                        }
                    )
                } else {
                    "–".into()
                };
            md.push_str(&format!(
                "| {} | {} | {} | {mib:.0} | {cpu:.2} | {target} | {studio:.2} | {client:.2} | {n} |\n",
                parts[0], parts[1], parts[2]
            ));
            out.push(json!({ "cipher": parts[0], "direction": parts[1], "system": parts[2], "mib_per_s": mib, "proxy_cpu_s_per_gib": cpu, "studio_cpu_s_per_gib": studio, "client_cpu_s_per_gib": client, "runs": n }));
        }
        md.push('\n');
        summary.insert("throughput".into(), Value::Array(out));
    }

    // Connection rate.
    let rows = results["connrate"].as_array().unwrap_or(&empty);
    if !rows.is_empty() {
        let key = |r: &Value| {
            format!(
                "{}|{}",
                r["kex"].as_str().unwrap_or(""),
                r["system"].as_str().unwrap_or("")
            )
        };
        let fields = [
            "/conn_per_s",
            "/cpu/proxy/us_per_conn",
            "/cpu/studio/us_per_conn",
            "/latency_ms/login/p50",
            "/latency_ms/login/p99",
            "/latency_ms/exec/p50",
            "/latency_ms/exec/p99",
        ];
        let meds: Vec<_> = fields.iter().map(|f| group_median(rows, key, f)).collect();
        md.push_str(
            "### New connections (handshake + auth + upstream + `exec true` + close; medians)\n\n",
        );
        md.push_str("| user-leg kex | system | conn/s (whole platform on 2 vCPU) | proxy CPU µs/conn | target | capacity at 100% of 2 cores | Studio CPU µs/conn | login p50 / p99 ms | exec p50 / p99 ms | runs |\n|---|---|---|---|---|---|---|---|---|---|\n");
        let mut out = Vec::new();
        for (k, (rate, n)) in &meds[0] {
            let parts: Vec<&str> = k.split('|').collect();
            let us = meds[1].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let studio = meds[2].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let get = |i: usize| meds[i].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let (login50, login99, exec50, exec99) = (get(3), get(4), get(5), get(6));
            let target = if parts[1].starts_with("connect-proxy") {
                format!(
                    "≤ {TARGET_US_PER_CONN} {}",
                    if us <= TARGET_US_PER_CONN {
                        "met"
                    } else {
                        "**missed**"
                    }
                )
            } else {
                "–".into()
            };
            let capacity = 2.0e6 / us;
            md.push_str(&format!(
                "| {} | {} | {rate:.0} | {us:.0} | {target} | {capacity:.0}/s | {studio:.0} | {login50:.1} / {login99:.1} | {exec50:.1} / {exec99:.1} | {n} |\n",
                parts[0], parts[1]
            ));
            out.push(json!({ "kex": parts[0], "system": parts[1], "conn_per_s": rate, "proxy_us_per_conn": us, "studio_us_per_conn": studio, "login_p50_ms": login50, "login_p99_ms": login99, "exec_p50_ms": exec50, "exec_p99_ms": exec99, "runs": n }));
        }
        md.push('\n');
        summary.insert("connrate".into(), Value::Array(out));
    }

    // Keystrokes.
    let rows = results["interactive"].as_array().unwrap_or(&empty);
    if !rows.is_empty() {
        let key = |r: &Value| r["system"].as_str().unwrap_or("").to_owned();
        let fields = [
            "/keystroke_ms/p50",
            "/keystroke_ms/p99",
            "/keystrokes_per_s",
            "/proxy_cpu_s_per_1000_keystrokes",
        ];
        let meds: Vec<_> = fields.iter().map(|f| group_median(rows, key, f)).collect();
        let first = &rows[0];
        md.push_str(&format!(
            "### Keystroke round trips ({} sessions typing into `{}` through a pty, {} between keystrokes; medians)\n\n",
            first["concurrency"],
            first["command"].as_str().unwrap_or(""),
            first["think"].as_str().unwrap_or("")
        ));
        md.push_str("| system | p50 ms | p99 ms | keystrokes/s | proxy CPU-s per 1,000 keystrokes | runs |\n|---|---|---|---|---|---|\n");
        let mut out = Vec::new();
        for (k, (p50, n)) in &meds[0] {
            let get = |i: usize| meds[i].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let (p99, rate, cpu) = (get(1), get(2), get(3));
            md.push_str(&format!(
                "| {k} | {p50:.2} | {p99:.2} | {rate:.0} | {cpu:.3} | {n} |\n"
            ));
            out.push(json!({ "system": k, "p50_ms": p50, "p99_ms": p99, "keystrokes_per_s": rate, "proxy_cpu_s_per_1000_keystrokes": cpu, "runs": n }));
        }
        md.push('\n');
        summary.insert("interactive".into(), Value::Array(out));
    }

    // Idle sessions.
    let rows = results["idle"].as_array().unwrap_or(&empty);
    if !rows.is_empty() {
        let key = |r: &Value| {
            format!(
                "{:>6}|{}",
                r["count"].as_u64().unwrap_or(0),
                r["system"].as_str().unwrap_or("")
            )
        };
        let fields = [
            "/proxy/kib_per_session",
            "/proxy/anon_kib_per_session",
            "/proxy/fds_delta",
            "/open_seconds",
            "/proxy/idle_cpu_percent",
            "/proxy/rss_after_close_minus_base_kib",
            "/studio/kib_per_session",
            "/proxies",
        ];
        let meds: Vec<_> = fields.iter().map(|f| group_median(rows, key, f)).collect();
        md.push_str("### Idle proxied sessions (RSS delta / sessions; medians)\n\n");
        md.push_str("| sessions | system | proxy processes | KiB/session (RSS) | target | KiB/session (anon) | fds/session | time to open all | idle CPU (of one core) | RSS still held after all closed | runs |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        let mut out = Vec::new();
        for (k, (kib, n)) in &meds[0] {
            let parts: Vec<&str> = k.split('|').collect();
            let count: f64 = parts[0].trim().parse().unwrap_or(f64::NAN);
            let get = |i: usize| meds[i].get(k).map(|x| x.0).unwrap_or(f64::NAN);
            let target = format!(
                "≤ {TARGET_KIB_PER_SESSION} {}",
                if *kib <= TARGET_KIB_PER_SESSION {
                    "met"
                } else {
                    "**missed**"
                }
            );
            md.push_str(&format!(
                "| {} | {} | {:.0} | {kib:.1} | {target} | {:.1} | {:.2} | {:.1} s | {:.1}% | {:.0} KiB | {n} |\n",
                parts[0].trim(), parts[1], get(7), get(1), get(2) / count, get(3), get(4), get(5)
            ));
            out.push(json!({ "count": count, "system": parts[1], "kib_per_session": kib, "anon_kib_per_session": get(1), "fds_per_session": get(2) / count, "open_seconds": get(3), "idle_cpu_percent": get(4), "rss_left_after_close_kib": get(5), "studio_kib_per_session": get(6), "runs": n }));
        }
        md.push('\n');
        summary.insert("idle".into(), Value::Array(out));
    }
    (Value::Object(summary), md)
}
