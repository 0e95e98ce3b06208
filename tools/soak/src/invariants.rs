//! What must hold whatever fails, checked from outside the replicas:
//!
//! - on every write the API server commits: the ConfigMap is in the table format the policy reads
//!   and keeps every instance type it had; every write by a replica (ConfigMap, MachineSet
//!   re-admission, Event) comes from the replica that holds the Lease at that moment;
//! - from the EC2 proxy's call log: at most one scan (a first DescribeInstanceTypes page, retries
//!   of the same SDK invocation included) per region per `--min-region-scan-interval`, across
//!   both replicas;
//! - no value of any Secret in logs, Events, metrics, the ConfigMap or the Lease.

use crate::world::{CM, NS};
use capa_core::table::Table;
use e2e_tests::fake_kube::{Commit, CommitObserver};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct WriteState {
    holder: Option<String>,
    /// Instance types the ConfigMap has held so far.
    types: BTreeSet<String>,
    configmap_writes: u64,
    replica_writes: u64,
    violations: Vec<String>,
}

/// Checks every committed write (see the module doc).
#[derive(Clone, Default)]
pub struct Writes(Arc<Mutex<WriteState>>);

impl Writes {
    /// Replicas are the API users whose name starts with `replica_prefix`.
    pub fn observer(&self, replica_prefix: &'static str) -> CommitObserver {
        let state = self.0.clone();
        Arc::new(move |c: &Commit<'_>| {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            if c.resource == "leases" && c.group == "coordination.k8s.io" {
                s.holder = c.object["spec"]["holderIdentity"]
                    .as_str()
                    .map(str::to_string);
                return;
            }
            if c.user.starts_with(replica_prefix) {
                s.replica_writes += 1;
                if s.holder.as_deref() != Some(c.user) {
                    let v = format!(
                        "two writers: {} wrote {} {}/{} while the lease holder was {:?}",
                        c.user,
                        c.resource,
                        c.namespace.unwrap_or_default(),
                        c.name,
                        s.holder
                    );
                    s.violations.push(v);
                }
            }
            if c.group.is_empty()
                && c.resource == "configmaps"
                && c.namespace == Some(NS)
                && c.name == CM
            {
                s.configmap_writes += 1;
                match check_table(c.event, c.object, &s.types) {
                    Ok(types) => s.types = types,
                    Err(v) => s
                        .violations
                        .push(format!("ConfigMap write by {}: {v}", c.user)),
                }
            }
        })
    }

    pub fn violations(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .violations
            .clone()
    }

    /// (ConfigMap writes, writes by replicas, instance types in the table)
    pub fn counts(&self) -> (u64, u64, usize) {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (s.configmap_writes, s.replica_writes, s.types.len())
    }
}

/// The instance types of a written ConfigMap, or why it breaks an invariant.
fn check_table(
    event: &str,
    cm: &Value,
    before: &BTreeSet<String>,
) -> Result<BTreeSet<String>, String> {
    if event == "DELETED" {
        return Err("the ConfigMap was deleted".into());
    }
    let Some(data) = cm["data"].as_object() else {
        return Err("no data map".into());
    };
    let mut pairs = Vec::new();
    for (k, v) in data {
        match v.as_str() {
            Some(v) => pairs.push((k.as_str(), v)),
            None => return Err(format!("data.{k} is not a string")),
        }
    }
    let (table, bad) = Table::from_configmap_data(pairs.iter().copied());
    if !bad.is_empty() {
        return Err(format!("not in the table format: {bad:?}"));
    }
    let types: BTreeSet<String> = table.iter().map(|(n, _)| n.to_string()).collect();
    let lost: Vec<&String> = before.difference(&types).collect();
    if !lost.is_empty() {
        return Err(format!(
            "lost {} instance types it had, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    Ok(types)
}

/// A region's scans closer together than the minimum interval, from the proxy's call log.
pub fn scan_rate(
    calls: &[Value],
    min_interval: Duration,
) -> (BTreeMap<String, usize>, Vec<String>) {
    // first pages, one per SDK invocation (its retries share the invocation id)
    let mut starts: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for c in calls {
        if c["action"] != "DescribeInstanceTypes" || c["has_next_token"] == true {
            continue;
        }
        if let Some(id) = c["invocation"].as_str()
            && !seen.insert(id.to_string())
        {
            continue;
        }
        let region = c["region"].as_str().unwrap_or("?").to_string();
        starts
            .entry(region)
            .or_default()
            .push(c["t"].as_f64().unwrap_or(0.0));
    }
    let mut violations = Vec::new();
    let min = min_interval.as_secs_f64();
    for (region, ts) in &mut starts {
        ts.sort_by(f64::total_cmp);
        for w in ts.windows(2) {
            let gap = w[1] - w[0];
            if gap < min {
                violations.push(format!(
                    "region {region} scanned twice {gap:.2}s apart (at {:.2} and {:.2}; minimum {min}s)",
                    w[0], w[1]
                ));
            }
        }
    }
    (
        starts.into_iter().map(|(r, t)| (r, t.len())).collect(),
        violations,
    )
}

/// Places where a Secret value appears in `text`.
pub fn leaks(what: &str, text: &str, secrets: &BTreeSet<String>) -> Vec<String> {
    secrets
        .iter()
        .filter(|s| text.contains(s.as_str()))
        .map(|s| format!("a Secret value ({}…) in {what}", &s[..s.len().min(8)]))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn cm(data: Value) -> Value {
        json!({"data": data})
    }

    fn m5_large() -> Value {
        let mut t = Table::new();
        t.insert(
            capa_core::table::TypeName::parse("m5.large").unwrap(),
            capa_core::Capacity {
                vcpu: 2,
                memory_mib: 8192,
                gpu: 0,
                arch: capa_core::Arch::Amd64,
                gpu_vendor: None,
            },
        );
        json!(t.to_configmap_data())
    }

    #[test]
    fn a_table_that_loses_an_entry_or_leaves_the_format_is_caught() {
        let t1 = check_table("ADDED", &cm(m5_large()), &BTreeSet::new());
        let t1 = t1.unwrap();
        assert_eq!(t1.len(), 1);
        let e = check_table("MODIFIED", &cm(json!({})), &t1).unwrap_err();
        assert!(e.contains("lost 1"), "{e}");
        let e = check_table("MODIFIED", &cm(json!({"m5": "{oops"})), &t1).unwrap_err();
        assert!(e.contains("format"), "{e}");
        assert!(check_table("DELETED", &cm(json!({})), &t1).is_err());
    }

    #[test]
    fn scans_closer_than_the_interval_are_caught_and_retries_are_not_scans() {
        let call = |t: f64, inv: &str, next: bool| {
            json!({"action": "DescribeInstanceTypes", "region": "eu-west-3", "t": t,
                   "invocation": inv, "has_next_token": next})
        };
        let calls = vec![
            call(0.0, "a", false),
            call(0.5, "a", false), // a retry of the same invocation
            call(1.0, "b", true),  // a later page
            call(5.0, "c", false),
        ];
        let (n, v) = scan_rate(&calls, Duration::from_secs(3));
        assert_eq!(n["eu-west-3"], 2);
        assert!(v.is_empty(), "{v:?}");
        let (_, v) = scan_rate(&calls, Duration::from_secs(6));
        assert_eq!(v.len(), 1, "{v:?}");
    }
}
