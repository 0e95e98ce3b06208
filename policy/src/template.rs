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

/// What a failed read says, in Kubewarden's evaluator's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// Anything else: RBAC forbids the policy server, the API server failed…
    Other,
    /// The version is served and the object is absent ("Cannot find <apiVersion>/<kind> named …").
    NotFound,
    /// The version is not in the policy's `contextAwareResources`.
    NotGranted,
    /// The API server does not serve that version (or kind) at all (discovery failed).
    NotServed,
}

impl Cause {
    pub fn of(text: &str) -> Cause {
        if text.starts_with("Cannot find resource ") || text.starts_with("error finding resource ")
        {
            Cause::NotServed
        } else if text.contains("not been granted access") {
            Cause::NotGranted
        } else if text.starts_with("Cannot find ") {
            Cause::NotFound
        } else {
            Cause::Other
        }
    }
}

/// The template's instance type, read at [`TemplateRef::versions`] in order until one answers.
/// When none does, the error is the one that says most about the object: a failure that holds at
/// every version (e.g. RBAC) before "not found" at a served version, before a version the policy may
/// not read, before a version the API server does not serve; the first of equals.
pub fn instance_type(
    r: &TemplateRef<'_>,
    src: &impl ResourceSource,
) -> Result<String, TemplateError> {
    let mut real_cause: Option<(Cause, String)> = None;
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
                let cause = Cause::of(&e);
                if real_cause.as_ref().is_none_or(|(c, _)| cause < *c) {
                    real_cause = Some((cause, e));
                }
            }
        }
    }
    Err(TemplateError::Unreadable(
        real_cause.map(|(_, e)| e).unwrap_or_default(),
    ))
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
    fn a_missing_template_is_reported_as_not_found_at_the_first_version() {
        let src = Objects {
            objects: BTreeMap::new(),
            asked: RefCell::default(),
        };
        for version in [None, Some("v1beta2"), Some("v1alpha4")] {
            assert_eq!(
                instance_type(&tref(version), &src),
                Err(TemplateError::Unreadable(
                    "Cannot find infrastructure.cluster.x-k8s.io/v1beta2 named 't'".into()
                )),
                "{version:?}"
            );
        }
        assert_eq!(src.asked.borrow().len(), 6, "both versions, each time");
    }

    #[test]
    fn a_v1alpha4_ref_is_read_at_the_versions_the_policy_may_read() {
        // CAPA's upgrade data: the MachineDeployment's ref still says v1alpha4, the template is
        // served at v1beta2
        let src = Objects {
            objects: [(
                "infrastructure.cluster.x-k8s.io/v1beta2 ns/t".to_string(),
                template(json!("m5.large")),
            )]
            .into(),
            asked: RefCell::default(),
        };
        assert_eq!(
            instance_type(&tref(Some("v1alpha4")), &src),
            Ok("m5.large".into())
        );
        assert!(
            src.asked.borrow().iter().all(|a| !a.contains("v1alpha4")),
            "{:?}",
            src.asked.borrow()
        );
        // a v1beta1 ref when only v1beta2 is served: v1beta1 first, then v1beta2
        assert_eq!(
            instance_type(&tref(Some("v1beta1")), &src),
            Ok("m5.large".into())
        );
    }

    /// Kubewarden's evaluator's errors, one per version: the one that says most is kept.
    struct Failing(BTreeMap<&'static str, &'static str>);

    impl ResourceSource for Failing {
        fn get(&self, r: &Resource<'_>) -> Result<Vec<u8>, String> {
            Err(self.0[r.api_version].to_string())
        }
    }

    #[test]
    fn the_error_kept_is_the_real_cause() {
        const V2: &str = "infrastructure.cluster.x-k8s.io/v1beta2";
        const V1: &str = "infrastructure.cluster.x-k8s.io/v1beta1";
        let not_served = "error finding resource infrastructure.cluster.x-k8s.io/v1beta1 / AWSMachineTemplate: ApiError: the server could not find the requested resource";
        let not_found = "Cannot find infrastructure.cluster.x-k8s.io/v1beta2/AWSMachineTemplate named 't' inside of namespace 'Some(\"ns\")'";
        let not_granted = "Policy has not been granted access to Kubernetes infrastructure.cluster.x-k8s.io/v1beta2/AWSMachineTemplate resources. The violation has been reported.";
        let forbidden =
            "ApiError: awsmachinetemplates.infrastructure.cluster.x-k8s.io \"t\" is forbidden";
        for (v1beta1_ref_errors, want) in [
            ([(V1, not_served), (V2, not_found)], not_found),
            ([(V1, not_served), (V2, not_granted)], not_granted),
            ([(V1, not_found), (V2, forbidden)], forbidden),
            ([(V1, not_granted), (V2, not_found)], not_found),
        ] {
            let src = Failing(v1beta1_ref_errors.into());
            assert_eq!(
                instance_type(&tref(Some("v1beta1")), &src),
                Err(TemplateError::Unreadable(want.into()))
            );
        }
        assert_eq!(Cause::of(not_served), Cause::NotServed);
        assert_eq!(Cause::of("Cannot find resource x/v1/K"), Cause::NotServed);
        assert_eq!(Cause::of(not_found), Cause::NotFound);
        assert_eq!(Cause::of(not_granted), Cause::NotGranted);
        assert_eq!(Cause::of(forbidden), Cause::Other);
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
