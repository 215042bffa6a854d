//! Section 4: memory, descriptors and CPU per idle proxied session.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bench::procfs;
use serde_json::{Value, json};

use testkit::platform::Proxy;

use crate::platform::Bench;
use crate::process::Running;

impl Bench {
    pub fn idle(&mut self, io: &str, count: usize, variant: &str) -> Result<Value> {
        let nproxies = count.div_ceil(self.args.idle_per_proxy.max(1)).max(1);
        let nstudios = count
            .div_ceil(self.args.idle_per_studio.max(1))
            .max(1)
            .min(self.platform.studios.len());
        let proxies = self.start_proxies_with(io, nproxies, variant)?;
        let backend = proxies[0].backend.clone();
        let result = self.idle_on(&proxies, count, nstudios);
        let alive: Vec<bool> = proxies
            .iter()
            .map(|p| procfs::alive(p.process.pid()))
            .collect();
        self.stop_proxies(proxies, "idle");
        let mut v = result?;
        v["proxies"] = json!(nproxies);
        v["studios"] = json!(nstudios);
        v["backend"] = json!(backend);
        v["proxies_alive_at_end"] = json!(alive);
        if v["failed"].as_u64().unwrap_or(0) > 0 {
            let detail = format!("idle {count}: {} failed: {}", v["failed"], v["errors"]);
            self.incident("idle", detail);
        }
        Ok(v)
    }

    /// `count` idle sessions over `proxies`: one connect-loadtest per proxy
    /// process (a load generator has one target), all started together so
    /// every session is held at once, each spreading its sessions over the
    /// first `studios` Studios. The load generators measure RSS and fds per
    /// session; this samples the rest from `/proc` while they run.
    fn idle_on(&mut self, proxies: &[Proxy], count: usize, studios: usize) -> Result<Value> {
        let settle = Duration::from_secs(3);
        let limit = Duration::from_secs(self.args.step_timeout);
        let request = self.args.idle_request.clone();
        let pids: Vec<u32> = proxies.iter().map(|p| p.process.pid()).collect();
        let studio_pids: Vec<u32> = self.platform.studios[..studios]
            .iter()
            .map(|s| s.process.pid())
            .collect();

        // Warm-up: a few sessions per proxy opened and closed, so one-off
        // allocations are not counted.
        for p in proxies {
            let (mut cmd, json) = self.loadtest("idle");
            self.aim(&mut cmd, Some(p), studios)?;
            cmd.args(["--sessions", "4", "-c", "4", "--hold", "0s"])
                .args(["--request", &request, "--duration", "120s"]);
            let run = Running::spawn(cmd, "connect-loadtest idle (warm-up)")?
                .finish(Instant::now() + Duration::from_secs(180))?;
            let warm = self.loadtest_report("idle", &json, run)?;
            if warm["ops"]["session"]["ok"].as_u64().unwrap_or(0) == 0 {
                bail!(
                    "every warm-up session failed: {}",
                    warm["meta"]["error_examples"]
                );
            }
        }
        std::thread::sleep(settle);

        let started = Instant::now();
        let base = IdleSample::take(started, &pids, &studio_pids);
        let concurrency = self.args.idle_concurrency.div_ceil(proxies.len()).max(1);
        let mut runs = Vec::new();
        for (i, p) in proxies.iter().enumerate() {
            let n = count / proxies.len() + usize::from(i < count % proxies.len());
            let (mut cmd, json) = self.loadtest("idle");
            self.aim(&mut cmd, Some(p), studios)?;
            cmd.args(["--sessions", &n.to_string(), "-c", &concurrency.to_string()])
                .args(["--hold", &format!("{}s", self.args.idle_hold)])
                .args(["--request", &request])
                .args(["--duration", &format!("{}s", limit.as_secs())])
                .args(["--watch", &format!("proxy={}", p.process.pid())]);
            runs.push((Running::spawn(cmd, "connect-loadtest idle")?, json));
        }
        let deadline = started + limit + Duration::from_secs(60);
        let mut samples = Vec::new();
        while runs.iter_mut().any(|(r, _)| !r.exited()) && Instant::now() < deadline {
            samples.push(IdleSample::take(started, &pids, &studio_pids));
            std::thread::sleep(Duration::from_millis(250));
        }
        let mut reports = Vec::new();
        for (run, json) in runs {
            let finished = run.finish(deadline)?;
            reports.push((self.loadtest_report("idle", &json, finished)?, json));
        }
        std::thread::sleep(settle);
        let after = IdleSample::take(started, &pids, &studio_pids);

        // What the load generators measured (before their first login, and
        // once all their sessions were open).
        let costs: Vec<&Value> = reports
            .iter()
            .map(|(r, _)| &r["meta"]["idle_cost"][0])
            .collect();
        let total = |field: &str| -> i64 { costs.iter().filter_map(|c| c[field].as_i64()).sum() };
        let held = total("sessions_held");
        let rss_delta = total("rss_kib_held") - total("rss_kib_before");
        let fds_delta = total("fds_held") - total("fds_before");
        let failed: u64 = reports
            .iter()
            .map(|(r, _)| r["ops"]["session"]["errors"].as_u64().unwrap_or(0))
            .sum();
        let per = |x: f64| if held > 0 { x / held as f64 } else { f64::NAN };

        // The moment all sessions were held: the middle of the run of
        // samples with the most proxy descriptors open.
        let fds_at = |s: &IdleSample| s.proxies.iter().map(|p| p.fds).sum::<usize>();
        let max_fds = samples.iter().map(fds_at).max().unwrap_or(0);
        let tolerance = 2 * pids.len();
        let full: Vec<&IdleSample> = samples
            .iter()
            .filter(|s| fds_at(s) + tolerance >= max_fds)
            .collect();
        let up = full.get(full.len() / 2).copied().unwrap_or(&base);
        let open_seconds = full.first().map_or(f64::NAN, |s| s.t);
        let anon_delta = up.anon_kib() as i64 - base.anon_kib() as i64;
        let studio_delta = up.studio_rss_kib as i64 - base.studio_rss_kib as i64;

        // Idle CPU of each proxy over its own plateau (its descriptors at
        // their peak), from one second in, summed over the proxies.
        let mut idle_cpu_s = 0.0;
        let mut idle_cpu_percent = 0.0;
        for j in 0..pids.len() {
            let peak = samples.iter().map(|s| s.proxies[j].fds).max().unwrap_or(0);
            let plateau: Vec<&IdleSample> = samples
                .iter()
                .filter(|s| s.proxies[j].fds + 2 >= peak)
                .collect();
            let (Some(first), Some(last)) = (plateau.first(), plateau.last()) else {
                idle_cpu_percent = f64::NAN;
                continue;
            };
            let start = plateau
                .iter()
                .find(|s| s.t >= first.t + 1.0)
                .unwrap_or(first);
            let seconds = last.t - start.t;
            let cpu = last.proxies[j].cpu_s - start.proxies[j].cpu_s;
            idle_cpu_s += cpu;
            idle_cpu_percent += if seconds > 0.5 {
                cpu * 100.0 / seconds
            } else {
                f64::NAN
            };
        }

        Ok(json!({
            "count": count,
            "open": held,
            "failed": failed,
            "errors": reports.iter().map(|(r, _)| r["errors"].clone()).collect::<Vec<_>>(),
            "request": request,
            "open_seconds": open_seconds,
            "proxy": {
                "base": base.proxies_json(),
                "up": up.proxies_json(),
                "after_close": after.proxies_json(),
                "idle_cost": costs,
                "rss_delta_kib": rss_delta,
                "kib_per_session": per(rss_delta as f64),
                "anon_kib_per_session": per(anon_delta as f64),
                "fds_delta": fds_delta,
                "rss_after_close_minus_base_kib": after.rss_kib() as i64 - base.rss_kib() as i64,
                "fds_after_close_minus_base": fds_at(&after) as i64 - fds_at(&base) as i64,
                "idle_cpu_s": idle_cpu_s,
                "idle_cpu_percent": idle_cpu_percent,
            },
            "studio": {
                "base_rss_kib": base.studio_rss_kib,
                "up_rss_kib": up.studio_rss_kib,
                "kib_per_session": per(studio_delta as f64),
            },
            "samples": samples.len(),
            "reports": reports.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        }))
    }
}

/// One reading of an idle run's proxies and Studios.
struct IdleSample {
    /// Seconds since the load generators started.
    t: f64,
    proxies: Vec<ProcSample>,
    studio_rss_kib: u64,
}

struct ProcSample {
    cpu_s: f64,
    mem: procfs::Mem,
    fds: usize,
}

impl IdleSample {
    fn take(started: Instant, proxies: &[u32], studios: &[u32]) -> Self {
        Self {
            t: started.elapsed().as_secs_f64(),
            proxies: proxies
                .iter()
                .map(|&pid| ProcSample {
                    cpu_s: procfs::cpu(pid).map(|c| c.own()).unwrap_or(0.0),
                    mem: procfs::mem(pid).unwrap_or_default(),
                    fds: procfs::fds(pid),
                })
                .collect(),
            studio_rss_kib: studios
                .iter()
                .map(|&pid| procfs::mem(pid).map(|m| m.rss_kib).unwrap_or(0))
                .sum(),
        }
    }

    fn rss_kib(&self) -> u64 {
        self.proxies.iter().map(|p| p.mem.rss_kib).sum()
    }

    fn anon_kib(&self) -> u64 {
        self.proxies.iter().map(|p| p.mem.rss_anon_kib).sum()
    }

    fn proxies_json(&self) -> Value {
        json!(
            self.proxies
                .iter()
                .map(|p| json!({
                    "rss_kib": p.mem.rss_kib,
                    "rss_anon_kib": p.mem.rss_anon_kib,
                    "fds": p.fds,
                    "cpu_s": p.cpu_s,
                }))
                .collect::<Vec<_>>()
        )
    }
}
