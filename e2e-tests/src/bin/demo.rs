//! `make demo`: admits a MachineSet (YAML file, default `examples/machineset.yaml`) through the
//! compiled policy with no cluster at all — the built-in table answers — and prints the annotated
//! MachineSet, the JSON patch the policy server would send, and the warnings.

use anyhow::{Context, Result};
use e2e_tests::{NoCluster, Policy, evaluate, paths};
use serde_json::{Value, json};
use std::sync::Arc;

fn main() -> Result<()> {
    let file = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| paths::workspace().join("examples/machineset.yaml"));
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let object: Value =
        serde_yaml::from_str(&text).with_context(|| format!("{} is not YAML", file.display()))?;
    let request = json!({
        "uid": "demo",
        "kind": {"group": "machine.openshift.io", "version": "v1beta1", "kind": "MachineSet"},
        "operation": "CREATE",
        "name": object.pointer("/metadata/name"),
        "namespace": object.pointer("/metadata/namespace"),
        "object": object,
    });
    let wasm = paths::policy_wasm();
    let policy = Policy::load(&wasm)?;
    let ev = evaluate(&policy, &json!({}), &request, Arc::new(NoCluster))?;

    println!(
        "# policy: {}  (no cluster: the built-in table answers)",
        wasm.display()
    );
    println!("# input:  {}", file.display());
    println!("# accepted: {}", ev.response.accepted);
    for w in ev.warnings() {
        println!("# warning: {w}");
    }
    println!("\n# JSON patch sent to the API server:");
    println!("{}", serde_json::to_string_pretty(&ev.patch_json())?);
    println!("\n# the MachineSet after admission:");
    print!("{}", serde_yaml::to_string(&ev.object)?);
    Ok(())
}
