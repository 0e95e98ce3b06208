//! Which regions to scan, and with which credentials: grouped from the MachineSets (and the
//! Cluster API objects `capi.rs` resolved), so that a region is scanned at most once per refresh
//! however many objects and Secrets point at it.

use crate::capi::CapiObject;
use crate::error::Error;
use capa_core::machineset;
use capa_core::provider_spec::{self, ProviderSpec};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// One object the refresher may re-admit: a Machine API MachineSet, or a Cluster API MachineSet
/// or MachineDeployment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
    pub api_version: String,
    pub kind: String,
}

/// `namespace/name` for Machine API MachineSets (as before Cluster API), `Kind namespace/name`
/// for the others.
impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.api_version.starts_with(machineset::GROUP) || self.api_version.is_empty() {
            write!(f, "{}/{}", self.namespace, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl ObjectRef {
    pub fn of(obj: &Value) -> ObjectRef {
        let get = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        ObjectRef {
            namespace: get("/metadata/namespace"),
            name: get("/metadata/name"),
            api_version: get("/apiVersion"),
            kind: get("/kind"),
        }
    }
}

/// A credentials Secret (in the MachineSet's namespace).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a region's scan may take its AWS credentials from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CredentialsRef {
    /// A MachineSet's `providerSpec.value.credentialsSecret` (Machine API keys).
    Secret(SecretRef),
    /// The Secret of an `AWSClusterStaticIdentity` (CAPA's keys, in CAPA's namespace).
    StaticIdentity { identity: String, secret: SecretRef },
    /// The refresher's own default credential chain (`--cluster-api-default-credentials`).
    DefaultChain,
}

impl fmt::Display for CredentialsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialsRef::Secret(s) => write!(f, "Secret {s}"),
            CredentialsRef::StaticIdentity { identity, secret } => {
                write!(f, "Secret {secret} of AWSClusterStaticIdentity {identity}")
            }
            CredentialsRef::DefaultChain => {
                f.write_str("the refresher's default AWS credential chain")
            }
        }
    }
}

impl CredentialsRef {
    /// What to fix when these credentials do not work.
    pub fn fix(&self) -> String {
        match self {
            CredentialsRef::Secret(_) => {
                "fix the Secret referenced by providerSpec.value.credentialsSecret".to_string()
            }
            CredentialsRef::StaticIdentity { identity, .. } => {
                format!("fix the Secret named by spec.secretRef of AWSClusterStaticIdentity {identity}")
            }
            CredentialsRef::DefaultChain => {
                "fix the refresher's own AWS credentials (IRSA or pod identity of its ServiceAccount)".to_string()
            }
        }
    }
}

/// One region to scan: the credentials that may be used for it (tried in order until one works)
/// and the objects that need it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegionPlan {
    /// Credentials → the objects that reference them in this region.
    pub secrets: BTreeMap<CredentialsRef, Vec<ObjectRef>>,
}

impl RegionPlan {
    pub fn machinesets(&self) -> impl Iterator<Item = &ObjectRef> {
        self.secrets.values().flatten()
    }
}

/// Why a MachineSet takes no part in the refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// Provider spec unreadable (logged with the MachineSet's name).
    Unreadable(ObjectRef, String),
    /// No `placement.region`.
    NoRegion(ObjectRef),
    /// No `credentialsSecret.name`.
    NoCredentials(ObjectRef),
}

/// The work of one refresh.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub regions: BTreeMap<String, RegionPlan>,
    pub skipped: Vec<Skipped>,
}

/// Groups MachineSets by region and Secret. Non-AWS MachineSets and ones being deleted are ignored.
pub fn plan<'a>(machinesets: impl IntoIterator<Item = &'a Value>) -> Plan {
    let mut plan = Plan::default();
    for ms in machinesets {
        if machineset::is_deleting(ms) {
            continue;
        }
        let at = ObjectRef::of(ms);
        let spec = match provider_spec::read(ms) {
            Ok(ProviderSpec::Aws(spec)) => spec,
            Ok(ProviderSpec::Other { .. }) => continue,
            Err(e) => {
                plan.skipped.push(Skipped::Unreadable(at, e.to_string()));
                continue;
            }
        };
        let Some(region) = spec.region.filter(|r| !r.is_empty()) else {
            plan.skipped.push(Skipped::NoRegion(at));
            continue;
        };
        let Some(secret) = spec.credentials_secret.filter(|s| !s.is_empty()) else {
            plan.skipped.push(Skipped::NoCredentials(at));
            continue;
        };
        let secret = SecretRef {
            namespace: at.namespace.clone(),
            name: secret.to_string(),
        };
        plan.add(region, CredentialsRef::Secret(secret), at);
    }
    plan
}

impl Plan {
    /// Adds the Cluster API objects whose region and credentials are known; the Warning Events
    /// for the others (a template that cannot be read, a region or credentials not found).
    pub fn add_cluster_api(&mut self, objects: &[CapiObject]) -> Vec<(ObjectRef, Error)> {
        let mut warnings = Vec::new();
        for o in objects {
            match (&o.instance_type, &o.scan) {
                (Err(why), _) => {
                    tracing::warn!(object = %o.at, reason = %why, "instance type unknown; skipped");
                    warnings.push((o.at.clone(), Error::TemplateUnreadable(why.clone())));
                }
                (Ok(_), Ok((region, credentials))) => {
                    self.add(region, credentials.clone(), o.at.clone());
                }
                (Ok(_), Err(why)) => {
                    tracing::warn!(object = %o.at, reason = %why, "region or credentials unknown; its region is not scanned");
                    warnings.push((o.at.clone(), Error::ScanTarget(why.clone())));
                }
            }
        }
        warnings
    }

    /// Logs the MachineSets that take no part.
    pub fn log_skipped(&self) {
        for s in &self.skipped {
            match s {
                Skipped::Unreadable(at, why) => {
                    tracing::warn!(machineset = %at, reason = %why, "provider spec unreadable; skipped")
                }
                Skipped::NoRegion(at) => {
                    tracing::warn!(machineset = %at, "no providerSpec.value.placement.region; skipped")
                }
                Skipped::NoCredentials(at) => {
                    tracing::warn!(machineset = %at, "no providerSpec.value.credentialsSecret.name; skipped")
                }
            }
        }
    }

    /// `at` needs `region`, scanned with `credentials`.
    pub fn add(&mut self, region: &str, credentials: CredentialsRef, at: ObjectRef) {
        self.regions
            .entry(region.to_string())
            .or_default()
            .secrets
            .entry(credentials)
            .or_default()
            .push(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ms(ns: &str, name: &str, region: Option<&str>, secret: Option<&str>) -> Value {
        let mut value = json!({"kind": "AWSMachineProviderConfig", "instanceType": "m5.large"});
        if let Some(r) = region {
            value["placement"] = json!({"region": r});
        }
        if let Some(s) = secret {
            value["credentialsSecret"] = json!({"name": s});
        }
        json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
               "metadata": {"namespace": ns, "name": name},
               "spec": {"template": {"spec": {"providerSpec": {"value": value}}}}})
    }

    #[test]
    fn groups_by_region_then_secret() {
        let list = [
            ms("a", "w1", Some("eu-west-3"), Some("s1")),
            ms("a", "w2", Some("eu-west-3"), Some("s2")),
            ms("a", "w3", Some("eu-west-3"), Some("s1")),
            ms("b", "w4", Some("us-east-1"), Some("s1")),
        ];
        let p = plan(&list);
        assert_eq!(p.regions.len(), 2);
        let eu = &p.regions["eu-west-3"];
        assert_eq!(eu.secrets.len(), 2);
        assert_eq!(eu.machinesets().count(), 3);
        let s1 = CredentialsRef::Secret(SecretRef {
            namespace: "a".into(),
            name: "s1".into(),
        });
        assert_eq!(eu.secrets[&s1].len(), 2);
        // the same Secret name in another namespace is another Secret
        let us = &p.regions["us-east-1"];
        assert!(
            matches!(us.secrets.keys().next().unwrap(), CredentialsRef::Secret(s) if s.namespace == "b")
        );
        assert!(p.skipped.is_empty());
    }

    #[test]
    fn cluster_api_objects_join_their_region_or_say_what_is_missing() {
        let at = |n: &str| ObjectRef {
            namespace: "capi".into(),
            name: n.into(),
            api_version: "cluster.x-k8s.io/v1beta1".into(),
            kind: "MachineDeployment".into(),
        };
        let object =
            |n: &str, instance_type: Result<&str, &str>, scan: Result<&str, &str>| CapiObject {
                object: json!({}),
                at: at(n),
                instance_type: instance_type.map(str::to_string).map_err(str::to_string),
                scan: scan
                    .map(|r| (r.to_string(), CredentialsRef::DefaultChain))
                    .map_err(str::to_string),
            };
        let mut p = plan(&[ms("a", "w1", Some("eu-west-3"), Some("s1"))]);
        let warnings = p.add_cluster_api(&[
            object("ok", Ok("m5.large"), Ok("eu-west-3")),
            object(
                "no-template",
                Err("AWSMachineTemplate capi/t was not found"),
                Ok("eu-west-3"),
            ),
            object(
                "no-region",
                Ok("m5.large"),
                Err("AWSCluster capi/c has no spec.region"),
            ),
        ]);
        assert_eq!(p.regions.len(), 1);
        let eu = &p.regions["eu-west-3"];
        assert_eq!(eu.secrets[&CredentialsRef::DefaultChain], vec![at("ok")]);
        let texts: Vec<_> = warnings
            .iter()
            .map(|(at, e)| format!("{} {}: {}", at.name, e.metric_label(), e))
            .collect();
        assert_eq!(
            texts,
            [
                "no-template template_unreadable: AWSMachineTemplate capi/t was not found; it is re-admitted at the first refresh after the template can be read",
                "no-region scan_target: AWSCluster capi/c has no spec.region",
            ]
        );
    }

    #[test]
    fn skips_and_ignores() {
        let mut gcp = ms("a", "gcp", Some("x"), Some("s"));
        gcp["spec"]["template"]["spec"]["providerSpec"]["value"]["kind"] =
            json!("GCPMachineProviderSpec");
        let mut deleting = ms("a", "del", Some("eu-west-3"), Some("s"));
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let mut broken = ms("a", "broken", Some("eu-west-3"), Some("s"));
        broken["spec"]["template"]["spec"]["providerSpec"]["value"]["placement"] = json!("eu");
        let list = [
            gcp,
            deleting,
            broken,
            ms("a", "noregion", None, Some("s")),
            ms("a", "nosecret", Some("eu-west-3"), None),
        ];
        let p = plan(&list);
        assert!(p.regions.is_empty());
        let at = |n: &str| ObjectRef {
            namespace: "a".into(),
            name: n.into(),
            api_version: "machine.openshift.io/v1beta1".into(),
            kind: "MachineSet".into(),
        };
        assert_eq!(at("x").to_string(), "a/x");
        assert_eq!(
            p.skipped,
            vec![
                Skipped::Unreadable(
                    at("broken"),
                    "providerSpec.value.placement must be an object".into()
                ),
                Skipped::NoRegion(at("noregion")),
                Skipped::NoCredentials(at("nosecret")),
            ]
        );
    }
}
