// Package rbacauthz authorizes requests with the Roles, ClusterRoles, RoleBindings and
// ClusterRoleBindings stored in the server, as kube-apiserver's RBAC authorizer does.
//
// Debian packages no k8s.io/kubernetes sources, so the upstream authorizer
// (plugin/pkg/auth/authorizer/rbac) and its rule resolver (pkg/registry/rbac/validation) are not
// available. What is available is used: whether a rule allows a request is decided by
// k8s.io/component-helpers/auth/rbac/validation.Covers, the upstream rule comparator (verbs incl.
// "*", apiGroups, resources incl. "*" and "*/subresource", resourceNames, nonResourceURLs incl. a
// trailing "*"). The part written here re-implements the resolver: which bindings apply to a user
// (User, Group and ServiceAccount subjects), which role a binding refers to, and namespaced versus
// cluster-wide bindings. See ../README.md.
package rbacauthz

import (
	"context"
	"fmt"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/component-helpers/auth/rbac/validation"
)

// Source reads the stored RBAC objects. Reads must be consistent with completed writes (a
// binding created by a test applies to the very next request), so implementations read storage,
// not a cache.
type Source interface {
	ClusterRoleBindings(ctx context.Context) ([]rbacv1.ClusterRoleBinding, error)
	RoleBindings(ctx context.Context, namespace string) ([]rbacv1.RoleBinding, error)
	// ClusterRole and Role return (nil, nil) when the role does not exist.
	ClusterRole(ctx context.Context, name string) (*rbacv1.ClusterRole, error)
	Role(ctx context.Context, namespace, name string) (*rbacv1.Role, error)
}

// Authorizer allows members of the privileged groups everything and everyone else what the
// stored RBAC objects grant. Anything not granted is denied (NoOpinion), as in kube-apiserver
// with --authorization-mode=RBAC alone.
type Authorizer struct {
	Source           Source
	PrivilegedGroups []string
}

// Authorize implements authorizer.Authorizer.
func (a *Authorizer) Authorize(ctx context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
	u := attrs.GetUser()
	if u == nil {
		return authorizer.DecisionNoOpinion, "no user", nil
	}
	for _, g := range u.GetGroups() {
		for _, p := range a.PrivilegedGroups {
			if g == p {
				return authorizer.DecisionAllow, "", nil
			}
		}
	}
	want := RequestRule(attrs)
	rules, errs := a.RulesFor(ctx, u, attrs.GetNamespace())
	if allowed, _ := validation.Covers(rules, []rbacv1.PolicyRule{want}); allowed {
		return authorizer.DecisionAllow, "", nil
	}
	// Like upstream: the reason lists only what went wrong while resolving (missing roles).
	reason := ""
	if len(errs) > 0 {
		reason = "RBAC: " + strings.Join(errs, ", ")
	}
	return authorizer.DecisionNoOpinion, reason, nil
}

// RequestRule is the single-verb, single-resource rule a request needs.
func RequestRule(attrs authorizer.Attributes) rbacv1.PolicyRule {
	if !attrs.IsResourceRequest() {
		return rbacv1.PolicyRule{Verbs: []string{attrs.GetVerb()}, NonResourceURLs: []string{attrs.GetPath()}}
	}
	resource := attrs.GetResource()
	if sub := attrs.GetSubresource(); sub != "" {
		resource += "/" + sub
	}
	rule := rbacv1.PolicyRule{Verbs: []string{attrs.GetVerb()}, APIGroups: []string{attrs.GetAPIGroup()}, Resources: []string{resource}}
	// A request without a name (list, watch, create, deletecollection) is only allowed by rules
	// without resourceNames; Covers treats an empty ResourceNames exactly so.
	if name := attrs.GetName(); name != "" {
		rule.ResourceNames = []string{name}
	}
	return rule
}

// RulesFor returns the rules granted to u in namespace ("" for cluster-scoped and non-resource
// requests: only ClusterRoleBindings count there), and the resolution errors (missing roles,
// storage errors), which upstream reports in the 403 reason.
func (a *Authorizer) RulesFor(ctx context.Context, u user.Info, namespace string) ([]rbacv1.PolicyRule, []string) {
	var rules []rbacv1.PolicyRule
	var errs []string
	crbs, err := a.Source.ClusterRoleBindings(ctx)
	if err != nil {
		errs = append(errs, err.Error())
	}
	for _, b := range crbs {
		if !appliesTo(u, b.Subjects, "") {
			continue
		}
		if b.RoleRef.Kind != "ClusterRole" {
			continue
		}
		r, err := a.roleRules(ctx, b.RoleRef, "")
		if err != nil {
			errs = append(errs, err.Error())
		}
		rules = append(rules, r...)
	}
	if namespace == "" {
		return rules, errs
	}
	rbs, err := a.Source.RoleBindings(ctx, namespace)
	if err != nil {
		errs = append(errs, err.Error())
	}
	for _, b := range rbs {
		if !appliesTo(u, b.Subjects, namespace) {
			continue
		}
		r, err := a.roleRules(ctx, b.RoleRef, namespace)
		if err != nil {
			errs = append(errs, err.Error())
		}
		rules = append(rules, r...)
	}
	return rules, errs
}

// roleRules: a RoleBinding may refer to a Role of its namespace or to a ClusterRole (whose rules
// then apply in that namespace only); a ClusterRoleBinding only to a ClusterRole.
func (a *Authorizer) roleRules(ctx context.Context, ref rbacv1.RoleRef, namespace string) ([]rbacv1.PolicyRule, error) {
	switch ref.Kind {
	case "ClusterRole":
		r, err := a.Source.ClusterRole(ctx, ref.Name)
		if err != nil {
			return nil, err
		}
		if r == nil {
			return nil, fmt.Errorf("clusterrole.rbac.authorization.k8s.io %q not found", ref.Name)
		}
		return r.Rules, nil
	case "Role":
		if namespace == "" {
			return nil, nil
		}
		r, err := a.Source.Role(ctx, namespace, ref.Name)
		if err != nil {
			return nil, err
		}
		if r == nil {
			return nil, fmt.Errorf("role.rbac.authorization.k8s.io %q not found", ref.Name)
		}
		return r.Rules, nil
	}
	return nil, fmt.Errorf("unsupported role reference kind: %q", ref.Kind)
}

// appliesTo: does one of subjects name u? bindingNamespace is the RoleBinding's namespace ("" for
// a ClusterRoleBinding); a ServiceAccount subject without a namespace means that one.
func appliesTo(u user.Info, subjects []rbacv1.Subject, bindingNamespace string) bool {
	for _, s := range subjects {
		switch s.Kind {
		case rbacv1.UserKind:
			if s.Name == u.GetName() {
				return true
			}
		case rbacv1.GroupKind:
			for _, g := range u.GetGroups() {
				if g == s.Name {
					return true
				}
			}
		case rbacv1.ServiceAccountKind:
			ns := s.Namespace
			if ns == "" {
				ns = bindingNamespace
			}
			if ns != "" && serviceaccount.MakeUsername(ns, s.Name) == u.GetName() {
				return true
			}
		}
	}
	return false
}
