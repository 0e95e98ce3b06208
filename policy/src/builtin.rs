//! The built-in instance-type table, compiled in by `build.rs` from `data/builtin-instance-types.txt`:
//! a sorted static array searched by binary search — no parsing at run time.

use capa_core::{Arch, Capacity, GpuVendor};

/// Capacity packed small (12 bytes), so the whole EC2 catalogue stays cheap in the wasm module.
struct Packed {
    memory_mib: u32,
    vcpu: u16,
    gpu: u16,
    arch: Arch,
    gpu_vendor: Option<GpuVendor>,
}

include!(concat!(env!("OUT_DIR"), "/builtin_table.rs"));

/// Looks an instance type up.
pub fn lookup(instance_type: &str) -> Option<Capacity> {
    let i = ENTRIES
        .binary_search_by(|(name, _)| (*name).cmp(instance_type))
        .ok()?;
    let p = &ENTRIES[i].1;
    Some(Capacity {
        vcpu: u32::from(p.vcpu),
        memory_mib: u64::from(p.memory_mib),
        gpu: u32::from(p.gpu),
        arch: p.arch,
        gpu_vendor: p.gpu_vendor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_and_searchable() {
        assert!(ENTRIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(!ENTRIES.is_empty());
        for (name, _) in ENTRIES.iter() {
            assert!(lookup(name).is_some(), "{name}");
        }
        assert_eq!(lookup("nope.large"), None);
        assert!(!DATE.is_empty() && !SOURCE.is_empty());
    }

    /// `shared/reference/sample-capacities.md` (real EC2 figures); p3.2xlarge and f1.2xlarge are
    /// not in moto's catalogue, so they are not in the built-in table either.
    #[test]
    fn reference_capacities() {
        use GpuVendor::*;
        let amd64 = Arch::Amd64;
        let arm64 = Arch::Arm64;
        for (name, vcpu, mib, gpu, arch, vendor) in [
            ("m5.large", 2, 8192, 0, amd64, None),
            ("m5.xlarge", 4, 16384, 0, amd64, None),
            ("m6i.8xlarge", 32, 131072, 0, amd64, None),
            ("t2.micro", 1, 1024, 0, amd64, None),
            ("t3.micro", 2, 1024, 0, amd64, None),
            ("t4g.medium", 2, 4096, 0, arm64, None),
            ("c6g.xlarge", 4, 8192, 0, arm64, None),
            ("a1.2xlarge", 8, 16384, 0, arm64, None),
            ("m6g.4xlarge", 16, 65536, 0, arm64, None),
            ("p4d.24xlarge", 96, 1179648, 8, amd64, Some(Nvidia)),
            ("p5.48xlarge", 192, 2097152, 8, amd64, Some(Nvidia)),
            ("g4dn.xlarge", 4, 16384, 1, amd64, Some(Nvidia)),
            ("g4ad.xlarge", 4, 16384, 1, amd64, Some(Amd)),
            ("g5.xlarge", 4, 16384, 1, amd64, Some(Nvidia)),
            ("g5g.xlarge", 4, 8192, 1, arm64, Some(Nvidia)),
            ("dl1.24xlarge", 96, 786432, 8, amd64, Some(Habana)),
            ("inf1.xlarge", 4, 8192, 0, amd64, None),
            ("inf2.xlarge", 4, 16384, 0, amd64, None),
            ("trn1.2xlarge", 8, 32768, 0, amd64, None),
            ("mac1.metal", 12, 32768, 0, amd64, None),
            ("mac2.metal", 8, 16384, 0, arm64, None),
            // fractional GPU (EC2: Count 0, LogicalGpuCount 1): no whole GPU to advertise
            ("g6f.large", 2, 8192, 0, amd64, None),
        ] {
            let c = lookup(name).unwrap_or_else(|| panic!("{name} is not in the built-in table"));
            assert_eq!(
                (c.vcpu, c.memory_mib, c.gpu, c.arch, c.gpu_vendor),
                (vcpu, mib, gpu, arch, vendor),
                "{name}"
            );
        }
    }

    #[test]
    fn every_type_of_the_catalogue() {
        // moto 5.2.1 (the pinned version the snapshot comes from) lists 1,263 instance types
        assert_eq!(ENTRIES.len(), 1263, "a snapshot of another catalogue?");
    }
}
