package knative

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"
)

// document is one YAML document of a manifest file.
type document struct {
	// Source names the document in messages: file name and index.
	Source string
	// File is the base name of the file it came from ("" for a stream).
	File string
	// Raw is the document as written (ko:// references not yet resolved).
	Raw []byte
	// APIVersion, Kind, Name and Namespace are read from the document.
	APIVersion, Kind, Name, Namespace string
}

// GVK is the document's group, version and kind.
func (d document) GVK() schema.GroupVersionKind {
	return schema.FromAPIVersionAndKind(d.APIVersion, d.Kind)
}

// manifestFiles lists the files `ko apply -f knative/` applies: every
// *.yaml and *.json file directly in dir, in lexical order (ko walks the
// folder non-recursively and keeps that order when it pipes to kubectl).
func manifestFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		switch filepath.Ext(e.Name()) {
		case ".yaml", ".json":
			files = append(files, e.Name())
		}
	}
	if len(files) == 0 {
		t.Fatalf("no manifests in %s", dir)
	}
	return files
}

// loadManifests reads every manifest document in dir.
func loadManifests(t *testing.T, dir string) []document {
	t.Helper()
	var docs []document
	for _, name := range manifestFiles(t, dir) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		ds, err := splitDocuments(name, b)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			t.Errorf("%s holds no Kubernetes object; ko apply would send nothing (or fail)", name)
		}
		docs = append(docs, ds...)
	}
	return docs
}

// splitDocuments cuts a YAML stream into documents and reads each one's
// type and name. Empty documents (comments only) are dropped, as kubectl
// does.
func splitDocuments(file string, stream []byte) ([]document, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var docs []document
	for i := 0; ; i++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(raw, &head); err != nil {
			return nil, fmt.Errorf("%s document %d: %w", file, i, err)
		}
		if head.APIVersion == "" && head.Kind == "" && isBlank(raw) {
			continue
		}
		if head.APIVersion == "" || head.Kind == "" || head.Metadata.Name == "" {
			return nil, fmt.Errorf("%s document %d: apiVersion, kind and metadata.name are required", file, i)
		}
		docs = append(docs, document{
			Source:     fmt.Sprintf("%s#%d (%s %s)", file, i, head.Kind, head.Metadata.Name),
			File:       file,
			Raw:        raw,
			APIVersion: head.APIVersion,
			Kind:       head.Kind,
			Name:       head.Metadata.Name,
			Namespace:  head.Metadata.Namespace,
		})
	}
}

// isBlank reports whether a YAML document holds only comments and space.
func isBlank(raw []byte) bool {
	for line := range strings.SplitSeq(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && line != "---" {
			return false
		}
	}
	return true
}

// koRef matches a ko:// image reference as ko resolves it: a string that
// starts with the prefix and runs to the end of the YAML scalar.
var koRef = regexp.MustCompile(`ko://[A-Za-z0-9._~/-]+`)

// koRefs returns the import paths of the ko:// references in raw.
func koRefs(raw []byte) []string {
	var paths []string
	for _, m := range koRef.FindAll(raw, -1) {
		paths = append(paths, strings.TrimPrefix(string(m), "ko://"))
	}
	return paths
}

// fakeDigest is the digest the offline stand-in for `ko resolve` writes.
const fakeDigest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

// standInResolve replaces each ko:// reference with a digest reference of
// the shape `ko resolve` writes (repo/name@sha256:...), so the manifests can
// be validated without building images. The real resolution is tested in
// TestKoResolveOffline.
func standInResolve(raw []byte) []byte {
	return koRef.ReplaceAllFunc(raw, func(m []byte) []byte {
		p := strings.TrimPrefix(string(m), "ko://")
		return []byte("ko.local/" + filepath.Base(p) + "@" + fakeDigest)
	})
}

// resolved returns docs with their ko:// references replaced by stand-in
// digests.
func resolved(docs []document) []document {
	out := make([]document, len(docs))
	for i, d := range docs {
		d.Raw = standInResolve(d.Raw)
		out[i] = d
	}
	return out
}

// decodeStrict decodes raw into out and fails on any field out's Go type
// does not have (a misspelt or misplaced field) and on duplicate keys.
func decodeStrict(raw []byte, out any) error {
	return yaml.UnmarshalStrict(raw, out)
}

// typedKinds are the kinds these manifests may hold, each with the Go type
// of the project that defines it. A kind not listed here fails the tests:
// add its type (or CRD schema) before shipping it.
var typedKinds = map[schema.GroupVersionKind]func() any{
	corev1.SchemeGroupVersion.WithKind("Namespace"):           func() any { return new(corev1.Namespace) },
	corev1.SchemeGroupVersion.WithKind("ServiceAccount"):      func() any { return new(corev1.ServiceAccount) },
	corev1.SchemeGroupVersion.WithKind("ConfigMap"):           func() any { return new(corev1.ConfigMap) },
	networkingv1.SchemeGroupVersion.WithKind("NetworkPolicy"): func() any { return new(networkingv1.NetworkPolicy) },
	batchv1.SchemeGroupVersion.WithKind("CronJob"):            func() any { return new(batchv1.CronJob) },
	batchv1.SchemeGroupVersion.WithKind("Job"):                func() any { return new(batchv1.Job) },
	rbacv1.SchemeGroupVersion.WithKind("Role"):                func() any { return new(rbacv1.Role) },
	rbacv1.SchemeGroupVersion.WithKind("RoleBinding"):         func() any { return new(rbacv1.RoleBinding) },
	servingv1.SchemeGroupVersion.WithKind("Service"):          func() any { return new(servingv1.Service) },
	eventingv1.SchemeGroupVersion.WithKind("Broker"):          func() any { return new(eventingv1.Broker) },
	eventingv1.SchemeGroupVersion.WithKind("Trigger"):         func() any { return new(eventingv1.Trigger) },
	sourcesv1.SchemeGroupVersion.WithKind("SinkBinding"):      func() any { return new(sourcesv1.SinkBinding) },
}

// crdKinds are validated against their CustomResourceDefinition schema on
// the API server (crd_apiserver_test.go) because their Go module is not
// fetchable.
var crdKinds = []schema.GroupVersionKind{
	{Group: "external-secrets.io", Version: "v1", Kind: "SecretStore"},
	{Group: "external-secrets.io", Version: "v1", Kind: "ExternalSecret"},
}

// decodeTyped decodes d strictly into the Go type of its kind.
func decodeTyped(d document) (any, error) {
	newObj, ok := typedKinds[d.GVK()]
	if !ok {
		return nil, fmt.Errorf("%s: kind %s has no Go type in these tests", d.Source, d.GVK())
	}
	obj := newObj()
	if err := decodeStrict(d.Raw, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", d.Source, err)
	}
	return obj, nil
}

// objectsOf decodes every document of kind T, keyed by name.
func objectsOf[T any](t *testing.T, docs []document, gvk schema.GroupVersionKind) map[string]*T {
	t.Helper()
	out := map[string]*T{}
	for _, d := range docs {
		if d.GVK() != gvk {
			continue
		}
		var obj T
		if err := decodeStrict(d.Raw, &obj); err != nil {
			t.Fatalf("%s: %v", d.Source, err)
		}
		if _, dup := out[d.Name]; dup {
			t.Fatalf("two %s objects named %q", gvk.Kind, d.Name)
		}
		out[d.Name] = &obj
	}
	return out
}

// manifestDir is where the manifests live: this package's folder.
const manifestDir = "."

// projectNamespace is the namespace every object of ours lives in.
const projectNamespace = "portfolio-mcp"

// serverImportPath is the server's main package, the image of both Services.
const serverImportPath = "github.com/portfolio-mcp/portfolio-mcp/cmd/portfolio-mcp"

// modes are the two deployments; each has its own Service named after it.
var modes = []string{"paper", "live"}

func serviceName(mode string) string { return "portfolio-mcp-" + mode }

// TestEveryManifestDecodesStrictlyIntoItsType reads every object in
// knative/ and decodes it into the Go type of the project that owns its
// kind, refusing unknown fields; CRD-only kinds are left to their schema
// test, and anything else fails.
func TestEveryManifestDecodesStrictlyIntoItsType(t *testing.T) {
	docs := loadManifests(t, manifestDir)
	for _, d := range resolved(docs) {
		if slices.Contains(crdKinds, d.GVK()) {
			continue
		}
		if d.Kind == "Secret" {
			t.Errorf("%s: a Secret in the manifests would put key material in git; External Secrets makes it", d.Source)
			continue
		}
		if _, err := decodeTyped(d); err != nil {
			t.Error(err)
		}
	}
}

// TestDecodingCatchesMisplacedFields proves the strict decoding above can
// fail: a field Knative does not define is refused, where a lenient decode
// (and kubectl with client-side validation off) would drop it silently.
func TestDecodingCatchesMisplacedFields(t *testing.T) {
	bad := []byte(`apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: x
spec:
  template:
    spec:
      containerConcurency: 10
`)
	ds, err := splitDocuments("bad.yaml", bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeTyped(ds[0]); err == nil || !strings.Contains(err.Error(), "containerConcurency") {
		t.Fatalf("decodeTyped accepted a misspelt field: %v", err)
	}
}

// TestObjectsLiveInTheProjectNamespace: every namespaced object names the
// namespace explicitly (so `ko apply` never lands it in whatever namespace
// the kubeconfig defaults to), names are unique per kind, and the Namespace
// object is the first thing applied.
func TestObjectsLiveInTheProjectNamespace(t *testing.T) {
	docs := loadManifests(t, manifestDir)
	if first := docs[0]; first.Kind != "Namespace" || first.Name != projectNamespace {
		t.Errorf("first object applied is %s; want the Namespace %s so everything after it has somewhere to go", first.Source, projectNamespace)
	}
	seen := map[string]string{}
	for _, d := range docs {
		if d.Kind == "Namespace" {
			continue
		}
		if d.Namespace != projectNamespace {
			t.Errorf("%s: namespace %q, want %q", d.Source, d.Namespace, projectNamespace)
		}
		key := d.GVK().String() + "/" + d.Name
		if prev, dup := seen[key]; dup {
			t.Errorf("%s and %s are the same object", prev, d.Source)
		}
		seen[key] = d.Source
	}
}

// TestKustomizationListsEveryManifest keeps knative/Kustomization (named
// without an extension so that ko skips it) in step with the folder: the
// same files, each once, so `kubectl apply -k` and `ko apply -f` deploy the
// same objects.
func TestKustomizationListsEveryManifest(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(manifestDir, "Kustomization"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := decodeStrict(b, &k); err != nil {
		t.Fatalf("Kustomization: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("Kustomization is %s %s", k.APIVersion, k.Kind)
	}
	got := slices.Sorted(slices.Values(k.Resources))
	want := manifestFiles(t, manifestDir)
	if !slices.Equal(got, want) {
		t.Errorf("Kustomization resources = %v\nfiles in knative/     = %v", got, want)
	}
	for _, name := range []string{"kustomization.yaml", "kustomization.json"} {
		if _, err := os.Stat(filepath.Join(manifestDir, name)); err == nil {
			t.Errorf("%s would be applied by `ko apply -f knative/` as an object and fail", name)
		}
	}
}
