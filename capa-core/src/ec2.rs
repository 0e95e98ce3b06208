//! From an EC2 `DescribeInstanceTypes` item to a [`Capacity`].
//!
//! The refresher converts the SDK's types into [`InstanceTypeInfo`] (a plain mirror of the fields we
//! read) so that this rule is tested here, without the SDK and without a server.

use crate::capacity::{Arch, Capacity, GpuVendor};

/// The fields of an EC2 `InstanceTypeInfo` that capacity depends on. `None` = absent in the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceTypeInfo {
    pub instance_type: String,
    /// `VCpuInfo.DefaultVCpus`.
    pub default_vcpus: Option<i64>,
    /// `MemoryInfo.SizeInMiB`.
    pub size_in_mib: Option<i64>,
    /// `GpuInfo.Gpus[]`.
    pub gpus: Vec<GpuDevice>,
    /// `ProcessorInfo.SupportedArchitectures` (empty when `ProcessorInfo` is absent).
    pub architectures: Vec<String>,
}

/// One entry of `GpuInfo.Gpus[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuDevice {
    pub count: Option<i64>,
    pub manufacturer: Option<String>,
    pub name: Option<String>,
}

/// Why an item cannot become a table entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("instance type {0:?}: VCpuInfo.DefaultVCpus is missing or out of range")]
    VCpus(String),
    #[error("instance type {0:?}: MemoryInfo.SizeInMiB is missing or out of range")]
    Memory(String),
}

impl InstanceTypeInfo {
    /// The capacity of one node of this type.
    ///
    /// GPU = the sum of whole `Count`s (fractional GPUs such as `g6f.*` report `Count 0` and give 0;
    /// Inferentia, Neuron and FPGA accelerators are not in `GpuInfo` and give 0).
    pub fn capacity(&self) -> Result<Capacity, TransformError> {
        let vcpu = self
            .default_vcpus
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| TransformError::VCpus(self.instance_type.clone()))?;
        let memory_mib = self
            .size_in_mib
            .and_then(|v| u64::try_from(v).ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| TransformError::Memory(self.instance_type.clone()))?;
        let gpu = self
            .gpus
            .iter()
            .filter_map(|g| g.count)
            .filter_map(|c| u32::try_from(c).ok())
            .fold(0u32, u32::saturating_add);
        let gpu_vendor = if gpu > 0 {
            self.gpus
                .iter()
                .filter(|g| g.count.unwrap_or(0) > 0)
                .find_map(|g| g.manufacturer.as_deref().and_then(GpuVendor::from_ec2))
        } else {
            None
        };
        Ok(Capacity {
            vcpu,
            memory_mib,
            gpu,
            arch: Arch::from_ec2_list(self.architectures.iter().map(String::as_str)),
            gpu_vendor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(
        name: &str,
        vcpu: i64,
        mib: i64,
        gpus: Vec<GpuDevice>,
        arch: &[&str],
    ) -> InstanceTypeInfo {
        InstanceTypeInfo {
            instance_type: name.into(),
            default_vcpus: Some(vcpu),
            size_in_mib: Some(mib),
            gpus,
            architectures: arch.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn gpu(maker: &str, count: i64) -> GpuDevice {
        GpuDevice {
            count: Some(count),
            manufacturer: Some(maker.into()),
            name: None,
        }
    }

    /// The upstream controller's fake EC2 data (reference/upstream-fixtures.md), with its
    /// deliberately odd architectures: every row must transform as upstream's tests expect.
    #[test]
    fn upstream_fake_ec2_data() {
        let cases = [
            (
                info("m4.large", 2, 8192, vec![], &["amd64"]),
                (2, 8192, 0, Arch::Amd64),
            ),
            (
                info("a1.2xlarge", 8, 16384, vec![], &["amd64"]),
                (8, 16384, 0, Arch::Amd64),
            ),
            (
                info(
                    "p2.16xlarge",
                    64,
                    749568,
                    vec![gpu("NVIDIA", 16)],
                    &["amd64"],
                ),
                (64, 749568, 16, Arch::Amd64),
            ),
            (
                info("g4ad.xlarge", 4, 16384, vec![gpu("AMD", 1)], &["amd64"]),
                (4, 16384, 1, Arch::Amd64),
            ),
            (
                info("m6g.4xlarge", 16, 65536, vec![], &["arm64"]),
                (16, 65536, 0, Arch::Arm64),
            ),
            (
                info("m6i.8xlarge", 32, 131072, vec![], &[]),
                (32, 131072, 0, Arch::Amd64),
            ),
            (
                info("m6h.8xlarge", 32, 131072, vec![], &["wrong-arch"]),
                (32, 131072, 0, Arch::Amd64),
            ),
        ];
        for (item, (vcpu, mib, gpus, arch)) in cases {
            let c = item.capacity().unwrap();
            assert_eq!(
                (c.vcpu, c.memory_mib, c.gpu, c.arch),
                (vcpu, mib, gpus, arch),
                "{}",
                item.instance_type
            );
        }
    }

    #[test]
    fn gpu_vendor_and_sums() {
        let c = info(
            "p2.16xlarge",
            64,
            749568,
            vec![gpu("NVIDIA", 16)],
            &["x86_64"],
        )
        .capacity()
        .unwrap();
        assert_eq!(c.gpu_vendor, Some(GpuVendor::Nvidia));
        let c = info("g4ad.xlarge", 4, 16384, vec![gpu("AMD", 1)], &["x86_64"])
            .capacity()
            .unwrap();
        assert_eq!(c.gpu_vendor, Some(GpuVendor::Amd));
        let c = info(
            "x.y",
            4,
            16384,
            vec![gpu("NVIDIA", 2), gpu("NVIDIA", 3)],
            &["x86_64"],
        )
        .capacity()
        .unwrap();
        assert_eq!(c.gpu, 5);
        let c = info(
            "dl1.24xlarge",
            96,
            786432,
            vec![gpu("Habana", 8)],
            &["x86_64"],
        )
        .capacity()
        .unwrap();
        assert_eq!((c.gpu, c.gpu_vendor), (8, Some(GpuVendor::Habana)));
        let c = info("q.x", 4, 1, vec![gpu("Acme", 1)], &["x86_64"])
            .capacity()
            .unwrap();
        assert_eq!((c.gpu, c.gpu_vendor), (1, None));
    }

    #[test]
    fn fractional_gpus_count_zero() {
        let c = info("g6f.large", 2, 8192, vec![gpu("NVIDIA", 0)], &["x86_64"])
            .capacity()
            .unwrap();
        assert_eq!((c.gpu, c.gpu_vendor), (0, None));
    }

    #[test]
    fn missing_numbers_are_errors() {
        let mut i = info("m5.large", 2, 8192, vec![], &["x86_64"]);
        i.default_vcpus = None;
        assert!(matches!(i.capacity(), Err(TransformError::VCpus(_))));
        let mut i = info("m5.large", 2, 8192, vec![], &["x86_64"]);
        i.size_in_mib = Some(-5);
        assert!(matches!(i.capacity(), Err(TransformError::Memory(_))));
    }
}
