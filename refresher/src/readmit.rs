//! After a table change: which MachineSets the policy must see again. The refresher never writes
//! capacity annotations itself; it patches a marker annotation so the API server re-runs admission,
//! and the policy annotates. Whether a MachineSet is up to date is decided with the same function
//! the policy uses (`capa_core::annotations::edits_for`).

use capa_core::Capacity;
use capa_core::annotations::{self, Options};
use capa_core::machineset;
use capa_core::provider_spec::{self, ProviderSpec};
use capa_core::table::{Table, TypeName};
use serde_json::{Value, json};

/// Marker annotation set by the re-admission patch: the table entry the MachineSet should match.
pub const READMIT_ANNOTATION: &str = "capa-annotator.io/table-entry";

/// What to do with one MachineSet.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not ours (deleting, non-AWS, no usable instance type): nothing.
    Ignore,
    UpToDate,
    /// Send this merge patch to make the API server re-run admission.
    Readmit(Value),
    /// The table does not know the type: Warning Event `FailedUpdate`.
    Unknown(String),
}

/// `m5.xlarge vcpu=4 memoryMiB=16384 gpu=0 arch=amd64`.
pub fn entry_text(instance_type: &str, c: &Capacity) -> String {
    format!(
        "{instance_type} vcpu={} memoryMiB={} gpu={} arch={}",
        c.vcpu, c.memory_mib, c.gpu, c.arch
    )
}

pub fn decide(ms: &Value, table: &Table) -> Decision {
    // `status.authoritativeAPI`/`Paused` only exist when the migration gate is on: respect them
    if machineset::skip_reason(ms, true).is_some() {
        return Decision::Ignore;
    }
    let Ok(ProviderSpec::Aws(spec)) = provider_spec::read(ms) else {
        return Decision::Ignore;
    };
    decide_for(ms, spec.instance_type, table, Options::default())
}

/// A Cluster API MachineSet or MachineDeployment whose AWSMachineTemplate asks for
/// `instance_type`: judged by the Cluster API key set.
pub fn decide_cluster_api(obj: &Value, instance_type: &str, table: &Table) -> Decision {
    if machineset::is_deleting(obj) {
        return Decision::Ignore;
    }
    let opts = Options {
        cluster_api: true,
        ..Options::default()
    };
    decide_for(obj, instance_type, table, opts)
}

fn decide_for(obj: &Value, instance_type: &str, table: &Table, opts: Options) -> Decision {
    let Ok(name) = TypeName::parse(instance_type) else {
        return Decision::Ignore;
    };
    let Some(capacity) = table.get(name) else {
        return Decision::Unknown(instance_type.to_string());
    };
    let existing = match machineset::annotations(obj) {
        Ok(a) => a.cloned().unwrap_or_default(),
        Err(_) => return Decision::Ignore,
    };
    if annotations::edits_for(&existing, capacity, opts).is_empty() {
        return Decision::UpToDate;
    }
    Decision::Readmit(json!({"metadata": {"annotations": {
        READMIT_ANNOTATION: entry_text(instance_type, capacity)
    }}}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use capa_core::Arch;

    fn ms(instance_type: &str, annotations: Value) -> Value {
        json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
               "metadata": {"namespace": "a", "name": "w", "annotations": annotations},
               "spec": {"template": {"spec": {"providerSpec": {"value": {
                   "kind": "AWSMachineProviderConfig", "instanceType": instance_type}}}}}})
    }

    fn table() -> Table {
        let mut t = Table::new();
        t.insert(
            TypeName::parse("m5.xlarge").unwrap(),
            Capacity {
                vcpu: 4,
                memory_mib: 16384,
                gpu: 0,
                arch: Arch::Amd64,
                gpu_vendor: None,
            },
        );
        t
    }

    #[test]
    fn decisions() {
        let t = table();
        assert_eq!(
            decide(&ms("m5.xlarge", json!({})), &t),
            Decision::Readmit(
                json!({"metadata": {"annotations": {READMIT_ANNOTATION: "m5.xlarge vcpu=4 memoryMiB=16384 gpu=0 arch=amd64"}}})
            )
        );
        let done = json!({"machine.openshift.io/vCPU": "4", "machine.openshift.io/memoryMb": "16384",
                          "machine.openshift.io/GPU": "0",
                          "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=amd64"});
        assert_eq!(decide(&ms("m5.xlarge", done), &t), Decision::UpToDate);
        assert_eq!(
            decide(&ms("zz9.huge", json!({})), &t),
            Decision::Unknown("zz9.huge".into())
        );
        assert_eq!(decide(&ms("", json!({})), &t), Decision::Ignore);
        let mut deleting = ms("m5.xlarge", json!({}));
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(decide(&deleting, &t), Decision::Ignore);
    }

    #[test]
    fn cluster_api_objects_are_judged_by_the_cluster_api_keys() {
        let t = table();
        let md = |annotations: Value| {
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                   "metadata": {"namespace": "a", "name": "md", "annotations": annotations}})
        };
        // the Machine API keys do not make a Cluster API object right
        let openshift = json!({"machine.openshift.io/vCPU": "4", "machine.openshift.io/memoryMb": "16384",
                               "machine.openshift.io/GPU": "0",
                               "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=amd64"});
        assert!(matches!(
            decide_cluster_api(&md(openshift), "m5.xlarge", &t),
            Decision::Readmit(_)
        ));
        let right = json!({"capacity.cluster-autoscaler.kubernetes.io/cpu": "4",
                           "capacity.cluster-autoscaler.kubernetes.io/memory": "16384Mi",
                           "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=amd64"});
        assert_eq!(
            decide_cluster_api(&md(right.clone()), "m5.xlarge", &t),
            Decision::UpToDate
        );
        // a bare number is bytes: wrong
        let mut bytes = right;
        bytes["capacity.cluster-autoscaler.kubernetes.io/memory"] = json!("16384");
        assert!(matches!(
            decide_cluster_api(&md(bytes), "m5.xlarge", &t),
            Decision::Readmit(_)
        ));
        assert_eq!(
            decide_cluster_api(&md(json!({})), "zz9.huge", &t),
            Decision::Unknown("zz9.huge".into())
        );
    }
}
