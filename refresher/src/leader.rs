//! Leader election on a coordination.k8s.io/v1 Lease: only the holder refreshes.
//!
//! Like client-go, another holder's lease is judged expired on this process's own monotonic clock
//! (how long its record has stayed unchanged since we first saw it), never by comparing its
//! `renewTime` with our wall clock: nodes with skewed clocks cannot both lead.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const LEASE_NAME: &str = "capa-refresher";

pub struct LeaderElector {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
    observed: Mutex<Option<Observation>>,
}

/// The last lease record seen (holder and renew time) and when, on the local monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observation {
    record: String,
    since: Instant,
}

impl Observation {
    /// Records `record` seen at `now`; returns how long the record has stayed unchanged.
    fn see(slot: &mut Option<Observation>, record: String, now: Instant) -> Duration {
        match slot {
            Some(o) if o.record == record => now.saturating_duration_since(o.since),
            _ => {
                *slot = Some(Observation { record, since: now });
                Duration::ZERO
            }
        }
    }
}

impl LeaderElector {
    pub fn new(client: &Client, namespace: &str, identity: String, duration: Duration) -> Self {
        LeaderElector {
            api: Api::namespaced(client.clone(), namespace),
            identity,
            duration,
            observed: Mutex::new(None),
        }
    }

    fn ttl_secs(&self) -> i32 {
        i32::try_from(self.duration.as_secs())
            .unwrap_or(i32::MAX)
            .max(1)
    }

    /// Takes or renews the lease; `Ok(false)` when someone else holds it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let mut lease = match self.api.get(LEASE_NAME).await {
            Ok(l) => l,
            Err(e) if crate::cluster::is_not_found(&e) => {
                let l = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(self.ttl_secs()),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &l).await {
                    Ok(_) => Ok(true),
                    Err(e) if crate::cluster::is_conflict(&e) => Ok(false),
                    Err(e) => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(MicroTime(t)), Some(d)) if !mine => {
                let record = format!("{:?}|{t}", spec.holder_identity);
                let unchanged_for = match self.observed.lock() {
                    Ok(mut slot) => Observation::see(&mut slot, record, Instant::now()),
                    Err(_) => Duration::ZERO,
                };
                lease_expired(unchanged_for, d)
            }
            (Some(_), Some(_)) => false,
            _ => true,
        };
        if !mine && !expired {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.lease_duration_seconds = Some(self.ttl_secs());
        spec.renew_time = Some(MicroTime(now));
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if crate::cluster::is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One attempt, bounded in time (a hung API call must not keep a deposed leader running).
    async fn attempt(&self) -> Result<bool, String> {
        let limit = (self.duration / 4).max(Duration::from_secs(1));
        match tokio::time::timeout(limit, self.try_acquire_or_renew()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {}s", limit.as_secs())),
        }
    }

    /// Waits until this process holds the lease (or `stop`).
    pub async fn acquire(&self, stop: &CancellationToken) -> bool {
        let retry = (self.duration / 4).max(Duration::from_secs(1));
        loop {
            match self.attempt().await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, lease = LEASE_NAME, "became leader");
                    return true;
                }
                Ok(false) => {
                    tracing::info!(lease = LEASE_NAME, "another replica is leader; waiting")
                }
                Err(e) => tracing::warn!(error = %e, "leader election failed; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(retry) => {}
            }
        }
    }

    /// Renews the lease until `stop`; cancels `stop` when leadership is lost or could not be
    /// renewed within 2/3 of the lease duration (before another replica may take it).
    pub async fn keep(&self, stop: CancellationToken) {
        let period = (self.duration / 6).max(Duration::from_secs(1));
        let deadline = self.duration * 2 / 3;
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            match self.attempt().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("leadership lost to another replica; stopping");
                    stop.cancel();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the lease");
                    if last_ok.elapsed() >= deadline {
                        tracing::error!("lease not renewed within its renew deadline; stopping");
                        stop.cancel();
                        return;
                    }
                }
            }
        }
    }
}

/// Another holder's lease is expired once its record stayed unchanged for longer than its duration.
fn lease_expired(unchanged_for: Duration, lease_duration_seconds: i32) -> bool {
    unchanged_for > Duration::from_secs(u64::try_from(lease_duration_seconds).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_boundary() {
        assert!(!lease_expired(Duration::from_secs(30), 30));
        assert!(lease_expired(Duration::from_millis(30_001), 30));
        assert!(lease_expired(Duration::from_millis(1), 0));
        assert!(lease_expired(Duration::from_millis(1), -5));
    }

    #[test]
    fn another_holder_expires_only_after_its_record_stays_unchanged_for_the_duration() {
        let t0 = Instant::now();
        let mut slot = None;
        // first sight: not expired whatever its renewTime says
        assert_eq!(
            Observation::see(&mut slot, "a|1".into(), t0),
            Duration::ZERO
        );
        let later = t0 + Duration::from_secs(20);
        assert_eq!(
            Observation::see(&mut slot, "a|1".into(), later),
            Duration::from_secs(20)
        );
        // a renewal (new record) restarts the count
        assert_eq!(
            Observation::see(&mut slot, "a|2".into(), later),
            Duration::ZERO
        );
        assert_eq!(
            Observation::see(&mut slot, "a|2".into(), later + Duration::from_secs(31)),
            Duration::from_secs(31)
        );
    }
}
