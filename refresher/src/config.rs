//! Command-line flags; each also reads an environment variable (`CAPA_…`).

use capa_core::table::{DEFAULT_CONFIGMAP_NAME, DEFAULT_CONFIGMAP_NAMESPACE};
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What `--dry-run` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The ConfigMap that would be written, as JSON.
    Configmap,
    /// The built-in table file of the policy (one line per instance type).
    Snapshot,
}

/// Keeps the capa-annotator instance-type ConfigMap current from EC2 DescribeInstanceTypes, with
/// the credentials each AWS MachineSet references.
#[derive(Debug, Clone, Parser)]
#[command(name = "capa-refresher", version)]
pub struct Config {
    /// Only MachineSets of this namespace (default: all namespaces).
    #[arg(long, env = "CAPA_NAMESPACE")]
    pub namespace: Option<String>,

    /// Name of the instance-type ConfigMap.
    #[arg(long, env = "CAPA_CONFIGMAP_NAME", default_value = DEFAULT_CONFIGMAP_NAME)]
    pub configmap_name: String,

    /// Namespace of the instance-type ConfigMap.
    #[arg(long, env = "CAPA_CONFIGMAP_NAMESPACE", default_value = DEFAULT_CONFIGMAP_NAMESPACE)]
    pub configmap_namespace: String,

    /// Time between full refreshes (e.g. 24h, 90m).
    #[arg(long, env = "CAPA_REFRESH_INTERVAL", default_value = "24h", value_parser = parse_duration)]
    pub refresh_interval: Duration,

    /// At most one on-demand scan per region per this interval (failures included).
    #[arg(long, env = "CAPA_MIN_REGION_SCAN_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub min_region_scan_interval: Duration,

    /// Address of /metrics (":8080" = all interfaces, port 8080; "0" disables).
    #[arg(long, env = "CAPA_METRICS_BIND_ADDRESS", default_value = ":8080", value_parser = parse_addr)]
    pub metrics_bind_address: BindAddr,

    /// Address of /healthz and /readyz ("0" disables).
    #[arg(long, env = "CAPA_HEALTH_ADDR", default_value = ":9440", value_parser = parse_addr)]
    pub health_addr: BindAddr,

    /// With --once: a re-admitted MachineSet that still does not match the table is re-admitted
    /// once more after this long (the policy server caches ConfigMap reads for 5 s); "0s":
    /// never. The service's healing retries on its own.
    #[arg(long, env = "CAPA_READMIT_RETRY_AFTER", default_value = "6s", value_parser = parse_duration_or_zero)]
    pub readmit_retry_after: Duration,

    /// At most this many re-admissions (patches that make the API server run the policy again)
    /// in any minute, the refresh's and the healing's together.
    #[arg(long, env = "CAPA_MAX_READMISSIONS_PER_MINUTE", default_value_t = crate::context::DEFAULT_READMISSIONS_PER_MINUTE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_readmissions_per_minute: usize,

    /// An object that stays wrong after re-admission is tried again after 2 s, 4 s, 8 s, …, at
    /// most this long apart (while any wait, one of them is tried every 5 s to learn whether the
    /// cause is gone).
    #[arg(long, env = "CAPA_HEAL_BACKOFF_MAX", default_value = "5m", value_parser = parse_duration)]
    pub heal_backoff_max: Duration,

    /// Take part in leader election (a coordination.k8s.io Lease) before refreshing.
    #[arg(long, env = "CAPA_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Namespace of the leader-election Lease (default: the ConfigMap's namespace).
    #[arg(long, env = "CAPA_LEADER_ELECT_RESOURCE_NAMESPACE")]
    pub leader_elect_resource_namespace: Option<String>,

    /// Lease duration.
    #[arg(long, env = "CAPA_LEADER_ELECT_LEASE_DURATION", default_value = "120s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,

    /// Run one refresh and exit; the exit status says whether every region succeeded.
    #[arg(long, env = "CAPA_ONCE")]
    pub once: bool,

    /// Print the table JSON on stdout instead of writing the ConfigMap (and re-admitting nothing).
    #[arg(long, env = "CAPA_DRY_RUN")]
    pub dry_run: bool,

    /// What `--dry-run` prints: the ConfigMap (JSON) or the policy's built-in table file
    /// (`policy/data/builtin-instance-types.txt`, built from what EC2 listed in this run only).
    #[arg(long, env = "CAPA_OUTPUT", value_enum, default_value = "configmap")]
    pub output: Output,

    /// Without a cluster: scan these regions (comma-separated or repeated) with the default AWS
    /// credential chain (AWS_* environment, shared config/credentials files, web identity, ECS or
    /// instance metadata) instead of the MachineSets' Secrets. Needs `--dry-run`.
    #[arg(
        long = "region",
        env = "CAPA_REGIONS",
        value_delimiter = ',',
        requires = "dry_run"
    )]
    pub regions: Vec<String>,

    /// The `# source:` line of `--output snapshot` (default: "EC2 DescribeInstanceTypes, <regions>").
    #[arg(long, env = "CAPA_SNAPSHOT_SOURCE")]
    pub snapshot_source: Option<String>,

    /// The `# date:` line of `--output snapshot`, YYYY-MM-DD (default: today, UTC).
    #[arg(long, env = "CAPA_SNAPSHOT_DATE", value_parser = parse_date)]
    pub snapshot_date: Option<String>,

    /// Log format.
    #[arg(long, env = "CAPA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Also cover Cluster API MachineDeployments and MachineSets (cluster.x-k8s.io, all
    /// namespaces) backed by AWSMachineTemplates: scan their clusters' regions and re-admit them
    /// (deploy/components/cluster-api).
    #[arg(long, env = "CAPA_CLUSTER_API")]
    pub cluster_api: bool,

    /// The ClusterAdmissionPolicy of the capa-annotator policy: objects are judged with its
    /// settings (read at each refresh). "" judges with the policy's default settings.
    #[arg(long, env = "CAPA_POLICY_NAME", default_value = "capa-annotator")]
    pub policy_name: String,

    /// The namespace of the Kubewarden controller (`cattle-kubewarden-system` on Rancher): the
    /// webhook it renders for the policy never sends objects of that namespace.
    #[arg(long, env = "CAPA_KUBEWARDEN_NAMESPACE", default_value = "kubewarden")]
    pub kubewarden_namespace: String,

    /// CAPA's namespace, where the Secrets of AWSClusterStaticIdentities are.
    #[arg(long, env = "CAPA_CAPA_NAMESPACE", default_value = "capa-system")]
    pub capa_namespace: String,

    /// Scan the regions of Cluster API clusters without an AWSClusterStaticIdentity with the
    /// refresher's own default AWS credential chain (IRSA, EKS pod identity). Off: such clusters
    /// get a Warning Event naming what to configure.
    #[arg(
        long,
        env = "CAPA_CLUSTER_API_DEFAULT_CREDENTIALS",
        requires = "cluster_api"
    )]
    pub cluster_api_default_credentials: bool,
}

impl Config {
    pub fn lease_namespace(&self) -> &str {
        self.leader_elect_resource_namespace
            .as_deref()
            .unwrap_or(&self.configmap_namespace)
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 24h or 90s: {e}"))?;
    if d.is_zero() {
        return Err("must be greater than zero".to_string());
    }
    Ok(d)
}

/// `YYYY-MM-DD`.
fn parse_date(s: &str) -> Result<String, String> {
    let ok = s.len() == 10
        && s.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a date like 2026-11-25"))
    }
}

fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 6s or 0s: {e}"))
}

/// A listen address; `None` = disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindAddr(pub Option<SocketAddr>);

/// `:8080` → `0.0.0.0:8080`; `127.0.0.1:8080` as is; `0` → disabled.
fn parse_addr(s: &str) -> Result<BindAddr, String> {
    if s == "0" {
        return Ok(BindAddr(None));
    }
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse()
        .map(|a| BindAddr(Some(a)))
        .map_err(|e| format!("{s:?} is not an address like :8080 or 127.0.0.1:8080: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::try_parse_from(["capa-refresher"]).unwrap();
        assert_eq!(c.configmap_name, "machineset-instance-types");
        assert_eq!(c.configmap_namespace, "openshift-machine-api");
        assert_eq!(c.refresh_interval, Duration::from_secs(86400));
        assert_eq!(c.min_region_scan_interval, Duration::from_secs(600));
        assert_eq!(
            c.metrics_bind_address.0,
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(c.health_addr.0, Some("0.0.0.0:9440".parse().unwrap()));
        assert_eq!(c.leader_elect_lease_duration, Duration::from_secs(120));
        assert_eq!(c.lease_namespace(), "openshift-machine-api");
        assert!(!c.once && !c.dry_run && !c.leader_elect);
        assert_eq!(c.output, Output::Configmap);
        assert_eq!(c.readmit_retry_after, Duration::from_secs(6));
        let c = Config::try_parse_from(["capa-refresher", "--readmit-retry-after", "0s"]).unwrap();
        assert!(c.readmit_retry_after.is_zero());
        assert!(c.regions.is_empty() && c.snapshot_source.is_none() && c.snapshot_date.is_none());
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn flags() {
        let c = Config::try_parse_from([
            "capa-refresher",
            "--namespace",
            "x",
            "--refresh-interval",
            "90m",
            "--metrics-bind-address",
            "127.0.0.1:1",
            "--health-addr",
            "0",
            "--once",
            "--dry-run",
            "--log-format",
            "json",
            "--leader-elect-resource-namespace",
            "y",
        ])
        .unwrap();
        assert_eq!(c.namespace.as_deref(), Some("x"));
        assert_eq!(c.refresh_interval, Duration::from_secs(5400));
        assert_eq!(c.health_addr.0, None);
        assert_eq!(c.lease_namespace(), "y");
        assert!(Config::try_parse_from(["capa-refresher", "--refresh-interval", "soon"]).is_err());
        assert!(Config::try_parse_from(["capa-refresher", "--refresh-interval", "0s"]).is_err());
        assert!(Config::try_parse_from(["capa-refresher", "--health-addr", "nowhere"]).is_err());
    }

    #[test]
    fn cluster_less_snapshot_flags() {
        let c = Config::try_parse_from([
            "capa-refresher",
            "--dry-run",
            "--region",
            "us-east-1,eu-west-1",
            "--region",
            "ap-south-1",
            "--output",
            "snapshot",
            "--snapshot-date",
            "2026-11-25",
        ])
        .unwrap();
        assert_eq!(c.regions, ["us-east-1", "eu-west-1", "ap-south-1"]);
        assert_eq!(c.output, Output::Snapshot);
        assert_eq!(c.snapshot_date.as_deref(), Some("2026-11-25"));
        // scanning without a cluster only prints: it needs --dry-run
        let e = Config::try_parse_from(["capa-refresher", "--region", "us-east-1"]).unwrap_err();
        assert!(e.to_string().contains("--dry-run"), "{e}");
        for bad in ["25-11-2026", "2026-1-25", "yesterday"] {
            assert!(
                Config::try_parse_from(["capa-refresher", "--dry-run", "--snapshot-date", bad])
                    .is_err(),
                "{bad}"
            );
        }
    }
}
