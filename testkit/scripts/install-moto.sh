#!/usr/bin/env bash
# Install the moto S3/STS server into a project-managed venv outside the repo (PyPI only).
# Usage: install-moto.sh                  install if needed; last line printed is the venv's bin dir
#        install-moto.sh --print-bin-dir  print the bin dir and exit
# Cache: ${MVO_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mvo-testenv}/moto-<key>/ where key
# hashes the pinned requirements, so changing a pin makes a new venv. A venv is published by
# renaming a finished temp dir, so an interrupted install never leaves a broken one behind.
set -euo pipefail
CACHE=${MVO_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mvo-testenv}
REQUIREMENTS="moto[s3]==5.2.5 flask flask-cors"
KEY=$(echo "$REQUIREMENTS $(python3 -c 'import sys;print(sys.version_info[:2])')" | sha256sum | cut -c1-12)
VENV="$CACHE/moto-$KEY"
if [ "${1:-}" = "--print-bin-dir" ]; then echo "$VENV/bin"; exit 0; fi
if [ -x "$VENV/bin/python" ] && [ -d "$VENV/lib" ]; then echo "$VENV/bin"; exit 0; fi
mkdir -p "$CACHE"
TMP=$(mktemp -d "$CACHE/.moto-tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
python3 -m venv "$TMP"
"$TMP/bin/python" -m pip install --quiet --disable-pip-version-check $REQUIREMENTS
# Script shebangs embed the temp path; callers run `bin/python -m moto.server`, which survives the move.
mv -T "$TMP" "$VENV" 2>/dev/null || [ -x "$VENV/bin/python" ]
trap - EXIT
echo "$VENV/bin"
