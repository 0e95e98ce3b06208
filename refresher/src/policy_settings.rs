//! The policy's settings, read from its ClusterAdmissionPolicy (`spec.settings`) at each refresh,
//! so the refresher judges objects with exactly the options the policy uses (`overrides`,
//! `fallback`, `upstreamCapacityAnnotations`, `respectAuthoritativeAPI`), and follows their
//! changes. Parsed by the policy's own parser (`capa_core::settings`). With them, the policy's
//! [`Scope`]: its rules and namespaceSelector, so that an object the policy does not see is not
//! re-submitted.

use crate::cluster;
use crate::context::Context;
use crate::error::Error;
use capa_core::scope::Scope;
use capa_core::settings::Settings;
use kube::Client;
use serde_json::Value;

/// Kubewarden's cluster-wide policy kind (`policies.kubewarden.io/v1`).
pub const GROUP: &str = "policies.kubewarden.io";
pub const VERSION: &str = "v1";
pub const KIND: &str = "ClusterAdmissionPolicy";

/// Why the settings could not be read: the refresher then judges with the defaults, and says so.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("ClusterAdmissionPolicy {0} not found; set --policy-name to the policy's name")]
    NotFound(String),
    #[error(
        "cannot read ClusterAdmissionPolicy {name} ({source}); grant the refresher get on clusteradmissionpolicies/{name} (deploy/refresher/rbac.yaml)"
    )]
    Unreadable { name: String, source: kube::Error },
    #[error(
        "ClusterAdmissionPolicy {name} has invalid settings ({message}); the policy server refuses them too"
    )]
    Invalid { name: String, message: String },
}

/// Which ClusterAdmissionPolicy to read, and the namespace of the Kubewarden controller that
/// renders its webhook (its namespaceSelector never matches that namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    pub name: String,
    pub kubewarden_namespace: String,
}

/// What the refresher knows of the policy: its settings, and which writes it sees (`None`: no
/// policy read, every object is taken as seen).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub settings: Settings,
    pub scope: Option<Scope>,
}

impl Policy {
    /// The judgement with `table` and this policy.
    pub fn judge<'a>(&'a self, table: &'a capa_core::table::Table) -> crate::readmit::Judge<'a> {
        crate::readmit::Judge {
            table,
            settings: &self.settings,
            scope: self.scope.as_ref(),
        }
    }
}

/// The settings and scope of `policy` (the ClusterAdmissionPolicy `at` names, as JSON).
pub fn from_policy(at: &PolicyRef, policy: &Value) -> Result<Policy, SettingsError> {
    let spec = policy.get("spec").unwrap_or(&Value::Null);
    let settings = spec.get("settings").unwrap_or(&Value::Null);
    let settings = Settings::from_value(settings).map_err(|message| SettingsError::Invalid {
        name: at.name.clone(),
        message,
    })?;
    Ok(Policy {
        settings,
        scope: Some(Scope::of_policy(spec, &at.kubewarden_namespace)),
    })
}

/// Reads the settings of the ClusterAdmissionPolicy `at` names.
pub async fn read(client: &Client, at: &PolicyRef) -> Result<Policy, SettingsError> {
    let name = at.name.as_str();
    match cluster::get_any_version(client, GROUP, &[VERSION], KIND, None, name).await {
        Ok(Some(policy)) => from_policy(at, &policy),
        Ok(None) => Err(SettingsError::NotFound(name.to_string())),
        Err(source) => Err(SettingsError::Unreadable {
            name: name.to_string(),
            source,
        }),
    }
}

/// The policy to judge with: its settings and scope, or the default settings and no scope (logged
/// with the cause, counted as a `policy_settings` error) when they cannot be read; the defaults
/// without reading when no policy is named.
pub async fn current(ctx: &Context, at: Option<&PolicyRef>) -> Policy {
    let Some(at) = at else {
        return Policy::default();
    };
    match read(&ctx.client, at).await {
        Ok(p) => p,
        Err(e) => {
            let e = Error::from(e);
            ctx.metrics.error(e.metric_label());
            tracing::warn!(error = %e, "judging objects with the policy's default settings");
            Policy::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    /// `deploy/`'s policy, under a Kubewarden controller in `kubewarden`.
    fn deployed() -> PolicyRef {
        PolicyRef {
            name: "capa-annotator".into(),
            kubewarden_namespace: "kubewarden".into(),
        }
    }

    #[test]
    fn the_settings_of_the_deployed_policy() {
        let cap = json!({"spec": {"settings": {
            "upstreamCapacityAnnotations": true,
            "overrides": {"zz1.large": {"vcpu": 2, "memoryMiB": 8192, "gpu": 0, "arch": "amd64"}}}}});
        let s = from_policy(&deployed(), &cap).unwrap().settings;
        assert!(s.upstream_capacity_annotations);
        assert!(s.overrides.contains_key("zz1.large"));
        assert_eq!(
            from_policy(&deployed(), &json!({"spec": {}}))
                .unwrap()
                .settings,
            Settings::default()
        );
        let e = from_policy(
            &deployed(),
            &json!({"spec": {"settings": {"fallback": "sometimes"}}}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ClusterAdmissionPolicy capa-annotator has invalid settings"),
            "{e}"
        );
        assert!(e.contains("fallback"), "{e}");
    }

    #[tokio::test]
    async fn a_policy_that_cannot_be_read_is_counted_and_the_defaults_judge() {
        let kube = crate::testing::FakeKube::new();
        let ctx = Context::new(
            kube.client(),
            std::sync::Arc::new(crate::metrics::Metrics::new()),
        );
        let policy = current(&ctx, Some(&deployed())).await;
        assert_eq!(policy.settings, Settings::default());
        assert!(policy.scope.is_none());
        assert!(
            ctx.metrics
                .render()
                .contains("capa_refresher_errors_total{error=\"policy_settings\"} 1")
        );
        kube.put(
            json!({"apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicy",
                        "metadata": {"name": "capa-annotator"},
                        "spec": {"settings": {"upstreamCapacityAnnotations": true}}}),
        );
        let policy = current(&ctx, Some(&deployed())).await;
        assert!(policy.settings.upstream_capacity_annotations);
        assert!(policy.scope.is_some());
    }

    /// The controller's namespace is never sent to the policy: wherever the controller runs.
    #[test]
    fn the_kubewarden_controllers_namespace_is_the_one_left_out() {
        let cap = json!({"spec": {"rules": [{
            "apiGroups": ["machine.openshift.io"], "apiVersions": ["v1beta1"],
            "resources": ["machinesets"], "operations": ["CREATE", "UPDATE"]}]}});
        let ms = |ns: &str| {
            json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
                   "metadata": {"namespace": ns, "name": "w"}})
        };
        let rancher = PolicyRef {
            name: "capa-annotator".into(),
            kubewarden_namespace: "cattle-kubewarden-system".into(),
        };
        let table = capa_core::table::Table::default();
        let policy = from_policy(&rancher, &cap).unwrap();
        assert!(!policy.judge(&table).covers(&ms("cattle-kubewarden-system")));
        assert!(policy.judge(&table).covers(&ms("kubewarden")));
        let policy = from_policy(&deployed(), &cap).unwrap();
        assert!(!policy.judge(&table).covers(&ms("kubewarden")));
        assert!(policy.judge(&table).covers(&ms("cattle-kubewarden-system")));
    }

    /// `deploy/`'s policy sees MachineSets in openshift-machine-api only.
    #[test]
    fn the_policy_sees_what_its_rules_and_namespace_selector_send() {
        let text = include_str!("../../deploy/policy/clusteradmissionpolicy.yaml");
        let cap: Value = serde_yaml::from_str(text).unwrap();
        let policy = from_policy(&deployed(), &cap).unwrap();
        let ms = |ns: &str| {
            json!({"apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
                   "metadata": {"namespace": ns, "name": "w"}})
        };
        let table = capa_core::table::Table::default();
        let judge = policy.judge(&table);
        assert!(judge.covers(&ms("openshift-machine-api")));
        assert!(!judge.covers(&ms("team-a")));
        let md = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                        "metadata": {"namespace": "openshift-machine-api", "name": "md"}});
        assert!(
            !judge.covers(&md),
            "deploy/ without its Cluster API component"
        );
        assert!(Policy::default().judge(&table).covers(&ms("team-a")));
    }
}
