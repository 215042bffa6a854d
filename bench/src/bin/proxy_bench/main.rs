//! Data-plane benchmark driver: starts a whole platform on 127.0.0.1 from
//! the release binaries (connect-control, connect-client Studios,
//! connect-proxy on io_uring and on epoll, OpenSSH sshd as a ProxyJump
//! peer) and measures, in alternating rounds:
//!
//! 1. bulk throughput with OpenSSH's `ssh -c CIPHER` through the proxy
//!    (download: `head -c BYTES /dev/zero`; upload: `head -c BYTES >/dev/null`
//!    fed from /dev/zero), and the proxy's CPU seconds per GiB;
//! 2. new connections per second and the proxy's CPU per connection
//!    (`connect-loadtest connect`: handshake, auth, upstream, `exec true`,
//!    close);
//! 3. keystroke round trips through a pty running `cat`
//!    (`connect-loadtest interactive`), and the proxy's CPU per keystroke;
//! 4. memory per idle proxied session (`connect-loadtest idle`), at each
//!    `--idle` count, split over several proxy processes of at most
//!    `--idle-per-proxy` sessions each (the fd limit), one load generator
//!    per proxy process, all holding their sessions at once.
//!
//! CPU is read from `/proc/<pid>/stat` (utime + stime) of the process under
//! test; sshd's per-connection processes are counted through the master's
//! reaped-children times (or, while they live, by walking its process
//! tree). Everything is written to `--out` (JSON) and a markdown summary
//! next to it; each load-generator run leaves its JSON report and output in
//! the work directory. Run it through `bench/proxy-bench.sh`, which builds
//! and snapshots the binaries first.

mod args;
mod connrate;
mod idle;
mod interactive;
mod loadtest;
mod platform;
mod process;
mod report;
mod throughput;

use std::fs::File;
use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use bench::procfs;
use clap::Parser;
use serde_json::{Value, json};

use crate::args::Args;
use crate::platform::Bench;
use crate::process::complaints;
use crate::report::{meta, pointer_f64, summarize};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The systems compared, in this round's order: the backends alternate
/// which goes first, and OpenSSH moves through the positions.
fn order(round: u32, io: &[String], openssh: bool) -> Vec<Option<String>> {
    let mut v: Vec<Option<String>> = io.iter().cloned().map(Some).collect();
    if !v.is_empty() {
        let k = (round as usize) % v.len();
        v.rotate_left(k);
    }
    if openssh {
        let pos = (round as usize) % (v.len() + 1);
        v.insert(pos, None);
    }
    v
}

fn system_name(io: &Option<String>, backend: Option<&str>) -> String {
    match io {
        Some(_) => format!("connect-proxy/{}", backend.unwrap_or("?")),
        None => "openssh-jump".into(),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.resummarize {
        let mut r: Value = serde_json::from_str(&std::fs::read_to_string(&args.out)?)?;
        let (summary, md) = summarize(&r);
        r["summary"] = summary;
        std::fs::write(&args.out, serde_json::to_string_pretty(&r)?)?;
        std::fs::write(args.out.with_extension("md"), &md)?;
        println!("{md}");
        return Ok(());
    }
    let mut bench = Bench::start(args.clone())?;
    let mut results = json!({
        "meta": meta(&args, &bench.bin),
        "throughput": [],
        "connrate": [],
        "interactive": [],
        "idle": [],
    });
    let openssh = bench.sshd.is_some();
    results["meta"]["openssh_peer"] = json!(openssh);
    results["meta"]["studios"] = json!(
        bench
            .platform
            .studios
            .iter()
            .map(|s| json!({"session": s.session, "addr": s.addr, "pid": s.process.pid()}))
            .collect::<Vec<_>>()
    );
    let wants = |s: &str| args.only.iter().any(|o| o == s);
    let save = |results: &Value, bench: &Bench| -> Result<()> {
        let mut r = results.clone();
        r["incidents"] = json!(bench.incidents);
        let (summary, md) = summarize(&r);
        r["summary"] = summary;
        if let Some(d) = args.out.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&args.out, serde_json::to_string_pretty(&r)?)?;
        let mut f = File::create(args.out.with_extension("md"))?;
        f.write_all(md.as_bytes())?;
        Ok(())
    };

    // Which backends start at all (io_uring may be forbidden here).
    let mut usable = Vec::new();
    for io in &args.io {
        match bench.start_proxies(io, 1) {
            Ok(p) => {
                eprintln!("CONNECT_IO={io}: backend {}", p[0].backend);
                results["meta"]["backends"][io] = json!(p[0].backend);
                bench.stop_proxies(p, "probe");
                usable.push(io.clone());
            }
            Err(e) => {
                bench.incident("backend", format!("CONNECT_IO={io} does not start: {e:#}"));
                results["meta"]["backends"][io] = json!(format!("unavailable: {e:#}"));
            }
        }
    }

    if wants("throughput") || wants("connrate") || wants("interactive") {
        for round in 0..args.rounds {
            for sys in order(round, &usable, openssh) {
                let proxies = match &sys {
                    Some(io) => Some(bench.start_proxies(io, 1)?),
                    None => None,
                };
                let proxy = proxies.as_ref().map(|p| &p[0]);
                let name = system_name(&sys, proxy.map(|p| p.backend.as_str()));
                if wants("throughput") {
                    for cipher in &args.ciphers {
                        for dir in &args.directions {
                            eprintln!("round {round}: {name} {cipher} {dir}");
                            match bench.transfer(proxy, cipher, dir) {
                                Ok(mut v) => {
                                    v["round"] = json!(round);
                                    v["system"] = json!(name);
                                    eprintln!(
                                        "   {:.0} MiB/s, {:.2} CPU-s/GiB",
                                        v["mib_per_s"].as_f64().unwrap_or(0.0),
                                        v["proxy_cpu_s_per_gib"].as_f64().unwrap_or(0.0)
                                    );
                                    results["throughput"]
                                        .as_array_mut()
                                        .context("array")?
                                        .push(v);
                                }
                                Err(e) => bench.incident(
                                    "throughput",
                                    format!("{name} {cipher} {dir}: {e:#}"),
                                ),
                            }
                        }
                    }
                }
                if wants("connrate") {
                    for kex in &args.conn_kex {
                        if sys.is_none() && kex.starts_with("mlkem") {
                            // OpenSSH < 9.9 has no ML-KEM: not comparable.
                            let q = Command::new("ssh").args(["-Q", "kex"]).output()?;
                            if !String::from_utf8_lossy(&q.stdout).contains(kex.as_str()) {
                                continue;
                            }
                        }
                        eprintln!("round {round}: {name} connections, kex {kex}");
                        match bench.conn_rate(proxy, kex) {
                            Ok(mut v) => {
                                v["round"] = json!(round);
                                v["system"] = json!(name);
                                eprintln!(
                                    "   {:.0} conn/s, proxy {:.0} µs/conn",
                                    v["conn_per_s"].as_f64().unwrap_or(0.0),
                                    v.pointer("/cpu/proxy/us_per_conn")
                                        .and_then(Value::as_f64)
                                        .unwrap_or(0.0)
                                );
                                results["connrate"].as_array_mut().context("array")?.push(v);
                            }
                            Err(e) => bench.incident("connrate", format!("{name} {kex}: {e:#}")),
                        }
                    }
                }
                if wants("interactive") {
                    eprintln!("round {round}: {name} keystrokes");
                    match bench.interactive(proxy) {
                        Ok(mut v) => {
                            v["round"] = json!(round);
                            v["system"] = json!(name);
                            eprintln!(
                                "   p50 {:.2} ms, p99 {:.2} ms, {:.3} CPU-s per 1,000 keystrokes",
                                pointer_f64(&v, "/keystroke_ms/p50").unwrap_or(f64::NAN),
                                pointer_f64(&v, "/keystroke_ms/p99").unwrap_or(f64::NAN),
                                pointer_f64(&v, "/proxy_cpu_s_per_1000_keystrokes")
                                    .unwrap_or(f64::NAN)
                            );
                            results["interactive"]
                                .as_array_mut()
                                .context("array")?
                                .push(v);
                        }
                        Err(e) => bench.incident("interactive", format!("{name}: {e:#}")),
                    }
                }
                if let Some(p) = proxies {
                    let alive = procfs::alive(p[0].process.pid());
                    if !alive {
                        bench.incident("proxy", format!("{name} died during the round"));
                    }
                    bench.stop_proxies(p, "rounds");
                }
                save(&results, &bench)?;
            }
        }
    }

    if wants("idle") {
        for round in 0..args.idle_rounds {
            for &count in &args.idle {
                for variant in &args.idle_variants {
                    for sys in order(round, &usable, false) {
                        let io = sys.clone().context("io")?;
                        eprintln!("round {round}: idle {count} on CONNECT_IO={io} ({variant})");
                        match bench.idle(&io, count, variant) {
                            Ok(mut v) => {
                                v["round"] = json!(round);
                                let backend = v["backend"].as_str().map(str::to_owned);
                                let mut name = system_name(&sys, backend.as_deref());
                                if variant != "default" {
                                    name = format!("{name} {variant}");
                                }
                                v["variant"] = json!(variant);
                                v["system"] = json!(name);
                                eprintln!(
                                    "   {} open, {:.1} KiB/session",
                                    v["open"],
                                    v.pointer("/proxy/kib_per_session")
                                        .and_then(Value::as_f64)
                                        .unwrap_or(0.0)
                                );
                                results["idle"].as_array_mut().context("array")?.push(v);
                            }
                            Err(e) => bench
                                .incident("idle", format!("{count} on {io} ({variant}): {e:#}")),
                        }
                        save(&results, &bench)?;
                    }
                }
            }
        }
    }

    // Whatever the Studios and control plane complained about.
    let mut studio_complaints = Vec::new();
    for s in &bench.platform.studios {
        if !procfs::alive(s.process.pid()) {
            studio_complaints.push(format!("{} died", s.process.name()));
        }
        studio_complaints.extend(complaints(&s.process).into_iter().take(5));
    }
    for c in studio_complaints {
        bench.incident("studio", c);
    }
    if let Some((mut sshd, _)) = bench.sshd.take() {
        sshd.stop(Duration::from_secs(10));
    }
    results["meta"]["loadavg_at_end"] = json!(
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    save(&results, &bench)?;
    let (_, md) = summarize(&{
        let mut r = results.clone();
        r["incidents"] = json!(bench.incidents);
        r
    });
    println!("{md}");
    if !bench.incidents.is_empty() {
        println!("incidents: {}", bench.incidents.len());
        for i in &bench.incidents {
            println!(
                "- {}: {}",
                i["what"].as_str().unwrap_or(""),
                i["detail"].as_str().unwrap_or("")
            );
        }
    }
    println!("results: {} (and .md)", args.out.display());
    Ok(())
}
