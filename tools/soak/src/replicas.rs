//! The two refresher replicas, supervised like a Deployment's pods: started with deploy/'s
//! arguments (intervals shortened), JSON logs read line by line, restarted a second after they
//! exit or are killed, RSS read from /proc.

use anyhow::{Context, Result};
use e2e_tests::deploy;
use e2e_tests::paths;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::world::{LEASE_NS, World};

/// A log line of a replica process.
pub struct LogLine {
    pub replica: usize,
    pub pid: u32,
    pub line: Value,
}

/// Timing of the service under test.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub refresh_interval: Duration,
    pub min_region_scan_interval: Duration,
    pub lease_duration: Duration,
}

pub struct Replica {
    /// `capa-refresher-a`, `capa-refresher-b`: a Deployment's two replicas.
    pub name: String,
    /// The current process's pod name: a new one for each start, as when a Deployment replaces a
    /// pod whose node died. It is also the lease identity and the API user.
    pub identity: String,
    child: Option<Child>,
    pub pid: u32,
    pub metrics_addr: String,
    /// When a dead replica is started again.
    restart_at: Option<Instant>,
    pub starts: u32,
    /// Exits the process chose (e.g. after losing the lease), with their status.
    pub exits: Vec<String>,
    log_path: PathBuf,
}

pub struct Replicas {
    pub list: Vec<Replica>,
    args: Vec<String>,
    kube: e2e_tests::fake_kube::KubeconfigWriter,
    home: PathBuf,
    tx: mpsc::Sender<LogLine>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Replicas {
    pub fn new(world: &World, timing: Timing, tx: mpsc::Sender<LogLine>) -> Result<Self> {
        let deployment = world
            .manifests
            .find("Deployment", "capa-refresher")
            .context("deploy/ has no Deployment capa-refresher")?;
        let mut args: Vec<String> =
            deploy::container_args(deployment, "refresher", &[("POD_NAMESPACE", LEASE_NS)])
                .into_iter()
                .filter(|a| {
                    ![
                        "--metrics-bind-address",
                        "--health-addr",
                        "--refresh-interval",
                        "--leader-elect-lease-duration",
                        "--min-region-scan-interval",
                        "--log-format",
                    ]
                    .iter()
                    .any(|f| a.starts_with(f))
                })
                .collect();
        anyhow::ensure!(
            args.iter().any(|a| a == "--leader-elect"),
            "deploy/'s refresher does not elect a leader: {args:?}"
        );
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        args.extend([
            format!("--refresh-interval={}", secs(timing.refresh_interval)),
            format!(
                "--min-region-scan-interval={}",
                secs(timing.min_region_scan_interval)
            ),
            format!(
                "--leader-elect-lease-duration={}",
                secs(timing.lease_duration)
            ),
            "--log-format=json".into(),
            "--health-addr=0".into(),
        ]);
        let mut list = Vec::new();
        for i in 0..2 {
            let name = format!("capa-refresher-{}", ["a", "b"][i]);
            list.push(Replica {
                identity: String::new(),
                log_path: world.dir.join(format!("{name}.log")),
                name,
                child: None,
                pid: 0,
                metrics_addr: String::new(),
                restart_at: Some(Instant::now()),
                starts: 0,
                exits: Vec::new(),
            });
        }
        Ok(Replicas {
            list,
            args,
            kube: world.kube.kubeconfig_writer(),
            home: world.dir.clone(),
            tx,
        })
    }

    /// Starts replicas that are due; notices replicas that exited and schedules their restart.
    pub fn supervise(&mut self) -> Result<()> {
        for i in 0..self.list.len() {
            let exited = match self.list[i].child.as_mut() {
                Some(c) => c.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                let who = self.list[i].identity.clone();
                self.list[i].exits.push(format!("{who}: {status}"));
                self.list[i].child = None;
                self.list[i].restart_at = Some(Instant::now() + Duration::from_secs(1));
            }
            if self.list[i].child.is_none()
                && self.list[i].restart_at.is_some_and(|t| Instant::now() >= t)
            {
                self.start(i)?;
            }
        }
        Ok(())
    }

    fn start(&mut self, i: usize) -> Result<()> {
        let port = free_port()?;
        let r = &mut self.list[i];
        r.metrics_addr = format!("127.0.0.1:{port}");
        r.identity = format!("{}-{}", r.name, r.starts + 1);
        // the fake API server knows a client by its bearer token: the pod name
        let kubeconfig = self.kube.write(&self.home, &r.identity)?;
        let mut child = e2e_tests::objects::refresher_command(&kubeconfig, &self.home)
            .args(&self.args)
            .arg(format!("--metrics-bind-address={}", r.metrics_addr))
            .env("POD_NAME", &r.identity)
            .env("POD_NAMESPACE", LEASE_NS)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {} (cargo build -p capa-refresher)",
                    paths::refresher_bin().display()
                )
            })?;
        r.pid = child.id();
        r.starts += 1;
        r.restart_at = None;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, pid, path) = (self.tx.clone(), r.pid, r.log_path.clone());
        std::thread::spawn(move || read_log(stderr, i, pid, &path, &tx));
        r.child = Some(child);
        Ok(())
    }

    /// SIGKILL, like a node that dies: no shutdown, no lease release.
    pub fn kill(&mut self, i: usize) {
        if let Some(c) = self.list[i].child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
            self.list[i].child = None;
            self.list[i].restart_at = Some(Instant::now() + Duration::from_secs(1));
        }
    }

    /// The replica whose current process has this lease identity.
    pub fn by_identity(&self, identity: &str) -> Option<usize> {
        self.list.iter().position(|r| r.identity == identity)
    }

    pub fn alive(&self, i: usize) -> bool {
        self.list[i].child.is_some()
    }

    /// Resident set size of a running replica, KiB.
    pub fn rss_kib(&self, i: usize) -> Option<u64> {
        self.list[i].child.as_ref()?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.list[i].pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The replica's /metrics text.
    pub fn metrics(&self, i: usize) -> Option<String> {
        self.list[i].child.as_ref()?;
        e2e_tests::servers::raw(
            &format!("http://{}", self.list[i].metrics_addr),
            "GET",
            "/metrics",
            "text/plain",
            &[],
            b"",
        )
        .ok()
    }

    /// Every log line of every process so far (for the leak check).
    pub fn log_files(&self) -> Vec<PathBuf> {
        self.list.iter().map(|r| r.log_path.clone()).collect()
    }

    pub fn stop_all(&mut self) {
        for r in &mut self.list {
            if let Some(c) = r.child.as_mut() {
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status();
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
            r.child = None;
            r.restart_at = None;
        }
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for r in &mut self.list {
            if let Some(c) = r.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn read_log(
    stderr: impl std::io::Read,
    replica: usize,
    pid: u32,
    path: &Path,
    tx: &mpsc::Sender<LogLine>,
) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok();
    for text in BufReader::new(stderr).lines().map_while(Result::ok) {
        if let Some(f) = file.as_mut() {
            let _ = writeln!(f, "{text}");
        }
        let line = serde_json::from_str(&text)
            .unwrap_or_else(|_| serde_json::json!({"message": text, "not_json": true}));
        if tx.send(LogLine { replica, pid, line }).is_err() {
            return;
        }
    }
}
