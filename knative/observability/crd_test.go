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
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/crdtest"

	"k8s.io/apimachinery/pkg/runtime/schema"
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

// TestManifestsMatchTheOperatorCRDs validates every object of this folder
// against the Prometheus Operator's CRD schema, and shows the check
// catches a misplaced field and a wrong enum value.
func TestManifestsMatchTheOperatorCRDs(t *testing.T) {
	vs := crdtest.Load(t, crdtest.DownloadModule(t, operatorModule, operatorVersion, operatorZipHash), operatorCRDFiles)
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
			if err := v.Validate(doc); err != nil {
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
	if err := vs[podMonitorKind].Validate(misplaced); err == nil || !strings.Contains(err.Error(), "sourceLabel") {
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
	if err := vs[podMonitorKind].Validate(badEnum); err == nil || !strings.Contains(err.Error(), "action") {
		t.Errorf("a wrong enum value passed: %v", err)
	}
}
