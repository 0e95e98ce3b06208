//! capa-admin: the cluster admin's tool for capa-annotator.
//!
//! `preview` reads Machine API MachineSets and Cluster API MachineSets/MachineDeployments (with
//! their AWSMachineTemplates) from files or stdin and runs on each the policy's own decision — the
//! code `policy.wasm` is built from, natively — as a CREATE at admission, with the built-in table
//! or a table ConfigMap from a file. It needs no cluster access and no network; the same code runs
//! in the browser playground (`playground/`).
//!
//! - [`input`]: YAML/JSON documents and Lists, errors that name the file and the place;
//! - [`source`]: what the policy reads: the table ConfigMap (`--configmap`), the templates;
//! - [`preview`]: the decision per object and the summary counts;
//! - [`render`]: text and JSON output.

pub mod input;
pub mod preview;
pub mod render;
pub mod source;

use capa_annotator_policy::settings::Settings;
use capa_core::scope::{self, Scope};
use input::InputError;
use serde_json::Value;
use source::{InputSource, TableSource};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
    /// The objects as admission would store them.
    Yaml,
}

/// What `preview` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct PreviewOptions {
    /// Files (`-` is stdin), directories already expanded.
    pub inputs: Vec<input::Input>,
    pub configmap: Option<String>,
    pub settings: Option<String>,
    /// The Kubewarden controller's namespace, which a ClusterAdmissionPolicy's webhook never
    /// sends (`kubewarden` when `None`).
    pub kubewarden_namespace: Option<String>,
    pub format: Format,
    pub patch: bool,
    pub fail_on_change: bool,
}

/// Exit status: everything read, nothing asked to fail.
pub const EXIT_OK: u8 = 0;
/// `--fail-on-change` and something would change.
pub const EXIT_CHANGES: u8 = 1;
/// An input, the settings or the ConfigMap cannot be used.
pub const EXIT_INPUT: u8 = 2;

/// Reads one input (`-` = `stdin`).
fn read(name: &str, stdin: &mut dyn std::io::Read) -> Result<String, InputError> {
    let mut text = String::new();
    let result = if name == "-" {
        stdin.read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(name).map(|t| text = t)
    };
    result.map_err(|e| InputError(format!("{}: cannot read: {e}", display_name(name))))?;
    Ok(text)
}

fn display_name(name: &str) -> &str {
    if name == "-" { "<stdin>" } else { name }
}

/// The policy settings of `--settings`: the `settings` map of a ClusterAdmissionPolicy, or a
/// whole ClusterAdmissionPolicy / AdmissionPolicy (its `spec.settings`; then its rules and
/// selectors decide which objects it sees: the [`Scope`]).
fn load_settings(
    name: &str,
    text: &str,
    kubewarden_namespace: &str,
) -> Result<(Value, Settings, Option<Scope>), InputError> {
    let value = input::single(name, text)?;
    let (value, scope) = match value.get("kind").and_then(Value::as_str) {
        Some(kind @ ("ClusterAdmissionPolicy" | "AdmissionPolicy")) => {
            let mut spec = value.get("spec").cloned().unwrap_or(Value::Null);
            if kind == "AdmissionPolicy" {
                // a namespaced policy sees its own namespace only
                let ns = value
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(DEFAULT_NAMESPACE);
                spec["namespaceSelector"] = serde_json::json!({"matchExpressions": [{
                    "key": scope::NAMESPACE_NAME_LABEL, "operator": "In", "values": [ns]}]});
                spec["allowInsideAdmissionControllerNamespace"] = Value::Bool(true);
            }
            let scope = Scope::of_policy(&spec, kubewarden_namespace);
            (
                spec.get("settings").cloned().unwrap_or(Value::Null),
                Some(scope),
            )
        }
        _ => (value, None),
    };
    let settings = Settings::from_value(&value)
        .map_err(|e| InputError(format!("{name}: invalid policy settings: {e}")))?;
    Ok((value, settings, scope))
}

/// What a run printed and how it ends.
pub struct Outcome {
    pub stdout: String,
    /// Notes for stderr: objects passed over in directories, what could not be decided.
    pub notes: Vec<String>,
    pub exit: u8,
}

/// One input's text, already read.
#[derive(Debug, Clone, Copy)]
pub struct Text<'a> {
    /// Its name in messages and reports.
    pub name: &'a str,
    pub text: &'a str,
    /// Found in a directory: objects of other kinds are passed over.
    pub in_tree: bool,
}

/// A preview of texts already read (what the browser playground runs, and `run_preview` once it
/// has read its files).
#[derive(Debug, Clone, Default)]
pub struct TextRequest<'a> {
    pub inputs: Vec<Text<'a>>,
    pub configmap: Option<Text<'a>>,
    pub settings: Option<Text<'a>>,
    /// The Kubewarden controller's namespace (`kubewarden` when `None`).
    pub kubewarden_namespace: Option<&'a str>,
    pub format: Format,
    pub patch: bool,
    pub fail_on_change: bool,
}

/// Runs `preview`. Every input is read and checked before anything is printed: on an input
/// error the result is `Err` and nothing is printed as a result.
pub fn run_preview(
    opts: &PreviewOptions,
    stdin: &mut dyn std::io::Read,
) -> Result<Outcome, InputError> {
    let stdin_readers = opts.inputs.iter().filter(|i| i.path == "-").count()
        + [&opts.settings, &opts.configmap]
            .iter()
            .filter(|f| f.as_deref() == Some("-"))
            .count();
    if stdin_readers > 1 {
        return Err(InputError("stdin (-) can be read only once".to_string()));
    }
    let mut read_one = |name: &str| read(name, stdin);
    let settings = opts.settings.as_deref().map(&mut read_one).transpose()?;
    let configmap = opts.configmap.as_deref().map(&mut read_one).transpose()?;
    let texts = opts
        .inputs
        .iter()
        .map(|i| read_one(&i.path))
        .collect::<Result<Vec<_>, _>>()?;
    fn text<'a>(name: &'a str, text: &'a str) -> Text<'a> {
        Text {
            name: display_name(name),
            text,
            in_tree: false,
        }
    }
    let request = TextRequest {
        inputs: opts
            .inputs
            .iter()
            .zip(&texts)
            .map(|(i, t)| Text {
                in_tree: i.in_tree,
                ..text(&i.path, t)
            })
            .collect(),
        configmap: opts
            .configmap
            .as_deref()
            .zip(configmap.as_deref())
            .map(|(n, t)| text(n, t)),
        settings: opts
            .settings
            .as_deref()
            .zip(settings.as_deref())
            .map(|(n, t)| text(n, t)),
        kubewarden_namespace: opts.kubewarden_namespace.as_deref(),
        format: opts.format,
        patch: opts.patch,
        fail_on_change: opts.fail_on_change,
    };
    preview_texts(&request)
}

/// Runs `preview` on texts already read.
pub fn preview_texts(req: &TextRequest<'_>) -> Result<Outcome, InputError> {
    let (settings_json, settings, scope) = match &req.settings {
        Some(t) => load_settings(
            t.name,
            t.text,
            req.kubewarden_namespace
                .unwrap_or(scope::DEFAULT_DEPLOYMENTS_NAMESPACE),
        )?,
        None => (Value::Object(Default::default()), Settings::default(), None),
    };
    let table = match &req.configmap {
        Some(t) => {
            let cm = input::single(t.name, t.text)?;
            TableSource::from_configmap(t.name, &cm).map_err(InputError)?
        }
        None => TableSource::None,
    };
    let mut notes = Vec::new();
    let mut inputs = input::Inputs::default();
    for t in &req.inputs {
        let before = inputs.passed_over;
        input::read_into(t.name, t.text, t.in_tree, &mut inputs)?;
        let passed_over = inputs.passed_over - before;
        if passed_over == 1 {
            notes.push(format!(
                "{}: passed over 1 object that is not a MachineSet, MachineDeployment, AWSMachineTemplate or Namespace",
                t.name
            ));
        } else if passed_over > 1 {
            notes.push(format!(
                "{}: passed over {passed_over} objects that are not MachineSets, MachineDeployments, AWSMachineTemplates or Namespaces",
                t.name
            ));
        }
    }
    // the API server gives every namespaced object the namespace of its request: a manifest
    // without one (kustomize or `kubectl -n` usually adds it) is created in kubectl's default
    for d in &inputs.objects {
        if !names_namespace(&d.object) {
            notes.push(format!(
                "{}: no metadata.namespace: previewed as created in namespace {DEFAULT_NAMESPACE}",
                d.origin
            ));
        }
    }
    let src = InputSource {
        table: &table,
        templates: &inputs.templates,
    };
    let previews: Vec<preview::Preview> = inputs
        .objects
        .iter()
        .map(|d| match &scope {
            Some(scope) => {
                let admitted = preview::as_admitted(&d.object);
                match sent(scope, &admitted, &inputs.namespaces, &mut notes) {
                    Ok(()) => preview::preview(d, &settings_json, &settings, &src),
                    Err(why) => preview::not_sent(d, why.to_string()),
                }
            }
            None => preview::preview(d, &settings_json, &settings, &src),
        })
        .collect();
    let summary = preview::Summary::of(&previews);
    let info = render::TableInfo {
        configmap: req.configmap.map(|t| t.name.to_string()),
    };
    let stdout = match req.format {
        Format::Text => render::text(&previews, &summary, &info, req.patch),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&render::json(&previews, &summary, &info))
                .unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Yaml => render::yaml(&previews),
    };
    let exit = if req.fail_on_change && summary.would_change > 0 {
        EXIT_CHANGES
    } else {
        EXIT_OK
    };
    Ok(Outcome {
        stdout,
        notes,
        exit,
    })
}

/// The namespace `kubectl` creates an object in when neither the object nor the command names one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Whether `object` names its namespace (`metadata.namespace`, not null).
pub fn names_namespace(object: &Value) -> bool {
    object
        .pointer("/metadata/namespace")
        .is_some_and(|n| !n.is_null())
}

/// Sets `metadata.namespace` to [`DEFAULT_NAMESPACE`] when it is missing; whether it did.
pub fn default_namespace(object: &mut Value) -> bool {
    if names_namespace(object) {
        return false;
    }
    let Some(meta) = object.as_object_mut().map(|o| {
        o.entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()))
    }) else {
        return false;
    };
    match meta.as_object_mut() {
        Some(m) => {
            m.insert("namespace".into(), Value::from(DEFAULT_NAMESPACE));
            true
        }
        None => false,
    }
}

/// Whether the policy's ClusterAdmissionPolicy sends a CREATE of `object` (as admitted: its
/// namespace defaulted) to the policy. The namespace's labels come from the Namespace objects among
/// the inputs; for a namespace that is not among them only the label every Namespace carries (its
/// name) is known, the selector's terms on other labels are taken as met (as the refresher does),
/// and a note says so.
fn sent(
    scope: &Scope,
    object: &Value,
    namespaces: &[Value],
    notes: &mut Vec<String>,
) -> Result<(), scope::NotSent> {
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str);
    let labels = namespace.and_then(|ns| {
        namespaces
            .iter()
            .find(|n| n.pointer("/metadata/name").and_then(Value::as_str) == Some(ns))
            .map(|n| {
                n.pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default()
            })
    });
    let decision = scope.decide(object, "CREATE", labels.as_ref());
    if let (Some(ns), None) = (namespace, &labels)
        && decision != Err(scope::NotSent::Rules)
        && scope.reads_namespace_labels()
    {
        let note = format!(
            "namespace {ns} is not among the inputs: the policy's namespaceSelector was decided with its {} label only, its terms on other labels taken as met (add `kubectl get namespace {ns} -o yaml`)",
            scope::NAMESPACE_NAME_LABEL
        );
        if !notes.contains(&note) {
            notes.push(note);
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_missing_namespace_is_kubectls_default() {
        for (mut object, changed, namespace) in [
            (json!({"kind": "MachineDeployment"}), true, json!("default")),
            (
                json!({"metadata": {"namespace": null}}),
                true,
                json!("default"),
            ),
            (
                json!({"metadata": {"namespace": "team-a"}}),
                false,
                json!("team-a"),
            ),
        ] {
            assert_eq!(default_namespace(&mut object), changed);
            assert_eq!(object["metadata"]["namespace"], namespace);
        }
        assert!(!default_namespace(&mut json!("text")));
    }
}
