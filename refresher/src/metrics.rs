//! Prometheus metrics of the refresher (text format on /metrics).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeGroupLabels {
    api: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: String,
    result: String,
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    refreshes: Family<ResultLabel, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    table_size: Gauge,
    ec2_calls: Family<CallLabels, Counter>,
    refresh_duration: Histogram,
    readmitted: Counter,
    configmap_writes: Counter,
    node_groups: Family<NodeGroupLabels, Gauge>,
    oldest_wrong_age: Gauge<f64, AtomicU64>,
    heal_seconds: Histogram,
    heal_pending: Gauge,
    errors: Family<ErrorLabel, Counter>,
    /// Since when the oldest node group has not been right (the age is computed at each scrape).
    oldest_wrong_since: std::sync::Mutex<Option<SystemTime>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("capa_refresher");
        let refreshes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "refreshes",
            "Refreshes by result (success, partial, failure)",
            refreshes.clone(),
        );
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last refresh in which every region succeeded",
            last_success.clone(),
        );
        let table_size = Gauge::default();
        registry.register(
            "table_instance_types",
            "Instance types in the table ConfigMap",
            table_size.clone(),
        );
        let ec2_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "ec2_calls",
            "EC2 API calls (pages) by operation and result",
            ec2_calls.clone(),
        );
        let refresh_duration = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        registry.register(
            "refresh_duration_seconds",
            "Wall time of one refresh",
            refresh_duration.clone(),
        );
        let readmitted = Counter::default();
        registry.register(
            "machinesets_readmitted",
            "MachineSets patched so the policy annotates them again",
            readmitted.clone(),
        );
        let configmap_writes = Counter::default();
        registry.register(
            "configmap_writes",
            "Writes of the table ConfigMap",
            configmap_writes.clone(),
        );
        let node_groups = Family::<NodeGroupLabels, Gauge>::default();
        registry.register(
            "node_groups",
            "Node groups (MachineSets, Cluster API MachineDeployments and MachineSets) by API and state at the last refresh: right, wrong, missing (no capacity annotations), unknown_type, unreadable",
            node_groups.clone(),
        );
        let oldest_wrong_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_wrong_node_group_age_seconds",
            "How long the node group that has been not right the longest has been so (0: all right, or not the leader); counted at each refresh and as the watches see changes",
            oldest_wrong_age.clone(),
        );
        let heal_seconds = Histogram::new([
            1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
        ]);
        registry.register(
            "heal_seconds",
            "Time from an object first seen not right (missing, wrong or stale capacity annotations) to right: re-submitted to the policy by the refresher, or written again",
            heal_seconds.clone(),
        );
        let heal_pending = Gauge::default();
        registry.register(
            "heal_pending",
            "Objects waiting to be re-submitted to the policy (debounce, backoff or the re-admission cap)",
            heal_pending.clone(),
        );
        let errors = Family::<ErrorLabel, Counter>::default();
        registry.register(
            "errors",
            "Errors by kind (the error label: kube_api, ca_bundle, table_conflict, encode, credentials, ec2, region, unknown_instance_type, template_unreadable, scan_target, not_healed, lease, ec2_client, policy_settings): each refresh that failed as a whole, each Warning Event put on an object, each region not scanned for want of a Lease record or an EC2 client, and each time the policy's settings could not be read",
            errors.clone(),
        );
        Metrics {
            errors,
            heal_seconds,
            heal_pending,
            registry,
            refreshes,
            last_success,
            table_size,
            ec2_calls,
            refresh_duration,
            readmitted,
            configmap_writes,
            node_groups,
            oldest_wrong_age,
            oldest_wrong_since: std::sync::Mutex::new(None),
        }
    }

    pub fn ec2_call(&self, operation: &str, result: &str) {
        self.ec2_calls
            .get_or_create(&CallLabels {
                operation: operation.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub fn refresh_done(&self, result: &str, took: Duration, table_size: usize) {
        self.refreshes
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
        self.refresh_duration.observe(took.as_secs_f64());
        self.table_size
            .set(i64::try_from(table_size).unwrap_or(i64::MAX));
        if result == "success" {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.last_success.set(now);
        }
    }

    /// One error of the kind `label` ([`crate::Error::metric_label`]).
    pub fn error(&self, label: &'static str) {
        self.errors
            .get_or_create(&ErrorLabel { error: label })
            .inc();
    }

    pub fn readmitted(&self) {
        self.readmitted.inc();
    }

    pub fn healed(&self, after: Duration) {
        self.heal_seconds.observe(after.as_secs_f64());
    }

    pub fn heal_pending(&self, n: usize) {
        self.heal_pending.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn configmap_written(&self) {
        self.configmap_writes.inc();
    }

    /// The node groups' states of the last refresh (every API and state is set, zeros included).
    pub fn node_groups(&self, census: &crate::node_groups::Census) {
        use crate::node_groups::{Api, State};
        for api in Api::ALL {
            for state in State::ALL {
                self.node_groups
                    .get_or_create(&NodeGroupLabels {
                        api: api.label(),
                        state: state.label(),
                    })
                    .set(i64::try_from(census.count(api, state)).unwrap_or(i64::MAX));
            }
        }
        if let Ok(mut since) = self.oldest_wrong_since.lock() {
            *since = census.oldest_not_right();
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let since = self.oldest_wrong_since.lock().ok().and_then(|s| *s);
        let age = since
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.oldest_wrong_age.set(age);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_groups_by_api_and_state() {
        let m = Metrics::new();
        m.node_groups(&crate::node_groups::Census::default());
        let text = m.render();
        for needle in [
            "capa_refresher_node_groups{api=\"machine_api\",state=\"right\"} 0",
            "capa_refresher_node_groups{api=\"cluster_api\",state=\"unknown_type\"} 0",
            "capa_refresher_node_groups{api=\"cluster_api\",state=\"unreadable\"} 0",
            "capa_refresher_oldest_wrong_node_group_age_seconds 0",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
    }

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.ec2_call("DescribeInstanceTypes", "success");
        m.refresh_done("success", Duration::from_millis(300), 1263);
        m.readmitted();
        m.error("credentials");
        let text = m.render();
        for needle in [
            "capa_refresher_ec2_calls_total{operation=\"DescribeInstanceTypes\",result=\"success\"} 1",
            "capa_refresher_refreshes_total{result=\"success\"} 1",
            "capa_refresher_table_instance_types 1263",
            "capa_refresher_machinesets_readmitted_total 1",
            "capa_refresher_refresh_duration_seconds_count 1",
            "capa_refresher_last_success_timestamp_seconds",
            "capa_refresher_oldest_wrong_node_group_age_seconds 0",
            "capa_refresher_errors_total{error=\"credentials\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
    }
}
