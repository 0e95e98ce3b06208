//! A stateful fake Kubernetes API server on 127.0.0.1, for running the real refresher binary
//! (and, later, the whole system) without a cluster.
//!
//! Objects live in memory; GET/LIST/WATCH/CREATE/UPDATE/PATCH(merge, apply, json)/DELETE behave
//! like the real server where the refresher can tell: a global resourceVersion, 409 Conflict on a
//! stale resourceVersion, 409 AlreadyExists, 404 with the real `Status` bodies, watch as a chunked
//! stream of JSON lines. Every request is recorded (user, verb, group, resource, namespace, name)
//! so tests can compare what a client did with the RBAC it is granted; the user is the bearer
//! token of the request (`write_kubeconfig_as`).
//!
//! A mutating admission step can be installed for a kind (`set_admission`): it sees every CREATE
//! and UPDATE (a PATCH is an UPDATE, as in Kubernetes) of that kind after the request's own change,
//! and its JSON patch and warnings are applied and returned like a MutatingWebhookConfiguration's.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// The user of writes made by the test itself ([`FakeKube::put`], interferences).
pub const DIRECT_WRITER: &str = "fake-kube:direct";

/// A kind the fake server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

impl Kind {
    /// `configmaps`, `machinesets.machine.openshift.io`: how the API server names it in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

pub const KINDS: &[Kind] = &[
    Kind {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
    },
    Kind {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
    },
    Kind {
        group: "machine.openshift.io",
        version: "v1beta1",
        kind: "MachineSet",
        plural: "machinesets",
        namespaced: true,
    },
    Kind {
        group: "config.openshift.io",
        version: "v1",
        kind: "Infrastructure",
        plural: "infrastructures",
        namespaced: false,
    },
    Kind {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        namespaced: true,
    },
    // Cluster API and CAPA, at their current version (v1beta1 is not served: a client asking
    // for it gets 404, as from a cluster that dropped it)
    Kind {
        group: "cluster.x-k8s.io",
        version: "v1beta2",
        kind: "MachineDeployment",
        plural: "machinedeployments",
        namespaced: true,
    },
    Kind {
        group: "cluster.x-k8s.io",
        version: "v1beta2",
        kind: "MachineSet",
        plural: "machinesets",
        namespaced: true,
    },
    Kind {
        group: "cluster.x-k8s.io",
        version: "v1beta2",
        kind: "Cluster",
        plural: "clusters",
        namespaced: true,
    },
    Kind {
        group: "infrastructure.cluster.x-k8s.io",
        version: "v1beta2",
        kind: "AWSMachineTemplate",
        plural: "awsmachinetemplates",
        namespaced: true,
    },
    Kind {
        group: "infrastructure.cluster.x-k8s.io",
        version: "v1beta2",
        kind: "AWSCluster",
        plural: "awsclusters",
        namespaced: true,
    },
    Kind {
        group: "infrastructure.cluster.x-k8s.io",
        version: "v1beta2",
        kind: "AWSClusterStaticIdentity",
        plural: "awsclusterstaticidentities",
        namespaced: false,
    },
    Kind {
        group: "controlplane.cluster.x-k8s.io",
        version: "v1beta2",
        kind: "AWSManagedControlPlane",
        plural: "awsmanagedcontrolplanes",
        namespaced: true,
    },
    // Kubewarden: the refresher reads the policy's settings from it
    Kind {
        group: "policies.kubewarden.io",
        version: "v1",
        kind: "ClusterAdmissionPolicy",
        plural: "clusteradmissionpolicies",
        namespaced: false,
    },
];

fn kind_of(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

fn kind_for_object(obj: &Value) -> Option<&'static Kind> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    let kind = obj.get("kind")?.as_str()?;
    KINDS
        .iter()
        .find(|k| k.api_version() == api_version && k.kind == kind)
}

/// One request as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestRecord {
    /// The bearer token of the request (the fake server's notion of a user).
    pub user: String,
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

type Key = (&'static str, &'static str, Option<String>, String); // group, plural, namespace, name

#[derive(Debug, Clone)]
struct WatchEvent {
    group: &'static str,
    plural: &'static str,
    namespace: Option<String>,
    rv: u64,
    kind: &'static str, // ADDED, MODIFIED, DELETED
    object: Value,
}

/// What a mutating admission step is asked about.
#[derive(Debug, Clone)]
pub struct AdmissionReview {
    /// `CREATE` or `UPDATE`.
    pub operation: &'static str,
    pub user: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The object as it would be stored.
    pub object: Value,
    /// The stored object (UPDATE).
    pub old_object: Option<Value>,
}

/// A mutating admission step's answer.
#[derive(Debug, Clone, Default)]
pub struct AdmissionResult {
    /// `false`: the write is refused with `message`.
    pub denied: bool,
    pub message: Option<String>,
    pub patch: Option<json_patch::Patch>,
    pub warnings: Vec<String>,
}

/// A mutating admission step; `None` = the request does not match its rules.
pub type AdmissionHook = Arc<dyn Fn(&AdmissionReview) -> Option<AdmissionResult> + Send + Sync>;

/// One admission the server ran.
#[derive(Debug, Clone)]
pub struct AdmissionRecord {
    pub operation: &'static str,
    pub user: String,
    pub namespace: Option<String>,
    pub name: String,
    pub warnings: Vec<String>,
    /// The step changed the object.
    pub mutated: bool,
}

/// A mutation of a stored object, run just before the next write to it (simulates a concurrent writer).
pub type Interference = Box<dyn FnOnce(&mut Value) + Send>;

/// A fault the server injects into the next request(s) it matches.
#[derive(Debug, Clone)]
pub struct ApiFault {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`; `None`: any.
    pub verb: Option<&'static str>,
    /// The plural (`configmaps`, `machinesets`, `leases`…); `None`: any.
    pub resource: Option<&'static str>,
    /// The requesting user (bearer token); `None`: any.
    pub user: Option<String>,
    pub effect: ApiFaultEffect,
    /// How many matching requests it affects.
    pub count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFaultEffect {
    /// Answer 409 Conflict (writes) as if another client had written first.
    Conflict,
    /// Answer 500 InternalError.
    InternalError,
    /// Wait this long before serving the request normally (an overloaded API server).
    Slow(std::time::Duration),
    /// A watch: serve this many events, then close the stream.
    CloseWatchAfter(usize),
    /// A watch: one `ERROR` event with a 410 Expired Status, then close (the resourceVersion is
    /// too old), as the API server does after its watch cache moved on.
    WatchGone,
}

impl ApiFaultEffect {
    /// A short name for counting faults by kind.
    pub fn label(&self) -> &'static str {
        match self {
            ApiFaultEffect::Conflict => "api_409_conflict",
            ApiFaultEffect::InternalError => "api_500",
            ApiFaultEffect::Slow(_) => "api_slow",
            ApiFaultEffect::CloseWatchAfter(_) => "api_watch_closed",
            ApiFaultEffect::WatchGone => "api_watch_410_gone",
        }
    }
}

/// A write the server committed, as an observer sees it (under the store's lock, in commit order).
#[derive(Debug)]
pub struct Commit<'a> {
    pub user: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub event: &'a str,
    /// The object as stored (the last state for `DELETED`).
    pub object: &'a Value,
}

/// Sees every committed write; must not call back into the server.
pub type CommitObserver = Arc<dyn Fn(&Commit<'_>) + Send + Sync>;

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<WatchEvent>,
    requests: Vec<RequestRecord>,
    interferences: Vec<(Key, Interference)>,
    uid: u64,
    hooks: Vec<(&'static Kind, AdmissionHook)>,
    admissions: Vec<AdmissionRecord>,
    faults: Vec<ApiFault>,
    /// Faults served, by [`ApiFaultEffect::label`].
    faults_served: BTreeMap<&'static str, u64>,
    observers: Vec<CommitObserver>,
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<WatchEvent>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // a test that panicked while holding the lock has already failed; keep serving
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores `obj` under `key` with a new resourceVersion and records the watch event.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        kind: &'static Kind,
        key: Key,
        mut obj: Value,
        event: &'static str,
        tx: &broadcast::Sender<WatchEvent>,
        user: &str,
    ) -> Value {
        let rv = self.next_rv();
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind);
        let ev = WatchEvent {
            group: kind.group,
            plural: kind.plural,
            namespace: key.2.clone(),
            rv,
            kind: event,
            object: obj.clone(),
        };
        for o in &self.observers {
            o(&Commit {
                user,
                group: kind.group,
                resource: kind.plural,
                namespace: key.2.as_deref(),
                name: &key.3,
                event,
                object: &obj,
            });
        }
        if event == "DELETED" {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, obj.clone());
        }
        self.history.push(ev.clone());
        let _ = tx.send(ev);
        obj
    }

    /// Takes the first fault matching a request, counting it as served.
    fn take_fault(&mut self, verb: &str, resource: &str, user: &str) -> Option<ApiFaultEffect> {
        let i = self.faults.iter().position(|f| {
            f.verb.is_none_or(|v| v == verb)
                && f.resource.is_none_or(|r| r == resource)
                && f.user.as_deref().is_none_or(|u| u == user)
        })?;
        let f = &mut self.faults[i];
        let effect = f.effect;
        f.count = f.count.saturating_sub(1);
        if f.count == 0 {
            self.faults.remove(i);
        }
        *self.faults_served.entry(effect.label()).or_default() += 1;
        Some(effect)
    }
}

/// The running fake API server.
pub struct FakeKube {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKube {
    /// Starts a server on 127.0.0.1 (a free port) in a background thread.
    pub fn start() -> anyhow::Result<Self> {
        let (tx, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            events: tx,
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-kube".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(anyhow::anyhow!("runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addr_tx.send(Err(anyhow::anyhow!("bind: {e}")));
                            return;
                        }
                    };
                    let _ = addr_tx.send(listener.local_addr().map_err(anyhow::Error::from));
                    let app = Router::new().fallback(handle).with_state(state);
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stop_rx.await;
                        })
                        .await;
                });
            })?;
        let addr = addr_rx.recv()??;
        Ok(FakeKube {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig pointing at this server into `dir` (user `fake-token`).
    pub fn write_kubeconfig(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        self.write_kubeconfig_as(dir, "fake-token")
    }

    /// Writes kubeconfigs for this server from anywhere (it does not borrow the server).
    pub fn kubeconfig_writer(&self) -> KubeconfigWriter {
        KubeconfigWriter { url: self.url() }
    }

    /// Writes a kubeconfig whose requests the server records as `user` (the bearer token).
    pub fn write_kubeconfig_as(&self, dir: &Path, user: &str) -> anyhow::Result<PathBuf> {
        self.kubeconfig_writer().write(dir, user)
    }
}

/// See [`FakeKube::kubeconfig_writer`].
pub struct KubeconfigWriter {
    url: String,
}

impl KubeconfigWriter {
    /// Writes a kubeconfig whose requests the server records as `user` (the bearer token).
    pub fn write(&self, dir: &Path, user: &str) -> anyhow::Result<PathBuf> {
        let path = dir.join(format!("kubeconfig-{}", user.replace(':', "_")));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: {user}\n",
            self.url
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

impl FakeKube {
    /// Creates or replaces an object (its apiVersion/kind pick the resource).
    pub fn put(&self, mut obj: Value) -> Value {
        let kind =
            kind_for_object(&obj).unwrap_or_else(|| panic!("fake kube: unknown kind in {obj}"));
        let ns = if kind.namespaced {
            Some(
                obj.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string(),
            )
        } else {
            None
        };
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut store = self.shared.lock();
        let key: Key = (kind.group, kind.plural, ns, name);
        let event = if store.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store.uid += 1;
        let uid = store.uid;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.entry("uid")
                .or_insert_with(|| json!(format!("uid-{uid}")));
            meta.entry("creationTimestamp")
                .or_insert_with(|| json!("2026-11-25T00:00:00Z"));
        }
        store.commit(kind, key, obj, event, &self.shared.events, DIRECT_WRITER)
    }

    /// A stored object.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.reader().get(api_version, kind, namespace, name)
    }

    /// Every stored object of a kind (any namespace).
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let Some(k) = KINDS
            .iter()
            .find(|k| k.api_version() == api_version && k.kind == kind)
        else {
            return vec![];
        };
        self.shared
            .lock()
            .objects
            .iter()
            .filter(|((g, p, _, _), _)| *g == k.group && *p == k.plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A handle that reads stored objects from any thread (e.g. an admission step's host calls).
    pub fn reader(&self) -> KubeReader {
        KubeReader {
            shared: self.shared.clone(),
        }
    }

    /// Installs a mutating admission step for a kind.
    pub fn set_admission(&self, api_version: &str, kind: &str, hook: AdmissionHook) {
        let k = KINDS
            .iter()
            .find(|k| k.api_version() == api_version && k.kind == kind)
            .unwrap_or_else(|| panic!("fake kube: unknown kind {api_version} {kind}"));
        self.shared.lock().hooks.push((k, hook));
    }

    /// Every admission run so far.
    pub fn admissions(&self) -> Vec<AdmissionRecord> {
        self.shared.lock().admissions.clone()
    }

    /// Queues a fault for the next matching request(s).
    pub fn inject(&self, fault: ApiFault) {
        self.shared.lock().faults.push(fault);
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Faults served so far, by kind.
    pub fn faults_served(&self) -> BTreeMap<&'static str, u64> {
        self.shared.lock().faults_served.clone()
    }

    /// Calls `observer` on every write committed from now on (in commit order, under the
    /// store's lock: it must not call back into the server).
    pub fn observe_commits(&self, observer: CommitObserver) {
        self.shared.lock().observers.push(observer);
    }

    /// Every request served so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Runs `f` on the stored object right before the next write (PUT/PATCH) to it: the writer's
    /// resourceVersion is then stale, as if another client had written in between.
    pub fn interfere_before_next_write(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        f: Interference,
    ) {
        let k = KINDS
            .iter()
            .find(|k| k.api_version() == api_version && k.kind == kind)
            .unwrap_or_else(|| panic!("fake kube: unknown kind {api_version} {kind}"));
        let key: Key = (
            k.group,
            k.plural,
            namespace.map(str::to_string),
            name.to_string(),
        );
        self.shared.lock().interferences.push((key, f));
    }
}

/// Reads stored objects (see [`FakeKube::reader`]).
#[derive(Clone)]
pub struct KubeReader {
    shared: Arc<Shared>,
}

impl KubeReader {
    /// A stored object.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let k = KINDS
            .iter()
            .find(|k| k.api_version() == api_version && k.kind == kind)?;
        let key: Key = (
            k.group,
            k.plural,
            namespace.filter(|_| k.namespaced).map(str::to_string),
            name.to_string(),
        );
        self.shared.lock().objects.get(&key).cloned()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn status(
    code: StatusCode,
    reason: &str,
    message: String,
    name: Option<&str>,
    plural: &str,
) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason,
        "details": {"name": name, "kind": plural},
        "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok_json(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// Parsed request path.
struct Target {
    kind: &'static Kind,
    namespace: Option<String>,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest): (&str, &str, &[&str]) = match parts.as_slice() {
        ["api", v, rest @ ..] => ("", v, rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name) = match rest {
        [plural] => (*plural, None),
        [plural, name] => (*plural, Some(name.to_string())),
        _ => return None,
    };
    let kind = kind_of(group, version, plural)?;
    Some(Target {
        kind,
        namespace,
        name,
    })
}

fn query(uri: &axum::http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("body: {e}"),
                None,
                "",
            );
        }
    };
    let Some(t) = parse_path(uri.path()) else {
        return (StatusCode::NOT_FOUND, "404 page not found").into_response();
    };
    let q = query(&uri);
    let watch = q.get("watch").is_some_and(|v| v == "true" || v == "1");
    let verb = match (&method, &t.name, watch) {
        (&Method::GET, _, true) => "watch",
        (&Method::GET, Some(_), _) => "get",
        (&Method::GET, None, _) => "list",
        (&Method::POST, _, _) => "create",
        (&Method::PUT, _, _) => "update",
        (&Method::PATCH, _, _) => "patch",
        (&Method::DELETE, _, _) => "delete",
        _ => {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} not supported"),
                None,
                t.kind.plural,
            );
        }
    };
    let user = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("system:anonymous")
        .to_string();
    // as the real API server's RequestInfo: a list or watch with a `metadata.name` field selector
    // names its object (so RBAC's resourceNames apply)
    let selected = q
        .get("fieldSelector")
        .map(|f| f.replace("%3D", "=").replace("%3d", "="))
        .and_then(|f| f.strip_prefix("metadata.name=").map(str::to_string))
        .filter(|n| !n.contains(','));
    shared.lock().requests.push(RequestRecord {
        user: user.clone(),
        verb: verb.to_string(),
        group: t.kind.group.to_string(),
        resource: t.kind.plural.to_string(),
        namespace: t.namespace.clone(),
        name: t.name.clone().or(selected),
    });
    let fault = shared.lock().take_fault(verb, t.kind.plural, &user);
    let mut watch_fault = None;
    match fault {
        Some(ApiFaultEffect::Slow(d)) => tokio::time::sleep(d).await,
        Some(ApiFaultEffect::Conflict) => {
            return conflict(&t, t.name.as_deref().unwrap_or_default());
        }
        Some(ApiFaultEffect::InternalError) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "Internal error occurred: injected by the fake API server".to_string(),
                t.name.as_deref(),
                t.kind.plural,
            );
        }
        Some(w @ (ApiFaultEffect::CloseWatchAfter(_) | ApiFaultEffect::WatchGone)) => {
            watch_fault = Some(w)
        }
        None => {}
    }
    match verb {
        "watch" => watch_stream(shared, t, q, watch_fault),
        "get" => get(&shared, &t),
        "list" => list(&shared, &t),
        "create" => create(&shared, &t, &body, &user),
        "update" => update(&shared, &t, &body, &user),
        "patch" => patch(&shared, &t, &headers, &body, &user),
        _ => delete(&shared, &t, &user),
    }
}

fn key(t: &Target, name: &str) -> Key {
    (
        t.kind.group,
        t.kind.plural,
        if t.kind.namespaced {
            t.namespace.clone()
        } else {
            None
        },
        name.to_string(),
    )
}

fn not_found(t: &Target, name: &str) -> Response {
    let what = t.kind.qualified_plural();
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{what} \"{name}\" not found"),
        Some(name),
        t.kind.plural,
    )
}

fn get(shared: &Shared, t: &Target) -> Response {
    let name = t.name.clone().unwrap_or_default();
    match shared.lock().objects.get(&key(t, &name)) {
        Some(o) => ok_json(StatusCode::OK, o),
        None => not_found(t, &name),
    }
}

fn matches(t: &Target, (g, p, ns, _): &Key) -> bool {
    *g == t.kind.group && *p == t.kind.plural && (t.namespace.is_none() || *ns == t.namespace)
}

fn list(shared: &Shared, t: &Target) -> Response {
    let store = shared.lock();
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|(k, _)| matches(t, k))
        .map(|(_, v)| v.clone())
        .collect();
    ok_json(
        StatusCode::OK,
        &json!({"apiVersion": t.kind.api_version(), "kind": format!("{}List", t.kind.kind),
                "metadata": {"resourceVersion": store.rv.to_string()}, "items": items}),
    )
}

#[allow(clippy::result_large_err)] // an HTTP response is the natural error of a handler step
fn parse_body(body: &Bytes, t: &Target) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| {
        status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("invalid JSON body: {e}"),
            None,
            t.kind.plural,
        )
    })
}

/// A write decided under the lock, before admission: what would be stored.
struct Prepared {
    key: Key,
    object: Value,
    /// `ADDED` or `MODIFIED`.
    event: &'static str,
    /// The stored object the write started from (UPDATE).
    old: Option<Value>,
}

#[allow(clippy::result_large_err)] // an HTTP response is the natural error of a handler step
fn prepare_create(shared: &Shared, t: &Target, body: &Bytes) -> Result<Prepared, Response> {
    let mut obj = parse_body(body, t)?;
    let mut store = shared.lock();
    store.uid += 1;
    let uid = store.uid;
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Err(status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata is required".into(),
            None,
            t.kind.plural,
        ));
    };
    let name = match (
        meta.get("name").and_then(Value::as_str),
        meta.get("generateName").and_then(Value::as_str),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(g)) => format!("{g}{uid:05x}"),
        _ => {
            return Err(status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "metadata.name is required".into(),
                None,
                t.kind.plural,
            ));
        }
    };
    meta.insert("name".into(), json!(name));
    meta.insert("uid".into(), json!(format!("uid-{uid}")));
    meta.entry("creationTimestamp")
        .or_insert_with(|| json!("2026-11-25T00:00:00Z"));
    if let Some(ns) = &t.namespace {
        meta.insert("namespace".into(), json!(ns));
    }
    let k = key(t, &name);
    if store.objects.contains_key(&k) {
        return Err(already_exists(t, &name));
    }
    Ok(Prepared {
        key: k,
        object: obj,
        event: "ADDED",
        old: None,
    })
}

fn already_exists(t: &Target, name: &str) -> Response {
    status(
        StatusCode::CONFLICT,
        "AlreadyExists",
        format!("{} \"{name}\" already exists", t.kind.plural),
        Some(name),
        t.kind.plural,
    )
}

fn conflict(t: &Target, name: &str) -> Response {
    let what = t.kind.qualified_plural();
    status(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {what} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
        Some(name),
        t.kind.plural,
    )
}

fn create(shared: &Shared, t: &Target, body: &Bytes, user: &str) -> Response {
    match prepare_create(shared, t, body) {
        Ok(p) => match finish(shared, t, p, user, StatusCode::CREATED) {
            Ok(r) | Err(r) => r,
        },
        Err(r) => r,
    }
}

/// Runs a pending interference on `k`, as another writer would.
fn interfere(store: &mut Store, kind: &'static Kind, k: &Key, tx: &broadcast::Sender<WatchEvent>) {
    if let Some(i) = store.interferences.iter().position(|(key, _)| key == k) {
        let (_, f) = store.interferences.remove(i);
        if let Some(mut current) = store.objects.get(k).cloned() {
            f(&mut current);
            store.commit(kind, k.clone(), current, "MODIFIED", tx, DIRECT_WRITER);
        }
    }
}

#[allow(clippy::result_large_err)]
fn prepare_update(shared: &Shared, t: &Target, body: &Bytes) -> Result<Prepared, Response> {
    let obj = parse_body(body, t)?;
    let name = t.name.clone().unwrap_or_default();
    let k = key(t, &name);
    let mut store = shared.lock();
    interfere(&mut store, t.kind, &k, &shared.events);
    let Some(current) = store.objects.get(&k).cloned() else {
        return Err(not_found(t, &name));
    };
    let current_rv = current.pointer("/metadata/resourceVersion").cloned();
    let sent_rv = obj.pointer("/metadata/resourceVersion").cloned();
    if sent_rv.is_some() && sent_rv != current_rv {
        return Err(conflict(t, &name));
    }
    let mut obj = obj;
    for field in ["uid", "creationTimestamp", "namespace", "name"] {
        if let Some(v) = current.pointer(&format!("/metadata/{field}")).cloned() {
            obj["metadata"][field] = v;
        }
    }
    Ok(Prepared {
        key: k,
        object: obj,
        event: "MODIFIED",
        old: Some(current),
    })
}

fn update(shared: &Shared, t: &Target, body: &Bytes, user: &str) -> Response {
    match prepare_update(shared, t, body) {
        Ok(p) => match finish(shared, t, p, user, StatusCode::OK) {
            Ok(r) | Err(r) => r,
        },
        Err(r) => r,
    }
}

#[allow(clippy::result_large_err)]
fn prepare_patch(
    shared: &Shared,
    t: &Target,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Prepared, Response> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = t.name.clone().unwrap_or_default();
    let k = key(t, &name);
    let mut store = shared.lock();
    interfere(&mut store, t.kind, &k, &shared.events);
    let apply = ctype.starts_with("application/apply-patch");
    let (current, exists) = match store.objects.get(&k) {
        Some(c) => (c.clone(), true),
        None if apply => (
            json!({"metadata": {"name": name, "namespace": t.namespace}}),
            false,
        ),
        None => return Err(not_found(t, &name)),
    };
    let mut next = current.clone();
    if ctype.starts_with("application/json-patch+json") {
        let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
            status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("invalid JSON patch: {e}"),
                Some(&name),
                t.kind.plural,
            )
        })?;
        json_patch::patch(&mut next, &p).map_err(|e| {
            status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("JSON patch: {e}"),
                Some(&name),
                t.kind.plural,
            )
        })?;
    } else {
        // merge-patch, strategic-merge (as merge: these kinds have no strategy) and apply (as merge)
        let p = parse_body(body, t)?;
        json_patch::merge(&mut next, &p);
    }
    Ok(Prepared {
        key: k,
        object: next,
        event: if exists { "MODIFIED" } else { "ADDED" },
        old: exists.then_some(current),
    })
}

fn patch(shared: &Shared, t: &Target, headers: &HeaderMap, body: &Bytes, user: &str) -> Response {
    // like the real server, a patch that lost a race with another writer during admission is
    // re-applied to the new object
    let mut last = None;
    for _ in 0..5 {
        match prepare_patch(shared, t, headers, body) {
            Ok(p) => match finish(shared, t, p, user, StatusCode::OK) {
                Ok(r) => return r,
                Err(r) if r.status() == StatusCode::CONFLICT => last = Some(r),
                Err(r) => return r,
            },
            Err(r) => return r,
        }
    }
    last.unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Runs the admission step of the kind (without holding the store's lock: it may read objects),
/// then stores the result unless the object changed meanwhile (`Err` 409) or nothing changed.
#[allow(clippy::result_large_err)]
fn finish(
    shared: &Shared,
    t: &Target,
    p: Prepared,
    user: &str,
    created: StatusCode,
) -> Result<Response, Response> {
    let Prepared {
        key: k,
        mut object,
        event,
        old,
    } = p;
    object["apiVersion"] = json!(t.kind.api_version());
    object["kind"] = json!(t.kind.kind);
    let hook = shared
        .lock()
        .hooks
        .iter()
        .find(|(kind, _)| std::ptr::eq(*kind, t.kind))
        .map(|(_, h)| h.clone());
    let mut warnings = Vec::new();
    if let Some(hook) = hook {
        let review = AdmissionReview {
            operation: if old.is_some() { "UPDATE" } else { "CREATE" },
            user: user.to_string(),
            namespace: k.2.clone(),
            name: k.3.clone(),
            object: object.clone(),
            old_object: old.clone(),
        };
        if let Some(result) = hook(&review) {
            if result.denied {
                return Err(status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!(
                        "admission webhook denied the request: {}",
                        result.message.unwrap_or_default()
                    ),
                    Some(&k.3),
                    t.kind.plural,
                ));
            }
            let before = object.clone();
            if let Some(patch) = &result.patch
                && let Err(e) = json_patch::patch(&mut object, patch)
            {
                return Err(status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    format!("admission webhook returned a patch that does not apply: {e}"),
                    Some(&k.3),
                    t.kind.plural,
                ));
            }
            warnings = result.warnings.clone();
            shared.lock().admissions.push(AdmissionRecord {
                operation: review.operation,
                user: review.user,
                namespace: review.namespace,
                name: review.name,
                warnings: result.warnings,
                mutated: object != before,
            });
        }
    }
    let mut store = shared.lock();
    let rv_of = |o: Option<&Value>| o.and_then(|o| o.pointer("/metadata/resourceVersion").cloned());
    if rv_of(store.objects.get(&k)) != rv_of(old.as_ref()) {
        return Err(match &old {
            None => already_exists(t, &k.3),
            Some(_) => conflict(t, &k.3),
        });
    }
    if let Some(current) = &old {
        let mut unchanged = object.clone();
        unchanged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if &unchanged == current {
            return Ok(with_warnings(ok_json(StatusCode::OK, current), &warnings));
        }
    }
    let stored = store.commit(t.kind, k, object, event, &shared.events, user);
    let code = if event == "ADDED" {
        created
    } else {
        StatusCode::OK
    };
    Ok(with_warnings(ok_json(code, &stored), &warnings))
}

/// Admission warnings as `Warning: 299 - "…"` headers, as the API server sends them.
fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text: String = w
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if let Ok(v) =
            axum::http::HeaderValue::from_str(&format!("299 - \"{}\"", text.replace('"', "'")))
        {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

fn delete(shared: &Shared, t: &Target, user: &str) -> Response {
    let name = t.name.clone().unwrap_or_default();
    let k = key(t, &name);
    let mut store = shared.lock();
    let Some(current) = store.objects.get(&k).cloned() else {
        return not_found(t, &name);
    };
    let stored = store.commit(t.kind, k, current, "DELETED", &shared.events, user);
    ok_json(StatusCode::OK, &stored)
}

fn watch_stream(
    shared: Arc<Shared>,
    t: Target,
    q: BTreeMap<String, String>,
    fault: Option<ApiFaultEffect>,
) -> Response {
    let mut rx = shared.events.subscribe();
    let since: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(300u64);
    let relevant = move |e: &WatchEvent, t: &Target| {
        e.group == t.kind.group
            && e.plural == t.kind.plural
            && (t.namespace.is_none() || e.namespace == t.namespace)
    };
    let initial: Vec<WatchEvent> = {
        let store = shared.lock();
        if since == 0 {
            store
                .objects
                .iter()
                .filter(|(k, _)| matches(&t, k))
                .map(|((g, p, ns, _), v)| WatchEvent {
                    group: g,
                    plural: p,
                    namespace: ns.clone(),
                    rv: store.rv,
                    kind: "ADDED",
                    object: v.clone(),
                })
                .collect()
        } else {
            store
                .history
                .iter()
                .filter(|e| e.rv > since && relevant(e, &t))
                .cloned()
                .collect()
        }
    };
    let mut last = initial.iter().map(|e| e.rv).max().unwrap_or(since);
    let line =
        |e: &WatchEvent| Bytes::from(format!("{}\n", json!({"type": e.kind, "object": e.object})));
    let close_after = match fault {
        Some(ApiFaultEffect::CloseWatchAfter(n)) => Some(n),
        _ => None,
    };
    let gone = fault == Some(ApiFaultEffect::WatchGone);
    let stream = async_stream::stream! {
        if gone {
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": "Expired", "code": 410,
                "message": format!("too old resource version: {since}")});
            yield Ok::<Bytes, std::io::Error>(Bytes::from(format!("{}\n", json!({"type": "ERROR", "object": status}))));
            return;
        }
        let mut served = 0usize;
        for e in &initial {
            if close_after.is_some_and(|n| served >= n) {
                return;
            }
            served += 1;
            yield Ok::<Bytes, std::io::Error>(line(e));
        }
        if close_after.is_some_and(|n| served >= n) {
            return;
        }
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(timeout));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                r = rx.recv() => match r {
                    Ok(e) if e.rv > last && relevant(&e, &t) => {
                        if close_after.is_some_and(|n| served >= n) {
                            break;
                        }
                        served += 1;
                        last = e.rv;
                        yield Ok(line(&e));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
