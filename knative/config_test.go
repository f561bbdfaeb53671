package knative

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"
	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/portfolio-mcp/portfolio-mcp/config"
	"github.com/portfolio-mcp/portfolio-mcp/internal/app"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/audittest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/secrets"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// platformEnv are set in the pod by Knative or by the SinkBinding. The
// config reads some of them, but the manifests must leave them alone.
var platformEnv = map[string]string{
	"PORT":            "Knative (from the container port)",
	"K_SERVICE":       "Knative",
	"K_CONFIGURATION": "Knative",
	"K_REVISION":      "Knative",
	"K_SINK":          "the SinkBinding",
	"K_CE_OVERRIDES":  "the SinkBinding",
}

// runtimeEnv are read by the Go runtime itself, not by the config.
var runtimeEnv = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GOGC": true, "GODEBUG": true}

// configEnv lists every environment variable config.Config reads, from
// the same env struct tags go-envconfig reads.
func configEnv() map[string]bool {
	names := map[string]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for f := range t.Fields() {
			tag := f.Tag.Get("env")
			if tag == "" && f.Type.Kind() == reflect.Struct {
				walk(f.Type)
				continue
			}
			if name, _, _ := strings.Cut(tag, ","); name != "" {
				names[name] = true
			}
		}
	}
	walk(reflect.TypeFor[config.Config]())
	return names
}

// envProblems lists what is wrong with the environment a container of the
// server is given: variables the config does not read (a typo the server
// would silently ignore), variables that belong to the platform, and
// values the test cannot see (envFrom, valueFrom).
func envProblems(c *corev1.Container, read map[string]bool) []error {
	var errs []error
	if len(c.EnvFrom) > 0 {
		errs = append(errs, errors.New("envFrom hides the environment from review and from these tests; list each variable"))
	}
	for _, e := range c.Env {
		switch {
		case platformEnv[e.Name] != "":
			errs = append(errs, fmt.Errorf("%s is set by %s, not by the manifest", e.Name, platformEnv[e.Name]))
		case !read[e.Name] && !runtimeEnv[e.Name]:
			errs = append(errs, fmt.Errorf("%s is not read by config.Config (nor by the Go runtime)", e.Name))
		case e.ValueFrom != nil:
			errs = append(errs, fmt.Errorf("%s comes from valueFrom; secrets are mounted files (SECRETS_DIR), settings are literal", e.Name))
		}
	}
	return errs
}

// serverServices returns each mode's Service as written (ko:// image),
// checking that it runs the server.
func serverServices(t *testing.T, docs []document) map[string]*servingv1.Service {
	t.Helper()
	svcs := objectsOf[servingv1.Service](t, docs, servingv1.SchemeGroupVersion.WithKind("Service"))
	out := map[string]*servingv1.Service{}
	for _, mode := range modes {
		svc := svcs[serviceName(mode)]
		if svc == nil {
			t.Fatalf("no Service %s", serviceName(mode))
		}
		if img := svc.Spec.Template.Spec.GetContainer().Image; img != "ko://"+serverImportPath {
			t.Fatalf("%s runs %q, want ko://%s", svc.Name, img, serverImportPath)
		}
		out[mode] = svc
	}
	return out
}

// TestEveryEnvVarIsReadByTheConfig checks every variable the Services set
// against config.Config's tags, and that the check catches a typo.
func TestEveryEnvVarIsReadByTheConfig(t *testing.T) {
	read := configEnv()
	if !read["PORT"] || !read["REDIS_URL"] || !read["K_SINK"] {
		t.Fatalf("config.Config tags read as %v; the reflection walk is broken", read)
	}
	for _, svc := range serverServices(t, loadManifests(t, manifestDir)) {
		for _, err := range envProblems(svc.Spec.Template.Spec.GetContainer(), read) {
			t.Errorf("%s: %v", svc.Name, err)
		}
	}
	typo := &corev1.Container{Env: []corev1.EnvVar{{Name: "DRAIN_TIMEOUTS", Value: "20s"}, {Name: "K_SINK", Value: "http://x"}}}
	if got := envProblems(typo, read); len(got) != 2 {
		t.Errorf("envProblems(typo, K_SINK by hand) = %v, want two problems", got)
	}
}

// podEnv is the environment the server process sees in a pod of svc: the
// manifest's variables plus what Knative and the SinkBinding add.
func podEnv(t *testing.T, docs []document, svc *servingv1.Service) map[string]string {
	t.Helper()
	c := svc.Spec.Template.Spec.GetContainer()
	env := map[string]string{
		"PORT":            fmt.Sprint(c.Ports[0].ContainerPort),
		"K_SERVICE":       svc.Name,
		"K_CONFIGURATION": svc.Name,
		"K_REVISION":      svc.Name + "-00001",
	}
	for k, v := range sinkBindingEnv(t, docs, svc.Name) {
		env[k] = v
	}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	return env
}

// loadPodConfig runs config.LoadFrom, the server's own start-up parsing and
// validation, on the environment of a pod of svc.
func loadPodConfig(t *testing.T, docs []document, svc *servingv1.Service) *config.Config {
	t.Helper()
	cfg, err := config.LoadFrom(context.Background(), envconfig.MapLookuper(podEnv(t, docs, svc)))
	if err != nil {
		t.Fatalf("%s: the server would exit at start: %v", svc.Name, err)
	}
	return cfg
}

// TestServerConfigLoadsInThePod loads each Service's configuration exactly
// as the server does at start, and checks the decisions that make it a
// cluster deployment: reachable by the kubelet, authenticated, state in
// Redis (several replicas), secrets from the mounted files, its own mode.
func TestServerConfigLoadsInThePod(t *testing.T) {
	docs := loadManifests(t, manifestDir)
	for mode, svc := range serverServices(t, docs) {
		cfg := loadPodConfig(t, docs, svc)
		c := svc.Spec.Template.Spec.GetContainer()
		if cfg.Trading.Mode != mode {
			t.Errorf("%s: TRADING_MODE %q", svc.Name, cfg.Trading.Mode)
		}
		if cfg.ListenHost != "0.0.0.0" || cfg.Port != int(c.Ports[0].ContainerPort) {
			t.Errorf("%s: listens on %s; the kubelet's liveness probe needs the pod IP on port %d", svc.Name, cfg.Addr(), c.Ports[0].ContainerPort)
		}
		if cfg.Auth.Issuer == "" || cfg.AllowUnauthenticated {
			t.Errorf("%s: serves without OAuth", svc.Name)
		}
		if cfg.RedisURL == "" {
			t.Errorf("%s: no REDIS_URL; approvals and rate limits would differ between replicas", svc.Name)
		}
		if u, err := url.Parse(cfg.PublicURL); err != nil || u.Scheme != "https" || u.Path != "/mcp" {
			t.Errorf("%s: PUBLIC_URL %q, want https://<route host>/mcp", svc.Name, cfg.PublicURL)
		}
		var mounted bool
		for _, m := range c.VolumeMounts {
			mounted = mounted || m.MountPath == cfg.SecretsDir
		}
		if cfg.SecretsDir == "" || !mounted {
			t.Errorf("%s: SECRETS_DIR %q is not a mounted volume", svc.Name, cfg.SecretsDir)
		}
		if cfg.Audit.Sink == "" || cfg.Audit.CEOverrides == "" {
			t.Errorf("%s: audit sink %q overrides %q", svc.Name, cfg.Audit.Sink, cfg.Audit.CEOverrides)
		}
	}
}

// TestServerAnswersOnTheManifestPaths builds the server the way main does
// (app.New) from each Service's configuration and calls it the way the
// platform does: the kubelet and queue-proxy on the probe paths,
// Prometheus on the scrape path, the Trigger on the approval path, and
// queue-proxy on /mcp over loopback with every Host an agent or the
// Trigger can use (route, tagged route, cluster-local names), while a
// foreign Host is still refused.
//
// The configuration is sealed for this machine: loopback, the demo
// backends, in-memory state, no OAuth issuer and no audit sink (none of
// them is reachable here), and the secret files in a temporary directory.
func TestServerAnswersOnTheManifestPaths(t *testing.T) {
	docs := loadManifests(t, manifestDir)
	_, triggers, _ := eventingObjects(t, docs)
	for _, svc := range serverServices(t, docs) {
		cfg := loadPodConfig(t, docs, svc)
		route, _ := url.Parse(cfg.PublicURL)
		sealForTest(t, cfg)
		base := startServer(t, cfg, svc)
		c := svc.Spec.Template.Spec.GetContainer()

		do := func(method, path, host, body string) (int, string) {
			req, err := http.NewRequest(method, base+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if host != "" {
				req.Host = host
			}
			if body != "" {
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if code, body := do(http.MethodGet, c.LivenessProbe.HTTPGet.Path, "", ""); code != http.StatusOK {
			t.Errorf("%s: liveness %s = %d %s", svc.Name, c.LivenessProbe.HTTPGet.Path, code, body)
		}
		// Readiness may still say "starting" in the instant after Serve
		// begins; what matters here is that the path is the server's probe.
		code, body := do(http.MethodGet, c.ReadinessProbe.HTTPGet.Path, "", "")
		var status struct{ Status string }
		if err := json.Unmarshal([]byte(body), &status); err != nil || (code != http.StatusOK && status.Status != "starting") {
			t.Errorf("%s: readiness %s = %d %s", svc.Name, c.ReadinessProbe.HTTPGet.Path, code, body)
		}
		ann := svc.Spec.Template.Annotations
		if ann["prometheus.io/port"] != fmt.Sprint(c.Ports[0].ContainerPort) {
			t.Errorf("%s: Prometheus scrapes port %q, the server listens on %d", svc.Name, ann["prometheus.io/port"], c.Ports[0].ContainerPort)
		}
		if code, body := do(http.MethodGet, ann["prometheus.io/path"], "", ""); code != http.StatusOK || !strings.Contains(body, "# TYPE") {
			t.Errorf("%s: metrics %s = %d", svc.Name, ann["prometheus.io/path"], code)
		}
		// The Trigger's delivery path exists and judges the event itself
		// (a malformed one is refused as such, not as an unknown path).
		for _, tr := range triggers {
			if tr.Spec.Subscriber.Ref.Name != svc.Name {
				continue
			}
			if code, body := do(http.MethodPost, tr.Spec.Subscriber.URI.Path, local(svc)+".svc.cluster.local", `{}`); code == http.StatusNotFound || code == http.StatusMethodNotAllowed || code < 400 {
				t.Errorf("%s: Trigger delivery to %s = %d %s; want the approval receiver to refuse a malformed event", svc.Name, tr.Spec.Subscriber.URI.Path, code, body)
			}
		}

		ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
		hosts := map[string]int{
			route.Host:                             http.StatusOK,
			"candidate-" + route.Host:              http.StatusOK, // a tagged revision (docs/deploy.md)
			local(svc):                             http.StatusOK,
			local(svc) + ".svc":                    http.StatusOK,
			local(svc) + ".svc.cluster.local":      http.StatusOK,
			local(svc) + ".svc.cluster.local:80":   http.StatusOK,
			"attacker.example":                     http.StatusForbidden,
			"portfolio-mcp-paper.evil.example.com": http.StatusForbidden,
		}
		for host, want := range hosts {
			if code, body := do(http.MethodPost, route.Path, host, ping); code != want {
				t.Errorf("%s: POST %s with Host %s over loopback = %d %s, want %d", svc.Name, route.Path, host, code, body, want)
			}
		}
	}
}

// local is the Service's short cluster-local name, service.namespace.
func local(svc *servingv1.Service) string { return svc.Name + "." + svc.Namespace }

// sealForTest keeps cfg's HTTP settings (hosts, origins, limits, drain)
// and trading mode but points everything that would leave this machine at
// local stand-ins: loopback on a free port, the demo backends, in-memory
// state, no issuer, audit to the log, and secret files in a temporary
// directory laid out like the mounted Secret.
func sealForTest(t *testing.T, cfg *config.Config) {
	t.Helper()
	cfg.ListenHost, cfg.Port = "127.0.0.1", 0
	cfg.Backends.PortfolioURL, cfg.Backends.TradeURL, cfg.Backends.RiskURL = "", "", ""
	cfg.RedisURL = ""
	cfg.Auth.Issuer = ""
	cfg.Audit.Sink = ""
	dir := t.TempDir()
	for _, name := range []string{secrets.RequestStateKey, secrets.ApprovalEventKey, secrets.BackendAPIKey, secrets.ConsoleCookieKey} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("test-"+name+"-0123456789abcdef0123456789abcdef"), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	signing, _ := audittest.Key(t, "test")
	if err := os.WriteFile(filepath.Join(dir, secrets.AuditSigningKey), []byte(signing+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	cfg.SecretsDir = dir
}

// startServer builds the server with app.New (as main does) and serves it
// on cfg's loopback address. The server is drained when the test ends.
func startServer(t *testing.T, cfg *config.Config, svc *servingv1.Service) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rev := telemetry.Revision{Service: svc.Name, Configuration: svc.Name, Revision: svc.Name + "-00001"}
	srv, err := app.New(ctx, cfg, rev, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatalf("%s: app.New: %v", svc.Name, err)
	}
	ln, err := srv.Listen()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("drain: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}
