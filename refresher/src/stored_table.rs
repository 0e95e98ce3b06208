//! The table ConfigMap's content as the refresher reads and rewrites it: "merge, never lose".
//! The format itself is `capa_core::table`; this module decides what the next content is and
//! whether it differs from what is stored (the ConfigMap is written only on change).

use capa_core::table::{self, Table};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

/// What a ConfigMap holds, read leniently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredTable {
    pub table: Table,
    /// Raw `data` as stored (to detect any difference, encoding included).
    pub raw: BTreeMap<String, String>,
    /// Keys whose value is not in our format: kept untouched unless fresh data replaces them.
    pub malformed: BTreeMap<String, String>,
    pub regions: BTreeSet<String>,
    pub format_version: Option<String>,
    pub last_refresh: Option<SystemTime>,
}

impl StoredTable {
    /// Reads `data` and `metadata.annotations` of the ConfigMap (both may be empty).
    pub fn read(data: &BTreeMap<String, String>, annotations: &BTreeMap<String, String>) -> Self {
        let (table, bad) =
            Table::from_configmap_data(data.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let malformed = bad
            .into_iter()
            .filter_map(|(k, _)| data.get(&k).map(|v| (k, v.clone())))
            .collect();
        let regions = annotations
            .get(table::ANNOTATION_REGIONS)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        StoredTable {
            table,
            raw: data.clone(),
            malformed,
            regions,
            format_version: annotations.get(table::ANNOTATION_FORMAT_VERSION).cloned(),
            last_refresh: annotations
                .get(table::ANNOTATION_LAST_REFRESH)
                .and_then(|s| humantime::parse_rfc3339_weak(s).ok()),
        }
    }
}

/// The content to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextContent {
    pub data: BTreeMap<String, String>,
    /// Our annotations (other annotations on the ConfigMap are left alone).
    pub annotations: BTreeMap<String, String>,
    pub table: Table,
    /// The regions the table covers after this write.
    pub regions: BTreeSet<String>,
    /// True when `data` differs from what is stored.
    pub data_changed: bool,
}

/// The next content after a refresh that fetched `fetched` from `regions`; `None` when nothing
/// needs writing. A refresh that covered no region (everything failed) never writes: not even an
/// empty ConfigMap on a fresh cluster.
pub fn next_content(
    stored: &StoredTable,
    fetched: &Table,
    regions: &BTreeSet<String>,
    now: SystemTime,
    stale_after: Duration,
) -> Option<NextContent> {
    if regions.is_empty() {
        return None;
    }
    let mut merged = stored.table.clone();
    merged.merge(fetched);
    let mut data = merged.to_configmap_data();
    for (k, raw) in &stored.malformed {
        data.entry(k.clone()).or_insert_with(|| raw.clone());
    }
    let all_regions: BTreeSet<String> = stored.regions.union(regions).cloned().collect();
    let data_changed = data != stored.raw;
    let stale = match stored.last_refresh {
        None => true,
        Some(t) => now
            .duration_since(t)
            .map(|d| d >= stale_after)
            .unwrap_or(false),
    };
    let changed = data_changed
        || all_regions != stored.regions
        || stored.format_version.as_deref() != Some(table::FORMAT_VERSION)
        || stale;
    if !changed {
        return None;
    }
    let annotations = BTreeMap::from([
        (
            table::ANNOTATION_FORMAT_VERSION.to_string(),
            table::FORMAT_VERSION.to_string(),
        ),
        (
            table::ANNOTATION_LAST_REFRESH.to_string(),
            humantime::format_rfc3339_seconds(now).to_string(),
        ),
        (
            table::ANNOTATION_REGIONS.to_string(),
            all_regions.iter().cloned().collect::<Vec<_>>().join(","),
        ),
    ]);
    Some(NextContent {
        data,
        annotations,
        table: merged,
        regions: all_regions,
        data_changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use capa_core::table::TypeName;
    use capa_core::{Arch, Capacity};

    fn cap(vcpu: u32) -> Capacity {
        Capacity {
            vcpu,
            memory_mib: 1024,
            gpu: 0,
            arch: Arch::Amd64,
            gpu_vendor: None,
        }
    }

    fn table(entries: &[(&str, u32)]) -> Table {
        let mut t = Table::new();
        for (n, v) in entries {
            t.insert(TypeName::parse(n).unwrap(), cap(*v));
        }
        t
    }

    fn regions(r: &[&str]) -> BTreeSet<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    const DAY: Duration = Duration::from_secs(86400);

    #[test]
    fn fresh_cluster_writes_everything() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let next = next_content(
            &StoredTable::default(),
            &table(&[("m5.large", 2)]),
            &regions(&["eu-west-3"]),
            now,
            DAY / 2,
        )
        .unwrap();
        assert!(next.data_changed);
        assert_eq!(next.data.len(), 1);
        assert_eq!(next.annotations[table::ANNOTATION_REGIONS], "eu-west-3");
        assert_eq!(next.annotations[table::ANNOTATION_FORMAT_VERSION], "1");
        assert_eq!(
            next.annotations[table::ANNOTATION_LAST_REFRESH],
            "2027-01-15T08:00:00Z"
        );
    }

    #[test]
    fn unchanged_table_is_not_written() {
        let now = SystemTime::now();
        let first = next_content(
            &StoredTable::default(),
            &table(&[("m5.large", 2)]),
            &regions(&["eu-west-3"]),
            now,
            DAY / 2,
        )
        .unwrap();
        let stored = StoredTable::read(&first.data, &first.annotations);
        assert_eq!(
            stored
                .last_refresh
                .map(|t| now.duration_since(t).unwrap() < Duration::from_secs(1)),
            Some(true)
        );
        assert_eq!(
            next_content(
                &stored,
                &table(&[("m5.large", 2)]),
                &regions(&["eu-west-3"]),
                now + Duration::from_secs(60),
                DAY / 2
            ),
            None
        );
        // a day later the refresh time is recorded again
        let later = next_content(
            &stored,
            &table(&[("m5.large", 2)]),
            &regions(&["eu-west-3"]),
            now + DAY,
            DAY / 2,
        )
        .unwrap();
        assert!(!later.data_changed);
        // a failed refresh (nothing fetched, no region) never writes
        assert_eq!(
            next_content(&stored, &Table::new(), &BTreeSet::new(), now + DAY, DAY / 2),
            None
        );
    }

    #[test]
    fn merge_never_loses_entries_regions_or_unreadable_keys() {
        let now = SystemTime::now();
        let mut data = table(&[("m5.large", 2), ("c5.large", 2)]).to_configmap_data();
        data.insert("x1".into(), "{garbage".into());
        let ann = BTreeMap::from([(
            table::ANNOTATION_REGIONS.to_string(),
            "us-east-1".to_string(),
        )]);
        let stored = StoredTable::read(&data, &ann);
        assert_eq!(stored.malformed.len(), 1);
        let next = next_content(
            &stored,
            &table(&[("m5.large", 3), ("m5.xlarge", 4)]),
            &regions(&["eu-west-3"]),
            now,
            DAY / 2,
        )
        .unwrap();
        assert_eq!(next.table.len(), 3);
        assert_eq!(
            next.table
                .get(TypeName::parse("m5.large").unwrap())
                .unwrap()
                .vcpu,
            3
        );
        assert_eq!(next.data["x1"], "{garbage");
        assert_eq!(
            next.annotations[table::ANNOTATION_REGIONS],
            "eu-west-3,us-east-1"
        );
        // fresh data for a malformed family replaces it
        let next = next_content(
            &stored,
            &table(&[("x1.large", 4)]),
            &regions(&["eu-west-3"]),
            now,
            DAY / 2,
        )
        .unwrap();
        assert!(next.data["x1"].starts_with("{\"large\""));
    }
}
