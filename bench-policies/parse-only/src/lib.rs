//! Benchmark baseline: a fresh instance plus deserialising the `ValidationRequest` with the SDK's
//! types, then accepting — the least a policy that reads its input pays.

use kubewarden_policy_sdk::request::ValidationRequest;
use kubewarden_policy_sdk::wapc_guest as guest;

#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    guest::register_function("validate", validate);
    guest::register_function("validate_settings", validate_settings);
    guest::register_function(
        "protocol_version",
        kubewarden_policy_sdk::protocol_version_guest,
    );
}

fn validate(payload: &[u8]) -> guest::CallResult {
    let request = ValidationRequest::<serde_json::Value>::new(payload)?;
    // keep the parse from being optimised away
    if request.request.uid.len() == usize::MAX {
        return Err("unreachable".into());
    }
    kubewarden_policy_sdk::accept_request()
}

fn validate_settings(_payload: &[u8]) -> guest::CallResult {
    Ok(br#"{"valid":true}"#.to_vec())
}
