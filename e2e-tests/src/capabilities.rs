//! Answers to the policy's host calls.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

/// What the host does with a waPC host call from the policy.
pub trait HostCapabilities: Send + Sync {
    /// `Ok(answer)` or `Err(message)` — the message reaches the policy as the host error.
    fn host_call(
        &self,
        binding: &str,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, String>;
}

/// A host without cluster access (`kwctl run` without `--allow-context-aware`): every
/// Kubernetes capability fails, with the words of Kubewarden's policy evaluator (so the policy's
/// warnings are the ones kwctl users see).
pub struct NoCluster;

impl HostCapabilities for NoCluster {
    fn host_call(
        &self,
        binding: &str,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        match CallbackRequest::from_host_call(binding, namespace, operation, payload) {
            Ok(CallbackRequest::KubernetesGetResource {
                api_version, kind, ..
            }) => Err(format!(
                "Policy has not been granted access to Kubernetes {api_version}/{kind} resources. The violation has been reported."
            )),
            Err(_) => Err(format!(
                "Policy has not been granted access to the '{namespace}/{operation}' host capability"
            )),
        }
    }
}

/// How Kubewarden's policy evaluator (policy server and kwctl alike) hands a failed host call to
/// the policy: the capability's error behind this prefix.
pub fn callback_failure(message: impl std::fmt::Display) -> String {
    format!("Callback evaluation failure: {message}")
}

/// A host that answers every call with bytes that are not JSON (hostile-input tests).
pub struct Garbage;

impl HostCapabilities for Garbage {
    fn host_call(&self, _: &str, _: &str, _: &str, _: &[u8]) -> Result<Vec<u8>, String> {
        Ok(b"\x00\xff not json".to_vec())
    }
}

/// A host that gives the same answer to every call (benchmarks).
pub struct FixedAnswer(pub Result<Vec<u8>, String>);

impl HostCapabilities for FixedAnswer {
    fn host_call(&self, _: &str, _: &str, _: &str, _: &[u8]) -> Result<Vec<u8>, String> {
        self.0.clone()
    }
}

/// The request of `kubewarden/kubernetes/get_resource`, as kwctl records it (tag
/// `!KubernetesGetResource` in replay sessions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallbackRequest {
    KubernetesGetResource {
        api_version: String,
        kind: String,
        name: String,
        namespace: Option<String>,
        disable_cache: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field_masks: Option<BTreeSet<String>>,
    },
}

impl CallbackRequest {
    /// Decodes a host call of the policy.
    pub fn from_host_call(
        binding: &str,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Self, String> {
        match (binding, namespace, operation) {
            ("kubewarden", "kubernetes", "get_resource") => {
                #[derive(Deserialize)]
                struct Get {
                    api_version: String,
                    kind: String,
                    name: String,
                    namespace: Option<String>,
                    disable_cache: bool,
                    field_masks: Option<BTreeSet<String>>,
                }
                let g: Get = serde_json::from_slice(payload)
                    .map_err(|e| format!("malformed get_resource request: {e}"))?;
                Ok(CallbackRequest::KubernetesGetResource {
                    api_version: g.api_version,
                    kind: g.kind,
                    name: g.name,
                    namespace: g.namespace,
                    disable_cache: g.disable_cache,
                    field_masks: g.field_masks,
                })
            }
            _ => Err(format!(
                "host capability {binding}/{namespace}/{operation} is not supported by this host"
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum SessionResponse {
    Success { payload: String },
    Error { message: String },
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum SessionEntry {
    Exchange {
        request: String,
        response: SessionResponse,
    },
}

/// One recorded exchange.
#[derive(Debug)]
pub struct Exchange {
    pub request: CallbackRequest,
    pub response: Result<Vec<u8>, String>,
}

/// A kwctl replay session (`--replay-host-capabilities-interactions`): exchanges are consumed in
/// order, and each request must match the recorded one exactly (field masks included), as kwctl
/// requires. A mismatch is a host error, and is recorded for the test to report.
pub struct ReplaySession {
    exchanges: Mutex<std::collections::VecDeque<Exchange>>,
    mismatches: Mutex<Vec<String>>,
}

impl ReplaySession {
    pub fn new(exchanges: Vec<Exchange>) -> Self {
        ReplaySession {
            exchanges: Mutex::new(exchanges.into()),
            mismatches: Mutex::new(Vec::new()),
        }
    }

    /// Parses a session file in kwctl's format.
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let entries: Vec<SessionEntry> = serde_yaml::from_str(text)?;
        let mut exchanges = Vec::new();
        for SessionEntry::Exchange { request, response } in entries {
            let request: CallbackRequest = serde_yaml::from_str(&request)
                .map_err(|e| anyhow::anyhow!("session request {request:?}: {e}"))?;
            let response = match response {
                SessionResponse::Success { payload } => Ok(payload.into_bytes()),
                SessionResponse::Error { message } => Err(message),
            };
            exchanges.push(Exchange { request, response });
        }
        Ok(ReplaySession::new(exchanges))
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read session {}: {e}", path.display()))?;
        Self::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Exchanges not consumed yet.
    pub fn remaining(&self) -> usize {
        self.exchanges.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Requests that did not match the session.
    pub fn mismatches(&self) -> Vec<String> {
        self.mismatches
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

impl HostCapabilities for ReplaySession {
    fn host_call(
        &self,
        binding: &str,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let got = CallbackRequest::from_host_call(binding, namespace, operation, payload)?;
        let mut exchanges = self
            .exchanges
            .lock()
            .map_err(|_| "session poisoned".to_string())?;
        let fail = |msg: String| {
            if let Ok(mut m) = self.mismatches.lock() {
                m.push(msg.clone());
            }
            Err(callback_failure(msg))
        };
        match exchanges.pop_front() {
            None => fail(format!(
                "replay session exhausted; unexpected request {got:?}"
            )),
            Some(ex) if ex.request != got => fail(format!(
                "request does not match the session: expected {:?}, got {got:?}",
                ex.request
            )),
            Some(ex) => ex.response.map_err(callback_failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kwctl_sessions() {
        let yaml = r#"
- type: Exchange
  request: |
    !KubernetesGetResource
    api_version: v1
    kind: ConfigMap
    name: machineset-instance-types
    namespace: openshift-machine-api
    disable_cache: false
    field_masks: [data.m5]
  response:
    type: Success
    payload: '{"data":{}}'
- type: Exchange
  request: |
    !KubernetesGetResource
    api_version: v1
    kind: ConfigMap
    name: x
    namespace: y
    disable_cache: false
  response:
    type: Error
    message: not found
"#;
        let s = ReplaySession::from_yaml(yaml).unwrap();
        assert_eq!(s.remaining(), 2);
        let ok = s.host_call(
            "kubewarden",
            "kubernetes",
            "get_resource",
            br#"{"api_version":"v1","kind":"ConfigMap","name":"machineset-instance-types","namespace":"openshift-machine-api","disable_cache":false,"field_masks":["data.m5"]}"#,
        );
        assert_eq!(ok.unwrap(), br#"{"data":{}}"#);
        let mismatch = s.host_call(
            "kubewarden",
            "kubernetes",
            "get_resource",
            br#"{"api_version":"v1","kind":"ConfigMap","name":"other","namespace":"y","disable_cache":false}"#,
        );
        assert!(mismatch.is_err());
        assert_eq!(s.mismatches().len(), 1);
        assert!(
            s.host_call("kubewarden", "kubernetes", "get_resource", b"{}")
                .is_err()
        );
    }
}
