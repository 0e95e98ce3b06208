#!/usr/bin/env bats
# The policy under real kwctl, with the fixture files of the waPC harness (e2e-tests/tests/policy.rs).
# Both hosts must give exactly fixtures/expected/<case>.json for every case of fixtures/cases.tsv and
# the verdicts of fixtures/settings-cases.tsv, so they agree on every shared fixture.
#
# Run with `make e2e-kwctl` (builds annotated-policy.wasm; KWCTL=/path/to/kwctl selects the binary).
# Needs bats >= 1.5, jq >= 1.6 and kwctl. kwctl writes its logs on stderr: answers are read from
# stdout only (`run --separate-stderr`).
#
# What kwctl cannot check, and the harness does: the field masks the policy asks for (kwctl's replay
# matches a request without its `field_masks`), and a fresh instance per request under a host that
# answers garbage (covered here too, but without the harness's check of every host call).

bats_require_minimum_version 1.5.0

F=e2e-tests/fixtures
KWCTL=${KWCTL:-kwctl}
POLICY=${POLICY:-annotated-policy.wasm}

setup() {
  # backtraces of kwctl's own error logs are noise here
  export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0
}

# kwctl_run REQUEST_FILE SESSION|- SETTINGS_JSON: kwctl's AdmissionResponse in $output, its logs in
# $stderr; with a session, fails on any replay error or exchange left over
kwctl_run() {
  local args=()
  if [ "$2" != "-" ]; then
    args=(--allow-context-aware --replay-host-capabilities-interactions "$F/sessions/$2.yml")
  fi
  run --separate-stderr "$KWCTL" run "${args[@]}" --settings-json "$3" -r "$1" "$POLICY"
  if [ "$status" -ne 0 ]; then
    echo "kwctl exited $status: $stderr" >&2
    return 1
  fi
  if [ "$2" != "-" ] && grep -qE 'Replay error|have not been replayed|recorded responses is empty' <<<"$stderr"; then
    echo "host calls differ from the session $2: $stderr" >&2
    return 1
  fi
}

# the_case NAME: runs case NAME of cases.tsv and compares kwctl's answer with expected/NAME.json
the_case() {
  local line req session settings
  line=$(awk -F'\t' -v c="$1" '$1 == c' "$F/cases.tsv")
  [ -n "$line" ] || { echo "no case $1 in cases.tsv" >&2; return 1; }
  IFS=$'\t' read -r _ req session settings <<<"$line"
  kwctl_run "$F/requests/$req.json" "$session" "$settings" || return 1
  normalised=$(jq -S -f e2e-tests/kwctl/normalise.jq <<<"$output")
  local want
  want=$(jq -S . "$F/expected/$1.json")
  if [ "$normalised" != "$want" ]; then
    echo "case $1: kwctl answered" >&2
    echo "$normalised" >&2
    echo "expected ($F/expected/$1.json):" >&2
    echo "$want" >&2
    diff <(echo "$want") <(echo "$normalised") >&2 || true
    return 1
  fi
}

# annotation KEY: the value the last case's patch gives KEY ("<absent>" when it removes or leaves it)
annotation() {
  jq -r --arg k "$1" '
    (.patch | map(select(.path == "/metadata/annotations" and .op == "add")) | .[0].value[$k]) //
    (.patch | map(select(.path == ("/metadata/annotations/" + ($k | gsub("~"; "~0") | gsub("/"; "~1")))
                          and (.op == "add" or .op == "replace"))) | .[0].value) //
    "<absent>"' <<<"$normalised"
}

warnings() { jq -r '.warnings[]' <<<"$normalised"; }
no_patch() { [ "$(jq '.patch | length' <<<"$normalised")" -eq 0 ]; }
no_warnings() { [ "$(jq '.warnings | length' <<<"$normalised")" -eq 0 ]; }
only_annotations_touched() { jq -e 'all(.patch[]; .path | startswith("/metadata/annotations"))' <<<"$normalised" >/dev/null; }

@test "example MachineSet, field-masked ConfigMap" {
  the_case example-masked
  [ "$(annotation machine.openshift.io/vCPU)" = 4 ]
  [ "$(annotation machine.openshift.io/memoryMb)" = 16384 ]
  [ "$(annotation machine.openshift.io/GPU)" = 0 ]
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/labels)" = "kubernetes.io/arch=arm64,team=ml" ]
  no_warnings
  only_annotations_touched
}

@test "whole ConfigMap answer gives the same result" {
  the_case example-whole-configmap
  masked=$(jq -S . "$F/expected/example-masked.json")
  [ "$normalised" = "$masked" ]
}

@test "patch is deterministic" {
  the_case labels-merge
  first=$normalised
  the_case labels-merge
  [ "$first" = "$normalised" ]
}

@test "m5.xlarge from the ConfigMap: the whole annotations map is added" {
  the_case m5-masked
  [ "$(annotation machine.openshift.io/vCPU)" = 4 ]
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/labels)" = "kubernetes.io/arch=amd64" ]
  [ "$(jq -r '.patch[0].op' <<<"$normalised")" = add ]
}

@test "GPU type keeps the existing annotations" {
  the_case p2-gpu
  [ "$(annotation machine.openshift.io/GPU)" = 16 ]
  [ "$(annotation machine.openshift.io/memoryMb)" = 749568 ]
  only_annotations_touched
}

@test "upstream capacity annotations on request" {
  the_case p2-gpu-upstream-keys
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/cpu)" = 64 ]
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/memory)" = 749568Mi ]
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/gpu-count)" = 16 ]
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/gpu-type)" = nvidia.com/gpu ]
}

@test "already annotated: no patch" {
  the_case m5-already-annotated
  no_patch
  no_warnings
  [ "$(jq -r .patch <<<"$output")" = null ]
}

@test "labels merge: arch first, existing pairs kept" {
  the_case labels-merge
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/labels)" = "kubernetes.io/arch=arm64,team=ml,zone=eu-west-3a" ]
}

@test "UPDATE m5.xlarge -> m6g.xlarge flips the arch, nothing else" {
  the_case update-m5-to-m6g
  [ "$(jq '.patch | length' <<<"$normalised")" -eq 1 ]
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/labels)" = "kubernetes.io/arch=arm64,team=ml" ]
}

@test "UPDATE to an unknown type removes what was written for the old one" {
  the_case update-m5-to-unknown
  jq -e 'any(.patch[]; .op == "remove" and .path == "/metadata/annotations/machine.openshift.io~1memoryMb")' <<<"$normalised"
  [ "$(warnings | wc -l)" -eq 2 ]
  warnings | grep -q 'previous instance type m5.xlarge'
}

@test "ConfigMap missing: built-in table, with a warning naming the cause" {
  the_case configmap-missing
  [ "$(annotation machine.openshift.io/vCPU)" = 4 ]
  warnings | grep -qF "m5.xlarge annotated from the built-in table of "
  warnings | grep -qF "could not be read (Cannot find v1/ConfigMap"
  [ "$(warnings | wc -c)" -le 281 ]
}

@test "ConfigMap missing, fallback none: unchanged, warning" {
  the_case configmap-missing-fallback-none
  no_patch
  warnings | grep -qF 'unknown instance type "m5.xlarge"'
  warnings | grep -qF 'fallback: none'
}

@test "malformed ConfigMap: built-in table, with a warning" {
  the_case configmap-malformed
  [ "$(annotation machine.openshift.io/memoryMb)" = 16384 ]
  warnings | grep -qF 'is malformed'
}

@test "unknown instance type: unchanged, warning" {
  the_case unknown-type
  no_patch
  warnings | grep -qF 'unknown instance type "zz9.huge"'
  warnings | grep -qF 'overrides'
}

@test "empty instance type: unchanged, warning" {
  the_case empty-type
  no_patch
  warnings | grep -qF 'instanceType is empty'
}

@test "overrides win without asking the host" {
  the_case overrides
  [ "$(annotation machine.openshift.io/vCPU)" = 12 ]
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/labels)" = "kubernetes.io/arch=arm64" ]
  no_warnings
}

@test "custom ConfigMap name and namespace" {
  the_case custom-configmap
  [ "$(annotation machine.openshift.io/vCPU)" = 4 ]
}

@test "skipped without host calls: deleting, non-AWS, authoritativeAPI, paused" {
  for c in skip-deleting skip-not-aws skip-authoritative-clusterapi skip-paused; do
    the_case "$c"
    no_patch
    no_warnings
  done
}

@test "authoritativeAPI and Paused are ignored unless asked" {
  the_case authoritative-api-ignored-by-default
  [ "$(annotation machine.openshift.io/vCPU)" = 4 ]
  the_case paused-ignored-without-the-gate
  [ "$(annotation machine.openshift.io/vCPU)" = 4 ]
}

@test "no cluster at all: the built-in table answers, the warning says why" {
  the_case example-no-cluster
  [ "$(annotation machine.openshift.io/vCPU)" = 4 ]
  warnings | grep -qF "Policy has not been granted access to Kubernetes"
}

@test "a wrong hand-written value is corrected, with one warning" {
  the_case wrong-memory-corrected
  [ "$(annotation machine.openshift.io/memoryMb)" = 65536 ]
  [ "$(warnings)" = "capa-annotator: corrected machine.openshift.io/memoryMb 32768 → 65536 (m6g.4xlarge)" ]
}

@test "GPU type: a warning without the cluster-api/accelerator node label, none with it" {
  the_case gpu-without-accelerator-label
  warnings | grep -qF 'g6.2xlarge has 1 GPU, but spec.template.spec.metadata.labels lacks cluster-api/accelerator'
  the_case gpu-with-accelerator-label
  ! warnings | grep -qF 'accelerator'
  [ "$(annotation machine.openshift.io/GPU)" = 1 ]
}

@test "every case of cases.tsv gives its expected answer" {
  cases=$(awk -F'\t' '!/^#/ && NF { print $1 }' "$F/cases.tsv")
  [ "$(wc -l <<<"$cases")" -ge 20 ]
  for c in $cases; do
    the_case "$c"
  done
}

@test "settings: every verdict of settings-cases.tsv, word for word" {
  n=0
  while IFS=$'\t' read -r settings verdict; do
    case "$settings" in '#'*|'') continue ;; esac
    n=$((n + 1))
    run --separate-stderr "$KWCTL" run --settings-json "$settings" -r "$F/requests/create-m5-xlarge.json" "$POLICY"
    if [ "$verdict" = valid ]; then
      [ "$status" -eq 0 ] || { echo "$settings rejected: $stderr" >&2; return 1; }
    else
      [ "$status" -ne 0 ] || { echo "$settings accepted" >&2; return 1; }
      grep -qF "Provided settings are not valid: $verdict" <<<"$stderr" || { echo "$settings: $stderr" >&2; return 1; }
    fi
  done < "$F/settings-cases.tsv"
  [ "$n" -ge 10 ]
}

@test "no cluster: one type of every family of the built-in table, from its line" {
  # the harness runs all 1,263 lines; one type per family (177 kwctl runs) keeps this suite short
  req=$(mktemp)
  n=0
  while read -r name vcpu mib gpu arch _; do
    n=$((n + 1))
    jq --arg t "$name" '.object.spec.template.spec.providerSpec.value.instanceType = $t' \
      "$F/requests/create-m5-xlarge.json" > "$req"
    kwctl_run "$req" - '{}'
    normalised=$(jq -S -f e2e-tests/kwctl/normalise.jq <<<"$output")
    got="$(annotation machine.openshift.io/vCPU) $(annotation machine.openshift.io/memoryMb) $(annotation machine.openshift.io/GPU) $(annotation capacity.cluster-autoscaler.kubernetes.io/labels)"
    [ "$got" = "$vcpu $mib $gpu kubernetes.io/arch=$arch" ] || { echo "$name: got $got" >&2; return 1; }
  done < <(grep -v '^#' policy/data/builtin-instance-types.txt | awk '{ split($1, p, "."); if (!seen[p[1]]++) print }')
  rm -f "$req"
  [ "$n" -ge 170 ]
}

@test "hostile objects and host answers: always allowed, never a kwctl error" {
  dir=$(mktemp -d)
  # a host that answers garbage (a replay session whose payload is not JSON), and no cluster
  cat > "$dir/garbage.yml" <<'EOF'
- type: Exchange
  request: |
    !KubernetesGetResource
    api_version: v1
    kind: ConfigMap
    name: machineset-instance-types
    namespace: openshift-machine-api
    disable_cache: false
    field_masks: [data.m5]
  response:
    type: Success
    payload: "\u0000\u00ff not json"
EOF
  base="$F/requests/create-m5-xlarge-already-annotated.json"
  i=0
  while IFS=$'\t' read -r path value; do
    i=$((i + 1))
    jq --argjson v "$value" "$path = \$v" "$base" > "$dir/req-$i.json"
  done <<'EOF'
.object.metadata	"metadata"
.object.metadata.annotations	["a"]
.object.metadata.annotations	{"machine.openshift.io/vCPU":1,"capacity.cluster-autoscaler.kubernetes.io/labels":{"x":1}}
.object.spec	7
.object.spec.template.spec.providerSpec	{"value":"x"}
.object.spec.template.spec.providerSpec.value.instanceType	{"a":1}
.object.spec.template.spec.providerSpec.value.instanceType	"../../etc.passwd"
.object.spec.template.spec.providerSpec.value.kind	false
.object.status	{"conditions":"x","authoritativeAPI":3}
.object.apiVersion	null
.oldObject	{"spec":{"template":{"spec":{"providerSpec":{"value":{"instanceType":1}}}}}}
.operation	"UPDATE"
EOF
  jq '.object.metadata.annotations["capacity.cluster-autoscaler.kubernetes.io/labels"] = ([range(250000) | "k=v"] | join(","))' \
    "$base" > "$dir/req-big-labels.json"
  jq '.object.spec.template.spec.providerSpec.value.instanceType = ([range(100000) | "m5"] | join("."))' \
    "$base" > "$dir/req-long-type.json"
  for req in "$dir"/req-*.json; do
    for session in - garbage; do
      if [ "$session" = - ]; then
        run --separate-stderr "$KWCTL" run -r "$req" "$POLICY"
      else
        run --separate-stderr "$KWCTL" run --allow-context-aware \
          --replay-host-capabilities-interactions "$dir/garbage.yml" -r "$req" "$POLICY"
      fi
      [ "$status" -eq 0 ] || { echo "$req ($session): kwctl exited $status: $stderr" >&2; return 1; }
      [ "$(jq -r .allowed <<<"$output")" = true ] || { echo "$req ($session): $output" >&2; return 1; }
    done
  done
  rm -rf "$dir"
}

@test "Cluster API: CAPA's GPU MachineDeployment gets the clusterapi provider's keys only" {
  the_case capi-md-v1beta1-gpu
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/cpu)" = 4 ]
  # a bare number would be bytes to the autoscaler
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/memory)" = 16384Mi ]
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/gpu-count)" = 1 ]
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/gpu-type)" = nvidia.com/gpu ]
  [ "$(annotation machine.openshift.io/vCPU)" = "<absent>" ]
  no_warnings
  only_annotations_touched
}

@test "Cluster API: v1beta2 apiGroup ref, v1beta1 ref in openshift-cluster-api (arm64)" {
  the_case capi-md-v1beta2-apigroup-ref
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/memory)" = 8192Mi ]
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/gpu-count)" = "<absent>" ]
  the_case capi-ms-openshift-arm64
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/labels)" = kubernetes.io/arch=arm64 ]
}

@test "Cluster API: a rollout to a template without GPUs removes the GPU keys" {
  the_case capi-rollout-gpu-to-arm64
  [ "$(jq -c '[.patch[] | select(.op == "remove") | .path]' <<<"$normalised")" = \
    '["/metadata/annotations/capacity.cluster-autoscaler.kubernetes.io~1gpu-count","/metadata/annotations/capacity.cluster-autoscaler.kubernetes.io~1gpu-type"]' ]
  [ "$(annotation capacity.cluster-autoscaler.kubernetes.io/labels)" = kubernetes.io/arch=arm64 ]
  no_warnings
}

@test "Cluster API: a missing template is a warning, another provider is skipped" {
  the_case capi-template-missing
  no_patch
  warnings | grep -q "AWSMachineTemplate default/k0s-aws-test-mt was not found"
  the_case capi-other-provider
  no_patch
  no_warnings
}

@test "Cluster API: without AWSMachineTemplate in contextAwareResources, the warning names the fix" {
  # kwctl grants what the module's metadata lists: annotate a copy that lacks the templates
  sed '/apiVersion: infrastructure.cluster.x-k8s.io/,+1d' metadata.yml > "$BATS_TEST_TMPDIR/metadata.yml"
  ! grep -q AWSMachineTemplate "$BATS_TEST_TMPDIR/metadata.yml"
  "$KWCTL" annotate -m "$BATS_TEST_TMPDIR/metadata.yml" -o "$BATS_TEST_TMPDIR/policy.wasm" policy.wasm 2>/dev/null
  run --separate-stderr "$KWCTL" run --allow-context-aware \
    --replay-host-capabilities-interactions "$F/sessions/capi-g4dn.yml" \
    -r "$F/requests/create-capi-md-v1beta1-g4dn.json" "$BATS_TEST_TMPDIR/policy.wasm"
  [ "$status" -eq 0 ]
  [ "$(jq -r .allowed <<<"$output")" = true ]
  jq -r '.warnings[]' <<<"$output" | grep -q "may not be read by the policy; not annotated. Fix: add AWSMachineTemplate to the policy's contextAwareResources"
}
