//! `/proc/<pid>` readings of a process under test. Times are in seconds
//! (`USER_HZ` is 100 on every Linux this runs on; the granularity is 10 ms).

use std::path::Path;

const USER_HZ: f64 = 100.0;

/// CPU time of one process: its own threads, and its reaped children.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    pub user: f64,
    pub system: f64,
    pub children_user: f64,
    pub children_system: f64,
}

impl Cpu {
    /// The process's own CPU seconds (all threads).
    pub fn own(&self) -> f64 {
        self.user + self.system
    }

    /// Own plus reaped children (sshd's per-connection processes,
    /// connect-client's shells).
    pub fn with_children(&self) -> f64 {
        self.own() + self.children_user + self.children_system
    }

    pub fn minus(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
            children_user: self.children_user - earlier.children_user,
            children_system: self.children_system - earlier.children_system,
        }
    }
}

fn stat_fields(pid: u32) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| std::io::Error::other("malformed stat"))?;
    // fields[0] is field 3 (state).
    Ok(after.split_whitespace().map(str::to_owned).collect())
}

pub fn cpu(pid: u32) -> std::io::Result<Cpu> {
    let f = stat_fields(pid)?;
    let n = |i: usize| -> f64 { f.get(i - 3).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    Ok(Cpu {
        user: n(14) / USER_HZ,
        system: n(15) / USER_HZ,
        children_user: n(16) / USER_HZ,
        children_system: n(17) / USER_HZ,
    })
}

/// The calling process's reaped children (e.g. `ssh` clients run to
/// completion), in CPU seconds.
pub fn self_children_cpu() -> f64 {
    cpu(std::process::id())
        .map(|c| c.children_user + c.children_system)
        .unwrap_or(0.0)
}

/// Memory of one process, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mem {
    pub rss_kib: u64,
    pub rss_anon_kib: u64,
}

pub fn mem(pid: u32) -> std::io::Result<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Mem {
        rss_kib: field("VmRSS:"),
        rss_anon_kib: field("RssAnon:"),
    })
}

pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Live children of `pid` (zombies included until reaped).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(f) = stat_fields(child)
            && f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid)
        {
            out.push(child);
        }
    }
    out
}

/// Waits (up to `limit`) until `pid` has no children left, so that
/// their CPU time has been added to its `cutime`/`cstime`.
pub fn wait_children_reaped(pid: u32, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if children(pid).is_empty() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && stat_fields(pid)
            .map(|f| f.first().map(String::as_str) != Some("Z"))
            .unwrap_or(false)
}
