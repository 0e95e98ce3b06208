//! The output of `preview`: text for people, JSON (`-o json`) for scripts. Stable: objects in
//! input order, annotations in a fixed order.

use crate::preview::{Preview, Summary, Verdict};
use capa_annotator_policy::builtin;
use capa_annotator_policy::lookup::Source;
use serde_json::{Value, json};
use std::fmt::Write as _;

/// What the run used as its table, for the summary.
pub struct TableInfo {
    /// `--configmap` file, if any.
    pub configmap: Option<String>,
}

fn source_text(s: Source) -> String {
    match s {
        Source::Override => "overrides setting".to_string(),
        Source::ConfigMap => "ConfigMap".to_string(),
        Source::Builtin => format!("built-in table of {}", builtin::DATE),
    }
}

fn source_key(s: Source) -> &'static str {
    match s {
        Source::Override => "overrides",
        Source::ConfigMap => "configmap",
        Source::Builtin => "builtin",
    }
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::WouldChange => "would change".to_string(),
        Verdict::AlreadyRight => "already right".to_string(),
        Verdict::Skipped(why) => format!("skipped: {why}"),
        Verdict::NotAnnotated(why) => format!("not annotated: {why}"),
        Verdict::NotSent(why) => format!("not sent to the policy: {why}"),
    }
}

fn verdict_key(v: &Verdict) -> &'static str {
    match v {
        Verdict::WouldChange => "would-change",
        Verdict::AlreadyRight => "already-right",
        Verdict::Skipped(_) => "skipped",
        Verdict::NotAnnotated(_) => "not-annotated",
        Verdict::NotSent(_) => "not-sent",
    }
}

/// `namespace/name` (or what there is of it); a Cluster API object's kind and group first.
pub fn object_name(p: &Preview) -> String {
    let name = match (&p.namespace, &p.name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.clone(),
        _ => format!("<unnamed> ({})", p.origin),
    };
    if p.api_version.starts_with(capa_core::capi::GROUP) {
        format!("{} ({}) {name}", p.kind, capa_core::capi::GROUP)
    } else {
        name
    }
}

/// Long hand-written values are cut for the terminal (`-o json` has them whole).
fn shown(v: &Option<String>) -> String {
    const MAX: usize = 100;
    match v {
        None => "(none)".to_string(),
        Some(s) if s.chars().count() > MAX => {
            format!("{}…", s.chars().take(MAX).collect::<String>())
        }
        Some(s) => format!("{s:?}"),
    }
}

/// The warnings worth a line in the text report. Without `--configmap` every MachineSet the
/// built-in table answers carries the policy's "annotated from the built-in table" warning (its
/// first: the policy gives it before any other); the text report counts those in the summary
/// instead of repeating them. `-o json` keeps every warning.
fn shown_warnings<'a>(p: &'a Preview, table: &TableInfo) -> &'a [String] {
    let folded = table.configmap.is_none() && p.source == Some(Source::Builtin);
    match p.warnings.split_first() {
        Some((_, rest)) if folded => rest,
        _ => &p.warnings,
    }
}

/// The text report.
pub fn text(previews: &[Preview], summary: &Summary, table: &TableInfo, patch: bool) -> String {
    let mut out = String::new();
    for p in previews {
        let mut head = object_name(p);
        if let Some(t) = &p.instance_type {
            write!(head, "  {t}").ok();
        }
        write!(head, "  {}", verdict_text(&p.verdict)).ok();
        if let Some(s) = p.source {
            write!(head, "  (from the {})", source_text(s)).ok();
        }
        writeln!(out, "{head}").ok();
        let width = p.changes.iter().map(|c| c.key.len()).max().unwrap_or(0);
        for c in &p.changes {
            let wrong = p.corrections.iter().any(|x| x.key == c.key);
            let line = if c.before == c.after {
                format!("{}  (unchanged)", shown(&c.before))
            } else {
                format!("{} → {}", shown(&c.before), shown(&c.after))
            };
            let mark = if wrong { "   <- wrong value" } else { "" };
            writeln!(out, "    {:width$}  {line}{mark}", c.key).ok();
        }
        for w in shown_warnings(p, table) {
            writeln!(out, "  warning: {w}").ok();
        }
        if patch && p.patch.as_array().is_some_and(|a| !a.is_empty()) {
            writeln!(out, "  patch: {}", p.patch).ok();
        }
        writeln!(out).ok();
    }
    let table_text = match &table.configmap {
        Some(f) => format!(
            "ConfigMap {f}, then the built-in table of {} (unless fallback: none)",
            builtin::DATE
        ),
        None => format!("the built-in table of {} (no --configmap)", builtin::DATE),
    };
    writeln!(out, "Summary (table: {table_text})").ok();
    let row = |out: &mut String, label: &str, n: usize, detail: String| {
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!("  {detail}")
        };
        writeln!(out, "  {label:<30}{n:>4}{detail}").ok();
    };
    row(&mut out, "objects read", summary.read, String::new());
    if summary.not_sent > 0 {
        row(
            &mut out,
            "not sent to the policy",
            summary.not_sent,
            "(its rules or selectors)".to_string(),
        );
    }
    row(
        &mut out,
        "would change",
        summary.would_change,
        String::new(),
    );
    row(
        &mut out,
        "already right",
        summary.already_right,
        String::new(),
    );
    let skipped: Vec<String> = summary
        .skipped
        .iter()
        .map(|(why, n)| format!("{why}: {n}"))
        .collect();
    row(
        &mut out,
        "skipped",
        summary.skipped_total(),
        skipped.join(", "),
    );
    row(
        &mut out,
        "not annotated (warning)",
        summary.not_annotated,
        String::new(),
    );
    row(
        &mut out,
        "unknown instance types",
        summary.unknown_types.len(),
        summary.unknown_types.join(", "),
    );
    let on = if summary.wrong_values > 0 {
        format!(
            "on {} object{}",
            summary.wrong_value_objects,
            plural(summary.wrong_value_objects)
        )
    } else {
        String::new()
    };
    row(&mut out, "wrong values found", summary.wrong_values, on);
    row(
        &mut out,
        "GPU without accelerator label",
        summary.missing_accelerator_label,
        String::new(),
    );
    let folded: usize = previews
        .iter()
        .map(|p| p.warnings.len() - shown_warnings(p, table).len())
        .sum();
    let detail = if folded > 0 {
        format!(
            "{folded} of them \"annotated from the built-in table\" (no --configmap), not repeated above"
        )
    } else {
        String::new()
    };
    row(&mut out, "warnings", summary.warnings, detail);
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The objects as admission would store them (`-o yaml`): what to commit to git, or to apply.
pub fn yaml(previews: &[Preview]) -> String {
    let mut out = String::new();
    for p in previews {
        out.push_str("---\n");
        // a Value tree always serialises
        out.push_str(&serde_yaml::to_string(&p.after).unwrap_or_default());
    }
    out
}

/// The JSON report.
pub fn json(previews: &[Preview], summary: &Summary, table: &TableInfo) -> Value {
    let items: Vec<Value> = previews
        .iter()
        .map(|p| {
            let (skip, problem, not_sent) = match &p.verdict {
                Verdict::Skipped(why) => (Some(why.clone()), None, None),
                Verdict::NotAnnotated(why) => (None, Some(why.clone()), None),
                Verdict::NotSent(why) => (None, None, Some(why.clone())),
                _ => (None, None, None),
            };
            json!({
                "apiVersion": p.api_version,
                "kind": p.kind,
                "namespace": p.namespace,
                "name": p.name,
                "input": p.origin.to_string(),
                "instanceType": p.instance_type,
                "result": verdict_key(&p.verdict),
                "skipReason": skip,
                "notSentReason": not_sent,
                "problem": problem,
                "source": p.source.map(source_key),
                "annotations": p.changes.iter().map(|c| json!({
                    "key": c.key, "before": c.before, "after": c.after,
                })).collect::<Vec<_>>(),
                "wrongValues": p.corrections.iter().map(|c| json!({
                    "key": c.key, "found": c.old, "table": c.new,
                })).collect::<Vec<_>>(),
                "missingAcceleratorLabel": p.missing_accelerator_label,
                "warnings": p.warnings,
                "patch": p.patch,
            })
        })
        .collect();
    json!({
        "objects": items,
        "summary": {
            "read": summary.read,
            "notSent": summary.not_sent,
            "wouldChange": summary.would_change,
            "alreadyRight": summary.already_right,
            "skipped": summary.skipped_total(),
            "skippedByReason": summary.skipped.iter().map(|(r, n)| json!({"reason": r, "count": n})).collect::<Vec<_>>(),
            "notAnnotated": summary.not_annotated,
            "unknownInstanceTypes": summary.unknown_types,
            "wrongValues": summary.wrong_values,
            "wrongValueObjects": summary.wrong_value_objects,
            "missingAcceleratorLabel": summary.missing_accelerator_label,
            "warnings": summary.warnings,
        },
        "table": {
            "configMap": table.configmap,
            "builtinDate": builtin::DATE,
        },
    })
}
