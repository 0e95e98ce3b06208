//! The real ConfigMap source: Kubewarden's `kubernetes/get_resource` host capability.

use crate::source::Resource;
#[cfg(feature = "wapc")]
use crate::source::ResourceSource;
#[cfg(feature = "wapc")]
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
#[cfg(feature = "wapc")]
pub struct WapcHost;

#[cfg(feature = "wapc")]
impl ResourceSource for WapcHost {
    fn get(&self, resource: &Resource<'_>) -> Result<Vec<u8>, String> {
        let answer = get_resource(resource, |msg| {
            wapc_guest::host_call("kubewarden", "kubernetes", "get_resource", msg)
                .map_err(|e| e.to_string())
        })?;
        if let Some(line) = answer_log_line(resource, &answer) {
            // best effort: a host without logging changes nothing
            let _ = wapc_guest::host_call("kubewarden", "tracing", "log", &line);
        }
        Ok(answer)
    }
}

/// The fields of the debug log event (Kubewarden's `kubewarden/tracing/log` payload: `level`,
/// `message` and fields) that says what the host answered to a `get_resource`.
#[derive(Serialize)]
struct AnswerLog<'a> {
    level: &'static str,
    message: &'static str,
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
    field_mask: &'a str,
    received_bytes: usize,
}

/// The debug log event of one answer: the request's fields, `received_bytes`, and `received`, the
/// object as the policy received it (after the host applied the field mask), embedded as it came,
/// without re-encoding (this runs on every request that reads the cluster). An answer over
/// [`LOGGED_ANSWER_MAX`] bytes (a host that ignores field masks sends the whole table) is left out.
/// The policy server prints the event at `--log-level debug`. `None` when the answer is not a JSON
/// object.
pub fn answer_log_line(resource: &Resource<'_>, answer: &[u8]) -> Option<Vec<u8>> {
    if answer.first() != Some(&b'{') || answer.last() != Some(&b'}') {
        return None;
    }
    let mut line = serde_json::to_vec(&AnswerLog {
        level: "debug",
        message: ANSWER_LOG_MESSAGE,
        kind: resource.kind,
        namespace: resource.namespace,
        name: resource.name,
        field_mask: resource.field_mask,
        received_bytes: answer.len(),
    })
    .ok()?;
    if answer.len() <= LOGGED_ANSWER_MAX {
        // replace the closing brace by `,"received":<answer>}`
        line.pop();
        line.reserve(answer.len() + 13);
        line.extend_from_slice(b",\"received\":");
        line.extend_from_slice(answer);
        line.push(b'}');
    }
    Some(line)
}

/// The largest answer [`answer_log_line`] embeds (a family of the table is a few KB).
pub const LOGGED_ANSWER_MAX: usize = 16 * 1024;

/// The message of [`answer_log_line`]'s events.
pub const ANSWER_LOG_MESSAGE: &str = "get_resource answer";

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
    use super::{ANSWER_LOG_MESSAGE, answer_log_line, host_error_text};
    use crate::source::Resource;

    #[test]
    fn the_answer_log_line_is_a_kubewarden_debug_event_with_what_was_received() {
        let resource = Resource {
            api_version: "v1",
            kind: "ConfigMap",
            namespace: "openshift-machine-api",
            name: "machineset-instance-types",
            field_mask: "data.m5",
        };
        let answer = br#"{"apiVersion":"v1","kind":"ConfigMap","data":{"m5":"[\"x\"]"}}"#;
        let line = answer_log_line(&resource, answer).expect("a line");
        let event: serde_json::Value = serde_json::from_slice(&line).expect("JSON");
        assert_eq!(event["level"], "debug");
        assert_eq!(event["message"], ANSWER_LOG_MESSAGE);
        assert_eq!(event["field_mask"], "data.m5");
        assert_eq!(event["name"], "machineset-instance-types");
        assert_eq!(event["received"]["data"]["m5"], "[\"x\"]");
        assert_eq!(event["received_bytes"], answer.len());
        assert!(answer_log_line(&resource, b"not JSON").is_none());
        let big = format!(
            r#"{{"data":{{"m5":"{}"}}}}"#,
            "x".repeat(super::LOGGED_ANSWER_MAX)
        );
        let event: serde_json::Value =
            serde_json::from_slice(&answer_log_line(&resource, big.as_bytes()).expect("a line"))
                .expect("JSON");
        assert_eq!(event["received_bytes"], big.len());
        assert!(event.get("received").is_none(), "too big to embed");
        assert!(answer_log_line(&resource, b"").is_none());
    }

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
