//! The whole system with Cluster API on AWS, wired like a management cluster: `deploy/` with the
//! `components/cluster-api` component (rendered through `examples/deploy-cluster-api`), the fake
//! API server serving the Cluster API and CAPA kinds and running the real `policy.wasm` on every
//! MachineDeployment/MachineSet write, the real `capa-refresher` with the Deployment's arguments
//! against moto. The objects are the real ones of `fixtures/capi-sources/` (CAPA, k0smotron,
//! Rancher's docs), their `${VAR}`/`<placeholder>` values filled in as a user does.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use e2e_tests::autoscaler;
use e2e_tests::cluster_host::ClusterHost;
use e2e_tests::deploy::{self, Manifests};
use e2e_tests::fake_kube::{FakeKube, RequestRecord};
use e2e_tests::objects;
use e2e_tests::servers::{self, Ec2, wait_for};
use e2e_tests::{Policy, paths};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const REFRESHER_NS: &str = "capa-annotator";
const ADMIN: &str = "system:admin";
const MD: &str = "cluster.x-k8s.io/v1beta2";

fn refresher_user() -> String {
    format!("system:serviceaccount:{REFRESHER_NS}:capa-refresher")
}

/// A fixture object with its `${VAR}` and `<placeholder>` values filled in from `vars`.
fn fixture(file: &str, vars: &[(&str, &str)]) -> Value {
    let docs = fixtures(file, vars);
    assert_eq!(docs.len(), 1, "{file}");
    docs.into_iter().next().unwrap()
}

/// Every object of a fixture file, filled in like [`fixture`].
fn fixtures(file: &str, vars: &[(&str, &str)]) -> Vec<Value> {
    let mut text =
        std::fs::read_to_string(paths::fixture(&format!("capi-sources/{file}"))).unwrap();
    for (k, v) in vars {
        text = text
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("<{k}>"), v);
    }
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect();
    docs
}

/// What the API server makes of a Secret's `stringData`: base64 `data`.
fn stored_secret(mut secret: Value) -> Value {
    let string_data = secret["stringData"].take();
    let data: serde_json::Map<String, Value> = string_data
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), json!(servers::base64(v.as_str().unwrap()))))
        .collect();
    secret.as_object_mut().unwrap().remove("stringData");
    secret["data"] = Value::Object(data);
    secret
}

/// The regions the table ConfigMap says it holds.
fn table_regions(kube: &FakeKube) -> String {
    let cm = kube
        .get(
            "v1",
            "ConfigMap",
            Some("openshift-machine-api"),
            "machineset-instance-types",
        )
        .expect("the table ConfigMap");
    cm["metadata"]["annotations"]["capa-annotator.io/regions"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn capi_annotations(obj: &Value) -> serde_json::Map<String, Value> {
    obj["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn the_refresher_and_the_policy_annotate_cluster_api_machine_deployments() {
    let mut manifests = Manifests::render("examples/deploy-cluster-api").unwrap();
    let kube = FakeKube::start().unwrap();
    let ec2 = Ec2::start().unwrap();
    let dir = paths::scratch_dir("system-capi");

    let policy = Arc::new(Policy::load(&paths::policy_wasm()).unwrap());
    let host = Arc::new(ClusterHost::with_cache(
        kube.reader(),
        Duration::from_secs(5),
    ));
    let cap = manifests
        .find("ClusterAdmissionPolicy", "capa-annotator")
        .unwrap();
    for kind in ["MachineDeployment", "MachineSet"] {
        kube.set_admission(
            MD,
            kind,
            deploy::admission_hook(cap, policy.clone(), host.clone()).unwrap(),
        );
    }
    // an OpenShift management cluster whose Infrastructure names an endpoint nobody serves: the
    // Cluster API scans must not use it
    kube.put(objects::infrastructure("http://127.0.0.1:9"));
    // the policy as installed: the refresher judges objects with its settings
    kube.put(cap.clone());

    // cluster 1 (eu-west-3): k0smotron's MachineDeployment and template (t3.large), Rancher's
    // AWSCluster naming CAPA's docs' AWSClusterStaticIdentity, which admits namespaces by label
    // (the docs' Namespace labels, here on `default`); CAPA's GPU template (g4dn.xlarge) behind a
    // second MachineDeployment of the same cluster
    let cluster_name = "k0s-aws-test";
    kube.put(json!({"apiVersion": MD, "kind": "Cluster",
        "metadata": {"name": cluster_name, "namespace": "default"},
        "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                       "kind": "AWSCluster", "name": cluster_name}}}));
    let rancher_cluster = fixture(
        "awscluster-v1beta2-static-identity-rancher.yaml",
        &[("your region", "eu-west-3")],
    );
    let mut aws_cluster = rancher_cluster.clone();
    aws_cluster["metadata"] = json!({"name": cluster_name, "namespace": "default"});
    aws_cluster["spec"]["identityRef"]["name"] = json!("test-account");
    kube.put(aws_cluster);
    let docs = fixtures("awscluster-static-identity-capa-docs-v1beta1.yaml", &[]);
    let by_kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap().clone();
    let mut identity = by_kind("AWSClusterStaticIdentity");
    identity["apiVersion"] = json!("infrastructure.cluster.x-k8s.io/v1beta2"); // served as v1beta2
    kube.put(identity);
    kube.put(stored_secret(by_kind("Secret")));
    let mut namespace = by_kind("Namespace");
    namespace["metadata"]["name"] = json!("default");
    kube.put(namespace);

    // cluster 4 (us-west-2): Rancher's identity admits fleet-default only, so the refresher, like
    // CAPA, does not use it for `default`
    kube.put(json!({"apiVersion": MD, "kind": "Cluster",
        "metadata": {"name": "denied", "namespace": "default"},
        "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                       "kind": "AWSCluster", "name": "denied"}}}));
    let mut denied = rancher_cluster;
    denied["metadata"] = json!({"name": "denied", "namespace": "default"});
    denied["spec"]["region"] = json!("us-west-2");
    kube.put(denied);
    kube.put(fixture(
        "awsclusterstaticidentity-v1beta2-rancher.yaml",
        &[],
    ));
    kube.put(stored_secret(fixture(
        "secret-awsclusterstaticidentity-rancher.yaml",
        &[
            ("access key id", "AKIACAPILAB"),
            ("secret access key", "capi-lab-secret"),
        ],
    )));
    let mut denied_md = fixture("machinedeployment-v1beta2-mixed-refs-k0smotron.yaml", &[]);
    denied_md["metadata"]["name"] = json!("denied-md");
    denied_md["spec"]["clusterName"] = json!("denied");
    kube.put(denied_md);
    kube.put(fixture(
        "awsmachinetemplate-v1beta2-k0smotron-t3large.yaml",
        &[],
    ));
    let vars = [("CLUSTER_NAME", "gpu"), ("AWS_SSH_KEY_NAME", "default")];
    let mut gpu_template = fixture("awsmachinetemplate-v1beta2-gpu-g4dn.yaml", &vars);
    gpu_template["metadata"]["namespace"] = json!("default");
    kube.put(gpu_template);
    let workers = fixture("machinedeployment-v1beta2-mixed-refs-k0smotron.yaml", &[]);
    let mut gpu = workers.clone();
    gpu["metadata"]["name"] = json!("k0s-aws-test-gpu");
    gpu["spec"]["template"]["spec"]["infrastructureRef"]["name"] = json!("gpu-md-0");
    // OpenShift's docs MachineSet in the same cluster, as the API server serves it at v1beta2
    // (the conversion turns the v1beta1 ref's apiVersion into an apiGroup)
    let ms_vars = [
        ("machine_set_name", "docs-ms"),
        ("cluster_name", cluster_name),
        ("template_name", "k0s-aws-test-mt"),
    ];
    let mut ms = fixture("machineset-openshift-docs-v1beta1.yaml", &ms_vars);
    ms["apiVersion"] = json!(MD);
    ms["metadata"]["namespace"] = json!("default");
    ms["spec"]["template"]["spec"]["infrastructureRef"] = json!({
        "apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "AWSMachineTemplate",
        "name": "k0s-aws-test-mt"});
    // stored before capa-annotator was installed: no admission ran for them
    kube.put(workers);
    kube.put(gpu);
    kube.put(ms);

    // cluster 2 (EKS, us-east-1): CAPA's AWSManagedControlPlane with a static identity
    let cp_vars = [
        ("CLUSTER_NAME", "eks"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_SSH_KEY_NAME", "default"),
        ("KUBERNETES_VERSION", "v1.31.0"),
    ];
    let mut cp = fixture("awsmanagedcontrolplane-v1beta2.yaml", &cp_vars);
    cp["kind"] = json!("AWSManagedControlPlane"); // the fixture's header cut names it; the doc omits kind
    cp["metadata"]["namespace"] = json!("default");
    kube.put(cp);
    kube.put(json!({"apiVersion": MD, "kind": "Cluster",
        "metadata": {"name": "eks", "namespace": "default"},
        "spec": {"controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io",
                                     "kind": "AWSManagedControlPlane", "name": "eks-control-plane"}}}));
    kube.put(
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2",
        "kind": "AWSClusterStaticIdentity", "metadata": {"name": "e2e-account"},
        "spec": {"secretRef": "e2e-account-creds", "allowedNamespaces": {}}}),
    );
    kube.put(objects::aws_secret(
        "capa-system",
        "e2e-account-creds",
        "AKIAEKS",
        "x",
    ));
    // its Secret has the Machine API keys, not CAPA's: the Warning Event says which keys
    let mut eks_template = fixture("awsmachinetemplate-v1beta2-k0smotron-t3large.yaml", &[]);
    eks_template["metadata"]["name"] = json!("eks-mt");
    eks_template["spec"]["template"]["spec"]["instanceType"] = json!("m6g.xlarge");
    kube.put(eks_template);
    let mut eks_md = fixture("machinedeployment-v1beta2-mixed-refs-k0smotron.yaml", &[]);
    eks_md["metadata"]["name"] = json!("eks-md");
    eks_md["spec"]["clusterName"] = json!("eks");
    eks_md["spec"]["template"]["spec"]["infrastructureRef"]["name"] = json!("eks-mt");
    kube.put(eks_md);

    // a MachineDeployment of cluster 1 whose template does not exist (yet)
    let mut early = fixture("machinedeployment-v1beta2-mixed-refs-k0smotron.yaml", &[]);
    early["metadata"]["name"] = json!("early-md");
    early["spec"]["template"]["spec"]["infrastructureRef"]["name"] = json!("not-yet");
    kube.put(early);

    // cluster 3: no identityRef (CAPA's controller identity): the refresher cannot scan for it
    kube.put(json!({"apiVersion": MD, "kind": "Cluster",
        "metadata": {"name": "ctrl", "namespace": "default"},
        "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                       "kind": "AWSCluster", "name": "ctrl"}}}));
    kube.put(
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "AWSCluster",
        "metadata": {"name": "ctrl", "namespace": "default"}, "spec": {"region": "ap-south-1"}}),
    );
    let mut ctrl_md = fixture("machinedeployment-v1beta2-mixed-refs-k0smotron.yaml", &[]);
    ctrl_md["metadata"]["name"] = json!("ctrl-md");
    ctrl_md["spec"]["clusterName"] = json!("ctrl");
    kube.put(ctrl_md);

    // the admin lists the identities' Secrets in the component's Role, as its comment asks
    for o in manifests.objects.iter_mut() {
        if o["kind"] == "Role" && o["metadata"]["name"] == "capa-refresher-static-identities" {
            o["rules"][0]["resourceNames"] = json!(["test-account-creds", "e2e-account-creds"]);
        }
    }

    let kubeconfig = kube.write_kubeconfig_as(&dir, &refresher_user()).unwrap();
    // Cluster API scans use the refresher's AWS_ENDPOINT_URL_EC2, not the OpenShift
    // Infrastructure's endpoint (that one is for the Machine API MachineSets)
    let endpoint = [("AWS_ENDPOINT_URL_EC2", ec2.proxy_url.as_str())];
    let (_refresher, args) =
        deploy::start_deployed_refresher(&manifests, &kubeconfig, &dir, REFRESHER_NS, &endpoint)
            .unwrap();
    assert!(args.iter().any(|a| a == "--cluster-api"), "{args:?}");

    let get = |name: &str| kube.get(MD, "MachineDeployment", Some("default"), name);
    // what the autoscaler's clusterapi provider reads: cpu, memory in bytes, GPUs by resource name
    let capacity = |name: &str| {
        get(name).and_then(|o| autoscaler::instance_capacity(&capi_annotations(&o)).ok())
    };
    let gib = |g: i128| g * (1 << 30) * 1000;
    let want: [(&str, BTreeMap<String, i128>); 2] = [
        (
            "k0s-aws-test-md",
            BTreeMap::from([
                ("cpu".into(), 2000),
                ("memory".into(), gib(8)),
                ("pods".into(), 110_000),
            ]),
        ),
        (
            "k0s-aws-test-gpu",
            BTreeMap::from([
                ("cpu".into(), 4000),
                ("memory".into(), gib(16)),
                ("nvidia.com/gpu".into(), 1000),
                ("pods".into(), 110_000),
            ]),
        ),
    ];
    let done = wait_for(Duration::from_secs(90), || {
        want.iter()
            .all(|(n, w)| capacity(n).as_ref() == Some(w))
            .then_some(())
    });
    if done.is_none() {
        for (n, w) in &want {
            eprintln!(
                "{n}: got {:?}, want {w:?}",
                get(n).map(|o| capi_annotations(&o))
            );
        }
        panic!("the MachineDeployments were not annotated");
    }
    for (n, _) in &want {
        let o = get(n).unwrap();
        assert!(
            autoscaler::can_scale_from_zero(&capi_annotations(&o)),
            "{n}"
        );
        assert_eq!(
            autoscaler::labels(&capi_annotations(&o))["kubernetes.io/arch"],
            "amd64"
        );
        assert!(
            capi_annotations(&o)
                .keys()
                .all(|k| !k.starts_with("machine.openshift.io/")),
            "{n}: {o}"
        );
        let admitted: Vec<_> = kube
            .admissions()
            .into_iter()
            .filter(|a| a.name == *n && a.user == refresher_user() && a.mutated)
            .collect();
        assert!(
            !admitted.is_empty(),
            "{n}: not re-admitted by the refresher"
        );
        assert!(
            admitted.iter().all(|a| a.warnings.is_empty()),
            "{n}: {admitted:?}"
        );
    }
    let ms_capacity = || {
        kube.get(MD, "MachineSet", Some("default"), "docs-ms")
            .and_then(|o| autoscaler::instance_capacity(&capi_annotations(&o)).ok())
    };
    let ms_done = wait_for(Duration::from_secs(30), || {
        (ms_capacity().as_ref() == Some(&want[0].1)).then_some(())
    });
    assert!(ms_done.is_some(), "the MachineSet: {:?}", ms_capacity());
    assert_eq!(table_regions(&kube), "eu-west-3");
    assert!(
        ec2.count("DescribeInstanceTypes", Some("eu-west-3"))
            .unwrap()
            > 0
    );
    // the scan used the static identity's keys, and no other cluster's
    assert!(
        ec2.count("DescribeInstanceTypes", Some("ap-south-1"))
            .unwrap()
            == 0
    );

    // Warning Events name what to configure
    let event_for = |name: &str| {
        wait_for(Duration::from_secs(30), || {
            kube.list("v1", "Event")
                .into_iter()
                .find(|e| e["involvedObject"]["name"] == name)
        })
        .unwrap_or_else(|| panic!("no Event on {name}"))
    };
    let ctrl = event_for("ctrl-md");
    assert_eq!(
        (
            ctrl["type"].as_str(),
            ctrl["involvedObject"]["kind"].as_str()
        ),
        (Some("Warning"), Some("MachineDeployment"))
    );
    let msg = ctrl["message"].as_str().unwrap();
    assert!(
        msg.contains("AWSCluster default/ctrl has no identityRef (CAPA's controller identity)"),
        "{msg}"
    );
    assert!(msg.contains("--cluster-api-default-credentials"), "{msg}");
    let eks = event_for("eks-md");
    let msg = eks["message"].as_str().unwrap();
    assert!(
        msg.contains(
            "Secret capa-system/e2e-account-creds of AWSClusterStaticIdentity e2e-account"
        ),
        "{msg}"
    );
    assert!(msg.contains("`AccessKeyID` and `SecretAccessKey`"), "{msg}");
    assert!(!msg.contains("AKIAEKS"), "{msg}");

    let early = event_for("early-md");
    let msg = early["message"].as_str().unwrap();
    assert!(
        msg.contains("AWSMachineTemplate default/not-yet not found; it is re-admitted at the first refresh after the template can be read"),
        "{msg}"
    );
    let denied = event_for("denied-md");
    let msg = denied["message"].as_str().unwrap();
    assert!(
        msg.contains("AWSClusterStaticIdentity capa-lab-identity does not list the namespace, so CAPA does not use it for namespace default"),
        "{msg}"
    );
    assert_eq!(
        ec2.count("DescribeInstanceTypes", Some("us-west-2"))
            .unwrap(),
        0
    );

    // a rollout: the GPU MachineDeployment moves to a new template without GPUs (arm64); the
    // policy, at the admin's write, drops the GPU keys
    let mut arm = fixture(
        "awsmachinetemplate-v1beta2-ordinary.yaml",
        &[
            ("CLUSTER_NAME", "arm"),
            ("AWS_NODE_MACHINE_TYPE", "m6g.xlarge"),
            ("AWS_SSH_KEY_NAME", "default"),
        ],
    );
    arm["metadata"]["namespace"] = json!("default");
    kube.put(arm);
    servers::raw(
        &kube.url(),
        "PATCH",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/machinedeployments/k0s-aws-test-gpu",
        "application/merge-patch+json",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
        br#"{"spec":{"template":{"spec":{"infrastructureRef":{"name":"arm-md-0"}}}}}"#,
    )
    .unwrap();
    let after = capi_annotations(&get("k0s-aws-test-gpu").unwrap());
    assert_eq!(
        autoscaler::instance_capacity(&after).unwrap(),
        BTreeMap::from([
            ("cpu".into(), 4000),
            ("memory".into(), gib(16)),
            ("pods".into(), 110_000)
        ])
    );
    assert!(
        !after.contains_key(autoscaler::GPU_COUNT) && !after.contains_key(autoscaler::GPU_TYPE),
        "{after:?}"
    );
    assert_eq!(autoscaler::labels(&after)["kubernetes.io/arch"], "arm64");

    // the cluster without a static identity, with the admin's opt-in: scanned with the
    // refresher's own credentials (here the environment's, as IRSA would give them)
    let once = objects::refresher_command(&kubeconfig, &dir)
        .args([
            "--once",
            "--cluster-api",
            "--cluster-api-default-credentials",
            "--capa-namespace=capa-system",
            "--namespace=openshift-machine-api",
            "--configmap-namespace=openshift-machine-api",
            "--log-format=json",
        ])
        .env("AWS_ENDPOINT_URL_EC2", &ec2.proxy_url)
        .env("AWS_ACCESS_KEY_ID", "AKIAREFRESHERPOD")
        .env("AWS_SECRET_ACCESS_KEY", "pod-secret")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&once.stderr);
    assert!(
        ec2.count("DescribeInstanceTypes", Some("ap-south-1"))
            .unwrap()
            > 0,
        "ap-south-1 not scanned with the default chain: {log}"
    );
    assert!(!log.contains("pod-secret"), "{log}");
    let scanned_with = log
        .lines()
        .filter(|l| l.contains("scanning instance types") && l.contains("ap-south-1"))
        .collect::<Vec<_>>();
    assert!(
        scanned_with.len() == 1
            && scanned_with[0].contains("the refresher's default AWS credential chain"),
        "{log}"
    );
    assert_eq!(table_regions(&kube), "ap-south-1,eu-west-3");

    // RBAC, both ways: the refresher used what deploy/ with the component grants, and all of it
    let requests: Vec<RequestRecord> = kube
        .requests()
        .into_iter()
        .filter(|r| r.user == refresher_user())
        .collect();
    let rules = manifests.rules_for(REFRESHER_NS, "capa-refresher");
    let denied: Vec<&RequestRecord> = requests
        .iter()
        .filter(|r| !rules.iter().any(|g| g.allows(r)))
        .collect();
    assert!(
        denied.is_empty(),
        "the refresher made requests the manifests do not grant: {denied:#?}"
    );
    let unused: Vec<String> = rules
        .iter()
        .filter(|g| g.source.contains("cluster-api") || g.source.contains("static-identities"))
        .flat_map(|g| g.unused(&requests))
        .collect();
    assert!(
        unused.is_empty(),
        "the component grants the refresher more than it used: {unused:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
