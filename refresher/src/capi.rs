//! Cluster API on AWS: the MachineDeployments and MachineSets (`cluster.x-k8s.io`) whose template
//! is an AWSMachineTemplate, each resolved to its instance type (the template), its region (the
//! owning `Cluster`'s AWSCluster, or AWSManagedControlPlane on EKS) and the credentials to scan
//! it with (an AWSClusterStaticIdentity's Secret, or the refresher's own default chain when the
//! admin opts in). The reading rules are capa-core's (`capa_core::capi`); this module is the I/O.

use crate::cluster;
use crate::plan::{CredentialsRef, ObjectRef, SecretRef};
use capa_core::capi::{self, TemplateRef};
use capa_core::machineset;
use kube::Client;
use serde_json::Value;
use std::collections::BTreeMap;

/// How Cluster API objects are resolved.
#[derive(Debug, Clone)]
pub struct CapiOptions {
    /// CAPA's namespace, where the Secrets of AWSClusterStaticIdentities are.
    pub capa_namespace: String,
    /// Clusters without a static identity are scanned with the refresher's own credentials.
    pub default_credentials: bool,
    /// The EC2 endpoint of Cluster API scans: `AWS_ENDPOINT_URL_EC2` (or `AWS_ENDPOINT_URL`) of
    /// the refresher, else the SDK's default for the region. The OpenShift `Infrastructure`'s
    /// endpoint is for the Machine API MachineSets of the cluster it describes, not for the
    /// workload clusters CAPA manages.
    pub ec2_endpoint: Option<String>,
}

impl CapiOptions {
    /// `AWS_ENDPOINT_URL_EC2`, else `AWS_ENDPOINT_URL`, from `var` (the process environment).
    pub fn endpoint_from_env(var: impl Fn(&str) -> Option<String>) -> Option<String> {
        ["AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"]
            .into_iter()
            .find_map(|k| var(k).filter(|v| !v.trim().is_empty()))
    }
}

/// One Cluster API object and what the refresher found for it.
#[derive(Debug, Clone)]
pub struct CapiObject {
    pub object: Value,
    pub at: ObjectRef,
    /// The template's instance type; `Err`: why there is none.
    pub instance_type: Result<String, String>,
    /// Region and credentials for the scan; `Err`: what to configure (a Warning Event).
    pub scan: Result<(String, CredentialsRef), String>,
}

/// Every Cluster API MachineDeployment and MachineSet backed by an AWSMachineTemplate, resolved.
/// A cluster without the Cluster API CRDs gives none.
pub async fn resolve_all(
    client: &Client,
    opts: &CapiOptions,
) -> Result<Vec<CapiObject>, kube::Error> {
    let mut objects = Vec::new();
    for kind in capi::SCALABLE_KINDS {
        match cluster::list_any_version(client, capi::GROUP, &capi::VERSIONS, kind).await? {
            Some(list) => objects.extend(list),
            None => tracing::debug!(kind, "no Cluster API {kind}s served"),
        }
    }
    let mut cache = Lookups::default();
    let mut out = Vec::new();
    for object in objects {
        out.extend(resolve(client, opts, object, &mut cache).await);
    }
    Ok(out)
}

/// One MachineDeployment or MachineSet, resolved; `None` when it is not for the refresher
/// (deleting, an unusable ref, not an AWSMachineTemplate). `cache` keeps what was read (the
/// objects of one cluster are resolved with one read of its Cluster and AWSCluster).
pub async fn resolve(
    client: &Client,
    opts: &CapiOptions,
    object: Value,
    cache: &mut Lookups,
) -> Option<CapiObject> {
    if machineset::is_deleting(&object) {
        return None;
    }
    // the policy warns about an unusable ref at admission
    let tref = capi::infrastructure_ref(&object).ok()?;
    if !tref.is_aws_machine_template() {
        return None;
    }
    let instance_type = template_type(client, &tref, cache).await;
    let scan = scan_target(client, &object, opts, cache).await;
    Some(CapiObject {
        at: ObjectRef::of(&object),
        instance_type,
        scan,
        object,
    })
}

/// Objects read during one resolution, by `kind namespace/name`.
#[derive(Default)]
pub struct Lookups(BTreeMap<String, Result<Option<Value>, String>>);

impl Lookups {
    async fn get(
        &mut self,
        client: &Client,
        group: &str,
        versions: &[&str],
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, String> {
        let key = format!("{group} {kind} {}/{name}", namespace.unwrap_or(""));
        if let Some(v) = self.0.get(&key) {
            return v.clone();
        }
        let v = cluster::get_any_version(client, group, versions, kind, namespace, name)
            .await
            .map_err(|e| format!("cannot read {kind} {}/{name}: {e}", namespace.unwrap_or("")));
        self.0.insert(key, v.clone());
        v
    }
}

async fn template_type(
    client: &Client,
    tref: &TemplateRef<'_>,
    cache: &mut Lookups,
) -> Result<String, String> {
    let template = cache
        .get(
            client,
            tref.group,
            &tref.versions(),
            tref.kind,
            Some(tref.namespace),
            tref.name,
        )
        .await?
        .ok_or_else(|| {
            format!(
                "AWSMachineTemplate {}/{} not found",
                tref.namespace, tref.name
            )
        })?;
    capi::template_instance_type(&template)
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "AWSMachineTemplate {}/{} has no spec.template.spec.instanceType",
                tref.namespace, tref.name
            )
        })
}

/// The region and credentials of `object`'s cluster, or what to configure.
async fn scan_target(
    client: &Client,
    object: &Value,
    opts: &CapiOptions,
    cache: &mut Lookups,
) -> Result<(String, CredentialsRef), String> {
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let name = capi::cluster_name(object).ok_or_else(|| {
        format!(
            "no spec.clusterName nor label {}: its Cluster is unknown",
            capi::CLUSTER_NAME_LABEL
        )
    })?;
    let cluster = cache
        .get(
            client,
            capi::GROUP,
            &capi::VERSIONS,
            "Cluster",
            Some(namespace),
            name,
        )
        .await?
        .ok_or_else(|| format!("Cluster {namespace}/{name} not found"))?;
    let holder_ref = capi::region_holder(&cluster).ok_or_else(|| {
        format!("Cluster {namespace}/{name} has neither an AWSCluster infrastructureRef nor an AWSManagedControlPlane controlPlaneRef")
    })?;
    let holder = cache
        .get(
            client,
            holder_ref.group,
            &holder_ref.versions(),
            holder_ref.kind,
            Some(holder_ref.namespace),
            holder_ref.name,
        )
        .await?
        .ok_or_else(|| {
            format!(
                "{} {}/{} not found",
                holder_ref.kind, holder_ref.namespace, holder_ref.name
            )
        })?;
    let what = format!(
        "{} {}/{}",
        holder_ref.kind, holder_ref.namespace, holder_ref.name
    );
    let region = capi::region(&holder)
        .ok_or_else(|| format!("{what} has no spec.region"))?
        .to_string();
    let credentials = match capi::identity_ref(&holder) {
        Some((kind, identity)) if kind == capi::AWS_CLUSTER_STATIC_IDENTITY => {
            let id = cache
                .get(
                    client,
                    capi::INFRASTRUCTURE_GROUP,
                    &capi::VERSIONS,
                    kind,
                    None,
                    identity,
                )
                .await?
                .ok_or_else(|| {
                    format!("AWSClusterStaticIdentity {identity} (identityRef of {what}) not found")
                })?;
            let secret = capi::static_identity_secret(&id).ok_or_else(|| {
                format!("AWSClusterStaticIdentity {identity} has no spec.secretRef")
            })?;
            check_allowed(client, &id, identity, holder_ref.namespace, cache).await?;
            CredentialsRef::StaticIdentity {
                identity: identity.to_string(),
                secret: SecretRef {
                    namespace: opts.capa_namespace.clone(),
                    name: secret.to_string(),
                },
            }
        }
        _ if opts.default_credentials => CredentialsRef::DefaultChain,
        other => {
            let uses = match other {
                Some((kind, name)) => format!("identityRef {kind} {name}"),
                None => "no identityRef (CAPA's controller identity)".to_string(),
            };
            return Err(format!(
                "{what} has {uses}, whose credentials the refresher does not use: give it an AWSClusterStaticIdentity, or start the refresher with --cluster-api-default-credentials to scan {region} with its own credentials (IRSA or pod identity)"
            ));
        }
    };
    Ok((region, credentials))
}

/// CAPA uses an identity only for the namespaces its `spec.allowedNamespaces` admits; the
/// refresher keeps to the same rule.
async fn check_allowed(
    client: &Client,
    identity: &Value,
    name: &str,
    namespace: &str,
    cache: &mut Lookups,
) -> Result<(), String> {
    let refused = |why: &str| {
        format!(
            "AWSClusterStaticIdentity {name} {why}, so CAPA does not use it for namespace {namespace} and neither does the refresher: fix its spec.allowedNamespaces"
        )
    };
    match capi::allowed_namespaces(identity) {
        capi::AllowedNamespaces::Any => Ok(()),
        capi::AllowedNamespaces::None => Err(refused("has no spec.allowedNamespaces")),
        capi::AllowedNamespaces::Some { list, .. } if list.contains(&namespace) => Ok(()),
        capi::AllowedNamespaces::Some { selector: None, .. } => {
            Err(refused("does not list the namespace"))
        }
        capi::AllowedNamespaces::Some {
            selector: Some(selector),
            ..
        } => {
            let ns = cache
                .get(client, "", &["v1"], "Namespace", None, namespace)
                .await?
                .ok_or_else(|| format!("Namespace {namespace} not found"))?;
            let labels = ns
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if capi::selector_matches(selector, &labels) {
                Ok(())
            } else {
                Err(refused(
                    "neither lists the namespace nor selects it by its labels",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CapiOptions;

    #[test]
    fn the_ec2_specific_endpoint_variable_wins() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            CapiOptions::endpoint_from_env(env(&[
                ("AWS_ENDPOINT_URL", "http://a"),
                ("AWS_ENDPOINT_URL_EC2", "http://b")
            ])),
            Some("http://b".into())
        );
        assert_eq!(
            CapiOptions::endpoint_from_env(env(&[
                ("AWS_ENDPOINT_URL", "http://a"),
                ("AWS_ENDPOINT_URL_EC2", " ")
            ])),
            Some("http://a".into())
        );
        assert_eq!(CapiOptions::endpoint_from_env(env(&[])), None);
    }
}
