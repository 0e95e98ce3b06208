//! The policy's settings, read from its ClusterAdmissionPolicy (`spec.settings`) at each refresh,
//! so the refresher judges objects with exactly the options the policy uses (`overrides`,
//! `fallback`, `upstreamCapacityAnnotations`, `respectAuthoritativeAPI`), and follows their
//! changes. Parsed by the policy's own parser (`capa_core::settings`). With them, the policy's
//! [`Scope`]: its rules and namespaceSelector, so that an object the policy does not see is not
//! re-submitted.

use crate::cluster;
use crate::context::Context;
use crate::error::Error;
use capa_core::scope::{self, Scope};
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

/// The settings and scope of `policy` (a ClusterAdmissionPolicy as JSON).
pub fn from_policy(name: &str, policy: &Value) -> Result<Policy, SettingsError> {
    let spec = policy.get("spec").unwrap_or(&Value::Null);
    let settings = spec.get("settings").unwrap_or(&Value::Null);
    let settings = Settings::from_value(settings).map_err(|message| SettingsError::Invalid {
        name: name.to_string(),
        message,
    })?;
    Ok(Policy {
        settings,
        scope: Some(Scope::of_policy(spec, scope::DEFAULT_DEPLOYMENTS_NAMESPACE)),
    })
}

/// Reads the settings of the ClusterAdmissionPolicy `name`.
pub async fn read(client: &Client, name: &str) -> Result<Policy, SettingsError> {
    match cluster::get_any_version(client, GROUP, &[VERSION], KIND, None, name).await {
        Ok(Some(policy)) => from_policy(name, &policy),
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
pub async fn current(ctx: &Context, name: Option<&str>) -> Policy {
    let Some(name) = name else {
        return Policy::default();
    };
    match read(&ctx.client, name).await {
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

    #[test]
    fn the_settings_of_the_deployed_policy() {
        let cap = json!({"spec": {"settings": {
            "upstreamCapacityAnnotations": true,
            "overrides": {"zz1.large": {"vcpu": 2, "memoryMiB": 8192, "gpu": 0, "arch": "amd64"}}}}});
        let s = from_policy("capa-annotator", &cap).unwrap().settings;
        assert!(s.upstream_capacity_annotations);
        assert!(s.overrides.contains_key("zz1.large"));
        assert_eq!(
            from_policy("p", &json!({"spec": {}})).unwrap().settings,
            Settings::default()
        );
        let e = from_policy(
            "p",
            &json!({"spec": {"settings": {"fallback": "sometimes"}}}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ClusterAdmissionPolicy p has invalid settings"),
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
        let policy = current(&ctx, Some("capa-annotator")).await;
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
        let policy = current(&ctx, Some("capa-annotator")).await;
        assert!(policy.settings.upstream_capacity_annotations);
        assert!(policy.scope.is_some());
    }

    /// `deploy/`'s policy sees MachineSets in openshift-machine-api only.
    #[test]
    fn the_policy_sees_what_its_rules_and_namespace_selector_send() {
        let text = include_str!("../../deploy/policy/clusteradmissionpolicy.yaml");
        let cap: Value = serde_yaml::from_str(text).unwrap();
        let policy = from_policy("capa-annotator", &cap).unwrap();
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
