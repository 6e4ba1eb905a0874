#!/usr/bin/env bash
# Stop the etcd + mvo-test-apiserver started by start-apiserver.sh DIR (by the pids in DIR).
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR=$1
for f in apiserver etcd; do
  [ -f "$DIR/$f.pid" ] || continue
  pid=$(cat "$DIR/$f.pid")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/$f.pid"
done
