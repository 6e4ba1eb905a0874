#!/usr/bin/env bash
# The operator's main job against the local environment. Until the local environment (a real
# Kubernetes API server and S3 server started by testkit) lands, this shows what the binary
# already does offline: its version, linked providers and the VeleroInstall API.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/debug/managed-velero-operator
echo "== managed-velero-operator version"
"$bin" version
echo
echo "== VeleroInstall CRD (first lines of \`managed-velero-operator crd\`)"
"$bin" crd | head -30
echo "..."
echo
echo "The full demo (bucket provisioned in a local S3 server, Velero objects applied to a local"
echo "Kubernetes API server, conditions reaching Ready) needs the local test environment, which is"
echo "not part of this build yet."
