//! What `--dry-run` prints on stdout: the ConfigMap that would be written (JSON), or the policy's
//! built-in table file (`--output snapshot`, format `capa_core::builtin`).

use crate::config::{Config, Output};
use capa_core::table::Table;
use std::collections::BTreeSet;
use std::time::SystemTime;

/// The `# source:` line when `--snapshot-source` is not given.
pub fn default_source(regions: &BTreeSet<String>) -> String {
    let regions: Vec<&str> = regions.iter().map(String::as_str).collect();
    format!("EC2 DescribeInstanceTypes, {}", regions.join(", "))
}

/// `YYYY-MM-DD` of `now`, in UTC.
pub fn utc_date(now: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    stamp.get(..10).unwrap_or(&stamp).to_string()
}

/// The built-in table file of what EC2 listed in `regions`. Refuses an empty table: a snapshot
/// with no types would silently disable the policy's fallback.
pub fn snapshot(
    fetched: &Table,
    regions: &BTreeSet<String>,
    source: Option<&str>,
    date: Option<&str>,
    now: SystemTime,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        !fetched.is_empty(),
        "EC2 listed no instance type in {regions:?}; no snapshot printed"
    );
    let source = source.map_or_else(|| default_source(regions), str::to_string);
    let date = date.map_or_else(|| utc_date(now), str::to_string);
    Ok(capa_core::builtin::render(&source, &date, fetched))
}

/// Prints the `--dry-run` result. `complete` = every region and Secret succeeded: a snapshot is
/// printed only then (a partial one would look complete in the policy's source tree).
pub fn print(
    cfg: &Config,
    configmap: &serde_json::Value,
    fetched: &Table,
    regions: &BTreeSet<String>,
    complete: bool,
) -> anyhow::Result<()> {
    match cfg.output {
        Output::Configmap => println!("{}", serde_json::to_string_pretty(configmap)?),
        Output::Snapshot => {
            anyhow::ensure!(
                complete,
                "no snapshot printed: some regions or credentials failed (see the errors above); \
                 fix them or name only the regions that work"
            );
            let text = snapshot(
                fetched,
                regions,
                cfg.snapshot_source.as_deref(),
                cfg.snapshot_date.as_deref(),
                SystemTime::now(),
            )?;
            print!("{text}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use capa_core::table::TypeName;
    use capa_core::{Arch, Capacity};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn snapshot_text() {
        let mut t = Table::new();
        t.insert(
            TypeName::parse("m5.large").unwrap(),
            Capacity {
                vcpu: 2,
                memory_mib: 8192,
                gpu: 0,
                arch: Arch::Amd64,
                gpu_vendor: None,
            },
        );
        let regions: BTreeSet<String> = ["us-east-1".into(), "eu-west-1".into()].into();
        // 2026-11-25T21:13:01Z
        let now = UNIX_EPOCH + Duration::from_secs(1_795_641_181);
        let text = snapshot(&t, &regions, None, None, now).unwrap();
        assert!(
            text.contains("# source: EC2 DescribeInstanceTypes, eu-west-1, us-east-1\n"),
            "{text}"
        );
        assert!(text.contains("# date: 2026-11-25\n"), "{text}");
        assert!(text.ends_with("m5.large 2 8192 0 amd64 -\n"), "{text}");
        let text = snapshot(&t, &regions, Some("moto"), Some("2020-01-02"), now).unwrap();
        let parsed = capa_core::builtin::parse(&text).unwrap();
        assert_eq!(
            (parsed.source.as_str(), parsed.date.as_str()),
            ("moto", "2020-01-02")
        );
        assert!(snapshot(&Table::new(), &regions, None, None, now).is_err());
    }
}
