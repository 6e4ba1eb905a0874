#!/usr/bin/env bash
# `make testenv`'s first step: check, before anything is downloaded or built, that this machine
# has what the local test environment needs. Prints one line per missing thing and fails if any
# required one is missing; prints nothing when all is there.
# What is needed only to build (apt access, dpkg-deb, disk) is checked only while the API server
# is not built yet (testkit/scripts/build-apiserver.sh caches it).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${MVO_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mvo-testenv}
missing=0
need() {  # need TOOL WHY
  command -v "$1" >/dev/null 2>&1 || { echo "testenv: missing $1 ($2)" >&2; missing=1; }
}

need cargo "the Rust toolchain: https://rustup.rs"
need flock "util-linux: serializes concurrent environment builds"
need sha256sum "coreutils: cache keys"
for tool in nm c++filt readelf strip; do
  need "$tool" "binutils: the release link's symbol ordering, tested by operator/tests/layout.rs"
done
need python3 "runs the moto S3/STS server; apt-get install python3 python3-venv"
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  echo "testenv: missing Python venv support (python3 -m venv fails; apt-get install python3-venv)" >&2
  missing=1
fi

bindir=$("$HERE/build-apiserver.sh" --print-bin-dir)
if [ ! -x "$bindir/mvo-test-apiserver" ] || [ ! -x "$bindir/etcd" ]; then
  need apt-get "downloads Debian's Go toolchain, Kubernetes sources and etcd (a Debian or Ubuntu machine)"
  need apt-cache "resolves the Go toolchain package"
  need dpkg-deb "unpacks the downloaded .deb files"
  if ! mirror_error=$("$HERE/debian-mirror.sh" 2>&1 >/dev/null); then
    echo "testenv: $mirror_error" >&2
    missing=1
  fi
  mkdir -p "$CACHE"
  free_kb=$(df -Pk "$CACHE" | awk 'NR==2 {print $4}')
  if [ -n "$free_kb" ] && [ "$free_kb" -lt $((4 * 1024 * 1024)) ]; then
    echo "testenv: not enough disk: $((free_kb / 1024)) MB free under $CACHE, the first build needs about 4 GB (set MVO_TESTENV_CACHE to put it elsewhere)" >&2
    missing=1
  fi
fi

need node "runs Azurite, the Azure Storage emulator of the Azure provider's tests (Node 20 or newer)"
need npm "installs Azurite from the npm registry"
need openssl "makes the throw-away TLS certificates Azurite serves HTTPS with"
if command -v node >/dev/null 2>&1; then
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$node_major" -lt 20 ]; then
    echo "testenv: Node $(node --version) is too old for Azurite 3.35 (the tests pin it); install Node 20 or newer" >&2
    missing=1
  fi
fi

if [ $missing = 1 ]; then
  echo "testenv: install the missing prerequisites above, then run make testenv again" >&2
  exit 1
fi
