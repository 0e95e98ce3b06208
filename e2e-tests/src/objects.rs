//! Kubernetes objects the end-to-end tests put into the fake API server, what they read back from
//! them, and the refresher process they run against it.

use serde_json::{Value, json};

/// An AWS MachineSet (0 replicas) of `instance_type` in `region`, using credentials `secret`.
pub fn machineset(
    namespace: &str,
    name: &str,
    region: &str,
    instance_type: &str,
    secret: &str,
) -> Value {
    json!({
        "apiVersion": "machine.openshift.io/v1beta1", "kind": "MachineSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": 0, "template": {"spec": {"providerSpec": {"value": {
            "apiVersion": "machine.openshift.io/v1beta1", "kind": "AWSMachineProviderConfig",
            "instanceType": instance_type, "credentialsSecret": {"name": secret},
            "placement": {"region": region, "availabilityZone": format!("{region}a")}}}}}}
    })
}

/// `ms` with the node label the OpenShift autoscaler reads for GPU node groups
/// (`cluster-api/accelerator`), as an admin sets it up (without it the policy warns).
pub fn with_accelerator_label(mut ms: Value, accelerator: &str) -> Value {
    ms["spec"]["template"]["spec"]["metadata"] =
        json!({"labels": {"cluster-api/accelerator": accelerator}});
    ms
}

/// A credentials Secret with static keys (`aws_access_key_id`, `aws_secret_access_key`).
pub fn aws_secret(namespace: &str, name: &str, key_id: &str, secret: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
        "data": {"aws_access_key_id": crate::servers::base64(key_id),
                 "aws_secret_access_key": crate::servers::base64(secret)}
    })
}

/// The OpenShift `Infrastructure` `cluster` naming a custom EC2 endpoint.
pub fn infrastructure(ec2_endpoint: &str) -> Value {
    json!({
        "apiVersion": "config.openshift.io/v1", "kind": "Infrastructure",
        "metadata": {"name": "cluster"},
        "status": {"platformStatus": {"type": "AWS", "aws": {"region": "eu-west-3",
            "serviceEndpoints": [{"name": "ec2", "url": ec2_endpoint}]}}}
    })
}

/// A MachineSet's capacity annotations (vCPU, memoryMb, GPU, labels); `<absent>` for a missing one.
pub fn capacity_annotations(ms: &Value) -> [String; 4] {
    let a = &ms["metadata"]["annotations"];
    let get = |k: &str| a[k].as_str().unwrap_or("<absent>").to_string();
    [
        get("machine.openshift.io/vCPU"),
        get("machine.openshift.io/memoryMb"),
        get("machine.openshift.io/GPU"),
        get("capacity.cluster-autoscaler.kubernetes.io/labels"),
    ]
}

/// The refresher binary as the tests run it: Kubernetes from `kubeconfig`, `HOME` in the test's
/// scratch directory, info logs, and none of the AWS environment of whoever runs the tests (only
/// the Secrets may supply credentials).
pub fn refresher_command(
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
) -> std::process::Command {
    let mut c = std::process::Command::new(crate::paths::refresher_bin());
    c.env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env("RUST_LOG", "info")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_REGION");
    c
}
