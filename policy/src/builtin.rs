//! The built-in instance-type table, compiled in by `build.rs` from `data/builtin-instance-types.txt`:
//! a sorted static array searched by binary search — no parsing at run time.

use capa_core::{Arch, Capacity, GpuVendor};

/// Capacity packed small, so the whole EC2 catalogue stays cheap in the wasm module.
struct Packed {
    memory_mib: u32,
    vcpu: u16,
    gpu: u16,
    arm64: bool,
    /// 0 none, 1 NVIDIA, 2 AMD, 3 Habana.
    vendor: u8,
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
        arch: if p.arm64 { Arch::Arm64 } else { Arch::Amd64 },
        gpu_vendor: match p.vendor {
            1 => Some(GpuVendor::Nvidia),
            2 => Some(GpuVendor::Amd),
            3 => Some(GpuVendor::Habana),
            _ => None,
        },
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

    #[test]
    fn reference_capacities() {
        let c = lookup("m5.xlarge").unwrap();
        assert_eq!(
            (c.vcpu, c.memory_mib, c.gpu, c.arch),
            (4, 16384, 0, Arch::Amd64)
        );
        let c = lookup("p3.2xlarge").unwrap();
        assert_eq!(
            (c.vcpu, c.memory_mib, c.gpu, c.gpu_vendor),
            (8, 62464, 1, Some(GpuVendor::Nvidia))
        );
        let c = lookup("mac2.metal").unwrap();
        assert_eq!(c.arch, Arch::Arm64);
        let c = lookup("g4ad.xlarge").unwrap();
        assert_eq!(c.gpu_vendor, Some(GpuVendor::Amd));
    }
}
