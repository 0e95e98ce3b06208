//! Which writes reach the policy: a ClusterAdmissionPolicy's `rules`, `objectSelector` and
//! `namespaceSelector`, rendered into a webhook as the Kubewarden controller renders them, and
//! matched against one write as the API server matches a webhook.
//!
//! The controller's rendering (kubewarden-controller,
//! internal/controller/policy_subreconciler_webhook.go): for a cluster-wide policy the namespace
//! the controller deploys policy servers into is excluded first, then the policy's
//! `matchExpressions` are appended; the policy's `matchLabels` are **not** carried over. With
//! `allowInsideAdmissionControllerNamespace` the policy's selector is used as it is.
//!
//! The API server's matching (k8s.io/apiserver, admission/plugin/webhook): a rule matches when
//! its `operations`, `apiGroups`, `apiVersions` and `resources` each hold the write's value or
//! `*`, and its `scope` (`*` when absent) allows a namespaced object. With `matchPolicy:
//! Equivalent` (the default) a write at another version of a resource a rule names is sent too,
//! converted; the objects this project handles are served at every version of their group.

use serde_json::{Map, Value, json};

/// The namespace the Kubewarden controller deploys policy servers into, by default.
pub const DEFAULT_DEPLOYMENTS_NAMESPACE: &str = "kubewarden";
/// The label the API server puts on every Namespace: its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The webhook's `namespaceSelector` for a ClusterAdmissionPolicy's `spec`.
pub fn webhook_namespace_selector(spec: &Value, deployments_namespace: &str) -> Value {
    if spec["allowInsideAdmissionControllerNamespace"] == true {
        return spec["namespaceSelector"].clone();
    }
    let mut expressions = vec![json!({"key": NAMESPACE_NAME_LABEL, "operator": "NotIn",
        "values": [deployments_namespace]})];
    expressions.extend(
        spec["namespaceSelector"]["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .cloned(),
    );
    json!({ "matchExpressions": expressions })
}

/// The terms of a label selector on the namespace-name label only.
fn name_terms(selector: &Value) -> Value {
    let labels: Map<String, Value> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k == NAMESPACE_NAME_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let expressions: Vec<Value> = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["key"] == NAMESPACE_NAME_LABEL)
        .cloned()
        .collect();
    json!({"matchLabels": labels, "matchExpressions": expressions})
}

/// One write, as the API server matches it against webhooks.
#[derive(Debug, Clone, Copy)]
struct Write<'a> {
    group: &'a str,
    version: &'a str,
    /// The plural (`machinesets`).
    resource: &'a str,
    operation: &'a str,
    /// `metadata.labels` of the object.
    object_labels: &'a Map<String, Value>,
}

/// The plural the CRDs of every kind this project reads use: the lower-case kind + `s`, `y` →
/// `ies` (machinesets, awsclusters, awsclusterstaticidentities, …).
pub fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    }
}

/// The versions the API server serves of a group's kinds this project handles: a rule naming one
/// of them matches a write at another (`matchPolicy: Equivalent`, the API server converts).
fn served_versions(group: &str) -> &'static [&'static str] {
    match group {
        crate::capi::GROUP => &crate::capi::VERSIONS,
        crate::machineset::GROUP => &["v1beta1"],
        _ => &[],
    }
}

/// The API group, version, kind and resource (the plural: `machinesets`, `machinedeployments`)
/// of an object of the kinds this project handles.
pub fn resource_of(object: &Value) -> (&str, &str, &str, String) {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    (group, version, kind, plural(kind))
}

/// Why a write does not reach the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSent {
    /// No rule names its group, version, resource and operation.
    Rules,
    /// The policy's `objectSelector` does not select the object's labels.
    ObjectSelector,
    /// The webhook's namespaceSelector does not select the namespace.
    NamespaceSelector { namespace: String },
}

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotSent::Rules => f.write_str("not in the policy's rules"),
            NotSent::ObjectSelector => f.write_str("not selected by the policy's objectSelector"),
            NotSent::NamespaceSelector { namespace } => write!(
                f,
                "namespace {namespace} not selected by the policy's namespaceSelector"
            ),
        }
    }
}

/// What a ClusterAdmissionPolicy sends to the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    rules: Vec<Value>,
    exact: bool,
    object_selector: Value,
    namespace_selector: Value,
    /// Its terms on the namespace-name label only: what can be judged without the labels.
    namespace_name_terms: Value,
}

impl Scope {
    /// The scope of a ClusterAdmissionPolicy's `spec`, its policy servers in `deployments_namespace`.
    pub fn of_policy(spec: &Value, deployments_namespace: &str) -> Scope {
        let namespace_selector = webhook_namespace_selector(spec, deployments_namespace);
        Scope {
            rules: spec["rules"].as_array().cloned().unwrap_or_default(),
            exact: spec["matchPolicy"] == "Exact",
            object_selector: spec["objectSelector"].clone(),
            namespace_name_terms: name_terms(&namespace_selector),
            namespace_selector,
        }
    }

    /// The label keys the namespaceSelector reads.
    fn namespace_label_keys(&self) -> Vec<&str> {
        let sel = &self.namespace_selector;
        let mut keys: Vec<&str> = sel["matchLabels"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys().map(String::as_str))
            .chain(
                sel["matchExpressions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["key"].as_str()),
            )
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Whether a rule names the write (namespaced objects only).
    fn rules_match(&self, w: &Write<'_>) -> bool {
        let has = |rule: &Value, field: &str, value: &str| {
            rule[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|v| v == "*" || v == value)
        };
        let resource_matches = |rule: &Value| {
            rule["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                // `*` is every resource, `*/*` every resource and subresource; `x/y` names a
                // subresource, which a write of the object itself is not
                .any(|r| r == "*" || r == "*/*" || r == w.resource)
        };
        self.rules.iter().any(|rule| {
            let scope_ok = matches!(rule["scope"].as_str(), None | Some("*" | "Namespaced"));
            let served = served_versions(w.group);
            let equivalent = !self.exact
                && served.contains(&w.version)
                && served.iter().any(|v| has(rule, "apiVersions", v));
            let version_ok = has(rule, "apiVersions", w.version) || equivalent;
            scope_ok
                && has(rule, "operations", w.operation)
                && has(rule, "apiGroups", w.group)
                && version_ok
                && resource_matches(rule)
        })
    }

    /// Whether the API server sends `operation` of `object` to the policy. `namespace_labels`:
    /// the labels of the object's namespace, or `None` when they are not known — then the
    /// namespaceSelector's terms on the label every Namespace carries (its name) are judged and its
    /// terms on other labels are taken as met, so `Err` means it is certain the policy does not see
    /// the write. An object without a namespace is judged by the rules and objectSelector only.
    pub fn decide(
        &self,
        object: &Value,
        operation: &str,
        namespace_labels: Option<&Map<String, Value>>,
    ) -> Result<(), NotSent> {
        let (group, version, _, resource) = resource_of(object);
        let empty = Map::new();
        let write = Write {
            group,
            version,
            resource: &resource,
            operation,
            object_labels: object
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .unwrap_or(&empty),
        };
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        let (selector, labels) = match namespace_labels {
            Some(labels) => (&self.namespace_selector, labels),
            None => (&self.namespace_name_terms, &empty),
        };
        self.sends(&write, namespace.map(|n| (n, labels)), selector)
    }

    /// Whether a term of the namespaceSelector reads a label other than the namespace's name.
    pub fn reads_namespace_labels(&self) -> bool {
        self.namespace_label_keys()
            .iter()
            .any(|k| *k != NAMESPACE_NAME_LABEL)
    }

    /// Whether the API server sends `w` to the policy, its namespace carrying `namespace_labels`
    /// judged by `namespace_selector` (`None`: the object names no namespace, so the
    /// namespaceSelector is not decided here).
    fn sends(
        &self,
        w: &Write<'_>,
        namespace: Option<(&str, &Map<String, Value>)>,
        namespace_selector: &Value,
    ) -> Result<(), NotSent> {
        if !self.rules_match(w) {
            return Err(NotSent::Rules);
        }
        if !self.object_selector.is_null()
            && !crate::capi::selector_matches(&self.object_selector, w.object_labels)
        {
            return Err(NotSent::ObjectSelector);
        }
        if let Some((name, labels)) = namespace {
            let mut labels = labels.clone();
            labels.insert(NAMESPACE_NAME_LABEL.to_string(), Value::from(name));
            if !crate::capi::selector_matches(namespace_selector, &labels) {
                return Err(NotSent::NamespaceSelector {
                    namespace: name.to_string(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write<'a>(
        group: &'a str,
        version: &'a str,
        resource: &'a str,
        labels: &'a Map<String, Value>,
    ) -> Write<'a> {
        Write {
            group,
            version,
            resource,
            operation: "CREATE",
            object_labels: labels,
        }
    }

    /// `deploy/`'s policy and its Cluster API component's rule.
    fn deploy_spec() -> Value {
        json!({
            "rules": [
                {"apiGroups": ["machine.openshift.io"], "apiVersions": ["v1beta1"],
                 "resources": ["machinesets"], "operations": ["CREATE", "UPDATE"]},
                {"apiGroups": ["cluster.x-k8s.io"], "apiVersions": ["v1beta1", "v1beta2"],
                 "resources": ["machinesets", "machinedeployments"], "operations": ["CREATE", "UPDATE"]},
            ],
            "namespaceSelector": {
                "matchLabels": {"team": "infra"},
                "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                      "values": ["openshift-machine-api"]}]},
        })
    }

    #[test]
    fn the_controller_drops_match_labels_and_excludes_its_namespace() {
        let scope = Scope::of_policy(&deploy_spec(), "kubewarden");
        assert_eq!(
            scope.namespace_selector,
            json!({"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kubewarden"]},
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["openshift-machine-api"]},
            ]})
        );
        assert_eq!(
            scope.namespace_label_keys(),
            ["kubernetes.io/metadata.name"]
        );
        let mut inside = deploy_spec();
        inside["allowInsideAdmissionControllerNamespace"] = json!(true);
        assert_eq!(
            webhook_namespace_selector(&inside, "kubewarden"),
            inside["namespaceSelector"]
        );
    }

    #[test]
    fn rules_and_selectors_decide() {
        let scope = Scope::of_policy(&deploy_spec(), "kubewarden");
        let none = Map::new();
        let ms = write("machine.openshift.io", "v1beta1", "machinesets", &none);
        let no_labels = Map::new();
        assert_eq!(
            scope.sends(
                &ms,
                Some(("openshift-machine-api", &no_labels)),
                &scope.namespace_selector
            ),
            Ok(())
        );
        // matchLabels were dropped: the label is not needed
        assert_eq!(
            scope.sends(&ms, Some(("team-a", &no_labels)), &scope.namespace_selector),
            Err(NotSent::NamespaceSelector {
                namespace: "team-a".into()
            })
        );
        assert_eq!(scope.sends(&ms, None, &scope.namespace_selector), Ok(()));
        let md = write("cluster.x-k8s.io", "v1beta2", "machinedeployments", &none);
        assert!(scope.rules_match(&md));
        let pod = write("", "v1", "pods", &none);
        assert_eq!(
            scope.sends(&pod, None, &scope.namespace_selector),
            Err(NotSent::Rules)
        );
        let delete = Write {
            operation: "DELETE",
            ..ms
        };
        assert!(!scope.rules_match(&delete));
    }

    #[test]
    fn what_the_refresher_may_resubmit_without_namespace_labels() {
        let scope = Scope::of_policy(&deploy_spec(), "kubewarden");
        let ms = |ns: &str| {
            json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
                   "metadata": {"namespace": ns, "name": "w"}})
        };
        assert!(
            scope
                .decide(&ms("openshift-machine-api"), "UPDATE", None)
                .is_ok()
        );
        assert!(scope.decide(&ms("team-a"), "UPDATE", None).is_err());
        assert!(
            scope
                .decide(&ms("openshift-machine-api"), "DELETE", None)
                .is_err()
        );
        let md = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                        "metadata": {"namespace": "openshift-machine-api", "name": "md"}});
        assert!(scope.decide(&md, "UPDATE", None).is_ok());
        assert_eq!(
            resource_of(&md),
            (
                "cluster.x-k8s.io",
                "v1beta2",
                "MachineDeployment",
                "machinedeployments".into()
            )
        );
        // with the labels known, a term on another label decides
        let team = json!({"team": "infra"}).as_object().cloned().unwrap();
        let labelled_scope = Scope::of_policy(
            &json!({"rules": deploy_spec()["rules"], "namespaceSelector": {
            "matchExpressions": [{"key": "team", "operator": "In", "values": ["infra"]}]}}),
            "kubewarden",
        );
        assert!(labelled_scope.reads_namespace_labels());
        assert!(
            labelled_scope
                .decide(&ms("team-a"), "UPDATE", Some(&team))
                .is_ok()
        );
        assert_eq!(
            labelled_scope.decide(&ms("team-a"), "UPDATE", Some(&Map::new())),
            Err(NotSent::NamespaceSelector {
                namespace: "team-a".into()
            })
        );
        // a term on another label: the namespace may be selected, so the write may be sent
        let labelled = json!({"rules": deploy_spec()["rules"], "namespaceSelector": {
            "matchExpressions": [{"key": "team", "operator": "In", "values": ["infra"]}]}});
        let scope = Scope::of_policy(&labelled, "kubewarden");
        assert!(scope.decide(&ms("team-a"), "UPDATE", None).is_ok());
        // but never in the controller's own namespace, whatever its labels
        assert!(scope.decide(&ms("kubewarden"), "UPDATE", None).is_err());
    }

    #[test]
    fn versions_wildcards_scope_and_object_selector() {
        let none = Map::new();
        let v1beta1_only = json!({"rules": [{"apiGroups": ["cluster.x-k8s.io"],
            "apiVersions": ["v1beta1"], "resources": ["machinedeployments"], "operations": ["*"]}]});
        let md2 = write("cluster.x-k8s.io", "v1beta2", "machinedeployments", &none);
        // Equivalent (the default): converted and sent
        assert!(Scope::of_policy(&v1beta1_only, "kw").rules_match(&md2));
        // not to a version the API server does not serve
        let mut alpha = v1beta1_only.clone();
        alpha["rules"][0]["apiVersions"] = json!(["v1alpha3"]);
        assert!(!Scope::of_policy(&alpha, "kw").rules_match(&md2));
        assert_eq!(
            plural("AWSClusterStaticIdentity"),
            "awsclusterstaticidentities"
        );
        let mut exact = v1beta1_only.clone();
        exact["matchPolicy"] = json!("Exact");
        assert!(!Scope::of_policy(&exact, "kw").rules_match(&md2));
        let cluster_scope = json!({"rules": [{"apiGroups": ["*"], "apiVersions": ["*"],
            "resources": ["*"], "operations": ["*"], "scope": "Cluster"}]});
        assert!(!Scope::of_policy(&cluster_scope, "kw").rules_match(&md2));
        let subresource = json!({"rules": [{"apiGroups": ["*"], "apiVersions": ["*"],
            "resources": ["machinedeployments/scale"], "operations": ["*"]}]});
        assert!(!Scope::of_policy(&subresource, "kw").rules_match(&md2));
        let mut selected = json!({"rules": [{"apiGroups": ["*"], "apiVersions": ["*"],
            "resources": ["*/*"], "operations": ["*"]}],
            "objectSelector": {"matchLabels": {"autoscale": "true"}}});
        let scope = Scope::of_policy(&selected, "kw");
        assert_eq!(
            scope.sends(&md2, None, &scope.namespace_selector),
            Err(NotSent::ObjectSelector)
        );
        let labels = json!({"autoscale": "true"}).as_object().cloned().unwrap();
        let labelled = Write {
            object_labels: &labels,
            ..md2
        };
        assert_eq!(
            scope.sends(&labelled, None, &scope.namespace_selector),
            Ok(())
        );
        // the controller's own namespace is never sent
        assert_eq!(
            scope.sends(&labelled, Some(("kw", &none)), &scope.namespace_selector),
            Err(NotSent::NamespaceSelector {
                namespace: "kw".into()
            })
        );
        selected["allowInsideAdmissionControllerNamespace"] = json!(true);
        let scope = Scope::of_policy(&selected, "kw");
        assert_eq!(
            scope.sends(&labelled, Some(("kw", &none)), &scope.namespace_selector),
            Ok(())
        );
    }
}
