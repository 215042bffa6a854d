//! connect-proxy end to end: real OpenSSH clients through the real proxy
//! (`ssh -p PORT alice@SESSION@127.0.0.1`) to real connect-client Studios
//! registered with the real control plane.

#[path = "support/seccomp.rs"]
mod seccomp;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::net::{echo_server, free_port, wait_connect};
use testkit::{Dev, KeyPair, KeyType, Platform, ProxyOptions, Ssh, Tmux, run, run_ok, sh};

const SESSION: &str = "01ac8894";

/// A platform with alice's Studio running; returns alice's ssh.
fn alice() -> (Platform, Ssh) {
    let mut p = Platform::start();
    let key = p.user("alice");
    p.studio(SESSION, 1, "alice", &["bob"], true);
    let ssh = p.ssh(&key, "alice", SESSION);
    (p, ssh)
}

#[test]
fn exec_exit_code_and_separate_stderr() {
    let (_p, ssh) = alice();
    let mut cmd = ssh.ssh();
    cmd.arg("echo out; echo err >&2; exit 7");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

#[test]
fn many_commands_over_one_connection_are_not_refused() {
    // Each command's channel is closed by the Studio when the command
    // exits (a russh client, unlike OpenSSH, never closes first). Those
    // closes must free the connection's channel slots, or a long-lived
    // connection is refused every channel after the limit's worth of
    // commands. connect-loadtest's bulk workers keep one connection and
    // open a channel per transfer: 8 transfers against a limit of 3.
    let mut p = Platform::builder()
        .studio_env("CONNECT_CLIENT_MAX_CHANNELS", "3")
        .start();
    let key = p.user("alice");
    p.studio(SESSION, 1, "alice", &[], true);
    let out = Command::new(testkit::bin("connect-loadtest"))
        .args(["bulk", "--progress", "off", "-c", "1", "-n", "8"])
        .args(["--bytes", "1KiB", "--direction", "down", "--target"])
        .arg(format!("127.0.0.1:{}", p.ssh_port()))
        .args(["--login", &format!("alice@{SESSION}"), "--key"])
        .arg(&key.private)
        .output()
        .expect("connect-loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        // Success means all 8 verified with no error (--max-error-ratio 0).
        out.status.success() && stdout.contains("errors: none"),
        "{}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_proxy_runs_without_transparent_huge_pages() {
    // ~50 KiB of RSS per idle session otherwise (docs/benchmarks.md).
    let p = Platform::start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.proxy().process.pid()))
        .expect("status");
    let Some(thp) = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(str::trim)
    else {
        // Kernels before 5.0, or without THP, do not report it (nor use it).
        eprintln!("THP_enabled is not reported by this kernel; nothing to check");
        return;
    };
    assert_eq!(thp, "0", "{status}");
}

#[test]
fn a_second_proxy_on_the_same_address_is_refused_not_silently_sharing() {
    // Every core listens with SO_REUSEPORT, so a second process could join
    // the port unnoticed and take a share of the users' connections.
    let p = Platform::start();
    let same_addr = format!("127.0.0.1:{}", p.ssh_port());
    let second = ProxyOptions::default()
        .embed_control()
        .env("CONNECT_SSH_ADDR", &same_addr);
    let mut second = testkit::Process::spawn(p.proxy_command(&second));
    // Without the check it would start and serve: bounded wait, then fail.
    let code = second.wait_exit(Duration::from_secs(30));
    let stderr = second.lines().join("\n");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("CONNECT_SSH_ADDR") && stderr.contains("already listens"),
        "{stderr}"
    );
}

#[test]
fn hundred_thousand_lines_of_stdin() {
    let (_p, ssh) = alice();
    let input: String = (1..=100_000).map(|i| format!("line {i}\n")).collect();
    let mut cmd = ssh.ssh();
    cmd.arg("cat").stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("ssh");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.clone();
    let w = std::thread::spawn(move || stdin.write_all(data.as_bytes()));
    let out = child.wait_with_output().expect("wait");
    w.join().expect("writer").expect("write");
    assert!(out.status.success());
    assert!(
        out.stdout == input.as_bytes(),
        "stdin came back different ({} bytes)",
        out.stdout.len()
    );
}

#[test]
fn pty_shell_with_resize() {
    let (_p, ssh) = alice();
    let tmux = Tmux::start("connect-proxy-test", 90, 25, &ssh.tty_line());
    tmux.type_line("stty size");
    tmux.wait_for("25 90");
    tmux.run(&["resize-window", "-x", "132", "-y", "43"]);
    // The window-change request travels through the proxy while we ask:
    // ask until the pty's new size shows.
    tmux.retype_until("stty size", "43 132");
}

#[test]
fn scp_and_sftp_50mb() {
    let (p, ssh) = alice();
    let src = p.dir().join("src.bin");
    sh(&format!("head -c 50M /dev/urandom > '{}'", src.display()));
    let remote = p.dir().join("remote.bin");
    let back = p.dir().join("back.bin");
    let mut put = ssh.scp();
    put.arg(&src)
        .arg(format!("{}:{}", ssh.destination(), remote.display()));
    run_ok(put);
    let batch = p.dir().join("batch");
    std::fs::write(
        &batch,
        format!("get {} {}\n", remote.display(), back.display()),
    )
    .expect("batch");
    run_ok(ssh.sftp_batch(&batch));
    let want = testkit::sha256(&src);
    assert_eq!(testkit::sha256(&remote), want);
    assert_eq!(testkit::sha256(&back), want);
}

#[test]
fn rsync_through_the_proxy() {
    let (p, ssh) = alice();
    let src = p.dir().join("tree");
    sh(&format!(
        "mkdir -p '{0}/a' && head -c 2000000 /dev/urandom > '{0}/a/f' && echo x > '{0}/g'",
        src.display()
    ));
    let dst = p.dir().join("copy");
    let mut cmd = Command::new("rsync");
    cmd.arg("-a")
        .arg("-e")
        .arg(ssh.rsync_rsh())
        .arg(format!("{}/", src.display()))
        .arg(format!("{}:{}/", ssh.destination(), dst.display()));
    run_ok(cmd);
    assert!(
        Command::new("diff")
            .arg("-r")
            .arg(&src)
            .arg(&dst)
            .status()
            .expect("diff")
            .success()
    );
}

#[test]
fn local_dynamic_and_remote_forwarding() {
    let (_p, ssh) = alice();
    let echo = echo_server();

    // -L
    let local = free_port();
    let spec = format!("127.0.0.1:{local}:127.0.0.1:{echo}");
    let mut tunnel = ssh
        .ssh_with(&["-N", "-o", "ExitOnForwardFailure=yes", "-L", &spec])
        .stdin(Stdio::null())
        .spawn()
        .expect("ssh -L");
    let mut s = wait_connect(local);
    s.write_all(b"through -L").expect("write");
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"through -L");
    let _ = tunnel.kill();
    let _ = tunnel.wait();

    // -D with curl --socks5-hostname to an HTTP server "inside" the Studio.
    let http = TcpListener::bind("127.0.0.1:0").expect("bind");
    let http_port = http.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in http.incoming().map_while(Result::ok) {
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nsocks",
            );
        }
    });
    let socks = free_port();
    let mut dynamic = ssh
        .ssh_with(&[
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-D",
            &format!("127.0.0.1:{socks}"),
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("ssh -D");
    drop(wait_connect(socks));
    let body = run_ok({
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "--socks5-hostname",
            &format!("127.0.0.1:{socks}"),
            &format!("http://localhost:{http_port}/"),
        ]);
        c
    });
    assert_eq!(body, "socks");
    let _ = dynamic.kill();
    let _ = dynamic.wait();

    // -R
    let remote = free_port();
    let mut cmd = ssh.ssh_with(&[
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        &format!("{remote}:127.0.0.1:{echo}"),
    ]);
    cmd.arg(format!(
        "exec 3<>/dev/tcp/127.0.0.1/{remote}; printf 'through -R' >&3; head -c 10 <&3"
    ));
    assert_eq!(run_ok(cmd), "through -R");
}

#[test]
fn agent_forwarding() {
    let (p, ssh) = alice();
    let key = KeyPair::generate(p.dir(), "agent-key", KeyType::Ed25519);
    let sock = p.dir().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .expect("agent");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        Command::new("ssh-add")
            .arg(&key.private)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .expect("add")
            .status
            .success()
    );
    let mut cmd = ssh.ssh_with(&["-A"]);
    cmd.env("SSH_AUTH_SOCK", &sock).arg("ssh-add -l");
    assert!(run_ok(cmd).contains(&key.fingerprint));
    let _ = agent.kill();
    let _ = agent.wait();
}

#[test]
fn every_refusal_looks_the_same_and_is_counted_by_reason() {
    let mut p = Platform::builder().allowed(Some("1,2")).start();
    let alice = p.user("alice");
    let mallory = p.user("mallory");
    let stranger = KeyPair::generate(p.dir(), "stranger", KeyType::Ed25519);
    p.studio(SESSION, 1, "alice", &[], true);
    p.studio("00000002", 1, "alice", &[], false);

    let attempt = |key: &KeyPair, user: &str, session: &str| {
        let mut cmd = p.ssh(key, user, session).ssh();
        cmd.arg("true");
        let out = run(cmd);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )
    };
    // The baseline works.
    assert_eq!(attempt(&alice, "alice", SESSION).0, Some(0));
    let cases = [
        (attempt(&stranger, "alice", SESSION), "unknown_key"),
        (attempt(&alice, "alice", "0000ffff"), "unknown_session"),
        (attempt(&alice, "alice", "00000002"), "toggle_off"),
        (attempt(&mallory, "mallory", SESSION), "not_member"),
    ];
    // The control plane refuses the toggle outside the list; the proxy's
    // own refusal of such sessions is the next test.
    let (status, _) = p.api(
        "PUT",
        "/v1/sessions/00000004",
        Some(serde_json::json!({"workspaceId": 3, "owner": "alice", "sshEnabled": true})),
    );
    assert_eq!(
        status, 403,
        "the control plane refuses the toggle for workspace 3"
    );
    for ((code, stderr), reason) in &cases {
        assert_eq!(*code, Some(255), "{reason}");
        assert!(
            stderr.ends_with("Permission denied (publickey)."),
            "{reason}: {stderr}"
        );
        let series = format!("connect_proxy_auth_total{{reason=\"{reason}\",result=\"refused\"}}");
        assert!(
            p.metric(&series) >= 1.0,
            "{series} not counted:\n{}",
            p.metrics()
        );
    }
    // OpenSSH prefixes the destination it was given; the rest is ours and
    // must not differ.
    let said: Vec<&str> = cases
        .iter()
        .map(|((_, e), _)| e.rsplit(": ").next().unwrap_or_default())
        .collect();
    assert!(
        said.windows(2).all(|w| w[0] == w[1]),
        "refusals differ: {said:?}"
    );
}

#[test]
fn workspace_not_allowed_and_feature_off_are_refused_like_the_rest() {
    // A session whose workspace is not (or no longer) allowed: the proxy's
    // state carries the allowlist, the control plane already stores the
    // session from when it was allowed.
    let mut p = Platform::builder().allowed(Some("1,2")).no_proxy().start();
    let user = p.user("alice");
    p.session("00000002", 2, "alice", &[], true);
    p.stop_control();

    for (allowed, reason) in [(Some("1"), "workspace_not_allowed"), (None, "ssh_disabled")] {
        // Back on the same database and address, with another allowlist.
        p.set_allowed(allowed);
        p.start_control();
        let mut proxy = p
            .start_proxy(&ProxyOptions::default())
            .expect("the proxy starts");
        let port = proxy.port;
        let ssh = Ssh {
            port,
            user: "alice@00000002".into(),
            identity: user.private.clone(),
            known_hosts: None,
        };
        let mut cmd = ssh.ssh();
        cmd.arg("true");
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(255));
        assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied (publickey)"));
        let line = proxy
            .process
            .wait_for(|v| v["msg"] == "login refused", Duration::from_secs(10))
            .expect("refusal logged");
        assert_eq!(line["reason"], reason);
        drop(proxy);
    }
}

#[test]
fn studio_killed_mid_session_and_stopped_studio_get_one_clear_line() {
    let (mut p, ssh) = alice();
    let mut cmd = ssh.ssh();
    cmd.arg("echo started; sleep 60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().expect("ssh");
    let mut first = [0u8; 8];
    child
        .stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("started");
    p.studios[0].process.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "ssh hung after its Studio died");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .as_mut()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(255));
    assert!(
        stderr.contains(&format!("lost the connection to studio {SESSION}")),
        "{stderr}"
    );

    // New logins: one line, exit 255, no hang (unreachable now, then
    // "not running" once heartbeats have expired).
    p.wait_routed(SESSION, "stopped");
    let mut cmd = ssh.ssh();
    cmd.arg("true");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(255));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!("studio {SESSION} is not running; start it from the platform")
    );
}

#[test]
fn control_plane_stopped_live_sessions_continue_and_known_logins_work() {
    let mut p = Platform::builder().separate_control().start();
    let key = p.user("alice");
    p.studio(SESSION, 1, "alice", &[], true);
    let ssh = p.ssh(&key, "alice", SESSION);

    let mut cmd = ssh.ssh();
    cmd.arg("cat").stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut live = cmd.spawn().expect("ssh");
    let mut stdin = live.stdin.take().expect("stdin");
    let mut stdout = live.stdout.take().expect("stdout");
    stdin.write_all(b"before\n").expect("write");
    let mut buf = [0u8; 7];
    stdout.read_exact(&mut buf).expect("echo");

    p.stop_control();
    // The proxy has noticed: it serves from its last state from here on.
    p.proxy_mut()
        .process
        .wait_for(
            |v| {
                v["msg"] == "watch stream failed; serving from the last state"
                    || v["msg"] == "watch stream ended; reconnecting"
            },
            Duration::from_secs(20),
        )
        .expect("the proxy saw the control plane go");

    stdin.write_all(b"after!\n").expect("write");
    stdout.read_exact(&mut buf).expect("live session continues");
    assert_eq!(&buf, b"after!\n");
    let mut again = ssh.ssh();
    again.arg("echo new login");
    assert_eq!(run_ok(again), "new login\n");
    drop(stdin);
    let _ = live.wait();
}

#[test]
fn two_proxies_with_one_key_answer_one_known_hosts_line() {
    let mut p = Platform::builder().separate_control().start();
    let key = p.user("alice");
    p.studio(SESSION, 1, "alice", &[], true);
    let second = p
        .start_proxy(&ProxyOptions::default())
        .expect("a second proxy");
    let other = second.port;

    let pub_line = p
        .proxy_key
        .public_line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let known = p.dir().join("known_hosts_alias");
    std::fs::write(&known, format!("connect.example.com {pub_line}\n")).expect("known_hosts");
    for port in [p.ssh_port(), other] {
        let ssh = Ssh {
            port,
            user: format!("alice@{SESSION}"),
            identity: key.private.clone(),
            known_hosts: Some(known.clone()),
        };
        let mut cmd = ssh.ssh_with(&["-o", "HostKeyAlias=connect.example.com"]);
        cmd.arg("echo same key");
        assert_eq!(run_ok(cmd), "same key\n", "proxy on port {port}");
    }
}

#[test]
fn a_reader_that_stops_reading_does_not_grow_proxy_memory() {
    let (p, ssh) = alice();
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", p.proxy().process.pid()))
            .expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    // Warm up so allocator pools exist.
    let mut warm = ssh.ssh();
    warm.arg("head -c 20000000 /dev/zero");
    run_ok(warm);
    let before = rss();
    let mut cmd = ssh.ssh();
    cmd.arg("cat /dev/zero")
        .stdout(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().expect("ssh");
    // Read a little, then stop reading for a while.
    let mut buf = vec![0u8; 1 << 20];
    child
        .stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut buf)
        .expect("some data");
    std::thread::sleep(Duration::from_secs(4));
    let during = rss();
    let _ = child.kill();
    let _ = child.wait();
    let growth_kib = during.saturating_sub(before);
    assert!(
        growth_kib < 48 * 1024,
        "proxy RSS grew {growth_kib} KiB while a reader stalled (before {before} KiB, during {during} KiB)"
    );
}

#[test]
fn activity_is_reported_to_the_control_plane() {
    let mut p = Platform::builder()
        .proxy(ProxyOptions::default().env("CONNECT_ACTIVITY_INTERVAL", "1s"))
        .start();
    let key = p.user("alice");
    p.studio(SESSION, 1, "alice", &[], true);
    let ssh = p.ssh(&key, "alice", SESSION);
    let mut cmd = ssh.ssh();
    cmd.arg("echo hi; sleep 5")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("ssh");
    let mut hi = [0u8; 3];
    child
        .stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut hi)
        .expect("hi");
    let deadline = Instant::now() + Duration::from_secs(20);
    let session = loop {
        let (_, s) = p.api("GET", &format!("/v1/sessions/{SESSION}"), None);
        if s["activeConnections"] == 1 && s["lastActivity"].is_string() {
            break s;
        }
        assert!(Instant::now() < deadline, "activity never reported: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        session["lastActivity"]
            .as_str()
            .unwrap_or_default()
            .starts_with("20"),
        "{session}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn dev_mode_prints_an_ssh_line_that_works_as_pasted() {
    let dev = Dev::start();
    let line = dev.ssh_line.clone();
    // A local system listens on loopback only, management included.
    assert!(
        dev.management.starts_with("http://127.0.0.1:"),
        "{}",
        dev.management
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{line} -o BatchMode=yes 'echo pasted and working'"))
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .expect("sh");
    // A second --dev in the same directory would rewrite the first's token
    // and known_hosts under it: refused, and the first keeps working.
    let mut second = testkit::Process::spawn(dev.command());
    let code = second.wait_exit(Duration::from_secs(30));
    let again = Command::new("sh")
        .arg("-c")
        .arg(format!("{line} -o BatchMode=yes 'echo still working'"))
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .expect("sh");
    drop(dev);
    let stderr = second.lines().join("\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("another connect-proxy --dev is running"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&again.stdout), "still working\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pasted and working\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The entry point `seccomp::command_without_io_uring` re-executes.
#[test]
fn deny_io_uring_exec() {
    seccomp::exec_if_requested();
}

/// Runs the proxy under a seccomp filter denying io_uring (Docker's
/// default profile does).
fn without_io_uring(program: &Path) -> Command {
    seccomp::command_without_io_uring(program, &[])
}

#[test]
fn falls_back_to_epoll_under_a_seccomp_filter_that_denies_io_uring() {
    // `auto` whatever CONNECT_TEST_IO says: the fallback is what is tested.
    let mut p = Platform::builder()
        .proxy(
            ProxyOptions::default()
                .io("auto")
                .launcher(without_io_uring),
        )
        .start();
    let fallback = p
        .proxy_mut()
        .process
        .wait_for(
            |v| v["msg"] == "io_uring unavailable; using epoll",
            Duration::from_secs(5),
        )
        .expect("the fallback is logged");
    assert!(
        fallback["reason"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("seccomp"),
        "{fallback}"
    );
    assert_eq!(p.metric("connect_proxy_io_backend{backend=\"epoll\"}"), 1.0);
    let key = p.user("alice");
    p.studio(SESSION, 1, "alice", &[], true);
    let mut cmd = p.ssh(&key, "alice", SESSION).ssh();
    cmd.arg("echo served on epoll");
    assert_eq!(run_ok(cmd), "served on epoll\n");

    // Forcing io_uring where it is denied is a configuration error.
    let forced = ProxyOptions::default()
        .embed_control()
        .launcher(without_io_uring)
        .io("uring");
    let out = p
        .proxy_command(&forced)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CONNECT_IO"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The backend this run asked for (`CONNECT_TEST_IO`, which `.ci/run` sets
/// to each backend in turn) is the one serving, and 10 MB each way go
/// through it unchanged.
#[test]
fn the_chosen_backend_relays_10_mb_each_way() {
    let (p, ssh) = alice();
    let want = match testkit::platform::test_io().as_str() {
        "uring" => Some("io_uring"),
        "epoll" => Some("epoll"),
        _ => None,
    };
    let backend = p.proxy().backend.clone();
    if let Some(want) = want {
        assert_eq!(backend, want, "{}", p.metrics());
    }
    assert_eq!(
        p.metric(&format!(
            "connect_proxy_io_backend{{backend=\"{backend}\"}}"
        )),
        1.0
    );
    let src = p.dir().join("up.bin");
    std::fs::write(&src, testkit::pattern(10_000_000, 0x5EED)).expect("write");
    let remote = p.dir().join("remote.bin");
    let mut up = ssh.ssh();
    up.arg(format!("cat > '{}'", remote.display()))
        .stdin(std::fs::File::open(&src).expect("open"));
    let out = up.output().expect("ssh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(testkit::sha256(&remote), testkit::sha256(&src), "upload");
    let mut down = ssh.ssh();
    down.arg(format!("cat '{}'", remote.display()));
    let out = run(down);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == std::fs::read(&src).expect("read"),
        "download differs ({} bytes)",
        out.stdout.len()
    );
    // Counted by the proxy's relay: the bytes did go through it.
    let metrics = p.metrics();
    let counted = |direction: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("connect_proxy_channel_bytes_total{"))
            .filter(|l| l.contains(&format!("direction=\"{direction}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(counted("up") >= 10_000_000.0, "{metrics}");
    assert!(counted("down") >= 10_000_000.0, "{metrics}");
}

#[test]
fn a_command_that_exits_while_the_user_still_sends_ends_cleanly() {
    // `producer | ssh host 'exits early'`: the Studio closes the channel
    // while the user is still sending; the exit status must still arrive.
    let (_p, ssh) = alice();
    for _ in 0..8 {
        let mut cmd = ssh.ssh();
        cmd.arg("head -c 1000000 >/dev/null; exit 3")
            .stdin(std::fs::File::open("/dev/zero").expect("/dev/zero"))
            .stdout(Stdio::null());
        let mut child = cmd.spawn().expect("ssh");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ssh hung after the remote command exited");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(3));
    }
}
