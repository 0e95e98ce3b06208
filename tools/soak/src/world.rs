//! The cluster the replicas run in: the fake API server with `policy.wasm` as its MachineSet
//! admission step (configured from deploy/'s ClusterAdmissionPolicy), moto behind the EC2 proxy,
//! one credentials Secret per region, and MachineSets that change during the soak.

use anyhow::{Context, Result};
use e2e_tests::cluster_host::ClusterHost;
use e2e_tests::deploy::{self, Manifests};
use e2e_tests::fake_kube::FakeKube;
use e2e_tests::servers::{self, Ec2};
use e2e_tests::{Policy, objects, paths};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const NS: &str = "openshift-machine-api";
pub const CM: &str = "machineset-instance-types";
pub const LEASE_NS: &str = "capa-annotator";
pub const MS_API: &str = "machine.openshift.io/v1beta1";
/// The user the soak's own writes go through the API (and admission) as.
pub const ADMIN: &str = "system:admin";

/// Regions MachineSets use. moto lists every region; me-south-1 is one it reports as not opted in.
pub const REGIONS: &[&str] = &["eu-west-3", "us-east-1", "ap-south-1", "me-south-1"];
pub const NOT_OPTED_IN: &str = "me-south-1";

/// Instance types MachineSets use, with what EC2 (moto's catalogue, real values) lists for them:
/// (type, vCPU, memory MiB, GPUs, arch).
pub const KNOWN_TYPES: &[(&str, u32, u64, u32, &str)] = &[
    ("m5.large", 2, 8192, 0, "amd64"),
    ("m5.xlarge", 4, 16384, 0, "amd64"),
    ("m6g.xlarge", 4, 16384, 0, "arm64"),
    ("c5.2xlarge", 8, 16384, 0, "amd64"),
    ("g4dn.xlarge", 4, 16384, 1, "amd64"),
    ("p4d.24xlarge", 96, 1_179_648, 8, "amd64"),
];
/// A type EC2 does not list (a typo): never annotated, never converges, not waited for.
pub const UNKNOWN_TYPE: &str = "m5.xlargee";

pub struct World {
    pub kube: FakeKube,
    pub ec2: Ec2,
    pub dir: PathBuf,
    pub manifests: Manifests,
    /// Every value ever stored in a Secret (key ids and secret keys): none may leak.
    pub secret_values: Arc<Mutex<BTreeSet<String>>>,
    rotation: Mutex<u64>,
    /// Keep the scratch directory (replica logs) after the run.
    pub keep: bool,
}

pub fn secret_name(region: &str) -> String {
    format!("aws-{region}")
}

impl World {
    pub fn start() -> Result<Self> {
        let manifests = Manifests::render("deploy")?;
        let kube = FakeKube::start()?;
        let ec2 = Ec2::start()?;
        let dir = paths::scratch_dir("soak");
        let policy =
            Arc::new(Policy::load(&paths::policy_wasm()).with_context(|| {
                format!("{} (make policy.wasm)", paths::policy_wasm().display())
            })?);
        // like the policy server, the host keeps get_resource answers for 5 s
        let host = Arc::new(ClusterHost::with_cache(
            kube.reader(),
            Duration::from_secs(5),
        ));
        let cap = manifests
            .find("ClusterAdmissionPolicy", "capa-annotator")
            .context("deploy/ has no ClusterAdmissionPolicy capa-annotator")?;
        kube.set_admission(
            MS_API,
            "MachineSet",
            deploy::admission_hook(cap, policy, host)?,
        );
        kube.put(objects::infrastructure(&ec2.proxy_url));
        let w = World {
            kube,
            ec2,
            dir,
            manifests,
            secret_values: Arc::new(Mutex::new(BTreeSet::new())),
            rotation: Mutex::new(0),
            keep: false,
        };
        for region in REGIONS {
            w.rotate_secret(region)?;
        }
        Ok(w)
    }

    /// A write through the API server as the admin (so MachineSets go through admission).
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = format!("Bearer {ADMIN}");
        let (_, text) = servers::request(
            &self.kube.url(),
            method,
            path,
            "application/json",
            &[("Authorization", &auth)],
            bytes.as_bytes(),
        )?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Writes the region's Secret with new keys (created if missing).
    pub fn rotate_secret(&self, region: &str) -> Result<()> {
        let n = {
            let mut r = self.rotation.lock().unwrap_or_else(|e| e.into_inner());
            *r += 1;
            *r
        };
        // distinctive values, so that a leak is found by a plain substring search
        let key_id = format!("AKIASOAK{n:04}{:08X}", fnv(region) as u32);
        let secret = format!(
            "soakSecret{n:04}x{:016x}Zq",
            fnv(region) ^ n.wrapping_mul(0x9E37)
        );
        {
            let mut values = self.secret_values.lock().unwrap_or_else(|e| e.into_inner());
            values.insert(key_id.clone());
            values.insert(secret.clone());
        }
        let obj = objects::aws_secret(NS, &secret_name(region), &key_id, &secret);
        let name = secret_name(region);
        let path = format!("/api/v1/namespaces/{NS}/secrets/{name}");
        match self.kube.get("v1", "Secret", Some(NS), &name) {
            Some(current) => {
                let mut obj = obj;
                obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
                self.api("PUT", &path, Some(&obj))?;
            }
            None => {
                self.api(
                    "POST",
                    &format!("/api/v1/namespaces/{NS}/secrets"),
                    Some(&obj),
                )?;
            }
        }
        Ok(())
    }

    pub fn delete_secret(&self, region: &str) -> Result<()> {
        let name = secret_name(region);
        self.api(
            "DELETE",
            &format!("/api/v1/namespaces/{NS}/secrets/{name}"),
            None,
        )?;
        Ok(())
    }

    pub fn has_secret(&self, region: &str) -> bool {
        self.kube
            .get("v1", "Secret", Some(NS), &secret_name(region))
            .is_some()
    }

    fn ms_path(name: Option<&str>) -> String {
        match name {
            Some(n) => {
                format!("/apis/machine.openshift.io/v1beta1/namespaces/{NS}/machinesets/{n}")
            }
            None => format!("/apis/machine.openshift.io/v1beta1/namespaces/{NS}/machinesets"),
        }
    }

    /// Creates a MachineSet through the API (admission runs).
    pub fn create_machineset(&self, name: &str, region: &str, instance_type: &str) -> Result<()> {
        let ms = machineset(name, region, instance_type);
        self.api("POST", &Self::ms_path(None), Some(&ms))?;
        Ok(())
    }

    /// Changes a MachineSet's instance type through the API (admission runs).
    pub fn change_type(&self, name: &str, instance_type: &str) -> Result<()> {
        let Some(mut ms) = self.kube.get(MS_API, "MachineSet", Some(NS), name) else {
            return Ok(());
        };
        ms["spec"]["template"]["spec"]["providerSpec"]["value"]["instanceType"] =
            json!(instance_type);
        set_accelerator_label(&mut ms, instance_type);
        self.api("PUT", &Self::ms_path(Some(name)), Some(&ms))?;
        Ok(())
    }

    pub fn delete_machineset(&self, name: &str) -> Result<()> {
        self.api("DELETE", &Self::ms_path(Some(name)), None)?;
        Ok(())
    }

    pub fn machinesets(&self) -> Vec<Value> {
        self.kube.list(MS_API, "MachineSet")
    }

    pub fn configmap(&self) -> Option<Value> {
        self.kube.get("v1", "ConfigMap", Some(NS), CM)
    }

    /// The lease holder, if any.
    pub fn leader(&self) -> Option<String> {
        self.kube
            .get(
                "coordination.k8s.io/v1",
                "Lease",
                Some(LEASE_NS),
                "capa-refresher",
            )
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A MachineSet of the soak: `instance_type` in `region`, with the region's Secret.
pub fn machineset(name: &str, region: &str, instance_type: &str) -> Value {
    let mut ms = objects::machineset(NS, name, region, instance_type, &secret_name(region));
    set_accelerator_label(&mut ms, instance_type);
    ms
}

/// A GPU node group is set up for the autoscaler (else the policy warns, rightly).
fn set_accelerator_label(ms: &mut Value, instance_type: &str) {
    if gpus(instance_type) > 0 {
        ms["spec"]["template"]["spec"]["metadata"] =
            json!({"labels": {"cluster-api/accelerator": "nvidia"}});
    }
}

pub fn gpus(instance_type: &str) -> u32 {
    KNOWN_TYPES
        .iter()
        .find(|t| t.0 == instance_type)
        .map_or(0, |t| t.3)
}

/// What a MachineSet of a type EC2 lists must carry: (vCPU, memoryMb, GPU, labels).
pub fn expected_annotations(instance_type: &str) -> Option<[String; 4]> {
    KNOWN_TYPES
        .iter()
        .find(|t| t.0 == instance_type)
        .map(|(_, v, m, g, arch)| {
            [
                v.to_string(),
                m.to_string(),
                g.to_string(),
                format!("kubernetes.io/arch={arch}"),
            ]
        })
}

pub fn region_of(ms: &Value) -> &str {
    ms.pointer("/spec/template/spec/providerSpec/value/placement/region")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub fn type_of(ms: &Value) -> &str {
    ms.pointer("/spec/template/spec/providerSpec/value/instanceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
