//! Reads the AWS provider spec of a MachineSet
//! (`spec.template.spec.providerSpec.value`, kind `AWSMachineProviderConfig`) from its JSON.

use serde_json::Value;

/// The provider-spec kind handled by capa-annotator.
pub const AWS_PROVIDER_KIND: &str = "AWSMachineProviderConfig";

/// The fields of an `AWSMachineProviderConfig` capa-annotator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsProviderSpec<'a> {
    /// `instanceType` (`""` when absent).
    pub instance_type: &'a str,
    /// `placement.region`.
    pub region: Option<&'a str>,
    /// `credentialsSecret.name` (a Secret in the MachineSet's namespace).
    pub credentials_secret: Option<&'a str>,
}

/// What the provider spec turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderSpec<'a> {
    Aws(AwsProviderSpec<'a>),
    /// Another provider's spec: not ours, nothing to do.
    Other {
        kind: &'a str,
    },
}

/// Why a provider spec could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderSpecError {
    #[error("spec.template.spec.providerSpec.value is missing")]
    Missing,
    #[error("spec.template.spec.providerSpec.value is not an object")]
    NotAnObject,
    #[error("providerSpec.value.{field} must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
}

fn opt_str<'a>(
    v: Option<&'a Value>,
    field: &'static str,
) -> Result<Option<&'a str>, ProviderSpecError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ProviderSpecError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn opt_object<'a>(
    v: Option<&'a Value>,
    field: &'static str,
) -> Result<Option<&'a serde_json::Map<String, Value>>, ProviderSpecError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(ProviderSpecError::WrongType {
            field,
            expected: "an object",
        }),
    }
}

/// Reads the provider spec of a MachineSet. A spec without `kind` is read as an AWS one (upstream
/// decoded any raw extension as `AWSMachineProviderConfig`).
pub fn read(machineset: &Value) -> Result<ProviderSpec<'_>, ProviderSpecError> {
    let value = machineset
        .pointer("/spec/template/spec/providerSpec/value")
        .filter(|v| !v.is_null())
        .ok_or(ProviderSpecError::Missing)?;
    let spec = value.as_object().ok_or(ProviderSpecError::NotAnObject)?;
    if let Some(kind) = opt_str(spec.get("kind"), "kind")?
        && kind != AWS_PROVIDER_KIND
    {
        return Ok(ProviderSpec::Other { kind });
    }
    let instance_type = opt_str(spec.get("instanceType"), "instanceType")?.unwrap_or("");
    let region = match opt_object(spec.get("placement"), "placement")? {
        Some(p) => opt_str(p.get("region"), "placement.region")?,
        None => None,
    };
    let credentials_secret = match opt_object(spec.get("credentialsSecret"), "credentialsSecret")? {
        Some(c) => opt_str(c.get("name"), "credentialsSecret.name")?,
        None => None,
    };
    Ok(ProviderSpec::Aws(AwsProviderSpec {
        instance_type,
        region,
        credentials_secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ms(value: Value) -> Value {
        json!({"spec": {"template": {"spec": {"providerSpec": {"value": value}}}}})
    }

    #[test]
    fn reads_aws_spec() {
        let m = ms(json!({
            "kind": "AWSMachineProviderConfig", "instanceType": "m6g.xlarge",
            "placement": {"region": "eu-west-3", "availabilityZone": "eu-west-3a"},
            "credentialsSecret": {"name": "aws-cloud-credentials"}
        }));
        assert_eq!(
            read(&m).unwrap(),
            ProviderSpec::Aws(AwsProviderSpec {
                instance_type: "m6g.xlarge",
                region: Some("eu-west-3"),
                credentials_secret: Some("aws-cloud-credentials"),
            })
        );
    }

    #[test]
    fn upstream_shape_without_kind_or_region() {
        let m = ms(
            json!({"instanceType": "a1.2xlarge", "credentialsSecret": {"name": "test-credentials"}}),
        );
        let ProviderSpec::Aws(spec) = read(&m).unwrap() else {
            panic!("not aws")
        };
        assert_eq!(spec.instance_type, "a1.2xlarge");
        assert_eq!(spec.region, None);
        let empty = ms(json!({}));
        let ProviderSpec::Aws(spec) = read(&empty).unwrap() else {
            panic!("not aws")
        };
        assert_eq!(spec.instance_type, "");
    }

    #[test]
    fn other_providers() {
        let m = ms(json!({"kind": "GCPMachineProviderSpec", "machineType": "n1"}));
        assert_eq!(
            read(&m).unwrap(),
            ProviderSpec::Other {
                kind: "GCPMachineProviderSpec"
            }
        );
    }

    #[test]
    fn unreadable() {
        assert_eq!(read(&json!({})), Err(ProviderSpecError::Missing));
        assert_eq!(read(&ms(Value::Null)), Err(ProviderSpecError::Missing));
        assert_eq!(read(&ms(json!("x"))), Err(ProviderSpecError::NotAnObject));
        assert!(matches!(
            read(&ms(json!({"instanceType": 5}))),
            Err(ProviderSpecError::WrongType {
                field: "instanceType",
                ..
            })
        ));
        assert!(matches!(
            read(&ms(json!({"kind": []}))),
            Err(ProviderSpecError::WrongType { field: "kind", .. })
        ));
        assert!(matches!(
            read(&ms(json!({"placement": "eu"}))),
            Err(ProviderSpecError::WrongType {
                field: "placement",
                ..
            })
        ));
        assert!(matches!(
            read(&ms(json!({"credentialsSecret": {"name": 1}}))),
            Err(ProviderSpecError::WrongType {
                field: "credentialsSecret.name",
                ..
            })
        ));
        assert_eq!(
            ProviderSpecError::WrongType {
                field: "instanceType",
                expected: "a string"
            }
            .to_string(),
            "providerSpec.value.instanceType must be a string"
        );
    }
}
