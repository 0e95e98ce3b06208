//! The policy cases shared with kwctl: `fixtures/cases.tsv` (request, replay session, settings),
//! `fixtures/expected/<case>.json` (the answer both hosts must give) and
//! `fixtures/settings-cases.tsv` (settings and the exact verdict). `tests/policy.rs` runs them
//! through the waPC harness, `policy.bats` through kwctl; both compare with the same files, so the
//! two hosts agree on every shared fixture by construction.

use crate::evaluation::Evaluation;
use crate::paths;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::PathBuf;

/// One line of `cases.tsv`.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// `fixtures/requests/<request>.json`
    pub request: String,
    /// `fixtures/sessions/<session>.yml`; `None` = no cluster at all (`kwctl run` without
    /// `--allow-context-aware`).
    pub session: Option<String>,
    pub settings: Value,
}

impl Case {
    /// `fixtures/expected/<name>.json`.
    pub fn expected_path(&self) -> PathBuf {
        paths::fixture(&format!("expected/{}.json", self.name))
    }

    pub fn expected(&self) -> Result<Value> {
        let path = self.expected_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// The data lines of a tab-separated fixture file (`#` comments and blank lines skipped), split
/// into exactly `columns` fields.
fn tsv(rel: &str, columns: usize) -> Result<Vec<Vec<String>>> {
    let path = paths::fixture(rel);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<String> = line.split('\t').map(str::to_string).collect();
        if fields.len() != columns {
            bail!(
                "{}:{}: {} tab-separated fields, expected {columns}",
                path.display(),
                i + 1,
                fields.len()
            );
        }
        rows.push(fields);
    }
    Ok(rows)
}

/// Every case of `cases.tsv`.
pub fn load() -> Result<Vec<Case>> {
    tsv("cases.tsv", 4)?
        .into_iter()
        .map(|f| {
            let settings = serde_json::from_str(&f[3])
                .with_context(|| format!("case {}: settings {:?}", f[0], f[3]))?;
            Ok(Case {
                name: f[0].clone(),
                request: f[1].clone(),
                session: (f[2] != "-").then(|| f[2].clone()),
                settings,
            })
        })
        .collect()
}

/// The verdict on one settings case: `None` = valid, `Some(message)` = rejected with it.
pub type SettingsVerdict = Option<String>;

/// Every line of `settings-cases.tsv`.
pub fn settings_cases() -> Result<Vec<(Value, SettingsVerdict)>> {
    tsv("settings-cases.tsv", 2)?
        .into_iter()
        .map(|f| {
            let settings =
                serde_json::from_str(&f[0]).with_context(|| format!("settings {:?}", f[0]))?;
            Ok((settings, (f[1] != "valid").then(|| f[1].clone())))
        })
        .collect()
}

/// The form of `expected/<case>.json` (what `kwctl/normalise.jq` makes of kwctl's answer):
/// allowed, the patch with its operations sorted by path, the warnings.
pub fn normalise(ev: &Evaluation) -> Value {
    let mut ops: Vec<Value> = ev.patch_json().as_array().cloned().unwrap_or_default();
    let key = |op: &Value| {
        (
            op["path"].as_str().unwrap_or_default().to_string(),
            op["op"].as_str().unwrap_or_default().to_string(),
        )
    };
    ops.sort_by_key(key);
    json!({
        "allowed": ev.response.accepted,
        "patch": ops,
        "warnings": ev.warnings(),
    })
}
