//! The bridge's per-chunk path (`dataplane/src/bridge.rs`).
//!
//! - `bridge_chunk`: the accounting each direction does per `Data`
//!   message before writing it to the other leg: bump the core's byte
//!   counter, store the session's last-activity time. Timed alone, it is
//!   the bridge's own cost per chunk; everything else on the path is
//!   russh's (decrypt, queue, window, encrypt).
//! - `bridge_throughput`: a real bridged channel in one process, the
//!   whole path a chunk takes. A russh client (the user) sends 32 KiB
//!   chunks over `tokio::io::duplex` to a russh server (the proxy's user
//!   leg) whose channel is bridged by `dataplane::bridge::start` to a russh
//!   client (the proxy's Studio leg), connected over another duplex to a
//!   russh server (the Studio) that counts and drops the data. The proxy's
//!   legs use the proxy's own russh configuration (window, queue, ciphers).
//!   All four SSH endpoints share one two-thread runtime, so the figure is
//!   every endpoint's CPU together, not the proxy's alone: with
//!   aes256-gcm each byte is encrypted twice and decrypted twice. The
//!   `none` cipher (no encryption, no MAC) shows what is left without
//!   cryptography: framing, queues, windows, task wake-ups.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dataplane::bridge::{self, LastActive, Link};
use dataplane::metrics::{CoreMetrics, Metrics};
use russh::keys::{PrivateKey, PublicKeyOrCertificate};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelMsg, MethodKind, MethodSet, Preferred, cipher, client, mac, server};
use tokio::sync::watch;

/// The chunk size: russh's and OpenSSH's largest channel packet payload.
const CHUNK: usize = 32 * 1024;
/// Chunks per timed iteration: 1 MiB.
const CHUNKS_PER_ITER: u64 = 32;
/// Bytes the in-memory pipes buffer, like a socket's buffers.
const PIPE: usize = 1024 * 1024;

fn core_metrics() -> CoreMetrics {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).expect("register metrics");
    CoreMetrics::new(&metrics, 0)
}

/// What `up` and `down` do per `Data` message besides forwarding it.
fn accounting(c: &mut Criterion) {
    let metrics = core_metrics();
    let active = LastActive::default();
    let mut group = c.benchmark_group("bridge_chunk");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    group.bench_function("accounting", |b| {
        b.iter(|| bridge::account(&metrics.bytes_up, &active, black_box(CHUNK)))
    });
    group.bench_function("counter_only", |b| {
        b.iter(|| metrics.bytes_up.inc_by(black_box(CHUNK) as u64))
    });
    group.bench_function("last_active_only", |b| b.iter(|| active.touch()));
    group.finish();
}

/// Both client legs accept the in-process servers' host keys unseen.
struct AnyHostKey;

impl client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// The Studio: accepts anyone, counts the bytes of every channel.
struct Studio {
    received: Arc<watch::Sender<u64>>,
}

impl server::Handler for Studio {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        mut channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let received = self.received.clone();
        tokio::spawn(async move {
            while let Some(msg) = channel.wait().await {
                if let ChannelMsg::Data { data } = msg {
                    received.send_modify(|n| *n += data.len() as u64);
                }
            }
        });
        reply.accept().await;
        Ok(())
    }
}

/// The proxy's user leg: accepts anyone and bridges every session channel
/// to a new channel on the Studio leg, as `dataplane::handler` does.
struct Front {
    studio: Arc<client::Handle<AnyHostKey>>,
    metrics: CoreMetrics,
    active: Arc<LastActive>,
    links: Vec<Link>,
}

impl server::Handler for Front {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let studio = self.studio.channel_open_session().await?;
        self.links.push(bridge::start(
            channel,
            studio,
            session.handle(),
            self.metrics.clone(),
            self.active.clone(),
            None,
        ));
        reply.accept().await;
        Ok(())
    }
}

/// `cipher` only, and no MAC if it is `none`; everything else as given.
fn preferred(base: &Preferred, name: cipher::Name) -> Preferred {
    let mut p = base.clone();
    p.cipher = vec![name].into();
    if name == cipher::NONE {
        p.mac = vec![mac::NONE].into();
    }
    p
}

fn serve<H: server::Handler + Send + 'static>(
    config: server::Config,
    stream: tokio::io::DuplexStream,
    handler: H,
) {
    tokio::spawn(async move {
        if let Ok(running) = server::run_stream(Arc::new(config), stream, handler).await {
            let _ = running.await;
        }
    });
}

/// One bridged channel, open and ready for data.
struct Bridged {
    channel: Channel<client::Msg>,
    received: watch::Receiver<u64>,
    _user: client::Handle<AnyHostKey>,
}

/// The Studio's and the proxy's host keys.
struct HostKeys {
    studio: PrivateKey,
    proxy: PrivateKey,
}

async fn bridged(keys: &HostKeys, name: cipher::Name) -> Bridged {
    let methods = MethodSet::from(&[MethodKind::None][..]);

    // Studio leg: the Studio's server, the proxy's client.
    let (proxy_end, studio_end) = tokio::io::duplex(PIPE);
    let (tx, received) = watch::channel(0u64);
    let studio_config = server::Config {
        keys: vec![keys.studio.clone()],
        methods: methods.clone(),
        preferred: preferred(&Preferred::default(), name),
        ..server::Config::default()
    };
    serve(
        studio_config,
        studio_end,
        Studio {
            received: Arc::new(tx),
        },
    );
    let mut proxy_client = dataplane::core::client_config();
    proxy_client.preferred = preferred(&proxy_client.preferred, name);
    let mut studio = client::connect_stream(Arc::new(proxy_client), proxy_end, AnyHostKey)
        .await
        .expect("Studio leg handshake");
    assert!(
        studio
            .authenticate_none("proxy")
            .await
            .expect("Studio leg auth")
            .success()
    );

    // User leg: the proxy's server, the user's client.
    let (user_end, front_end) = tokio::io::duplex(PIPE);
    let mut front_config = dataplane::core::server_config(keys.proxy.clone());
    front_config.methods = methods;
    front_config.preferred = preferred(&front_config.preferred, name);
    serve(
        front_config,
        front_end,
        Front {
            studio: Arc::new(studio),
            metrics: core_metrics(),
            active: Arc::new(LastActive::default()),
            links: Vec::new(),
        },
    );
    let user_config = client::Config {
        preferred: preferred(&Preferred::default(), name),
        ..client::Config::default()
    };
    let mut user = client::connect_stream(Arc::new(user_config), user_end, AnyHostKey)
        .await
        .expect("user leg handshake");
    assert!(
        user.authenticate_none("bench@00000001")
            .await
            .expect("user leg auth")
            .success()
    );
    let channel = user
        .channel_open_session()
        .await
        .expect("open bridged channel");
    Bridged {
        channel,
        received,
        _user: user,
    }
}

fn throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let keys = HostKeys {
        studio: loadtest::logins::generate_key().expect("studio host key"),
        proxy: loadtest::logins::generate_key().expect("proxy key"),
    };
    let chunk = Bytes::from(vec![0x5a; CHUNK]);

    let mut group = c.benchmark_group("bridge_throughput");
    group.throughput(Throughput::Bytes(CHUNKS_PER_ITER * CHUNK as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_secs(1));
    for (label, name) in [("aes256-gcm", cipher::AES_256_GCM), ("none", cipher::NONE)] {
        let mut link = runtime.block_on(bridged(&keys, name));
        group.bench_function(BenchmarkId::new("32KiB_chunks", label), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let target = *link.received.borrow() + iters * CHUNKS_PER_ITER * CHUNK as u64;
                    let started = Instant::now();
                    for _ in 0..iters * CHUNKS_PER_ITER {
                        link.channel
                            .data_bytes(chunk.clone())
                            .await
                            .expect("send chunk");
                    }
                    link.received
                        .wait_for(|n| *n >= target)
                        .await
                        .expect("Studio still counting");
                    started.elapsed()
                })
            })
        });
        runtime.block_on(async {
            let _ = link.channel.close().await;
        });
    }
    group.finish();
}

criterion_group!(benches, accounting, throughput);
criterion_main!(benches);
