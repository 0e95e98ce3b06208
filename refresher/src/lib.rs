//! capa-refresher: keeps the capa-annotator instance-type ConfigMap current from EC2, and
//! re-submits the objects whose capacity annotations no longer match it to the policy.
//!
//! A library, so each part can be tested in-process; `main.rs` only parses the flags, sets up
//! logging and the runtime, and calls [`run`].

mod app;
pub mod capi;
pub mod cluster;
pub mod config;
pub mod context;
pub mod credentials;
pub mod ec2;
pub mod error;
pub mod heal;
pub mod heal_loop;
pub mod leader;
pub mod metrics;
pub mod node_groups;
pub mod output;
pub mod plan;
pub mod policy_settings;
pub mod rate_limit;
pub mod readmit;
pub mod refresh;
pub mod region_cache;
pub mod scan;
pub mod server;
pub mod service;
pub mod standalone;
pub mod stored_table;
pub mod table_store;
pub mod telemetry;
#[cfg(test)]
mod testing;

pub use app::run;
pub use context::Context;
pub use error::Error;
