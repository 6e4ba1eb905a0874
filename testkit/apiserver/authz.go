package main

// Authorization: RBAC over the stored rbac.authorization.k8s.io objects (rbacauthz), with
// system:masters all-powerful, plus the default ClusterRoles and bindings every identity gets
// from kube-apiserver's bootstrap policy for discovery and health.

import (
	"context"
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/path"
	"k8s.io/apiserver/pkg/authorization/union"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"

	"mvo-test-apiserver/rbacauthz"
)

// storeSource reads the RBAC objects straight from storage (quorum reads), so a binding applies
// to the request right after the one that created it: tests need no waiting.
type storeSource struct {
	roles, roleBindings, clusterRoles, clusterRoleBindings *genericregistry.Store
}

func nsContext(ns string) context.Context {
	return genericapirequest.WithNamespace(genericapirequest.NewContext(), ns)
}

func (s *storeSource) ClusterRoleBindings(context.Context) ([]rbacv1.ClusterRoleBinding, error) {
	obj, err := s.clusterRoleBindings.List(nsContext(""), &metainternalversion.ListOptions{})
	if err != nil {
		return nil, err
	}
	return obj.(*rbacv1.ClusterRoleBindingList).Items, nil
}

func (s *storeSource) RoleBindings(_ context.Context, ns string) ([]rbacv1.RoleBinding, error) {
	obj, err := s.roleBindings.List(nsContext(ns), &metainternalversion.ListOptions{})
	if err != nil {
		return nil, err
	}
	return obj.(*rbacv1.RoleBindingList).Items, nil
}

func (s *storeSource) ClusterRole(_ context.Context, name string) (*rbacv1.ClusterRole, error) {
	obj, err := s.clusterRoles.Get(nsContext(""), name, &metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return obj.(*rbacv1.ClusterRole), nil
}

func (s *storeSource) Role(_ context.Context, ns, name string) (*rbacv1.Role, error) {
	obj, err := s.roles.Get(nsContext(ns), name, &metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return obj.(*rbacv1.Role), nil
}

// newAuthorizer: health paths for anyone (as the delegating authorizer it replaces), then RBAC.
// The Source is filled in once the stores exist (before the server serves).
func newAuthorizer(src *storeSource) (authorizer.Authorizer, error) {
	paths, err := path.NewAuthorizer([]string{"/healthz", "/readyz", "/livez"})
	if err != nil {
		return nil, err
	}
	return union.New(paths, &rbacauthz.Authorizer{Source: src, PrivilegedGroups: []string{user.SystemPrivilegedGroup}}), nil
}

// bootstrapPolicy: the subset of kube-apiserver's bootstrap ClusterRoles and bindings that gives
// every authenticated identity discovery, OpenAPI, /version and health, as on a real cluster.
func bootstrapPolicy() ([]*rbacv1.ClusterRole, []*rbacv1.ClusterRoleBinding) {
	bootstrap := map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"}
	annotations := map[string]string{"rbac.authorization.kubernetes.io/autoupdate": "true"}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Labels: bootstrap, Annotations: annotations}
	}
	group := func(name string) rbacv1.Subject {
		return rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: name}
	}
	roles := []*rbacv1.ClusterRole{
		{ObjectMeta: meta("system:discovery"), Rules: []rbacv1.PolicyRule{{Verbs: []string{"get"}, NonResourceURLs: []string{
			"/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"}}}},
		{ObjectMeta: meta("system:public-info-viewer"), Rules: []rbacv1.PolicyRule{{Verbs: []string{"get"}, NonResourceURLs: []string{
			"/healthz", "/livez", "/readyz", "/version", "/version/"}}}},
	}
	bindings := []*rbacv1.ClusterRoleBinding{
		{ObjectMeta: meta("system:discovery"), RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:discovery"},
			Subjects: []rbacv1.Subject{group(user.AllAuthenticated)}},
		{ObjectMeta: meta("system:public-info-viewer"), RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:public-info-viewer"},
			Subjects: []rbacv1.Subject{group(user.AllAuthenticated), group(user.AllUnauthenticated)}},
	}
	return roles, bindings
}

// createBootstrapPolicy stores bootstrapPolicy (kept when it already exists).
func createBootstrapPolicy(clusterRoles, clusterRoleBindings rest.Creater) error {
	ctx := nsContext("")
	roles, bindings := bootstrapPolicy()
	for _, r := range roles {
		rest.FillObjectMetaSystemFields(r)
		if _, err := clusterRoles.Create(ctx, r, nil, &metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating clusterrole %s: %w", r.Name, err)
		}
	}
	for _, b := range bindings {
		rest.FillObjectMetaSystemFields(b)
		if _, err := clusterRoleBindings.Create(ctx, b, nil, &metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating clusterrolebinding %s: %w", b.Name, err)
		}
	}
	return nil
}
