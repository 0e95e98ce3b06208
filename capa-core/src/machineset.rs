//! What kind of object a MachineSet is for us: ours to annotate, or one to leave alone.

use serde_json::{Map, Value};

/// API group of OpenShift Machine API objects.
pub const GROUP: &str = "machine.openshift.io";
/// Kind of the objects we annotate.
pub const KIND: &str = "MachineSet";
/// Default (and only annotated) authoritative API.
pub const MACHINE_API: &str = "MachineAPI";

/// The node label by which the OpenShift cluster-autoscaler counts a node group as GPU (its
/// value must match the ClusterAutoscaler's `resourceLimits.gpus[].type`; the
/// cluster-autoscaler-operator warns `InvalidOrMissingGPUAcceleratorLabel` without it).
pub const ACCELERATOR_LABEL: &str = "cluster-api/accelerator";

/// Whether `spec.template.spec.metadata.labels` (the labels of the nodes) carries `label` with a
/// non-empty string value.
pub fn node_template_has_label(obj: &Value, label: &str) -> bool {
    obj.pointer("/spec/template/spec/metadata/labels")
        .and_then(|labels| labels.get(label))
        .and_then(Value::as_str)
        .is_some_and(|v| !v.is_empty())
}

/// Why a MachineSet is left alone without a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    NotAMachineSet,
    Deleting,
    Paused,
    /// Another API (e.g. `ClusterAPI`) is authoritative for it.
    NotAuthoritative(String),
}

/// `apiVersion` in group `machine.openshift.io` and `kind: MachineSet`.
pub fn is_machineset(obj: &Value) -> bool {
    let group_ok = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.split_once('/'))
        .is_some_and(|(group, _)| group == GROUP);
    group_ok && obj.get("kind").and_then(Value::as_str) == Some(KIND)
}

/// `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// `status.authoritativeAPI`, else `spec.authoritativeAPI`, else `MachineAPI`.
pub fn authoritative_api(obj: &Value) -> &str {
    ["/status/authoritativeAPI", "/spec/authoritativeAPI"]
        .iter()
        .filter_map(|p| obj.pointer(p).and_then(Value::as_str))
        .find(|s| !s.is_empty())
        .unwrap_or(MACHINE_API)
}

/// A `Paused` condition with status `True`.
pub fn is_paused(obj: &Value) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conds| {
            conds.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Paused")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// Whether to leave this object alone. `respect_authoritative_api` is the `MachineAPIMigration`
/// gate (policy setting `respectAuthoritativeAPI`).
pub fn skip_reason(obj: &Value, respect_authoritative_api: bool) -> Option<Skip> {
    if !is_machineset(obj) {
        return Some(Skip::NotAMachineSet);
    }
    if is_deleting(obj) {
        return Some(Skip::Deleting);
    }
    if respect_authoritative_api {
        if is_paused(obj) {
            return Some(Skip::Paused);
        }
        let api = authoritative_api(obj);
        if api != MACHINE_API {
            return Some(Skip::NotAuthoritative(api.to_string()));
        }
    }
    None
}

/// `metadata.annotations` of an object: `Ok(None)` when absent or null, `Err` when not an object.
pub fn annotations(obj: &Value) -> Result<Option<&Map<String, Value>>, &'static str> {
    match obj.pointer("/metadata/annotations") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err("metadata.annotations is not an object"),
    }
}

/// `metadata.annotations` for writing, created when absent or null.
pub fn annotations_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, &'static str> {
    let root = obj
        .as_object_mut()
        .ok_or("the object is not a JSON object")?;
    let metadata = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if metadata.is_null() {
        *metadata = Value::Object(Map::new());
    }
    let metadata = metadata
        .as_object_mut()
        .ok_or("metadata is not an object")?;
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if annotations.is_null() {
        *annotations = Value::Object(Map::new());
    }
    annotations
        .as_object_mut()
        .ok_or("metadata.annotations is not an object")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ms(extra: Value) -> Value {
        let mut m = json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet", "metadata": {"name": "a"}});
        if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        m
    }

    #[test]
    fn gating() {
        assert_eq!(skip_reason(&ms(json!({})), true), None);
        assert_eq!(
            skip_reason(&json!({"apiVersion": "v1", "kind": "Pod"}), false),
            Some(Skip::NotAMachineSet)
        );
        assert_eq!(
            skip_reason(
                &json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineSet"}),
                false
            ),
            Some(Skip::NotAMachineSet)
        );
        assert_eq!(
            skip_reason(&json!("str"), false),
            Some(Skip::NotAMachineSet)
        );
        let deleting = ms(json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}));
        assert_eq!(skip_reason(&deleting, false), Some(Skip::Deleting));
        let paused = ms(json!({"status": {"conditions": [{"type": "Paused", "status": "True"}]}}));
        assert_eq!(skip_reason(&paused, false), None);
        assert_eq!(skip_reason(&paused, true), Some(Skip::Paused));
        let not_paused =
            ms(json!({"status": {"conditions": [{"type": "Paused", "status": "False"}]}}));
        assert_eq!(skip_reason(&not_paused, true), None);
    }

    #[test]
    fn authoritative_api_precedence() {
        assert_eq!(authoritative_api(&ms(json!({}))), "MachineAPI");
        let spec_capi = ms(json!({"spec": {"authoritativeAPI": "ClusterAPI"}}));
        assert_eq!(authoritative_api(&spec_capi), "ClusterAPI");
        assert_eq!(skip_reason(&spec_capi, false), None);
        assert_eq!(
            skip_reason(&spec_capi, true),
            Some(Skip::NotAuthoritative("ClusterAPI".into()))
        );
        let status_wins = ms(
            json!({"spec": {"authoritativeAPI": "ClusterAPI"}, "status": {"authoritativeAPI": "MachineAPI"}}),
        );
        assert_eq!(skip_reason(&status_wins, true), None);
        let migrating = ms(json!({"status": {"authoritativeAPI": "Migrating"}}));
        assert_eq!(
            skip_reason(&migrating, true),
            Some(Skip::NotAuthoritative("Migrating".into()))
        );
    }

    #[test]
    fn node_template_labels() {
        let with = ms(
            json!({"spec": {"template": {"spec": {"metadata": {"labels": {ACCELERATOR_LABEL: "nvidia-a10g"}}}}}}),
        );
        assert!(node_template_has_label(&with, ACCELERATOR_LABEL));
        for without in [
            ms(json!({})),
            ms(json!({"spec": {"template": {"spec": {"metadata": {"labels": {"other": "x"}}}}}})),
            ms(json!({"spec": {"template": {"spec": {"metadata": {"labels": "x"}}}}})),
            ms(
                json!({"spec": {"template": {"spec": {"metadata": {"labels": {ACCELERATOR_LABEL: 1}}}}}}),
            ),
            ms(
                json!({"spec": {"template": {"spec": {"metadata": {"labels": {ACCELERATOR_LABEL: ""}}}}}}),
            ),
        ] {
            assert!(
                !node_template_has_label(&without, ACCELERATOR_LABEL),
                "{without}"
            );
        }
    }

    #[test]
    fn annotation_access() {
        let mut o = ms(json!({}));
        assert_eq!(annotations(&o), Ok(None));
        annotations_mut(&mut o)
            .unwrap()
            .insert("a".into(), json!("b"));
        assert_eq!(o["metadata"]["annotations"]["a"], "b");
        let mut null = json!({"metadata": {"annotations": null}});
        assert!(annotations_mut(&mut null).is_ok());
        let mut no_meta = json!({});
        assert!(annotations_mut(&mut no_meta).is_ok());
        let mut bad = json!({"metadata": {"annotations": "x"}});
        assert!(annotations(&bad).is_err());
        assert!(annotations_mut(&mut bad).is_err());
        assert!(annotations_mut(&mut json!([1])).is_err());
    }
}
