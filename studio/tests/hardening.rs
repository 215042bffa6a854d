//! connect-client hardening (issue 12), checked with the real OpenSSH
//! client through the real proxy wherever a user sees the result, and
//! against the Studio's own address where only a peer in the pod network
//! can (algorithms, pre-authentication limits).
//!
//! - ssh-audit rates connect-client as the proxy is rated (`dataplane/tests/audit.rs`);
//! - a silent connection is closed after the handshake timeout, and past
//!   the cap of unauthenticated connections the oldest goes while the
//!   proxy still gets in;
//! - `env` requests outside the allowlist never reach the process;
//! - the forwarded agent's socket is 0600 in a 0700 directory, gone when
//!   the channel closes, and absent when agent forwarding is off;
//! - refused forwards say why, with RFC 4254's reason;
//! - `sftp ls -l` shows the link count.

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::platform::Builder;
use testkit::{KeyPair, KeyType, Platform, Ssh, audit, run, run_ok};

const SESSION: &str = "5e551012";
/// How long to wait for something that should happen (not a measurement).
const PATIENCE: Duration = Duration::from_secs(30);

/// A platform with one Studio whose owner is alice; her `ssh` through the proxy.
fn alice(builder: Builder) -> (Platform, KeyPair, Ssh) {
    let mut p = builder.start();
    let key = p.user("alice");
    p.studio(SESSION, 1, "alice", &[], true);
    let ssh = p.ssh(&key, "alice", SESSION);
    (p, key, ssh)
}

/// `ssh` with the testkit's options but `LogLevel=INFO`, so the client
/// prints what a user sees when a channel is refused.
fn ssh_info(ssh: &Ssh, pre: &[&str]) -> Command {
    let mut c = Command::new("ssh");
    c.args(ssh.options().into_iter().map(|o| {
        if o == "LogLevel=ERROR" {
            "LogLevel=INFO".into()
        } else {
            o
        }
    }))
    .args(pre)
    .arg("-p")
    .arg(ssh.port.to_string())
    .arg(ssh.destination())
    .env_remove("SSH_AUTH_SOCK");
    c
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// --- algorithms ---------------------------------------------------------

/// The proxy's pass rule (`dataplane/tests/audit.rs`), applied to the
/// Studio's SSH server: nothing "fail", no CVE, and the only "warn" the
/// post-quantum note on the classic curve25519 exchanges. Fails without
/// `algorithms::preferred()`: russh's defaults offer finite-field DH
/// (group14..18, group-exchange) and encrypt-and-MAC hmac-sha2-256/512.
#[test]
fn ssh_audit_of_connect_client_passes_the_proxys_rule() {
    let (p, _key, ssh) = alice(Platform::builder());
    let studio_port: u16 = p.studios[0]
        .addr
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("studio port");
    let report = audit::ssh_audit(studio_port);

    let problems = audit::problems(&report);
    let kex: Vec<&str> = report["kex"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["algorithm"].as_str())
        .collect();
    assert_eq!(
        kex.first().copied(),
        Some("mlkem768x25519-sha256"),
        "post-quantum first: {kex:?}"
    );
    assert!(
        problems.is_empty(),
        "ssh-audit found problems:\n  {}\nfull report:\n{}",
        problems.join("\n  "),
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    // The proxy still negotiates with it: a command through the proxy.
    assert_eq!(run_ok(with_cmd(ssh.ssh(), "echo through")), "through\n");
}

fn with_cmd(mut cmd: Command, remote: &str) -> Command {
    cmd.arg(remote);
    cmd
}

// --- pre-authentication limits ------------------------------------------

/// A TCP connection to the Studio that reads the server's banner and then
/// says nothing.
fn silent_connection(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect to the studio");
    s.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    let mut banner = [0u8; 8];
    s.read_exact(&mut banner).expect("server banner");
    assert_eq!(&banner, b"SSH-2.0-");
    s
}

/// Whether the server closed `s` (EOF or reset) within [`PATIENCE`].
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // the rest of the banner, the KEXINIT
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Fails without the handshake timeout: the silent connection stays open
/// past PATIENCE (russh has no timeout of its own before authentication).
#[test]
fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let (p, _key, ssh) =
        alice(Platform::builder().studio_env("CONNECT_CLIENT_HANDSHAKE_TIMEOUT", "1s"));
    let mut idle = silent_connection(&p.studios[0].addr);
    assert!(
        closed_by_server(&mut idle),
        "an unauthenticated connection outlived the handshake timeout"
    );
    // Authenticated connections are not subject to it.
    let out = run_ok(with_cmd(ssh.ssh(), "sleep 2; echo still here"));
    assert_eq!(out, "still here\n");
}

/// With room for two unauthenticated connections, two silent ones and the
/// proxy's: the oldest silent one is closed and the user gets in. Fails
/// without the cap (the first silent connection stays open); a cap that
/// refused the newest connection instead would fail the login.
#[test]
fn past_the_cap_the_oldest_unauthenticated_connection_goes_and_the_proxy_gets_in() {
    let (p, _key, ssh) = alice(
        Platform::builder()
            .studio_env("CONNECT_CLIENT_MAX_STARTUPS", "2")
            .studio_env("CONNECT_CLIENT_HANDSHAKE_TIMEOUT", "10m"),
    );
    let addr = p.studios[0].addr.clone();
    let mut oldest = silent_connection(&addr);
    let mut second = silent_connection(&addr);
    // The user's login through the proxy makes a third.
    assert_eq!(run_ok(with_cmd(ssh.ssh(), "echo in")), "in\n");
    assert!(
        closed_by_server(&mut oldest),
        "the oldest unauthenticated connection should have made room"
    );
    // The proxy's connection left the count once authenticated: two more
    // silent ones make it three, and the second goes.
    let _third = silent_connection(&addr);
    let _fourth = silent_connection(&addr);
    assert!(closed_by_server(&mut second));
}

// --- env allowlist ------------------------------------------------------

/// `LC_*` and `TERM`-style variables pass; `LD_PRELOAD`, `PATH` and
/// anything else do not. Fails without the allowlist (all are applied).
#[test]
fn env_outside_the_allowlist_never_reaches_the_process() {
    let (_p, _key, ssh) = alice(Platform::builder());
    let cmd = with_cmd(
        ssh.ssh_with(&[
            "-o",
            "SetEnv=LC_TIME=C.UTF-8 COLORTERM=truecolor LD_PRELOAD=/nonexistent/evil.so PATH=/evil CONNECT_TEST=1",
        ]),
        "echo \"$LC_TIME|$COLORTERM|${LD_PRELOAD-unset}|${CONNECT_TEST-unset}|$PATH\"",
    );
    let out = run_ok(cmd);
    let fields: Vec<&str> = out.trim_end().split('|').collect();
    assert_eq!(
        &fields[..4],
        ["C.UTF-8", "truecolor", "unset", "unset"],
        "{out}"
    );
    assert_ne!(fields[4], "/evil", "PATH came from the client");
}

/// `CONNECT_CLIENT_ACCEPT_ENV` replaces the default list. Fails if the
/// setting is ignored (LC_TIME would pass, GIT_AUTHOR_NAME would not).
#[test]
fn the_env_allowlist_is_configurable() {
    let (_p, _key, ssh) =
        alice(Platform::builder().studio_env("CONNECT_CLIENT_ACCEPT_ENV", "GIT_*,EDITOR"));
    let cmd = with_cmd(
        ssh.ssh_with(&[
            "-o",
            "SetEnv=GIT_AUTHOR_NAME=alice EDITOR=vi LC_TIME=C.UTF-8",
        ]),
        "echo \"$GIT_AUTHOR_NAME|$EDITOR|${LC_TIME-unset}\"",
    );
    assert_eq!(run_ok(cmd), "alice|vi|unset\n");
}

// --- agent forwarding ---------------------------------------------------

/// An ssh-agent holding a fresh key; killed on drop.
struct Agent {
    child: std::process::Child,
    sock: std::path::PathBuf,
    key: KeyPair,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = KeyPair::generate(dir.path(), "agent-key", KeyType::Ed25519);
        let sock = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        wait_until("the agent's socket appears", || sock.exists());
        let add = Command::new("ssh-add")
            .arg(&key.private)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .expect("ssh-add");
        assert!(add.status.success(), "{}", stderr(&add));
        Self {
            child,
            sock,
            key,
            _dir: dir,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "waited in vain: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Through the proxy with `-A`: the key is listed, the socket is 0600 in a
/// 0700 directory, and both are gone once the channel closed. Fails with
/// the socket left at the umask's mode (755 here) or never removed.
#[test]
fn the_agent_socket_is_private_and_removed_when_the_channel_closes() {
    let (_p, _key, ssh) = alice(Platform::builder());
    let agent = Agent::start();
    let mut cmd = with_cmd(
        ssh.ssh_with(&["-A"]),
        "echo \"$SSH_AUTH_SOCK\"; stat -c %a \"$SSH_AUTH_SOCK\" \"$(dirname \"$SSH_AUTH_SOCK\")\"; ssh-add -l",
    );
    cmd.env("SSH_AUTH_SOCK", &agent.sock);
    let out = run_ok(cmd);
    let lines: Vec<&str> = out.lines().collect();
    let sock = Path::new(lines[0]);
    assert!(sock.is_absolute(), "{out}");
    assert_eq!(lines[1], "600", "socket mode: {out}");
    assert_eq!(lines[2], "700", "directory mode: {out}");
    assert!(lines[3].contains(&agent.key.fingerprint), "{out}");
    let dir = sock.parent().expect("directory").to_owned();
    wait_until("the agent socket and its directory are removed", || {
        !sock.exists() && !dir.exists()
    });
}

/// `CONNECT_CLIENT_AGENT_FORWARDING=false`: `-A` gets no socket. Fails if
/// the setting is ignored.
#[test]
fn agent_forwarding_can_be_turned_off() {
    let (_p, _key, ssh) =
        alice(Platform::builder().studio_env("CONNECT_CLIENT_AGENT_FORWARDING", "false"));
    let agent = Agent::start();
    let mut cmd = with_cmd(ssh.ssh_with(&["-A"]), "echo \"${SSH_AUTH_SOCK-unset}\"");
    cmd.env("SSH_AUTH_SOCK", &agent.sock);
    assert_eq!(run_ok(cmd), "unset\n");
}

// --- forwarding refusals ------------------------------------------------

/// `ssh -W` through the proxy to a target the Studio cannot reach; what
/// the user reads on stderr.
fn refused_forward(ssh: &Ssh, target: &str) -> String {
    let mut cmd = ssh_info(ssh, &["-W", target]);
    cmd.stdin(Stdio::null());
    let out = run(cmd);
    assert_ne!(out.status.code(), Some(0), "the forward should fail");
    stderr(&out)
}

/// A closed port and an unknown host read differently, each with code 2
/// ("connect failed"). Fails with russh's generic "Connect failed".
#[test]
fn refused_forwards_say_connection_refused_or_host_not_found() {
    let (_p, _key, ssh) = alice(Platform::builder());
    let closed = testkit::net::free_port();
    let err = refused_forward(&ssh, &format!("127.0.0.1:{closed}"));
    assert!(
        err.contains(&format!(
            "open failed: connect failed: 127.0.0.1:{closed}: connection refused"
        )),
        "{err}"
    );
    let err = refused_forward(&ssh, "no-such-host.invalid:80");
    assert!(
        err.contains("open failed: connect failed: no-such-host.invalid: host not found"),
        "{err}"
    );
}

/// `CONNECT_CLIENT_TCP_FORWARDING=false`: code 1, administratively
/// prohibited, and `-R` is refused too. Fails if the setting is ignored
/// (the forward to a listening port would open).
#[test]
fn forwarding_turned_off_is_administratively_prohibited() {
    let (_p, _key, ssh) =
        alice(Platform::builder().studio_env("CONNECT_CLIENT_TCP_FORWARDING", "false"));
    let echo = testkit::net::echo_server();
    let err = refused_forward(&ssh, &format!("127.0.0.1:{echo}"));
    assert!(
        err.contains(
            "open failed: administratively prohibited: port forwarding is turned off in this Studio"
        ),
        "{err}"
    );
    let mut remote = ssh_info(
        &ssh,
        &[
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "0:127.0.0.1:9",
            "-N",
        ],
    );
    remote.stdin(Stdio::null());
    let out = run(remote);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("remote port forwarding failed"),
        "{}",
        stderr(&out)
    );
}

// --- sftp ---------------------------------------------------------------

/// `ls -l` in a directory holding a file with two names: the link count
/// column says 2. Fails when the listing's `longname` lacks it.
#[test]
fn sftp_ls_l_shows_the_link_count() {
    let (p, _key, ssh) = alice(Platform::builder());
    let dir = tempfile::Builder::new()
        .prefix("connect-sftp-links-")
        .tempdir()
        .expect("tempdir");
    std::fs::write(dir.path().join("one"), b"data").expect("write");
    std::fs::hard_link(dir.path().join("one"), dir.path().join("two")).expect("link");
    let batch = p.dir().join("ls.batch");
    // `ls -l` of the current directory: OpenSSH prints each entry's
    // longname. (`ls -l PATH` formats SFTP v3 attributes itself, which have
    // no link count, and prints `?` against any server.)
    std::fs::write(&batch, format!("cd {}\nls -l\n", dir.path().display())).expect("batch");
    let out = run_ok(ssh.sftp_batch(&batch));
    let line = out
        .lines()
        .find(|l| l.ends_with(" one"))
        .unwrap_or_else(|| panic!("no line for the file: {out}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(fields[0].starts_with("-rw"), "{line}");
    assert_eq!(fields[1], "2", "link count: {line}");
}
