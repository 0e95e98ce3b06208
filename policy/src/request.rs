//! The part of Kubewarden's `ValidationRequest` the policy reads. Everything else in the payload
//! (userInfo, resource, options, …) is skipped without being built.

use serde::Deserialize;
use serde_json::Value;

/// `{"settings": …, "request": <AdmissionRequest>}` as the policy server sends it.
#[derive(Debug, Deserialize)]
pub struct ValidationRequest {
    /// Validated apart (see `Settings::from_value`) so bad settings cannot hide the request.
    #[serde(default)]
    pub settings: Value,
    pub request: AdmissionRequest,
}

/// The admission request. Field names are accepted in the policy server's snake_case and in
/// Kubernetes' camelCase (kwctl request files).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AdmissionRequest {
    pub operation: String,
    pub name: String,
    pub namespace: String,
    pub object: Value,
    #[serde(alias = "oldObject")]
    pub old_object: Value,
}

impl ValidationRequest {
    pub fn parse(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings() {
        let r = ValidationRequest::parse(
            br#"{"settings":{},"request":{"operation":"UPDATE","object":{"a":1},"oldObject":{"b":2},"userInfo":{"username":"x"}}}"#,
        )
        .unwrap();
        assert_eq!(r.request.operation, "UPDATE");
        assert_eq!(r.request.old_object["b"], 2);
        let r = ValidationRequest::parse(br#"{"request":{"old_object":{"b":3}}}"#).unwrap();
        assert_eq!(r.request.old_object["b"], 3);
        assert!(r.settings.is_null());
        assert!(ValidationRequest::parse(br#"{"settings":{}}"#).is_err());
        assert!(ValidationRequest::parse(br#"{"request":{"operation":5}}"#).is_err());
    }
}
