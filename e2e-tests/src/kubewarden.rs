//! Kubewarden's own `policy-server` for the real-cluster tests, configured the way the Kubewarden
//! controller (1.35.0) configures it from a `ClusterAdmissionPolicy`: the policy's entry in the
//! policy server's policies file and the `MutatingWebhookConfiguration` that sends the policy's
//! requests to it. Each function cites the controller code it follows (repository
//! kubewarden/kubewarden-controller, tag v1.35.0, commit 9462fe11de6ba81404ef0cb88fc0346f877d04a1).
//! One difference is imposed by a cluster without kube-proxy: the webhook calls the policy server
//! by URL, not through its Service.
//!
//! The binary: `$POLICY_SERVER` (default: `policy-server` on the PATH).

use crate::real_cluster::{Ca, free_port};
use crate::servers::Process;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The namespace the Kubewarden Helm chart installs the controller and the policy servers into
/// (the controller's `--deployments-namespace`).
pub const DEPLOYMENTS_NAMESPACE: &str = "kubewarden";

/// The policy id of a ClusterAdmissionPolicy named `name` (`GetUniqueName`,
/// api/policies/v1/clusteradmissionpolicy_types.go:218-220): the key of its entry in the policies
/// file, the name of its webhook configuration, and its path `/validate/<id>`.
pub fn policy_id(name: &str) -> String {
    format!("clusterwide-{name}")
}

/// The policy server's policies file (`--policies`) for `cap`, a ClusterAdmissionPolicy as the API
/// server stores it (CRD defaults applied), with the module read from `module` (the annotated
/// `policy.wasm`) instead of `spec.module`'s registry. The entry is the controller's
/// (`buildPoliciesMap` and the entry's `MarshalJSON`,
/// internal/controller/policyserver_controller_configmap.go:91-111 and 233-261): `namespacedName`,
/// `module`, `policyMode`, `allowedToMutate` (always), `contextAwareResources` (when any),
/// `settings` (`null` when none), `message` and `timeoutEvalSeconds` (when set), and
/// `hostCapabilities`, which is `["*"]` for every cluster-wide policy (`hostCapabilitiesForPolicy`,
/// same file, 217-231).
pub fn policies_config(cap: &Value, module: &Path) -> Result<Value> {
    let name = cap["metadata"]["name"].as_str().context("metadata.name")?;
    let spec = &cap["spec"];
    let mut entry = serde_json::Map::new();
    entry.insert(
        "namespacedName".into(),
        json!({"Namespace": "", "Name": name}),
    );
    entry.insert(
        "module".into(),
        json!(format!("file://{}", module.display())),
    );
    entry.insert(
        "policyMode".into(),
        json!(
            spec["mode"]
                .as_str()
                .context("spec.mode (the CRD defaults it)")?
        ),
    );
    entry.insert(
        "allowedToMutate".into(),
        json!(spec["mutating"].as_bool().unwrap_or(false)),
    );
    if spec["contextAwareResources"]
        .as_array()
        .is_some_and(|r| !r.is_empty())
    {
        entry.insert(
            "contextAwareResources".into(),
            spec["contextAwareResources"].clone(),
        );
    }
    entry.insert("settings".into(), spec["settings"].clone());
    if let Some(m) = spec["message"].as_str().filter(|m| !m.is_empty()) {
        entry.insert("message".into(), json!(m));
    }
    if !spec["timeoutEvalSeconds"].is_null() {
        entry.insert(
            "timeoutEvalSeconds".into(),
            spec["timeoutEvalSeconds"].clone(),
        );
    }
    entry.insert("hostCapabilities".into(), json!(["*"]));
    Ok(json!({ policy_id(name): entry }))
}

/// The MutatingWebhookConfiguration the controller registers for a mutating `cap`
/// (`reconcileMutatingWebhookConfiguration`,
/// internal/controller/policy_subreconciler_webhook.go:110-177), with the policy server reached
/// at `base_url` (`https://127.0.0.1:PORT`) instead of its Service, trusted through `ca_bundle`
/// (base64 PEM):
/// - name `clusterwide-<name>`, label `app.kubernetes.io/part-of: kubewarden`, annotations
///   `kubewardenPolicyName`/`kubewardenPolicyNamespace`;
/// - one webhook `clusterwide-<name>.kubewarden.admission` at `/validate/clusterwide-<name>`;
/// - `rules`, `failurePolicy`, `matchPolicy`, `objectSelector`, `timeoutSeconds` and
///   `matchConditions` as the policy has them (unset ones are left to the API server's defaults);
///   `sideEffects` the policy's or `None`; `admissionReviewVersions: [v1]`; no
///   `reinvocationPolicy`;
/// - the namespaceSelector of [`namespace_selector`].
pub fn mutating_webhook_configuration(
    cap: &Value,
    base_url: &str,
    ca_bundle: &str,
) -> Result<Value> {
    let name = cap["metadata"]["name"].as_str().context("metadata.name")?;
    let spec = &cap["spec"];
    if spec["mutating"] != true {
        bail!("{name} is not a mutating policy");
    }
    let id = policy_id(name);
    let mut webhook = serde_json::Map::new();
    webhook.insert("name".into(), json!(format!("{id}.kubewarden.admission")));
    webhook.insert(
        "clientConfig".into(),
        json!({"url": format!("{base_url}/validate/{id}"), "caBundle": ca_bundle}),
    );
    webhook.insert("rules".into(), spec["rules"].clone());
    for field in [
        "failurePolicy",
        "matchPolicy",
        "objectSelector",
        "timeoutSeconds",
        "matchConditions",
    ] {
        if !spec[field].is_null() {
            webhook.insert(field.into(), spec[field].clone());
        }
    }
    webhook.insert(
        "namespaceSelector".into(),
        namespace_selector(spec, DEPLOYMENTS_NAMESPACE),
    );
    webhook.insert(
        "sideEffects".into(),
        json!(spec["sideEffects"].as_str().unwrap_or("None")),
    );
    webhook.insert("admissionReviewVersions".into(), json!(["v1"]));
    Ok(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": id,
            "labels": {"app.kubernetes.io/part-of": "kubewarden"},
            "annotations": {"kubewardenPolicyName": name, "kubewardenPolicyNamespace": ""},
        },
        "webhooks": [webhook],
    }))
}

/// The webhook's namespaceSelector for a cluster-wide policy: [`capa_core::scope`] renders it as
/// the controller does (internal/controller/policy_subreconciler_webhook.go:193-219).
pub use capa_core::scope::webhook_namespace_selector as namespace_selector;

/// A running `policy-server`, stopped on drop.
pub struct PolicyServer {
    port: u16,
    log: PathBuf,
    _process: Process,
}

impl PolicyServer {
    /// Starts policy-server in `dir` with `policies` (see [`policies_config`]), reaching the API
    /// server with `kubeconfig`, serving HTTPS on `port` (0: a free one) with a certificate of `ca`;
    /// waits until ready.
    pub fn start(
        dir: &Path,
        policies: &Value,
        kubeconfig: &Path,
        ca: &Ca,
        port: u16,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let policies_file = dir.join("policies.yml");
        std::fs::write(&policies_file, serde_yaml::to_string(policies)?)?;
        let (cert, key) = ca.serving("policy-server")?;
        let port = if port == 0 { free_port()? } else { port };
        let readiness = free_port()?;
        let bin = std::env::var_os("POLICY_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("policy-server"));
        // one log file for every start: a restart appends
        let log = dir.join("policy-server.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(&bin)
            .current_dir(dir)
            .env("KUBECONFIG", kubeconfig)
            .args(["--addr", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(["--readiness-probe-port", &readiness.to_string()])
            .arg("--cert-file")
            .arg(&cert)
            .arg("--key-file")
            .arg(&key)
            .arg("--policies")
            .arg(&policies_file)
            .arg("--policies-download-dir")
            .arg(dir)
            .arg("--sigstore-cache-dir")
            .arg(dir.join("sigstore"))
            // debug: the policy's own debug lines (target policy_log) are printed; JSON: parsed by
            // the tests (the text format's colours cannot be turned off in 1.35)
            .args([
                "--workers",
                "2",
                "--log-level",
                "debug",
                "--log-fmt",
                "json",
            ])
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {} (set $POLICY_SERVER to Kubewarden's policy-server)",
                    bin.display()
                )
            })?;
        let ps = PolicyServer {
            port,
            log,
            _process: Process::from_child(child, "policy-server"),
        };
        ps.wait_ready(readiness, Duration::from_secs(60))?;
        Ok(ps)
    }

    fn wait_ready(&self, readiness_port: u16, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let base = format!("http://127.0.0.1:{readiness_port}");
            if crate::servers::raw(&base, "GET", "/readiness", "text/plain", &[], b"").is_ok() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                let log = self.log();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                bail!(
                    "policy-server not ready within {timeout:?}:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Everything policy-server logged so far (all its starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What the policy received for its `get_resource` calls of `kind`, from its debug lines (message
/// "get_resource answer", printed by policy-server under target `policy_log`): (field mask asked
/// for, object received) pairs, in log order. An answer the policy did not embed (too large) is
/// `{"received_bytes": N}`.
pub fn received_answers(log: &str, kind: &str) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if event["target"] != "policy_log" {
            continue;
        }
        let fields = &event["fields"];
        // the policy's own fields come as one JSON document in `data`
        let data = match &fields["data"] {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            other => other.clone(),
        };
        if fields["message"] != "get_resource answer" || data["kind"] != kind {
            continue;
        }
        let mask = data["field_mask"]
            .as_str()
            .context("field_mask")?
            .to_string();
        // an answer too large to embed comes with its size alone (`received_bytes`)
        let received = match &data["received"] {
            Value::Null => json!({"received_bytes": data["received_bytes"]}),
            v => v.clone(),
        };
        out.push((mask, received));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cap(spec: Value) -> Value {
        json!({"apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicy",
               "metadata": {"name": "capa-annotator"}, "spec": spec})
    }

    #[test]
    fn the_policy_entry_is_the_controllers() {
        let c = cap(
            json!({"mode": "protect", "mutating": true, "module": "registry://x",
            "contextAwareResources": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            "rules": [], "timeoutSeconds": 10}),
        );
        let config = policies_config(&c, Path::new("/p/annotated-policy.wasm")).unwrap();
        assert_eq!(
            config,
            json!({"clusterwide-capa-annotator": {
                "namespacedName": {"Namespace": "", "Name": "capa-annotator"},
                "module": "file:///p/annotated-policy.wasm",
                "policyMode": "protect",
                "allowedToMutate": true,
                "contextAwareResources": [{"apiVersion": "v1", "kind": "ConfigMap"}],
                "settings": null,
                "hostCapabilities": ["*"]}})
        );
        // the webhook's timeout is not the evaluation timeout
        let c = cap(
            json!({"mode": "monitor", "mutating": false, "settings": {"a": 1},
            "timeoutEvalSeconds": 3, "message": "m", "contextAwareResources": []}),
        );
        let entry =
            &policies_config(&c, Path::new("/m.wasm")).unwrap()["clusterwide-capa-annotator"];
        assert_eq!(entry["policyMode"], "monitor");
        assert_eq!(entry["allowedToMutate"], false);
        assert_eq!(entry["settings"], json!({"a": 1}));
        assert_eq!(entry["timeoutEvalSeconds"], 3);
        assert_eq!(entry["message"], "m");
        assert!(entry.get("contextAwareResources").is_none(), "{entry}");
    }

    #[test]
    fn the_webhook_is_the_controllers() {
        let rules = json!([{"apiGroups": ["machine.openshift.io"], "apiVersions": ["v1beta1"],
            "resources": ["machinesets"], "operations": ["CREATE", "UPDATE"]}]);
        let c = cap(
            json!({"mutating": true, "rules": rules, "failurePolicy": "Ignore",
            "timeoutSeconds": 10, "namespaceSelector": {
                "matchLabels": {"team": "a"},
                "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                      "values": ["openshift-machine-api"]}]}}),
        );
        let mwc = mutating_webhook_configuration(&c, "https://127.0.0.1:8443", "Q0E=").unwrap();
        assert_eq!(mwc["metadata"]["name"], "clusterwide-capa-annotator");
        assert_eq!(
            mwc["metadata"]["labels"],
            json!({"app.kubernetes.io/part-of": "kubewarden"})
        );
        assert_eq!(
            mwc["metadata"]["annotations"]["kubewardenPolicyName"],
            "capa-annotator"
        );
        let w = &mwc["webhooks"][0];
        assert_eq!(w["name"], "clusterwide-capa-annotator.kubewarden.admission");
        assert_eq!(
            w["clientConfig"]["url"],
            "https://127.0.0.1:8443/validate/clusterwide-capa-annotator"
        );
        assert_eq!(w["rules"], rules);
        assert_eq!(w["failurePolicy"], "Ignore");
        assert_eq!(w["sideEffects"], "None");
        assert_eq!(w["timeoutSeconds"], 10);
        assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
        assert!(w.get("matchPolicy").is_none() && w.get("reinvocationPolicy").is_none());
        // the controller's namespace first, the policy's expressions after, its matchLabels gone
        assert_eq!(
            w["namespaceSelector"],
            json!({"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kubewarden"]},
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["openshift-machine-api"]}]})
        );
        // inside the controller's namespace: the policy's selector as it is
        let mut spec = c["spec"].clone();
        spec["allowInsideAdmissionControllerNamespace"] = json!(true);
        assert_eq!(
            namespace_selector(&spec, "kubewarden"),
            c["spec"]["namespaceSelector"]
        );
        assert!(
            mutating_webhook_configuration(&cap(json!({"mutating": false})), "u", "b").is_err()
        );
    }

    #[test]
    fn the_policys_answer_lines_are_read_from_policy_servers_json_log() {
        // the shape policy-server 1.35 prints with --log-fmt json (a line of a real run, shortened)
        let data = json!({"field_mask": "data.m5", "kind": "ConfigMap", "name": "t",
            "namespace": "ns", "received_bytes": 60,
            "received": {"apiVersion": "v1", "kind": "ConfigMap", "data": {"m5": "{}"}}});
        let line = json!({"timestamp": "2026-12-03T09:20:45.305348Z", "level": "DEBUG",
            "fields": {"message": "get_resource answer", "data": data.to_string()},
            "target": "policy_log"});
        let big = json!({"level": "DEBUG", "target": "policy_log", "fields": {
            "message": "get_resource answer",
            "data": json!({"field_mask": "data.m6g", "kind": "ConfigMap", "received_bytes": 98805}).to_string()}});
        let other =
            json!({"level": "DEBUG", "target": "policy_server", "fields": {"message": "x"}});
        let log = format!("{line}\nnot JSON\n{other}\n{big}\n");
        let got = received_answers(&log, "ConfigMap").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "data.m5");
        assert_eq!(got[0].1["data"]["m5"], "{}");
        assert_eq!(got[1].1, json!({"received_bytes": 98805}));
        assert!(
            received_answers(&log, "AWSMachineTemplate")
                .unwrap()
                .is_empty()
        );
    }
}
