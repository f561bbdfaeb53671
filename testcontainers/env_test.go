package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/portfolio-mcp/portfolio-mcp/backends/faults"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/proctest"
)

const fakesPort = "8090/tcp"

// fakes is a running fake-backends container serving all three services.
// On its Docker network it answers to <prefix>portfolio, <prefix>risk and
// <prefix>trade, as the in-cluster Services would.
type fakes struct {
	c      *testcontainers.DockerContainer
	prefix string
}

func startFakes(ctx context.Context, s *suite, nw *testcontainers.DockerNetwork, prefix string) (*fakes, error) {
	c, err := testcontainers.Run(ctx, s.fakesImage,
		testcontainers.WithExposedPorts(fakesPort),
		testcontainers.WithCmd("-addr", ":8090"),
		network.WithNetwork([]string{prefix + "portfolio", prefix + "risk", prefix + "trade"}, nw),
		testcontainers.WithWaitStrategy(wait.ForHTTP("/healthz").WithPort(fakesPort).
			WithPollInterval(20*time.Millisecond).WithStartupTimeout(30*time.Second)),
	)
	if err != nil {
		if c != nil {
			testcontainers.TerminateContainer(c)
		}
		return nil, fmt.Errorf("fakes container: %w", err)
	}
	return &fakes{c: c, prefix: prefix}, nil
}

// hostURL is how a process on this host reaches the fakes (the mapped
// port; it changes when the container restarts).
func (f *fakes) hostURL(t *testing.T) string {
	t.Helper()
	u, err := f.c.PortEndpoint(t.Context(), fakesPort, "http")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// hostEnv points a server process on this host at the fakes.
func (f *fakes) hostEnv(t *testing.T) map[string]string {
	u := f.hostURL(t)
	return map[string]string{"PORTFOLIO_URL": u, "RISK_URL": u, "TRADE_URL": u}
}

// networkEnv points a container on the fakes' network at them by alias.
func (f *fakes) networkEnv() map[string]string {
	return map[string]string{
		"PORTFOLIO_URL": "http://" + f.prefix + "portfolio:8090",
		"RISK_URL":      "http://" + f.prefix + "risk:8090",
		"TRADE_URL":     "http://" + f.prefix + "trade:8090",
	}
}

func (f *fakes) admin(t *testing.T, method, path string, body any) faults.State {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, f.hostURL(t)+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("fakes admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("fakes admin %s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	var st faults.State
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// reset clears faults and counters now and when the test ends.
func (f *fakes) reset(t *testing.T) {
	t.Helper()
	f.admin(t, http.MethodPost, "/admin/reset", nil)
	resetURL := f.hostURL(t) + "/admin/reset"
	t.Cleanup(func() {
		req, _ := http.NewRequest(http.MethodPost, resetURL, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	})
}

func (f *fakes) inject(t *testing.T, fault faults.Fault) {
	t.Helper()
	f.admin(t, http.MethodPost, "/admin/faults", fault)
}

func (f *fakes) hits(t *testing.T, route string) int {
	t.Helper()
	return f.admin(t, http.MethodGet, "/admin/faults", nil).Hits[route]
}

// logLines collects a server's JSON log lines.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) add(line string) {
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// find returns the decoded log records whose msg is msg.
func (l *logLines) find(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range l.lines {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// breakerChanges lists the breaker transitions a server logged, as
// "service:from->to".
func (l *logLines) breakerChanges() []string {
	var out []string
	for _, rec := range l.find("backend circuit breaker changed state") {
		out = append(out, fmt.Sprintf("%v:%v->%v", rec["service"], rec["from"], rec["to"]))
	}
	return out
}

// server is a running MCP server, as a process or a container.
type server struct {
	base string // http://host:port
	logs *logLines
	// servingAfter is, for a process, from exec to its "serving" log line.
	servingAfter time.Duration
}

func (s *server) endpoint() string { return s.base + "/mcp" }

// startProcess runs the server binary on a free loopback port with only
// the given environment (plus PORT and LISTEN_HOST), and stops it with
// SIGTERM when the test ends.
func startProcess(t *testing.T, s *suite, envVars map[string]string) *server {
	t.Helper()
	cmd := exec.Command(s.serverBin)
	cmd.Env = []string{"PORT=0", "LISTEN_HOST=127.0.0.1", "LOG_LEVEL=info"}
	for k, v := range envVars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &logLines{}
	cmd.Stderr = writerFunc(func(p []byte) (int, error) { logs.add(strings.TrimSpace(string(p))); return len(p), nil })
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	servingAfter := make(chan time.Duration, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			logs.add(line)
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving" {
				addr <- rec.Addr
				servingAfter <- time.Since(started)
			}
		}
	}()
	exited := make(chan error, 1)
	go func() {
		<-scanned // Wait must follow the last read of the pipe
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("server process did not drain within 30s")
		}
		if t.Failed() {
			t.Logf("server process log:\n%s", logs)
		}
	})
	select {
	case a := <-addr:
		srv := &server{base: "http://" + a, logs: logs, servingAfter: <-servingAfter}
		waitReady(t, srv.base)
		return srv
	case err := <-exited:
		t.Fatalf("server process exited before serving: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("server process did not start serving within 30s\n%s", logs)
	}
	return nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// waitReady polls /readyz until it answers 200.
func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz not ready within 30s (last: %v)", base, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// containerServer is the server image running on the suite's network.
type containerServer struct {
	server
	c *testcontainers.DockerContainer
	// readyAfter is from the start request to the first 200 from /readyz
	// seen from this host.
	readyAfter time.Duration
}

func (l *logLines) Accept(entry testcontainers.Log) {
	for _, line := range strings.Split(strings.TrimSpace(string(entry.Content)), "\n") {
		l.add(line)
	}
}

// startContainer starts the server image on nw with envVars (plus a
// non-loopback listen address and no authentication: the test network is
// sealed), and waits for /readyz.
func startContainer(t *testing.T, s *suite, nw *testcontainers.DockerNetwork, envVars map[string]string) *containerServer {
	t.Helper()
	ctx := t.Context()
	logs := &logLines{}
	vars := map[string]string{"PORT": "8080", "LISTEN_HOST": "0.0.0.0", "ALLOW_UNAUTHENTICATED": "true", "LOG_LEVEL": "info"}
	for k, v := range envVars {
		vars[k] = v
	}
	req := testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:        s.serverImage,
			ExposedPorts: []string{"8080/tcp"},
			Env:          vars,
			Networks:     []string{nw.Name},
			WaitingFor: wait.ForHTTP("/readyz").WithPort("8080/tcp").
				WithPollInterval(10 * time.Millisecond).WithStartupTimeout(60 * time.Second),
			LogConsumerCfg: &testcontainers.LogConsumerConfig{Consumers: []testcontainers.LogConsumer{logs}},
		},
		Started: false,
	}
	gc, err := testcontainers.GenericContainer(ctx, req)
	c, _ := gc.(*testcontainers.DockerContainer)
	if c != nil {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("server container log:\n%s", logs)
			}
			testcontainers.TerminateContainer(c)
		})
	}
	if err != nil {
		t.Fatalf("creating the server container: %v", err)
	}
	start := time.Now()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("starting the server container: %v\n%s", err, logs)
	}
	readyAfter := time.Since(start)
	base, err := c.PortEndpoint(ctx, "8080/tcp", "http")
	if err != nil {
		t.Fatal(err)
	}
	return &containerServer{server: server{base: base, logs: logs}, c: c, readyAfter: readyAfter}
}

// connect opens a go-sdk MCP client session. Connections are not kept
// alive, so the server holds no client goroutines between calls.
func connect(t *testing.T, endpoint string) *mcp.ClientSession {
	t.Helper()
	return connectWith(t, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, endpoint)
}

// callTool calls a tool; a protocol error fails the test, a tool error is
// returned in the result.
func callTool(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

func resultText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// goroutines reads go_goroutines from the server's /metrics.
func goroutines(t *testing.T, base string) int {
	t.Helper()
	return int(proctest.Metric(t, base, "go_goroutines"))
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leaks reports which of the given internals an agent-facing text reveals.
func leaks(text string, internals ...string) []string {
	var out []string
	for _, s := range internals {
		if s != "" && strings.Contains(text, s) {
			out = append(out, s)
		}
	}
	return out
}

func hostPort(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	return u.Host
}
