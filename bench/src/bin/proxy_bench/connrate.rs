//! Section 2: new connections per second and the CPU per connection.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bench::procfs;
use serde_json::{Value, json};

use testkit::platform::Proxy;

use crate::platform::Bench;
use crate::process::Running;

impl Bench {
    pub fn conn_rate(&mut self, proxy: Option<&Proxy>, kex: &str) -> Result<Value> {
        let limit = Duration::from_secs(self.args.step_timeout);
        let concurrency = self.args.conn_concurrency.to_string();
        // Warm-up, not measured: the first connections pay for one-off
        // set-up in every process.
        let (mut warm, warm_json) = self.loadtest("connect");
        self.aim(&mut warm, proxy, 1)?;
        warm.args(["-n", "20", "-c", &concurrency, "--duration", "120s"])
            .args(["--command", &self.args.conn_command, "--kex", kex]);
        let run = Running::spawn(warm, "connect-loadtest connect (warm-up)")?
            .finish(Instant::now() + Duration::from_secs(180))?;
        let warm = self.loadtest_report("connrate", &warm_json, run)?;
        if warm["ops"]["login"]["ok"].as_u64().unwrap_or(0) == 0 {
            bail!("every warm-up connection failed: {}", warm["errors"]);
        }
        std::thread::sleep(Duration::from_millis(300));

        let (mut cmd, json) = self.loadtest("connect");
        let pid = self.aim(&mut cmd, proxy, 1)?;
        let name = if proxy.is_some() { "proxy" } else { "sshd" };
        procfs::wait_children_reaped(pid, Duration::from_secs(5));
        let count = self.args.conn_count;
        cmd.args(["-n", &count.to_string(), "-c", &concurrency])
            .args(["--command", &self.args.conn_command, "--kex", kex])
            .args(["--duration", &format!("{}s", limit.as_secs())])
            .args(["--watch", &format!("{name}={pid}")])
            .args([
                "--watch",
                &format!("studio={}", self.platform.studios[0].process.pid()),
            ]);
        let run = Running::spawn(cmd, "connect-loadtest connect")?
            .finish(Instant::now() + limit + Duration::from_secs(60))?;
        let report = self.loadtest_report("connrate", &json, run)?;
        // A connection is whole when its command's exit status came back.
        let op = if self.args.conn_command.is_empty() {
            "login"
        } else {
            "exec"
        };
        let ok = report["ops"][op]["ok"].as_u64().unwrap_or(0);
        let seconds = report["elapsed_s"].as_f64().unwrap_or(f64::NAN);
        if ok < count {
            let detail = format!("connect-loadtest: {ok} of {count} connections completed");
            self.incident("connrate", detail);
        }
        let watched = |i: usize| {
            let w = &report["meta"]["watch_cpu"][i];
            json!({ "pid": w["pid"], "total_s": w["cpu_s"], "us_per_conn": w["cpu_us_per_login"] })
        };
        Ok(json!({
            "mode": if proxy.is_some() { "proxy" } else { "jump" },
            "kex": kex,
            "command": self.args.conn_command,
            "concurrency": self.args.conn_concurrency,
            "count": count,
            "ok": ok,
            "failed": count.saturating_sub(ok),
            "errors": report["errors"],
            "seconds": seconds,
            "conn_per_s": ok as f64 / seconds,
            "latency_ms": {
                "login": report["ops"]["login"]["latency_ms"],
                "exec": report["ops"]["exec"]["latency_ms"],
            },
            "cpu": { "proxy": watched(0), "studio": watched(1) },
            "report": json,
        }))
    }
}
