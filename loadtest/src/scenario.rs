//! The scenarios and what they share: the connector, the logins, the
//! recorder, the run's bounds (deadline, operation budget, arrival rate),
//! and a stop signal (Ctrl-C).
//!
//! Operation kinds recorded: `login` (TCP, key exchange, authentication;
//! through the jump host if any), `exec` (channel open to exit status),
//! `keystroke` (one byte typed into a pty until its echo is back),
//! `download` / `upload` (one verified transfer), `session` (an idle
//! session opened and held).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{Conn, Connector};
use crate::failure::Failure;
use crate::logins::Logins;
use crate::report::Recorder;

pub mod bulk;
pub mod churn;
pub mod connect;
pub mod idle;
pub mod interactive;
pub mod mixed;

/// Everything a scenario's tasks share.
#[derive(Debug)]
pub struct Ctx {
    pub connector: Connector,
    pub logins: Logins,
    pub rec: Recorder,
    pub started: Instant,
    /// No new operation starts after this; the run ends at it.
    pub deadline: Instant,
    /// Operations left (`--count`), if bounded by count.
    budget: Option<AtomicU64>,
    pacer: Option<Pacer>,
    /// Time limit of one operation (a hung server must not hang the run).
    pub op_timeout: Duration,
    /// Workers start evenly spread over this.
    pub ramp: Duration,
    stop: tokio::sync::watch::Sender<bool>,
    /// The first failure of each kind, to show what went wrong.
    examples: Mutex<BTreeMap<String, String>>,
}

/// Bounds of a run.
#[derive(Debug, Clone)]
pub struct Bounds {
    pub duration: Duration,
    pub count: Option<u64>,
    /// Operations started per second at most (open loop for `churn`).
    pub rate: Option<f64>,
    pub ramp: Duration,
    pub op_timeout: Duration,
}

impl Ctx {
    pub fn new(connector: Connector, logins: Logins, rec: Recorder, bounds: &Bounds) -> Self {
        let started = rec.started();
        Self {
            connector,
            logins,
            rec,
            started,
            deadline: started + bounds.duration,
            budget: bounds.count.map(AtomicU64::new),
            pacer: bounds.rate.map(|r| Pacer::new(started, r)),
            op_timeout: bounds.op_timeout,
            ramp: bounds.ramp,
            stop: tokio::sync::watch::channel(false).0,
            examples: Mutex::new(BTreeMap::new()),
        }
    }

    /// Ends the run early (Ctrl-C): no new operations, idle sessions close.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Before the deadline and not stopped.
    pub fn live(&self) -> bool {
        !self.stopped() && Instant::now() < self.deadline
    }

    /// [`live`](Self::live), with operations left in the budget.
    pub fn running(&self) -> bool {
        self.live()
            && self
                .budget
                .as_ref()
                .is_none_or(|left| left.load(Ordering::Relaxed) > 0)
    }

    /// Takes one operation from the budget; false when it is spent.
    pub fn take(&self) -> bool {
        match &self.budget {
            None => true,
            Some(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }

    /// Whether a start is permitted now: running, budget left, and (with a
    /// rate) the next slot reached before the deadline.
    pub async fn start_next(&self) -> bool {
        if !self.running() || !self.take() {
            return false;
        }
        if let Some(pacer) = &self.pacer {
            let slot = pacer.next_slot();
            if slot >= self.deadline {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(slot.into()) => {}
                _ = self.wait_stop() => return false,
            }
        }
        true
    }

    /// Resolves when the run is stopped.
    pub async fn wait_stop(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Resolves at the deadline or when stopped.
    pub async fn wait_end(&self) {
        tokio::select! {
            _ = tokio::time::sleep_until(self.deadline.into()) => {}
            _ = self.wait_stop() => {}
        }
    }

    /// Worker `i` of `n` waits its turn in the ramp; false if the run ended
    /// meanwhile.
    pub async fn ramp_up(&self, i: usize, n: usize) -> bool {
        if !self.ramp.is_zero() && n > 1 {
            let at = self.started + self.ramp.mul_f64(i as f64 / n as f64);
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = self.wait_stop() => return false,
            }
        }
        self.running()
    }

    /// `fut` bounded by the operation timeout.
    pub async fn timed<T>(
        &self,
        stage: &str,
        fut: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Failure::timeout(stage, self.op_timeout)),
        }
    }

    /// Records a failure of `op` (a stage equal to the op is not repeated).
    pub fn fail(&self, op: &'static str, f: &Failure) {
        let kind = f
            .kind
            .strip_prefix(op)
            .and_then(|k| k.strip_prefix(": "))
            .unwrap_or(&f.kind);
        self.rec.error(op, kind);
        let key = format!("{op}: {kind}");
        let mut examples = self.examples.lock().unwrap_or_else(|e| e.into_inner());
        examples.entry(key).or_insert_with(|| f.detail.clone());
    }

    /// The first failure of each kind: "op: kind" → detail.
    pub fn examples(&self) -> BTreeMap<String, String> {
        self.examples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Logs in as the next login; records `login`.
    pub async fn login(&self) -> Option<Conn> {
        let login = self.logins.next().clone();
        let t0 = Instant::now();
        match self
            .timed("login", self.connector.connect(&login.name, login.key))
            .await
        {
            Ok(conn) => {
                self.rec.ok("login", t0.elapsed());
                Some(conn)
            }
            Err(f) => {
                self.fail("login", &f);
                None
            }
        }
    }
}

/// Start times spaced `1/rate` apart from the run's start.
#[derive(Debug)]
struct Pacer {
    start: Instant,
    interval: Duration,
    n: AtomicU64,
}

impl Pacer {
    fn new(start: Instant, rate: f64) -> Self {
        Self {
            start,
            interval: Duration::from_secs_f64(1.0 / rate.max(1e-6)),
            n: AtomicU64::new(0),
        }
    }

    fn next_slot(&self) -> Instant {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        self.start + self.interval.mul_f64(n as f64)
    }
}

/// `n` workers of `work`, each with its index, each started at its turn
/// in the ramp (and not at all if the run ends first); waits for all.
pub async fn workers<F, Fut>(ctx: &Arc<Ctx>, n: usize, work: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (ctx, work) = (ctx.clone(), work(i));
            tokio::spawn(async move {
                if ctx.ramp_up(i, n).await {
                    work.await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_spaces_starts_by_the_rate() {
        let start = Instant::now();
        let p = Pacer::new(start, 4.0);
        let slots: Vec<_> = (0..3).map(|_| p.next_slot() - start).collect();
        assert_eq!(
            slots,
            [
                Duration::ZERO,
                Duration::from_millis(250),
                Duration::from_millis(500)
            ]
        );
    }
}
