//! The manifests of `deploy/`, rendered offline by `kubectl kustomize` (as a cluster admin's
//! `kubectl apply -k deploy/` would), and what the whole-system test takes from them: the RBAC
//! rules bound to a ServiceAccount, the `ClusterAdmissionPolicy` wired as the fake API server's
//! mutating admission step, and the refresher Deployment's arguments.

use crate::capabilities::HostCapabilities;
use crate::cluster_host::ClusterHost;
use crate::evaluation::evaluate;
use crate::fake_kube::{AdmissionHook, AdmissionResult, AdmissionReview, RequestRecord};
use crate::paths;
use crate::wasm::Policy;
use anyhow::{Context, Result, bail};
use capa_core::scope::Scope;
use serde_json::{Value, json};
use std::process::Command;
use std::sync::Arc;

/// Every object of a rendered kustomization.
pub struct Manifests {
    pub objects: Vec<Value>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Manifests {
    /// `kubectl kustomize <dir>` (relative to the workspace); `$KUBECTL` names the kubectl
    /// (`make test` sets it), else `kubectl` on the PATH.
    pub fn render(dir: &str) -> Result<Self> {
        let path = paths::workspace().join(dir);
        let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let out = Command::new(&kubectl)
            .arg("kustomize")
            .arg(&path)
            .output()
            .with_context(|| {
                format!(
                    "cannot run {kubectl} (it renders deploy/ offline; `make kubectl` installs one)"
                )
            })?;
        if !out.status.success() {
            bail!(
                "kubectl kustomize {} failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8(out.stdout)?;
        let mut objects = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)?;
            if !v.is_null() {
                objects.push(v);
            }
        }
        Ok(Manifests { objects })
    }

    /// The object of `kind` named `name`.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    /// The rules granted to ServiceAccount `namespace/name` through RoleBindings and
    /// ClusterRoleBindings (to Roles or ClusterRoles) of these manifests.
    pub fn rules_for(&self, namespace: &str, name: &str) -> Vec<GrantedRule> {
        let mut out = Vec::new();
        for b in &self.objects {
            let cluster_wide = match b["kind"].as_str() {
                Some("RoleBinding") => false,
                Some("ClusterRoleBinding") => true,
                _ => continue,
            };
            let bound = b["subjects"].as_array().is_some_and(|s| {
                s.iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == name
                        && s["namespace"] == namespace
                })
            });
            if !bound {
                continue;
            }
            let binding_ns = b["metadata"]["namespace"].as_str().map(str::to_string);
            let role_kind = b["roleRef"]["kind"].as_str().unwrap_or_default();
            let role_name = b["roleRef"]["name"].as_str().unwrap_or_default();
            let role = self.objects.iter().find(|r| {
                r["kind"] == role_kind
                    && r["metadata"]["name"] == role_name
                    && (role_kind == "ClusterRole"
                        || r["metadata"]["namespace"].as_str() == binding_ns.as_deref())
            });
            let Some(role) = role else { continue };
            for (i, rule) in role["rules"].as_array().into_iter().flatten().enumerate() {
                out.push(GrantedRule {
                    namespace: if cluster_wide {
                        None
                    } else {
                        binding_ns.clone()
                    },
                    api_groups: strings(&rule["apiGroups"]),
                    resources: strings(&rule["resources"]),
                    resource_names: strings(&rule["resourceNames"]),
                    verbs: strings(&rule["verbs"]),
                    source: format!(
                        "{role_kind} {}{role_name} rule {i}",
                        binding_ns
                            .as_deref()
                            .filter(|_| role_kind == "Role")
                            .map(|n| format!("{n}/"))
                            .unwrap_or_default()
                    ),
                });
            }
        }
        out
    }
}

/// One RBAC rule as bound to a subject: `namespace` None = cluster-wide.
#[derive(Debug, Clone)]
pub struct GrantedRule {
    pub namespace: Option<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub verbs: Vec<String>,
    pub source: String,
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == "*" || x == v)
}

impl GrantedRule {
    /// Whether this rule authorizes the request (Kubernetes RBAC semantics: a rule with
    /// resourceNames never authorizes create, list or watch, which carry no name).
    pub fn allows(&self, r: &RequestRecord) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| r.namespace.as_ref() == Some(ns))
            && has(&self.api_groups, &r.group)
            && has(&self.resources, &r.resource)
            && has(&self.verbs, &r.verb)
            && (self.resource_names.is_empty()
                || r.name
                    .as_ref()
                    .is_some_and(|n| has(&self.resource_names, n)))
    }

    /// Every (verb, resource, name) this rule grants, as one line each, with whether `requests`
    /// used it: a grant nobody used is more than the client needs.
    pub fn unused(&self, requests: &[RequestRecord]) -> Vec<String> {
        let names: Vec<Option<&String>> = if self.resource_names.is_empty() {
            vec![None]
        } else {
            self.resource_names.iter().map(Some).collect()
        };
        let mut out = Vec::new();
        for verb in &self.verbs {
            for resource in &self.resources {
                for name in &names {
                    let used = requests.iter().any(|r| {
                        self.allows(r)
                            && r.verb == *verb
                            && r.resource == *resource
                            && name.is_none_or(|n| r.name.as_ref() == Some(n))
                    });
                    if !used {
                        out.push(format!(
                            "{}: {verb} {resource}{} in {}",
                            self.source,
                            name.map(|n| format!("/{n}")).unwrap_or_default(),
                            self.namespace.as_deref().unwrap_or("the cluster")
                        ));
                    }
                }
            }
        }
        out
    }
}

/// The `ClusterAdmissionPolicy` as a fake API server admission step: its rules and selectors
/// decide which writes reach the policy ([`capa_core::scope`]); its settings are
/// passed to it; the policy's JSON patch and warnings come back as a webhook's would.
pub fn admission_hook(
    cap: &Value,
    policy: Arc<Policy>,
    host: Arc<ClusterHost>,
) -> Result<AdmissionHook> {
    let spec = &cap["spec"];
    anyhow::ensure!(spec["mutating"] == true, "the policy must be mutating");
    // Kubewarden's defaults: mode protect, failurePolicy Fail
    let monitor = spec["mode"] == "monitor";
    let fail_closed = spec["failurePolicy"].as_str().unwrap_or("Fail") == "Fail";
    anyhow::ensure!(spec["rules"].is_array(), "spec.rules");
    let settings = spec["settings"].clone();
    // the webhook as the Kubewarden controller renders it, matched as the API server does (the
    // namespaces of these tests carry only their name label)
    let scope = Scope::of_policy(spec, crate::kubewarden::DEPLOYMENTS_NAMESPACE);
    let hook = move |review: &AdmissionReview| -> Option<AdmissionResult> {
        let mut object = review.object.clone();
        if let Some(ns) = &review.namespace {
            object["metadata"]["namespace"] = json!(ns);
        }
        let no_labels = serde_json::Map::new();
        let labels = review.namespace.as_ref().map(|_| &no_labels);
        if scope.decide(&object, review.operation, labels).is_err() {
            return None;
        }
        let (group, version, kind, resource) = capa_core::scope::resource_of(&object);
        let gvk = json!({"group": group, "version": version, "kind": kind});
        let gvr = json!({"group": group, "version": version, "resource": resource});
        let request = json!({
            "uid": format!("fake-{}", review.name),
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": review.name, "namespace": review.namespace,
            "operation": review.operation,
            "userInfo": {"username": review.user},
            "object": review.object,
            "oldObject": review.old_object,
            "dryRun": false,
        });
        let caps: Arc<dyn HostCapabilities> = host.clone();
        match evaluate(&policy, &settings, &request, caps) {
            // monitor mode: evaluated and logged, never enforced nor mutating
            Ok(_) if monitor => Some(AdmissionResult::default()),
            Ok(ev) => Some(AdmissionResult {
                denied: !ev.response.accepted,
                message: ev.response.message.clone(),
                warnings: ev.warnings().to_vec(),
                patch: ev.patch,
            }),
            Err(e) if fail_closed => Some(AdmissionResult {
                denied: true,
                message: Some(format!("policy evaluation failed: {e:#}")),
                ..Default::default()
            }),
            // failurePolicy: Ignore — the write goes through unchanged
            Err(e) => {
                eprintln!("policy evaluation failed (failurePolicy Ignore): {e:#}");
                Some(AdmissionResult::default())
            }
        }
    };
    Ok(Arc::new(hook))
}

/// The refresher pod of `manifests`' Deployment `capa-refresher` (pod `capa-refresher-0` in
/// `pod_namespace`): the container's arguments, without its fixed ports (a test binds none), with
/// `env` added, against the fake API server whose kubeconfig (and user) is `kubeconfig`.
pub fn start_deployed_refresher(
    manifests: &Manifests,
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
    pod_namespace: &str,
    env: &[(&str, &str)],
) -> Result<(crate::servers::Process, Vec<String>)> {
    let deployment = manifests
        .find("Deployment", "capa-refresher")
        .context("no Deployment capa-refresher")?;
    let args: Vec<String> = container_args(
        deployment,
        "refresher",
        &[
            ("POD_NAMESPACE", pod_namespace),
            ("POD_NAME", "capa-refresher-0"),
        ],
    )
    .into_iter()
    .filter(|a| !a.starts_with("--metrics-bind-address") && !a.starts_with("--health-addr"))
    .collect();
    let child = crate::objects::refresher_command(kubeconfig, home)
        .args(&args)
        .args(["--metrics-bind-address", "0", "--health-addr", "0"])
        .env("POD_NAME", "capa-refresher-0")
        .env("POD_NAMESPACE", pod_namespace)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!(
                "cannot run {} (cargo build -p capa-refresher)",
                paths::refresher_bin().display()
            )
        })?;
    Ok((
        crate::servers::Process::from_child(child, "capa-refresher"),
        args,
    ))
}

/// The arguments of a Deployment's container, with `$(VAR)` replaced from `env`.
pub fn container_args(deployment: &Value, container: &str, env: &[(&str, &str)]) -> Vec<String> {
    let c = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == container);
    c.map(|c| strings(&c["args"]))
        .unwrap_or_default()
        .into_iter()
        .map(|mut a| {
            for (k, v) in env {
                a = a.replace(&format!("$({k})"), v);
            }
            a
        })
        .collect()
}
