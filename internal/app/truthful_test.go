package app_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/internal/app"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/redistest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
)

// lossyTrade is a Trade service whose answers to the next lose orders are
// lost after it accepted them: what a dropped connection or a replica that
// died mid-call looks like from the agent's side.
type lossyTrade struct {
	backends.Trade
	lose atomic.Int32
}

func (l *lossyTrade) PlaceOrder(ctx context.Context, r backends.OrderRequest) (backends.Order, error) {
	o, err := l.Trade.PlaceOrder(ctx, r)
	if err == nil && l.lose.Add(-1) >= 0 {
		return backends.Order{}, fmt.Errorf("%w: connection reset after the request was sent", backends.ErrUnavailable)
	}
	return o, err
}

// truthEnv is a trading server on book (its Trade side lossy), with limits
// loose enough that the size of the order, not a rule, is what a re-check
// against its own fill would trip on.
func truthEnv(t *testing.T, book *demo.Backend, redisURL string, extra map[string]string) (*lossyTrade, *testServer, *oauthtest.Issuer) {
	t.Helper()
	setSecrets(t)
	iss := oauthtest.New(t)
	env := tradingEnv(iss, redisURL)
	env["MAX_POSITION_WEIGHT"] = "1"
	env["APPROVAL_NOTIONAL"] = "1000000"
	for k, v := range extra {
		env[k] = v
	}
	lossy := &lossyTrade{Trade: book}
	set := book.Set()
	set.Trade = lossy
	return lossy, startServer(t, env, app.WithBackends(set)), iss
}

func ask(t *testing.T, book *demo.Backend, ticker string) float64 {
	t.Helper()
	qs, err := book.Quotes(t.Context(), []string{ticker})
	if err != nil || len(qs.Quotes) != 1 {
		t.Fatalf("quote %s: %v", ticker, err)
	}
	return qs.Quotes[0].Ask
}

// TestRetryAfterLostAnswerReportsTheOrder: the Trade service filled the
// order and its answer was lost. The agent's retry with the same key must
// report that order, not re-run the pre-trade check against the account
// the fill already changed ("rejected ... not placed" would make the agent
// place it again: a double position).
func TestRetryAfterLostAnswerReportsTheOrder(t *testing.T) {
	for _, side := range []string{"buy", "sell"} {
		t.Run(side, func(t *testing.T) {
			book := demo.New(nil)
			lossy, srv, iss := truthEnv(t, book, "", nil)
			token := iss.Token(t, iss.Claims("anika", "http://127.0.0.1/mcp", allScopes, "ACC-2002"))
			cs := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(token))

			pv, err := book.GetPortfolio(t.Context(), "ACC-2002")
			if err != nil {
				t.Fatal(err)
			}
			// A buy spending 70% of the cash, or a sell of a whole
			// position: either way a second one does not fit.
			ticker, qty := "INTC", math.Floor(0.7*pv.Cash/ask(t, book, "INTC"))
			if side == "sell" {
				ticker, qty = pv.Holdings[0].Ticker, pv.Holdings[0].Quantity
			}
			args := map[string]any{"account_id": "ACC-2002", "ticker": ticker, "side": side, "quantity": qty,
				"idempotency_key": "lost-answer-" + side, "confirm": true}

			lossy.lose.Store(1)
			if msg := callToolError(t, cs, "place_order", args); !strings.Contains(msg, "same idempotency_key") {
				t.Fatalf("first attempt: %q", msg)
			}
			orders := book.Orders()
			if len(orders) != 1 || orders[0].Status != backends.StatusFilled {
				t.Fatalf("the Trade service holds %+v, want one filled order", orders)
			}
			for attempt := range 2 { // the reconciled answer, then the stored one
				var out trading.Outcome
				callTool(t, cs, "place_order", args, &out)
				if out.Status != backends.StatusFilled || out.Order == nil || out.Order.OrderID != orders[0].OrderID || len(out.Violations) > 0 {
					t.Fatalf("retry %d: %+v, want order %s reported filled", attempt, out, orders[0].OrderID)
				}
			}
			if n := len(book.Orders()); n != 1 {
				t.Fatalf("%d orders at the Trade service, want 1", n)
			}
		})
	}
}

// TestRetryDoesNotCountItsOwnApproval: the approval was written and the
// outcome never stored (the replica died in between). The retry finds its
// own approval and reports it; it is never refused for the cash that
// approval holds.
func TestRetryDoesNotCountItsOwnApproval(t *testing.T) {
	rds := redistest.Start(t)
	book := demo.New(nil)
	_, srv, iss := truthEnv(t, book, rds.URL(), map[string]string{"APPROVAL_NOTIONAL": "1000"})
	token := iss.Token(t, iss.Claims("anika", "http://127.0.0.1/mcp", allScopes, "ACC-2002"))
	cs := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(token))

	pv, err := book.GetPortfolio(t.Context(), "ACC-2002")
	if err != nil {
		t.Fatal(err)
	}
	qty := math.Floor(0.7 * pv.Cash / ask(t, book, "INTC"))
	args := map[string]any{"account_id": "ACC-2002", "ticker": "INTC", "side": "buy", "quantity": qty,
		"idempotency_key": "own-approval-1", "confirm": true}
	var first trading.Outcome
	callTool(t, cs, "place_order", args, &first)
	if first.Status != trading.StatusPendingApproval || first.Approval == nil {
		t.Fatalf("first attempt: %+v", first)
	}
	// The outcome record is lost; the approval is not.
	keys := rds.Keys("pmcp:paper:idem:*")
	if len(keys) != 1 {
		t.Fatalf("idempotency records %v, want 1", keys)
	}
	rds.Del(keys...)

	var retry trading.Outcome
	callTool(t, cs, "place_order", args, &retry)
	if retry.Status != trading.StatusPendingApproval || retry.Approval == nil || retry.Approval.ID != first.Approval.ID {
		t.Fatalf("retry: %+v, want the same pending approval %s", retry, first.Approval.ID)
	}
	// A preview with the same key is not held back by it either.
	var pre struct {
		Allowed    bool
		Violations []string
	}
	callTool(t, cs, "preview_order", map[string]any{"account_id": "ACC-2002", "ticker": "INTC", "side": "buy", "quantity": qty}, &pre)
	if pre.Allowed {
		t.Fatalf("a second, different order of the same size should not fit next to the pending one: %+v", pre)
	}
}

// TestWorkingOrderIsNotExecuted: a limit order that rests is reported as
// working, never as executed, and its fills show up as they happen, on
// get_order_status and on a place_order retry.
func TestWorkingOrderIsNotExecuted(t *testing.T) {
	book := demo.New(nil)
	_, srv, iss := truthEnv(t, book, "", nil)
	token := iss.Token(t, iss.Claims("jordan", "http://127.0.0.1/mcp", allScopes, "ACC-1001"))
	cs := connect(t, srv.URL+"/mcp", "2026-07-28", bearer(token))

	limit := math.Round(ask(t, book, "KO")*0.9*100) / 100
	args := map[string]any{"account_id": "ACC-1001", "ticker": "KO", "side": "buy", "quantity": 10,
		"order_type": "limit", "limit_price": limit, "idempotency_key": "resting-1", "confirm": true}
	var out trading.Outcome
	callTool(t, cs, "place_order", args, &out)
	if out.Status != backends.StatusAccepted || out.Order == nil || out.Order.FilledQuantity != 0 ||
		!strings.Contains(out.Message, "working") || strings.Contains(out.Message, "executed") {
		t.Fatalf("resting order: %+v", out)
	}
	id := out.Order.OrderID

	if _, err := book.Fill(id, 4); err != nil {
		t.Fatal(err)
	}
	var st trading.Outcome
	callTool(t, cs, "get_order_status", map[string]any{"id": id}, &st)
	if st.Status != backends.StatusPartiallyFilled || st.Order.FilledQuantity != 4 || st.Order.AveragePrice != limit {
		t.Fatalf("after a partial fill: %+v", st)
	}
	if _, err := book.Fill(id, 6); err != nil {
		t.Fatal(err)
	}
	var replay trading.Outcome
	callTool(t, cs, "place_order", args, &replay)
	if replay.Status != backends.StatusFilled || replay.Order.FilledQuantity != 10 || !replay.Replayed {
		t.Fatalf("retry after the fill: %+v", replay)
	}
	// Cancelling a filled order is refused, and says what it is.
	if msg := callToolError(t, cs, "cancel_order", map[string]any{"id": id}); !strings.Contains(msg, "only a pending approval or a working order") {
		t.Fatalf("cancel after fill: %q", msg)
	}
}

// TestFrozenRedisDoesNotStallReads: with Redis stopped mid-flight (its
// connections open, nothing answering), every read still answers within
// the backend timeout (here as the client's deadline): the rate limiter
// falls back to this replica's buckets. place_order fails closed, also
// within that time, with an actionable message.
func TestFrozenRedisDoesNotStallReads(t *testing.T) {
	rds := redistest.Start(t)
	book := demo.New(nil)
	_, srv, iss := truthEnv(t, book, rds.URL(), map[string]string{"BACKEND_TIMEOUT": "2s", "EXECUTION_LEASE": "5s"})
	token := iss.Token(t, iss.Claims("jordan", "http://127.0.0.1/mcp", allScopes, "ACC-1001"))
	cs := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(token))
	var out trading.Outcome
	callTool(t, cs, "place_order", confirmedArgs("ACC-1001", "before-freeze-1", 1), &out) // warm the pool

	rds.Freeze()
	defer rds.Thaw()
	within := func(name string, args map[string]any) (string, bool) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			t.Fatalf("%s with Redis frozen: %v", name, err)
		}
		return resultText(res), res.IsError
	}
	for i := range 10 {
		if text, isErr := within("get_portfolio", map[string]any{"account_id": "ACC-1001"}); isErr {
			t.Fatalf("read %d with Redis frozen: %s", i, text)
		}
	}
	text, isErr := within("place_order", confirmedArgs("ACC-1001", "during-freeze-1", 1))
	if !isErr || !strings.Contains(text, "no order was placed") {
		t.Fatalf("place_order with Redis frozen: %v %q, want a fail-closed refusal", isErr, text)
	}
}

// TestStoreDataLoss: Redis lost everything (restart without persistence,
// failover to a replica that had not caught up). A filled order's retry
// still reports it, from the Trade service; a lost pending approval never
// reappears as a ghost, and the retry creates it again, once.
func TestStoreDataLoss(t *testing.T) {
	rds := redistest.Start(t)
	book := demo.New(nil)
	_, srv, iss := truthEnv(t, book, rds.URL(), map[string]string{"APPROVAL_NOTIONAL": "50000"})
	aud := "http://127.0.0.1/mcp"
	alice := iss.Token(t, iss.Claims("alice", aud, "portfolio:read trade:write", "ACC-2001"))
	bob := iss.Token(t, iss.Claims("bob", aud, "portfolio:read trade:approve", "ACC-2001"))
	cs := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(alice))

	small := confirmedArgs("ACC-2001", "loss-small-1", 10)
	var filled trading.Outcome
	callTool(t, cs, "place_order", small, &filled)
	big := confirmedArgs("ACC-2001", "loss-big-1", 1000)
	var pending trading.Outcome
	callTool(t, cs, "place_order", big, &pending)
	if filled.Status != backends.StatusFilled || pending.Status != trading.StatusPendingApproval {
		t.Fatalf("before the loss: %+v / %+v", filled, pending)
	}

	rds.FlushAll()

	var again trading.Outcome
	callTool(t, cs, "place_order", small, &again)
	if again.Status != backends.StatusFilled || again.Order.OrderID != filled.Order.OrderID {
		t.Fatalf("filled order after the loss: %+v", again)
	}
	csBob := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(bob))
	var queue struct{ Approvals []trading.Approval }
	callTool(t, csBob, "list_pending_approvals", nil, &queue)
	if len(queue.Approvals) != 0 {
		t.Fatalf("approvals after the loss: %+v, want none (no ghosts)", queue.Approvals)
	}
	if msg := callToolError(t, cs, "get_order_status", map[string]any{"id": pending.Approval.ID}); !strings.Contains(msg, "no such order or approval") {
		t.Fatalf("status of the lost approval: %q", msg)
	}
	var recreated trading.Outcome
	callTool(t, cs, "place_order", big, &recreated)
	if recreated.Status != trading.StatusPendingApproval || recreated.Approval.ID != pending.Approval.ID {
		t.Fatalf("retry of the lost approval: %+v", recreated)
	}
	callTool(t, csBob, "list_pending_approvals", nil, &queue)
	if len(queue.Approvals) != 1 {
		t.Fatalf("approvals after the retry: %d, want 1", len(queue.Approvals))
	}
	if code, body := decide(t, srv.URL, bob, pending.Approval.ID, "approve"); code != 200 || body["status"] != backends.StatusFilled {
		t.Fatalf("approving the recreated approval: %d %v", code, body)
	}
	if n := len(book.Orders()); n != 2 {
		t.Fatalf("%d orders at the Trade service, want 2", n)
	}
}
