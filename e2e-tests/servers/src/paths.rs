//! Where things are: the workspace, the refresher binary, scratch directories.

use std::path::PathBuf;

/// The workspace root (this crate lives in `e2e-tests/servers/`).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The refresher binary: `$CAPA_REFRESHER_BIN`, else [`workspace_bin`]`("capa-refresher")`.
pub fn refresher_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAPA_REFRESHER_BIN") {
        return PathBuf::from(p);
    }
    workspace_bin("capa-refresher")
}

/// A binary of the workspace in the running binary's profile directory (`target/debug/deps/<test>`
/// or `target/debug/<bin>` → `target/debug/<name>`), else `name` on the PATH.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
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
