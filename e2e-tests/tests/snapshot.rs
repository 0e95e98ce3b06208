//! The built-in table's pipeline: the committed `policy/data/builtin-instance-types.txt` is exactly
//! what `capa-refresher --dry-run --region us-east-1 --output snapshot` prints from the pinned moto
//! (so it cannot be edited by hand silently), and the cluster-less mode behaves as documented.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use capa_core::builtin;
use capa_core::table::Table;
use e2e_tests::paths;
use e2e_tests::servers::Ec2;
use e2e_tests::snapshot::{self, cluster_less_command};
use serde_json::Value;

fn committed() -> (String, builtin::Snapshot) {
    let text = std::fs::read_to_string(snapshot::snapshot_file()).unwrap();
    let parsed = builtin::parse(&text).unwrap();
    (text, parsed)
}

#[test]
fn committed_builtin_table_is_the_pipeline_output() {
    let (text, parsed) = committed();
    let ec2 = Ec2::start().unwrap();
    let fresh = snapshot::generate(&ec2, Some(&parsed.date)).unwrap();
    if fresh != text {
        let diff: Vec<String> = fresh
            .lines()
            .zip(text.lines())
            .filter(|(a, b)| a != b)
            .take(5)
            .map(|(a, b)| format!("  pipeline: {a}\n  file:     {b}"))
            .collect();
        panic!(
            "{} is not what the pipeline produces from moto {} ({} vs {} lines); first differences:\n{}\n\
             Regenerate it with `make snapshot` (do not edit it by hand).",
            snapshot::snapshot_file().display(),
            snapshot::moto_version().unwrap(),
            fresh.lines().count(),
            text.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn cluster_less_configmap_output_holds_the_same_table() {
    let (_, parsed) = committed();
    let ec2 = Ec2::start().unwrap();
    let home = paths::scratch_dir("snapshot-cm");
    let out = cluster_less_command(&ec2, &home)
        .args(["--dry-run", "--region", snapshot::REGION])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&home);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cm: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cm["metadata"]["name"], "machineset-instance-types");
    assert_eq!(
        cm["metadata"]["annotations"]["capa-annotator.io/regions"],
        snapshot::REGION
    );
    let data = cm["data"].as_object().unwrap();
    let (table, bad) =
        Table::from_configmap_data(data.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())));
    assert!(bad.is_empty());
    let mut listed: Vec<(String, capa_core::Capacity)> =
        table.iter().map(|(n, c)| (n, *c)).collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(listed, parsed.entries);
}

#[test]
fn cluster_less_without_credentials_names_the_fix() {
    let ec2 = Ec2::start().unwrap();
    let home = paths::scratch_dir("snapshot-nocreds");
    let out = cluster_less_command(&ec2, &home)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["--dry-run", "--output", "snapshot", "--region", "us-east-1"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&home);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "printed something without credentials"
    );
    assert!(
        stderr.contains("AWS_PROFILE") && stderr.contains("ec2:DescribeInstanceTypes"),
        "{stderr}"
    );
    assert_eq!(ec2.count("DescribeInstanceTypes", None).unwrap(), 0);
}

#[test]
fn cluster_less_with_a_bad_region_prints_no_partial_snapshot() {
    let ec2 = Ec2::start().unwrap();
    let home = paths::scratch_dir("snapshot-badregion");
    let out = cluster_less_command(&ec2, &home)
        .args(["--dry-run", "--output", "snapshot"])
        .args(["--region", "us-east-1,xx-nowhere-1"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&home);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "a partial snapshot was printed");
    assert!(
        stderr.contains("xx-nowhere-1 is not a valid region") && stderr.contains("--region"),
        "{stderr}"
    );
    // every region is checked before the first (long) scan
    assert_eq!(ec2.count("DescribeInstanceTypes", None).unwrap(), 0);
}
