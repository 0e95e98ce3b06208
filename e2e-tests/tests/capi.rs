//! Cluster API objects of real shapes (`fixtures/capi-sources/`, copied from public repositories,
//! sources in their headers and INDEX.md): capa-core reads their template references and the
//! AWSMachineTemplates' instance types.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use capa_core::capi;
use e2e_tests::paths;
use serde_json::Value;

fn documents() -> Vec<(String, Value)> {
    let dir = paths::fixture("capi-sources");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            if !v.is_null() {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                out.push((name, v));
            }
        }
    }
    out
}

#[test]
fn real_machinesets_and_machinedeployments_name_their_aws_machine_template() {
    let mut seen = Vec::new();
    for (file, obj) in documents() {
        if !capi::is_scalable_resource(&obj) {
            continue;
        }
        let r = capi::infrastructure_ref(&obj).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(r.is_aws_machine_template(), "{file}: {r:?}");
        let v1beta2 = obj["apiVersion"] == "cluster.x-k8s.io/v1beta2";
        seen.push((
            file,
            obj["kind"].as_str().unwrap().to_string(),
            v1beta2,
            r.version.is_none(),
        ));
    }
    // v1beta1 MachineDeployment (CAPA's template), v1beta1 MachineSet (OpenShift's docs), v1beta2
    // MachineDeployments with apiGroup refs
    assert!(
        seen.iter()
            .any(|s| s.1 == "MachineDeployment" && !s.2 && !s.3),
        "{seen:?}"
    );
    assert!(seen.iter().any(|s| s.1 == "MachineSet"), "{seen:?}");
    assert!(seen.iter().any(|s| s.2 && s.3), "{seen:?}");
}

#[test]
fn real_aws_machine_templates_give_their_instance_type() {
    let types: Vec<(String, String)> = documents()
        .into_iter()
        .filter(|(_, o)| o["kind"] == capi::AWS_MACHINE_TEMPLATE)
        .map(|(f, o)| {
            let t = capi::template_instance_type(&o).unwrap_or_else(|| panic!("{f}: no type"));
            (f, t.to_string())
        })
        .collect();
    assert!(
        types.iter().any(|(_, t)| t == "g4dn.xlarge"),
        "CAPA's GPU flavour: {types:?}"
    );
    assert!(types.len() >= 3, "{types:?}");
}

/// What the cluster-autoscaler's clusterapi provider makes of the policy's answer on every Cluster
/// API case of `cases.tsv`: it can scale from zero, with the template's instance type's cpu,
/// memory (bytes), GPUs under the vendor's resource name (only with GPUs) and arch label.
#[test]
fn the_autoscaler_reads_what_the_policy_writes_on_every_cluster_api_case() {
    use capa_annotator_policy::builtin;
    use e2e_tests::{autoscaler, cases};
    let mut checked = 0;
    for case in cases::load().unwrap() {
        let request: Value = serde_json::from_str(
            &std::fs::read_to_string(paths::fixture(&format!("requests/{}.json", case.request)))
                .unwrap(),
        )
        .unwrap();
        if !capi::is_scalable_resource(&request["object"]) {
            continue;
        }
        let expected = case.expected().unwrap();
        let mut object = request["object"].clone();
        let patch: json_patch::Patch = serde_json::from_value(expected["patch"].clone()).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
        let annotations = object["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        // the template the policy was answered with: the session's first AWSMachineTemplate
        let Some(session) = &case.session else {
            continue;
        };
        let exchanges: Vec<Value> = serde_yaml::from_str(
            &std::fs::read_to_string(paths::fixture(&format!("sessions/{session}.yml"))).unwrap(),
        )
        .unwrap();
        let template = exchanges.iter().find_map(|e| {
            let payload = e["response"]["payload"].as_str()?;
            let v: Value = serde_json::from_str(payload).ok()?;
            (v["kind"] == capi::AWS_MACHINE_TEMPLATE).then_some(v)
        });
        let Some(instance_type) = template
            .as_ref()
            .and_then(capi::template_instance_type)
            .map(str::to_string)
        else {
            // no template to read: the policy must have left the object alone
            assert!(
                !autoscaler::can_scale_from_zero(&annotations),
                "{}",
                case.name
            );
            continue;
        };
        let cap = builtin::lookup(&instance_type).unwrap();
        let got = autoscaler::instance_capacity(&annotations).unwrap_or_else(|e| {
            panic!("{}: the autoscaler rejects {annotations:?}: {e}", case.name)
        });
        assert!(
            autoscaler::can_scale_from_zero(&annotations),
            "{}",
            case.name
        );
        let mut want = std::collections::BTreeMap::from([
            ("cpu".to_string(), i128::from(cap.vcpu) * 1000),
            (
                "memory".to_string(),
                i128::from(cap.memory_mib) * (1 << 20) * 1000,
            ),
            ("pods".to_string(), 110_000),
        ]);
        if cap.gpu > 0 {
            let vendor = cap.gpu_vendor.unwrap();
            want.insert(
                vendor.resource_name().to_string(),
                i128::from(cap.gpu) * 1000,
            );
        }
        assert_eq!(got, want, "{} ({instance_type})", case.name);
        assert_eq!(
            autoscaler::labels(&annotations).get("kubernetes.io/arch"),
            Some(&cap.arch.to_string()),
            "{}",
            case.name
        );
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} Cluster API cases checked");
}
