//! The scan phase of a refresh: for each region due, the credentials that point at it are tried in
//! order until one lists the region's instance types. What went wrong is returned as data (the
//! report's failures and the Warning Events to put on objects), not written here.

use crate::cluster;
use crate::credentials::AwsCredentials;
use crate::ec2::{Ec2Api, Ec2Connect, Ec2Error, FailureKind, Target};
use crate::error::Error;
use crate::leader::LeaderElector;
use crate::metrics::Metrics;
use crate::plan::{CredentialsRef, ObjectRef, Plan, RegionPlan};
use crate::rate_limit::RegionRateLimiter;
use crate::region_cache::{self, RegionCache, RegionError};
use capa_core::ec2::InstanceTypeInfo;
use capa_core::table::{Table, TypeName};
use futures::future::BoxFuture;
use kube::Client;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use tokio::sync::Mutex;

/// Where credentials come from: Secrets through the Kubernetes API in the service, a map in tests.
pub trait LoadCredentials: Sync {
    /// The credentials, or why they cannot be used ("not found", "has no aws_access_key_id").
    fn load<'a>(
        &'a self,
        credentials: &'a CredentialsRef,
    ) -> BoxFuture<'a, Result<AwsCredentials, String>>;
}

/// Credentials Secrets read through the Kubernetes API.
pub struct KubeSecrets<'a>(pub &'a Client);

impl LoadCredentials for KubeSecrets<'_> {
    fn load<'a>(
        &'a self,
        credentials: &'a CredentialsRef,
    ) -> BoxFuture<'a, Result<AwsCredentials, String>> {
        Box::pin(async move {
            let (secret, capa_keys) = match credentials {
                CredentialsRef::DefaultChain => return Ok(AwsCredentials::DefaultChain),
                CredentialsRef::Secret(s) => (s, false),
                CredentialsRef::StaticIdentity { secret, .. } => (secret, true),
            };
            match cluster::secret_data(self.0, secret).await {
                Ok(Some(data)) if capa_keys => {
                    AwsCredentials::from_static_identity_data(&data).map_err(|e| e.to_string())
                }
                Ok(Some(data)) => {
                    AwsCredentials::from_secret_data(&data).map_err(|e| e.to_string())
                }
                Ok(None) => Err("not found".to_string()),
                Err(e) => Err(format!("cannot be read: {e}")),
            }
        })
    }
}

impl LoadCredentials for BTreeMap<CredentialsRef, Result<AwsCredentials, String>> {
    fn load<'a>(
        &'a self,
        credentials: &'a CredentialsRef,
    ) -> BoxFuture<'a, Result<AwsCredentials, String>> {
        let found = self
            .get(credentials)
            .cloned()
            .unwrap_or_else(|| Err("not found".to_string()));
        Box::pin(async move { found })
    }
}

/// What the scans of one refresh found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The instance types listed, all regions together.
    pub fetched: Table,
    /// Items EC2 returned (before turning them into table entries).
    pub instance_types_fetched: usize,
    pub regions_ok: BTreeSet<String>,
    /// Regions that could not be scanned, with why.
    pub regions_failed: BTreeMap<String, String>,
    /// Credentials that could not be used, with why.
    pub secrets_failed: BTreeMap<CredentialsRef, String>,
    /// Warning Events to put on objects.
    pub warnings: Vec<(ObjectRef, Error)>,
}

/// Everything a scan uses.
pub struct Scanner<'a> {
    pub ec2: &'a dyn Ec2Connect,
    pub metrics: &'a Metrics,
    pub credentials: &'a dyn LoadCredentials,
    /// DescribeRegions answers, by credentials identity.
    pub regions: &'a Mutex<RegionCache>,
    /// When each region was last scanned.
    pub limiter: &'a Mutex<RegionRateLimiter>,
    /// With leader election: where each scan is recorded before it is made.
    pub ledger: Option<&'a LeaderElector>,
    /// The OpenShift cluster's EC2 endpoint (Machine API Secrets).
    pub endpoint: Option<&'a str>,
    /// The refresher's EC2 endpoint (Cluster API credentials).
    pub cluster_api_endpoint: Option<&'a str>,
    pub ca_bundle: Option<&'a [u8]>,
}

/// Adds what a region's scan listed to `table`; items that cannot become entries are logged and
/// skipped.
pub fn add_scanned(table: &mut Table, region: &str, items: &[InstanceTypeInfo]) {
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

enum RegionCheck {
    Invalid(RegionError),
    Failed(Ec2Error),
}

impl Scanner<'_> {
    /// Scans the regions of `plan` that are in `due`, at most once each.
    pub async fn scan(&self, plan: &Plan, due: &BTreeSet<String>) -> Scan {
        let mut scan = Scan::default();
        let mut loaded = BTreeMap::new();
        for (region, rp) in plan.regions.iter().filter(|(r, _)| due.contains(*r)) {
            match self.region(region, rp, &mut loaded, &mut scan).await {
                Ok(items) => {
                    scan.instance_types_fetched += items.len();
                    add_scanned(&mut scan.fetched, region, &items);
                    scan.regions_ok.insert(region.clone());
                }
                Err(why) => {
                    scan.regions_failed.insert(region.clone(), why);
                }
            }
        }
        scan
    }

    /// One region: its credentials in order until one works; why each failed otherwise.
    async fn region(
        &self,
        region: &str,
        rp: &RegionPlan,
        loaded: &mut BTreeMap<CredentialsRef, Result<AwsCredentials, String>>,
        scan: &mut Scan,
    ) -> Result<Vec<InstanceTypeInfo>, String> {
        let mut failures = Vec::new();
        for (credentials, users) in &rp.secrets {
            if !loaded.contains_key(credentials) {
                let creds = self.credentials.load(credentials).await;
                loaded.insert(credentials.clone(), creds);
            }
            let creds = match loaded.get(credentials) {
                Some(Ok(c)) => c,
                Some(Err(why)) => {
                    credentials_failed(scan, credentials, users, why);
                    failures.push(format!("{credentials}: {why}"));
                    continue;
                }
                None => continue,
            };
            // Machine API Secrets: the OpenShift cluster's endpoint; Cluster API: the refresher's
            let endpoint = match credentials {
                CredentialsRef::Secret(_) => self.endpoint,
                _ => self.cluster_api_endpoint,
            };
            let target = Target {
                credentials: creds,
                region,
                endpoint,
                ca_bundle: self.ca_bundle,
            };
            let ec2 = match self.ec2.connect(&target) {
                Ok(ec2) => ec2,
                Err(e) => {
                    self.metrics.error(e.metric_label());
                    tracing::error!(region, credentials = %credentials, error = %e, "no EC2 client");
                    failures.push(e.to_string());
                    continue;
                }
            };
            match self.check_region(ec2.as_ref(), creds, region).await {
                Ok(()) => {}
                // opt-in is per AWS account: other credentials of the region may be opted in
                Err(RegionCheck::Invalid(e @ RegionError::NotOptedIn(_))) => {
                    let why = format!("is for an AWS account where {e}");
                    credentials_failed(scan, credentials, users, &why);
                    failures.push(format!("{credentials}: {e}"));
                    continue;
                }
                Err(RegionCheck::Invalid(e)) => {
                    tracing::warn!(region, reason = %e, "region skipped");
                    for at in rp.machinesets() {
                        let field = if at.kind == "MachineSet"
                            && at.api_version.starts_with(capa_core::machineset::GROUP)
                        {
                            "providerSpec.value.placement.region"
                        } else {
                            "spec.region of its AWSCluster or AWSManagedControlPlane"
                        };
                        scan.warnings.push((
                            at.clone(),
                            Error::Region {
                                error: e.clone(),
                                field,
                            },
                        ));
                    }
                    return Err(e.to_string());
                }
                Err(RegionCheck::Failed(e)) => {
                    ec2_failed(scan, credentials, users, &e);
                    failures.push(format!("{credentials}: {e}"));
                    continue;
                }
            }
            self.start(region).await?;
            tracing::info!(region, credentials = %credentials, "scanning instance types");
            match ec2.describe_instance_types(self.metrics).await {
                Ok(items) => return Ok(items),
                Err(e) => {
                    ec2_failed(scan, credentials, users, &e);
                    failures.push(format!("{credentials}: {e}"));
                }
            }
        }
        Err(failures.join("; "))
    }

    /// Right before a region's first DescribeInstanceTypes page: records the scan in the Lease
    /// (with leader election) and in the limiter, so the interval runs from the scan itself.
    async fn start(&self, region: &str) -> Result<(), String> {
        if let Some(ledger) = self.ledger
            && let Err(e) = ledger.record_scan(region).await
        {
            let e = Error::ScanNotRecorded(e);
            self.metrics.error(e.metric_label());
            tracing::warn!(region, error = %e, "cannot record the region scan in the Lease; not scanned");
            return Err(e.to_string());
        }
        self.limiter.lock().await.record(region, Instant::now());
        Ok(())
    }

    /// Whether the credentials' account may scan `region` (DescribeRegions, cached).
    async fn check_region(
        &self,
        ec2: &dyn Ec2Api,
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
                    .describe_regions(self.metrics)
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
}

/// Credentials that cannot be used: reported once per refresh, with a Warning on each object that
/// uses them.
fn credentials_failed(
    scan: &mut Scan,
    credentials: &CredentialsRef,
    users: &[ObjectRef],
    why: &str,
) {
    if scan.secrets_failed.contains_key(credentials) {
        return;
    }
    scan.secrets_failed
        .insert(credentials.clone(), why.to_string());
    tracing::error!(credentials = %credentials, objects = ?users.iter().map(ToString::to_string).collect::<Vec<_>>(), reason = %why, "credentials unusable");
    for at in users {
        scan.warnings.push((
            at.clone(),
            Error::Credentials {
                credentials: credentials.clone(),
                why: why.to_string(),
            },
        ));
    }
}

/// A failed EC2 call: credentials AWS rejected are unusable; any other failure is warned about on
/// the objects that use them.
fn ec2_failed(scan: &mut Scan, credentials: &CredentialsRef, users: &[ObjectRef], e: &Ec2Error) {
    tracing::error!(credentials = %credentials, region = %e.region, operation = e.operation, kind = ?e.kind, error = %e.message, "EC2 call failed");
    if e.kind == FailureKind::Auth {
        let why = format!("was rejected by AWS ({})", e.message);
        credentials_failed(scan, credentials, users, &why);
    } else {
        for at in users {
            scan.warnings.push((at.clone(), Error::Ec2(e.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::plan::{self, SecretRef};
    use crate::region_cache::RegionInfo;
    use crate::testing::{Account, FakeEc2, instance_type, machineset};
    use serde_json::Value;

    const NS: &str = "openshift-machine-api";

    fn secret(name: &str) -> CredentialsRef {
        CredentialsRef::Secret(SecretRef {
            namespace: NS.into(),
            name: name.into(),
        })
    }

    fn keys(key_id: &str) -> Result<AwsCredentials, String> {
        Ok(AwsCredentials::Static {
            access_key_id: key_id.into(),
            secret_access_key: "s".into(),
        })
    }

    fn types() -> Vec<InstanceTypeInfo> {
        vec![
            instance_type("m5.large", 2, 8192),
            instance_type("m5.xlarge", 4, 16384),
        ]
    }

    /// Scans every region of the MachineSets `(name, region, type, secret)` with `ec2` and the
    /// Secrets `secrets`.
    async fn scan(
        machinesets: &[(&str, &str, &str, &str)],
        ec2: &FakeEc2,
        secrets: &[(&str, Result<AwsCredentials, String>)],
    ) -> Scan {
        let objects: Vec<Value> = machinesets
            .iter()
            .map(|(n, r, t, s)| machineset(NS, n, r, t, s))
            .collect();
        let credentials = secrets
            .iter()
            .map(|(n, c)| (secret(n), c.clone()))
            .collect();
        scan_plan(&plan::plan(&objects), ec2, &credentials, [None, None])
            .await
            .0
    }

    /// Scans every region of `plan`; `endpoints`: the Machine API and Cluster API ones.
    async fn scan_plan(
        plan: &Plan,
        ec2: &FakeEc2,
        credentials: &BTreeMap<CredentialsRef, Result<AwsCredentials, String>>,
        [endpoint, cluster_api_endpoint]: [Option<&str>; 2],
    ) -> (Scan, Metrics) {
        let due: BTreeSet<String> = plan.regions.keys().cloned().collect();
        let (metrics, regions, limiter) = (
            Metrics::new(),
            Mutex::new(RegionCache::default()),
            Mutex::new(RegionRateLimiter::new(std::time::Duration::ZERO)),
        );
        let scan = Scanner {
            ec2,
            metrics: &metrics,
            credentials,
            regions: &regions,
            limiter: &limiter,
            ledger: None,
            endpoint,
            cluster_api_endpoint,
            ca_bundle: None,
        }
        .scan(plan, &due)
        .await;
        (scan, metrics)
    }

    fn warnings(scan: &Scan) -> Vec<String> {
        scan.warnings
            .iter()
            .map(|(at, e)| format!("{} {}: {}", at.name, e.metric_label(), e))
            .collect()
    }

    fn calls(ec2: &FakeEc2, operation: &str) -> Vec<String> {
        ec2.calls()
            .into_iter()
            .filter(|c| c.starts_with(operation))
            .collect()
    }

    #[tokio::test]
    async fn one_scan_per_region_whatever_the_machinesets_and_secrets() {
        let ec2 = FakeEc2::default()
            .account(
                "AKIAA",
                Account::with(&["eu-west-3", "us-east-1", "us-west-2"], &types()),
            )
            .account(
                "AKIAB",
                Account::with(&["eu-west-3", "us-east-1", "us-west-2"], &types()),
            );
        let s = scan(
            &[
                ("eu-1", "eu-west-3", "m5.large", "creds-a"),
                ("eu-2", "eu-west-3", "m5.xlarge", "creds-b"),
                ("eu-3", "eu-west-3", "c6g.xlarge", "creds-a"),
                ("us-1", "us-east-1", "m5.large", "creds-a"),
                ("us-2", "us-west-2", "m5.large", "creds-b"),
            ],
            &ec2,
            &[("creds-a", keys("AKIAA")), ("creds-b", keys("AKIAB"))],
        )
        .await;
        assert_eq!(
            calls(&ec2, "DescribeInstanceTypes"),
            [
                "DescribeInstanceTypes eu-west-3 AKIAA",
                "DescribeInstanceTypes us-east-1 AKIAA",
                "DescribeInstanceTypes us-west-2 AKIAB",
            ]
        );
        // DescribeRegions is cached per access key
        assert_eq!(calls(&ec2, "DescribeRegions").len(), 2);
        assert_eq!(s.regions_ok.len(), 3);
        assert_eq!(s.fetched.len(), 2);
        assert_eq!(s.instance_types_fetched, 6);
        assert!(s.warnings.is_empty() && s.secrets_failed.is_empty());
    }

    #[tokio::test]
    async fn the_next_secret_of_a_region_is_tried_when_one_fails() {
        // AKIABROKEN is no account of this EC2: AuthFailure, as AWS answers a revoked key
        let ec2 = FakeEc2::default().account("AKIAWORKS", Account::with(&["eu-west-3"], &types()));
        let s = scan(
            &[
                ("w0", "eu-west-3", "m5.large", "a-missing"),
                ("w1", "eu-west-3", "m5.large", "b-broken"),
                ("w2", "eu-west-3", "m5.xlarge", "c-working"),
            ],
            &ec2,
            &[
                ("b-broken", keys("AKIABROKEN")),
                ("c-working", keys("AKIAWORKS")),
            ],
        )
        .await;
        assert_eq!(s.regions_ok, BTreeSet::from(["eu-west-3".to_string()]));
        assert_eq!(
            calls(&ec2, "Describe"),
            [
                "DescribeRegions eu-west-3 AKIABROKEN",
                "DescribeRegions eu-west-3 AKIAWORKS",
                "DescribeInstanceTypes eu-west-3 AKIAWORKS",
            ]
        );
        assert_eq!(
            warnings(&s),
            [
                "w0 credentials: credentials Secret openshift-machine-api/a-missing not found; fix the Secret referenced by providerSpec.value.credentialsSecret",
                "w1 credentials: credentials Secret openshift-machine-api/b-broken was rejected by AWS (AuthFailure: AWS was not able to validate the provided access credentials); fix the Secret referenced by providerSpec.value.credentialsSecret",
            ]
        );
        assert_eq!(s.secrets_failed.len(), 2);
        assert!(s.regions_failed.is_empty());
    }

    #[tokio::test]
    async fn a_region_whose_every_secret_fails_says_why_for_each() {
        let mut throttled = Account::with(&["eu-west-3"], &types());
        throttled.failure = Some(FailureKind::Transient);
        let ec2 = FakeEc2::default().account("AKIAT", throttled);
        let s = scan(
            &[
                ("w1", "eu-west-3", "m5.large", "missing"),
                ("w2", "eu-west-3", "m5.large", "throttled"),
            ],
            &ec2,
            &[("throttled", keys("AKIAT"))],
        )
        .await;
        assert!(s.regions_ok.is_empty());
        assert_eq!(
            s.regions_failed["eu-west-3"],
            "Secret openshift-machine-api/missing: not found; Secret openshift-machine-api/throttled: DescribeInstanceTypes in eu-west-3: RequestLimitExceeded: Request limit exceeded."
        );
        assert_eq!(
            warnings(&s)[1],
            "w2 ec2: EC2 DescribeInstanceTypes in eu-west-3 failed: RequestLimitExceeded: Request limit exceeded."
        );
        assert_eq!(
            s.secrets_failed.keys().collect::<Vec<_>>(),
            [&secret("missing")],
            "a throttled Secret is not a broken one"
        );
    }

    #[tokio::test]
    async fn an_invalid_region_is_not_scanned_and_its_objects_say_so() {
        let ec2 = FakeEc2::default().account("AKIA", Account::with(&["eu-west-3"], &types()));
        let s = scan(
            &[
                ("ok", "eu-west-3", "m5.large", "creds"),
                ("mars", "mars-east-1", "m5.large", "creds"),
            ],
            &ec2,
            &[("creds", keys("AKIA"))],
        )
        .await;
        assert_eq!(s.regions_ok, BTreeSet::from(["eu-west-3".to_string()]));
        assert_eq!(
            s.regions_failed["mars-east-1"],
            "region mars-east-1 is not a valid region"
        );
        assert_eq!(
            warnings(&s),
            [
                "mars region: region mars-east-1 is not a valid region; fix providerSpec.value.placement.region"
            ]
        );
        assert_eq!(
            calls(&ec2, "Describe"),
            [
                "DescribeRegions eu-west-3 AKIA",
                "DescribeInstanceTypes eu-west-3 AKIA",
            ],
            "one DescribeRegions for both regions; no scan of the invalid one"
        );
    }

    #[tokio::test]
    async fn a_region_not_opted_in_for_one_account_is_scanned_with_another() {
        let mut not_opted = Account::with(&["eu-west-3"], &types());
        not_opted.regions.push(RegionInfo {
            name: "me-south-1".into(),
            opt_in_status: Some("not-opted-in".into()),
        });
        let ec2 = FakeEc2::default()
            .account("AKIANOT", not_opted)
            .account("AKIAOPTED", Account::with(&["me-south-1"], &types()));
        let s = scan(
            &[
                ("cape", "me-south-1", "m5.large", "a-not-opted"),
                ("cape-2", "me-south-1", "m5.large", "b-opted"),
            ],
            &ec2,
            &[
                ("a-not-opted", keys("AKIANOT")),
                ("b-opted", keys("AKIAOPTED")),
            ],
        )
        .await;
        assert_eq!(s.regions_ok, BTreeSet::from(["me-south-1".to_string()]));
        assert_eq!(
            warnings(&s),
            [
                "cape credentials: credentials Secret openshift-machine-api/a-not-opted is for an AWS account where region me-south-1 is not opted in; fix the Secret referenced by providerSpec.value.credentialsSecret"
            ]
        );
        assert_eq!(
            calls(&ec2, "DescribeInstanceTypes"),
            ["DescribeInstanceTypes me-south-1 AKIAOPTED"]
        );
    }

    #[tokio::test]
    async fn machine_api_secrets_use_the_clusters_endpoint_and_cluster_api_credentials_the_refreshers()
     {
        let ec2 = FakeEc2::default()
            .account("AKIA", Account::with(&["eu-west-3"], &types()))
            .account("default-chain", Account::with(&["us-east-1"], &types()));
        let mut plan = plan::plan(&[machineset(NS, "ms", "eu-west-3", "m5.large", "creds")]);
        let md = ObjectRef {
            namespace: "capi".into(),
            name: "md".into(),
            api_version: "cluster.x-k8s.io/v1beta1".into(),
            kind: "MachineDeployment".into(),
        };
        plan.add("us-east-1", CredentialsRef::DefaultChain, md);
        let credentials = BTreeMap::from([
            (secret("creds"), keys("AKIA")),
            (
                CredentialsRef::DefaultChain,
                Ok(AwsCredentials::DefaultChain),
            ),
        ]);
        let endpoints = [
            Some("https://ec2.openshift.example"),
            Some("https://ec2.capi.example"),
        ];
        let (s, _) = scan_plan(&plan, &ec2, &credentials, endpoints).await;
        assert_eq!(s.regions_ok.len(), 2, "{:?}", s.regions_failed);
        assert_eq!(
            calls(&ec2, "DescribeInstanceTypes"),
            [
                "DescribeInstanceTypes eu-west-3 AKIA via https://ec2.openshift.example",
                "DescribeInstanceTypes us-east-1 default-chain via https://ec2.capi.example",
            ]
        );
    }

    #[tokio::test]
    async fn a_region_without_an_ec2_client_fails_and_is_counted() {
        let ec2 = FakeEc2::default()
            .account("AKIA", Account::with(&["eu-west-3"], &types()))
            .refusing_clients("TLS settings of the EC2 client: no usable root");
        let objects = [machineset(NS, "w", "eu-west-3", "m5.large", "creds")];
        let credentials = BTreeMap::from([(secret("creds"), keys("AKIA"))]);
        let (s, metrics) = scan_plan(&plan::plan(&objects), &ec2, &credentials, [None, None]).await;
        assert_eq!(
            s.regions_failed["eu-west-3"],
            "no EC2 client: TLS settings of the EC2 client: no usable root"
        );
        assert!(
            s.warnings.is_empty() && s.secrets_failed.is_empty(),
            "not the Secret's fault"
        );
        assert!(ec2.calls().is_empty());
        assert!(
            metrics
                .render()
                .contains("capa_refresher_errors_total{error=\"ec2_client\"} 1")
        );
    }

    #[tokio::test]
    async fn items_that_cannot_become_entries_are_skipped() {
        let mut bad = instance_type("m5.large", 2, 8192);
        bad.default_vcpus = None;
        let ec2 = FakeEc2::default().account(
            "AKIA",
            Account::with(&["eu-west-3"], &[bad, instance_type("m5.xlarge", 4, 16384)]),
        );
        let s = scan(
            &[("w", "eu-west-3", "m5.large", "creds")],
            &ec2,
            &[("creds", keys("AKIA"))],
        )
        .await;
        assert_eq!(s.instance_types_fetched, 2);
        assert_eq!(s.fetched.len(), 1);
    }
}
