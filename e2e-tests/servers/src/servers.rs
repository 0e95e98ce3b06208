//! Test servers run as processes on 127.0.0.1 and always stopped: moto (EC2) behind our paging
//! and fault-injection proxy (`servers/ec2_proxy.py`), and a tiny HTTP client for their control APIs.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed on drop.
pub struct Process {
    child: Child,
    name: &'static str,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Takes ownership of a spawned child (killed on drop).
    pub fn from_child(child: Child, name: &'static str) -> Self {
        Process { child, name }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// moto in server mode plus the proxy in front of it.
pub struct Ec2 {
    pub moto_url: String,
    pub proxy_url: String,
    _moto: Process,
    _proxy: Process,
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Starts moto on a free port: it prints ` * Running on http://127.0.0.1:PORT` on stderr.
fn start_moto() -> Result<(Process, String)> {
    let mut child = Command::new(python())
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start moto (python3 -m moto.server; pip install 'moto[server]==5.2.1', as .ci/run does)")?;
    let stderr = child.stderr.take().context("moto stderr")?;
    let proc_ = Process {
        child,
        name: "moto",
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(i) = line.find("Running on http://") {
                let url = line[i + "Running on ".len()..].trim().to_string();
                let _ = tx.send(url);
                sent = true;
            }
            // keep draining so moto never blocks on a full pipe
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .context("moto did not report its address within 60 s (is moto[server] installed?)")?;
    Ok((proc_, url))
}

/// Starts the proxy in front of moto; with `tls` = (cert, key) PEM files it serves HTTPS.
pub fn start_proxy(
    moto_url: &str,
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<(Process, String)> {
    let script = crate::paths::workspace().join("e2e-tests/servers/ec2_proxy.py");
    let mut cmd = Command::new(python());
    cmd.arg(&script)
        .args(["--moto", moto_url, "--port", "0", "--snapshot-pages"]);
    if let Some((cert, key)) = tls {
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", script.display()))?;
    let stdout = child.stdout.take().context("proxy stdout")?;
    let proc_ = Process {
        child,
        name: "ec2-proxy",
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("LISTENING ")
        .with_context(|| format!("proxy said {line:?} instead of LISTENING <port>"))?;
    Ok((proc_, format!("{scheme}://127.0.0.1:{port}")))
}

impl Ec2 {
    pub fn start() -> Result<Self> {
        let (moto, moto_url) = start_moto()?;
        let (proxy, proxy_url) = start_proxy(&moto_url, None)?;
        Ok(Ec2 {
            moto_url,
            proxy_url,
            _moto: moto,
            _proxy: proxy,
        })
    }

    /// Every EC2 call the proxy saw: `{t, invocation, attempt, fault, action, region, access_key,
    /// status, max_results, has_next_token}` (servers/README.md).
    pub fn calls(&self) -> Result<Vec<Value>> {
        let v = http(&self.proxy_url, "GET", "/_proxy/calls", None)?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// `(region, action)` counts of successful-or-not calls.
    pub fn count(&self, action: &str, region: Option<&str>) -> Result<usize> {
        Ok(self
            .calls()?
            .iter()
            .filter(|c| c["action"] == action && region.is_none_or(|r| c["region"] == r))
            .count())
    }

    /// HTTP statuses of the calls of `action`, in order.
    pub fn statuses(&self, action: &str) -> Result<Vec<Value>> {
        Ok(self
            .calls()?
            .into_iter()
            .filter(|c| c["action"] == action)
            .map(|c| c["status"].clone())
            .collect())
    }

    pub fn fault(&self, fault: Value) -> Result<()> {
        http(&self.proxy_url, "POST", "/_proxy/faults", Some(&fault)).map(|_| ())
    }

    /// From now on DescribeInstanceTypes in `region` also lists `copy_of` under the name `new_type`.
    pub fn regional_type(&self, region: &str, copy_of: &str, new_type: &str) -> Result<()> {
        let spec = serde_json::json!({"region": region, "copy_of": copy_of, "as": new_type});
        http(
            &self.proxy_url,
            "POST",
            "/_proxy/regional-types",
            Some(&spec),
        )
        .map(|_| ())
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) -> Result<()> {
        http(&self.proxy_url, "DELETE", "/_proxy/faults", None).map(|_| ())
    }

    pub fn reset_calls(&self) -> Result<()> {
        http(&self.proxy_url, "DELETE", "/_proxy/calls", None).map(|_| ())
    }

    /// Turns moto's real SigV4 checking on and returns the (access key, secret) of an IAM user
    /// allowed `ec2:Describe*` (see servers/README.md).
    pub fn enable_auth(&self) -> Result<(String, String)> {
        raw(
            &self.moto_url,
            "POST",
            "/moto-api/reset-auth",
            "text/plain",
            &[],
            b"3",
        )?;
        let fake = [(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDBOOT/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
        )];
        let form = "application/x-www-form-urlencoded";
        raw(
            &self.moto_url,
            "POST",
            "/",
            form,
            &fake,
            b"Action=CreateUser&Version=2010-05-08&UserName=e2e",
        )?;
        let keys = raw(
            &self.moto_url,
            "POST",
            "/",
            form,
            &fake,
            b"Action=CreateAccessKey&Version=2010-05-08&UserName=e2e",
        )?;
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}]}"#;
        let body = format!(
            "Action=PutUserPolicy&Version=2010-05-08&UserName=e2e&PolicyName=ec2-read&PolicyDocument={}",
            urlencode(policy)
        );
        raw(&self.moto_url, "POST", "/", form, &fake, body.as_bytes())?;
        let between = |s: &str, a: &str, b: &str| -> Option<String> {
            let i = s.find(a)? + a.len();
            let j = s[i..].find(b)? + i;
            Some(s[i..j].to_string())
        };
        let id = between(&keys, "<AccessKeyId>", "</AccessKeyId>")
            .context("no AccessKeyId in CreateAccessKey answer")?;
        let secret = between(&keys, "<SecretAccessKey>", "</SecretAccessKey>")
            .context("no SecretAccessKey")?;
        Ok((id, secret))
    }
}

/// Standard base64 (Secret `data` values in fixtures).
pub fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.as_bytes().chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                T[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A JSON request to a loopback server.
pub fn http(base: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let text = raw(
        base,
        method,
        path,
        "application/json",
        &[],
        bytes.as_bytes(),
    )?;
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON: {text}"))
}

/// A plain HTTP/1.1 request to a loopback server; the body of a 2xx answer.
pub fn raw(
    base: &str,
    method: &str,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<String> {
    request(base, method, path, content_type, headers, body).map(|(_, body)| body)
}

/// A plain HTTP/1.1 request to a loopback server; the header lines and the body of a 2xx answer.
pub fn request(
    base: &str,
    method: &str,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(Vec<String>, String)> {
    let hostport = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).with_context(|| format!("connect {hostport}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let resp = String::from_utf8_lossy(&resp).to_string();
    let (head, rest) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    if !(200..300).contains(&code) {
        bail!("{method} {base}{path}: HTTP {code}: {body}");
    }
    Ok((head.lines().skip(1).map(str::to_string).collect(), body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(plain), encoded);
        }
    }
}
