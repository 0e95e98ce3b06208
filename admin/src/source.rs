//! What `preview` answers when the policy reads from the cluster: the instance-type table
//! ConfigMap from a file given with `--configmap`, or nowhere (then the policy falls back to its
//! built-in table, as it does in a cluster without the ConfigMap, and says so in its warning); and
//! a Cluster API object's AWSMachineTemplate from the templates among the inputs, or "not found",
//! as the policy server answers for a template that is not in the cluster.

use capa_annotator_policy::source::{Resource, ResourceSource};
use capa_core::capi;
use serde_json::Value;

/// The policy's reads, answered from the inputs: the table and the AWSMachineTemplates.
#[derive(Debug, Clone, Copy)]
pub struct InputSource<'a> {
    pub table: &'a TableSource,
    pub templates: &'a [Value],
}

impl ResourceSource for InputSource<'_> {
    fn get(&self, r: &Resource<'_>) -> Result<Vec<u8>, String> {
        let group_version = r.api_version.split_once('/');
        let Some((capi::INFRASTRUCTURE_GROUP, version)) = group_version else {
            return self.table.get(r);
        };
        if r.kind != capi::AWS_MACHINE_TEMPLATE || !capi::VERSIONS.contains(&version) {
            return self.table.get(r);
        }
        // the API server serves an object at every version of its CRD: a template read at either
        // version is the one among the inputs, whatever version it was printed at
        let meta = |t: &Value, k: &str| t.pointer(&format!("/metadata/{k}")).cloned();
        let found = self.templates.iter().find(|t| {
            let group = t
                .get("apiVersion")
                .and_then(Value::as_str)
                .and_then(|a| a.split_once('/'))
                .map(|(g, _)| g);
            group == Some(capi::INFRASTRUCTURE_GROUP)
                && meta(t, "name").as_ref().and_then(Value::as_str) == Some(r.name)
                // a template manifest without a namespace is created in kubectl's default
                && meta(t, "namespace")
                    .as_ref()
                    .and_then(Value::as_str)
                    .unwrap_or(crate::DEFAULT_NAMESPACE)
                    == r.namespace
        });
        match found {
            Some(t) => serde_json::to_vec(t).map_err(|e| e.to_string()),
            // the policy server's words for an object the cluster does not hold
            None => Err(format!(
                "Cannot find {}/{} named '{}' inside of namespace 'Some(\"{}\")' (not among the inputs of capa-admin preview: add `kubectl get awsmachinetemplates -A -o yaml`)",
                r.api_version, r.kind, r.name, r.namespace
            )),
        }
    }
}

/// The answer to the policy's `get_resource` of the table ConfigMap.
#[derive(Debug, Clone)]
pub enum TableSource {
    /// No `--configmap`: every read fails, so the built-in table answers.
    None,
    /// The ConfigMap of a file, answered whole (like a host that ignores field masks).
    File {
        name: Option<String>,
        namespace: Option<String>,
        json: Vec<u8>,
    },
}

impl TableSource {
    /// A ConfigMap object (checked to be one).
    pub fn from_configmap(input: &str, cm: &Value) -> Result<TableSource, String> {
        if cm.get("kind").and_then(Value::as_str) != Some("ConfigMap") {
            return Err(format!(
                "{input}: not a ConfigMap (kind {}); give what `kubectl get cm -n openshift-machine-api machineset-instance-types -o yaml` prints",
                cm.get("kind")
                    .map_or_else(|| "missing".to_string(), Value::to_string)
            ));
        }
        let meta = |k: &str| {
            cm.pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let json = serde_json::to_vec(cm).map_err(|e| format!("{input}: {e}"))?;
        Ok(TableSource::File {
            name: meta("name"),
            namespace: meta("namespace"),
            json,
        })
    }
}

impl ResourceSource for TableSource {
    fn get(&self, r: &Resource<'_>) -> Result<Vec<u8>, String> {
        if (r.api_version, r.kind) != ("v1", "ConfigMap") {
            // preview has no cluster: only the table and templates are answered
            return Err(format!(
                "capa-admin preview reads no {}/{} (it has no cluster); the policy in the cluster reads {}/{}",
                r.api_version, r.kind, r.namespace, r.name
            ));
        }
        let (namespace, name) = (r.namespace, r.name);
        match self {
            TableSource::None => Err("not given to the preview: --configmap FILE".to_string()),
            TableSource::File {
                name: file_name,
                namespace: file_namespace,
                json,
            } => {
                let differs =
                    |have: &Option<String>, want: &str| have.as_deref().is_some_and(|h| h != want);
                if differs(file_name, name) || differs(file_namespace, namespace) {
                    // what the cluster would answer: the policy asks for another object
                    return Err(format!(
                        "Cannot find v1/ConfigMap named '{name}' in namespace '{namespace}' (--configmap is {}/{}; see configMapName/configMapNamespace in --settings)",
                        file_namespace.as_deref().unwrap_or("?"),
                        file_name.as_deref().unwrap_or("?")
                    ));
                }
                Ok(json.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ask<'a>(namespace: &'a str, name: &'a str) -> Resource<'a> {
        Resource {
            api_version: "v1",
            kind: "ConfigMap",
            namespace,
            name,
            field_mask: "data.m5",
        }
    }

    #[test]
    fn answers_only_for_the_configmap_the_policy_asks_for() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "machineset-instance-types", "namespace": "openshift-machine-api"},
            "data": {}});
        let src = TableSource::from_configmap("cm.yaml", &cm).unwrap();
        assert!(
            src.get(&ask("openshift-machine-api", "machineset-instance-types"))
                .is_ok()
        );
        let e = src.get(&ask("capa-system", "capa-types")).unwrap_err();
        assert!(
            e.starts_with("Cannot find v1/ConfigMap named 'capa-types'"),
            "{e}"
        );
        // no metadata: answers whatever is asked
        let bare =
            TableSource::from_configmap("b", &json!({"kind": "ConfigMap", "data": {}})).unwrap();
        assert!(bare.get(&ask("a", "b")).is_ok());
        assert!(TableSource::None.get(&ask("a", "b")).is_err());
        let template = Resource {
            api_version: "infrastructure.cluster.x-k8s.io/v1beta2",
            kind: "AWSMachineTemplate",
            ..ask("a", "b")
        };
        assert!(bare.get(&template).unwrap_err().contains("reads no"));
        let e = TableSource::from_configmap("ms.yaml", &json!({"kind": "MachineSet"})).unwrap_err();
        assert!(e.contains("not a ConfigMap"), "{e}");
    }

    #[test]
    fn templates_are_answered_from_the_inputs_at_either_version() {
        let templates = [
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
            "kind": "AWSMachineTemplate", "metadata": {"name": "t", "namespace": "ns"},
            "spec": {"template": {"spec": {"instanceType": "m5.large"}}}}),
        ];
        let src = InputSource {
            table: &TableSource::None,
            templates: &templates,
        };
        let ask = |version: &'static str, namespace: &'static str| Resource {
            api_version: version,
            kind: "AWSMachineTemplate",
            namespace,
            name: "t",
            field_mask: capi::TEMPLATE_INSTANCE_TYPE_MASK,
        };
        for v in [
            "infrastructure.cluster.x-k8s.io/v1beta2",
            "infrastructure.cluster.x-k8s.io/v1beta1",
        ] {
            assert!(src.get(&ask(v, "ns")).is_ok(), "{v}");
        }
        let e = src
            .get(&ask("infrastructure.cluster.x-k8s.io/v1beta2", "other"))
            .unwrap_err();
        // the policy reads this as "not found" (its warning says the template was not found)
        assert!(
            e.starts_with("Cannot find infrastructure.cluster.x-k8s.io/v1beta2/AWSMachineTemplate named 't' inside of namespace 'Some(\"other\")'"),
            "{e}"
        );
        assert_eq!(
            capa_annotator_policy::template::Cause::of(&e),
            capa_annotator_policy::template::Cause::NotFound
        );
        // the table's questions go to the table
        assert!(src.get(&ask("v1", "ns")).is_err());
    }
}
