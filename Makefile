# The two commands a newcomer needs: `make demo` and `make test`. Everything else is for developers.
CARGO ?= cargo
CRD_FILE := deploy/crds/managed.openshift.io_veleroinstalls.yaml
CRATES := mvo-core mvo-provider-aws mvo-provider-gcp mvo-provider-azure mvo-testkit mvo-operator

.PHONY: test testenv demo demo-takeover bench lint fmt crds check-crds check-crates bundle check-bundle

## Run every test of the workspace (builds the local environment first when it is not cached).
test: testenv
	testkit/scripts/build-apiserver.sh --go-test
	$(CARGO) test --workspace --all-targets --locked

## The clouds the operator can be built for: one cargo feature of mvo-operator each; the default
## build links them all. `make bench` measures each single-cloud build, `make docker-build
## CLOUD=aws` builds an image of one.
CLOUDS := aws gcp azure
BENCH_BUILDS := target/bench-builds
# The operator as shipped (release profile), once with all clouds and once per cloud; with GCP
# also its twin on the in-memory GCS plane (examples/gcp_plane_operator.rs). The binary and the
# example are built apart so the example's dev-dependencies cannot change the binary's features.
BENCH_BUILD = $(CARGO) build --locked --release -p mvo-operator

## Measure the SPEC 14 budgets against the local environment, and the footprint (binary size,
## steady and peak RSS) of the all-cloud and of each single-cloud release build on every cloud it
## links: AWS on moto, GCP on the in-memory GCS plane, Azure on Azurite.
bench: testenv
	rm -rf $(BENCH_BUILDS)
	$(BENCH_BUILD) --bin managed-velero-operator
	$(BENCH_BUILD) --example gcp_plane_operator
	mkdir -p $(BENCH_BUILDS)/all
	cp target/release/managed-velero-operator target/release/examples/gcp_plane_operator $(BENCH_BUILDS)/all/
	for cloud in $(CLOUDS); do \
	  mkdir -p $(BENCH_BUILDS)/$$cloud \
	  && $(BENCH_BUILD) --no-default-features --features $$cloud --bin managed-velero-operator \
	  && cp target/release/managed-velero-operator $(BENCH_BUILDS)/$$cloud/ \
	  || exit 1; \
	  if [ $$cloud = gcp ]; then \
	    $(BENCH_BUILD) --no-default-features --features gcp --example gcp_plane_operator \
	    && cp target/release/examples/gcp_plane_operator $(BENCH_BUILDS)/gcp/ || exit 1; \
	  fi; \
	done
	$(CARGO) run --quiet --locked -p mvo-operator --example bench -- $(BENCH_BUILDS)

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
## All clouds by default; `make docker-build CLOUD=aws` (or gcp, azure) links only that provider.
CLOUD ?=
IMAGE ?= managed-velero-operator:dev$(if $(CLOUD),-$(CLOUD))
.PHONY: docker-build
docker-build:
	@test -z "$(CLOUD)" || echo " $(CLOUDS) " | grep -q " $(CLOUD) " \
	  || { echo "CLOUD=$(CLOUD): one of $(CLOUDS), or empty for all"; exit 1; }
	docker build --build-arg MVO_GIT_HASH=$$(git rev-parse --short=12 HEAD) \
	  --build-arg CARGO_FEATURES=$(if $(CLOUD),$(CLOUD),default) -t $(IMAGE) .

## Faults at random against the real operator binary (two replicas), named invariants checked;
## SEED and DURATION (default 180s) reproduce a run. Debug build: the one `make test` builds.
SEED ?=
DURATION ?= 180s
.PHONY: chaos
chaos: testenv
	$(CARGO) build --locked -p mvo-operator --bins --examples
	SEED=$(SEED) DURATION=$(DURATION) $(CARGO) run --quiet --locked -p mvo-operator --example chaos
