//! Per-session activity, reported to the control plane in batches so the
//! platform does not stop a Studio someone is using over SSH.
//!
//! The data path only stores a timestamp in its connection's
//! [`LastActive`] (one relaxed atomic store per chunk); each core's table
//! is locked only when a connection starts or ends, and by the reporter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use model::SessionId;

use std::sync::atomic::{AtomicI64, Ordering};

/// Last time a connection moved a byte, unix seconds; shared with the
/// activity reporter.
#[derive(Debug, Default)]
pub struct LastActive(AtomicI64);

impl LastActive {
    pub fn touch(&self) {
        self.0.store(now_secs(), Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One core's live connections by session.
#[derive(Default)]
pub struct Table {
    sessions: Mutex<HashMap<SessionId, Vec<Arc<LastActive>>>>,
}

/// Removes its connection from the table when dropped.
pub struct Registration {
    table: Weak<Table>,
    session: SessionId,
    active: Arc<LastActive>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(table) = self.table.upgrade() else {
            return;
        };
        let Ok(mut sessions) = table.sessions.lock() else {
            return;
        };
        if let Some(conns) = sessions.get_mut(&self.session) {
            conns.retain(|c| !Arc::ptr_eq(c, &self.active));
            if conns.is_empty() {
                sessions.remove(&self.session);
            }
        }
    }
}

/// One session's activity across this proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub session: SessionId,
    pub last_activity: i64,
    pub connections: u64,
}

impl Table {
    pub fn register(self: &Arc<Self>, session: SessionId, active: Arc<LastActive>) -> Registration {
        active.touch();
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.entry(session).or_default().push(active.clone());
        }
        Registration {
            table: Arc::downgrade(self),
            session,
            active,
        }
    }

    /// Adds this core's sessions into `into`.
    pub fn collect(&self, into: &mut HashMap<SessionId, Report>) {
        let Ok(sessions) = self.sessions.lock() else {
            return;
        };
        for (id, conns) in sessions.iter() {
            let last = conns.iter().map(|c| c.get()).max().unwrap_or(0);
            let entry = into.entry(*id).or_insert(Report {
                session: *id,
                last_activity: 0,
                connections: 0,
            });
            entry.last_activity = entry.last_activity.max(last);
            entry.connections += conns.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_count_and_leave() {
        let table = Arc::new(Table::default());
        let id: SessionId = "01ac8894".parse().expect("id");
        let a = table.register(id, Arc::new(LastActive::default()));
        let b = table.register(id, Arc::new(LastActive::default()));
        let mut out = HashMap::new();
        table.collect(&mut out);
        assert_eq!(out[&id].connections, 2);
        assert!(out[&id].last_activity > 0);
        drop(a);
        drop(b);
        let mut out = HashMap::new();
        table.collect(&mut out);
        assert!(out.is_empty());
    }
}
