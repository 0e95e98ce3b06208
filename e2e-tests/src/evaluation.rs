//! One `validate` evaluation, seen from the policy server's side.

use crate::capabilities::HostCapabilities;
use crate::wasm::Policy;
use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Kubewarden's `ValidationResponse`.
#[derive(Debug, Clone, Deserialize)]
pub struct ValidationResponse {
    pub accepted: bool,
    pub message: Option<String>,
    pub code: Option<u16>,
    pub mutated_object: Option<Value>,
    pub warnings: Option<Vec<String>>,
}

/// The result of admitting one object, as the API server would see it.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub response: ValidationResponse,
    /// The JSON patch the policy server sends (`None` when the diff is empty, as the server does).
    pub patch: Option<json_patch::Patch>,
    /// The object after the patch.
    pub object: Value,
}

impl Evaluation {
    pub fn warnings(&self) -> &[String] {
        self.response.warnings.as_deref().unwrap_or(&[])
    }

    /// `metadata.annotations` of the admitted object (`Null` if none).
    pub fn annotations(&self) -> &Value {
        self.object
            .pointer("/metadata/annotations")
            .unwrap_or(&Value::Null)
    }

    /// The patch as JSON (`[]` when none).
    pub fn patch_json(&self) -> Value {
        self.patch
            .as_ref()
            .and_then(|p| serde_json::to_value(p).ok())
            .unwrap_or_else(|| json!([]))
    }
}

/// Runs `validate` for `request` (an AdmissionRequest, as in kwctl request files) with `settings`.
pub fn evaluate(
    policy: &Policy,
    settings: &Value,
    request: &Value,
    caps: Arc<dyn HostCapabilities>,
) -> Result<Evaluation> {
    let payload = serde_json::to_vec(&json!({"settings": settings, "request": request}))?;
    evaluate_payload(
        policy,
        &payload,
        request.get("object").cloned().unwrap_or(Value::Null),
        caps,
    )
}

/// Runs `validate` on a raw payload (for hostile inputs); `object` is what the patch applies to.
pub fn evaluate_payload(
    policy: &Policy,
    payload: &[u8],
    object: Value,
    caps: Arc<dyn HostCapabilities>,
) -> Result<Evaluation> {
    let raw = policy.call("validate", payload, caps)?;
    let response: ValidationResponse = serde_json::from_slice(&raw).with_context(|| {
        format!(
            "the policy answered something that is not a ValidationResponse: {}",
            String::from_utf8_lossy(&raw)
        )
    })?;
    let (patch, object) = match &response.mutated_object {
        Some(mutated) => {
            let patch = json_patch::diff(&object, mutated);
            let mut patched = object.clone();
            json_patch::patch(&mut patched, &patch).context("applying the computed patch")?;
            ((!patch.0.is_empty()).then_some(patch), patched)
        }
        None => (None, object),
    };
    Ok(Evaluation {
        response,
        patch,
        object,
    })
}

/// Kubewarden's `SettingsValidationResponse`.
#[derive(Debug, Clone, Deserialize)]
pub struct SettingsValidation {
    pub valid: bool,
    pub message: Option<String>,
}

/// Runs `validate_settings`.
pub fn validate_settings(
    policy: &Policy,
    settings: &Value,
    caps: Arc<dyn HostCapabilities>,
) -> Result<SettingsValidation> {
    let raw = policy.call("validate_settings", &serde_json::to_vec(settings)?, caps)?;
    Ok(serde_json::from_slice(&raw)?)
}
