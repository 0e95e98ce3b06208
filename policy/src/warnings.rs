//! Admission warnings: each names the cause and the fix. Kubernetes may truncate warnings over
//! 256 characters, so they are kept short and quoted values are shortened.

use crate::builtin;
use crate::lookup::ConfigMapState;
use crate::settings::{Fallback, Settings};
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

pub fn instance_type_empty() -> String {
    format!(
        "{PREFIX} providerSpec.value.instanceType is empty; capacity annotations not set. Set an instance type (e.g. m5.xlarge)"
    )
}

pub fn instance_type_malformed(e: &impl std::fmt::Display) -> String {
    format!("{PREFIX} {e}; capacity annotations not set. Fix providerSpec.value.instanceType")
}

/// Host and parser errors can be long; the start says what happened.
fn short_error(e: &str) -> String {
    const MAX: usize = 60;
    if e.len() <= MAX {
        return e.to_string();
    }
    let mut end = MAX;
    while !e.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &e[..end])
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
