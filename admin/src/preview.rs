//! `preview`: each object (a Machine API MachineSet, a Cluster API MachineSet or MachineDeployment)
//! through the policy's own decision (`admission::admit`, the code of `policy.wasm`), as a CREATE
//! at admission, and what it would change.

use crate::input::{ObjectDoc, Origin};
use capa_annotator_policy::admission::{self, Outcome, Problem};
use capa_annotator_policy::lookup::Source;
use capa_annotator_policy::settings::Settings;
use capa_annotator_policy::source::ResourceSource;
use capa_core::annotations::{
    Correction, GPU, LABELS, MEMORY_MB, UPSTREAM_CPU, UPSTREAM_GPU_COUNT, UPSTREAM_GPU_TYPE,
    UPSTREAM_MEMORY, VCPU,
};
use serde_json::{Value, json};

/// What admission would do to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The policy's ClusterAdmissionPolicy (given whole as `--settings`) does not send it to the
    /// policy: its rules, objectSelector or namespaceSelector.
    NotSent(String),
    WouldChange,
    AlreadyRight,
    /// Left alone without a warning (not AWS, deleting, …).
    Skipped(String),
    /// Left unchanged with a warning (unknown type, unreadable provider spec, …).
    NotAnnotated(String),
}

/// One annotation we own, before and after (`None` = absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: &'static str,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// The preview of one object.
#[derive(Debug, Clone)]
pub struct Preview {
    pub origin: Origin,
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub instance_type: Option<String>,
    pub source: Option<Source>,
    pub verdict: Verdict,
    pub changes: Vec<Change>,
    pub corrections: Vec<Correction>,
    pub missing_accelerator_label: bool,
    pub unknown_type: bool,
    pub warnings: Vec<String>,
    /// The RFC 6902 patch the policy server would send (empty: none).
    pub patch: Value,
    /// The object as admission would store it (patched, or as it was).
    pub after: Value,
}

/// The `ValidationRequest` the policy server sends for a CREATE of `object`.
pub fn request_payload(object: &Value, settings: &Value) -> Vec<u8> {
    let meta = |k: &str| object.pointer(&format!("/metadata/{k}")).cloned();
    let (group, version, kind, resource) = capa_core::scope::resource_of(object);
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    let payload = json!({
        "settings": settings,
        "request": {
            "uid": "capa-admin-preview",
            "kind": gvk, "requestKind": gvk,
            "resource": gvr, "requestResource": gvr,
            "name": meta("name"),
            "namespace": meta("namespace"),
            "operation": "CREATE",
            "userInfo": {"username": "capa-admin"},
            "object": object,
            "oldObject": null,
            "dryRun": true,
        }
    });
    // a Value tree always serialises
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// The keys shown: the four we always own on a Machine API MachineSet (on a Cluster API object:
/// the cpu, memory and labels keys); the upstream cpu/memory keys when the setting writes them or
/// they are there; the upstream GPU keys when there before or after.
fn shown_keys(
    settings: &Settings,
    cluster_api: bool,
    before: &Value,
    after: &Value,
) -> Vec<&'static str> {
    let present = |o: &Value, key: &str| {
        o.pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .is_some()
    };
    if cluster_api {
        let mut keys = vec![UPSTREAM_CPU, UPSTREAM_MEMORY];
        keys.extend(
            [UPSTREAM_GPU_COUNT, UPSTREAM_GPU_TYPE]
                .into_iter()
                .filter(|k| present(before, k) || present(after, k)),
        );
        keys.push(LABELS);
        return keys;
    }
    let mut keys = vec![VCPU, MEMORY_MB, GPU, LABELS];
    for (key, when_set) in [
        (UPSTREAM_CPU, true),
        (UPSTREAM_MEMORY, true),
        (UPSTREAM_GPU_COUNT, false),
        (UPSTREAM_GPU_TYPE, false),
    ] {
        let written = when_set && settings.upstream_capacity_annotations;
        if written || present(before, key) || present(after, key) {
            keys.push(key);
        }
    }
    keys
}

fn annotation(obj: &Value, key: &str) -> Option<String> {
    let v = obj.pointer("/metadata/annotations")?.get(key)?;
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn problem_text(p: Problem) -> &'static str {
    match p {
        Problem::RequestUnparsable => "the admission request cannot be parsed",
        Problem::SettingsInvalid => "invalid settings",
        Problem::ProviderSpecUnreadable => "the AWS provider spec cannot be read",
        Problem::AnnotationsUnreadable => "metadata.annotations is not a map of strings",
        Problem::InstanceTypeEmpty => "instanceType is empty",
        Problem::InstanceTypeMalformed => "instanceType is malformed",
        Problem::UnknownInstanceType => "unknown instance type",
        Problem::InfrastructureRefUnreadable => "the infrastructureRef cannot be used",
        Problem::TemplateUnreadable => {
            "the AWSMachineTemplate cannot be read or gives no instance type"
        }
    }
}

fn identity(doc: &ObjectDoc) -> (String, String, Option<String>, Option<String>) {
    let text = |p: &str| {
        doc.object
            .pointer(p)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    (
        text("/apiVersion").unwrap_or_default(),
        text("/kind").unwrap_or_default(),
        text("/metadata/namespace"),
        text("/metadata/name"),
    )
}

/// `object` as the API server sends it to the policy: in the namespace of its request
/// ([`crate::DEFAULT_NAMESPACE`] when the manifest names none).
pub fn as_admitted(object: &Value) -> Value {
    let mut admitted = object.clone();
    crate::default_namespace(&mut admitted);
    admitted
}

/// An object the policy's ClusterAdmissionPolicy would not send to the policy.
pub fn not_sent(doc: &ObjectDoc, why: String) -> Preview {
    let report = admission::Report::default();
    preview_of(doc, Verdict::NotSent(why), Vec::new(), report, Vec::new())
}

/// The parts of a preview that come from the object and the decision's report.
fn preview_of(
    doc: &ObjectDoc,
    verdict: Verdict,
    changes: Vec<Change>,
    report: admission::Report,
    warnings: Vec<String>,
) -> Preview {
    let (api_version, kind, namespace, name) = identity(doc);
    Preview {
        origin: doc.origin.clone(),
        api_version,
        kind,
        namespace,
        name,
        unknown_type: report.problem == Some(Problem::UnknownInstanceType),
        instance_type: report.instance_type,
        source: report.source,
        verdict,
        changes,
        corrections: report.corrections,
        missing_accelerator_label: report.missing_accelerator_label,
        warnings,
        patch: json!([]),
        after: doc.object.clone(),
    }
}

/// Runs the policy's decision on one object. `settings_json` is what the policy server would
/// pass (already validated into `settings`).
pub fn preview(
    doc: &ObjectDoc,
    settings_json: &Value,
    settings: &Settings,
    src: &impl ResourceSource,
) -> Preview {
    let admitted = as_admitted(&doc.object);
    let before = &admitted;
    let Outcome {
        mutated,
        warnings,
        report,
    } = admission::admit(&request_payload(before, settings_json), src);
    let after = mutated.as_ref().unwrap_or(before);
    let patch = match &mutated {
        Some(m) => serde_json::to_value(json_patch::diff(before, m)).unwrap_or(Value::Null),
        None => json!([]),
    };
    let changed = patch.as_array().is_some_and(|p| !p.is_empty());
    let verdict = if let Some(why) = &report.skipped {
        Verdict::Skipped(why.to_string())
    } else if changed {
        Verdict::WouldChange
    } else if let Some(p) = report.problem {
        Verdict::NotAnnotated(problem_text(p).to_string())
    } else {
        Verdict::AlreadyRight
    };
    let cluster_api = capa_core::capi::is_scalable_resource(before);
    let changes = if report.skipped.is_some() {
        Vec::new()
    } else {
        shown_keys(settings, cluster_api, before, after)
            .into_iter()
            .map(|key| Change {
                key,
                before: annotation(before, key),
                after: annotation(after, key),
            })
            .collect()
    };
    let mut p = preview_of(doc, verdict, changes, report, warnings);
    // the object as given with the policy's change: the admitted object differs from it only by
    // a defaulted namespace, which is not printed
    if let Some(mut m) = mutated {
        if !crate::names_namespace(&doc.object)
            && let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("namespace");
        }
        p.after = m;
    }
    p.patch = patch;
    p
}

/// The counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub read: usize,
    /// Not sent to the policy by its ClusterAdmissionPolicy.
    pub not_sent: usize,
    pub would_change: usize,
    pub already_right: usize,
    /// Reason → count, in order of first appearance.
    pub skipped: Vec<(String, usize)>,
    pub not_annotated: usize,
    /// Unknown instance types, each once, in order of first appearance.
    pub unknown_types: Vec<String>,
    pub unknown_type_objects: usize,
    /// Existing capacity values that differ from the table, and on how many objects.
    pub wrong_values: usize,
    pub wrong_value_objects: usize,
    pub missing_accelerator_label: usize,
    pub warnings: usize,
}

impl Summary {
    pub fn of(previews: &[Preview]) -> Summary {
        let mut s = Summary {
            read: previews.len(),
            ..Summary::default()
        };
        for p in previews {
            match &p.verdict {
                Verdict::WouldChange => s.would_change += 1,
                Verdict::AlreadyRight => s.already_right += 1,
                Verdict::NotAnnotated(_) => s.not_annotated += 1,
                Verdict::NotSent(_) => s.not_sent += 1,
                Verdict::Skipped(why) => match s.skipped.iter_mut().find(|(r, _)| r == why) {
                    Some((_, n)) => *n += 1,
                    None => s.skipped.push((why.clone(), 1)),
                },
            }
            if p.unknown_type {
                s.unknown_type_objects += 1;
                if let Some(t) = &p.instance_type
                    && !s.unknown_types.contains(t)
                {
                    s.unknown_types.push(t.clone());
                }
            }
            if !p.corrections.is_empty() {
                s.wrong_values += p.corrections.len();
                s.wrong_value_objects += 1;
            }
            s.missing_accelerator_label += usize::from(p.missing_accelerator_label);
            s.warnings += p.warnings.len();
        }
        s
    }

    pub fn skipped_total(&self) -> usize {
        self.skipped.iter().map(|(_, n)| n).sum()
    }
}
