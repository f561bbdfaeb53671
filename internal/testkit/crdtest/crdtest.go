// Package crdtest validates custom resources in tests the way the API
// server does on create, from the CRDs their project publishes (fetched
// through the Go module proxy, hash-pinned): unknown fields, defaults, the
// OpenAPI schema, list types and CEL rules.
package crdtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// DownloadModule fetches path@version into the module cache through the
// Go module proxy and returns its directory, failing unless the zip's hash
// is wantSum. It runs in an empty directory so the caller's go.mod and
// go.sum are not touched. Offline the test is skipped, unless CI is set.
func DownloadModule(t testing.TB, path, version, wantSum string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", path+"@"+version)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GO111MODULE=on", "GOFLAGS=")
	out, err := cmd.Output()
	var info struct{ Dir, Sum, Error string }
	if jerr := json.Unmarshal(out, &info); jerr != nil || err != nil || info.Error != "" {
		msg := fmt.Sprintf("go mod download %s@%s (the CRD schemas come from it): %v %s %s", path, version, err, info.Error, out)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if info.Sum != wantSum {
		t.Fatalf("%s@%s has hash %s, want %s", path, version, info.Sum, wantSum)
	}
	return info.Dir
}

// Validator checks custom resources of one kind and version.
type Validator struct {
	structural *structuralschema.Structural
	schema     apiservervalidation.SchemaCreateValidator
	cel        *cel.Validator
}

// Load builds a validator for every served version of each CRD file (one
// CRD per file) under dir.
func Load(t testing.TB, dir string, files []string) map[schema.GroupVersionKind]*Validator {
	t.Helper()
	out := map[schema.GroupVersionKind]*Validator{}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		var v1crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(b, &v1crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var crd apiextensions.CustomResourceDefinition
		if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1crd, &crd, nil); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, v := range crd.Spec.Versions {
			// The internal version hoists a schema every version shares to
			// spec.validation.
			val := v.Schema
			if val == nil {
				val = crd.Spec.Validation
			}
			if !v.Served || val == nil {
				continue
			}
			ss, err := structuralschema.NewStructural(val.OpenAPIV3Schema)
			if err != nil {
				t.Fatalf("%s %s: structural schema: %v", f, v.Name, err)
			}
			sv, _, err := apiservervalidation.NewSchemaValidator(val.OpenAPIV3Schema)
			if err != nil {
				t.Fatalf("%s %s: %v", f, v.Name, err)
			}
			gvk := schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Spec.Names.Kind}
			out[gvk] = &Validator{structural: ss, schema: sv, cel: cel.NewValidator(ss, true, celconfig.PerCallLimit)}
		}
	}
	return out
}

// Validate checks one object (YAML) as the API server would with strict
// field validation: unknown fields are errors, then defaults are applied
// and the schema, list-type and CEL rules checked.
func (v *Validator) Validate(raw []byte) error {
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		return err
	}
	if unknown := pruning.PruneWithOptions(obj, v.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}); len(unknown) > 0 {
		return fmt.Errorf("unknown fields (the API server would reject them with strict field validation, or drop them): %s", strings.Join(unknown, ", "))
	}
	structuraldefaulting.Default(obj, v.structural)
	var errs field.ErrorList
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, obj, v.schema)...)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, v.structural, obj)...)
	celErrs, _ := v.cel.Validate(context.Background(), nil, v.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	errs = append(errs, celErrs...)
	return errs.ToAggregate()
}
