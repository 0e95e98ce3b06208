//! Locations of fixtures and built modules.

use std::path::PathBuf;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

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
