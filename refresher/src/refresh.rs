//! One refresh: MachineSets → regions and credentials → at most one full DescribeInstanceTypes scan
//! per region → merge into the stored table → write on change → re-admit MachineSets.

use crate::capi::{self, CapiOptions};
use crate::cluster;
use crate::credentials::AwsCredentials;
use crate::ec2::{Ec2, Ec2Error, FailureKind};
use crate::heal;
use crate::leader::LeaderElector;
use crate::metrics::Metrics;
use crate::node_groups;
use crate::plan::{self, CredentialsRef, ObjectRef, RegionPlan, Skipped};
use crate::rate_limit::RegionRateLimiter;
use crate::readmit::{self, Decision};
use crate::region_cache::{self, RegionCache};
use crate::table_store::{TableStore, WriteOutcome};
use capa_core::table::{Table, TypeName};
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
    /// The ClusterAdmissionPolicy whose settings objects are judged with (`--policy-name`);
    /// `None`: the policy's defaults.
    pub policy_name: Option<String>,
}

/// `--max-readmissions-per-minute`'s default: client-go's default rate (5 requests a second).
pub const DEFAULT_READMISSIONS_PER_MINUTE: usize = 300;

/// Adds what a region's scan listed to `table`; items that cannot become entries are logged and
/// skipped.
pub fn add_scanned(table: &mut Table, region: &str, items: &[capa_core::ec2::InstanceTypeInfo]) {
    for item in items {
        match (item.capacity(), TypeName::parse(&item.instance_type)) {
            (Ok(cap), Ok(name)) => {
                table.insert(name, cap);
            }
            (Err(e), _) => tracing::warn!(region, error = %e, "instance type skipped"),
            (_, Err(e)) => tracing::warn!(region, error = %e, "instance type skipped"),
        }
    }
}

/// State kept between refreshes.
pub struct Refresher {
    client: Client,
    opts: Options,
    metrics: Arc<Metrics>,
    regions: Mutex<RegionCache>,
    /// When each region was last scanned (see `rate_limit.rs`).
    scans: Mutex<RegionRateLimiter>,
    /// Where scans are recorded for the next leader (leader election only).
    ledger: Option<Arc<LeaderElector>>,
    /// The node groups' states, with since when each has not been right.
    census: std::sync::Mutex<crate::node_groups::Census>,
    /// Re-admissions per minute, shared with the healer.
    budget: Arc<std::sync::Mutex<heal::Budget>>,
}

impl Refresher {
    /// A refresher that scans every region it is asked to (`--once`, `--dry-run`).
    pub fn new(client: Client, opts: Options, metrics: Arc<Metrics>) -> Self {
        Refresher {
            client,
            opts,
            metrics,
            regions: Mutex::new(RegionCache::default()),
            scans: Mutex::new(RegionRateLimiter::new(Duration::ZERO)),
            ledger: None,
            census: std::sync::Mutex::default(),
            budget: Arc::new(std::sync::Mutex::new(heal::Budget::new(
                DEFAULT_READMISSIONS_PER_MINUTE,
            ))),
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

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Refreshes every region the MachineSets use, or only `only` (on-demand refreshes).
    pub async fn refresh(&self, only: Option<&BTreeSet<String>>) -> anyhow::Result<Report> {
        let started = Instant::now();
        let result = self.refresh_inner(only).await;
        match &result {
            Ok(r) => {
                self.metrics
                    .refresh_done(r.result_label(), started.elapsed(), r.table_size);
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
                self.metrics.refresh_done("failure", started.elapsed(), 0);
                tracing::error!(error = format!("{e:#}"), "refresh failed");
            }
        }
        result
    }

    async fn refresh_inner(&self, only: Option<&BTreeSet<String>>) -> anyhow::Result<Report> {
        let client = &self.client;
        let machinesets = cluster::list_machinesets(client, self.opts.namespace.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("cannot list MachineSets: {e}"))?;
        let policy =
            crate::policy_settings::current(client, self.opts.policy_name.as_deref()).await;
        let mut plan = plan::plan(&machinesets);
        // Cluster API objects that cannot be read must not stop the Machine API MachineSets'
        // refresh: logged, and left for the next refresh
        let capi_objects = match &self.opts.cluster_api {
            Some(o) => match capi::resolve_all(client, o).await {
                Ok(objects) => objects,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read Cluster API objects; they are not refreshed this time (with --cluster-api the refresher needs the RBAC of deploy/components/cluster-api)");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        for o in &capi_objects {
            match (&o.instance_type, &o.scan) {
                (Err(why), _) => {
                    // re-admission waits for the template; the Event says so where users look
                    tracing::warn!(object = %o.at, reason = %why, "instance type unknown; skipped");
                    self.warn(&o.at, &format!("capa-refresher: {why}; it is re-admitted at the first refresh after the template can be read")).await;
                }
                (Ok(_), Ok((region, credentials))) => {
                    plan.add(region, credentials.clone(), o.at.clone());
                }
                (Ok(_), Err(why)) => {
                    tracing::warn!(object = %o.at, reason = %why, "region or credentials unknown; its region is not scanned");
                    self.warn(&o.at, &format!("capa-refresher: {why}")).await;
                }
            }
        }
        for s in &plan.skipped {
            match s {
                Skipped::Unreadable(at, why) => {
                    tracing::warn!(machineset = %at, reason = %why, "provider spec unreadable; skipped")
                }
                Skipped::NoRegion(at) => {
                    tracing::warn!(machineset = %at, "no providerSpec.value.placement.region; skipped")
                }
                Skipped::NoCredentials(at) => {
                    tracing::warn!(machineset = %at, "no providerSpec.value.credentialsSecret.name; skipped")
                }
            }
        }
        let endpoint = cluster::ec2_endpoint(client)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read Infrastructure cluster: {e}"))?;
        let ca = cluster::ca_bundle(client).await.map_err(|e| {
            anyhow::anyhow!("cannot read ConfigMap openshift-config-managed/kube-cloud-config: {e}")
        })?;
        let http = crate::ec2::http_client(ca.as_deref())?;
        if let Some(url) = &endpoint {
            tracing::info!(endpoint = %url, "using the cluster's custom EC2 endpoint");
        }

        let mut report = Report::default();
        let due = self.due_regions(&plan, only, &mut report).await;
        let mut fetched = Table::new();
        let mut secrets: BTreeMap<CredentialsRef, Result<AwsCredentials, String>> = BTreeMap::new();
        for (region, rp) in &plan.regions {
            if !due.contains(region) {
                continue;
            }
            match self
                .scan_region(
                    region,
                    rp,
                    endpoint.as_deref(),
                    &http,
                    &mut secrets,
                    &mut report,
                )
                .await
            {
                Ok(items) => {
                    report.instance_types_fetched += items.len();
                    add_scanned(&mut fetched, region, &items);
                    report.regions_ok.insert(region.clone());
                }
                Err(why) => {
                    report.regions_failed.insert(region.clone(), why);
                }
            }
        }

        let mut data_changed = false;
        let table = if self.opts.dry_run {
            let (current, stored) = self.opts.store.read(client).await?;
            let content = crate::stored_table::next_content(
                &stored,
                &fetched,
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
                Some(content) => serde_json::to_value(self.opts.store.object(current, &content))?,
                None => serde_json::to_value(current)?,
            };
            report.dry_run_configmap = Some(shown);
            table
        } else {
            match self
                .opts
                .store
                .merge_and_write(client, &fetched, &report.regions_ok, self.opts.stale_after)
                .await?
            {
                WriteOutcome::Unchanged(table, regions) => {
                    report.table_regions = regions;
                    table
                }
                WriteOutcome::Written { content, conflicts } => {
                    self.metrics.configmap_written();
                    report.written = true;
                    data_changed = content.data_changed;
                    tracing::info!(
                        configmap =
                            format!("{}/{}", self.opts.store.namespace, self.opts.store.name),
                        types = content.table.len(),
                        data_changed = content.data_changed,
                        conflicts,
                        "table written"
                    );
                    report.table_regions = content.regions;
                    content.table
                }
            }
        };
        report.table_size = table.len();
        if !self.opts.dry_run {
            let scanned = report.regions_ok.clone();
            let mut objects: Vec<(ObjectRef, &Value, Option<&str>)> = machinesets
                .iter()
                .map(|ms| (ObjectRef::of(ms), ms, None))
                .collect();
            objects.extend(capi_objects.iter().filter_map(|o| {
                let t = o.instance_type.as_deref().ok()?;
                Some((o.at.clone(), &o.object, Some(t)))
            }));
            let judge = policy.judge(&table);
            self.count_node_groups(&machinesets, &capi_objects, judge);
            self.readmit(
                &objects,
                &plan.regions,
                &scanned,
                data_changed,
                judge,
                &mut report,
            )
            .await;
        }
        report.table = table;
        report.fetched = fetched;
        Ok(report)
    }

    /// Judges every node group (not only those of the regions scanned) and exports the counts.
    fn count_node_groups(
        &self,
        machinesets: &[Value],
        capi_objects: &[capi::CapiObject],
        judge: readmit::Judge<'_>,
    ) {
        let refs: Vec<ObjectRef> = machinesets.iter().map(ObjectRef::of).collect();
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
        self.metrics.node_groups(&census);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Every re-admission takes a slot of this budget (shared with the healer).
    pub fn with_readmit_budget(mut self, budget: Arc<std::sync::Mutex<heal::Budget>>) -> Self {
        self.budget = budget;
        self
    }

    /// Waits for a re-admission slot.
    async fn readmit_slot(&self) {
        let mut told = false;
        loop {
            let wait = match self.budget.lock() {
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

    /// The regions of `plan` (or of `only`) that may be scanned now, recorded as tried now
    /// (failures count); the others go to `report.regions_postponed`.
    async fn due_regions(
        &self,
        plan: &plan::Plan,
        only: Option<&BTreeSet<String>>,
        report: &mut Report,
    ) -> BTreeSet<String> {
        let now = Instant::now();
        let mut limiter = self.scans.lock().await;
        let mut due = BTreeSet::new();
        for region in plan.regions.keys() {
            if only.is_some_and(|o| !o.contains(region)) {
                continue;
            }
            match limiter.wait(region, now) {
                None => {
                    due.insert(region.clone());
                }
                Some(wait) => {
                    tracing::info!(
                        region,
                        wait_s = wait.as_secs_f64().ceil() as u64,
                        "region scanned less than --min-region-scan-interval ago; scan postponed"
                    );
                    report.regions_postponed.insert(region.clone(), wait);
                }
            }
        }
        for region in &due {
            limiter.record(region, now);
        }
        due
    }

    /// Right before a region's first DescribeInstanceTypes page: records the scan in the Lease
    /// (with leader election) and in the limiter, so the interval runs from the scan itself.
    async fn start_scan(&self, region: &str) -> Result<(), String> {
        if let Some(ledger) = self.ledger.as_ref().filter(|_| !self.opts.dry_run)
            && let Err(e) = ledger.record_scan(region).await
        {
            tracing::warn!(region, error = %e, "cannot record the region scan in the Lease; not scanned");
            return Err(format!(
                "not scanned: the scan could not be recorded in the Lease ({e})"
            ));
        }
        self.scans.lock().await.record(region, Instant::now());
        Ok(())
    }

    /// Scans one region: the Secrets that point at it are tried in order until one works.
    async fn scan_region(
        &self,
        region: &str,
        rp: &RegionPlan,
        endpoint: Option<&str>,
        http: &aws_sdk_ec2::config::SharedHttpClient,
        secrets: &mut BTreeMap<CredentialsRef, Result<AwsCredentials, String>>,
        report: &mut Report,
    ) -> Result<Vec<capa_core::ec2::InstanceTypeInfo>, String> {
        let mut failures = Vec::new();
        for (secret, users) in &rp.secrets {
            if !secrets.contains_key(secret) {
                let loaded = self.load_secret(secret).await;
                secrets.insert(secret.clone(), loaded);
            }
            let creds = match secrets.get(secret) {
                Some(Ok(c)) => c.clone(),
                Some(Err(why)) => {
                    self.secret_failed(secret, users, why, report).await;
                    failures.push(format!("Secret {secret}: {why}"));
                    continue;
                }
                None => continue,
            };
            // Machine API Secrets: the OpenShift cluster's endpoint; Cluster API: the refresher's
            let endpoint = match secret {
                CredentialsRef::Secret(_) => endpoint,
                _ => self
                    .opts
                    .cluster_api
                    .as_ref()
                    .and_then(|o| o.ec2_endpoint.as_deref()),
            };
            let ec2 = Ec2::new(&creds, region, endpoint, http);
            match self.check_region(&ec2, &creds, region).await {
                Ok(()) => {}
                // opt-in is per AWS account: another Secret of the region may be opted in
                Err(RegionCheck::Invalid(e @ region_cache::RegionError::NotOptedIn(_))) => {
                    let why = format!("is for an AWS account where {e}");
                    self.secret_failed(secret, users, &why, report).await;
                    failures.push(format!("Secret {secret}: {e}"));
                    continue;
                }
                Err(RegionCheck::Invalid(e)) => {
                    let why = e.to_string();
                    for at in rp.machinesets() {
                        let field = if at.kind == "MachineSet"
                            && at.api_version.starts_with(capa_core::machineset::GROUP)
                        {
                            "providerSpec.value.placement.region"
                        } else {
                            "spec.region of its AWSCluster or AWSManagedControlPlane"
                        };
                        self.warn(at, &format!("capa-refresher: {why}; fix {field}"))
                            .await;
                    }
                    tracing::warn!(region, reason = %why, "region skipped");
                    return Err(why);
                }
                Err(RegionCheck::Failed(e)) => {
                    self.ec2_failed(secret, users, &e, report).await;
                    failures.push(format!("Secret {secret}: {e}"));
                    continue;
                }
            }
            self.start_scan(region).await?;
            tracing::info!(region, secret = %secret, "scanning instance types");
            match ec2.describe_instance_types(&self.metrics).await {
                Ok(items) => return Ok(items),
                Err(e) => {
                    self.ec2_failed(secret, users, &e, report).await;
                    failures.push(format!("Secret {secret}: {e}"));
                }
            }
        }
        Err(failures.join("; "))
    }

    async fn load_secret(&self, credentials: &CredentialsRef) -> Result<AwsCredentials, String> {
        let (secret, capa_keys) = match credentials {
            CredentialsRef::DefaultChain => return Ok(AwsCredentials::DefaultChain),
            CredentialsRef::Secret(s) => (s, false),
            CredentialsRef::StaticIdentity { secret, .. } => (secret, true),
        };
        match cluster::secret_data(&self.client, secret).await {
            Ok(Some(data)) if capa_keys => {
                AwsCredentials::from_static_identity_data(&data).map_err(|e| e.to_string())
            }
            Ok(Some(data)) => AwsCredentials::from_secret_data(&data).map_err(|e| e.to_string()),
            Ok(None) => Err("not found".to_string()),
            Err(e) => Err(format!("cannot be read: {e}")),
        }
    }

    async fn check_region(
        &self,
        ec2: &Ec2,
        creds: &AwsCredentials,
        region: &str,
    ) -> Result<(), RegionCheck> {
        let identity = creds.identity();
        let cached = self
            .regions
            .lock()
            .await
            .get(&identity, Instant::now())
            .map(<[_]>::to_vec);
        let regions = match cached {
            Some(r) => r,
            None => {
                let r = ec2
                    .describe_regions(&self.metrics)
                    .await
                    .map_err(RegionCheck::Failed)?;
                self.regions
                    .lock()
                    .await
                    .insert(&identity, r.clone(), Instant::now());
                r
            }
        };
        region_cache::check(&regions, region).map_err(RegionCheck::Invalid)
    }

    async fn secret_failed(
        &self,
        secret: &CredentialsRef,
        users: &[ObjectRef],
        why: &str,
        report: &mut Report,
    ) {
        if report.secrets_failed.contains_key(secret) {
            return;
        }
        report
            .secrets_failed
            .insert(secret.clone(), why.to_string());
        tracing::error!(secret = %secret, machinesets = ?users.iter().map(ToString::to_string).collect::<Vec<_>>(), reason = %why, "credentials Secret unusable");
        for at in users {
            self.warn(
                at,
                &format!(
                    "capa-refresher: credentials {secret} {why}; {}",
                    secret.fix()
                ),
            )
            .await;
        }
    }

    async fn ec2_failed(
        &self,
        secret: &CredentialsRef,
        users: &[ObjectRef],
        e: &Ec2Error,
        report: &mut Report,
    ) {
        let why = match e.kind {
            FailureKind::Auth => format!("was rejected by AWS ({})", e.message),
            _ => format!("could not be used: {e}"),
        };
        tracing::error!(secret = %secret, region = %e.region, operation = e.operation, kind = ?e.kind, error = %e.message, "EC2 call failed");
        if e.kind == FailureKind::Auth {
            self.secret_failed(secret, users, &why, report).await;
        } else {
            for at in users {
                self.warn(
                    at,
                    &format!(
                        "capa-refresher: EC2 {} in {} failed: {}",
                        e.operation, e.region, e.message
                    ),
                )
                .await;
            }
        }
    }

    /// Patches MachineSets whose annotations differ from the table so the policy sees them again
    /// (those of the regions just scanned, and every one when the table's data changed); warns on
    /// those of a region just scanned whose type EC2 does not list. A MachineSet the policy
    /// answered from an older table (the policy server caches ConfigMap reads for 5 s) is
    /// re-admitted once more after `readmit_retry_after`.
    async fn readmit(
        &self,
        objects: &[(ObjectRef, &Value, Option<&str>)],
        regions: &BTreeMap<String, RegionPlan>,
        scanned: &BTreeSet<String>,
        data_changed: bool,
        judge: readmit::Judge<'_>,
        report: &mut Report,
    ) {
        let in_scanned: BTreeSet<&ObjectRef> = regions
            .iter()
            .filter(|(r, _)| scanned.contains(*r))
            .flat_map(|(_, rp)| rp.machinesets())
            .collect();
        // a Cluster API object is judged by its template's type and the Cluster API keys
        let judge = |obj: &Value, capi_type: Option<&str>| judge.decide(obj, capi_type);
        let mut again = Vec::new();
        for (at, obj, capi_type) in objects {
            let was_scanned = in_scanned.contains(at);
            if !was_scanned && !data_changed {
                continue;
            }
            match judge(obj, *capi_type) {
                Decision::Ignore | Decision::UpToDate => {}
                Decision::Readmit(patch) => {
                    if let Some(stored) = self.readmit_one(at, &patch, report).await
                        && let Decision::Readmit(patch) = judge(&stored, *capi_type)
                    {
                        again.push((at.clone(), patch, *capi_type));
                    }
                }
                Decision::Unknown(_) if !was_scanned => {}
                Decision::Unknown(instance_type) => {
                    report.unknown += 1;
                    let field = if capi_type.is_some() {
                        "spec.template.spec.instanceType of its AWSMachineTemplate"
                    } else {
                        "providerSpec.value.instanceType"
                    };
                    self.warn(at, &format!("capa-refresher: unknown instance type {instance_type}: EC2 does not list it; fix {field} or add it to the policy's overrides setting")).await;
                }
            }
        }
        let Some(wait) = self.opts.readmit_retry_after.filter(|_| !again.is_empty()) else {
            for (at, _, _) in &again {
                tracing::warn!(machineset = %at, "re-admitted, but its annotations still do not match the table: is the capa-annotator policy active for it?");
            }
            return;
        };
        tracing::info!(
            machinesets = again.len(),
            wait_s = wait.as_secs_f64(),
            "re-admitted MachineSets do not match the table yet (the policy server caches ConfigMap reads for a few seconds); re-admitting them again"
        );
        tokio::time::sleep(wait).await;
        for (at, patch, capi_type) in again {
            if let Some(stored) = self.readmit_one(&at, &patch, report).await
                && !matches!(judge(&stored, capi_type), Decision::UpToDate)
            {
                tracing::warn!(machineset = %at, "re-admitted twice, but its annotations still do not match the table: is the capa-annotator policy active for it, and may the policy server read the ConfigMap?");
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
        match cluster::patch_object(&self.client, at, patch).await {
            Ok(stored) => {
                report.readmitted += 1;
                self.metrics.readmitted();
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

impl Refresher {
    /// A Warning Event `FailedUpdate` on a MachineSet (upstream parity: the one reason it uses).
    async fn warn(&self, at: &ObjectRef, message: &str) {
        cluster::event(&self.client, at, "Warning", "FailedUpdate", message).await;
    }
}

enum RegionCheck {
    Invalid(region_cache::RegionError),
    Failed(Ec2Error),
}
