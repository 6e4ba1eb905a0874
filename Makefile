# The two commands a newcomer needs: `make demo` and `make test`. Everything else is for developers.
CARGO ?= cargo
CRD_FILE := deploy/crds/managed.openshift.io_veleroinstalls.yaml
CRATES := mvo-core mvo-provider-aws mvo-provider-gcp mvo-provider-azure mvo-testkit mvo-operator

.PHONY: test testenv demo demo-takeover bench lint fmt crds check-crds check-crates bundle check-bundle

## Run every test of the workspace (builds the local environment first when it is not cached).
test: testenv
	testkit/scripts/build-apiserver.sh --go-test
	$(CARGO) test --workspace --all-targets --locked

## Measure the SPEC 14 budgets against the local environment (release build).
bench: testenv
	$(CARGO) build --locked --release -p mvo-operator --bins --examples
	$(CARGO) run --quiet --locked --release -p mvo-operator --example bench

## Build and cache the local environment outside the repo: etcd + test API server, moto venv,
## Azurite (npm).
testenv:
	testkit/scripts/check-prereqs.sh
	testkit/scripts/build-apiserver.sh
	testkit/scripts/install-moto.sh
	testkit/scripts/install-azurite.sh

## Run the operator's main job against the local environment (MVO_DEMO_CLOUD=azure: on Azure, Azurite).
demo: testenv
	$(CARGO) build --locked -p mvo-operator --bins --examples
	$(CARGO) run --quiet --locked -p mvo-operator --example demo

## Start from the state the Go MVO leaves and show the operator taking it over.
demo-takeover: testenv
	$(CARGO) build --locked -p mvo-operator --bins --examples
	$(CARGO) run --quiet --locked -p mvo-operator --example demo_takeover

## Formatting check and clippy with warnings as errors.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

## Regenerate the CRD YAML in deploy/ from the Rust types.
crds:
	$(CARGO) run --quiet --locked -p mvo-operator -- crd > $(CRD_FILE)

## Fail when deploy/ differs from what the binary prints.
check-crds: crds
	git diff --exit-code -- deploy/

## Regenerate the OLM bundle (bundle/manifests: CSV + CRD + objects; bundle/metadata) from deploy/.
bundle:
	$(CARGO) run --quiet --locked -p mvo-operator --example bundle

## Fail when bundle/ differs from what `make bundle` generates from deploy/.
check-bundle: bundle
	git diff --exit-code -- bundle/
	@test -z "$$(git status --porcelain --untracked-files=all -- bundle/)" || { git status --short -- bundle/; echo "bundle/: files not committed"; exit 1; }

## Check each crate alone, so feature unification cannot hide a missing dependency feature.
check-crates:
	@for crate in $(CRATES); do echo "== $$crate"; $(CARGO) check --locked -p $$crate --all-targets || exit 1; done

## Build the operator image (multi-stage Dockerfile: static musl binary on distroless, non-root).
IMAGE ?= managed-velero-operator:dev
.PHONY: docker-build
docker-build:
	docker build --build-arg MVO_GIT_HASH=$$(git rev-parse --short=12 HEAD) -t $(IMAGE) .

## Faults at random against the real operator binary (two replicas), named invariants checked;
## SEED and DURATION (default 180s) reproduce a run. Debug build: the one `make test` builds.
SEED ?=
DURATION ?= 180s
.PHONY: chaos
chaos: testenv
	$(CARGO) build --locked -p mvo-operator --bins --examples
	SEED=$(SEED) DURATION=$(DURATION) $(CARGO) run --quiet --locked -p mvo-operator --example chaos
