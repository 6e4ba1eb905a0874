package main

// OpenAPI definitions for the built-in kinds, generated at startup by reflection over the
// k8s.io/api Go types.
//
// kube-apiserver's generated definitions (k8s.io/kubernetes/pkg/generated/openapi) are not
// available, so the schema is derived from the Go types: json tags give property names and types,
// SwaggerDoc() (types_swagger_doc_generated.go) gives descriptions, and the patchStrategy /
// patchMergeKey struct tags give the list semantics used by server-side apply (merge key -> an
// associative list keyed by that field). Markers that only exist as Go comments upstream
// (+listType=atomic|set, +mapType, +structType, +required, defaults, enums) are not known here,
// except for the composite list-map keys listed in compositeListKeys. The definitions of
// apimachinery's meta/v1 and runtime types (ObjectMeta, Time, Quantity, ...) are the real
// generated ones shipped with k8s.io/apiextensions-apiserver.

import (
	"reflect"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/util"
	"k8s.io/kube-openapi/pkg/validation/spec"
)

// compositeListKeys: upstream +listType=map lists whose keys are more than the patchMergeKey.
var compositeListKeys = map[string][]string{
	"io.k8s.api.core.v1.Container.ports":          {"containerPort", "protocol"},
	"io.k8s.api.core.v1.EphemeralContainer.ports": {"containerPort", "protocol"},
	"io.k8s.api.core.v1.ServiceSpec.ports":        {"port", "protocol"},
}

func builtinOpenAPIDefinitions(base common.GetOpenAPIDefinitions, roots []runtime.Object) common.GetOpenAPIDefinitions {
	return func(ref common.ReferenceCallback) map[string]common.OpenAPIDefinition {
		g := &defGen{ref: ref, defs: base(ref)}
		for _, o := range roots {
			g.named(reflect.TypeOf(o).Elem())
		}
		return g.defs
	}
}

type defGen struct {
	ref  common.ReferenceCallback
	defs map[string]common.OpenAPIDefinition
}

func modelName(t reflect.Type) string {
	return util.GetCanonicalTypeName(reflect.New(t).Elem().Interface())
}

type schemaTyper interface{ OpenAPISchemaType() []string }
type schemaFormatter interface{ OpenAPISchemaFormat() string }
type oneOfTyper interface{ OpenAPIV3OneOfTypes() []string }
type swaggerDoc interface{ SwaggerDoc() map[string]string }

// named returns the model name of struct type t, generating its definition if needed.
func (g *defGen) named(t reflect.Type) string {
	name := modelName(t)
	if _, ok := g.defs[name]; ok {
		return name
	}
	g.defs[name] = common.OpenAPIDefinition{} // placeholder: recursive types
	g.defs[name] = g.build(t, name)
	return name
}

func docs(t reflect.Type) map[string]string {
	if d, ok := reflect.New(t).Elem().Interface().(swaggerDoc); ok {
		return d.SwaggerDoc()
	}
	return map[string]string{}
}

func (g *defGen) build(t reflect.Type, name string) common.OpenAPIDefinition {
	v := reflect.New(t).Elem().Interface()
	desc := docs(t)[""]
	if st, ok := v.(schemaTyper); ok {
		format := ""
		if f, ok := v.(schemaFormatter); ok {
			format = f.OpenAPISchemaFormat()
		}
		v2 := common.OpenAPIDefinition{Schema: spec.Schema{SchemaProps: spec.SchemaProps{Description: desc, Type: st.OpenAPISchemaType(), Format: format}}}
		if oo, ok := v.(oneOfTyper); ok {
			v3 := common.OpenAPIDefinition{Schema: spec.Schema{SchemaProps: spec.SchemaProps{Description: desc, OneOf: common.GenerateOpenAPIV3OneOfSchema(oo.OpenAPIV3OneOfTypes()), Format: format}}}
			return common.EmbedOpenAPIDefinitionIntoV2Extension(v3, v2)
		}
		return v2
	}
	props := map[string]spec.Schema{}
	deps := map[string]bool{}
	g.fields(t, name, props, deps)
	if p, ok := props["protocol"]; ok && (name == "io.k8s.api.core.v1.ContainerPort" || name == "io.k8s.api.core.v1.ServicePort") {
		p.Default = "TCP" // part of the list-map key; server-side apply needs the default
		props["protocol"] = p
	}
	def := common.OpenAPIDefinition{Schema: spec.Schema{SchemaProps: spec.SchemaProps{Description: desc, Type: []string{"object"}, Properties: props}}}
	for d := range deps {
		def.Dependencies = append(def.Dependencies, d)
	}
	return def
}

func (g *defGen) fields(t reflect.Type, owner string, props map[string]spec.Schema, deps map[string]bool) {
	d := docs(t)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.PkgPath != "" {
			continue
		}
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" || strings.Contains(","+opts+",", ",inline,") {
			ft := f.Type
			if ft.Kind() == reflect.Ptr {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				g.fields(ft, owner, props, deps)
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		s := g.schema(f.Type, deps)
		s.Description = d[name]
		if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() != reflect.Uint8 {
			ext := spec.Extensions{}
			if ps := f.Tag.Get("patchStrategy"); ps != "" {
				ext["x-kubernetes-patch-strategy"] = ps
			}
			if mk := f.Tag.Get("patchMergeKey"); mk != "" {
				ext["x-kubernetes-patch-merge-key"] = mk
				if strings.Contains(f.Tag.Get("patchStrategy"), "merge") {
					ext["x-kubernetes-list-type"] = "map"
					ext["x-kubernetes-list-map-keys"] = []interface{}{mk}
				}
			}
			if keys, ok := compositeListKeys[owner+"."+name]; ok {
				ext["x-kubernetes-list-type"] = "map"
				ks := []interface{}{}
				for _, k := range keys {
					ks = append(ks, k)
				}
				ext["x-kubernetes-list-map-keys"] = ks
			}
			if len(ext) > 0 {
				s.VendorExtensible = spec.VendorExtensible{Extensions: ext}
			}
		}
		props[name] = s
	}
}

func (g *defGen) schema(t reflect.Type, deps map[string]bool) spec.Schema {
	for t.Kind() == reflect.Ptr {
		t = t.Elem()
	}
	if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
		return spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"string"}, Format: "byte"}}
	}
	_, special := reflect.New(t).Elem().Interface().(schemaTyper)
	if t.Kind() == reflect.Struct || special {
		name := g.named(t)
		deps[name] = true
		return spec.Schema{SchemaProps: spec.SchemaProps{Ref: g.ref(name)}}
	}
	switch t.Kind() {
	case reflect.String:
		return spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"string"}}}
	case reflect.Bool:
		return spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"boolean"}}}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"integer"}, Format: "int32"}}
	case reflect.Int64, reflect.Uint, reflect.Uint64:
		return spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"integer"}, Format: "int64"}}
	case reflect.Float32, reflect.Float64:
		return spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"number"}, Format: "double"}}
	case reflect.Slice, reflect.Array:
		item := g.schema(t.Elem(), deps)
		return spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"array"}, Items: &spec.SchemaOrArray{Schema: &item}}}
	case reflect.Map:
		item := g.schema(t.Elem(), deps)
		return spec.Schema{SchemaProps: spec.SchemaProps{Type: []string{"object"}, AdditionalProperties: &spec.SchemaOrBool{Allows: true, Schema: &item}}}
	}
	// interface{} and anything unexpected: any value
	return spec.Schema{VendorExtensible: spec.VendorExtensible{Extensions: spec.Extensions{"x-kubernetes-preserve-unknown-fields": true}}}
}
