//! Fakes for in-process tests: a Kubernetes API held in memory behind a real `kube::Client`, and
//! EC2 accounts behind [`Ec2Connect`]. Tests of the whole process (leader election, watches, the
//! SDK's retries and TLS) run the binary against real servers instead (`e2e-tests`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::ec2::{Ec2Api, Ec2Connect, Ec2Error, FailureKind, Target};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::region_cache::RegionInfo;
use capa_core::ec2::InstanceTypeInfo;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

/// Where an object lives: `/api/v1` or `/apis/group/version`, its namespace, plural and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Location {
    prefix: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
}

impl Location {
    fn of_path(path: &str) -> Option<Location> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (prefix, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => (format!("/api/{version}"), rest),
            ["apis", group, version, rest @ ..] => (format!("/apis/{group}/{version}"), rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            _ => (None, rest),
        };
        let (plural, name) = match rest {
            [plural] => (plural.to_string(), None),
            [plural, name] => (plural.to_string(), Some(name.to_string())),
            _ => return None,
        };
        Some(Location {
            prefix,
            namespace,
            plural,
            name,
        })
    }

    fn of_object(obj: &Value) -> Location {
        let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
        let api_version = s("/apiVersion");
        Location {
            prefix: if api_version.contains('/') {
                format!("/apis/{api_version}")
            } else {
                format!("/api/{api_version}")
            },
            namespace: Some(s("/metadata/namespace").to_string()).filter(|n| !n.is_empty()),
            plural: capa_core::scope::plural(s("/kind")),
            name: Some(s("/metadata/name").to_string()),
        }
    }

    /// Whether a list at `self` (a collection) holds `object`.
    fn lists(&self, object: &Location) -> bool {
        self.prefix == object.prefix
            && self.plural == object.plural
            && (self.namespace.is_none() || self.namespace == object.namespace)
    }
}

type Admission = Box<dyn Fn(&mut Value) + Send>;

#[derive(Default)]
struct State {
    objects: BTreeMap<Location, Value>,
    resource_version: u64,
    requests: Vec<String>,
    /// Runs on every patched object before it is stored (the policy's mutation).
    admission: Option<Admission>,
    /// Conflicts to answer to the next PUTs.
    conflicts: usize,
}

/// A Kubernetes API in memory: get, list, create (with `generateName`), replace (409 on a stale
/// `resourceVersion`), merge patch; the real server's `Status` bodies.
#[derive(Clone, Default)]
pub struct FakeKube {
    state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

/// RFC 7386.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(t) = target else { return };
    for (k, v) in patch {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

impl FakeKube {
    pub fn new() -> Self {
        Self::default()
    }

    /// A client whose every request this fake answers.
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let fake = fake.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect_bytes().await.unwrap_or_default();
                let (code, value) = fake.answer(parts.method.as_str(), parts.uri.path(), &body);
                let response = http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&value).unwrap_or_default(),
                    ))
                    .expect("a response");
                Ok::<_, Infallible>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    /// Stores `obj` as it is (a fixture).
    pub fn put(&self, mut obj: Value) {
        let mut s = self.state.lock().unwrap();
        s.resource_version += 1;
        obj["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
        s.objects.insert(Location::of_object(&obj), obj);
    }

    /// The stored object at `path` (`/api/v1/namespaces/ns/configmaps/name`).
    pub fn get(&self, path: &str) -> Option<Value> {
        let at = Location::of_path(path)?;
        self.state.lock().unwrap().objects.get(&at).cloned()
    }

    /// Every stored object of `kind`.
    pub fn all(&self, kind: &str) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        s.objects
            .values()
            .filter(|o| o["kind"] == kind)
            .cloned()
            .collect()
    }

    /// `(reason, message)` of every Event, in the order written.
    pub fn events(&self) -> Vec<(String, String)> {
        let mut events = self.all("Event");
        events.sort_by_key(|e| {
            e.pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|v| v.parse::<u64>().ok())
        });
        events
            .iter()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// `METHOD path` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// What the admission chain does to every patched object (the policy).
    pub fn on_patch(&self, admission: impl Fn(&mut Value) + Send + 'static) {
        self.state.lock().unwrap().admission = Some(Box::new(admission));
    }

    /// The next `n` replaces answer 409 Conflict (another writer got there first).
    pub fn conflict_next_replaces(&self, n: usize) {
        self.state.lock().unwrap().conflicts = n;
    }

    fn answer(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let mut s = self.state.lock().unwrap();
        s.requests.push(format!("{method} {path}"));
        let Some(at) = Location::of_path(path) else {
            return status(
                404,
                "NotFound",
                &format!("the server could not find {path}"),
            );
        };
        let input: Option<Value> = serde_json::from_slice(body).ok();
        let what = format!("{} \"{}\"", at.plural, at.name.as_deref().unwrap_or(""));
        match (method, &at.name) {
            ("GET", Some(_)) => match s.objects.get(&at) {
                Some(o) => (200, o.clone()),
                None => status(404, "NotFound", &format!("{what} not found")),
            },
            ("GET", None) => {
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|(l, _)| at.lists(l))
                    .map(|(_, o)| o.clone())
                    .collect();
                (
                    200,
                    json!({"kind": "List", "apiVersion": "v1",
                           "metadata": {"resourceVersion": s.resource_version.to_string()},
                           "items": items}),
                )
            }
            ("POST", None) => {
                let Some(mut obj) = input else {
                    return status(400, "BadRequest", "no object");
                };
                if obj.pointer("/metadata/name").is_none() {
                    let generated = format!(
                        "{}{}",
                        obj.pointer("/metadata/generateName")
                            .and_then(Value::as_str)
                            .unwrap_or(""),
                        s.resource_version + 1
                    );
                    obj["metadata"]["name"] = json!(generated);
                }
                if obj.pointer("/metadata/namespace").is_none()
                    && let Some(ns) = &at.namespace
                {
                    obj["metadata"]["namespace"] = json!(ns);
                }
                let to = Location::of_object(&obj);
                if s.objects.contains_key(&to) {
                    return status(409, "AlreadyExists", &format!("{what} already exists"));
                }
                s.resource_version += 1;
                obj["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
                s.objects.insert(to, obj.clone());
                (201, obj)
            }
            ("PUT", Some(_)) => {
                let Some(mut obj) = input else {
                    return status(400, "BadRequest", "no object");
                };
                if !s.objects.contains_key(&at) {
                    return status(404, "NotFound", &format!("{what} not found"));
                }
                let stored_rv = s
                    .objects
                    .get(&at)
                    .and_then(|o| o.pointer("/metadata/resourceVersion").cloned());
                let sent_rv = obj.pointer("/metadata/resourceVersion").cloned();
                if s.conflicts > 0 || (sent_rv.is_some() && sent_rv != stored_rv) {
                    s.conflicts = s.conflicts.saturating_sub(1);
                    // the other writer's change
                    s.resource_version += 1;
                    let rv = s.resource_version.to_string();
                    if let Some(o) = s.objects.get_mut(&at) {
                        o["metadata"]["resourceVersion"] = json!(rv);
                    }
                    return status(
                        409,
                        "Conflict",
                        &format!(
                            "Operation cannot be fulfilled on {what}: the object has been modified; please apply your changes to the latest version and try again"
                        ),
                    );
                }
                s.resource_version += 1;
                obj["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
                s.objects.insert(at, obj.clone());
                (200, obj)
            }
            ("PATCH", Some(_)) => {
                let Some(mut obj) = s.objects.get(&at).cloned() else {
                    return status(404, "NotFound", &format!("{what} not found"));
                };
                merge(&mut obj, &input.unwrap_or(Value::Null));
                if let Some(admit) = &s.admission {
                    admit(&mut obj);
                }
                s.resource_version += 1;
                obj["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
                s.objects.insert(at, obj.clone());
                (200, obj)
            }
            _ => status(405, "MethodNotAllowed", &format!("{method} {path}")),
        }
    }
}

/// One AWS account as EC2 answers it: the regions it lists, the instance types of each region.
#[derive(Debug, Clone, Default)]
pub struct Account {
    pub regions: Vec<RegionInfo>,
    pub instance_types: BTreeMap<String, Vec<InstanceTypeInfo>>,
    /// Every DescribeInstanceTypes fails with this (after the SDK's retries).
    pub failure: Option<FailureKind>,
}

impl Account {
    /// An account with `regions` (opted in) and the same `types` in each.
    pub fn with(regions: &[&str], types: &[InstanceTypeInfo]) -> Account {
        Account {
            regions: regions
                .iter()
                .map(|r| RegionInfo {
                    name: r.to_string(),
                    opt_in_status: Some("opt-in-not-required".into()),
                })
                .collect(),
            instance_types: regions
                .iter()
                .map(|r| (r.to_string(), types.to_vec()))
                .collect(),
            failure: None,
        }
    }
}

/// EC2 for the accounts it knows (by access key id); any other key is refused as AWS refuses it.
#[derive(Clone, Default)]
pub struct FakeEc2 {
    accounts: Arc<Mutex<BTreeMap<String, Account>>>,
    calls: Arc<Mutex<Vec<String>>>,
    /// Every client refused with this (as a TLS setup that fails).
    refuse: Option<String>,
}

impl FakeEc2 {
    pub fn account(self, access_key_id: &str, account: Account) -> Self {
        self.accounts
            .lock()
            .unwrap()
            .insert(access_key_id.to_string(), account);
        self
    }

    /// No client can be made: `connect` fails with `why`.
    pub fn refusing_clients(mut self, why: &str) -> Self {
        self.refuse = Some(why.to_string());
        self
    }

    /// `Operation region key` of every call so far (`… via endpoint` with a custom endpoint).
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

struct FakeClient {
    account: Option<Account>,
    identity: String,
    region: String,
    /// ` via <endpoint>` when the client was given one.
    via: String,
    calls: Arc<Mutex<Vec<String>>>,
}

impl FakeClient {
    fn call(&self, operation: &'static str, metrics: &Metrics) -> Result<&Account, Ec2Error> {
        self.calls.lock().unwrap().push(format!(
            "{operation} {} {}{}",
            self.region, self.identity, self.via
        ));
        let fail = |kind, message: &str| Ec2Error {
            operation,
            region: self.region.clone(),
            kind,
            message: message.to_string(),
        };
        let result = match &self.account {
            None => Err(fail(
                FailureKind::Auth,
                "AuthFailure: AWS was not able to validate the provided access credentials",
            )),
            Some(a) => match a.failure {
                Some(kind) if operation == "DescribeInstanceTypes" => {
                    Err(fail(kind, "RequestLimitExceeded: Request limit exceeded."))
                }
                _ => Ok(a),
            },
        };
        metrics.ec2_call(operation, if result.is_ok() { "success" } else { "error" });
        result
    }
}

impl Ec2Api for FakeClient {
    fn describe_regions<'a>(
        &'a self,
        metrics: &'a Metrics,
    ) -> BoxFuture<'a, Result<Vec<RegionInfo>, Ec2Error>> {
        let out = self
            .call("DescribeRegions", metrics)
            .map(|a| a.regions.clone());
        Box::pin(async move { out })
    }

    fn describe_instance_types<'a>(
        &'a self,
        metrics: &'a Metrics,
    ) -> BoxFuture<'a, Result<Vec<InstanceTypeInfo>, Ec2Error>> {
        let out = self.call("DescribeInstanceTypes", metrics).map(|a| {
            a.instance_types
                .get(&self.region)
                .cloned()
                .unwrap_or_default()
        });
        Box::pin(async move { out })
    }
}

impl Ec2Connect for FakeEc2 {
    fn connect(&self, target: &Target<'_>) -> Result<Box<dyn Ec2Api>, Error> {
        if let Some(why) = &self.refuse {
            return Err(Error::Ec2Client(why.clone()));
        }
        let identity = target.credentials.identity();
        Ok(Box::new(FakeClient {
            account: self.accounts.lock().unwrap().get(&identity).cloned(),
            identity,
            region: target.region.to_string(),
            via: target
                .endpoint
                .map(|e| format!(" via {e}"))
                .unwrap_or_default(),
            calls: self.calls.clone(),
        }))
    }
}

/// An instance type as DescribeInstanceTypes lists it.
pub fn instance_type(name: &str, vcpus: i64, mib: i64) -> InstanceTypeInfo {
    InstanceTypeInfo {
        instance_type: name.to_string(),
        default_vcpus: Some(vcpus),
        size_in_mib: Some(mib),
        gpus: Vec::new(),
        architectures: vec!["x86_64".to_string()],
    }
}

/// A Machine API MachineSet on AWS, without capacity annotations.
pub fn machineset(ns: &str, name: &str, region: &str, instance_type: &str, secret: &str) -> Value {
    json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
           "metadata": {"namespace": ns, "name": name},
           "spec": {"replicas": 0, "template": {"spec": {"providerSpec": {"value": {
               "apiVersion": "machine.openshift.io/v1beta1", "kind": "AWSMachineProviderConfig",
               "instanceType": instance_type, "placement": {"region": region},
               "credentialsSecret": {"name": secret}}}}}}})
}

/// A Machine API credentials Secret.
pub fn aws_secret(ns: &str, name: &str, key_id: &str, secret: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"namespace": ns, "name": name},
           "stringData": {"aws_access_key_id": key_id, "aws_secret_access_key": secret}})
}

/// The policy's stand-in for the fake API's admission step: writes the Machine API capacity
/// annotations of the table entry the re-admission marker names (`m5.large vcpu=2 memoryMiB=8192
/// gpu=0 arch=amd64`), as the policy would.
pub fn annotate_as_marked(obj: &mut Value) {
    let Some(entry) = obj
        .pointer(&format!(
            "/metadata/annotations/{}",
            crate::readmit::READMIT_ANNOTATION.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return;
    };
    let field = |k: &str| {
        entry
            .split(' ')
            .find_map(|kv| kv.strip_prefix(k))
            .unwrap_or("")
            .to_string()
    };
    let annotations = &mut obj["metadata"]["annotations"];
    annotations["machine.openshift.io/vCPU"] = json!(field("vcpu="));
    annotations["machine.openshift.io/memoryMb"] = json!(field("memoryMiB="));
    annotations["machine.openshift.io/GPU"] = json!(field("gpu="));
    annotations["capacity.cluster-autoscaler.kubernetes.io/labels"] =
        json!(format!("kubernetes.io/arch={}", field("arch=")));
}

/// The table of these DescribeInstanceTypes items.
pub fn table_of(items: &[InstanceTypeInfo]) -> capa_core::table::Table {
    let mut table = capa_core::table::Table::new();
    crate::scan::add_scanned(&mut table, "test", items);
    table
}

/// A refresher's options as `deploy/` sets them, without a policy to read: the table in
/// `openshift-machine-api/machineset-instance-types`, every namespace, no second re-admission.
pub fn refresher_options(dry_run: bool) -> crate::refresh::Options {
    crate::refresh::Options {
        namespace: None,
        store: crate::table_store::TableStore {
            name: "machineset-instance-types".into(),
            namespace: "openshift-machine-api".into(),
        },
        dry_run,
        stale_after: std::time::Duration::from_secs(12 * 3600),
        readmit_retry_after: None,
        cluster_api: None,
        policy: None,
    }
}
