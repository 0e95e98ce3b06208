//! The capacity annotations written on a node group, defined once for the policy (which writes
//! them) and the refresher (which checks whether a MachineSet needs re-admission).

use crate::capacity::{Arch, Capacity};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `VCpuInfo.DefaultVCpus`, plain integer.
pub const VCPU: &str = "machine.openshift.io/vCPU";
/// Memory in MiB, plain integer without unit (the OpenShift autoscaler rejects a unit).
pub const MEMORY_MB: &str = "machine.openshift.io/memoryMb";
/// Number of whole GPUs.
pub const GPU: &str = "machine.openshift.io/GPU";
/// Comma-separated `k=v` node labels; we own the `kubernetes.io/arch` pair.
pub const LABELS: &str = "capacity.cluster-autoscaler.kubernetes.io/labels";
/// The label key of the CPU architecture.
pub const ARCH_LABEL: &str = "kubernetes.io/arch";
/// Upstream cluster-autoscaler keys (setting `upstreamCapacityAnnotations`).
pub const UPSTREAM_CPU: &str = "capacity.cluster-autoscaler.kubernetes.io/cpu";
pub const UPSTREAM_MEMORY: &str = "capacity.cluster-autoscaler.kubernetes.io/memory";
pub const UPSTREAM_GPU_COUNT: &str = "capacity.cluster-autoscaler.kubernetes.io/gpu-count";
pub const UPSTREAM_GPU_TYPE: &str = "capacity.cluster-autoscaler.kubernetes.io/gpu-type";

/// The keys whose values are capacity figures: an existing value that differs from the table is
/// a *correction* worth telling (`capa-annotator: corrected …`).
pub const CAPACITY_VALUE_KEYS: [&str; 6] = [
    VCPU,
    MEMORY_MB,
    GPU,
    UPSTREAM_CPU,
    UPSTREAM_MEMORY,
    UPSTREAM_GPU_COUNT,
];

/// Which annotations to write besides the OpenShift ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Also write the upstream cluster-autoscaler `capacity.*` keys.
    pub upstream_capacity: bool,
    /// A Cluster API object ([`crate::capi`]): only the keys the autoscaler's clusterapi provider
    /// reads (`capacity.*` and the labels), none of the `machine.openshift.io/*` ones.
    pub cluster_api: bool,
}

/// One change to a MachineSet's `metadata.annotations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Set(&'static str, String),
    Remove(&'static str),
}

impl Edit {
    pub fn key(&self) -> &'static str {
        match self {
            Edit::Set(k, _) | Edit::Remove(k) => k,
        }
    }
}

/// The value every annotation we own should have for `cap` (`None` = should be absent).
fn desired(
    cap: &Capacity,
    existing_labels: Option<&str>,
    opts: Options,
) -> Vec<(&'static str, Option<String>)> {
    let mut out = Vec::new();
    if !opts.cluster_api {
        out.extend([
            (VCPU, Some(cap.vcpu.to_string())),
            (MEMORY_MB, Some(cap.memory_mib.to_string())),
            (GPU, Some(cap.gpu.to_string())),
        ]);
    }
    out.push((LABELS, Some(merge_labels(existing_labels, cap.arch))));
    if opts.upstream_capacity || opts.cluster_api {
        out.push((UPSTREAM_CPU, Some(cap.vcpu.to_string())));
        out.push((UPSTREAM_MEMORY, Some(format!("{}Mi", cap.memory_mib))));
        if cap.gpu > 0 {
            out.push((UPSTREAM_GPU_COUNT, Some(cap.gpu.to_string())));
            // without a known vendor there is no resource name to claim: leave the key alone
            if let Some(vendor) = cap.gpu_vendor {
                out.push((UPSTREAM_GPU_TYPE, Some(vendor.resource_name().to_string())));
            }
        } else {
            // we own these keys when the setting is on: a type without GPUs must not keep them
            out.push((UPSTREAM_GPU_COUNT, None));
            out.push((UPSTREAM_GPU_TYPE, None));
        }
    }
    out
}

fn str_value<'a>(annotations: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    annotations.get(key).and_then(Value::as_str)
}

/// The edits that make `annotations` describe `cap`; empty when they already do (then the policy
/// returns no patch at all).
pub fn edits_for(annotations: &Map<String, Value>, cap: &Capacity, opts: Options) -> Vec<Edit> {
    desired(cap, str_value(annotations, LABELS), opts)
        .into_iter()
        .filter_map(|(key, want)| match (annotations.get(key), want) {
            (Some(Value::String(have)), Some(want)) if *have == want => None,
            (_, Some(want)) => Some(Edit::Set(key, want)),
            (Some(_), None) => Some(Edit::Remove(key)),
            (None, None) => None,
        })
        .collect()
}

/// An existing capacity value that the edits overwrite with a different one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    pub key: &'static str,
    /// The value that was there, as written (a non-string value as its JSON).
    pub old: String,
    pub new: String,
}

/// The capacity values that `edits` change from something that was already there (not the ones
/// added where nothing was, not the labels): hand-written or stale figures the autoscaler had
/// been planning with.
pub fn corrections(annotations: &Map<String, Value>, edits: &[Edit]) -> Vec<Correction> {
    edits
        .iter()
        .filter_map(|edit| {
            let Edit::Set(key, new) = edit else {
                return None;
            };
            if !CAPACITY_VALUE_KEYS.contains(key) {
                return None;
            }
            let old = match annotations.get(*key)? {
                Value::Null => return None,
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (old != *new).then(|| Correction {
                key,
                old,
                new: new.clone(),
            })
        })
        .collect()
}

/// The edits that remove what we wrote for `old` (its values, exactly), after an instance-type
/// change to a type we cannot resolve: capacity describing the old machine would mislead the
/// autoscaler. Values that differ from `old`'s were written by hand and are kept; in the labels
/// only the `kubernetes.io/arch` pair goes.
pub fn stale_edits(annotations: &Map<String, Value>, old: &Capacity, opts: Options) -> Vec<Edit> {
    let mut edits = Vec::new();
    for (key, want) in desired(old, str_value(annotations, LABELS), opts) {
        let Some(want) = want else { continue };
        let Some(have) = str_value(annotations, key) else {
            continue;
        };
        if key == LABELS {
            let pairs = parse_label_pairs(have);
            if pairs
                .iter()
                .any(|(k, v)| *k == ARCH_LABEL && *v == old.arch.as_str())
            {
                let rest: Vec<String> = pairs
                    .iter()
                    .filter(|(k, _)| *k != ARCH_LABEL)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                if rest.is_empty() {
                    edits.push(Edit::Remove(LABELS));
                } else {
                    edits.push(Edit::Set(LABELS, rest.join(",")));
                }
            }
        } else if have == want {
            edits.push(Edit::Remove(key));
        }
    }
    edits
}

/// Applies edits to an annotations map.
pub fn apply(annotations: &mut Map<String, Value>, edits: Vec<Edit>) {
    for edit in edits {
        match edit {
            Edit::Set(k, v) => {
                annotations.insert(k.to_string(), Value::String(v));
            }
            Edit::Remove(k) => {
                annotations.remove(k);
            }
        }
    }
}

/// Merges the architecture into an existing `capacity.cluster-autoscaler.kubernetes.io/labels`
/// value: `kubernetes.io/arch=<arch>` first (the computed value wins), then every other existing
/// pair in its order. Items that are not `k=v` are dropped; a repeated key keeps its first place
/// and its last value. The same input always gives the same string.
pub fn merge_labels(existing: Option<&str>, arch: Arch) -> String {
    let mut out = format!("{ARCH_LABEL}={arch}");
    for (k, v) in existing.map(parse_label_pairs).unwrap_or_default() {
        if k != ARCH_LABEL {
            out.push(',');
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

/// Parses a comma-separated `k=v` list (upstream `MergeCommaSeparatedKeyValuePairs` rules: an item
/// needs exactly one `=`, `bar=` is kept with an empty value). Whitespace around keys and values is
/// trimmed; an empty key is dropped. Linear in the input size, whatever it holds.
pub fn parse_label_pairs(s: &str) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for item in s.split(',') {
        let mut parts = item.splitn(3, '=');
        let (Some(k), Some(v), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            continue;
        }
        match index.get(k) {
            Some(&i) => pairs[i].1 = v,
            None => {
                index.insert(k, pairs.len());
                pairs.push((k, v));
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::GpuVendor;
    use serde_json::json;

    fn cap(vcpu: u32, mib: u64, gpu: u32, arch: Arch) -> Capacity {
        Capacity {
            vcpu,
            memory_mib: mib,
            gpu,
            arch,
            gpu_vendor: None,
        }
    }

    fn annotated(existing: Value, c: &Capacity, opts: Options) -> Value {
        let mut map = existing.as_object().cloned().unwrap_or_default();
        let edits = edits_for(&map, c, opts);
        apply(&mut map, edits);
        Value::Object(map)
    }

    fn sorted(s: &str) -> Vec<&str> {
        let mut v: Vec<&str> = s.split(',').collect();
        v.sort();
        v
    }

    // --- reconcile cases of reference/upstream-fixtures.md (values from the upstream fake EC2 data)

    #[test]
    fn upstream_reconcile_a1_2xlarge() {
        let got = annotated(
            json!({}),
            &cap(8, 16384, 0, Arch::Amd64),
            Options::default(),
        );
        assert_eq!(
            got,
            json!({VCPU: "8", MEMORY_MB: "16384", GPU: "0", LABELS: "kubernetes.io/arch=amd64"})
        );
    }

    #[test]
    fn upstream_reconcile_p2_16xlarge() {
        let got = annotated(
            json!({}),
            &cap(64, 749568, 16, Arch::Amd64),
            Options::default(),
        );
        assert_eq!(
            got,
            json!({VCPU: "64", MEMORY_MB: "749568", GPU: "16", LABELS: "kubernetes.io/arch=amd64"})
        );
    }

    #[test]
    fn upstream_reconcile_existing_annotations_kept() {
        let got = annotated(
            json!({"existing": "annotation", "annother": "existingAnnotation"}),
            &cap(8, 16384, 0, Arch::Amd64),
            Options::default(),
        );
        assert_eq!(
            got,
            json!({"existing": "annotation", "annother": "existingAnnotation",
                   VCPU: "8", MEMORY_MB: "16384", GPU: "0", LABELS: "kubernetes.io/arch=amd64"})
        );
    }

    #[test]
    fn upstream_reconcile_arm64_and_defaulted_arches() {
        let got = annotated(
            json!({}),
            &cap(16, 65536, 0, Arch::Arm64),
            Options::default(),
        );
        assert_eq!(got[LABELS], "kubernetes.io/arch=arm64");
        assert_eq!(got[VCPU], "16");
        assert_eq!(got[MEMORY_MB], "65536");
        // m6i.8xlarge (no ProcessorInfo) and m6h.8xlarge ("wrong-arch") transform to amd64 (ec2.rs)
        let got = annotated(
            json!({}),
            &cap(32, 131072, 0, Arch::Amd64),
            Options::default(),
        );
        assert_eq!(
            got,
            json!({VCPU: "32", MEMORY_MB: "131072", GPU: "0", LABELS: "kubernetes.io/arch=amd64"})
        );
    }

    #[test]
    fn values_always_overwritten() {
        let got = annotated(
            json!({VCPU: "99", MEMORY_MB: "1Gi", GPU: 3}),
            &cap(2, 8192, 0, Arch::Amd64),
            Options::default(),
        );
        assert_eq!(got[VCPU], "2");
        assert_eq!(got[MEMORY_MB], "8192");
        assert_eq!(got[GPU], "0");
    }

    #[test]
    fn already_correct_gives_no_edits() {
        let c = cap(4, 16384, 0, Arch::Arm64);
        let once = annotated(json!({LABELS: "team=ml"}), &c, Options::default());
        assert_eq!(once[LABELS], "kubernetes.io/arch=arm64,team=ml");
        assert!(edits_for(once.as_object().unwrap(), &c, Options::default()).is_empty());
        let opts = Options {
            upstream_capacity: true,
            ..Default::default()
        };
        let twice = annotated(once, &c, opts);
        assert!(edits_for(twice.as_object().unwrap(), &c, opts).is_empty());
    }

    #[test]
    fn cluster_api_objects_get_only_the_keys_the_clusterapi_provider_reads() {
        let opts = Options {
            cluster_api: true,
            ..Default::default()
        };
        let mut gpu = cap(4, 16384, 1, Arch::Amd64);
        gpu.gpu_vendor = Some(crate::GpuVendor::Nvidia);
        let got = annotated(json!({LABELS: "team=ml"}), &gpu, opts);
        assert_eq!(
            got,
            json!({
                UPSTREAM_CPU: "4",
                // a bare number would be bytes to the autoscaler (resource.ParseQuantity)
                UPSTREAM_MEMORY: "16384Mi",
                UPSTREAM_GPU_COUNT: "1",
                UPSTREAM_GPU_TYPE: "nvidia.com/gpu",
                LABELS: "kubernetes.io/arch=amd64,team=ml",
            })
        );
        // a rollout to a type without GPUs removes the GPU keys
        let next = annotated(got, &cap(4, 16384, 0, Arch::Arm64), opts);
        assert_eq!(next.get(UPSTREAM_GPU_COUNT), None);
        assert_eq!(next.get(UPSTREAM_GPU_TYPE), None);
        assert_eq!(next[LABELS], "kubernetes.io/arch=arm64,team=ml");
        assert!(
            next.get(VCPU).is_none() && next.get(MEMORY_MB).is_none() && next.get(GPU).is_none()
        );
    }

    // --- label merge: upstream cases (compared sorted, as upstream did) and our ordering rules

    #[test]
    fn upstream_label_merge_case_1() {
        // upstream merged three lists; the later lists' values win
        let merged = merge_labels(
            Some(
                "foo=bar,bar=baz,io.k8s.something=else-value_1,kubernetes.io/arch=arm64,bar=overwritten,io.k8s.something=else-value_2",
            ),
            Arch::Arm64,
        );
        assert_eq!(
            sorted(&merged),
            [
                "bar=overwritten",
                "foo=bar",
                "io.k8s.something=else-value_2",
                "kubernetes.io/arch=arm64"
            ]
        );
    }

    #[test]
    fn upstream_label_merge_case_2_and_3() {
        let merged = merge_labels(Some("foo=bar,wrong-key-value-pair,bar="), Arch::Amd64);
        assert_eq!(merged, "kubernetes.io/arch=amd64,foo=bar,bar=");
    }

    #[test]
    fn arch_first_and_computed_value_wins() {
        assert_eq!(
            merge_labels(Some("team=ml,kubernetes.io/arch=amd64,zone=a"), Arch::Arm64),
            "kubernetes.io/arch=arm64,team=ml,zone=a"
        );
        assert_eq!(merge_labels(None, Arch::Amd64), "kubernetes.io/arch=amd64");
        assert_eq!(
            merge_labels(Some(""), Arch::Amd64),
            "kubernetes.io/arch=amd64"
        );
        assert_eq!(
            merge_labels(Some(" a = 1 ,, =x, b=2=3 ,c=3,a=4"), Arch::Amd64),
            "kubernetes.io/arch=amd64,a=4,c=3"
        );
    }

    #[test]
    fn label_merge_is_deterministic_and_idempotent() {
        let input = Some("z=1,a=2,m=3,kubernetes.io/arch=amd64");
        let once = merge_labels(input, Arch::Arm64);
        assert_eq!(once, merge_labels(input, Arch::Arm64));
        assert_eq!(merge_labels(Some(&once), Arch::Arm64), once);
    }

    #[test]
    fn huge_label_lists_are_linear() {
        let big: String = (0..200_000).map(|i| format!("k{i}=v,")).collect();
        let merged = merge_labels(Some(&big), Arch::Amd64);
        assert_eq!(merged.matches(',').count(), 200_000);
    }

    #[test]
    fn upstream_capacity_keys() {
        let opts = Options {
            upstream_capacity: true,
            ..Default::default()
        };
        let gpu = Capacity {
            gpu_vendor: Some(GpuVendor::Nvidia),
            ..cap(8, 62464, 1, Arch::Amd64)
        };
        let got = annotated(json!({}), &gpu, opts);
        assert_eq!(got[UPSTREAM_CPU], "8");
        assert_eq!(got[UPSTREAM_MEMORY], "62464Mi");
        assert_eq!(got[UPSTREAM_GPU_COUNT], "1");
        assert_eq!(got[UPSTREAM_GPU_TYPE], "nvidia.com/gpu");
        let amd = Capacity {
            gpu_vendor: Some(GpuVendor::Amd),
            ..cap(4, 16384, 1, Arch::Amd64)
        };
        assert_eq!(
            annotated(json!({}), &amd, opts)[UPSTREAM_GPU_TYPE],
            "amd.com/gpu"
        );
        // changing to a type without GPUs removes the GPU keys
        let plain = annotated(got, &cap(2, 8192, 0, Arch::Amd64), opts);
        assert!(plain.get(UPSTREAM_GPU_COUNT).is_none());
        assert!(plain.get(UPSTREAM_GPU_TYPE).is_none());
        assert_eq!(plain[UPSTREAM_MEMORY], "8192Mi");
        // off by default
        let off = annotated(json!({}), &gpu, Options::default());
        assert!(off.get(UPSTREAM_CPU).is_none());
    }

    #[test]
    fn corrections_are_changed_existing_capacity_values_only() {
        let c = cap(16, 65536, 0, Arch::Arm64);
        // m6g.4xlarge with a hand-written 32768 (a real case: half the memory)
        let have = json!({VCPU: "16", MEMORY_MB: "32768", LABELS: "team=a"});
        let map = have.as_object().unwrap();
        let edits = edits_for(map, &c, Options::default());
        assert_eq!(
            corrections(map, &edits),
            vec![Correction {
                key: MEMORY_MB,
                old: "32768".into(),
                new: "65536".into()
            }]
        );
        // nothing there before, or already right: no correction
        let empty = Map::new();
        assert!(corrections(&empty, &edits_for(&empty, &c, Options::default())).is_empty());
        let right = annotated(json!({}), &c, Options::default());
        let right = right.as_object().unwrap();
        assert!(corrections(right, &edits_for(right, &c, Options::default())).is_empty());
        // a non-string value is shown as its JSON; null counts as absent
        let odd = json!({GPU: 3, VCPU: null});
        let odd = odd.as_object().unwrap();
        let got = corrections(odd, &edits_for(odd, &c, Options::default()));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].key, got[0].old.as_str()), (GPU, "3"));
        // upstream keys count when the setting writes them
        let opts = Options {
            upstream_capacity: true,
            ..Default::default()
        };
        let up = json!({UPSTREAM_MEMORY: "64Gi"});
        let up = up.as_object().unwrap();
        let got = corrections(up, &edits_for(up, &c, opts));
        assert_eq!(got[0].key, UPSTREAM_MEMORY);
        assert_eq!(got[0].new, "65536Mi");
    }

    #[test]
    fn stale_values_of_the_old_type_are_removed_hand_written_kept() {
        let old = cap(4, 16384, 0, Arch::Amd64);
        let ours = annotated(
            json!({LABELS: "team=ml", "other": "x"}),
            &old,
            Options::default(),
        );
        let mut map = ours.as_object().cloned().unwrap();
        let edits = stale_edits(&map, &old, Options::default());
        apply(&mut map, edits);
        assert_eq!(Value::Object(map), json!({LABELS: "team=ml", "other": "x"}));

        let mut hand = json!({VCPU: "6", MEMORY_MB: "16384", LABELS: "kubernetes.io/arch=arm64"})
            .as_object()
            .cloned()
            .unwrap();
        let edits = stale_edits(&hand, &old, Options::default());
        assert_eq!(edits, vec![Edit::Remove(MEMORY_MB)]);
        apply(&mut hand, edits);
        assert_eq!(
            Value::Object(hand),
            json!({VCPU: "6", LABELS: "kubernetes.io/arch=arm64"})
        );

        let only_arch = json!({LABELS: "kubernetes.io/arch=amd64"});
        assert_eq!(
            stale_edits(only_arch.as_object().unwrap(), &old, Options::default()),
            vec![Edit::Remove(LABELS)]
        );
    }
}
