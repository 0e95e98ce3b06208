//! After a table change: which objects the policy must see again. The refresher never writes
//! capacity annotations itself; it patches a marker annotation so the API server re-runs admission,
//! and the policy annotates. Whether an object is right is judged as the policy judges it, with the
//! policy's settings: its lookup order (`overrides`, the table, the built-in table when `fallback`
//! is `embedded`: `capa_annotator_policy::lookup::resolve_with`), its skip rules
//! (`respectAuthoritativeAPI`) and its annotation rules (`upstreamCapacityAnnotations`, the Cluster
//! API key set: `capa_core::annotations::edits_for`).

use crate::error::Error;
use crate::plan::ObjectRef;
use capa_annotator_policy::lookup::{self, ConfigMapState};
use capa_core::Capacity;
use capa_core::annotations::{self, Options};
use capa_core::machineset;
use capa_core::provider_spec::{self, ProviderSpec};
use capa_core::scope::Scope;
use capa_core::settings::Settings;
use capa_core::table::{Table, TypeName};
use serde_json::{Value, json};

/// Marker annotation set by the re-admission patch: the table entry the MachineSet should match.
pub const READMIT_ANNOTATION: &str = "capa-annotator.io/table-entry";

/// What to do with one MachineSet.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not ours (deleting, non-AWS, no usable instance type, skipped by the settings, not seen by
    /// the policy): nothing.
    Ignore,
    UpToDate,
    /// Send this merge patch to make the API server re-run admission.
    Readmit(Value),
    /// Neither the overrides, the table nor the built-in fallback know the type: Warning Event
    /// `FailedUpdate`.
    Unknown(String),
}

/// `m5.xlarge vcpu=4 memoryMiB=16384 gpu=0 arch=amd64`.
pub fn entry_text(instance_type: &str, c: &Capacity) -> String {
    format!(
        "{instance_type} vcpu={} memoryMiB={} gpu={} arch={}",
        c.vcpu, c.memory_mib, c.gpu, c.arch
    )
}

/// The policy's judgement with what the refresher holds: its table and the policy's settings and
/// scope.
#[derive(Debug, Clone, Copy)]
pub struct Judge<'a> {
    pub table: &'a Table,
    pub settings: &'a Settings,
    /// Which writes the policy sees (its ClusterAdmissionPolicy's rules and namespaceSelector);
    /// `None`: every object.
    pub scope: Option<&'a Scope>,
}

impl Judge<'_> {
    /// Whether the policy may see a re-submission of `obj`: one it does not see is left alone.
    pub fn covers(&self, obj: &Value) -> bool {
        // the refresher reads no Namespace: terms on other labels are taken as met
        self.scope
            .is_none_or(|s| s.decide(obj, "UPDATE", None).is_ok())
    }

    /// `obj`: a Machine API MachineSet (`capi_type` `None`), or a Cluster API object whose
    /// AWSMachineTemplate asks for `capi_type`.
    pub fn decide(&self, obj: &Value, capi_type: Option<&str>) -> Decision {
        if !self.covers(obj) {
            return Decision::Ignore;
        }
        match capi_type {
            Some(t) => decide_cluster_api(obj, t, self.table, self.settings),
            None => decide(obj, self.table, self.settings),
        }
    }
}

/// One object a refresh judges after its table is known.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub at: &'a ObjectRef,
    pub object: &'a Value,
    /// `None`: a Machine API MachineSet; else the type its AWSMachineTemplate asks for.
    pub capi_type: Option<&'a str>,
    /// Its region was scanned by this refresh.
    pub scanned: bool,
}

/// What the re-admission phase of a refresh does.
#[derive(Debug, Default)]
pub struct Selection {
    /// Candidates (by index) to re-submit, with their patches.
    pub readmit: Vec<(usize, Value)>,
    /// Warning Events: types neither EC2 nor the settings know, on objects of a region just scanned.
    pub warnings: Vec<(ObjectRef, Error)>,
}

/// The objects of the regions just scanned, and every one when the table's data changed, that
/// differ from what the policy would write; a type unknown after its region's scan is warned about.
pub fn select(candidates: &[Candidate<'_>], data_changed: bool, judge: Judge<'_>) -> Selection {
    let mut out = Selection::default();
    for (i, c) in candidates.iter().enumerate() {
        if !c.scanned && !data_changed {
            continue;
        }
        match judge.decide(c.object, c.capi_type) {
            Decision::Ignore | Decision::UpToDate => {}
            Decision::Readmit(patch) => out.readmit.push((i, patch)),
            Decision::Unknown(_) if !c.scanned => {}
            Decision::Unknown(instance_type) => {
                let field = if c.capi_type.is_some() {
                    "spec.template.spec.instanceType of its AWSMachineTemplate"
                } else {
                    "providerSpec.value.instanceType"
                };
                out.warnings.push((
                    c.at.clone(),
                    Error::UnknownInstanceType {
                        instance_type,
                        field,
                    },
                ));
            }
        }
    }
    out
}

/// A Machine API MachineSet.
pub fn decide(ms: &Value, table: &Table, settings: &Settings) -> Decision {
    if machineset::skip_reason(ms, settings.respect_authoritative_api).is_some() {
        return Decision::Ignore;
    }
    let Ok(ProviderSpec::Aws(spec)) = provider_spec::read(ms) else {
        return Decision::Ignore;
    };
    decide_for(ms, spec.instance_type, table, settings, false)
}

/// A Cluster API MachineSet or MachineDeployment whose AWSMachineTemplate asks for
/// `instance_type`: judged by the Cluster API key set.
pub fn decide_cluster_api(
    obj: &Value,
    instance_type: &str,
    table: &Table,
    settings: &Settings,
) -> Decision {
    if machineset::is_deleting(obj) {
        return Decision::Ignore;
    }
    decide_for(obj, instance_type, table, settings, true)
}

fn decide_for(
    obj: &Value,
    instance_type: &str,
    table: &Table,
    settings: &Settings,
    cluster_api: bool,
) -> Decision {
    let Ok(name) = TypeName::parse(instance_type) else {
        return Decision::Ignore;
    };
    let resolution = lookup::resolve_with(name, instance_type, settings, |name| {
        match table.get(name) {
            Some(c) => (ConfigMapState::Found, Some(*c)),
            None => (ConfigMapState::Lacks, None),
        }
    });
    let Some((capacity, _)) = resolution.capacity else {
        return Decision::Unknown(instance_type.to_string());
    };
    let existing = match machineset::annotations(obj) {
        Ok(a) => a.cloned().unwrap_or_default(),
        Err(_) => return Decision::Ignore,
    };
    let opts = Options {
        upstream_capacity: settings.upstream_capacity_annotations,
        cluster_api,
    };
    if annotations::edits_for(&existing, &capacity, opts).is_empty() {
        return Decision::UpToDate;
    }
    Decision::Readmit(json!({"metadata": {"annotations": {
        READMIT_ANNOTATION: entry_text(instance_type, &capacity)
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
    fn a_refresh_readmits_what_its_scan_or_a_new_table_touches_and_warns_on_unknown_types() {
        let t = table();
        let d = Settings::default();
        let judge = Judge {
            table: &t,
            settings: &d,
            scope: None,
        };
        let at = |n: &str| ObjectRef {
            namespace: "a".into(),
            name: n.into(),
            api_version: "machine.openshift.io/v1beta1".into(),
            kind: "MachineSet".into(),
        };
        let (wrong, unknown) = (ms("m5.xlarge", json!({})), ms("zz9.huge", json!({})));
        let (a, b, c, e) = (
            at("scanned"),
            at("elsewhere"),
            at("unknown"),
            at("unknown-elsewhere"),
        );
        let candidates = [
            Candidate {
                at: &a,
                object: &wrong,
                capi_type: None,
                scanned: true,
            },
            Candidate {
                at: &b,
                object: &wrong,
                capi_type: None,
                scanned: false,
            },
            Candidate {
                at: &c,
                object: &unknown,
                capi_type: None,
                scanned: true,
            },
            Candidate {
                at: &e,
                object: &unknown,
                capi_type: None,
                scanned: false,
            },
        ];
        let only_scanned = select(&candidates, false, judge);
        assert_eq!(
            only_scanned
                .readmit
                .iter()
                .map(|(i, _)| *i)
                .collect::<Vec<_>>(),
            [0]
        );
        assert_eq!(only_scanned.warnings.len(), 1);
        assert_eq!(only_scanned.warnings[0].0, c);
        assert_eq!(
            only_scanned.warnings[0].1.to_string(),
            "unknown instance type zz9.huge: EC2 does not list it; fix providerSpec.value.instanceType or add it to the policy's overrides setting"
        );
        let changed = select(&candidates, true, judge);
        assert_eq!(
            changed.readmit.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 1],
            "a new table concerns every object"
        );
        assert_eq!(
            changed.warnings.len(),
            1,
            "unknown types only warned after their region's scan"
        );
    }

    #[test]
    fn decisions() {
        let t = table();
        let d = Settings::default();
        assert_eq!(
            decide(&ms("m5.xlarge", json!({})), &t, &d),
            Decision::Readmit(
                json!({"metadata": {"annotations": {READMIT_ANNOTATION: "m5.xlarge vcpu=4 memoryMiB=16384 gpu=0 arch=amd64"}}})
            )
        );
        let done = json!({"machine.openshift.io/vCPU": "4", "machine.openshift.io/memoryMb": "16384",
                          "machine.openshift.io/GPU": "0",
                          "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=amd64"});
        assert_eq!(decide(&ms("m5.xlarge", done), &t, &d), Decision::UpToDate);
        assert_eq!(
            decide(&ms("zz9.huge", json!({})), &t, &d),
            Decision::Unknown("zz9.huge".into())
        );
        assert_eq!(decide(&ms("", json!({})), &t, &d), Decision::Ignore);
        let mut deleting = ms("m5.xlarge", json!({}));
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(decide(&deleting, &t, &d), Decision::Ignore);
    }

    #[test]
    fn cluster_api_objects_are_judged_by_the_cluster_api_keys() {
        let t = table();
        let d = Settings::default();
        let md = |annotations: Value| {
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                   "metadata": {"namespace": "a", "name": "md", "annotations": annotations}})
        };
        // the Machine API keys do not make a Cluster API object right
        let openshift = json!({"machine.openshift.io/vCPU": "4", "machine.openshift.io/memoryMb": "16384",
                               "machine.openshift.io/GPU": "0",
                               "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=amd64"});
        assert!(matches!(
            decide_cluster_api(&md(openshift), "m5.xlarge", &t, &d),
            Decision::Readmit(_)
        ));
        let right = json!({"capacity.cluster-autoscaler.kubernetes.io/cpu": "4",
                           "capacity.cluster-autoscaler.kubernetes.io/memory": "16384Mi",
                           "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=amd64"});
        assert_eq!(
            decide_cluster_api(&md(right.clone()), "m5.xlarge", &t, &d),
            Decision::UpToDate
        );
        // a bare number is bytes: wrong
        let mut bytes = right;
        bytes["capacity.cluster-autoscaler.kubernetes.io/memory"] = json!("16384");
        assert!(matches!(
            decide_cluster_api(&md(bytes), "m5.xlarge", &t, &d),
            Decision::Readmit(_)
        ));
        assert_eq!(
            decide_cluster_api(&md(json!({})), "zz9.huge", &t, &d),
            Decision::Unknown("zz9.huge".into())
        );
    }

    #[test]
    fn objects_are_judged_with_the_policys_settings() {
        let t = table();
        let with = |settings: Value| Settings::from_value(&settings).unwrap();
        // a type known from the overrides only: not unknown; right when annotated from them
        let overrides = with(json!({"overrides": {
            "zz1.large": {"vcpu": 2, "memoryMiB": 8192, "gpu": 0, "arch": "arm64"}}}));
        assert!(matches!(
            decide(&ms("zz1.large", json!({})), &t, &overrides),
            Decision::Readmit(_)
        ));
        let from_override = json!({"machine.openshift.io/vCPU": "2",
            "machine.openshift.io/memoryMb": "8192", "machine.openshift.io/GPU": "0",
            "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=arm64"});
        assert_eq!(
            decide(&ms("zz1.large", from_override), &t, &overrides),
            Decision::UpToDate
        );
        assert_eq!(
            decide(&ms("zz1.large", json!({})), &t, &Settings::default()),
            Decision::Unknown("zz1.large".into())
        );
        // an override wins over the table, as in the policy
        let m5 = with(json!({"overrides": {
            "m5.xlarge": {"vcpu": 3, "memoryMiB": 100, "gpu": 0, "arch": "amd64"}}}));
        let done = json!({"machine.openshift.io/vCPU": "4", "machine.openshift.io/memoryMb": "16384",
                          "machine.openshift.io/GPU": "0",
                          "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=amd64"});
        assert!(matches!(
            decide(&ms("m5.xlarge", done.clone()), &t, &m5),
            Decision::Readmit(_)
        ));
        // upstreamCapacityAnnotations: the upstream keys are part of "right"
        let upstream = with(json!({"upstreamCapacityAnnotations": true}));
        assert!(matches!(
            decide(&ms("m5.xlarge", done.clone()), &t, &upstream),
            Decision::Readmit(_)
        ));
        // what the policy writes with upstream keys is right, with those settings
        let capacity = t.get(TypeName::parse("m5.xlarge").unwrap()).unwrap();
        let opts = Options {
            upstream_capacity: true,
            cluster_api: false,
        };
        let mut written = serde_json::Map::new();
        for edit in annotations::edits_for(&written.clone(), capacity, opts) {
            if let annotations::Edit::Set(k, v) = edit {
                written.insert(k.to_string(), json!(v));
            }
        }
        assert!(written.contains_key("capacity.cluster-autoscaler.kubernetes.io/cpu"));
        assert_eq!(
            decide(
                &ms("m5.xlarge", Value::Object(written.clone())),
                &t,
                &upstream
            ),
            Decision::UpToDate
        );
        assert_eq!(
            decide(
                &ms("m5.xlarge", Value::Object(written)),
                &t,
                &Settings::default()
            ),
            Decision::UpToDate,
            "extra upstream keys are not wrong without the setting"
        );
        // the built-in table answers a type the refresher's table lacks, unless fallback is none
        assert!(matches!(
            decide(&ms("m6g.xlarge", json!({})), &t, &Settings::default()),
            Decision::Readmit(_)
        ));
        assert_eq!(
            decide(
                &ms("m6g.xlarge", json!({})),
                &t,
                &with(json!({"fallback": "none"}))
            ),
            Decision::Unknown("m6g.xlarge".into())
        );
        // respectAuthoritativeAPI: a MachineSet Cluster API is authoritative for is left alone
        let mut capi_owned = ms("m5.xlarge", json!({}));
        capi_owned["status"] = json!({"authoritativeAPI": "ClusterAPI"});
        let respect = with(json!({"respectAuthoritativeAPI": true}));
        assert_eq!(decide(&capi_owned, &t, &respect), Decision::Ignore);
        assert!(matches!(
            decide(&capi_owned, &t, &Settings::default()),
            Decision::Readmit(_)
        ));
    }
}
