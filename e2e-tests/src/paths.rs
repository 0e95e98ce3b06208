//! Locations of fixtures and built modules (the workspace, the refresher binary and scratch
//! directories are [`capa_test_servers::paths`]'s).

pub use capa_test_servers::paths::{refresher_bin, scratch_dir, workspace, workspace_bin};
use std::path::PathBuf;

/// `e2e-tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// The policy module under test: `$CAPA_POLICY_WASM`, else `policy.wasm` at the workspace root
/// (where `make policy.wasm` puts it).
pub fn policy_wasm() -> PathBuf {
    std::env::var_os("CAPA_POLICY_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("policy.wasm"))
}
