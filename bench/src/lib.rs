//! Shared pieces of the benchmark binaries: reading a process's CPU time,
//! memory and file descriptors from `/proc`, and a minimal russh client
//! (connect from a chosen source address, authenticate, run a command).
#![forbid(unsafe_code)]

pub mod procfs {
    //! `/proc/<pid>` readings. Times are in seconds (`USER_HZ` is 100 on
    //! every Linux this runs on; the granularity is 10 ms).

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
}

pub mod client {
    //! A minimal russh client for load generation.

    use std::borrow::Cow;
    use std::net::{IpAddr, SocketAddr};
    use std::sync::Arc;
    use std::time::Duration;

    use anyhow::{Context, Result, bail};
    use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
    use russh::{ChannelMsg, Disconnect, Preferred, client, kex};

    /// Accepts any host key: the benchmarks talk to processes they started
    /// on 127.0.0.1 (the OpenSSH runs pin the proxy key instead).
    #[derive(Debug, Clone, Copy)]
    pub struct AnyHostKey;

    impl client::Handler for AnyHostKey {
        type Error = russh::Error;

        async fn check_server_key(
            &mut self,
            _key: &PublicKeyOrCertificate,
        ) -> Result<bool, Self::Error> {
            Ok(true)
        }
    }

    /// A client configuration; `kex` restricts key exchange to one
    /// algorithm (by its SSH name), `None` keeps russh's order
    /// (mlkem768x25519-sha256 first, as OpenSSH 10 clients).
    pub fn config(kex_name: Option<&str>) -> Result<Arc<client::Config>> {
        let mut preferred = Preferred::default();
        if let Some(name) = kex_name {
            let chosen = kex::ALL_KEX_ALGORITHMS
                .iter()
                .find(|n| n.as_ref() == name)
                .copied()
                .copied()
                .with_context(|| format!("unknown kex {name}"))?;
            let mut list = vec![chosen];
            // Keep the extension pseudo-algorithms (ext-info, strict kex).
            list.extend(
                Preferred::default()
                    .kex
                    .iter()
                    .filter(|n| {
                        n.as_ref().starts_with("ext-info") || n.as_ref().starts_with("kex-strict")
                    })
                    .copied(),
            );
            preferred.kex = Cow::Owned(list);
        }
        Ok(Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: None,
            nodelay: true,
            preferred,
            ..client::Config::default()
        }))
    }

    pub fn load_key(path: &std::path::Path) -> Result<Arc<PrivateKey>> {
        Ok(Arc::new(
            russh::keys::load_secret_key(path, None)
                .with_context(|| format!("loading {}", path.display()))?,
        ))
    }

    /// A TCP connection from `source` (an address on 127.0.0.0/8, port
    /// chosen by the kernel) to `addr`.
    pub async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> Result<tokio::net::TcpStream> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// An authenticated SSH connection over `stream`.
    pub async fn session<S>(
        config: Arc<client::Config>,
        stream: S,
        login: &str,
        key: Arc<PrivateKey>,
    ) -> Result<client::Handle<AnyHostKey>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut handle = client::connect_stream(config, stream, AnyHostKey)
            .await
            .context("handshake")?;
        let auth = handle
            .authenticate_publickey(login, PrivateKeyWithHashAlg::new(key, None))
            .await
            .context("authentication")?;
        if !auth.success() {
            bail!("authentication refused for {login}");
        }
        Ok(handle)
    }

    /// Runs `command` on a new session channel; returns its exit status
    /// once the channel is closed.
    pub async fn exec(handle: &client::Handle<AnyHostKey>, command: &str) -> Result<u32> {
        let mut channel = handle
            .channel_open_session()
            .await
            .context("open session")?;
        channel.exec(true, command).await.context("exec")?;
        let mut status = None;
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::Failure => bail!("exec refused"),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        status.context("no exit status")
    }

    /// Says goodbye and lets the connection's task end.
    pub async fn close(handle: client::Handle<AnyHostKey>) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            handle.disconnect(Disconnect::ByApplication, "", "en"),
        )
        .await;
        drop(handle);
    }

    /// `127.0.0.1`, `127.0.0.2`, ... : `n` source addresses to spread
    /// connections over when one address runs short of ports.
    pub fn sources(n: u32) -> Vec<Option<IpAddr>> {
        if n <= 1 {
            return vec![None];
        }
        (1..=n)
            .map(|i| {
                Some(IpAddr::from([
                    127,
                    0,
                    ((i >> 8) & 0xff) as u8,
                    (i & 0xff) as u8,
                ]))
            })
            .collect()
    }
}

/// Median of a list (mean of the middle two when even); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}
