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
