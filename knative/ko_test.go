package knative

import (
	"bytes"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/knativetest"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// moduleRoot is the repository root, where go.mod, ko.yaml and ko/ live.
const moduleRoot = ".."

// modulePath reads the module path from go.mod.
func modulePath(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.TrimSpace(p)
		}
	}
	t.Fatal("go.mod has no module line")
	return ""
}

// TestKoImagesAreMainPackagesOfThisModule checks every ko:// reference in
// the manifests: ko builds it from source, so it must be a package of this
// module (not a dependency's) and a main package.
func TestKoImagesAreMainPackagesOfThisModule(t *testing.T) {
	mod := modulePath(t)
	refs := map[string][]string{}
	for _, d := range loadManifests(t, manifestDir) {
		for _, p := range koRefs(d.Raw) {
			refs[p] = append(refs[p], d.Source)
		}
	}
	if len(refs[serverImportPath]) != len(modes) {
		t.Errorf("the server image is referenced from %v; want one Service per mode", refs[serverImportPath])
	}
	for path, where := range refs {
		if !strings.HasPrefix(path, mod+"/") {
			t.Errorf("ko://%s (in %v) is not in module %s", path, where, mod)
			continue
		}
		pkg, err := build.Import(path, manifestDir, 0)
		if err != nil {
			t.Errorf("ko://%s (in %v): %v", path, where, err)
			continue
		}
		if pkg.Name != "main" {
			t.Errorf("ko://%s (in %v) is package %s; ko can only build a main package", path, where, pkg.Name)
		}
	}
}

// localBaseImage is the offline stand-in for ko.yaml's base image, built
// into the Docker daemon by ko/build-local.sh from ko/base/Dockerfile.
const localBaseImage = "ko.local/portfolio-mcp-base:static"

// requireDocker skips the test when no Docker daemon answers, unless CI is
// set: there the daemon is part of the contract and its absence fails.
func requireDocker(t *testing.T) {
	t.Helper()
	out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err == nil {
		return
	}
	msg := "no Docker daemon (docker info: " + strings.TrimSpace(string(out)) + "); `ko resolve --local` loads images into one"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " and CI is set")
	}
	t.Skip(msg + "; set CI=1 to make this a failure")
}

// localKoImage is what `ko resolve --local` writes for a ko:// reference:
// the image loaded into the daemon, tagged with its digest.
var localKoImage = regexp.MustCompile(`^ko\.local/[a-z0-9._/-]+:[0-9a-f]{64}$`)

// TestKoResolveOffline runs `go tool ko resolve --local -f knative/` the
// way CI does, offline (ko.yaml with the local base image; images go to
// the Docker daemon, no registry), and puts its output through the same
// checks as the source manifests: every reference resolved to a real
// image in the daemon, the same objects in the same order, Knative
// admission of the Services, and the pods Knative would make from them.
func TestKoResolveOffline(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images; skipped with -short")
	}
	requireDocker(t)
	if err := exec.Command("docker", "image", "inspect", localBaseImage).Run(); err != nil {
		cmd := exec.Command("bash", "ko/build-local.sh")
		cmd.Dir = moduleRoot
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("ko/build-local.sh (builds %s): %v\n%s", localBaseImage, err, stderr.String())
		}
	}

	cmd := exec.Command("go", "tool", "ko", "resolve", "--local", "--sbom=none",
		"--platform=linux/"+runtime.GOARCH, "-f", "knative/")
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(),
		"KO_CONFIG_PATH=ko.yaml",
		"KO_DEFAULTBASEIMAGE="+localBaseImage,
		"KO_DOCKER_REPO=ko.local",
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ko resolve: %v\n%s", err, stderr.String())
	}
	if bytes.Contains(out, []byte("ko://")) {
		t.Fatalf("ko resolve left ko:// references:\n%s", out)
	}
	got, err := splitDocuments("ko resolve output", out)
	if err != nil {
		t.Fatal(err)
	}

	// The same objects, in the order of the files (kubectl applies them in
	// that order: the Namespace first).
	source := loadManifests(t, manifestDir)
	key := func(d document) string { return d.Kind + "/" + d.Name }
	if gk, sk := mapKeys(got, key), mapKeys(source, key); !slices.Equal(gk, sk) {
		t.Fatalf("ko resolve output objects %v\nsource objects          %v", gk, sk)
	}

	// Every image is one ko built and loaded into the daemon.
	images := map[string]bool{}
	for _, d := range got {
		if slices.Contains(crdKinds, d.GVK()) {
			continue
		}
		obj, err := decodeTyped(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range containersOf(obj) {
			images[c.Image] = true
		}
	}
	for img := range images {
		if !localKoImage.MatchString(img) {
			t.Errorf("image %q is not a ko-built image (ko.local/<name>:<digest>)", img)
			continue
		}
		if err := exec.Command("docker", "image", "inspect", img).Run(); err != nil {
			t.Errorf("image %s is not in the Docker daemon: %v", img, err)
		}
	}

	// The same admission and pod checks as the source manifests.
	cfg := knativetest.Config(t, nil)
	svcs := admittedServices(t, cfg, got)
	if len(svcs) != 2*len(modes) {
		t.Fatalf("resolved output has %d Services; want a server and a notifier per mode", len(svcs))
	}
	var serverImages []string
	for _, svc := range svcs {
		rev := knativetest.Revision(t, cfg, svc)
		knativetest.Deployment(t, cfg, rev)
		if !strings.HasSuffix(svc.Name, notifierSuffix) {
			serverImages = append(serverImages, svc.Spec.Template.Spec.GetContainer().Image)
		}
	}
	if serverImages[0] != serverImages[1] {
		t.Errorf("paper and live run different server images %v; they must be the same build", serverImages)
	}
}

// mapKeys returns key(d) for each document, in order.
func mapKeys(docs []document, key func(document) string) []string {
	out := make([]string, len(docs))
	for i, d := range docs {
		out[i] = key(d)
	}
	return out
}

// containersOf returns the containers of the workload kinds the manifests
// hold.
func containersOf(obj any) []corev1.Container {
	switch o := obj.(type) {
	case *servingv1.Service:
		return o.Spec.Template.Spec.Containers
	case *batchv1.CronJob:
		return o.Spec.JobTemplate.Spec.Template.Spec.Containers
	case *batchv1.Job:
		return o.Spec.Template.Spec.Containers
	}
	return nil
}

// TestDeployGuideCreatesEveryImageRepository: ko -B pushes each ko://
// image to $KO_DOCKER_REPO/<command>, and ECR creates no repository on a
// push, so docs/deploy.md must create one per command the manifests build.
func TestDeployGuideCreatesEveryImageRepository(t *testing.T) {
	guide, err := os.ReadFile(filepath.Join(moduleRoot, "docs", "deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range loadManifests(t, manifestDir) {
		for _, p := range koRefs(d.Raw) {
			cmd := filepath.Base(p)
			if !seen[cmd] && !strings.Contains(string(guide), "--repository-name portfolio-mcp/"+cmd+"\n") {
				t.Errorf("docs/deploy.md creates no image repository for ko://%s (portfolio-mcp/%s)", p, cmd)
			}
			seen[cmd] = true
		}
	}
}
