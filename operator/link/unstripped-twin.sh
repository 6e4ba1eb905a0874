#!/bin/sh
# Prints the unstripped twin ordered-lld.sh kept of the stripped binary $1 (same build id), from
# the release build directories under target/ ($2, default target/x86_64-unknown-linux-musl/release).
set -eu
build_id() { readelf -n "$1" | awk '/Build ID/ { print $3 }'; }
wanted=$(build_id "$1")
[ -n "$wanted" ] || { echo "$1: no build id" >&2; exit 1; }
for twin in "${2:-target/x86_64-unknown-linux-musl/release}"/build/mvo-operator-*/out/layout/*/unstripped; do
    [ -f "$twin" ] && [ "$(build_id "$twin")" = "$wanted" ] && { echo "$twin"; exit 0; }
done
echo "$1: no unstripped twin (build it with the release profile for the musl target)" >&2
exit 1
