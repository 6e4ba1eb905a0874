#!/usr/bin/env bash
# Install Azurite (Microsoft's Azure Storage emulator, npm registry) into the test-environment
# cache with the machine's Node, for the Azure provider's tests (blob service only).
# Usage: install-azurite.sh                  install if needed; last line printed is the bin dir
#        install-azurite.sh --print-bin-dir  print the bin dir (installed or not) and exit
# Cache: ${MVO_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mvo-testenv}/azurite-<key>/ where key
# hashes the pinned version and Node's major version, so changing either makes a new install.
# Installs are serialized with flock and published by renaming a finished temp dir, so racing or
# interrupted installs never leave a broken one behind.
#
# The pin: azurite 3.36 and later require Node >= 21 (their `engines`); 3.35.0 accepts Node >= 10
# (`npm view azurite@3.35.0 engines`), so it runs on the Node 20 of Debian/Ubuntu LTS machines.
set -euo pipefail
CACHE=${MVO_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mvo-testenv}
VERSION=3.35.0
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo none)
KEY=$(echo "azurite@$VERSION node$NODE_MAJOR" | sha256sum | cut -c1-12)
DIR="$CACHE/azurite-$KEY"
BIN="$DIR/node_modules/.bin"
if [ "${1:-}" = "--print-bin-dir" ]; then echo "$BIN"; exit 0; fi
installed() { [ -x "$BIN/azurite-blob" ] && [ -f "$DIR/.complete" ]; }
if installed; then echo "$BIN"; exit 0; fi
for tool in node npm flock; do
  command -v "$tool" >/dev/null || { echo "install-azurite: missing required tool: $tool" >&2; exit 1; }
done
mkdir -p "$CACHE"
exec 9>"$CACHE/.azurite.lock"
flock 9
if installed; then echo "$BIN"; exit 0; fi
TMP=$(mktemp -d "$CACHE/.azurite-tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# --no-audit/--no-fund: no extra registry round trips; --omit=dev: only what runs.
npm install --prefix "$TMP" --no-audit --no-fund --omit=dev --loglevel=error "azurite@$VERSION" >&2
touch "$TMP/.complete"
# npm's .bin links are relative, so the tree survives the move.
rm -rf "$DIR"
mv -T "$TMP" "$DIR"
trap - EXIT
echo "$BIN"
