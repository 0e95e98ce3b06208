//! capa-annotator policy: waPC entry points only. The decision lives in [`admission`].
//!
//! Built as `policy.wasm` (cdylib) for the policy server, and as a Rust library so the same
//! decision runs natively in `capa-admin preview` (see `e2e-tests/tests/preview.rs`, which proves
//! the two give byte-identical answers) and in the browser playground. The waPC entry points and
//! host calls are the `wapc` feature (on by default); the library users build without it.

pub mod admission;
pub mod builtin;
pub mod host;
pub mod lookup;
mod request;
pub mod settings;
pub mod source;
pub mod template;
mod warnings;

#[cfg(feature = "wapc")]
use kubewarden_policy_sdk::settings::SettingsValidationResponse;
#[cfg(feature = "wapc")]
use kubewarden_policy_sdk::wapc_guest as guest;

#[cfg(feature = "wapc")]
#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    guest::register_function("validate", validate);
    guest::register_function("validate_settings", validate_settings);
    guest::register_function(
        "protocol_version",
        kubewarden_policy_sdk::protocol_version_guest,
    );
}

/// Never returns `Err`: the policy server would turn it into a rejection of the MachineSet.
#[cfg(feature = "wapc")]
fn validate(payload: &[u8]) -> guest::CallResult {
    Ok(admission::admit(payload, &host::WapcHost).into_response())
}

/// Answers `{valid, message}`; malformed settings are invalid settings, not a host error.
#[cfg(feature = "wapc")]
fn validate_settings(payload: &[u8]) -> guest::CallResult {
    let response = match settings::Settings::from_json(payload) {
        Ok(_) => SettingsValidationResponse {
            valid: true,
            message: None,
        },
        Err(message) => SettingsValidationResponse {
            valid: false,
            message: Some(message),
        },
    };
    Ok(serde_json::to_vec(&response)?)
}
