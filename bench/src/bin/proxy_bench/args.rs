//! The command line.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
pub struct Args {
    /// Where connect-proxy, connect-client, connect-control and
    /// connect-loadtest are (default: next to this program).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    #[arg(long, default_value = "bench/results/latest.json")]
    pub out: PathBuf,
    /// Scratch directory (keys, logs, databases); a temporary one by default.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Rounds of the idle-session measurement (slow at 10,000).
    #[arg(long, default_value_t = 2)]
    pub idle_rounds: u32,
    /// Sections to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,connrate,interactive,idle"
    )]
    pub only: Vec<String>,
    /// `CONNECT_IO` values compared.
    #[arg(long, value_delimiter = ',', default_value = "uring,epoll")]
    pub io: Vec<String>,
    /// Data-plane threads of each proxy.
    #[arg(long, default_value_t = 2)]
    pub cores: usize,
    /// connect-proxy's `CONNECT_LOG_LEVEL` (its default is info).
    #[arg(long, default_value = "info")]
    pub proxy_log_level: String,
    #[arg(long, default_value_t = 1 << 30)]
    pub bytes: u64,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"
    )]
    pub ciphers: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "down,up")]
    pub directions: Vec<String>,
    #[arg(long, default_value_t = 1500)]
    pub conn_count: u64,
    #[arg(long, default_value_t = 8)]
    pub conn_concurrency: u64,
    /// User-leg key exchanges for the connection benchmark.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "curve25519-sha256,mlkem768x25519-sha256"
    )]
    pub conn_kex: Vec<String>,
    #[arg(long, default_value = "true")]
    pub conn_command: String,
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub idle: Vec<usize>,
    #[arg(long, default_value_t = 5000)]
    pub idle_per_proxy: usize,
    #[arg(long, default_value_t = 2000)]
    pub idle_per_studio: usize,
    /// What each idle session holds (connect-loadtest's `--request`):
    /// `channel` (a session channel with no request on it, the figure
    /// published so far), `connection` (an authenticated connection only),
    /// `shell`, `exec:COMMAND`.
    #[arg(long, default_value = "channel")]
    pub idle_request: String,
    #[arg(long, default_value_t = 64)]
    pub idle_concurrency: usize,
    #[arg(long, default_value_t = 10)]
    pub idle_hold: u64,
    /// Proxy environments the idle measurement is repeated with:
    /// `default`, or `VAR=VALUE[+VAR=VALUE]` (e.g. `MIMALLOC_ALLOW_THP=0`:
    /// no transparent huge pages in mimalloc's arenas).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "default,MIMALLOC_ALLOW_THP=0"
    )]
    pub idle_variants: Vec<String>,
    /// Interactive sessions typing at once.
    #[arg(long, default_value_t = 16)]
    pub interactive_concurrency: usize,
    /// Pause between keystrokes (connect-loadtest's `--think`).
    #[arg(long, default_value = "20ms")]
    pub interactive_think: String,
    /// Seconds each interactive run lasts; its proxy CPU is read from
    /// second 3 to one second before the end (all sessions up).
    #[arg(long, default_value_t = 10)]
    pub interactive_duration: u64,
    #[arg(long, default_value = "cat")]
    pub interactive_command: String,
    /// Spread client connections over this many 127.0.0.x addresses.
    #[arg(long, default_value_t = 1)]
    pub sources: u32,
    /// The OpenSSH peer (sshd as a ProxyJump host); off with --no-openssh.
    #[arg(long, default_value = "/usr/sbin/sshd")]
    pub sshd: PathBuf,
    #[arg(long)]
    pub no_openssh: bool,
    /// Upper bound on any single step (one transfer, one helper run).
    #[arg(long, default_value_t = 900)]
    pub step_timeout: u64,
    /// Only rewrite the summary (JSON `summary` and the .md) of an
    /// existing `--out` file, without measuring.
    #[arg(long)]
    pub resummarize: bool,
}
