//! The real ConfigMap source: Kubewarden's `kubernetes/get_resource` host capability.

use crate::lookup::ConfigMapSource;
use kubewarden_policy_sdk::wapc_guest;
use serde::Serialize;

/// Request of `kubewarden/kubernetes/get_resource` (the SDK's own type needs k8s-openapi, which
/// this policy does without to stay small).
#[derive(Serialize)]
struct GetResource<'a> {
    api_version: &'a str,
    kind: &'a str,
    name: &'a str,
    namespace: &'a str,
    disable_cache: bool,
    field_masks: [&'a str; 1],
}

/// Asks the policy server for the ConfigMap, pruned to one field mask.
pub struct WapcHost;

impl ConfigMapSource for WapcHost {
    fn get(&self, namespace: &str, name: &str, field_mask: &str) -> Result<Vec<u8>, String> {
        let req = GetResource {
            api_version: "v1",
            kind: "ConfigMap",
            name,
            namespace,
            disable_cache: false,
            field_masks: [field_mask],
        };
        let msg = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
        wapc_guest::host_call("kubewarden", "kubernetes", "get_resource", &msg).map_err(|e| {
            let text = e.to_string();
            // wapc-guest wraps the host's message; the message alone is what the user needs
            text.strip_prefix("Host error: ")
                .unwrap_or(&text)
                .to_string()
        })
    }
}
