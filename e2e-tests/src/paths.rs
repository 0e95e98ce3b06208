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

/// The refresher binary: `$CAPA_REFRESHER_BIN`, else `capa-refresher` of the running binary's
/// profile directory (`target/debug/deps/<test>` or `target/debug/<bin>` → `target/debug/capa-refresher`).
pub fn refresher_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAPA_REFRESHER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("capa-refresher"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("capa-refresher"))
}

/// A fresh, empty directory under the system temp dir.
pub fn scratch_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "capa-e2e-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}
