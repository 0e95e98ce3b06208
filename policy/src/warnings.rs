//! Admission warnings: each names the cause and the fix. Kubernetes may truncate warnings over
//! 256 characters, so they are kept short and quoted values are shortened.

use crate::builtin;
use crate::lookup::ConfigMapState;
use crate::settings::{Fallback, Settings};
use crate::template::{Cause, TemplateError};
use capa_core::annotations::Correction;
use capa_core::machineset::ACCELERATOR_LABEL;
use capa_core::table::truncate_for_message as short;

const PREFIX: &str = "capa-annotator:";

pub fn request_unparsable(e: &serde_json::Error) -> String {
    format!("{PREFIX} cannot parse the admission request ({e}); admitted unchanged")
}

pub fn settings_invalid(e: &str) -> String {
    format!(
        "{PREFIX} invalid policy settings ({}); admitted unchanged. Fix the policy's settings",
        short(e)
    )
}

pub fn provider_spec_unreadable(e: &impl std::fmt::Display) -> String {
    format!(
        "{PREFIX} cannot read the AWS provider spec: {e}; capacity annotations not set. Fix spec.template.spec.providerSpec.value"
    )
}

pub fn annotations_unreadable(e: &str) -> String {
    format!(
        "{PREFIX} {e}; capacity annotations not set. Make metadata.annotations a map of strings"
    )
}

/// `field`: where the type was read (`providerSpec.value.instanceType`, or a template's field).
pub fn instance_type_empty(field: &str) -> String {
    format!(
        "{PREFIX} {field} is empty; capacity annotations not set. Set an instance type (e.g. m5.xlarge)"
    )
}

pub fn instance_type_malformed(e: &impl std::fmt::Display, field: &str) -> String {
    format!("{PREFIX} {e}; capacity annotations not set. Fix {field}")
}

pub fn infrastructure_ref_unreadable(e: &capa_core::capi::RefError) -> String {
    format!("{PREFIX} {e}; capacity annotations not set. Fix the infrastructureRef")
}

/// A Cluster API object's AWSMachineTemplate gave no instance type.
pub fn template_unusable(template: &str, e: &TemplateError) -> String {
    let (what, fix) = match e {
        TemplateError::Unreadable(cause) => match Cause::of(cause) {
            Cause::NotFound => (
                "was not found".to_string(),
                "create it; the refresher re-submits this object once it exists",
            ),
            Cause::NotGranted => (
                "may not be read by the policy".to_string(),
                "add AWSMachineTemplate to the policy's contextAwareResources (deploy/components/cluster-api)",
            ),
            Cause::NotServed => (
                format!("is not served ({})", short_error(cause)),
                "install CAPA's CRDs; the refresher re-submits this object",
            ),
            Cause::Other => (
                format!("could not be read ({})", short_error(cause)),
                "let the policy server get awsmachinetemplates; the refresher re-submits this object",
            ),
        },
        TemplateError::Malformed(cause) => (
            format!("is not JSON ({})", short_error(cause)),
            "check the policy server",
        ),
        TemplateError::NoInstanceType => (
            "has no spec.template.spec.instanceType".to_string(),
            "set an instance type in the template",
        ),
    };
    format!(
        "{PREFIX} {} {what}; not annotated. Fix: {fix}",
        clip(template, 60)
    )
}

/// Most characters a warning may have (Kubernetes may truncate longer ones).
pub const MAX_CHARS: usize = 280;

/// At most `max` bytes of `s` (cut at a character boundary), `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Host and parser errors can be long; the start says what happened.
fn short_error(e: &str) -> String {
    clip(e, 60)
}

fn configmap(settings: &Settings) -> String {
    format!(
        "ConfigMap {}/{}",
        settings.config_map_namespace, settings.config_map_name
    )
}

fn state_text(state: &ConfigMapState) -> String {
    match state {
        ConfigMapState::Found => "has it".to_string(),
        ConfigMapState::Lacks => "does not list it yet".to_string(),
        ConfigMapState::Unreadable(e) => format!("could not be read ({})", short_error(e)),
        ConfigMapState::Malformed(e) => format!("is malformed ({})", short_error(e)),
    }
}

fn state_fix(state: &ConfigMapState) -> &'static str {
    match state {
        ConfigMapState::Found => "",
        ConfigMapState::Lacks => "the refresher adds new types on its next refresh",
        ConfigMapState::Unreadable(_) => "deploy the refresher; grant the policy server get on it",
        ConfigMapState::Malformed(_) => "the refresher rewrites it; check its logs",
    }
}

/// The built-in table answered because the ConfigMap could not.
pub fn fell_back(instance_type: &str, settings: &Settings, state: &ConfigMapState) -> String {
    format!(
        "{PREFIX} {} annotated from the built-in table of {}: {} {}. Fix: {}",
        short(instance_type),
        builtin::DATE,
        configmap(settings),
        state_text(state),
        state_fix(state)
    )
}

/// Nothing knows the instance type.
pub fn unknown(instance_type: &str, settings: &Settings, state: &ConfigMapState) -> String {
    let builtin = match settings.fallback {
        Fallback::Embedded => format!("nor in the built-in table of {}", builtin::DATE),
        Fallback::None => "and the built-in table is off (fallback: none)".to_string(),
    };
    format!(
        "{PREFIX} unknown instance type {:?}: {} {}, {builtin}; capacity annotations not set. Check the spelling, or add it to the overrides setting",
        short(instance_type),
        configmap(settings),
        state_text(state),
    )
}

/// Capacity written for the old instance type was removed after a change to an unknown one.
pub fn stale_removed(old_type: &str, keys: &[&str]) -> String {
    format!(
        "{PREFIX} removed {} written for the previous instance type {}, so the autoscaler does not build nodes of the wrong size",
        keys.join(", "),
        short(old_type)
    )
}

/// Existing capacity values differed from the table and were overwritten: one warning, however
/// many keys, at most [`MAX_CHARS`] characters (keys that do not fit are counted).
pub fn corrected(corrections: &[Correction], instance_type: &str) -> String {
    let head = format!("{PREFIX} corrected ");
    let tail = format!(" ({})", short(instance_type));
    let items: Vec<String> = corrections
        .iter()
        .map(|c| format!("{} {} → {}", c.key, clip(&c.old, 24), c.new))
        .collect();
    // the first item always fits (a fixed key, a value clipped to 24 bytes, a number); later ones
    // while the rest, counted, still fits
    let mut body = items.first().cloned().unwrap_or_default();
    for (i, item) in items.iter().enumerate().skip(1) {
        let rest = items.len() - i - 1;
        let more = if rest > 0 {
            format!(" and {rest} more")
        } else {
            String::new()
        };
        let candidate = format!("{body}, {item}");
        let len = head.chars().count()
            + candidate.chars().count()
            + more.chars().count()
            + tail.chars().count();
        if len > MAX_CHARS {
            body = format!("{body} and {} more", items.len() - i);
            break;
        }
        body = candidate;
    }
    format!("{head}{body}{tail}")
}

/// The type has GPUs, and the node template lacks the label by which the OpenShift autoscaler
/// counts a node group as GPU. Its value must match the ClusterAutoscaler, so it is not invented.
pub fn accelerator_label_missing(instance_type: &str, gpus: u32) -> String {
    format!(
        "{PREFIX} {} has {gpus} GPU{}, but spec.template.spec.metadata.labels lacks {ACCELERATOR_LABEL}: the OpenShift autoscaler will not treat this node group as GPU. Add {ACCELERATOR_LABEL}: <the ClusterAutoscaler's resourceLimits.gpus[].type>",
        short(instance_type),
        if gpus == 1 { "" } else { "s" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use capa_core::annotations::{GPU, MEMORY_MB, VCPU};

    fn c(key: &'static str, old: &str, new: &str) -> Correction {
        Correction {
            key,
            old: old.into(),
            new: new.into(),
        }
    }

    #[test]
    fn correction_names_each_key_old_and_new() {
        assert_eq!(
            corrected(&[c(MEMORY_MB, "32768", "65536")], "m6g.4xlarge"),
            "capa-annotator: corrected machine.openshift.io/memoryMb 32768 → 65536 (m6g.4xlarge)"
        );
        let two = corrected(&[c(VCPU, "16", "4"), c(GPU, "0", "1")], "g5.xlarge");
        assert_eq!(
            two,
            "capa-annotator: corrected machine.openshift.io/vCPU 16 → 4, machine.openshift.io/GPU 0 → 1 (g5.xlarge)"
        );
    }

    #[test]
    fn correction_stays_short_whatever_the_values() {
        let huge = "9".repeat(1 << 20);
        let many: Vec<Correction> = capa_core::annotations::CAPACITY_VALUE_KEYS
            .iter()
            .map(|k| c(k, &huge, "123456789"))
            .collect();
        for n in 1..=many.len() {
            let w = corrected(&many[..n], "p4d.24xlarge");
            assert!(
                w.chars().count() <= MAX_CHARS,
                "{n}: {} chars: {w}",
                w.chars().count()
            );
            assert!(w.ends_with(" (p4d.24xlarge)"), "{w}");
            assert!(w.contains("machine.openshift.io/vCPU 999"), "{w}");
        }
        let all = corrected(&many, "p4d.24xlarge");
        assert!(all.contains(" more"), "{all}");
        let long_type = "x".repeat(5000);
        assert!(corrected(&many, &long_type).chars().count() <= MAX_CHARS);
    }

    #[test]
    fn template_warnings_name_cause_and_fix_in_few_words() {
        let t = format!("AWSMachineTemplate ns/{}", "x".repeat(253));
        let cases = [
            (
                "Cannot find infrastructure.cluster.x-k8s.io/v1beta2/AWSMachineTemplate named 'x'",
                "was not found; not annotated. Fix: create it;",
            ),
            (
                "Policy has not been granted access to Kubernetes infrastructure.cluster.x-k8s.io/v1beta2/AWSMachineTemplate resources. The violation has been reported.",
                "may not be read by the policy; not annotated. Fix: add AWSMachineTemplate to the policy's contextAwareResources",
            ),
            (
                "awsmachinetemplates.infrastructure.cluster.x-k8s.io \"x\" is forbidden: User \"system:serviceaccount:kubewarden:policy-server\" cannot get resource",
                "could not be read (awsmachinetemplates.infrastructure.cluster.x-k8s.io \"x\" is f…); not annotated. Fix: let the policy server get awsmachinetemplates",
            ),
            (
                "error finding resource infrastructure.cluster.x-k8s.io/v1beta2 / AWSMachineTemplate: ApiError: the server could not find the requested resource",
                "is not served (error finding resource infrastructure.cluster.x-k8s.io/v1bet…); not annotated. Fix: install CAPA's CRDs",
            ),
        ];
        for (cause, want) in cases {
            let w = template_unusable(&t, &TemplateError::Unreadable(cause.into()));
            assert!(w.contains(want), "{w}");
            assert!(w.chars().count() <= MAX_CHARS, "{}: {w}", w.chars().count());
        }
        for e in [
            TemplateError::Malformed("x".repeat(500)),
            TemplateError::NoInstanceType,
        ] {
            assert!(template_unusable(&t, &e).chars().count() <= MAX_CHARS);
        }
    }

    #[test]
    fn accelerator_warning_names_label_and_place() {
        let w = accelerator_label_missing("g5.xlarge", 1);
        assert!(w.contains("g5.xlarge has 1 GPU,"), "{w}");
        assert!(
            w.contains("spec.template.spec.metadata.labels lacks cluster-api/accelerator"),
            "{w}"
        );
        assert!(w.contains("resourceLimits.gpus[].type"), "{w}");
        assert!(w.chars().count() <= MAX_CHARS, "{}", w.chars().count());
        assert!(accelerator_label_missing("p4d.24xlarge", 8).contains("8 GPUs"));
    }
}
