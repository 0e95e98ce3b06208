//! A real Kubernetes control plane for the whole-system tests, started the way controller-runtime's
//! envtest starts one: `etcd` and `kube-apiserver` as processes on 127.0.0.1, with RBAC
//! authorization, the admission webhook plugins, a service-account signer (tokens from the
//! TokenRequest API) and an audit log of every request. No controller-manager, scheduler or
//! kubelet: namespaces and ServiceAccounts are created by the test, webhooks are called by URL.
//!
//! The binaries: `$KUBE_APISERVER` and `$ETCD` (default: `kube-apiserver` and `etcd` on the PATH).
//! Certificates are made with the `openssl` command. Everything lives in one scratch directory,
//! and both processes are stopped when the [`RealCluster`] is dropped.

use crate::servers::Process;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, read back, released).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn binary(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// `openssl <args>`, failing with its stderr.
fn openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("cannot run openssl (apt-get install openssl)")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A certificate authority in `dir`, able to issue serving and client certificates.
pub struct Ca {
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, cn: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let cert = dir.join("ca.crt");
        let key = dir.join("ca.key");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            path_str(&key)?,
            "-out",
            path_str(&cert)?,
        ])?;
        Ok(Ca {
            cert,
            key,
            dir: dir.to_path_buf(),
        })
    }

    /// A certificate for `name` signed by this CA: `extensions` is an openssl extension file's
    /// text (subjectAltName, extendedKeyUsage). Returns (certificate, key).
    pub fn issue(&self, name: &str, subject: &str, extensions: &str) -> Result<(PathBuf, PathBuf)> {
        let key = self.dir.join(format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        let cert = self.dir.join(format!("{name}.crt"));
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(&ext, extensions)?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            path_str(&key)?,
            "-out",
            path_str(&csr)?,
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            path_str(&csr)?,
            "-CA",
            path_str(&self.cert)?,
            "-CAkey",
            path_str(&self.key)?,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            path_str(&ext)?,
            "-out",
            path_str(&cert)?,
        ])?;
        Ok((cert, key))
    }

    /// A serving certificate for 127.0.0.1 and localhost.
    pub fn serving(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        self.issue(
            name,
            &format!("/CN={name}"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n\
             keyUsage=digitalSignature,keyEncipherment\n",
        )
    }

    /// The CA certificate, base64 (a webhook's `caBundle`, a kubeconfig's CA data).
    pub fn bundle(&self) -> Result<String> {
        Ok(crate::servers::base64(&std::fs::read_to_string(
            &self.cert,
        )?))
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// One request as the API server's audit log recorded it (level Metadata, stage
/// ResponseComplete).
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub user: String,
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub code: u16,
    /// `authorization.k8s.io/decision`: `allow` or `forbid`.
    pub decision: String,
    pub uri: String,
}

impl AuditEvent {
    fn from_json(v: &Value) -> Option<Self> {
        if v["stage"] != "ResponseComplete" {
            return None;
        }
        let o = &v["objectRef"];
        let s = |x: &Value| x.as_str().map(str::to_string);
        Some(AuditEvent {
            user: s(&v["user"]["username"])?,
            verb: s(&v["verb"])?,
            group: s(&o["apiGroup"]).unwrap_or_default(),
            resource: s(&o["resource"]).unwrap_or_default(),
            subresource: s(&o["subresource"]),
            namespace: s(&o["namespace"]),
            name: s(&o["name"]),
            code: v["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            decision: s(&v["annotations"]["authorization.k8s.io/decision"]).unwrap_or_default(),
            uri: s(&v["requestURI"]).unwrap_or_default(),
        })
    }

    /// The request as the RBAC checks of [`crate::deploy::GrantedRule`] read it.
    pub fn as_request(&self) -> crate::fake_kube::RequestRecord {
        crate::fake_kube::RequestRecord {
            user: self.user.clone(),
            verb: self.verb.clone(),
            group: self.group.clone(),
            resource: match &self.subresource {
                Some(sub) => format!("{}/{sub}", self.resource),
                None => self.resource.clone(),
            },
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    pub fn denied(&self) -> bool {
        self.decision == "forbid" || self.code == 403
    }
}

/// etcd + kube-apiserver on loopback, stopped on drop.
pub struct RealCluster {
    pub dir: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub server: String,
    pub ca: Ca,
    admin_kubeconfig: PathBuf,
    audit_log: PathBuf,
    // dropped in this order: the API server before etcd
    _apiserver: Process,
    _etcd: Process,
}

const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
";

impl RealCluster {
    /// Starts etcd and kube-apiserver in a new scratch directory and waits until `/readyz` is ok.
    pub fn start(tag: &str) -> Result<Self> {
        let dir = crate::paths::scratch_dir(tag);
        let etcd_bin = binary("ETCD", "etcd");
        let apiserver_bin = binary("KUBE_APISERVER", "kube-apiserver");
        let pki = dir.join("pki");
        let ca = Ca::new(&pki, "capa-e2e-ca")?;
        let (api_cert, api_key) = ca.issue(
            "apiserver",
            "/CN=kube-apiserver",
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,IP:10.0.0.1\n\
             extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
        )?;
        let sa_key = pki.join("sa.key");
        let sa_pub = pki.join("sa.pub");
        openssl(&["genrsa", "-out", path_str(&sa_key)?, "2048"])?;
        openssl(&[
            "rsa",
            "-in",
            path_str(&sa_key)?,
            "-pubout",
            "-out",
            path_str(&sa_pub)?,
        ])?;
        let token = format!("capa-e2e-admin-{}", std::process::id());
        let tokens = pki.join("tokens.csv");
        std::fs::write(&tokens, format!("{token},admin,admin-uid,system:masters\n"))?;
        let audit_policy = dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, AUDIT_POLICY)?;
        let audit_log = dir.join("audit.log");

        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_log = std::fs::File::create(dir.join("etcd.log"))?;
        let etcd = Command::new(&etcd_bin)
            .arg("--name=default")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{etcd_port}"
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
            ))
            .arg(format!(
                "--initial-cluster=default=http://127.0.0.1:{peer_port}"
            ))
            .stdout(Stdio::null())
            .stderr(etcd_log)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {} (set $ETCD, or apt-get install etcd-server)",
                    etcd_bin.display()
                )
            })?;
        let etcd = Process::from_child(etcd, "etcd");

        let api_log = std::fs::File::create(dir.join("kube-apiserver.log"))?;
        let apiserver = Command::new(&apiserver_bin)
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={api_port}"))
            .arg(format!("--tls-cert-file={}", api_cert.display()))
            .arg(format!("--tls-private-key-file={}", api_key.display()))
            .arg(format!("--client-ca-file={}", ca.cert.display()))
            .arg(format!("--token-auth-file={}", tokens.display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", sa_pub.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                sa_key.display()
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook")
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--endpoint-reconciler-type=none")
            .arg(format!("--cert-dir={}", dir.join("cert-dir").display()))
            .arg(format!("--audit-policy-file={}", audit_policy.display()))
            .arg(format!("--audit-log-path={}", audit_log.display()))
            .arg("--audit-log-mode=blocking")
            .stdout(Stdio::null())
            .stderr(api_log)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {} (set $KUBE_APISERVER to a kube-apiserver binary)",
                    apiserver_bin.display()
                )
            })?;
        let apiserver = Process::from_child(apiserver, "kube-apiserver");

        let server = format!("https://127.0.0.1:{api_port}");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(&admin_kubeconfig, &server, &ca, &token)?;
        let cluster = RealCluster {
            dir,
            server,
            ca,
            admin_kubeconfig,
            audit_log,
            _apiserver: apiserver,
            _etcd: etcd,
        };
        cluster.wait_ready(Duration::from_secs(120))?;
        Ok(cluster)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let out = self.kubectl_output(&["get", "--raw", "/readyz"])?;
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return Ok(());
            }
            if start.elapsed() > timeout {
                let log = std::fs::read_to_string(self.dir.join("kube-apiserver.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                bail!(
                    "kube-apiserver not ready within {timeout:?} (logs in {}):\n{}",
                    self.dir.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The cluster admin's kubeconfig (`system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    fn kubectl_bin() -> String {
        std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
    }

    fn kubectl_output(&self, args: &[&str]) -> Result<Output> {
        self.kubectl_as(&self.admin_kubeconfig, args, None)
    }

    /// `kubectl --kubeconfig K args` with `stdin`; the raw output.
    pub fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output> {
        let mut cmd = Command::new(Self::kubectl_bin());
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", Self::kubectl_bin()))?;
        if let Some(text) = stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            use std::io::Write;
            pipe.write_all(text.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// `kubectl args` as the admin; fails with kubectl's stderr. Returns (stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> Result<(String, String)> {
        self.kubectl_in(args, None)
    }

    /// `kubectl args` as the admin with `stdin`; fails with kubectl's stderr.
    pub fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> Result<(String, String)> {
        let out = self.kubectl_as(&self.admin_kubeconfig, args, stdin)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!("kubectl {} failed: {stderr}{stdout}", args.join(" "));
        }
        Ok((stdout, stderr))
    }

    /// `kubectl apply --server-side` of JSON/YAML objects as the admin; returns kubectl's stderr
    /// (warnings).
    pub fn apply(&self, manifest: &str) -> Result<String> {
        Ok(self
            .kubectl_in(
                &["apply", "--server-side", "--validate=strict", "-f", "-"],
                Some(manifest),
            )?
            .1)
    }

    /// One object as JSON, `None` when it does not exist.
    pub fn get(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>> {
        let mut args = vec!["get", resource, name, "-o", "json", "--ignore-not-found"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        let (out, _) = self.kubectl(&args)?;
        if out.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&out)?))
    }

    /// Creates ServiceAccount `namespace/name` (no controller does it here) and writes a
    /// kubeconfig with a token from the TokenRequest API for it (as a pod's projected token).
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let sa = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace}});
        self.apply(&sa.to_string())?;
        let (token, _) =
            self.kubectl(&["create", "token", name, "-n", namespace, "--duration=2h"])?;
        let path = self.dir.join(format!("{namespace}-{name}.kubeconfig"));
        write_kubeconfig(&path, &self.server, &self.ca, token.trim())?;
        Ok(path)
    }

    /// Every request the audit log holds so far.
    pub fn audit(&self) -> Result<Vec<AuditEvent>> {
        let text = std::fs::read_to_string(&self.audit_log)
            .with_context(|| format!("reading {}", self.audit_log.display()))?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| AuditEvent::from_json(&v))
            .collect())
    }
}

/// A kubeconfig for `server` authenticating with a bearer `token`.
pub fn write_kubeconfig(path: &Path, server: &str, ca: &Ca, token: &str) -> Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server,
            "certificate-authority-data": ca.bundle()?}}],
        "users": [{"name": "e2e", "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
        "current-context": "e2e",
    });
    std::fs::write(path, serde_json::to_string_pretty(&config)?)?;
    Ok(())
}
