//! `make bench`: the policy's per-request cost with a fresh wasm instance per request (as the
//! Kubewarden policy server runs it), as ratios to two baselines built from this workspace —
//! accept-all (ignores its input) and parse-only (deserialises the ValidationRequest) — measured
//! interleaved in one run; plus the size of the release module.
//!
//! Usage: policy-bench --policy P.wasm --accept-all A.wasm --parse-only B.wasm [--rounds N] [--batch N]

use anyhow::{Context, Result, bail};
use capa_core::table::{Table, TypeName};
use e2e_tests::capabilities::HostCapabilities;
use e2e_tests::{FixedAnswer, Policy, paths};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The size target of the release policy.wasm (with the whole built-in table).
const SIZE_TARGET: u64 = 256 * 1024;

struct Args {
    policy: PathBuf,
    accept_all: PathBuf,
    parse_only: PathBuf,
    rounds: usize,
    batch: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        policy: paths::policy_wasm(),
        accept_all: PathBuf::new(),
        parse_only: PathBuf::new(),
        rounds: 30,
        batch: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--policy" => a.policy = value()?.into(),
            "--accept-all" => a.accept_all = value()?.into(),
            "--parse-only" => a.parse_only = value()?.into(),
            "--rounds" => a.rounds = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if a.accept_all.as_os_str().is_empty() || a.parse_only.as_os_str().is_empty() {
        bail!("--accept-all and --parse-only are required (make bench passes them)");
    }
    Ok(a)
}

/// The whole ConfigMap an older host sends: every type of the built-in snapshot (the EC2 catalogue).
fn whole_configmap() -> Result<(Vec<u8>, usize)> {
    let text = std::fs::read_to_string(e2e_tests::snapshot::snapshot_file())?;
    let snapshot = capa_core::builtin::parse(&text)?;
    let mut table = Table::new();
    for (name, cap) in &snapshot.entries {
        table.insert(TypeName::parse(name)?, *cap);
    }
    let mut data = serde_json::Map::new();
    for (k, v) in table.to_configmap_data() {
        data.insert(k, Value::String(v));
    }
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "machineset-instance-types", "namespace": "openshift-machine-api",
                     "annotations": {(capa_core::table::ANNOTATION_FORMAT_VERSION): capa_core::table::FORMAT_VERSION}},
        "data": data});
    Ok((serde_json::to_vec(&cm)?, table.len()))
}

struct Scenario {
    name: &'static str,
    policy: usize,
    caps: Arc<dyn HostCapabilities>,
    samples: Vec<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn main() -> Result<()> {
    let a = args()?;
    let modules = [&a.policy, &a.accept_all, &a.parse_only];
    let policies: Vec<Policy> = modules
        .iter()
        .map(|p| Policy::load(p))
        .collect::<Result<_>>()?;
    let (policy, accept_all, parse_only) = (0, 1, 2);

    let request: Value = serde_json::from_str(&std::fs::read_to_string(paths::fixture(
        "requests/create-example-m6g-xlarge.json",
    ))?)?;
    let payload = serde_json::to_vec(&json!({"settings": {}, "request": request}))?;
    let table: Value = serde_json::from_str(&std::fs::read_to_string(paths::fixture(
        "configmaps/table.json",
    ))?)?;
    let m6g = table["data"]["m6g"]
        .as_str()
        .context("fixture table lacks m6g")?
        .to_string();
    let masked = serde_json::to_vec(&json!({"data": {"m6g": m6g}}))?;
    let (whole, whole_types) = whole_configmap()?;

    let fixed =
        |r: Result<Vec<u8>, String>| -> Arc<dyn HostCapabilities> { Arc::new(FixedAnswer(r)) };
    let mut scenarios = [
        Scenario {
            name: "accept-all (baseline)",
            policy: accept_all,
            caps: fixed(Err("unused".into())),
            samples: vec![],
        },
        Scenario {
            name: "parse-only (baseline)",
            policy: parse_only,
            caps: fixed(Err("unused".into())),
            samples: vec![],
        },
        Scenario {
            name: "policy, field-masked ConfigMap",
            policy,
            caps: fixed(Ok(masked.clone())),
            samples: vec![],
        },
        Scenario {
            name: "policy, host error -> built-in",
            policy,
            caps: fixed(Err("Cannot find v1/ConfigMap".into())),
            samples: vec![],
        },
        Scenario {
            name: "policy, whole ConfigMap",
            policy,
            caps: fixed(Ok(whole.clone())),
            samples: vec![],
        },
    ];

    // sanity: every policy scenario annotates the MachineSet; a benchmark of a broken path is worthless
    for s in &scenarios[2..] {
        let raw = policies[s.policy].call("validate", &payload, s.caps.clone())?;
        let resp: Value = serde_json::from_slice(&raw)?;
        if resp.pointer("/mutated_object/metadata/annotations/machine.openshift.io~1vCPU")
            != Some(&json!("4"))
        {
            bail!("scenario {:?} did not annotate: {resp}", s.name);
        }
    }

    for _ in 0..a.rounds {
        for s in scenarios.iter_mut() {
            for _ in 0..a.batch {
                let start = Instant::now();
                policies[s.policy].call("validate", &payload, s.caps.clone())?;
                s.samples.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
    }

    let medians: Vec<f64> = scenarios
        .iter_mut()
        .map(|s| median(&mut s.samples))
        .collect();
    let (base_accept, base_parse) = (medians[0], medians[1]);
    println!(
        "capa-annotator policy benchmark: fresh wasm instance per request (wasmtime, as the policy server)"
    );
    println!(
        "request: requests/create-example-m6g-xlarge.json ({} bytes); rounds {} x batch {} per scenario, interleaved; median per request",
        payload.len(),
        a.rounds,
        a.batch
    );
    println!(
        "whole ConfigMap: {} types, {} bytes (the built-in snapshot as a ConfigMap)",
        whole_types,
        whole.len()
    );
    println!();
    println!(
        "{:<34} {:>10} {:>14} {:>14} {:>8}",
        "scenario", "median µs", "x accept-all", "x parse-only", "target"
    );
    let targets = ["", "", "<= 1.3", "<= 1.3", "<= 4.5"];
    for ((s, m), target) in scenarios.iter().zip(&medians).zip(targets) {
        println!(
            "{:<34} {:>10.1} {:>14.2} {:>14.2} {:>8}",
            s.name,
            m,
            m / base_accept,
            m / base_parse,
            target
        );
    }
    println!();
    let sizes: Vec<u64> = modules
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .collect();
    println!(
        "policy.wasm size: {} bytes = {:.1} KB, {:.2} x the 256 KB target ({} built-in types); accept-all: {:.1} KB, parse-only: {:.1} KB",
        sizes[0],
        sizes[0] as f64 / 1024.0,
        sizes[0] as f64 / SIZE_TARGET as f64,
        builtin_len()?,
        sizes[1] as f64 / 1024.0,
        sizes[2] as f64 / 1024.0
    );
    Ok(())
}

fn builtin_len() -> Result<usize> {
    let text = std::fs::read_to_string(e2e_tests::snapshot::snapshot_file())?;
    Ok(capa_core::builtin::parse(&text)?.entries.len())
}
