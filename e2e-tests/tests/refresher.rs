//! End-to-end tests of the real `capa-refresher` binary against real servers on 127.0.0.1: the fake
//! Kubernetes API server (in this process) and moto behind our paging/fault proxy (processes).
//! What a refresh decides for each object, Secret and region is tested in-process, against fakes
//! (capa-refresher's `scan` and `refresh` unit tests); these tests keep what needs the real
//! process: the AWS SDK's paging, retries, credential providers and TLS, the Kubernetes client's
//! conflicts, leader election, the HTTP endpoints and signals.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use capa_core::table::{Table, TypeName};
use e2e_tests::fake_kube::FakeKube;
use e2e_tests::paths;
use e2e_tests::servers::{Ec2, Process, wait_for};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const NS: &str = "openshift-machine-api";
const CM: &str = "machineset-instance-types";
/// moto 5.2.1's catalogue: 1263 types → 13 pages of 100.
const PAGES: usize = 13;

struct Cluster {
    kube: FakeKube,
    ec2: Ec2,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn new() -> Self {
        let kube = FakeKube::start().unwrap();
        let ec2 = Ec2::start().unwrap();
        let dir = paths::scratch_dir("refresher");
        let kubeconfig = kube.write_kubeconfig(&dir).unwrap();
        kube.put(e2e_tests::objects::infrastructure(&ec2.proxy_url));
        Cluster {
            kube,
            ec2,
            dir,
            kubeconfig,
        }
    }

    fn secret(&self, name: &str, key_id: &str, secret: &str) {
        self.kube
            .put(e2e_tests::objects::aws_secret(NS, name, key_id, secret));
    }

    fn machineset(&self, name: &str, region: &str, instance_type: &str, secret: &str) {
        self.kube
            .put(machineset(name, region, instance_type, secret));
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = e2e_tests::objects::refresher_command(&self.kubeconfig, &self.dir);
        // no policy runs in these tests (unless one installs an admission step): a re-admission
        // never changes the annotations, so no second try unless the test asks for one
        if !args.contains(&"--readmit-retry-after") {
            c.args(["--readmit-retry-after", "0s"]);
        }
        c.args(args)
            .args(["--metrics-bind-address", "0", "--health-addr", "0"]);
        c
    }

    fn once(&self, extra: &[&str]) -> Output {
        let mut args = vec!["--once"];
        args.extend_from_slice(extra);
        let out = self.command(&args).output().unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (build it: cargo build -p capa-refresher)",
                paths::refresher_bin().display()
            )
        });
        eprintln!(
            "--- refresher stderr ---\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn spawn(&self, extra: &[&str]) -> Process {
        let child = self
            .command(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Process::from_child(child, "capa-refresher")
    }

    fn configmap(&self) -> Option<Value> {
        self.kube.get("v1", "ConfigMap", Some(NS), CM)
    }

    fn table(&self) -> Table {
        let cm = self.configmap().expect("the ConfigMap exists");
        let data = cm["data"].as_object().unwrap();
        let (t, bad) =
            Table::from_configmap_data(data.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())));
        assert!(bad.is_empty());
        t
    }

    fn events(&self) -> Vec<Value> {
        self.kube.list("v1", "Event")
    }

    fn requests(&self, verb: &str, resource: &str) -> usize {
        self.kube
            .requests()
            .iter()
            .filter(|r| r.verb == verb && r.resource == resource)
            .count()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn b64(s: &str) -> String {
    e2e_tests::servers::base64(s)
}

fn machineset(name: &str, region: &str, instance_type: &str, secret: &str) -> Value {
    e2e_tests::objects::machineset(NS, name, region, instance_type, secret)
}

fn cap(t: &Table, name: &str) -> (u32, u64, u32, String) {
    let c = t
        .get(TypeName::parse(name).unwrap())
        .unwrap_or_else(|| panic!("{name} not in the table"));
    (c.vcpu, c.memory_mib, c.gpu, c.arch.to_string())
}

#[test]
fn fresh_cluster_one_refresh_fills_the_table() {
    let c = Cluster::new();
    c.secret("aws-creds", "AKIAE2E", "s3cr3t-value-never-logged");
    c.machineset("w1", "eu-west-3", "m6g.xlarge", "aws-creds");
    let out = c.once(&[]);
    assert!(out.status.success(), "--once failed");
    let t = c.table();
    assert_eq!(t.len(), 1263, "every type moto knows");
    // reference/sample-capacities.md (types moto 5.2.1 has)
    for (name, want) in [
        ("m5.large", (2, 8192, 0, "amd64")),
        ("m5.xlarge", (4, 16384, 0, "amd64")),
        ("m6i.8xlarge", (32, 131072, 0, "amd64")),
        ("t2.micro", (1, 1024, 0, "amd64")),
        ("t3.micro", (2, 1024, 0, "amd64")),
        ("t4g.medium", (2, 4096, 0, "arm64")),
        ("c6g.xlarge", (4, 8192, 0, "arm64")),
        ("a1.2xlarge", (8, 16384, 0, "arm64")),
        ("m6g.4xlarge", (16, 65536, 0, "arm64")),
        ("p4d.24xlarge", (96, 1179648, 8, "amd64")),
        ("p5.48xlarge", (192, 2097152, 8, "amd64")),
        ("g4dn.xlarge", (4, 16384, 1, "amd64")),
        ("g4ad.xlarge", (4, 16384, 1, "amd64")),
        ("g5.xlarge", (4, 16384, 1, "amd64")),
        ("g5g.xlarge", (4, 8192, 1, "arm64")),
        ("dl1.24xlarge", (96, 786432, 8, "amd64")),
        ("inf1.xlarge", (4, 8192, 0, "amd64")),
        ("inf2.xlarge", (4, 16384, 0, "amd64")),
        ("trn1.2xlarge", (8, 32768, 0, "amd64")),
        ("mac1.metal", (12, 32768, 0, "amd64")),
        ("mac2.metal", (8, 16384, 0, "arm64")),
        ("g6f.large", (2, 8192, 0, "amd64")),
    ] {
        let (v, m, g, a) = want;
        assert_eq!(cap(&t, name), (v, m, g, a.to_string()), "{name}");
    }
    let cm = c.configmap().unwrap();
    let ann = &cm["metadata"]["annotations"];
    assert_eq!(ann["capa-annotator.io/format-version"], "1");
    assert_eq!(ann["capa-annotator.io/regions"], "eu-west-3");
    assert!(
        ann["capa-annotator.io/last-refresh"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    // paging: exactly ceil(1263/100) calls, all with MaxResults=100
    let calls: Vec<Value> = c
        .ec2
        .calls()
        .unwrap()
        .into_iter()
        .filter(|c| c["action"] == "DescribeInstanceTypes")
        .collect();
    assert_eq!(calls.len(), PAGES);
    assert!(calls.iter().all(|c| c["max_results"] == 100));
    // secrets never appear in the output
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("s3cr3t-value-never-logged"));
    // the MachineSet is re-admitted (a patch), since it is not annotated
    assert_eq!(c.requests("patch", "machinesets"), 1);
    let ms = c
        .kube
        .get("machine.openshift.io/v1beta1", "MachineSet", Some(NS), "w1")
        .unwrap();
    assert_eq!(
        ms["metadata"]["annotations"]["capa-annotator.io/table-entry"],
        "m6g.xlarge vcpu=4 memoryMiB=16384 gpu=0 arch=arm64"
    );
    assert!(
        ms["metadata"]["annotations"]
            .get("machine.openshift.io/vCPU")
            .is_none(),
        "the refresher never writes capacity itself"
    );
}

#[test]
fn throttled_twice_then_ok() {
    let c = Cluster::new();
    c.secret("aws-creds", "AKIAE2E", "s");
    c.machineset("w1", "eu-west-3", "m5.large", "aws-creds");
    c.ec2
        .fault(json!({"action": "DescribeInstanceTypes", "status": 503, "code": "RequestLimitExceeded", "count": 2}))
        .unwrap();
    assert!(c.once(&[]).status.success());
    let statuses = c.ec2.statuses("DescribeInstanceTypes").unwrap();
    assert_eq!(&statuses[..3], &[json!(503), json!(503), json!(200)]);
    assert_eq!(statuses.len(), PAGES + 2);
    assert_eq!(c.table().len(), 1263);
}

#[test]
fn auth_failure_in_one_group_keeps_entries_and_warns() {
    let c = Cluster::new();
    let (id, secret) = c.ec2.enable_auth().unwrap();
    c.secret("good", &id, &secret);
    c.secret("bad", &id, "wrong-secret-value");
    c.machineset("good-ms", "eu-west-3", "m5.large", "good");
    c.machineset("bad-ms", "us-east-1", "m5.large", "bad");
    // an entry written earlier, for a type no region returns: must survive
    let mut old = Table::new();
    old.insert(
        TypeName::parse("zz9.huge").unwrap(),
        capa_core::Capacity {
            vcpu: 9,
            memory_mib: 9,
            gpu: 0,
            arch: capa_core::Arch::Amd64,
            gpu_vendor: None,
        },
    );
    let data: serde_json::Map<String, Value> = old
        .to_configmap_data()
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    c.kube.put(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CM, "namespace": NS,
        "annotations": {"capa-annotator.io/regions": "ap-south-1"}}, "data": data}),
    );

    let out = c.once(&[]);
    assert!(!out.status.success(), "--once must report the failed group");
    let t = c.table();
    assert_eq!(t.len(), 1264, "eu-west-3 fetched, the old entry kept");
    assert_eq!(cap(&t, "zz9.huge").0, 9);
    let ann = &c.configmap().unwrap()["metadata"]["annotations"];
    assert_eq!(
        ann["capa-annotator.io/regions"], "ap-south-1,eu-west-3",
        "a failed region is not recorded, none is lost"
    );
    let events = c.events();
    let bad: Vec<&Value> = events
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "bad-ms")
        .collect();
    assert!(
        !bad.is_empty(),
        "a Warning Event on the MachineSet whose Secret failed"
    );
    assert_eq!(bad[0]["type"], "Warning");
    let msg = bad[0]["message"].as_str().unwrap();
    assert!(msg.contains("Secret openshift-machine-api/bad"), "{msg}");
    // secrets never appear in logs, events or output
    let everything = format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        json!(events)
    );
    assert!(!everything.contains(&secret) && !everything.contains("wrong-secret-value"));
    // the auth failure was not retried
    let auth_calls = c
        .ec2
        .calls()
        .unwrap()
        .into_iter()
        .filter(|x| x["region"] == "us-east-1" && x["status"] == 401)
        .count();
    assert_eq!(auth_calls, 1, "AuthFailure is not retried");
}

#[test]
fn conflicting_writer_is_retried_and_nothing_is_lost() {
    let c = Cluster::new();
    c.secret("aws-creds", "AKIAE2E", "s");
    c.machineset("w1", "eu-west-3", "m5.large", "aws-creds");
    c.kube.put(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CM, "namespace": NS}, "data": {}}));
    c.kube.interfere_before_next_write(
        "v1",
        "ConfigMap",
        Some(NS),
        CM,
        Box::new(|cm: &mut Value| {
            cm["data"]["zz8"] =
                json!(r#"{"huge":{"vcpu":8,"memoryMiB":8,"gpu":0,"arch":"arm64"}}"#);
        }),
    );
    assert!(c.once(&[]).status.success());
    let t = c.table();
    assert_eq!(t.len(), 1264, "the other writer's entry survived the retry");
    assert_eq!(cap(&t, "zz8.huge"), (8, 8, 0, "arm64".into()));
    assert!(
        c.requests("update", "configmaps") >= 2,
        "a conflict, then a successful write"
    );
}

#[test]
fn dry_run_prints_the_table_and_writes_nothing() {
    let c = Cluster::new();
    c.secret("aws-creds", "AKIAE2E", "s");
    c.machineset("w1", "eu-west-3", "m5.large", "aws-creds");
    let out = c.once(&["--dry-run"]);
    assert!(out.status.success());
    let cm: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["data"].as_object().unwrap().len(), 177, "families");
    assert!(c.configmap().is_none());
    assert_eq!(c.requests("patch", "machinesets"), 0);
}

/// A Lease left by another holder is taken over once its record has stayed unchanged for the lease
/// duration on the refresher's own clock — even when its renewTime lies in the future (a node with
/// a clock ahead), which a wall-clock comparison would wait for forever.
#[test]
fn a_lease_left_by_another_holder_is_taken_over_whatever_its_clock() {
    let c = Cluster::new();
    c.kube.put(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "capa-refresher", "namespace": NS},
        "spec": {"holderIdentity": "other", "leaseDurationSeconds": 2,
                 "renewTime": "2099-01-01T00:00:00.000000Z"}
    }));
    let _refresher = c.spawn(&["--leader-elect", "--leader-elect-lease-duration", "2s"]);
    let holder = wait_for(Duration::from_secs(30), || {
        let lease = c.kube.get(
            "coordination.k8s.io/v1",
            "Lease",
            Some(NS),
            "capa-refresher",
        )?;
        let h = lease["spec"]["holderIdentity"].as_str()?.to_string();
        (h != "other").then_some(lease)
    })
    .expect("the abandoned lease was taken over");
    assert_eq!(holder["spec"]["leaseTransitions"], 1);
}

/// A leader that died mid-scan had recorded the scan in the Lease first: the replica that takes
/// over waits out `--min-region-scan-interval` for that region before it scans it (and records its
/// own scans in turn), while a region the old leader did not scan is scanned at once. A 409
/// Conflict on its own renewal does not make the new leader step down.
#[test]
fn a_new_leader_keeps_to_the_scan_interval_its_predecessor_recorded() {
    use e2e_tests::fake_kube::{ApiFault, ApiFaultEffect};
    let c = Cluster::new();
    c.secret("aws-creds", "AKIAE2E", "s");
    c.machineset("w1", "eu-west-3", "m5.large", "aws-creds");
    c.machineset("w2", "us-east-1", "m5.large", "aws-creds");
    let now = Command::new("date")
        .args(["-u", "+%s.%N %Y-%m-%dT%H:%M:%S.%6NZ"])
        .output()
        .unwrap();
    let now = String::from_utf8(now.stdout).unwrap();
    let (epoch, rfc3339) = now.trim().split_once(' ').unwrap();
    let recorded_at: f64 = epoch.parse().unwrap();
    let scans = json!({"eu-west-3": rfc3339}).to_string();
    c.kube.put(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "capa-refresher", "namespace": NS,
                     "annotations": {"capa-annotator.io/region-scans": scans}},
        "spec": {"holderIdentity": "dead-leader", "leaseDurationSeconds": 2,
                 "renewTime": rfc3339}
    }));
    let _refresher = c.spawn(&[
        "--leader-elect",
        "--leader-elect-lease-duration",
        "3s",
        "--min-region-scan-interval",
        "15s",
    ]);
    let lease = || {
        c.kube
            .get(
                "coordination.k8s.io/v1",
                "Lease",
                Some(NS),
                "capa-refresher",
            )
            .unwrap()
    };
    wait_for(Duration::from_secs(30), || {
        (lease()["spec"]["holderIdentity"] != "dead-leader").then_some(())
    })
    .expect("the lease was taken over");
    // a conflict on its own renewal: retried, not taken for lost leadership
    c.kube.inject(ApiFault {
        verb: Some("update"),
        resource: Some("leases"),
        user: None,
        effect: ApiFaultEffect::Conflict,
        count: 1,
    });
    let first_scan = |region: &str| {
        c.ec2
            .calls()
            .unwrap()
            .into_iter()
            .find(|call| call["action"] == "DescribeInstanceTypes" && call["region"] == region)
    };
    let us = wait_for(Duration::from_secs(60), || first_scan("us-east-1"))
        .expect("the region the old leader did not scan is scanned at once");
    let eu = wait_for(Duration::from_secs(60), || first_scan("eu-west-3"))
        .expect("the recorded region is scanned once the interval has passed");
    let eu_at = eu["t"].as_f64().unwrap();
    assert!(
        eu_at >= recorded_at + 15.0,
        "eu-west-3 scanned {:.1}s after the previous leader's scan, less than the 15 s minimum",
        eu_at - recorded_at
    );
    assert!(us["t"].as_f64().unwrap() < eu_at);
    assert_eq!(c.kube.faults_served().get("api_409_conflict"), Some(&1));
    let holder = lease()["spec"]["holderIdentity"].clone();
    let renewed = lease()["spec"]["renewTime"].clone();
    wait_for(Duration::from_secs(10), || {
        (lease()["spec"]["renewTime"] != renewed).then_some(())
    })
    .expect("the leader kept renewing after the conflict");
    let l = lease();
    assert_eq!(l["spec"]["holderIdentity"], holder);
    assert_eq!(l["spec"]["leaseTransitions"], 1, "{l}");
    // its own scans are recorded for the next leader
    let recorded: Value = serde_json::from_str(
        l["metadata"]["annotations"]["capa-annotator.io/region-scans"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(recorded.get("us-east-1").is_some(), "{recorded}");
    assert_ne!(recorded["eu-west-3"], json!(rfc3339), "{recorded}");
}

/// The policy server caches ConfigMap reads for 5 s, so the policy may answer a re-admission from
/// the table as it was before the refresher's write: the refresher sees the MachineSet still does
/// not match and re-admits it once more after `--readmit-retry-after`.
#[test]
fn readmission_is_retried_when_the_policy_answered_from_an_older_table() {
    use e2e_tests::fake_kube::AdmissionResult;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let c = Cluster::new();
    c.secret("aws-creds", "AKIAE2E", "s");
    c.machineset("w1", "eu-west-3", "m5.large", "aws-creds");
    let admissions = Arc::new(AtomicUsize::new(0));
    let seen = admissions.clone();
    c.kube.set_admission(
        "machine.openshift.io/v1beta1",
        "MachineSet",
        Arc::new(move |review| {
            // first: a policy reading a cached, older table (no annotations, a warning);
            // then: the table the refresher wrote
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                return Some(AdmissionResult {
                    warnings: vec!["unknown instance type (stale table)".into()],
                    ..Default::default()
                });
            }
            Some(annotated_as_m5_large(&review.object))
        }),
    );
    let out = c.once(&["--readmit-retry-after", "1s"]);
    assert!(out.status.success());
    assert_eq!(admissions.load(Ordering::SeqCst), 2, "re-admitted twice");
    let ms = c
        .kube
        .get("machine.openshift.io/v1beta1", "MachineSet", Some(NS), "w1")
        .unwrap();
    assert_eq!(
        ms["metadata"]["annotations"]["machine.openshift.io/vCPU"],
        "2"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("re-admitting them again"));

    // with the second try turned off, one admission and a warning in the log
    let c = Cluster::new();
    c.secret("aws-creds", "AKIAE2E", "s");
    c.machineset("w1", "eu-west-3", "m5.large", "aws-creds");
    c.kube.set_admission(
        "machine.openshift.io/v1beta1",
        "MachineSet",
        Arc::new(|_| Some(AdmissionResult::default())),
    );
    let out = c.once(&[]);
    assert!(out.status.success());
    assert_eq!(c.kube.admissions().len(), 1, "no second try");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is the capa-annotator policy active"),
        "the log names the likely cause"
    );

    // a policy that never annotates: two tries, then the log names the likely causes
    let c = Cluster::new();
    c.secret("aws-creds", "AKIAE2E", "s");
    c.machineset("w1", "eu-west-3", "m5.large", "aws-creds");
    c.kube.set_admission(
        "machine.openshift.io/v1beta1",
        "MachineSet",
        Arc::new(|_| Some(AdmissionResult::default())),
    );
    let out = c.once(&["--readmit-retry-after", "1s"]);
    assert!(out.status.success());
    assert_eq!(c.kube.admissions().len(), 2);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("re-admitted twice, but its annotations still do not match the table"),
        "the log says the second try failed too"
    );
}

/// What the policy answers for an m5.large MachineSet: its four annotations.
fn annotated_as_m5_large(object: &Value) -> e2e_tests::fake_kube::AdmissionResult {
    let mut annotated = object.clone();
    for (k, v) in [
        ("machine.openshift.io/vCPU", "2"),
        ("machine.openshift.io/memoryMb", "8192"),
        ("machine.openshift.io/GPU", "0"),
        (
            "capacity.cluster-autoscaler.kubernetes.io/labels",
            "kubernetes.io/arch=amd64",
        ),
    ] {
        annotated["metadata"]["annotations"][k] = json!(v);
    }
    e2e_tests::fake_kube::AdmissionResult {
        patch: Some(json_patch::diff(object, &annotated)),
        ..Default::default()
    }
}

/// A leader heals from the stored table at once, without waiting for its first refresh: here the
/// first refresh is held by a slow EC2 answer (30 s) while a MachineSet stored without annotations
/// (admission bypassed) is re-submitted within seconds and annotated by the policy.
#[test]
fn a_leader_heals_from_the_stored_table_before_its_first_refresh_ends() {
    use std::sync::Arc;
    let c = Cluster::new();
    c.secret("aws-creds", "AKIAE2E", "s");
    c.machineset("w1", "eu-west-3", "m5.large", "aws-creds");
    assert!(c.once(&[]).status.success(), "the table is stored");
    let first_pages = c.ec2.statuses("DescribeInstanceTypes").unwrap().len();
    // the policy: annotates m5.large
    c.kube.set_admission(
        "machine.openshift.io/v1beta1",
        "MachineSet",
        Arc::new(|review| Some(annotated_as_m5_large(&review.object))),
    );
    c.ec2
        .fault(json!([{"action": "DescribeInstanceTypes", "delay_ms": 30000, "count": 1}]))
        .unwrap();
    // stored while the policy server was down: no annotations
    c.machineset("w2", "eu-west-3", "m5.large", "aws-creds");
    let started = std::time::Instant::now();
    let _service = c.spawn(&[]);
    let annotated = wait_for(Duration::from_secs(20), || {
        let ms = c
            .kube
            .get("machine.openshift.io/v1beta1", "MachineSet", Some(NS), "w2")?;
        (ms["metadata"]["annotations"]["machine.openshift.io/vCPU"] == "2").then_some(())
    });
    assert!(annotated.is_some(), "w2 was not healed within 20 s");
    let healed_after = started.elapsed();
    let pages = c.ec2.statuses("DescribeInstanceTypes").unwrap().len();
    assert!(
        pages == first_pages + 1 && healed_after < Duration::from_secs(30),
        "healed after {healed_after:?}: the first refresh's held page (30 s) must be the only EC2 call since ({pages} calls, {first_pages} before)"
    );
    eprintln!("healed {healed_after:?} after the start, the first refresh still waiting on EC2");
}

/// `--once --dry-run --output snapshot` with a cluster's MachineSets and Secrets prints the same
/// built-in table file as the cluster-less pipeline (`make snapshot`) for the same region.
#[test]
fn dry_run_snapshot_from_a_cluster_is_the_builtin_file() {
    let committed = std::fs::read_to_string(e2e_tests::snapshot::snapshot_file()).unwrap();
    let parsed = capa_core::builtin::parse(&committed).unwrap();
    let c = Cluster::new();
    c.secret("aws-creds", "AKIAE2E", "s");
    c.machineset("w1", e2e_tests::snapshot::REGION, "m5.large", "aws-creds");
    let out = c.once(&[
        "--dry-run",
        "--output",
        "snapshot",
        "--snapshot-source",
        &parsed.source,
        "--snapshot-date",
        &parsed.date,
    ]);
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout).unwrap() == committed,
        "the cluster path printed a different snapshot"
    );
    assert!(c.configmap().is_none());

    // a region that fails: no snapshot at all, rather than one that silently lacks types
    c.machineset("w2", "eu-west-3", "m5.large", "missing-secret");
    let out = c.once(&["--dry-run", "--output", "snapshot"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "a partial snapshot was printed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no snapshot printed"));
}

#[test]
fn new_machineset_in_a_new_region_is_refreshed_within_a_minute() {
    let c = Cluster::new();
    c.secret("aws-creds", "AKIAE2E", "s");
    c.machineset("w1", "eu-west-3", "m5.large", "aws-creds");
    let _svc = c.spawn(&[]);
    wait_for(Duration::from_secs(60), || c.configmap()).expect("first refresh wrote the table");
    assert_eq!(
        c.ec2
            .count("DescribeInstanceTypes", Some("us-west-2"))
            .unwrap(),
        0
    );
    c.machineset("w2", "us-west-2", "m6g.xlarge", "aws-creds");
    let covered = wait_for(Duration::from_secs(60), || {
        let cm = c.configmap()?;
        let regions = cm["metadata"]["annotations"]["capa-annotator.io/regions"]
            .as_str()?
            .to_string();
        regions.contains("us-west-2").then_some(regions)
    });
    assert_eq!(covered.as_deref(), Some("eu-west-3,us-west-2"));
    assert_eq!(
        c.ec2
            .count("DescribeInstanceTypes", Some("us-west-2"))
            .unwrap(),
        PAGES
    );
    assert_eq!(
        c.ec2
            .count("DescribeInstanceTypes", Some("eu-west-3"))
            .unwrap(),
        PAGES,
        "the other region is not scanned again"
    );
    // and the new MachineSet was re-admitted
    let ms = wait_for(Duration::from_secs(10), || {
        let ms = c
            .kube
            .get("machine.openshift.io/v1beta1", "MachineSet", Some(NS), "w2")?;
        ms["metadata"]["annotations"]
            .get("capa-annotator.io/table-entry")
            .cloned()
    });
    assert!(ms.is_some());
}

#[test]
fn shared_credentials_file_in_the_secret() {
    let c = Cluster::new();
    let file = "[default]\naws_access_key_id = AKIAFROMFILE\naws_secret_access_key = file-secret-never-logged\n";
    c.kube.put(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "file-creds", "namespace": NS},
        // `credentials` wins over the static keys
        "data": {"credentials": b64(file), "aws_access_key_id": b64("AKIASTATIC"), "aws_secret_access_key": b64("x")}
    }));
    c.machineset("w1", "eu-west-3", "m5.large", "file-creds");
    let out = c.once(&[]);
    assert!(out.status.success());
    let keys: Vec<Value> = c
        .ec2
        .calls()
        .unwrap()
        .iter()
        .map(|x| x["access_key"].clone())
        .collect();
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k == "AKIAFROMFILE"),
        "{keys:?}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("file-secret-never-logged"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn service_serves_metrics_and_health_elects_a_leader_and_stops_on_sigterm() {
    let c = Cluster::new();
    c.secret("aws-creds", "AKIAE2E", "s");
    c.machineset("w1", "eu-west-3", "m5.large", "aws-creds");
    let (mp, hp) = (free_port(), free_port());
    let metrics_addr = format!("127.0.0.1:{mp}");
    let health_addr = format!("127.0.0.1:{hp}");
    let mut child = Command::new(paths::refresher_bin())
        .args([
            "--metrics-bind-address",
            &metrics_addr,
            "--health-addr",
            &health_addr,
            "--leader-elect",
            "--log-format",
            "json",
            // no policy here: the re-admission cannot change anything, no second try
            "--readmit-retry-after",
            "0s",
        ])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", &c.dir)
        .env("POD_NAME", "refresher-0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let get = |addr: &str, path: &str| {
        e2e_tests::servers::raw(
            &format!("http://{addr}"),
            "GET",
            path,
            "text/plain",
            &[],
            b"",
        )
        .ok()
    };
    assert_eq!(
        wait_for(Duration::from_secs(30), || get(&health_addr, "/healthz")).as_deref(),
        Some("ok")
    );
    assert_eq!(get(&health_addr, "/readyz").as_deref(), Some("ok"));
    let lease = wait_for(Duration::from_secs(30), || {
        c.kube.get(
            "coordination.k8s.io/v1",
            "Lease",
            Some(NS),
            "capa-refresher",
        )
    })
    .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "refresher-0");
    let metrics = wait_for(Duration::from_secs(60), || {
        let m = get(&metrics_addr, "/metrics")?;
        m.contains("capa_refresher_refreshes_total{result=\"success\"} 1")
            .then_some(m)
    })
    .expect("a successful refresh in the metrics");
    for needle in [
        "capa_refresher_table_instance_types 1263",
        "capa_refresher_ec2_calls_total{operation=\"DescribeInstanceTypes\",result=\"success\"} 13",
        "capa_refresher_ec2_calls_total{operation=\"DescribeRegions\",result=\"success\"} 1",
        "capa_refresher_last_success_timestamp_seconds",
        "capa_refresher_refresh_duration_seconds_count 1",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    // the refresh re-admitted the MachineSet (no policy here: the healing tries it again later)
    let readmitted: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("capa_refresher_machinesets_readmitted_total ")?
                .parse()
                .ok()
        })
        .unwrap_or(0.0);
    assert!(readmitted >= 1.0, "not re-admitted:\n{metrics}");
    // SIGTERM: a clean, prompt exit
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten())
        .expect("exits after SIGTERM");
    assert!(exited.success(), "exit status {exited:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !lines.is_empty() && lines.len() == log.lines().count(),
        "--log-format json: every line is JSON:\n{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "SIGTERM received; shutting down"),
        "{log}"
    );
}

#[test]
fn web_identity_role_in_the_shared_file_goes_through_sts() {
    let c = Cluster::new();
    let token = c.dir.join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.e2e.token").unwrap();
    let file = format!(
        "[default]\nrole_arn = arn:aws:iam::123456789012:role/capa-refresher\nweb_identity_token_file = {}\nrole_session_name = capa\n",
        token.display()
    );
    c.kube.put(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sts-creds", "namespace": NS},
        "data": {"credentials": b64(&file)}
    }));
    c.machineset("w1", "eu-west-3", "m5.large", "sts-creds");
    // STS (moto) behind the same proxy, which passes non-EC2 calls through
    let out = c
        .command(&["--once"])
        .env("AWS_ENDPOINT_URL_STS", &c.ec2.proxy_url)
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert_eq!(c.table().len(), 1263);
    let keys: Vec<String> = c
        .ec2
        .calls()
        .unwrap()
        .iter()
        .map(|x| x["access_key"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k.starts_with("ASIA")),
        "EC2 was called with STS-issued keys: {keys:?}"
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it (openssl CLI).
fn make_ca(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=capa e2e test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
fn custom_ca_bundle_from_kube_cloud_config_is_trusted() {
    let c = Cluster::new();
    let (ca, cert, key) = make_ca(&c.dir);
    let (_tls_proxy, tls_url) =
        e2e_tests::servers::start_proxy(&c.ec2.moto_url, Some((&cert, &key))).unwrap();
    assert!(tls_url.starts_with("https://"));
    c.kube.put(json!({
        "apiVersion": "config.openshift.io/v1", "kind": "Infrastructure", "metadata": {"name": "cluster"},
        "status": {"platformStatus": {"aws": {"serviceEndpoints": [{"name": "ec2", "url": tls_url}]}}}
    }));
    c.secret("aws-creds", "AKIAE2E", "s");
    c.machineset("w1", "eu-west-3", "m5.large", "aws-creds");
    // without the bundle the endpoint's certificate is not trusted
    let out = c.once(&[]);
    assert!(!out.status.success(), "an unknown CA must fail");
    assert!(c.configmap().is_none());
    // with it, the refresh works
    c.kube.put(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-cloud-config", "namespace": "openshift-config-managed"},
        "data": {"ca-bundle.pem": std::fs::read_to_string(&ca).unwrap()}
    }));
    let out = c.once(&[]);
    assert!(out.status.success(), "the custom CA bundle must be trusted");
    assert_eq!(c.table().len(), 1263);
    // a bundle that is not PEM is a clear error, not a crash
    c.kube.put(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-cloud-config", "namespace": "openshift-config-managed"},
        "data": {"ca-bundle.pem": "a custom bundle"}
    }));
    let out = c.once(&[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CA bundle"),
        "names the CA bundle"
    );
}

#[test]
fn internal_errors_and_slow_answers_are_retried() {
    let c = Cluster::new();
    c.secret("aws-creds", "AKIAE2E", "s");
    c.machineset("w1", "eu-west-3", "m5.large", "aws-creds");
    c.ec2
        .fault(json!([
            {"action": "DescribeInstanceTypes", "status": 500, "code": "InternalError", "count": 1},
            {"action": "DescribeInstanceTypes", "delay_ms": 1500, "count": 1}
        ]))
        .unwrap();
    assert!(c.once(&[]).status.success());
    let statuses = c.ec2.statuses("DescribeInstanceTypes").unwrap();
    assert_eq!(
        &statuses[..2],
        &[json!(500), json!(200)],
        "a 500 is retried; the slow answer is waited for"
    );
    assert_eq!(statuses.len(), PAGES + 1);
    assert_eq!(c.table().len(), 1263);
}

#[test]
fn a_metrics_port_in_use_is_a_failed_start() {
    let c = Cluster::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let mut child = Command::new(paths::refresher_bin())
        .args(["--metrics-bind-address", &addr, "--health-addr", "0"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", &c.dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_for(Duration::from_secs(30), || child.try_wait().ok().flatten());
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the refresher kept running without its metrics port")
    });
    assert!(!status.success(), "exit status {status:?}");
}

/// `--cluster-api` on a cluster where the Cluster API objects cannot be read (here: 500 on every
/// list of them): the Machine API MachineSets are refreshed all the same, and the log says why the
/// Cluster API objects were not.
#[test]
fn unreadable_cluster_api_objects_do_not_stop_the_machinesets_refresh() {
    use e2e_tests::fake_kube::{ApiFault, ApiFaultEffect};
    let c = Cluster::new();
    c.secret("aws-creds", "AKIAE2E", "s");
    c.machineset("w1", "eu-west-3", "m5.xlarge", "aws-creds");
    c.kube.inject(ApiFault {
        verb: Some("list"),
        resource: Some("machinedeployments"),
        user: None,
        effect: ApiFaultEffect::InternalError,
        count: 100,
    });
    let out = c.once(&["--cluster-api"]);
    assert!(out.status.success(), "--once failed");
    assert_eq!(c.table().len(), 1263);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("cannot read Cluster API objects; they are not refreshed this time"),
        "{log}"
    );
    assert!(!c.kube.faults_served().is_empty());
}
