//! Running connect-loadtest, the load generator of the connection,
//! interactive and idle sections, and reading its reports.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use testkit::platform::Proxy;

use crate::platform::{Bench, USER};
use crate::process::tail;

impl Bench {
    /// A connect-loadtest command for `scenario`; its JSON report goes to
    /// the returned path, a new file in the work directory.
    pub fn loadtest(&mut self, scenario: &str) -> (Command, PathBuf) {
        self.loadtest_runs += 1;
        let json = self.platform.dir().join(format!(
            "loadtest-{:03}-{scenario}.json",
            self.loadtest_runs
        ));
        let mut cmd = Command::new(self.bin.join("connect-loadtest"));
        // Failed operations are read from the report, not the exit status.
        cmd.arg(scenario)
            .args(["--progress", "off", "--max-error-ratio", "1"])
            .args(["--sources", &self.args.sources.to_string()])
            .arg("--json")
            .arg(&json);
        (cmd, json)
    }

    /// Points a connect-loadtest command at `proxy`, as `bench@SESSION`
    /// for the first `studios` Studios (round-robin); or, with no proxy,
    /// through sshd as a jump host to the first Studio (the user key on
    /// sshd, the proxy's key on the Studio, as `ssh -J` would). Returns the
    /// pid of the process under test.
    pub fn aim(&self, cmd: &mut Command, proxy: Option<&Proxy>, studios: usize) -> Result<u32> {
        match proxy {
            Some(p) => {
                cmd.args(["--target", &format!("127.0.0.1:{}", p.port)]);
                for s in &self.platform.studios[..studios.clamp(1, self.platform.studios.len())] {
                    cmd.args(["--login", &format!("{USER}@{}", s.session)]);
                }
                cmd.arg("--key").arg(&self.user_key.private);
                Ok(p.process.pid())
            }
            None => {
                let (sshd, port) = self.sshd.as_ref().context("sshd")?;
                cmd.args(["--jump", &format!("{}@127.0.0.1:{port}", self.login)])
                    .arg("--jump-key")
                    .arg(&self.user_key.private)
                    .args(["--target", &self.platform.studios[0].addr, "--login", USER])
                    .arg("--key")
                    .arg(&self.platform.proxy_key.private);
                Ok(sshd.pid())
            }
        }
    }

    /// The report of a finished connect-loadtest run (its output is kept
    /// next to it). No report is an error; failed operations and a
    /// non-zero exit are incidents of `section`.
    pub fn loadtest_report(
        &mut self,
        section: &str,
        json: &Path,
        (code, out, err): (i32, String, String),
    ) -> Result<Value> {
        std::fs::write(json.with_extension("log"), format!("{out}\n{err}"))?;
        let Ok(text) = std::fs::read_to_string(json) else {
            bail!(
                "connect-loadtest exited {code} without a report: {}",
                tail(&err, 10)
            );
        };
        let report: Value =
            serde_json::from_str(&text).with_context(|| json.display().to_string())?;
        if code != 0 {
            self.incident(
                section,
                format!("connect-loadtest exited {code}: {}", tail(&err, 5)),
            );
        }
        if report["errors"].as_object().is_some_and(|e| !e.is_empty()) {
            let detail = format!(
                "{}: {}; first of each kind: {}",
                json.display(),
                report["errors"],
                report["meta"]["error_examples"]
            );
            self.incident(section, detail);
        }
        Ok(report)
    }
}
