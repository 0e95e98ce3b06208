//! The playground's module: `capa-admin preview` — the policy's own decision, the code
//! `policy.wasm` is built from — exported to a web page with `wasm-bindgen`. The page (`www/`)
//! passes the texts the user pasted or dropped and renders the report; nothing leaves the browser.
//!
//! Every call takes and returns JSON text, so the page needs no generated types:
//! - [`preview`]: `{"inputs": [{"name", "text"}], "configmap": {"name", "text"}|null,
//!   "settings": {"name", "text"}|null, "format": "json"|"text"|"yaml", "patch": bool}` →
//!   `{"ok": true, "output": "…", "notes": ["…"]}` or `{"ok": false, "error": "…"}`; `output` is
//!   exactly what `capa-admin preview -o <format>` prints for the same inputs;
//! - [`examples`]: the repository's example files, `[{"name", "text"}]`;
//! - [`version`]: the crate version and the built-in table's date.

use capa_admin::{Format, Text, TextRequest};
use serde::Deserialize;
use serde_json::{Value, json};
use wasm_bindgen::prelude::wasm_bindgen;

/// The most text one preview reads: beyond it, the command-line tool is the better place.
pub const MAX_INPUT_BYTES: usize = 20 * 1024 * 1024;

#[derive(Deserialize)]
struct Named {
    name: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    inputs: Vec<Named>,
    #[serde(default)]
    configmap: Option<Named>,
    #[serde(default)]
    settings: Option<Named>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    patch: bool,
}

fn error(message: String) -> String {
    json!({"ok": false, "error": message}).to_string()
}

/// Runs a preview; see the crate documentation for the request and answer.
#[wasm_bindgen]
pub fn preview(request: &str) -> String {
    let req: Request = match serde_json::from_str(request) {
        Ok(r) => r,
        Err(e) => {
            return error(format!(
                "the page sent a request the module cannot read: {e}"
            ));
        }
    };
    let total: usize = req
        .inputs
        .iter()
        .chain(&req.configmap)
        .chain(&req.settings)
        .map(|n| n.text.len())
        .sum();
    if total > MAX_INPUT_BYTES {
        return error(format!(
            "{:.1} MB of input: the playground reads at most {} MB; run `capa-admin preview` on the files instead",
            total as f64 / 1e6,
            MAX_INPUT_BYTES / (1024 * 1024)
        ));
    }
    if req.inputs.iter().all(|n| n.text.trim().is_empty()) {
        return error(
            "nothing to preview: paste or drop MachineSets or MachineDeployments (and their AWSMachineTemplates), or load the examples".to_string(),
        );
    }
    let format = match req.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("text") => Format::Text,
        Some("yaml") => Format::Yaml,
        Some(other) => return error(format!("unknown format {other:?}")),
    };
    fn text(n: &Named) -> Text<'_> {
        Text {
            name: &n.name,
            text: &n.text,
            in_tree: false,
        }
    }
    let texts = TextRequest {
        inputs: req
            .inputs
            .iter()
            .filter(|n| !n.text.trim().is_empty())
            .map(text)
            .collect(),
        configmap: req.configmap.as_ref().map(text),
        settings: req.settings.as_ref().map(text),
        // the page's policies are taken to be rendered by a controller in `kubewarden`
        kubewarden_namespace: None,
        format,
        patch: req.patch,
        fail_on_change: false,
    };
    match capa_admin::preview_texts(&texts) {
        Ok(out) => json!({"ok": true, "output": out.stdout, "notes": out.notes}).to_string(),
        Err(e) => error(e.to_string()),
    }
}

/// The example inputs, as the repository holds them.
const EXAMPLES: [(&str, &str); 4] = [
    (
        "examples/machineset.yaml",
        include_str!("../../examples/machineset.yaml"),
    ),
    (
        "examples/wrong-values.yaml",
        include_str!("../../examples/wrong-values.yaml"),
    ),
    (
        "examples/cluster-machinesets.yaml",
        include_str!("../../examples/cluster-machinesets.yaml"),
    ),
    (
        "examples/cluster-api.yaml",
        include_str!("../../examples/cluster-api.yaml"),
    ),
];

/// `[{"name", "text"}]` of the example files.
#[wasm_bindgen]
pub fn examples() -> String {
    let list: Vec<Value> = EXAMPLES
        .iter()
        .map(|(name, text)| json!({"name": name, "text": text}))
        .collect();
    Value::Array(list).to_string()
}

/// `{"version", "builtinDate"}`.
#[wasm_bindgen]
pub fn version() -> String {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "builtinDate": capa_annotator_policy::builtin::DATE,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn answer(request: Value) -> Value {
        serde_json::from_str(&preview(&request.to_string())).unwrap()
    }

    #[test]
    fn the_examples_give_what_capa_admin_prints() {
        let inputs: Value = serde_json::from_str(&examples()).unwrap();
        let got = answer(json!({"inputs": inputs, "format": "json"}));
        assert_eq!(got["ok"], true, "{got}");
        let owned: Vec<(String, String)> = EXAMPLES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        let want = capa_admin::preview_texts(&TextRequest {
            inputs: owned
                .iter()
                .map(|(name, text)| Text {
                    name,
                    text,
                    in_tree: false,
                })
                .collect(),
            format: Format::Json,
            ..TextRequest::default()
        })
        .unwrap();
        assert_eq!(got["output"], want.stdout);
        let report: Value = serde_json::from_str(got["output"].as_str().unwrap()).unwrap();
        assert!(report["summary"]["wouldChange"].as_u64().unwrap() >= 8);
    }

    #[test]
    fn bad_input_gets_a_message() {
        for (request, needle) in [
            (
                json!({"inputs": [{"name": "pasted", "text": "a: [1,\nb: 2\n"}]}),
                "pasted: document 1: not valid YAML at line",
            ),
            (
                json!({"inputs": [{"name": "pasted", "text": "apiVersion: v1\nkind: Secret\ndata: {k: c2VjcmV0}\n"}]}),
                "leave Secrets out",
            ),
            (
                json!({"inputs": [{"name": "pasted", "text": "  \n"}]}),
                "nothing to preview",
            ),
            (
                json!({"inputs": [{"name": "big", "text": "x".repeat(MAX_INPUT_BYTES + 1)}]}),
                "the playground reads at most 20 MB",
            ),
            (json!({"inputs": [], "what": 1}), "cannot read"),
        ] {
            let got = answer(request);
            assert_eq!(got["ok"], false);
            let e = got["error"].as_str().unwrap();
            assert!(e.contains(needle), "{e}");
            assert!(
                !e.contains("c2VjcmV0"),
                "a Secret's data is never echoed: {e}"
            );
        }
    }
}
