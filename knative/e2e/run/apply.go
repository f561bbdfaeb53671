package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// object is one manifest document and where it came from.
type object struct {
	u      *unstructured.Unstructured
	source string
}

// readObjects reads every YAML document of the given files (in order).
func readObjects(files ...string) ([]object, error) {
	var out []object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		objs, err := decode(b, f)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

func decode(b []byte, source string) ([]object, error) {
	var out []object
	rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, object{u: &unstructured.Unstructured{Object: m}, source: source})
	}
}

// yamlFiles lists dir's *.yaml files in lexical order, as ko apply -f dir
// (non-recursive) reads them.
func yamlFiles(dir string) ([]string, error) {
	m, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	sort.Strings(m)
	return m, err
}

// imageRefs names the image `ko resolve` would put in place of each
// ko://<importpath> reference. Here an image is the binary `go build` made
// for the import path with ko.yaml's flags, named
// ko.local/<importpath>@sha256:<digest of the binary> (ko.local is in
// Knative's registries-skipping-tag-resolving list, as with `ko apply
// --local`). It returns ko:// -> reference, and reference -> binary for the
// node agent.
func imageRefs(binaries map[string]string) (map[string]string, map[string]string, error) {
	refs, images := map[string]string{}, map[string]string{}
	for imp, bin := range binaries {
		b, err := os.ReadFile(bin)
		if err != nil {
			return nil, nil, err
		}
		sum := sha256.Sum256(b)
		ref := "ko.local/" + imp + "@sha256:" + hex.EncodeToString(sum[:])
		refs["ko://"+imp] = ref
		images[ref] = bin
	}
	return refs, images, nil
}

// koResolve replaces every ko:// reference in objs by its image.
func koResolve(objs []object, refs map[string]string) error {
	var walk func(v any) (any, error)
	walk = func(v any) (any, error) {
		switch t := v.(type) {
		case map[string]any:
			for k, e := range t {
				n, err := walk(e)
				if err != nil {
					return nil, err
				}
				t[k] = n
			}
		case []any:
			for i, e := range t {
				n, err := walk(e)
				if err != nil {
					return nil, err
				}
				t[i] = n
			}
		case string:
			if strings.HasPrefix(t, "ko://") {
				ref, ok := refs[t]
				if !ok {
					return nil, fmt.Errorf("no build for %s", t)
				}
				return ref, nil
			}
		}
		return v, nil
	}
	for _, o := range objs {
		if _, err := walk(o.u.Object); err != nil {
			return fmt.Errorf("%s: %w", o.source, err)
		}
	}
	return nil
}

// apply server-side applies objs with strict field validation, the
// objects' CRDs first; it waits for CRDs to be established before using
// them. Failures are collected, not fatal.
func (r *runner) apply(ctx context.Context, objs []object) error {
	var crds, rest []object
	for _, o := range objs {
		if o.u.GetKind() == "CustomResourceDefinition" || o.u.GetKind() == "Namespace" {
			crds = append(crds, o)
		} else {
			rest = append(rest, o)
		}
	}
	var errs []error
	for _, o := range crds {
		if err := r.applyOne(ctx, o); err != nil {
			errs = append(errs, err)
		}
	}
	for _, o := range crds {
		if o.u.GetKind() != "CustomResourceDefinition" {
			continue
		}
		name := o.u.GetName()
		err := poll(ctx, time.Minute, func() (bool, error) {
			c, err := r.ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, cond := range c.Status.Conditions {
				if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("CRD %s not established: %w", name, err))
		}
	}
	if len(crds) > 0 {
		r.mapper.Reset()
	}
	for _, o := range rest {
		if err := r.applyOne(ctx, o); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *runner) applyOne(ctx context.Context, o object) error {
	gvk := o.u.GroupVersionKind()
	m, err := r.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		r.mapper.Reset()
		if m, err = r.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return fmt.Errorf("%s: %s %s: %w", o.source, gvk.Kind, o.u.GetName(), err)
		}
	}
	data, err := runtime.Encode(unstructured.UnstructuredJSONScheme, o.u)
	if err != nil {
		return err
	}
	var ri interface {
		Patch(context.Context, string, types.PatchType, []byte, metav1.PatchOptions, ...string) (*unstructured.Unstructured, error)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := o.u.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		ri = r.dyn.Resource(m.Resource).Namespace(ns)
	} else {
		ri = r.dyn.Resource(m.Resource)
	}
	_, err = ri.Patch(ctx, o.u.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
		FieldManager: "ko", Force: ptr(true), FieldValidation: "Strict",
	})
	if err != nil {
		return fmt.Errorf("%s: %s %s: %w", o.source, gvk.Kind, o.u.GetName(), err)
	}
	return nil
}

func newMapper(r *runner) {
	r.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(r.kc.Discovery()))
}

func ptr[T any](v T) *T { return &v }
