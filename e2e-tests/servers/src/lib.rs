//! The EC2 side of the tests and tools, with light dependencies (std, serde_json, anyhow):
//!
//! - [`servers`]: moto (`python3 -m moto.server`) and `ec2_proxy.py` (paging and fault injection in
//!   front of it, see README.md beside this crate) as processes on 127.0.0.1, stopped on drop;
//! - [`snapshot`]: the built-in table pipeline (moto → proxy → `capa-refresher --dry-run --output
//!   snapshot`), used by `make snapshot` (tools/snapshot) and by the test that pins the committed file;
//! - [`paths`]: the workspace, the refresher binary, scratch directories;
//! - [`rng`]: the seeded generator of the fuzz campaign and the chaos soak (a run is replayed from
//!   its seed).

pub mod paths;
pub mod rng;
pub mod servers;
pub mod snapshot;
