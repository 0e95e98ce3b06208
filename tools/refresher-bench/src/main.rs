//! `make bench` (refresher part): against moto behind the paging proxy and the fake Kubernetes API,
//! measured in one run:
//! - EC2 calls per refresh for N MachineSets over R regions (must be R × pages, whatever N);
//! - wall time of a full `capa-refresher --once` refresh as a ratio to the bare paginated fetch of
//!   the same data with the SDK (target ≤ 1.2×), interleaved; the fake API server runs the real
//!   policy.wasm as its admission step, so the re-admissions are answered as in a cluster;
//! - peak RSS of the refresher during a refresh (target ≤ 40 MB);
//! - size of the stripped release binary.
//!
//! Usage: refresher-bench --refresher target/release/capa-refresher [--rounds N]

use anyhow::{Context, Result, bail};
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use e2e_tests::cluster_host::ClusterHost;
use e2e_tests::fake_kube::FakeKube;
use e2e_tests::servers::Ec2;
use e2e_tests::{Policy, deploy, objects, paths};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "openshift-machine-api";

struct Args {
    refresher: PathBuf,
    rounds: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        refresher: PathBuf::new(),
        rounds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--refresher" => a.refresher = value()?.into(),
            "--rounds" => a.rounds = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if a.refresher.as_os_str().is_empty() {
        bail!("--refresher PATH is required (make bench passes the release binary)");
    }
    Ok(a)
}

/// A cluster with `n` MachineSets spread over `regions`, each region using 2 Secrets, and the
/// policy as its mutating admission step.
fn cluster(ec2: &Ec2, policy: &Arc<Policy>, n: usize, regions: &[&str]) -> Result<FakeKube> {
    let kube = FakeKube::start()?;
    let cap = json!({"spec": {"mutating": true, "failurePolicy": "Ignore", "settings": {},
        "rules": [{"apiGroups": ["machine.openshift.io"], "apiVersions": ["v1beta1"],
                   "resources": ["machinesets"], "operations": ["CREATE", "UPDATE"]}]}});
    let host = Arc::new(ClusterHost::new(kube.reader()));
    kube.set_admission(
        "machine.openshift.io/v1beta1",
        "MachineSet",
        deploy::admission_hook(&cap, policy.clone(), host)?,
    );
    kube.put(objects::infrastructure(&ec2.proxy_url));
    for s in ["creds-a", "creds-b"] {
        kube.put(objects::aws_secret(NS, s, "AKIABENCH", "bench"));
    }
    for ms in machinesets(n, regions) {
        kube.put(ms);
    }
    Ok(kube)
}

/// `n` MachineSets without capacity annotations (put directly: they need re-admission).
fn machinesets(n: usize, regions: &[&str]) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let secret = if i % 2 == 0 { "creds-a" } else { "creds-b" };
            objects::machineset(
                NS,
                &format!("ms-{i}"),
                regions[i % regions.len()],
                "m5.large",
                secret,
            )
        })
        .collect()
}

/// Runs `--once`; returns (wall time, peak RSS in KiB from /proc VmHWM).
fn run_once(refresher: &Path, kubeconfig: &Path, home: &Path) -> Result<(Duration, u64)> {
    let start = Instant::now();
    let mut child = Command::new(refresher)
        .args([
            "--once",
            "--metrics-bind-address",
            "0",
            "--health-addr",
            "0",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_path)
            && let Some(kb) = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("capa-refresher --once failed: {status}");
            }
            return Ok((start.elapsed(), peak));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The baseline: the same pages fetched with the SDK alone.
async fn bare_fetch(endpoint: &str) -> Result<(Duration, usize)> {
    let start = Instant::now();
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-3"))
        .credentials_provider(Credentials::new("AKIABENCH", "bench", None, None, "bench"))
        .endpoint_url(endpoint)
        .build();
    let client = aws_sdk_ec2::Client::from_conf(conf);
    let mut pages = client
        .describe_instance_types()
        .max_results(100)
        .into_paginator()
        .send();
    let mut n = 0;
    while let Some(page) = pages.next().await {
        n += page?.instance_types().len();
    }
    Ok((start.elapsed(), n))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn main() -> Result<()> {
    let a = args()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ec2 = Ec2::start()?;
    let policy = Arc::new(Policy::load(&paths::policy_wasm()).with_context(|| {
        format!(
            "the policy module {} (make policy.wasm)",
            paths::policy_wasm().display()
        )
    })?);
    let home = paths::scratch_dir("bench");
    println!(
        "capa-refresher benchmark: moto {} behind the paging proxy, fake Kubernetes API, release binary {}",
        moto_version(),
        a.refresher.display()
    );

    // 1. EC2 calls per refresh
    println!("\nEC2 calls per refresh (DescribeInstanceTypes pages):");
    println!(
        "{:>14} {:>8} {:>8} {:>12} {:>10}",
        "MachineSets", "regions", "calls", "R x pages", "check"
    );
    let mut pages_per_region = 0;
    for (n, regions) in [
        (1, vec!["eu-west-3"]),
        (20, vec!["eu-west-3"]),
        (60, vec!["eu-west-3", "us-east-1", "us-west-2"]),
    ] {
        let kube = cluster(&ec2, &policy, n, &regions)?;
        let kubeconfig = kube.write_kubeconfig(&home)?;
        ec2.reset_calls()?;
        run_once(&a.refresher, &kubeconfig, &home)?;
        let calls = ec2.count("DescribeInstanceTypes", None)?;
        if pages_per_region == 0 {
            pages_per_region = calls;
        }
        let want = regions.len() * pages_per_region;
        println!(
            "{:>14} {:>8} {:>8} {:>12} {:>10}",
            n,
            regions.len(),
            calls,
            want,
            if calls == want { "ok" } else { "MISMATCH" }
        );
    }

    // 2. wall time and RSS, interleaved with the bare SDK fetch
    let kube = cluster(&ec2, &policy, 10, &["eu-west-3"])?;
    let kubeconfig = kube.write_kubeconfig(&home)?;
    let (mut full, mut bare, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    let mut fetched = 0;
    for _ in 0..a.rounds {
        // a fresh table and unannotated MachineSets each round: every refresh writes the whole
        // ConfigMap and re-admits all 10 through the policy
        kube.put(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "machineset-instance-types", "namespace": NS}, "data": {}}));
        for ms in machinesets(10, &["eu-west-3"]) {
            kube.put(ms);
        }
        let (t, peak) = run_once(&a.refresher, &kubeconfig, &home)?;
        let annotated = kube
            .list("machine.openshift.io/v1beta1", "MachineSet")
            .iter()
            .filter(|m| m["metadata"]["annotations"]["machine.openshift.io/vCPU"] == "2")
            .count();
        if annotated != 10 {
            bail!(
                "the refresh left {} of 10 MachineSets unannotated",
                10 - annotated
            );
        }
        full.push(t.as_secs_f64());
        rss.push(peak as f64);
        let (t, n) = rt.block_on(bare_fetch(&ec2.proxy_url))?;
        bare.push(t.as_secs_f64());
        fetched = n;
    }
    let (f, b) = (median(&mut full), median(&mut bare));
    let peak_mb = rss.iter().cloned().fold(0.0, f64::max) / 1024.0;
    println!(
        "\nfull refresh vs bare paginated fetch ({} types, {} rounds interleaved, median):",
        fetched, a.rounds
    );
    println!(
        "  capa-refresher --once (process start, Kubernetes reads, DescribeRegions, scan, ConfigMap write, re-admission): {:.3} s",
        f
    );
    println!(
        "  bare SDK fetch of the same pages:                                                                       {:.3} s",
        b
    );
    println!("  ratio: {:.2} x  (target <= 1.2)", f / b);
    println!(
        "peak RSS of the refresher during a refresh: {:.1} MB (max over rounds; target <= 40 MB)",
        peak_mb
    );

    // 3. stripped binary size
    let stripped = home.join("capa-refresher.stripped");
    std::fs::copy(&a.refresher, &stripped)?;
    let strip_ok = Command::new("strip")
        .arg(&stripped)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let size = std::fs::metadata(&stripped)?.len();
    println!(
        "refresher binary: {:.1} MB{}",
        size as f64 / 1_048_576.0,
        if strip_ok {
            " stripped"
        } else {
            " (strip not available: unstripped)"
        }
    );
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

fn moto_version() -> String {
    Command::new("python3")
        .args(["-c", "import moto; print(moto.__version__)"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
