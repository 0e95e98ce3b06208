//! The real ConfigMap source: Kubewarden's `kubernetes/get_resource` host capability.

use crate::source::{Resource, ResourceSource};
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

/// Asks the policy server for an object, pruned to one field mask.
pub struct WapcHost;

impl ResourceSource for WapcHost {
    fn get(&self, resource: &Resource<'_>) -> Result<Vec<u8>, String> {
        get_resource(resource, |msg| {
            wapc_guest::host_call("kubewarden", "kubernetes", "get_resource", msg)
                .map_err(|e| e.to_string())
        })
    }
}

/// One `get_resource` exchange: builds the request the policy server expects, hands it to `call`
/// (the waPC host call, or a native stand-in in tests), and keeps only the cause of an error
/// (`call`'s error as wapc-guest displays it).
pub fn get_resource(
    resource: &Resource<'_>,
    call: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let req = GetResource {
        api_version: resource.api_version,
        kind: resource.kind,
        name: resource.name,
        namespace: resource.namespace,
        disable_cache: false,
        field_masks: [resource.field_mask],
    };
    let msg = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
    call(&msg).map_err(|e| host_error_text(&e))
}

/// The cause alone, as the user needs it in a short warning: wapc-guest wraps the host's message
/// (`Host error: `), Kubewarden's evaluator wraps a failed capability (`Callback evaluation
/// failure: `) and may append a cause chain or backtrace on later lines.
fn host_error_text(text: &str) -> String {
    let text = text.strip_prefix("Host error: ").unwrap_or(text);
    let text = text
        .strip_prefix("Callback evaluation failure: ")
        .unwrap_or(text);
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::host_error_text;

    #[test]
    fn host_errors_keep_the_cause_only() {
        assert_eq!(
            host_error_text(
                "Host error: Callback evaluation failure: Cannot find v1/ConfigMap named 'x'\n\nStack backtrace:\n  0: ..."
            ),
            "Cannot find v1/ConfigMap named 'x'"
        );
        assert_eq!(
            host_error_text(
                "Host error: Policy has not been granted access to Kubernetes v1/ConfigMap resources."
            ),
            "Policy has not been granted access to Kubernetes v1/ConfigMap resources."
        );
        assert_eq!(host_error_text("plain"), "plain");
        assert_eq!(host_error_text(""), "");
    }
}
