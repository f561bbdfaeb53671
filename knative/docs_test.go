package knative

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/knativetest"

	corev1 "k8s.io/api/core/v1"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// deployDoc is the deployment guide whose snippets these tests keep true.
var deployDoc = filepath.Join(moduleRoot, "docs", "deploy.md")

// overlayTest matches the guarded env positions of the overlay example in
// docs/deploy.md: {op: test, path: .../env/N/name, value: NAME}.
var overlayTest = regexp.MustCompile(`\{op: test, path: /spec/template/spec/containers/0/env/(\d+)/name, value: ([A-Z_]+)\}`)

// TestDocsOverlayPatchesTheRightVariables checks the list positions the
// overlay in docs/deploy.md patches against both Services: the same
// position must hold the same variable in paper and live.
func TestDocsOverlayPatchesTheRightVariables(t *testing.T) {
	b, err := os.ReadFile(deployDoc)
	if err != nil {
		t.Fatal(err)
	}
	matches := overlayTest.FindAllStringSubmatch(string(b), -1)
	if len(matches) == 0 {
		t.Fatal("docs/deploy.md has no guarded overlay patch")
	}
	for _, svc := range serverServices(t, loadManifests(t, manifestDir)) {
		env := svc.Spec.Template.Spec.GetContainer().Env
		for _, m := range matches {
			i, _ := strconv.Atoi(m[1])
			if i >= len(env) || env[i].Name != m[2] {
				t.Errorf("docs/deploy.md patches env[%d] as %s, but in %s it is %v", i, m[2], svc.Name, nameAt(env, i))
			}
		}
	}
}

func nameAt(env []corev1.EnvVar, i int) string {
	if i >= len(env) {
		return "past the end"
	}
	return env[i].Name
}

// TestDocsAuditDisplayIsAdmitted puts the audit-display Service and Trigger
// of docs/deploy.md through the same Knative admission as the manifests,
// and the pod Knative makes of it through the restricted Pod Security level
// the namespace enforces.
func TestDocsAuditDisplayIsAdmitted(t *testing.T) {
	b, err := os.ReadFile(deployDoc)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "kubectl apply -f - <<'EOF'\n")
	block, _, ok2 := strings.Cut(rest, "\nEOF\n")
	if !ok || !ok2 {
		t.Fatal("docs/deploy.md has no `kubectl apply -f - <<'EOF'` block")
	}
	docs, err := splitDocuments("docs/deploy.md", []byte(block))
	if err != nil {
		t.Fatal(err)
	}
	cfg := knativetest.Config(t, nil)
	svcs := admittedServices(t, cfg, docs)
	_, triggers, _ := eventingObjects(t, docs)
	if len(svcs) != 1 || len(triggers) != 1 {
		t.Fatalf("docs block holds %d Services and %d Triggers, want one of each", len(svcs), len(triggers))
	}
	eval, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range svcs {
		if svc.Namespace != projectNamespace {
			t.Errorf("%s is in namespace %q", svc.Name, svc.Namespace)
		}
		tmpl := knativetest.Deployment(t, cfg, knativetest.Revision(t, cfg, svc)).Spec.Template
		res := psapolicy.AggregateCheckResults(eval.EvaluatePod(
			psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}, &tmpl.ObjectMeta, &tmpl.Spec))
		if !res.Allowed {
			t.Errorf("%s would be refused by the namespace's Pod Security level: %s: %s", svc.Name, res.ForbiddenReason(), res.ForbiddenDetail())
		}
		for _, tr := range triggers {
			if ref := tr.Spec.Subscriber.Ref; ref == nil || ref.Name != svc.Name || ref.APIVersion != servingv1.SchemeGroupVersion.String() {
				t.Errorf("Trigger %s does not deliver to %s", tr.Name, svc.Name)
			}
			if tr.Spec.Broker != serviceName("paper") {
				t.Errorf("Trigger %s listens on %q", tr.Name, tr.Spec.Broker)
			}
			if len(tr.Spec.Filters) != 1 || tr.Spec.Filters[0].Prefix["type"] != "com.portfolio-mcp." {
				t.Errorf("Trigger %s filters %+v, want every com.portfolio-mcp. type", tr.Name, tr.Spec.Filters)
			}
		}
	}
}
