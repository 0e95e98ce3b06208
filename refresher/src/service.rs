//! The long-running mode: a full refresh at start and every `--refresh-interval`, plus on-demand
//! refreshes of a region soon after a MachineSet names a region or instance type the table lacks.
//! Every scan keeps to `--min-region-scan-interval` (the refresher's limiter): a region it keeps
//! from a refresh is asked for again once it may be scanned.

use crate::heal::{Budget, HealOptions, Healer, Input};
use crate::heal_loop;
use crate::plan;
use crate::refresh::{Refresher, Report};
use capa_core::provider_spec::{self, ProviderSpec};
use capa_core::table::{Table, TypeName};
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeSet, HashMap};
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
    /// (region, type) pairs a successful scan of the region did not return: not asked again
    /// until the next full refresh.
    absent: BTreeSet<(String, String)>,
}

/// A region a MachineSet needs, and the instance type that made it needed.
type Need = (String, String);

impl Known {
    /// The region a MachineSet needs refreshed: its region if not covered yet, or if its type
    /// is missing from the table (and was not just looked for there).
    fn missing(&self, ms: &serde_json::Value) -> Option<Need> {
        let Ok(ProviderSpec::Aws(spec)) = provider_spec::read(ms) else {
            return None;
        };
        let region = spec.region.filter(|r| !r.is_empty())?;
        spec.credentials_secret.filter(|s| !s.is_empty())?;
        let need = (region.to_string(), spec.instance_type.to_string());
        self.still_missing(&need).then_some(need)
    }

    fn still_missing(&self, (region, instance_type): &Need) -> bool {
        if !self.regions.contains(region) {
            return true;
        }
        let type_known = TypeName::parse(instance_type)
            .map(|n| self.table.get(n).is_some())
            .unwrap_or(true);
        !type_known
            && !self
                .absent
                .contains(&(region.clone(), instance_type.clone()))
    }

    fn update(&mut self, report: &Report, full: bool, asked: &BTreeSet<Need>) {
        if full {
            self.absent.clear();
        }
        // the regions of the stored table count as covered too: a new leader whose first refresh
        // was postponed (regions scanned moments ago by its predecessor) must not take every
        // MachineSet for one of a new region and schedule scans nobody needs
        self.regions.extend(report.regions_ok.iter().cloned());
        self.regions.extend(report.table_regions.iter().cloned());
        self.table = report.table.clone();
        for (region, t) in asked {
            if report.regions_ok.contains(region)
                && TypeName::parse(t)
                    .map(|n| self.table.get(n).is_none())
                    .unwrap_or(false)
            {
                self.absent.insert((region.clone(), t.clone()));
            }
        }
    }
}

/// Retry delay of a full refresh that failed (bounded by the refresh interval).
const FULL_RETRY: Duration = Duration::from_secs(300);

/// How the service heals objects between refreshes.
pub struct Healing {
    pub options: HealOptions,
    /// Shared with the refresher's own re-admissions.
    pub budget: Arc<std::sync::Mutex<Budget>>,
}

pub async fn run(
    refresher: Arc<Refresher>,
    interval: Duration,
    min_region_interval: Duration,
    healing: Healing,
    stop: CancellationToken,
) {
    let known = Arc::new(RwLock::new(Known::default()));
    let (tx, mut rx) = mpsc::channel::<Need>(1024);
    let (heal_tx, heal_rx) = mpsc::channel::<Input>(1024);
    let mut tasks = Vec::new();
    let capi_seen = match &refresher.options().cluster_api {
        Some(_) => {
            let (seen_tx, seen_rx) = mpsc::unbounded_channel();
            tasks.push(tokio::spawn(cluster_api_needs(
                refresher.clone(),
                known.clone(),
                tx.clone(),
                seen_rx,
                stop.clone(),
            )));
            Some(seen_tx)
        }
        None => None,
    };
    // the healer judges from the first moment with what the policy uses: its settings and rules,
    // then the stored table (before the first refresh, which may wait on EC2, gives the next); read
    // before the watches start, so that what they report later is newer
    let startup = async {
        let policy = crate::policy_settings::current(
            refresher.context(),
            refresher.options().policy.as_ref(),
        )
        .await;
        let _ = heal_tx.send(Input::Policy(policy)).await;
        match refresher.options().store.read(refresher.client()).await {
            Ok((Some(_), stored)) => {
                let _ = heal_tx.send(Input::Table(stored.table)).await;
            }
            Ok((None, _)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stored table; healing waits for the first refresh");
            }
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {
            for t in tasks {
                t.abort();
            }
            return;
        }
        done = tokio::time::timeout(STARTUP_READS, startup) => {
            if done.is_err() {
                tracing::warn!("reading the policy and the stored table took over 10 s; healing waits for the first refresh");
            }
        }
    }
    tasks.extend(heal_loop::spawn_watches(
        &refresher,
        capi_seen,
        refresher.options().policy.as_ref(),
        &heal_tx,
        &stop,
    ));
    tasks.push(tokio::spawn(heal_loop::run(
        refresher.clone(),
        Healer::new(healing.options),
        healing.budget,
        heal_rx,
        stop.clone(),
    )));
    tasks.push(tokio::spawn(watch_machinesets(
        refresher.clone(),
        known.clone(),
        tx,
        heal_tx.clone(),
        stop.clone(),
    )));
    let mut next_full = Instant::now();
    let mut pending: BTreeSet<Need> = BTreeSet::new();
    let mut next_pending: Option<Instant> = None;
    loop {
        let pending_at = next_pending.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(next_full) => {
                let nothing_asked = BTreeSet::new();
                let outcome = tokio::select! {
                    _ = stop.cancelled() => break,
                    o = run_refresh(&refresher, &known, None, &nothing_asked, &heal_tx) => o,
                };
                next_full = Instant::now() + if outcome.ok { interval } else { interval.min(FULL_RETRY) };
                // regions kept from the scan (scanned just before, maybe by the previous
                // leader, maybe without success): asked for again once allowed, if still needed
                for (region, wait) in outcome.postponed {
                    pending.insert((region, String::new()));
                    let at = Instant::now() + wait;
                    next_pending = Some(next_pending.map_or(at, |p| p.min(at)));
                }
            }
            Some(need) = rx.recv() => {
                if pending.insert(need.clone()) {
                    tracing::info!(region = need.0, instance_type = need.1, "a MachineSet needs a region or instance type the table lacks; refresh scheduled");
                }
                let soon = Instant::now() + BATCH_WINDOW;
                next_pending = Some(next_pending.map_or(soon, |at| at.min(soon)));
            }
            _ = tokio::time::sleep_until(pending_at), if next_pending.is_some() => {
                // what a refresh made meanwhile (including our own re-admission patches) is no longer needed
                {
                    let k = known.read().await;
                    pending.retain(|need| k.still_missing(need));
                }
                let mut due_regions = BTreeSet::new();
                let mut wait: Option<Duration> = None;
                let regions: BTreeSet<String> = pending.iter().map(|(r, _)| r.clone()).collect();
                for region in &regions {
                    match refresher.scan_wait(region).await {
                        None => { due_regions.insert(region.clone()); }
                        Some(w) => {
                            tracing::info!(region, wait_s = w.as_secs_f64().ceil() as u64, "region scanned recently; refresh postponed");
                            wait = Some(wait.map_or(w, |x| x.min(w)));
                        }
                    }
                }
                let asked: BTreeSet<Need> = pending.iter().filter(|(r, _)| due_regions.contains(r)).cloned().collect();
                pending.retain(|(r, _)| !due_regions.contains(r));
                next_pending = wait.map(|w| Instant::now() + w);
                if !due_regions.is_empty() {
                    let outcome = tokio::select! {
                        _ = stop.cancelled() => break,
                        o = run_refresh(&refresher, &known, Some(&due_regions), &asked, &heal_tx) => o,
                    };
                    if !outcome.ok || !outcome.postponed.is_empty() {
                        // keep the request: the limiter decides when it is tried again
                        pending.extend(asked);
                        let retry = Instant::now() + min_region_interval;
                        next_pending = Some(next_pending.map_or(retry, |at| at.min(retry)));
                    }
                }
            }
        }
    }
    for t in tasks {
        t.abort();
    }
}

/// What a refresh means for the schedule.
struct Outcome {
    /// Every region asked for was scanned successfully (postponed ones aside).
    ok: bool,
    /// Regions kept from the scan by the limiter, with how long they wait.
    postponed: Vec<(String, Duration)>,
}

/// One refresh.
async fn run_refresh(
    refresher: &Refresher,
    known: &RwLock<Known>,
    only: Option<&BTreeSet<String>>,
    asked: &BTreeSet<Need>,
    heal: &heal_loop::Sender,
) -> Outcome {
    match refresher.refresh(only).await {
        Ok(report) => {
            known.write().await.update(&report, only.is_none(), asked);
            // the healer judges with the table the policy reads from now on
            let _ = heal.send(Input::Table(report.table.clone())).await;
            Outcome {
                ok: report.regions_failed.is_empty(),
                postponed: report.regions_postponed.into_iter().collect(),
            }
        }
        // logged by refresh()
        Err(_) => Outcome {
            ok: false,
            postponed: Vec::new(),
        },
    }
}

/// How long a new leader waits for the policy and the stored table before it goes on without them.
const STARTUP_READS: Duration = Duration::from_secs(10);

/// How long objects read to resolve Cluster API objects are reused.
const LOOKUPS_KEPT: Duration = Duration::from_secs(10);

/// Cluster API objects as the watch sees them: each new one (or new generation) is resolved to
/// its region and instance type, and a region or type the table lacks asks for a scan, as for
/// Machine API MachineSets.
async fn cluster_api_needs(
    refresher: Arc<Refresher>,
    known: Arc<RwLock<Known>>,
    tx: mpsc::Sender<Need>,
    mut seen: mpsc::UnboundedReceiver<serde_json::Value>,
    stop: CancellationToken,
) {
    let Some(opts) = refresher.options().cluster_api.clone() else {
        return;
    };
    let mut resolved: HashMap<plan::ObjectRef, Option<i64>> = HashMap::new();
    // what was read for the objects seen in the last few seconds: a burst of objects of one
    // cluster reads its Cluster and AWSCluster once
    let mut cache = (crate::capi::Lookups::default(), Instant::now());
    loop {
        let obj = tokio::select! {
            _ = stop.cancelled() => return,
            o = seen.recv() => match o { Some(o) => o, None => return },
        };
        let at = plan::ObjectRef::of(&obj);
        let generation = obj
            .pointer("/metadata/generation")
            .and_then(serde_json::Value::as_i64);
        if resolved.get(&at) == Some(&generation) {
            continue;
        }
        if cache.1.elapsed() > LOOKUPS_KEPT {
            cache = (crate::capi::Lookups::default(), Instant::now());
        }
        let Some(o) = crate::capi::resolve(refresher.client(), &opts, obj, &mut cache.0).await
        else {
            continue;
        };
        let (Ok(instance_type), Ok((region, _))) = (&o.instance_type, &o.scan) else {
            // resolved again at its next change; the refresh warns meanwhile
            continue;
        };
        resolved.insert(at.clone(), generation);
        let need = (region.clone(), instance_type.clone());
        if known.read().await.still_missing(&need) {
            tracing::debug!(object = %at, region = need.0, "not covered by the table");
            if tx.send(need).await.is_err() {
                return;
            }
        }
    }
}

async fn watch_machinesets(
    refresher: Arc<Refresher>,
    known: Arc<RwLock<Known>>,
    tx: mpsc::Sender<Need>,
    heal: heal_loop::Sender,
    stop: CancellationToken,
) {
    let api =
        crate::cluster::machinesets(refresher.client(), refresher.options().namespace.as_deref());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            n = stream.next() => n,
        };
        match next {
            None => return,
            Some(Err(e)) => tracing::warn!(error = %e, "MachineSet watch error; retrying"),
            Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
            Some(Ok(watcher::Event::Delete(obj))) => {
                let Ok(value) = serde_json::to_value(&obj) else {
                    continue;
                };
                if heal
                    .send(Input::Deleted(plan::ObjectRef::of(&value)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Some(Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj))) => {
                let Ok(value) = serde_json::to_value(&obj) else {
                    continue;
                };
                if heal.send(Input::Object(value.clone())).await.is_err() {
                    return;
                }
                if capa_core::machineset::is_deleting(&value) {
                    continue;
                }
                let missing = known.read().await.missing(&value);
                if let Some(need) = missing {
                    tracing::debug!(machineset = %plan::ObjectRef::of(&value), region = need.0, "not covered by the table");
                    if tx.send(need).await.is_err() {
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
        let need = |r: &str, t: &str| Some((r.to_string(), t.to_string()));
        assert_eq!(k.missing(&ms("eu-west-3", "m5.large")), None);
        assert_eq!(
            k.missing(&ms("us-east-1", "m5.large")),
            need("us-east-1", "m5.large")
        );
        assert_eq!(
            k.missing(&ms("eu-west-3", "m7.large")),
            need("eu-west-3", "m7.large")
        );
        assert_eq!(
            k.missing(&ms("eu-west-3", "")),
            None,
            "no usable type: nothing to fetch"
        );
        // a scan of eu-west-3 that did not return m7.large: not asked again until the next full refresh
        let report = Report {
            regions_ok: ["eu-west-3".to_string()].into(),
            table: k.table.clone(),
            ..Default::default()
        };
        let asked: BTreeSet<Need> = [("eu-west-3".to_string(), "m7.large".to_string())].into();
        k.update(&report, false, &asked);
        assert_eq!(k.missing(&ms("eu-west-3", "m7.large")), None);
        k.update(&report, true, &BTreeSet::new());
        assert_eq!(
            k.missing(&ms("eu-west-3", "m7.large")),
            need("eu-west-3", "m7.large")
        );
    }

    #[test]
    fn a_refresh_that_scanned_nothing_still_knows_the_stored_tables_regions() {
        // a new leader's first refresh: every region postponed (its predecessor scanned them
        // moments ago), the stored table covers them
        let mut k = Known::default();
        let mut table = capa_core::table::Table::new();
        table.insert(
            TypeName::parse("m5.xlarge").unwrap(),
            Capacity {
                vcpu: 4,
                memory_mib: 16384,
                gpu: 0,
                arch: Arch::Amd64,
                gpu_vendor: None,
            },
        );
        let report = Report {
            regions_postponed: [("eu-west-3".to_string(), Duration::from_secs(500))].into(),
            table,
            table_regions: ["eu-west-3".to_string()].into(),
            ..Default::default()
        };
        k.update(&report, true, &BTreeSet::new());
        assert_eq!(k.missing(&ms("eu-west-3", "m5.xlarge")), None);
        assert!(k.missing(&ms("us-east-1", "m5.xlarge")).is_some());
    }
}
