package app_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"image/color"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/backends/fake"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/redistest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
)

// otlpReceiver is a real OTLP/HTTP trace receiver, built on the protocol's
// own protobuf types (go.opentelemetry.io/proto/otlp), as a collector
// would decode what the server exports.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
}

func newReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var export collectorpb.ExportTraceServiceRequest
		if req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(body, &export) != nil {
			http.Error(w, "not an OTLP/HTTP trace export", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range export.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(r.Close)
	return r
}

// trace returns the received spans of one trace.
func (r *otlpReceiver) trace(id string) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if hex.EncodeToString(s.TraceId) == id {
			out = append(out, s)
		}
	}
	return out
}

func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value.GetStringValue()
		}
	}
	return ""
}

// lockedBuffer collects the server's log lines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// serveWithLog is a server whose JSON log (at info) goes to logs.
func serveWithLog(t *testing.T, env map[string]string, logs io.Writer) (base string, stop func()) {
	t.Helper()
	srv := serve(t, env, telemetry.NewLogger(logs, "info", telemetry.Revision{}))
	return srv.URL, func() { srv.stop() }
}

// TestTraceOfAnOrder follows one place_order from the agent's trace id to
// the Trade service: one connected trace (server span, governance steps,
// audit deliveries, the backend call) exported over OTLP to a real
// receiver, the traceparent reaching the fake Trade service, and the same
// trace id in the call's log line and audit events. With the collector
// down, calls are unaffected.
func TestTraceOfAnOrder(t *testing.T) {
	setSecrets(t)
	receiver := newReceiver(t)
	var mu sync.Mutex
	var tradeParents []string
	backend := httptest.NewServer(must(fake.New(demo.New(nil).Set(), fake.Options{Wrap: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v1/orders") {
				mu.Lock()
				tradeParents = append(tradeParents, r.Header.Get("Traceparent"))
				mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})
	}})))
	t.Cleanup(backend.Close)
	var events []map[string]any
	var eventIDs []string
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var data map[string]any
		json.NewDecoder(r.Body).Decode(&data)
		mu.Lock()
		events, eventIDs = append(events, data), append(eventIDs, r.Header.Get("Ce-Id"))
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(sink.Close)
	iss := oauthtest.New(t)
	redisURL := "redis://" + redistest.Start(t).Addr
	env := func(otlp string) map[string]string {
		return map[string]string{
			"OAUTH_ISSUER": iss.URL, "PUBLIC_URL": "http://127.0.0.1/mcp", "REDIS_URL": redisURL,
			// Every call checks its token: the check's span is in each trace.
			"OAUTH_TOKEN_CACHE_TTL":       "0s",
			"OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "K_SINK": sink.URL, "ENFORCE_MARKET_HOURS": "false",
			"PORTFOLIO_URL": backend.URL, "TRADE_URL": backend.URL, "RISK_URL": backend.URL,
			"RATE_TRADE_PER_MINUTE": "100000", "RATE_TRADE_BURST": "1000",
			// The same one-share order many times is meant here.
			"DUPLICATE_ORDER_WINDOW": "0",
		}
	}
	var logs lockedBuffer
	base, stop := serveWithLog(t, env(receiver.URL), &logs)

	// The agent's own trace, passed in _meta as MCP clients do.
	const agentTrace, agentSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	token := iss.Token(t, iss.Claims("alice", "http://127.0.0.1/mcp", allScopes, "ACC-1001"))
	cs := connect(t, base+"/mcp", "2025-11-25", bearer(token))
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{
		Meta: mcp.Meta{"traceparent": "00-" + agentTrace + "-" + agentSpan + "-01"},
		Name: "place_order", Arguments: confirmedArgs("ACC-1001", "traced-order-1", 10),
	})
	if err != nil || res.IsError {
		t.Fatalf("place_order: %v %s", err, resultText(res))
	}
	if out := decodeOutcome(t, res); out.Order == nil || out.Status == trading.StatusPendingApproval {
		t.Fatalf("place_order: %+v, want an order", out)
	}
	cs.Close()
	stop() // drain: the exporter is flushed

	spans := receiver.trace(agentTrace)
	defer writeTracePicture(t, spans)
	byID := map[string]*tracepb.Span{}
	var server *tracepb.Span
	names := map[string]int{}
	for _, s := range spans {
		byID[hex.EncodeToString(s.SpanId)] = s
		names[s.Name]++
		if s.Name == "tools/call place_order" {
			server = s
		}
	}
	if server == nil {
		t.Fatalf("no server span in the agent's trace; spans: %v", names)
	}
	if hex.EncodeToString(server.ParentSpanId) != agentSpan || server.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("server span parent %x kind %v; want the agent's span %s, server", server.ParentSpanId, server.Kind, agentSpan)
	}
	for key, want := range map[string]string{"mcp.method.name": "tools/call", "gen_ai.tool.name": "place_order",
		"gen_ai.operation.name": "execute_tool", "mcp.protocol.version": "2025-11-25", "portfolio_mcp.outcome": "ok"} {
		if got := attr(server, key); got != want {
			t.Errorf("server span %s = %q, want %q", key, got, want)
		}
	}
	for _, kv := range server.Attributes {
		if strings.Contains(kv.Value.String(), "traced-order-1") {
			t.Errorf("server span carries an argument value: %s", kv.Key)
		}
	}
	// Connected: every span's parent is in the trace, or is the agent's.
	for _, s := range spans {
		if p := hex.EncodeToString(s.ParentSpanId); p != agentSpan && byID[p] == nil {
			t.Errorf("span %q has a parent %s outside the trace", s.Name, p)
		}
	}
	// The governance steps that cost time: the token's check (not
	// cached here), the rate limit on Redis (and its command),
	// the synchronous audit deliveries.
	if names["audit.deliver"] < 2 || names["oauth.verify_token"] != 1 || names["ratelimit.check"] != 1 || names["evalsha"] < 1 {
		t.Errorf("want the token check, the Redis rate limit and the audit deliveries as spans; spans: %v", names)
	}
	// The backend call is a client span, and its traceparent reached the
	// Trade service.
	var client *tracepb.Span
	for _, s := range spans {
		if s.Kind == tracepb.Span_SPAN_KIND_CLIENT && strings.Contains(s.Name, "POST") {
			client = s
		}
	}
	mu.Lock()
	parents := append([]string(nil), tradeParents...)
	callEvents, ids := append([]map[string]any(nil), events...), append([]string(nil), eventIDs...)
	mu.Unlock()
	if len(parents) != 1 || !strings.HasPrefix(parents[0], "00-"+agentTrace+"-") {
		t.Fatalf("traceparent at the Trade service: %q, want the agent's trace", parents)
	}
	if client == nil || !strings.Contains(parents[0], hex.EncodeToString(client.SpanId)) {
		t.Errorf("the Trade service's parent is not the backend client span (%v); spans: %v", client, names)
	}
	// The same trace id in the log line and the audit events, and the call
	// record's event id in the server span.
	var logged bool
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"msg":"tool call"`) && strings.Contains(line, `"tool":"place_order"`) {
			logged = strings.Contains(line, `"trace_id":"`+agentTrace+`"`)
		}
	}
	if !logged {
		t.Errorf("the tool call's log line lacks trace_id %s:\n%s", agentTrace, logs.String())
	}
	var record string
	for i, e := range callEvents {
		if e["checkpoint"] != nil {
			continue // the audit chain's seal at shutdown belongs to no request
		}
		if e["trace_id"] != agentTrace {
			t.Errorf("audit event %v lacks the trace id", e)
		}
		if e["tool"] == "place_order" && e["action"] == nil {
			record = ids[i]
		}
	}
	var inSpan bool
	for _, ev := range server.Events {
		for _, kv := range ev.Attributes {
			if kv.Key == "cloudevents.event_id" && kv.Value.GetStringValue() == record {
				inSpan = true
			}
		}
	}
	if record == "" || !inSpan {
		t.Errorf("the call's audit record %q is not named in the server span's events", record)
	}

	// The collector down: calls go on, and the drain still ends.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	base, stop = serveWithLog(t, env(dead), io.Discard)
	cs = connect(t, base+"/mcp", "2025-11-25", bearer(token))
	for i := range 20 {
		var out trading.Outcome
		callTool(t, cs, "place_order", confirmedArgs("ACC-1001", "untraced-"+string(rune('a'+i)), 1), &out)
		if out.Order == nil {
			t.Fatalf("call %d with the collector down: %+v", i, out)
		}
	}
	cs.Close()
	done := make(chan struct{})
	go func() { stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the drain did not end with the collector down")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// writeTracePicture draws the trace as a waterfall into docs/ when
// PORTFOLIO_MCP_TRACE_PICTURE is set (docs/observability.md shows it).
func writeTracePicture(t *testing.T, spans []*tracepb.Span) {
	t.Helper()
	if os.Getenv("PORTFOLIO_MCP_TRACE_PICTURE") == "" || len(spans) == 0 {
		return
	}
	byID := map[string]*tracepb.Span{}
	for _, s := range spans {
		byID[hex.EncodeToString(s.SpanId)] = s
	}
	depth := func(s *tracepb.Span) int {
		d := 0
		for p := byID[hex.EncodeToString(s.ParentSpanId)]; p != nil; p = byID[hex.EncodeToString(p.ParentSpanId)] {
			d++
		}
		return d
	}
	slices.SortFunc(spans, func(a, b *tracepb.Span) int { return cmp.Compare(a.StartTimeUnixNano, b.StartTimeUnixNano) })
	t0 := spans[0].StartTimeUnixNano
	p := plot.New()
	p.Title.Text = "one place_order, as the OTLP receiver got it"
	p.X.Label.Text = "milliseconds from the server span's start"
	var ticks []plot.Tick
	for i, s := range spans {
		y := float64(len(spans) - i)
		from, to := float64(s.StartTimeUnixNano-t0)/1e6, float64(s.EndTimeUnixNano-t0)/1e6
		l, err := plotter.NewLine(plotter.XYs{{X: from, Y: y}, {X: max(to, from+0.02), Y: y}})
		if err != nil {
			t.Fatal(err)
		}
		l.Width = vg.Points(9)
		l.Color = []color.Color{color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, color.RGBA{0xff, 0x7f, 0x0e, 0xff}, color.RGBA{0x94, 0x67, 0xbd, 0xff}}[depth(s)%4]
		p.Add(l)
		ticks = append(ticks, plot.Tick{Value: y, Label: strings.Repeat("  ", depth(s)) + s.Name + "  " + strconv.FormatFloat((to-from), 'f', 2, 64) + " ms"})
	}
	p.Y.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Min, p.Y.Max = 0.5, float64(len(spans))+0.5
	if err := p.Save(10*vg.Inch, vg.Length(0.35*float64(len(spans))+1.2)*vg.Inch, filepath.Join("..", "..", "docs", "observability-trace.png")); err != nil {
		t.Fatal(err)
	}
}

// grpcReceiver is a real OTLP/gRPC trace receiver: the protocol's own
// service definition on a gRPC server.
type grpcReceiver struct {
	collectorpb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (g *grpcReceiver) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			g.spans = append(g.spans, ss.Spans...)
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// TestTracesOverGRPCAndSampling: OTEL_EXPORTER_OTLP_PROTOCOL=grpc exports
// to a gRPC collector; with OTEL_TRACES_SAMPLER=always_off nothing is
// exported, and with tracing off nothing is set up, yet the agent's trace
// id still reaches the logs.
func TestTracesOverGRPCAndSampling(t *testing.T) {
	recv := &grpcReceiver{}
	gs := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(gs, recv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	const agentTrace = "0af7651916cd43dd8448eb211c80319c"
	call := func(env map[string]string, logs io.Writer) {
		if env["OTEL_TRACES_EXPORTER"] != "none" {
			env["OTEL_EXPORTER_OTLP_ENDPOINT"], env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http://"+ln.Addr().String(), "grpc"
		}
		base, stop := serveWithLog(t, env, logs)
		cs := connect(t, base+"/mcp", "2025-11-25", nil)
		if _, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "list_accounts", Arguments: map[string]any{},
			Meta: mcp.Meta{"traceparent": "00-" + agentTrace + "-b7ad6b7169203331-01"}}); err != nil {
			t.Fatal(err)
		}
		cs.Close()
		stop()
	}
	var logs lockedBuffer
	call(map[string]string{"OTEL_TRACES_SAMPLER": "always_off"}, &logs)
	recv.mu.Lock()
	n := len(recv.spans)
	recv.mu.Unlock()
	if n != 0 {
		t.Errorf("always_off exported %d spans", n)
	}
	if !strings.Contains(logs.String(), `"trace_id":"`+agentTrace+`"`) {
		t.Errorf("with sampling off, the log lacks the agent's trace id:\n%s", logs.String())
	}
	// Tracing off altogether: no span, still the agent's trace in the log.
	var offLogs lockedBuffer
	call(map[string]string{"OTEL_TRACES_EXPORTER": "none"}, &offLogs)
	if !strings.Contains(offLogs.String(), `"trace_id":"`+agentTrace+`"`) {
		t.Errorf("with tracing off, the log lacks the agent's trace id:\n%s", offLogs.String())
	}
	call(map[string]string{}, io.Discard)
	recv.mu.Lock()
	defer recv.mu.Unlock()
	var server bool
	for _, s := range recv.spans {
		server = server || (s.Name == "tools/call list_accounts" && hex.EncodeToString(s.TraceId) == agentTrace)
	}
	if !server {
		t.Errorf("no server span of the agent's trace over gRPC; got %d spans", len(recv.spans))
	}
}

// TestNoExemplarOfTheAgentsTrace: with tracing off the agent's trace is
// carried on but never recorded here, so the tool-call histogram names no
// trace of the agent's choosing as its exemplar.
func TestNoExemplarOfTheAgentsTrace(t *testing.T) {
	base, stop := serveWithLog(t, map[string]string{}, io.Discard)
	defer stop()
	const agentTrace = "deadbeefdeadbeefdeadbeefdeadbeef"
	cs := connect(t, base+"/mcp", "2025-11-25", nil)
	if _, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "list_accounts", Arguments: map[string]any{},
		Meta: mcp.Meta{"traceparent": "00-" + agentTrace + "-b7ad6b7169203331-01"}}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, agentTrace) {
			t.Errorf("tracing is off, yet an exemplar names the agent's trace: %s", line)
		}
	}
}

// TestNoStreamHoldsTheDrain: a 2026-07-28 client with a tools list-changed
// handler (the go-sdk opens subscriptions/listen on connect) is connected
// when the pod gets SIGTERM. The lists never change, the server says so,
// and no listen stream stays open: the drain is clean (the error would say
// a request was cut) and the final checkpoint is delivered.
func TestNoStreamHoldsTheDrain(t *testing.T) {
	var mu sync.Mutex
	var types []string
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		types = append(types, r.Header.Get("Ce-Type"))
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	srv := startServer(t, map[string]string{"K_SINK": sink.URL, "DRAIN_TIMEOUT": "3s"})

	client := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {},
	})
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: srv.URL + "/mcp", MaxRetries: -1},
		&mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if _, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "list_accounts", Arguments: map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	err = srv.stop()
	mu.Lock()
	defer mu.Unlock()
	final := false
	for _, ty := range types {
		if ty == "com.portfolio-mcp.audit.checkpoint" {
			final = true
		}
	}
	if err != nil || !final {
		t.Errorf("drain with a connected agent: error %v, checkpoint delivered %v (sink got %v); want a clean drain with the final checkpoint delivered", err, final, types)
	}
}
