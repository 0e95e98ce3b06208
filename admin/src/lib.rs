//! capa-admin: the cluster admin's tool for capa-annotator.
//!
//! `preview` reads MachineSets from files or stdin and runs on each the policy's own decision —
//! the code `policy.wasm` is built from, natively — as a CREATE at admission, with the built-in
//! table or a table ConfigMap from a file. It needs no cluster access and no network.
//!
//! - [`input`]: YAML/JSON documents and Lists, errors that name the file and the place;
//! - [`source`]: the table ConfigMap the policy reads (`--configmap`);
//! - [`preview`]: the decision per MachineSet and the summary counts;
//! - [`render`]: text and JSON output.

pub mod input;
pub mod preview;
pub mod render;
pub mod source;

use capa_annotator_policy::settings::Settings;
use input::{InputError, MachineSetDoc};
use serde_json::Value;
use source::TableSource;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// What `preview` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct PreviewOptions {
    /// Files (`-` is stdin), directories already expanded.
    pub inputs: Vec<input::Input>,
    pub configmap: Option<String>,
    pub settings: Option<String>,
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
/// whole ClusterAdmissionPolicy / AdmissionPolicy (its `spec.settings`).
fn load_settings(
    name: &str,
    stdin: &mut dyn std::io::Read,
) -> Result<(Value, Settings), InputError> {
    let text = read(name, stdin)?;
    let value = input::single(display_name(name), &text)?;
    let value = match value.get("kind").and_then(Value::as_str) {
        Some("ClusterAdmissionPolicy" | "AdmissionPolicy") => value
            .pointer("/spec/settings")
            .cloned()
            .unwrap_or(Value::Null),
        _ => value,
    };
    let settings = Settings::from_value(&value).map_err(|e| {
        InputError(format!(
            "{}: invalid policy settings: {e}",
            display_name(name)
        ))
    })?;
    Ok((value, settings))
}

/// What a run printed and how it ends.
pub struct Outcome {
    pub stdout: String,
    /// Notes for stderr (objects passed over in directories).
    pub notes: Vec<String>,
    pub exit: u8,
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
    let (settings_json, settings) = match &opts.settings {
        Some(f) => load_settings(f, stdin)?,
        None => (Value::Object(Default::default()), Settings::default()),
    };
    let table = match &opts.configmap {
        Some(f) => {
            let text = read(f, stdin)?;
            let cm = input::single(display_name(f), &text)?;
            TableSource::from_configmap(display_name(f), &cm).map_err(InputError)?
        }
        None => TableSource::None,
    };
    let mut docs: Vec<MachineSetDoc> = Vec::new();
    let mut notes = Vec::new();
    for i in &opts.inputs {
        let text = read(&i.path, stdin)?;
        let name = display_name(&i.path);
        if i.in_tree {
            let (found, passed_over) = input::machinesets_in_tree(name, &text)?;
            if passed_over > 0 {
                notes.push(if passed_over == 1 {
                    format!("{name}: passed over 1 object that is not a MachineSet")
                } else {
                    format!("{name}: passed over {passed_over} objects that are not MachineSets")
                });
            }
            docs.extend(found);
        } else {
            docs.extend(input::machinesets(name, &text)?);
        }
    }
    let previews: Vec<preview::Preview> = docs
        .iter()
        .map(|d| preview::preview(d, &settings_json, &settings, &table))
        .collect();
    let summary = preview::Summary::of(&previews);
    let info = render::TableInfo {
        configmap: opts
            .configmap
            .as_deref()
            .map(|f| display_name(f).to_string()),
    };
    let stdout = match opts.format {
        Format::Text => render::text(&previews, &summary, &info, opts.patch),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&render::json(&previews, &summary, &info))
                .unwrap_or_default();
            s.push('\n');
            s
        }
    };
    let exit = if opts.fail_on_change && summary.would_change > 0 {
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
