//! EC2 access: one client per (credentials, region), with the cluster's custom endpoint and CA
//! bundle; the two calls the refresher makes, and the classification of their failures.

use crate::credentials::AwsCredentials;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::region_cache::RegionInfo;
use aws_credential_types::Credentials;
use aws_credential_types::credential_fn::provide_credentials_fn;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Region, SharedHttpClient};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use capa_core::ec2::{GpuDevice, InstanceTypeInfo};
use futures::future::BoxFuture;
use std::time::Duration;

/// Page size of DescribeInstanceTypes (the API's maximum).
pub const PAGE_SIZE: i32 = 100;

/// What kind of failure an EC2 call met: decides retries and which credential to try next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Credentials rejected or unusable: not retried.
    Auth,
    /// Throttling or 5xx that outlived the SDK's retries.
    Transient,
    Other,
}

/// A failed EC2 call. The message comes from AWS and never contains the secret key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} in {region}: {message}")]
pub struct Ec2Error {
    pub operation: &'static str,
    pub region: String,
    pub kind: FailureKind,
    pub message: String,
}

const AUTH_CODES: &[&str] = &[
    "AuthFailure",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "RequestExpired",
    "OptInRequired",
    "Blocked",
    "AccessDenied",
    "AccessDeniedException",
];

fn classify<E>(operation: &'static str, region: &str, err: &SdkError<E>) -> Ec2Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut credentials_failed = false;
    while let Some(e) = source {
        if e.is::<CredentialsError>() {
            credentials_failed = true;
            break;
        }
        source = e.source();
    }
    let code = err.code().unwrap_or_default();
    let kind =
        if credentials_failed || AUTH_CODES.contains(&code) || matches!(status, Some(401 | 403)) {
            FailureKind::Auth
        } else if matches!(
            err,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)
        ) || matches!(status, Some(s) if s >= 500)
            || aws_runtime::retries::classifiers::THROTTLING_ERRORS.contains(&code)
        {
            FailureKind::Transient
        } else {
            FailureKind::Other
        };
    Ec2Error {
        operation,
        region: region.to_string(),
        kind,
        message: format!("{}", DisplayErrorContext(err)),
    }
}

/// The HTTP client of every EC2 (and STS) call: system roots plus the cluster's CA bundle.
pub fn http_client(ca_bundle: Option<&[u8]>) -> Result<SharedHttpClient, Error> {
    let mut trust = TrustStore::default();
    if let Some(pem) = ca_bundle {
        validate_pem(pem)?;
        trust = trust.with_pem_certificate(pem.to_vec());
    }
    let ctx = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| Error::CaBundle(format!("TLS settings of the EC2 client: {e}")))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(ctx)
        .build_https())
}

/// The SDK parses the bundle lazily and panics on bad PEM: check it first.
pub fn validate_pem(pem: &[u8]) -> Result<(), Error> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::CaBundle(format!(
                "the CA bundle (kube-cloud-config ca-bundle.pem) is not valid PEM: {e}"
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::CaBundle(
            "the CA bundle (kube-cloud-config ca-bundle.pem) holds no CERTIFICATE block".into(),
        ));
    }
    Ok(())
}

fn deny(source: &'static str) -> impl ProvideCredentials + 'static {
    provide_credentials_fn(move || async move {
        Err(CredentialsError::invalid_configuration(format!(
            "credential_source = {source} is not allowed in a MachineSet credentials Secret"
        )))
    })
}

/// A credentials provider that uses the Secret and nothing else (no environment, no instance
/// metadata: a broken Secret must fail, not fall back to the node's role).
pub fn credentials_provider(
    creds: &AwsCredentials,
    region: &Region,
    http: &SharedHttpClient,
) -> SharedCredentialsProvider {
    match creds {
        AwsCredentials::Static {
            access_key_id,
            secret_access_key,
        } => SharedCredentialsProvider::new(Credentials::new(
            access_key_id.clone(),
            secret_access_key.clone(),
            None,
            None,
            "machineset-secret",
        )),
        AwsCredentials::Session {
            access_key_id,
            secret_access_key,
            session_token,
        } => SharedCredentialsProvider::new(Credentials::new(
            access_key_id.clone(),
            secret_access_key.clone(),
            session_token.clone(),
            None,
            "aws-cluster-static-identity",
        )),
        // built when the SDK first asks (then cached by it): the chain's construction is async
        AwsCredentials::DefaultChain => {
            let (region, http) = (region.clone(), http.clone());
            SharedCredentialsProvider::new(provide_credentials_fn(move || {
                let (region, http) = (region.clone(), http.clone());
                async move {
                    let conf = aws_config::provider_config::ProviderConfig::without_region()
                        .with_region(Some(region))
                        .with_http_client(http);
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .configure(conf)
                        .build()
                        .await
                        .provide_credentials()
                        .await
                }
            }))
        }
        AwsCredentials::SharedFile(contents) => {
            // `[profile x]` headers mean a config file; plain `[x]` a credentials file
            let kind = if contents
                .lines()
                .any(|l| l.trim_start().starts_with("[profile "))
            {
                EnvConfigFileKind::Config
            } else {
                EnvConfigFileKind::Credentials
            };
            let files = EnvConfigFiles::builder()
                .with_contents(kind, contents.clone())
                .build();
            let conf = aws_config::provider_config::ProviderConfig::without_region()
                .with_region(Some(region.clone()))
                .with_http_client(http.clone());
            let provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
                .configure(&conf)
                .profile_files(files)
                .profile_name("default")
                .with_custom_provider("Ec2InstanceMetadata", deny("Ec2InstanceMetadata"))
                .with_custom_provider("EcsContainer", deny("EcsContainer"))
                .with_custom_provider("Environment", deny("Environment"))
                .build();
            SharedCredentialsProvider::new(provider)
        }
    }
}

/// The two EC2 calls of a scan, for one region and one set of credentials: the SDK's client
/// ([`Ec2`]) in the service, a fake in unit tests.
pub trait Ec2Api: Send + Sync {
    /// `DescribeRegions(AllRegions=true)`.
    fn describe_regions<'a>(
        &'a self,
        metrics: &'a Metrics,
    ) -> BoxFuture<'a, Result<Vec<RegionInfo>, Ec2Error>>;
    /// Every instance type of the region, all pages.
    fn describe_instance_types<'a>(
        &'a self,
        metrics: &'a Metrics,
    ) -> BoxFuture<'a, Result<Vec<InstanceTypeInfo>, Ec2Error>>;
}

/// Where an EC2 client goes, and as whom.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub credentials: &'a AwsCredentials,
    pub region: &'a str,
    /// A custom endpoint; `None`: the SDK's for the region.
    pub endpoint: Option<&'a str>,
    /// Trusted besides the system roots (the cluster's `kube-cloud-config`).
    pub ca_bundle: Option<&'a [u8]>,
}

/// Makes EC2 clients.
pub trait Ec2Connect: Send + Sync {
    fn connect(&self, target: &Target<'_>) -> Result<Box<dyn Ec2Api>, Error>;
}

/// The AWS SDK's clients; they share one HTTP client (and its connections) while the CA bundle
/// stays the same.
#[derive(Default)]
pub struct SdkConnect {
    http: std::sync::Mutex<Option<(Option<Vec<u8>>, SharedHttpClient)>>,
}

impl SdkConnect {
    fn http(&self, ca_bundle: Option<&[u8]>) -> Result<SharedHttpClient, Error> {
        // a panic while the lock was held leaves at worst no client: one is built again
        let mut slot = self
            .http
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((ca, http)) = slot.as_ref()
            && ca.as_deref() == ca_bundle
        {
            return Ok(http.clone());
        }
        let http = http_client(ca_bundle)?;
        *slot = Some((ca_bundle.map(<[u8]>::to_vec), http.clone()));
        Ok(http)
    }
}

impl Ec2Connect for SdkConnect {
    fn connect(&self, t: &Target<'_>) -> Result<Box<dyn Ec2Api>, Error> {
        let http = self
            .http(t.ca_bundle)
            .map_err(|e| Error::Ec2Client(e.to_string()))?;
        Ok(Box::new(Ec2::new(
            t.credentials,
            t.region,
            t.endpoint,
            &http,
        )))
    }
}

impl Ec2Api for Ec2 {
    fn describe_regions<'a>(
        &'a self,
        metrics: &'a Metrics,
    ) -> BoxFuture<'a, Result<Vec<RegionInfo>, Ec2Error>> {
        Box::pin(Ec2::describe_regions(self, metrics))
    }

    fn describe_instance_types<'a>(
        &'a self,
        metrics: &'a Metrics,
    ) -> BoxFuture<'a, Result<Vec<InstanceTypeInfo>, Ec2Error>> {
        Box::pin(Ec2::describe_instance_types(self, metrics))
    }
}

/// An EC2 client of the AWS SDK for one region and one set of credentials.
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
    region: String,
}

impl Ec2 {
    pub fn new(
        creds: &AwsCredentials,
        region: &str,
        endpoint: Option<&str>,
        http: &SharedHttpClient,
    ) -> Self {
        let region_cfg = Region::new(region.to_string());
        let mut b = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region_cfg.clone())
            .credentials_provider(credentials_provider(creds, &region_cfg, http))
            .http_client(http.clone());
        if let Some(url) = endpoint {
            b = b.endpoint_url(url);
        }
        Ec2 {
            client: aws_sdk_ec2::Client::from_conf(tuned(b).build()),
            region: region.to_string(),
        }
    }

    /// A client from a shared SDK configuration (the default AWS credential chain and the
    /// `AWS_ENDPOINT_URL*` variables of the cluster-less mode), with the same retries and timeouts.
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, region: &str) -> Self {
        let b = aws_sdk_ec2::config::Builder::from(sdk).region(Region::new(region.to_string()));
        Ec2 {
            client: aws_sdk_ec2::Client::from_conf(tuned(b).build()),
            region: region.to_string(),
        }
    }

    /// `DescribeRegions(AllRegions=true)`.
    pub async fn describe_regions(&self, metrics: &Metrics) -> Result<Vec<RegionInfo>, Ec2Error> {
        const OP: &str = "DescribeRegions";
        match self
            .client
            .describe_regions()
            .all_regions(true)
            .send()
            .await
        {
            Ok(out) => {
                metrics.ec2_call(OP, "success");
                Ok(out
                    .regions()
                    .iter()
                    .filter_map(|r| {
                        Some(RegionInfo {
                            name: r.region_name()?.to_string(),
                            opt_in_status: r.opt_in_status().map(str::to_string),
                        })
                    })
                    .collect())
            }
            Err(e) => {
                let err = classify(OP, &self.region, &e);
                metrics.ec2_call(OP, result_label(err.kind));
                Err(err)
            }
        }
    }

    /// Every instance type of the region: `DescribeInstanceTypes`, `MaxResults=100`, all pages.
    pub async fn describe_instance_types(
        &self,
        metrics: &Metrics,
    ) -> Result<Vec<InstanceTypeInfo>, Ec2Error> {
        const OP: &str = "DescribeInstanceTypes";
        let mut out = Vec::new();
        let mut pages = self
            .client
            .describe_instance_types()
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let err = classify(OP, &self.region, &e);
                    metrics.ec2_call(OP, result_label(err.kind));
                    return Err(err);
                }
            };
            metrics.ec2_call(OP, "success");
            out.extend(page.instance_types().iter().map(convert));
        }
        Ok(out)
    }
}

/// Retries (throttling and 5xx, with backoff) and timeouts of every EC2 client.
fn tuned(b: aws_sdk_ec2::config::Builder) -> aws_sdk_ec2::config::Builder {
    b.retry_config(
        RetryConfig::standard()
            .with_max_attempts(5)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(20)),
    )
    .timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .operation_attempt_timeout(Duration::from_secs(60))
            .operation_timeout(Duration::from_secs(300))
            .build(),
    )
}

fn result_label(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Auth => "auth_error",
        FailureKind::Transient => "transient_error",
        FailureKind::Other => "error",
    }
}

fn convert(it: &aws_sdk_ec2::types::InstanceTypeInfo) -> InstanceTypeInfo {
    InstanceTypeInfo {
        instance_type: it
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        default_vcpus: it
            .v_cpu_info()
            .and_then(|v| v.default_v_cpus())
            .map(i64::from),
        size_in_mib: it.memory_info().and_then(|m| m.size_in_mib()),
        gpus: it
            .gpu_info()
            .map(|g| g.gpus())
            .unwrap_or_default()
            .iter()
            .map(|g| GpuDevice {
                count: g.count().map(i64::from),
                manufacturer: g.manufacturer().map(str::to_string),
                name: g.name().map(str::to_string),
            })
            .collect(),
        architectures: it
            .processor_info()
            .map(|p| p.supported_architectures())
            .unwrap_or_default()
            .iter()
            .map(|a| a.as_str().to_string())
            .collect(),
    }
}
