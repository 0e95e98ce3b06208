//! One admission decision: from the request payload to the response. Pure apart from the
//! [`ResourceSource`] it is given, so every path is unit-tested natively — and so the same
//! decision runs natively in the admin tool's `preview` (proven byte-identical to `policy.wasm`).
//!
//! The policy never rejects and never fails: whatever the input, the MachineSet is accepted, with
//! its capacity annotations set when we can, and with a warning naming cause and fix when we cannot.

use crate::lookup::{self, ConfigMapState, Source};
use crate::request::ValidationRequest;
use crate::settings::Settings;
use crate::source::ResourceSource;
use crate::template;
use crate::warnings;
use capa_core::annotations::{self, Correction, Edit, Options};
use capa_core::capi;
use capa_core::machineset::{self, Skip};
use capa_core::provider_spec::{self, ProviderSpec};
use capa_core::table::{NameError, TypeName};
#[cfg(feature = "wapc")]
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
    /// A Cluster API object's `spec.template.spec.infrastructureRef` cannot be used.
    InfrastructureRefUnreadable,
    /// Its AWSMachineTemplate could not be read or names no instance type.
    TemplateUnreadable,
}

/// The decision, for reports.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub skipped: Option<Skipped>,
    pub problem: Option<Problem>,
    /// `providerSpec.value.instanceType` (or the Cluster API template's), once read.
    pub instance_type: Option<String>,
    /// A Cluster API object's AWSMachineTemplate (`kind namespace/name`), when it could not be used.
    pub template: Option<String>,
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
    #[cfg(feature = "wapc")]
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
pub fn admit(payload: &[u8], src: &impl ResourceSource) -> Outcome {
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

fn annotate(obj: Value, old: &Value, settings: &Settings, src: &impl ResourceSource) -> Outcome {
    let subject = if capi::is_scalable_resource(&obj) {
        cluster_api_subject(&obj, old, src)
    } else {
        machine_api_subject(&obj, old, settings)
    };
    match subject {
        Ok(subject) => annotate_subject(obj, subject, settings, src),
        Err(outcome) => *outcome,
    }
}

/// What the kind-specific part found: the instance type and how to annotate.
struct Subject {
    instance_type: String,
    /// Where the type was read, for warnings (`providerSpec.value.instanceType`, or the template).
    type_field: String,
    /// An UPDATE's old instance type, when it could be read.
    previous_type: Option<String>,
    /// Cluster API objects get the clusterapi provider's keys only.
    cluster_api: bool,
}

/// A `machine.openshift.io` MachineSet: the type is in its AWS provider spec.
fn machine_api_subject(
    obj: &Value,
    old: &Value,
    settings: &Settings,
) -> Result<Subject, Box<Outcome>> {
    if let Some(why) = machineset::skip_reason(obj, settings.respect_authoritative_api) {
        return Err(Box::new(Outcome::skip(Skipped::MachineSet(why))));
    }
    let instance_type = match provider_spec::read(obj) {
        Err(e) => {
            return Err(Box::new(Outcome::cannot(
                Problem::ProviderSpecUnreadable,
                warnings::provider_spec_unreadable(&e),
            )));
        }
        Ok(ProviderSpec::Other { kind }) => {
            return Err(Box::new(Outcome::skip(Skipped::NotAws(kind.to_string()))));
        }
        Ok(ProviderSpec::Aws(spec)) => spec.instance_type.to_string(),
    };
    let previous_type = match provider_spec::read(old) {
        Ok(ProviderSpec::Aws(spec)) => Some(spec.instance_type.to_string()),
        _ => None,
    };
    Ok(Subject {
        instance_type,
        type_field: "providerSpec.value.instanceType".to_string(),
        previous_type,
        cluster_api: false,
    })
}

/// A `cluster.x-k8s.io` MachineSet or MachineDeployment: the type is in the AWSMachineTemplate its
/// infrastructure ref names, read through the host.
fn cluster_api_subject(
    obj: &Value,
    old: &Value,
    src: &impl ResourceSource,
) -> Result<Subject, Box<Outcome>> {
    if machineset::is_deleting(obj) {
        return Err(Box::new(Outcome::skip(Skipped::MachineSet(Skip::Deleting))));
    }
    let tref = match capi::infrastructure_ref(obj) {
        Ok(r) => r,
        Err(e) => {
            return Err(Box::new(Outcome::cannot(
                Problem::InfrastructureRefUnreadable,
                warnings::infrastructure_ref_unreadable(&e),
            )));
        }
    };
    if !tref.is_aws_machine_template() {
        return Err(Box::new(Outcome::skip(Skipped::NotAws(
            tref.kind.to_string(),
        ))));
    }
    let instance_type = match template::instance_type(&tref, src) {
        Ok(t) => t,
        Err(e) => {
            let mut outcome = Outcome::cannot(
                Problem::TemplateUnreadable,
                warnings::template_unusable(&template::display(&tref), &e),
            );
            outcome.report.template = Some(template::display(&tref));
            return Err(Box::new(outcome));
        }
    };
    // a rollout points the ref at a new template; an unchanged ref keeps its type (CAPA's
    // webhook makes an AWSMachineTemplate's spec immutable)
    let previous_type = match capi::infrastructure_ref(old) {
        Ok(old_ref) if old_ref == tref => Some(instance_type.clone()),
        Ok(old_ref) if old_ref.is_aws_machine_template() => {
            template::instance_type(&old_ref, src).ok()
        }
        _ => None,
    };
    Ok(Subject {
        type_field: format!(
            "spec.template.spec.instanceType of {}",
            template::display(&tref)
        ),
        instance_type,
        previous_type,
        cluster_api: true,
    })
}

/// The kind-independent part: table lookup, edits, warnings.
fn annotate_subject(
    mut obj: Value,
    subject: Subject,
    settings: &Settings,
    src: &impl ResourceSource,
) -> Outcome {
    let Subject {
        instance_type,
        type_field,
        previous_type,
        cluster_api,
    } = subject;
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
        cluster_api,
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
            warnings.push(warnings::instance_type_empty(&type_field));
            report.problem = Some(Problem::InstanceTypeEmpty);
            None
        }
        Err(e) => {
            warnings.push(warnings::instance_type_malformed(&e, &type_field));
            report.problem = Some(Problem::InstanceTypeMalformed);
            None
        }
    };
    let type_changed = previous_type
        .as_deref()
        .is_some_and(|previous| previous != instance_type);
    let edits = match resolved {
        Some(capacity) => {
            let edits = annotations::edits_for(&existing, &capacity, opts);
            // after an instance-type change, different values are expected, not wrong
            if !type_changed {
                report.corrections = annotations::corrections(&existing, &edits);
                if !report.corrections.is_empty() {
                    warnings.push(warnings::corrected(&report.corrections, &instance_type));
                }
            }
            // the label is the OpenShift autoscaler's; Cluster API does not propagate it to nodes
            if capacity.gpu > 0
                && !cluster_api
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
        None => match previous_type
            .filter(|_| type_changed)
            .and_then(|previous| stale_edits(previous, &existing, settings, src, opts))
        {
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

/// After an UPDATE to an instance type nobody knows: the edits removing what was written for the
/// previous type (only values equal to that type's capacity), with the previous type's name.
fn stale_edits(
    old_type: String,
    existing: &serde_json::Map<String, Value>,
    settings: &Settings,
    src: &impl ResourceSource,
    opts: Options,
) -> Option<(String, Vec<Edit>)> {
    let old_name = TypeName::parse(&old_type).ok()?;
    let (old_capacity, _) = lookup::resolve(old_name, &old_type, settings, src).capacity?;
    let edits = annotations::stale_edits(existing, &old_capacity, opts);
    (!edits.is_empty()).then_some((old_type, edits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Resource;
    use serde_json::json;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// A host answering from a fixed ConfigMap (or an error), recording the masks asked for.
    struct FakeHost {
        answer: Result<Value, String>,
        asked: RefCell<Vec<String>>,
        /// AWSMachineTemplates by `apiVersion namespace/name`.
        templates: BTreeMap<String, Value>,
    }

    impl FakeHost {
        fn with(configmap: Value) -> Self {
            FakeHost {
                answer: Ok(configmap),
                asked: RefCell::new(vec![]),
                templates: BTreeMap::new(),
            }
        }
        fn failing() -> Self {
            FakeHost {
                answer: Err("Cannot find v1/ConfigMap named 'machineset-instance-types'".into()),
                asked: RefCell::new(vec![]),
                templates: BTreeMap::new(),
            }
        }
    }

    impl ResourceSource for FakeHost {
        fn get(&self, r: &Resource<'_>) -> Result<Vec<u8>, String> {
            let (namespace, name, mask) = (r.namespace, r.name, r.field_mask);
            if r.kind != "ConfigMap" {
                self.asked.borrow_mut().push(format!(
                    "{} {} {namespace}/{name}:{mask}",
                    r.kind, r.api_version
                ));
                return self
                    .templates
                    .get(&format!("{} {namespace}/{name}", r.api_version))
                    .map(|v| serde_json::to_vec(v).unwrap())
                    .ok_or_else(|| {
                        format!(
                            "Cannot find {}/{} named '{name}' in namespace '{namespace}'",
                            r.api_version, r.kind
                        )
                    });
            }
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

    // Cluster API: the instance type is in the AWSMachineTemplate the infrastructureRef names

    const CAPI_CPU: &str = "capacity.cluster-autoscaler.kubernetes.io/cpu";
    const CAPI_MEMORY: &str = "capacity.cluster-autoscaler.kubernetes.io/memory";
    const CAPI_GPU_COUNT: &str = "capacity.cluster-autoscaler.kubernetes.io/gpu-count";
    const CAPI_GPU_TYPE: &str = "capacity.cluster-autoscaler.kubernetes.io/gpu-type";
    const V1BETA2: &str = "infrastructure.cluster.x-k8s.io/v1beta2";

    fn capi_host(templates: &[(&str, &str, &str)]) -> FakeHost {
        let mut cm = table_cm();
        cm["data"]["g4dn"] = json!(
            r#"{"xlarge":{"vcpu":4,"memoryMiB":16384,"gpu":1,"gpuVendor":"nvidia","arch":"amd64"}}"#
        );
        let mut host = FakeHost::with(cm);
        for (api_version, name, instance_type) in templates {
            host.templates.insert(
                format!("{api_version} team-a/{name}"),
                json!({"spec": {"template": {"spec": {"instanceType": instance_type}}}}),
            );
        }
        host
    }

    /// A v1beta1 MachineDeployment whose ref names `template` by apiVersion.
    fn machine_deployment(template: &str, annotations: Value) -> Value {
        json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineDeployment",
            "metadata": {"name": "md-0", "namespace": "team-a", "annotations": annotations},
            "spec": {"template": {"spec": {"infrastructureRef": {
                "apiVersion": V1BETA2, "kind": "AWSMachineTemplate", "name": template}}}}
        })
    }

    #[test]
    fn a_cluster_api_gpu_machine_deployment_gets_the_clusterapi_keys_only() {
        let host = capi_host(&[(V1BETA2, "gpu", "g4dn.xlarge")]);
        let out = admit(&create(machine_deployment("gpu", Value::Null)), &host);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        assert_eq!(
            annotations_of(&out),
            &json!({CAPI_CPU: "4", CAPI_MEMORY: "16384Mi", CAPI_GPU_COUNT: "1",
                    CAPI_GPU_TYPE: "nvidia.com/gpu",
                    "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=amd64"})
        );
        assert_eq!(
            *host.asked.borrow(),
            [
                "AWSMachineTemplate infrastructure.cluster.x-k8s.io/v1beta2 team-a/gpu:spec.template.spec.instanceType",
                "openshift-machine-api/machineset-instance-types:data.g4dn"
            ]
        );
        // annotated once: the same object again is left alone
        let again = admit(&create(out.mutated.unwrap()), &host);
        assert_eq!((again.mutated, again.warnings), (None, vec![]));
    }

    #[test]
    fn a_v1beta2_apigroup_ref_finds_a_template_served_as_v1beta1() {
        let host = capi_host(&[(
            "infrastructure.cluster.x-k8s.io/v1beta1",
            "arm",
            "m6g.xlarge",
        )]);
        let ms = json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineSet",
            "metadata": {"name": "ms", "namespace": "team-a"},
            "spec": {"template": {"spec": {"infrastructureRef": {
                "apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "AWSMachineTemplate",
                "name": "arm"}}}}
        });
        let out = admit(&create(ms), &host);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let a = annotations_of(&out);
        assert_eq!(a[CAPI_MEMORY], "16384Mi");
        assert_eq!(
            a["capacity.cluster-autoscaler.kubernetes.io/labels"],
            "kubernetes.io/arch=arm64"
        );
        assert!(
            a.get(CAPI_GPU_COUNT).is_none() && a.get(VCPU_KEY).is_none(),
            "{a}"
        );
    }

    const VCPU_KEY: &str = "machine.openshift.io/vCPU";

    #[test]
    fn a_rollout_to_a_template_without_gpus_removes_the_gpu_keys() {
        let host = capi_host(&[
            (V1BETA2, "gpu", "g4dn.xlarge"),
            (V1BETA2, "arm", "m6g.xlarge"),
        ]);
        let old = admit(
            &create(machine_deployment("gpu", json!({"team": "ml"}))),
            &host,
        )
        .mutated
        .unwrap();
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["infrastructureRef"]["name"] = json!("arm");
        let out = admit(&payload(json!({}), "UPDATE", new, old), &host);
        assert!(
            out.warnings.is_empty(),
            "a type change is not a correction: {:?}",
            out.warnings
        );
        assert_eq!(
            annotations_of(&out),
            &json!({"team": "ml", CAPI_CPU: "4", CAPI_MEMORY: "16384Mi",
                    "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=arm64"})
        );
    }

    #[test]
    fn a_rollout_to_an_unknown_type_removes_what_the_old_template_gave() {
        let host = capi_host(&[
            (V1BETA2, "gpu", "g4dn.xlarge"),
            (V1BETA2, "new", "zz9.huge"),
        ]);
        let old = admit(&create(machine_deployment("gpu", Value::Null)), &host)
            .mutated
            .unwrap();
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["infrastructureRef"]["name"] = json!("new");
        let out = admit(&payload(json!({}), "UPDATE", new, old), &host);
        // the labels held only the arch pair: removed with it
        assert_eq!(annotations_of(&out), &json!({}));
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        assert!(out.warnings[0].contains("unknown instance type \"zz9.huge\""));
        assert!(
            out.warnings[1].contains("previous instance type g4dn.xlarge"),
            "{}",
            out.warnings[1]
        );
    }

    #[test]
    fn a_missing_template_is_accepted_with_a_warning_naming_the_fix() {
        let host = capi_host(&[]);
        let out = admit(&create(machine_deployment("later", json!({}))), &host);
        assert_eq!(out.mutated, None);
        assert_eq!(out.report.problem, Some(Problem::TemplateUnreadable));
        assert_eq!(out.warnings.len(), 1);
        let w = &out.warnings[0];
        assert!(
            w.starts_with("capa-annotator: AWSMachineTemplate team-a/later was not found;"),
            "{w}"
        );
        assert!(w.contains("re-submits this object"), "{w}");
        assert!(
            w.chars().count() <= warnings::MAX_CHARS,
            "{}",
            w.chars().count()
        );
        let long = admit(
            &create(machine_deployment(&"x".repeat(253), json!({}))),
            &host,
        );
        assert!(
            long.warnings[0].chars().count() <= warnings::MAX_CHARS,
            "{}",
            long.warnings[0]
        );
        // a template without a type
        let mut host = capi_host(&[]);
        host.templates.insert(
            format!("{V1BETA2} team-a/t"),
            json!({"spec": {"template": {"spec": {}}}}),
        );
        let out = admit(&create(machine_deployment("t", json!({}))), &host);
        assert!(
            out.warnings[0].contains("has no spec.template.spec.instanceType"),
            "{:?}",
            out.warnings
        );
        // a malformed type names the template's field
        let host = capi_host(&[(V1BETA2, "t", "m5xlarge")]);
        let out = admit(&create(machine_deployment("t", json!({}))), &host);
        assert!(
            out.warnings[0]
                .ends_with("Fix spec.template.spec.instanceType of AWSMachineTemplate team-a/t"),
            "{:?}",
            out.warnings
        );
    }

    #[test]
    fn other_providers_and_deletions_are_skipped_without_a_host_call() {
        let host = capi_host(&[(V1BETA2, "gpu", "g4dn.xlarge")]);
        let mut gcp = machine_deployment("gpu", json!({}));
        gcp["spec"]["template"]["spec"]["infrastructureRef"]["kind"] = json!("GCPMachineTemplate");
        let out = admit(&create(gcp), &host);
        assert_skipped(&out);
        assert_eq!(
            out.report.skipped,
            Some(Skipped::NotAws("GCPMachineTemplate".into()))
        );
        let mut deleting = machine_deployment("gpu", json!({}));
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-02T00:00:00Z");
        assert_skipped(&admit(&create(deleting), &host));
        // a Machine, or an unserved version, is not ours
        let mut machine = machine_deployment("gpu", json!({}));
        machine["kind"] = json!("Machine");
        assert_skipped(&admit(&create(machine), &host));
        assert!(host.asked.borrow().is_empty(), "{:?}", host.asked.borrow());
    }

    #[test]
    fn an_unusable_ref_warns() {
        let host = capi_host(&[]);
        let mut bad = machine_deployment("t", json!({}));
        bad["spec"]["template"]["spec"]["infrastructureRef"] =
            json!({"kind": "AWSMachineTemplate"});
        let out = admit(&create(bad), &host);
        assert_eq!(out.mutated, None);
        assert_eq!(
            out.warnings,
            [
                "capa-annotator: spec.template.spec.infrastructureRef.name is missing, empty or not a string; capacity annotations not set. Fix the infrastructureRef"
            ]
        );
    }

    #[test]
    fn cluster_api_wrong_values_are_corrected() {
        let host = capi_host(&[(V1BETA2, "gpu", "g4dn.xlarge")]);
        // a bare number is bytes to the autoscaler: a real mistake
        let out = admit(
            &create(machine_deployment(
                "gpu",
                json!({CAPI_MEMORY: "16384", CAPI_CPU: "4"}),
            )),
            &host,
        );
        assert_eq!(annotations_of(&out)[CAPI_MEMORY], "16384Mi");
        assert_eq!(
            out.warnings,
            [
                "capa-annotator: corrected capacity.cluster-autoscaler.kubernetes.io/memory 16384 → 16384Mi (g4dn.xlarge)"
            ]
        );
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
            create(
                json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                          "spec": {"template": {"spec": {"infrastructureRef": {
                              "apiGroup": [], "kind": "AWSMachineTemplate", "name": "t"}}}}}),
            ),
            create(
                json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineSet",
                          "metadata": {"namespace": 5},
                          "spec": {"template": {"spec": {"infrastructureRef": {
                              "apiVersion": "/", "kind": "AWSMachineTemplate", "name": "t"}}}}}),
            ),
            payload(
                json!({}),
                "UPDATE",
                json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineSet",
                       "spec": {"template": {"spec": {"infrastructureRef": {
                           "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2",
                           "kind": "AWSMachineTemplate", "name": "t"}}}}}),
                json!({"spec": {"template": {"spec": {"infrastructureRef": 7}}}}),
            ),
        ];
        for p in payloads {
            let out = admit(&p, &host);
            #[cfg(feature = "wapc")]
            {
                let resp: Value = serde_json::from_slice(&out.into_response()).unwrap();
                assert_eq!(resp["accepted"], true);
            }
            #[cfg(not(feature = "wapc"))]
            drop(out);
        }
    }
}
