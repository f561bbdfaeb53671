package knativetest

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	revresources "knative.dev/serving/pkg/reconciler/revision/resources"
)

// QueueProxyPackage is Knative's queue-proxy.
const QueueProxyPackage = "knative.dev/serving/cmd/queue"

// queueProxyModule is the directory, relative to the main module's, of the
// module that has queue-proxy as its tool (go.mod's tool directive).
//
// It is a module of its own, not a tool of the main one, because a tool
// builds against its module's whole build list: in the main module's,
// OpenTelemetry is newer than the one knative.dev/serving pins, and that
// queue-proxy exits at start ("error merging otel resources: conflicting
// Schema URL"). Here it builds with exactly the versions Knative released
// it with. Its knative.dev/serving must be the main module's, which
// QueueProxyBinary checks.
const queueProxyModule = "internal/testkit/knativetest/queueproxy"

var queueProxyBuild struct {
	once sync.Once
	path string
	err  error
}

// QueueProxyBinary returns the path of the queue-proxy executable, built
// by `go tool -n` (once per test binary): Go's build cache keeps the linked
// tool, so only the first build on a machine takes minutes.
func QueueProxyBinary(tb testing.TB) string {
	tb.Helper()
	b := &queueProxyBuild
	b.once.Do(func() { b.path, b.err = buildQueueProxy() })
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.path
}

func buildQueueProxy() (string, error) {
	root, err := goCmd("", "list", "-m", "-f", "{{.Dir}}")
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, queueProxyModule)
	want, err := goCmd(root, "list", "-m", "-f", "{{.Version}}", "knative.dev/serving")
	if err != nil {
		return "", err
	}
	got, err := goCmd(dir, "list", "-m", "-f", "{{.Version}}", "knative.dev/serving")
	if err != nil {
		return "", err
	}
	if got != want {
		return "", fmt.Errorf("%s builds queue-proxy from knative.dev/serving %s, but go.mod requires %s: run `go get -tool %s@%s` in %s",
			queueProxyModule, got, want, QueueProxyPackage, want, queueProxyModule)
	}
	return goCmd(dir, "tool", "-n", QueueProxyPackage)
}

// goCmd runs the go command in dir ("": the current directory) and returns
// its trimmed output.
func goCmd(dir string, args ...string) (string, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("go %s (in %q): %w", strings.Join(args, " "), dir, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// StartQueueProxy runs the real queue-proxy in p with the environment the
// revision reconciler gave the queue-proxy container of dep.
func StartQueueProxy(tb testing.TB, p *Pod, dep *appsv1.Deployment) *Process {
	tb.Helper()
	c := Container(tb, &dep.Spec.Template.Spec, revresources.QueueContainerName)
	return p.Start(tb, c.Name, QueueProxyBinary(tb), p.Env(tb, c))
}
