//! Reading the objects to preview from files or stdin: YAML or JSON, one object, several
//! documents, or a `List` (what `kubectl get … -o yaml` prints). Machine API MachineSets and Cluster
//! API MachineSets/MachineDeployments are previewed; AWSMachineTemplates and Namespaces are what
//! the policy would read or be selected by. Every error names the input and the place in it.

use capa_core::capi;
use serde::Deserialize;
use serde_json::Value;
use std::fmt;

/// Where an object came from: `file`, document `doc` (1-based), item `item` of a List.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub input: String,
    pub doc: usize,
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.input, self.doc)?;
        if let Some(i) = self.item {
            write!(f, ", items[{i}]")?;
        }
        Ok(())
    }
}

/// One object to preview (a Machine API MachineSet, or a Cluster API MachineSet or
/// MachineDeployment) read from the input.
#[derive(Debug, Clone)]
pub struct ObjectDoc {
    pub origin: Origin,
    pub object: Value,
}

/// Everything the inputs hold: the objects to preview, and what the policy would read from the
/// cluster for them (AWSMachineTemplates) or what decides whether it sees them (Namespaces).
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub objects: Vec<ObjectDoc>,
    pub templates: Vec<Value>,
    pub namespaces: Vec<Value>,
    /// Objects of other kinds passed over in directories.
    pub passed_over: usize,
}

/// Why an input cannot be used. The message names the input and the place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Parses every document of `text` (YAML, or JSON when it starts with `{` or `[`). Empty YAML
/// documents (a trailing `---`) are skipped.
pub fn documents(input: &str, text: &str) -> Result<Vec<Value>, InputError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut docs = Vec::new();
        for (i, doc) in serde_json::Deserializer::from_str(trimmed)
            .into_iter::<Value>()
            .enumerate()
        {
            let doc = doc.map_err(|e| {
                InputError(format!(
                    "{input}: document {}: not valid JSON at line {}, column {}: {e}",
                    i + 1,
                    e.line(),
                    e.column()
                ))
            })?;
            docs.push(doc);
        }
        return Ok(docs);
    }
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = Value::deserialize(de).map_err(|e| {
            let place = e
                .location()
                .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
                .unwrap_or_default();
            InputError(format!(
                "{input}: document {}: not valid YAML{place}: {e}",
                i + 1
            ))
        })?;
        if !doc.is_null() {
            docs.push(doc);
        }
    }
    Ok(docs)
}

fn kind_of(obj: &Value) -> (&str, &str) {
    (
        obj.get("apiVersion").and_then(Value::as_str).unwrap_or("?"),
        obj.get("kind").and_then(Value::as_str).unwrap_or("?"),
    )
}

/// What an input object is to preview.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Object,
    Template,
    Namespace,
}

fn classify(obj: &Value) -> Option<Class> {
    let (api_version, kind) = kind_of(obj);
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    // any MachineSet or MachineDeployment: the policy's decision says which it leaves alone
    if capi::SCALABLE_KINDS.contains(&kind) {
        Some(Class::Object)
    } else if group == capi::INFRASTRUCTURE_GROUP && kind == capi::AWS_MACHINE_TEMPLATE {
        Some(Class::Template)
    } else if (api_version, kind) == ("v1", "Namespace") {
        Some(Class::Namespace)
    } else {
        None
    }
}

/// What `kubectl` prints for the objects preview reads.
pub const KUBECTL_HINT: &str = "give what `kubectl get machinesets -A -o yaml` or `kubectl get machinedeployments,machinesets.cluster.x-k8s.io,awsmachinetemplates -A -o yaml` prints";

/// Reads one input into `into`, in order: a `List` (any kind ending in `List` with `items`) is
/// flattened. With `pass_over_others` (a file found in a directory: a GitOps tree holds
/// kustomizations and other objects too) objects of other kinds are counted in
/// [`Inputs::passed_over`]; otherwise they are an error. Unreadable text is always an error.
pub fn read_into(
    input: &str,
    text: &str,
    pass_over_others: bool,
    into: &mut Inputs,
) -> Result<(), InputError> {
    let mut take = |origin: Origin, obj: Value| -> Result<(), InputError> {
        match classify(&obj) {
            Some(Class::Object) => into.objects.push(ObjectDoc {
                origin,
                object: obj,
            }),
            Some(Class::Template) => into.templates.push(obj),
            Some(Class::Namespace) => into.namespaces.push(obj),
            None if pass_over_others => into.passed_over += 1,
            None => return Err(not_ours(&origin, &obj)),
        }
        Ok(())
    };
    for (i, doc) in documents(input, text)?.into_iter().enumerate() {
        let origin = Origin {
            input: input.to_string(),
            doc: i + 1,
            item: None,
        };
        let kind = kind_of(&doc).1.to_string();
        match doc {
            Value::Object(mut list) if kind.ends_with("List") && list.contains_key("items") => {
                let Some(Value::Array(items)) = list.remove("items") else {
                    return Err(InputError(format!(
                        "{origin}: items of the {kind} is not a list"
                    )));
                };
                for (j, item) in items.into_iter().enumerate() {
                    take(
                        Origin {
                            item: Some(j),
                            ..origin.clone()
                        },
                        item,
                    )?;
                }
            }
            doc => take(origin, doc)?,
        }
    }
    Ok(())
}

/// The objects to preview of one input (tests and simple callers): other kinds are errors.
pub fn objects(input: &str, text: &str) -> Result<Vec<ObjectDoc>, InputError> {
    let mut inputs = Inputs::default();
    read_into(input, text, false, &mut inputs)?;
    Ok(inputs.objects)
}

fn not_ours(origin: &Origin, obj: &Value) -> InputError {
    if !obj.is_object() {
        return InputError(format!("{origin}: not an object ({KUBECTL_HINT})"));
    }
    let (api_version, kind) = kind_of(obj);
    let hint = match kind {
        "ConfigMap" => " (the instance-type table goes in --configmap FILE)".to_string(),
        "Secret" => " (preview reads no credentials: leave Secrets out)".to_string(),
        "ClusterAdmissionPolicy" | "AdmissionPolicy" => {
            " (the policy and its settings go in --settings FILE)".to_string()
        }
        _ => format!(" ({KUBECTL_HINT})"),
    };
    InputError(format!(
        "{origin}: a {api_version} {kind}, not a MachineSet, MachineDeployment, AWSMachineTemplate or Namespace{hint}"
    ))
}

/// One object from a file (`--configmap`, `--settings`): YAML or JSON, exactly one document.
pub fn single(input: &str, text: &str) -> Result<Value, InputError> {
    let mut docs = documents(input, text)?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        0 => Err(InputError(format!("{input}: empty"))),
        n => Err(InputError(format!("{input}: {n} documents, expected one"))),
    }
}

/// One input to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// A path, or `-` for stdin.
    pub path: String,
    /// Found in a directory given on the command line: objects other than MachineSets are
    /// passed over.
    pub in_tree: bool,
}

/// The inputs with each directory replaced by its `*.yaml`, `*.yml` and `*.json` files (recursively,
/// sorted by path, so the output order does not depend on the file system).
pub fn expand_dirs(inputs: &[String]) -> Result<Vec<Input>, InputError> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> Result<(), InputError> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            InputError(format!("{}: cannot read the directory: {e}", dir.display()))
        })?;
        for entry in entries {
            let path = entry
                .map_err(|e| InputError(format!("{}: {e}", dir.display())))?
                .path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for input in inputs {
        let path = std::path::Path::new(input);
        if input != "-" && path.is_dir() {
            let mut files = Vec::new();
            walk(path, &mut files)?;
            if files.is_empty() {
                return Err(InputError(format!(
                    "{input}: a directory without *.yaml, *.yml or *.json files"
                )));
            }
            files.sort();
            out.extend(files.into_iter().map(|f| Input {
                path: f.display().to_string(),
                in_tree: true,
            }));
        } else {
            out.push(Input {
                path: input.clone(),
                in_tree: false,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: &str =
        "apiVersion: machine.openshift.io/v1beta1\nkind: MachineSet\nmetadata: {name: a}\n";

    #[test]
    fn yaml_documents_lists_and_json() {
        let two = format!("{MS}---\n{}---\n", MS.replace("name: a", "name: b"));
        let got = objects("f.yaml", &two).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].origin.to_string(), "f.yaml: document 2");
        let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: machine.openshift.io/v1beta1\n  kind: MachineSet\n- apiVersion: machine.openshift.io/v1beta1\n  kind: MachineSet\n";
        let got = objects("-", list).unwrap();
        assert_eq!(got[1].origin.to_string(), "-: document 1, items[1]");
        let json = r#"{"apiVersion":"v1","kind":"MachineSetList","items":[{"kind":"MachineSet"}]} {"kind":"MachineSet"}"#;
        assert_eq!(objects("j.json", json).unwrap().len(), 2);
        assert!(objects("e.yaml", "").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_input_and_the_place() {
        let e = objects("bad.yaml", "a: [1,\nb: 2\n").unwrap_err();
        assert!(
            e.0.starts_with("bad.yaml: document 1: not valid YAML at line"),
            "{e}"
        );
        let e = objects("bad.json", "{\"kind\": }").unwrap_err();
        assert!(
            e.0.starts_with("bad.json: document 1: not valid JSON at line 1, column"),
            "{e}"
        );
        let e = objects("cm.yaml", "apiVersion: v1\nkind: ConfigMap\n").unwrap_err();
        assert_eq!(
            e.0,
            "cm.yaml: document 1: a v1 ConfigMap, not a MachineSet, MachineDeployment, AWSMachineTemplate or Namespace (the instance-type table goes in --configmap FILE)"
        );
        let e = objects("s.yaml", "apiVersion: v1\nkind: Secret\ndata: {a: b}\n").unwrap_err();
        assert!(
            e.0.ends_with("(preview reads no credentials: leave Secrets out)"),
            "{e}"
        );
        let pod = "apiVersion: v1\nkind: Pod\n";
        assert!(
            objects("p.yaml", pod)
                .unwrap_err()
                .0
                .contains("kubectl get machinedeployments")
        );
        let e = objects(
            "l.yaml",
            "kind: List\nitems:\n- kind: Pod\n  apiVersion: v1\n",
        )
        .unwrap_err();
        assert!(
            e.0.starts_with("l.yaml: document 1, items[0]: a v1 Pod, not a MachineSet"),
            "{e}"
        );
        let e = objects("s.yaml", "just text\n").unwrap_err();
        assert!(e.0.contains("not an object"), "{e}");
        assert!(
            single("x", &format!("{MS}---\n{MS}"))
                .unwrap_err()
                .0
                .contains("2 documents")
        );
    }

    #[test]
    fn cluster_api_objects_templates_and_namespaces() {
        let text = "apiVersion: v1\nkind: List\nitems:\n\
- {apiVersion: cluster.x-k8s.io/v1beta2, kind: MachineDeployment, metadata: {name: md}}\n\
- {apiVersion: cluster.x-k8s.io/v1beta1, kind: MachineSet, metadata: {name: ms}}\n\
- {apiVersion: infrastructure.cluster.x-k8s.io/v1beta2, kind: AWSMachineTemplate, metadata: {name: t}}\n\
- {apiVersion: v1, kind: Namespace, metadata: {name: team-a}}\n";
        let mut inputs = Inputs::default();
        read_into("capi.yaml", text, false, &mut inputs).unwrap();
        assert_eq!(
            (
                inputs.objects.len(),
                inputs.templates.len(),
                inputs.namespaces.len()
            ),
            (2, 1, 1)
        );
        assert_eq!(
            inputs.objects[1].origin.to_string(),
            "capi.yaml: document 1, items[1]"
        );
    }

    #[test]
    fn trees_pass_over_other_objects() {
        let text =
            format!("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n---\n{MS}");
        let mut inputs = Inputs::default();
        read_into("k.yaml", &text, true, &mut inputs).unwrap();
        assert_eq!((inputs.objects.len(), inputs.passed_over), (1, 1));
        assert!(objects("k.yaml", &text).is_err());
        assert!(read_into("bad.yaml", "a: [", true, &mut inputs).is_err());
    }
}
