//! Every input that ever failed the fuzz campaign (`tools/fuzz/fixtures/*.json`) passes the oracle
//! now, and a short campaign with a fixed seed passes too (so the generator and the oracle run in
//! `make test`, against the real policy.wasm).
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use capa_fuzz::inputs::{Corpus, generate};
use capa_fuzz::rng::Rng;
use capa_fuzz::{MEMORY_LIMIT, fixture, oracle};
use e2e_tests::{Policy, paths};

fn policy() -> Policy {
    Policy::load_with_memory_limit(&paths::policy_wasm(), MEMORY_LIMIT).unwrap()
}

#[test]
fn every_kept_failure_passes_now() {
    let dir = paths::workspace().join("tools/fuzz/fixtures");
    let policy = policy();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let input = fixture::from_json(&v).unwrap_or_else(|| panic!("{}", path.display()));
        if let Err(e) = oracle::check(&policy, &input) {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    eprintln!("{n} kept failures replayed");
}

#[test]
fn a_short_campaign_passes() {
    let corpus = Corpus::load(&paths::workspace()).unwrap();
    let policy = policy();
    let mut kinds = std::collections::BTreeSet::new();
    for k in 0..400 {
        let input = generate(&corpus, &mut Rng::for_input(20261201, k));
        kinds.insert(input.kind);
        if let Err(e) = oracle::check(&policy, &input) {
            panic!("input {k} ({}): {e}", input.kind);
        }
    }
    assert_eq!(kinds.len(), 5, "{kinds:?}");
}

/// The memory limit is real: a module that needs more than it fails (a trap), it does not pass.
#[test]
fn the_memory_limit_is_enforced() {
    let policy = Policy::load_with_memory_limit(&paths::policy_wasm(), 2 << 20).unwrap();
    // a 3 MB request cannot fit in 2 MiB of linear memory
    let big = format!(
        r#"{{"settings":{{}},"request":{{"operation":"CREATE","object":{{"x":"{}"}}}}}}"#,
        "y".repeat(3 << 20)
    );
    let input = capa_fuzz::inputs::Input {
        kind: "test",
        payload: big.into_bytes(),
        host: capa_fuzz::inputs::HostAnswer::Error(String::new()),
    };
    let e = oracle::check(&policy, &input).unwrap_err();
    assert!(e.contains("the call failed"), "{e}");
}
