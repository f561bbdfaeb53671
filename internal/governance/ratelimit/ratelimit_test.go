package ratelimit_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/ratelimit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/mcptest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/redistest"
)

// A rate so slow that no token comes back while a test runs: the outcome
// depends only on the number of calls, never on timing.
var limits = ratelimit.Limits{
	catalog.ReadBudget:  {PerSecond: 0.001, Burst: 3},
	catalog.TradeBudget: {PerSecond: 0.001, Burst: 1},
}

func newLimiter(t *testing.T, rdb redis.UniversalClient) *ratelimit.Limiter {
	t.Helper()
	l, err := ratelimit.New(limits, rdb, prometheus.NewRegistry(), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// burst checks the budget semantics on limiters that must share buckets:
// calls alternate between them.
func burst(t *testing.T, ls ...*ratelimit.Limiter) {
	t.Helper()
	ctx := context.Background()
	for i := range 3 {
		d, err := ls[i%len(ls)].Allow(ctx, "alice", catalog.ReadBudget)
		if err != nil || !d.Allowed {
			t.Fatalf("read %d within the burst: %+v, %v", i+1, d, err)
		}
	}
	d, err := ls[3%len(ls)].Allow(ctx, "alice", catalog.ReadBudget)
	if err != nil || d.Allowed {
		t.Fatalf("read beyond the burst: %+v, %v", d, err)
	}
	if d.RetryAfter <= 0 {
		t.Errorf("refusal without a retry-after: %+v", d)
	}
	// Budgets are per principal and per class.
	if d, _ := ls[0].Allow(ctx, "bob", catalog.ReadBudget); !d.Allowed {
		t.Error("another principal was limited by alice's calls")
	}
	if d, _ := ls[0].Allow(ctx, "alice", catalog.TradeBudget); !d.Allowed {
		t.Error("alice's trade budget was spent by reads")
	}
	if d, _ := ls[len(ls)-1].Allow(ctx, "alice", catalog.TradeBudget); d.Allowed {
		t.Error("second trade within a burst of 1 was allowed")
	}
}

func TestMemory(t *testing.T) {
	l := newLimiter(t, nil)
	if l.Backend() != "memory" {
		t.Fatalf("backend %s", l.Backend())
	}
	burst(t, l)
}

func TestRedisIsSharedAcrossReplicas(t *testing.T) {
	// Two limiters with their own clients stand for two replicas.
	addr := redistest.Start(t).Addr
	replicas := make([]*ratelimit.Limiter, 2)
	for i := range replicas {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { rdb.Close() })
		replicas[i] = newLimiter(t, rdb)
	}
	if replicas[0].Backend() != "redis" {
		t.Fatalf("backend %s", replicas[0].Backend())
	}
	burst(t, replicas...)
}

// mcpServer serves a read and a trade tool behind the limiter, with the
// local developer principal, and returns a connected go-sdk client.
func mcpServer(t *testing.T, l *ratelimit.Limiter) *mcp.ClientSession {
	t.Helper()
	srv := mcp.NewServer(&mcp.Implementation{Name: "t", Version: "1"}, nil)
	for _, name := range []string{"read_tool", "trade_tool"} {
		mcp.AddTool(srv, &mcp.Tool{Name: name}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
		})
	}
	cat := catalog.New()
	cat.Add(catalog.Tool{Name: "read_tool", Class: catalog.Read})
	cat.Add(catalog.Tool{Name: "trade_tool", Class: catalog.Trade})
	srv.AddReceivingMiddleware(outcome.Deliver(call.ResultsTyped), call.Bind(), l.Middleware(cat))
	return mcptest.Connect(t, srv, oauth.Unauthenticated([]string{"portfolio:read"}))
}

func TestMiddlewareRefusesWithRetryAfter(t *testing.T) {
	reg := prometheus.NewRegistry()
	l, err := ratelimit.New(limits, nil, reg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	cs := mcpServer(t, l)
	ctx := context.Background()
	callTool := func(name string) error {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: map[string]any{}})
		if err == nil && res.IsError {
			return fmt.Errorf("tool error: %v", res.Content[0].(*mcp.TextContent).Text)
		}
		return err
	}
	if err := callTool("trade_tool"); err != nil {
		t.Fatal(err)
	}
	// The refusal is a tool result the model reads, with the retry-after
	// in its text and in _meta.
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "trade_tool", Arguments: map[string]any{}})
	if err != nil {
		t.Fatalf("second trade: %v, want a tool result", err)
	}
	r, ok := ratelimit.Refused(res)
	if !ok || r.RetryAfterSeconds <= 0 || r.Class != "trade" || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "retry after") {
		t.Errorf("second trade: %+v (%+v %v), want a refusal with a retry-after", res, r, ok)
	}
	if err := callTool("read_tool"); err != nil {
		t.Errorf("reads were limited by the trade budget: %v", err)
	}
	if n := limited(t, reg, "trade"); n != 1 {
		t.Errorf("mcp_rate_limited_total{class=trade} = %v, want 1", n)
	}
}

func TestRedisDownFallsBackToPerReplicaLimits(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Start(t).Addr, MaxRetries: -1})
	l := newLimiter(t, rdb)
	cs := mcpServer(t, l)
	rdb.Close() // the shared store is gone
	ctx := context.Background()
	callTool := func(name string) error {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: map[string]any{}})
		return err
	}
	if err := callTool("read_tool"); err != nil {
		t.Errorf("read with Redis down: %v (reads must keep working)", err)
	}
	if err := callTool("trade_tool"); err != nil {
		t.Errorf("first trade with Redis down: %v (the per-replica budget allows it)", err)
	}
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "trade_tool", Arguments: map[string]any{}}); err != nil {
		t.Fatal(err)
	} else if _, ok := ratelimit.Refused(res); !ok {
		t.Errorf("second trade with Redis down: %+v; the limit must still hold per replica", res)
	}
}

// limited reads mcp_rate_limited_total for class.
func limited(t *testing.T, reg *prometheus.Registry, class string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "mcp_rate_limited_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "class" && lp.GetValue() == class {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
