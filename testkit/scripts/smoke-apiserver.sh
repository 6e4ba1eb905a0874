#!/usr/bin/env bash
# Smoke test of a running mvo-test-apiserver, with curl only (no kubectl).
# Usage: smoke-apiserver.sh DIR   (DIR as given to start-apiserver.sh). Exits non-zero on failure.
set -euo pipefail
{
D=$(cd "$1" && pwd)
S=$(grep -o 'https://127.0.0.1:[0-9]*' "$D/admin.kubeconfig")
k() { curl -sS --cacert "$D/pki/ca.crt" --cert "$D/pki/admin.crt" --key "$D/pki/admin.key" "$@"; }
apply() { k -X PATCH -H 'Content-Type: application/apply-patch+yaml' "$S$1?fieldManager=smoke&force=true" --data-binary @-; }
mpatch() { k -X PATCH -H 'Content-Type: application/merge-patch+json' "$S$1" -d "$2"; }
check() {  # check NAME PY_EXPR  (stdin: JSON as d)
  python3 -c "import json,sys
d=json.load(sys.stdin)
assert ($2), json.dumps(d)[:600]" || { echo "FAIL: $1" >&2; exit 1; }
  echo "ok: $1"; }
NS=smoke-$$

k "$S/apis" | check "discovery /apis" '{"apps","batch","coordination.k8s.io","events.k8s.io","rbac.authorization.k8s.io","apiextensions.k8s.io"} <= {g["name"] for g in d["groups"]}'
k "$S/api/v1" | check "discovery /api/v1" '{"namespaces","secrets","configmaps","services","serviceaccounts","events","pods","pods/log","pods/status"} <= {r["name"] for r in d["resources"]}'
printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {smoke: "yes"}}\n' $NS | apply /api/v1/namespaces/$NS | check "namespace apply" 'd["status"]["phase"]=="Active" and d["metadata"]["managedFields"]'
apply /api/v1/namespaces/$NS/secrets/s <<EOF | check "secret apply (stringData merged)" 'd["data"]["p"]=="aHVudGVyMg==" and "stringData" not in d and d["type"]=="Opaque"'
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: $NS}
stringData: {p: hunter2}
EOF
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: v}\n' | apply /api/v1/namespaces/$NS/configmaps/c | check "configmap apply" 'd["data"]=={"k":"v"} and d["metadata"]["managedFields"][0]["manager"]=="smoke"'
apply /api/v1/namespaces/$NS/services/svc <<EOF | check "service apply (defaults)" 'd["spec"]["type"]=="ClusterIP" and d["spec"]["ports"][0]["protocol"]=="TCP"'
apiVersion: v1
kind: Service
metadata: {name: svc}
spec: {selector: {app: x}, ports: [{port: 80}]}
EOF
printf 'apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, labels: {a: b}}\n' | apply /api/v1/namespaces/$NS/serviceaccounts/sa | check "serviceaccount apply" 'd["metadata"]["labels"]=={"a":"b"}'
printf 'apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: l}\nspec: {holderIdentity: me}\n' | apply /apis/coordination.k8s.io/v1/namespaces/$NS/leases/l | check "lease apply" 'd["spec"]["holderIdentity"]=="me"'
apply /apis/apps/v1/namespaces/$NS/deployments/d <<EOF | check "deployment apply" 'd["metadata"]["generation"]==1 and d["spec"]["replicas"]==1 and d["metadata"]["managedFields"]'
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: d}}
  template:
    metadata: {labels: {app: d}}
    spec: {containers: [{name: c, image: nginx}]}
EOF
RV=$(k "$S/apis/apps/v1/namespaces/$NS/deployments" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
k -N "$S/apis/apps/v1/namespaces/$NS/deployments?watch=true&resourceVersion=$RV&allowWatchBookmarks=true&fieldSelector=metadata.name%3Dd&timeoutSeconds=3" > "$D/smoke-watch.out" &
W=$!; sleep 0.5
mpatch /apis/apps/v1/namespaces/$NS/deployments/d/status '{"status":{"observedGeneration":1,"replicas":1,"readyReplicas":1,"availableReplicas":1,"updatedReplicas":1},"spec":{"replicas":5}}' \
  | check "deployment /status" 'd["status"]["readyReplicas"]==1 and d["spec"]["replicas"]==1'
wait $W || true
python3 -c 'import json,sys; t=[json.loads(l)["type"] for l in open(sys.argv[1])]; assert "MODIFIED" in t, t' "$D/smoke-watch.out" && echo "ok: watch" || { echo "FAIL: watch" >&2; exit 1; }
printf 'apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}\n' \
  | apply /apis/batch/v1/namespaces/$NS/jobs/j | check "job apply" 'd["spec"]["selector"]["matchLabels"]'
mpatch /apis/batch/v1/namespaces/$NS/jobs/j/status '{"status":{"succeeded":1,"conditions":[{"type":"Complete","status":"True"}]}}' | check "job /status" 'd["status"]["succeeded"]==1'
printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {"mvo-test-apiserver/log": "hello\\n"}}\nspec: {containers: [{name: c, image: busybox}]}\n' \
  | apply /api/v1/namespaces/$NS/pods/p | check "pod apply" 'd["status"]["phase"]=="Pending"'
[ "$(k "$S/api/v1/namespaces/$NS/pods/p/log")" = hello ] && echo "ok: pods/log" || { echo "FAIL: pods/log" >&2; exit 1; }
k "$S/apis/rbac.authorization.k8s.io/v1" | check "discovery rbac/v1" '{r["name"]: r["namespaced"] for r in d["resources"]} == {"roles": True, "rolebindings": True, "clusterroles": False, "clusterrolebindings": False}'
apply /apis/rbac.authorization.k8s.io/v1/namespaces/$NS/roles/r <<EOF | check "role apply" 'd["rules"][0]["resourceNames"]==["x"] and d["metadata"]["managedFields"]'
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: r}
rules: [{apiGroups: [""], resources: [secrets], verbs: [get], resourceNames: [x]}]
EOF
printf 'apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: rb}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\nsubjects: [{kind: ServiceAccount, name: sa, namespace: %s}]\n' $NS \
  | apply /apis/rbac.authorization.k8s.io/v1/namespaces/$NS/rolebindings/rb | check "rolebinding apply" 'd["subjects"][0]["name"]=="sa"'
printf 'apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: "smoke:%s"}\nrules: [{nonResourceURLs: [/metrics], verbs: [get]}]\n' $NS \
  | apply "/apis/rbac.authorization.k8s.io/v1/clusterroles/smoke:$NS" | check "clusterrole apply (colon in name)" 'd["rules"][0]["nonResourceURLs"]==["/metrics"]'
printf 'apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: "smoke:%s"}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "smoke:%s"}\nsubjects: [{kind: ServiceAccount, name: sa, namespace: %s}]\n' $NS $NS $NS \
  | apply "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/smoke:$NS" | check "clusterrolebinding apply" 'd["roleRef"]["kind"]=="ClusterRole"'
printf 'apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: e}\nreason: R\nnote: smoke-note\ntype: Normal\nreportingController: smoke\nreportingInstance: s\naction: A\neventTime: "2026-01-01T00:00:00.000000Z"\nregarding: {kind: Deployment, name: d, namespace: %s}\n' $NS \
  | apply /apis/events.k8s.io/v1/namespaces/$NS/events/e | check "events.k8s.io apply" 'd["note"]=="smoke-note"'
k "$S/api/v1/namespaces/$NS/events?fieldSelector=involvedObject.name%3Dd" | check "core event view + field selector" 'len(d["items"])==1 and d["items"][0]["message"]=="smoke-note"'
echo '{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"smokes.smoke.test"},"spec":{"group":"smoke.test","names":{"kind":"Smoke","plural":"smokes"},"scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","properties":{"spec":{"type":"object","properties":{"size":{"type":"integer","minimum":1}}}}}}}]}}' \
  | apply /apis/apiextensions.k8s.io/v1/customresourcedefinitions/smokes.smoke.test | check "CRD apply" 'd["metadata"]["name"]=="smokes.smoke.test"' 
for _ in $(seq 100); do k "$S/apis/smoke.test/v1" 2>/dev/null | grep -q '"smokes"' && break; sleep 0.1; done
printf 'apiVersion: smoke.test/v1\nkind: Smoke\nmetadata: {name: x}\nspec: {size: 2}\n' | apply /apis/smoke.test/v1/namespaces/$NS/smokes/x | check "CR apply" 'd["spec"]["size"]==2 and d["metadata"]["managedFields"]'
printf 'apiVersion: smoke.test/v1\nkind: Smoke\nmetadata: {name: x}\nspec: {size: 0}\n' | apply /apis/smoke.test/v1/namespaces/$NS/smokes/x | check "CR schema validation" 'd.get("code")==422'
k "$S/openapi/v2" | check "openapi v2" '{"io.k8s.api.apps.v1.Deployment","io.k8s.api.core.v1.Secret","io.k8s.api.batch.v1.Job","io.k8s.api.coordination.v1.Lease","io.k8s.api.events.v1.Event","io.k8s.api.rbac.v1.ClusterRoleBinding"} <= set(d["definitions"])'
k "$S/openapi/v3" | check "openapi v3" '{"api/v1","apis/apps/v1","apis/batch/v1","apis/coordination.k8s.io/v1","apis/events.k8s.io/v1","apis/rbac.authorization.k8s.io/v1"} <= set(d["paths"])'
k "$S/openapi/v3/apis/apps/v1" | check "openapi v3 apps/v1" '"io.k8s.api.apps.v1.Deployment" in d["components"]["schemas"]'
k -X DELETE "$S/api/v1/namespaces/$NS" >/dev/null
k "$S/apis/apps/v1/namespaces/$NS/deployments" | check "namespace delete removes contents" 'd["items"]==[]'
k "$S/apis/rbac.authorization.k8s.io/v1/namespaces/$NS/roles" | check "namespace delete removes roles" 'd["items"]==[]'
k -X DELETE "$S/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/smoke:$NS" >/dev/null
k -X DELETE "$S/apis/rbac.authorization.k8s.io/v1/clusterroles/smoke:$NS" >/dev/null
k -X DELETE "$S/apis/apiextensions.k8s.io/v1/customresourcedefinitions/smokes.smoke.test" >/dev/null
echo "smoke: all checks passed"
exit 0
}
