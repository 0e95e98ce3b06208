//! A stateful fake Kubernetes API server on 127.0.0.1, for running the real refresher binary
//! (and, later, the whole system) without a cluster.
//!
//! Objects live in memory; GET/LIST/WATCH/CREATE/UPDATE/PATCH(merge, apply, json)/DELETE behave
//! like the real server where the refresher can tell: a global resourceVersion, 409 Conflict on a
//! stale resourceVersion, 409 AlreadyExists, 404 with the real `Status` bodies, watch as a chunked
//! stream of JSON lines. Every request is recorded (verb, group, resource, namespace, name) so
//! tests can compare what a client did with the RBAC it is granted.

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

/// A mutation of a stored object, run just before the next write to it (simulates a concurrent writer).
pub type Interference = Box<dyn FnOnce(&mut Value) + Send>;

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<WatchEvent>,
    requests: Vec<RequestRecord>,
    interferences: Vec<(Key, Interference)>,
    uid: u64,
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
    fn commit(
        &mut self,
        kind: &'static Kind,
        key: Key,
        mut obj: Value,
        event: &'static str,
        tx: &broadcast::Sender<WatchEvent>,
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
        if event == "DELETED" {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, obj.clone());
        }
        self.history.push(ev.clone());
        let _ = tx.send(ev);
        obj
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

    /// Writes a kubeconfig pointing at this server into `dir`.
    pub fn write_kubeconfig(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\n",
            self.url()
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

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
        store.commit(kind, key, obj, event, &self.shared.events)
    }

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
            namespace.map(str::to_string),
            name.to_string(),
        );
        self.shared.lock().objects.get(&key).cloned()
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
    shared.lock().requests.push(RequestRecord {
        verb: verb.to_string(),
        group: t.kind.group.to_string(),
        resource: t.kind.plural.to_string(),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
    });
    match verb {
        "watch" => watch_stream(shared, t, q),
        "get" => get(&shared, &t),
        "list" => list(&shared, &t),
        "create" => create(&shared, &t, &body),
        "update" => update(&shared, &t, &body),
        "patch" => patch(&shared, &t, &headers, &body),
        _ => delete(&shared, &t),
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
    let what = if t.kind.group.is_empty() {
        t.kind.plural.to_string()
    } else {
        format!("{}.{}", t.kind.plural, t.kind.group)
    };
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

fn create(shared: &Shared, t: &Target, body: &Bytes) -> Response {
    let mut obj = match parse_body(body, t) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut store = shared.lock();
    store.uid += 1;
    let uid = store.uid;
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata is required".into(),
            None,
            t.kind.plural,
        );
    };
    let name = match (
        meta.get("name").and_then(Value::as_str),
        meta.get("generateName").and_then(Value::as_str),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(g)) => format!("{g}{uid:05x}"),
        _ => {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "metadata.name is required".into(),
                None,
                t.kind.plural,
            );
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
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", t.kind.plural),
            Some(&name),
            t.kind.plural,
        );
    }
    let stored = store.commit(t.kind, k, obj, "ADDED", &shared.events);
    ok_json(StatusCode::CREATED, &stored)
}

/// Runs a pending interference on `k`, as another writer would.
fn interfere(store: &mut Store, kind: &'static Kind, k: &Key, tx: &broadcast::Sender<WatchEvent>) {
    if let Some(i) = store.interferences.iter().position(|(key, _)| key == k) {
        let (_, f) = store.interferences.remove(i);
        if let Some(mut current) = store.objects.get(k).cloned() {
            f(&mut current);
            store.commit(kind, k.clone(), current, "MODIFIED", tx);
        }
    }
}

fn update(shared: &Shared, t: &Target, body: &Bytes) -> Response {
    let obj = match parse_body(body, t) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let name = t.name.clone().unwrap_or_default();
    let k = key(t, &name);
    let mut store = shared.lock();
    interfere(&mut store, t.kind, &k, &shared.events);
    let Some(current) = store.objects.get(&k) else {
        return not_found(t, &name);
    };
    let current_rv = current.pointer("/metadata/resourceVersion").cloned();
    let sent_rv = obj.pointer("/metadata/resourceVersion").cloned();
    if sent_rv.is_some() && sent_rv != current_rv {
        let what = if t.kind.group.is_empty() {
            t.kind.plural.to_string()
        } else {
            format!("{}.{}", t.kind.plural, t.kind.group)
        };
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {what} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
            Some(&name),
            t.kind.plural,
        );
    }
    let mut obj = obj;
    for field in ["uid", "creationTimestamp", "namespace", "name"] {
        if let Some(v) = current.pointer(&format!("/metadata/{field}")).cloned() {
            obj["metadata"][field] = v;
        }
    }
    let stored = store.commit(t.kind, k, obj, "MODIFIED", &shared.events);
    ok_json(StatusCode::OK, &stored)
}

fn patch(shared: &Shared, t: &Target, headers: &HeaderMap, body: &Bytes) -> Response {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = t.name.clone().unwrap_or_default();
    let k = key(t, &name);
    let mut store = shared.lock();
    interfere(&mut store, t.kind, &k, &shared.events);
    let apply = ctype.starts_with("application/apply-patch");
    let current = match store.objects.get(&k) {
        Some(c) => c.clone(),
        None if apply => json!({"metadata": {"name": name, "namespace": t.namespace}}),
        None => return not_found(t, &name),
    };
    let mut next = current.clone();
    if ctype.starts_with("application/json-patch+json") {
        let p: json_patch::Patch = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("invalid JSON patch: {e}"),
                    Some(&name),
                    t.kind.plural,
                );
            }
        };
        if let Err(e) = json_patch::patch(&mut next, &p) {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("JSON patch: {e}"),
                Some(&name),
                t.kind.plural,
            );
        }
    } else {
        // merge-patch, strategic-merge (as merge: these kinds have no strategy) and apply (as merge)
        let p = match parse_body(body, t) {
            Ok(p) => p,
            Err(r) => return r,
        };
        json_patch::merge(&mut next, &p);
    }
    let event = if store.objects.contains_key(&k) {
        "MODIFIED"
    } else {
        "ADDED"
    };
    if event == "MODIFIED" && next == current {
        return ok_json(StatusCode::OK, &current);
    }
    let stored = store.commit(t.kind, k, next, event, &shared.events);
    ok_json(StatusCode::OK, &stored)
}

fn delete(shared: &Shared, t: &Target) -> Response {
    let name = t.name.clone().unwrap_or_default();
    let k = key(t, &name);
    let mut store = shared.lock();
    let Some(current) = store.objects.get(&k).cloned() else {
        return not_found(t, &name);
    };
    let stored = store.commit(t.kind, k, current, "DELETED", &shared.events);
    ok_json(StatusCode::OK, &stored)
}

fn watch_stream(shared: Arc<Shared>, t: Target, q: BTreeMap<String, String>) -> Response {
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
    let stream = async_stream::stream! {
        for e in &initial {
            yield Ok::<Bytes, std::io::Error>(line(e));
        }
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(timeout));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                r = rx.recv() => match r {
                    Ok(e) if e.rv > last && relevant(&e, &t) => {
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
