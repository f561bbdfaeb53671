package trading_test

// Tests of what the pre-trade check and the order answers must not get
// wrong: what resting orders hold, quotes that cannot size an order, exact
// prices, complete lists, and unanswered sends that can no longer land.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

func koQuote(t *testing.T) backends.Quote {
	t.Helper()
	qs, err := demo.New(nil).Quotes(t.Context(), []string{"KO"})
	if err != nil || len(qs.Quotes) != 1 {
		t.Fatal(qs, err)
	}
	return qs.Quotes[0]
}

// TestWorkingOrdersHoldCashAndShares: a resting sell of a whole position
// leaves no shares for a second one, and a resting buy's cash is not
// spent again by the next.
func TestWorkingOrdersHoldCashAndShares(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, open(t))
			ctx := t.Context()
			q := koQuote(t)
			// ACC-1002 holds 500 KO. A sell limit 3% above the bid rests.
			sellLimit := float64(int(q.Bid*1.03*100)) / 100
			sell := func(key string) trading.OrderArgs {
				return trading.OrderArgs{AccountID: "ACC-1002", Ticker: "KO", Side: "sell", Type: "limit", Quantity: 500, LimitPrice: sellLimit, IdempotencyKey: key}
			}
			first, err := f.svc.Place(ctx, bob, sell("rest-sell-1"), "")
			if err != nil || first.Status != backends.StatusAccepted {
				t.Fatalf("first resting sell: %+v %v", first, err)
			}
			second, err := f.svc.Place(ctx, bob, sell("rest-sell-2"), "")
			if err != nil {
				t.Fatal(err)
			}
			if second.Status != trading.StatusRejected {
				t.Errorf("second sell of the same 500 KO (500 already in a working sell): status %q, want rejected (no short sales)", second.Status)
			}
			// ACC-1001 has 25,400 cash; two resting buys of ~20k each.
			buyLimit := float64(int(q.Ask*0.99*100)) / 100
			buy := func(key string) trading.OrderArgs {
				return trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "limit", Quantity: 300, LimitPrice: buyLimit, IdempotencyKey: key}
			}
			b1, err := f.svc.Place(ctx, alice, buy("rest-buy-1"), "")
			if err != nil || b1.Status != backends.StatusAccepted {
				t.Fatalf("first resting buy: %+v %v", b1, err)
			}
			pre, err := f.svc.Preview(ctx, alice, buy(""))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("preview of the second buy: buying_power=%.2f committed_cash=%.2f notional=%.2f allowed=%v", pre.BuyingPower, pre.CommittedCash, pre.EstimatedNotional, pre.Allowed)
			b2, err := f.svc.Place(ctx, alice, buy("rest-buy-2"), "")
			if err != nil {
				t.Fatal(err)
			}
			if b2.Status != trading.StatusRejected {
				t.Errorf("second buy needing %.2f more with %.2f already in a working buy and 25,400 cash: status %q, want rejected (insufficient buying power)",
					pre.EstimatedNotional, b1.Order.Quantity*b1.Order.LimitPrice, b2.Status)
			}
		})
	}
}

// oneSided quotes KO with no offer (ask 0), as a feed does pre-open, in a
// halt or limit-up.
type oneSided struct{ backends.MarketData }

func (o oneSided) Quotes(ctx context.Context, tickers []string) (backends.QuoteSet, error) {
	qs, err := o.MarketData.Quotes(ctx, tickers)
	for i := range qs.Quotes {
		qs.Quotes[i].Ask = 0
	}
	return qs, err
}

// TestMarketOrderWithoutItsSideOfTheQuote: with the collar off, a market
// buy on a quote with no ask would be sized at 0 and pass every limit.
func TestMarketOrderWithoutItsSideOfTheQuote(t *testing.T) {
	d := demo.New(nil)
	bs := d.Set()
	bs.MarketData = oneSided{bs.MarketData}
	rules := policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.5, Collar: 0}
	svc := trading.New(trading.Config{Rules: rules, ApprovalTTL: 30 * time.Minute}, store.NewMemory(nil), bs, &journal{}, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	// 1,000,000 KO (~70M) in an account with 25,400 cash.
	pre, err := svc.Preview(t.Context(), alice, trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	if pre.Allowed || !strings.Contains(strings.Join(pre.Violations, ";"), "no ask") {
		t.Errorf("a 1,000,000-share market buy with no ask: allowed=%v, notional %.2f, violations %q; want it refused for want of an ask",
			pre.Allowed, pre.EstimatedNotional, pre.Violations)
	}
}

// otherCurrency quotes in another currency than the account's base (USD).
type otherCurrency struct {
	backends.MarketData
	cur string
}

func (o otherCurrency) Quotes(ctx context.Context, tickers []string) (backends.QuoteSet, error) {
	qs, err := o.MarketData.Quotes(ctx, tickers)
	for i := range qs.Quotes {
		qs.Quotes[i].Currency = o.cur
	}
	return qs, err
}

// TestQuoteInAnotherCurrency: limits are in the account's base currency,
// and nothing converts, so an order quoted in another one is refused.
func TestQuoteInAnotherCurrency(t *testing.T) {
	d := demo.New(nil)
	bs := d.Set()
	bs.MarketData = otherCurrency{bs.MarketData, "KWD"}
	rules := policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.5, Collar: 0.05}
	svc := trading.New(trading.Config{Rules: rules, ApprovalTTL: 30 * time.Minute}, store.NewMemory(nil), bs, &journal{}, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	pre, err := svc.Preview(t.Context(), alice, trading.OrderArgs{AccountID: "ACC-2001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 100})
	if err != nil {
		t.Fatal(err)
	}
	if pre.Allowed {
		t.Errorf("a USD account's order priced in KWD is allowed (notional %.2f compared with USD limits as is); want a violation (currency mismatch) or a converted estimate", pre.EstimatedNotional)
	}
}

// TestListOrdersPagesPastAThousand: pages follow the cursor through the
// whole index, the oldest (still working) order included.
func TestListOrdersPagesPastAThousand(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	q := koQuote(t)
	// The oldest order is a resting buy: open.
	oldest := trading.OrderArgs{AccountID: "ACC-2001", Ticker: "KO", Side: "buy", Type: "limit", Quantity: 1,
		LimitPrice: float64(int(q.Ask*0.99*100)) / 100, IdempotencyKey: "list-oldest"}
	if out, err := f.svc.Place(ctx, alice, oldest, ""); err != nil || out.Status != backends.StatusAccepted {
		t.Fatalf("%+v %v", out, err)
	}
	for i := range 1000 {
		f.clock.Add(time.Second)
		o := trading.OrderArgs{AccountID: "ACC-2001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 1, IdempotencyKey: fmt.Sprintf("list-%04d", i)}
		if _, err := f.svc.Place(ctx, alice, o, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Every page, following next_cursor.
	seen, cursor, pages := 0, "", 0
	foundOldest := false
	for {
		l, err := f.svc.ListOrders(ctx, alice, trading.ListQuery{AccountID: "ACC-2001", Limit: 50, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, o := range l.Orders {
			seen++
			foundOldest = foundOldest || o.IdempotencyKey == "list-oldest"
		}
		if l.NextCursor == "" {
			break
		}
		cursor = l.NextCursor
	}
	// The open ones, following the cursors (a page reads a bounded number
	// of entries, and may come back short with a cursor).
	openOrders := 0
	for cursor = ""; ; {
		l, err := f.svc.ListOrders(ctx, alice, trading.ListQuery{AccountID: "ACC-2001", Limit: 50, States: []string{"open"}, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		openOrders += len(l.Orders)
		if cursor = l.NextCursor; cursor == "" {
			break
		}
	}
	if seen != 1001 || !foundOldest || openOrders != 1 {
		t.Errorf("paging through 1,001 orders listed %d in %d pages (oldest, still working, listed: %v); states=[open] lists %d, want 1",
			seen, pages, foundOldest, openOrders)
	}
}

// TestRefusedOrderIsNotListed: a place_order refused with an error, nothing
// placed (here: the pending-approval cap), is no open order.
func TestRefusedOrderIsNotListed(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, open(t))
			svc := f.capped(1)
			ctx := t.Context()
			if out, err := svc.Place(ctx, alice, large("cap-list-1"), ""); err != nil || out.Status != trading.StatusPendingApproval {
				t.Fatalf("%+v %v", out, err)
			}
			if _, err := svc.Place(ctx, alice, large("cap-list-2"), ""); !errors.Is(err, trading.ErrTooManyPending) {
				t.Fatalf("second: %v, want ErrTooManyPending", err)
			}
			f.clock.Add(time.Minute)
			l, err := svc.ListOrders(ctx, alice, trading.ListQuery{AccountID: "ACC-2001", Limit: 20, States: []string{"open"}})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range l.Orders {
				if o.IdempotencyKey == "cap-list-2" {
					t.Errorf("the refused order (nothing placed) is listed as open: status %q, %q", o.Status, o.Message)
				}
			}
		})
	}
}

// TestLimitPriceOnTheTickAndShownExactly: a limit finer than the tick is
// refused, and the user confirms the limit exactly as it is sent.
func TestLimitPriceOnTheTickAndShownExactly(t *testing.T) {
	f := newOrderFlow(t, "paper", true)
	q := koQuote(t)
	base := float64(int(q.Ask*0.99*100)) / 100
	for _, c := range []struct {
		limit   float64
		refused bool
	}{{base + 0.0049, true}, {base + 0.001, true}, {base, false}} {
		o := trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "limit", Quantity: 10, LimitPrice: c.limit, IdempotencyKey: fmt.Sprintf("tick-%g", c.limit)}
		pl, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Askable: true})
		if err != nil {
			t.Fatal(err)
		}
		if c.refused {
			if pl.Outcome.Status != trading.StatusRejected || !strings.Contains(strings.Join(pl.Outcome.Violations, ";"), "tick size 0.01") {
				t.Errorf("limit %g: %+v, want rejected for the tick size", c.limit, pl.Outcome)
			}
			continue
		}
		if shown := strconv.FormatFloat(c.limit, 'f', 2, 64); pl.Ask == nil || !strings.Contains(pl.Ask.Message, "limit order at "+shown+" ") {
			t.Errorf("limit %g: the user is asked %+v, want the limit shown as %s", c.limit, pl.Ask, shown)
		}
	}
}

// TestOnlyTheExactRequesterWithdraws: "ALICE" is another OIDC subject
// (subjects are case-sensitive), and may not withdraw alice's approval.
func TestOnlyTheExactRequesterWithdraws(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, open(t))
			ctx := t.Context()
			out, err := f.svc.Place(ctx, alice, large("fold-1"), "")
			if err != nil || out.Approval == nil {
				t.Fatalf("%+v %v", out, err)
			}
			other := principal.Principal{Subject: "ALICE", Accounts: alice.Accounts}
			if got, err := f.svc.Cancel(ctx, other, out.Approval.ID); err == nil {
				t.Errorf("another subject (%q) withdrew %q's approval: %q", other.Subject, alice.Subject, got.Status)
			}
		})
	}
}

// TestCancelOfAFilledOrderJournalsNoCancel: the trail shows no cancel of an
// order that had filled.
func TestCancelOfAFilledOrderJournalsNoCancel(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	out, err := f.svc.Place(ctx, alice, small("cancel-filled"), "")
	if err != nil || out.Status != backends.StatusFilled {
		t.Fatalf("%+v %v", out, err)
	}
	if _, err := f.svc.Cancel(ctx, alice, out.Order.OrderID); !errors.Is(err, trading.ErrNotCancellable) {
		t.Fatalf("cancel of a filled order: %v", err)
	}
	f.j.mu.Lock()
	defer f.j.mu.Unlock()
	for _, e := range f.j.entries {
		if e.OrderID == out.Order.OrderID && strings.HasPrefix(e.Action, "order.cancel") {
			t.Errorf("journal has %q for filled order %s (never cancelled); last entry %q", e.Action, e.OrderID, f.j.entries[len(f.j.entries)-1].Action)
		}
	}
}

// TestStaleUnansweredSendIsCheckedAfresh: an unanswered send is resent
// unchecked only while it may still land; five days later, on a Saturday
// with market hours enforced, the retry is checked and refused.
func TestStaleUnansweredSendIsCheckedAfresh(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			svc, ct, _ := staleSend(t, open(t), func(ct *countingTrade) backends.Trade { return ct }, "stale-1")
			ctx := t.Context()
			if pre, _ := svc.Preview(ctx, alice, small("")); pre.MarketOpen {
				t.Fatal("market should be closed")
			}
			pl, err := svc.PlaceOrder(ctx, alice, small("stale-1"), trading.Confirmation{})
			if err == nil && pl.Outcome.Order != nil || ct.orders() != 0 {
				t.Fatalf("retry five days later, on a Saturday, sent the order unchecked: %+v %v (Trade orders: %d)", pl.Outcome, err, ct.orders())
			}
			// Confirmed again, it is checked: the market is closed.
			pl, err = svc.PlaceOrder(ctx, alice, small("stale-1"), trading.Confirmation{Claimed: true})
			if err != nil || pl.Outcome.Status != trading.StatusRejected || ct.orders() != 0 {
				t.Errorf("confirmed retry on a Saturday: %+v %v (Trade orders: %d), want rejected (market closed)", pl.Outcome, err, ct.orders())
			}
		})
	}
}

// TestStaleApprovedExecutionIsCheckedAfresh: an approved order whose send
// got no answer is resent as it is only while the send may still land;
// re-driven days later, it is checked again, and the closed market fails it.
func TestStaleApprovedExecutionIsCheckedAfresh(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, open(t))
			d := demo.New(nil)
			rules := policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.5, EnforceMarketHours: true, Calendar: mustNYSE(t)}
			svc := trading.New(trading.Config{Rules: rules, ApprovalTTL: 24 * time.Hour, Lease: 10 * time.Second}, f.st,
				backends.Set{Portfolio: d, MarketData: d, Trade: f.trade}, f.j, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), f.clock.Now)
			ctx := t.Context()
			f.clock.now = time.Date(2026, 11, 23, 11, 0, 0, 0, rules.Calendar.Location()) // Monday, in session
			out, err := svc.Place(ctx, alice, large("stale-approved"), "")
			if err != nil || out.Approval == nil {
				t.Fatalf("%+v %v", out, err)
			}
			f.trade.fail.Store(true)
			if _, err := svc.Decide(ctx, bob, out.Approval.ID, trading.DecisionApprove, "ok", nil); !errors.Is(err, trading.ErrTradeUnavailable) {
				t.Fatalf("approve with the Trade service silent: %v", err)
			}
			f.trade.fail.Store(false)
			f.clock.Add(5 * 24 * time.Hour) // Saturday
			got, err := svc.Status(ctx, alice, out.Approval.ID)
			if err != nil || f.trade.orders() != 0 || got.Approval == nil || got.Approval.Status != trading.ApprovalFailed || !strings.Contains(got.Message+got.Approval.Error, "closed") {
				t.Errorf("re-driven on a Saturday: %+v %v (Trade orders %d), want failed: market closed", got, err, f.trade.orders())
			}
		})
	}
}

// staleSend is a service enforcing market hours on which the order of key
// was sent on Monday 2026-11-23, in session, and never answered (the Trade
// service, wrapped by trade, silent); its clock is then five days later,
// Saturday, the market closed.
func staleSend(t *testing.T, st store.Store, trade func(*countingTrade) backends.Trade, key string) (*trading.Service, *countingTrade, *clock) {
	t.Helper()
	f, _ := controlled(t, st, policy.DailyLimits{}, 0)
	d := demo.New(nil)
	bs := d.Set()
	ct := &countingTrade{Trade: d, created: map[string]bool{}}
	bs.Trade = trade(ct)
	rules := policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.5, EnforceMarketHours: true, Calendar: mustNYSE(t)}
	svc := trading.New(trading.Config{Rules: rules, ApprovalTTL: 30 * time.Minute, Lease: 10 * time.Second}, f.st, bs, f.j, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), f.clock.Now)
	ct.fail.Store(true)
	if _, err := svc.PlaceOrder(t.Context(), alice, small(key), trading.Confirmation{Claimed: true}); !errors.Is(err, trading.ErrTradeUnavailable) {
		t.Fatalf("first attempt: %v", err)
	}
	ct.fail.Store(false)
	f.clock.Add(5 * 24 * time.Hour)
	return svc, ct, f.clock
}

func mustNYSE(t *testing.T) *calendar.Calendar {
	t.Helper()
	c, err := calendar.NYSE(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// blockingTrade blocks the first OrderByClientID after armed is set until
// release is closed.
type blockingTrade struct {
	*countingTrade
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (b *blockingTrade) OrderByClientID(ctx context.Context, id string) (backends.Order, error) {
	if b.armed.CompareAndSwap(true, false) {
		close(b.entered)
		<-b.release
	}
	return b.countingTrade.Trade.OrderByClientID(ctx, id)
}

// TestStaleSendStaysStaleThroughALapsedClaim: a retry past the resend window
// whose claim lapses (slow Trade lookup, crash) leaves a lease marked Sent
// without SentAt; the next retry then takes it for a pre-SentAt record and
// resends the order unchecked, days later, on a Saturday.
func TestStaleSendStaysStaleThroughALapsedClaim(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			var bt *blockingTrade
			svc, ct, clock := staleSend(t, open(t), func(ct *countingTrade) backends.Trade {
				bt = &blockingTrade{countingTrade: ct, entered: make(chan struct{}), release: make(chan struct{})}
				return bt
			}, "stale-2")
			ctx := t.Context()
			// Attempt A: claims the key, then hangs asking the Trade service.
			bt.armed.Store(true)
			doneA := make(chan struct{})
			go func() {
				defer close(doneA)
				svc.Place(context.WithoutCancel(ctx), alice, small("stale-2"), "")
			}()
			<-bt.entered
			clock.Add(time.Minute) // A's lease lapses
			// Attempt B, unconfirmed.
			pl, err := svc.PlaceOrder(ctx, alice, small("stale-2"), trading.Confirmation{})
			close(bt.release)
			<-doneA
			if ct.orders() != 0 {
				t.Fatalf("retry five days after an unanswered send, on a Saturday, was sent unchecked: %+v %v (Trade orders: %d)", pl.Outcome, err, ct.orders())
			}
		})
	}
}

// haltedTrade accepts market orders and fills none of them (a halted
// stock): they work, unfilled.
type haltedTrade struct {
	backends.Trade
	mu     sync.Mutex
	seq    int
	orders map[string]backends.Order
}

func (h *haltedTrade) PlaceOrder(ctx context.Context, r backends.OrderRequest) (backends.Order, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range h.orders {
		if o.ClientOrderID == r.ClientOrderID {
			return o, nil
		}
	}
	h.seq++
	o := backends.Order{OrderID: fmt.Sprintf("ORD-H%07d", h.seq), ClientOrderID: r.ClientOrderID, AccountID: r.AccountID, Ticker: r.Ticker,
		Side: r.Side, Type: r.Type, Quantity: r.Quantity, LimitPrice: r.LimitPrice, Status: backends.StatusAccepted}
	h.orders[o.OrderID] = o
	return o, nil
}

func (h *haltedTrade) GetOrder(ctx context.Context, id string) (backends.Order, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if o, ok := h.orders[id]; ok {
		return o, nil
	}
	return backends.Order{}, backends.ErrNotFound
}

func (h *haltedTrade) OrderByClientID(ctx context.Context, id string) (backends.Order, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range h.orders {
		if o.ClientOrderID == id {
			return o, nil
		}
	}
	return backends.Order{}, backends.ErrNotFound
}

// TestUnfilledMarketBuyHoldsCash: a working market buy with no fill
// yet (the halted stock the code names) holds 0 cash, so a second buy
// spends the same cash.
func TestUnfilledMarketBuyHoldsCash(t *testing.T) {
	svc, _ := haltedMarket(t, 1e6)
	ctx := t.Context()
	// ACC-1001 has 25,400 cash; 300 KO is ~19k.
	buy := func(key string) trading.OrderArgs {
		return trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 300, IdempotencyKey: key}
	}
	first, err := svc.Place(ctx, alice, buy("halted-1"), "")
	if err != nil || first.Status != backends.StatusAccepted {
		t.Fatalf("first: %+v %v", first, err)
	}
	pre, err := svc.Preview(ctx, alice, buy(""))
	if err != nil {
		t.Fatal(err)
	}
	second, err := svc.Place(ctx, alice, buy("halted-2"), "")
	if err != nil {
		t.Fatal(err)
	}
	if second.Status != trading.StatusRejected {
		t.Errorf("a second ~%.0f market buy with a first one working unfilled and 25,400 cash: %q (committed_cash %.2f), want rejected", pre.EstimatedNotional, second.Status, pre.CommittedCash)
	}
}

// TestUnknownTickerIsNamed: an order for a ticker the market data does not
// know says so, not that the (readable) account was not found.
func TestUnknownTickerIsNamed(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	o := trading.OrderArgs{AccountID: "ACC-1001", Ticker: "ZZZZ", Side: "buy", Type: "market", Quantity: 1, IdempotencyKey: "zzzz-1"}
	_, perr := f.svc.Preview(t.Context(), alice, o)
	_, err := f.svc.Place(t.Context(), alice, o, "")
	for _, err := range []error{perr, err} {
		if !errors.Is(err, trading.ErrUnknownTicker) || !strings.Contains(err.Error(), `"ZZZZ"`) || strings.Contains(err.Error(), "account") {
			t.Errorf("unknown ticker: %v", err)
		}
	}
}

// TestCancellingTwiceIsHarmless: the second cancel of a cancelled order
// answers with the cancelled order, as cancel_order's description promises
// (an agent retrying after a lost answer must not conclude it failed); a
// filled order is not cancellable, and the agent is told its state.
func TestCancellingTwiceIsHarmless(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	out := restingBuy(t, f, "cancel-twice")
	for i := range 2 {
		got, err := f.svc.Cancel(ctx, alice, out.Order.OrderID)
		if err != nil || got.Status != backends.StatusCancelled {
			t.Errorf("cancel %d: %+v %v, want the cancelled order", i+1, got, err)
		}
	}
	filled, err := f.svc.Place(ctx, alice, small("cancel-filled-2"), "")
	if err != nil || filled.Status != backends.StatusFilled {
		t.Fatalf("%+v %v", filled, err)
	}
	if _, err := f.svc.Cancel(ctx, alice, filled.Order.OrderID); !errors.Is(err, trading.ErrNotCancellable) || !strings.Contains(err.Error(), "is filled") {
		t.Errorf("cancel of a filled order: %v", err)
	}
}

// missingMD stops quoting a ticker (halted / suspended): it is listed under
// Missing, as the contract says unknown tickers are.
type missingMD struct {
	backends.MarketData
	gone atomic.Value // string
}

func (m *missingMD) Quotes(ctx context.Context, tickers []string) (backends.QuoteSet, error) {
	g, _ := m.gone.Load().(string)
	var keep []string
	var missing []string
	for _, t := range tickers {
		if strings.EqualFold(t, g) {
			missing = append(missing, t)
		} else {
			keep = append(keep, t)
		}
	}
	qs, err := m.MarketData.Quotes(ctx, keep)
	qs.Missing = append(qs.Missing, missing...)
	return qs, err
}

// TestUnquotedWorkingMarketBuyIsUnknown: a market buy working unfilled
// whose stock the market data stops quoting holds an unknown amount: the
// next placement fails closed instead of counting it as nothing.
func TestUnquotedWorkingMarketBuyIsUnknown(t *testing.T) {
	svc, md := haltedMarket(t, 1e6)
	ctx := t.Context()
	// ACC-1001 has 25,400 cash; 300 KO is ~19k, working unfilled.
	first, err := svc.Place(ctx, alice, trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 300, IdempotencyKey: "halted-ko"}, "")
	if err != nil || first.Status != backends.StatusAccepted {
		t.Fatalf("first: %+v %v", first, err)
	}
	md.gone.Store("KO") // the market data stops quoting the halted stock
	qs, _ := md.MarketData.Quotes(ctx, []string{"PEP"})
	qty := float64(int(19000 / qs.Quotes[0].Ask))
	pep := trading.OrderArgs{AccountID: "ACC-1001", Ticker: "PEP", Side: "buy", Type: "market", Quantity: qty, IdempotencyKey: "pep-2"}
	pre, perr := svc.Preview(ctx, alice, pep)
	second, err := svc.Place(ctx, alice, pep, "")
	if err == nil && second.Status != trading.StatusRejected {
		t.Errorf("with ~19k of KO market buy working unfilled and KO unquoted, a ~19k PEP buy on 25,400 cash: %q (preview committed_cash %.2f unknown=%v, %v); want refused (committed unknown) or rejected",
			second.Status, pre.CommittedCash, pre.CommittedUnknown, perr)
	}
}

// refuseCancelOnce: the Trade service refuses one cancel with a 4xx
// (ErrInvalid: e.g. 409 "a cancel is already pending") while the order is
// still working.
type refuseCancelOnce struct {
	backends.Trade
	refused atomic.Bool
}

func (r *refuseCancelOnce) CancelOrder(ctx context.Context, id string) (backends.Order, error) {
	if r.refused.CompareAndSwap(false, true) {
		return backends.Order{}, fmt.Errorf("%w: cancel already pending", backends.ErrInvalid)
	}
	return r.Trade.CancelOrder(ctx, id)
}

// TestRefusedCancelKeepsTheOrderListed: a cancel the Trade service refuses
// while the order still works leaves it listed, so the kill switch's
// cancel-all still finds and cancels it.
func TestRefusedCancelKeepsTheOrderListed(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	out := restingBuy(t, f, "refused-cancel")
	f.trade.Trade = &refuseCancelOnce{Trade: f.trade.Trade}
	if _, err := f.svc.Cancel(ctx, alice, out.Order.OrderID); err == nil || errors.Is(err, trading.ErrNotCancellable) {
		t.Errorf("a cancel refused while the order works: %v, want a retryable refusal", err)
	}
	rep, err := f.svc.CancelAll(ctx, bob, halt.Global, "", "flatten")
	st, _ := f.svc.Status(ctx, alice, out.Order.OrderID)
	if err != nil || st.Status != backends.StatusCancelled {
		t.Errorf("kill-switch cancel-all after a refused cancel: report %+v %v; the order is still %s (dropped from the open index while working)", rep, err, st.Status)
	}
}

// TestRetryOfAnOrderPlacedBeforeTheLimitCheck: a key that placed a market
// order with a limit price (which earlier versions dropped; the digest
// ignores it) is answered with that order on a retry, not "nothing was
// placed".
func TestRetryOfAnOrderPlacedBeforeTheLimitCheck(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	o := small("pre-upgrade-1")
	first, err := f.svc.Place(ctx, alice, o, "")
	if err != nil || first.Order == nil {
		t.Fatalf("%+v %v", first, err)
	}
	withLimit := o
	withLimit.LimitPrice = 70
	if withLimit.Digest() != o.Digest() {
		t.Fatal("digests differ")
	}
	pl, err := f.svc.PlaceOrder(ctx, alice, withLimit, trading.Confirmation{Claimed: true})
	if err != nil {
		t.Errorf("retry (same digest) of order %s already %s: %v", first.Order.OrderID, first.Status, err)
	} else if pl.Outcome.Order == nil || pl.Outcome.Order.OrderID != first.Order.OrderID || !pl.Outcome.Replayed {
		t.Errorf("retry answered %+v, want order %s replayed", pl.Outcome, first.Order.OrderID)
	}
}

// restingBuy places a limit buy of 1 KO below the ask on ACC-1001 for
// alice, which rests (accepted, unfilled).
func restingBuy(t *testing.T, f *fixture, key string) trading.Outcome {
	t.Helper()
	q := koQuote(t)
	rest := trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "limit", Quantity: 1,
		LimitPrice: float64(int(q.Ask*0.99*100)) / 100, IdempotencyKey: key}
	out, err := f.svc.Place(t.Context(), alice, rest, "")
	if err != nil || out.Status != backends.StatusAccepted {
		t.Fatalf("%+v %v", out, err)
	}
	return out
}

// TestUnpricedMarketBuyStopsBuysNotSells: a working market buy on a halted
// (unquoted) stock holds an unknown amount of cash, which refuses buys with
// a reason; a sell, which needs no cash, goes ahead.
func TestUnpricedMarketBuyStopsBuysNotSells(t *testing.T) {
	svc, md := haltedMarket(t, 1e6)
	ctx := t.Context()
	first, err := svc.Place(ctx, alice, trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 10, IdempotencyKey: "halted-ko"}, "")
	if err != nil || first.Status != backends.StatusAccepted {
		t.Fatalf("first: %+v %v", first, err)
	}
	md.gone.Store("KO")
	sell := trading.OrderArgs{AccountID: "ACC-1001", Ticker: "AAPL", Side: "sell", Type: "market", Quantity: 1, IdempotencyKey: "sell-aapl"}
	if out, err := svc.Place(ctx, alice, sell, ""); err != nil || out.Order == nil {
		t.Errorf("sell of 1 AAPL (held 120), no cash needed, with an unquoted KO market buy working: %+v %v", out, err)
	}
	buy := trading.OrderArgs{AccountID: "ACC-1001", Ticker: "PEP", Side: "buy", Type: "market", Quantity: 1, IdempotencyKey: "buy-pep"}
	if out, err := svc.Place(ctx, alice, buy, ""); err != nil || out.Status != trading.StatusRejected || !strings.Contains(strings.Join(out.Violations, ";"), "cannot be priced") {
		t.Errorf("a buy while the cash held is unknown: %+v %v, want rejected with the reason", out, err)
	}
}

// cancelledMeanwhile: the order is cancelled by someone else just before
// this cancel reaches the Trade service, which refuses it (ErrInvalid).
type cancelledMeanwhile struct{ backends.Trade }

func (c cancelledMeanwhile) CancelOrder(ctx context.Context, id string) (backends.Order, error) {
	if _, err := c.Trade.CancelOrder(ctx, id); err != nil {
		return backends.Order{}, err
	}
	return backends.Order{}, fmt.Errorf("%w: order is not working", backends.ErrInvalid)
}

// TestCancelAllCountsOnlyItsOwnCancels: an order someone else cancelled
// just before the halt's cancel reached it is not reported as cancelled by
// the halt (its cancel is journaled as superseded).
func TestCancelAllCountsOnlyItsOwnCancels(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	out := restingBuy(t, f, "cm-1")
	f.trade.Trade = cancelledMeanwhile{Trade: f.trade.Trade}
	rep, err := f.svc.CancelAll(ctx, bob, halt.Global, "", "flatten")
	if err != nil {
		t.Fatal(err)
	}
	superseded := false
	f.j.mu.Lock()
	for _, e := range f.j.entries {
		if e.OrderID == out.Order.OrderID && e.Action == "order.cancel.superseded" {
			superseded = true
		}
	}
	f.j.mu.Unlock()
	for _, id := range rep.Cancelled {
		if id == out.Order.OrderID {
			t.Errorf("report lists %s as cancelled by this cancel-all (journal superseded=%v), but its cancel was refused: someone else cancelled it", id, superseded)
		}
	}
}

// TestLimitOnMarketRetryOfAnUnansweredSend: a retry, with a limit price, of
// a market order whose send got no answer (it may still land) goes on as
// the resend it is, never "nothing was placed".
func TestLimitOnMarketRetryOfAnUnansweredSend(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	o := small("unanswered-1")
	f.trade.fail.Store(true)
	if _, err := f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Claimed: true}); !errors.Is(err, trading.ErrTradeUnavailable) {
		t.Fatalf("first: %v", err)
	}
	f.trade.fail.Store(false)
	withLimit := o
	withLimit.LimitPrice = 70
	pl, err := f.svc.PlaceOrder(ctx, alice, withLimit, trading.Confirmation{Claimed: true})
	if err != nil && strings.Contains(err.Error(), "nothing was placed") {
		t.Errorf("retry (same key and digest) of a send that may still land: %v; outcome %+v", err, pl.Outcome)
	}
}

// TestUnpricedMarketBuyDoesNotWedgeAnApprovedSell: an approved sell, which
// needs no cash, executes while a market buy of a halted stock works in the
// account.
func TestUnpricedMarketBuyDoesNotWedgeAnApprovedSell(t *testing.T) {
	svc, md := haltedMarket(t, 1e7)
	ctx := t.Context()
	sell := trading.OrderArgs{AccountID: "ACC-2001", Ticker: "AAPL", Side: "sell", Type: "market", Quantity: 1000, IdempotencyKey: "big-sell"}
	pend, err := svc.Place(ctx, alice, sell, "")
	if err != nil || pend.Approval == nil {
		t.Fatalf("pending: %+v %v", pend, err)
	}
	buy, err := svc.Place(ctx, alice, trading.OrderArgs{AccountID: "ACC-2001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 10, IdempotencyKey: "halted-ko-2"}, "")
	if err != nil || buy.Status != backends.StatusAccepted {
		t.Fatalf("buy: %+v %v", buy, err)
	}
	md.gone.Store("KO")
	out, err := svc.Decide(ctx, bob, pend.Approval.ID, trading.DecisionApprove, "ok", nil)
	st, _ := svc.Status(ctx, alice, pend.Approval.ID)
	if err != nil || st.Order == nil {
		t.Errorf("approved sell of 1000 AAPL (no cash needed): decide %v (%s); status after re-drive %q %q", err, out.Status, st.Status, st.Message)
	}
}

// TestCancelAllCountsOnlyItsOwnWithdrawals: an approval its requester
// withdrew while the cancel-all ran is not reported as withdrawn by it.
func TestCancelAllCountsOnlyItsOwnWithdrawals(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	a1, err := f.svc.Place(ctx, alice, large("w-1"), "")
	if err != nil || a1.Approval == nil {
		t.Fatal(a1, err)
	}
	a2, err := f.svc.Place(ctx, alice, large("w-2"), "")
	if err != nil || a2.Approval == nil {
		t.Fatal(a2, err)
	}
	var other string
	fired := false
	f.j.onRecord = func(e trading.JournalEntry) {
		if fired || e.Action != "approval.cancelled" || e.Principal != "bob" {
			return
		}
		fired = true
		other = a1.Approval.ID
		if e.ApprovalID == a1.Approval.ID {
			other = a2.Approval.ID
		}
		if _, err := f.svc.Cancel(ctx, alice, other); err != nil {
			t.Errorf("requester withdraw: %v", err)
		}
	}
	rep, err := f.svc.CancelAll(ctx, bob, halt.Global, "", "flatten")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range rep.Withdrawn {
		if id == other {
			t.Errorf("report %+v lists %s as withdrawn by the cancel-all; its requester withdrew it", rep, id)
		}
	}
}

// silentLookup is a Trade service whose client-order-id lookup does not
// answer while down is set.
type silentLookup struct {
	backends.Trade
	down *atomic.Bool
}

func (s silentLookup) OrderByClientID(ctx context.Context, id string) (backends.Order, error) {
	if s.down.Load() {
		return backends.Order{}, fmt.Errorf("%w: timeout", backends.ErrUnavailable)
	}
	return s.Trade.OrderByClientID(ctx, id)
}

// TestLimitOnMarketRetryWhileTheLookupIsDown: a retry, with a limit price,
// of a market order whose send got no answer, while the Trade service cannot
// say whether it landed, gets the same answer as a plain retry (retry with
// the same key), not "nothing was placed".
func TestLimitOnMarketRetryWhileTheLookupIsDown(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	down := &atomic.Bool{}
	f.trade.Trade = silentLookup{Trade: f.trade.Trade, down: down}
	o := small("unanswered-lookup")
	f.trade.fail.Store(true)
	if _, err := f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Claimed: true}); !errors.Is(err, trading.ErrTradeUnavailable) {
		t.Fatalf("first: %v", err)
	}
	down.Store(true)
	withLimit := o
	withLimit.LimitPrice = 70
	if _, err := f.svc.PlaceOrder(ctx, alice, withLimit, trading.Confirmation{Claimed: true}); !errors.Is(err, trading.ErrTradeUnavailable) {
		t.Errorf("retry with a limit price while the lookup is down: %v, want the Trade service's unavailability", err)
	}
}

// haltedMarket is a paper service on the demo data whose Trade service
// fills no market order (they work, unfilled: a halted stock), and whose
// market data stops quoting a ticker when told (md.gone).
func haltedMarket(t *testing.T, maxNotional float64) (*trading.Service, *missingMD) {
	t.Helper()
	d := demo.New(nil)
	bs := d.Set()
	bs.Trade = &haltedTrade{Trade: d, orders: map[string]backends.Order{}}
	md := &missingMD{MarketData: bs.MarketData}
	bs.MarketData = md
	rules := policy.Rules{Mode: "paper", MaxOrderNotional: maxNotional, ApprovalNotional: 50_000, MaxPositionWeight: 1}
	svc := trading.New(trading.Config{Rules: rules, ApprovalTTL: 30 * time.Minute}, store.NewMemory(nil), bs, &journal{}, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	return svc, md
}

// TestHoldsOfManyWorkingOrdersAreAllCounted: the pre-trade check reads the
// account's working orders from an index, up to a bound. Past the bound it
// must not go on as if the rest held nothing: here a resting sell of a
// whole position, indexed after a thousand small resting buys, would
// otherwise leave its shares free for a second sell.
func TestHoldsOfManyWorkingOrdersAreAllCounted(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, open(t))
			ctx := t.Context()
			for i := range 1000 {
				// Each at its own price, so none is taken for a repeat of another.
				buy := trading.OrderArgs{AccountID: "ACC-1002", Ticker: "KO", Side: "buy", Type: "limit", Quantity: 1,
					LimitPrice: 1 + float64(i)/100, IdempotencyKey: fmt.Sprintf("small-buy-%04d", i)}
				if out, err := f.svc.Place(ctx, bob, buy, ""); err != nil || out.Status != backends.StatusAccepted {
					t.Fatalf("resting buy %d: %+v %v", i, out, err)
				}
			}
			f.clock.Add(time.Second)
			q := koQuote(t)
			sellLimit := float64(int(q.Bid*1.03*100)) / 100
			sell := func(key string) trading.OrderArgs {
				return trading.OrderArgs{AccountID: "ACC-1002", Ticker: "KO", Side: "sell", Type: "limit", Quantity: 500, LimitPrice: sellLimit, IdempotencyKey: key}
			}
			if out, err := f.svc.Place(ctx, bob, sell("whole-sell-1"), ""); err != nil {
				t.Fatal(err)
			} else {
				t.Logf("the 1001st working order: %s", out.Status)
			}
			f.clock.Add(time.Second)
			second, err := f.svc.Place(ctx, bob, sell("whole-sell-2"), "")
			if !errors.Is(err, trading.ErrTooManyOpen) && (err != nil || second.Status != trading.StatusRejected) {
				t.Errorf("a second sell of the same 500 KO with 1,001 orders working: %+v %v, want it refused (the check must not leave the newest uncounted)", second, err)
			}
		})
	}
}
