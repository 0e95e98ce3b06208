//! Everything the refresher reads from and writes to the Kubernetes API.

use crate::plan::{ObjectRef, SecretRef};
use k8s_openapi::api::core::v1::{ConfigMap, Event, EventSource, ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, Client};
use serde_json::Value;
use std::collections::BTreeMap;

/// Field manager and event source name.
pub const COMPONENT: &str = "capa-refresher";

pub fn machineset_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("machine.openshift.io", "v1beta1", "MachineSet"),
        "machinesets",
    )
}

fn infrastructure_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("config.openshift.io", "v1", "Infrastructure"),
        "infrastructures",
    )
}

/// 404, whatever the body (a missing CRD answers plain text).
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// 403: on a cluster without the object's API (vanilla Kubernetes), authorization fails before
/// the server could say "not found".
pub fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// The MachineSets API (all namespaces, or one).
pub fn machinesets(client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = machineset_resource();
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Every MachineSet as plain JSON (what capa-core reads).
pub async fn list_machinesets(
    client: &Client,
    namespace: Option<&str>,
) -> Result<Vec<Value>, kube::Error> {
    let list = machinesets(client, namespace)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .collect())
}

/// The `data` of a Secret, decoded; `None` when it does not exist.
pub async fn secret_data(
    client: &Client,
    secret: &SecretRef,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
    match api.get(&secret.name).await {
        Ok(s) => {
            let mut data: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                data.entry(k).or_insert_with(|| v.into_bytes());
            }
            Ok(Some(data))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The custom EC2 endpoint of the `Infrastructure` named `cluster`
/// (`status.platformStatus.aws.serviceEndpoints[name=ec2].url`); `None` on non-OpenShift clusters.
pub async fn ec2_endpoint(client: &Client) -> Result<Option<String>, kube::Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &infrastructure_resource());
    match api.get("cluster").await {
        Ok(infra) => Ok(infra
            .data
            .pointer("/status/platformStatus/aws/serviceEndpoints")
            .and_then(Value::as_array)
            .and_then(|eps| {
                eps.iter()
                    .find(|e| e.get("name").and_then(Value::as_str) == Some("ec2"))
                    .and_then(|e| e.get("url").and_then(Value::as_str))
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
            })),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) if is_forbidden(&e) => {
            tracing::warn!(error = %e, "cannot read Infrastructure cluster (forbidden); using the default EC2 endpoints");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `openshift-config-managed/kube-cloud-config` key `ca-bundle.pem`; `None` when absent.
pub async fn ca_bundle(client: &Client) -> Result<Option<Vec<u8>>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "openshift-config-managed");
    match api.get("kube-cloud-config").await {
        Ok(cm) => Ok(cm
            .data
            .and_then(|d| d.get("ca-bundle.pem").cloned())
            .filter(|s| !s.trim().is_empty())
            .map(String::into_bytes)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) if is_forbidden(&e) => {
            tracing::warn!(error = %e, "cannot read ConfigMap openshift-config-managed/kube-cloud-config (forbidden); using the system trust roots");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The API resource of `apiVersion` + `kind`, with the plural of [`capa_core::scope::plural`].
pub fn resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let plural = capa_core::scope::plural(kind);
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural)
}

/// One object as JSON, trying `versions` of `group` in order (a version the cluster does not
/// serve answers 404 like a missing object); `None` when no version has it. `namespace` `None`:
/// a cluster-scoped kind.
pub async fn get_any_version(
    client: &Client,
    group: &str,
    versions: &[&str],
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<Value>, kube::Error> {
    for version in versions {
        let ar = resource(&format!("{group}/{version}"), kind);
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        match api.get(name).await {
            Ok(o) => return Ok(Some(serde_json::to_value(o).unwrap_or(Value::Null))),
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Every object of `kind` in all namespaces, at the first of `versions` the cluster serves;
/// `None` when it serves none (no such CRD).
pub async fn list_any_version(
    client: &Client,
    group: &str,
    versions: &[&str],
    kind: &str,
) -> Result<Option<Vec<Value>>, kube::Error> {
    for version in versions {
        let api: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &resource(&format!("{group}/{version}"), kind),
        );
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                return Ok(Some(
                    list.items
                        .into_iter()
                        .filter_map(|o| serde_json::to_value(o).ok())
                        .collect(),
                ));
            }
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// A merge patch on the object `at` names; the object as stored, after admission.
pub async fn patch_object(
    client: &Client,
    at: &ObjectRef,
    patch: &Value,
) -> Result<Value, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &at.namespace,
        &resource(&at.api_version, &at.kind),
    );
    let stored = api
        .patch(
            &at.name,
            &PatchParams::apply(COMPONENT),
            &Patch::Merge(patch),
        )
        .await?;
    Ok(serde_json::to_value(stored).unwrap_or(Value::Null))
}

/// A core/v1 Event on the object `at` names (`type_`: `Warning` or `Normal`). Failures are logged, not
/// returned: an event that cannot be written must not stop a refresh.
pub async fn event(client: &Client, at: &ObjectRef, type_: &str, reason: &str, message: &str) {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let ev = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", at.name)),
            namespace: Some(at.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(at.api_version.clone()),
            kind: Some(at.kind.clone()),
            name: Some(at.name.clone()),
            namespace: Some(at.namespace.clone()),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: None,
        }),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &at.namespace);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::warn!(machineset = %at, reason, error = %e, "cannot write event");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn plurals_of_the_kinds_read() {
        for (kind, plural) in [
            ("MachineDeployment", "machinedeployments"),
            ("AWSClusterStaticIdentity", "awsclusterstaticidentities"),
            ("AWSManagedControlPlane", "awsmanagedcontrolplanes"),
        ] {
            assert_eq!(super::resource("g/v1", kind).plural, plural);
        }
    }
}
