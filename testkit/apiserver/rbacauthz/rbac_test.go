package rbacauthz

import (
	"context"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// fakeSource holds RBAC objects in memory.
type fakeSource struct {
	roles  []rbacv1.Role
	croles []rbacv1.ClusterRole
	rbs    []rbacv1.RoleBinding
	crbs   []rbacv1.ClusterRoleBinding
}

func (f *fakeSource) ClusterRoleBindings(context.Context) ([]rbacv1.ClusterRoleBinding, error) {
	return f.crbs, nil
}
func (f *fakeSource) RoleBindings(_ context.Context, ns string) ([]rbacv1.RoleBinding, error) {
	var out []rbacv1.RoleBinding
	for _, b := range f.rbs {
		if b.Namespace == ns {
			out = append(out, b)
		}
	}
	return out, nil
}
func (f *fakeSource) ClusterRole(_ context.Context, name string) (*rbacv1.ClusterRole, error) {
	for i := range f.croles {
		if f.croles[i].Name == name {
			return &f.croles[i], nil
		}
	}
	return nil, nil
}
func (f *fakeSource) Role(_ context.Context, ns, name string) (*rbacv1.Role, error) {
	for i := range f.roles {
		if f.roles[i].Namespace == ns && f.roles[i].Name == name {
			return &f.roles[i], nil
		}
	}
	return nil, nil
}

func om(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }

func sa(ns, name string) user.Info {
	return &user.DefaultInfo{Name: "system:serviceaccount:" + ns + ":" + name,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}}
}

var (
	jane   = &user.DefaultInfo{Name: "jane", Groups: []string{"system:authenticated"}}
	dave   = &user.DefaultInfo{Name: "dave", Groups: []string{"devs", "system:authenticated"}}
	admin  = &user.DefaultInfo{Name: "admin", Groups: []string{"system:masters"}}
	opSA   = sa("openshift-velero", "managed-velero-operator")
	qaSA   = sa("qa", "tester")
	opsSA  = sa("ops", "builder")
	nobody = &user.DefaultInfo{Name: "nobody", Groups: []string{"system:authenticated"}}
)

func ref(kind, name string) rbacv1.RoleRef {
	return rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: name}
}

// The objects follow the examples of https://kubernetes.io/docs/reference/access-authn-authz/rbac/.
func docsSource() *fakeSource {
	return &fakeSource{
		roles: []rbacv1.Role{
			{ObjectMeta: om("default", "pod-reader"), Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "watch", "list"}}}},
			{ObjectMeta: om("default", "pod-and-pod-logs-reader"), Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"pods", "pods/log"}, Verbs: []string{"get", "list"}}}},
			{ObjectMeta: om("default", "configmap-updater"), Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"my-configmap"}, Verbs: []string{"update", "get"}}}},
			{ObjectMeta: om("ops", "everything"), Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}}},
			{ObjectMeta: om("ops", "scaler"), Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{"apps"}, Resources: []string{"*/scale"}, Verbs: []string{"update"}}}},
			// A Role of the same name in another namespace must not leak into "default".
			{ObjectMeta: om("other", "pod-reader"), Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}}},
		},
		croles: []rbacv1.ClusterRole{
			{ObjectMeta: om("", "secret-reader"), Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "watch", "list"}}}},
			{ObjectMeta: om("", "health-checker"), Rules: []rbacv1.PolicyRule{
				{NonResourceURLs: []string{"/healthz", "/healthz/*"}, Verbs: []string{"get", "post"}}}},
			{ObjectMeta: om("", "deployment-writer"), Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"create", "patch"}}}},
		},
		rbs: []rbacv1.RoleBinding{
			{ObjectMeta: om("default", "read-pods"), RoleRef: ref("Role", "pod-reader"),
				Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "jane"}}},
			{ObjectMeta: om("default", "read-logs"), RoleRef: ref("Role", "pod-and-pod-logs-reader"),
				Subjects: []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "devs"}}},
			{ObjectMeta: om("default", "update-cm"), RoleRef: ref("Role", "configmap-updater"),
				Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "managed-velero-operator", Namespace: "openshift-velero"}}},
			// ClusterRole bound by a RoleBinding: its rules apply in "development" only.
			{ObjectMeta: om("development", "read-secrets"), RoleRef: ref("ClusterRole", "secret-reader"),
				Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "dave"}}},
			// A ServiceAccount subject without a namespace means the binding's namespace.
			{ObjectMeta: om("ops", "all"), RoleRef: ref("Role", "everything"),
				Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "builder"}}},
			{ObjectMeta: om("ops", "qa-scale"), RoleRef: ref("Role", "scaler"),
				Subjects: []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:serviceaccounts:qa"}}},
			// Non-resource rules of a ClusterRole bound in a namespace grant nothing.
			{ObjectMeta: om("default", "health-ns"), RoleRef: ref("ClusterRole", "health-checker"),
				Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "jane"}}},
			{ObjectMeta: om("default", "dangling"), RoleRef: ref("Role", "missing"),
				Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "nobody"}}},
		},
		crbs: []rbacv1.ClusterRoleBinding{
			{ObjectMeta: om("", "read-secrets-global"), RoleRef: ref("ClusterRole", "secret-reader"),
				Subjects: []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:serviceaccounts:qa"}}},
			{ObjectMeta: om("", "health"), RoleRef: ref("ClusterRole", "health-checker"),
				Subjects: []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "devs"}}},
			{ObjectMeta: om("", "operator-deployments"), RoleRef: ref("ClusterRole", "deployment-writer"),
				Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "managed-velero-operator", Namespace: "openshift-velero"}}},
			// A ServiceAccount subject without a namespace in a ClusterRoleBinding matches nobody.
			{ObjectMeta: om("", "no-ns"), RoleRef: ref("ClusterRole", "secret-reader"),
				Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "tester"}}},
			// A ClusterRoleBinding cannot refer to a Role.
			{ObjectMeta: om("", "bad-kind"), RoleRef: ref("Role", "pod-reader"),
				Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "jane"}}},
		},
	}
}

func res(u user.Info, verb, group, resource, sub, ns, name string) authorizer.AttributesRecord {
	return authorizer.AttributesRecord{User: u, Verb: verb, APIGroup: group, APIVersion: "v1", Resource: resource,
		Subresource: sub, Namespace: ns, Name: name, ResourceRequest: true}
}

func path(u user.Info, verb, p string) authorizer.AttributesRecord {
	return authorizer.AttributesRecord{User: u, Verb: verb, Path: p}
}

func TestAuthorize(t *testing.T) {
	a := &Authorizer{Source: docsSource(), PrivilegedGroups: []string{"system:masters"}}
	cases := []struct {
		name  string
		attrs authorizer.AttributesRecord
		allow bool
	}{
		{"privileged group may do anything", res(admin, "delete", "", "namespaces", "", "", "kube-system"), true},
		{"role grants listed verb", res(jane, "get", "", "pods", "", "default", "p"), true},
		{"role grants list without a name", res(jane, "list", "", "pods", "", "default", ""), true},
		{"verb not listed", res(jane, "delete", "", "pods", "", "default", "p"), false},
		{"role applies in its namespace only", res(jane, "get", "", "pods", "", "kube-system", "p"), false},
		{"namespaced role grants nothing cluster-wide", res(jane, "list", "", "pods", "", "", ""), false},
		{"role with the same name elsewhere does not leak", res(jane, "get", "", "secrets", "", "default", "s"), false},
		{"wrong API group", res(jane, "get", "apps", "pods", "", "default", "p"), false},
		{"resource does not cover its subresource", res(jane, "get", "", "pods", "log", "default", "p"), false},
		{"group subject, subresource listed", res(dave, "get", "", "pods", "log", "default", "p"), true},
		{"subresource rule does not cover other subresources", res(dave, "get", "", "pods", "exec", "default", "p"), false},
		{"resourceNames: named object", res(opSA, "get", "", "configmaps", "", "default", "my-configmap"), true},
		{"resourceNames: other object", res(opSA, "get", "", "configmaps", "", "default", "other"), false},
		{"resourceNames: list is not allowed", res(opSA, "list", "", "configmaps", "", "default", ""), false},
		{"resourceNames: create is not allowed", res(opSA, "create", "", "configmaps", "", "default", ""), false},
		{"ClusterRole by RoleBinding: in that namespace", res(dave, "get", "", "secrets", "", "development", "s"), true},
		{"ClusterRole by RoleBinding: not elsewhere", res(dave, "get", "", "secrets", "", "default", "s"), false},
		{"ClusterRole by RoleBinding: not cluster-wide", res(dave, "list", "", "secrets", "", "", ""), false},
		{"ClusterRoleBinding: every namespace", res(qaSA, "list", "", "secrets", "", "any", ""), true},
		{"ClusterRoleBinding: all namespaces at once", res(qaSA, "watch", "", "secrets", "", "", ""), true},
		{"ServiceAccount subject defaults to the binding namespace", res(opsSA, "delete", "batch", "jobs", "", "ops", "j"), true},
		{"same ServiceAccount name in another namespace", res(sa("default", "builder"), "delete", "batch", "jobs", "", "ops", "j"), false},
		{"wildcards cover subresources", res(opsSA, "patch", "apps", "deployments", "status", "ops", "d"), true},
		{"wildcard role stays in its namespace", res(opsSA, "delete", "batch", "jobs", "", "default", "j"), false},
		{"*/scale covers deployments/scale", res(qaSA, "update", "apps", "deployments", "scale", "ops", "d"), true},
		{"*/scale does not cover the resource", res(qaSA, "update", "apps", "deployments", "", "ops", "d"), false},
		{"ServiceAccount subject in a ClusterRoleBinding", res(opSA, "create", "apps", "deployments", "", "x", ""), true},
		{"other ServiceAccount with the same name", res(sa("other", "managed-velero-operator"), "create", "apps", "deployments", "", "x", ""), false},
		{"ClusterRoleBinding to a Role is ignored", res(jane, "get", "", "secrets", "", "other", "s"), false},
		{"nonResourceURL exact", path(dave, "get", "/healthz"), true},
		{"nonResourceURL prefix", path(dave, "post", "/healthz/ping"), true},
		{"nonResourceURL prefix is not a substring match", path(dave, "get", "/healthzz"), false},
		{"nonResourceURL other path", path(dave, "get", "/api"), false},
		{"nonResourceURL through a RoleBinding grants nothing", path(jane, "get", "/healthz"), false},
		{"no binding at all", res(nobody, "get", "", "pods", "", "default", "p"), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, _, err := a.Authorize(context.Background(), c.attrs)
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if got := d == authorizer.DecisionAllow; got != c.allow {
				t.Fatalf("allowed = %v, want %v (%+v)", got, c.allow, c.attrs)
			}
		})
	}
}

func TestMissingRoleIsTheReason(t *testing.T) {
	a := &Authorizer{Source: docsSource()}
	d, reason, _ := a.Authorize(context.Background(), res(nobody, "get", "", "pods", "", "default", "p"))
	if d == authorizer.DecisionAllow || !strings.Contains(reason, `role.rbac.authorization.k8s.io "missing" not found`) {
		t.Fatalf("decision %v reason %q", d, reason)
	}
}
