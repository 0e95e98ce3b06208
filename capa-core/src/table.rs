//! The instance-type table and its ConfigMap format — the one contract between the
//! refresher (which writes it) and the policy (which reads it).
//!
//! ConfigMap `data`: key = instance **family** (the part of the type before the first `.`), value =
//! compact JSON object from size to [`Capacity`], e.g.
//! `{"large":{"vcpu":2,"memoryMiB":8192,"gpu":0,"arch":"amd64"}}`. One key per family lets the
//! policy ask the host for just that key (`field_masks: ["data.m5"]`).
//! Metadata lives in the ConfigMap's annotations ([`ANNOTATION_FORMAT_VERSION`], …).

use crate::capacity::Capacity;
use crate::json_path;
use std::collections::BTreeMap;

/// Default name of the table ConfigMap.
pub const DEFAULT_CONFIGMAP_NAME: &str = "machineset-instance-types";
/// Default namespace of the table ConfigMap.
pub const DEFAULT_CONFIGMAP_NAMESPACE: &str = "openshift-machine-api";

/// Version of this format, written in [`ANNOTATION_FORMAT_VERSION`]. Readers ignore fields they do
/// not know, so additions do not bump it.
pub const FORMAT_VERSION: &str = "1";
/// ConfigMap annotation: format version.
pub const ANNOTATION_FORMAT_VERSION: &str = "capa-annotator.io/format-version";
/// ConfigMap annotation: RFC 3339 time of the last successful refresh.
pub const ANNOTATION_LAST_REFRESH: &str = "capa-annotator.io/last-refresh";
/// ConfigMap annotation: comma-separated, sorted regions the table was fetched from.
pub const ANNOTATION_REGIONS: &str = "capa-annotator.io/regions";

/// Longest instance type name we accept (EC2's longest is ~20 characters).
pub const MAX_INSTANCE_TYPE_LEN: usize = 63;

/// Why an instance type name cannot be used as a table key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("instance type is empty")]
    Empty,
    #[error("instance type {0:?} is not of the form <family>.<size> (for example m5.xlarge)")]
    Malformed(String),
}

/// An instance type split into family and size: `m5.xlarge` → (`m5`, `xlarge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeName<'a> {
    pub family: &'a str,
    pub size: &'a str,
}

impl<'a> TypeName<'a> {
    /// Splits at the first `.`. Family: `[A-Za-z0-9-]+`; size: `[A-Za-z0-9.-]+`; at most
    /// [`MAX_INSTANCE_TYPE_LEN`] characters in all — so the family is always a valid ConfigMap key
    /// and a valid field-mask segment.
    pub fn parse(instance_type: &'a str) -> Result<Self, NameError> {
        if instance_type.is_empty() {
            return Err(NameError::Empty);
        }
        let malformed = || NameError::Malformed(truncate_for_message(instance_type));
        if instance_type.len() > MAX_INSTANCE_TYPE_LEN {
            return Err(malformed());
        }
        let (family, size) = instance_type.split_once('.').ok_or_else(malformed)?;
        let family_ok = !family.is_empty()
            && family
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let size_ok = !size.is_empty()
            && size
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if family_ok && size_ok {
            Ok(TypeName { family, size })
        } else {
            Err(malformed())
        }
    }

    /// The Kubewarden field mask that selects this family's key of the ConfigMap.
    pub fn field_mask(&self) -> String {
        format!("data.{}", self.family)
    }
}

/// Shortens a hostile value before it is quoted in a message.
pub fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Why a ConfigMap (or one family of it) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("the ConfigMap is not valid JSON or its data is not a map of strings: {0}")]
    ConfigMap(#[source] serde_json::Error),
    #[error("data key {family:?} does not hold a JSON object of size to capacity: {source}")]
    Family {
        family: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Looks one instance type up in a ConfigMap's JSON, whether the host returned the whole object or
/// only `data.<family>` (field masks). Reads nothing but that one key.
pub fn lookup_in_configmap(
    configmap_json: &[u8],
    name: TypeName<'_>,
) -> Result<Option<Capacity>, FormatError> {
    let family_json: Option<String> = json_path::extract(configmap_json, &["data", name.family])
        .map_err(FormatError::ConfigMap)?;
    match family_json {
        None => Ok(None),
        Some(json) => lookup_in_family(&json, name),
    }
}

/// Looks one size up in the JSON value of a family key.
pub fn lookup_in_family(
    family_json: &str,
    name: TypeName<'_>,
) -> Result<Option<Capacity>, FormatError> {
    json_path::extract_str(family_json, &[name.size]).map_err(|source| FormatError::Family {
        family: name.family.to_string(),
        source,
    })
}

/// The whole table: family → size → capacity, sorted, so its encoding is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    families: BTreeMap<String, BTreeMap<String, Capacity>>,
}

/// What [`Table::merge`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces one instance type; returns the previous capacity.
    pub fn insert(&mut self, name: TypeName<'_>, capacity: Capacity) -> Option<Capacity> {
        self.families
            .entry(name.family.to_string())
            .or_default()
            .insert(name.size.to_string(), capacity)
    }

    pub fn get(&self, name: TypeName<'_>) -> Option<&Capacity> {
        self.families.get(name.family)?.get(name.size)
    }

    /// Number of instance types.
    pub fn len(&self) -> usize {
        self.families.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// Every instance type, sorted by family then size, as (`family.size`, capacity).
    pub fn iter(&self) -> impl Iterator<Item = (String, &Capacity)> {
        self.families.iter().flat_map(|(family, sizes)| {
            sizes
                .iter()
                .map(move |(size, cap)| (format!("{family}.{size}"), cap))
        })
    }

    /// "Merge, never lose": updates `self` with every entry of `fetched`; entries only in `self` stay.
    pub fn merge(&mut self, fetched: &Table) -> MergeStats {
        let mut stats = MergeStats::default();
        for (family, sizes) in &fetched.families {
            let mine = self.families.entry(family.clone()).or_default();
            for (size, cap) in sizes {
                match mine.insert(size.clone(), *cap) {
                    None => stats.added += 1,
                    Some(old) if old == *cap => stats.unchanged += 1,
                    Some(_) => stats.updated += 1,
                }
            }
        }
        stats
    }

    /// The ConfigMap `data` of this table: one compact JSON object per family.
    pub fn to_configmap_data(&self) -> BTreeMap<String, String> {
        self.families
            .iter()
            .map(|(family, sizes)| (family.clone(), encode_family(sizes)))
            .collect()
    }

    /// Reads a ConfigMap's `data`. Keys that do not hold a valid family value are returned apart
    /// (with the reason), so that a writer can keep them untouched instead of losing them.
    pub fn from_configmap_data<'a>(
        data: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (Table, Vec<(String, FormatError)>) {
        let mut table = Table::new();
        let mut bad = Vec::new();
        for (family, json) in data {
            match serde_json::from_str::<BTreeMap<String, Capacity>>(json) {
                Ok(sizes) => {
                    table
                        .families
                        .entry(family.to_string())
                        .or_default()
                        .extend(sizes);
                }
                Err(source) => bad.push((
                    family.to_string(),
                    FormatError::Family {
                        family: family.to_string(),
                        source,
                    },
                )),
            }
        }
        (table, bad)
    }
}

fn encode_family(sizes: &BTreeMap<String, Capacity>) -> String {
    // Serialising a map of plain structs cannot fail; an empty object is the safe fallback.
    serde_json::to_string(sizes).unwrap_or_else(|_| "{}".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::{Arch, GpuVendor};

    fn cap(vcpu: u32, mib: u64, gpu: u32, arch: Arch) -> Capacity {
        Capacity {
            vcpu,
            memory_mib: mib,
            gpu,
            arch,
            gpu_vendor: None,
        }
    }

    fn tn(s: &str) -> TypeName<'_> {
        TypeName::parse(s).unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(
            tn("m5.xlarge"),
            TypeName {
                family: "m5",
                size: "xlarge"
            }
        );
        assert_eq!(tn("u-12tb1.112xlarge").family, "u-12tb1");
        assert_eq!(tn("mac2-m2pro.metal").family, "mac2-m2pro");
        assert_eq!(tn("m7i.metal-48xl").size, "metal-48xl");
        assert_eq!(tn("m5.xlarge").field_mask(), "data.m5");
        assert_eq!(TypeName::parse(""), Err(NameError::Empty));
        for bad in [
            "invalid",
            ".large",
            "m5.",
            "m5/x.large",
            "m5.lar ge",
            "m5.\u{e9}",
            &"m".repeat(70),
        ] {
            assert!(
                matches!(TypeName::parse(bad), Err(NameError::Malformed(_))),
                "{bad:?}"
            );
        }
        let long = "é".repeat(100);
        assert!(truncate_for_message(&long).chars().count() <= 41);
    }

    #[test]
    fn codec_round_trip() {
        let mut t = Table::new();
        t.insert(tn("m5.large"), cap(2, 8192, 0, Arch::Amd64));
        t.insert(tn("m5.xlarge"), cap(4, 16384, 0, Arch::Amd64));
        t.insert(
            tn("p3.2xlarge"),
            Capacity {
                gpu_vendor: Some(GpuVendor::Nvidia),
                ..cap(8, 62464, 1, Arch::Amd64)
            },
        );
        t.insert(tn("m6g.xlarge"), cap(4, 16384, 0, Arch::Arm64));
        let data = t.to_configmap_data();
        assert_eq!(
            data["m5"],
            r#"{"large":{"vcpu":2,"memoryMiB":8192,"gpu":0,"arch":"amd64"},"xlarge":{"vcpu":4,"memoryMiB":16384,"gpu":0,"arch":"amd64"}}"#
        );
        let (back, bad) =
            Table::from_configmap_data(data.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert!(bad.is_empty());
        assert_eq!(back, t);
        assert_eq!(back.len(), 4);
        assert_eq!(back.to_configmap_data(), data, "encoding is deterministic");
        let names: Vec<String> = back.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["m5.large", "m5.xlarge", "m6g.xlarge", "p3.2xlarge"]);
    }

    #[test]
    fn malformed_families_are_set_apart() {
        let (t, bad) = Table::from_configmap_data([
            (
                "m5",
                r#"{"large":{"vcpu":2,"memoryMiB":8192,"gpu":0,"arch":"amd64"}}"#,
            ),
            ("c5", "not json"),
        ]);
        assert_eq!(t.len(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, "c5");
    }

    #[test]
    fn merge_never_loses() {
        let mut old = Table::new();
        old.insert(tn("m5.large"), cap(2, 8192, 0, Arch::Amd64));
        old.insert(tn("c5.large"), cap(2, 4096, 0, Arch::Amd64));
        let mut fetched = Table::new();
        fetched.insert(tn("m5.large"), cap(2, 8192, 0, Arch::Amd64));
        fetched.insert(tn("m5.xlarge"), cap(4, 16384, 0, Arch::Amd64));
        fetched.insert(tn("c5.large"), cap(2, 4000, 0, Arch::Amd64));
        let stats = old.merge(&fetched);
        assert_eq!(
            stats,
            MergeStats {
                added: 1,
                updated: 1,
                unchanged: 1
            }
        );
        assert_eq!(old.len(), 3);
        assert_eq!(old.get(tn("c5.large")).unwrap().memory_mib, 4000);
        let empty = Table::new();
        assert_eq!(old.clone().merge(&empty), MergeStats::default());
    }

    #[test]
    fn lookup_masked_and_whole() {
        let whole = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"machineset-instance-types"},
          "data":{"c5":"{\"large\":{\"vcpu\":2,\"memoryMiB\":4096,\"gpu\":0,\"arch\":\"amd64\"}}",
                  "m5":"{\"large\":{\"vcpu\":2,\"memoryMiB\":8192,\"gpu\":0,\"arch\":\"amd64\"},\"xlarge\":{\"vcpu\":4,\"memoryMiB\":16384,\"gpu\":0,\"arch\":\"amd64\"}}"}}"#;
        let masked = br#"{"data":{"m5":"{\"xlarge\":{\"vcpu\":4,\"memoryMiB\":16384,\"gpu\":0,\"arch\":\"amd64\"}}"}}"#;
        for doc in [&whole[..], &masked[..]] {
            let c = lookup_in_configmap(doc, tn("m5.xlarge")).unwrap().unwrap();
            assert_eq!(c, cap(4, 16384, 0, Arch::Amd64));
            assert_eq!(lookup_in_configmap(doc, tn("m5.metal")).unwrap(), None);
            assert_eq!(lookup_in_configmap(doc, tn("r5.large")).unwrap(), None);
        }
        assert!(matches!(
            lookup_in_configmap(br#"{"data":{"m5":"{oops"}}"#, tn("m5.large")),
            Err(FormatError::Family { .. })
        ));
        assert!(matches!(
            lookup_in_configmap(br#"{"data":{"m5":{"large":{}}}}"#, tn("m5.large")),
            Err(FormatError::ConfigMap(_))
        ));
        assert!(matches!(
            lookup_in_configmap(
                br#"{"data":{"m5":"{\"large\":{\"vcpu\":\"2\"}}"}}"#,
                tn("m5.large")
            ),
            Err(FormatError::Family { .. })
        ));
        assert!(matches!(
            lookup_in_configmap(b"garbage", tn("m5.large")),
            Err(FormatError::ConfigMap(_))
        ));
    }
}
