#!/usr/bin/env bash
# Build the local Kubernetes test API server used by the integration tests:
#   etcd                 (from Debian sid's etcd-server .deb)
#   mvo-test-apiserver   (testkit/apiserver/*.go: k8s.io/apiextensions-apiserver + built-in kinds,
#                         Kubernetes 1.36 code, compiled in GOPATH mode from Debian sid's packaged
#                         Go sources with sid's Go toolchain)
# Only Debian's apt registry is used. Nothing is installed system-wide: sid packages are fetched
# with a private apt config and unpacked into the cache.
#
# Usage: build-apiserver.sh                 build if needed; last line printed is the bin dir
#        build-apiserver.sh --print-bin-dir print the bin dir (built or not) and exit
#        build-apiserver.sh --go-test       build if needed, then run the Go unit tests of the
#                                           wrapper's sub-packages (e.g. rbacauthz)
#
# Cache layout (outside the repo):
#   $CACHE = ${MVO_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mvo-testenv}
#   $CACHE/<key>/bin/{etcd,mvo-test-apiserver}  key = hash(wrapper Go sources + this script)
#   $CACHE/toolchain/<tkey>/                    unpacked Go toolchain + Go sources + etcd, Go build cache
#                                               tkey = hash(mirror + package list); kept across wrapper edits
#   $CACHE/toolchain/<tkey>/extra-<ekey>/       Go sources added later (EXTRA list), so adding one does
#                                               not refetch the toolchain or rebuild the Go build cache
# Env: MVO_DEBIAN_MIRROR (the mirror when apt's config names none, or to override it), FULL=1 (use the full dependency closure instead of the
#      curated package list), MVO_TESTENV_KEEP_WORK=1 (keep the temp build dir for debugging).
# Concurrency: builds are serialized with flock on $CACHE/.lock, and results are published by
# renaming a temp dir, so racing builds and interrupted builds never leave a half-filled bin dir.
set -euo pipefail
export LC_ALL=C
# The whole script is one compound command, so bash parses it completely before running it
# (editing this file while a build runs must not break that build).
{

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
SRC=$(cd "$HERE/../apiserver" && pwd)
CACHE=${MVO_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mvo-testenv}
BIN_NAME=mvo-test-apiserver

# Wrapper sources: every *.go and go.mod under DIR (relative paths, sorted).
wrapper_files() { (cd "$1" && find . -type f \( -name '*.go' -o -name 'go.mod' \) | sed 's|^\./||' | sort); }
source_key() {  # hash of this script + the wrapper sources in DIR
  { echo "script"; cat "$SELF"; for f in $(wrapper_files "$1"); do echo "== $f"; cat "$1/$f"; done; } \
    | sha256sum | cut -c1-16; }
KEY=$(source_key "$SRC")
OUT="$CACHE/$KEY"
BINDIR="$OUT/bin"

if [ "${1:-}" = "--print-bin-dir" ]; then echo "$BINDIR"; exit 0; fi
GO_TEST=0
if [ "${1:-}" = "--go-test" ]; then GO_TEST=1; shift; "$SELF" >/dev/null; fi
if [ $# -gt 0 ]; then echo "usage: $0 [--print-bin-dir | --go-test]" >&2; exit 2; fi

is_built() { [ -x "$BINDIR/$BIN_NAME" ] && [ -x "$BINDIR/etcd" ]; }
if [ $GO_TEST = 0 ] && is_built; then echo "$BINDIR"; exit 0; fi

for tool in apt-get apt-cache dpkg-deb sha256sum flock; do
  command -v "$tool" >/dev/null || { echo "build-apiserver: missing required tool: $tool" >&2; exit 1; }
done
mkdir -p "$CACHE"
if [ $GO_TEST = 0 ]; then   # --go-test only reads the toolchain the build above made; no lock needed
  exec 9>"$CACHE/.lock"
  echo "build-apiserver: waiting for lock $CACHE/.lock" >&2
  flock 9
  if is_built; then echo "$BINDIR"; exit 0; fi   # a concurrent build finished it
  rm -rf "$CACHE"/.tmp-* "$CACHE"/toolchain/.tmp-* "$CACHE"/toolchain/*/.tmp-*   # interrupted builds' leftovers (we hold the lock)
fi
T0=$(date +%s)

# ---- Debian mirror: from the machine's apt config or MVO_DEBIAN_MIRROR (debian-mirror.sh) ----------
URI=$("$HERE/debian-mirror.sh") || { echo "build-apiserver: cannot choose a Debian mirror (see above)" >&2; exit 1; }

# Curated list of Go source packages needed (Kubernetes 1.36 apiextensions-apiserver + apiserver +
# api + client-go and their deps). If sid changes and one disappears, we fall back to the full
# closure. Versions are never pinned: whatever sid has today.
CURATED="golang-cel-cel-go-dev golang-cel-expr-dev golang-etcd-server-dev golang-github-antlr4-go-antlr-dev golang-github-beorn7-perks-dev golang-github-blang-semver-dev golang-github-cenkalti-backoff-v5-dev golang-github-cespare-xxhash-v2-dev golang-github-coreos-go-semver-dev golang-github-coreos-go-systemd-dev golang-github-davecgh-go-spew-dev golang-github-docker-spdystream-dev golang-github-emicklei-go-restful-dev golang-github-evanphx-json-patch-dev golang-github-felixge-httpsnoop-dev golang-github-fsnotify-fsnotify-dev golang-github-fxamacker-cbor-dev golang-github-go-logr-logr-dev golang-github-go-logr-stdr-dev golang-github-go-openapi-jsonpointer-dev golang-github-go-openapi-jsonreference-dev golang-github-go-openapi-swag-dev golang-github-gogo-protobuf-dev golang-github-golang-protobuf-1-5-dev golang-github-google-gnostic-models-dev golang-github-google-uuid-dev golang-github-gorilla-websocket-dev golang-github-grpc-ecosystem-go-grpc-middleware-dev golang-github-grpc-ecosystem-grpc-gateway-dev golang-github-json-iterator-go-dev golang-github-kylelemons-godebug-dev golang-github-modern-go-concurrent-dev golang-github-modern-go-reflect2-dev golang-github-munnerz-goautoneg-dev golang-github-mxk-go-flowrate-dev golang-github-nytimes-gziphandler-dev golang-github-pkg-errors-dev golang-github-pmezard-go-difflib-dev golang-github-prometheus-client-golang-dev golang-github-prometheus-client-model-dev golang-github-prometheus-common-dev golang-github-prometheus-procfs-dev golang-github-spf13-cobra-dev golang-github-spf13-pflag-dev golang-github-x448-float16-dev golang-go.uber-multierr-dev golang-go.uber-zap-dev golang-golang-x-crypto-dev golang-golang-x-exp-dev golang-golang-x-net-dev golang-golang-x-oauth2-dev golang-golang-x-sync-dev golang-golang-x-sys-dev golang-golang-x-term-dev golang-golang-x-text-dev golang-golang-x-time-dev golang-google-genproto-dev golang-google-grpc-dev golang-google-protobuf-dev golang-gopkg-inf.v0-dev golang-gopkg-natefinch-lumberjack.v2-dev golang-gopkg-yaml.v2-dev golang-gopkg-yaml.v3-dev golang-k8s-api-dev golang-k8s-apiextensions-apiserver-dev golang-k8s-apimachinery-dev golang-k8s-apiserver-dev golang-k8s-client-go-dev golang-k8s-component-base-dev golang-k8s-klog-dev golang-k8s-kms-dev golang-k8s-kube-openapi-dev golang-k8s-sigs-apiserver-network-proxy-dev golang-k8s-sigs-json-dev golang-k8s-sigs-randfill-dev golang-k8s-sigs-structured-merge-diff-v6-dev golang-k8s-sigs-yaml-dev golang-k8s-streaming-dev golang-k8s-utils-dev golang-opentelemetry-contrib-dev golang-opentelemetry-otel-dev golang-opentelemetry-proto-dev"

ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
TKEY=$(echo "v1 $ARCH $URI ${FULL:-0} $CURATED" | sha256sum | cut -c1-12)
TC="$CACHE/toolchain/$TKEY"

# ---- Stage 1: toolchain + Go sources + etcd (cached in $TC; reused across wrapper edits) ----------
if [ ! -f "$TC/.complete" ]; then
  echo "build-apiserver: fetching Debian sid Go toolchain + Kubernetes Go sources from $URI (cache $TC)" >&2
  mkdir -p "$CACHE/toolchain"
  TW=$(mktemp -d "$CACHE/toolchain/.tmp-$TKEY.XXXXXX")
  trap 'rm -rf "$TW"' EXIT
  mkdir -p "$TW"/{apt/lists/partial,apt/cache/archives/partial,debs,root}
  echo "deb $URI sid main" > "$TW/apt/sources.list"
  APT=(-o "Dir::Etc::SourceList=$TW/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
       -o "Dir::State::Lists=$TW/apt/lists" -o "Dir::Cache=$TW/apt/cache" -o Dir::State::status=/dev/null
       -o Debug::NoLocking=1 -o APT::Sandbox::User=root -o "APT::Architecture=$ARCH"
       -o Acquire::Retries=3)
  apt-get "${APT[@]}" -qq update
  # The Go toolchain sid's golang-go currently points at (e.g. golang-1.27-go) + its -src package.
  GOPKG=$(apt-cache "${APT[@]}" depends golang-go | awk '/Depends: golang-1\.[0-9]+-go/{print $2; exit}')
  [ -n "$GOPKG" ] || { echo "build-apiserver: cannot resolve golang-go in sid" >&2; exit 1; }
  GOVER=${GOPKG#golang-}; GOVER=${GOVER%-go}
  closure() {  # every golang-*-dev package the apiextensions source package depends on, recursively
    apt-cache "${APT[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
      --no-replaces --no-enhances golang-k8s-apiextensions-apiserver-dev | grep -E '^golang-.*-dev$' | sort -u; }
  cd "$TW/debs"
  # shellcheck disable=SC2086
  if [ "${FULL:-0}" = 1 ] || ! apt-get "${APT[@]}" -qq download "$GOPKG" "golang-$GOVER-src" etcd-server $CURATED 2>"$TW/dl.err"; then
    echo "build-apiserver: curated package list failed (or FULL=1) -> full dependency closure" >&2
    head -3 "$TW/dl.err" >&2 || true
    rm -f ./*.deb
    apt-get "${APT[@]}" -qq download "$GOPKG" "golang-$GOVER-src" etcd-server $(closure)
  fi
  for d in ./*.deb; do dpkg-deb -x "$d" "$TW/root"; done
  ls ./*.deb | sed 's|^\./||' > "$TW/debian-packages.txt"
  echo "$GOVER" > "$TW/goversion"
  cd /
  rm -rf "$TW/debs" "$TW/apt/cache"    # the unpacked tree is what we keep
  [ -x "$TW/root/usr/lib/go-$GOVER/bin/go" ] && [ -x "$TW/root/usr/bin/etcd" ] \
    || { echo "build-apiserver: unpacked tree lacks go or etcd" >&2; exit 1; }
  touch "$TW/.complete"
  rm -rf "$TC"                          # an incomplete leftover (we hold the lock)
  mv -T "$TW" "$TC"
  trap - EXIT
fi

# ---- Stage 1b: Go sources added after the toolchain (their own cache dir) -----------------------
# k8s.io/component-helpers: the upstream RBAC rule comparator (rbacauthz uses it).
EXTRA="golang-k8s-component-helpers-dev"
EKEY=$(echo "v1 $EXTRA" | sha256sum | cut -c1-12)
EX="$TC/extra-$EKEY"
if [ ! -f "$EX/.complete" ]; then
  echo "build-apiserver: fetching $EXTRA (cache $EX)" >&2
  EW=$(mktemp -d "$TC/.tmp-extra.XXXXXX")
  trap 'rm -rf "$EW"' EXIT
  mkdir -p "$EW"/{apt/lists/partial,apt/cache/archives/partial,debs,root}
  echo "deb $URI sid main" > "$EW/apt/sources.list"
  LISTS="$TC/apt/lists"; [ -d "$LISTS" ] || LISTS="$EW/apt/lists"
  apt_ex() { apt-get -o "Dir::Etc::SourceList=$EW/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o "Dir::State::Lists=$LISTS" -o "Dir::Cache=$EW/apt/cache" -o Dir::State::status=/dev/null \
    -o Debug::NoLocking=1 -o APT::Sandbox::User=root -o "APT::Architecture=$ARCH" -o Acquire::Retries=3 -qq "$@"; }
  cd "$EW/debs"
  # shellcheck disable=SC2086
  if [ "$LISTS" = "$EW/apt/lists" ] || ! apt_ex download $EXTRA 2>/dev/null; then
    LISTS="$EW/apt/lists"; apt_ex update; apt_ex download $EXTRA   # the toolchain's package lists are stale
  fi
  for d in ./*.deb; do dpkg-deb -x "$d" "$EW/root"; done
  ls ./*.deb | sed 's|^\./||' > "$EW/debian-packages.txt"
  cd /
  rm -rf "$EW/debs" "$EW/apt"
  touch "$EW/.complete"
  rm -rf "$EX"
  mv -T "$EW" "$EX"
  trap - EXIT
fi

# ---- Stage 2: wrapper binary --------------------------------------------------------------------
GOVER=$(cat "$TC/goversion")
BW=$(mktemp -d "$CACHE/.tmp-$KEY.XXXXXX")
[ "${MVO_TESTENV_KEEP_WORK:-0}" = 1 ] || trap 'rm -rf "$BW"' EXIT
mkdir -p "$BW/gopath/src/$BIN_NAME" "$BW/out/bin"
PKG="$BW/gopath/src/$BIN_NAME"
for f in $(wrapper_files "$SRC"); do   # its go.mod enables the /vN import compatibility in GOPATH mode
  mkdir -p "$(dirname "$PKG/$f")"; cp "$SRC/$f" "$PKG/$f"
done
if [ "$(source_key "$PKG")" != "$KEY" ]; then   # sources edited while we waited: key the snapshot
  KEY=$(source_key "$PKG"); OUT="$CACHE/$KEY"; BINDIR="$OUT/bin"
  if is_built; then echo "$BINDIR"; exit 0; fi
fi
export GOROOT="$TC/root/usr/lib/go-$GOVER" GOPATH="$BW/gopath:$TC/root/usr/share/gocode:$EX/root/usr/share/gocode" GO111MODULE=off \
  CGO_ENABLED=0 GOTOOLCHAIN=local GOPROXY=off GOFLAGS= GOCACHE="$TC/gocache" GOTMPDIR="$BW"
if [ $GO_TEST = 1 ]; then   # the packages below the wrapper that have tests
  TESTPKGS=$(cd "$PKG" && find . -mindepth 2 -name '*_test.go' -printf '%h\n' | sort -u | sed "s|^\.|$BIN_NAME|")
  # shellcheck disable=SC2086
  (cd "$PKG" && "$GOROOT/bin/go" test -trimpath -count=1 $TESTPKGS)   # -trimpath as the build: reuses its cache
  exit $?
fi
echo "build-apiserver: go $("$GOROOT/bin/go" env GOVERSION) building $BIN_NAME (Go build cache $GOCACHE)" >&2
# /version: report the packaged Kubernetes library version (golang-k8s-apiserver-dev 0.36.4 -> v1.36.4)
# instead of upstream's placeholder v0.0.0-master.
KVER=$(sed -n 's/^golang-k8s-apiserver-dev_0\.\([0-9]*\)\.\([0-9]*\)[-_].*/1.\1.\2/p' "$TC/debian-packages.txt" | head -1)
LDFLAGS="-s -w"
if [ -n "$KVER" ]; then
  V=k8s.io/component-base/version
  LDFLAGS="$LDFLAGS -X $V.gitVersion=v$KVER -X $V.gitMajor=1 -X $V.gitMinor=$(echo "$KVER" | cut -d. -f2) -X $V.gitTreeState=clean"
fi
(cd "$PKG" && "$GOROOT/bin/go" build -trimpath -ldflags "$LDFLAGS" -o "$BW/out/bin/$BIN_NAME" .)
cp "$TC/root/usr/bin/etcd" "$BW/out/bin/etcd"
cat "$TC/debian-packages.txt" "$EX/debian-packages.txt" > "$BW/out/bin/debian-packages.txt"
{ echo "key=$KEY"; echo "toolchain=$TC"; echo "go=$GOVER"; echo "kubernetes=v${KVER:-unknown}"; echo "mirror=$URI"; echo "built=$(date -u +%FT%TZ)"; } \
  > "$BW/out/bin/BUILDINFO"
if [ -e "$OUT" ]; then rm -rf "$OUT"; fi   # incomplete leftover (bins missing) - we hold the lock
mv -T "$BW/out" "$OUT"
echo "build-apiserver: built in $(( $(date +%s) - T0 ))s" >&2
ls -la "$BINDIR" >&2
echo "$BINDIR"
exit 0
}
