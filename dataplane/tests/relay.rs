//! The relay under the load users put on it: many busy channels on one
//! connection in both directions, through `-L` and `-D`; a stalled reader
//! beside a busy channel; rekeys on both legs in the middle of transfers;
//! live revocation; unsigned key probes. Real OpenSSH through the real
//! proxy to a real connect-client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::net::free_port;
use testkit::platform::Builder;
use testkit::{KeyPair, KeyType, Platform, ProxyOptions, Ssh, run};

const SESSION: &str = "01ac8894";
/// Bytes per transfer in the parallel test; 40 of them at once each way.
const CHUNK: usize = 8 << 20;

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// A loopback server for the tests' channels. Each connection's first
/// byte says what it wants: `d` = send the data, then close; `u` = read to
/// EOF, answer the SHA-256 of what came; `z` = send zeros until the peer
/// goes away.
fn data_server(data: Arc<Vec<u8>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let data = data.clone();
            std::thread::spawn(move || {
                let mut what = [0u8; 1];
                if conn.read_exact(&mut what).is_err() {
                    return;
                }
                match what[0] {
                    b'd' => {
                        let _ = conn.write_all(&data);
                    }
                    b'u' => {
                        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match conn.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => ctx.update(&buf[..n]),
                            }
                        }
                        let _ = conn.write_all(hex::encode(ctx.finish()).as_bytes());
                    }
                    _ => {
                        let zeros = vec![0u8; 64 * 1024];
                        while conn.write_all(&zeros).is_ok() {}
                    }
                }
            });
        }
    });
    port
}

/// `ssh -N` with `-L` to the data server and `-D`, on one connection.
struct Tunnel {
    child: Child,
    local: u16,
    socks: u16,
}

impl Tunnel {
    fn open(ssh: &Ssh, target: u16, extra: &[&str]) -> Self {
        let (local, socks) = (free_port(), free_port());
        let mut cmd = ssh.ssh_with(&[
            "-N",
            "-L",
            &format!("127.0.0.1:{local}:127.0.0.1:{target}"),
            "-D",
            &format!("127.0.0.1:{socks}"),
        ]);
        cmd.args(extra).stdin(Stdio::null()).stderr(Stdio::piped());
        let child = cmd.spawn().expect("ssh -N");
        for port in [local, socks] {
            testkit::net::wait_connect(port);
        }
        Self {
            child,
            local,
            socks,
        }
    }

    /// A channel to the data server, through `-L` or through SOCKS5.
    fn channel(&self, socks: bool, target: u16) -> TcpStream {
        if !socks {
            return TcpStream::connect(("127.0.0.1", self.local)).expect("connect -L");
        }
        let mut s = TcpStream::connect(("127.0.0.1", self.socks)).expect("connect -D");
        s.write_all(&[5, 1, 0]).expect("socks hello");
        let mut r = [0u8; 2];
        s.read_exact(&mut r).expect("socks method");
        assert_eq!(r, [5, 0]);
        let host = b"127.0.0.1";
        let mut req = vec![5, 1, 0, 3, host.len() as u8];
        req.extend_from_slice(host);
        req.extend_from_slice(&target.to_be_bytes());
        s.write_all(&req).expect("socks connect");
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply).expect("socks reply");
        assert_eq!(reply[1], 0, "SOCKS connect refused: {reply:?}");
        s
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn download(mut s: TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s.write_all(b"d").expect("ask");
    let mut got = Vec::with_capacity(CHUNK);
    s.read_to_end(&mut got).expect("download");
    hex_sha256(&got)
}

fn upload(mut s: TcpStream, data: &[u8]) -> String {
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s.write_all(b"u").expect("ask");
    s.write_all(data).expect("upload");
    s.shutdown(Shutdown::Write).expect("eof");
    let mut digest = String::new();
    s.read_to_string(&mut digest).expect("digest");
    digest
}

fn alice(platform: Builder) -> (Platform, KeyPair, Ssh) {
    let mut p = platform.start();
    let key = p.user("alice");
    p.studio(SESSION, 1, "alice", &["bob"], true);
    let ssh = p.ssh(&key, "alice", SESSION);
    (p, key, ssh)
}

#[test]
fn forty_busy_channels_both_ways_through_l_and_d_ten_rounds() {
    let (_p, _key, ssh) = alice(Platform::builder());
    let data = Arc::new(testkit::pattern(CHUNK, 7));
    let digest = hex_sha256(&data);
    let server = data_server(data.clone());
    let tunnel = Arc::new(Tunnel::open(&ssh, server, &[]));
    for round in 0..10 {
        let started = Instant::now();
        let workers: Vec<_> = (0..40)
            .map(|i| {
                let (tunnel, data) = (tunnel.clone(), data.clone());
                std::thread::spawn(move || {
                    let socks = i % 2 == 1;
                    let channel = tunnel.channel(socks, server);
                    if i % 4 < 2 {
                        download(channel)
                    } else {
                        upload(channel, &data)
                    }
                })
            })
            .collect();
        for (i, w) in workers.into_iter().enumerate() {
            let got = w.join().expect("transfer thread");
            assert_eq!(got, digest, "round {round}, channel {i}: data corrupted");
        }
        eprintln!("round {round}: {:?}", started.elapsed());
    }
}

#[test]
fn a_stalled_reader_does_not_slow_a_busy_channel_beside_it() {
    let (_p, _key, ssh) = alice(Platform::builder());
    let data = Arc::new(testkit::pattern(200 << 20, 11));
    let digest = hex_sha256(&data);
    let server = data_server(data.clone());
    let tunnel = Tunnel::open(&ssh, server, &[]);
    // Channel A: zeros without end; read a little, then stop reading.
    let mut stalled = tunnel.channel(false, server);
    stalled.write_all(b"z").expect("ask");
    let mut first = vec![0u8; 1 << 20];
    stalled.read_exact(&mut first).expect("first MiB");
    std::thread::sleep(Duration::from_secs(1));
    // Channel B: 200 MB, while A's windows are full all the way.
    assert_eq!(download(tunnel.channel(false, server)), digest);
    assert_eq!(download(tunnel.channel(true, server)), digest);
    // A is stalled, not dead.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stalled.read_exact(&mut first).expect("A still flows");
}

#[test]
fn rekeys_on_both_legs_in_the_middle_of_transfers_keep_every_byte() {
    let (p, _key, ssh) =
        alice(Platform::builder().proxy(
            ProxyOptions::default().env("CONNECT_SSH_REKEY_LIMIT", &(4u64 << 20).to_string()),
        ));
    let file = p.dir().join("big");
    let data = testkit::pattern(256 << 20, 3);
    std::fs::write(&file, &data).expect("write");
    let digest = hex_sha256(&data);
    // The user's client rekeys its leg every MiB on top of the proxy's own
    // rekeys of both legs every 4 MiB.
    let mut down = ssh.ssh_with(&["-o", "RekeyLimit=1M"]);
    down.arg(format!("cat {}", file.display()));
    let out = run(down);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hex_sha256(&out.stdout), digest, "download corrupted");
    let mut up = ssh.ssh_with(&["-o", "RekeyLimit=1M"]);
    up.arg("sha256sum")
        .stdin(std::fs::File::open(&file).expect("open"));
    let out = up.output().expect("ssh");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with(&digest), "upload corrupted: {said}");
    // Counted at close: give the proxy a moment to finish both.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let user = p.metric("connect_proxy_rekeys_total{leg=\"user\"}");
        let studio = p.metric("connect_proxy_rekeys_total{leg=\"studio\"}");
        if user >= 100.0 && studio >= 100.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "too few rekeys: user {user}, studio {studio}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn url_fingerprint(f: &str) -> String {
    f.replace(':', "%3A")
        .replace('+', "%2B")
        .replace('/', "%2F")
}

/// Waits for a live `ssh` to end after a state change; returns its stderr.
fn ended(mut child: Child, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the live session went on"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    err
}

/// A live session that printed its first line.
fn live(ssh: &Ssh) -> Child {
    let mut cmd = ssh.ssh();
    cmd.arg("echo up; sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("ssh");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    assert_eq!(line.trim(), "up");
    child
}

#[test]
fn a_revoked_login_ends_with_its_reason() {
    let (p, key, ssh) = alice(Platform::builder());
    let bob = p.user("bob");
    let bob_ssh = p.ssh(&bob, "bob", SESSION);

    // The member removed.
    let child = live(&bob_ssh);
    let (status, body) = p.api(
        "PUT",
        &format!("/v1/sessions/{SESSION}"),
        Some(serde_json::json!({"workspaceId": 1, "owner": "alice", "members": [], "sshEnabled": true})),
    );
    assert!(status < 300, "{body}");
    let err = ended(child, "member removed");
    assert!(
        err.contains("you are no longer a member of the studio"),
        "{err}"
    );

    // The key deleted.
    let child = live(&ssh);
    let (status, body) = p.api(
        "DELETE",
        &format!("/v1/users/alice/keys/{}", url_fingerprint(&key.fingerprint)),
        None,
    );
    assert!(status < 300, "{status} {body}");
    let err = ended(child, "key removed");
    assert!(
        err.contains("this key was removed from your account"),
        "{err}"
    );

    // The toggle turned off (with a fresh key).
    let key2 = KeyPair::generate(p.dir(), "alice-second", KeyType::Ed25519);
    let (status, body) = p.api(
        "POST",
        "/v1/users/alice/keys",
        Some(serde_json::json!({ "key": key2.public_line })),
    );
    assert_eq!(status, 201, "{body}");
    let ssh2 = p.ssh(&key2, "alice", SESSION);
    let child = live(&ssh2);
    let (status, body) = p.api(
        "PUT",
        &format!("/v1/sessions/{SESSION}"),
        Some(serde_json::json!({"workspaceId": 1, "owner": "alice", "members": [], "sshEnabled": false})),
    );
    assert!(status < 300, "{body}");
    let err = ended(child, "toggle off");
    assert!(
        err.contains("the studio's SSH connection setting was turned off"),
        "{err}"
    );
    assert!(p.metric("connect_proxy_connections_closed_total{reason=\"revoked\"}") >= 3.0);
}

/// What `ssh -v` says about an unsigned offer of `key` as `login`.
fn offer(p: &Platform, key: &KeyPair, login_user: &str, session: &str) -> bool {
    let mut cmd = p.ssh(key, login_user, session).ssh_with(&["-v"]);
    cmd.arg("true");
    let out = run(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    err.contains("Server accepts key")
}

#[test]
fn an_unsigned_probe_learns_nothing_about_sessions() {
    let mut p = Platform::start();
    let alice = p.user("alice");
    let stranger = KeyPair::generate(p.dir(), "stranger", KeyType::Ed25519);
    p.studio(SESSION, 1, "alice", &[], true);
    p.studio("00000003", 1, "alice", &[], false);
    // Alice's key is "acceptable" whatever session she names: existing and
    // hers, non-existent, toggled off, someone else's user name.
    for session in [SESSION, "0000ffff", "00000003"] {
        assert!(offer(&p, &alice, "alice", session), "{session}");
    }
    // Any other key is refused before a signature, for any session.
    for session in [SESSION, "0000ffff"] {
        assert!(!offer(&p, &stranger, "alice", session), "{session}");
    }
    assert!(!offer(&p, &alice, "bob", SESSION));
}

#[test]
fn extra_channels_beyond_the_limit_are_refused_and_the_rest_flow() {
    let (_p, _key, ssh) = alice(
        Platform::builder()
            .proxy(ProxyOptions::default().env("CONNECT_SSH_MAX_CONN_CHANNELS", "4")),
    );
    let data = Arc::new(testkit::pattern(1 << 20, 5));
    let digest = hex_sha256(&data);
    let server = data_server(data);
    let tunnel = Tunnel::open(&ssh, server, &[]);
    // Four channels held open (stalled): the fifth is refused...
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = tunnel.channel(false, server);
            s.write_all(b"z").expect("ask");
            let mut b = [0u8; 1];
            s.read_exact(&mut b).expect("open");
            s
        })
        .collect();
    let mut fifth = tunnel.channel(false, server);
    fifth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = fifth.write_all(b"d");
    let mut got = Vec::new();
    let _ = fifth.read_to_end(&mut got);
    assert!(got.is_empty(), "a fifth channel was opened");
    // ...and once one closes, a new one works.
    held.pop();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(download(tunnel.channel(false, server)), digest);
    drop(held);
}
