package main

// etcd-backed REST storage (k8s.io/apiserver generic registry) for the built-in kinds.

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// PodLogAnnotation: GET pods/{name}/log returns the value of this Pod annotation (there is no
// kubelet). "<PodLogAnnotation>.<container>" takes precedence when ?container= is given or the
// pod has a single container with that name.
const PodLogAnnotation = "mvo-test-apiserver/log"

// ---- strategies ---------------------------------------------------------------------------------

type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	def resourceDef
}

func (s strategy) NamespaceScoped() bool { return s.def.namespaced }

func (s strategy) PrepareForCreate(ctx context.Context, obj runtime.Object) {
	if s.def.status {
		setField(obj, "Status", reflect.Zero(fieldType(obj, "Status")))
	}
	if s.def.prepareCreate != nil {
		s.def.prepareCreate(obj)
	}
	if s.def.normalize != nil {
		s.def.normalize(obj)
	}
	if s.def.generation {
		if m, err := meta.Accessor(obj); err == nil {
			m.SetGeneration(1)
		}
	}
}

func (s strategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	if s.def.normalize != nil {
		s.def.normalize(obj)
	}
	if s.def.prepareUpdate != nil {
		s.def.prepareUpdate(obj, old)
	}
	if s.def.status {
		setField(obj, "Status", getField(old.DeepCopyObject(), "Status"))
	}
	if s.def.generation {
		m, err1 := meta.Accessor(obj)
		o, err2 := meta.Accessor(old)
		if err1 == nil && err2 == nil {
			g := o.GetGeneration()
			if !apiequality.Semantic.DeepEqual(getField(obj, "Spec").Interface(), getField(old, "Spec").Interface()) {
				g++
			}
			m.SetGeneration(g)
		}
	}
}

// No built-in validation: kube-apiserver's validation code lives in k8s.io/kubernetes, which is not
// available. Only the generic ObjectMeta validation (labels, annotations, namespace...) of
// k8s.io/apiserver runs (rest.BeforeCreate / BeforeUpdate) ...
func (s strategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	// ... except the metadata.name format, which kube-apiserver checks per kind.
	m, err := meta.Accessor(obj)
	if err != nil || s.def.nameFormat == nil {
		return nil
	}
	var errs field.ErrorList
	for _, msg := range s.def.nameFormat(m.GetName()) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), m.GetName(), msg))
	}
	return errs
}
func (s strategy) WarningsOnCreate(ctx context.Context, obj runtime.Object) []string {
	return nil
}
func (s strategy) Canonicalize(obj runtime.Object) {}
func (s strategy) AllowCreateOnUpdate() bool       { return s.def.allowCreateOnUpdate }
func (s strategy) AllowUnconditionalUpdate() bool  { return true }
func (s strategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	if s.def.validateUpdate == nil {
		return nil
	}
	return s.def.validateUpdate(obj, old)
}
func (s strategy) WarningsOnUpdate(ctx context.Context, obj, old runtime.Object) []string {
	return nil
}

func (s strategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	if !s.def.status {
		return nil
	}
	return map[fieldpath.APIVersion]*fieldpath.Set{
		fieldpath.APIVersion(s.def.gv.String()): fieldpath.NewSet(fieldpath.MakePathOrDie("status")),
	}
}

// statusStrategy: PUT/PATCH <resource>/status only changes .status (spec and metadata kept).
type statusStrategy struct{ strategy }

func (s statusStrategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	oldCopy := old.DeepCopyObject()
	if hasField(obj, "Spec") {
		setField(obj, "Spec", getField(oldCopy, "Spec"))
	}
	m, err1 := meta.Accessor(obj)
	o, err2 := meta.Accessor(oldCopy)
	if err1 == nil && err2 == nil {
		metav1.ResetObjectMetaForStatus(m, o)
	}
}
func (s statusStrategy) AllowCreateOnUpdate() bool { return false }
func (s statusStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	set := fieldpath.NewSet()
	if hasField(s.def.newFunc(), "Spec") {
		set.Insert(fieldpath.MakePathOrDie("spec"))
	}
	return map[fieldpath.APIVersion]*fieldpath.Set{fieldpath.APIVersion(s.def.gv.String()): set}
}

func hasField(obj runtime.Object, name string) bool {
	return reflect.ValueOf(obj).Elem().FieldByName(name).IsValid()
}
func fieldType(obj runtime.Object, name string) reflect.Type {
	return reflect.ValueOf(obj).Elem().FieldByName(name).Type()
}
func getField(obj runtime.Object, name string) reflect.Value {
	return reflect.ValueOf(obj).Elem().FieldByName(name)
}
func setField(obj runtime.Object, name string, v reflect.Value) {
	reflect.ValueOf(obj).Elem().FieldByName(name).Set(v)
}

// ---- REST objects -------------------------------------------------------------------------------

// REST is the main resource storage.
type REST struct {
	*genericregistry.Store
	shortNames []string
	categories []string
}

func (r *REST) ShortNames() []string { return r.shortNames }
func (r *REST) Categories() []string { return r.categories }

// StatusREST serves <resource>/status (get, update, patch incl. server-side apply).
type StatusREST struct {
	store *genericregistry.Store
}

func (r *StatusREST) New() runtime.Object { return r.store.New() }
func (r *StatusREST) Destroy()            {}
func (r *StatusREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	return r.store.Get(ctx, name, options)
}
func (r *StatusREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
}
func (r *StatusREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}
func (r *StatusREST) ConvertToTable(ctx context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	return r.store.ConvertToTable(ctx, object, tableOptions)
}

// PodLogREST serves pods/{name}/log from an annotation of the Pod (no kubelet, no containers).
type PodLogREST struct {
	store *genericregistry.Store
}

var _ rest.GetterWithOptions = &PodLogREST{}
var _ rest.StorageMetadata = &PodLogREST{}

func (r *PodLogREST) New() runtime.Object { return &corev1.Pod{} }
func (r *PodLogREST) Destroy()            {}
func (r *PodLogREST) ProducesMIMETypes(verb string) []string {
	return []string{"text/plain"}
}
func (r *PodLogREST) ProducesObject(verb string) interface{} { return "" }
func (r *PodLogREST) NewGetOptions() (runtime.Object, bool, string) {
	return &corev1.PodLogOptions{}, false, ""
}
func (r *PodLogREST) Get(ctx context.Context, name string, opts runtime.Object) (runtime.Object, error) {
	obj, err := r.store.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	pod := obj.(*corev1.Pod)
	o, _ := opts.(*corev1.PodLogOptions)
	if o == nil {
		o = &corev1.PodLogOptions{}
	}
	container := o.Container
	if container == "" && len(pod.Spec.Containers) == 1 {
		container = pod.Spec.Containers[0].Name
	}
	if container != "" && len(pod.Spec.Containers) > 0 {
		found := false
		for _, c := range append(append([]corev1.Container{}, pod.Spec.Containers...), pod.Spec.InitContainers...) {
			found = found || c.Name == container
		}
		if !found {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("container %s is not valid for pod %s", container, name))
		}
	}
	text, ok := pod.Annotations[PodLogAnnotation+"."+container]
	if !ok || container == "" {
		text = pod.Annotations[PodLogAnnotation]
	}
	if o.TailLines != nil {
		lines := strings.SplitAfter(text, "\n")
		if len(lines) > 0 && lines[len(lines)-1] == "" {
			lines = lines[:len(lines)-1]
		}
		if n := int(*o.TailLines); n >= 0 && n < len(lines) {
			lines = lines[len(lines)-n:]
		}
		text = strings.Join(lines, "")
	}
	if o.LimitBytes != nil && *o.LimitBytes >= 0 && int64(len(text)) > *o.LimitBytes {
		text = text[:*o.LimitBytes]
	}
	return &textStream{text: text}, nil
}

type textStream struct{ text string }

func (s *textStream) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }
func (s *textStream) DeepCopyObject() runtime.Object   { c := *s; return &c }
func (s *textStream) InputStream(ctx context.Context, apiVersion, acceptHeader string) (io.ReadCloser, bool, string, error) {
	return io.NopCloser(strings.NewReader(s.text)), false, "text/plain", nil
}

// ---- wiring -------------------------------------------------------------------------------------

// newStorage builds the REST storage map ("pods", "pods/status", ...) for one resource.
func newStorage(def resourceDef, optsGetter generic.RESTOptionsGetter) (map[string]rest.Storage, error) {
	st := strategy{ObjectTyper: builtinScheme, NameGenerator: names.SimpleNameGenerator, def: def}
	gr := def.gv.WithResource(def.plural).GroupResource()
	attrs := func(obj runtime.Object) (labels.Set, fields.Set, error) {
		m, err := meta.Accessor(obj)
		if err != nil {
			return nil, nil, err
		}
		fs := fields.Set{"metadata.name": m.GetName()}
		if def.namespaced {
			fs["metadata.namespace"] = m.GetNamespace()
		}
		if def.selectable != nil {
			for k, v := range def.selectable(obj) {
				fs[k] = v
			}
		}
		return labels.Set(m.GetLabels()), fs, nil
	}
	store := &genericregistry.Store{
		NewFunc:                   def.newFunc,
		NewListFunc:               def.newList,
		DefaultQualifiedResource:  gr,
		SingularQualifiedResource: def.gv.WithResource(def.singular).GroupResource(),
		CreateStrategy:            st,
		UpdateStrategy:            st,
		DeleteStrategy:            st,
		ResetFieldsStrategy:       st,
		TableConvertor:            rest.NewDefaultTableConvertor(gr),
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: optsGetter, AttrFunc: attrs}); err != nil {
		return nil, fmt.Errorf("%s: %w", gr, err)
	}
	out := map[string]rest.Storage{def.plural: &REST{Store: store, shortNames: def.shortNames, categories: def.categories}}
	if def.status {
		statusStore := *store
		ss := statusStrategy{st}
		statusStore.CreateStrategy = nil
		statusStore.DeleteStrategy = nil
		statusStore.UpdateStrategy = ss
		statusStore.ResetFieldsStrategy = ss
		out[def.plural+"/status"] = &StatusREST{store: &statusStore}
	}
	if def.gv == coreGV && def.plural == "pods" {
		out["pods/log"] = &PodLogREST{store: store}
	}
	return out, nil
}

// Status writes validate no spec (it is kept from the old object), as upstream status strategies.
func (s statusStrategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	return nil
}
