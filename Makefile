# The two commands a newcomer needs: `make demo` and `make test`. Everything else is for developers.
CARGO ?= cargo
CRD_FILE := deploy/crds/managed.openshift.io_veleroinstalls.yaml
CRATES := mvo-core mvo-provider-aws mvo-provider-gcp mvo-provider-azure mvo-testkit mvo-operator

.PHONY: test testenv demo demo-takeover bench layout release-prereqs lint fmt crds check-crds check-crates bundle check-bundle

## Run every test of the workspace (builds the local environment first when it is not cached).
test: testenv
	testkit/scripts/build-apiserver.sh --go-test
	$(CARGO) test --workspace --all-targets --locked

## The clouds the operator can be built for: one cargo feature of mvo-operator each; the default
## build links them all. `make bench` measures each single-cloud build, `make docker-build
## CLOUD=aws` builds an image of one.
CLOUDS := aws gcp azure
# What the image ships: a static musl binary, release profile, linked with the code the operator
# runs placed first (operator/link/ordered-lld.sh; `make layout` records that code).
MUSL := x86_64-unknown-linux-musl
RELEASE_DIR := target/$(MUSL)/release
RELEASE_BUILD = CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build --locked --release --target $(MUSL) -p mvo-operator
BENCH_BUILDS := target/bench-builds
# The release builds into $(1)/<build>/: all clouds and one per cloud, each with its GCP-plane twin
# when it links GCP (examples/gcp_plane_operator.rs: the operator with the in-memory GCS plane).
# Binary and example are built apart so the example's dev-dependencies cannot change the binary's
# features.
define release_builds
	rm -rf $(1)
	for build in all $(CLOUDS); do \
	  features=$$(if [ $$build = all ]; then echo default; else echo $$build; fi); \
	  mkdir -p $(1)/$$build \
	  && $(RELEASE_BUILD) --no-default-features --features $$features --bin managed-velero-operator \
	  && cp $(RELEASE_DIR)/managed-velero-operator $(1)/$$build/ || exit 1; \
	  if [ $$build != aws ] && [ $$build != azure ]; then \
	    $(RELEASE_BUILD) --no-default-features --features $$features --example gcp_plane_operator \
	    && cp $(RELEASE_DIR)/examples/gcp_plane_operator $(1)/$$build/ || exit 1; \
	  fi; \
	done
endef

## Measure the SPEC 14 budgets against the local environment, and the footprint (binary size,
## steady and peak RSS) of the all-cloud and of each single-cloud release build, as the image
## ships them, on every cloud it links: AWS on moto, GCP on the in-memory GCS plane, Azure on Azurite.
bench: testenv release-prereqs
	$(call release_builds,$(BENCH_BUILDS))
	$(CARGO) run --quiet --locked -p mvo-operator --example bench -- $(BENCH_BUILDS)

LAYOUT_BUILDS := target/layout-builds
## Record the functions the operator runs into operator/link/hot-functions.txt: the bench's
## scenario (install, resyncs, Velero status churn, drift) run under callgrind, with the
## unstripped twin of every release build on every cloud it links (the union of their names).
## Rerun after dependency or toolchain updates, when `make bench` shows the code pages growing.
layout: testenv release-prereqs
	@command -v valgrind >/dev/null || { echo "layout: missing valgrind (apt-get install valgrind)"; exit 1; }
	$(call release_builds,$(LAYOUT_BUILDS))
	for binary in $(LAYOUT_BUILDS)/*/*; do \
	  twin=$$(operator/link/unstripped-twin.sh $$binary $(RELEASE_DIR)) && cp $$twin $$binary || exit 1; \
	done
	MVO_BENCH_WRAP="valgrind --tool=callgrind --demangle=no --callgrind-out-file=$(CURDIR)/$(LAYOUT_BUILDS)/callgrind.%p" \
	  $(CARGO) run --quiet --locked -p mvo-operator --example bench -- $(LAYOUT_BUILDS)
	cat $(LAYOUT_BUILDS)/callgrind.* | sed -n -E 's/^c?fn=\([0-9]+\) //p' | sort -u \
	  | operator/link/demangle.sh | grep -v -E '^(0x[0-9a-f]+|\(.*\))$$' | LC_ALL=C sort -u \
	  > operator/link/hot-functions.txt
	@wc -l operator/link/hot-functions.txt

## The static musl release build needs the musl target and musl-gcc (ring's C code); its link
## step needs binutils' nm, c++filt and strip.
release-prereqs:
	@test -d "$$(rustc --print sysroot)/lib/rustlib/$(MUSL)" \
	  || { echo "release build: missing the $(MUSL) target (rustup target add $(MUSL))"; exit 1; }
	@for tool in musl-gcc:musl-tools nm:binutils c++filt:binutils strip:binutils; do \
	  command -v $${tool%%:*} >/dev/null \
	  || { echo "release build: missing $${tool%%:*} (apt-get install $${tool#*:})"; exit 1; }; \
	done

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
