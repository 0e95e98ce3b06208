//! A policy host whose `kubernetes/get_resource` answers from the fake API server's own objects,
//! as the Kubewarden policy server answers from the cluster: the policy reads what the refresher
//! really wrote. Like the policy server, it can keep successful answers for a few seconds
//! (Kubewarden caches `get_resource` results for 5 s unless the policy sets `disable_cache`).

use crate::capabilities::{CallbackRequest, HostCapabilities};
use crate::fake_kube::KubeReader;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Answers `get_resource` from a [`KubeReader`] and records every call.
pub struct ClusterHost {
    reader: KubeReader,
    calls: Mutex<Vec<CallbackRequest>>,
    cache_ttl: Option<Duration>,
    cache: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
}

impl ClusterHost {
    /// No cache: every call reads the current objects.
    pub fn new(reader: KubeReader) -> Self {
        ClusterHost {
            reader,
            calls: Mutex::new(Vec::new()),
            cache_ttl: None,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps successful answers for `ttl`, keyed by the whole request, as the policy server does.
    pub fn with_cache(reader: KubeReader, ttl: Duration) -> Self {
        ClusterHost {
            cache_ttl: Some(ttl),
            ..ClusterHost::new(reader)
        }
    }

    /// Every `get_resource` call so far.
    pub fn calls(&self) -> Vec<CallbackRequest> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// Keeps only the fields named by `masks` (dotted paths, e.g. `data.m5`), as the policy server
/// does when a policy asks for field masks.
pub fn apply_field_masks(object: &Value, masks: &BTreeSet<String>) -> Value {
    let mut out = Value::Object(Map::new());
    for mask in masks {
        let path: Vec<&str> = mask.split('.').collect();
        let mut source = Some(object);
        for p in &path {
            source = source.and_then(|v| v.get(*p));
        }
        let Some(value) = source else { continue };
        let mut target = &mut out;
        for (i, p) in path.iter().enumerate() {
            let Some(map) = target.as_object_mut() else {
                break;
            };
            if i + 1 == path.len() {
                map.insert((*p).to_string(), value.clone());
                break;
            }
            target = map
                .entry((*p).to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    out
}

impl HostCapabilities for ClusterHost {
    fn host_call(
        &self,
        binding: &str,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let req = CallbackRequest::from_host_call(binding, namespace, operation, payload)?;
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(req.clone());
        }
        let CallbackRequest::KubernetesGetResource { disable_cache, .. } = &req;
        let key = format!("{req:?}");
        let ttl = self.cache_ttl.filter(|_| !*disable_cache);
        if let Some(ttl) = ttl
            && let Ok(cache) = self.cache.lock()
            && let Some((at, answer)) = cache.get(&key)
            && at.elapsed() < ttl
        {
            return Ok(answer.clone());
        }
        let answer = self
            .answer(req)
            .map_err(crate::capabilities::callback_failure)?;
        if ttl.is_some()
            && let Ok(mut cache) = self.cache.lock()
        {
            cache.insert(key, (Instant::now(), answer.clone()));
        }
        Ok(answer)
    }
}

impl ClusterHost {
    fn answer(&self, req: CallbackRequest) -> Result<Vec<u8>, String> {
        let CallbackRequest::KubernetesGetResource {
            api_version,
            kind,
            name,
            namespace,
            field_masks,
            ..
        } = req;
        let object = self
            .reader
            .get(&api_version, &kind, namespace.as_deref(), &name)
            .ok_or_else(|| {
                format!(
                    "Cannot find {api_version}/{kind} named '{name}' in namespace '{}'",
                    namespace.as_deref().unwrap_or_default()
                )
            })?;
        let answer = match &field_masks {
            Some(masks) if !masks.is_empty() => apply_field_masks(&object, masks),
            _ => object,
        };
        serde_json::to_vec(&answer).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_keep_only_the_named_fields() {
        let cm = json!({"metadata": {"name": "t"}, "data": {"m5": "a", "m6g": "b"}});
        let masks: BTreeSet<String> = ["data.m5".to_string(), "data.zz".to_string()].into();
        assert_eq!(apply_field_masks(&cm, &masks), json!({"data": {"m5": "a"}}));
        let masks: BTreeSet<String> = ["metadata".to_string()].into();
        assert_eq!(
            apply_field_masks(&cm, &masks),
            json!({"metadata": {"name": "t"}})
        );
    }
}
