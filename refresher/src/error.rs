//! Every failure the refresher reports: a refresh that fails as a whole, and what goes wrong for
//! one object (a Warning Event on it). Each kind names its metric label (`capa_refresher_errors`)
//! and its Event reason here, once.

use crate::ec2::Ec2Error;
use crate::plan::CredentialsRef;
use crate::policy_settings::SettingsError;
use crate::region_cache::RegionError;

/// What went wrong. The `Display` text is what logs and Events say: it names the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call without which the refresh cannot go on.
    #[error("cannot {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// The cluster's CA bundle for EC2 cannot be used.
    #[error("{0}")]
    CaBundle(String),
    /// The ConfigMap `--dry-run` shows cannot be encoded.
    #[error("cannot encode the ConfigMap: {0}")]
    Encode(#[from] serde_json::Error),
    /// No EC2 client can be built for a region (its TLS settings).
    #[error("no EC2 client: {0}")]
    Ec2Client(String),
    /// The table ConfigMap kept changing under every write.
    #[error(
        "ConfigMap {configmap}: still conflicting after {attempts} attempts; another writer keeps changing it"
    )]
    TableConflict { configmap: String, attempts: usize },
    /// A credentials Secret (or the default chain) cannot be used: missing, without keys, or
    /// rejected by AWS.
    #[error("credentials {credentials} {why}; {}", credentials.fix())]
    Credentials {
        credentials: CredentialsRef,
        why: String,
    },
    /// An EC2 call failed for another reason than the credentials (after the SDK's retries).
    #[error("EC2 {} in {} failed: {}", .0.operation, .0.region, .0.message)]
    Ec2(Ec2Error),
    /// The region an object names is not one the account may scan.
    #[error("{error}; fix {field}")]
    Region {
        error: RegionError,
        /// Where the object names its region.
        field: &'static str,
    },
    /// With leader election, a scan is recorded in the Lease before it is made; this one could
    /// not be.
    #[error("not scanned: the scan could not be recorded in the Lease ({0})")]
    ScanNotRecorded(String),
    /// Neither the overrides, the table nor the built-in fallback know the type.
    #[error(
        "unknown instance type {instance_type}: EC2 does not list it; fix {field} or add it to the policy's overrides setting"
    )]
    UnknownInstanceType {
        instance_type: String,
        /// Where the object names its type.
        field: &'static str,
    },
    /// A Cluster API object's AWSMachineTemplate cannot be read.
    #[error("{0}; it is re-admitted at the first refresh after the template can be read")]
    TemplateUnreadable(String),
    /// A Cluster API object's region or credentials cannot be found.
    #[error("{0}")]
    ScanTarget(String),
    /// Re-submitted to the policy, and still not right (the healer's backoff warning).
    #[error("{0}")]
    NotHealed(String),
    /// The policy's ClusterAdmissionPolicy cannot be read or holds invalid settings: objects are
    /// judged with the settings judged with so far (the defaults at start).
    #[error(transparent)]
    PolicySettings(#[from] SettingsError),
}

/// Every object-level Event says `FailedUpdate`, the one reason the Machine API MachineSet
/// controller uses, so existing alerts and `kubectl get events --field-selector` keep working.
pub const EVENT_REASON: &str = "FailedUpdate";

impl Error {
    /// The `error` label of `capa_refresher_errors`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube_api",
            Error::CaBundle(_) => "ca_bundle",
            Error::Encode(_) => "encode",
            Error::Ec2Client(_) => "ec2_client",
            Error::TableConflict { .. } => "table_conflict",
            Error::Credentials { .. } => "credentials",
            Error::Ec2(_) => "ec2",
            Error::Region { .. } => "region",
            Error::ScanNotRecorded(_) => "lease",
            Error::UnknownInstanceType { .. } => "unknown_instance_type",
            Error::TemplateUnreadable(_) => "template_unreadable",
            Error::ScanTarget(_) => "scan_target",
            Error::NotHealed(_) => "not_healed",
            Error::PolicySettings(_) => "policy_settings",
        }
    }

    /// The reason of the Warning Event this error puts on an object.
    pub fn event_reason(&self) -> &'static str {
        EVENT_REASON
    }

    /// The Event message: the error, said by the refresher.
    pub fn event_message(&self) -> String {
        format!("capa-refresher: {self}")
    }

    /// A Kubernetes API failure while doing `what` ("list MachineSets").
    pub fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let what = what.into();
        move |source| Error::Kube { what, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ec2::FailureKind;
    use crate::plan::SecretRef;

    /// The Event texts users already see (and tests of the whole service look for).
    #[test]
    fn event_messages_name_the_fix() {
        let secret = CredentialsRef::Secret(SecretRef {
            namespace: "openshift-machine-api".into(),
            name: "aws-cloud-credentials".into(),
        });
        let e = Error::Credentials {
            credentials: secret,
            why: "not found".into(),
        };
        assert_eq!(
            e.event_message(),
            "capa-refresher: credentials Secret openshift-machine-api/aws-cloud-credentials not found; fix the Secret referenced by providerSpec.value.credentialsSecret"
        );
        assert_eq!(e.metric_label(), "credentials");
        let e = Error::Ec2(Ec2Error {
            operation: "DescribeInstanceTypes",
            region: "us-east-1".into(),
            kind: FailureKind::Transient,
            message: "503 RequestLimitExceeded".into(),
        });
        assert_eq!(
            e.event_message(),
            "capa-refresher: EC2 DescribeInstanceTypes in us-east-1 failed: 503 RequestLimitExceeded"
        );
        let e = Error::Region {
            error: RegionError::Unknown("mars-1".into()),
            field: "providerSpec.value.placement.region",
        };
        assert_eq!(
            e.to_string(),
            "region mars-1 is not a valid region; fix providerSpec.value.placement.region"
        );
        assert_eq!(e.event_reason(), "FailedUpdate");
    }

    #[test]
    fn each_kind_has_its_own_label() {
        let kube_error = kube::Error::Api(
            kube::core::Status::failure("gone", "NotFound")
                .with_code(404)
                .boxed(),
        );
        let kinds = [
            Error::kube("get")(kube_error),
            Error::CaBundle(String::new()),
            Error::Encode(serde_json::from_str::<u8>("x").unwrap_err()),
            Error::Ec2Client(String::new()),
            Error::Credentials {
                credentials: CredentialsRef::DefaultChain,
                why: String::new(),
            },
            Error::Ec2(Ec2Error {
                operation: "DescribeRegions",
                region: String::new(),
                kind: FailureKind::Other,
                message: String::new(),
            }),
            Error::Region {
                error: RegionError::Unknown(String::new()),
                field: "",
            },
            Error::TableConflict {
                configmap: String::new(),
                attempts: 8,
            },
            Error::ScanNotRecorded(String::new()),
            Error::UnknownInstanceType {
                instance_type: String::new(),
                field: "",
            },
            Error::TemplateUnreadable(String::new()),
            Error::ScanTarget(String::new()),
            Error::NotHealed(String::new()),
            Error::PolicySettings(SettingsError::NotFound(String::new())),
        ];
        let labels: std::collections::BTreeSet<_> = kinds.iter().map(Error::metric_label).collect();
        assert_eq!(labels.len(), kinds.len());
    }
}
