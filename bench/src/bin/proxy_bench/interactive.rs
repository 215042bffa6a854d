//! Section 3: keystroke round trips through a pty, and the CPU per
//! keystroke.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};

use testkit::platform::Proxy;

use crate::platform::Bench;
use crate::process::{Running, tree_cpu};

impl Bench {
    /// Keystroke round trips through a pty; the CPU of the process under
    /// test is read while every session is up and typing.
    pub fn interactive(&mut self, proxy: Option<&Proxy>) -> Result<Value> {
        let duration = self.args.interactive_duration.max(1);
        let (mut cmd, json) = self.loadtest("interactive");
        let pid = self.aim(&mut cmd, proxy, 1)?;
        let name = if proxy.is_some() { "proxy" } else { "sshd" };
        cmd.args(["-c", &self.args.interactive_concurrency.to_string()])
            .args(["--think", &self.args.interactive_think])
            .args(["--command", &self.args.interactive_command])
            .args(["--duration", &format!("{duration}s")])
            .args(["--watch", &format!("{name}={pid}")]);
        // From second 3 (the logins are done) to one second before the end
        // (none has stopped typing); the whole run if that is too short.
        let (from, to) = if duration >= 6 {
            (3, duration - 1)
        } else {
            (0, 0)
        };
        let started = Instant::now();
        let mut run = Running::spawn(cmd, "connect-loadtest interactive")?;
        let mut window = None;
        if to > from {
            let at = |s: u64| started + Duration::from_secs(s);
            std::thread::sleep(at(from).saturating_duration_since(Instant::now()));
            let cpu0 = tree_cpu(pid);
            std::thread::sleep(at(to).saturating_duration_since(Instant::now()));
            if !run.exited() {
                window = Some(tree_cpu(pid) - cpu0);
            }
        }
        let run = run.finish(started + Duration::from_secs(duration + 120))?;
        let report = self.loadtest_report("interactive", &json, run)?;
        let keystroke = &report["ops"]["keystroke"];
        let run_cpu = report["meta"]["watch_cpu"][0]["cpu_s"].as_f64();
        // Keystrokes in the window: the timeline's seconds [from, to).
        let (in_window, logins_in_window) = report["timeline"]
            .as_array()
            .map(|ticks| {
                ticks
                    .iter()
                    .filter(|t| {
                        let end = t["t"].as_f64().unwrap_or(0.0);
                        end - 1.0 >= from as f64 - 1e-9 && end <= to as f64 + 1e-9
                    })
                    .fold((0, 0), |(k, l), t| {
                        (
                            k + t["ops"]["keystroke"]["count"].as_u64().unwrap_or(0),
                            l + t["ops"]["login"]["count"].as_u64().unwrap_or(0),
                        )
                    })
            })
            .unwrap_or((0, 0));
        let (cpu_s, keystrokes) = match window {
            Some(cpu) => (Some(cpu), in_window),
            None => (run_cpu, keystroke["ok"].as_u64().unwrap_or(0)),
        };
        let per_1000 = match cpu_s {
            Some(cpu) if keystrokes > 0 => cpu * 1000.0 / keystrokes as f64,
            _ => f64::NAN,
        };
        Ok(json!({
            "concurrency": self.args.interactive_concurrency,
            "think": self.args.interactive_think,
            "command": self.args.interactive_command,
            "duration_s": duration,
            "keystrokes": keystroke["ok"],
            "keystrokes_per_s": keystroke["per_s"],
            "keystroke_ms": keystroke["latency_ms"],
            "errors": report["errors"],
            "cpu_window_s": [from, to],
            "cpu_window_keystrokes": keystrokes,
            "logins_in_window": logins_in_window,
            "proxy_cpu_s": cpu_s,
            "proxy_cpu_s_per_1000_keystrokes": per_1000,
            "proxy_cpu_s_whole_run": run_cpu,
            "report": json,
        }))
    }
}
