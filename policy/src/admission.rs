//! One admission decision: from the request payload to the response. Pure apart from the
//! [`ConfigMapSource`] it is given, so every path is unit-tested natively — and so the same
//! decision runs natively in the admin tool's `preview` (proven byte-identical to `policy.wasm`).
//!
//! The policy never rejects and never fails: whatever the input, the MachineSet is accepted, with
//! its capacity annotations set when we can, and with a warning naming cause and fix when we cannot.

use crate::lookup::{self, ConfigMapSource, ConfigMapState, Source};
use crate::request::ValidationRequest;
use crate::settings::Settings;
use crate::warnings;
use capa_core::annotations::{self, Correction, Edit, Options};
use capa_core::machineset::{self, Skip};
use capa_core::provider_spec::{self, ProviderSpec};
use capa_core::table::{NameError, TypeName};
use kubewarden_policy_sdk::response::ValidationResponse;
use serde_json::Value;

/// What the policy answers, and what it found on the way.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// The whole object with its annotations changed; `None` = no patch.
    pub mutated: Option<Value>,
    pub warnings: Vec<String>,
    /// What the decision was (not sent to the policy server: the preview tool reports it).
    pub report: Report,
}

/// Why the policy left an object alone without a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// `DELETE` or `CONNECT`.
    Operation(String),
    /// Not ours by its kind, deletion, pause or authoritative API.
    MachineSet(Skip),
    /// Another provider's spec (its `kind`).
    NotAws(String),
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skipped::Operation(op) => write!(f, "operation {op}"),
            Skipped::MachineSet(Skip::NotAMachineSet) => {
                write!(f, "not a {} {}", machineset::GROUP, machineset::KIND)
            }
            Skipped::MachineSet(Skip::Deleting) => f.write_str("deleting"),
            Skipped::MachineSet(Skip::Paused) => f.write_str("paused (respectAuthoritativeAPI)"),
            Skipped::MachineSet(Skip::NotAuthoritative(api)) => {
                write!(f, "authoritativeAPI is {api} (respectAuthoritativeAPI)")
            }
            Skipped::NotAws(kind) => write!(f, "not AWS ({kind})"),
        }
    }
}

/// Why the policy could not annotate (each comes with a warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    RequestUnparsable,
    SettingsInvalid,
    ProviderSpecUnreadable,
    AnnotationsUnreadable,
    InstanceTypeEmpty,
    InstanceTypeMalformed,
    UnknownInstanceType,
}

/// The decision, for reports.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub skipped: Option<Skipped>,
    pub problem: Option<Problem>,
    /// `providerSpec.value.instanceType`, once read.
    pub instance_type: Option<String>,
    /// Which table answered.
    pub source: Option<Source>,
    /// Existing capacity values that were overwritten with different ones.
    pub corrections: Vec<Correction>,
    /// The type has GPUs and the node template lacks `cluster-api/accelerator`.
    pub missing_accelerator_label: bool,
}

impl Outcome {
    fn skip(why: Skipped) -> Self {
        Outcome {
            report: Report {
                skipped: Some(why),
                ..Report::default()
            },
            ..Outcome::default()
        }
    }

    fn cannot(problem: Problem, warning: String) -> Self {
        Outcome {
            mutated: None,
            warnings: vec![warning],
            report: Report {
                problem: Some(problem),
                ..Report::default()
            },
        }
    }

    /// The JSON of Kubewarden's `ValidationResponse`.
    pub fn into_response(self) -> Vec<u8> {
        let response = ValidationResponse {
            accepted: true,
            message: None,
            code: None,
            mutated_object: self.mutated,
            audit_annotations: None,
            warnings: (!self.warnings.is_empty()).then_some(self.warnings),
        };
        // Serialising a Value tree cannot fail; if it ever did, accepting unchanged is the safe answer.
        serde_json::to_vec(&response).unwrap_or_else(|_| br#"{"accepted":true}"#.to_vec())
    }
}

/// Evaluates one `validate` payload.
pub fn admit(payload: &[u8], src: &impl ConfigMapSource) -> Outcome {
    let req = match ValidationRequest::parse(payload) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::cannot(Problem::RequestUnparsable, warnings::request_unparsable(&e));
        }
    };
    let settings = match Settings::from_value(&req.settings) {
        Ok(s) => s,
        Err(e) => return Outcome::cannot(Problem::SettingsInvalid, warnings::settings_invalid(&e)),
    };
    let operation = req.request.operation.as_str();
    if matches!(operation, "DELETE" | "CONNECT") {
        return Outcome::skip(Skipped::Operation(operation.to_string()));
    }
    annotate(req.request.object, &req.request.old_object, &settings, src)
}

fn annotate(
    mut obj: Value,
    old: &Value,
    settings: &Settings,
    src: &impl ConfigMapSource,
) -> Outcome {
    if let Some(why) = machineset::skip_reason(&obj, settings.respect_authoritative_api) {
        return Outcome::skip(Skipped::MachineSet(why));
    }
    let instance_type = match provider_spec::read(&obj) {
        Err(e) => {
            return Outcome::cannot(
                Problem::ProviderSpecUnreadable,
                warnings::provider_spec_unreadable(&e),
            );
        }
        Ok(ProviderSpec::Other { kind }) => {
            return Outcome::skip(Skipped::NotAws(kind.to_string()));
        }
        Ok(ProviderSpec::Aws(spec)) => spec.instance_type.to_string(),
    };
    let existing = match machineset::annotations(&obj) {
        Ok(a) => a.cloned().unwrap_or_default(),
        Err(e) => {
            return Outcome::cannot(
                Problem::AnnotationsUnreadable,
                warnings::annotations_unreadable(e),
            );
        }
    };
    let opts = Options {
        upstream_capacity: settings.upstream_capacity_annotations,
        ..Default::default()
    };
    let mut report = Report::default();
    let mut warnings = Vec::new();
    let resolved = match TypeName::parse(&instance_type) {
        Ok(name) => {
            let resolution = lookup::resolve(name, &instance_type, settings, src);
            let state = resolution.configmap.unwrap_or(ConfigMapState::Found);
            match resolution.capacity {
                Some((capacity, source)) => {
                    if source == Source::Builtin {
                        warnings.push(warnings::fell_back(&instance_type, settings, &state));
                    }
                    report.source = Some(source);
                    Some(capacity)
                }
                None => {
                    warnings.push(warnings::unknown(&instance_type, settings, &state));
                    report.problem = Some(Problem::UnknownInstanceType);
                    None
                }
            }
        }
        Err(NameError::Empty) => {
            warnings.push(warnings::instance_type_empty());
            report.problem = Some(Problem::InstanceTypeEmpty);
            None
        }
        Err(e) => {
            warnings.push(warnings::instance_type_malformed(&e));
            report.problem = Some(Problem::InstanceTypeMalformed);
            None
        }
    };
    let edits = match resolved {
        Some(capacity) => {
            let edits = annotations::edits_for(&existing, &capacity, opts);
            // after an instance-type change, different values are expected, not wrong
            if !type_changed(&instance_type, old) {
                report.corrections = annotations::corrections(&existing, &edits);
                if !report.corrections.is_empty() {
                    warnings.push(warnings::corrected(&report.corrections, &instance_type));
                }
            }
            if capacity.gpu > 0
                && !machineset::node_template_has_label(&obj, machineset::ACCELERATOR_LABEL)
            {
                report.missing_accelerator_label = true;
                warnings.push(warnings::accelerator_label_missing(
                    &instance_type,
                    capacity.gpu,
                ));
            }
            edits
        }
        // an UPDATE to a type we cannot resolve: what was written for the old type must go
        None => match stale_edits(&instance_type, old, &existing, settings, src, opts) {
            Some((old_type, edits)) => {
                let keys: Vec<&str> = edits.iter().map(Edit::key).collect();
                warnings.push(warnings::stale_removed(&old_type, &keys));
                edits
            }
            None => Vec::new(),
        },
    };
    report.instance_type = Some(instance_type);
    if edits.is_empty() {
        return Outcome {
            mutated: None,
            warnings,
            report,
        };
    }
    match machineset::annotations_mut(&mut obj) {
        Ok(map) => annotations::apply(map, edits),
        Err(e) => {
            return Outcome::cannot(
                Problem::AnnotationsUnreadable,
                warnings::annotations_unreadable(e),
            );
        }
    }
    Outcome {
        mutated: Some(obj),
        warnings,
        report,
    }
}

/// An UPDATE whose old object had another (AWS) instance type.
fn type_changed(new_type: &str, old: &Value) -> bool {
    matches!(provider_spec::read(old), Ok(ProviderSpec::Aws(spec)) if spec.instance_type != new_type)
}

/// After an UPDATE to an instance type nobody knows: the edits removing what was written for the
/// previous type (only values equal to that type's capacity), with the previous type's name.
fn stale_edits(
    new_type: &str,
    old: &Value,
    existing: &serde_json::Map<String, Value>,
    settings: &Settings,
    src: &impl ConfigMapSource,
    opts: Options,
) -> Option<(String, Vec<Edit>)> {
    let Ok(ProviderSpec::Aws(old_spec)) = provider_spec::read(old) else {
        return None;
    };
    if old_spec.instance_type == new_type {
        return None;
    }
    let old_name = TypeName::parse(old_spec.instance_type).ok()?;
    let (old_capacity, _) =
        lookup::resolve(old_name, old_spec.instance_type, settings, src).capacity?;
    let edits = annotations::stale_edits(existing, &old_capacity, opts);
    (!edits.is_empty()).then(|| (old_spec.instance_type.to_string(), edits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::RefCell;

    /// A host answering from a fixed ConfigMap (or an error), recording the masks asked for.
    struct FakeHost {
        answer: Result<Value, String>,
        asked: RefCell<Vec<String>>,
    }

    impl FakeHost {
        fn with(configmap: Value) -> Self {
            FakeHost {
                answer: Ok(configmap),
                asked: RefCell::new(vec![]),
            }
        }
        fn failing() -> Self {
            FakeHost {
                answer: Err("Cannot find v1/ConfigMap named 'machineset-instance-types'".into()),
                asked: RefCell::new(vec![]),
            }
        }
    }

    impl ConfigMapSource for FakeHost {
        fn get(&self, namespace: &str, name: &str, mask: &str) -> Result<Vec<u8>, String> {
            self.asked
                .borrow_mut()
                .push(format!("{namespace}/{name}:{mask}"));
            self.answer.clone().map(|v| serde_json::to_vec(&v).unwrap())
        }
    }

    fn table_cm() -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {
            "m5": r#"{"large":{"vcpu":2,"memoryMiB":8192,"gpu":0,"arch":"amd64"},"xlarge":{"vcpu":4,"memoryMiB":16384,"gpu":0,"arch":"amd64"}}"#,
            "m6g": r#"{"xlarge":{"vcpu":4,"memoryMiB":16384,"gpu":0,"arch":"arm64"}}"#,
        }})
    }

    fn machineset(instance_type: &str, annotations: Value) -> Value {
        json!({
            "apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
            "metadata": {"name": "w", "namespace": "openshift-machine-api", "annotations": annotations},
            "spec": {"template": {"spec": {"providerSpec": {"value": {
                "kind": "AWSMachineProviderConfig", "instanceType": instance_type,
                "placement": {"region": "eu-west-3"}}}}}}
        })
    }

    fn payload(settings: Value, op: &str, object: Value, old: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"settings": settings, "request": {
            "operation": op, "object": object, "oldObject": old}}))
        .unwrap()
    }

    fn create(object: Value) -> Vec<u8> {
        payload(json!({}), "CREATE", object, Value::Null)
    }

    /// Accepted unchanged, without a warning, with the reason in the report.
    fn assert_skipped(o: &Outcome) {
        assert_eq!(o.mutated, None);
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
        assert!(o.report.skipped.is_some(), "{:?}", o.report);
    }

    fn annotations_of(o: &Outcome) -> &Value {
        &o.mutated.as_ref().expect("mutated")["metadata"]["annotations"]
    }

    #[test]
    fn annotates_from_the_configmap_asking_for_one_family() {
        let host = FakeHost::with(table_cm());
        let out = admit(
            &create(machineset(
                "m6g.xlarge",
                json!({"capacity.cluster-autoscaler.kubernetes.io/labels": "team=ml"}),
            )),
            &host,
        );
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        assert_eq!(
            annotations_of(&out),
            &json!({"machine.openshift.io/vCPU": "4", "machine.openshift.io/memoryMb": "16384",
                    "machine.openshift.io/GPU": "0",
                    "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=arm64,team=ml"})
        );
        assert_eq!(
            *host.asked.borrow(),
            ["openshift-machine-api/machineset-instance-types:data.m6g"]
        );
    }

    #[test]
    fn no_patch_when_already_correct() {
        let host = FakeHost::with(table_cm());
        let first = admit(&create(machineset("m5.xlarge", Value::Null)), &host);
        let again = admit(&create(first.mutated.unwrap()), &host);
        assert_eq!((again.mutated, again.warnings), (None, vec![]));
    }

    #[test]
    fn overrides_win_and_skip_the_host() {
        let host = FakeHost::with(table_cm());
        let settings =
            json!({"overrides": {"m5.xlarge": {"vcpu": 5, "memoryMiB": 5, "arch": "arm64"}}});
        let out = admit(
            &payload(
                settings,
                "CREATE",
                machineset("m5.xlarge", json!({})),
                Value::Null,
            ),
            &host,
        );
        assert_eq!(annotations_of(&out)["machine.openshift.io/vCPU"], "5");
        assert!(host.asked.borrow().is_empty());
    }

    #[test]
    fn configmap_missing_falls_back_to_builtin_with_a_warning() {
        let out = admit(
            &create(machineset("m5.xlarge", json!({}))),
            &FakeHost::failing(),
        );
        assert_eq!(annotations_of(&out)["machine.openshift.io/vCPU"], "4");
        assert_eq!(out.warnings.len(), 1);
        assert!(
            out.warnings[0].contains("could not be read (Cannot find v1/ConfigMap"),
            "{}",
            out.warnings[0]
        );
        assert!(out.warnings[0].contains(&format!(
            "m5.xlarge annotated from the built-in table of {}",
            crate::builtin::DATE
        )));
    }

    #[test]
    fn configmap_missing_without_fallback_warns_unknown() {
        let settings = json!({"fallback": "none"});
        let out = admit(
            &payload(
                settings,
                "CREATE",
                machineset("m5.xlarge", json!({})),
                Value::Null,
            ),
            &FakeHost::failing(),
        );
        assert_eq!(out.mutated, None);
        assert!(
            out.warnings[0].contains("unknown instance type \"m5.xlarge\""),
            "{}",
            out.warnings[0]
        );
        assert!(out.warnings[0].contains("fallback: none"));
    }

    #[test]
    fn malformed_configmap_falls_back() {
        let cm = json!({"data": {"m5": "{not json"}});
        let out = admit(
            &create(machineset("m5.xlarge", json!({}))),
            &FakeHost::with(cm),
        );
        assert_eq!(
            annotations_of(&out)["machine.openshift.io/memoryMb"],
            "16384"
        );
        assert!(
            out.warnings[0].contains("is malformed"),
            "{}",
            out.warnings[0]
        );
    }

    #[test]
    fn configmap_lacking_the_type_falls_back() {
        let out = admit(
            &create(machineset("g5.xlarge", json!({}))),
            &FakeHost::with(table_cm()),
        );
        assert_eq!(annotations_of(&out)["machine.openshift.io/GPU"], "1");
        assert!(
            out.warnings[0].contains("does not list it yet"),
            "{}",
            out.warnings[0]
        );
    }

    #[test]
    fn unknown_type_warns_and_leaves_object_alone() {
        let out = admit(
            &create(machineset("zz9.huge", json!({"existing": "annotation"}))),
            &FakeHost::with(table_cm()),
        );
        assert_eq!(out.mutated, None);
        assert_eq!(out.warnings.len(), 1);
        assert!(out.warnings[0].contains("unknown instance type \"zz9.huge\""));
        assert!(out.warnings[0].contains("overrides"));
    }

    #[test]
    fn update_to_unknown_type_removes_values_of_the_old_type() {
        let host = FakeHost::with(table_cm());
        let old = admit(
            &create(machineset(
                "m5.xlarge",
                json!({"capacity.cluster-autoscaler.kubernetes.io/labels": "team=ml", "x": "y"}),
            )),
            &host,
        )
        .mutated
        .unwrap();
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["providerSpec"]["value"]["instanceType"] =
            json!("zz9.huge");
        new["metadata"]["annotations"]["machine.openshift.io/vCPU"] = json!("7"); // hand-written: kept
        let out = admit(&payload(json!({}), "UPDATE", new, old), &host);
        assert_eq!(
            annotations_of(&out),
            &json!({"capacity.cluster-autoscaler.kubernetes.io/labels": "team=ml", "x": "y", "machine.openshift.io/vCPU": "7"})
        );
        assert_eq!(out.warnings.len(), 2);
        assert!(
            out.warnings[1].contains("previous instance type m5.xlarge"),
            "{}",
            out.warnings[1]
        );
    }

    #[test]
    fn update_to_an_empty_or_malformed_type_also_removes_stale_values() {
        let host = FakeHost::with(table_cm());
        let old = admit(&create(machineset("m5.xlarge", json!({}))), &host)
            .mutated
            .unwrap();
        for bad in ["", "m5xlarge", "m5.xlarge "] {
            let mut new = old.clone();
            new["spec"]["template"]["spec"]["providerSpec"]["value"]["instanceType"] = json!(bad);
            let out = admit(&payload(json!({}), "UPDATE", new, old.clone()), &host);
            let a = annotations_of(&out);
            assert!(a.get("machine.openshift.io/vCPU").is_none(), "{bad:?}: {a}");
            assert_eq!(out.warnings.len(), 2, "{bad:?}: {:?}", out.warnings);
        }
    }

    #[test]
    fn update_to_known_type_flips_arch() {
        let host = FakeHost::with(table_cm());
        let old = admit(&create(machineset("m5.xlarge", json!({}))), &host)
            .mutated
            .unwrap();
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["providerSpec"]["value"]["instanceType"] =
            json!("m6g.xlarge");
        let out = admit(&payload(json!({}), "UPDATE", new, old), &host);
        assert_eq!(
            annotations_of(&out)["capacity.cluster-autoscaler.kubernetes.io/labels"],
            "kubernetes.io/arch=arm64"
        );
    }

    #[test]
    fn skips_without_warning() {
        let host = FakeHost::with(table_cm());
        let mut deleting = machineset("m5.xlarge", json!({}));
        deleting["metadata"]["deletionTimestamp"] = json!("2026-11-25T00:00:00Z");
        let mut gcp = machineset("m5.xlarge", json!({}));
        gcp["spec"]["template"]["spec"]["providerSpec"]["value"]["kind"] =
            json!("GCPMachineProviderSpec");
        let pod = json!({"apiVersion": "v1", "kind": "Pod"});
        for obj in [deleting, gcp, pod] {
            assert_skipped(&admit(&create(obj), &host));
        }
        let mut capi = machineset("m5.xlarge", json!({}));
        capi["status"] = json!({"authoritativeAPI": "ClusterAPI"});
        let gated = payload(
            json!({"respectAuthoritativeAPI": true}),
            "CREATE",
            capi.clone(),
            Value::Null,
        );
        assert_skipped(&admit(&gated, &host));
        assert!(
            admit(&create(capi), &host).mutated.is_some(),
            "gate off by default"
        );
        let delete = payload(
            json!({}),
            "DELETE",
            machineset("m5.xlarge", json!({})),
            Value::Null,
        );
        assert_skipped(&admit(&delete, &host));
    }

    #[test]
    fn upstream_keys_on_request() {
        let settings = json!({"upstreamCapacityAnnotations": true});
        let out = admit(
            &payload(
                settings,
                "CREATE",
                machineset("m5.xlarge", json!({})),
                Value::Null,
            ),
            &FakeHost::with(table_cm()),
        );
        let a = annotations_of(&out);
        assert_eq!(a["capacity.cluster-autoscaler.kubernetes.io/cpu"], "4");
        assert_eq!(
            a["capacity.cluster-autoscaler.kubernetes.io/memory"],
            "16384Mi"
        );
        assert!(
            a.get("capacity.cluster-autoscaler.kubernetes.io/gpu-count")
                .is_none()
        );
    }

    #[test]
    fn cannot_annotate_cases_warn() {
        let host = FakeHost::with(table_cm());
        let cases = [
            (machineset("", json!({})), "instanceType is empty"),
            (machineset("m5", json!({})), "not of the form"),
            (
                machineset("m5.xlarge", json!("oops")),
                "metadata.annotations is not an object",
            ),
            (
                json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet"}),
                "providerSpec.value is missing",
            ),
        ];
        for (obj, needle) in cases {
            let out = admit(&create(obj), &host);
            assert_eq!(out.mutated, None);
            assert!(
                out.warnings.len() == 1 && out.warnings[0].contains(needle),
                "{needle}: {:?}",
                out.warnings
            );
        }
        let mut bad_type = machineset("m5.xlarge", json!({}));
        bad_type["spec"]["template"]["spec"]["providerSpec"]["value"]["instanceType"] =
            json!(["m5.xlarge"]);
        assert!(
            admit(&create(bad_type), &host).warnings[0].contains("instanceType must be a string")
        );
    }

    #[test]
    fn wrong_existing_values_are_corrected_with_one_warning() {
        let host = FakeHost::with(table_cm());
        // a real pattern: half the memory of the type written by hand
        let ms = machineset(
            "m6g.xlarge",
            json!({"machine.openshift.io/vCPU": "4", "machine.openshift.io/memoryMb": "8192"}),
        );
        let out = admit(&create(ms), &host);
        assert_eq!(
            annotations_of(&out)["machine.openshift.io/memoryMb"],
            "16384"
        );
        assert_eq!(
            out.warnings,
            ["capa-annotator: corrected machine.openshift.io/memoryMb 8192 → 16384 (m6g.xlarge)"]
        );
        assert_eq!(out.report.corrections.len(), 1);
        assert_eq!(out.report.source, Some(Source::ConfigMap));
        // nothing there before, or already right: no correction warning
        let fresh = admit(&create(machineset("m6g.xlarge", json!({}))), &host);
        assert!(fresh.warnings.is_empty(), "{:?}", fresh.warnings);
        let again = admit(&create(out.mutated.unwrap()), &host);
        assert!(again.warnings.is_empty() && again.mutated.is_none());
    }

    #[test]
    fn an_instance_type_change_is_not_a_correction() {
        let host = FakeHost::with(table_cm());
        let old = admit(&create(machineset("m5.large", json!({}))), &host)
            .mutated
            .unwrap();
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["providerSpec"]["value"]["instanceType"] =
            json!("m5.xlarge");
        let out = admit(&payload(json!({}), "UPDATE", new, old), &host);
        assert_eq!(annotations_of(&out)["machine.openshift.io/vCPU"], "4");
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        // the same type on both sides: a wrong value is a correction
        let mut new = out.mutated.unwrap();
        new["metadata"]["annotations"]["machine.openshift.io/vCPU"] = json!("2");
        let out = admit(&payload(json!({}), "UPDATE", new.clone(), new), &host);
        assert_eq!(
            out.warnings,
            ["capa-annotator: corrected machine.openshift.io/vCPU 2 → 4 (m5.xlarge)"]
        );
    }

    #[test]
    fn gpu_types_without_the_accelerator_label_warn() {
        let host = FakeHost::failing(); // built-in table: g5.xlarge has 1 NVIDIA GPU
        let out = admit(&create(machineset("g5.xlarge", json!({}))), &host);
        assert!(out.report.missing_accelerator_label);
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        assert!(
            out.warnings[1].contains("lacks cluster-api/accelerator"),
            "{}",
            out.warnings[1]
        );
        // warned also when nothing else changes
        let again = admit(&create(out.mutated.unwrap()), &host);
        assert!(again.mutated.is_none());
        assert!(
            again
                .warnings
                .iter()
                .any(|w| w.contains("cluster-api/accelerator"))
        );
        // labelled: no warning; no GPUs: no warning
        let mut labelled = machineset("g5.xlarge", json!({}));
        labelled["spec"]["template"]["spec"]["metadata"] =
            json!({"labels": {"cluster-api/accelerator": "nvidia-a10g"}});
        let out = admit(&create(labelled), &host);
        assert!(!out.report.missing_accelerator_label);
        assert!(
            !out.warnings.iter().any(|w| w.contains("accelerator")),
            "{:?}",
            out.warnings
        );
        let out = admit(&create(machineset("m5.xlarge", json!({}))), &host);
        assert!(!out.warnings.iter().any(|w| w.contains("accelerator")));
    }

    #[test]
    fn hostile_payloads_never_fail() {
        let host = FakeHost::with(table_cm());
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let huge_labels = "k=v,".repeat(300_000);
        let payloads: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"garbage".to_vec(),
            b"\xff\xfe".to_vec(),
            b"null".to_vec(),
            br#"{"request":[]}"#.to_vec(),
            br#"{"settings":{"fallback":7},"request":{}}"#.to_vec(),
            format!(r#"{{"request":{{"object":{deep}}}}}"#).into_bytes(),
            create(json!({"apiVersion": 1, "kind": {}, "metadata": 3})),
            create(
                json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet", "metadata": [], "spec": "x"}),
            ),
            create(machineset(
                "m5.xlarge",
                json!({"capacity.cluster-autoscaler.kubernetes.io/labels": huge_labels}),
            )),
            create(machineset(
                "m5.xlarge",
                json!({"machine.openshift.io/vCPU": {"a": [1]}}),
            )),
            create(machineset(&"x".repeat(1 << 20), json!({}))),
            payload(
                json!({}),
                "UPDATE",
                machineset("zz.zz", json!({})),
                json!("old"),
            ),
        ];
        for p in payloads {
            let out = admit(&p, &host);
            let resp: Value = serde_json::from_slice(&out.into_response()).unwrap();
            assert_eq!(resp["accepted"], true);
        }
    }
}
