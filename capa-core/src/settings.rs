//! The policy's settings (`spec.settings` of its ClusterAdmissionPolicy), validated field by field
//! so every message names the field to fix. The policy rejects bad settings in
//! `validate_settings` (when it is loaded), never at admission; the refresher reads the same
//! settings from the ClusterAdmissionPolicy, so both judge objects with the same options.

use crate::table::{
    DEFAULT_CONFIGMAP_NAME, DEFAULT_CONFIGMAP_NAMESPACE, TypeName, truncate_for_message,
};
use crate::{Arch, Capacity, GpuVendor};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What answers when the ConfigMap is missing or lacks a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// The built-in table compiled into the policy.
    #[default]
    Embedded,
    /// Nothing: unknown means unknown.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub config_map_name: String,
    pub config_map_namespace: String,
    pub fallback: Fallback,
    pub respect_authoritative_api: bool,
    pub upstream_capacity_annotations: bool,
    /// Instance type → capacity; wins over the ConfigMap and the built-in table.
    pub overrides: BTreeMap<String, Capacity>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            config_map_name: DEFAULT_CONFIGMAP_NAME.to_string(),
            config_map_namespace: DEFAULT_CONFIGMAP_NAMESPACE.to_string(),
            fallback: Fallback::Embedded,
            respect_authoritative_api: false,
            upstream_capacity_annotations: false,
            overrides: BTreeMap::new(),
        }
    }
}

const KEYS: &str = "configMapName, configMapNamespace, fallback, respectAuthoritativeAPI, upstreamCapacityAnnotations, overrides";
const OVERRIDE_KEYS: &str = "vcpu, memoryMiB, gpu, arch, gpuVendor";

impl Settings {
    /// Parses and validates settings JSON. `null` or `{}` gives the defaults.
    pub fn from_json(payload: &[u8]) -> Result<Settings, String> {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| format!("settings are not valid JSON: {e}"))?;
        Settings::from_value(&value)
    }

    /// Validates settings already parsed as JSON.
    pub fn from_value(value: &Value) -> Result<Settings, String> {
        let map = match value {
            Value::Null => return Ok(Settings::default()),
            Value::Object(m) => m,
            _ => return Err("settings must be an object".to_string()),
        };
        let mut s = Settings::default();
        for (key, v) in map {
            match key.as_str() {
                "configMapName" => {
                    s.config_map_name = string(v, key)?;
                    check_dns_subdomain(&s.config_map_name, key)?;
                }
                "configMapNamespace" => {
                    s.config_map_namespace = string(v, key)?;
                    check_dns_label(&s.config_map_namespace, key)?;
                }
                "fallback" => {
                    s.fallback = match string(v, key)?.as_str() {
                        "embedded" => Fallback::Embedded,
                        "none" => Fallback::None,
                        other => {
                            return Err(format!(
                                "fallback must be \"embedded\" or \"none\", got {:?}",
                                truncate_for_message(other)
                            ));
                        }
                    }
                }
                "respectAuthoritativeAPI" => s.respect_authoritative_api = boolean(v, key)?,
                "upstreamCapacityAnnotations" => s.upstream_capacity_annotations = boolean(v, key)?,
                "overrides" => s.overrides = overrides(v)?,
                other => {
                    return Err(format!(
                        "unknown setting {:?}; known settings: {KEYS}",
                        truncate_for_message(other)
                    ));
                }
            }
        }
        Ok(s)
    }
}

fn string(v: &Value, field: &str) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{field} must be a string"))
}

fn boolean(v: &Value, field: &str) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("{field} must be true or false"))
}

/// RFC 1123 subdomain (ConfigMap names): lowercase alphanumerics, '-' and '.', at most 253.
fn check_dns_subdomain(name: &str, field: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| is_dns_label(label, 253));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} {:?} is not a valid ConfigMap name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters)",
            truncate_for_message(name)
        ))
    }
}

/// RFC 1123 label (namespaces): lowercase alphanumerics and '-', at most 63.
fn check_dns_label(name: &str, field: &str) -> Result<(), String> {
    if is_dns_label(name, 63) {
        Ok(())
    } else {
        Err(format!(
            "{field} {:?} is not a valid namespace name (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)",
            truncate_for_message(name)
        ))
    }
}

fn is_dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn overrides(v: &Value) -> Result<BTreeMap<String, Capacity>, String> {
    let map =
        match v {
            Value::Null => return Ok(BTreeMap::new()),
            Value::Object(m) => m,
            _ => return Err(
                "overrides must be an object from instance type to {vcpu, memoryMiB, gpu, arch}"
                    .to_string(),
            ),
        };
    let mut out = BTreeMap::new();
    for (name, entry) in map {
        let shown = truncate_for_message(name);
        TypeName::parse(name).map_err(|e| format!("overrides: {e}"))?;
        let entry = entry.as_object().ok_or_else(|| {
            format!("overrides[{shown:?}] must be an object {{vcpu, memoryMiB, gpu, arch}}")
        })?;
        out.insert(name.clone(), override_entry(entry, &shown)?);
    }
    Ok(out)
}

fn override_entry(entry: &Map<String, Value>, shown: &str) -> Result<Capacity, String> {
    if let Some(unknown) = entry
        .keys()
        .find(|k| !OVERRIDE_KEYS.split(", ").any(|known| known == k.as_str()))
    {
        return Err(format!(
            "overrides[{shown:?}]: unknown field {:?}; known fields: {OVERRIDE_KEYS}",
            truncate_for_message(unknown)
        ));
    }
    let int = |field: &str, min: u64, required: bool| -> Result<u64, String> {
        match entry.get(field) {
            None if !required => Ok(0),
            None => Err(format!("overrides[{shown:?}].{field} is required")),
            Some(v) => v.as_u64().filter(|n| *n >= min).ok_or_else(|| {
                format!("overrides[{shown:?}].{field} must be an integer >= {min}, got {v}")
            }),
        }
    };
    let too_large = |field: &str| format!("overrides[{shown:?}].{field} is too large");
    let vcpu = u32::try_from(int("vcpu", 1, true)?).map_err(|_| too_large("vcpu"))?;
    let memory_mib = int("memoryMiB", 1, true)?;
    let gpu = u32::try_from(int("gpu", 0, false)?).map_err(|_| too_large("gpu"))?;
    let arch = match entry.get("arch") {
        None => {
            return Err(format!(
                "overrides[{shown:?}].arch is required (amd64 or arm64)"
            ));
        }
        Some(v) => v.as_str().and_then(Arch::parse).ok_or_else(|| {
            format!("overrides[{shown:?}].arch must be \"amd64\" or \"arm64\", got {v}")
        })?,
    };
    let gpu_vendor = match entry.get("gpuVendor") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_str().and_then(GpuVendor::from_ec2).ok_or_else(|| {
            format!("overrides[{shown:?}].gpuVendor must be one of NVIDIA, AMD, Habana, got {v}")
        })?),
    };
    Ok(Capacity {
        vcpu,
        memory_mib,
        gpu,
        arch,
        gpu_vendor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Settings, String> {
        Settings::from_json(s.as_bytes())
    }

    #[test]
    fn defaults() {
        assert_eq!(parse("{}").unwrap(), Settings::default());
        assert_eq!(parse("null").unwrap(), Settings::default());
        let d = Settings::default();
        assert_eq!(d.config_map_name, "machineset-instance-types");
        assert_eq!(d.config_map_namespace, "openshift-machine-api");
        assert_eq!(d.fallback, Fallback::Embedded);
        assert!(!d.respect_authoritative_api && !d.upstream_capacity_annotations);
    }

    #[test]
    fn full_settings() {
        let s = parse(
            r#"{"configMapName":"my-types","configMapNamespace":"capa","fallback":"none",
                "respectAuthoritativeAPI":true,"upstreamCapacityAnnotations":true,
                "overrides":{"x9.huge":{"vcpu":8,"memoryMiB":32768,"gpu":2,"arch":"arm64","gpuVendor":"NVIDIA"}}}"#,
        )
        .unwrap();
        assert_eq!(s.config_map_name, "my-types");
        assert_eq!(s.fallback, Fallback::None);
        assert!(s.respect_authoritative_api && s.upstream_capacity_annotations);
        let c = s.overrides["x9.huge"];
        assert_eq!(
            (c.vcpu, c.memory_mib, c.gpu, c.arch),
            (8, 32768, 2, Arch::Arm64)
        );
        assert_eq!(c.gpu_vendor, Some(GpuVendor::Nvidia));
    }

    #[test]
    fn errors_name_the_field() {
        for (json, needle) in [
            (
                r#"{"configMapNme":"x"}"#,
                "unknown setting \"configMapNme\"",
            ),
            (
                r#"{"configMapName":"Bad_Name"}"#,
                "configMapName \"Bad_Name\" is not a valid ConfigMap name",
            ),
            (r#"{"configMapName":""}"#, "configMapName"),
            (r#"{"configMapName":7}"#, "configMapName must be a string"),
            (
                r#"{"configMapNamespace":"a.b"}"#,
                "configMapNamespace \"a.b\" is not a valid namespace",
            ),
            (r#"{"configMapNamespace":"-a"}"#, "configMapNamespace"),
            (
                r#"{"fallback":"builtin"}"#,
                "fallback must be \"embedded\" or \"none\"",
            ),
            (
                r#"{"respectAuthoritativeAPI":"yes"}"#,
                "respectAuthoritativeAPI must be true or false",
            ),
            (
                r#"{"upstreamCapacityAnnotations":1}"#,
                "upstreamCapacityAnnotations must be true or false",
            ),
            (r#"{"overrides":[]}"#, "overrides must be an object"),
            (
                r#"{"overrides":{"m5":{"vcpu":1,"memoryMiB":1,"arch":"amd64"}}}"#,
                "not of the form",
            ),
            (
                r#"{"overrides":{"m5.large":3}}"#,
                "overrides[\"m5.large\"] must be an object",
            ),
            (
                r#"{"overrides":{"m5.large":{"vcpu":-2,"memoryMiB":8192,"arch":"amd64"}}}"#,
                "overrides[\"m5.large\"].vcpu must be an integer >= 1, got -2",
            ),
            (
                r#"{"overrides":{"m5.large":{"vcpu":2,"memoryMiB":0,"arch":"amd64"}}}"#,
                ".memoryMiB must be an integer >= 1",
            ),
            (
                r#"{"overrides":{"m5.large":{"vcpu":2,"memoryMiB":8192,"gpu":-1,"arch":"amd64"}}}"#,
                ".gpu must be an integer >= 0",
            ),
            (
                r#"{"overrides":{"m5.large":{"vcpu":2.5,"memoryMiB":8192,"arch":"amd64"}}}"#,
                ".vcpu must be an integer",
            ),
            (
                r#"{"overrides":{"m5.large":{"vcpu":2,"memoryMiB":8192,"arch":"x86_64"}}}"#,
                ".arch must be \"amd64\" or \"arm64\", got \"x86_64\"",
            ),
            (
                r#"{"overrides":{"m5.large":{"vcpu":2,"memoryMiB":8192}}}"#,
                ".arch is required",
            ),
            (
                r#"{"overrides":{"m5.large":{"memoryMiB":8192,"arch":"amd64"}}}"#,
                ".vcpu is required",
            ),
            (
                r#"{"overrides":{"m5.large":{"vcpu":2,"memoryMiB":8192,"arch":"amd64","cpu":2}}}"#,
                "unknown field \"cpu\"",
            ),
            (
                r#"{"overrides":{"m5.large":{"vcpu":99999999999,"memoryMiB":8192,"arch":"amd64"}}}"#,
                ".vcpu is too large",
            ),
            (
                r#"{"overrides":{"m5.large":{"vcpu":2,"memoryMiB":8192,"arch":"amd64","gpuVendor":"Acme"}}}"#,
                ".gpuVendor must be one of",
            ),
            ("[1]", "settings must be an object"),
            ("{", "not valid JSON"),
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.contains(needle), "{json}: got {e:?}, want {needle:?}");
        }
    }
}
