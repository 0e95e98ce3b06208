//! What every answer of the policy must be, whatever the input:
//! - the call succeeds (no trap, no guest error, within the memory limit) and answers
//!   `accepted: true`;
//! - the same input gives the same bytes again (a fresh instance each time);
//! - a mutation changes `metadata.annotations` only, only the keys we own, with decimal integers
//!   (`…Mi` for the upstream memory key, a known resource name for the GPU type) and the
//!   `kubernetes.io/arch` pair first in the labels;
//! - admitting the mutated object again gives no patch (idempotence).

use crate::inputs::{HostAnswer, Input};
use capa_core::annotations::{
    GPU, LABELS, MEMORY_MB, UPSTREAM_CPU, UPSTREAM_GPU_COUNT, UPSTREAM_GPU_TYPE, UPSTREAM_MEMORY,
    VCPU,
};
use e2e_tests::Policy;
use e2e_tests::capabilities::{HostCapabilities, callback_failure};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The keys the policy may write.
pub const OWNED: [&str; 8] = [
    VCPU,
    MEMORY_MB,
    GPU,
    LABELS,
    UPSTREAM_CPU,
    UPSTREAM_MEMORY,
    UPSTREAM_GPU_COUNT,
    UPSTREAM_GPU_TYPE,
];

/// Answers every host call with the input's answer, failures as Kubewarden's evaluator hands them.
struct FuzzHost(HostAnswer);

impl HostCapabilities for FuzzHost {
    fn host_call(&self, _: &str, _: &str, _: &str, _: &[u8]) -> Result<Vec<u8>, String> {
        match &self.0 {
            HostAnswer::Answer(a) => Ok(a.clone()),
            HostAnswer::Error(e) => Err(callback_failure(e)),
        }
    }
}

/// What one checked input did (for the figures).
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    pub mutated: bool,
    pub warned: bool,
}

fn call(policy: &Policy, payload: &[u8], host: &HostAnswer) -> Result<Vec<u8>, String> {
    policy
        .call("validate", payload, Arc::new(FuzzHost(host.clone())))
        .map_err(|e| format!("the call failed (trap, guest error or memory limit): {e:#}"))
}

fn accepted(raw: &[u8]) -> Result<Value, String> {
    let resp: Value = serde_json::from_slice(raw).map_err(|e| {
        format!(
            "the answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&raw[..raw.len().min(300)])
        )
    })?;
    if resp.get("accepted") != Some(&Value::Bool(true)) {
        return Err(format!("not accepted: {}", short(&resp)));
    }
    Ok(resp)
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 400 {
        format!("{}…", &s[..s.floor_char_boundary(400)])
    } else {
        s
    }
}

/// The object without `metadata.annotations` (and without a `metadata` that held only them).
fn without_annotations(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(root) = v.as_object_mut() {
        match root.get_mut("metadata") {
            Some(Value::Object(m)) => {
                m.remove("annotations");
                if m.is_empty() {
                    root.remove("metadata");
                }
            }
            Some(Value::Null) => {
                root.remove("metadata");
            }
            _ => {}
        }
    }
    v
}

fn annotations(obj: &Value) -> Map<String, Value> {
    obj.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn decimal(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
        && s.parse::<u64>().is_ok()
}

/// The labels after the policy removed what it wrote for a previous instance type: the existing
/// pairs without `kubernetes.io/arch`.
fn arch_pair_removed(before: Option<&Value>, after: &str) -> bool {
    let Some(before) = before.and_then(Value::as_str) else {
        return false;
    };
    let rest: Vec<String> = capa_core::annotations::parse_label_pairs(before)
        .into_iter()
        .filter(|(k, _)| *k != capa_core::annotations::ARCH_LABEL)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    rest.join(",") == after
}

/// A value the policy wrote for `key`.
fn check_value(key: &str, v: &Value) -> Result<(), String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{key} written as a non-string: {v}"))?;
    let ok = match key {
        VCPU | MEMORY_MB | GPU | UPSTREAM_CPU | UPSTREAM_GPU_COUNT => decimal(s),
        UPSTREAM_MEMORY => s.strip_suffix("Mi").is_some_and(decimal),
        UPSTREAM_GPU_TYPE => matches!(s, "nvidia.com/gpu" | "amd.com/gpu" | "habana.ai/gaudi"),
        LABELS => {
            let first = s.split(',').next().unwrap_or_default();
            first == "kubernetes.io/arch=amd64" || first == "kubernetes.io/arch=arm64"
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key} written as {:?}",
            &s[..s.floor_char_boundary(200)]
        ))
    }
}

/// The mutation changes only our annotations, with well-formed values.
fn check_mutation(before: &Value, after: &Value) -> Result<(), String> {
    if without_annotations(before) != without_annotations(after) {
        return Err("the mutation changed more than metadata.annotations".into());
    }
    let (b, a) = (annotations(before), annotations(after));
    for key in b.keys().chain(a.keys()) {
        if b.get(key) == a.get(key) {
            continue;
        }
        if !OWNED.contains(&key.as_str()) {
            return Err(format!(
                "the mutation changed annotation {key:?}, not one of ours"
            ));
        }
        match a.get(key) {
            Some(Value::String(l)) if key == LABELS && arch_pair_removed(b.get(key), l) => {}
            Some(v) => check_value(key, v)?,
            None => {}
        }
    }
    Ok(())
}

/// The part of a `validate` payload the policy reads (`policy/src/request.rs`): the rest is
/// skipped, at any depth, as the policy skips it.
#[derive(serde::Deserialize)]
struct Read {
    #[serde(default)]
    settings: Value,
    request: ReadRequest,
}

#[derive(serde::Deserialize)]
#[serde(default)]
struct ReadRequest {
    operation: String,
    object: Value,
    #[serde(alias = "oldObject")]
    old_object: Value,
}

impl Default for ReadRequest {
    fn default() -> Self {
        ReadRequest {
            operation: String::new(),
            object: Value::Null,
            old_object: Value::Null,
        }
    }
}

/// Checks one input against every rule above.
pub fn check(policy: &Policy, input: &Input) -> Result<Seen, String> {
    let raw = call(policy, &input.payload, &input.host)?;
    let resp = accepted(&raw)?;
    let again = call(policy, &input.payload, &input.host)?;
    if again != raw {
        return Err("the same input gave another answer (not deterministic)".into());
    }
    let warned = resp
        .get("warnings")
        .and_then(Value::as_array)
        .is_some_and(|w| !w.is_empty());
    let Some(mutated) = resp.get("mutated_object").filter(|m| !m.is_null()) else {
        return Ok(Seen {
            mutated: false,
            warned,
        });
    };
    // read the payload as the policy does (unknown fields skipped without depth limit)
    let read: Read = serde_json::from_slice(&input.payload)
        .map_err(|e| format!("a mutation of a payload the policy could not have read ({e})"))?;
    check_mutation(&read.request.object, mutated)?;
    // admitting the result again changes nothing
    let payload = serde_json::to_vec(&serde_json::json!({
        "settings": read.settings,
        "request": {
            "operation": read.request.operation,
            "object": mutated,
            "oldObject": read.request.old_object,
        }
    }))
    .map_err(|e| e.to_string())?;
    let second = accepted(&call(policy, &payload, &input.host)?)?;
    if let Some(m2) = second.get("mutated_object").filter(|m| !m.is_null())
        && m2 != mutated
    {
        return Err(format!(
            "not idempotent: admitting the result again changes it: {}",
            short(&Value::Array(
                json_patch::diff(mutated, m2)
                    .0
                    .iter()
                    .filter_map(|op| serde_json::to_value(op).ok())
                    .collect()
            ))
        ));
    }
    Ok(Seen {
        mutated: true,
        warned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mutation_rules() {
        let before =
            json!({"kind": "MachineSet", "metadata": {"name": "a", "annotations": {"x": "1"}}});
        let ok = json!({"kind": "MachineSet", "metadata": {"name": "a", "annotations": {"x": "1",
            VCPU: "4", LABELS: "kubernetes.io/arch=arm64,team=a", UPSTREAM_MEMORY: "16384Mi"}}});
        assert_eq!(check_mutation(&before, &ok), Ok(()));
        let foreign =
            json!({"kind": "MachineSet", "metadata": {"name": "a", "annotations": {"x": "2"}}});
        assert!(
            check_mutation(&before, &foreign)
                .unwrap_err()
                .contains("\"x\"")
        );
        let elsewhere =
            json!({"kind": "Pod", "metadata": {"name": "a", "annotations": {"x": "1"}}});
        assert!(check_mutation(&before, &elsewhere).is_err());
        for bad in [
            json!({VCPU: "04"}),
            json!({VCPU: 4}),
            json!({MEMORY_MB: "1Gi"}),
            json!({LABELS: "team=a,kubernetes.io/arch=arm64"}),
            json!({UPSTREAM_GPU_TYPE: "x"}),
        ] {
            let after =
                json!({"kind": "MachineSet", "metadata": {"name": "a", "annotations": bad}});
            assert!(check_mutation(&before, &after).is_err(), "{after}");
        }
        // removing the arch pair written for a previous type leaves the user's pairs
        let stale =
            json!({"metadata": {"annotations": {LABELS: "kubernetes.io/arch=amd64,team=ml"}}});
        let removed = json!({"metadata": {"annotations": {LABELS: "team=ml"}}});
        assert_eq!(check_mutation(&stale, &removed), Ok(()));
        let reordered = json!({"metadata": {"annotations": {LABELS: "x=y"}}});
        assert!(check_mutation(&stale, &reordered).is_err());
        // a metadata created only to hold the annotations is fine
        let bare = json!({"kind": "MachineSet"});
        let created = json!({"kind": "MachineSet", "metadata": {"annotations": {GPU: "0"}}});
        assert_eq!(check_mutation(&bare, &created), Ok(()));
    }
}
