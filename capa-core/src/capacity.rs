//! One node's capacity, and the normalisation rules for CPU architecture and GPU vendor.

use serde::{Deserialize, Serialize};

/// CPU architecture as Kubernetes names it (`kubernetes.io/arch`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    #[default]
    Amd64,
    Arm64,
}

impl Arch {
    /// The label value (`amd64` / `arm64`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Parses a Kubernetes arch name (`amd64`, `arm64`); anything else is `None`.
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "amd64" => Some(Arch::Amd64),
            "arm64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// Maps one EC2 `ProcessorInfo.SupportedArchitectures` entry; unknown names give `None`.
    ///
    /// `arm64`/`arm64_mac` → arm64; `x86_64`/`x86_64_mac`/`i386` → amd64.
    pub fn from_ec2(name: &str) -> Option<Arch> {
        match name {
            "arm64" | "arm64_mac" => Some(Arch::Arm64),
            "x86_64" | "x86_64_mac" | "i386" => Some(Arch::Amd64),
            _ => None,
        }
    }

    /// The architecture of an instance type from its whole `SupportedArchitectures` list.
    ///
    /// Any arm entry makes it arm64 (EC2 never mixes arm and x86 in one type); otherwise any x86
    /// entry makes it amd64; an empty or unknown list defaults to amd64 like upstream.
    /// Upstream looked only at the first entry and so mis-read `["i386","x86_64"]` orderings and
    /// mapped `arm64_mac` to amd64: both deviations are deliberate.
    pub fn from_ec2_list<'a>(names: impl IntoIterator<Item = &'a str>) -> Arch {
        let mut found = None;
        for arch in names.into_iter().filter_map(Arch::from_ec2) {
            if arch == Arch::Arm64 {
                return Arch::Arm64;
            }
            found = Some(arch);
        }
        found.unwrap_or_default()
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The maker of an instance type's GPUs, where we know the Kubernetes resource it is exposed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GpuVendor {
    Nvidia,
    Amd,
    Habana,
}

impl GpuVendor {
    /// From EC2's `GpuInfo.Gpus[].Manufacturer` (case-insensitive); unknown makers give `None`.
    pub fn from_ec2(manufacturer: &str) -> Option<GpuVendor> {
        if manufacturer.eq_ignore_ascii_case("nvidia") {
            Some(GpuVendor::Nvidia)
        } else if manufacturer.eq_ignore_ascii_case("amd") {
            Some(GpuVendor::Amd)
        } else if manufacturer.eq_ignore_ascii_case("habana") {
            Some(GpuVendor::Habana)
        } else {
            None
        }
    }

    /// The name written in the table (EC2's spelling).
    pub const fn as_str(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "NVIDIA",
            GpuVendor::Amd => "AMD",
            GpuVendor::Habana => "Habana",
        }
    }

    /// The extended resource name the vendor's device plugin registers: the value of the
    /// cluster-autoscaler `gpu-type` annotation.
    pub const fn resource_name(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "nvidia.com/gpu",
            GpuVendor::Amd => "amd.com/gpu",
            GpuVendor::Habana => "habana.ai/gaudi",
        }
    }
}

/// The capacity of one node of an instance type: what the annotations describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// `VCpuInfo.DefaultVCpus`.
    pub vcpu: u32,
    /// `MemoryInfo.SizeInMiB`.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    /// Whole GPUs: the sum of `GpuInfo.Gpus[].Count` (fractional GPUs count 0).
    pub gpu: u32,
    /// Normalised CPU architecture.
    pub arch: Arch,
    /// GPU maker, when there are GPUs and the maker is one we know.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "gpu_vendor_serde"
    )]
    pub gpu_vendor: Option<GpuVendor>,
}

/// `gpuVendor` is written with EC2's spelling and read leniently: a maker we do not know is
/// simply no vendor (readers of the table ignore what they do not understand, so a newer writer
/// never breaks an older reader).
mod gpu_vendor_serde {
    use super::GpuVendor;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<GpuVendor>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(v.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GpuVendor>, D::Error> {
        let raw: Option<std::borrow::Cow<'de, str>> = Option::deserialize(d)?;
        Ok(raw.as_deref().and_then(GpuVendor::from_ec2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_rules() {
        assert_eq!(Arch::from_ec2_list(["x86_64"]), Arch::Amd64);
        assert_eq!(Arch::from_ec2_list(["arm64"]), Arch::Arm64);
        assert_eq!(Arch::from_ec2_list(["arm64_mac"]), Arch::Arm64);
        assert_eq!(Arch::from_ec2_list(["x86_64_mac"]), Arch::Amd64);
        assert_eq!(Arch::from_ec2_list(["i386", "x86_64"]), Arch::Amd64);
        assert_eq!(Arch::from_ec2_list(["x86_64", "i386"]), Arch::Amd64);
        assert_eq!(Arch::from_ec2_list(["i386"]), Arch::Amd64);
        assert_eq!(Arch::from_ec2_list([]), Arch::Amd64);
        assert_eq!(Arch::from_ec2_list(["wrong-arch"]), Arch::Amd64);
        assert_eq!(Arch::from_ec2_list(["amd64"]), Arch::Amd64);
        // an unknown first entry does not hide a known later one
        assert_eq!(Arch::from_ec2_list(["riscv", "arm64"]), Arch::Arm64);
    }

    #[test]
    fn capacity_json_shape() {
        let c = Capacity {
            vcpu: 4,
            memory_mib: 16384,
            gpu: 1,
            arch: Arch::Amd64,
            gpu_vendor: Some(GpuVendor::Nvidia),
        };
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(
            s,
            r#"{"vcpu":4,"memoryMiB":16384,"gpu":1,"arch":"amd64","gpuVendor":"NVIDIA"}"#
        );
        assert_eq!(serde_json::from_str::<Capacity>(&s).unwrap(), c);
        let plain = Capacity {
            gpu_vendor: None,
            gpu: 0,
            ..c
        };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"vcpu":4,"memoryMiB":16384,"gpu":0,"arch":"amd64"}"#
        );
    }

    #[test]
    fn capacity_reader_ignores_unknown_fields_and_vendors() {
        let c: Capacity = serde_json::from_str(
            r#"{"vcpu":2,"memoryMiB":8,"gpu":1,"arch":"arm64","gpuVendor":"Acme","future":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(c.gpu_vendor, None);
        assert_eq!(c.arch, Arch::Arm64);
        assert!(
            serde_json::from_str::<Capacity>(r#"{"vcpu":-1,"memoryMiB":8,"gpu":0,"arch":"amd64"}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<Capacity>(r#"{"vcpu":1,"memoryMiB":8,"gpu":0,"arch":"sparc"}"#)
                .is_err()
        );
    }
}
