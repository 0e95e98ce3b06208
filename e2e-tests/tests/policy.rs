//! End-to-end tests of the compiled `policy.wasm`, run through a waPC host the way the Kubewarden
//! policy server runs it (fresh instance per request, JSON patch computed from `mutated_object`).
//! The request and session files are the same ones `e2e-tests/policy.bats` feeds to kwctl.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use capa_core::annotations::{GPU, LABELS, MEMORY_MB, VCPU};
use e2e_tests::capabilities::{Garbage, HostCapabilities};
use e2e_tests::evaluation::evaluate_payload;
use e2e_tests::{
    Evaluation, NoCluster, Policy, ReplaySession, cases, evaluate, paths, validate_settings,
};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| Policy::load(&paths::policy_wasm()).unwrap_or_else(|e| panic!("{e:#}")))
}

fn request(name: &str) -> Value {
    let path = paths::fixture(&format!("requests/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Runs `request` with `settings` against the replay session `session`, and checks that the policy
/// made exactly the recorded host calls.
fn run(request_name: &str, session: &str, settings: Value) -> Evaluation {
    let s = Arc::new(
        ReplaySession::from_file(&paths::fixture(&format!("sessions/{session}.yml"))).unwrap(),
    );
    let ev = evaluate(policy(), &settings, &request(request_name), s.clone()).unwrap();
    assert!(
        s.mismatches().is_empty(),
        "host calls differ from the session: {:?}",
        s.mismatches()
    );
    assert_eq!(
        s.remaining(),
        0,
        "the policy did not make every recorded host call"
    );
    assert!(ev.response.accepted, "the policy must never reject");
    ev
}

fn capacity(ev: &Evaluation) -> (String, String, String, String) {
    let a = ev.annotations();
    let get = |k: &str| {
        a.get(k)
            .and_then(Value::as_str)
            .unwrap_or("<absent>")
            .to_string()
    };
    (get(VCPU), get(MEMORY_MB), get(GPU), get(LABELS))
}

fn t(v: &str, m: &str, g: &str, l: &str) -> (String, String, String, String) {
    (v.into(), m.into(), g.into(), l.into())
}

/// Every operation of the patch touches `/metadata/annotations` only.
fn assert_patch_only_touches_annotations(ev: &Evaluation) {
    let patch = ev.patch_json();
    for op in patch.as_array().unwrap() {
        let path = op["path"].as_str().unwrap();
        assert!(
            path.starts_with("/metadata/annotations"),
            "patch touches {path}: {patch}"
        );
    }
}

#[test]
fn protocol_version_is_v1() {
    let raw = policy()
        .call("protocol_version", b"", Arc::new(NoCluster))
        .unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&raw).unwrap(), json!("v1"));
}

#[test]
fn example_machineset_masked_configmap() {
    let ev = run("create-example-m6g-xlarge", "m6g-masked", json!({}));
    // reference/machineset-example.yaml: what it must look like after admission
    assert_eq!(
        capacity(&ev),
        t("4", "16384", "0", "kubernetes.io/arch=arm64,team=ml")
    );
    assert!(ev.warnings().is_empty(), "{:?}", ev.warnings());
    assert_patch_only_touches_annotations(&ev);
    // nothing else of the object changed
    let mut before = request("create-example-m6g-xlarge")["object"].clone();
    let mut after = ev.object.clone();
    before["metadata"]["annotations"] = Value::Null;
    after["metadata"]["annotations"] = Value::Null;
    assert_eq!(before, after);
}

#[test]
fn whole_configmap_answer_gives_the_same_result() {
    let masked = run("create-example-m6g-xlarge", "m6g-masked", json!({}));
    let whole = run("create-example-m6g-xlarge", "m6g-whole", json!({}));
    assert_eq!(masked.object, whole.object);
    assert_eq!(masked.patch_json(), whole.patch_json());
}

#[test]
fn patch_is_deterministic() {
    let a = run("create-labels-m6g-xlarge", "m6g-masked", json!({}));
    let b = run("create-labels-m6g-xlarge", "m6g-masked", json!({}));
    assert_eq!(
        serde_json::to_string(&a.patch_json()).unwrap(),
        serde_json::to_string(&b.patch_json()).unwrap()
    );
}

#[test]
fn m5_xlarge_from_configmap() {
    let ev = run("create-m5-xlarge", "m5-masked", json!({}));
    assert_eq!(
        capacity(&ev),
        t("4", "16384", "0", "kubernetes.io/arch=amd64")
    );
    assert_patch_only_touches_annotations(&ev);
    // the MachineSet had no annotations: the patch adds the whole map
    assert_eq!(ev.patch_json()[0]["op"], "add");
}

#[test]
fn gpu_type_keeps_existing_annotations() {
    let ev = run("create-p2-16xlarge", "p2-masked", json!({}));
    assert_eq!(
        capacity(&ev),
        t("64", "749568", "16", "kubernetes.io/arch=amd64")
    );
    assert_eq!(ev.annotations()["existing"], "annotation");
    assert_eq!(ev.annotations()["annother"], "existingAnnotation");
}

#[test]
fn upstream_capacity_annotations_on_request() {
    let ev = run(
        "create-p2-16xlarge",
        "p2-masked",
        json!({"upstreamCapacityAnnotations": true}),
    );
    let a = ev.annotations();
    assert_eq!(a["capacity.cluster-autoscaler.kubernetes.io/cpu"], "64");
    assert_eq!(
        a["capacity.cluster-autoscaler.kubernetes.io/memory"],
        "749568Mi"
    );
    assert_eq!(
        a["capacity.cluster-autoscaler.kubernetes.io/gpu-count"],
        "16"
    );
    assert_eq!(
        a["capacity.cluster-autoscaler.kubernetes.io/gpu-type"],
        "nvidia.com/gpu"
    );
}

#[test]
fn already_correct_gives_no_patch() {
    let ev = run("create-m5-xlarge-already-annotated", "m5-masked", json!({}));
    assert!(ev.patch.is_none(), "unexpected patch {}", ev.patch_json());
    assert!(
        ev.response.mutated_object.is_none(),
        "no mutated object at all"
    );
    assert!(ev.warnings().is_empty());
}

#[test]
fn labels_merge_arch_first_existing_kept() {
    let ev = run("create-labels-m6g-xlarge", "m6g-masked", json!({}));
    assert_eq!(
        ev.annotations()[LABELS],
        "kubernetes.io/arch=arm64,team=ml,zone=eu-west-3a"
    );
}

#[test]
fn update_m5_to_m6g_flips_the_arch() {
    let ev = run("update-m5-to-m6g", "m6g-masked", json!({}));
    assert_eq!(
        capacity(&ev),
        t("4", "16384", "0", "kubernetes.io/arch=arm64,team=ml")
    );
    // only the label changes: vCPU and memory are equal for the two types
    let patch = ev.patch_json();
    assert_eq!(patch.as_array().unwrap().len(), 1, "{patch}");
    assert_eq!(
        patch[0]["path"],
        "/metadata/annotations/capacity.cluster-autoscaler.kubernetes.io~1labels"
    );
}

#[test]
fn update_to_unknown_type_removes_what_we_wrote_for_the_old_type() {
    let ev = run("update-m5-to-unknown", "zz9-unknown-then-m5", json!({}));
    let a = ev.annotations();
    assert_eq!(a[VCPU], "6", "a hand-written value is kept");
    assert!(a.get(MEMORY_MB).is_none() && a.get(GPU).is_none(), "{a}");
    assert_eq!(a[LABELS], "team=ml");
    assert_eq!(ev.warnings().len(), 2, "{:?}", ev.warnings());
    assert!(ev.warnings()[0].contains("unknown instance type \"zz9.huge\""));
    assert!(ev.warnings()[1].contains("previous instance type m5.xlarge"));
    assert_patch_only_touches_annotations(&ev);
}

#[test]
fn configmap_missing_falls_back_to_the_builtin_table() {
    let ev = run("create-m5-xlarge", "m5-missing", json!({}));
    assert_eq!(
        capacity(&ev),
        t("4", "16384", "0", "kubernetes.io/arch=amd64")
    );
    let w = ev.warnings();
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains("m5.xlarge annotated from the built-in table of "),
        "{}",
        w[0]
    );
    assert!(
        w[0].contains("ConfigMap openshift-machine-api/machineset-instance-types could not be read (Cannot find v1/ConfigMap"),
        "{}",
        w[0]
    );
    assert!(
        w[0].len() <= 280,
        "keep warnings short (Kubernetes may truncate long ones): {}",
        w[0].len()
    );
}

#[test]
fn configmap_missing_without_fallback_warns_and_leaves_it_unchanged() {
    let ev = run(
        "create-m5-xlarge",
        "m5-missing",
        json!({"fallback": "none"}),
    );
    assert!(ev.patch.is_none());
    assert!(
        ev.warnings()[0].contains("unknown instance type \"m5.xlarge\""),
        "{:?}",
        ev.warnings()
    );
    assert!(ev.warnings()[0].contains("fallback: none"));
}

#[test]
fn malformed_configmap_falls_back_with_a_warning() {
    let ev = run("create-m5-xlarge", "m5-malformed", json!({}));
    assert_eq!(
        capacity(&ev),
        t("4", "16384", "0", "kubernetes.io/arch=amd64")
    );
    assert!(
        ev.warnings()[0].contains("is malformed"),
        "{:?}",
        ev.warnings()
    );
}

#[test]
fn unknown_type_warns_and_admits_unchanged() {
    let ev = run("create-unknown-type", "zz9-unknown", json!({}));
    assert!(ev.patch.is_none());
    let w = ev.warnings();
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains("unknown instance type \"zz9.huge\""),
        "{}",
        w[0]
    );
    assert!(w[0].contains("does not list it yet"), "{}", w[0]);
    assert!(w[0].contains("overrides"), "{}", w[0]);
    assert!(
        w[0].len() <= 280,
        "keep warnings short (Kubernetes may truncate long ones): {}",
        w[0].len()
    );
}

#[test]
fn empty_instance_type_warns() {
    let ev = run("create-empty-type", "no-calls", json!({}));
    assert!(ev.patch.is_none());
    assert!(
        ev.warnings()[0].contains("instanceType is empty"),
        "{:?}",
        ev.warnings()
    );
}

#[test]
fn overrides_win_without_asking_the_host() {
    let settings = json!({"overrides": {"zz9.huge": {"vcpu": 12, "memoryMiB": 49152, "gpu": 0, "arch": "arm64"}}});
    let ev = run("create-unknown-type", "no-calls", settings);
    assert_eq!(
        capacity(&ev),
        t("12", "49152", "0", "kubernetes.io/arch=arm64")
    );
    assert!(ev.warnings().is_empty());
}

#[test]
fn custom_configmap_name_and_namespace() {
    let settings = json!({"configMapName": "capa-types", "configMapNamespace": "capa-system"});
    let ev = run("create-m5-xlarge", "m5-custom-configmap", settings);
    assert_eq!(capacity(&ev).0, "4");
}

#[test]
fn skipped_objects_are_admitted_unchanged_without_host_calls() {
    let gated = json!({"respectAuthoritativeAPI": true});
    for (req, settings) in [
        ("update-deleting", json!({})),
        ("create-gcp", json!({})),
        ("create-authoritative-clusterapi", gated.clone()),
        ("create-paused", gated),
    ] {
        let ev = run(req, "no-calls", settings);
        assert!(ev.patch.is_none(), "{req}: {}", ev.patch_json());
        assert!(ev.warnings().is_empty(), "{req}: {:?}", ev.warnings());
    }
}

#[test]
fn authoritative_api_is_ignored_unless_asked() {
    let ev = run("create-authoritative-clusterapi", "m5-masked", json!({}));
    assert_eq!(capacity(&ev).0, "4");
    let ev = run(
        "create-paused",
        "m5-masked",
        json!({"respectAuthoritativeAPI": false}),
    );
    assert_eq!(capacity(&ev).0, "4");
}

#[test]
fn no_cluster_at_all_uses_the_builtin_table() {
    // kwctl run without --allow-context-aware: every host call fails
    let ev = evaluate(
        policy(),
        &json!({}),
        &request("create-example-m6g-xlarge"),
        Arc::new(NoCluster),
    )
    .unwrap();
    assert_eq!(
        capacity(&ev),
        t("4", "16384", "0", "kubernetes.io/arch=arm64,team=ml")
    );
    let snapshot = builtin_snapshot();
    assert!(
        ev.warnings()[0].contains(&format!("built-in table of {}", snapshot.date)),
        "{}",
        ev.warnings()[0]
    );
}

fn builtin_snapshot() -> capa_core::builtin::Snapshot {
    let text = std::fs::read_to_string(e2e_tests::snapshot::snapshot_file()).unwrap();
    capa_core::builtin::parse(&text).unwrap()
}

/// Every line of the committed snapshot, through the compiled module with no cluster at all
/// (kwctl run without --allow-context-aware): the built-in table answers each type with exactly
/// the capacity of its line.
#[test]
fn no_cluster_every_builtin_type_is_annotated_from_its_line() {
    use capa_core::annotations::{UPSTREAM_GPU_COUNT, UPSTREAM_GPU_TYPE};
    let snapshot = builtin_snapshot();
    assert!(snapshot.entries.len() >= 1263, "{}", snapshot.entries.len());
    let settings = json!({"upstreamCapacityAnnotations": true});
    let mut req = request("create-m5-xlarge");
    for (name, cap) in &snapshot.entries {
        req["object"]["spec"]["template"]["spec"]["providerSpec"]["value"]["instanceType"] =
            json!(name);
        let ev = evaluate(policy(), &settings, &req, Arc::new(NoCluster)).unwrap();
        let a = ev.annotations();
        let arch = format!("kubernetes.io/arch={}", cap.arch);
        assert_eq!(
            capacity(&ev),
            t(
                &cap.vcpu.to_string(),
                &cap.memory_mib.to_string(),
                &cap.gpu.to_string(),
                &arch
            ),
            "{name}"
        );
        let gpu_type = cap
            .gpu_vendor
            .filter(|_| cap.gpu > 0)
            .map(|v| json!(v.resource_name()));
        assert_eq!(a.get(UPSTREAM_GPU_TYPE), gpu_type.as_ref(), "{name}");
        if cap.gpu > 0 {
            assert_eq!(a[UPSTREAM_GPU_COUNT], json!(cap.gpu.to_string()), "{name}");
        }
        assert!(ev.warnings()[0].contains("built-in table"), "{name}");
    }
}

/// `fixtures/settings-cases.tsv`, shared with kwctl: each verdict exactly (kwctl prints the same
/// message behind `Provided settings are not valid: `).
#[test]
fn settings_validation() {
    let cases = cases::settings_cases().unwrap();
    assert!(cases.len() >= 10, "{}", cases.len());
    for (settings, verdict) in cases {
        let r = validate_settings(policy(), &settings, Arc::new(NoCluster)).unwrap();
        match verdict {
            None => assert!(r.valid, "{settings}: {:?}", r.message),
            Some(message) => {
                assert!(!r.valid, "{settings} accepted");
                assert_eq!(r.message.as_deref(), Some(message.as_str()), "{settings}");
            }
        }
    }
    // not even JSON: an invalid answer, not a host error
    let raw = policy()
        .call("validate_settings", b"{oops", Arc::new(NoCluster))
        .unwrap();
    let r: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(r["valid"], false);
}

/// `fixtures/cases.tsv`, shared with kwctl (`policy.bats`): every case gives exactly
/// `fixtures/expected/<case>.json` — the same files kwctl's answers are compared with.
#[test]
fn shared_cases_give_the_expected_answers() {
    let all = cases::load().unwrap();
    assert!(all.len() >= 20, "{}", all.len());
    let mut failures = Vec::new();
    for case in &all {
        let ev = match &case.session {
            Some(session) => run(&case.request, session, case.settings.clone()),
            None => evaluate(
                policy(),
                &case.settings,
                &request(&case.request),
                Arc::new(NoCluster),
            )
            .unwrap(),
        };
        let got = cases::normalise(&ev);
        let want = case.expected().unwrap();
        if got != want {
            failures.push(format!("{}: got {got:#}\nexpected {want:#}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every request and session fixture is used by a shared case, and every expected answer belongs
/// to one: a fixture only one host runs cannot creep in.
#[test]
fn every_fixture_is_a_shared_case() {
    let all = cases::load().unwrap();
    let names_in = |dir: &str, ext: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(paths::fixture(dir))
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                if p.extension()? != ext {
                    return None;
                }
                Some(p.file_stem()?.to_string_lossy().into_owned())
            })
            .collect();
        v.sort();
        v
    };
    for request in names_in("requests", "json") {
        assert!(
            all.iter().any(|c| c.request == request),
            "requests/{request}.json is in no case of cases.tsv"
        );
    }
    for session in names_in("sessions", "yml") {
        assert!(
            all.iter()
                .any(|c| c.session.as_deref() == Some(session.as_str())),
            "sessions/{session}.yml is in no case of cases.tsv"
        );
    }
    for expected in names_in("expected", "json") {
        assert!(
            all.iter().any(|c| c.name == expected),
            "expected/{expected}.json belongs to no case"
        );
    }
    let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), all.len(), "case names must be unique");
}

#[test]
fn hostile_inputs_never_reject_or_fail() {
    let base = request("create-m5-xlarge-already-annotated");
    let mut cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"not json".to_vec(),
        b"\xff\xfe\x00".to_vec(),
        b"[]".to_vec(),
        br#"{"settings":"x","request":{}}"#.to_vec(),
        br#"{"request":{"operation":["CREATE"]}}"#.to_vec(),
        format!(
            r#"{{"request":{{"object":{}{}}}}}"#,
            "[".repeat(50_000),
            "]".repeat(50_000)
        )
        .into_bytes(),
    ];
    let mutations: Vec<(&str, Value)> = vec![
        ("/object/metadata", json!("metadata")),
        ("/object/metadata/annotations", json!(["a"])),
        (
            "/object/metadata/annotations",
            json!({VCPU: 1, LABELS: {"x": 1}}),
        ),
        (
            "/object/metadata/annotations",
            json!({LABELS: "k=v,".repeat(250_000)}),
        ),
        ("/object/spec", json!(7)),
        (
            "/object/spec/template/spec/providerSpec",
            json!({"value": "x"}),
        ),
        (
            "/object/spec/template/spec/providerSpec/value/instanceType",
            json!({"a": 1}),
        ),
        (
            "/object/spec/template/spec/providerSpec/value/instanceType",
            json!("m5.".repeat(100_000)),
        ),
        (
            "/object/spec/template/spec/providerSpec/value/instanceType",
            json!("../../etc.passwd"),
        ),
        (
            "/object/spec/template/spec/providerSpec/value/kind",
            json!(false),
        ),
        (
            "/object/status",
            json!({"conditions": "x", "authoritativeAPI": 3}),
        ),
        ("/object/apiVersion", json!(null)),
        ("/object", json!(null)),
        (
            "/oldObject",
            json!({"spec": {"template": {"spec": {"providerSpec": {"value": {"instanceType": 1}}}}}}),
        ),
        ("/operation", json!("UPDATE")),
    ];
    for (pointer, value) in mutations {
        let mut r = base.clone();
        *r.pointer_mut(pointer)
            .unwrap_or_else(|| panic!("{pointer}")) = value;
        cases.push(serde_json::to_vec(&json!({"settings": {}, "request": r})).unwrap());
    }
    for (i, payload) in cases.iter().enumerate() {
        for caps in [
            Arc::new(Garbage) as Arc<dyn HostCapabilities>,
            Arc::new(NoCluster),
        ] {
            let ev = evaluate_payload(policy(), payload, Value::Null, caps)
                .unwrap_or_else(|e| panic!("case {i}: the policy failed: {e:#}"));
            assert!(
                ev.response.accepted,
                "case {i} rejected: {:?}",
                ev.response.message
            );
        }
    }
}

/// The fixture ConfigMap is in the real table format: capa-core reads it and writes it back
/// byte for byte.
#[test]
fn fixture_configmap_is_in_the_table_format() {
    let cm: Value = serde_json::from_str(
        &std::fs::read_to_string(paths::fixture("configmaps/table.json")).unwrap(),
    )
    .unwrap();
    let data = cm["data"].as_object().unwrap();
    let (table, bad) = capa_core::table::Table::from_configmap_data(
        data.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())),
    );
    assert!(bad.is_empty());
    let written = table.to_configmap_data();
    for (k, v) in data {
        assert_eq!(written[k], v.as_str().unwrap(), "family {k}");
    }
}
