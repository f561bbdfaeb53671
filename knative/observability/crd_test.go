package observability

// The PodMonitors and the PrometheusRule are checked against the
// CustomResourceDefinitions of the Prometheus Operator, with the API
// server's own custom-resource code (k8s.io/apiextensions-apiserver):
// unknown fields found by structural pruning, schema defaulting, OpenAPI
// validation, list-type and CEL rules, as knative/externalsecrets_test.go
// does for External Secrets.
//
// The operator's Go API is a module of its own that would add to go.mod;
// its main module's zip, which the Go module proxy serves, carries the CRDs
// (example/prometheus-operator-crd). It is fetched into the module cache at
// test time, outside this module so go.mod is untouched, and pinned by its
// go.sum hash.

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

// The Prometheus Operator release whose CRDs the manifests target (install
// that version or later; README.md), and the go.sum hash of its module zip.
const (
	operatorModule  = "github.com/prometheus-operator/prometheus-operator"
	operatorVersion = "v0.85.0"
	operatorZipHash = "h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s="
)

var operatorCRDFiles = []string{
	"example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
	"example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
}

var (
	podMonitorKind     = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PodMonitor"}
	prometheusRuleKind = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"}
)

// goList runs `go list` with args in this module.
func goList(args ...string) (string, error) {
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	return strings.TrimSpace(string(out)), err
}

// downloadModule fetches path@version into the module cache through the Go
// module proxy and returns its directory, failing unless the zip's hash is
// wantSum. It runs in an empty directory so this module's go.mod and go.sum
// are not touched. Offline, the test is skipped unless CI is set.
func downloadModule(t *testing.T, path, version, wantSum string) string {
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

// crdValidator checks custom resources of one kind and version the way the
// API server does on create.
type crdValidator struct {
	structural *structuralschema.Structural
	schema     apiservervalidation.SchemaCreateValidator
	cel        *cel.Validator
}

func loadCRDValidators(t *testing.T, dir string, files []string) map[schema.GroupVersionKind]*crdValidator {
	t.Helper()
	out := map[schema.GroupVersionKind]*crdValidator{}
	for _, f := range files {
		docs := splitYAML(t, readFile(t, filepath.Join(dir, f)))
		if len(docs) != 1 {
			t.Fatalf("%s holds %d documents, want one CRD", f, len(docs))
		}
		var v1crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(docs[0], &v1crd); err != nil {
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
			out[gvk] = &crdValidator{structural: ss, schema: sv, cel: cel.NewValidator(ss, true, celconfig.PerCallLimit)}
		}
	}
	return out
}

// validate checks one object (YAML) as the API server would with strict
// field validation.
func (v *crdValidator) validate(raw []byte) error {
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

// TestManifestsMatchTheOperatorCRDs validates every object of this folder
// against the Prometheus Operator's CRD schema, and shows the check
// catches a misplaced field and a wrong enum value.
func TestManifestsMatchTheOperatorCRDs(t *testing.T) {
	vs := loadCRDValidators(t, downloadModule(t, operatorModule, operatorVersion, operatorZipHash), operatorCRDFiles)
	for _, gvk := range []schema.GroupVersionKind{podMonitorKind, prometheusRuleKind} {
		if vs[gvk] == nil {
			t.Fatalf("the Prometheus Operator %s serves no %s", operatorVersion, gvk)
		}
	}
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, f := range files {
		for i, doc := range splitYAML(t, readFile(t, f)) {
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Fatal(err)
			}
			gvk := schema.FromAPIVersionAndKind(head.APIVersion, head.Kind)
			v := vs[gvk]
			if v == nil {
				t.Errorf("%s document %d: %s is not a kind this pack may hold", f, i, gvk)
				continue
			}
			seen[head.Kind]++
			if err := v.validate(doc); err != nil {
				t.Errorf("%s document %d (%s): %v", f, i, head.Kind, err)
			}
		}
	}
	if seen["PodMonitor"] != 3 || seen["PrometheusRule"] != 1 {
		t.Errorf("objects checked: %v, want 3 PodMonitors and 1 PrometheusRule", seen)
	}

	misplaced := []byte(`apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata: {name: x, namespace: y}
spec:
  selector: {matchLabels: {a: b}}
  podMetricsEndpoints:
  - port: user-port
    relabelings:
    - sourceLabel: [a]
      targetLabel: b
`)
	if err := vs[podMonitorKind].validate(misplaced); err == nil || !strings.Contains(err.Error(), "sourceLabel") {
		t.Errorf("a misspelt field passed: %v", err)
	}
	badEnum := []byte(`apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata: {name: x, namespace: y}
spec:
  selector: {matchLabels: {a: b}}
  podMetricsEndpoints:
  - port: user-port
    relabelings:
    - action: rename
      targetLabel: b
`)
	if err := vs[podMonitorKind].validate(badEnum); err == nil || !strings.Contains(err.Error(), "action") {
		t.Errorf("a wrong enum value passed: %v", err)
	}
}
