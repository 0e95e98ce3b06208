//! A real browser for the playground's tests: Debian's Chromium driven over WebDriver by its
//! chromedriver, and a static server for the built page.
//!
//! Chromium writes a NetLog (`--log-net-log`): every request it made, with its initiator — the
//! page's origin for what the page and its workers asked for, "not an origin" for Chromium's own
//! services (network time, sign-in, autofill, which call Google whatever the page does).
//! [`Browser::quit`] returns the page's requests from it: how a test proves the page makes no
//! network call of its own.

use crate::real_cluster::free_port;
use crate::servers::wait_for;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Debian's Chromium and chromedriver (`apt-get install chromium chromium-driver`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Serves a folder on 127.0.0.1.
pub struct StaticServer {
    pub port: u16,
}

impl StaticServer {
    pub fn start(root: &Path) -> Result<StaticServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the static server")?;
        let port = listener.local_addr()?.port();
        let root = root.to_path_buf();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let root = root.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &root);
                });
            }
        });
        Ok(StaticServer { port })
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript",
        Some("css") => "text/css",
        Some("wasm") => "application/wasm",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

fn serve(stream: TcpStream, root: &Path) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    // the rest of the head; request bodies are not expected
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let file = (method == "GET" && path.starts_with('/') && !path.contains(".."))
        .then(|| root.join(path.trim_start_matches('/')))
        .map(|f| if f.is_dir() { f.join("index.html") } else { f })
        .filter(|f| f.is_file());
    let mut out = stream;
    match file {
        Some(f) => {
            let body = std::fs::read(&f)?;
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                content_type(&f),
                body.len()
            )?;
            out.write_all(&body)?;
        }
        None => write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    Ok(())
}

/// One JSON request to chromedriver. It keeps connections open whatever the request says, so the
/// answer is read by its Content-Length, not to the end of the stream.
fn http(base: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let hostport = base.trim_start_matches("http://");
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut s = TcpStream::connect(hostport).with_context(|| format!("connect {hostport}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let mut length = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse()?;
        }
    }
    let mut answer = vec![0; length];
    std::io::Read::read_exact(&mut reader, &mut answer)?;
    let answer: Value = serde_json::from_slice(&answer)
        .with_context(|| format!("{method} {path}: {status}: not JSON"))?;
    if !status.contains(" 200 ") {
        bail!("{method} {path}: {}: {}", status.trim(), answer["value"]);
    }
    Ok(answer)
}

/// A chromedriver process and one headless Chromium session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    profile: PathBuf,
    netlog: PathBuf,
}

/// One request Chromium made, from its NetLog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub url: String,
    /// The origin that asked (`not an origin` for the browser's own requests and navigations).
    pub initiator: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (its profile and NetLog in `scratch`).
    pub fn start(scratch: &Path) -> Result<Browser> {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(bin).is_file() {
                bail!("{bin} is missing: apt-get install chromium chromium-driver");
            }
        }
        let port = free_port()?;
        let log = std::fs::File::create(scratch.join("chromedriver.log"))?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start chromedriver")?;
        let base = format!("http://127.0.0.1:{port}");
        let ready = wait_for(Duration::from_secs(20), || {
            http(&base, "GET", "/status", None)
                .ok()
                .filter(|s| s["value"]["ready"] == true)
        });
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            profile: scratch.join("profile"),
            netlog: scratch.join("netlog.json"),
        };
        ready.context("chromedriver did not get ready in 20 s")?;
        // the flags Chromium needs on a machine with no network (background services off) and as root
        let args = json!([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--window-size=1400,1100",
            format!("--user-data-dir={}", browser.profile.display()),
            format!("--log-net-log={}", browser.netlog.display()),
        ]);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let created = http(&browser.base, "POST", "/session", Some(&caps))?;
        browser.session = created["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no session: {created}"))?
            .to_string();
        Ok(browser)
    }

    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let answer = http(
            &self.base,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )?;
        Ok(answer["value"].clone())
    }

    pub fn navigate(&self, url: &str) -> Result<()> {
        self.command("POST", "/url", Some(&json!({ "url": url })))
            .map(|_| ())
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    pub fn script(&self, script: &str, args: Value) -> Result<Value> {
        self.command(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": args})),
        )
    }

    /// The WebDriver id of the element with this id.
    pub fn element(&self, id: &str) -> Result<String> {
        let found = self.command(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": format!("#{id}")})),
        )?;
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("no element #{id}: {found}"))
    }

    pub fn click(&self, id: &str) -> Result<()> {
        let e = self.element(id)?;
        self.command("POST", &format!("/element/{e}/click"), Some(&json!({})))
            .map(|_| ())
    }

    /// Gives files to an `<input type=file>` as a user choosing them does.
    pub fn choose_files(&self, id: &str, files: &[PathBuf]) -> Result<()> {
        let e = self.element(id)?;
        let text: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        self.command(
            "POST",
            &format!("/element/{e}/value"),
            Some(&json!({"text": text.join("\n")})),
        )
        .map(|_| ())
    }

    /// Waits until `body[data-state]` is one of `states`; returns it.
    pub fn wait_state(&self, states: &[&str], timeout: Duration) -> Result<String> {
        let mut last = String::new();
        let found = wait_for(timeout, || {
            last = self
                .script("return document.body.dataset.state", json!([]))
                .ok()?
                .as_str()?
                .to_string();
            states.contains(&last.as_str()).then(|| last.clone())
        });
        found.with_context(|| format!("the page stayed {last:?}, not one of {states:?}"))
    }

    pub fn text(&self, id: &str) -> Result<String> {
        let v = self.script(
            "return document.getElementById(arguments[0]).textContent",
            json!([id]),
        )?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Result<Vec<u8>> {
        let b64 = self.command("GET", "/screenshot", None)?;
        base64_decode(b64.as_str().context("screenshot is not text")?)
    }
}

impl Browser {
    /// Ends the browser and returns every request it made, from its NetLog (complete only once
    /// Chromium has exited).
    pub fn quit(mut self) -> Result<Vec<Request>> {
        let session = std::mem::take(&mut self.session);
        http(&self.base, "DELETE", &format!("/session/{session}"), None)?;
        let netlog = self.netlog.clone();
        drop(self);
        let text = std::fs::read_to_string(&netlog)
            .with_context(|| format!("{}: no NetLog", netlog.display()))?;
        // a log cut short by a crash lacks its closing brackets
        let log: Value = serde_json::from_str(&text)
            .or_else(|_| {
                serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(',')))
            })
            .with_context(|| format!("{}: not a NetLog", netlog.display()))?;
        let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
        let requests = log["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == start_job && e["params"]["url"].is_string())
            .map(|e| {
                let p = &e["params"];
                let text = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                Request {
                    method: text("method"),
                    url: text("url"),
                    initiator: text("initiator"),
                }
            })
            .collect();
        Ok(requests)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                &self.base,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .with_context(|| format!("not base64: {c}"))?;
        acc = (acc << 6) | u32::try_from(v)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base64_of_a_png_header() {
        assert_eq!(
            base64_decode("iVBORw0KGgo=").unwrap(),
            b"\x89PNG\r\n\x1a\n".to_vec()
        );
    }
}
