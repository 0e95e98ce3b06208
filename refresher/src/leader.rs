//! Leader election on a coordination.k8s.io/v1 Lease: only the holder refreshes.
//!
//! Like client-go, another holder's lease is judged expired on this process's own monotonic clock
//! (how long its record has stayed unchanged since we first saw it), never by comparing its
//! `renewTime` with our wall clock: nodes with skewed clocks cannot both lead.
//!
//! Never two leaders: the holder stops at the latest 2/3 of a lease duration after the *start* of
//! its last successful renewal (the API server wrote the record after that instant), while
//! another replica takes over only once the record it saw stayed unchanged for a whole lease
//! duration. A request of the old leader still in flight then has a third of the duration to land.
//!
//! The Lease also carries the leader's region scans (`capa-annotator.io/region-scans`, written
//! right before a scan starts, with the latest time it can start), so that a new leader keeps to
//! `--min-region-scan-interval` after a leader that died mid-scan.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

pub const LEASE_NAME: &str = "capa-refresher";

/// Lease annotation: `{"<region>": "<RFC 3339 time the last scan started>"}`.
pub const REGION_SCANS_ANNOTATION: &str = "capa-annotator.io/region-scans";

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
            // someone else took it first
            Err(e) if !mine && crate::cluster::is_conflict(&e) => Ok(false),
            // our own renewal raced another write of the lease (our scan record, or a takeover):
            // the next attempt reads it again and sees who holds it
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

    /// Waits until this process holds the lease (or `stop`: `None`); returns when the successful
    /// attempt started (see [`keep`](Self::keep)).
    pub async fn acquire(&self, stop: &CancellationToken) -> Option<tokio::time::Instant> {
        let retry = (self.duration / 4).max(Duration::from_secs(1));
        loop {
            let started = tokio::time::Instant::now();
            match self.attempt().await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, lease = LEASE_NAME, "became leader");
                    return Some(started);
                }
                Ok(false) => {
                    tracing::info!(lease = LEASE_NAME, "another replica is leader; waiting")
                }
                Err(e) => tracing::warn!(error = %e, "leader election failed; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(retry) => {}
            }
        }
    }

    /// Renews the lease until `stop`; cancels `stop` when leadership is lost, or when 2/3 of the
    /// lease duration passed since the start of the last successful renewal (`renewed`: of the
    /// acquisition at first), whatever a pending attempt is doing.
    pub async fn keep(&self, stop: CancellationToken, mut renewed: tokio::time::Instant) {
        // several attempts fit in the renew deadline, short leases included
        let period = (self.duration / 6).max(Duration::from_millis(100));
        let deadline = self.duration * 2 / 3;
        loop {
            let give_up = renewed + deadline;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(give_up) => break,
                _ = tokio::time::sleep(period) => {}
            }
            let started = tokio::time::Instant::now();
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(give_up) => break,
                r = self.attempt() => r,
            };
            match result {
                Ok(true) => renewed = started,
                Ok(false) => {
                    tracing::error!("leadership lost to another replica; stopping");
                    stop.cancel();
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the lease"),
            }
        }
        tracing::error!("lease not renewed within its renew deadline; stopping");
        stop.cancel();
    }

    /// The region scans the Lease records (see the module doc), as times on this process's
    /// monotonic clock. A recorded time may lie ahead (the latest start of a scan being recorded,
    /// or clock skew between nodes): at most a lease duration ahead is taken as is, more as that.
    pub async fn recorded_scans(&self) -> Result<BTreeMap<String, Instant>, kube::Error> {
        let lease = self.api.get(LEASE_NAME).await?;
        let now_wall = SystemTime::now();
        let now = Instant::now();
        let text = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REGION_SCANS_ANNOTATION));
        Ok(parse_scans(text.map(String::as_str))
            .into_iter()
            .map(|(region, at)| {
                let local = match now_wall.duration_since(at) {
                    Ok(ago) => now.checked_sub(ago).unwrap_or(now),
                    Err(ahead) => now + ahead.duration().min(self.duration),
                };
                (region, local)
            })
            .collect())
    }

    /// Records in the Lease that `region` is scanned now, right before the scan starts. Fails
    /// when this process no longer holds the lease, or after `d/4`. The time recorded is the
    /// latest the scan can start (now + that limit), so a next leader that waits the interval
    /// from it never scans too early, however long this write took.
    pub async fn record_scan(&self, region: &str) -> Result<(), String> {
        let limit = (self.duration / 4).max(Duration::from_secs(1));
        let latest_start = SystemTime::now() + limit;
        let attempt = async {
            for _ in 0..3 {
                let mut lease = self.api.get(LEASE_NAME).await.map_err(|e| e.to_string())?;
                let holder = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref());
                if holder != Some(self.identity.as_str()) {
                    return Err(format!(
                        "the lease is held by {holder:?}, not by this replica"
                    ));
                }
                let annotations = lease
                    .metadata
                    .annotations
                    .get_or_insert_with(Default::default);
                let mut scans =
                    parse_scans(annotations.get(REGION_SCANS_ANNOTATION).map(String::as_str));
                scans.insert(region.to_string(), latest_start);
                annotations.insert(REGION_SCANS_ANNOTATION.to_string(), format_scans(&scans));
                match self
                    .api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(e) if crate::cluster::is_conflict(&e) => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err("the lease kept changing (409 Conflict three times)".to_string())
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {}s", limit.as_secs())),
        }
    }
}

/// The annotation's value; entries that do not parse are dropped (they only delay nothing).
fn parse_scans(text: Option<&str>) -> BTreeMap<String, SystemTime> {
    let map: BTreeMap<String, String> = text
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    map.into_iter()
        .filter_map(|(region, at)| {
            let ts: Timestamp = at.parse().ok()?;
            let secs = u64::try_from(ts.as_second()).ok()?;
            let t = SystemTime::UNIX_EPOCH
                + Duration::from_secs(secs)
                + Duration::from_nanos(u64::try_from(ts.subsec_nanosecond()).unwrap_or(0));
            Some((region, t))
        })
        .collect()
}

fn format_scans(scans: &BTreeMap<String, SystemTime>) -> String {
    let map: BTreeMap<&String, String> = scans
        .iter()
        .filter_map(|(region, at)| {
            let ts = Timestamp::try_from(*at).ok()?;
            Some((region, ts.to_string()))
        })
        .collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_string())
}

/// Another holder's lease is expired once its record stayed unchanged for longer than its duration.
fn lease_expired(unchanged_for: Duration, lease_duration_seconds: i32) -> bool {
    unchanged_for > Duration::from_secs(u64::try_from(lease_duration_seconds).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_scans_round_trip_and_garbage_is_dropped() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_626_400_123);
        let scans = BTreeMap::from([("eu-west-3".to_string(), t)]);
        let text = format_scans(&scans);
        assert_eq!(text, r#"{"eu-west-3":"2025-12-01T22:00:00.123Z"}"#);
        assert_eq!(parse_scans(Some(&text)), scans);
        assert!(parse_scans(Some("not json")).is_empty());
        assert!(parse_scans(None).is_empty());
        let mixed = parse_scans(Some(r#"{"a":"yesterday","b":"2025-12-01T22:00:00Z"}"#));
        assert_eq!(mixed.len(), 1);
    }

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
