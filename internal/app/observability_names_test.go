package app_test

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/backends/fake"
	"github.com/portfolio-mcp/portfolio-mcp/backends/faults"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/redistest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/dashboard/promnames"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
)

// The files whose metric names must exist, relative to this package.
const (
	obsRules     = "../../knative/observability/prometheusrule.yaml"
	obsDashboard = "../../knative/observability/dashboard.json"
	obsGuide     = "../../docs/observability.md"
	obsRunbooks  = "../../docs/runbooks"
)

// TestObservabilityNamesExist runs the real server (Redis, the backends
// over HTTP with fault injection, an audit sink), drives it through what
// makes every metric family appear (tool calls, an order waiting for an
// approver and its approval, a backend retry, a rate-limited agent, a full
// audit queue, Redis going away), scrapes /metrics, and checks that every
// metric named by the PrometheusRule, the Grafana dashboard,
// docs/observability.md and the runbooks is one the server exports (or a
// recording rule, or one of Knative's or Prometheus' own series, listed in
// promnames). Then the other way: every family the server exports is
// documented in docs/observability.md.
func TestObservabilityNamesExist(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	rds := redistest.Start(t)

	inject := faults.New(fake.Routes())
	backend, err := fake.New(demo.New(nil).Set(), fake.Options{Wrap: inject.Wrap})
	if err != nil {
		t.Fatal(err)
	}
	fakes := httptest.NewServer(backend)
	t.Cleanup(fakes.Close)
	sink := newHoldingSink(t)

	env := tradingEnv(iss, rds.URL())
	env["PORTFOLIO_URL"], env["TRADE_URL"], env["RISK_URL"] = fakes.URL, fakes.URL, fakes.URL
	env["K_SINK"] = sink.URL
	env["AUDIT_QUEUE_SIZE"] = "1"
	// Budgets small enough for one agent to run out, large enough for the
	// others' few calls.
	env["RATE_READ_BURST"], env["RATE_READ_PER_SECOND"] = "20", "1"
	srv := startServer(t, env)

	aud := "http://127.0.0.1/mcp"
	alice := iss.Token(t, iss.Claims("alice", aud, "portfolio:read trade:write", "ACC-2001"))
	bob := iss.Token(t, iss.Claims("bob", aud, "portfolio:read trade:approve", "ACC-2001"))
	rita := iss.Token(t, iss.Claims("rita", aud, readScopes, "ACC-2001"))
	cs := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(alice))

	// Reads through every backend.
	var pv backends.PortfolioValuation
	callTool(t, cs, "get_portfolio", map[string]any{"account_id": "ACC-2001"}, &pv)
	var rs backends.RiskSummary
	callTool(t, cs, "get_risk_summary", map[string]any{"account_id": "ACC-2001"}, &rs)
	// One failed attempt at the Risk service, then the retry answers.
	if err := inject.Set(faults.Fault{Route: "GET /v1/accounts/{account_id}/risk-summary", Status: http.StatusServiceUnavailable, Times: 1}); err != nil {
		t.Fatal(err)
	}
	callTool(t, cs, "get_risk_summary", map[string]any{"account_id": "ACC-2001"}, &rs)

	// An order above APPROVAL_NOTIONAL waits for an approver; bob approves.
	var out trading.Outcome
	callTool(t, cs, "place_order", confirmedArgs("ACC-2001", "observability-names-1", 1000), &out)
	if out.Status != trading.StatusPendingApproval || out.Approval == nil {
		t.Fatalf("large order: %+v", out)
	}
	if code, body := decide(t, srv.URL, bob, out.Approval.ID, "approve"); code != http.StatusOK {
		t.Fatalf("bob approves: %d %v", code, body)
	}

	// A runaway agent runs out of its read budget.
	csRita := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(rita))
	limited := false
	for range 40 {
		res, err := csRita.CallTool(t.Context(), &mcp.CallToolParams{Name: "get_quotes", Arguments: map[string]any{"tickers": []string{"KO"}}})
		if err != nil {
			t.Fatal(err)
		}
		limited = limited || res.IsError && strings.Contains(resultText(res), "rate limit")
	}
	if !limited {
		t.Fatal("40 quick reads were never rate limited")
	}

	// The audit sink stalls: two workers wait on it, the queue of one
	// fills, further read records are dropped (and logged).
	sink.hold()
	for range 6 {
		var q backends.QuoteSet
		callTool(t, cs, "get_quotes", map[string]any{"tickers": []string{"MSFT"}}, &q)
	}
	sink.release()

	// Redis goes away: the rate limit falls back to per-replica buckets,
	// state store operations fail.
	rds.Stop()
	var q backends.QuoteSet
	callTool(t, cs, "get_quotes", map[string]any{"tickers": []string{"AAPL"}}, &q)
	callToolError(t, cs, "place_order", confirmedArgs("ACC-2001", "observability-names-2", 1))

	families := scrapeFamilies(t, srv.URL)
	t.Logf("the server exports %d metric families: %s", len(families), strings.Join(slices.Sorted(maps.Keys(families)), " "))

	// Names used by the rules, the dashboard, the guide and the runbooks.
	used := map[string][]string{} // name -> where
	recorded := map[string]bool{}
	note := func(where string, exprs ...string) {
		for _, e := range exprs {
			for _, n := range promnames.Names(e) {
				if !slices.Contains(used[n], where) {
					used[n] = append(used[n], where)
				}
			}
		}
	}
	pr, err := promnames.ParsePrometheusRule(obsReadFile(t, obsRules))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range pr.Rules() {
		if r.Record != "" {
			recorded[r.Record] = true
		}
		note("prometheusrule.yaml", r.Expr)
	}
	dash, err := promnames.DashboardExprs(obsReadFile(t, obsDashboard))
	if err != nil {
		t.Fatal(err)
	}
	note("dashboard.json", dash...)
	guide := obsReadFile(t, obsGuide)
	note("docs/observability.md", promnames.MarkdownExprs(guide)...)
	runbooks, err := filepath.Glob(filepath.Join(obsRunbooks, "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range runbooks {
		note("docs/runbooks/"+filepath.Base(f), promnames.MarkdownExprs(obsReadFile(t, f))...)
	}
	if len(used) < 20 {
		t.Fatalf("only %d metric names found in the rules, dashboard and docs: the readers are broken", len(used))
	}

	var missing []string
	for name, where := range used {
		switch {
		case recorded[name], promnames.PrometheusSeries[name], knativeSeries(name):
			continue
		case strings.HasPrefix(name, "kn_"):
			missing = append(missing, fmt.Sprintf("%s (in %s) looks like a Knative series but is not in promnames.KnativeSeries", name, strings.Join(where, ", ")))
			continue
		}
		if _, ok := promnames.Family(name, families); !ok {
			missing = append(missing, fmt.Sprintf("%s (in %s)", name, strings.Join(where, ", ")))
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("not exported by the server: %s", m)
	}

	// Every family the server exports is in the guide's metric tables
	// (the Go runtime and process collectors are described as a group).
	documented := map[string]bool{}
	for _, e := range promnames.MarkdownExprs(guide) {
		for _, n := range promnames.Names(e) {
			documented[n] = true
		}
	}
	for name := range families {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") {
			continue
		}
		if !documented[name] {
			t.Errorf("the server exports %s, which docs/observability.md does not describe", name)
		}
	}
}

// knativeSeries reports whether name is one of Knative's series (or a
// histogram series of one).
func knativeSeries(name string) bool {
	for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if _, known := promnames.KnativeSeries[base]; ok && known {
			return true
		}
	}
	return false
}

// scrapeFamilies fetches /metrics in the Prometheus text format and
// returns its metric families (name → type).
func scrapeFamilies(t *testing.T, base string) map[string]string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	fams := promnames.Families(b)
	if len(fams) == 0 {
		t.Fatalf("GET /metrics has no # TYPE lines:\n%s", b)
	}
	return fams
}

func obsReadFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// holdingSink is a CloudEvents receiver standing in for the audit Broker
// that acknowledges every event, or holds deliveries while held.
type holdingSink struct {
	*httptest.Server
	mu   sync.Mutex
	gate chan struct{} // non-nil while held; closed to release
}

func newHoldingSink(t *testing.T) *holdingSink {
	s := &holdingSink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		gate := s.gate
		s.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(s.Close)
	t.Cleanup(s.release) // runs first: no delivery stays held at the end
	return s
}

func (s *holdingSink) hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		s.gate = make(chan struct{})
	}
}

func (s *holdingSink) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
}
