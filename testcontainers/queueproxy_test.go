package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/sethvargo/go-envconfig"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	netheader "knative.dev/networking/pkg/http/header"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	asmetrics "knative.dev/serving/pkg/autoscaler/metrics"
	"knative.dev/serving/pkg/queue"

	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/backends/fake"
	"github.com/portfolio-mcp/portfolio-mcp/config"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/ratelimit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/knativetest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/kobuild"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/redistest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/dashboard/promnames"
)

// The pod's identity on this machine: any address works inside its own
// network namespace.
const (
	podIP   = "10.42.0.7"
	podHash = "6d4b8f9c7d-x2kqp"
)

// kubeletUserAgent is what the kubelet sends with its HTTP probes
// (kube-probe/<major>.<minor>); Knative recognises the prefix.
const kubeletUserAgent = "kube-probe/1.36"

// lateDrainCall is how far into queue-proxy's drain the drain test sends
// its last call.
const lateDrainCall = 2 * time.Second

// mcpPing is a whole MCP request that needs no session and no rate budget.
const mcpPing = `{"jsonrpc":"2.0","id":1,"method":"ping"}`

// livePod is knative/service-live.yaml running as Knative runs it: the
// Deployment knative.dev/serving's revision reconciler makes for it, the
// server binary and the real queue-proxy in one private network namespace,
// each with the environment that Deployment gives its container.
//
// Sealed for this machine: what the pod reaches in the cluster is local
// and reached from the pod as cluster egress would be (the issuer,
// oauthtest; the firm's services, their fakes over HTTP; Redis; the
// Broker, a sink that takes every event), and the Secret is files in a
// temporary directory laid out as the kubelet mounts it. Everything else
// (port 8080, hosts, limits, drain, containerConcurrency, timeouts) is the
// manifest's.
type livePod struct {
	svc    *servingv1.Service
	rev    *servingv1.Revision
	dep    *appsv1.Deployment
	user   *corev1.Container // the server's container in the pod
	pod    *knativetest.Pod
	cfg    *config.Config // the server's configuration, as it loads it
	iss    *oauthtest.Issuer
	server *knativetest.Process
	queue  *knativetest.Process
	route  *url.URL
}

// newLivePod computes the live Service's pod under the cluster's
// config-observability data (nil: a default install) and makes its
// network namespace; nothing runs in it yet.
func newLivePod(t *testing.T, observability map[string]string) *livePod {
	t.Helper()
	kcfg := knativetest.Config(t, observability)
	p := &livePod{svc: knativetest.Service(t, kcfg, filepath.Join("..", "knative", "service-live.yaml"))}
	p.rev = knativetest.Revision(t, kcfg, p.svc)
	p.dep = knativetest.Deployment(t, kcfg, p.rev)
	p.user = knativetest.Container(t, &p.dep.Spec.Template.Spec, p.rev.Spec.GetContainer().Name)
	p.pod = knativetest.NewPod(t, p.dep.Name+"-"+podHash, podIP)
	p.iss = oauthtest.New(t)
	p.pod.Egress(t, hostPort(p.iss.URL))
	return p
}

// serverEnv is the server container's environment in the pod, sealed.
func (p *livePod) serverEnv(t *testing.T) map[string]string {
	t.Helper()
	env := p.pod.Env(t, p.user)
	var mode os.FileMode = 0o644
	for _, v := range p.dep.Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.DefaultMode != nil {
			mode = os.FileMode(*v.Secret.DefaultMode)
		}
	}
	env["OAUTH_ISSUER"] = p.iss.URL
	env["SECRETS_DIR"] = mountSecrets(t, mode)
	// Live trading needs the firm's services, Redis and the audit sink.
	services, err := fake.New(demo.New(nil).Set(), fake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	backend := httptest.NewServer(services)
	t.Cleanup(backend.Close)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(sink.Close)
	rds := redistest.Start(t)
	for _, addr := range []string{hostPort(backend.URL), hostPort(sink.URL), rds.Addr} {
		p.pod.Egress(t, addr)
	}
	env["PORTFOLIO_URL"], env["TRADE_URL"], env["RISK_URL"] = backend.URL, backend.URL, backend.URL
	env["REDIS_URL"], env["K_SINK"] = "redis://"+rds.Addr, sink.URL
	cfg, err := config.LoadFrom(t.Context(), envconfig.MapLookuper(env))
	if err != nil {
		t.Fatalf("the server would refuse the pod's environment: %v", err)
	}
	p.cfg = cfg
	if p.route, err = url.Parse(cfg.PublicURL); err != nil {
		t.Fatal(err)
	}
	return env
}

// startServer runs the server binary in the pod.
func (p *livePod) startServer(t *testing.T, bin string) {
	t.Helper()
	p.server = p.pod.Start(t, p.user.Name, bin, p.serverEnv(t))
}

// addr is the pod IP with port.
func (p *livePod) addr(port int32) string { return net.JoinHostPort(p.pod.IP, strconv.Itoa(int(port))) }

// queuePort is queue-proxy's serving port, where the activator and the
// ingress send requests (the Deployment's "queue-port").
func (p *livePod) queuePort(t *testing.T) int32 {
	t.Helper()
	return p.queueContainerPort(t, "queue-port")
}

func (p *livePod) queueContainerPort(t *testing.T, name string) int32 {
	t.Helper()
	qp := knativetest.Container(t, &p.dep.Spec.Template.Spec, "queue-proxy")
	for _, port := range qp.Ports {
		if port.Name == name {
			return port.ContainerPort
		}
	}
	t.Fatalf("queue-proxy has no port %q (%v)", name, qp.Ports)
	return 0
}

// kubeletProbe is the request the kubelet makes for an HTTP probe of
// the pod.
func (p *livePod) kubeletProbe(t *testing.T, probe *corev1.HTTPGetAction) *http.Request {
	t.Helper()
	req := mustRequest(t, "http://"+p.addr(probe.Port.IntVal)+probe.Path)
	req.Header.Set("User-Agent", kubeletUserAgent)
	for _, h := range probe.HTTPHeaders {
		req.Header.Set(h.Name, h.Value)
	}
	return req
}

// token is an access token for sub with read scope on every account.
func (p *livePod) token(t *testing.T, sub string) string {
	return p.iss.Token(t, p.iss.Claims(sub, p.cfg.TokenAudience(), "portfolio:read", "*"))
}

// mcpRequest is a POST of body to /mcp through queue-proxy with host as
// the Host header, as an agent's call arrives from the ingress.
func (p *livePod) mcpRequest(ctx context.Context, t *testing.T, host, token string, body io.Reader, size int64) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+host+p.route.Path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}

// do sends req with c and returns the status and body.
func do(c *http.Client, req *http.Request) (int, string, error) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// bearer adds an access token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// connectWith opens a go-sdk MCP session to endpoint over hc.
func connectWith(t *testing.T, hc *http.Client, endpoint string) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "integration-test", Version: "1"}, nil)
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("MCP connect to %s: %v", endpoint, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// withToken is hc sending token as the bearer of every request.
func withToken(hc *http.Client, token string) *http.Client {
	return &http.Client{Transport: bearer{token: token, next: hc.Transport}}
}

// scrapeAutoscalerStat reads what Knative's autoscaler scrapes from
// queue-proxy: a protobuf Stat on the "http-autometric" port, decoded by
// the autoscaler's own message type.
func (p *livePod) scrapeAutoscalerStat(t *testing.T, accept string) (asmetrics.Stat, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+p.addr(p.queueContainerPort(t, servingv1.AutoscalingQueueMetricsPortName))+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	resp, err := p.pod.HTTPClient(req.URL.Host).Do(req)
	if err != nil {
		t.Fatalf("scraping queue-proxy's autoscaler metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var st asmetrics.Stat
	if err := st.Unmarshal(b); err != nil {
		t.Fatalf("queue-proxy's autoscaler metrics (%s) are not a protobuf Stat: %v\n%q", resp.Header.Get("Content-Type"), err, b)
	}
	return st, resp.Header.Get("Content-Type")
}

// logged reports whether a JSON log line of lines has msg as its message
// (the server's "msg", zap's "message" for queue-proxy).
func logged(lines []string, msg string) bool {
	for _, l := range lines {
		var rec struct{ Msg, Message string }
		if json.Unmarshal([]byte(l), &rec) == nil && (rec.Msg == msg || rec.Message == msg) {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds or timeout passes; it is how these
// tests synchronise with the processes, never a fixed sleep.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v (last: %s)", what, timeout, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// buildServerBinary builds the server as ko does (the flags ko.yaml gives)
// into dir; Go's build cache makes a rebuild a link.
func buildServerBinary(t *testing.T, dir string) string {
	t.Helper()
	if env != nil && env.serverBin != "" {
		return env.serverBin // TestMain built it already
	}
	bin := filepath.Join(dir, "portfolio-mcp")
	ko, err := kobuild.Load("portfolio-mcp")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := ko.Command(t.Context(), "./cmd/portfolio-mcp", bin).CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/portfolio-mcp: %v\n%s", err, out)
	}
	return bin
}

// TestRealQueueProxy runs knative/service-live.yaml's pod with Knative's
// real queue-proxy (knative.dev/serving/cmd/queue at go.mod's version)
// configured by the environment knative.dev/serving's MakeDeployment
// writes, beside the server binary, both in one private network namespace
// with the pod's address, and talks to it as the kubelet, the activator,
// the ingress, the autoscaler and agents do. The shutdown is the
// kubelet's: preStop and SIGTERM to queue-proxy, the quiet period, then
// SIGTERM to the server. It needs no Docker, but root: where no network
// namespace can be made it skips (under CI it fails). The server runs as
// root here; TestKnativePodContract runs the image as the manifest's user.
func TestRealQueueProxy(t *testing.T) {
	p := newLivePod(t, nil) // a default install: request-metrics-protocol unset
	bin := buildServerBinary(t, t.TempDir())
	knativetest.QueueProxyBinary(t) // built before the clock of the cold start starts
	front := p.pod.HTTPClient(p.addr(p.queuePort(t)))

	// Cold start, as the kubelet runs it: queue-proxy starts, the kubelet
	// probes it, and queue-proxy holds that probe while it probes the
	// server itself (SERVING_READINESS_PROBE, aggressive: periodSeconds 0)
	// until the server answers /readyz. The processes belong to the whole
	// test, not to a subtest.
	probe := knativetest.Container(t, &p.dep.Spec.Template.Spec, "queue-proxy").ReadinessProbe
	if probe == nil || probe.HTTPGet == nil {
		t.Fatalf("queue-proxy has no HTTP readiness probe: %+v", probe)
	}
	probeAddr := p.addr(probe.HTTPGet.Port.IntVal)
	p.queue = knativetest.StartQueueProxy(t, p.pod, p.dep)
	waitFor(t, 30*time.Second, "queue-proxy listening", func() (bool, string) {
		c, err := p.pod.DialContext(t.Context(), "tcp", probeAddr)
		if err == nil {
			c.Close()
		}
		return err == nil, fmt.Sprint(err)
	})
	probed := make(chan error, 1)
	kubeletProbe := p.kubeletProbe(t, probe.HTTPGet)
	go func() {
		code, body, err := do(p.pod.HTTPClient(probeAddr), kubeletProbe)
		if err == nil && (code != http.StatusOK || body != queue.Name) {
			err = fmt.Errorf("%d %q, want 200 %q", code, body, queue.Name)
		}
		probed <- err
	}()
	started := time.Now()
	p.startServer(t, bin)
	if err := <-probed; err != nil {
		t.Fatalf("kubelet readiness probe of queue-proxy during the cold start: %v", err)
	}
	t.Logf("queue-proxy ready %v after the server's exec", time.Since(started).Round(time.Millisecond))

	// Probes are told apart by their headers. queue-proxy answers the
	// kubelet's, the activator's and the autoscaler's readiness probes
	// (K-Network-Probe: queue) and the ingress's (K-Network-Probe: probe)
	// itself. K-Kubelet-Probe alone (a probe rewritten by a mesh) is not
	// answered there: it skips the concurrency cap and reaches the server
	// on its path. The kubelet's liveness probe goes to the server's port.
	t.Run("probe headers", func(t *testing.T) {
		queueAddr := p.addr(p.queuePort(t))
		liveness := p.user.LivenessProbe.HTTPGet
		readiness := p.rev.Spec.GetContainer().ReadinessProbe.HTTPGet
		for _, c := range []struct {
			name, addr, path string
			headers          map[string]string
			want             int
			wantBody         string // a part of the body
			wantHash         bool
		}{
			{"kubelet readiness", queueAddr, "/", map[string]string{"User-Agent": kubeletUserAgent, netheader.ProbeKey: queue.Name}, 200, queue.Name, false},
			{"activator", queueAddr, "/", map[string]string{"User-Agent": netheader.ActivatorUserAgent, netheader.ProbeKey: queue.Name}, 200, queue.Name, false},
			{"autoscaler", queueAddr, "/", map[string]string{"User-Agent": netheader.AutoscalingUserAgent, netheader.ProbeKey: queue.Name}, 200, queue.Name, false},
			{"kubelet without K-Network-Probe", queueAddr, "/", map[string]string{"User-Agent": kubeletUserAgent}, 400, "unexpected probe header value", false},
			{"ingress", queueAddr, "/healthz", map[string]string{"User-Agent": netheader.IngressReadinessUserAgent, netheader.ProbeKey: netheader.ProbeValue, netheader.HashKey: "abc123"}, 200, "", true},
			{"ingress without hash", queueAddr, "/healthz", map[string]string{netheader.ProbeKey: netheader.ProbeValue}, 400, netheader.HashKey, false},
			{"K-Kubelet-Probe (to the server)", queueAddr, readiness.Path, map[string]string{netheader.KubeletProbeKey: "1"}, 200, `"status"`, false},
			{"kubelet liveness (server port)", p.addr(liveness.Port.IntVal), liveness.Path, map[string]string{"User-Agent": kubeletUserAgent}, 200, "", false},
		} {
			req := mustRequest(t, "http://"+c.addr+c.path)
			for k, v := range c.headers {
				req.Header.Set(k, v)
			}
			resp, err := p.pod.HTTPClient(c.addr).Do(req)
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want || !strings.Contains(string(b), c.wantBody) {
				t.Errorf("%s probe = %d %q, want %d with %q", c.name, resp.StatusCode, b, c.want, c.wantBody)
			}
			if c.wantHash && resp.Header.Get(netheader.HashKey) != c.headers[netheader.HashKey] {
				t.Errorf("%s probe: %s %q not echoed", c.name, netheader.HashKey, resp.Header.Get(netheader.HashKey))
			}
		}
	})

	// Agents' calls through queue-proxy, which keeps the Host the ingress
	// or an in-cluster client used: the route and the cluster-local names
	// are served, a foreign Host is refused by the server.
	t.Run("MCP calls", func(t *testing.T) {
		token := p.token(t, "agent-hosts")
		local := p.svc.Name + "." + p.svc.Namespace
		for _, host := range []string{p.route.Host, local + ".svc.cluster.local", local + ".svc", local} {
			cs := connectWith(t, withToken(front, token), "http://"+host+p.route.Path)
			for _, call := range []struct {
				tool string
				args map[string]any
			}{{"list_accounts", nil}, {"get_portfolio", map[string]any{"account_id": "ACC-1001"}}} {
				if res := callTool(t, cs, call.tool, call.args); res.IsError {
					t.Errorf("%s with Host %s through queue-proxy: %s", call.tool, host, resultText(res))
				}
			}
		}
		code, body, err := do(front, p.mcpRequest(t.Context(), t, "attacker.example", token, strings.NewReader(mcpPing), int64(len(mcpPing))))
		if err != nil || code != http.StatusForbidden {
			t.Errorf("Host attacker.example through queue-proxy = %d %q %v, want 403 from the server", code, body, err)
		}
	})

	// containerConcurrency is a hard cap in queue-proxy: that many calls
	// reach the server, ten times as many wait in its queue, and the rest
	// are refused at once. Every call here holds its body back, so all
	// are in flight together; the autoscaler's own scrape says when
	// queue-proxy has counted them all.
	t.Run("concurrency cap", func(t *testing.T) {
		cc := int(p.rev.Spec.GetContainerConcurrency())
		if cc <= 0 {
			t.Fatalf("containerConcurrency %d: no cap to test", cc)
		}
		const extra = 10
		n := cc + 10*cc + extra
		token := p.token(t, "agent-burst")
		release := make(chan struct{})
		var served, refused atomic.Int64
		var mu sync.Mutex
		other := map[string]int{}
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := &heldBody{release: release, r: strings.NewReader(mcpPing)}
				code, text, err := do(front, p.mcpRequest(t.Context(), t, p.route.Host, token, body, int64(len(mcpPing))))
				switch {
				case err == nil && code == http.StatusOK:
					served.Add(1)
				case err == nil && code == http.StatusServiceUnavailable && strings.Contains(text, queue.ErrRequestQueueFull.Error()):
					refused.Add(1)
				default:
					mu.Lock()
					other[fmt.Sprintf("%d %q %v", code, text, err)]++
					mu.Unlock()
				}
			}()
		}
		waitFor(t, time.Minute, "all calls counted by queue-proxy", func() (bool, string) {
			st, _ := p.scrapeAutoscalerStat(t, "application/protobuf")
			inFlight := int(math.Round(st.AverageConcurrentRequests))
			return int(refused.Load())+inFlight == n, fmt.Sprintf("%d refused, %.1f in flight of %d", refused.Load(), st.AverageConcurrentRequests, n)
		})
		close(release)
		wg.Wait()
		t.Logf("%d concurrent calls: %d served, %d refused (containerConcurrency %d, queue %d)", n, served.Load(), refused.Load(), cc, 10*cc)
		if served.Load() != int64(cc+10*cc) || refused.Load() != extra || len(other) > 0 {
			t.Errorf("%d concurrent calls: %d served, %d refused, others %v; want %d served (%d running + %d queued) and %d refused",
				n, served.Load(), refused.Load(), other, cc+10*cc, cc, 10*cc, extra)
		}
	})

	// One principal's burst of tool calls, as many as containerConcurrency:
	// queue-proxy admits every one, the server's per-principal read limit
	// refuses what its bucket does not hold. The limiter can never have
	// allowed more than its burst plus its rate over the burst's duration.
	t.Run("rate limit before the cap", func(t *testing.T) {
		cc := int(p.rev.Spec.GetContainerConcurrency())
		limit := p.cfg.Limits
		cs := connectWith(t, withToken(front, p.token(t, "agent-rate")), "http://"+p.route.Host+p.route.Path)
		var ok, limited atomic.Int64
		var failures sync.Map
		var wg sync.WaitGroup
		start := time.Now()
		for i := range cc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "list_accounts"})
				switch _, refused := ratelimit.Refused(res); {
				case err != nil:
					failures.Store(i, err.Error())
				case refused:
					limited.Add(1)
				case !res.IsError:
					ok.Add(1)
				default:
					failures.Store(i, resultText(res))
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		allowed := limit.ReadBurst + int(math.Ceil(limit.ReadPerSecond*elapsed.Seconds()))
		t.Logf("%d concurrent reads by one principal: %d served, %d refused by the rate limit (burst %d, %.0f/s) in %v",
			cc, ok.Load(), limited.Load(), limit.ReadBurst, limit.ReadPerSecond, elapsed.Round(time.Millisecond))
		failures.Range(func(k, v any) bool {
			t.Errorf("call %v failed (queue-proxy admits %d): %v", k, cc, v)
			return false
		})
		if int(ok.Load()) > allowed || ok.Load()+limited.Load() != int64(cc) {
			t.Errorf("%d served and %d refused of %d; the limiter allows at most %d in %v", ok.Load(), limited.Load(), cc, allowed, elapsed)
		}
	})

	// What the autoscaler scrapes: port 9090 ("http-autometric") serves a
	// protobuf Stat whatever the Accept header, with this pod's name and
	// request counts and concurrency, no Prometheus text. A default
	// install exports no request metrics, so nothing listens on 9091
	// ("http-usermetric").
	t.Run("metrics", func(t *testing.T) {
		st, ct := p.scrapeAutoscalerStat(t, "text/plain")
		if ct != netheader.ProtobufMIMEType || st.PodName != p.pod.Name || st.ProcessUptime <= 0 {
			t.Errorf("queue-proxy's autoscaler metrics: %s, %+v; want %s for pod %s", ct, st, netheader.ProtobufMIMEType, p.pod.Name)
		}
		userMetrics := p.addr(p.queueContainerPort(t, servingv1.UserQueueMetricsPortName))
		if c, err := p.pod.DialContext(t.Context(), "tcp", userMetrics); !errors.Is(err, syscall.ECONNREFUSED) {
			if c != nil {
				c.Close()
			}
			t.Errorf("dialling %s (request metrics) on a default install: %v, want connection refused", userMetrics, err)
		}
	})

	t.Run("shutdown", func(t *testing.T) {
		t.Run("drain", func(t *testing.T) {
			t.Parallel()
			p.drain(t)
		})
		t.Run("request metrics", func(t *testing.T) {
			t.Parallel()
			requestMetrics(t, bin)
		})
	})
}

// heldBody is a request body that yields nothing until release is closed:
// the request is in flight (headers sent, handler running) but cannot
// finish, so concurrency is exact rather than a matter of timing.
type heldBody struct {
	release <-chan struct{}
	r       io.Reader
}

func (b *heldBody) Read(p []byte) (int, error) {
	<-b.release
	return b.r.Read(p)
}

// drain deletes the pod as the kubelet does. The server's preStop hook
// (GET /wait-for-drain on queue-proxy's admin port) and SIGTERM to
// queue-proxy, which has no hook, go at once; queue-proxy then fails its
// readiness probe but keeps serving until it has seen no request for its
// quiet period, and only then does the hook return and the server get
// SIGTERM, with what is left of the grace period to drain.
func (p *livePod) drain(t *testing.T) {
	hook := p.user.Lifecycle.PreStop.HTTPGet
	if hook == nil || hook.Path != queue.RequestQueueDrainPath {
		t.Fatalf("server has no preStop GET %s: %+v", queue.RequestQueueDrainPath, p.user.Lifecycle)
	}
	grace := time.Duration(*p.dep.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	deleted := time.Now()
	type answer struct {
		code int
		err  error
		at   time.Time
	}
	preStop := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.addr(hook.Port.IntVal)+hook.Path, nil)
		code, _, err := do(p.pod.HTTPClient(req.URL.Host), req)
		preStop <- answer{code, err, time.Now()}
	}()
	if err := p.queue.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// The kubelet's readiness probe fails: the pod leaves the endpoints.
	probe := knativetest.Container(t, &p.dep.Spec.Template.Spec, "queue-proxy").ReadinessProbe.HTTPGet
	waitFor(t, 10*time.Second, "failing readiness probe from the draining queue-proxy", func() (bool, string) {
		code, body, err := do(p.pod.HTTPClient(p.addr(probe.Port.IntVal)), p.kubeletProbe(t, probe))
		return err == nil && code == http.StatusServiceUnavailable, fmt.Sprintf("%d %q %v", code, body, err)
	})

	// It stays unready: the kubelet's probes are not traffic and do not
	// restart the quiet period. A straggler (an ingress that has not heard
	// yet) arrives lateDrainCall into the drain; it is still served, and
	// starts the quiet period again, so without the restart the hook would
	// return that much before a quiet period after it.
	for time.Since(deleted) < lateDrainCall {
		code, body, err := do(p.pod.HTTPClient(p.addr(probe.Port.IntVal)), p.kubeletProbe(t, probe))
		if err != nil || code != http.StatusServiceUnavailable {
			t.Fatalf("readiness probe of the draining queue-proxy = %d %q %v, want 503", code, body, err)
		}
		time.Sleep(50 * time.Millisecond) // the probes' pace, not a synchronisation
	}
	straggler := time.Now()
	code, body, err := do(p.pod.HTTPClient(p.addr(p.queuePort(t))),
		p.mcpRequest(t.Context(), t, p.route.Host, p.token(t, "agent-late"), strings.NewReader(mcpPing), int64(len(mcpPing))))
	if err != nil || code != http.StatusOK {
		t.Errorf("a call while queue-proxy drains = %d %q %v, want 200", code, body, err)
	}

	var hookDone answer
	select {
	case hookDone = <-preStop:
	case <-time.After(grace):
		t.Fatalf("preStop /wait-for-drain still waiting after the %v grace period", grace)
	}
	if hookDone.err != nil || hookDone.code != http.StatusOK {
		t.Fatalf("preStop %s = %d %v", hook.Path, hookDone.code, hookDone.err)
	}
	// A lower bound, which a slow machine only makes longer: the hook
	// cannot return before a whole quiet period has passed since the
	// straggler arrived, if the straggler restarted it.
	if quiet := hookDone.at.Sub(straggler); quiet < knativetest.QueueProxyQuietPeriod {
		t.Errorf("preStop returned %v after the last call; the quiet period (%v) did not restart on it", quiet, knativetest.QueueProxyQuietPeriod)
	}
	t.Logf("preStop returned %v after deletion, %v after the last call", hookDone.at.Sub(deleted).Round(time.Millisecond), hookDone.at.Sub(straggler).Round(time.Millisecond))

	// Now the kubelet sends the server SIGTERM; both must exit cleanly
	// within the grace period, or the kubelet would kill them.
	if err := p.server.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	left := grace - time.Since(deleted)
	for _, pr := range []*knativetest.Process{p.server, p.queue} {
		if err := pr.Wait(left); err != nil {
			t.Errorf("%s after SIGTERM: %v; want exit 0 within the %v left of the grace period", pr.Name, err, left)
		}
	}
	if !logged(p.server.Lines(), "drained") {
		t.Errorf("the server did not log its drain")
	}
	if !logged(p.queue.Lines(), "Shutdown complete, exiting...") {
		t.Errorf("queue-proxy did not log a complete shutdown")
	}
}

// requestMetrics runs the pod again with request-metrics-protocol:
// prometheus in config-observability, the setting docs/deploy.md names,
// and reads what queue-proxy then serves on 9091 ("http-usermetric"):
// the kn_serving_* series the dashboard and alerts use, with the revision
// in target_info rather than on each series.
func requestMetrics(t *testing.T, bin string) {
	p := newLivePod(t, map[string]string{"metrics-protocol": "prometheus", "request-metrics-protocol": "prometheus"})
	p.startServer(t, bin)
	p.queue = knativetest.StartQueueProxy(t, p.pod, p.dep)
	probe := knativetest.Container(t, &p.dep.Spec.Template.Spec, "queue-proxy").ReadinessProbe.HTTPGet
	waitFor(t, 30*time.Second, "a ready pod", func() (bool, string) {
		code, body, err := do(p.pod.HTTPClient(p.addr(probe.Port.IntVal)), p.kubeletProbe(t, probe))
		return err == nil && code == http.StatusOK, fmt.Sprintf("%d %q %v", code, body, err)
	})
	code, body, err := do(p.pod.HTTPClient(p.addr(p.queuePort(t))),
		p.mcpRequest(t.Context(), t, p.route.Host, p.token(t, "agent-metrics"), strings.NewReader(mcpPing), int64(len(mcpPing))))
	if err != nil || code != http.StatusOK {
		t.Fatalf("a call through queue-proxy = %d %q %v", code, body, err)
	}

	userMetrics := p.addr(p.queueContainerPort(t, servingv1.UserQueueMetricsPortName))
	var text string
	waitFor(t, 30*time.Second, "request metrics on "+userMetrics, func() (bool, string) {
		code, body, err := do(p.pod.HTTPClient(userMetrics), mustRequest(t, "http://"+userMetrics+"/metrics"))
		text = body
		return err == nil && code == http.StatusOK && strings.Contains(body, "kn_serving_invocation_duration_seconds_count"), fmt.Sprintf("%d %v", code, err)
	})
	names := seriesNames(text)
	for prom := range promnames.KnativeSeries {
		if strings.HasPrefix(prom, "kn_serving_") && !names[prom] {
			t.Errorf("the pack uses %s; queue-proxy serves %v", prom, sortedKeys(names))
		}
	}
	revision := `"` + p.rev.Name + `"`
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, "kn_serving_") && strings.Contains(line, revision):
			t.Errorf("a kn_serving_* series carries the revision itself: %s", line)
		case strings.HasPrefix(line, "target_info{") && !strings.Contains(line, revision):
			t.Errorf("target_info does not name revision %s: %s", p.rev.Name, line)
		}
	}
	if !names["target_info"] {
		t.Errorf("no target_info in queue-proxy's request metrics")
	}
	var own []string // leaving out the Go runtime's and the process's
	for _, n := range sortedKeys(names) {
		if !strings.HasPrefix(n, "go_") && !strings.HasPrefix(n, "process_") {
			own = append(own, n)
		}
	}
	t.Logf("queue-proxy on %s serves %d families, among them %v", servingv1.UserQueueMetricsPortName, len(names), own)
}

func mustRequest(t *testing.T, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// seriesNames are the family names of a Prometheus text exposition, with
// histogram and summary suffixes folded into the family.
func seriesNames(text string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = true
		}
	}
	return out
}

func sortedKeys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }
