//! The instance type of a Cluster API object: read from the `AWSMachineTemplate` its
//! `spec.template.spec.infrastructureRef` names, through the host, one field mask.

use crate::source::{Resource, ResourceSource};
use capa_core::capi::{self, TemplateRef};
use serde_json::Value;

/// Why the template gave no instance type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// The host could not give it (not found yet, forbidden, no cluster): its error text.
    Unreadable(String),
    /// It was read and is not JSON.
    Malformed(String),
    /// It was read and `spec.template.spec.instanceType` is missing or empty.
    NoInstanceType,
}

/// `namespace/name` of the template, for messages.
pub fn display(r: &TemplateRef<'_>) -> String {
    format!("{} {}/{}", r.kind, r.namespace, r.name)
}

/// The template's instance type, read at [`TemplateRef::versions`] in order until one answers.
pub fn instance_type(
    r: &TemplateRef<'_>,
    src: &impl ResourceSource,
) -> Result<String, TemplateError> {
    let mut first_error = None;
    for version in r.versions() {
        let api_version = format!("{}/{version}", r.group);
        let answer = src.get(&Resource {
            api_version: &api_version,
            kind: r.kind,
            namespace: r.namespace,
            name: r.name,
            field_mask: capi::TEMPLATE_INSTANCE_TYPE_MASK,
        });
        match answer {
            Ok(bytes) => {
                let template: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| TemplateError::Malformed(e.to_string()))?;
                return capi::template_instance_type(&template)
                    .map(str::to_string)
                    .ok_or(TemplateError::NoInstanceType);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(TemplateError::Unreadable(first_error.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// Answers from objects keyed by `apiVersion namespace/name`, recording each ask.
    struct Objects {
        objects: BTreeMap<String, Value>,
        asked: RefCell<Vec<String>>,
    }

    impl ResourceSource for Objects {
        fn get(&self, r: &Resource<'_>) -> Result<Vec<u8>, String> {
            let key = format!("{} {}/{}", r.api_version, r.namespace, r.name);
            self.asked
                .borrow_mut()
                .push(format!("{key} {} {}", r.kind, r.field_mask));
            self.objects
                .get(&key)
                .map(|v| serde_json::to_vec(v).unwrap())
                .ok_or_else(|| format!("Cannot find {} named '{}'", r.api_version, r.name))
        }
    }

    fn tref(version: Option<&'static str>) -> TemplateRef<'static> {
        TemplateRef {
            group: capi::INFRASTRUCTURE_GROUP,
            version,
            kind: capi::AWS_MACHINE_TEMPLATE,
            name: "t",
            namespace: "ns",
        }
    }

    fn template(instance_type: Value) -> Value {
        json!({"spec": {"template": {"spec": {"instanceType": instance_type}}}})
    }

    #[test]
    fn an_apigroup_ref_tries_v1beta2_then_v1beta1() {
        let src = Objects {
            objects: [(
                "infrastructure.cluster.x-k8s.io/v1beta1 ns/t".to_string(),
                template(json!("g4dn.xlarge")),
            )]
            .into(),
            asked: RefCell::default(),
        };
        assert_eq!(instance_type(&tref(None), &src), Ok("g4dn.xlarge".into()));
        assert_eq!(
            *src.asked.borrow(),
            [
                "infrastructure.cluster.x-k8s.io/v1beta2 ns/t AWSMachineTemplate spec.template.spec.instanceType",
                "infrastructure.cluster.x-k8s.io/v1beta1 ns/t AWSMachineTemplate spec.template.spec.instanceType"
            ]
        );
    }

    #[test]
    fn a_versioned_ref_asks_that_version_only_and_errors_name_the_first_cause() {
        let src = Objects {
            objects: BTreeMap::new(),
            asked: RefCell::default(),
        };
        assert_eq!(
            instance_type(&tref(Some("v1beta2")), &src),
            Err(TemplateError::Unreadable(
                "Cannot find infrastructure.cluster.x-k8s.io/v1beta2 named 't'".into()
            ))
        );
        assert_eq!(src.asked.borrow().len(), 1);
        assert_eq!(
            instance_type(&tref(None), &src),
            Err(TemplateError::Unreadable(
                "Cannot find infrastructure.cluster.x-k8s.io/v1beta2 named 't'".into()
            ))
        );
    }

    #[test]
    fn a_template_without_a_usable_type() {
        for (t, want) in [
            (template(json!("")), TemplateError::NoInstanceType),
            (template(json!(7)), TemplateError::NoInstanceType),
            (json!({"spec": {}}), TemplateError::NoInstanceType),
        ] {
            let src = Objects {
                objects: [(
                    "infrastructure.cluster.x-k8s.io/v1beta2 ns/t".to_string(),
                    t,
                )]
                .into(),
                asked: RefCell::default(),
            };
            assert_eq!(instance_type(&tref(None), &src), Err(want));
        }
    }
}
