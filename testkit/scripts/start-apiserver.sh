#!/usr/bin/env bash
# Start etcd + mvo-test-apiserver on random 127.0.0.1 ports with client-certificate auth.
#
# Usage: start-apiserver.sh DIR
#   DIR/pki/                  CA, server and admin (O=system:masters) certs, generated once per DIR
#   DIR/admin.kubeconfig      kubeconfig for the admin user (absolute cert paths)
#   DIR/operator.kubeconfig   kubeconfig for the operator's ServiceAccount identity
#                             system:serviceaccount:openshift-velero:managed-velero-operator (a client
#                             certificate with the ServiceAccount groups); it has only what RBAC grants
#   DIR/etcd.pid DIR/apiserver.pid, DIR/etcd.log DIR/apiserver.log, DIR/etcd-data/ (wiped each start)
# Prints "READY https://127.0.0.1:PORT" once /readyz?exclude=informer-sync answers 200.
# Stop: stop-apiserver.sh DIR (or kill the two pids).
# Binaries: $MVO_TEST_APISERVER_BIN and $ETCD_BIN, else the bin dir of build-apiserver.sh (built
# if missing). The exact command lines are documented in testkit/apiserver/README.md.
set -euo pipefail
# The whole script is one compound command, so bash parses it completely before running it
# (editing this file while a build runs must not break that build).
{
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"; DIR=$(cd "$1" && pwd)
T0=$(date +%s%N)

if [ -z "${MVO_TEST_APISERVER_BIN:-}" ] || [ -z "${ETCD_BIN:-}" ]; then
  BIN=$("$HERE/build-apiserver.sh" --print-bin-dir)
  [ -x "$BIN/mvo-test-apiserver" ] || BIN=$("$HERE/build-apiserver.sh" | tail -1)
fi
APISERVER=${MVO_TEST_APISERVER_BIN:-$BIN/mvo-test-apiserver}
ETCD=${ETCD_BIN:-$BIN/etcd}

for f in etcd apiserver; do
  if [ -f "$DIR/$f.pid" ] && kill -0 "$(cat "$DIR/$f.pid")" 2>/dev/null; then
    echo "start-apiserver: $f already running in $DIR (pid $(cat "$DIR/$f.pid")); stop it first" >&2; exit 1
  fi
done

mkdir -p "$DIR/pki"; cd "$DIR"
if [ ! -f pki/admin.crt ]; then
  (cd pki
   openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=mvo-test-ca" 2>/dev/null
   openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=mvo-test-apiserver" 2>/dev/null
   printf "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" > server.ext
   openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 3650 -extfile server.ext 2>/dev/null
   openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin" 2>/dev/null
   printf "extendedKeyUsage=clientAuth\n" > client.ext
   openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 3650 -extfile client.ext 2>/dev/null
   rm -f ./*.csr ./*.ext)
fi
if [ ! -f pki/operator.crt ]; then
  # The identity a ServiceAccount token would give: user name and groups as kube-apiserver sets them
  # (system:authenticated is added by the server).
  (cd pki
   openssl req -newkey rsa:2048 -nodes -keyout operator.key -out operator.csr 2>/dev/null \
     -subj "/O=system:serviceaccounts/O=system:serviceaccounts:openshift-velero/CN=system:serviceaccount:openshift-velero:managed-velero-operator"
   printf "extendedKeyUsage=clientAuth\n" > client.ext
   openssl x509 -req -in operator.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out operator.crt -days 3650 -extfile client.ext 2>/dev/null
   rm -f ./*.csr ./*.ext)
fi

pick_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
cleanup_fail() {
  for f in apiserver etcd; do [ -f "$DIR/$f.pid" ] && kill "$(cat "$DIR/$f.pid")" 2>/dev/null || true; done
}

# ---- etcd ----
rm -rf etcd-data
for attempt in 1 2 3; do
  EP=$(pick_port); EPP=$(pick_port)
  "$ETCD" --name default --data-dir "$DIR/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$EP" --advertise-client-urls "http://127.0.0.1:$EP" \
    --listen-peer-urls "http://127.0.0.1:$EPP" --initial-advertise-peer-urls "http://127.0.0.1:$EPP" \
    --initial-cluster "default=http://127.0.0.1:$EPP" --unsafe-no-fsync --log-level warn > etcd.log 2>&1 &
  echo $! > etcd.pid
  ok=0
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$EP/health" >/dev/null 2>&1 && { ok=1; break; }
    kill -0 "$(cat etcd.pid)" 2>/dev/null || break
    sleep 0.05
  done
  [ $ok = 1 ] && break
  kill "$(cat etcd.pid)" 2>/dev/null || true; rm -rf etcd-data
  [ $attempt = 3 ] && { echo "start-apiserver: etcd did not start" >&2; tail -20 etcd.log >&2; exit 1; }
done

# ---- apiserver ----
for attempt in 1 2 3; do
  AP=$(pick_port)
  cat > admin.kubeconfig <<KC
apiVersion: v1
kind: Config
clusters:
- name: mvo-test
  cluster: {server: "https://127.0.0.1:$AP", certificate-authority: "$DIR/pki/ca.crt"}
users:
- name: admin
  user: {client-certificate: "$DIR/pki/admin.crt", client-key: "$DIR/pki/admin.key"}
contexts:
- name: mvo-test
  context: {cluster: mvo-test, user: admin, namespace: default}
current-context: mvo-test
KC
  sed -e "s|pki/admin\.|pki/operator.|g" -e "s|name: admin|name: operator|; s|user: admin|user: operator|" \
    -e "s|namespace: default|namespace: openshift-velero|" admin.kubeconfig > operator.kubeconfig
  "$APISERVER" --etcd-servers "http://127.0.0.1:$EP" --bind-address 127.0.0.1 --secure-port "$AP" \
    --tls-cert-file "$DIR/pki/server.crt" --tls-private-key-file "$DIR/pki/server.key" --client-ca-file "$DIR/pki/ca.crt" \
    --kubeconfig "$DIR/admin.kubeconfig" --authentication-kubeconfig "$DIR/admin.kubeconfig" \
    --authorization-kubeconfig "$DIR/admin.kubeconfig" --authentication-skip-lookup \
    --enable-priority-and-fairness=false \
    --disable-admission-plugins NamespaceLifecycle,MutatingAdmissionPolicy,MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook \
    > apiserver.log 2>&1 &
  echo $! > apiserver.pid
  for _ in $(seq 1200); do
    if curl -sf --cacert pki/ca.crt --cert pki/admin.crt --key pki/admin.key \
        "https://127.0.0.1:$AP/readyz?exclude=informer-sync" >/dev/null 2>&1; then
      echo "start-apiserver: ready in $(( ($(date +%s%N) - T0) / 1000000 )) ms (logs in $DIR)" >&2
      echo "READY https://127.0.0.1:$AP"
      exit 0
    fi
    kill -0 "$(cat apiserver.pid)" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$(cat apiserver.pid)" 2>/dev/null; then
    echo "start-apiserver: apiserver not ready in 60s" >&2; tail -30 apiserver.log >&2; cleanup_fail; exit 1
  fi
  if ! grep -q "address already in use" apiserver.log || [ $attempt = 3 ]; then
    echo "start-apiserver: apiserver died" >&2; tail -30 apiserver.log >&2; cleanup_fail; exit 1
  fi
done
exit 0
}
