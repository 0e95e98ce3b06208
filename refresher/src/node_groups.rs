//! Which node groups cannot scale from zero, and why: each MachineSet (Machine API) and each
//! Cluster API MachineSet/MachineDeployment judged as the policy judges it, counted by state, and
//! how long the oldest one has not been right. Pure: the refresher feeds it at each refresh and
//! exports it as `capa_refresher_node_groups{api,state}` and
//! `capa_refresher_oldest_wrong_node_group_age_seconds`.

use crate::plan::ObjectRef;
use crate::readmit::{Decision, Judge};
use capa_core::annotations;
use capa_core::machineset;
use capa_core::provider_spec::{self, ProviderSpec};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

/// The API a node group belongs to (label `api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Api {
    MachineApi,
    ClusterApi,
}

impl Api {
    pub const ALL: [Api; 2] = [Api::MachineApi, Api::ClusterApi];

    pub fn label(self) -> &'static str {
        match self {
            Api::MachineApi => "machine_api",
            Api::ClusterApi => "cluster_api",
        }
    }
}

/// A node group's state (label `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Its capacity annotations are what the policy writes now.
    Right,
    /// Some are there, with other values (or some missing).
    Wrong,
    /// None of them is there (admission never ran, or the policy could not annotate).
    Missing,
    /// Nothing knows its instance type (the table, the overrides, the built-in table).
    UnknownType,
    /// Its instance type cannot be read (provider spec, AWSMachineTemplate).
    Unreadable,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Right,
        State::Wrong,
        State::Missing,
        State::UnknownType,
        State::Unreadable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            State::Right => "right",
            State::Wrong => "wrong",
            State::Missing => "missing",
            State::UnknownType => "unknown_type",
            State::Unreadable => "unreadable",
        }
    }
}

/// A node group to judge: a Machine API MachineSet (`capi_type` `None`), or a Cluster API object
/// with its template's instance type (`Some(Err)`: why it has none).
pub struct Subject<'a> {
    pub at: &'a ObjectRef,
    pub object: &'a Value,
    pub capi_type: Option<Result<&'a str, &'a str>>,
}

/// The state of one node group; `None` when it is not ours (another provider, deleting, skipped by
/// the settings, not seen by the policy).
pub fn state_of(subject: &Subject<'_>, judge: Judge<'_>) -> Option<State> {
    if !judge.covers(subject.object) {
        return None;
    }
    let decision = match subject.capi_type {
        Some(Err(_)) => return Some(State::Unreadable),
        Some(Ok(t)) => judge.decide(subject.object, Some(t)),
        None => match provider_spec::read(subject.object) {
            // unreadable, unless the policy's settings leave the MachineSet alone anyway
            Err(_)
                if machineset::skip_reason(
                    subject.object,
                    judge.settings.respect_authoritative_api,
                )
                .is_none() =>
            {
                return Some(State::Unreadable);
            }
            Ok(ProviderSpec::Aws(_)) => judge.decide(subject.object, None),
            _ => return None,
        },
    };
    match decision {
        Decision::Ignore => None,
        Decision::UpToDate => Some(State::Right),
        Decision::Unknown(_) => Some(State::UnknownType),
        Decision::Readmit(_) => {
            let has_any = machineset::annotations(subject.object)
                .ok()
                .flatten()
                .is_some_and(|a| {
                    a.keys()
                        .any(|k| annotations::CAPACITY_VALUE_KEYS.contains(&k.as_str()))
                });
            Some(if has_any {
                State::Wrong
            } else {
                State::Missing
            })
        }
    }
}

/// The node groups' states at one refresh, and since when each one has not been right.
#[derive(Debug, Default)]
pub struct Census {
    pub counts: BTreeMap<(Api, State), usize>,
    /// Object → the first refresh that found it not right (kept while it stays so).
    not_right_since: HashMap<ObjectRef, SystemTime>,
}

impl Census {
    /// Counts `subjects` at `now`; an object not right at the previous count keeps its time.
    pub fn update<'a>(
        &mut self,
        subjects: impl IntoIterator<Item = Subject<'a>>,
        judge: Judge<'_>,
        now: SystemTime,
    ) {
        let mut counts = BTreeMap::new();
        let mut since = HashMap::new();
        for s in subjects {
            let Some(state) = state_of(&s, judge) else {
                continue;
            };
            let api = if s.capi_type.is_some() {
                Api::ClusterApi
            } else {
                Api::MachineApi
            };
            *counts.entry((api, state)).or_insert(0) += 1;
            if state != State::Right {
                let first = self.not_right_since.get(s.at).copied().unwrap_or(now);
                since.insert(s.at.clone(), first);
            }
        }
        self.counts = counts;
        self.not_right_since = since;
    }

    pub fn count(&self, api: Api, state: State) -> usize {
        self.counts.get(&(api, state)).copied().unwrap_or(0)
    }

    /// Since when the oldest node group that is not right has been so; `None`: all are right.
    pub fn oldest_not_right(&self) -> Option<SystemTime> {
        self.not_right_since.values().min().copied()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use capa_core::settings::Settings;
    use capa_core::table::{Table, TypeName};
    use capa_core::{Arch, Capacity};
    use serde_json::json;
    use std::time::Duration;

    fn ms(name: &str, instance_type: &str, annotations: Value) -> (ObjectRef, Value) {
        let obj = json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
            "metadata": {"namespace": "ns", "name": name, "annotations": annotations},
            "spec": {"template": {"spec": {"providerSpec": {"value": {
                "kind": "AWSMachineProviderConfig", "instanceType": instance_type}}}}}});
        (ObjectRef::of(&obj), obj)
    }

    #[test]
    fn node_groups_are_counted_by_state_and_the_oldest_not_right_is_remembered() {
        let mut table = Table::new();
        table.insert(
            TypeName::parse("m5.xlarge").unwrap(),
            Capacity {
                vcpu: 4,
                memory_mib: 16384,
                gpu: 0,
                arch: Arch::Amd64,
                gpu_vendor: None,
            },
        );
        let settings = Settings::default();
        let judge = Judge {
            table: &table,
            settings: &settings,
            scope: None,
        };
        let right = json!({"machine.openshift.io/vCPU": "4", "machine.openshift.io/memoryMb": "16384",
            "machine.openshift.io/GPU": "0",
            "capacity.cluster-autoscaler.kubernetes.io/labels": "kubernetes.io/arch=amd64"});
        let mut wrong = right.clone();
        wrong["machine.openshift.io/memoryMb"] = json!("16000");
        let groups = [
            ms("right", "m5.xlarge", right),
            ms("wrong", "m5.xlarge", wrong),
            ms("bare", "m5.xlarge", json!({})),
            ms("typo", "zz9.huge", json!({})),
        ];
        let md = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
            "metadata": {"namespace": "ns", "name": "md"}});
        let md_at = ObjectRef::of(&md);
        let subjects = |missing_template: bool| {
            let mut v: Vec<Subject<'_>> = groups
                .iter()
                .map(|(at, object)| Subject {
                    at,
                    object,
                    capi_type: None,
                })
                .collect();
            v.push(Subject {
                at: &md_at,
                object: &md,
                capi_type: Some(if missing_template {
                    Err("AWSMachineTemplate ns/t not found")
                } else {
                    Ok("m5.xlarge")
                }),
            });
            v
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut census = Census::default();
        census.update(subjects(true), judge, t0);
        assert_eq!(census.count(Api::MachineApi, State::Right), 1);
        assert_eq!(census.count(Api::MachineApi, State::Wrong), 1);
        assert_eq!(census.count(Api::MachineApi, State::Missing), 1);
        assert_eq!(census.count(Api::MachineApi, State::UnknownType), 1);
        assert_eq!(census.count(Api::ClusterApi, State::Unreadable), 1);
        assert_eq!(census.oldest_not_right(), Some(t0));
        // later: the template exists now (the MachineDeployment is missing its keys); the
        // MachineSets that were not right keep their first time
        let t1 = t0 + Duration::from_secs(60);
        census.update(subjects(false), judge, t1);
        assert_eq!(census.count(Api::ClusterApi, State::Unreadable), 0);
        assert_eq!(census.count(Api::ClusterApi, State::Missing), 1);
        assert_eq!(census.oldest_not_right(), Some(t0));
        // everything right: no oldest
        census.update(
            [Subject {
                at: &groups[0].0,
                object: &groups[0].1,
                capi_type: None,
            }],
            judge,
            t1,
        );
        assert_eq!(census.oldest_not_right(), None);
        assert_eq!(census.count(Api::MachineApi, State::Wrong), 0);
    }

    #[test]
    fn an_unreadable_provider_spec_counts_unless_the_settings_skip_the_machineset() {
        let table = Table::new();
        let (at, mut obj) = ms("broken", "m5.xlarge", json!({}));
        obj["spec"]["template"]["spec"]["providerSpec"]["value"] = json!("not an object");
        let subject = Subject {
            at: &at,
            object: &obj,
            capi_type: None,
        };
        let defaults = Settings::default();
        let judge = |settings| Judge {
            table: &table,
            settings,
            scope: None,
        };
        assert_eq!(
            state_of(&subject, judge(&defaults)),
            Some(State::Unreadable)
        );
        obj["status"] = json!({"authoritativeAPI": "ClusterAPI"});
        let subject = Subject {
            at: &at,
            object: &obj,
            capi_type: None,
        };
        let respect = Settings {
            respect_authoritative_api: true,
            ..Settings::default()
        };
        assert_eq!(state_of(&subject, judge(&respect)), None);
        assert_eq!(
            state_of(&subject, judge(&defaults)),
            Some(State::Unreadable)
        );
    }
}
