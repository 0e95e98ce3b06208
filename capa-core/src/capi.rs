//! Cluster API on AWS: which `cluster.x-k8s.io` objects scale from zero,
//! how their `spec.template.spec.infrastructureRef` names the `AWSMachineTemplate` that holds the
//! instance type, and where that type is in the template. Shapes checked against real objects in
//! `e2e-tests/fixtures/capi-sources/` (`e2e-tests/tests/capi.rs`).

use serde_json::Value;
use thiserror::Error;

/// The API group of Cluster API's MachineSet and MachineDeployment.
pub const GROUP: &str = "cluster.x-k8s.io";
/// The kinds the cluster-autoscaler's clusterapi provider scales (and reads annotations from).
pub const SCALABLE_KINDS: [&str; 2] = ["MachineSet", "MachineDeployment"];
/// The versions served, current first: Cluster API's and CAPA's (both moved from v1beta1 to
/// v1beta2). Asked in this order when nothing names the version.
pub const VERSIONS: [&str; 2] = ["v1beta2", "v1beta1"];
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

    /// The versions to read the referenced object at, in order: the ref's own when it is one of
    /// [`VERSIONS`] (the version Cluster API reads), then the other [`VERSIONS`]. A ref naming
    /// another version (an old `v1alpha4` left by an upgrade, a version the provider no longer
    /// serves) is read at [`VERSIONS`], as a ref without a version is: those are the versions
    /// readers are granted, and the API server serves an object at every version of its CRD.
    pub fn versions(&self) -> Vec<&str> {
        let own = self.version.filter(|v| VERSIONS.contains(v));
        own.into_iter()
            .chain(VERSIONS.into_iter().filter(|v| Some(*v) != own))
            .collect()
    }

    /// Whether the ref names a version other than [`VERSIONS`] (for messages).
    pub fn names_another_version(&self) -> bool {
        self.version.is_some_and(|v| !VERSIONS.contains(&v))
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
    object_ref(obj, "/spec/template/spec/infrastructureRef")
}

/// A reference at `pointer` in `obj`, read like [`infrastructure_ref`].
fn object_ref<'a>(obj: &'a Value, pointer: &str) -> Result<TemplateRef<'a>, RefError> {
    let r = obj
        .pointer(pointer)
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

/// The label Cluster API puts on the objects of a cluster: the name of their `Cluster`.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// CAPA's cluster kinds that carry the AWS region: `AWSCluster` (the Cluster's infrastructureRef)
/// and, for EKS, `AWSManagedControlPlane` (its controlPlaneRef).
pub const AWS_CLUSTER: &str = "AWSCluster";
pub const AWS_MANAGED_CONTROL_PLANE: &str = "AWSManagedControlPlane";
pub const CONTROL_PLANE_GROUP: &str = "controlplane.cluster.x-k8s.io";
/// The identity kind whose Secret the refresher may use (CAPA's other kinds, the controller's own
/// identity and role identities, need CAPA's controller credentials).
pub const AWS_CLUSTER_STATIC_IDENTITY: &str = "AWSClusterStaticIdentity";
/// The keys of an AWSClusterStaticIdentity's Secret, as CAPA reads them (case-sensitive).
pub const STATIC_IDENTITY_ACCESS_KEY_ID: &str = "AccessKeyID";
pub const STATIC_IDENTITY_SECRET_ACCESS_KEY: &str = "SecretAccessKey";
pub const STATIC_IDENTITY_SESSION_TOKEN: &str = "SessionToken";

/// The name of the `Cluster` an object belongs to: `spec.clusterName` (required on
/// MachineDeployments and MachineSets), else the [`CLUSTER_NAME_LABEL`].
pub fn cluster_name(obj: &Value) -> Option<&str> {
    obj.pointer("/spec/clusterName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            obj.pointer("/metadata/labels")
                .and_then(|l| l.get(CLUSTER_NAME_LABEL))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
}

/// Where a `Cluster`'s AWS region is: its infrastructureRef when that is an AWSCluster, else its
/// controlPlaneRef when that is an AWSManagedControlPlane (EKS); `None` for other providers.
pub fn region_holder(cluster: &Value) -> Option<TemplateRef<'_>> {
    if let Ok(r) = object_ref(cluster, "/spec/infrastructureRef")
        && r.group == INFRASTRUCTURE_GROUP
        && r.kind == AWS_CLUSTER
    {
        return Some(r);
    }
    object_ref(cluster, "/spec/controlPlaneRef")
        .ok()
        .filter(|r| r.group == CONTROL_PLANE_GROUP && r.kind == AWS_MANAGED_CONTROL_PLANE)
}

/// `spec.region` of an AWSCluster or AWSManagedControlPlane.
pub fn region(holder: &Value) -> Option<&str> {
    holder
        .pointer("/spec/region")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `spec.identityRef` (kind, name) of an AWSCluster or AWSManagedControlPlane; CAPA's default
/// without one is its controller's own identity.
pub fn identity_ref(holder: &Value) -> Option<(&str, &str)> {
    let r = holder.pointer("/spec/identityRef")?;
    let kind = r
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())?;
    let name = r
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())?;
    Some((kind, name))
}

/// `spec.secretRef` of an AWSClusterStaticIdentity (a Secret name in CAPA's namespace).
pub fn static_identity_secret(identity: &Value) -> Option<&str> {
    identity
        .pointer("/spec/secretRef")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Which namespaces may use an AWSClusterStaticIdentity (`spec.allowedNamespaces`), as CAPA
/// decides before it uses one: absent = none, `{}` = any, else the namespaces of `list` and those
/// whose labels match `selector` (an empty selector matches none).
#[derive(Debug, Clone, PartialEq)]
pub enum AllowedNamespaces<'a> {
    None,
    Any,
    Some {
        list: Vec<&'a str>,
        selector: Option<&'a Value>,
    },
}

pub fn allowed_namespaces(identity: &Value) -> AllowedNamespaces<'_> {
    let Some(allowed) = identity
        .pointer("/spec/allowedNamespaces")
        .and_then(Value::as_object)
    else {
        return AllowedNamespaces::None;
    };
    if allowed.is_empty() {
        return AllowedNamespaces::Any;
    }
    let list = allowed
        .get("list")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let selector = allowed.get("selector").filter(|s| !selector_is_empty(s));
    AllowedNamespaces::Some { list, selector }
}

fn selector_is_empty(selector: &Value) -> bool {
    let empty = |k: &str| {
        selector.get(k).is_none_or(|v| {
            v.is_null()
                || v.as_object().is_some_and(serde_json::Map::is_empty)
                || v.as_array().is_some_and(Vec::is_empty)
        })
    };
    empty("matchLabels") && empty("matchExpressions")
}

/// Whether `labels` match a Kubernetes label selector (`matchLabels` and `matchExpressions` with
/// In, NotIn, Exists, DoesNotExist, all ANDed). An unknown operator matches nothing.
pub fn selector_matches(selector: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let match_labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k).is_some_and(|l| Some(l) == v.as_str()));
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => label(key).is_some_and(|l| values.contains(&l)),
                Some("NotIn") => label(key).is_none_or(|l| !values.contains(&l)),
                Some("Exists") => label(key).is_some(),
                Some("DoesNotExist") => label(key).is_none(),
                _ => false,
            }
        });
    match_labels && expressions
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
    fn cluster_region_and_identity() {
        let md = json!({"spec": {"clusterName": "c1"}, "metadata": {"labels": {CLUSTER_NAME_LABEL: "other"}}});
        assert_eq!(cluster_name(&md), Some("c1"));
        let labelled = json!({"metadata": {"labels": {CLUSTER_NAME_LABEL: "c2"}}});
        assert_eq!(cluster_name(&labelled), Some("c2"));
        assert_eq!(cluster_name(&json!({})), None);
        let cluster = json!({"metadata": {"namespace": "ns"}, "spec": {
            "infrastructureRef": {"apiGroup": INFRASTRUCTURE_GROUP, "kind": "AWSCluster", "name": "c1"}}});
        let r = region_holder(&cluster).unwrap();
        assert_eq!((r.kind, r.name, r.namespace), ("AWSCluster", "c1", "ns"));
        let eks = json!({"metadata": {"namespace": "ns"}, "spec": {
            "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "AWSManagedCluster", "name": "c"},
            "controlPlaneRef": {"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "AWSManagedControlPlane", "name": "cp"}}});
        assert_eq!(region_holder(&eks).unwrap().kind, AWS_MANAGED_CONTROL_PLANE);
        let docker = json!({"spec": {"infrastructureRef": {"apiGroup": INFRASTRUCTURE_GROUP, "kind": "DockerCluster", "name": "d"}}});
        assert!(region_holder(&docker).is_none());
        let aws = json!({"spec": {"region": "eu-west-1", "identityRef": {"kind": "AWSClusterStaticIdentity", "name": "id"}}});
        assert_eq!(region(&aws), Some("eu-west-1"));
        assert_eq!(identity_ref(&aws), Some(("AWSClusterStaticIdentity", "id")));
        assert_eq!(identity_ref(&json!({"spec": {}})), None);
        assert_eq!(
            static_identity_secret(&json!({"spec": {"secretRef": "s"}})),
            Some("s")
        );
    }

    #[test]
    fn allowed_namespaces_as_capa_reads_them() {
        let id = |a: Value| json!({"spec": {"secretRef": "s", "allowedNamespaces": a}});
        assert_eq!(
            allowed_namespaces(&json!({"spec": {}})),
            AllowedNamespaces::None
        );
        assert_eq!(allowed_namespaces(&id(json!({}))), AllowedNamespaces::Any);
        // the Rancher docs' identity
        assert_eq!(
            allowed_namespaces(&id(json!({"list": ["fleet-default"]}))),
            AllowedNamespaces::Some {
                list: vec!["fleet-default"],
                selector: None
            }
        );
        // CAPA's docs: a selector on namespace labels; an empty one selects nothing
        let sel = json!({"matchLabels": {"cluster.x-k8s.io/ns": "testlabel"}});
        let with_selector = id(json!({"selector": sel}));
        let AllowedNamespaces::Some {
            list,
            selector: Some(s),
        } = allowed_namespaces(&with_selector)
        else {
            panic!()
        };
        assert!(list.is_empty());
        let labels = |v: Value| v.as_object().unwrap().clone();
        assert!(selector_matches(
            s,
            &labels(json!({"cluster.x-k8s.io/ns": "testlabel", "x": "y"}))
        ));
        assert!(!selector_matches(
            s,
            &labels(json!({"cluster.x-k8s.io/ns": "other"}))
        ));
        assert_eq!(
            allowed_namespaces(&id(json!({"selector": {"matchLabels": {}}}))),
            AllowedNamespaces::Some {
                list: vec![],
                selector: None
            }
        );
        let exprs = json!({"matchExpressions": [
            {"key": "team", "operator": "In", "values": ["a", "b"]},
            {"key": "frozen", "operator": "DoesNotExist"}]});
        assert!(selector_matches(&exprs, &labels(json!({"team": "b"}))));
        assert!(!selector_matches(
            &exprs,
            &labels(json!({"team": "b", "frozen": "1"}))
        ));
        assert!(!selector_matches(&exprs, &labels(json!({}))));
    }

    #[test]
    fn a_ref_is_read_at_its_own_version_first_then_at_the_current_ones() {
        let at = |version| TemplateRef {
            group: INFRASTRUCTURE_GROUP,
            version,
            kind: AWS_MACHINE_TEMPLATE,
            name: "t",
            namespace: "ns",
        };
        assert_eq!(at(None).versions(), ["v1beta2", "v1beta1"]);
        assert_eq!(at(Some("v1beta2")).versions(), ["v1beta2", "v1beta1"]);
        // a v1beta1 ref: Cluster API reads v1beta1, current CAPA serves v1beta2 only
        assert_eq!(at(Some("v1beta1")).versions(), ["v1beta1", "v1beta2"]);
        // CAPA's upgrade data: a v1alpha4 ref left on a v1beta1 MachineDeployment
        assert_eq!(at(Some("v1alpha4")).versions(), ["v1beta2", "v1beta1"]);
        assert!(at(Some("v1alpha4")).names_another_version());
        assert!(!at(Some("v1beta1")).names_another_version());
        assert!(!at(None).names_another_version());
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
