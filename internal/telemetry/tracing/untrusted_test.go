package tracing

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/portfolio-mcp/portfolio-mcp/backends/httpclient"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/httpserver"
)

func onTracing(rec *tracetest.SpanRecorder) Tracing {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
		sdktrace.WithRawSpanLimits(spanLimits()))
	return Tracing{Provider: tp, Propagator: propagator(), Shutdown: tp.Shutdown, on: true}
}

// TestUnauthenticatedCallerCannotNameSpans: the server span opens before
// authentication (here a step that answers 401, as gov.authenticate does),
// so a made-up tool name is "unknown", and no attribute repeats a caller's
// megabyte.
func TestUnauthenticatedCallerCannotNameSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := onTracing(rec)
	unauth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "unauthorized", http.StatusUnauthorized) })
	h := httpserver.Chain(unauth, httpserver.ParseCall, tr.Server(func(n string) bool { return n == "list_accounts" }))
	long := strings.Repeat("A", 100_000)
	names := []string{"made-up-1", "made-up-2", "Bearer sk_live_0123456789abcdef", long}
	for i, n := range names {
		body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": strings.Repeat("9", 50_000) + string(rune('0'+i)), "method": "tools/call", "params": map[string]any{"name": n, "arguments": map[string]any{}}})
		req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	distinct := map[string]bool{}
	for _, s := range rec.Ended() {
		distinct[s.Name()] = true
		for _, kv := range s.Attributes() {
			if l := len(kv.Value.Emit()); l > 1024 {
				t.Errorf("span %.40q attribute %s is %d bytes of caller input (unauthenticated)", s.Name(), kv.Key, l)
			}
			if strings.Contains(kv.Value.Emit(), "sk_live") {
				t.Errorf("attribute %s carries the caller's text verbatim: %q", kv.Key, kv.Value.Emit())
			}
		}
	}
	if len(distinct) > 1 {
		var short []string
		for n := range distinct {
			short = append(short, n[:min(len(n), 40)])
		}
		t.Errorf("unauthenticated requests made %d distinct server span names (want one bounded name for unknown tools): %q", len(distinct), short)
	}
}

// TestAgentBaggageStaysOut: the agent's W3C baggage is not carried to the
// firm's backends, with tracing on or off; its traceparent is.
func TestAgentBaggageStaysOut(t *testing.T) {
	var mu sync.Mutex
	var got, parent string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got, parent = r.Header.Get("Baggage"), r.Header.Get("Traceparent")
		mu.Unlock()
		io.WriteString(w, `{"accounts":[]}`)
	}))
	defer backend.Close()
	for _, tr := range []Tracing{Off(), onTracing(tracetest.NewSpanRecorder())} {
		p, err := httpclient.NewPortfolio(backend.URL, httpclient.Options{TracerProvider: tr.Provider, Propagator: tr.Propagator})
		if err != nil {
			t.Fatal(err)
		}
		h := httpserver.Chain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := p.ListAccounts(r.Context()); err != nil {
				t.Error(err)
			}
		}), httpserver.ParseCall, tr.Server(func(n string) bool { return n == "list_accounts" }))
		req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_accounts","arguments":{}}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Baggage", "user.id=risk-officer-1,tenant=internal,role=admin")
		req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
		h.ServeHTTP(httptest.NewRecorder(), req)
		mu.Lock()
		if got != "" {
			t.Errorf("tracing on=%v: the agent's baggage reached the backend: %q", tr.on, got)
		}
		if !strings.Contains(parent, "0af7651916cd43dd8448eb211c80319c") {
			t.Errorf("tracing on=%v: the backend's traceparent %q is not in the agent's trace", tr.on, parent)
		}
		got = ""
		mu.Unlock()
	}
}

// TestUnknownNotificationNamesNoSpan: a notification's method is not
// checked at the edge, so one MCP does not define names the span "unknown".
func TestUnknownNotificationNamesNoSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := onTracing(rec)
	unauth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "unauthorized", http.StatusUnauthorized) })
	h := httpserver.Chain(unauth, httpserver.ParseCall, tr.Server(func(n string) bool { return n == "list_accounts" }))
	for _, m := range []string{"Bearer sk_live_0123456789abcdef", strings.Repeat("A", 100_000), "notifications/initialized"} {
		body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": m})
		req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	var names []string
	for _, s := range rec.Ended() {
		names = append(names, s.Name())
	}
	if want := []string{"unknown", "unknown", "notifications/initialized"}; !slices.Equal(names, want) {
		t.Errorf("span names %.80q, want %q", names, want)
	}
}
