//! Cluster API on AWS (issue 12, first part): which `cluster.x-k8s.io` objects scale from zero,
//! how their `spec.template.spec.infrastructureRef` names the `AWSMachineTemplate` that holds the
//! instance type, and where that type is in the template. Shapes checked against real objects in
//! `e2e-tests/fixtures/capi-sources/` (`e2e-tests/tests/capi.rs`).

use serde_json::Value;
use thiserror::Error;

/// The API group of Cluster API's MachineSet and MachineDeployment.
pub const GROUP: &str = "cluster.x-k8s.io";
/// The kinds the cluster-autoscaler's clusterapi provider scales (and reads annotations from).
pub const SCALABLE_KINDS: [&str; 2] = ["MachineSet", "MachineDeployment"];
/// The Cluster API versions served for them.
pub const VERSIONS: [&str; 2] = ["v1beta1", "v1beta2"];
/// The API group of infrastructure templates.
pub const INFRASTRUCTURE_GROUP: &str = "infrastructure.cluster.x-k8s.io";
/// CAPA's machine template kind.
pub const AWS_MACHINE_TEMPLATE: &str = "AWSMachineTemplate";
/// The instance type in an AWSMachineTemplate, as a dotted field mask for `get_resource`.
pub const TEMPLATE_INSTANCE_TYPE_MASK: &str = "spec.template.spec.instanceType";

/// Whether `obj` is a Cluster API MachineSet or MachineDeployment of a served version.
pub fn is_scalable_resource(obj: &Value) -> bool {
    let api_version = obj.get("apiVersion").and_then(Value::as_str);
    let kind = obj.get("kind").and_then(Value::as_str);
    match (api_version.and_then(|a| a.split_once('/')), kind) {
        (Some((group, version)), Some(kind)) => {
            group == GROUP && VERSIONS.contains(&version) && SCALABLE_KINDS.contains(&kind)
        }
        _ => false,
    }
}

/// Where a MachineSet's or MachineDeployment's infrastructure template is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef<'a> {
    pub group: &'a str,
    /// Given by a v1beta1 ref (`apiVersion`); a v1beta2 ref (`apiGroup`) leaves it to discovery.
    pub version: Option<&'a str>,
    pub kind: &'a str,
    pub name: &'a str,
    /// The ref's own namespace (v1beta1 refs may carry one), else the object's.
    pub namespace: &'a str,
}

impl TemplateRef<'_> {
    pub fn is_aws_machine_template(&self) -> bool {
        self.group == INFRASTRUCTURE_GROUP && self.kind == AWS_MACHINE_TEMPLATE
    }
}

/// Why an object's infrastructure reference cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RefError {
    #[error("spec.template.spec.infrastructureRef is missing or not an object")]
    Missing,
    #[error("spec.template.spec.infrastructureRef.{0} is missing, empty or not a string")]
    Field(&'static str),
    #[error(
        "spec.template.spec.infrastructureRef.apiVersion {0:?} is not of the form <group>/<version>"
    )]
    ApiVersion(String),
}

fn text<'a>(v: &'a Value, key: &'static str) -> Result<Option<&'a str>, RefError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(RefError::Field(key)),
    }
}

/// Reads `spec.template.spec.infrastructureRef`: v1beta2 refs carry `apiGroup` + `kind` + `name`,
/// v1beta1 refs `apiVersion` + `kind` + `name` (+ `namespace`).
pub fn infrastructure_ref(obj: &Value) -> Result<TemplateRef<'_>, RefError> {
    let r = obj
        .pointer("/spec/template/spec/infrastructureRef")
        .filter(|r| r.is_object())
        .ok_or(RefError::Missing)?;
    let kind = text(r, "kind")?.ok_or(RefError::Field("kind"))?;
    let name = text(r, "name")?.ok_or(RefError::Field("name"))?;
    let (group, version) = match (text(r, "apiGroup")?, text(r, "apiVersion")?) {
        (Some(group), _) => (group, None),
        (None, Some(api_version)) => match api_version.split_once('/') {
            Some((g, v)) if !g.is_empty() && !v.is_empty() => (g, Some(v)),
            _ => return Err(RefError::ApiVersion(api_version.to_string())),
        },
        (None, None) => return Err(RefError::Field("apiGroup")),
    };
    let namespace = match text(r, "namespace")? {
        Some(ns) => ns,
        None => obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default"),
    };
    Ok(TemplateRef {
        group,
        version,
        kind,
        name,
        namespace,
    })
}

/// The instance type an AWSMachineTemplate asks for (`spec.template.spec.instanceType`).
pub fn template_instance_type(template: &Value) -> Option<&str> {
    template
        .pointer("/spec/template/spec/instanceType")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn md(r: Value) -> Value {
        json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineDeployment",
               "metadata": {"name": "md", "namespace": "team-a"},
               "spec": {"template": {"spec": {"infrastructureRef": r}}}})
    }

    #[test]
    fn both_ref_styles_and_the_namespace_rule() {
        let v1 = md(
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2",
                           "kind": "AWSMachineTemplate", "name": "t"}),
        );
        let r = infrastructure_ref(&v1).unwrap();
        assert_eq!(
            (r.group, r.version, r.namespace),
            (INFRASTRUCTURE_GROUP, Some("v1beta2"), "team-a")
        );
        assert!(r.is_aws_machine_template());
        let v2 = md(json!({"apiGroup": "infrastructure.cluster.x-k8s.io",
                           "kind": "AWSMachineTemplate", "name": "t", "namespace": "shared"}));
        let r = infrastructure_ref(&v2).unwrap();
        assert_eq!((r.version, r.namespace), (None, "shared"));
        let gcp = md(json!({"apiGroup": "infrastructure.cluster.x-k8s.io",
                            "kind": "GCPMachineTemplate", "name": "t"}));
        assert!(!infrastructure_ref(&gcp).unwrap().is_aws_machine_template());
    }

    #[test]
    fn unusable_refs_say_what_is_wrong() {
        assert_eq!(infrastructure_ref(&json!({})), Err(RefError::Missing));
        assert_eq!(infrastructure_ref(&md(json!("t"))), Err(RefError::Missing));
        assert_eq!(
            infrastructure_ref(&md(json!({"kind": "AWSMachineTemplate", "name": "t"}))),
            Err(RefError::Field("apiGroup"))
        );
        assert_eq!(
            infrastructure_ref(&md(
                json!({"apiVersion": "v1", "kind": "AWSMachineTemplate", "name": "t"})
            )),
            Err(RefError::ApiVersion("v1".into()))
        );
        assert_eq!(
            infrastructure_ref(&md(
                json!({"apiGroup": 3, "kind": "AWSMachineTemplate", "name": "t"})
            )),
            Err(RefError::Field("apiGroup"))
        );
        assert_eq!(
            infrastructure_ref(&md(
                json!({"apiGroup": "g", "kind": "AWSMachineTemplate", "name": ""})
            )),
            Err(RefError::Field("name"))
        );
    }

    #[test]
    fn scalable_kinds_and_versions() {
        let obj = |a: &str, k: &str| json!({"apiVersion": a, "kind": k});
        assert!(is_scalable_resource(&obj(
            "cluster.x-k8s.io/v1beta2",
            "MachineDeployment"
        )));
        assert!(is_scalable_resource(&obj(
            "cluster.x-k8s.io/v1beta1",
            "MachineSet"
        )));
        assert!(!is_scalable_resource(&obj(
            "cluster.x-k8s.io/v1alpha4",
            "MachineSet"
        )));
        assert!(!is_scalable_resource(&obj(
            "machine.openshift.io/v1beta1",
            "MachineSet"
        )));
        assert!(!is_scalable_resource(&obj(
            "cluster.x-k8s.io/v1beta1",
            "Machine"
        )));
        assert_eq!(
            template_instance_type(
                &json!({"spec": {"template": {"spec": {"instanceType": "g4dn.xlarge"}}}})
            ),
            Some("g4dn.xlarge")
        );
        assert_eq!(template_instance_type(&json!({"spec": {}})), None);
    }
}
