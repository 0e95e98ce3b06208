//! `capa-admin preview` gives the policy's answers: the native decision (the code `policy.wasm` is
//! built from, run by capa-admin) and the compiled `policy.wasm` under the waPC host return
//! byte-identical `ValidationResponse`s — on every shared case of `fixtures/cases.tsv` (the
//! kwctl/harness suite), on hostile payloads, and on preview's own requests for the examples
//! with and without a table ConfigMap.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use capa_admin::input;
use capa_admin::preview::request_payload;
use capa_admin::source::{InputSource, TableSource};
use capa_annotator_policy::admission;
use capa_annotator_policy::host;
use capa_annotator_policy::source::{Resource, ResourceSource};
use e2e_tests::capabilities::{CallbackRequest, Garbage, HostCapabilities};
use e2e_tests::{NoCluster, Policy, ReplaySession, cases, paths};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| Policy::load(&paths::policy_wasm()).unwrap_or_else(|e| panic!("{e:#}")))
}

/// The native side of a host: the policy's own `get_resource` exchange over `caps`, with the
/// error as wapc-guest hands it to the policy (`Host error: …`).
struct Native(Arc<dyn HostCapabilities>);

impl ResourceSource for Native {
    fn get(&self, resource: &Resource<'_>) -> Result<Vec<u8>, String> {
        host::get_resource(resource, |msg| {
            self.0
                .host_call("kubewarden", "kubernetes", "get_resource", msg)
                .map_err(|e| format!("Host error: {e}"))
        })
    }
}

/// preview's table source as the waPC host of `policy.wasm`.
struct TableHost(TableSource);

impl HostCapabilities for TableHost {
    fn host_call(&self, b: &str, ns: &str, op: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
        TableHost::answer(&self.0, b, ns, op, payload)
    }
}

impl TableHost {
    /// A `get_resource` host call answered by `src`.
    fn answer(
        src: &dyn ResourceSource,
        b: &str,
        ns: &str,
        op: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let CallbackRequest::KubernetesGetResource {
            api_version,
            kind,
            name,
            namespace,
            field_masks,
            ..
        } = CallbackRequest::from_host_call(b, ns, op, payload)?;
        let mask = field_masks
            .and_then(|m| m.into_iter().next())
            .unwrap_or_default();
        src.get(&Resource {
            api_version: &api_version,
            kind: &kind,
            namespace: &namespace.unwrap_or_default(),
            name: &name,
            field_mask: &mask,
        })
    }
}

fn assert_same(what: &str, wasm: &[u8], native: &[u8]) {
    assert!(
        wasm == native,
        "{what}: policy.wasm and the native decision differ\n wasm:   {}\n native: {}",
        String::from_utf8_lossy(wasm),
        String::from_utf8_lossy(native)
    );
}

fn session(case: &cases::Case) -> Arc<dyn HostCapabilities> {
    match &case.session {
        Some(s) => Arc::new(
            ReplaySession::from_file(&paths::fixture(&format!("sessions/{s}.yml"))).unwrap(),
        ),
        None => Arc::new(NoCluster),
    }
}

#[test]
fn every_shared_case_byte_for_byte() {
    let all = cases::load().unwrap();
    assert!(all.len() >= 20);
    for case in &all {
        let request: Value = serde_json::from_str(
            &std::fs::read_to_string(paths::fixture(&format!("requests/{}.json", case.request)))
                .unwrap(),
        )
        .unwrap();
        let payload =
            serde_json::to_vec(&json!({"settings": case.settings, "request": request})).unwrap();
        let wasm = policy().call("validate", &payload, session(case)).unwrap();
        let native = admission::admit(&payload, &Native(session(case))).into_response();
        assert_same(&case.name, &wasm, &native);
    }
}

#[test]
fn hostile_payloads_byte_for_byte() {
    let base: Value = serde_json::from_str(
        &std::fs::read_to_string(paths::fixture(
            "requests/create-m5-xlarge-already-annotated.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let mut payloads: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"not json".to_vec(),
        br#"{"settings":{"fallback":"x"},"request":{}}"#.to_vec(),
        br#"{"request":{"operation":"DELETE"}}"#.to_vec(),
    ];
    for (pointer, value) in [
        ("/object/metadata/annotations", json!(["a"])),
        (
            "/object/metadata/annotations",
            json!({"machine.openshift.io/vCPU": 7, "machine.openshift.io/memoryMb": "1"}),
        ),
        (
            "/object/spec/template/spec/providerSpec/value/instanceType",
            json!("p4d.24xlarge"),
        ),
        (
            "/object/spec/template/spec/providerSpec/value/instanceType",
            json!("zz.top"),
        ),
        ("/object/spec", json!(7)),
    ] {
        let mut r = base.clone();
        *r.pointer_mut(pointer).unwrap() = value;
        payloads.push(serde_json::to_vec(&json!({"settings": {}, "request": r})).unwrap());
    }
    for (i, p) in payloads.iter().enumerate() {
        for caps in [
            Arc::new(Garbage) as Arc<dyn HostCapabilities>,
            Arc::new(NoCluster),
        ] {
            let wasm = policy().call("validate", p, caps.clone()).unwrap();
            let native = admission::admit(p, &Native(caps)).into_response();
            assert_same(&format!("payload {i}"), &wasm, &native);
        }
    }
}

/// preview's sources (a table and the AWSMachineTemplates among the inputs) as the waPC host.
struct InputsHost {
    table: TableSource,
    templates: Vec<Value>,
}

impl InputsHost {
    fn source(&self) -> InputSource<'_> {
        InputSource {
            table: &self.table,
            templates: &self.templates,
        }
    }
}

impl HostCapabilities for InputsHost {
    fn host_call(&self, b: &str, ns: &str, op: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
        TableHost::answer(&self.source(), b, ns, op, payload)
    }
}

/// preview's own requests for the Cluster API example and every real Cluster API object of
/// `fixtures/capi-sources/` (templates found among the same inputs, or not), with the built-in
/// table and the fixture ConfigMap, with default and upstream-key settings.
#[test]
fn preview_requests_of_cluster_api_objects_byte_for_byte() {
    let cm: Value = serde_json::from_str(
        &std::fs::read_to_string(paths::fixture("configmaps/table.json")).unwrap(),
    )
    .unwrap();
    let mut inputs = input::Inputs::default();
    let mut files = vec![paths::workspace().join("examples/cluster-api.yaml")];
    let mut sources: Vec<_> = std::fs::read_dir(paths::fixture("capi-sources"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    sources.sort();
    files.extend(sources);
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        input::read_into(&path.display().to_string(), &text, true, &mut inputs).unwrap();
    }
    assert!(inputs.objects.len() >= 10, "{}", inputs.objects.len());
    assert!(inputs.templates.len() >= 8, "{}", inputs.templates.len());
    let mut n = 0;
    let mut annotated = 0;
    for table in [
        TableSource::None,
        TableSource::from_configmap("table.json", &cm).unwrap(),
    ] {
        let host = Arc::new(InputsHost {
            table,
            templates: inputs.templates.clone(),
        });
        for doc in &inputs.objects {
            for settings in [json!({}), json!({"upstreamCapacityAnnotations": true})] {
                let payload = request_payload(&doc.object, &settings);
                let wasm = policy().call("validate", &payload, host.clone()).unwrap();
                let outcome = admission::admit(&payload, &host.source());
                annotated += usize::from(outcome.mutated.is_some());
                assert_same(&doc.origin.to_string(), &wasm, &outcome.into_response());
                n += 1;
            }
        }
    }
    assert!(n >= 40, "only {n} previews compared");
    assert!(annotated >= 20, "only {annotated} of {n} annotated");
}

/// preview's own requests for the examples, with the built-in table only and with the fixture
/// ConfigMap, with default and upstream-key settings.
#[test]
fn preview_requests_of_the_examples_byte_for_byte() {
    let cm: Value = serde_json::from_str(
        &std::fs::read_to_string(paths::fixture("configmaps/table.json")).unwrap(),
    )
    .unwrap();
    let sources = [
        TableSource::None,
        TableSource::from_configmap("table.json", &cm).unwrap(),
    ];
    let dir = paths::workspace().join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in input::objects(&path.display().to_string(), &text).unwrap() {
            for settings in [json!({}), json!({"upstreamCapacityAnnotations": true})] {
                let payload = request_payload(&doc.object, &settings);
                for src in &sources {
                    let wasm = policy()
                        .call("validate", &payload, Arc::new(TableHost(src.clone())))
                        .unwrap();
                    let native = admission::admit(&payload, src).into_response();
                    assert_same(&doc.origin.to_string(), &wasm, &native);
                    n += 1;
                }
            }
        }
    }
    assert!(n >= 20, "only {n} previews compared");
}
