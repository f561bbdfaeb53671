package knative

// Every custom resource of knative/ and knative/observability/ is created on
// the real Kubernetes custom-resource API server (k8s.io/apiextensions-
// apiserver, run in this process on an embedded etcd by
// internal/testkit/apiservertest), after the CRDs that define it are
// installed, with strict field validation as `kubectl apply` sends it. The
// server decides: unknown and duplicated fields, pruning, defaults, the
// OpenAPI schema, list types and CEL rules. The other tests add what a
// schema cannot say (Knative's own Go validation, as its webhook runs it;
// consistency between objects).
//
// The CRDs come from the projects that publish them, through the Go module
// proxy:
//   - Knative Serving and Eventing: their config/ folders at the versions
//     go.mod requires, so they match the Go code the other tests run.
//   - External Secrets and the Prometheus Operator: their main module's zip,
//     pinned by its go.sum hash and fetched outside this module (go.mod is
//     untouched). Their Go API modules would not do: External Secrets'
//     (github.com/external-secrets/external-secrets/apis) is not served by
//     the proxy, and either main module would pull every cloud SDK into
//     go.mod.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/apiservertest"
)

// apiServer is this test binary's API server, started by the first test
// that needs it.
var apiServer apiservertest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	apiServer.Close()
	os.Exit(code)
}

// The External Secrets release whose CRDs the manifests target (install the
// same chart version, docs/deploy.md), and the go.sum hash of its module zip.
const (
	esoModule  = "github.com/external-secrets/external-secrets"
	esoVersion = "v1.3.2"
	esoZipHash = "h1:u2J8RjlHIeF0oZCqtl92adI/uZWUwOesJIDkfql6LqQ="
)

// The Prometheus Operator release whose CRDs knative/observability targets
// (install that version or later; its README.md), and its zip's hash.
const (
	operatorModule  = "github.com/prometheus-operator/prometheus-operator"
	operatorVersion = "v0.85.0"
	operatorZipHash = "h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s="
)

// crdSource is a module and the CRD files in it that the manifests need.
// Without a version, it is the version go.mod requires.
type crdSource struct {
	module, version, zipHash string
	files                    []string
}

var crdSources = []crdSource{
	{module: "knative.dev/serving", files: []string{"config/core/300-resources/service.yaml"}},
	{module: "knative.dev/eventing", files: []string{
		"config/core/resources/broker.yaml",
		"config/core/resources/trigger.yaml",
		"config/core/resources/sinkbindings.yaml",
	}},
	{module: esoModule, version: esoVersion, zipHash: esoZipHash, files: []string{
		"config/crds/bases/external-secrets.io_secretstores.yaml",
		"config/crds/bases/external-secrets.io_externalsecrets.yaml",
	}},
	{module: operatorModule, version: operatorVersion, zipHash: operatorZipHash, files: []string{
		"example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
		"example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
	}},
}

// serverWithCRDs returns the shared API server with every CRD of
// crdSources installed, and the kinds they serve.
func serverWithCRDs(t *testing.T) (*apiservertest.Server, []schema.GroupVersionKind) {
	t.Helper()
	srv := apiServer.Get(t)
	var all []*apiextensionsv1.CustomResourceDefinition
	var kinds []schema.GroupVersionKind
	for _, src := range crdSources {
		var dir string
		if src.version == "" {
			dir = apiservertest.RequiredModule(t, src.module)
		} else {
			dir = apiservertest.DownloadModule(t, src.module, src.version, src.zipHash)
		}
		crds, err := apiservertest.ReadCRDs(dir, src.files...)
		if err != nil {
			t.Fatalf("%s: %v", src.module, err)
		}
		for _, crd := range crds {
			for _, v := range crd.Spec.Versions {
				if v.Served {
					kinds = append(kinds, schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Spec.Names.Kind})
				}
			}
		}
		all = append(all, crds...)
	}
	if err := srv.Install(t.Context(), all...); err != nil {
		t.Fatal(err)
	}
	return srv, kinds
}

// customResources are the documents of knative/*.yaml and
// knative/observability/*.yaml whose kind is not built into Kubernetes
// (those are decoded strictly into k8s.io/api types elsewhere).
func customResources(t *testing.T) []document {
	t.Helper()
	docs := loadManifests(t, manifestDir)
	// The observability pack also holds a dashboard (JSON, not an object);
	// its objects are its YAML files.
	files, err := filepath.Glob(filepath.Join("observability", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no observability manifests: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ds, err := splitDocuments(f, b)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, ds...)
	}
	// A scheme of Kubernetes' own kinds only: client-go's shared one also
	// holds the Knative kinds that Knative's packages register into it.
	builtin := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(builtin); err != nil {
		t.Fatal(err)
	}
	var out []document
	for _, d := range docs {
		if !builtin.Recognizes(d.GVK()) {
			out = append(out, d)
		}
	}
	return out
}

// TestCustomResourcesOnTheAPIServer installs the CRDs once, then creates
// every custom resource of the manifests on the real API server and shows
// the server refuses each broken variant of them.
func TestCustomResourcesOnTheAPIServer(t *testing.T) {
	srv, kinds := serverWithCRDs(t)
	docs := customResources(t)
	t.Run("manifests are accepted", func(t *testing.T) { createManifests(t, srv, kinds, docs) })
	t.Run("broken objects are refused", func(t *testing.T) { refuseBroken(t, srv, docs) })
}

// createManifests creates every document, and checks the CRD list is
// exactly what they need: no kind without its CRD, no CRD without an
// object.
func createManifests(t *testing.T, srv *apiservertest.Server, kinds []schema.GroupVersionKind, docs []document) {
	created := map[schema.GroupVersionKind]int{}
	for _, d := range docs {
		if _, ok := srv.Kind(d.GVK()); !ok {
			t.Errorf("%s: no CRD in crdSources serves %s; add the CRD that defines it", d.Source, d.GVK())
			continue
		}
		obj, err := srv.Create(t.Context(), d.Raw)
		if err != nil {
			t.Errorf("%s: the API server refused it: %v", d.Source, err)
			continue
		}
		if obj.GetUID() == "" {
			t.Errorf("%s: created without a UID: %v", d.Source, obj.Object)
		}
		created[d.GVK()]++
	}
	for _, k := range kinds {
		if created[k] == 0 {
			t.Errorf("crdSources installs %s, which no manifest uses", k)
		}
	}
	t.Logf("created on the API server: %v", created)
}

// refuseBroken proves createManifests can fail: each case is a manifest
// object with one mistake (a JSON Patch), renamed so a wrongly accepted
// one cannot collide, and the server must refuse it for that mistake.
func refuseBroken(t *testing.T, srv *apiservertest.Server, docs []document) {
	byName := map[string]document{}
	for _, d := range docs {
		byName[d.Kind+" "+d.Name] = d
	}
	tests := []struct {
		name, object, patch string
		// want are substrings of the server's refusal: the field and what
		// is wrong with it.
		want []string
	}{
		{
			name:   "misspelt field in a Knative Service",
			object: "Service portfolio-mcp-paper",
			patch:  `[{"op": "add", "path": "/spec/template/spec/containerConcurency", "value": 50}]`,
			want:   []string{`unknown field "spec.template.spec.containerConcurency"`},
		},
		{
			name:   "unknown metadata field",
			object: "Trigger portfolio-mcp-paper-approvals",
			patch:  `[{"op": "add", "path": "/metadata/label", "value": {"a": "b"}}]`,
			want:   []string{`unknown field "metadata.label"`},
		},
		{
			name:   "number as a string in a Knative Service",
			object: "Service portfolio-mcp-live",
			patch:  `[{"op": "replace", "path": "/spec/template/spec/containerConcurrency", "value": "50"}]`,
			want:   []string{"spec.template.spec.containerConcurrency", `must be of type integer`},
		},
		{
			name:   "Knative Service without containers",
			object: "Service portfolio-mcp-paper",
			patch:  `[{"op": "remove", "path": "/spec/template/spec/containers"}]`,
			want:   []string{"spec.template.spec.containers", "Required value"},
		},
		{
			name:   "Broker delivery field misplaced",
			object: "Broker portfolio-mcp-live",
			patch:  `[{"op": "move", "from": "/spec/delivery/retry", "path": "/spec/retry"}]`,
			want:   []string{`unknown field "spec.retry"`},
		},
		{
			// Not the filter's attributes: Knative's CRD leaves them
			// unchecked (x-kubernetes-preserve-unknown-fields), its Go
			// validation covers them (eventing_test.go).
			name:   "Trigger retry count as a string",
			object: "Trigger portfolio-mcp-live-approvals",
			patch:  `[{"op": "replace", "path": "/spec/delivery/retry", "value": "10"}]`,
			want:   []string{"spec.delivery.retry", "must be of type integer"},
		},
		{
			name:   "SinkBinding subject as a string",
			object: "SinkBinding portfolio-mcp-paper-audit",
			patch:  `[{"op": "replace", "path": "/spec/subject", "value": "portfolio-mcp-paper"}]`,
			want:   []string{"spec.subject", "must be of type object"},
		},
		{
			name:   "ExternalSecret key outside remoteRef",
			object: "ExternalSecret portfolio-mcp-paper",
			patch:  `[{"op": "move", "from": "/spec/data/0/remoteRef/key", "path": "/spec/data/0/key"}]`,
			want:   []string{`unknown field "spec.data[0].key"`},
		},
		{
			name:   "ExternalSecret data without secretKey",
			object: "ExternalSecret portfolio-mcp-live",
			patch:  `[{"op": "remove", "path": "/spec/data/0/secretKey"}]`,
			want:   []string{"spec.data[0].secretKey", "Required value"},
		},
		{
			name:   "SecretStore service not in the enum",
			object: "SecretStore aws-secrets-manager-paper",
			patch:  `[{"op": "replace", "path": "/spec/provider/aws/service", "value": "SecretManager"}]`,
			want:   []string{"spec.provider.aws.service", "Unsupported value"},
		},
		{
			// The CEL rule of External Secrets' Doppler auth.
			name:   "SecretStore breaking a CEL rule",
			object: "SecretStore aws-secrets-manager-live",
			patch: `[{"op": "replace", "path": "/spec/provider", "value": {"doppler": {"auth": {
				"secretRef": {"dopplerToken": {"name": "t", "key": "k"}},
				"oidcConfig": {"identity": "i", "serviceAccountRef": {"name": "s"}}}}}}]`,
			want: []string{"spec.provider.doppler.auth", "Exactly one of 'secretRef' or 'oidcConfig'"},
		},
		{
			name:   "PodMonitor relabeling with a misspelt field",
			object: "PodMonitor portfolio-mcp",
			patch:  `[{"op": "add", "path": "/spec/podMetricsEndpoints/0/relabelings/1/sourceLabel", "value": ["a"]}]`,
			want:   []string{`unknown field "spec.podMetricsEndpoints[0].relabelings[1].sourceLabel"`},
		},
		{
			name:   "PodMonitor relabeling action not in the enum",
			object: "PodMonitor portfolio-mcp",
			patch:  `[{"op": "replace", "path": "/spec/podMetricsEndpoints/0/relabelings/0/action", "value": "rename"}]`,
			want:   []string{"spec.podMetricsEndpoints[0].relabelings[0].action", "Unsupported value"},
		},
		{
			name:   "PrometheusRule duration not matching its pattern",
			object: "PrometheusRule portfolio-mcp",
			patch:  `[{"op": "add", "path": "/spec/groups/0/rules/0/for", "value": "5 minutes"}]`,
			want:   []string{"spec.groups[0].rules[0].for", "should match"},
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := byName[tc.object]
			if !ok {
				t.Fatalf("no manifest object %q to break", tc.object)
			}
			broken := breakObject(t, d.Raw, tc.patch, i)
			_, err := srv.Create(t.Context(), broken)
			if err == nil {
				t.Fatalf("the API server accepted it:\n%s", broken)
			}
			if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
				t.Fatalf("refused for another reason than the object: %v", err)
			}
			t.Logf("refused: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refusal %q does not say %q", err, w)
				}
			}
		})
	}
}

// breakObject applies a JSON Patch to a manifest object and renames it
// mutant-<n>.
func breakObject(t *testing.T, raw []byte, patch string, n int) []byte {
	t.Helper()
	doc, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch([]byte(patch))
	if err != nil {
		t.Fatalf("patch %s: %v", patch, err)
	}
	if doc, err = p.Apply(doc); err != nil {
		t.Fatalf("patch %s: %v", patch, err)
	}
	rename, err := jsonpatch.DecodePatch(fmt.Appendf(nil, `[{"op": "replace", "path": "/metadata/name", "value": "mutant-%d"}]`, n))
	if err != nil {
		t.Fatal(err)
	}
	if doc, err = rename.Apply(doc); err != nil {
		t.Fatal(err)
	}
	return doc
}
