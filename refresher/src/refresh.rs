//! One refresh, as phases that return data, with the Kubernetes reads and writes at their ends:
//! read the cluster ([`Refresher::read_inputs`]) → plan the regions and credentials
//! ([`plan::plan`], [`plan::Plan::add_cluster_api`]) → the regions due
//! ([`RegionRateLimiter::take_due`]) → scan them, at most one full DescribeInstanceTypes per region
//! ([`Scanner::scan`]) → the next table, written on change ([`crate::stored_table::next_content`])
//! → the objects to re-admit ([`readmit::select`]).

use crate::capi::{self, CapiObject, CapiOptions};
use crate::cluster;
use crate::context::Context;
use crate::error::Error;
use crate::leader::LeaderElector;
use crate::metrics::Metrics;
use crate::node_groups;
use crate::plan::{self, CredentialsRef, ObjectRef};
use crate::policy_settings::{Policy, PolicyRef};
use crate::rate_limit::RegionRateLimiter;
use crate::readmit::{self, Candidate, Decision};
use crate::region_cache::RegionCache;
use crate::scan::{KubeSecrets, LoadCredentials, Scanner};
use crate::table_store::{TableStore, WriteOutcome};
use capa_core::table::Table;
use kube::Client;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// What one refresh did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Regions scanned successfully.
    pub regions_ok: BTreeSet<String>,
    /// Regions that could not be scanned, with why.
    pub regions_failed: BTreeMap<String, String>,
    /// Regions not scanned because they were scanned less than `--min-region-scan-interval` ago
    /// (by this replica or the previous leader), with how long they still wait.
    pub regions_postponed: BTreeMap<String, Duration>,
    /// Secrets that could not be used (missing, no keys, rejected by AWS), with why.
    pub secrets_failed: BTreeMap<CredentialsRef, String>,
    pub instance_types_fetched: usize,
    pub table_size: usize,
    pub written: bool,
    pub readmitted: usize,
    pub unknown: usize,
    /// The table after the refresh.
    pub table: Table,
    /// The regions that table covers (the ConfigMap's, this refresh's included).
    pub table_regions: BTreeSet<String>,
    /// What EC2 listed in this refresh (the regions of `regions_ok`), before merging.
    pub fetched: Table,
    /// For `--dry-run`: the ConfigMap that would be written.
    pub dry_run_configmap: Option<Value>,
}

impl Report {
    pub fn success(&self) -> bool {
        self.regions_failed.is_empty() && self.secrets_failed.is_empty()
    }

    pub fn result_label(&self) -> &'static str {
        match (self.success(), self.regions_ok.is_empty()) {
            (true, _) => "success",
            (false, false) => "partial",
            (false, true) => "failure",
        }
    }
}

/// Settings of the refresher that shape a refresh.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: Option<String>,
    pub store: TableStore,
    pub dry_run: bool,
    /// `last-refresh` is re-recorded when older than this even if nothing changed.
    pub stale_after: Duration,
    /// A re-admitted MachineSet that still does not match the table is re-admitted once more after
    /// this long (the policy server caches ConfigMap reads for 5 s); `None`: no second try.
    pub readmit_retry_after: Option<Duration>,
    /// Also Cluster API MachineDeployments and MachineSets (`--cluster-api`).
    pub cluster_api: Option<CapiOptions>,
    /// The ClusterAdmissionPolicy whose settings and scope objects are judged with
    /// (`--policy-name`, `--kubewarden-namespace`); `None`: the policy's defaults, every object.
    pub policy: Option<PolicyRef>,
}

/// What a refresh reads from the cluster before it plans.
pub struct Inputs {
    pub machinesets: Vec<Value>,
    pub cluster_api: Vec<CapiObject>,
    /// The settings and scope to judge objects with.
    pub policy: Policy,
    /// The OpenShift cluster's custom EC2 endpoint.
    pub endpoint: Option<String>,
    /// The OpenShift cluster's CA bundle for EC2.
    pub ca_bundle: Option<Vec<u8>>,
}

/// State kept between refreshes.
pub struct Refresher {
    ctx: Context,
    opts: Options,
    regions: Mutex<RegionCache>,
    /// When each region was last scanned (see `rate_limit.rs`).
    scans: Mutex<RegionRateLimiter>,
    /// Where scans are recorded for the next leader (leader election only).
    ledger: Option<Arc<LeaderElector>>,
    /// The node groups' states, with since when each has not been right.
    census: std::sync::Mutex<crate::node_groups::Census>,
}

impl Refresher {
    /// A refresher that scans every region it is asked to (`--once`, `--dry-run`).
    pub fn new(ctx: Context, opts: Options) -> Self {
        Refresher {
            ctx,
            opts,
            regions: Mutex::new(RegionCache::default()),
            scans: Mutex::new(RegionRateLimiter::new(Duration::ZERO)),
            ledger: None,
            census: std::sync::Mutex::default(),
        }
    }

    /// At most one scan per region per `min_interval`; with `ledger`, recorded in the Lease
    /// before each scan (a refresh whose scans cannot be recorded scans nothing).
    pub fn with_scan_limit(
        mut self,
        min_interval: Duration,
        ledger: Option<Arc<LeaderElector>>,
    ) -> Self {
        self.scans = Mutex::new(RegionRateLimiter::new(min_interval));
        self.ledger = ledger;
        self
    }

    /// Takes over the scans the previous leader recorded in the Lease.
    pub async fn load_recorded_scans(&self) {
        let Some(ledger) = &self.ledger else {
            return;
        };
        match ledger.recorded_scans().await {
            Ok(scans) => {
                let mut limiter = self.scans.lock().await;
                for (region, at) in &scans {
                    limiter.record(region, *at);
                }
                if !scans.is_empty() {
                    tracing::info!(regions = ?scans.keys().collect::<Vec<_>>(), "region scans recorded by the previous leader taken over");
                }
            }
            // the first scans then go ahead: at worst one early scan per region
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the region scans recorded in the Lease")
            }
        }
    }

    /// How long `region` must wait before it may be scanned; `None`: now.
    pub async fn scan_wait(&self, region: &str) -> Option<Duration> {
        self.scans.lock().await.wait(region, Instant::now())
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    pub fn client(&self) -> &Client {
        &self.ctx.client
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Refreshes every region the MachineSets use, or only `only` (on-demand refreshes).
    pub async fn refresh(&self, only: Option<&BTreeSet<String>>) -> Result<Report, Error> {
        let started = Instant::now();
        let metrics = &self.ctx.metrics;
        let result = self.refresh_inner(only).await;
        match &result {
            Ok(r) => {
                metrics.refresh_done(r.result_label(), started.elapsed(), r.table_size);
                tracing::info!(
                    result = r.result_label(),
                    regions_ok = ?r.regions_ok,
                    regions_failed = ?r.regions_failed,
                    regions_postponed = ?r.regions_postponed.keys().collect::<Vec<_>>(),
                    fetched = r.instance_types_fetched,
                    table = r.table_size,
                    written = r.written,
                    readmitted = r.readmitted,
                    unknown = r.unknown,
                    took_ms = started.elapsed().as_millis() as u64,
                    "refresh done"
                );
            }
            Err(e) => {
                metrics.refresh_done("failure", started.elapsed(), 0);
                metrics.error(e.metric_label());
                tracing::error!(error = %e, kind = e.metric_label(), "refresh failed");
            }
        }
        result
    }

    /// The phases: read → plan → regions due → scan → next table → re-admit.
    async fn refresh_inner(&self, only: Option<&BTreeSet<String>>) -> Result<Report, Error> {
        let inputs = self.read_inputs().await?;
        let mut plan = plan::plan(&inputs.machinesets);
        plan.log_skipped();
        let mut warnings = plan.add_cluster_api(&inputs.cluster_api);
        let wanted = plan
            .regions
            .keys()
            .filter(|r| only.is_none_or(|o| o.contains(*r)));
        let due = self.scans.lock().await.take_due(wanted, Instant::now());
        for (region, wait) in &due.postponed {
            tracing::info!(
                region,
                wait_s = wait.as_secs_f64().ceil() as u64,
                "region scanned less than --min-region-scan-interval ago; scan postponed"
            );
        }
        let secrets = KubeSecrets(&self.ctx.client);
        let scan = self.scanner(&inputs, &secrets).scan(&plan, &due.now).await;
        warnings.extend(scan.warnings);
        for (at, e) in &warnings {
            if self.opts.dry_run {
                tracing::warn!(object = %at, error = %e, "a Warning Event without --dry-run");
            } else {
                self.ctx.warn(at, e).await;
            }
        }
        let mut report = Report {
            regions_ok: scan.regions_ok,
            regions_failed: scan.regions_failed,
            regions_postponed: due.postponed,
            secrets_failed: scan.secrets_failed,
            instance_types_fetched: scan.instance_types_fetched,
            ..Report::default()
        };
        let (table, data_changed) = self.next_table(&scan.fetched, &mut report).await?;
        report.table_size = table.len();
        if !self.opts.dry_run {
            let in_scanned: BTreeSet<&ObjectRef> = plan
                .regions
                .iter()
                .filter(|(r, _)| report.regions_ok.contains(*r))
                .flat_map(|(_, rp)| rp.machinesets())
                .collect();
            let refs: Vec<ObjectRef> = inputs.machinesets.iter().map(ObjectRef::of).collect();
            let mut candidates: Vec<Candidate<'_>> = refs
                .iter()
                .zip(&inputs.machinesets)
                .map(|(at, object)| Candidate {
                    at,
                    object,
                    capi_type: None,
                    scanned: in_scanned.contains(at),
                })
                .collect();
            candidates.extend(inputs.cluster_api.iter().filter_map(|o| {
                Some(Candidate {
                    at: &o.at,
                    object: &o.object,
                    capi_type: Some(o.instance_type.as_deref().ok()?),
                    scanned: in_scanned.contains(&o.at),
                })
            }));
            let judge = inputs.policy.judge(&table);
            self.count_node_groups(&inputs.machinesets, &refs, &inputs.cluster_api, judge);
            self.readmit(&candidates, data_changed, judge, &mut report)
                .await;
        }
        report.table = table;
        report.fetched = scan.fetched;
        Ok(report)
    }

    /// The read phase: the objects to refresh, the policy's settings, the cluster's EC2 endpoint
    /// and CA bundle.
    pub async fn read_inputs(&self) -> Result<Inputs, Error> {
        let client = &self.ctx.client;
        let machinesets = cluster::list_machinesets(client, self.opts.namespace.as_deref())
            .await
            .map_err(Error::kube("list MachineSets"))?;
        let policy = crate::policy_settings::current(&self.ctx, self.opts.policy.as_ref()).await;
        // Cluster API objects that cannot be read must not stop the Machine API MachineSets'
        // refresh: logged, and left for the next refresh
        let cluster_api = match &self.opts.cluster_api {
            Some(o) => match capi::resolve_all(client, o).await {
                Ok(objects) => objects,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read Cluster API objects; they are not refreshed this time (with --cluster-api the refresher needs the RBAC of deploy/components/cluster-api)");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let endpoint = cluster::ec2_endpoint(client)
            .await
            .map_err(Error::kube("read Infrastructure cluster"))?;
        let ca_bundle = cluster::ca_bundle(client).await.map_err(Error::kube(
            "read ConfigMap openshift-config-managed/kube-cloud-config",
        ))?;
        if let Some(pem) = &ca_bundle {
            crate::ec2::validate_pem(pem)?;
        }
        if let Some(url) = &endpoint {
            tracing::info!(endpoint = %url, "using the cluster's custom EC2 endpoint");
        }
        Ok(Inputs {
            machinesets,
            cluster_api,
            policy,
            endpoint,
            ca_bundle,
        })
    }

    fn scanner<'a>(
        &'a self,
        inputs: &'a Inputs,
        credentials: &'a dyn LoadCredentials,
    ) -> Scanner<'a> {
        Scanner {
            ec2: self.ctx.ec2.as_ref(),
            metrics: &self.ctx.metrics,
            credentials,
            regions: &self.regions,
            limiter: &self.scans,
            ledger: self.ledger.as_deref().filter(|_| !self.opts.dry_run),
            endpoint: inputs.endpoint.as_deref(),
            cluster_api_endpoint: self
                .opts
                .cluster_api
                .as_ref()
                .and_then(|o| o.ec2_endpoint.as_deref()),
            ca_bundle: inputs.ca_bundle.as_deref(),
        }
    }

    /// The next-table phase: what is stored merged with what was scanned, written when it
    /// changed (shown, with `--dry-run`); whether the table's data changed.
    async fn next_table(
        &self,
        fetched: &Table,
        report: &mut Report,
    ) -> Result<(Table, bool), Error> {
        let client = &self.ctx.client;
        let store = &self.opts.store;
        if self.opts.dry_run {
            let (current, stored) = store.read(client).await.map_err(Error::kube(format!(
                "read ConfigMap {}/{}",
                store.namespace, store.name
            )))?;
            let content = crate::stored_table::next_content(
                &stored,
                fetched,
                &report.regions_ok,
                std::time::SystemTime::now(),
                Duration::ZERO,
            );
            let (table, regions) = content
                .as_ref()
                .map(|c| (c.table.clone(), c.regions.clone()))
                .unwrap_or((stored.table, stored.regions));
            report.table_regions = regions;
            // what would be written, or what is stored when nothing would change
            let shown = match content {
                Some(content) => serde_json::to_value(store.object(current, &content)),
                None => serde_json::to_value(current),
            };
            report.dry_run_configmap = Some(shown?);
            return Ok((table, false));
        }
        match store
            .merge_and_write(client, fetched, &report.regions_ok, self.opts.stale_after)
            .await?
        {
            WriteOutcome::Unchanged(table, regions) => {
                report.table_regions = regions;
                Ok((table, false))
            }
            WriteOutcome::Written { content, conflicts } => {
                self.ctx.metrics.configmap_written();
                report.written = true;
                tracing::info!(
                    configmap = format!("{}/{}", store.namespace, store.name),
                    types = content.table.len(),
                    data_changed = content.data_changed,
                    conflicts,
                    "table written"
                );
                report.table_regions = content.regions;
                Ok((content.table, content.data_changed))
            }
        }
    }

    /// Judges every node group (not only those of the regions scanned) and exports the counts;
    /// `refs`: the MachineSets' references, in their order.
    fn count_node_groups(
        &self,
        machinesets: &[Value],
        refs: &[ObjectRef],
        capi_objects: &[capi::CapiObject],
        judge: readmit::Judge<'_>,
    ) {
        let subjects = refs
            .iter()
            .zip(machinesets)
            .map(|(at, object)| node_groups::Subject {
                at,
                object,
                capi_type: None,
            })
            .chain(capi_objects.iter().map(|o| node_groups::Subject {
                at: &o.at,
                object: &o.object,
                capi_type: Some(o.instance_type.as_deref().map_err(String::as_str)),
            }));
        self.update_census(|census, now| census.update(subjects, judge, now));
    }

    /// Updates the node-group census with `count` and exports it.
    pub fn update_census(
        &self,
        count: impl FnOnce(&mut node_groups::Census, std::time::SystemTime),
    ) {
        let Ok(mut census) = self.census.lock() else {
            return;
        };
        count(&mut census, std::time::SystemTime::now());
        self.ctx.metrics.node_groups(&census);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.ctx.metrics
    }

    /// Waits for a re-admission slot.
    async fn readmit_slot(&self) {
        let mut told = false;
        loop {
            let wait = match self.ctx.budget.lock() {
                Ok(mut b) => match b.take(Instant::now()) {
                    Ok(()) => return,
                    Err(wait) => (wait, b.per_minute()),
                },
                Err(_) => return,
            };
            if !told {
                tracing::info!(
                    per_minute = wait.1,
                    wait_ms = wait.0.as_millis() as u64,
                    "re-admission cap reached (--max-readmissions-per-minute); waiting"
                );
                told = true;
            }
            tokio::time::sleep(wait.0).await;
        }
    }

    /// The re-admission phase: patches the objects [`readmit::select`] picks so the policy sees
    /// them again, and puts its warnings on objects. An object the policy answered from an older
    /// table (the policy server caches ConfigMap reads for 5 s) is re-admitted once more after
    /// `readmit_retry_after`.
    async fn readmit(
        &self,
        candidates: &[Candidate<'_>],
        data_changed: bool,
        judge: readmit::Judge<'_>,
        report: &mut Report,
    ) {
        let selection = readmit::select(candidates, data_changed, judge);
        report.unknown += selection.warnings.len();
        for (at, e) in &selection.warnings {
            self.ctx.warn(at, e).await;
        }
        let mut again = Vec::new();
        for (i, patch) in selection.readmit {
            let Some(c) = candidates.get(i) else { continue };
            if let Some(stored) = self.readmit_one(c.at, &patch, report).await
                && let Decision::Readmit(patch) = judge.decide(&stored, c.capi_type)
            {
                again.push((c, patch));
            }
        }
        let Some(wait) = self.opts.readmit_retry_after.filter(|_| !again.is_empty()) else {
            for (c, _) in &again {
                tracing::warn!(object = %c.at, "re-admitted, but its annotations still do not match the table: is the capa-annotator policy active for it?");
            }
            return;
        };
        tracing::info!(
            objects = again.len(),
            wait_s = wait.as_secs_f64(),
            "re-admitted objects do not match the table yet (the policy server caches ConfigMap reads for a few seconds); re-admitting them again"
        );
        tokio::time::sleep(wait).await;
        for (c, patch) in again {
            if let Some(stored) = self.readmit_one(c.at, &patch, report).await
                && !matches!(judge.decide(&stored, c.capi_type), Decision::UpToDate)
            {
                tracing::warn!(object = %c.at, "re-admitted twice, but its annotations still do not match the table: is the capa-annotator policy active for it, and may the policy server read the ConfigMap?");
            }
        }
    }

    /// One re-admission patch; the MachineSet as stored after admission.
    async fn readmit_one(
        &self,
        at: &ObjectRef,
        patch: &Value,
        report: &mut Report,
    ) -> Option<Value> {
        self.readmit_slot().await;
        match cluster::patch_object(&self.ctx.client, at, patch).await {
            Ok(stored) => {
                report.readmitted += 1;
                self.ctx.metrics.readmitted();
                tracing::info!(machineset = %at, "re-admitted so the policy annotates it");
                Some(stored)
            }
            Err(e) => {
                tracing::warn!(machineset = %at, error = %e, "cannot patch MachineSet for re-admission");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::{Account, FakeEc2, FakeKube, aws_secret, instance_type, machineset};
    use serde_json::json;

    const NS: &str = "openshift-machine-api";
    const CM: &str = "machineset-instance-types";
    /// The table's `m5` entry after a scan of the fake account.
    const M5: &str = r#"{"large":{"vcpu":2,"memoryMiB":8192,"gpu":0,"arch":"amd64"},"xlarge":{"vcpu":4,"memoryMiB":16384,"gpu":0,"arch":"amd64"}}"#;
    const CM_PATH: &str =
        "/api/v1/namespaces/openshift-machine-api/configmaps/machineset-instance-types";

    struct World {
        kube: FakeKube,
        ec2: FakeEc2,
        refresher: Refresher,
    }

    fn world(dry_run: bool) -> World {
        let kube = FakeKube::new();
        let ec2 = FakeEc2::default().account(
            "AKIAE2E",
            Account::with(
                &["eu-west-3", "us-east-1"],
                &[
                    instance_type("m5.large", 2, 8192),
                    instance_type("m5.xlarge", 4, 16384),
                ],
            ),
        );
        kube.put(aws_secret(NS, "aws-creds", "AKIAE2E", "s"));
        kube.on_patch(crate::testing::annotate_as_marked);
        let ctx =
            Context::new(kube.client(), Arc::new(Metrics::new())).with_ec2(Arc::new(ec2.clone()));
        let opts = crate::testing::refresher_options(dry_run);
        World {
            kube,
            ec2,
            refresher: Refresher::new(ctx, opts),
        }
    }

    /// A MachineSet whose credentials Secret does not exist.
    fn orphan() -> Value {
        machineset(NS, "orphan", "us-east-1", "m5.large", "does-not-exist")
    }

    fn writes(kube: &FakeKube) -> Vec<String> {
        kube.requests()
            .into_iter()
            .filter(|r| !r.starts_with("GET "))
            .collect()
    }

    #[tokio::test]
    async fn one_refresh_fills_the_table_and_readmits_then_an_unchanged_table_is_not_written() {
        let w = world(false);
        w.kube
            .put(machineset(NS, "w1", "eu-west-3", "m5.large", "aws-creds"));
        w.kube
            .put(machineset(NS, "w2", "eu-west-3", "m5.xlarge", "aws-creds"));
        let report = w.refresher.refresh(None).await.unwrap();
        assert!(report.success(), "{report:?}");
        assert!(report.written);
        assert_eq!(report.readmitted, 2);
        assert_eq!(report.table_size, 2);
        let cm = w.kube.get(CM_PATH).unwrap();
        assert_eq!(cm["data"]["m5"], M5, "{cm}");
        assert_eq!(
            cm["metadata"]["annotations"]["capa-annotator.io/regions"],
            "eu-west-3"
        );
        let ms = w
            .kube
            .get("/apis/machine.openshift.io/v1beta1/namespaces/openshift-machine-api/machinesets/w2")
            .unwrap();
        assert_eq!(
            ms["metadata"]["annotations"]["machine.openshift.io/vCPU"],
            "4"
        );
        assert_eq!(
            writes(&w.kube),
            [
                "POST /api/v1/namespaces/openshift-machine-api/configmaps",
                "PATCH /apis/machine.openshift.io/v1beta1/namespaces/openshift-machine-api/machinesets/w1",
                "PATCH /apis/machine.openshift.io/v1beta1/namespaces/openshift-machine-api/machinesets/w2",
            ]
        );
        assert!(w.kube.events().is_empty());
        let secret_reads = |kube: &FakeKube| {
            kube.requests()
                .iter()
                .filter(|r| r.ends_with("/secrets/aws-creds"))
                .count()
        };
        assert_eq!(
            secret_reads(&w.kube),
            1,
            "one read of the Secret per refresh"
        );

        let again = w.refresher.refresh(None).await.unwrap();
        assert!(again.success() && !again.written);
        assert_eq!(again.readmitted, 0, "every MachineSet is right");
        assert_eq!(secret_reads(&w.kube), 2);
        assert_eq!(writes(&w.kube).len(), 3, "nothing written the second time");
        assert_eq!(
            w.ec2
                .calls()
                .iter()
                .filter(|c| c.starts_with("DescribeInstanceTypes"))
                .count(),
            2
        );
    }

    #[tokio::test]
    async fn what_goes_wrong_for_an_object_is_a_failed_update_event_counted_by_kind() {
        let w = world(false);
        w.kube
            .put(machineset(NS, "fine", "eu-west-3", "m5.large", "aws-creds"));
        w.kube.put(machineset(
            NS,
            "typo",
            "eu-west-3",
            "m5.xlargee",
            "aws-creds",
        ));
        w.kube.put(orphan());
        let report = w.refresher.refresh(None).await.unwrap();
        assert!(
            !report.success(),
            "a Secret that cannot be used fails the refresh"
        );
        assert_eq!(report.result_label(), "partial");
        assert_eq!(report.unknown, 1);
        assert_eq!(
            w.kube.events(),
            [
                (
                    "FailedUpdate".to_string(),
                    "capa-refresher: credentials Secret openshift-machine-api/does-not-exist not found; fix the Secret referenced by providerSpec.value.credentialsSecret".to_string()
                ),
                (
                    "FailedUpdate".to_string(),
                    "capa-refresher: unknown instance type m5.xlargee: EC2 does not list it; fix providerSpec.value.instanceType or add it to the policy's overrides setting".to_string()
                ),
            ]
        );
        let events = w.kube.all("Event");
        let on: Vec<_> = events
            .iter()
            .map(|e| e["involvedObject"]["name"].as_str().unwrap())
            .collect();
        assert!(on.contains(&"orphan") && on.contains(&"typo") && !on.contains(&"fine"));
        let metrics = w.refresher.metrics().render();
        for needle in [
            "capa_refresher_errors_total{error=\"credentials\"} 1",
            "capa_refresher_errors_total{error=\"unknown_instance_type\"} 1",
            "capa_refresher_refreshes_total{result=\"partial\"} 1",
        ] {
            assert!(metrics.contains(needle), "{needle} missing in:\n{metrics}");
        }
    }

    #[tokio::test]
    async fn a_table_that_keeps_conflicting_fails_the_refresh_with_its_label() {
        let w = world(false);
        w.kube
            .put(machineset(NS, "w1", "eu-west-3", "m5.large", "aws-creds"));
        w.kube.put(json!({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"namespace": NS, "name": CM}, "data": {}}));
        w.kube.conflict_next_replaces(2);
        let report = w.refresher.refresh(None).await.unwrap();
        assert!(report.written, "two conflicts, then written");
        assert_eq!(w.kube.get(CM_PATH).unwrap()["data"]["m5"], M5);

        w.kube
            .put(machineset(NS, "w2", "us-east-1", "m5.large", "aws-creds"));
        w.kube.conflict_next_replaces(100);
        let e = w.refresher.refresh(None).await.unwrap_err();
        assert_eq!(e.metric_label(), "table_conflict");
        assert_eq!(
            e.to_string(),
            "ConfigMap openshift-machine-api/machineset-instance-types: still conflicting after 8 attempts; another writer keeps changing it"
        );
        let metrics = w.refresher.metrics().render();
        assert!(metrics.contains("capa_refresher_errors_total{error=\"table_conflict\"} 1"));
        assert!(metrics.contains("capa_refresher_refreshes_total{result=\"failure\"} 1"));
    }

    #[tokio::test]
    async fn a_dry_run_shows_the_configmap_and_writes_nothing() {
        let w = world(true);
        w.kube
            .put(machineset(NS, "w1", "eu-west-3", "m5.large", "aws-creds"));
        // would be a Warning Event: logged instead
        w.kube.put(orphan());
        let report = w.refresher.refresh(None).await.unwrap();
        assert_eq!(report.secrets_failed.len(), 1);
        let shown = report.dry_run_configmap.unwrap();
        assert_eq!(shown["data"]["m5"], M5);
        assert!(writes(&w.kube).is_empty(), "{:?}", writes(&w.kube));
    }

    #[tokio::test]
    async fn only_the_regions_asked_for_are_scanned_and_a_region_just_scanned_waits() {
        let w = world(false);
        let w = World {
            refresher: w.refresher.with_scan_limit(Duration::from_secs(600), None),
            ..w
        };
        w.kube
            .put(machineset(NS, "eu", "eu-west-3", "m5.large", "aws-creds"));
        w.kube
            .put(machineset(NS, "us", "us-east-1", "m5.large", "aws-creds"));
        let only = BTreeSet::from(["us-east-1".to_string()]);
        let first = w.refresher.refresh(Some(&only)).await.unwrap();
        assert_eq!(first.regions_ok, only);
        let second = w.refresher.refresh(None).await.unwrap();
        assert_eq!(second.regions_ok, BTreeSet::from(["eu-west-3".to_string()]));
        assert_eq!(
            second.regions_postponed.keys().collect::<Vec<_>>(),
            ["us-east-1"]
        );
        assert!(second.success(), "a postponed region is no failure");
    }
}
