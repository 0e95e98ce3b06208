//! Structure-aware generation of hostile inputs: realistic MachineSet admission requests (the e2e
//! fixtures and the examples) mutated at every path, targeted hostile shapes, hostile settings,
//! raw byte mutations of whole requests, and hostile host answers for the ConfigMap.

use crate::rng::Rng;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::sync::Arc;

/// What the host answers to every `get_resource` of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAnswer {
    Answer(Vec<u8>),
    Error(String),
}

/// One input: a `validate` payload and the host's answer.
#[derive(Debug, Clone)]
pub struct Input {
    /// Which generator made it (for the figures by kind).
    pub kind: &'static str,
    pub payload: Vec<u8>,
    pub host: HostAnswer,
}

/// The realistic material inputs start from.
pub struct Corpus {
    /// AdmissionRequests (kwctl request files and the examples as CREATEs).
    pub requests: Vec<Value>,
    /// The fixture table ConfigMap.
    pub table: Value,
    /// A 10 MB ConfigMap, built once (hostile host answers).
    pub huge_configmap: Arc<Vec<u8>>,
}

impl Corpus {
    /// Reads `e2e-tests/fixtures/requests/*.json` and the table ConfigMap.
    pub fn load(workspace: &Path) -> anyhow::Result<Corpus> {
        let dir = workspace.join("e2e-tests/fixtures/requests");
        let mut requests = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        for p in names {
            requests.push(serde_json::from_str(&std::fs::read_to_string(&p)?)?);
        }
        anyhow::ensure!(!requests.is_empty(), "no requests in {}", dir.display());
        let table: Value = serde_json::from_str(&std::fs::read_to_string(
            workspace.join("e2e-tests/fixtures/configmaps/table.json"),
        )?)?;
        let mut data = Map::new();
        let family = r#"{"xlarge":{"vcpu":4,"memoryMiB":16384,"gpu":0,"arch":"amd64"}}"#;
        let mut i = 0;
        while data.len() * (family.len() + 12) < 10 << 20 {
            data.insert(format!("f{i}"), json!(family));
            i += 1;
        }
        data.insert("m5".into(), table["data"]["m5"].clone());
        let huge =
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "data": data}))?;
        Ok(Corpus {
            requests,
            table,
            huge_configmap: Arc::new(huge),
        })
    }
}

const TYPE_PTR: &str = "/object/spec/template/spec/providerSpec/value/instanceType";
const ANNOTATIONS_PTR: &str = "/object/metadata/annotations";

/// Odd instance-type shapes.
fn odd_instance_type(rng: &mut Rng) -> Value {
    let long = format!("{}.large", "a".repeat(300));
    let repeated = "m5.large".repeat(1000);
    let shapes: [Value; 26] = [
        json!(""),
        json!("."),
        json!("m5."),
        json!(".xlarge"),
        json!("m5..xlarge"),
        json!("M5.XLARGE"),
        json!(" m5.xlarge"),
        json!("m5.xlarge\n"),
        json!("m5.xlarge\u{0}"),
        json!("m5.x/large"),
        json!("m5.~1"),
        json!("ü.large"),
        json!("m5.xlarge.extra"),
        json!(long),
        json!(repeated),
        json!("data.m5"),
        json!("\""),
        json!("\\"),
        json!(5),
        json!(null),
        json!(["m5.xlarge"]),
        json!({"m5": "xlarge"}),
        json!("p4d.24xlarge"),
        json!("g6f.large"),
        json!("zz9.huge"),
        json!("m6g.4xlarge"),
    ];
    rng.pick(&shapes).clone()
}

/// A value of the wrong kind for wherever it lands.
pub fn hostile_value(rng: &mut Rng) -> Value {
    match rng.below(22) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(-(rng.below(1_000_000) as i64)),
        3 => json!(u64::MAX),
        4 => json!(1e308),
        5 => json!(-0.5),
        6 => json!(""),
        7 => {
            if rng.chance(10) {
                json!("x".repeat(1 << 20))
            } else {
                json!("x".repeat(rng.below(5000)))
            }
        }
        8 => json!("ünï\u{202e}😀\u{0}\u{1f}\u{7f}\u{fffd}"),
        9 => json!("\u{1}\u{2}\t\r\n\u{1b}[31m"),
        10 => nested(rng.below(300), rng.chance(50)),
        11 => json!({}),
        12 => json!([]),
        13 => json!("16384"),
        14 => json!("-1"),
        15 => json!("1e3"),
        16 => odd_instance_type(rng),
        17 => json!({"a": [1, {"b": null}]}),
        18 => Value::Array((0..rng.below(2000)).map(|i| json!(i)).collect()),
        19 => json!("kubernetes.io/arch=arm64,kubernetes.io/arch=amd64"),
        20 => json!(4),
        _ => json!({"machine.openshift.io/vCPU": 4}),
    }
}

/// `depth` nested arrays or objects.
fn nested(depth: usize, arrays: bool) -> Value {
    let mut v = json!("bottom");
    for _ in 0..depth {
        v = if arrays { json!([v]) } else { json!({"n": v}) };
    }
    v
}

/// JSON pointers of every node of `v` (depth-limited, at most `cap`).
fn pointers(v: &Value, prefix: String, depth: usize, cap: usize, out: &mut Vec<String>) {
    if out.len() >= cap {
        return;
    }
    out.push(prefix.clone());
    if depth == 0 {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(child, format!("{prefix}/{k}"), depth - 1, cap, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate().take(50) {
                pointers(child, format!("{prefix}/{i}"), depth - 1, cap, out);
            }
        }
        _ => {}
    }
}

/// Sets `pointer` to `value`, creating objects on the way where the path is missing.
fn set(root: &mut Value, pointer: &str, value: Value) {
    if pointer.is_empty() {
        *root = value;
        return;
    }
    let mut cur = root;
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if !cur.is_object() && !cur.is_array() {
            *cur = json!({});
        }
        let next = match cur {
            Value::Object(m) => {
                if last {
                    m.insert(part.clone(), value);
                    return;
                }
                m.entry(part.clone()).or_insert_with(|| json!({}))
            }
            Value::Array(a) => match part.parse::<usize>() {
                Ok(idx) if idx < a.len() => {
                    if last {
                        a[idx] = value;
                        return;
                    }
                    &mut a[idx]
                }
                _ => return,
            },
            _ => return,
        };
        cur = next;
    }
}

fn remove(root: &mut Value, pointer: &str) {
    let Some((parent, key)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = key.replace("~1", "/").replace("~0", "~");
    if let Some(Value::Object(m)) = root.pointer_mut(parent) {
        m.remove(&key);
    }
}

/// One structure-aware mutation anywhere in the request.
fn mutate_anywhere(req: &mut Value, rng: &mut Rng) {
    let mut ptrs = Vec::new();
    pointers(req, String::new(), 12, 4000, &mut ptrs);
    let target = rng.pick(&ptrs).clone();
    match rng.below(4) {
        0 => remove(req, &target),
        1 => {
            let key = rng
                .pick(&["x", "instanceType", "annotations", "kind", "ü", ""])
                .to_string();
            set(req, &format!("{target}/{key}"), hostile_value(rng));
        }
        _ => set(req, &target, hostile_value(rng)),
    }
}

/// Targeted hostile shapes at the places the policy reads.
fn mutate_targeted(req: &mut Value, rng: &mut Rng) {
    match rng.below(10) {
        0 => set(req, TYPE_PTR, odd_instance_type(rng)),
        1 => {
            let shapes = [
                json!("x"),
                json!(["a"]),
                json!(3),
                Value::Null,
                json!({"k": {"n": 1}}),
            ];
            set(req, ANNOTATIONS_PTR, rng.pick(&shapes).clone());
        }
        2 => {
            let key = *rng.pick(&[
                "machine.openshift.io/vCPU",
                "machine.openshift.io/memoryMb",
                "machine.openshift.io/GPU",
                "capacity.cluster-autoscaler.kubernetes.io/labels",
                "capacity.cluster-autoscaler.kubernetes.io/memory",
                "capacity.cluster-autoscaler.kubernetes.io/gpu-type",
            ]);
            let labels = [
                json!("k=v,".repeat(rng.below(100_000))),
                json!("===="),
                json!(",,,"),
                json!("kubernetes.io/arch=ppc64le"),
                json!("kubernetes.io/arch=arm64,kubernetes.io/arch=amd64"),
                json!("ü=ö,\u{0}=\u{1},a = b"),
                json!("32768"),
            ];
            let v = if rng.chance(50) {
                rng.pick(&labels).clone()
            } else {
                hostile_value(rng)
            };
            let ptr = format!("{ANNOTATIONS_PTR}/{}", key.replace('/', "~1"));
            set(req, &ptr, v);
        }
        3 => {
            let shapes = [json!("x"), json!(["a"]), json!(7), Value::Null, json!({})];
            let at = *rng.pick(&[
                "/object/spec/template/spec/providerSpec/value",
                "/object/spec/template/spec/providerSpec",
                "/object/spec/template/spec",
                "/object/spec/template",
                "/object/spec",
            ]);
            set(req, at, rng.pick(&shapes).clone());
        }
        4 => {
            let kinds = [
                json!("AWSMachineProviderConfig "),
                json!("awsmachineproviderconfig"),
                json!(1),
                Value::Null,
                json!("GCPMachineProviderSpec"),
            ];
            set(
                req,
                "/object/spec/template/spec/providerSpec/value/kind",
                rng.pick(&kinds).clone(),
            );
        }
        5 => {
            let metas = [Value::Null, json!([]), json!("m"), json!({})];
            match rng.below(3) {
                0 => remove(req, "/object/metadata"),
                1 => set(req, "/object/metadata", rng.pick(&metas).clone()),
                _ => {
                    let ts = [
                        json!(false),
                        json!(0),
                        json!(""),
                        json!({}),
                        json!("2026-01-01T00:00:00Z"),
                    ];
                    set(
                        req,
                        "/object/metadata/deletionTimestamp",
                        rng.pick(&ts).clone(),
                    );
                }
            }
        }
        6 => {
            let apis = [
                json!("ClusterAPI"),
                json!("MachineAPI"),
                json!(""),
                json!(3),
                json!("Migrating"),
            ];
            set(
                req,
                "/object/status/authoritativeAPI",
                rng.pick(&apis).clone(),
            );
            let conds = [
                json!("x"),
                json!([{"type": "Paused", "status": "True"}]),
                json!([{"type": 1}]),
                json!([null]),
            ];
            set(req, "/object/status/conditions", rng.pick(&conds).clone());
        }
        7 => {
            let ops = [
                json!("CREATE"),
                json!("UPDATE"),
                json!("DELETE"),
                json!("CONNECT"),
                json!(""),
                json!("create"),
                json!("PATCH"),
                json!(5),
                Value::Null,
            ];
            set(req, "/operation", rng.pick(&ops).clone());
        }
        8 => {
            let garbage = [Value::Null, json!("old"), json!(42), nested(200, true)];
            match rng.below(3) {
                0 => remove(req, "/oldObject"),
                1 => set(req, "/oldObject", rng.pick(&garbage).clone()),
                _ => {
                    let mut old = req.get("object").cloned().unwrap_or(Value::Null);
                    set(
                        &mut old,
                        "/spec/template/spec/providerSpec/value/instanceType",
                        odd_instance_type(rng),
                    );
                    set(req, "/oldObject", old);
                    set(req, "/operation", json!("UPDATE"));
                }
            }
        }
        _ => {
            let versions = [
                json!("machine.openshift.io/v1"),
                json!("machine.openshift.io"),
                json!("cluster.x-k8s.io/v1beta1"),
                json!(7),
            ];
            if rng.chance(50) {
                set(req, "/object/apiVersion", rng.pick(&versions).clone());
            } else {
                let labels = [
                    json!({"cluster-api/accelerator": 1}),
                    json!({"cluster-api/accelerator": ""}),
                    json!("x"),
                    json!({"cluster-api/accelerator": "nvidia"}),
                ];
                set(
                    req,
                    "/object/spec/template/spec/metadata/labels",
                    rng.pick(&labels).clone(),
                );
            }
        }
    }
}

/// Settings: mostly valid, often hostile.
fn settings(rng: &mut Rng, req: &Value) -> Value {
    let ty = req
        .pointer(TYPE_PTR)
        .and_then(Value::as_str)
        .unwrap_or("m5.xlarge")
        .to_string();
    match rng.below(14) {
        0..=4 => json!({}),
        5 => json!({"fallback": "none"}),
        6 => json!({"upstreamCapacityAnnotations": true}),
        7 => json!({"respectAuthoritativeAPI": true}),
        8 => {
            json!({"overrides": {ty: {"vcpu": 3, "memoryMiB": 3000, "gpu": 2, "arch": "arm64", "gpuVendor": "NVIDIA"}}, "upstreamCapacityAnnotations": true})
        }
        9 => json!({"overrides": {ty: {"vcpu": -1, "memoryMiB": 1e300, "arch": "ppc64le"}}}),
        10 => json!({"overrides": "x", "colour": 1, "fallback": 7}),
        11 => {
            let many: Map<String, Value> = (0..rng.below(3000))
                .map(|i| {
                    (
                        format!("x{i}.large"),
                        json!({"vcpu": 1, "memoryMiB": 1, "arch": "amd64"}),
                    )
                })
                .collect();
            json!({"overrides": many})
        }
        12 => json!({"configMapName": "x".repeat(rng.below(2000)), "configMapNamespace": "ü"}),
        _ => hostile_value(rng),
    }
}

fn family_of(req: &Value) -> String {
    req.pointer(TYPE_PTR)
        .and_then(Value::as_str)
        .and_then(|t| t.split_once('.'))
        .map(|(f, _)| f.to_string())
        .unwrap_or_else(|| "m5".to_string())
}

/// A realistic answer: the table ConfigMap (whole, as a host that ignores masks), or "missing".
fn realistic_host(c: &Corpus, rng: &mut Rng) -> HostAnswer {
    if rng.chance(15) {
        HostAnswer::Error("Cannot find v1/ConfigMap named 'machineset-instance-types' in namespace 'openshift-machine-api'".into())
    } else {
        HostAnswer::Answer(serde_json::to_vec(&c.table).unwrap_or_default())
    }
}

/// Hostile answers for the ConfigMap.
fn hostile_host(c: &Corpus, rng: &mut Rng, req: &Value) -> HostAnswer {
    let family = family_of(req);
    let size = req
        .pointer(TYPE_PTR)
        .and_then(Value::as_str)
        .and_then(|t| t.split_once('.'))
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| "xlarge".to_string());
    let cm = |data: Value| {
        HostAnswer::Answer(
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "data": data}))
                .unwrap_or_default(),
        )
    };
    let numbers = [
        json!(-4),
        json!(1e30),
        json!(4.5),
        json!("4"),
        json!(u64::MAX),
        json!(-1),
        json!(0),
        Value::Null,
        json!(true),
        json!(4294967296u64),
    ];
    let arches = [
        json!("ppc64le"),
        json!(5),
        Value::Null,
        json!("ARM64"),
        json!(""),
        json!("arm64"),
    ];
    match rng.below(14) {
        0 => cm(hostile_value(rng)),
        1 => cm(json!({family: hostile_value(rng)})),
        2 => {
            let bad = [
                "{",
                "[]",
                "null",
                "\"x\"",
                "{\"xlarge\":",
                "{\"xlarge\":{}}",
                "\u{0}",
                "",
            ];
            cm(json!({family: *rng.pick(&bad)}))
        }
        3..=6 => {
            let mut entry = json!({"vcpu": 4, "memoryMiB": 16384, "gpu": 0, "arch": "amd64"});
            let field = *rng.pick(&["vcpu", "memoryMiB", "gpu", "arch", "gpuVendor", "extra"]);
            let v = if field == "arch" {
                rng.pick(&arches).clone()
            } else {
                rng.pick(&numbers).clone()
            };
            if rng.chance(20) {
                if let Some(m) = entry.as_object_mut() {
                    m.remove(field);
                }
            } else {
                entry[field] = v;
            }
            let family_json =
                serde_json::to_string(&json!({size.clone(): entry})).unwrap_or_default();
            cm(json!({family.clone(): family_json}))
        }
        7 => {
            if rng.chance(20) {
                HostAnswer::Answer(c.huge_configmap.as_ref().clone())
            } else {
                HostAnswer::Answer(b"\x00\xff not json".to_vec())
            }
        }
        8 => {
            let bodies: [&[u8]; 6] = [b"", b"[]", b"5", b"\"str\"", b"null", b"{\"data\":null}"];
            HostAnswer::Answer(rng.pick(&bodies).to_vec())
        }
        9 => {
            let msgs = [
                String::new(),
                "x".repeat(100_000),
                "ünïcödé 😀 \u{0}".to_string(),
                "line one\nline two\n\nStack backtrace:\n 0: x".to_string(),
                "Host error: Callback evaluation failure: forbidden".to_string(),
                "Policy has not been granted access to Kubernetes v1/ConfigMap resources. The violation has been reported.".to_string(),
            ];
            HostAnswer::Error(rng.pick(&msgs).clone())
        }
        10 => cm(
            json!({family: serde_json::to_string(&json!({size: nested(rng.below(300), false)})).unwrap_or_default()}),
        ),
        11 => HostAnswer::Answer(
            serde_json::to_vec(&json!({"data": {family: 7}, "metadata": "x"})).unwrap_or_default(),
        ),
        _ => realistic_host(c, rng),
    }
}

/// Raw byte mutations of a whole request.
fn mutate_bytes(bytes: &mut Vec<u8>, rng: &mut Rng) {
    match rng.below(5) {
        0 => {
            for _ in 0..=rng.below(8) {
                if !bytes.is_empty() {
                    let i = rng.below(bytes.len());
                    bytes[i] = (rng.next_u64() & 0xff) as u8;
                }
            }
        }
        1 => {
            let at = rng.below(bytes.len() + 1);
            bytes.truncate(at);
        }
        2 => {
            let at = rng.below(bytes.len() + 1);
            let junk: [&[u8]; 6] = [b"\xff\xfe", b"{", b"]", b"\"", b",,", b"\\u0000"];
            let j = rng.pick(&junk);
            bytes.splice(at..at, j.iter().copied());
        }
        3 => {
            // duplicate keys: JSON allows them textually; the last one wins in serde_json
            let text = String::from_utf8_lossy(bytes).into_owned();
            let dup = if rng.chance(50) {
                text.replacen(
                    "\"instanceType\":",
                    "\"instanceType\":\"zz9.huge\",\"instanceType\":",
                    1,
                )
            } else {
                text.replacen(
                    "\"annotations\":{",
                    "\"annotations\":{\"machine.openshift.io/vCPU\":\"1\",\"machine.openshift.io/vCPU\":7,",
                    1,
                )
            };
            *bytes = dup.into_bytes();
        }
        _ => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            *bytes = text
                .replacen("\"metadata\":", "\"metadata\":\"x\",\"metadata\":", 1)
                .into_bytes();
        }
    }
}

/// Input `rng` of the campaign.
pub fn generate(c: &Corpus, rng: &mut Rng) -> Input {
    let mut req = rng.pick(&c.requests).clone();
    let roll = rng.below(100);
    let (kind, host_hostile, raw) = match roll {
        0..=39 => ("object", false, false),
        40..=59 => ("targeted", false, false),
        60..=69 => ("settings", false, false),
        70..=79 => ("raw", false, true),
        _ => ("host", true, false),
    };
    match kind {
        "object" => {
            for _ in 0..=rng.below(4) {
                mutate_anywhere(&mut req, rng);
            }
        }
        "targeted" => {
            for _ in 0..=rng.below(3) {
                mutate_targeted(&mut req, rng);
            }
        }
        _ => {
            if rng.chance(30) {
                mutate_targeted(&mut req, rng);
            }
        }
    }
    let settings = if kind == "settings" || rng.chance(20) {
        settings(rng, &req)
    } else {
        json!({})
    };
    let mut payload =
        serde_json::to_vec(&json!({"settings": settings, "request": req})).unwrap_or_default();
    if raw {
        mutate_bytes(&mut payload, rng);
    }
    let host = if host_hostile {
        hostile_host(c, rng, &req)
    } else {
        realistic_host(c, rng)
    };
    Input {
        kind,
        payload,
        host,
    }
}
