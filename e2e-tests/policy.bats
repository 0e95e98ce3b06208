#!/usr/bin/env bats
# The CI harness's cases (e2e-tests/tests/policy.rs) under kwctl, with the same fixture files.
# Needs kwctl, bats, jq and base64; run with `make e2e-kwctl` (builds annotated-policy.wasm).
# kwctl is not available to CI here, so this file is for people who have it.

F=e2e-tests/fixtures

run_policy() { # run_policy REQUEST SESSION [SETTINGS_JSON]
  run kwctl run --allow-context-aware \
    --replay-host-capabilities-interactions "$F/sessions/$2.yml" \
    --settings-json "${3:-{\}}" \
    -r "$F/requests/$1.json" annotated-policy.wasm
  [ "$status" -eq 0 ]
  echo "$output" | jq -e '.allowed == true'
}

patched() { # the object after applying the response's patch (jq has no JSON patch: check the ops)
  echo "$output" | jq -r '.patch // empty' | base64 -d
}

annotation_op() { # annotation_op KEY -> value set by the patch
  patched | jq -r --arg p "/metadata/annotations/$(echo "$1" | sed 's,~,~0,g; s,/,~1,g')" \
    '.[] | select(.path == $p and (.op == "add" or .op == "replace")) | .value'
}

@test "example MachineSet, field-masked ConfigMap" {
  run_policy create-example-m6g-xlarge m6g-masked
  [ "$(annotation_op machine.openshift.io/vCPU)" = "4" ]
  [ "$(annotation_op machine.openshift.io/memoryMb)" = "16384" ]
  [ "$(annotation_op machine.openshift.io/GPU)" = "0" ]
  [ "$(annotation_op capacity.cluster-autoscaler.kubernetes.io/labels)" = "kubernetes.io/arch=arm64,team=ml" ]
  patched | jq -e 'all(.[]; .path | startswith("/metadata/annotations"))'
}

@test "whole ConfigMap answer (host ignores field masks)" {
  run_policy create-example-m6g-xlarge m6g-whole
  [ "$(annotation_op machine.openshift.io/vCPU)" = "4" ]
}

@test "already annotated: no patch" {
  run_policy create-m5-xlarge-already-annotated m5-masked
  echo "$output" | jq -e '.patch == null'
}

@test "ConfigMap missing: built-in table, with a warning" {
  run_policy create-m5-xlarge m5-missing
  patched | jq -e '.[0].value["machine.openshift.io/vCPU"] == "4"'
  echo "$output" | jq -e '.warnings[0] | contains("built-in table")'
}

@test "ConfigMap missing, fallback none: unchanged, warning" {
  run_policy create-m5-xlarge m5-missing '{"fallback":"none"}'
  echo "$output" | jq -e '.patch == null and (.warnings[0] | contains("unknown instance type"))'
}

@test "malformed ConfigMap: built-in table, with a warning" {
  run_policy create-m5-xlarge m5-malformed
  echo "$output" | jq -e '.warnings[0] | contains("is malformed")'
}

@test "unknown instance type: unchanged, warning" {
  run_policy create-unknown-type zz9-unknown
  echo "$output" | jq -e '.patch == null and (.warnings[0] | contains("unknown instance type \"zz9.huge\""))'
}

@test "UPDATE m5.xlarge -> m6g.xlarge flips the arch" {
  run_policy update-m5-to-m6g m6g-masked
  [ "$(annotation_op capacity.cluster-autoscaler.kubernetes.io/labels)" = "kubernetes.io/arch=arm64,team=ml" ]
}

@test "UPDATE to an unknown type removes what was written for the old one" {
  run_policy update-m5-to-unknown zz9-unknown-then-m5
  patched | jq -e 'any(.[]; .op == "remove" and .path == "/metadata/annotations/machine.openshift.io~1memoryMb")'
}

@test "labels merge: arch first, existing pairs kept" {
  run_policy create-labels-m6g-xlarge m6g-masked
  [ "$(annotation_op capacity.cluster-autoscaler.kubernetes.io/labels)" = "kubernetes.io/arch=arm64,team=ml,zone=eu-west-3a" ]
}

@test "skipped: deleting, non-AWS, authoritativeAPI, paused" {
  run_policy update-deleting no-calls
  echo "$output" | jq -e '.patch == null'
  run_policy create-gcp no-calls
  echo "$output" | jq -e '.patch == null'
  run_policy create-authoritative-clusterapi no-calls '{"respectAuthoritativeAPI":true}'
  echo "$output" | jq -e '.patch == null'
  run_policy create-paused no-calls '{"respectAuthoritativeAPI":true}'
  echo "$output" | jq -e '.patch == null'
}

@test "no cluster at all: the built-in table answers" {
  run kwctl run -r "$F/requests/create-example-m6g-xlarge.json" annotated-policy.wasm
  [ "$status" -eq 0 ]
  [ "$(annotation_op machine.openshift.io/vCPU)" = "4" ]
}

@test "settings rejected" {
  run kwctl run --settings-json '{"fallback":"sometimes"}' -r "$F/requests/create-m5-xlarge.json" annotated-policy.wasm
  [ "$status" -ne 0 ]
  [[ "$output" == *"fallback must be"* ]]
}
