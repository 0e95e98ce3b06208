//! Shared, pure logic of capa-annotator.
//!
//! Everything the admission policy (wasm) and the refresher (native service) must agree on lives
//! here, once:
//! - [`capacity`]: one node's capacity and the architecture/GPU normalisation rules;
//! - [`ec2`]: how an EC2 `DescribeInstanceTypes` item becomes a [`capacity::Capacity`];
//! - [`table`]: the instance-type table and its ConfigMap format;
//! - [`json_path`]: picking one value out of a large JSON document without building the rest;
//! - [`provider_spec`] and [`machineset`]: reading a MachineSet and deciding whether it is ours;
//! - [`annotations`]: the capacity annotations written on a node group;
//! - [`builtin`]: the line format of the built-in snapshot compiled into the policy;
//! - [`capi`]: Cluster API MachineSets/MachineDeployments and their AWSMachineTemplate reference;
//! - [`scope`]: which writes a ClusterAdmissionPolicy sends to the policy.
//!
//! No I/O, no Kubernetes client types: objects are handled as `serde_json::Value` so that no
//! field unknown to us is ever lost.

pub mod annotations;
pub mod builtin;
pub mod capacity;
pub mod capi;
pub mod ec2;
pub mod json_path;
pub mod machineset;
pub mod provider_spec;
pub mod scope;
pub mod settings;
pub mod table;

pub use capacity::{Arch, Capacity, GpuVendor};
