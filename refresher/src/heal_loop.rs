//! The healer's I/O (the leader's): watches of the objects the policy annotates, of their
//! AWSMachineTemplates and of the policy's ClusterAdmissionPolicy feed [`Healer`]; the
//! re-admissions it asks for are patched, and what they led to is recorded (metrics, Warning
//! Events, the node-group census).

use crate::cluster;
use crate::heal::{Attempt, Budget, Healer, Input};
use crate::metrics::Metrics;
use crate::plan::ObjectRef;
use crate::policy_settings;
use crate::readmit::Decision;
use crate::refresh::Refresher;
use capa_core::capi;
use futures::StreamExt;
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The census is recounted at most this often.
const CENSUS_EVERY: Duration = Duration::from_secs(2);
/// How often a kind whose CRD is not served yet is looked for again.
const CRD_RETRY: Duration = Duration::from_secs(60);

/// Where the watches and the refresh send what they see.
pub type Sender = mpsc::Sender<Input>;

/// Runs the healer until `stop`: applies `rx`'s inputs, re-admits what is due within `budget`.
pub async fn run(
    refresher: Arc<Refresher>,
    mut healer: Healer,
    budget: Arc<Mutex<Budget>>,
    mut rx: mpsc::Receiver<Input>,
    stop: CancellationToken,
) {
    let metrics = refresher.metrics().clone();
    let mut census_at = Instant::now();
    let mut census_dirty = false;
    loop {
        let now = Instant::now();
        let wake = healer.next_due().map(|due| {
            let free = budget
                .lock()
                .map(|mut b| b.free_at(now.into_std()))
                .unwrap_or_else(|_| now.into_std());
            Instant::from_std(due.max(free))
        });
        let census_wake = census_dirty.then_some(census_at + CENSUS_EVERY);
        tokio::select! {
            _ = stop.cancelled() => return,
            input = rx.recv() => {
                let Some(input) = input else { return };
                record_healed(&metrics, &healer.apply(input, Instant::now().into_std()));
                census_dirty = true;
            }
            _ = sleep_until(wake), if wake.is_some() => {
                readmit_due(&refresher, &mut healer, &budget, &metrics, &stop).await;
                census_dirty = true;
            }
            _ = sleep_until(census_wake), if census_wake.is_some() => {}
        }
        metrics.heal_pending(healer.pending());
        if census_dirty && Instant::now() >= census_at + CENSUS_EVERY {
            census_at = Instant::now();
            census_dirty = false;
            refresher.update_census(|census, metrics_now| healer.census(census, metrics_now));
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn record_healed(metrics: &Metrics, healed: &[Duration]) {
    for d in healed {
        metrics.healed(*d);
    }
}

/// Patches every re-admission due now (as many as the budget allows), one after the other.
async fn readmit_due(
    refresher: &Refresher,
    healer: &mut Healer,
    budget: &Mutex<Budget>,
    metrics: &Metrics,
    stop: &CancellationToken,
) {
    let taken = match budget.lock() {
        Ok(mut b) => healer.take_due(Instant::now().into_std(), &mut b),
        Err(_) => return,
    };
    for (at, error) in taken.held {
        refresher.context().warn(&at, &error).await;
    }
    let due = taken.readmit;
    if due.len() > 1 {
        tracing::info!(objects = due.len(), "re-submitting objects to the policy");
    }
    for d in due {
        if stop.is_cancelled() {
            return;
        }
        let result = cluster::patch_object(refresher.client(), &d.at, &d.patch).await;
        metrics.readmitted();
        let mut stored = None;
        let attempt = match result {
            Ok(obj) => {
                let right = !matches!(healer.judge(&obj), Some(Decision::Readmit(_)));
                stored = Some(obj);
                if right {
                    Attempt::Healed
                } else {
                    Attempt::StillWrong
                }
            }
            Err(e) if cluster::is_not_found(&e) => {
                healer.apply(Input::Deleted(d.at.clone()), Instant::now().into_std());
                continue;
            }
            Err(e) => Attempt::Failed(e.to_string()),
        };
        let outcome = healer.attempted(&d, attempt.clone(), Instant::now().into_std());
        if let Some(obj) = stored {
            healer.apply(Input::Object(obj), Instant::now().into_std());
        }
        match (&outcome.healed_after, &attempt) {
            (Some(after), _) => {
                metrics.healed(*after);
                tracing::info!(object = %d.at, after_ms = after.as_millis() as u64, probe = d.probe, "re-submitted; the policy annotated it");
            }
            (None, Attempt::Failed(why)) => {
                tracing::warn!(object = %d.at, error = %why, probe = d.probe, "cannot re-submit it to the policy")
            }
            (None, _) => {
                tracing::info!(object = %d.at, probe = d.probe, "re-submitted, but the policy did not annotate it (yet)")
            }
        }
        if let Some(error) = outcome.warning {
            refresher.context().warn(&d.at, &error).await;
        }
    }
}

/// Starts the watches that feed the healer: Cluster API MachineDeployments, MachineSets and
/// AWSMachineTemplates (with `cluster_api`) and the policy's ClusterAdmissionPolicy (with
/// `policy`). Machine API MachineSets are fed by the service's own watch.
/// `seen`: where the Cluster API objects also go, for the service to look for a region or type
/// the table lacks.
pub fn spawn_watches(
    refresher: &Refresher,
    cluster_api: Option<mpsc::UnboundedSender<Value>>,
    policy: Option<&policy_settings::PolicyRef>,
    tx: &Sender,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let client = refresher.client().clone();
    if let Some(seen) = cluster_api {
        for kind in capi::SCALABLE_KINDS {
            let seen = seen.clone();
            tasks.push(tokio::spawn(watch_kind(
                client.clone(),
                capi::GROUP,
                &capi::VERSIONS,
                kind,
                watcher::Config::default(),
                tx.clone(),
                stop.clone(),
                move |v| {
                    let _ = seen.send(v.clone());
                    Some(Input::Object(v))
                },
                |v| Some(Input::Deleted(ObjectRef::of(&v))),
            )));
        }
        tasks.push(tokio::spawn(watch_kind(
            client.clone(),
            capi::INFRASTRUCTURE_GROUP,
            &capi::VERSIONS,
            capi::AWS_MACHINE_TEMPLATE,
            watcher::Config::default(),
            tx.clone(),
            stop.clone(),
            |v| {
                let (namespace, name) = namespaced_name(&v);
                Some(Input::Template {
                    namespace,
                    name,
                    instance_type: capi::template_instance_type(&v).map(str::to_string),
                })
            },
            |v| {
                let (namespace, name) = namespaced_name(&v);
                Some(Input::TemplateDeleted { namespace, name })
            },
        )));
    }
    if let Some(at) = policy {
        let name = at.name.as_str();
        let at = at.clone();
        let metrics = refresher.metrics().clone();
        tasks.push(tokio::spawn(watch_kind(
            client,
            policy_settings::GROUP,
            &[policy_settings::VERSION],
            policy_settings::KIND,
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            tx.clone(),
            stop.clone(),
            move |v| match policy_settings::from_policy(&at, &v) {
                Ok(policy) => {
                    tracing::info!(policy = %at.name, "the policy changed; objects are judged with its settings and rules");
                    Some(Input::Policy(policy))
                }
                Err(e) => {
                    let e = crate::Error::from(e);
                    metrics.error(e.metric_label());
                    tracing::warn!(error = %e, "keeping the settings judged with so far");
                    None
                }
            },
            |_| Some(Input::Policy(policy_settings::Policy::default())),
        )));
    }
    tasks
}

fn namespaced_name(v: &Value) -> (String, String) {
    let get = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (get("/metadata/namespace"), get("/metadata/name"))
}

/// Watches `kind` at the first of `versions` served (looked for again every minute while none
/// is: the CRD may be installed later), forwarding what `applied` and `deleted` make of events.
#[allow(clippy::too_many_arguments)]
async fn watch_kind(
    client: kube::Client,
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    config: watcher::Config,
    tx: Sender,
    stop: CancellationToken,
    applied: impl Fn(Value) -> Option<Input>,
    deleted: impl Fn(Value) -> Option<Input>,
) {
    let version = loop {
        match served_version(
            &client,
            group,
            versions,
            kind,
            config.field_selector.as_deref(),
        )
        .await
        {
            Ok(Some(v)) => break v,
            Ok(None) => tracing::debug!(kind, "not served; looked for again in a minute"),
            Err(e) => {
                tracing::warn!(kind, error = %e, "cannot list {kind}s; objects of this kind are not healed until it can")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CRD_RETRY) => {}
        }
    };
    let ar = cluster::resource(&format!("{group}/{version}"), kind);
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let stream = watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            n = stream.next() => n,
        };
        let input = match next {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(kind, error = %e, "watch error; retrying");
                continue;
            }
            Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => {
                serde_json::to_value(o).ok().and_then(&applied)
            }
            Some(Ok(watcher::Event::Delete(o))) => serde_json::to_value(o).ok().and_then(&deleted),
            Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => None,
        };
        if let Some(input) = input
            && tx.send(input).await.is_err()
        {
            return;
        }
    }
}

/// The first of `versions` the API server serves `kind` at (asked with the watch's field
/// selector, which RBAC may require); `None`: none (no such CRD).
async fn served_version(
    client: &kube::Client,
    group: &str,
    versions: &[&'static str],
    kind: &str,
    fields: Option<&str>,
) -> Result<Option<&'static str>, kube::Error> {
    let mut params = ListParams::default().limit(1);
    if let Some(f) = fields {
        params = params.fields(f);
    }
    for version in versions {
        let api: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &cluster::resource(&format!("{group}/{version}"), kind),
        );
        match api.list(&params).await {
            Ok(_) => return Ok(Some(version)),
            Err(e) if cluster::is_not_found(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::context::Context;
    use crate::heal::HealOptions;
    use crate::testing::{
        FakeEc2, FakeKube, annotate_as_marked, instance_type, machineset, refresher_options,
        table_of,
    };

    const MS_PATH: &str =
        "/apis/machine.openshift.io/v1beta1/namespaces/openshift-machine-api/machinesets/w1";

    struct Healing {
        kube: FakeKube,
        refresher: Arc<Refresher>,
        tx: Sender,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Healing {
        /// Stops the loop and waits until it has (its last patch and Event written).
        async fn stop(self) -> (FakeKube, Arc<Refresher>) {
            self.stop.cancel();
            self.task.await.unwrap();
            (self.kube, self.refresher)
        }

        /// The table (m5.large known), then MachineSet w1 of type m5.large without capacity
        /// annotations, as a watch reports it (`stored`: also in the API).
        async fn submit_wrong_object(&self, stored: bool) {
            let ms = machineset(
                "openshift-machine-api",
                "w1",
                "eu-west-3",
                "m5.large",
                "creds",
            );
            if stored {
                self.kube.put(ms.clone());
            }
            let table = table_of(&[instance_type("m5.large", 2, 8192)]);
            self.tx.send(Input::Table(table)).await.unwrap();
            self.tx.send(Input::Object(ms)).await.unwrap();
        }
    }

    fn start(opts: HealOptions) -> Healing {
        let kube = FakeKube::new();
        let ctx = Context::new(kube.client(), Arc::new(Metrics::new()))
            .with_ec2(Arc::new(FakeEc2::default()));
        let budget = ctx.budget.clone();
        let refresher = Arc::new(Refresher::new(ctx, refresher_options(false)));
        let (tx, rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            refresher.clone(),
            Healer::new(opts),
            budget,
            rx,
            stop.clone(),
        ));
        Healing {
            kube,
            refresher,
            tx,
            stop,
            task,
        }
    }

    /// Waits (at most 10 s) until `done` holds.
    async fn until(mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        done()
    }

    #[test]
    fn templates_are_keyed_by_namespace_and_name() {
        let v = serde_json::json!({"metadata": {"namespace": "a", "name": "b"}});
        assert_eq!(namespaced_name(&v), ("a".into(), "b".into()));
    }

    fn patches(kube: &FakeKube) -> usize {
        kube.requests()
            .iter()
            .filter(|r| r.starts_with("PATCH "))
            .count()
    }

    #[tokio::test]
    async fn an_object_stored_without_annotations_is_healed_by_one_resubmission() {
        let h = start(HealOptions::default());
        h.kube.on_patch(annotate_as_marked);
        h.submit_wrong_object(true).await;
        let kube = h.kube.clone();
        assert!(
            until(|| kube.get(MS_PATH).unwrap()["metadata"]["annotations"]["machine.openshift.io/vCPU"] == "2").await,
            "not healed: {:?}",
            kube.requests()
        );
        let metrics = h.refresher.metrics().render();
        assert!(
            metrics.contains("capa_refresher_heal_seconds_count 1"),
            "{metrics}"
        );
        let (kube, _) = h.stop().await;
        assert_eq!(patches(&kube), 1);
        assert!(kube.events().is_empty());
    }

    #[tokio::test]
    async fn an_object_the_policy_does_not_annotate_backs_off_and_gets_one_event_per_period() {
        let h = start(HealOptions {
            debounce: Duration::from_millis(10),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
            probe_interval: Duration::from_millis(100),
            event_after: Duration::ZERO,
        });
        // no admission step: the policy is not active
        h.submit_wrong_object(true).await;
        let kube = h.kube.clone();
        assert!(
            until(|| kube.events().len() >= 2).await,
            "{:?}",
            kube.requests()
        );
        let (kube, refresher) = h.stop().await;
        let events = kube.events();
        let (reason, message) = &events[0];
        assert_eq!(reason, "FailedUpdate");
        assert!(
            message.starts_with("capa-refresher: re-submitted 2 times, but its capacity annotations are still not what the policy writes: is the policy server reachable"),
            "{message}"
        );
        // one Event per failed try from the second on
        assert_eq!(patches(&kube), events.len() + 1, "{:?}", kube.requests());
        let metrics = refresher.metrics().render();
        assert!(
            metrics.contains(&format!(
                "capa_refresher_errors_total{{error=\"not_healed\"}} {}",
                events.len()
            )),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn an_object_deleted_meanwhile_is_forgotten_without_an_event() {
        let h = start(HealOptions {
            debounce: Duration::from_millis(10),
            backoff_base: Duration::from_millis(50),
            probe_interval: Duration::from_millis(50),
            event_after: Duration::ZERO,
            ..HealOptions::default()
        });
        // never stored: the patch answers 404
        h.submit_wrong_object(false).await;
        let kube = h.kube.clone();
        assert!(until(|| patches(&kube) == 1).await);
        let refresher = h.refresher.clone();
        assert!(
            until(|| refresher
                .metrics()
                .render()
                .contains("capa_refresher_heal_pending 0"))
            .await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (kube, _) = h.stop().await;
        assert_eq!(patches(&kube), 1, "not tried again");
        assert!(kube.events().is_empty());
    }
}
