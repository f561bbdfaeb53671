package httpclient_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/promtest"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/httpclient"
)

// scrape gathers reg as /metrics would, keyed by metric name.
func scrape(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	return promtest.Families(t, reg)
}

// series lists a family's series as "k=v,k=v value".
func series(mf *dto.MetricFamily) []string { return promtest.Series(mf) }

// metric finds the series of family name with exactly these label values.
func metric(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	for _, m := range fams[name].GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if fmt.Sprint(got) == fmt.Sprint(labels) {
			return m
		}
	}
	t.Fatalf("no %s%v in %v", name, labels, series(fams[name]))
	return nil
}

func newMetrics(t *testing.T) (*prometheus.Registry, *httpclient.Metrics) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := httpclient.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	return reg, m
}

// TestMetricsOutcomes: every logical call is observed once, with the
// outcome its error maps to; retries are counted per attempt after the
// first.
func TestMetricsOutcomes(t *testing.T) {
	reg, m := newMetrics(t)
	var flaky atomic.Int64
	h := &countingHandler{respond: func(n int64, w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/accounts":
			okAccounts(w)
		case r.URL.Path == "/v1/accounts/ACC-404/portfolio":
			fail(w, http.StatusNotFound, "not_found", "no such account")
		case r.URL.Path == "/v1/equities":
			fail(w, http.StatusBadRequest, "invalid", "limit must be between 1 and 100")
		case r.URL.Path == "/v1/accounts/ACC-500/portfolio":
			fail(w, http.StatusInternalServerError, "internal", "boom")
		case r.URL.Path == "/v1/quotes":
			// Fails twice, then answers: two retries, one ok call.
			if flaky.Add(1) <= 2 {
				fail(w, http.StatusServiceUnavailable, "unavailable", "busy")
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"quotes":[]}`)
		case r.URL.Path == "/v1/accounts/ACC-HANG/portfolio":
			<-r.Context().Done() // answers nothing before the client's deadline
		default:
			http.NotFound(w, r)
		}
	}}
	p, _ := portfolioAt(t, h, httpclient.Options{Retries: 2, Timeout: 5 * time.Second, BreakerFailures: 100, Metrics: m})
	ctx := t.Context()

	if _, err := p.ListAccounts(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := p.GetPortfolio(ctx, "ACC-404"); !errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
	if _, err := p.SearchEquities(ctx, backends.EquityQuery{Limit: 1000}); !errors.Is(err, backends.ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	if _, err := p.GetPortfolio(ctx, "ACC-500"); !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("err = %v", err)
	}
	if _, err := p.Quotes(ctx, []string{"KO"}); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := p.GetPortfolio(short, "ACC-HANG"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	gone, cancelGone := context.WithCancel(ctx)
	cancelGone()
	if _, err := p.ListAccounts(gone); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}

	fams := scrape(t, reg)
	want := []string{
		"operation=get_portfolio,outcome=error,service=portfolio 1",
		"operation=get_portfolio,outcome=not_found,service=portfolio 1",
		"operation=get_portfolio,outcome=timeout,service=portfolio 1",
		"operation=get_quotes,outcome=ok,service=portfolio 1",
		"operation=list_accounts,outcome=error,service=portfolio 1",
		"operation=list_accounts,outcome=ok,service=portfolio 1",
		"operation=search_equities,outcome=invalid,service=portfolio 1",
	}
	if got := series(fams["backend_request_duration_seconds"]); !slices.Equal(got, want) {
		t.Errorf("backend_request_duration_seconds:\n got %q\nwant %q", got, want)
	}
	// ACC-500: 1 + 2 retries; quotes: 2 retries before the answer. The
	// hanging call is not retried (nothing came back before the deadline).
	want = []string{
		"operation=get_portfolio,service=portfolio 2",
		"operation=get_quotes,service=portfolio 2",
	}
	if got := series(fams["backend_retries_total"]); !slices.Equal(got, want) {
		t.Errorf("backend_retries_total:\n got %q\nwant %q", got, want)
	}
	// A 5xx on three attempts took two backoff waits (>= 25ms + 50ms).
	h500 := metric(t, fams, "backend_request_duration_seconds", map[string]string{"operation": "get_portfolio", "outcome": "error", "service": "portfolio"})
	if s := h500.GetHistogram().GetSampleSum(); s < 0.075 {
		t.Errorf("retried call measured %gs, want the whole call (>= 75ms of backoff)", s)
	}
	// Buckets run from 1ms to 10s.
	bs := h500.GetHistogram().GetBucket()
	if first, last := bs[0].GetUpperBound(), bs[len(bs)-1].GetUpperBound(); first != 0.001 || last != 10 {
		t.Errorf("buckets %g..%g, want 0.001..10", first, last)
	}
	if got := series(fams["backend_breaker_state"]); !slices.Equal(got, []string{"service=portfolio 0"}) {
		t.Errorf("backend_breaker_state = %q, want closed", got)
	}
}

// TestMetricsOperations: each client method has its own operation label,
// on its own service.
func TestMetricsOperations(t *testing.T) {
	reg, m := newMetrics(t)
	h := &countingHandler{respond: func(n int64, w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusNotFound, "not_found", "nothing here")
	}}
	_, srv := portfolioAt(t, h, httpclient.Options{})
	set, err := httpclient.NewSet(httpclient.URLs{Portfolio: srv.URL, Risk: srv.URL, Trade: srv.URL}, httpclient.Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	set.Portfolio.ListAccounts(ctx)
	set.Portfolio.GetPortfolio(ctx, "A")
	set.MarketData.SearchEquities(ctx, backends.EquityQuery{})
	set.MarketData.Quotes(ctx, []string{"KO"})
	set.Risk.RiskSummary(ctx, "A")
	set.Trade.PlaceOrder(ctx, order)
	set.Trade.GetOrder(ctx, "O")
	set.Trade.OrderByClientID(ctx, "C")
	set.Trade.CancelOrder(ctx, "O")
	want := []string{
		"operation=cancel_order,outcome=not_found,service=trade 1",
		"operation=get_order,outcome=not_found,service=trade 1",
		"operation=get_portfolio,outcome=not_found,service=portfolio 1",
		"operation=get_quotes,outcome=not_found,service=portfolio 1",
		"operation=list_accounts,outcome=not_found,service=portfolio 1",
		"operation=order_by_client_id,outcome=not_found,service=trade 1",
		"operation=place_order,outcome=not_found,service=trade 1",
		"operation=risk_summary,outcome=not_found,service=risk 1",
		"operation=search_equities,outcome=not_found,service=portfolio 1",
	}
	fams := scrape(t, reg)
	if got := series(fams["backend_request_duration_seconds"]); !slices.Equal(got, want) {
		t.Errorf("backend_request_duration_seconds:\n got %q\nwant %q", got, want)
	}
	want = []string{"service=portfolio 0", "service=risk 0", "service=trade 0"}
	if got := series(fams["backend_breaker_state"]); !slices.Equal(got, want) {
		t.Errorf("backend_breaker_state = %q, want %q", got, want)
	}
}

// TestMetricsBreaker: the breaker's state gauge and transitions follow
// gobreaker's own state changes; a refused call is breaker_open.
func TestMetricsBreaker(t *testing.T) {
	down, h := downService()

	t.Run("open", func(t *testing.T) {
		reg, m := newMetrics(t)
		p, _ := portfolioAt(t, h, httpclient.Options{Retries: 0, BreakerFailures: 2, BreakerCooldown: time.Hour, Metrics: m})
		for range 2 {
			p.ListAccounts(t.Context())
		}
		if _, err := p.ListAccounts(t.Context()); !errors.Is(err, httpclient.ErrCircuitOpen) {
			t.Fatalf("err = %v, want ErrCircuitOpen", err)
		}
		fams := scrape(t, reg)
		if got := series(fams["backend_breaker_state"]); !slices.Equal(got, []string{"service=portfolio 2"}) {
			t.Errorf("backend_breaker_state = %q, want open (2)", got)
		}
		want := []string{"service=portfolio,to=closed 0", "service=portfolio,to=half_open 0", "service=portfolio,to=open 1"}
		if got := series(fams["backend_breaker_transitions_total"]); !slices.Equal(got, want) {
			t.Errorf("transitions = %q, want %q", got, want)
		}
		want = []string{
			"operation=list_accounts,outcome=breaker_open,service=portfolio 1",
			"operation=list_accounts,outcome=error,service=portfolio 2",
		}
		if got := series(fams["backend_request_duration_seconds"]); !slices.Equal(got, want) {
			t.Errorf("durations = %q, want %q", got, want)
		}
	})

	t.Run("probe fails, then recovers", func(t *testing.T) {
		reg, m := newMetrics(t)
		// A cooldown of 1ns: the call after the breaker opens is its probe.
		p, _ := portfolioAt(t, h, httpclient.Options{Retries: 0, BreakerFailures: 2, BreakerCooldown: time.Nanosecond, Metrics: m})
		down.Store(true)
		for range 3 { // 2 failures open it; the third is a failed probe
			p.ListAccounts(t.Context())
		}
		fams := scrape(t, reg)
		// Open again after the failed probe, and read at the scrape, when
		// its 1ns cooldown has passed: half-open.
		if got := series(fams["backend_breaker_state"]); !slices.Equal(got, []string{"service=portfolio 1"}) {
			t.Errorf("after a failed probe and its cooldown state = %q, want half-open (1)", got)
		}
		down.Store(false)
		if _, err := p.ListAccounts(t.Context()); err != nil {
			t.Fatalf("probe after recovery: %v", err)
		}
		fams = scrape(t, reg)
		if got := series(fams["backend_breaker_state"]); !slices.Equal(got, []string{"service=portfolio 0"}) {
			t.Errorf("after recovery state = %q, want closed (0)", got)
		}
		// closed->open, open->half-open, half-open->open, open->half-open, half-open->closed
		want := []string{"service=portfolio,to=closed 1", "service=portfolio,to=half_open 2", "service=portfolio,to=open 2"}
		if got := series(fams["backend_breaker_transitions_total"]); !slices.Equal(got, want) {
			t.Errorf("transitions = %q, want %q", got, want)
		}
	})
}

// traceparentLog records the traceparent header of every request.
type traceparentLog struct {
	mu   sync.Mutex
	seen []string
}

func (l *traceparentLog) add(r *http.Request) {
	l.mu.Lock()
	l.seen = append(l.seen, r.Header.Get("Traceparent"))
	l.mu.Unlock()
}

func (l *traceparentLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.seen)
}

func tracing(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return tp, rec
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	out := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		out[kv.Key] = kv.Value // the last value of a key wins, as exported
	}
	return out
}

// TestTracing: each attempt is a client span, child of the caller's span,
// named by the contract route; the request carries it as traceparent; the
// URL's query values stay out of the span; the call's observation has the
// trace id as its exemplar.
func TestTracing(t *testing.T) {
	reg, m := newMetrics(t)
	tp, rec := tracing(t)
	var parents traceparentLog
	h := &countingHandler{respond: func(n int64, w http.ResponseWriter, r *http.Request) {
		parents.add(r)
		if n == 1 {
			fail(w, http.StatusBadGateway, "unavailable", "try again") // one retry
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"equities":[],"total":0}`)
	}}
	p, _ := portfolioAt(t, h, httpclient.Options{Retries: 1, Timeout: 5 * time.Second, Metrics: m,
		TracerProvider: tp, Propagator: propagation.TraceContext{}})

	ctx, call := tp.Tracer("test").Start(t.Context(), "tools/call search_equities")
	if _, err := p.SearchEquities(ctx, backends.EquityQuery{Text: "alice's secret plan", Sector: "Energy"}); err != nil {
		t.Fatal(err)
	}
	call.End()
	traceID := call.SpanContext().TraceID()

	var clients []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindClient {
			clients = append(clients, s)
		}
	}
	if len(clients) != 2 {
		t.Fatalf("%d client spans, want 2 (one per attempt)", len(clients))
	}
	sent := parents.all()
	for i, s := range clients {
		if s.Name() != "GET /v1/equities" {
			t.Errorf("span name %q, want the route", s.Name())
		}
		if s.Parent().SpanID() != call.SpanContext().SpanID() || s.SpanContext().TraceID() != traceID {
			t.Errorf("span %d is not a child of the caller's span", i)
		}
		want := fmt.Sprintf("00-%s-%s-01", traceID, s.SpanContext().SpanID())
		if sent[i] != want {
			t.Errorf("request %d traceparent %q, want %q", i, sent[i], want)
		}
		a := attrs(s)
		full := a["url.full"].AsString()
		if strings.Contains(full, "secret") || strings.Contains(full, "Energy") || !strings.Contains(full, "q=REDACTED") {
			t.Errorf("url.full = %q: query values must be redacted", full)
		}
		if a["url.template"].AsString() != "/v1/equities" || a["http.request.method"].AsString() != "GET" {
			t.Errorf("attributes %v", a)
		}
		for k, v := range a {
			if strings.Contains(v.Emit(), "secret") {
				t.Errorf("attribute %s = %q carries the query", k, v.Emit())
			}
		}
	}
	if got := attrs(clients[0])["http.response.status_code"].AsInt64(); got != 502 {
		t.Errorf("first attempt status %d, want 502", got)
	}

	fams := scrape(t, reg)
	hist := metric(t, fams, "backend_request_duration_seconds", map[string]string{"operation": "search_equities", "outcome": "ok", "service": "portfolio"}).GetHistogram()
	var exemplars []string
	for _, b := range hist.GetBucket() {
		if e := b.GetExemplar(); e != nil {
			for _, l := range e.GetLabel() {
				exemplars = append(exemplars, l.GetName()+"="+l.GetValue())
			}
		}
	}
	if want := []string{"trace_id=" + traceID.String()}; !slices.Equal(exemplars, want) {
		t.Errorf("exemplars %q, want %q", exemplars, want)
	}
}

// TestNoExemplarWithoutSampledSpan: a call without a span, with an
// unsampled one, or with only the agent's sampled trace context (carried on
// with tracing off, a trace this server never recorded) is observed without
// an exemplar (and still traced per attempt by whatever provider is
// configured).
func TestNoExemplarWithoutSampledSpan(t *testing.T) {
	reg, m := newMetrics(t)
	var parents traceparentLog
	h := &countingHandler{respond: func(n int64, w http.ResponseWriter, r *http.Request) {
		parents.add(r)
		okAccounts(w)
	}}
	unsampled := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	p, _ := portfolioAt(t, h, httpclient.Options{Metrics: m, TracerProvider: unsampled, Propagator: propagation.TraceContext{}})
	ctx, span := unsampled.Tracer("test").Start(t.Context(), "unsampled")
	defer span.End()
	agents := trace.ContextWithRemoteSpanContext(t.Context(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0xde, 0xad, 0xbe, 0xef}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled, Remote: true}))
	for _, c := range []context.Context{t.Context(), ctx, agents} {
		if _, err := p.ListAccounts(c); err != nil {
			t.Fatal(err)
		}
	}
	fams := scrape(t, reg)
	hist := metric(t, fams, "backend_request_duration_seconds", map[string]string{"operation": "list_accounts", "outcome": "ok", "service": "portfolio"}).GetHistogram()
	if hist.GetSampleCount() != 3 {
		t.Fatalf("%d observations, want 3", hist.GetSampleCount())
	}
	for _, b := range hist.GetBucket() {
		if b.GetExemplar() != nil {
			t.Errorf("exemplar %v on an unsampled call", b.GetExemplar())
		}
	}
	// The unsampled trace still propagates, marked not sampled.
	if got := parents.all(); !strings.HasPrefix(got[1], "00-"+span.SpanContext().TraceID().String()+"-") || !strings.HasSuffix(got[1], "-00") {
		t.Errorf("traceparent %q, want the unsampled trace", got[1])
	}
}

// TestBreakerGaugeLeavesOpenWithoutTraffic: after the cooldown an open
// breaker lets the next call through, and the gauge says so at the next
// scrape even if no call came (the Trade service overnight): an alert on
// "open" must not page on for a service nobody called.
func TestBreakerGaugeLeavesOpenWithoutTraffic(t *testing.T) {
	down, h := downService()
	reg, m := newMetrics(t)
	p, _ := portfolioAt(t, h, httpclient.Options{BreakerFailures: 2, BreakerCooldown: time.Millisecond, Metrics: m})
	for range 2 {
		p.ListAccounts(t.Context())
	}
	down.Store(false) // the service recovers; nobody calls it
	// Scrapes until the cooldown has passed: half-open, never "open" for good.
	for start := time.Now(); ; {
		got := series(scrape(t, reg)["backend_breaker_state"])
		if slices.Equal(got, []string{"service=portfolio 1"}) {
			break
		}
		if !slices.Equal(got, []string{"service=portfolio 2"}) || time.Since(start) > 10*time.Second {
			t.Fatalf("backend_breaker_state = %q after the cooldown without calls; want half-open (1)", got)
		}
		runtime.Gosched()
	}
	if _, err := p.ListAccounts(t.Context()); err != nil {
		t.Fatalf("the next call was refused: %v", err)
	}
	if got := series(scrape(t, reg)["backend_breaker_state"]); !slices.Equal(got, []string{"service=portfolio 0"}) {
		t.Errorf("after a successful probe backend_breaker_state = %q, want closed (0)", got)
	}
}

// TestRetryRefusedByTheBreakerIsNoRetry: a retry the breaker refuses sends
// no request, so it is not counted, and the call's outcome is the failure
// that opened the breaker, not a local refusal.
func TestRetryRefusedByTheBreakerIsNoRetry(t *testing.T) {
	h := &countingHandler{respond: func(n int64, w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusServiceUnavailable, "unavailable", "down")
	}}
	reg, m := newMetrics(t)
	p, _ := portfolioAt(t, h, httpclient.Options{Retries: 2, BreakerFailures: 1, BreakerCooldown: time.Hour, Metrics: m})
	_, err := p.ListAccounts(t.Context())
	if h.count() != 1 || errors.Is(err, httpclient.ErrCircuitOpen) {
		t.Fatalf("%d requests, error %v; want one request and its failure", h.count(), err)
	}
	fams := scrape(t, reg)
	if got := series(fams["backend_retries_total"]); len(got) != 0 {
		t.Errorf("backend_retries_total = %q after one request", got)
	}
	if d := metric(t, fams, "backend_request_duration_seconds", map[string]string{"operation": "list_accounts", "outcome": "error", "service": "portfolio"}); d.GetHistogram().GetSampleCount() != 1 {
		t.Errorf("the call is not observed with outcome error")
	}
}
