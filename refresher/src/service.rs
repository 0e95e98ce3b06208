//! The long-running mode: a full refresh at start and every `--refresh-interval`, plus on-demand
//! refreshes of a region soon after a MachineSet names a region or instance type the table lacks
//! (rate-limited per region).

use crate::plan;
use crate::rate_limit::RegionRateLimiter;
use crate::refresh::Refresher;
use capa_core::provider_spec::{self, ProviderSpec};
use capa_core::table::{Table, TypeName};
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{RwLock, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Triggers arriving within this window are served by one refresh.
const BATCH_WINDOW: Duration = Duration::from_secs(2);

/// What the table is known to cover.
#[derive(Default)]
struct Known {
    regions: BTreeSet<String>,
    table: Table,
}

impl Known {
    /// The regions a MachineSet needs refreshed: its region if not covered yet, or if its type is missing.
    fn missing(&self, ms: &serde_json::Value) -> Option<String> {
        let Ok(ProviderSpec::Aws(spec)) = provider_spec::read(ms) else {
            return None;
        };
        let region = spec.region.filter(|r| !r.is_empty())?;
        spec.credentials_secret.filter(|s| !s.is_empty())?;
        let type_known = TypeName::parse(spec.instance_type)
            .map(|n| self.table.get(n).is_some())
            .unwrap_or(true);
        (!self.regions.contains(region) || !type_known).then(|| region.to_string())
    }
}

pub async fn run(
    refresher: Arc<Refresher>,
    interval: Duration,
    min_region_interval: Duration,
    stop: CancellationToken,
) {
    let known = Arc::new(RwLock::new(Known::default()));
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let watch = tokio::spawn(watch_machinesets(
        refresher.clone(),
        known.clone(),
        tx,
        stop.clone(),
    ));
    let mut limiter = RegionRateLimiter::new(min_region_interval);
    let mut next_full = Instant::now();
    let mut pending: BTreeSet<String> = BTreeSet::new();
    let mut next_pending: Option<Instant> = None;
    loop {
        let pending_at = next_pending.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(next_full) => {
                run_refresh(&refresher, &known, None, &mut limiter).await;
                next_full = Instant::now() + interval;
            }
            Some(region) = rx.recv() => {
                if pending.insert(region.clone()) {
                    tracing::info!(region, "a MachineSet needs a region or instance type the table lacks; refresh scheduled");
                }
                if next_pending.is_none() {
                    next_pending = Some(Instant::now() + BATCH_WINDOW);
                }
            }
            _ = tokio::time::sleep_until(pending_at), if next_pending.is_some() => {
                let now = std::time::Instant::now();
                let mut due = BTreeSet::new();
                let mut wait: Option<Duration> = None;
                for region in &pending {
                    match limiter.try_acquire(region, now) {
                        Ok(()) => { due.insert(region.clone()); }
                        Err(w) => {
                            tracing::info!(region, wait_s = w.as_secs(), "region scanned recently; refresh postponed");
                            wait = Some(wait.map_or(w, |x| x.min(w)));
                        }
                    }
                }
                pending.retain(|r| !due.contains(r));
                next_pending = wait.map(|w| Instant::now() + w);
                if !due.is_empty() {
                    run_refresh(&refresher, &known, Some(&due), &mut limiter).await;
                }
            }
        }
    }
    watch.abort();
}

async fn run_refresh(
    refresher: &Refresher,
    known: &RwLock<Known>,
    only: Option<&BTreeSet<String>>,
    limiter: &mut RegionRateLimiter,
) {
    let now = std::time::Instant::now();
    match refresher.refresh(only).await {
        Ok(report) => {
            for r in report.regions_ok.iter().chain(report.regions_failed.keys()) {
                limiter.record(r, now);
            }
            let mut k = known.write().await;
            k.regions.extend(report.regions_ok.iter().cloned());
            // a failed region counts as known until its next scheduled scan, so it is not hammered
            k.regions.extend(report.regions_failed.keys().cloned());
            k.table = report.table;
        }
        Err(_) => { /* logged by refresh() */ }
    }
}

async fn watch_machinesets(
    refresher: Arc<Refresher>,
    known: Arc<RwLock<Known>>,
    tx: mpsc::Sender<String>,
    stop: CancellationToken,
) {
    let api =
        crate::cluster::machinesets(refresher.client(), refresher.options().namespace.as_deref());
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut stream = std::pin::pin!(stream);
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            n = stream.next() => n,
        };
        match next {
            None => return,
            Some(Err(e)) => tracing::warn!(error = %e, "MachineSet watch error; retrying"),
            Some(Ok(obj)) => {
                let Ok(value) = serde_json::to_value(&obj) else {
                    continue;
                };
                if capa_core::machineset::is_deleting(&value) {
                    continue;
                }
                let missing = known.read().await.missing(&value);
                if let Some(region) = missing {
                    tracing::debug!(machineset = %plan::ObjectRef::of(&value), region, "not covered by the table");
                    if tx.send(region).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capa_core::{Arch, Capacity};
    use serde_json::json;

    fn ms(region: &str, t: &str) -> serde_json::Value {
        json!({"spec": {"template": {"spec": {"providerSpec": {"value": {
            "kind": "AWSMachineProviderConfig", "instanceType": t,
            "placement": {"region": region}, "credentialsSecret": {"name": "s"}}}}}}})
    }

    #[test]
    fn missing_region_or_type() {
        let mut k = Known::default();
        k.regions.insert("eu-west-3".into());
        k.table.insert(
            TypeName::parse("m5.large").unwrap(),
            Capacity {
                vcpu: 2,
                memory_mib: 8192,
                gpu: 0,
                arch: Arch::Amd64,
                gpu_vendor: None,
            },
        );
        assert_eq!(k.missing(&ms("eu-west-3", "m5.large")), None);
        assert_eq!(
            k.missing(&ms("us-east-1", "m5.large")).as_deref(),
            Some("us-east-1")
        );
        assert_eq!(
            k.missing(&ms("eu-west-3", "m7.large")).as_deref(),
            Some("eu-west-3")
        );
        assert_eq!(
            k.missing(&ms("eu-west-3", "")),
            None,
            "no usable type: nothing to fetch"
        );
    }
}
