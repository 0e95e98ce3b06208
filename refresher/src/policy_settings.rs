//! The policy's settings, read from its ClusterAdmissionPolicy (`spec.settings`) at each refresh,
//! so the refresher judges objects with exactly the options the policy uses (`overrides`,
//! `fallback`, `upstreamCapacityAnnotations`, `respectAuthoritativeAPI`), and follows their
//! changes. Parsed by the policy's own parser (`capa_core::settings`).

use crate::cluster;
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

/// The settings of `policy` (a ClusterAdmissionPolicy as JSON).
pub fn from_policy(name: &str, policy: &Value) -> Result<Settings, SettingsError> {
    let settings = policy.pointer("/spec/settings").unwrap_or(&Value::Null);
    Settings::from_value(settings).map_err(|message| SettingsError::Invalid {
        name: name.to_string(),
        message,
    })
}

/// Reads the settings of the ClusterAdmissionPolicy `name`.
pub async fn read(client: &Client, name: &str) -> Result<Settings, SettingsError> {
    match cluster::get_any_version(client, GROUP, &[VERSION], KIND, None, name).await {
        Ok(Some(policy)) => from_policy(name, &policy),
        Ok(None) => Err(SettingsError::NotFound(name.to_string())),
        Err(source) => Err(SettingsError::Unreadable {
            name: name.to_string(),
            source,
        }),
    }
}

/// The settings to judge with: the policy's, or the defaults (logged with the cause) when they
/// cannot be read; the defaults without reading when no policy is named.
pub async fn current(client: &Client, name: Option<&str>) -> Settings {
    let Some(name) = name else {
        return Settings::default();
    };
    match read(client, name).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "judging objects with the policy's default settings");
            Settings::default()
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
        let s = from_policy("capa-annotator", &cap).unwrap();
        assert!(s.upstream_capacity_annotations);
        assert!(s.overrides.contains_key("zz1.large"));
        assert_eq!(
            from_policy("p", &json!({"spec": {}})).unwrap(),
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
}
