//! connect-proxy with SSH clients other than OpenSSH's defaults, each doing
//! real work through the real proxy to a real Studio, checked by SHA-256:
//! asyncssh and paramiko (Python), PuTTY's plink and pscp, Dropbear's
//! dbclient; then OpenSSH once per cipher and key exchange the proxy offers
//! and once per non-ed25519 user key type.
//!
//! The Python clients come from the venv `.ci/run` makes at
//! `target/interop-venv` (pinned asyncssh and paramiko). Without it these
//! tests fail, saying how to make it; they never skip.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::net::echo_server;
use testkit::{KeyPair, Platform};

const SESSION: &str = "01ac8894";
/// The proxy's ciphers and key exchanges (dataplane/src/ssh/).
const CIPHERS: [&str; 3] = [
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
];
const KEXES: [&str; 3] = [
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
];
/// Hang guards (nextest's own ends a test at 300 s): one client command,
/// an exec or a transfer of up to 20 MB ...
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// ... and one Python client script, all of its steps.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);
/// How to make the venv; `.ci/run` holds the pinned versions.
const VENV_HINT: &str = "run .ci/run, which makes it: `python3 -m venv target/interop-venv` \
     then `target/interop-venv/bin/pip install` asyncssh, paramiko and cryptography \
     at the versions .ci/run pins";

/// A platform with alice's Studio running; alice's (ed25519) key.
fn alice() -> (Platform, KeyPair) {
    let mut p = Platform::start();
    let key = p.user("alice");
    p.studio(SESSION, 1, "alice", &["bob"], true);
    (p, key)
}

/// A key made by `ssh-keygen -t kind -b bits`, not yet registered.
fn keygen(dir: &Path, name: &str, kind: &str, bits: u32) -> KeyPair {
    let private = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args([
        "-t",
        kind,
        "-b",
        &bits.to_string(),
        "-N",
        "",
        "-q",
        "-C",
        name,
        "-f",
    ])
    .arg(&private);
    ok(run_for(cmd, None, Duration::from_secs(60)));
    let public = private.with_extension("pub");
    let public_line = std::fs::read_to_string(&public)
        .expect(".pub")
        .trim()
        .to_owned();
    let mut lf = Command::new("ssh-keygen");
    lf.arg("-lf").arg(&public);
    let listing = ok(run_for(lf, None, Duration::from_secs(10)));
    let fingerprint = String::from_utf8_lossy(&listing.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_owned();
    KeyPair {
        private,
        public,
        public_line,
        fingerprint,
    }
}

/// Registers one more key for `user` through the admin API.
fn register(p: &Platform, user: &str, key: &KeyPair) {
    let (status, body) = p.api(
        "POST",
        &format!("/v1/users/{user}/keys"),
        Some(json!({ "key": key.public_line })),
    );
    assert_eq!(status, 201, "registering {}: {body}", key.public_line);
}

/// Runs `cmd` with stdin from `input` (or /dev/null), collecting stdout and
/// stderr; kills it and fails the test if it outlives `timeout`.
fn run_for(mut cmd: Command, input: Option<&Path>, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let stdin = match input {
        Some(path) => Stdio::from(File::open(path).expect("stdin file")),
        None => Stdio::null(),
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let collect = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("stdout")));
    let stderr = collect(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "{what} still running after {timeout:?}; killed. stderr:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Asserts `out` succeeded, showing its stderr otherwise.
fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sha256_hex(data: &[u8]) -> String {
    use std::fmt::Write;
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn file_sha256(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// `dir/name` filled with `bytes` random bytes; its SHA-256.
fn random_file(dir: &Path, name: &str, bytes: usize) -> (PathBuf, String) {
    let path = dir.join(name);
    testkit::sh(&format!(
        "head -c {bytes} /dev/urandom > '{}'",
        path.display()
    ));
    let sha = file_sha256(&path);
    (path, sha)
}

/// The venv's interpreter, checked to import `module`; fails (never skips)
/// when it is not there.
fn python_with(module: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace");
    let venv = workspace.join("target/interop-venv");
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing, so the {module} interop test cannot run: {VENV_HINT}",
        python.display()
    );
    let mut cmd = Command::new(&python);
    cmd.args([
        "-c",
        &format!("import {module}; print({module}.__version__)"),
    ]);
    let out = run_for(cmd, None, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{} cannot import {module} ({}): {VENV_HINT}",
        python.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    eprintln!("{module} {version} from {}", python.display());
    python
}

/// Runs a Python client script with one JSON argument; its JSON report
/// (the last stdout line). The client's debug log is shown on failure.
fn run_python(python: &Path, dir: &Path, name: &str, script: &str, args: &Value) -> Value {
    let path = dir.join(format!("{name}.py"));
    std::fs::write(&path, script).expect("write script");
    let mut cmd = Command::new(python);
    cmd.arg(&path)
        .arg(args.to_string())
        .env("HOME", dir)
        .env_remove("SSH_AUTH_SOCK");
    let out = run_for(cmd, None, SCRIPT_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null);
    let log = args["log"]
        .as_str()
        .and_then(|l| std::fs::read_to_string(l).ok())
        .unwrap_or_default();
    assert!(
        out.status.success() && report.is_object() && report.get("error").is_none(),
        "{name} failed: {}\nreport: {report:#}\nstdout: {stdout}\nstderr: {}\ndebug log (last 150 lines):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        tail(&log, 150)
    );
    report
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A `matrix` of per-algorithm round trips from a Python report: every
/// row must have moved its bytes back intact with exit status 0.
fn assert_matrix(client: &str, report: &Value, expected_rows: usize) {
    let rows = report["matrix"].as_array().cloned().unwrap_or_default();
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| r.get("error").is_some() || r["exit"] != 0 || r["sha256"] != r["sent_sha256"])
        .map(Value::to_string)
        .collect();
    assert!(
        failed.is_empty() && rows.len() == expected_rows,
        "{client}: {} of {expected_rows} algorithm combinations ran; failures:\n{}",
        rows.len(),
        failed.join("\n")
    );
}

const ASYNCSSH_CLIENT: &str = r#"
import asyncio, hashlib, json, logging, sys, traceback
import asyncssh

A = json.loads(sys.argv[1])
logging.basicConfig(filename=A["log"], level=logging.DEBUG)
asyncssh.set_debug_level(2)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def connect(**algs):
    return asyncssh.connect(
        "127.0.0.1", A["port"], username=A["user"], client_keys=[A["key"]],
        known_hosts=A["known_hosts"], agent_path=None, config=None,
        connect_timeout=20, login_timeout=20, **algs)


async def work(report):
    data = open(A["src"], "rb").read()
    async with connect() as conn:
        report["server_version"] = conn.get_extra_info("server_version")
        r = await conn.run("echo out; echo err >&2; exit 7", check=False)
        report["exec"] = {"stdout": r.stdout, "stderr": r.stderr, "exit": r.exit_status}

        r = await conn.run("cat > '%s'" % A["remote_cat"], input=data,
                           encoding=None, check=False)
        report["cat_up_exit"] = r.exit_status
        r = await conn.run("cat '%s'" % A["remote_cat"], encoding=None, check=False)
        report["cat_down"] = {"exit": r.exit_status, "sha256": sha(r.stdout)}

        async with conn.start_sftp_client() as sftp:
            await sftp.put(A["src"], A["remote_sftp"])
            await sftp.get(A["remote_sftp"], A["back_sftp"])

        listener = await conn.forward_local_port(
            "", 0, "127.0.0.1", A["echo_port"])
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", listener.get_port())
        payload = data[: 1 << 20]

        async def send():
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        _, echoed = await asyncio.gather(send(), reader.readexactly(len(payload)))
        writer.close()
        listener.close()
        report["forward"] = {"sent_sha256": sha(payload), "sha256": sha(echoed)}

    payload = data[: 256 * 1024]
    rows = []
    for kex in A["kexes"]:
        for cipher in A["ciphers"]:
            row = {"kex": kex, "cipher": cipher, "sent_sha256": sha(payload)}
            try:
                async with connect(kex_algs=[kex], encryption_algs=[cipher]) as conn:
                    r = await asyncio.wait_for(
                        conn.run("cat", input=payload, encoding=None, check=False), 30)
                    row.update(exit=r.exit_status, sha256=sha(r.stdout))
            except Exception as e:
                row["error"] = "%s: %s" % (type(e).__name__, e)
            rows.append(row)
    report["matrix"] = rows


async def main():
    report = {"asyncssh": asyncssh.__version__}
    try:
        await asyncio.wait_for(work(report), A["timeout"])
    except BaseException:
        report["error"] = traceback.format_exc()
    print(json.dumps(report))


asyncio.run(main())
"#;

#[test]
fn asyncssh_exec_transfers_local_forward_and_every_kex_and_cipher() {
    let python = python_with("asyncssh");
    let (p, key) = alice();
    let dir = p.dir();
    let (src, want) = random_file(dir, "src.bin", 4 << 20);
    let echo = echo_server();
    let args = json!({
        "port": p.ssh_port(),
        "user": format!("alice@{SESSION}"),
        "key": key.private,
        "known_hosts": p.known_hosts,
        "src": src,
        "remote_cat": dir.join("remote-cat.bin"),
        "remote_sftp": dir.join("remote-sftp.bin"),
        "back_sftp": dir.join("back-sftp.bin"),
        "echo_port": echo,
        "kexes": KEXES,
        "ciphers": CIPHERS,
        "log": dir.join("asyncssh.log"),
        "timeout": SCRIPT_TIMEOUT.as_secs() - 20,
    });
    let report = run_python(&python, dir, "asyncssh_client", ASYNCSSH_CLIENT, &args);
    eprintln!("asyncssh report: {report:#}");

    assert_eq!(
        report["exec"],
        json!({"stdout": "out\n", "stderr": "err\n", "exit": 7}),
        "{report:#}"
    );
    assert_eq!(report["cat_up_exit"], 0, "{report:#}");
    assert_eq!(file_sha256(&dir.join("remote-cat.bin")), want, "cat > file");
    assert_eq!(report["cat_down"], json!({"exit": 0, "sha256": want}));
    assert_eq!(file_sha256(&dir.join("remote-sftp.bin")), want, "sftp put");
    assert_eq!(file_sha256(&dir.join("back-sftp.bin")), want, "sftp get");
    assert_eq!(
        report["forward"]["sha256"], report["forward"]["sent_sha256"],
        "direct-tcpip to the echo server: {report:#}"
    );
    assert_matrix("asyncssh", &report, KEXES.len() * CIPHERS.len());
}

const PARAMIKO_CLIENT: &str = r#"
import hashlib, json, logging, sys, threading, traceback
import paramiko

A = json.loads(sys.argv[1])
paramiko.util.log_to_file(A["log"], level=logging.DEBUG)


class Agreed(logging.Handler):
    """Keeps what paramiko logs it agreed on (kex, cipher, user key signature)."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def emit(self, record):
        msg = record.getMessage()
        for what in ("Kex", "Cipher", "MAC", "HostKey"):
            if msg.startswith(what + ": "):
                self.seen[what] = msg[len(what) + 2:]
        if msg.startswith("Agreed upon ") and msg.endswith(" pubkey algorithm"):
            self.seen["Pubkey"] = msg.split("'")[1]


agreed = Agreed()
logging.getLogger("paramiko.transport").addHandler(agreed)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def connect(key, disabled=None):
    agreed.seen = {}
    c = paramiko.SSHClient()
    c.load_host_keys(A["known_hosts"])
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect("127.0.0.1", port=A["port"], username=A["user"], key_filename=key,
              look_for_keys=False, allow_agent=False, timeout=20,
              banner_timeout=20, auth_timeout=20, channel_timeout=20,
              disabled_algorithms=disabled or {})
    return c


def run(c, command, data=None):
    """(exit status, stdout, stderr) of one exec channel."""
    ch = c.get_transport().open_session(timeout=20)
    ch.settimeout(60)
    ch.exec_command(command)
    err = []

    def send():
        if data is not None:
            ch.sendall(data)
        ch.shutdown_write()

    def drain_stderr():
        err.append(ch.makefile_stderr("rb").read())

    threads = [threading.Thread(target=send), threading.Thread(target=drain_stderr)]
    for t in threads:
        t.start()
    out = ch.makefile("rb").read()
    for t in threads:
        t.join(60)
    status = ch.recv_exit_status()
    ch.close()
    return status, out, b"".join(err)


def work(report):
    data = open(A["src"], "rb").read()
    c = connect(A["key"])
    report["agreed"] = dict(agreed.seen)
    status, out, err = run(c, "echo out; echo err >&2; exit 7")
    report["exec"] = {"stdout": out.decode(), "stderr": err.decode(), "exit": status}
    status, _, err = run(c, "cat > '%s'" % A["remote_cat"], data)
    report["cat_up"] = {"exit": status, "stderr": err.decode()}
    status, out, _ = run(c, "cat '%s'" % A["remote_cat"])
    report["cat_down"] = {"exit": status, "sha256": sha(out)}
    sftp = c.open_sftp()
    sftp.put(A["src"], A["remote_sftp"])
    sftp.get(A["remote_sftp"], A["back_sftp"])
    sftp.close()
    c.close()

    # paramiko's own preference first, then each other algorithm it shares
    # with the proxy; and an RSA key, signed as server-sig-algs allows.
    payload = data[: 256 * 1024]
    variants = [
        ("defaults", A["key"], {}),
        ("curve25519-sha256@libssh.org, aes256-gcm", A["key"],
         {"kex": ["mlkem768x25519-sha256"], "ciphers": ["aes128-gcm@openssh.com"]}),
        ("rsa user key", A["rsa_key"], {}),
    ]
    rows = []
    for name, key, disabled in variants:
        row = {"variant": name, "sent_sha256": sha(payload)}
        try:
            c = connect(key, disabled)
            status, out, _ = run(c, "cat", payload)
            row.update(exit=status, sha256=sha(out), agreed=dict(agreed.seen))
            c.close()
        except Exception as e:
            row["error"] = "%s: %s" % (type(e).__name__, e)
        rows.append(row)
    report["matrix"] = rows


report = {"paramiko": paramiko.__version__}
try:
    work(report)
except BaseException:
    report["error"] = traceback.format_exc()
print(json.dumps(report))
"#;

#[test]
fn paramiko_exec_transfers_and_its_algorithms() {
    let python = python_with("paramiko");
    let (p, key) = alice();
    let dir = p.dir();
    let rsa = keygen(dir, "alice-rsa", "rsa", 3072);
    register(&p, "alice", &rsa);
    let (src, want) = random_file(dir, "src.bin", 4 << 20);
    let args = json!({
        "port": p.ssh_port(),
        "user": format!("alice@{SESSION}"),
        "key": key.private,
        "rsa_key": rsa.private,
        "known_hosts": p.known_hosts,
        "src": src,
        "remote_cat": dir.join("remote-cat.bin"),
        "remote_sftp": dir.join("remote-sftp.bin"),
        "back_sftp": dir.join("back-sftp.bin"),
        "log": dir.join("paramiko.log"),
    });
    let report = run_python(&python, dir, "paramiko_client", PARAMIKO_CLIENT, &args);
    eprintln!("paramiko report: {report:#}");

    assert_eq!(
        report["exec"],
        json!({"stdout": "out\n", "stderr": "err\n", "exit": 7}),
        "{report:#}"
    );
    assert_eq!(report["cat_up"]["exit"], 0, "{report:#}");
    assert_eq!(file_sha256(&dir.join("remote-cat.bin")), want, "cat > file");
    assert_eq!(report["cat_down"], json!({"exit": 0, "sha256": want}));
    assert_eq!(file_sha256(&dir.join("remote-sftp.bin")), want, "sftp put");
    assert_eq!(file_sha256(&dir.join("back-sftp.bin")), want, "sftp get");
    assert_matrix("paramiko", &report, 3);
    let agreed: Vec<&Value> = report["matrix"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| &r["agreed"])
        .collect();
    assert_eq!(agreed[0]["Kex"], "mlkem768x25519-sha256", "{report:#}");
    assert_eq!(agreed[1]["Kex"], "curve25519-sha256@libssh.org");
    assert_eq!(agreed[1]["Cipher"], "aes256-gcm@openssh.com");
    // Chosen from the proxy's EXT_INFO server-sig-algs.
    assert_eq!(agreed[2]["Pubkey"], "rsa-sha2-512", "{report:#}");
}

/// PuTTY's options for alice: batch mode, the proxy's host key pinned by
/// fingerprint, her key converted to PuTTY's format.
fn putty_options(p: &Platform, key: &KeyPair) -> Vec<String> {
    let ppk = p.dir().join("alice.ppk");
    let mut cmd = Command::new("puttygen");
    cmd.arg(&key.private)
        .args(["-O", "private", "-o"])
        .arg(&ppk);
    ok(run_for(cmd, None, Duration::from_secs(30)));
    [
        "-batch",
        "-noagent",
        "-P",
        &p.ssh_port().to_string(),
        "-l",
        &format!("alice@{SESSION}"),
        "-i",
        &ppk.display().to_string(),
        "-hostkey",
        &p.proxy_key.fingerprint,
    ]
    .map(String::from)
    .to_vec()
}

/// A PuTTY tool isolated from the user's saved sessions and host key
/// cache: its HOME holds one saved session, `aesgcm`, preferring AES-GCM
/// (PuTTY's default prefers ChaCha20-Poly1305).
fn putty(p: &Platform, tool: &str) -> Command {
    let home = p.dir().join("putty-home");
    let sessions = home.join(".putty/sessions");
    std::fs::create_dir_all(&sessions).expect("putty home");
    std::fs::write(
        sessions.join("aesgcm"),
        "Cipher=aesgcm,chacha20,aes,WARN,3des,blowfish,arcfour,des\n",
    )
    .expect("saved session");
    let mut cmd = Command::new(tool);
    cmd.env("HOME", home).env_remove("SSH_AUTH_SOCK");
    cmd
}

#[test]
fn putty_plink_exec_and_pscp_over_scp_and_sftp() {
    let (p, key) = alice();
    let dir = p.dir();
    let opts = putty_options(&p, &key);

    let mut plink = putty(&p, "plink");
    plink
        .arg("-ssh")
        .args(&opts)
        .args(["127.0.0.1", "echo out; echo err >&2; exit 7"]);
    let out = run_for(plink, None, COMMAND_TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "plink: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n", "{stderr}");
    assert_eq!(stderr, "err\n");

    // What each cipher setting negotiates, from plink's event log (lines
    // like "Initialised AES-128 GCM (AES-NI accelerated) inbound encryption").
    for (session, cipher) in [(None, "ChaCha20"), (Some("aesgcm"), "AES-128 GCM")] {
        let mut plink = putty(&p, "plink");
        if let Some(s) = session {
            plink.args(["-load", s]);
        }
        plink
            .args(["-ssh", "-v"])
            .args(&opts)
            .args(["127.0.0.1", "true"]);
        let out = ok(run_for(plink, None, COMMAND_TIMEOUT));
        let log = String::from_utf8_lossy(&out.stderr);
        for way in ["outbound", "inbound"] {
            let initialised = log.lines().any(|l| {
                l.starts_with(&format!("Initialised {cipher} "))
                    && l.ends_with(&format!(" {way} encryption"))
            });
            assert!(initialised, "{cipher} not {way} in plink's log:\n{log}");
        }
    }

    let (src, want) = random_file(dir, "src.bin", 4 << 20);
    let target = |name: &str| format!("127.0.0.1:{}", dir.join(name).display());
    // Each protocol both ways (up by one, back down by the other), with
    // each cipher setting.
    for (session, up, down, name) in [
        (None, "-scp", "-sftp", "via-scp"),
        (Some("aesgcm"), "-sftp", "-scp", "via-sftp"),
    ] {
        let pscp = || {
            let mut c = putty(&p, "pscp");
            if let Some(s) = session {
                c.args(["-load", s]);
            }
            c
        };
        let mut put = pscp();
        put.arg(up).args(&opts).arg(&src).arg(target(name));
        ok(run_for(put, None, COMMAND_TIMEOUT));
        assert_eq!(file_sha256(&dir.join(name)), want, "pscp {up} upload");
        let back = dir.join(format!("{name}.back"));
        let mut get = pscp();
        get.arg(down).args(&opts).arg(target(name)).arg(&back);
        ok(run_for(get, None, COMMAND_TIMEOUT));
        assert_eq!(file_sha256(&back), want, "pscp {down} download");
    }
}

/// Dropbear 2022.83 (Debian's) shares one cipher with the proxy,
/// chacha20-poly1305@openssh.com (it has no AES-GCM), and no MAC: it must
/// skip MAC negotiation for an AEAD cipher.
#[test]
fn dropbear_dbclient_exec_and_transfers() {
    let (p, key) = alice();
    let dir = p.dir();
    let db_key = dir.join("alice.dropbear");
    let mut convert = Command::new("dropbearconvert");
    convert
        .args(["openssh", "dropbear"])
        .arg(&key.private)
        .arg(&db_key);
    ok(run_for(convert, None, Duration::from_secs(30)));
    // The proxy's key pinned in a HOME of our own. Dropbear looks hosts up
    // by name alone, without OpenSSH's `[host]:port`.
    let home = dir.join("dropbear-home");
    std::fs::create_dir_all(home.join(".ssh")).expect("home");
    let known = p.proxy_key.known_hosts_line(p.ssh_port());
    let (_, key_part) = known.split_once(' ').expect("known_hosts line");
    std::fs::write(
        home.join(".ssh/known_hosts"),
        format!("127.0.0.1 {key_part}"),
    )
    .expect("known_hosts");
    let dbclient = |command: &str| {
        // No controlling terminal: an unknown host key fails at once
        // instead of prompting on /dev/tty.
        let mut cmd = Command::new("setsid");
        cmd.args(["-w", "dbclient"])
            .env("HOME", &home)
            .env_remove("SSH_AUTH_SOCK")
            .args(["-T", "-p", &p.ssh_port().to_string(), "-l"])
            .arg(format!("alice@{SESSION}"))
            .arg("-i")
            .arg(&db_key)
            .args(["127.0.0.1", command]);
        cmd
    };

    let out = run_for(
        dbclient("echo out; echo err >&2; exit 7"),
        None,
        COMMAND_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "dbclient: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n", "{stderr}");
    assert_eq!(stderr, "err\n");

    let (src, want) = random_file(dir, "src.bin", 4 << 20);
    let remote = dir.join("remote.bin");
    ok(run_for(
        dbclient(&format!("cat > '{}'", remote.display())),
        Some(&src),
        COMMAND_TIMEOUT,
    ));
    assert_eq!(file_sha256(&remote), want, "dbclient upload");
    let out = ok(run_for(
        dbclient(&format!("cat '{}'", remote.display())),
        None,
        COMMAND_TIMEOUT,
    ));
    assert_eq!(sha256_hex(&out.stdout), want, "dbclient download");
}

/// OpenSSH with `extra` options (e.g. `-c CIPHER`), verbose so the
/// negotiation can be checked: uploads `mib` MiB with `cat > file`, reads it
/// back with `cat file`, both SHA-256 checked; returns ssh's debug output.
fn openssh_round_trip(extra: &[&str], mib: usize) -> String {
    let (p, key) = alice();
    let ssh = p.ssh(&key, "alice", SESSION);
    let dir = p.dir();
    let (src, want) = random_file(dir, "src.bin", mib << 20);
    let remote = dir.join("remote.bin");
    let mut pre = vec!["-v"];
    pre.extend_from_slice(extra);
    let mut up = ssh.ssh_with(&pre);
    up.arg(format!("cat > '{}'", remote.display()));
    let upload = ok(run_for(up, Some(&src), COMMAND_TIMEOUT));
    assert_eq!(file_sha256(&remote), want, "upload with {extra:?}");
    let mut down = ssh.ssh_with(&pre);
    down.arg(format!("cat '{}'", remote.display()));
    let out = ok(run_for(down, None, COMMAND_TIMEOUT));
    assert_eq!(sha256_hex(&out.stdout), want, "download with {extra:?}");
    String::from_utf8_lossy(&upload.stderr).into_owned()
}

fn openssh_cipher(cipher: &str) {
    let debug = openssh_round_trip(&["-c", cipher], 20);
    for way in ["client->server", "server->client"] {
        let line = format!("kex: {way} cipher: {cipher} ");
        assert!(debug.contains(&line), "no {line:?} in:\n{debug}");
    }
}

#[test]
fn openssh_aes256_gcm_20mb_both_ways() {
    openssh_cipher("aes256-gcm@openssh.com");
}

#[test]
fn openssh_aes128_gcm_20mb_both_ways() {
    openssh_cipher("aes128-gcm@openssh.com");
}

#[test]
fn openssh_chacha20_poly1305_20mb_both_ways() {
    openssh_cipher("chacha20-poly1305@openssh.com");
}

fn openssh_kex(kex: &str) {
    let option = format!("KexAlgorithms={kex}");
    let debug = openssh_round_trip(&["-o", &option], 2);
    let line = format!("debug1: kex: algorithm: {kex}");
    assert!(
        debug.lines().any(|l| l.trim_end() == line),
        "no {line:?} in:\n{debug}"
    );
}

#[test]
fn openssh_kex_curve25519_sha256() {
    openssh_kex("curve25519-sha256");
}

#[test]
fn openssh_kex_curve25519_sha256_libssh() {
    openssh_kex("curve25519-sha256@libssh.org");
}

#[test]
fn openssh_kex_mlkem768x25519_sha256() {
    let kex = "mlkem768x25519-sha256";
    let mut q = Command::new("ssh");
    q.args(["-Q", "kex"]);
    let listed = ok(run_for(q, None, Duration::from_secs(10)));
    if !String::from_utf8_lossy(&listed.stdout)
        .lines()
        .any(|l| l == kex)
    {
        let mut v = Command::new("ssh");
        v.arg("-V");
        let version = run_for(v, None, Duration::from_secs(10));
        eprintln!(
            "NOT RUN: this OpenSSH ({}) has no {kex} (OpenSSH 9.9+ does); \
             the asyncssh and paramiko tests negotiate it instead",
            String::from_utf8_lossy(&version.stderr).trim()
        );
        return;
    }
    openssh_kex(kex);
}

/// Logs in as alice with only `key` registered, offering only `algorithm`
/// as the signature; checks the login and a command.
fn openssh_user_key(key_kind: &str, bits: u32, algorithm: &str) {
    let mut p = Platform::start();
    let key = keygen(p.dir(), "alice-key", key_kind, bits);
    register(&p, "alice", &key);
    p.studio(SESSION, 1, "alice", &[], true);
    let ssh = p.ssh(&key, "alice", SESSION);
    let option = format!("PubkeyAcceptedAlgorithms={algorithm}");
    let mut cmd = ssh.ssh_with(&["-v", "-o", &option]);
    cmd.arg("echo $((6 * 7))");
    let out = ok(run_for(cmd, None, COMMAND_TIMEOUT));
    let debug = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n", "{debug}");
    assert!(
        debug.contains("Server accepts key:") && debug.contains(&key.fingerprint),
        "{debug}"
    );
}

#[test]
fn ecdsa_nistp256_user_key_logs_in() {
    openssh_user_key("ecdsa", 256, "ecdsa-sha2-nistp256");
}

#[test]
fn ecdsa_nistp384_user_key_logs_in() {
    openssh_user_key("ecdsa", 384, "ecdsa-sha2-nistp384");
}

#[test]
fn rsa_3072_user_key_logs_in_with_rsa_sha2_512() {
    openssh_user_key("rsa", 3072, "rsa-sha2-512");
}

#[test]
fn rsa_3072_user_key_logs_in_with_rsa_sha2_256() {
    openssh_user_key("rsa", 3072, "rsa-sha2-256");
}
