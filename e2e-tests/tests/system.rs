//! The whole system, wired like a cluster: the fake Kubernetes API server runs the real
//! `policy.wasm` as a mutating admission step on every MachineSet CREATE/UPDATE/PATCH (configured
//! from `deploy/`'s ClusterAdmissionPolicy: rules, namespaceSelector, settings), the policy's
//! `get_resource` is answered from the fake server's own objects, and the real `capa-refresher`
//! runs with the arguments of `deploy/`'s Deployment, as the refresher ServiceAccount, against
//! moto behind the EC2 proxy. Finally every request each part made is checked against `deploy/`'s
//! RBAC, both ways: everything used is granted, and nothing granted goes unused.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use e2e_tests::capabilities::CallbackRequest;
use e2e_tests::cluster_host::ClusterHost;
use e2e_tests::deploy::{self, Manifests};
use e2e_tests::fake_kube::{FakeKube, RequestRecord};
use e2e_tests::objects;
use e2e_tests::servers::{self, Ec2, wait_for};
use e2e_tests::{Policy, paths};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "openshift-machine-api";
const CM: &str = "machineset-instance-types";
const REFRESHER_NS: &str = "capa-annotator";
const REFRESHER_SA: &str = "capa-refresher";
const POLICY_SERVER: (&str, &str) = ("kubewarden", "policy-server");
const ADMIN: &str = "system:admin";
/// moto's catalogue: 1,263 types → 13 pages of 100.
const PAGES: usize = 13;

fn refresher_user() -> String {
    format!("system:serviceaccount:{REFRESHER_NS}:{REFRESHER_SA}")
}

use objects::capacity_annotations as annotations;

fn expect(v: &str, m: &str, g: &str, arch: &str) -> [String; 4] {
    [
        v.into(),
        m.into(),
        g.into(),
        format!("kubernetes.io/arch={arch}"),
    ]
}

#[test]
fn refresher_and_policy_annotate_machinesets_like_in_a_cluster() {
    let manifests = Manifests::render("deploy").unwrap();
    let kube = FakeKube::start().unwrap();
    let ec2 = Ec2::start().unwrap();
    let dir = paths::scratch_dir("system");

    // the policy as the policy server runs it, configured by deploy/'s ClusterAdmissionPolicy
    let policy = Arc::new(Policy::load(&paths::policy_wasm()).unwrap());
    // like the policy server, the host keeps get_resource answers for 5 s
    let host = Arc::new(ClusterHost::with_cache(
        kube.reader(),
        Duration::from_secs(5),
    ));
    let mut cap = manifests
        .find("ClusterAdmissionPolicy", "capa-annotator")
        .expect("deploy/ has the ClusterAdmissionPolicy")
        .clone();
    // an admin's override for a type EC2 does not list: the refresher must judge with it too (no
    // "unknown instance type" Event, no endless re-admission)
    cap["spec"]["settings"]["overrides"] = serde_json::json!({"zz9.custom":
        {"vcpu": 6, "memoryMiB": 12288, "gpu": 0, "arch": "arm64"}});
    kube.set_admission(
        "machine.openshift.io/v1beta1",
        "MachineSet",
        deploy::admission_hook(&cap, policy, host.clone()).unwrap(),
    );

    kube.put(objects::infrastructure(&ec2.proxy_url));
    // the policy as installed: the refresher judges objects with its settings
    kube.put(cap.clone());
    kube.put(objects::aws_secret(NS, "aws-creds", "AKIASYSTEM", "s"));
    // 1. MachineSets that existed before capa-annotator was installed (no admission ran for them),
    //    and no ConfigMap
    for (name, region, instance_type) in [
        ("workers", "eu-west-3", "m5.xlarge"),
        ("arm", "eu-west-3", "m6g.xlarge"),
        ("gpu", "us-east-1", "p4d.24xlarge"),
        ("typo", "eu-west-3", "m5.xlargee"),
        ("custom", "eu-west-3", "zz9.custom"),
    ] {
        let mut ms = objects::machineset(NS, name, region, instance_type, "aws-creds");
        if name == "gpu" {
            // a GPU node group set up for the OpenShift autoscaler (else the policy warns)
            ms = objects::with_accelerator_label(ms, "nvidia-a100");
        }
        kube.put(ms);
    }
    let typo_before = kube
        .get(
            "machine.openshift.io/v1beta1",
            "MachineSet",
            Some(NS),
            "typo",
        )
        .unwrap();
    assert!(
        kube.get("v1", "ConfigMap", Some(NS), CM).is_none(),
        "no ConfigMap yet"
    );

    // the refresher with the Deployment's arguments, as its ServiceAccount
    let kubeconfig = kube.write_kubeconfig_as(&dir, &refresher_user()).unwrap();
    let (_refresher, args) =
        deploy::start_deployed_refresher(&manifests, &kubeconfig, &dir, REFRESHER_NS, &[]).unwrap();
    assert!(args.iter().any(|a| a == "--leader-elect"), "{args:?}");

    // → ConfigMap written → re-admission patches reach the policy → annotated from the ConfigMap
    let get = |name: &str| kube.get("machine.openshift.io/v1beta1", "MachineSet", Some(NS), name);
    let want = [
        ("workers", expect("4", "16384", "0", "amd64")),
        ("arm", expect("4", "16384", "0", "arm64")),
        ("gpu", expect("96", "1179648", "8", "amd64")),
        ("custom", expect("6", "12288", "0", "arm64")),
    ];
    let done = wait_for(Duration::from_secs(90), || {
        want.iter()
            .all(|(name, w)| get(name).is_some_and(|ms| annotations(&ms) == *w))
            .then_some(())
    });
    if done.is_none() {
        for (name, w) in &want {
            eprintln!(
                "{name}: got {:?}, want {w:?}",
                get(name).map(|m| annotations(&m))
            );
        }
        panic!("the MachineSets were not annotated");
    }
    let cm = kube.get("v1", "ConfigMap", Some(NS), CM).unwrap();
    assert_eq!(
        cm["data"].as_object().unwrap().len(),
        177,
        "every family of the catalogue"
    );
    for (name, _) in &want {
        let admitted: Vec<_> = kube
            .admissions()
            .into_iter()
            .filter(|a| a.name == *name && a.user == refresher_user() && a.mutated)
            .collect();
        assert!(
            !admitted.is_empty(),
            "{name}: no re-admission by the refresher"
        );
        // a fallback to the built-in table would say so in a warning
        assert!(
            admitted.iter().all(|a| a.warnings.is_empty()),
            "{name}: {admitted:?}"
        );
    }
    // the policy asked for one family of the table each time
    let masked_reads: Vec<String> = host
        .calls()
        .into_iter()
        .map(
            |CallbackRequest::KubernetesGetResource { field_masks, .. }| format!("{field_masks:?}"),
        )
        .collect();
    for family in ["data.m5", "data.m6g", "data.p4d"] {
        assert!(
            masked_reads.iter().any(|m| m.contains(family)),
            "{family}: {masked_reads:?}"
        );
    }

    // 3. the MachineSet whose type EC2 does not list: Warning Event, MachineSet untouched
    let event = wait_for(Duration::from_secs(30), || {
        kube.list("v1", "Event")
            .into_iter()
            .find(|e| e["involvedObject"]["name"] == "typo")
    })
    .expect("a Warning Event on the MachineSet with the unknown type");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "FailedUpdate");
    assert!(
        event["message"].as_str().unwrap().contains("m5.xlargee"),
        "{event}"
    );
    assert_eq!(
        get("typo").unwrap(),
        typo_before,
        "unchanged, resourceVersion included"
    );
    assert!(
        kube.list("v1", "Event")
            .iter()
            .all(|e| e["involvedObject"]["name"] == "typo"),
        "only the broken MachineSet gets an Event"
    );

    // 2. a new MachineSet in a region not covered yet, of a type only that region lists (in
    //    neither the ConfigMap nor the built-in table), created through the API by an admin: the
    //    policy cannot annotate it at creation; the refresher notices the new region, scans it,
    //    writes the table and re-admits the MachineSet — no manual step. (The creation's read of
    //    the ConfigMap is still in the host's 5 s cache when the scan ends: the refresher
    //    re-admits once more after 6 s.)
    ec2.regional_type("ap-southeast-2", "m5.large", "zz1.large")
        .unwrap();
    let new = objects::machineset(NS, "sydney", "ap-southeast-2", "zz1.large", "aws-creds");
    let created: Value = serde_json::from_str(
        &servers::raw(
            &kube.url(),
            "POST",
            &format!("/apis/machine.openshift.io/v1beta1/namespaces/{NS}/machinesets"),
            "application/json",
            &[("Authorization", &format!("Bearer {ADMIN}"))],
            new.to_string().as_bytes(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(annotations(&created)[0], "<absent>", "{created}");
    let at_creation = kube
        .admissions()
        .into_iter()
        .find(|a| a.name == "sydney" && a.user == ADMIN)
        .unwrap();
    assert!(
        at_creation.warnings[0].contains("unknown instance type \"zz1.large\""),
        "{at_creation:?}"
    );
    let annotated = wait_for(Duration::from_secs(90), || {
        get("sydney").filter(|ms| annotations(ms) == expect("2", "8192", "0", "amd64"))
    });
    assert!(
        annotated.is_some(),
        "sydney was not annotated after its region was refreshed: {:?}\nadmissions: {:#?}\nrequests: {:#?}",
        get("sydney").map(|m| annotations(&m)),
        kube.admissions()
            .into_iter()
            .filter(|a| a.name == "sydney")
            .collect::<Vec<_>>(),
        kube.requests()
            .into_iter()
            .filter(|r| r.name.as_deref() == Some("sydney")
                || r.verb == "create" && r.resource == "machinesets")
            .collect::<Vec<_>>()
    );
    let cm = kube.get("v1", "ConfigMap", Some(NS), CM).unwrap();
    assert_eq!(
        cm["metadata"]["annotations"]["capa-annotator.io/regions"],
        "ap-southeast-2,eu-west-3,us-east-1"
    );
    assert!(cm["data"]["zz1"].as_str().unwrap().contains("\"large\""));
    assert_eq!(
        ec2.count("DescribeInstanceTypes", Some("ap-southeast-2"))
            .unwrap(),
        PAGES
    );
    let by_refresher: Vec<_> = kube
        .admissions()
        .into_iter()
        .filter(|a| a.name == "sydney" && a.user == refresher_user() && a.mutated)
        .collect();
    assert_eq!(by_refresher.len(), 1, "{by_refresher:?}");
    assert!(by_refresher[0].warnings.is_empty(), "{by_refresher:?}");
    // a PATCH is admitted too: changing the type re-annotates
    servers::raw(
        &kube.url(),
        "PATCH",
        &format!("/apis/machine.openshift.io/v1beta1/namespaces/{NS}/machinesets/sydney"),
        "application/merge-patch+json",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
        br#"{"spec":{"template":{"spec":{"providerSpec":{"value":{"instanceType":"m6g.xlarge"}}}}}}"#,
    )
    .unwrap();
    assert_eq!(
        annotations(&get("sydney").unwrap()),
        expect("4", "16384", "0", "arm64")
    );

    // the API server returns the policy's warnings with the response, as Warning headers
    let (head, _) = servers::request(
        &kube.url(),
        "POST",
        &format!("/apis/machine.openshift.io/v1beta1/namespaces/{NS}/machinesets"),
        "application/json",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
        objects::machineset(NS, "future", "eu-west-3", "zz9.huge", "aws-creds")
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert!(
        head.iter()
            .any(|h| h.to_ascii_lowercase().starts_with("warning: 299 - ")
                && h.contains("unknown instance type")
                && h.contains("zz9.huge")),
        "{head:#?}"
    );
    // outside the policy's namespaceSelector nothing is admitted
    let other: Value = serde_json::from_str(
        &servers::raw(
            &kube.url(),
            "POST",
            "/apis/machine.openshift.io/v1beta1/namespaces/elsewhere/machinesets",
            "application/json",
            &[("Authorization", &format!("Bearer {ADMIN}"))],
            objects::machineset("elsewhere", "x", "eu-west-3", "m5.large", "aws-creds")
                .to_string()
                .as_bytes(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(other["metadata"].get("annotations"), None, "{other}");

    // the leader-election Lease was renewed at least once (its update verb is exercised)
    let renewed = wait_for(Duration::from_secs(30), || {
        kube.requests()
            .iter()
            .any(|r| r.resource == "leases" && r.verb == "update")
            .then_some(())
    });
    assert!(renewed.is_some(), "the Lease was never renewed");

    // 4. RBAC, both ways
    let requests: Vec<RequestRecord> = kube
        .requests()
        .into_iter()
        .filter(|r| r.user == refresher_user())
        .collect();
    let rules = manifests.rules_for(REFRESHER_NS, REFRESHER_SA);
    assert!(!rules.is_empty(), "deploy/ binds no rule to the refresher");
    let denied: Vec<&RequestRecord> = requests
        .iter()
        .filter(|r| !rules.iter().any(|g| g.allows(r)))
        .collect();
    assert!(
        denied.is_empty(),
        "the refresher made requests deploy/ does not grant: {denied:#?}"
    );
    let unused: Vec<String> = rules.iter().flat_map(|g| g.unused(&requests)).collect();
    assert!(
        unused.is_empty(),
        "deploy/ grants the refresher more than it used: {unused:#?}"
    );

    // the policy server: its host calls as the API requests they become
    let policy_requests: Vec<RequestRecord> = host
        .calls()
        .into_iter()
        .map(
            |CallbackRequest::KubernetesGetResource {
                 api_version,
                 kind,
                 name,
                 namespace,
                 ..
             }| {
                assert_eq!((api_version.as_str(), kind.as_str()), ("v1", "ConfigMap"));
                RequestRecord {
                    user: format!(
                        "system:serviceaccount:{}:{}",
                        POLICY_SERVER.0, POLICY_SERVER.1
                    ),
                    verb: "get".into(),
                    group: String::new(),
                    resource: "configmaps".into(),
                    namespace,
                    name: Some(name),
                }
            },
        )
        .collect();
    let rules = manifests.rules_for(POLICY_SERVER.0, POLICY_SERVER.1);
    for r in &policy_requests {
        assert!(
            rules.iter().any(|g| g.allows(r)),
            "the policy server may not {r:?}"
        );
    }
    let unused: Vec<String> = rules
        .iter()
        .flat_map(|g| g.unused(&policy_requests))
        .collect();
    assert!(unused.is_empty(), "{unused:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}
