//! Who may start a handshake: the caps on connections that have not
//! authenticated yet, kept apart from authenticated ones so a flood of idle
//! TCP connections cannot lock real users out.
//!
//! - `CONNECT_SSH_MAX_STARTUPS=start:rate:full` (sshd's syntax): past
//!   `start` unauthenticated connections, random early drop with
//!   probability `rate`%, rising linearly to 100% at `full`. Unlike sshd,
//!   what is dropped is the *oldest* unauthenticated connection on the
//!   accepting core, not the new one: a real client authenticates in
//!   milliseconds, so a flood of idle connections is what gets dropped and
//!   users keep getting in ([`Preauth`]);
//! - `CONNECT_SSH_MAX_STARTUPS_PER_SOURCE`: unauthenticated connections
//!   from one address;
//! - penalties (sshd's PerSourcePenalties): a source whose connections fail
//!   authentication or time out in the handshake accumulates penalty time,
//!   which drains in real time; while it exceeds `CONNECT_SSH_PENALTY`, new
//!   connections from that source are dropped at accept.
//!
//! Shared by every core; touched once at accept and once when a connection
//! authenticates or ends, never on the data path.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Penalty for a connection that ended with a refused authentication.
pub const PENALTY_AUTHFAIL: Duration = Duration::from_secs(5);
/// Penalty for a connection that completed the key exchange and left
/// without authenticating (sshd's `noauth`): key exchanges cost the proxy
/// CPU, and a source repeating them (DHEat) is slowed to about one a second
/// once it has spent the threshold.
pub const PENALTY_NOAUTH: Duration = Duration::from_secs(1);
/// Penalty for a connection that did not authenticate in time.
pub const PENALTY_GRACE: Duration = Duration::from_secs(10);
/// Sources tracked before penalties are forgotten (those with live
/// unauthenticated connections are always kept).
const MAX_TRACKED: usize = 65_536;

/// The caps, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub start: usize,
    pub rate: u32,
    pub full: usize,
    pub per_source: usize,
    /// `Duration::ZERO` turns penalties off.
    pub penalty: Duration,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            start: 1000,
            rate: 30,
            full: 4000,
            // High enough for a burst of logins from one NAT or load
            // balancer address; low enough that one address cannot fill
            // `start` alone.
            per_source: 250,
            penalty: Duration::from_secs(30),
        }
    }
}

/// Parses `start:rate:full` (or a single number: a hard cap).
pub fn parse_startups(v: &str) -> Result<(usize, u32, usize), String> {
    let parts: Vec<&str> = v.trim().split(':').collect();
    let num = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("{s:?} is not a number"))
    };
    let (start, rate, full) = match parts.as_slice() {
        [n] => {
            let n = num(n)?;
            (n, 100, n)
        }
        [s, r, f] => (num(s)?, num(r)? as u32, num(f)?),
        _ => return Err(format!("{v:?} is not start:rate:full (e.g. 100:30:1000)")),
    };
    if start == 0 || full < start || rate > 100 {
        return Err(format!(
            "{v:?}: need 0 < start <= full and rate <= 100 (e.g. 100:30:1000)"
        ));
    }
    Ok((start, rate, full))
}

/// Why a connection was not admitted (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    PerSource,
    Penalty,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Self::PerSource => "max_startups_per_source",
            Self::Penalty => "penalty",
        }
    }
}

/// One core's unauthenticated connections, oldest first, each with the
/// signal that ends it and its admission slot. Entries are registered at
/// accept, before the connection's task first runs, so a burst of accepts
/// evicts connections whose tasks have not started yet too.
#[derive(Debug, Default)]
pub struct Preauth {
    next: u64,
    waiting: std::collections::BTreeMap<u64, (Weak<tokio::sync::Notify>, Rc<Slot>)>,
}

/// Removes a connection from its core's [`Preauth`] when dropped.
#[derive(Debug)]
pub struct PreauthEntry {
    id: u64,
    pub evicted: Rc<tokio::sync::Notify>,
}

thread_local! {
    static PREAUTH: std::cell::RefCell<Preauth> = std::cell::RefCell::new(Preauth::default());
}

impl PreauthEntry {
    /// Registers a new unauthenticated connection on this core.
    pub fn register(startup: &Startup) -> Self {
        let evicted = Rc::new(tokio::sync::Notify::new());
        let id = PREAUTH.with(|p| {
            let mut p = p.borrow_mut();
            p.next += 1;
            let id = p.next;
            p.waiting
                .insert(id, (Rc::downgrade(&evicted), startup.slot.clone()));
            id
        });
        Self { id, evicted }
    }
}

impl Drop for PreauthEntry {
    fn drop(&mut self) {
        PREAUTH.with(|p| p.borrow_mut().waiting.remove(&self.id));
    }
}

/// Ends this core's oldest unauthenticated connection; false if none. Its
/// slots are released now, not when its task gets to run: otherwise a
/// burst of accepts would count the connections it evicts against the caps.
pub fn evict_oldest() -> bool {
    PREAUTH.with(|p| {
        let mut p = p.borrow_mut();
        while let Some((_, (weak, slot))) = p.waiting.pop_first() {
            if let Some(n) = weak.upgrade() {
                slot.release();
                // Stored as a permit if the task is not waiting yet.
                n.notify_one();
                return true;
            }
        }
        false
    })
}

/// The shared counters.
#[derive(Debug)]
pub struct Admission {
    caps: Caps,
    unauthenticated: AtomicUsize,
    sources: Mutex<HashMap<IpAddr, Source>>,
}

#[derive(Debug, Default)]
struct Source {
    unauthenticated: usize,
    /// Penalised until then (penalty time drains in real time).
    penalised_until: Option<Instant>,
}

/// One admitted, not yet authenticated connection; releases its slots when
/// dropped, when [`Startup::authenticated`] is called, or when it is
/// evicted ([`evict_oldest`]), whichever comes first.
#[derive(Debug)]
pub struct Startup {
    slot: Rc<Slot>,
    /// Admitting this one drops the oldest unauthenticated connection on
    /// its core (random early drop).
    pub evict: bool,
}

/// The counts one startup holds, released once.
#[derive(Debug)]
struct Slot {
    admission: Arc<Admission>,
    source: IpAddr,
    live: Cell<bool>,
}

impl Slot {
    fn release(&self) {
        if self.live.replace(false) {
            self.admission.release(self.source);
        }
    }
}

impl Admission {
    pub fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Self {
            caps,
            unauthenticated: AtomicUsize::new(0),
            sources: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a new connection from `source`, or says why not.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Startup, Refused> {
        let now = Instant::now();
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let entry = sources.entry(source).or_default();
        if let Some(until) = entry.penalised_until {
            if until.saturating_duration_since(now) > self.caps.penalty
                && !self.caps.penalty.is_zero()
            {
                return Err(Refused::Penalty);
            }
            if until <= now {
                entry.penalised_until = None;
            }
        }
        if entry.unauthenticated >= self.caps.per_source {
            return Err(Refused::PerSource);
        }
        let n = self.unauthenticated.load(Ordering::Relaxed);
        let evict = n >= self.caps.full || (n >= self.caps.start && early_drop(&self.caps, n));
        entry.unauthenticated += 1;
        self.unauthenticated.fetch_add(1, Ordering::Relaxed);
        if sources.len() > MAX_TRACKED {
            // A flood from very many addresses: forget penalties rather than
            // grow (and scan on every accept) without bound.
            sources.retain(|_, s| s.unauthenticated > 0);
        }
        Ok(Startup {
            slot: Rc::new(Slot {
                admission: self.clone(),
                source,
                live: Cell::new(true),
            }),
            evict,
        })
    }

    /// Adds penalty time to `source`.
    pub fn penalise(&self, source: IpAddr, by: Duration) {
        if self.caps.penalty.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let entry = sources.entry(source).or_default();
        let from = entry.penalised_until.filter(|u| *u > now).unwrap_or(now);
        // Accumulated time is capped so a source is never banned for long.
        let cap = now + self.caps.penalty * 4;
        entry.penalised_until = Some((from + by).min(cap));
    }

    /// Unauthenticated connections now.
    pub fn unauthenticated(&self) -> usize {
        self.unauthenticated.load(Ordering::Relaxed)
    }

    fn release(&self, source: IpAddr) {
        self.unauthenticated.fetch_sub(1, Ordering::Relaxed);
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sources.get_mut(&source) {
            s.unauthenticated = s.unauthenticated.saturating_sub(1);
            if s.unauthenticated == 0 && s.penalised_until.is_none() {
                sources.remove(&source);
            }
        }
    }
}

impl Startup {
    /// The connection authenticated: it no longer counts as a startup.
    pub fn authenticated(self) {
        self.slot.release();
    }

    /// The connection failed authentication or timed out: penalise its
    /// source (the slot is released when this is dropped).
    pub fn penalise(&self, by: Duration) {
        self.slot.admission.penalise(self.slot.source, by);
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        self.slot.release();
    }
}

/// Random early drop between `start` and `full` (sshd's MaxStartups).
fn early_drop(caps: &Caps, n: usize) -> bool {
    let span = (caps.full - caps.start).max(1) as u64;
    let over = (n - caps.start) as u64;
    let percent = u64::from(caps.rate) + (100 - u64::from(caps.rate)) * over / span;
    random_percent() < percent
}

fn random_percent() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x % 100
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn per_source_cap_and_release() {
        let a = Admission::new(Caps {
            per_source: 2,
            ..Caps::default()
        });
        let one = a.admit(ip(2)).expect("first");
        let _two = a.admit(ip(2)).expect("second");
        assert_eq!(a.admit(ip(2)).unwrap_err(), Refused::PerSource);
        assert!(a.admit(ip(3)).is_ok(), "another source is not limited");
        one.authenticated();
        assert!(
            a.admit(ip(2)).is_ok(),
            "an authenticated one frees its slot"
        );
    }

    #[test]
    fn early_drop_between_start_and_full_always_at_full() {
        let caps = Caps {
            start: 10,
            rate: 50,
            full: 20,
            per_source: 1000,
            ..Caps::default()
        };
        let a = Admission::new(caps);
        let held: Vec<_> = (0..10).map(|_| a.admit(ip(2)).expect("admitted")).collect();
        assert!(
            held.iter().all(|s| !s.evict),
            "under start nothing is dropped"
        );
        // At start, `rate`% of new admissions drop the oldest (binomial over
        // 2,000 draws: 50% +- 5 is over six standard deviations).
        let drops = (0..2000).filter(|_| early_drop(&caps, 10)).count();
        assert!((900..1100).contains(&drops), "{drops} of 2000 at start");
        let drops = (0..2000).filter(|_| early_drop(&caps, 15)).count();
        assert!((1350..1650).contains(&drops), "{drops} of 2000 half way");
        let more: Vec<_> = (0..10).map(|_| a.admit(ip(2)).expect("admitted")).collect();
        assert!(a.admit(ip(2)).expect("admitted").evict, "at full, always");
        drop(held);
        drop(more);
        assert_eq!(a.unauthenticated(), 0);
    }

    #[test]
    fn the_oldest_unauthenticated_connection_is_evicted_first() {
        let a = Admission::new(Caps {
            per_source: 2,
            ..Caps::default()
        });
        let (one, two) = (a.admit(ip(2)).expect("one"), a.admit(ip(2)).expect("two"));
        let first = PreauthEntry::register(&one);
        let second = PreauthEntry::register(&two);
        assert_eq!(a.admit(ip(2)).unwrap_err(), Refused::PerSource);
        assert!(evict_oldest());
        // The evicted one's slots are free before its task runs...
        assert_eq!(a.unauthenticated(), 1);
        let three = a.admit(ip(2)).expect("a slot was freed");
        drop(three);
        // ...and freed only once.
        drop(one);
        assert_eq!(a.unauthenticated(), 1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), first.evicted.notified())
                .await
                .expect("the oldest is told");
            assert!(
                tokio::time::timeout(Duration::from_millis(50), second.evicted.notified())
                    .await
                    .is_err(),
                "the second is not"
            );
        });
        drop(second);
        assert!(!evict_oldest(), "a dropped entry is not evicted");
    }

    #[test]
    fn penalties_accumulate_then_drain() {
        let a = Admission::new(Caps {
            penalty: Duration::from_millis(300),
            ..Caps::default()
        });
        a.penalise(ip(2), Duration::from_millis(200));
        assert!(a.admit(ip(2)).is_ok(), "under the threshold");
        a.penalise(ip(2), Duration::from_millis(200));
        assert_eq!(a.admit(ip(2)).unwrap_err(), Refused::Penalty);
        assert!(a.admit(ip(3)).is_ok());
        std::thread::sleep(Duration::from_millis(200));
        assert!(a.admit(ip(2)).is_ok(), "penalty drains in real time");
    }

    #[test]
    fn startups_syntax() {
        assert_eq!(parse_startups("10:30:100"), Ok((10, 30, 100)));
        assert_eq!(parse_startups("50"), Ok((50, 100, 50)));
        assert!(parse_startups("10:30").is_err());
        assert!(parse_startups("100:30:10").is_err());
        assert!(parse_startups("x").is_err());
    }
}
