//! A failed input, kept as a file (`tools/fuzz/fixtures/*.json`) and replayed by the tests.

use crate::inputs::{HostAnswer, Input};
use serde_json::{Value, json};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The file's JSON (bytes as hex: payloads need not be UTF-8).
pub fn to_json(input: &Input, seed: u64, index: u64, failure: &str) -> Value {
    let host = match &input.host {
        HostAnswer::Answer(a) => json!({"answerHex": hex(a)}),
        HostAnswer::Error(e) => json!({"error": e}),
    };
    json!({
        "seed": seed, "index": index, "kind": input.kind, "failure": failure,
        "payloadHex": hex(&input.payload), "host": host,
    })
}

/// Reads a fixture back.
pub fn from_json(v: &Value) -> Option<Input> {
    let payload = unhex(v.get("payloadHex")?.as_str()?)?;
    let host = match (v.pointer("/host/answerHex"), v.pointer("/host/error")) {
        (Some(a), _) => HostAnswer::Answer(unhex(a.as_str()?)?),
        (None, Some(e)) => HostAnswer::Error(e.as_str()?.to_string()),
        _ => return None,
    };
    Some(Input {
        kind: "fixture",
        payload,
        host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let input = Input {
            kind: "raw",
            payload: b"\xff{\"a\":1}".to_vec(),
            host: HostAnswer::Error("ü".into()),
        };
        let back = from_json(&to_json(&input, 1, 2, "x")).unwrap();
        assert_eq!((back.payload, back.host), (input.payload, input.host));
        assert_eq!(unhex("0g"), None);
    }
}
