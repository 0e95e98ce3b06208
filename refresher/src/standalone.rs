//! The cluster-less mode (`--dry-run --region …`): scans regions with the default AWS credential
//! chain and prints what the refresher would store, reading and writing nothing in Kubernetes.
//! This is how the policy's built-in table is regenerated from a real AWS account
//! (`--output snapshot`), and how `make snapshot` regenerates it from moto.

use crate::ec2::{Ec2, Ec2Error, FailureKind};
use crate::metrics::Metrics;
use crate::region_cache;
use aws_config::BehaviorVersion;
use capa_core::table::Table;
use std::collections::BTreeSet;

/// What the scan of every named region listed.
#[derive(Debug, Default)]
pub struct Scan {
    pub table: Table,
    pub regions: BTreeSet<String>,
}

/// Checks every named region with one `DescribeRegions` (made in the configured region, e.g.
/// `AWS_REGION`, else the first named one), then scans each in turn; any failure stops the run
/// (the output would be incomplete).
pub async fn scan(regions: &[String], metrics: &Metrics) -> anyhow::Result<Scan> {
    let mut wanted: Vec<&str> = Vec::new();
    for region in regions.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
        if !wanted.contains(&region) {
            wanted.push(region);
        }
    }
    let Some(first) = wanted.first() else {
        anyhow::bail!("--region names no region");
    };
    let http = crate::ec2::http_client(None)?;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await;
    let home = sdk
        .region()
        .map_or_else(|| (*first).to_string(), ToString::to_string);
    let known = Ec2::from_sdk_config(&sdk, &home)
        .describe_regions(metrics)
        .await
        .map_err(with_hint)?;
    for region in &wanted {
        region_cache::check(&known, region)
            .map_err(|e| anyhow::anyhow!("{e} for these credentials; fix --region"))?;
    }
    let mut out = Scan::default();
    for region in wanted {
        tracing::info!(region, "scanning instance types");
        let items = Ec2::from_sdk_config(&sdk, region)
            .describe_instance_types(metrics)
            .await
            .map_err(with_hint)?;
        let before = out.table.len();
        crate::scan::add_scanned(&mut out.table, region, &items);
        tracing::info!(
            region,
            listed = items.len(),
            new = out.table.len() - before,
            "region scanned"
        );
        out.regions.insert(region.to_string());
    }
    Ok(out)
}

fn with_hint(e: Ec2Error) -> anyhow::Error {
    match e.kind {
        FailureKind::Auth => anyhow::anyhow!(
            "{e}; check the AWS credentials of this shell (AWS_PROFILE, AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, ~/.aws/credentials): they need ec2:DescribeRegions and \
             ec2:DescribeInstanceTypes"
        ),
        _ => anyhow::Error::new(e),
    }
}
