//! connect-client driven by the real OpenSSH tools (`ssh`, `scp`, `sftp`,
//! `rsync`, `ssh-agent`, tmux for a real terminal) over 127.0.0.1, with the
//! proxy key pinned by fingerprint exactly as in production.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::net::{echo_server, free_port};
use testkit::{KeyPair, KeyType, Process, Ssh, Tmux, run, run_ok, sh};

const BIN: &str = env!("CARGO_BIN_EXE_connect-client");
const START: Duration = Duration::from_secs(20);

/// A running connect-client with a pinned proxy key and host key.
struct Studio {
    process: Process,
    dir: tempfile::TempDir,
    proxy_key: KeyPair,
    port: u16,
    known_hosts: PathBuf,
}

impl Studio {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(extra_env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let proxy_key = KeyPair::generate(dir.path(), "proxy", KeyType::Ed25519);
        let host_key = KeyPair::generate(dir.path(), "host", KeyType::Ed25519);
        let mut cmd = Command::new(BIN);
        cmd.env("CONNECT_CLIENT_SSH_KEY_FINGERPRINT", &proxy_key.fingerprint)
            .env("CONNECT_CLIENT_SSH_ADDR", "127.0.0.1:0")
            .env("CONNECT_CLIENT_HOST_KEY_PATH", &host_key.private)
            .env("CONNECT_CLIENT_LOG_LEVEL", "debug");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut process = Process::spawn(cmd);
        let listening = process.wait_for_msg("connect-client listening", START);
        let addr: std::net::SocketAddr = listening["addr"]
            .as_str()
            .expect("addr field")
            .parse()
            .expect("socket address");
        assert_eq!(
            listening["host_key_fingerprint"],
            host_key.fingerprint.as_str()
        );
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, host_key.known_hosts_line(addr.port())).expect("known_hosts");
        Self {
            process,
            dir,
            proxy_key,
            port: addr.port(),
            known_hosts,
        }
    }

    /// The proxy's view: the pinned key, the pinned host key.
    fn ssh(&self) -> Ssh {
        self.ssh_as(&self.proxy_key)
    }

    fn ssh_as(&self, key: &KeyPair) -> Ssh {
        Ssh {
            port: self.port,
            user: "alice".into(),
            identity: key.private.clone(),
            known_hosts: Some(self.known_hosts.clone()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn random_file(path: &Path, mib: usize) {
    sh(&format!(
        "head -c {}M /dev/urandom > '{}'",
        mib,
        path.display()
    ));
}

#[test]
fn exec_returns_exit_code_and_keeps_stderr_separate() {
    let studio = Studio::start();
    let mut cmd = studio.ssh().ssh();
    cmd.arg("echo out; echo err >&2; exit 7");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

#[test]
fn exec_killed_by_signal_reports_it() {
    let studio = Studio::start();
    // `-v`: OpenSSH logs each channel request it receives, the only place
    // an `exit-signal` shows (it exits 255 without an `exit-status`).
    let mut cmd = studio.ssh().ssh_with(&["-v"]);
    cmd.arg("echo ran; kill -TERM $$");
    let out = run(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The command ran, so 255 is not OpenSSH failing to connect.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n", "{stderr}");
    assert!(stderr.contains("rtype exit-signal"), "{stderr}");
    // Had the Studio reported the signal as a status, OpenSSH would exit
    // 143 and log an exit-status request.
    assert!(!stderr.contains("rtype exit-status"), "{stderr}");
    assert_eq!(out.status.code(), Some(255), "{stderr}");
}

#[test]
fn environment_of_commands() {
    let studio = Studio::start();
    let mut cmd = studio
        .ssh()
        .ssh_with(&["-o", "SetEnv=LC_CONNECT_TEST=hello"]);
    // LC_* is in the default env allowlist (what is refused: hardening.rs).
    cmd.arg("echo $LC_CONNECT_TEST; echo ${SSH_CONNECTION:+set}; env | grep -c '^CONNECT_CLIENT_' || true; pwd");
    let out = run_ok(cmd);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "hello");
    assert_eq!(lines[1], "set");
    assert_eq!(
        lines[2], "0",
        "connect-client's own settings must not leak into user processes"
    );
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    assert_eq!(
        Path::new(lines[3]).canonicalize().ok(),
        Path::new(&home).canonicalize().ok()
    );
}

#[test]
fn streams_100k_lines_of_stdin() {
    let studio = Studio::start();
    let input: String = (1..=100_000).map(|i| format!("line {i}\n")).collect();
    let mut cmd = studio.ssh().ssh();
    cmd.arg("cat").stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("ssh");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.clone();
    let writer = std::thread::spawn(move || stdin.write_all(data.as_bytes()));
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer thread").expect("write stdin");
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input.as_bytes(), "echoed stdin differs");
}

#[test]
fn pty_shell_in_tmux_sees_resize() {
    let studio = Studio::start();
    let tmux = Tmux::start("connect-test", 100, 30, &studio.ssh().tty_line());
    tmux.type_line("echo TTY=$(tty | cut -c1-8) TERM=$TERM");
    tmux.wait_for("TTY=/dev/pts TERM=");
    tmux.type_line("stty size");
    tmux.wait_for("30 100");
    tmux.run(&["resize-window", "-x", "120", "-y", "40"]);
    // The window-change request travels while we ask: ask until the
    // pty's new size shows.
    let screen = tmux.retype_until("stty size", "40 120");
    assert!(
        screen.contains("TERM=screen") || screen.contains("TERM=tmux"),
        "{screen}"
    );
}

#[test]
fn pty_takes_the_clients_terminal_modes() {
    let studio = Studio::start();
    // The user's terminal has unusual interrupt and erase keys; the Studio's
    // pty must get the same ones.
    let line = format!("stty intr '^G' erase '^H'; {}", studio.ssh().tty_line());
    let tmux = Tmux::start("connect-modes", 150, 20, &line);
    tmux.type_line(
        "stty -a | tr ';' '\\n' | grep -E '^ *(intr|erase) ' | tr -d ' ' | paste -sd, -",
    );
    let screen = tmux.wait_for("intr=^G,erase=^H");
    assert!(screen.contains("intr=^G,erase=^H"));
}

#[test]
fn scp_put_and_get_50mb() {
    let studio = Studio::start();
    let src = studio.path("src.bin");
    random_file(&src, 50);
    let remote = studio.path("remote.bin");
    let back = studio.path("back.bin");
    let ssh = studio.ssh();

    let mut put = ssh.scp();
    put.arg(&src)
        .arg(format!("{}:{}", ssh.destination(), remote.display()));
    run_ok(put);
    let mut get = ssh.scp();
    get.arg(format!("{}:{}", ssh.destination(), remote.display()))
        .arg(&back);
    run_ok(get);

    let want = testkit::sha256(&src);
    assert_eq!(testkit::sha256(&remote), want);
    assert_eq!(testkit::sha256(&back), want);
}

#[test]
fn sftp_put_get_and_listing_50mb() {
    let studio = Studio::start();
    let src = studio.path("src.bin");
    random_file(&src, 50);
    let remote_dir = studio.path("remote");
    let back = studio.path("back.bin");
    let batch = studio.path("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir {r}\ncd {r}\nput {src} big.bin\nrename big.bin moved.bin\nls -l\nget moved.bin {back}\nrm moved.bin\ncd /\nrmdir {r}\n",
            r = remote_dir.display(),
            src = src.display(),
            back = back.display()
        ),
    )
    .expect("batch");
    let out = run_ok(studio.ssh().sftp_batch(&batch));
    assert!(out.contains("moved.bin"), "ls output: {out}");
    assert_eq!(testkit::sha256(&back), testkit::sha256(&src));
    assert!(!remote_dir.exists(), "rm and rmdir went through");
}

#[test]
fn rsync_over_ssh() {
    let studio = Studio::start();
    let src = studio.path("tree");
    sh(&format!(
        "mkdir -p '{0}/a/b' && head -c 300000 /dev/urandom > '{0}/a/b/f1' && echo hi > '{0}/f2' && ln -s f2 '{0}/link'",
        src.display()
    ));
    let dst = studio.path("copy");
    let ssh = studio.ssh();
    let mut cmd = Command::new("rsync");
    cmd.arg("-a")
        .arg("-e")
        .arg(ssh.rsync_rsh())
        .arg(format!("{}/", src.display()))
        .arg(format!("{}:{}/", ssh.destination(), dst.display()));
    run_ok(cmd);
    let diff = Command::new("diff")
        .arg("-r")
        .arg(&src)
        .arg(&dst)
        .output()
        .expect("diff");
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    assert_eq!(
        std::fs::read_link(dst.join("link")).expect("symlink kept"),
        Path::new("f2")
    );
}

#[test]
fn local_forward_reaches_a_tcp_server_in_the_studio() {
    let studio = Studio::start();
    let echo = echo_server();
    let local = free_port();
    let spec = format!("127.0.0.1:{local}:127.0.0.1:{echo}");
    let mut cmd = studio
        .ssh()
        .ssh_with(&["-N", "-o", "ExitOnForwardFailure=yes", "-L", &spec]);
    cmd.stdin(Stdio::null());
    let mut tunnel = cmd.spawn().expect("ssh -L");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", local)) {
            break s;
        }
        assert!(Instant::now() < deadline, "tunnel never listened");
        std::thread::sleep(Duration::from_millis(50));
    };
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut writer = stream.try_clone().expect("clone");
    let sent = payload.clone();
    let w = std::thread::spawn(move || {
        writer.write_all(&sent).expect("write");
        writer
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
    });
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).expect("read echo");
    w.join().expect("writer");
    assert!(
        echoed == payload,
        "echo differs ({} bytes back)",
        echoed.len()
    );
    let _ = tunnel.kill();
    let _ = tunnel.wait();
}

#[test]
fn direct_tcpip_to_a_closed_port_fails_cleanly() {
    let studio = Studio::start();
    let closed = free_port();
    // `-v`: OpenSSH logs the open failure and its reason below ERROR.
    let cmd = studio
        .ssh()
        .ssh_with(&["-v", "-W", &format!("127.0.0.1:{closed}")]);
    let out = run(cmd);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // OpenSSH's words for a refused direct-tcpip open; any other failure
    // (no connection, no auth) says something else.
    assert!(stderr.contains("open failed: connect failed"), "{stderr}");
}

#[test]
fn remote_forward_reaches_the_users_machine() {
    let studio = Studio::start();
    let echo = echo_server();
    let remote_port = free_port();
    let spec = format!("{remote_port}:127.0.0.1:{echo}");
    let mut cmd = studio
        .ssh()
        .ssh_with(&["-o", "ExitOnForwardFailure=yes", "-R", &spec]);
    cmd.arg(format!(
        "exec 3<>/dev/tcp/127.0.0.1/{remote_port}; printf 'through -R' >&3; head -c 10 <&3"
    ));
    assert_eq!(run_ok(cmd), "through -R");
}

#[test]
fn agent_forwarding_lists_the_forwarded_key() {
    let studio = Studio::start();
    let user_key = KeyPair::generate(studio.dir.path(), "user", KeyType::Ed25519);
    let sock = studio.path("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "agent socket never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let add = Command::new("ssh-add")
        .arg(&user_key.private)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .expect("ssh-add");
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );

    let mut with_agent = studio.ssh().ssh_with(&["-A", "-o", "ForwardAgent=yes"]);
    with_agent.env("SSH_AUTH_SOCK", &sock).arg("ssh-add -l");
    let listed = run_ok(with_agent);
    assert!(
        listed.contains(&user_key.fingerprint),
        "forwarded agent lists: {listed}"
    );

    let mut without = studio.ssh().ssh();
    without.env("SSH_AUTH_SOCK", &sock).arg("ssh-add -l");
    let out = run(without);
    assert!(!out.status.success(), "no agent unless asked for");
    let _ = agent.kill();
    let _ = agent.wait();
}

#[test]
fn wrong_key_is_refused_and_logged_with_both_fingerprints() {
    let mut studio = Studio::start();
    let intruder = KeyPair::generate(studio.dir.path(), "intruder", KeyType::Ed25519);
    let mut cmd = studio.ssh_as(&intruder).ssh();
    cmd.arg("true");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied (publickey)"));

    let line = studio
        .process
        .wait_for(
            |v| v["msg"] == "SSH fingerprint auth result" && v["authorized"] == false,
            START,
        )
        .expect("refusal logged");
    assert_eq!(line["expected"], studio.proxy_key.fingerprint.as_str());
    assert_eq!(line["incoming"], intruder.fingerprint.as_str());
}

#[test]
fn accepted_key_is_logged_once() {
    let mut studio = Studio::start();
    let mut cmd = studio.ssh().ssh();
    cmd.arg("true");
    run_ok(cmd);
    let line = studio
        .process
        .wait_for(
            |v| v["msg"] == "SSH fingerprint auth result" && v["authorized"] == true,
            START,
        )
        .expect("acceptance logged");
    assert_eq!(line["incoming"], studio.proxy_key.fingerprint.as_str());
    let decisions = studio
        .process
        .json_lines()
        .iter()
        .filter(|v| v["msg"] == "SSH fingerprint auth result")
        .count();
    assert_eq!(decisions, 1, "one decision, one line");
}

#[test]
fn generated_host_key_matches_the_logged_fingerprint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = KeyPair::generate(dir.path(), "proxy", KeyType::Ed25519);
    let mut cmd = Command::new(BIN);
    cmd.env("CONNECT_CLIENT_SSH_KEY_FINGERPRINT", &proxy.fingerprint)
        .env("CONNECT_CLIENT_SSH_ADDR", "127.0.0.1:0");
    let mut process = Process::spawn(cmd);
    let line = process.wait_for_msg("connect-client listening", START);
    let port = line["addr"]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .expect("port")
        .to_owned();
    let scanned = sh(&format!(
        "ssh-keyscan -p {port} 127.0.0.1 2>/dev/null | ssh-keygen -lf -"
    ));
    assert!(
        scanned.contains(line["host_key_fingerprint"].as_str().expect("fingerprint")),
        "keyscan: {scanned}\nlogged: {line}"
    );
}

#[test]
fn missing_or_malformed_fingerprint_refuses_to_start() {
    for value in [None, Some("not-a-fingerprint"), Some("SHA256:tooshort")] {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("CONNECT_CLIENT_SSH_KEY_FINGERPRINT")
            .env_remove("TOWER_DATA_STUDIO_CONNECT_SSH_KEY_FINGERPRINT")
            .env("CONNECT_CLIENT_SSH_ADDR", "127.0.0.1:0");
        if let Some(v) = value {
            cmd.env("CONNECT_CLIENT_SSH_KEY_FINGERPRINT", v);
        }
        let out = cmd.output().expect("run");
        assert_eq!(out.status.code(), Some(64), "{value:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("CONNECT_CLIENT_SSH_KEY_FINGERPRINT"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn unusable_host_key_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = KeyPair::generate(dir.path(), "proxy", KeyType::Ed25519);
    let bad = dir.path().join("garbage");
    std::fs::write(&bad, "not a key").expect("write");
    let out = Command::new(BIN)
        .env("CONNECT_CLIENT_SSH_KEY_FINGERPRINT", &proxy.fingerprint)
        .env("CONNECT_CLIENT_SSH_ADDR", "127.0.0.1:0")
        .env("CONNECT_CLIENT_HOST_KEY_PATH", &bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CONNECT_CLIENT_HOST_KEY_PATH"));
}

#[test]
fn forty_concurrent_channels_on_one_connection() {
    let studio = Studio::start();
    let ctl = studio.path("mux");
    let ctl_opt = format!("ControlPath={}", ctl.display());
    let mut master = studio.ssh().ssh_with(&["-M", "-N", "-o", &ctl_opt]);
    let mut master = master.stdin(Stdio::null()).spawn().expect("master");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ctl.exists() {
        assert!(Instant::now() < deadline, "control socket never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let children: Vec<_> = (0..40)
        .map(|i| {
            let mut c = studio.ssh().ssh_with(&["-o", &ctl_opt]);
            c.arg(format!("sleep 2; echo channel-{i}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped());
            c.spawn().expect("mux client")
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("channel-{i}\n")
        );
    }
    let _ = master.kill();
    let _ = master.wait();
}

#[test]
fn process_is_reaped_when_the_client_goes_away() {
    let studio = Studio::start();
    let marker = format!("connect-reap-{}", std::process::id());
    let mut cmd = studio.ssh().ssh();
    cmd.arg(format!("exec -a {marker} sleep 300"))
        .stdin(Stdio::null());
    let mut client = cmd.spawn().expect("ssh");
    // The remote process's whole command line is `MARKER 300`; the local
    // ssh's (`ssh ... exec -a MARKER sleep 300`) must not match.
    let pattern = format!("^{marker} 300$");
    let remote = || -> Vec<u32> {
        let out = Command::new("pgrep")
            .arg("-f")
            .arg(&pattern)
            .output()
            .expect("pgrep");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let pids = loop {
        let pids = remote();
        if !pids.is_empty() {
            break pids;
        }
        assert!(Instant::now() < deadline, "remote process never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!pids.contains(&client.id()), "matched the local ssh");
    assert_eq!(pids.len(), 1, "one remote process: {pids:?}");
    client.kill().expect("kill ssh");
    let _ = client.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{}", pids[0])).exists() && !remote().is_empty() {
        assert!(
            Instant::now() < deadline,
            "remote process {} outlived its channel",
            pids[0]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn unknown_subsystem_is_refused() {
    let studio = Studio::start();
    let mut cmd = studio.ssh().ssh_with(&["-s"]);
    cmd.arg("no-such-subsystem");
    let out = run(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // OpenSSH's line for a refused subsystem request; failing to connect
    // or authenticate says something else.
    assert!(
        stderr.contains("subsystem request failed on channel 0"),
        "{stderr}"
    );
    // The same connection setup with a known subsystem works.
    let mut sftp = studio.ssh().ssh_with(&["-s"]);
    sftp.arg("sftp").stdin(Stdio::null());
    let out = run(sftp);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("subsystem request failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn garbage_on_the_socket_ends_only_its_own_connection() {
    let studio = Studio::start();
    // A live session before the garbage arrives.
    let mut cmd = studio.ssh().ssh();
    cmd.arg("cat").stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut live = cmd.spawn().expect("ssh");
    let mut stdin = live.stdin.take().expect("stdin");
    let mut stdout = live.stdout.take().expect("stdout");
    let mut buf = [0u8; 7];
    stdin.write_all(b"before\n").expect("write");
    stdout.read_exact(&mut buf).expect("echo before");
    assert_eq!(&buf, b"before\n");

    let mut junk = TcpStream::connect(("127.0.0.1", studio.port)).expect("connect");
    junk.write_all(b"SSH-2.0-junk\r\n\xff\xff\xff\xff garbage garbage garbage\r\n")
        .expect("the garbage is sent");
    junk.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // The Studio closes this connection: EOF or a reset, never a timeout.
    let mut any = [0u8; 4096];
    let closed = loop {
        match junk.read(&mut any) {
            Ok(0) => break Ok(()),
            Ok(_) => continue,
            Err(e) => break Err(e),
        }
    };
    if let Err(e) = closed {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "the garbage connection was not closed: {e}"
        );
    }

    // The live session is untouched, and new ones are served.
    stdin.write_all(b"after!\n").expect("write");
    stdout.read_exact(&mut buf).expect("live session continues");
    assert_eq!(&buf, b"after!\n");
    drop(stdin);
    assert!(live.wait().expect("wait").success());
    let mut again = studio.ssh().ssh();
    again.arg("echo still-serving");
    assert_eq!(run_ok(again), "still-serving\n");
}
