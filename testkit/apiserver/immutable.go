package main

// Immutable fields of the built-in kinds, rejected on update (PUT, PATCH, server-side apply) with
// 422 Invalid and the field path, with kube-apiserver's messages (k8s.io/kubernetes
// pkg/apis/{core,apps,batch}/validation, re-implemented: that code is not packaged in Debian).

import (
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// fieldIsImmutable is apimachinery's ValidateImmutableField message.
const fieldIsImmutable = "field is immutable"

func immutable(newVal, oldVal interface{}, path *field.Path) field.ErrorList {
	if apiequality.Semantic.DeepEqual(oldVal, newVal) {
		return nil
	}
	return field.ErrorList{field.Invalid(path, newVal, fieldIsImmutable)}
}

// jobValidateUpdate: spec.selector and spec.template are immutable. (Upstream lets a suspended
// Job that never started change some scheduling fields of its template; not reproduced.)
func jobValidateUpdate(obj, old runtime.Object) field.ErrorList {
	n, o := obj.(*batchv1.Job), old.(*batchv1.Job)
	spec := field.NewPath("spec")
	errs := immutable(n.Spec.Selector, o.Spec.Selector, spec.Child("selector"))
	return append(errs, immutable(n.Spec.Template, o.Spec.Template, spec.Child("template"))...)
}

// deploymentValidateUpdate: spec.selector is immutable in apps/v1.
func deploymentValidateUpdate(obj, old runtime.Object) field.ErrorList {
	n, o := obj.(*appsv1.Deployment), old.(*appsv1.Deployment)
	return immutable(n.Spec.Selector, o.Spec.Selector, field.NewPath("spec", "selector"))
}

func serviceIPs(s *corev1.Service) []string {
	if len(s.Spec.ClusterIPs) > 0 {
		return s.Spec.ClusterIPs
	}
	if s.Spec.ClusterIP != "" {
		return []string{s.Spec.ClusterIP}
	}
	return nil
}

// servicePrepareForUpdate: an update that omits the cluster IPs keeps the old ones, as
// kube-apiserver's Service REST does (so re-applying a manifest without clusterIP works).
func servicePrepareForUpdate(obj, old runtime.Object) {
	n, o := obj.(*corev1.Service), old.(*corev1.Service)
	if n.Spec.Type == corev1.ServiceTypeExternalName || o.Spec.Type == corev1.ServiceTypeExternalName {
		return
	}
	if n.Spec.ClusterIP == "" && len(n.Spec.ClusterIPs) == 0 {
		n.Spec.ClusterIP, n.Spec.ClusterIPs = o.Spec.ClusterIP, o.Spec.ClusterIPs
	}
}

// serviceValidateUpdate: a cluster IP, once set, may not change (unless the Service changes to or
// from ExternalName).
func serviceValidateUpdate(obj, old runtime.Object) field.ErrorList {
	n, o := obj.(*corev1.Service), old.(*corev1.Service)
	if n.Spec.Type == corev1.ServiceTypeExternalName || o.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	oldIPs, newIPs := serviceIPs(o), serviceIPs(n)
	var errs field.ErrorList
	for i, ip := range oldIPs {
		if i < len(newIPs) && newIPs[i] != ip || i == 0 && len(newIPs) == 0 {
			errs = append(errs, field.Invalid(field.NewPath("spec", "clusterIPs").Index(i), newIPs, "may not change once set"))
		}
	}
	return errs
}

const immutableWhenSet = "field is immutable when `immutable` is set"

// secretValidateUpdate: type is immutable; with immutable: true, data is frozen and immutable
// cannot be unset.
func secretValidateUpdate(obj, old runtime.Object) field.ErrorList {
	n, o := obj.(*corev1.Secret), old.(*corev1.Secret)
	errs := immutable(n.Type, o.Type, field.NewPath("type"))
	if o.Immutable != nil && *o.Immutable {
		if n.Immutable == nil || !*n.Immutable {
			errs = append(errs, field.Forbidden(field.NewPath("immutable"), immutableWhenSet))
		}
		if !apiequality.Semantic.DeepEqual(n.Data, o.Data) {
			errs = append(errs, field.Forbidden(field.NewPath("data"), immutableWhenSet))
		}
	}
	return errs
}

// configMapValidateUpdate: with immutable: true, data and binaryData are frozen and immutable
// cannot be unset.
func configMapValidateUpdate(obj, old runtime.Object) field.ErrorList {
	n, o := obj.(*corev1.ConfigMap), old.(*corev1.ConfigMap)
	var errs field.ErrorList
	if o.Immutable != nil && *o.Immutable {
		if n.Immutable == nil || !*n.Immutable {
			errs = append(errs, field.Forbidden(field.NewPath("immutable"), immutableWhenSet))
		}
		if !apiequality.Semantic.DeepEqual(n.Data, o.Data) {
			errs = append(errs, field.Forbidden(field.NewPath("data"), immutableWhenSet))
		}
		if !apiequality.Semantic.DeepEqual(n.BinaryData, o.BinaryData) {
			errs = append(errs, field.Forbidden(field.NewPath("binaryData"), immutableWhenSet))
		}
	}
	return errs
}
