//! Compiles the built-in instance-type snapshot (`data/builtin-instance-types.txt`) into a sorted
//! static array, so the policy never parses a table at run time (it runs in a fresh wasm instance
//! for every request). The text format is defined once, in `capa_core::builtin`.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let path = manifest.join("data").join("builtin-instance-types.txt");
    println!("cargo::rerun-if-changed={}", path.display());
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the built-in table {}: {e}", path.display()));
    let snapshot =
        capa_core::builtin::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));

    let mut out = String::new();
    writeln!(out, "/// Date of the built-in snapshot.").ok();
    writeln!(out, "pub const DATE: &str = {:?};", snapshot.date).ok();
    writeln!(out, "/// Where the built-in snapshot came from.").ok();
    writeln!(out, "#[allow(dead_code)]").ok();
    writeln!(out, "pub const SOURCE: &str = {:?};", snapshot.source).ok();
    writeln!(
        out,
        "static ENTRIES: [(&str, Packed); {}] = [",
        snapshot.entries.len()
    )
    .ok();
    for (name, c) in &snapshot.entries {
        let memory = u32::try_from(c.memory_mib)
            .unwrap_or_else(|_| panic!("{name}: memory does not fit u32"));
        let vcpu =
            u16::try_from(c.vcpu).unwrap_or_else(|_| panic!("{name}: vcpu does not fit u16"));
        let gpu = u16::try_from(c.gpu).unwrap_or_else(|_| panic!("{name}: gpu does not fit u16"));
        // the generated code names capa_core's own variants (their Debug names): nothing to
        // decode at run time, no second mapping to keep in step
        let vendor = c
            .gpu_vendor
            .map_or_else(|| "None".to_string(), |v| format!("Some(GpuVendor::{v:?})"));
        let arch = format!("Arch::{:?}", c.arch);
        writeln!(
            out,
            "    ({name:?}, Packed {{ memory_mib: {memory}, vcpu: {vcpu}, gpu: {gpu}, arch: {arch}, gpu_vendor: {vendor} }}),"
        )
        .ok();
    }
    writeln!(out, "];").ok();
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("builtin_table.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("cannot write {}: {e}", dest.display()));
}
