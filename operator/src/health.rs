//! What `/healthz` and `/readyz` report, and the deadlines every call and pass runs under.
//!
//! Readiness: the Lease is decided (this replica leads, or stands by for a live leader) and, when
//! leading, the controller's caches have seen their first list. Liveness: no reconcile pass has
//! been running for much longer than its deadline; a pass is cancelled at [`PASS_DEADLINE`], so
//! one still running well past it means the process is wedged and should be restarted.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use parking_lot::Mutex;

/// Longest a reconcile pass may run; then it is cancelled and retried with backoff. Longer than
/// one stalled Kubernetes read ([`KUBE_READ_TIMEOUT`]) plus a few cloud attempts.
pub const PASS_DEADLINE: Duration = Duration::from_secs(180);
/// How long a pass may overrun its deadline before `/healthz` fails.
const STUCK_GRACE: Duration = Duration::from_secs(60);
/// Longest silence on a Kubernetes connection before the call fails: a half-open connection
/// fails a call instead of stalling it forever.
pub const KUBE_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait to connect to the API server.
pub const KUBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Server-side timeout of every watch: the server ends a quiet watch (which the watcher resumes
/// from its resourceVersion) before the read timeout would break it.
pub const WATCH_TIMEOUT_SECS: u32 = 45;

// The Lease state; 0 (the default) is undecided.
const LEADING: u8 = 1;
const STANDING_BY: u8 = 2;

/// Shared health state, written by leader election, the controller and each pass.
#[derive(Debug, Default)]
pub struct Health {
    lease: AtomicU8,
    synced: AtomicBool,
    next_pass: AtomicU64,
    passes: Mutex<HashMap<u64, Instant>>,
}

impl Health {
    /// This replica holds the Lease (or runs without leader election).
    pub fn leading(&self) {
        self.lease.store(LEADING, Ordering::Relaxed);
    }

    /// Another replica holds the Lease; this one stands by.
    pub fn standing_by(&self) {
        self.lease.store(STANDING_BY, Ordering::Relaxed);
    }

    /// The controller's caches have seen their first full list.
    pub fn synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    /// `/readyz`: the Lease is decided and, when leading, the caches are synced.
    pub fn ready(&self) -> bool {
        match self.lease.load(Ordering::Relaxed) {
            STANDING_BY => true,
            LEADING => self.synced.load(Ordering::Relaxed),
            _ => false,
        }
    }

    /// Marks a pass as running until the returned guard drops.
    pub fn pass_started(&self) -> PassGuard<'_> {
        let id = self.next_pass.fetch_add(1, Ordering::Relaxed);
        self.passes().insert(id, Instant::now());
        PassGuard { health: self, id }
    }

    /// `/healthz`: `Err` with the age of the oldest pass when it overran its deadline by more
    /// than the grace.
    pub fn live(&self) -> Result<(), Duration> {
        let oldest = self.passes().values().map(Instant::elapsed).max().unwrap_or_default();
        if oldest > PASS_DEADLINE.saturating_add(STUCK_GRACE) { Err(oldest) } else { Ok(()) }
    }

    fn passes(&self) -> parking_lot::MutexGuard<'_, HashMap<u64, Instant>> {
        self.passes.lock()
    }
}

/// A running pass; dropping it (completion or cancellation) ends it.
#[derive(Debug)]
pub struct PassGuard<'a> {
    health: &'a Health,
    id: u64,
}

impl Drop for PassGuard<'_> {
    fn drop(&mut self) {
        self.health.passes().remove(&self.id);
    }
}

/// The Kubernetes client configuration with this operator's deadlines applied.
pub fn with_deadlines(mut config: kube::Config) -> kube::Config {
    config.connect_timeout = Some(KUBE_CONNECT_TIMEOUT);
    config.read_timeout = Some(KUBE_READ_TIMEOUT);
    // Count the read timeout from when a request is sent, not from when its pooled connection
    // went idle.
    config.reset_reader_on_write = true;
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_the_lease_is_decided_and_caches_synced() {
        let health = Health::default();
        assert!(!health.ready(), "undecided");
        health.synced();
        assert!(!health.ready(), "synced but the Lease undecided");
        health.standing_by();
        assert!(health.ready(), "a standby is ready");
        let health = Health::default();
        health.leading();
        assert!(!health.ready(), "leading before the caches synced");
        health.synced();
        assert!(health.ready());
    }

    #[test]
    fn a_pass_is_tracked_until_dropped() {
        let health = Health::default();
        let guard = health.pass_started();
        assert_eq!(health.passes().len(), 1);
        assert!(health.live().is_ok(), "a fresh pass is fine");
        health.passes().insert(99, Instant::now() - PASS_DEADLINE - STUCK_GRACE - Duration::from_secs(1));
        assert!(health.live().is_err(), "a pass overrunning its deadline makes the process unhealthy");
        health.passes().remove(&99);
        drop(guard);
        assert!(health.passes().is_empty());
    }

    #[test]
    fn watches_end_before_the_read_timeout() {
        assert!(Duration::from_secs(u64::from(WATCH_TIMEOUT_SECS)) < KUBE_READ_TIMEOUT);
        assert!(KUBE_READ_TIMEOUT < PASS_DEADLINE);
        let config = with_deadlines(kube::Config::new("https://127.0.0.1:6443".parse().expect("uri")));
        assert_eq!(config.read_timeout, Some(KUBE_READ_TIMEOUT));
    }
}
