//! The faults and changes the soak throws at the system, drawn from its seeded generator: EC2
//! faults through the proxy, API faults in the fake server, MachineSet and Secret churn. Killing
//! the leader mid-refresh is decided by the driver (main.rs), which sees the logs.

use crate::world::{self, KNOWN_TYPES, NOT_OPTED_IN, REGIONS, UNKNOWN_TYPE, World};
use anyhow::Result;
use e2e_tests::fake_kube::{ApiFault, ApiFaultEffect};
use e2e_tests::rng::Rng;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// Counts by kind of what was thrown.
#[derive(Default, Debug)]
pub struct Thrown {
    pub ec2_queued: BTreeMap<&'static str, u64>,
    pub churn: BTreeMap<&'static str, u64>,
}

pub struct Chaos {
    rng: Rng,
    /// EC2 timeouts (a 61 s stall, past the SDK's 60 s attempt timeout) are rare: each costs a minute.
    pub timeouts: bool,
    next_ms: u64,
    /// Regions whose Secret is deleted, and the cycle it comes back.
    missing_secrets: BTreeMap<String, u64>,
    pub thrown: Thrown,
}

/// EC2 fault kinds; `timeout` last.
const EC2_FAULTS: &[&str] = &[
    "throttle",
    "internal",
    "unavailable",
    "slow",
    "auth",
    "reset",
    "timeout",
];

/// Where API faults go: (verb, resource).
const API_TARGETS: &[(&str, &str)] = &[
    ("list", "machinesets"),
    ("get", "configmaps"),
    ("update", "configmaps"),
    ("create", "configmaps"),
    ("patch", "machinesets"),
    ("get", "secrets"),
    ("get", "leases"),
    ("update", "leases"),
    ("create", "events"),
    ("get", "infrastructures"),
];

impl Chaos {
    pub fn new(seed: u64, timeouts: bool) -> Self {
        Chaos {
            rng: Rng::new(seed),
            timeouts,
            next_ms: 0,
            missing_secrets: BTreeMap::new(),
            thrown: Thrown::default(),
        }
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// 0–3 faults of random kinds, plus churn, for the coming cycle.
    pub fn throw(&mut self, w: &World, cycle: u64) -> Result<()> {
        let n = self.rng.below(4);
        for _ in 0..n {
            if self.rng.chance(50) {
                self.ec2_fault(w)?;
            } else {
                self.api_fault(w);
            }
        }
        if self.rng.chance(50) {
            self.churn(w, cycle)?;
        }
        // a deleted Secret comes back after a few cycles
        let due: Vec<String> = self
            .missing_secrets
            .iter()
            .filter(|(_, at)| **at <= cycle)
            .map(|(r, _)| r.clone())
            .collect();
        for region in due {
            w.rotate_secret(&region)?;
            self.missing_secrets.remove(&region);
            *self.thrown.churn.entry("secret_restored").or_default() += 1;
        }
        Ok(())
    }

    fn ec2_fault(&mut self, w: &World) -> Result<()> {
        let region = *self.rng.pick(&REGIONS[..3]);
        let count = 1 + self.rng.below(3) as u64;
        // the timeout, last, only when asked for
        let kinds = if self.timeouts {
            EC2_FAULTS
        } else {
            &EC2_FAULTS[..EC2_FAULTS.len() - 1]
        };
        let mut kind = *self.rng.pick(kinds);
        if kind == "timeout" && !self.rng.chance(15) {
            kind = "slow";
        }
        let fault = match kind {
            "throttle" => json!({"action": "DescribeInstanceTypes", "status": 503,
                "code": "RequestLimitExceeded", "count": count}),
            "internal" => json!({"status": 500, "code": "InternalError", "count": count}),
            "unavailable" => json!({"action": "DescribeInstanceTypes", "status": 503,
                "code": "Unavailable", "count": count}),
            "slow" => json!({"delay_ms": 300 + self.rng.below(2700), "count": count}),
            "auth" => json!({"region": region, "status": 401, "code": "AuthFailure", "count": 1}),
            "reset" => json!({"reset": true, "count": count}),
            _ => json!({"action": "DescribeInstanceTypes", "delay_ms": 61_000, "count": 1}),
        };
        w.ec2.fault(fault)?;
        *self.thrown.ec2_queued.entry(kind).or_default() += 1;
        Ok(())
    }

    fn api_fault(&mut self, w: &World) {
        let (verb, resource) = *self.rng.pick(API_TARGETS);
        let effect = match self.rng.below(6) {
            0 | 1 => ApiFaultEffect::InternalError,
            2 => ApiFaultEffect::Conflict,
            3 => ApiFaultEffect::Slow(Duration::from_millis(200 + self.rng.below(1300) as u64)),
            4 => ApiFaultEffect::CloseWatchAfter(self.rng.below(3)),
            _ => ApiFaultEffect::WatchGone,
        };
        let watch = matches!(
            effect,
            ApiFaultEffect::CloseWatchAfter(_) | ApiFaultEffect::WatchGone
        );
        let conflict = effect == ApiFaultEffect::Conflict;
        w.kube.inject(ApiFault {
            verb: Some(if watch {
                "watch"
            } else if conflict {
                "update"
            } else {
                verb
            }),
            resource: Some(if watch {
                "machinesets"
            } else if conflict && !["configmaps", "leases"].contains(&resource) {
                "configmaps"
            } else {
                resource
            }),
            user: None,
            effect,
            count: 1 + self.rng.below(2) as u32,
        });
    }

    fn churn(&mut self, w: &World, cycle: u64) -> Result<()> {
        let churned: Vec<String> = w
            .machinesets()
            .iter()
            .filter_map(|m| m["metadata"]["name"].as_str())
            .filter(|n| n.starts_with("churn-"))
            .map(str::to_string)
            .collect();
        let what = match self.rng.below(11) {
            0..=2 => "machineset_created",
            3 => "machineset_bypassed_admission",
            4..=5 if !churned.is_empty() => "machineset_type_changed",
            6 if !churned.is_empty() => "machineset_deleted",
            7 | 8 => "secret_rotated",
            _ => "secret_deleted",
        };
        match what {
            "machineset_created" => {
                self.next_ms += 1;
                let region = *self.rng.pick(REGIONS);
                let t = self.instance_type();
                w.create_machineset(&format!("churn-{}", self.next_ms), region, t)?;
            }
            "machineset_bypassed_admission" => {
                self.next_ms += 1;
                let region = *self.rng.pick(&REGIONS[..3]);
                let t = self.rng.pick(KNOWN_TYPES).0;
                put_bypassing_admission(
                    w,
                    &format!("churn-{}", self.next_ms),
                    region,
                    t,
                    self.rng.chance(50),
                );
            }
            "machineset_type_changed" => {
                let name = self.rng.pick(&churned).clone();
                let t = self.instance_type();
                w.change_type(&name, t)?;
            }
            "machineset_deleted" => {
                let name = self.rng.pick(&churned).clone();
                w.delete_machineset(&name)?;
            }
            "secret_rotated" => {
                let region = *self.rng.pick(REGIONS);
                if !self.missing_secrets.contains_key(region) {
                    w.rotate_secret(region)?;
                }
            }
            _ => {
                let region = *self.rng.pick(&REGIONS[..3]);
                if w.has_secret(region) {
                    w.delete_secret(region)?;
                    let back = cycle + 1 + self.rng.below(3) as u64;
                    self.missing_secrets.insert(region.to_string(), back);
                }
            }
        }
        *self.thrown.churn.entry(what).or_default() += 1;
        Ok(())
    }

    fn instance_type(&mut self) -> &'static str {
        if self.rng.chance(10) {
            UNKNOWN_TYPE
        } else {
            self.rng.pick(KNOWN_TYPES).0
        }
    }

    /// Faults stop: queued faults are dropped and every deleted Secret comes back. Three
    /// MachineSets appear that admission never saw (written while the policy server was down:
    /// `failurePolicy: Ignore`), two with wrong values: the refresher must put them right.
    pub fn stop(&mut self, w: &World) -> Result<()> {
        w.kube.clear_faults();
        w.ec2.clear_faults()?;
        for region in std::mem::take(&mut self.missing_secrets).into_keys() {
            w.rotate_secret(&region)?;
        }
        put_bypassing_admission(w, "after-bare", "eu-west-3", "m5.large", false);
        put_bypassing_admission(w, "after-wrong", "eu-west-3", "c5.2xlarge", true);
        put_bypassing_admission(w, "after-gpu", "us-east-1", "g4dn.xlarge", true);
        Ok(())
    }
}

/// A MachineSet stored without admission (the policy server was down); with `stale`, it carries
/// the annotations of another type (copied from a MachineSet of m5.large).
fn put_bypassing_admission(w: &World, name: &str, region: &str, t: &str, stale: bool) {
    let mut ms = world::machineset(name, region, t);
    if stale {
        ms["metadata"]["annotations"] = json!({
            "machine.openshift.io/vCPU": "2", "machine.openshift.io/memoryMb": "8192",
            "machine.openshift.io/GPU": "0",
            "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=amd64"});
    }
    w.kube.put(ms);
}

/// MachineSets present at the start (as if they existed before capa-annotator was installed: no
/// admission ran for them).
pub fn initial_machinesets(w: &World) {
    for (name, region, t) in [
        ("workers", "eu-west-3", "m5.xlarge"),
        ("arm", "eu-west-3", "m6g.xlarge"),
        ("gpu", "us-east-1", "p4d.24xlarge"),
        ("typo", "eu-west-3", UNKNOWN_TYPE),
        ("cape", NOT_OPTED_IN, "m5.large"),
    ] {
        put_bypassing_admission(w, name, region, t, false);
    }
}
