//! Reading MachineSets from files or stdin: YAML or JSON, one object, several documents, or a
//! `List` (what `kubectl get machinesets -A -o yaml` prints). Every error names the input and the
//! place in it.

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

/// One MachineSet read from the input.
#[derive(Debug, Clone)]
pub struct MachineSetDoc {
    pub origin: Origin,
    pub object: Value,
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

/// The MachineSets of one input, in order: a `List` (any kind ending in `List` with `items`) is
/// flattened; anything else that is not a `MachineSet` is an error.
pub fn machinesets(input: &str, text: &str) -> Result<Vec<MachineSetDoc>, InputError> {
    Ok(read_machinesets(input, text, false)?.0)
}

/// As [`machinesets`] for a file found in a directory (a GitOps tree holds kustomizations and
/// other objects too): other objects are passed over and counted, unreadable files still fail.
pub fn machinesets_in_tree(
    input: &str,
    text: &str,
) -> Result<(Vec<MachineSetDoc>, usize), InputError> {
    read_machinesets(input, text, true)
}

fn read_machinesets(
    input: &str,
    text: &str,
    pass_over_others: bool,
) -> Result<(Vec<MachineSetDoc>, usize), InputError> {
    let mut passed_over = 0;
    let mut check = |origin: &Origin, obj: &Value| -> Result<bool, InputError> {
        match check_machineset(origin, obj) {
            Ok(()) => Ok(true),
            Err(_) if pass_over_others => {
                passed_over += 1;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    };
    let mut out = Vec::new();
    for (i, doc) in documents(input, text)?.into_iter().enumerate() {
        let origin = Origin {
            input: input.to_string(),
            doc: i + 1,
            item: None,
        };
        let (_, kind) = kind_of(&doc);
        if kind.ends_with("List") && doc.get("items").is_some() {
            let Some(Value::Array(items)) = doc.get("items") else {
                return Err(InputError(format!(
                    "{origin}: items of the {kind} is not a list"
                )));
            };
            for (j, item) in items.iter().enumerate() {
                let origin = Origin {
                    item: Some(j),
                    ..origin.clone()
                };
                if check(&origin, item)? {
                    out.push(MachineSetDoc {
                        origin,
                        object: item.clone(),
                    });
                }
            }
        } else if check(&origin, &doc)? {
            out.push(MachineSetDoc {
                origin,
                object: doc,
            });
        }
    }
    Ok((out, passed_over))
}

fn check_machineset(origin: &Origin, obj: &Value) -> Result<(), InputError> {
    if !obj.is_object() {
        return Err(InputError(format!(
            "{origin}: not an object (give MachineSets, a List of them, or what `kubectl get machinesets -A -o yaml` prints)"
        )));
    }
    let (api_version, kind) = kind_of(obj);
    if kind == "MachineSet" {
        return Ok(());
    }
    let hint = if kind == "ConfigMap" {
        " (the instance-type table goes in --configmap FILE)"
    } else {
        " (give MachineSets, a List of them, or what `kubectl get machinesets -A -o yaml` prints)"
    };
    Err(InputError(format!(
        "{origin}: a {api_version} {kind}, not a MachineSet{hint}"
    )))
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
        let got = machinesets("f.yaml", &two).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].origin.to_string(), "f.yaml: document 2");
        let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: machine.openshift.io/v1beta1\n  kind: MachineSet\n- apiVersion: machine.openshift.io/v1beta1\n  kind: MachineSet\n";
        let got = machinesets("-", list).unwrap();
        assert_eq!(got[1].origin.to_string(), "-: document 1, items[1]");
        let json = r#"{"apiVersion":"v1","kind":"MachineSetList","items":[{"kind":"MachineSet"}]} {"kind":"MachineSet"}"#;
        assert_eq!(machinesets("j.json", json).unwrap().len(), 2);
        assert!(machinesets("e.yaml", "").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_input_and_the_place() {
        let e = machinesets("bad.yaml", "a: [1,\nb: 2\n").unwrap_err();
        assert!(
            e.0.starts_with("bad.yaml: document 1: not valid YAML at line"),
            "{e}"
        );
        let e = machinesets("bad.json", "{\"kind\": }").unwrap_err();
        assert!(
            e.0.starts_with("bad.json: document 1: not valid JSON at line 1, column"),
            "{e}"
        );
        let e = machinesets("cm.yaml", "apiVersion: v1\nkind: ConfigMap\n").unwrap_err();
        assert_eq!(
            e.0,
            "cm.yaml: document 1: a v1 ConfigMap, not a MachineSet (the instance-type table goes in --configmap FILE)"
        );
        let e = machinesets(
            "l.yaml",
            "kind: List\nitems:\n- kind: Pod\n  apiVersion: v1\n",
        )
        .unwrap_err();
        assert!(
            e.0.starts_with("l.yaml: document 1, items[0]: a v1 Pod, not a MachineSet"),
            "{e}"
        );
        let e = machinesets("s.yaml", "just text\n").unwrap_err();
        assert!(e.0.contains("not an object"), "{e}");
        assert!(
            single("x", &format!("{MS}---\n{MS}"))
                .unwrap_err()
                .0
                .contains("2 documents")
        );
    }

    #[test]
    fn trees_pass_over_other_objects() {
        let text =
            format!("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n---\n{MS}");
        let (found, passed_over) = machinesets_in_tree("k.yaml", &text).unwrap();
        assert_eq!((found.len(), passed_over), (1, 1));
        assert!(machinesets("k.yaml", &text).is_err());
        assert!(machinesets_in_tree("bad.yaml", "a: [").is_err());
    }
}
