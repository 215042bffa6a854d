//! Section 1: bulk throughput with OpenSSH's `ssh -c CIPHER` through the
//! proxy (or through sshd as a jump host), and the CPU it costs.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::procfs;
use serde_json::{Value, json};

use testkit::platform::Proxy;

use crate::platform::{Bench, USER};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

impl Bench {
    fn ssh_base(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-T"])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            // Every proxy's port is pinned there by the platform.
            .args(["-o", "StrictHostKeyChecking=yes", "-o"])
            .arg(format!(
                "UserKnownHostsFile={}",
                self.platform.known_hosts.display()
            ))
            .args(["-o", "LogLevel=ERROR", "-i"])
            .arg(&self.user_key.private);
        cmd
    }

    /// One transfer; `proxy` is None for the OpenSSH jump host.
    pub fn transfer(
        &mut self,
        proxy: Option<&Proxy>,
        cipher: &str,
        direction: &str,
    ) -> Result<Value> {
        let bytes = self.args.bytes;
        // Upload: exactly BYTES then EOF from a local `head`, counted by a
        // remote `wc -c`, so the Studio's count checks the transfer. (A
        // command exiting while the user still sends used to hang the
        // proxy; fixed in 1cfa958, see docs/benchmarks.md.)
        let remote = match direction {
            "down" => format!("head -c {bytes} /dev/zero"),
            "up" => "wc -c".to_owned(),
            other => bail!("direction {other}"),
        };
        let mut cmd = match proxy {
            Some(p) => {
                let mut c = self.ssh_base();
                c.args(["-c", cipher, "-p", &p.port.to_string()])
                    .arg(format!(
                        "{USER}@{}@127.0.0.1",
                        self.platform.studios[0].session
                    ))
                    .arg(&remote);
                c
            }
            None => {
                let mut c = Command::new("ssh");
                c.arg("-F")
                    .arg(self.ssh_config_path(cipher))
                    .arg("-T")
                    .arg("studio")
                    .arg(&remote);
                c
            }
        };
        let mut feeder = None;
        if direction == "up" {
            let mut head = Command::new("head")
                .args(["-c", &bytes.to_string(), "/dev/zero"])
                .stdout(Stdio::piped())
                .spawn()
                .context("head")?;
            cmd.stdin(head.stdout.take().context("head stdout")?);
            cmd.stdout(Stdio::piped());
            feeder = Some(head);
        } else {
            cmd.stdin(Stdio::null());
            cmd.stdout(File::create("/dev/null")?);
        }
        cmd.stderr(Stdio::piped());
        let (pid, children_measured) = match proxy {
            Some(p) => (p.process.pid(), false),
            None => (self.sshd.as_ref().context("sshd")?.0.pid(), true),
        };
        let studio_pid = self.platform.studios[0].process.pid();
        let relayed_label = if direction == "down" {
            "direction=\"down\""
        } else {
            "direction=\"up\""
        };
        let relayed0 = proxy.map(|p| relayed(p, relayed_label));
        let cpu0 = procfs::cpu(pid)?;
        let studio0 = procfs::cpu(studio_pid)?;
        let client0 = procfs::self_children_cpu();
        let started = Instant::now();
        let mut child = cmd.spawn().context("ssh")?;
        drop(cmd); // our copy of head's pipe: ssh must see EOF
        let mut stderr = child.stderr.take().context("stderr")?;
        let err_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        let out_t = child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut out, &mut s);
                s
            })
        });
        let limit = Duration::from_secs(self.args.step_timeout);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                if let Some(mut h) = feeder {
                    let _ = h.kill();
                    let _ = h.wait();
                }
                bail!("transfer killed after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let seconds = started.elapsed().as_secs_f64();
        if let Some(mut h) = feeder {
            let _ = h.wait();
        }
        let stderr = err_t.join().unwrap_or_default();
        let counted = out_t.map(|t| t.join().unwrap_or_default());
        std::thread::sleep(Duration::from_millis(300));
        if children_measured {
            procfs::wait_children_reaped(pid, Duration::from_secs(10));
        }
        let cpu = procfs::cpu(pid)?.minus(&cpu0);
        let studio = procfs::cpu(studio_pid)?.minus(&studio0);
        let client = procfs::self_children_cpu() - client0;
        let relayed = match (proxy, relayed0) {
            (Some(p), Some(r0)) => Some(relayed(p, relayed_label) - r0),
            _ => None,
        };
        if !status.success() {
            bail!("ssh exited {status}: {}", stderr.trim());
        }
        if let Some(c) = &counted
            && c.trim() != bytes.to_string()
        {
            bail!("the Studio counted {:?} bytes, not {bytes}", c.trim());
        }
        if let Some(r) = relayed
            && (r as u64) < bytes
        {
            bail!("the proxy relayed {r} bytes, fewer than {bytes}");
        }
        let gib = bytes as f64 / GIB;
        let proxy_cpu = if children_measured {
            cpu.with_children()
        } else {
            cpu.own()
        };
        Ok(json!({
            "cipher": cipher,
            "direction": direction,
            "bytes": bytes,
            "seconds": seconds,
            "mib_per_s": bytes as f64 / 1048576.0 / seconds,
            "proxy_cpu_s": proxy_cpu,
            "proxy_user_s": cpu.user + if children_measured { cpu.children_user } else { 0.0 },
            "proxy_system_s": cpu.system + if children_measured { cpu.children_system } else { 0.0 },
            "proxy_cpu_s_per_gib": proxy_cpu / gib,
            "studio_cpu_s_per_gib": studio.with_children() / gib,
            "client_cpu_s_per_gib": client / gib,
            "relayed_bytes": relayed,
        }))
    }
}

/// Bytes `proxy` has relayed in the direction `label` names, over all its
/// channels.
fn relayed(proxy: &Proxy, label: &str) -> f64 {
    proxy
        .metrics()
        .lines()
        .filter(|l| l.starts_with("connect_proxy_channel_bytes_total") && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
