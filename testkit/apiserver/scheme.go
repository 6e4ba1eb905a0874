package main

// The scheme for the built-in kinds served by this test server.
//
// kube-apiserver keeps hand-written "internal" types (k8s.io/kubernetes/pkg/apis/...) in memory and
// converts them to the versioned k8s.io/api types at the edges. Those internal packages are not
// available here (and not needed for a single served version), so every served k8s.io/api v1 type
// is registered a second time as the group's internal version (runtime.APIVersionInternal). The
// scheme then never needs a real conversion: converting between the two versions of the same Go
// type is a deep copy (identity conversion functions below).
//
// The one exception is events.k8s.io/v1 Event, which, as in kube-apiserver, shares its storage
// (etcd key prefix /events/) with core/v1 Event: its internal type is core/v1 Event, with the
// field mapping kube-apiserver uses (regarding <-> involvedObject, note <-> message, ...).

import (
	"fmt"
	"net/url"
	"reflect"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

var (
	builtinScheme         = runtime.NewScheme()
	builtinCodecs         = serializer.NewCodecFactory(builtinScheme)
	builtinParameterCodec = runtime.NewParameterCodec(builtinScheme)
)

// resourceDef describes one served built-in resource.
type resourceDef struct {
	gv         schema.GroupVersion
	plural     string
	singular   string
	kind       string
	namespaced bool
	newFunc    func() runtime.Object
	newList    func() runtime.Object
	shortNames []string
	categories []string
	// status: serve <plural>/status; writes to the main resource keep the old .status and
	// writes to /status keep the old .spec (and metadata), as kube-apiserver does.
	status bool
	// generation: maintain metadata.generation (1 on create, +1 on every .spec change).
	generation bool
	// allowCreateOnUpdate: PUT may create (true for events and leases upstream).
	allowCreateOnUpdate bool
	// storage: storage group resource if it shares storage with another resource (events).
	storage *schema.GroupResource
	// selectable: extra field selectors (beyond metadata.name / metadata.namespace).
	selectable func(obj runtime.Object) map[string]string
	// prepareCreate: extra initialisation on create (after status reset).
	prepareCreate func(obj runtime.Object)
	// normalize: run on every create and update of the main resource.
	normalize func(obj runtime.Object)
	// prepareUpdate: extra preparation of an update of the main resource (with the old object).
	prepareUpdate func(obj, old runtime.Object)
	// validateUpdate: update checks of the main resource (immutable fields, immutable.go).
	validateUpdate func(obj, old runtime.Object) field.ErrorList
	// nameFormat: metadata.name check on create (default DNS-1123 subdomain, as most kinds upstream).
	nameFormat func(name string) []string
}

var (
	coreGV   = corev1.SchemeGroupVersion
	appsGV   = appsv1.SchemeGroupVersion
	batchGV  = batchv1.SchemeGroupVersion
	coordGV  = coordinationv1.SchemeGroupVersion
	eventsGV = eventsv1.SchemeGroupVersion
	rbacGV   = rbacv1.SchemeGroupVersion
)

// servedGroupVersions: every group version of the resources table (storage, version priority).
var servedGroupVersions = []schema.GroupVersion{coreGV, appsGV, batchGV, coordGV, eventsGV, rbacGV}

var resources = []resourceDef{
	{gv: coreGV, plural: "namespaces", singular: "namespace", kind: "Namespace", namespaced: false,
		newFunc: func() runtime.Object { return &corev1.Namespace{} }, newList: func() runtime.Object { return &corev1.NamespaceList{} },
		shortNames: []string{"ns"}, status: true,
		selectable: func(o runtime.Object) map[string]string {
			return map[string]string{"status.phase": string(o.(*corev1.Namespace).Status.Phase)}
		},
		prepareCreate: func(o runtime.Object) { o.(*corev1.Namespace).Status.Phase = corev1.NamespaceActive }},
	{gv: coreGV, plural: "secrets", singular: "secret", kind: "Secret", namespaced: true,
		newFunc: func() runtime.Object { return &corev1.Secret{} }, newList: func() runtime.Object { return &corev1.SecretList{} },
		selectable: func(o runtime.Object) map[string]string {
			return map[string]string{"type": string(o.(*corev1.Secret).Type)}
		},
		normalize: secretNormalize, validateUpdate: secretValidateUpdate},
	{gv: coreGV, plural: "configmaps", singular: "configmap", kind: "ConfigMap", namespaced: true,
		newFunc: func() runtime.Object { return &corev1.ConfigMap{} }, newList: func() runtime.Object { return &corev1.ConfigMapList{} },
		shortNames: []string{"cm"}, validateUpdate: configMapValidateUpdate},
	{gv: coreGV, plural: "services", singular: "service", kind: "Service", namespaced: true,
		newFunc: func() runtime.Object { return &corev1.Service{} }, newList: func() runtime.Object { return &corev1.ServiceList{} },
		shortNames: []string{"svc"}, categories: []string{"all"}, status: true,
		prepareUpdate: servicePrepareForUpdate, validateUpdate: serviceValidateUpdate},
	{gv: coreGV, plural: "serviceaccounts", singular: "serviceaccount", kind: "ServiceAccount", namespaced: true,
		newFunc: func() runtime.Object { return &corev1.ServiceAccount{} }, newList: func() runtime.Object { return &corev1.ServiceAccountList{} },
		shortNames: []string{"sa"}},
	{gv: coreGV, plural: "events", singular: "event", kind: "Event", namespaced: true,
		newFunc: func() runtime.Object { return &corev1.Event{} }, newList: func() runtime.Object { return &corev1.EventList{} },
		shortNames: []string{"ev"}, allowCreateOnUpdate: true, selectable: eventSelectableFields},
	{gv: coreGV, plural: "pods", singular: "pod", kind: "Pod", namespaced: true,
		newFunc: func() runtime.Object { return &corev1.Pod{} }, newList: func() runtime.Object { return &corev1.PodList{} },
		shortNames: []string{"po"}, categories: []string{"all"}, status: true, generation: true,
		selectable: func(o runtime.Object) map[string]string {
			p := o.(*corev1.Pod)
			return map[string]string{"spec.nodeName": p.Spec.NodeName, "spec.restartPolicy": string(p.Spec.RestartPolicy),
				"spec.schedulerName": p.Spec.SchedulerName, "spec.serviceAccountName": p.Spec.ServiceAccountName,
				"status.phase": string(p.Status.Phase), "status.podIP": p.Status.PodIP, "status.nominatedNodeName": p.Status.NominatedNodeName}
		},
		prepareCreate: func(o runtime.Object) { o.(*corev1.Pod).Status.Phase = corev1.PodPending }},
	{gv: appsGV, plural: "deployments", singular: "deployment", kind: "Deployment", namespaced: true,
		newFunc: func() runtime.Object { return &appsv1.Deployment{} }, newList: func() runtime.Object { return &appsv1.DeploymentList{} },
		shortNames: []string{"deploy"}, categories: []string{"all"}, status: true, generation: true,
		validateUpdate: deploymentValidateUpdate},
	{gv: batchGV, plural: "jobs", singular: "job", kind: "Job", namespaced: true,
		newFunc: func() runtime.Object { return &batchv1.Job{} }, newList: func() runtime.Object { return &batchv1.JobList{} },
		categories: []string{"all"}, status: true, generation: true, prepareCreate: jobPrepareForCreate,
		validateUpdate: jobValidateUpdate},
	{gv: coordGV, plural: "leases", singular: "lease", kind: "Lease", namespaced: true,
		newFunc: func() runtime.Object { return &coordinationv1.Lease{} }, newList: func() runtime.Object { return &coordinationv1.LeaseList{} },
		allowCreateOnUpdate: true},
	// events.k8s.io/v1 Event: a second view of the core/v1 Events (same storage, internal type core/v1 Event).
	{gv: eventsGV, plural: "events", singular: "event", kind: "Event", namespaced: true,
		newFunc: func() runtime.Object { return &corev1.Event{} }, newList: func() runtime.Object { return &corev1.EventList{} },
		shortNames: []string{"ev"}, allowCreateOnUpdate: true, selectable: eventSelectableFields,
		storage: &schema.GroupResource{Group: "", Resource: "events"}},
	// rbac.authorization.k8s.io/v1: stored, served and enforced (authz.go, rbacauthz/); there is
	// no aggregation controller for ClusterRoles.
	{gv: rbacGV, plural: "roles", singular: "role", kind: "Role", namespaced: true,
		newFunc: func() runtime.Object { return &rbacv1.Role{} }, newList: func() runtime.Object { return &rbacv1.RoleList{} }},
	{gv: rbacGV, plural: "rolebindings", singular: "rolebinding", kind: "RoleBinding", namespaced: true,
		newFunc: func() runtime.Object { return &rbacv1.RoleBinding{} }, newList: func() runtime.Object { return &rbacv1.RoleBindingList{} }},
	{gv: rbacGV, plural: "clusterroles", singular: "clusterrole", kind: "ClusterRole", namespaced: false,
		newFunc: func() runtime.Object { return &rbacv1.ClusterRole{} }, newList: func() runtime.Object { return &rbacv1.ClusterRoleList{} }},
	{gv: rbacGV, plural: "clusterrolebindings", singular: "clusterrolebinding", kind: "ClusterRoleBinding", namespaced: false,
		newFunc: func() runtime.Object { return &rbacv1.ClusterRoleBinding{} }, newList: func() runtime.Object { return &rbacv1.ClusterRoleBindingList{} }},
}

func eventSelectableFields(o runtime.Object) map[string]string {
	e := o.(*corev1.Event)
	source := e.Source.Component
	if source == "" {
		source = e.ReportingController
	}
	return map[string]string{
		"involvedObject.kind": e.InvolvedObject.Kind, "involvedObject.namespace": e.InvolvedObject.Namespace,
		"involvedObject.name": e.InvolvedObject.Name, "involvedObject.uid": string(e.InvolvedObject.UID),
		"involvedObject.apiVersion": e.InvolvedObject.APIVersion, "involvedObject.resourceVersion": e.InvolvedObject.ResourceVersion,
		"involvedObject.fieldPath": e.InvolvedObject.FieldPath, "reason": e.Reason, "reportingComponent": e.ReportingController,
		"source": source, "type": e.Type,
	}
}

func init() {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	// External versions (also registers the metav1 option/watch types for each group version).
	must(corev1.AddToScheme(builtinScheme))
	must(appsv1.AddToScheme(builtinScheme))
	must(batchv1.AddToScheme(builtinScheme))
	must(coordinationv1.AddToScheme(builtinScheme))
	must(eventsv1.AddToScheme(builtinScheme))
	must(rbacv1.AddToScheme(builtinScheme))
	// As in kube-apiserver's legacy scheme: options in the empty v1 and the unversioned meta types.
	unversioned := schema.GroupVersion{Group: "", Version: "v1"}
	builtinScheme.AddUnversionedTypes(unversioned, &metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})

	identity := map[reflect.Type]bool{}
	addIdentity := func(o runtime.Object) {
		t := reflect.TypeOf(o)
		if identity[t] {
			return
		}
		identity[t] = true
		must(builtinScheme.AddConversionFunc(o, o, func(a, b interface{}, _ conversion.Scope) error {
			reflect.ValueOf(b).Elem().Set(reflect.ValueOf(a.(runtime.Object).DeepCopyObject()).Elem())
			return nil
		}))
	}
	for i := range resources {
		switch r := &resources[i]; {
		case r.kind == "Namespace":
			r.nameFormat = validation.IsDNS1123Label
		case r.kind == "Service":
			r.nameFormat = validation.IsDNS1035Label
		case r.kind == "Event", r.gv == rbacGV:
			// any path segment (checked generically); RBAC names such as system:controller:x have colons
			r.nameFormat = nil
		default:
			r.nameFormat = validation.IsDNS1123Subdomain
		}
	}
	for _, r := range resources {
		internal := schema.GroupVersion{Group: r.gv.Group, Version: runtime.APIVersionInternal}
		obj, list := r.newFunc(), r.newList()
		builtinScheme.AddKnownTypeWithName(internal.WithKind(r.kind), obj)
		builtinScheme.AddKnownTypeWithName(internal.WithKind(r.kind+"List"), list)
		addIdentity(obj)
		addIdentity(list)
		def := r
		// Field selectors: metadata.name, metadata.namespace (namespaced kinds) and def.selectable.
		labels := map[string]string{"metadata.name": "metadata.name"}
		if def.namespaced {
			labels["metadata.namespace"] = "metadata.namespace"
		}
		if def.selectable != nil {
			for k := range def.selectable(r.newFunc()) {
				labels[k] = k
			}
		}
		if r.gv == eventsGV {
			// events.k8s.io/v1 field names -> core/v1 names (the stored/internal type is core/v1 Event)
			labels = map[string]string{"metadata.name": "metadata.name", "metadata.namespace": "metadata.namespace",
				"reason": "reason", "type": "type", "reportingController": "reportingComponent",
				"deprecatedSource.component": "source"}
			for _, f := range []string{"kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"} {
				labels["regarding."+f] = "involvedObject." + f
			}
		}
		must(builtinScheme.AddFieldLabelConversionFunc(r.gv.WithKind(r.kind), func(label, value string) (string, string, error) {
			if internal, ok := labels[label]; ok {
				return internal, value, nil
			}
			return "", "", fmt.Errorf("field label not supported: %s", label)
		}))
	}
	for _, gv := range servedGroupVersions {
		must(builtinScheme.SetVersionPriority(gv))
	}

	// events.k8s.io/v1 Event <-> core/v1 Event (the internal type of both groups).
	must(builtinScheme.AddConversionFunc((*eventsv1.Event)(nil), (*corev1.Event)(nil), func(a, b interface{}, _ conversion.Scope) error {
		in, out := a.(*eventsv1.Event).DeepCopy(), b.(*corev1.Event)
		*out = corev1.Event{ObjectMeta: in.ObjectMeta, InvolvedObject: in.Regarding, Reason: in.Reason, Message: in.Note,
			Source: in.DeprecatedSource, FirstTimestamp: in.DeprecatedFirstTimestamp, LastTimestamp: in.DeprecatedLastTimestamp,
			Count: in.DeprecatedCount, Type: in.Type, EventTime: in.EventTime, Action: in.Action, Related: in.Related,
			ReportingController: in.ReportingController, ReportingInstance: in.ReportingInstance}
		if in.Series != nil {
			out.Series = &corev1.EventSeries{Count: in.Series.Count, LastObservedTime: in.Series.LastObservedTime}
		}
		return nil
	}))
	must(builtinScheme.AddConversionFunc((*corev1.Event)(nil), (*eventsv1.Event)(nil), func(a, b interface{}, _ conversion.Scope) error {
		in, out := a.(*corev1.Event).DeepCopy(), b.(*eventsv1.Event)
		*out = eventsv1.Event{ObjectMeta: in.ObjectMeta, EventTime: in.EventTime, ReportingController: in.ReportingController,
			ReportingInstance: in.ReportingInstance, Action: in.Action, Reason: in.Reason, Regarding: in.InvolvedObject,
			Related: in.Related, Note: in.Message, Type: in.Type, DeprecatedSource: in.Source,
			DeprecatedFirstTimestamp: in.FirstTimestamp, DeprecatedLastTimestamp: in.LastTimestamp, DeprecatedCount: in.Count}
		if in.Series != nil {
			out.Series = &eventsv1.EventSeries{Count: in.Series.Count, LastObservedTime: in.Series.LastObservedTime}
		}
		return nil
	}))
	must(builtinScheme.AddConversionFunc((*eventsv1.EventList)(nil), (*corev1.EventList)(nil), func(a, b interface{}, s conversion.Scope) error {
		in, out := a.(*eventsv1.EventList), b.(*corev1.EventList)
		out.ListMeta = in.ListMeta
		out.Items = make([]corev1.Event, len(in.Items))
		for i := range in.Items {
			if err := builtinScheme.Convert(&in.Items[i], &out.Items[i], nil); err != nil {
				return err
			}
		}
		return nil
	}))
	must(builtinScheme.AddConversionFunc((*corev1.EventList)(nil), (*eventsv1.EventList)(nil), func(a, b interface{}, s conversion.Scope) error {
		in, out := a.(*corev1.EventList), b.(*eventsv1.EventList)
		out.ListMeta = in.ListMeta
		out.Items = make([]eventsv1.Event, len(in.Items))
		for i := range in.Items {
			if err := builtinScheme.Convert(&in.Items[i], &out.Items[i], nil); err != nil {
				return err
			}
		}
		return nil
	}))

	// Query parameters of GET pods/{name}/log (kube-apiserver has generated conversions for these).
	must(builtinScheme.AddConversionFunc((*url.Values)(nil), (*corev1.PodLogOptions)(nil), func(a, b interface{}, _ conversion.Scope) error {
		q, out := *a.(*url.Values), b.(*corev1.PodLogOptions)
		out.Container = q.Get("container")
		out.Follow, _ = strconv.ParseBool(q.Get("follow"))
		out.Previous, _ = strconv.ParseBool(q.Get("previous"))
		out.Timestamps, _ = strconv.ParseBool(q.Get("timestamps"))
		out.InsecureSkipTLSVerifyBackend, _ = strconv.ParseBool(q.Get("insecureSkipTLSVerifyBackend"))
		for name, dst := range map[string]**int64{"sinceSeconds": &out.SinceSeconds, "tailLines": &out.TailLines, "limitBytes": &out.LimitBytes} {
			if v := q.Get(name); v != "" {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return fmt.Errorf("invalid %s: %v", name, err)
				}
				*dst = &n
			}
		}
		return nil
	}))
}
