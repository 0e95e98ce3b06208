//! The pipeline that produces the policy's built-in table (`policy/data/builtin-instance-types.txt`):
//! moto's EC2 catalogue (the pinned version) served through the test proxy →
//! `capa-refresher --dry-run --region us-east-1 --output snapshot` → the file. `make snapshot` writes
//! it; a test runs it again and compares, so the file cannot be edited by hand silently.

use crate::paths;
use crate::servers::Ec2;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The region scanned (moto lists the same catalogue in every region).
pub const REGION: &str = "us-east-1";

/// The committed built-in table.
pub fn snapshot_file() -> PathBuf {
    paths::workspace().join("policy/data/builtin-instance-types.txt")
}

/// The version of the moto the tests run (`python3 -m moto.server`).
pub fn moto_version() -> Result<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .args(["-c", "import moto; print(moto.__version__)"])
        .output()
        .context("cannot run python3 to ask moto's version")?;
    if !out.status.success() {
        bail!(
            "moto is not installed (make test-servers): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The `# source:` line of a snapshot made from moto.
pub fn source(moto_version: &str) -> String {
    format!(
        "moto {moto_version} EC2 catalogue ({REGION}) via capa-refresher --dry-run --output snapshot (make snapshot)"
    )
}

/// `capa-refresher` with the environment of a cluster-less run against `ec2`: the environment a
/// real-account run would have (default credential chain), with moto's endpoint and dummy keys, and
/// nothing from the caller's AWS setup.
pub fn cluster_less_command(ec2: &Ec2, home: &Path) -> Command {
    let mut cmd = Command::new(paths::refresher_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("RUST_LOG", "info")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", &ec2.proxy_url);
    cmd
}

/// Runs the pipeline and returns the snapshot text. `date` = None: today.
pub fn generate(ec2: &Ec2, date: Option<&str>) -> Result<String> {
    let version = moto_version()?;
    let home = paths::scratch_dir("snapshot-home");
    let mut cmd = cluster_less_command(ec2, &home);
    cmd.args(["--dry-run", "--output", "snapshot", "--region", REGION])
        .args(["--snapshot-source", &source(&version)]);
    if let Some(date) = date {
        cmd.args(["--snapshot-date", date]);
    }
    let out = cmd.output().with_context(|| {
        format!(
            "cannot run {} (cargo build -p capa-refresher)",
            paths::refresher_bin().display()
        )
    })?;
    let _ = std::fs::remove_dir_all(&home);
    if !out.status.success() {
        bail!(
            "capa-refresher failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("the snapshot is not UTF-8")
}
