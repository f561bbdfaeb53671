package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/audittest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/secrets"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/knativetest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/proctest"
)

// paperService reads the paper Knative Service the way it is deployed
// (defaulted as Knative's webhook does).
func paperService(t *testing.T) (*servingv1.Service, *corev1.Container) {
	t.Helper()
	svc := knativetest.Service(t, knativetest.Config(t, nil), filepath.Join("..", "knative", "service-paper.yaml"))
	return svc, svc.Spec.Template.Spec.GetContainer()
}

// mountSecrets lays out the server's secret files in dir the way the
// kubelet mounts a Secret volume: the data in a timestamped directory,
// ..data a symlink to it, each key a symlink through ..data, with the
// volume's defaultMode.
func mountSecrets(t *testing.T, mode os.FileMode) string {
	t.Helper()
	dir := t.TempDir()
	version := filepath.Join(dir, "..2026_01_02_09_30_00.000000001")
	if err := os.Mkdir(version, 0o755); err != nil {
		t.Fatal(err)
	}
	values := map[string]string{}
	for _, name := range []string{secrets.RequestStateKey, secrets.ApprovalEventKey, secrets.BackendAPIKey, secrets.ConsoleCookieKey} {
		values[name] = "test-" + name + "-0123456789abcdef0123456789abcdef"
	}
	values[secrets.AuditSigningKey], _ = audittest.Key(t, "test")
	for name, value := range values {
		if err := os.WriteFile(filepath.Join(version, name), []byte(value+"\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(version, name), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(version), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	// t.TempDir is 0700 and owned by root; the server runs as nonroot.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// routeHost sends every request with the route's Host, as queue-proxy
// forwards an agent's call over loopback (TestRealQueueProxy runs the real
// queue-proxy; this test is about the image).
type routeHost struct {
	host string
	next http.RoundTripper
}

func (r routeHost) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Host = r.host
	return r.next.RoundTrip(req)
}

// TestKnativePodContract runs the ko-built server image the way Knative
// runs knative/service-paper.yaml: that manifest's environment, user,
// read-only root filesystem and dropped capabilities, the Secret mounted as
// files at SECRETS_DIR, PORT and K_* set by the platform, and calls on
// loopback with the route's Host, as queue-proxy forwards them
// (TestRealQueueProxy puts Knative's real queue-proxy in front of the
// server binary). It must pass its probes, serve MCP calls, refuse a
// foreign Host, and drain on SIGTERM within what the grace period leaves
// it.
//
// Differences from a cluster, all forced by the sealed test machine: the
// container shares the host's network namespace (standing in for the pod's,
// which queue-proxy shares), so PORT is a free port rather than the
// manifest's containerPort; the backends are the fakes; OAuth and Redis are
// off (no issuer or Redis is reachable), with ALLOW_UNAUTHENTICATED as on
// every sealed test network.
func TestKnativePodContract(t *testing.T) {
	s := needDocker(t)
	svc, c := paperService(t)
	sc := c.SecurityContext
	if sc == nil || sc.RunAsUser == nil || sc.RunAsGroup == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Fatalf("service-paper.yaml: securityContext %+v lacks a user, group or read-only root", sc)
	}

	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	secretsDir := env["SECRETS_DIR"]
	var mode os.FileMode = 0o644
	for _, v := range svc.Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.DefaultMode != nil {
			mode = os.FileMode(*v.Secret.DefaultMode)
		}
	}
	route, err := url.Parse(env["PUBLIC_URL"])
	if err != nil || secretsDir == "" {
		t.Fatalf("service-paper.yaml: PUBLIC_URL %q, SECRETS_DIR %q", env["PUBLIC_URL"], secretsDir)
	}

	port := proctest.FreePort(t)
	env["PORT"] = fmt.Sprint(port)
	env["K_SERVICE"] = svc.Name
	env["K_CONFIGURATION"] = svc.Name
	env["K_REVISION"] = svc.Name + "-00001"
	delete(env, "OAUTH_ISSUER")
	delete(env, "REDIS_URL")
	env["ALLOW_UNAUTHENTICATED"] = "true"
	for k, v := range s.fakes.hostEnv(t) {
		env[k] = v
	}

	logs := &logLines{}
	req := testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image: s.serverImage,
			Env:   env,
			ConfigModifier: func(cfg *container.Config) {
				cfg.User = fmt.Sprintf("%d:%d", *sc.RunAsUser, *sc.RunAsGroup)
			},
			HostConfigModifier: func(hc *container.HostConfig) {
				hc.NetworkMode = "host"
				hc.ReadonlyRootfs = true
				hc.CapDrop = []string{"ALL"}
				hc.SecurityOpt = []string{"no-new-privileges"}
				hc.Binds = []string{mountSecrets(t, mode) + ":" + secretsDir + ":ro"}
			},
			WaitingFor:     wait.ForLog(`"msg":"serving"`).WithStartupTimeout(60 * time.Second),
			LogConsumerCfg: &testcontainers.LogConsumerConfig{Consumers: []testcontainers.LogConsumer{logs}},
		},
		Started: true,
	}
	gc, err := testcontainers.GenericContainer(t.Context(), req)
	ctr, _ := gc.(*testcontainers.DockerContainer)
	if ctr != nil {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("server container log:\n%s", logs)
			}
			testcontainers.TerminateContainer(ctr)
		})
	}
	if err != nil {
		t.Fatalf("starting the server container as Knative would: %v\n%s", err, logs)
	}

	// Readiness as queue-proxy probes it (loopback, until the first 200),
	// liveness as the kubelet does.
	direct := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitReady(t, direct)
	for _, path := range []string{c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path} {
		resp, err := http.Get(direct + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("probe %s = %d", path, resp.StatusCode)
		}
	}

	// An agent's calls, with the route's Host.
	hc := &http.Client{Transport: routeHost{host: route.Host, next: &http.Transport{DisableKeepAlives: true}}}
	cs := connectWith(t, hc, direct+route.Path)
	if res := callTool(t, cs, "list_accounts", nil); res.IsError {
		t.Fatalf("list_accounts with the route's Host: %s", resultText(res))
	}
	if res := callTool(t, cs, "get_portfolio", map[string]any{"account_id": "ACC-1001"}); res.IsError {
		t.Fatalf("get_portfolio with the route's Host: %s", resultText(res))
	}

	// A page that rebinds its own name to this loopback address is still
	// refused.
	rebind, _ := http.NewRequest(http.MethodPost, direct+route.Path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	rebind.Host = "attacker.example"
	rebind.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(rebind)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST %s with Host attacker.example = %d, want 403", route.Path, resp.StatusCode)
	}

	// Knative's revision labels on the metrics Prometheus scrapes.
	resp, err = http.Get(direct + svc.Spec.Template.Annotations["prometheus.io/path"])
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var labelled bool
	for _, line := range strings.Split(string(metrics), "\n") {
		if strings.HasPrefix(line, "mcp_tool_calls_total{") && strings.Contains(line, `k_service="`+svc.Name+`"`) &&
			strings.Contains(line, `k_revision="`+env["K_REVISION"]+`"`) && strings.Contains(line, `tool="list_accounts"`) {
			labelled = true
		}
	}
	if !labelled {
		t.Errorf("no mcp_tool_calls_total for list_accounts labelled with k_service and k_revision in:\n%s", metrics)
	}

	info, err := ctr.Inspect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !info.HostConfig.ReadonlyRootfs || info.Config.User != fmt.Sprintf("%d:%d", *sc.RunAsUser, *sc.RunAsGroup) {
		t.Errorf("container ran with read-only root %v as %q", info.HostConfig.ReadonlyRootfs, info.Config.User)
	}
	// SIGTERM, as the kubelet sends it once queue-proxy has drained: the
	// server must exit cleanly before the rest of the grace period is up,
	// or Docker kills it (exit 137).
	budget := time.Duration(*svc.Spec.Template.Spec.TimeoutSeconds)*time.Second - knativetest.QueueProxyQuietPeriod
	if err := ctr.Stop(t.Context(), &budget); err != nil {
		t.Fatal(err)
	}
	state, err := ctr.State(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := ctr.Logs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(rc)
	rc.Close()
	log := string(out)
	drained := strings.Contains(log, `"msg":"drained"`)
	if state.ExitCode != 0 || !drained {
		t.Errorf("after SIGTERM the server exited %d (drained logged: %v); want a clean drain within %v", state.ExitCode, drained, budget)
	}
	// Knative's revision labels on every line, for logs and metrics.
	for _, field := range []string{`"k_service":"` + svc.Name + `"`, `"k_revision":"` + env["K_REVISION"] + `"`} {
		if !strings.Contains(log, field) {
			t.Errorf("server log lines do not carry %s", field)
		}
	}
}
