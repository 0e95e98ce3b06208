//! The `capa-admin` binary as admins run it: golden outputs of `preview` on the examples, a List
//! on stdin, `-o json`, `--configmap` and `--settings` files, `--fail-on-change`, directories,
//! and input errors (exit 2, a message naming the file and the place, nothing on stdout).
//!
//! Golden files: `tests/golden/<name>`; `CAPA_BLESS=1 cargo test -p capa-admin` rewrites them
//! (then read the diff before committing).
#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

/// Runs `capa-admin` in the workspace root (paths in outputs stay relative).
fn capa_admin(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_capa-admin"))
        .args(args)
        .current_dir(workspace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("CAPA_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (CAPA_BLESS=1 writes it)", path.display()));
    assert!(
        got == want,
        "output differs from {} (CAPA_BLESS=1 rewrites it):\n--- got\n{got}\n--- want\n{want}",
        path.display()
    );
}

const EXAMPLES: [&str; 3] = [
    "examples/machineset.yaml",
    "examples/wrong-values.yaml",
    "examples/cluster-machinesets.yaml",
];

fn with(args: &[&'static str], rest: &[&'static str]) -> Vec<&'static str> {
    args.iter().chain(rest).copied().collect()
}

#[test]
fn examples_text_with_patches() {
    let r = capa_admin(&with(&["preview", "--patch"], &EXAMPLES), None);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.stderr, "");
    golden("examples.txt", &r.stdout);
    // what the summary must tell an admin (docs/preview.md, "Output")
    for needle in [
        "objects read                     7",
        "would change                     6",
        "skipped                          1  not AWS (GCPMachineProviderSpec): 1",
        "wrong values found               1  on 1 object",
        "GPU without accelerator label    2",
        "\"32768\" → \"65536\"   <- wrong value",
        "warning: capa-annotator: corrected machine.openshift.io/memoryMb 32768 → 65536 (m6g.4xlarge)",
    ] {
        assert!(
            r.stdout.contains(needle),
            "missing {needle:?} in\n{}",
            r.stdout
        );
    }
}

#[test]
fn a_list_on_stdin() {
    let list =
        std::fs::read_to_string(workspace().join("examples/cluster-machinesets.yaml")).unwrap();
    let r = capa_admin(&["preview", "-"], Some(&list));
    assert_eq!(r.status, 0, "{}", r.stderr);
    golden("stdin-list.txt", &r.stdout);
    assert!(r.stdout.contains("<stdin>") || !r.stdout.contains("examples/"));
}

#[test]
fn json_for_scripts() {
    let r = capa_admin(&with(&["preview", "-o", "json"], &EXAMPLES), None);
    assert_eq!(r.status, 0, "{}", r.stderr);
    golden("examples.json", &r.stdout);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["summary"]["read"], 7);
    assert_eq!(v["summary"]["wrongValues"], 1);
    // -o json keeps every warning, the built-in fallback ones included
    let warnings: usize = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["warnings"].as_array().unwrap().len())
        .sum();
    assert_eq!(v["summary"]["warnings"], warnings);
    assert!(v["objects"][0]["patch"].as_array().is_some());
}

#[test]
fn configmap_and_settings_files() {
    let r = capa_admin(
        &with(
            &[
                "preview",
                "--configmap",
                "e2e-tests/fixtures/configmaps/table.json",
                "--settings",
                "admin/tests/data/settings.yaml",
            ],
            &EXAMPLES,
        ),
        None,
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    golden("configmap-settings.txt", &r.stdout);
    assert!(
        r.stdout.contains("(from the overrides setting)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("capacity.cluster-autoscaler.kubernetes.io/memory"),
        "{}",
        r.stdout
    );
    // the whole ClusterAdmissionPolicy of deploy/ works as --settings too
    let r = capa_admin(
        &[
            "preview",
            "--settings",
            "deploy/policy/clusteradmissionpolicy.yaml",
            EXAMPLES[0],
        ],
        None,
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
}

/// Cluster API objects with their AWSMachineTemplates among the inputs (what `kubectl get
/// machinedeployments,machinesets.cluster.x-k8s.io,awsmachinetemplates -A -o yaml` prints): the
/// templates are found (at either version, a v1alpha4 ref included), a missing one is reported as
/// the policy would, and only the Cluster API keys are shown.
#[test]
fn cluster_api_objects_and_their_templates() {
    let r = capa_admin(&["preview", "--patch", "examples/cluster-api.yaml"], None);
    assert_eq!(r.status, 0, "{}", r.stderr);
    golden("cluster-api.txt", &r.stdout);
    let r = capa_admin(
        &["preview", "-o", "json", "examples/cluster-api.yaml"],
        None,
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    golden("cluster-api.json", &r.stdout);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let results: Vec<(&str, &str)> = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["kind"].as_str().unwrap(), o["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        results,
        [
            ("MachineDeployment", "would-change"),
            ("MachineDeployment", "would-change"),
            ("MachineSet", "would-change"),
            ("MachineDeployment", "would-change"),
            ("MachineDeployment", "not-annotated"),
        ]
    );
    let missing = &v["objects"][4]["warnings"][0];
    assert!(
        missing
            .as_str()
            .unwrap()
            .contains("team-b/team-b-md-0 was not found"),
        "{missing}"
    );
    for o in v["objects"].as_array().unwrap() {
        for a in o["annotations"].as_array().unwrap() {
            let key = a["key"].as_str().unwrap();
            assert!(
                key.starts_with("capacity.cluster-autoscaler.kubernetes.io/"),
                "{key}"
            );
        }
    }
}

/// The Kubewarden controller's namespace is never sent to a ClusterAdmissionPolicy: `kubewarden`
/// unless --kubewarden-namespace says otherwise (Rancher's `cattle-kubewarden-system`).
#[test]
fn the_kubewarden_controllers_namespace_is_not_sent() {
    let result = |namespace: Option<&str>| {
        let mut args = vec![
            "preview",
            "-o",
            "json",
            "--settings",
            "deploy/policy/clusteradmissionpolicy.yaml",
            "examples/machineset.yaml",
        ];
        if let Some(ns) = namespace {
            args.extend(["--kubewarden-namespace", ns]);
        }
        let r = capa_admin(&args, None);
        assert_eq!(r.status, 0, "{}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let o = &v["objects"][0];
        (
            o["result"].as_str().unwrap().to_string(),
            o["notSentReason"].as_str().unwrap_or("").to_string(),
        )
    };
    assert_eq!(result(None).0, "would-change");
    assert_eq!(result(Some("cattle-kubewarden-system")).0, "would-change");
    assert_eq!(
        result(Some("openshift-machine-api")),
        (
            "not-sent".to_string(),
            "namespace openshift-machine-api not selected by the policy's namespaceSelector"
                .to_string()
        )
    );
}

/// A whole ClusterAdmissionPolicy as --settings: its rules and namespaceSelector (as the
/// Kubewarden controller renders it: matchLabels dropped) decide which objects it sees, with the
/// namespaces' labels from Namespace objects among the inputs; a namespace that is not among them
/// is said so.
#[test]
fn a_cluster_admission_policy_decides_what_the_policy_sees() {
    let args = [
        "preview",
        "-o",
        "json",
        "--settings",
        "admin/tests/data/team-policy.yaml",
        "examples/cluster-api.yaml",
        "admin/tests/data/team-namespaces.yaml",
        "examples/machineset.yaml",
    ];
    let r = capa_admin(&args, None);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let results: Vec<(&str, &str, &str)> = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap(),
                o["result"].as_str().unwrap(),
                o["notSentReason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            // default is labelled: sent (matchLabels, which it lacks, were dropped)
            ("capa-demo-md-0", "would-change", ""),
            // v1beta2 is sent converted to the v1beta1 the rule names (matchPolicy Equivalent)
            ("k0s-aws-test-md", "would-change", ""),
            (
                "ci-ln-arm64-us-east-1a",
                "not-sent",
                "not in the policy's rules"
            ),
            ("capa-upgraded-md-0", "would-change", ""),
            (
                "team-b-md-0",
                "not-sent",
                "namespace team-b not selected by the policy's namespaceSelector"
            ),
            (
                "demo-7xq2p-worker-eu-west-3a",
                "not-sent",
                "not in the policy's rules"
            ),
        ]
    );
    assert_eq!(v["summary"]["notSent"], 3);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    // without the Namespace objects, default is judged by its name only, and said so
    let args: Vec<&str> = args
        .iter()
        .filter(|a| !a.contains("namespaces"))
        .copied()
        .collect();
    let r = capa_admin(&args, None);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("namespace default is not among the inputs: the policy's namespaceSelector was decided with its kubernetes.io/metadata.name label only, its terms on other labels taken as met (add `kubectl get namespace default -o yaml`)"),
        "{}",
        r.stderr
    );
    // as the refresher judges it: the term on capa-annotator/enabled taken as met
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["objects"][0]["result"], "would-change");
}

/// `-o yaml`: every object as admission would store it, which is the input with the patch of
/// `-o json` applied.
#[test]
fn yaml_is_the_input_with_the_patch_applied() {
    let files = with(&[], &EXAMPLES);
    let files: Vec<&str> = files
        .into_iter()
        .chain([
            "examples/cluster-api.yaml",
            // a manifest without metadata.namespace: previewed in default, printed without one
            "e2e-tests/fixtures/capi-sources/machinedeployment-v1beta1-capa.yaml",
        ])
        .collect();
    let yaml = capa_admin(&with(&["preview", "-o", "yaml"], &files), None);
    let json = capa_admin(&with(&["preview", "-o", "json"], &files), None);
    assert_eq!((yaml.status, json.status), (0, 0), "{}", yaml.stderr);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let mut inputs = capa_admin::input::Inputs::default();
    for f in &files {
        let text = std::fs::read_to_string(workspace().join(f)).unwrap();
        capa_admin::input::read_into(f, &text, false, &mut inputs).unwrap();
    }
    let stored = capa_admin::input::documents("-o yaml", &yaml.stdout).unwrap();
    assert_eq!(stored.len(), inputs.objects.len());
    let mut changed = 0;
    for ((doc, after), item) in inputs
        .objects
        .iter()
        .zip(&stored)
        .zip(report["objects"].as_array().unwrap())
    {
        let patch: json_patch::Patch = serde_json::from_value(item["patch"].clone()).unwrap();
        let mut want = doc.object.clone();
        json_patch::patch(&mut want, &patch).unwrap();
        assert_eq!(*after, want, "{}", doc.origin);
        changed += usize::from(*after != doc.object);
    }
    assert!(changed >= 8, "only {changed} changed");
    let last = stored.last().unwrap();
    assert!(last["metadata"].get("namespace").is_none(), "{last}");
    assert!(
        yaml.stderr
            .contains("no metadata.namespace: previewed as created in namespace default"),
        "{}",
        yaml.stderr
    );
}

#[test]
fn fail_on_change() {
    let r = capa_admin(&["preview", "--fail-on-change", EXAMPLES[1]], None);
    assert_eq!(r.status, 1, "{}", r.stdout);
    assert!(r.stdout.contains("would change"));
    let r = capa_admin(
        &[
            "preview",
            "--fail-on-change",
            "admin/tests/data/tree/nested/worker.yaml",
        ],
        None,
    );
    assert_eq!(r.status, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("already right                    1"),
        "{}",
        r.stdout
    );
}

#[test]
fn directories_pass_over_other_objects() {
    let r = capa_admin(&["preview", "admin/tests/data/tree"], None);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        "capa-admin: admin/tests/data/tree/kustomization.yaml: passed over 1 object that is not a MachineSet, MachineDeployment, AWSMachineTemplate or Namespace\n"
    );
    assert!(
        r.stdout.contains("objects read                     1"),
        "{}",
        r.stdout
    );
}

/// Input errors: exit 2, one line on stderr naming the file (and the place), nothing on stdout —
/// even when other inputs were fine.
#[test]
fn unusable_inputs() {
    let cases: [(&[&str], &str); 8] = [
        (
            &["preview", EXAMPLES[0], "no/such.yaml"],
            "capa-admin: no/such.yaml: cannot read: No such file or directory",
        ),
        (
            &["preview", EXAMPLES[0], "admin/tests/data/broken.yaml"],
            "capa-admin: admin/tests/data/broken.yaml: document 1: not valid YAML at line 6, column 1",
        ),
        (
            &["preview", "e2e-tests/fixtures/configmaps/table.json"],
            "capa-admin: e2e-tests/fixtures/configmaps/table.json: document 1: a v1 ConfigMap, not a MachineSet, MachineDeployment, AWSMachineTemplate or Namespace (the instance-type table goes in --configmap FILE)",
        ),
        (
            &["preview", "admin/tests/data/tree/kustomization.yaml"],
            "capa-admin: admin/tests/data/tree/kustomization.yaml: document 1: a kustomize.config.k8s.io/v1beta1 Kustomization, not a MachineSet",
        ),
        (
            &[
                "preview",
                "--settings",
                "admin/tests/data/bad-settings.json",
                EXAMPLES[0],
            ],
            "capa-admin: admin/tests/data/bad-settings.json: invalid policy settings: fallback must be \"embedded\" or \"none\", got \"sometimes\"",
        ),
        (
            &["preview", "--configmap", EXAMPLES[0], EXAMPLES[0]],
            "capa-admin: examples/machineset.yaml: not a ConfigMap (kind \"MachineSet\")",
        ),
        (
            &["preview", "-", "-"],
            "capa-admin: stdin (-) can be read only once",
        ),
        (
            &["preview", "--settings", "-", "-"],
            "capa-admin: stdin (-) can be read only once",
        ),
    ];
    for (args, needle) in cases {
        let r = capa_admin(args, Some(""));
        assert_eq!(r.status, 2, "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout, "", "{args:?}: nothing is printed as a result");
        assert!(r.stderr.starts_with(needle), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
    }
    // usage errors (clap) exit 2 as well
    assert_eq!(capa_admin(&["preview"], None).status, 2);
    assert_eq!(
        capa_admin(&["preview", "-o", "xml", EXAMPLES[0]], None).status,
        2
    );
}

#[test]
fn help_has_examples() {
    let r = capa_admin(&["preview", "--help"], None);
    assert_eq!(r.status, 0);
    for needle in [
        "kubectl get machinesets",
        "--fail-on-change",
        "--configmap",
        "Exit status",
    ] {
        assert!(r.stdout.contains(needle), "{needle}: {}", r.stdout);
    }
}
