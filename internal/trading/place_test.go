package trading_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/confirm"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// countingReads counts the backend reads a pre-trade check makes.
type countingReads struct {
	backends.Portfolio
	backends.MarketData
	portfolios, quotes atomic.Int64
	// honourDeadline makes the portfolio read fail once ctx is done, as the
	// HTTP client does.
	honourDeadline bool
}

func (c *countingReads) GetPortfolio(ctx context.Context, account string) (backends.PortfolioValuation, error) {
	c.portfolios.Add(1)
	if c.honourDeadline && ctx.Err() != nil {
		return backends.PortfolioValuation{}, fmt.Errorf("GET /portfolio: %w", ctx.Err())
	}
	return c.Portfolio.GetPortfolio(ctx, account)
}

func (c *countingReads) Quotes(ctx context.Context, tickers []string) (backends.QuoteSet, error) {
	c.quotes.Add(1)
	return c.MarketData.Quotes(ctx, tickers)
}

type orderFlow struct {
	svc   *trading.Service
	reads *countingReads
	trade *countingTrade
	st    store.Store
}

func newOrderFlow(t *testing.T, mode string, withSigner bool) *orderFlow {
	t.Helper()
	d := demo.New(nil)
	reads := &countingReads{Portfolio: d, MarketData: d}
	trade := &countingTrade{Trade: d, created: map[string]bool{}}
	st := store.NewMemory(nil)
	var signer *confirm.Signer
	if withSigner {
		signer = confirm.NewSigner(func() ([]byte, error) { return []byte(strings.Repeat("k", 32)), nil }, st, 5*time.Minute, nil)
	}
	rules := policy.Rules{Mode: mode, MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.5}
	svc := trading.New(trading.Config{Rules: rules, ApprovalTTL: 30 * time.Minute, Lease: 10 * time.Second},
		st, backends.Set{Portfolio: reads, MarketData: reads, Trade: trade}, &journal{}, signer, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	return &orderFlow{svc: svc, reads: reads, trade: trade, st: st}
}

// TestPlaceOrderReadsTheMarketUnderTheClaim: the check under the order's
// idempotency claim reads the portfolio and the quote again, after the
// account's open orders (TestAFillDuringTheCheckIsCounted): once for the
// preview the order is confirmed on, once for the check; a retry reads
// nothing.
func TestPlaceOrderReadsTheMarketUnderTheClaim(t *testing.T) {
	f := newOrderFlow(t, "paper", true)
	pl, err := f.svc.PlaceOrder(t.Context(), alice, small("once-0001"), trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Status != backends.StatusFilled {
		t.Fatalf("PlaceOrder = %+v, %v; want filled", pl, err)
	}
	if p, q := f.reads.portfolios.Load(), f.reads.quotes.Load(); p != 2 || q != 2 {
		t.Errorf("portfolio read %d times, quote %d times; want twice each (the preview, the check)", p, q)
	}
	// A retry is answered from its key: no check, no read.
	if pl, err := f.svc.PlaceOrder(t.Context(), alice, small("once-0001"), trading.Confirmation{}); err != nil || !pl.Outcome.Replayed {
		t.Fatalf("retry = %+v, %v; want the replayed outcome", pl, err)
	}
	if p := f.reads.portfolios.Load(); p != 2 {
		t.Errorf("a replay read the portfolio (%d reads)", p)
	}
}

func TestPlaceOrderConfirmation(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name   string
		mode   string
		order  trading.OrderArgs
		c      trading.Confirmation
		status string
		orders int
	}{
		{"unconfirmed needs the user", "paper", small("conf-0001"), trading.Confirmation{}, trading.StatusNeedsConfirmation, 0},
		{"claimed in paper executes", "paper", small("conf-0002"), trading.Confirmation{Claimed: true}, backends.StatusFilled, 1},
		{"claimed in live waits for an approver", "live", small("conf-0003"), trading.Confirmation{Claimed: true}, trading.StatusPendingApproval, 0},
		{"a rule break is rejected before any confirmation", "paper", trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Quantity: 1e6, IdempotencyKey: "conf-0004"},
			trading.Confirmation{}, trading.StatusRejected, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newOrderFlow(t, tc.mode, true)
			pl, err := f.svc.PlaceOrder(ctx, alice, tc.order, tc.c)
			if err != nil || pl.Ask != nil || pl.Outcome.Status != tc.status {
				t.Fatalf("PlaceOrder = %+v, %v; want status %s", pl, err, tc.status)
			}
			if got := f.trade.orders(); got != tc.orders {
				t.Errorf("%d orders at the Trade service, want %d", got, tc.orders)
			}
			if tc.status == trading.StatusNeedsConfirmation && (pl.Outcome.Preview == nil || !strings.Contains(pl.Outcome.Message, "confirm=true")) {
				t.Errorf("confirmation outcome lacks the preview or the instruction: %+v", pl.Outcome)
			}
			if tc.status == trading.StatusPendingApproval && !strings.Contains(strings.Join(pl.Outcome.Approval.Preview.ApprovalReasons, ";"), "cannot verify") {
				t.Errorf("live approval reasons = %v; want the unverifiable confirmation named", pl.Outcome.Approval.Preview.ApprovalReasons)
			}
		})
	}
}

// TestPlaceOrderInputRequest walks the multi round-trip confirmation: an ask
// bound to the order, then the answer, once.
func TestPlaceOrderInputRequest(t *testing.T) {
	ctx := t.Context()
	f := newOrderFlow(t, "live", true)
	o := small("ask-00001")
	pl, err := f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Askable: true, Claimed: true})
	if err != nil || pl.Ask == nil || pl.Ask.State == "" || !strings.Contains(pl.Ask.Message, "buy 10 KO in account ACC-1001") {
		t.Fatalf("first call = %+v, %v; want an ask summarising the order (the confirm argument does not count)", pl, err)
	}
	state := pl.Ask.State

	other := o
	other.Quantity = 11
	if _, err := f.svc.PlaceOrder(ctx, alice, other, trading.Confirmation{Askable: true, State: state, Accepted: true}); !isAgentError(err) {
		t.Fatalf("a state echoed for another order = %v; want an agent error", err)
	}
	declined, err := f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Askable: true, State: state})
	if err != nil || declined.Outcome.Status != trading.StatusNotConfirmed {
		t.Fatalf("declined = %+v, %v; want not_confirmed", declined, err)
	}
	if _, err := f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Askable: true, State: state, Accepted: true}); !isAgentError(err) || !strings.Contains(err.Error(), "afresh") {
		t.Fatalf("a used state = %v; want an agent error asking afresh", err)
	}

	pl, _ = f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Askable: true})
	placed, err := f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Askable: true, State: pl.Ask.State, Accepted: true})
	if err != nil || placed.Outcome.Status != backends.StatusFilled {
		t.Fatalf("accepted in live trading = %+v, %v; want filled (a verified confirmation needs no approver)", placed, err)
	}
	if got := f.trade.orders(); got != 1 {
		t.Errorf("%d orders at the Trade service, want 1", got)
	}
}

func TestPlaceOrderRefusals(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name   string
		signer bool
		order  trading.OrderArgs
		c      trading.Confirmation
		want   error
	}{
		{"limit order without a price", true, trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "LIMIT", Quantity: 1, IdempotencyKey: "lim-00001"},
			trading.Confirmation{Claimed: true}, trading.ErrLimitPriceMissing},
		{"market order with a limit price", true, trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Quantity: 3, LimitPrice: 50, IdempotencyKey: "lim-00002"},
			trading.Confirmation{Claimed: true}, trading.ErrLimitPriceOnMarket},
		{"explicit market order with a limit price", true, trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "Market", Quantity: 3, LimitPrice: 50, IdempotencyKey: "lim-00003"},
			trading.Confirmation{Claimed: true}, trading.ErrLimitPriceOnMarket},
		{"no signing key", false, small("nokey-0001"), trading.Confirmation{Askable: true}, trading.ErrConfirmUnavailable},
		{"another's account", true, trading.OrderArgs{AccountID: "ACC-1003", Ticker: "KO", Side: "buy", Quantity: 1, IdempotencyKey: "acct-00001"},
			trading.Confirmation{Claimed: true}, backends.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newOrderFlow(t, "paper", tc.signer)
			if _, err := f.svc.PlaceOrder(ctx, alice, tc.order, tc.c); !errors.Is(err, tc.want) {
				t.Fatalf("PlaceOrder error = %v, want %v", err, tc.want)
			}
			if got := f.trade.calls.Load(); got != 0 {
				t.Errorf("the Trade service was called %d times", got)
			}
		})
	}
}

func TestPlaceOrderDeadlineIsExplained(t *testing.T) {
	f := newOrderFlow(t, "paper", true)
	f.reads.honourDeadline = true
	ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel()
	_, err := f.svc.PlaceOrder(ctx, alice, small("late-00001"), trading.Confirmation{Claimed: true})
	if !errors.Is(err, trading.ErrTimedOutBeforeKnown) {
		t.Fatalf("err = %v, want ErrTimedOutBeforeKnown", err)
	}
}

func isAgentError(err error) bool {
	var a *trading.AgentError
	return errors.As(err, &a)
}
