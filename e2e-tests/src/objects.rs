//! Kubernetes objects the end-to-end tests put into the fake API server.

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
