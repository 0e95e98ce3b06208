//! The policy's settings: defined in `capa_core::settings`, shared with the refresher.

pub use capa_core::settings::*;
