//! The cluster-autoscaler's clusterapi provider, as far as it reads our annotations: a port of
//! `InstanceCapacity` and the label parsing (`cloudprovider/clusterapi/clusterapi_unstructured.go`
//! and `clusterapi_utils.go` at kubernetes/autoscaler@55c37cd5, quoted in
//! `fixtures/capi-sources/autoscaler-clusterapi-rules.md`), with Kubernetes' `resource.ParseQuantity`
//! for the values. Tests check what the policy writes by what the autoscaler would make of it.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

// The autoscaler's keys as its source spells them (clusterapi_utils.go lines 34-46), not
// capa-core's constants: a wrong key in capa-core must fail the tests that use this oracle.
pub const CPU: &str = "capacity.cluster-autoscaler.kubernetes.io/cpu";
pub const MEMORY: &str = "capacity.cluster-autoscaler.kubernetes.io/memory";
pub const GPU_COUNT: &str = "capacity.cluster-autoscaler.kubernetes.io/gpu-count";
pub const GPU_TYPE: &str = "capacity.cluster-autoscaler.kubernetes.io/gpu-type";
pub const MAX_PODS: &str = "capacity.cluster-autoscaler.kubernetes.io/maxPods";
pub const LABELS: &str = "capacity.cluster-autoscaler.kubernetes.io/labels";
const DEFAULT_MAX_PODS: i128 = 110;

/// A quantity in thousandths of its unit (`"500m"` = 500, `"4"` = 4000, `"1Ki"` = 1,024,000), as
/// exact as the fixtures need (values with finer precision than milli are an error here).
pub type Milli = i128;

/// Kubernetes' `resource.ParseQuantity`: a signed decimal number, then a binary-SI suffix
/// (`Ki`…`Ei`), a decimal-SI suffix (`n u m "" k M G T P E`) or a decimal exponent (`e3`).
pub fn parse_quantity(s: &str) -> Result<Milli, String> {
    let err = || {
        format!(
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' ({s:?})"
        )
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (negative, digits) = match number.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(err());
    }
    // the number as an integer scaled by 10^-scale
    let mantissa: i128 = format!("{whole}{fraction}").parse().map_err(|_| err())?;
    let scale = fraction.len() as u32;
    let (mul, decimal_exp): (i128, i32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        e if e.starts_with(['e', 'E']) => (1, e[1..].parse().map_err(|_| err())?),
        _ => return Err(err()),
    };
    // value * 1000 = mantissa * mul * 10^(decimal_exp + 3 - scale)
    let exp = decimal_exp + 3 - scale as i32;
    let value = if exp >= 0 {
        mantissa * mul * 10i128.pow(exp as u32)
    } else {
        let div = 10i128.pow((-exp) as u32);
        let scaled = mantissa * mul;
        if scaled % div != 0 {
            return Err(format!(
                "{s:?} is finer than milli (not needed by these tests)"
            ));
        }
        scaled / div
    };
    Ok(if negative { -value } else { value })
}

fn annotation<'a>(annotations: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    annotations
        .get(key)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
}

/// `parseKey`: empty or absent is zero.
fn parse_key(annotations: &Map<String, Value>, key: &str) -> Result<Milli, String> {
    annotation(annotations, key).map_or(Ok(0), parse_quantity)
}

/// `parseIntKey`: `strconv.ParseInt(val, 10, 0)`, as a quantity.
fn parse_int_key(annotations: &Map<String, Value>, key: &str) -> Result<Milli, String> {
    match annotation(annotations, key) {
        None => Ok(0),
        Some(v) => v.parse::<i64>().map(|n| i128::from(n) * 1000).map_err(|e| {
            format!("value {v:?} from annotation {key:?} expected to be an integer: {e}")
        }),
    }
}

/// `InstanceCapacity()` from the annotations alone (no infrastructure template found, or before
/// its `status.capacity` is merged under them): resource name → quantity in milli.
pub fn instance_capacity(
    annotations: &Map<String, Value>,
) -> Result<BTreeMap<String, Milli>, String> {
    let mut out = BTreeMap::new();
    let cpu = parse_key(annotations, CPU)?;
    if cpu != 0 {
        out.insert("cpu".to_string(), cpu);
    }
    let memory = parse_key(annotations, MEMORY)?;
    if memory != 0 {
        out.insert("memory".to_string(), memory);
    }
    let gpu_count = parse_int_key(annotations, GPU_COUNT)?;
    // the GPU type is read raw: present-but-empty is "" too
    let gpu_type = annotations
        .get(GPU_TYPE)
        .and_then(Value::as_str)
        .unwrap_or("");
    if gpu_count != 0 && !gpu_type.is_empty() {
        out.insert(gpu_type.to_string(), gpu_count);
    }
    let mut max_pods = parse_int_key(annotations, MAX_PODS)?;
    if max_pods == 0 {
        max_pods = DEFAULT_MAX_PODS * 1000;
    }
    out.insert("pods".to_string(), max_pods);
    Ok(out)
}

/// `CanScaleFromZero()`: capacity parses and has both cpu and memory.
pub fn can_scale_from_zero(annotations: &Map<String, Value>) -> bool {
    instance_capacity(annotations).is_ok_and(|c| c.contains_key("cpu") && c.contains_key("memory"))
}

/// The labels annotation: split on `,`, then `SplitN(label, "=", 2)`; entries without `=` dropped.
pub fn labels(annotations: &Map<String, Value>) -> BTreeMap<String, String> {
    annotations
        .get(LABELS)
        .and_then(Value::as_str)
        .unwrap_or("")
        .split(',')
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn a(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// The autoscaler's own test cases (clusterapi_utils_test.go, quoted in the rules file).
    #[test]
    fn the_autoscalers_own_cases() {
        let mem =
            |v: &str| instance_capacity(&a(json!({MEMORY: v}))).map(|c| c.get("memory").copied());
        assert_eq!(mem("1024"), Ok(Some(1024 * 1000)), "a bare number is bytes");
        assert_eq!(mem("456Mi"), Ok(Some(456 * (1 << 20) * 1000)));
        assert_eq!(mem("8Gi"), Ok(Some(8 * (1 << 30) * 1000)));
        let gpu = |v: &str| parse_int_key(&a(json!({GPU_COUNT: v})), GPU_COUNT);
        assert_eq!(gpu("13"), Ok(13_000));
        assert!(gpu("13Mi").is_err());
        assert!(gpu("2.5").is_err());
        assert!(instance_capacity(&a(json!({CPU: "not-a-quantity"}))).is_err());
        assert_eq!(parse_quantity("500m"), Ok(500));
        assert_eq!(parse_quantity("128G"), Ok(128_000_000_000_000));
        assert_eq!(parse_quantity("0.5"), Ok(500));
        assert_eq!(parse_quantity("1e3"), Ok(1_000_000));
        // GPU only with a count and a type; maxPods defaults to 110
        let c = instance_capacity(&a(json!({GPU_COUNT: "2"}))).unwrap();
        assert_eq!(c, BTreeMap::from([("pods".to_string(), 110_000)]));
        let c = instance_capacity(&a(json!({GPU_COUNT: "2", GPU_TYPE: "nvidia.com/gpu"}))).unwrap();
        assert_eq!(c["nvidia.com/gpu"], 2000);
        assert!(!can_scale_from_zero(&a(json!({CPU: "4"}))));
        assert!(can_scale_from_zero(&a(json!({CPU: "4", MEMORY: "16Gi"}))));
        assert_eq!(
            labels(&a(json!({LABELS: "kubernetes.io/arch=arm64,bad,a=b=c"}))),
            BTreeMap::from([
                ("a".to_string(), "b=c".to_string()),
                ("kubernetes.io/arch".to_string(), "arm64".to_string())
            ])
        );
    }
}
