# syntax=docker/dockerfile:1
# The operator image (SPEC 9, 14): one static musl binary on distroless, non-root, <= 25 MB.
#   make docker-build            # IMAGE ?= managed-velero-operator:dev
# BuildKit (the default builder) is needed for the cache mounts.

FROM docker.io/library/rust:1.95-bookworm AS builder
ARG TARGET=x86_64-unknown-linux-musl
# The commit `managed-velero-operator version` reports (.git is not in the build context).
ARG MVO_GIT_HASH=unknown
ENV MVO_GIT_HASH=$MVO_GIT_HASH
# The providers linked: `default` (every cloud) or one cloud's feature (`aws`, `gcp`, `azure`;
# `make docker-build CLOUD=aws`): a smaller binary and image.
ARG CARGO_FEATURES=default
# musl-gcc compiles ring's C and assembly for the musl target (rustls' crypto provider). The
# link step (operator/build.rs, operator/link/ordered-lld.sh) places the code the operator runs
# first with the toolchain's rust-lld and binutils' nm, c++filt and strip, which this image has.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$TARGET"
ENV CC_x86_64_unknown_linux_musl=musl-gcc
WORKDIR /src
COPY . .
# The release profile (Cargo.toml): size first, fat LTO, symbols stripped; .cargo/config.toml
# names symbols with the v0 scheme for this target (the hot list matches names). The registry
# and target dirs are cache mounts, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "$TARGET" -p mvo-operator --bin managed-velero-operator \
        --no-default-features --features "$CARGO_FEATURES" \
    && cp "target/$TARGET/release/managed-velero-operator" /managed-velero-operator

# No shell, no package manager; CA certificates and /etc/passwd (nonroot = 65532) only.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=builder /managed-velero-operator /managed-velero-operator
USER 65532:65532
ENTRYPOINT ["/managed-velero-operator"]
CMD ["run"]
