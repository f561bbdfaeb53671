package app_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/internal/app"
)

// TestStatelessAcrossReplicas puts two servers behind one round-robin front,
// so consecutive calls of one client session land on different replicas, as
// they do behind Knative's activator and queue-proxies.
func TestStatelessAcrossReplicas(t *testing.T) {
	a, b := startServer(t, nil), startServer(t, nil)
	var hits [2]atomic.Int64
	var next atomic.Int64
	targets := []string{a.URL, b.URL}
	front := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		i := next.Add(1) % 2
		hits[i].Add(1)
		u, _ := url.Parse(targets[i])
		r.SetURL(u)
		bufferBody(t, r)
	}}
	fs := serveOnLoopback(t, front)

	for _, version := range protocols {
		cs := connect(t, fs+"/mcp", version, nil)
		for range 3 {
			var pv backends.PortfolioValuation
			callTool(t, cs, "get_portfolio", map[string]any{"account_id": "ACC-1002"}, &pv)
			var page backends.EquityPage
			callTool(t, cs, "search_equities", map[string]any{"limit": 10}, &page)
			var next backends.EquityPage
			callTool(t, cs, "search_equities", map[string]any{"limit": 10, "cursor": page.NextCursor}, &next)
			if next.Equities[0].Ticker == page.Equities[0].Ticker {
				t.Fatal("cursor from one replica did not page on the other")
			}
		}
	}
	if hits[0].Load() < 5 || hits[1].Load() < 5 {
		t.Fatalf("round robin did not spread calls: %d / %d", hits[0].Load(), hits[1].Load())
	}
}

// serveOnLoopback serves h on 127.0.0.1 and returns its base URL.
func serveOnLoopback(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// queueProxy mimics Knative's queue-proxy: it dials the app on loopback and
// keeps the public Host header of the incoming request.
func queueProxy(t *testing.T, app string) string {
	u, _ := url.Parse(app)
	return serveOnLoopback(t, &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(u)
		r.Out.Host = r.In.Host
		bufferBody(t, r)
	}})
}

// bufferBody forwards the request body from memory. Streamed, it races the
// front server's closing of that body once the answer starts (golang/go
// issue 40747): on a loaded machine the proxy's transport then closes the
// backend connection while the answer is still being copied, and the
// client gets a truncated body.
func bufferBody(t *testing.T, r *httputil.ProxyRequest) {
	if r.In.Body == nil || r.In.Body == http.NoBody {
		return
	}
	b, err := io.ReadAll(r.In.Body)
	if err != nil {
		t.Errorf("reading the request body: %v", err)
	}
	r.Out.Body = io.NopCloser(bytes.NewReader(b))
	r.Out.ContentLength = int64(len(b))
	r.Out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// TestHostAndOriginChecks covers both sides of the localhost rules: the
// Knative data path (loopback connection, public Host) is served when the
// Host is configured, DNS rebinding and cross-origin browsers are refused.
func TestHostAndOriginChecks(t *testing.T) {
	const route = "portfolio-mcp.portfolio-mcp.example.com"
	srv := startServer(t, map[string]string{
		"ALLOWED_HOSTS":   route + ",.svc.cluster.local",
		"ALLOWED_ORIGINS": "https://inspector.example.org",
	})
	qp := queueProxy(t, srv.URL)

	tests := []struct {
		name    string
		target  string
		host    string
		headers map[string]string
		want    int
	}{
		{"direct loopback", srv.URL, "", nil, 200},
		{"localhost name", srv.URL, "localhost:8080", nil, 200},
		{"queue-proxy with route host", qp, route, nil, 200},
		{"queue-proxy with cluster-local host", qp, "portfolio-mcp.portfolio-mcp.svc.cluster.local", nil, 200},
		{"dns rebinding", srv.URL, "evil.example:8080", map[string]string{"Origin": "http://evil.example:8080"}, 403},
		{"rebinding without origin", qp, "evil.example", nil, 403},
		{"suffix trick", qp, "evilsvc.cluster.local", nil, 403},
		{"cross-origin browser", qp, route, map[string]string{"Origin": "https://evil.example"}, 403},
		{"cross-site fetch metadata", qp, route, map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"same-origin browser", qp, route, map[string]string{"Origin": "https://" + route}, 200},
		{"trusted origin", qp, route, map[string]string{"Origin": "https://inspector.example.org"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), "POST", tt.target+"/mcp",
				strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("MCP-Protocol-Version", "2025-11-25")
			if tt.host != "" {
				req.Host = tt.host
			}
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}

	// Without ALLOWED_HOSTS, the go-sdk-equivalent rule holds: a loopback
	// connection must carry a loopback Host.
	bare := startServer(t, nil)
	req, _ := http.NewRequestWithContext(t.Context(), "POST", queueProxy(t, bare.URL)+"/mcp", strings.NewReader(`{}`))
	req.Host = route
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("public Host on loopback without ALLOWED_HOSTS: status %d, want 403", resp.StatusCode)
	}
}

// blockingMarket holds search calls until released, to have calls in
// flight at shutdown.
type blockingMarket struct {
	backends.MarketData
	entered chan struct{}
	release chan struct{}
}

func (m *blockingMarket) SearchEquities(ctx context.Context, q backends.EquityQuery) (backends.EquityPage, error) {
	m.entered <- struct{}{}
	<-m.release
	return m.MarketData.SearchEquities(ctx, q)
}

// TestDrainCompletesInFlightCalls cancels the server (as SIGTERM does in
// main) with calls in flight: they complete, readiness fails, and new
// connections are refused.
func TestDrainCompletesInFlightCalls(t *testing.T) {
	bs := demo.New(nil).Set()
	market := &blockingMarket{MarketData: bs.MarketData, entered: make(chan struct{}), release: make(chan struct{})}
	bs.MarketData = market
	srv := startServer(t, map[string]string{"DRAIN_TIMEOUT": "30s"}, app.WithBackends(bs))
	cs := connect(t, srv.URL+"/mcp", protocols[0], nil)

	const inFlight = 4
	var wg sync.WaitGroup
	errs := make(chan error, inFlight)
	for range inFlight {
		wg.Go(func() {
			var page backends.EquityPage
			callTool(t, cs, "search_equities", map[string]any{"query": "bank"}, &page)
			if page.Total == 0 {
				errs <- context.Canceled
			}
		})
	}
	for range inFlight {
		<-market.entered
	}

	stopped := make(chan error, 1)
	go func() { stopped <- srv.stop() }()

	// Readiness flips before the in-flight calls are released.
	waitFor(t, func() bool {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			return true // listener already closed: also not ready
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	close(market.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("in-flight call: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("drain: %v", err)
	}
	if _, err := http.Get(srv.URL + "/healthz"); err == nil {
		t.Fatal("server still accepts connections after drain")
	}
}

// TestMetricsNotOnPublicRoute: the scraper (direct) and a local developer
// read /metrics; a caller through the route (queue-proxy, public Host) does not.
func TestMetricsNotOnPublicRoute(t *testing.T) {
	srv := startServer(t, map[string]string{"ALLOWED_HOSTS": "portfolio-mcp.example.com"})
	get := func(target, host string) int {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", target+"/metrics", nil)
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(srv.URL, ""); code != http.StatusOK {
		t.Errorf("direct scrape: %d", code)
	}
	if code := get(queueProxy(t, srv.URL), "portfolio-mcp.example.com"); code != http.StatusNotFound {
		t.Errorf("through the route: %d, want 404", code)
	}
}

// TestExtraRoutesGuarded: the approvals API and the events route get the
// same Host and Origin checks as /mcp.
func TestExtraRoutesGuarded(t *testing.T) {
	srv := startServer(t, nil)
	for _, tt := range []struct {
		method, path, host, origin string
	}{
		{"GET", "/approvals", "attacker.example", ""},
		{"POST", "/approvals/APR-0000/decision", "localhost", "https://attacker.example"},
		{"POST", "/events/approvals", "attacker.example", ""},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, strings.NewReader(`{}`))
		req.Host = tt.host
		req.Header.Set("Content-Type", "text/plain")
		if tt.origin != "" {
			req.Header.Set("Origin", tt.origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s %s (Host %s, Origin %q): %d, want 403", tt.method, tt.path, tt.host, tt.origin, resp.StatusCode)
		}
	}
}

// TestRequestIDAdopted: a well-formed X-Request-Id from the caller is kept
// (and echoed), anything else is replaced by a fresh id.
func TestRequestIDAdopted(t *testing.T) {
	srv := startServer(t, nil)
	for _, c := range []struct {
		id    string
		adopt bool
	}{
		// The rule itself is httpserver's (TestRequestID); this is its wiring.
		{"abc-123", true},
		{"has space", false},
	} {
		req, _ := http.NewRequest("POST", srv.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("X-Request-Id", c.id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get("X-Request-Id")
		if got == "" || (got == c.id) != c.adopt {
			t.Errorf("sent %q, got back %q; want adopted=%v", c.id, got, c.adopt)
		}
	}
}
