//! The manifests of `deploy/` (rendered by `kubectl kustomize`, as `kubectl apply -k deploy/`
//! would): hardening of the refresher, consistency between the policy's settings, the refresher's
//! flags and the RBAC, and the policy accepting the settings it is deployed with.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use e2e_tests::deploy::{self, Manifests};
use e2e_tests::{NoCluster, Policy, paths, validate_settings};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")))
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn refresher_deployment_is_hardened_and_consistent() {
    let m = Manifests::render("deploy").unwrap();
    let d = m.find("Deployment", "capa-refresher").unwrap();
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "capa-refresher");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    for k in ["requests", "limits"] {
        assert!(c["resources"][k]["memory"].is_string(), "memory {k}");
        assert!(c["resources"][k]["cpu"].is_string(), "cpu {k}");
    }
    assert!(
        c["image"]
            .as_str()
            .unwrap()
            .starts_with("ghcr.io/capa-annotator/capa-refresher:"),
        "the images transformer names the image"
    );

    let args = deploy::container_args(d, "refresher", &[]);
    let port = |name: &str| {
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        port("metrics"),
        port_of(flag(&args, "metrics-bind-address").unwrap())
    );
    assert_eq!(port("health"), port_of(flag(&args, "health-addr").unwrap()));
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "health", "{probe}");
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    // more than one replica is only safe with leader election; it is on whatever the count
    assert!(args.iter().any(|a| a == "--leader-elect"));
    assert_eq!(
        flag(&args, "leader-elect-resource-namespace"),
        Some("$(POD_NAMESPACE)")
    );

    // the NetworkPolicy lets in exactly the two ports, and out DNS, the API server and HTTPS
    let np = m.find("NetworkPolicy", "capa-refresher").unwrap();
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"],
        d["spec"]["selector"]["matchLabels"]
    );
    let ports = |rules: &Value| -> BTreeSet<u64> {
        rules
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["ports"].as_array().unwrap().iter())
            .map(|p| p["port"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        ports(&np["spec"]["ingress"]),
        [port("metrics"), port("health")].into()
    );
    assert_eq!(ports(&np["spec"]["egress"]), [53, 443, 5353, 6443].into());
    let svc = m.find("Service", "capa-refresher-metrics").unwrap();
    assert_eq!(
        svc["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn policy_settings_refresher_flags_and_rbac_name_the_same_configmap() {
    let m = Manifests::render("deploy").unwrap();
    let cap = m.find("ClusterAdmissionPolicy", "capa-annotator").unwrap();
    let spec = &cap["spec"];
    assert_eq!(spec["mutating"], true);
    assert_eq!(
        spec["contextAwareResources"],
        json!([{"apiVersion": "v1", "kind": "ConfigMap"}])
    );
    assert_eq!(spec["failurePolicy"], "Ignore");
    assert_eq!(
        spec["rules"],
        json!([{"apiGroups": ["machine.openshift.io"], "apiVersions": ["v1beta1"],
                "resources": ["machinesets"], "operations": ["CREATE", "UPDATE"]}])
    );
    let settings = &spec["settings"];
    let (name, ns) = (
        settings["configMapName"].as_str().unwrap(),
        settings["configMapNamespace"].as_str().unwrap(),
    );
    let args = deploy::container_args(
        m.find("Deployment", "capa-refresher").unwrap(),
        "refresher",
        &[],
    );
    assert_eq!(flag(&args, "configmap-name"), Some(name));
    assert_eq!(flag(&args, "configmap-namespace"), Some(ns));
    assert_eq!(flag(&args, "namespace"), Some(ns), "MachineSets' namespace");
    assert_eq!(
        spec["namespaceSelector"]["matchExpressions"][0]["values"],
        json!([ns])
    );
    // the policy server may get that ConfigMap and nothing else
    let rules = m.rules_for("kubewarden", "policy-server");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].namespace.as_deref(), Some(ns));
    assert_eq!(rules[0].resource_names, [name]);
    assert_eq!(rules[0].verbs, ["get"]);

    // the compiled policy accepts the settings it is deployed with
    let policy = Policy::load(&paths::policy_wasm()).unwrap();
    let v = validate_settings(&policy, settings, Arc::new(NoCluster)).unwrap();
    assert!(v.valid, "{:?}", v.message);
}

#[test]
fn prometheus_example_adds_only_a_servicemonitor_for_the_metrics_port() {
    let base = Manifests::render("deploy").unwrap();
    let with = Manifests::render("examples/deploy-prometheus").unwrap();
    assert_eq!(with.objects.len(), base.objects.len() + 1);
    let sm = with.find("ServiceMonitor", "capa-refresher").unwrap();
    let svc = with.find("Service", "capa-refresher-metrics").unwrap();
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    // a selector matches when each of its labels is on the object
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v, "{k}");
    }
    assert!(base.find("ServiceMonitor", "capa-refresher").is_none());
}

/// `deploy/components/cluster-api` (rendered through `examples/deploy-cluster-api`): the policy
/// gains the Cluster API rules and may read AWSMachineTemplates, the policy server may `get`
/// them and nothing more, and the module's metadata grants kwctl users the same.
#[test]
fn cluster_api_component_adds_the_rules_the_templates_and_get_only() {
    let base = Manifests::render("deploy").unwrap();
    let with = Manifests::render("examples/deploy-cluster-api").unwrap();
    let spec =
        |m: &Manifests| m.find("ClusterAdmissionPolicy", "capa-annotator").unwrap()["spec"].clone();
    let (before, after) = (spec(&base), spec(&with));
    let capi_rule = json!({"apiGroups": ["cluster.x-k8s.io"], "apiVersions": ["v1beta1", "v1beta2"],
                           "resources": ["machinesets", "machinedeployments"],
                           "operations": ["CREATE", "UPDATE"]});
    let mut rules = before["rules"].as_array().unwrap().clone();
    rules.push(capi_rule);
    assert_eq!(after["rules"], Value::Array(rules));
    let templates = [
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "AWSMachineTemplate"}),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "AWSMachineTemplate"}),
    ];
    let mut resources = before["contextAwareResources"].as_array().unwrap().clone();
    resources.extend(templates);
    assert_eq!(after["contextAwareResources"], Value::Array(resources));
    assert!(after.get("namespaceSelector").is_none(), "{after}");
    // everything else of the policy is as in deploy/
    for key in [
        "settings",
        "module",
        "mode",
        "failurePolicy",
        "mutating",
        "timeoutSeconds",
    ] {
        assert_eq!(after[key], before[key], "{key}");
    }

    let granted = with.rules_for("kubewarden", "policy-server");
    let new: Vec<_> = granted.iter().filter(|r| r.api_groups != [""]).collect();
    assert_eq!(new.len(), 1, "{granted:?}");
    assert_eq!(new[0].namespace, None, "templates live in any namespace");
    assert_eq!(new[0].api_groups, ["infrastructure.cluster.x-k8s.io"]);
    assert_eq!(new[0].resources, ["awsmachinetemplates"]);
    assert_eq!(new[0].verbs, ["get"]);
    assert_eq!(
        granted.len(),
        base.rules_for("kubewarden", "policy-server").len() + 1
    );
    for o in &with.objects {
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/part-of"], "capa-annotator",
            "{} {}",
            o["kind"], o["metadata"]["name"]
        );
    }

    // metadata.yml (what kwctl grants) lists what the component deploys
    let metadata: Value = serde_yaml::from_str(
        &std::fs::read_to_string(paths::workspace().join("metadata.yml")).unwrap(),
    )
    .unwrap();
    assert_eq!(metadata["rules"], after["rules"]);
    assert_eq!(
        metadata["contextAwareResources"],
        after["contextAwareResources"]
    );
}
