package audit_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/mcptest"
)

// session serves a read tool, a trade tool that annotates its event, a
// failing tool and a denying tool behind the audit middleware, as
// principal "alice", and returns a go-sdk client connected over HTTP.
func session(t *testing.T, a *audit.Auditor) (*mcp.ClientSession, *int) {
	t.Helper()
	executed := new(int)
	srv := mcp.NewServer(&mcp.Implementation{Name: "t", Version: "1"}, nil)
	ok := func(ctx context.Context, _ *mcp.CallToolRequest, _ map[string]any) (*mcp.CallToolResult, any, error) {
		*executed++
		if err := a.Journal().RecordDone(ctx, audit.Step{Action: "order.executed", OrderID: "ORD-1", IdempotencyKey: "idem-9"}); err != nil {
			return nil, nil, err
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	}
	mcp.AddTool(srv, &mcp.Tool{Name: "read_tool"}, ok)
	mcp.AddTool(srv, &mcp.Tool{Name: "trade_tool"}, ok)
	mcp.AddTool(srv, &mcp.Tool{Name: "broken_tool"}, func(context.Context, *mcp.CallToolRequest, map[string]any) (*mcp.CallToolResult, any, error) {
		return nil, nil, errors.New("backend unavailable (ref r1)")
	})
	cat := catalog.New()
	for name, class := range map[string]catalog.Class{"read_tool": catalog.Read, "trade_tool": catalog.Trade, "broken_tool": catalog.Read, "guarded_tool": catalog.Trade} {
		cat.Add(catalog.Tool{Name: name, Class: class})
	}
	mcp.AddTool(srv, &mcp.Tool{Name: "guarded_tool"}, ok)
	deny := func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if p, ok := req.GetParams().(*mcp.CallToolParamsRaw); ok && p.Name == "guarded_tool" {
				return nil, &outcome.Refused{Outcome: outcome.Denied, Reason: "insufficient scope", Err: &jsonrpc.Error{Code: -32003, Message: "insufficient scope"}}
			}
			return next(ctx, method, req)
		}
	}
	srv.AddReceivingMiddleware(outcome.Deliver(call.ResultsTyped), call.Bind(), a.Middleware(cat), deny)
	asAlice := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r.WithContext(principal.With(r.Context(), principal.Principal{Subject: "alice", ClientID: "agent"})))
		})
	}
	return mcptest.Connect(t, srv, asAlice), executed
}

func TestMiddlewareRecordsEveryCall(t *testing.T) {
	rcv := newReceiver(t)
	a, _ := newAuditor(t, audit.Config{Sink: rcv.srv.URL, QueueSize: 16}, io.Discard)
	cs, _ := session(t, a)
	ctx := context.Background()
	cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_tool", Arguments: map[string]any{"account_id": "ACC-1", "password": "hunter2"}})
	cs.CallTool(ctx, &mcp.CallToolParams{Name: "trade_tool", Arguments: map[string]any{}})
	cs.CallTool(ctx, &mcp.CallToolParams{Name: "broken_tool", Arguments: map[string]any{}})
	cs.CallTool(ctx, &mcp.CallToolParams{Name: "guarded_tool", Arguments: map[string]any{}})
	cs.CallTool(ctx, &mcp.CallToolParams{Name: "no_such_tool", Arguments: map[string]any{}})
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]audit.Event{}
	for _, ev := range rcv.received() {
		var e audit.Event
		if err := ev.DataAs(&e); err != nil {
			t.Fatal(err)
		}
		if _, dup := got[e.Tool]; dup {
			t.Errorf("two events for %s", e.Tool)
		}
		got[e.Tool] = e
	}
	want := map[string]outcome.Outcome{
		"read_tool": outcome.OK, "trade_tool": outcome.OK, "broken_tool": outcome.ToolError,
		"guarded_tool": outcome.Denied, "no_such_tool": outcome.Failed,
	}
	if len(got) != len(want) {
		t.Errorf("events for %d tools, want %d: %v", len(got), len(want), got)
	}
	for tool, o := range want {
		e := got[tool]
		if e.Outcome != o || e.Principal != "alice" || e.ClientID != "agent" {
			t.Errorf("%s: %+v, want outcome %s by alice", tool, e, o)
		}
	}
	if e := got["trade_tool"]; e.OrderID != "ORD-1" || e.IdempotencyKey != "idem-9" || e.Class != catalog.Trade ||
		len(e.Steps) != 1 || e.Steps[0].Action != "order.executed" {
		t.Errorf("annotations lost: %+v", e)
	}
	if e := got["read_tool"]; e.Args["password"] != audit.Redacted || e.Args["account_id"] != "ACC-1" {
		t.Errorf("args = %v", e.Args)
	}
	if e := got["broken_tool"]; !strings.Contains(e.Error, "backend unavailable") {
		t.Errorf("tool error not recorded: %+v", e)
	}
}

func TestMiddlewareFailsClosedForTrades(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setStatus(http.StatusServiceUnavailable)
	a, _ := newAuditor(t, audit.Config{Sink: rcv.srv.URL, QueueSize: 16}, io.Discard)
	defer a.Close(context.Background())
	cs, executed := session(t, a)
	ctx := context.Background()

	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_tool", Arguments: map[string]any{}})
	if err != nil || res.IsError {
		t.Fatalf("read with the sink down: %v %+v (reads degrade gracefully)", err, res)
	}
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "trade_tool", Arguments: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	text := ""
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			text += tc.Text
		}
	}
	if !res.IsError || !strings.Contains(text, "could not be recorded") || strings.Contains(text, "done") {
		t.Fatalf("unrecorded trade returned %q (isError %v); want its result withheld", text, res.IsError)
	}
	if *executed != 2 {
		t.Fatalf("executed %d", *executed)
	}
}

// TestReadWithEffectsIsRecordedAtOnce: a read whose handler took a step to
// its effect (get_order_status executing an approved order) is recorded
// synchronously, not queued: with the queue full, it would be lost.
func TestReadWithEffectsIsRecordedAtOnce(t *testing.T) {
	rcv := newReceiver(t)
	a, reg := newAuditor(t, audit.Config{Sink: rcv.srv.URL, QueueSize: 1}, io.Discard)
	cs, _ := session(t, a)
	ctx := context.Background()
	rcv.holdRequests()
	// Plain reads until the workers are held at the sink and the queue is
	// full: one of them was dropped.
	for i := 0; metric(t, reg, "audit_events_dropped_total", "reason", "queue_full") == 0; i++ {
		if i == 100 {
			t.Fatal("the queue never filled")
		}
		cs.CallTool(ctx, &mcp.CallToolParams{Name: "broken_tool", Arguments: map[string]any{}})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_tool", Arguments: map[string]any{}})
	}()
	for reached := false; !reached; {
		select {
		case subject := <-rcv.held:
			reached = subject == "read_tool" // its own delivery, at the sink
		case <-done:
			t.Fatal("the read that executed an order returned without delivering its record")
		}
	}
	rcv.release()
	<-done
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ev := range rcv.received() {
		var e audit.Event
		if ev.DataAs(&e) == nil && e.Tool == "read_tool" && len(e.Steps) == 1 {
			return
		}
	}
	t.Error("the read's record, with its step, never reached the sink")
}

// TestJournalRedactsDetail: a step's free text (an approver's reject
// reason) is redacted like arguments before it is recorded.
func TestJournalRedactsDetail(t *testing.T) {
	rcv := newReceiver(t)
	a, _ := newAuditor(t, audit.Config{Sink: rcv.srv.URL, QueueSize: 16}, io.Discard)
	reason := "rejected: use Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln instead"
	if err := a.Journal().Record(context.Background(), audit.Step{Action: "approval.decided", Principal: "carol", Detail: reason}); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs := rcv.received()
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	var e audit.Event
	evs[0].DataAs(&e)
	if d, _ := e.Args["detail"].(string); strings.Contains(string(evs[0].Data()), "eyJ") || !strings.Contains(d, audit.Redacted) || !strings.HasPrefix(d, "rejected: use") {
		t.Errorf("detail recorded as %q", d)
	}
}
