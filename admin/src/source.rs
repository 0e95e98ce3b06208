//! Where `preview` finds the instance-type table ConfigMap: a file given with `--configmap`, or
//! nowhere (then the policy falls back to its built-in table, as it does in a cluster without the
//! ConfigMap, and says so in its warning).

use capa_annotator_policy::source::{Resource, ResourceSource};
use serde_json::Value;

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
            // preview has no cluster: a Cluster API object's template cannot be read
            return Err(format!(
                "capa-admin preview reads no {}/{} (it has no cluster); the policy in the cluster reads {}/{}",
                r.api_version, r.kind, r.namespace, r.name
            ));
        }
        let (namespace, name) = (r.namespace, r.name);
        match self {
            TableSource::None => {
                Err("none given to capa-admin preview: use --configmap FILE".to_string())
            }
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
}
