//! The text format of the built-in snapshot (`policy/data/builtin-instance-types.txt`): one line per
//! instance type, diff-friendly, with its source and date in a header. Written by the refresher
//! (`make snapshot`), read by the policy's build script, which compiles it into the wasm module.
//!
//! ```text
//! # capa-annotator built-in instance-type table
//! # source: <where the data came from>
//! # date: 2026-11-25
//! # columns: instance-type vcpu memory-MiB gpu arch gpu-vendor
//! m5.large 2 8192 0 amd64 -
//! p3.2xlarge 8 62464 1 amd64 NVIDIA
//! ```

use crate::capacity::{Arch, Capacity, GpuVendor};
use crate::table::{Table, TypeName};

const TITLE: &str = "# capa-annotator built-in instance-type table";
const COLUMNS: &str = "instance-type vcpu memory-MiB gpu arch gpu-vendor";

/// A parsed snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Where the data came from.
    pub source: String,
    /// Date of the data (`YYYY-MM-DD`).
    pub date: String,
    /// Entries sorted by instance type name, no duplicates.
    pub entries: Vec<(String, Capacity)>,
}

/// A problem in a snapshot file, with its line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SnapshotError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> SnapshotError {
    SnapshotError {
        line,
        message: message.into(),
    }
}

/// Parses a snapshot; every line is checked, so a hand edit that breaks the format fails the build.
pub fn parse(text: &str) -> Result<Snapshot, SnapshotError> {
    let mut source = None;
    let mut date = None;
    let mut entries: Vec<(String, Capacity)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if let Some((key, value)) = comment.trim().split_once(':') {
                match key.trim() {
                    "source" => source = Some(value.trim().to_string()),
                    "date" => date = Some(value.trim().to_string()),
                    _ => {}
                }
            }
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [name, vcpu, mib, gpu, arch, vendor] = cols[..] else {
            return Err(err(
                n,
                format!("expected 6 columns ({COLUMNS}), found {}", cols.len()),
            ));
        };
        TypeName::parse(name).map_err(|e| err(n, e.to_string()))?;
        let num = |what: &str, v: &str| -> Result<u64, SnapshotError> {
            v.parse::<u64>()
                .map_err(|_| err(n, format!("{what} {v:?} is not a non-negative integer")))
        };
        let capacity = Capacity {
            vcpu: u32::try_from(num("vcpu", vcpu)?).map_err(|_| err(n, "vcpu too large"))?,
            memory_mib: num("memory-MiB", mib)?,
            gpu: u32::try_from(num("gpu", gpu)?).map_err(|_| err(n, "gpu too large"))?,
            arch: Arch::parse(arch)
                .ok_or_else(|| err(n, format!("arch {arch:?} is not amd64 or arm64")))?,
            gpu_vendor: match vendor {
                "-" => None,
                v => Some(
                    GpuVendor::from_ec2(v)
                        .ok_or_else(|| err(n, format!("unknown gpu-vendor {v:?}")))?,
                ),
            },
        };
        if let Some((prev, _)) = entries.last()
            && prev.as_str() >= name
        {
            return Err(err(
                n,
                format!("{name} is out of order or repeated (after {prev})"),
            ));
        }
        entries.push((name.to_string(), capacity));
    }
    Ok(Snapshot {
        source: source.ok_or_else(|| err(0, "missing '# source:' header"))?,
        date: date.ok_or_else(|| err(0, "missing '# date:' header"))?,
        entries,
    })
}

/// Renders a table as a snapshot file.
pub fn render(source: &str, date: &str, table: &Table) -> String {
    let mut entries: Vec<(String, &Capacity)> = table.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = format!("{TITLE}\n# source: {source}\n# date: {date}\n# columns: {COLUMNS}\n");
    for (name, c) in entries {
        out.push_str(&format!(
            "{name} {} {} {} {} {}\n",
            c.vcpu,
            c.memory_mib,
            c.gpu,
            c.arch,
            c.gpu_vendor.map_or("-", GpuVendor::as_str)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut t = Table::new();
        let add = |t: &mut Table, n: &str, c: Capacity| {
            t.insert(TypeName::parse(n).unwrap(), c);
        };
        add(
            &mut t,
            "p3.2xlarge",
            Capacity {
                vcpu: 8,
                memory_mib: 62464,
                gpu: 1,
                arch: Arch::Amd64,
                gpu_vendor: Some(GpuVendor::Nvidia),
            },
        );
        add(
            &mut t,
            "m5.large",
            Capacity {
                vcpu: 2,
                memory_mib: 8192,
                gpu: 0,
                arch: Arch::Amd64,
                gpu_vendor: None,
            },
        );
        add(
            &mut t,
            "m5.10xlarge",
            Capacity {
                vcpu: 40,
                memory_mib: 163840,
                gpu: 0,
                arch: Arch::Amd64,
                gpu_vendor: None,
            },
        );
        let text = render("unit test", "2026-11-25", &t);
        let snap = parse(&text).unwrap();
        assert_eq!(snap.source, "unit test");
        assert_eq!(snap.date, "2026-11-25");
        let names: Vec<&str> = snap.entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["m5.10xlarge", "m5.large", "p3.2xlarge"]);
        assert!(text.contains("p3.2xlarge 8 62464 1 amd64 NVIDIA\n"));
        assert!(text.contains("m5.large 2 8192 0 amd64 -\n"));
    }

    #[test]
    fn rejects_bad_lines() {
        let head = "# source: s\n# date: d\n";
        for (body, needle) in [
            ("m5.large 2 8192 0 amd64\n", "expected 6 columns"),
            ("m5.large 2 -1 0 amd64 -\n", "memory-MiB"),
            ("m5.large 2 8192 0 sparc -\n", "arch"),
            ("m5.large 2 8192 1 amd64 Acme\n", "gpu-vendor"),
            ("m5large 2 8192 0 amd64 -\n", "not of the form"),
            (
                "m5.xlarge 4 16384 0 amd64 -\nm5.large 2 8192 0 amd64 -\n",
                "out of order",
            ),
            (
                "m5.large 2 8192 0 amd64 -\nm5.large 2 8192 0 amd64 -\n",
                "out of order",
            ),
        ] {
            let e = parse(&format!("{head}{body}")).unwrap_err();
            assert!(e.message.contains(needle), "{body}: {e}");
        }
        assert!(
            parse("m5.large 2 8192 0 amd64 -\n")
                .unwrap_err()
                .message
                .contains("source")
        );
    }
}
