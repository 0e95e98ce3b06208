//! What the policy reads from the cluster: the table ConfigMap and, for Cluster API objects, the
//! `AWSMachineTemplate` that holds the instance type. In the policy server both come through
//! Kubewarden's `kubernetes/get_resource` host capability ([`crate::host::WapcHost`]); natively
//! (tests, `capa-admin preview`) from whatever implements [`ResourceSource`].

/// One object the policy asks for, pruned to one field mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// A dotted path (`data.m5`); the host may prune the object to it or return it whole.
    pub field_mask: &'a str,
}

/// Reads objects from the cluster.
pub trait ResourceSource {
    /// The object's JSON, or the host's error text (e.g. not found, forbidden).
    fn get(&self, resource: &Resource<'_>) -> Result<Vec<u8>, String>;
}
