//! Test harness for the capa-annotator policy: a waPC host that runs the **compiled**
//! `policy.wasm` the way the Kubewarden policy server does.
//!
//! - [`wasm`]: loads the module once, then a fresh instance for every call;
//! - [`capabilities`]: answers the policy's host calls (kwctl replay sessions, "no cluster");
//! - [`evaluation`]: builds the `ValidationRequest`, reads the `ValidationResponse` and computes the
//!   JSON patch like the server (`json-patch` diff);
//! - [`paths`]: where fixtures and the built module are;
//! - [`browser`]: headless Chromium over WebDriver, its network log, and a static server (the
//!   playground).

pub mod autoscaler;
pub mod browser;
pub mod capabilities;
pub mod cases;
pub mod cluster_host;
pub mod deploy;
pub mod evaluation;
pub mod fake_kube;
pub mod kubewarden;
pub mod objects;
pub mod paths;
pub mod real_cluster;
pub mod wasm;

/// moto + proxy processes and the built-in table pipeline live in their own light crate (also used
/// by tools/snapshot).
pub use capa_test_servers::{rng, servers, snapshot};

pub use capabilities::{FixedAnswer, HostCapabilities, NoCluster, ReplaySession};
pub use evaluation::{Evaluation, evaluate, validate_settings};
pub use wasm::Policy;
