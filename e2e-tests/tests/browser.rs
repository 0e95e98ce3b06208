//! The playground in a real browser (`make e2e-browser`): Debian's headless Chromium, driven over
//! WebDriver, loads the built page (`make playground-build`) from a loopback static server and must
//! give exactly what `capa-admin preview` prints for the same inputs:
//! - the examples (one click; the page opened as `index.html#examples`), `-o json` and the copied
//!   patched YAML (`-o yaml`);
//! - the real Cluster API objects of `fixtures/capi-sources/` with their templates, the fixture
//!   table ConfigMap and a ClusterAdmissionPolicy with Namespaces, chosen as files;
//! - bad input: invalid YAML, a Secret and 5 MB of text each give the command's own message (the
//!   test prints how long the page took to answer a script meanwhile);
//! - no network call: every request the page and its worker made (Chromium's NetLog: requests whose
//!   initiator is the page's origin) is a GET of one of the page's own files.
//!
//! It prints the sizes of what the page transfers and the time to the first result (no timing
//! assertion). With `CAPA_BLESS=1` it writes the screenshot of the examples to docs/playground.png.
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use e2e_tests::browser::{Browser, StaticServer};
use e2e_tests::paths;
use e2e_tests::servers::wait_for;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const EXAMPLES: [&str; 4] = [
    "examples/machineset.yaml",
    "examples/wrong-values.yaml",
    "examples/cluster-machinesets.yaml",
    "examples/cluster-api.yaml",
];

fn site() -> PathBuf {
    let dir = std::env::var_os("CAPA_PLAYGROUND_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| paths::workspace().join("target"));
            target.join("playground-site")
        });
    assert!(
        dir.join("index.html").is_file() && dir.join("pkg").is_dir(),
        "{}: no built playground (make playground-build)",
        dir.display()
    );
    dir
}

/// `capa-admin` run in `dir`: (exit status, stdout, stderr).
fn capa_admin(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(paths::workspace_bin("capa-admin"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn assert_same(what: &str, page: &str, command: &str) {
    assert!(
        page == command,
        "{what}: the page and capa-admin preview differ\n--- page\n{page}\n--- capa-admin\n{command}"
    );
}

/// Sets a text box as typing does (an `input` event), without sending megabytes as keystrokes.
fn paste(b: &Browser, id: &str, text: &str) {
    b.script(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1]; e.dispatchEvent(new Event('input'));",
        json!([id, text]),
    )
    .unwrap();
}

const SETTLED: [&str; 3] = ["done", "error", "ready"];

#[test]
fn the_playground_in_chromium() {
    let site = site();
    let scratch = paths::scratch_dir("browser");
    let server = StaticServer::start(&site).unwrap();
    let b = Browser::start(&scratch).unwrap();
    let workspace = paths::workspace();

    // 1. opened with the examples: what capa-admin prints for them
    let opened = Instant::now();
    b.navigate(&format!("{}/index.html#examples", server.base()))
        .unwrap();
    assert_eq!(
        b.wait_state(&["done", "error"], Duration::from_secs(60))
            .unwrap(),
        "done",
        "{}",
        b.text("error").unwrap()
    );
    let wall = opened.elapsed();
    let (status, want, _) = capa_admin(
        &workspace,
        &[&["preview", "-o", "json"][..], &EXAMPLES].concat(),
    );
    assert_eq!(status, 0);
    assert_same("the examples", &b.text("report-json").unwrap(), &want);
    let report: Value = serde_json::from_str(&want).unwrap();
    let shown = b
        .script(
            "return document.querySelectorAll('#objects article').length",
            json!([]),
        )
        .unwrap();
    assert_eq!(shown, json!(report["objects"].as_array().unwrap().len()));
    let timing = b
        .script(
            "const n = performance.getEntriesByType('navigation')[0]; return {first: Number(document.body.dataset.firstResultMs), domContentLoaded: Math.round(n.domContentLoadedEventEnd)};",
            json!([]),
        )
        .unwrap();
    let png = b.screenshot().unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::write(scratch.join("playground.png"), &png).unwrap();
    if std::env::var_os("CAPA_BLESS").is_some() {
        std::fs::write(workspace.join("docs/playground.png"), &png).unwrap();
    }

    // 2. the patched YAML the copy button gives
    b.click("copy-yaml").unwrap();
    let yaml = wait_for(Duration::from_secs(30), || {
        let t = b
            .script("const e = document.getElementById('patched-yaml'); return e ? e.textContent : null", json!([]))
            .ok()?;
        t.as_str().map(str::to_string).filter(|t| !t.is_empty())
    })
    .expect("no patched YAML after the copy button");
    let (_, want_yaml, _) = capa_admin(
        &workspace,
        &[&["preview", "-o", "yaml"][..], &EXAMPLES].concat(),
    );
    assert_same("the patched YAML", &yaml, &want_yaml);

    // 3. real Cluster API objects and templates, a table ConfigMap, a ClusterAdmissionPolicy and
    // Namespaces, chosen as files (the page knows them by their names, as capa-admin run beside them)
    let files = scratch.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let mut inputs: Vec<String> = std::fs::read_dir(paths::fixture("capi-sources"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| {
            n.ends_with(".yaml")
                && ["awsmachinetemplate-", "machinedeployment-", "machineset-"]
                    .iter()
                    .any(|p| n.starts_with(p))
        })
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 10, "{inputs:?}");
    for n in &inputs {
        std::fs::copy(paths::fixture(&format!("capi-sources/{n}")), files.join(n)).unwrap();
    }
    inputs.push("team-namespaces.yaml".into());
    for (from, to) in [
        (
            "admin/tests/data/team-namespaces.yaml",
            "team-namespaces.yaml",
        ),
        ("admin/tests/data/team-policy.yaml", "team-policy.yaml"),
        ("e2e-tests/fixtures/configmaps/table.json", "table.json"),
    ] {
        std::fs::copy(workspace.join(from), files.join(to)).unwrap();
    }
    b.click("clear").unwrap();
    b.choose_files(
        "files",
        &inputs.iter().map(|n| files.join(n)).collect::<Vec<_>>(),
    )
    .unwrap();
    b.choose_files("configmap-file", &[files.join("table.json")])
        .unwrap();
    b.choose_files("settings-file", &[files.join("team-policy.yaml")])
        .unwrap();
    let mut args = vec![
        "preview",
        "-o",
        "json",
        "--configmap",
        "table.json",
        "--settings",
        "team-policy.yaml",
    ];
    args.extend(inputs.iter().map(String::as_str));
    let (status, want, _) = capa_admin(&files, &args);
    assert_eq!(status, 0);
    let got = wait_for(Duration::from_secs(60), || {
        let t = b.text("report-json").ok()?;
        (b.wait_state(&SETTLED, Duration::from_secs(1)).ok()? == "done" && t == want).then_some(t)
    });
    assert_same(
        "Cluster API objects with a ConfigMap and a ClusterAdmissionPolicy",
        &got.unwrap_or_else(|| b.text("report-json").unwrap() + &b.text("error").unwrap()),
        &want,
    );
    // upstream files as they are (clusterctl variables unfilled): every kind of result
    let capi: Value = serde_json::from_str(&want).unwrap();
    for key in ["wouldChange", "notAnnotated", "notSent"] {
        let n = capi["summary"][key].as_u64().unwrap();
        assert!(n >= 1, "{key}: {}", capi["summary"]);
    }

    // 4. bad input: the command's own message (the page names pasted text `pasted`), no hang
    b.click("clear").unwrap();
    let lorem = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\n";
    let five_mb = lorem.repeat(5 * 1024 * 1024 / lorem.len() + 1);
    for (what, text) in [
        ("invalid YAML", "apiVersion: v1\nkind: [MachineSet\nmetadata: {name: a}\n".to_string()),
        ("a Secret", "apiVersion: v1\nkind: Secret\nmetadata: {name: aws-creds}\ndata: {aws_secret_access_key: c2VjcmV0}\n".to_string()),
        ("5 MB of text", five_mb),
    ] {
        std::fs::write(files.join("pasted"), &text).unwrap();
        let (status, _, stderr) = capa_admin(&files, &["preview", "pasted"]);
        assert_eq!(status, 2, "{what}");
        let started = Instant::now();
        paste(&b, "pasted", &text);
        // the preview runs in a worker: how long the page takes to answer meanwhile is printed
        let mut slowest = Duration::ZERO;
        let state = wait_for(Duration::from_secs(90), || {
            let asked = Instant::now();
            let s = b.script("return document.body.dataset.state", json!([])).ok()?;
            slowest = slowest.max(asked.elapsed());
            (s == "error").then_some(s)
        });
        assert!(state.is_some(), "{what}: no message; the page is {}", b.text("status").unwrap());
        let message = b.text("error").unwrap();
        assert_same(what, &message, stderr.trim_end().trim_start_matches("capa-admin: "));
        assert!(!message.contains("c2VjcmV0"), "a Secret's data is never shown");
        println!(
            "{what} ({} bytes): message after {:.2} s; the page answered a script within {} ms at worst meanwhile",
            text.len(),
            started.elapsed().as_secs_f64(),
            slowest.as_millis()
        );
    }

    // 5. no network call: what the page and its worker asked for, from the page's resource timing
    // and from Chromium's NetLog (Chromium's own services call Google whatever the page does: those
    // requests have no origin as initiator, and are listed, not judged)
    let resources = b
        .script(
            "return performance.getEntriesByType('resource').map(e => e.name)",
            json!([]),
        )
        .unwrap();
    for r in resources.as_array().unwrap() {
        assert!(r.as_str().unwrap().starts_with(&server.base()), "{r}");
    }
    let requests = b.quit().unwrap();
    let (page, browser): (Vec<_>, Vec<_>) =
        requests.iter().partition(|r| r.initiator == server.base());
    // every other request is Chromium's own: no initiator, "not an origin", or one of its
    // internal pages (chrome://newtab…); no web origin but the page's
    let other_origins: Vec<_> = browser
        .iter()
        .filter(|r| r.initiator.starts_with("http:") || r.initiator.starts_with("https:"))
        .collect();
    assert!(
        other_origins.is_empty(),
        "requests from another web origin: {other_origins:?}"
    );
    let own = |url: &str| {
        url.strip_prefix(&format!("{}/", server.base()))
            .is_some_and(|rel| site.join(rel).is_file())
    };
    let not_own: Vec<_> = page
        .iter()
        .filter(|r| r.method != "GET" || !own(&r.url))
        .collect();
    assert!(
        not_own.is_empty(),
        "the page asked for more than its own files: {not_own:?}"
    );
    let mut asked: Vec<&str> = page.iter().map(|r| r.url.as_str()).collect();
    asked.sort_unstable();
    asked.dedup();
    for file in [
        "app.js",
        "style.css",
        "worker.js",
        "pkg/capa_playground.js",
        "pkg/capa_playground_bg.wasm",
    ] {
        let url = format!("{}/{file}", server.base());
        assert!(
            asked.contains(&url.as_str()),
            "{url} not among the page's requests {asked:?}"
        );
    }
    let mut hosts: Vec<&str> = browser
        .iter()
        .filter_map(|r| r.url.split('/').nth(2))
        .filter(|h| !server.base().ends_with(h))
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    println!(
        "the page and its worker made {} requests, all GETs of its own files; Chromium's own services asked {} (no web origin as initiator)",
        page.len(),
        hosts.join(", ")
    );

    // figures: what the page transfers, and the time to the first result
    let mut total = (0, 0);
    println!(
        "playground transfer (the page and what it fetched; gzip -9 as a static host serves them):"
    );
    let mut fetched: Vec<&str> = asked
        .iter()
        .map(|u| u.trim_start_matches(&server.base()).trim_start_matches('/'))
        .collect();
    fetched.insert(0, "index.html");
    for rel in &fetched {
        let path = site.join(rel);
        let bytes = std::fs::read(&path).unwrap();
        let gz = gzip_len(&path);
        total = (total.0 + bytes.len(), total.1 + gz);
        println!("  {rel:<30} {:>8} bytes  gzip {:>7}", bytes.len(), gz);
    }
    println!(
        "  {:<30} {:>8} bytes  gzip {:>7}",
        "total", total.0, total.1
    );
    println!(
        "time to the first result of the examples: {} ms after navigation start (DOMContentLoaded {} ms; {} ms as the test saw it)",
        timing["first"],
        timing["domContentLoaded"],
        wall.as_millis()
    );
}

fn gzip_len(path: &Path) -> usize {
    let out = Command::new("gzip")
        .args(["-9c"])
        .arg(path)
        .output()
        .unwrap();
    out.stdout.len()
}
