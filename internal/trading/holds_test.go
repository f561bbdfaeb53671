package trading_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// barrierJournal holds each entry of one action until n of them arrived:
// orders on several replicas, all past their checks and not yet listed.
// Orders whose checks are serialised never all arrive; the first then goes
// on after a while (the wait bounds the test, it synchronises nothing: a
// shorter one only makes the test less likely to catch a regression).
type barrierJournal struct {
	journal
	n       int32
	arrived atomic.Int32
	all     chan struct{}
	once    sync.Once
}

func newBarrierJournal(action string, n int32) *barrierJournal {
	b := &barrierJournal{n: n, all: make(chan struct{})}
	b.journal.onRecord = func(e trading.JournalEntry) {
		if e.Action != action {
			return
		}
		if b.arrived.Add(1) >= b.n {
			b.once.Do(func() { close(b.all) })
		}
		select {
		case <-b.all:
		case <-time.After(500 * time.Millisecond):
		}
	}
	return b
}

// TestConcurrentOrdersCannotSellTheSameSharesTwice: docs/trading.md: "Two
// orders that each fit cannot together overdraw the account or sell the
// same shares twice". Two sells of the whole 500 KO of ACC-1002, placed at
// once on two replicas sharing one store, must not both pass: neither as
// resting orders nor as approvals.
func TestConcurrentOrdersCannotSellTheSameSharesTwice(t *testing.T) {
	for name, open := range stores(t) {
		for _, tc := range []struct {
			kind, action     string
			approvalNotional float64
		}{
			{"sent", "order.intent", 1e6},
			{"approvals", "approval.requested", 100},
		} {
			t.Run(name+"/"+tc.kind, func(t *testing.T) {
				st := open(t)
				d := demo.New(nil)
				bs := d.Set()
				j := newBarrierJournal(tc.action, 2)
				c := &clock{now: time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)}
				rules := policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: tc.approvalNotional, MaxPositionWeight: 1}
				mk := func() *trading.Service {
					return trading.New(trading.Config{Rules: rules, ApprovalTTL: 30 * time.Minute, Lease: 10 * time.Second},
						st, bs, j, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), c.Now)
				}
				q := koQuote(t)
				limit := float64(int(q.Bid*1.03*100)) / 100 // rests above the bid
				sell := func(key string) trading.OrderArgs {
					return trading.OrderArgs{AccountID: "ACC-1002", Ticker: "KO", Side: "sell", Type: "limit", Quantity: 500, LimitPrice: limit, IdempotencyKey: key}
				}
				var wg sync.WaitGroup
				outs := make([]trading.Outcome, 2)
				for i, svc := range []*trading.Service{mk(), mk()} {
					wg.Go(func() {
						out, err := svc.Place(t.Context(), bob, sell([]string{"sell-a", "sell-b"}[i]), "")
						if err != nil {
							t.Error(err)
						}
						outs[i] = out
					})
				}
				wg.Wait()
				passed := 0
				for _, out := range outs {
					if out.Status != trading.StatusRejected {
						passed++
					}
				}
				if passed != 1 {
					t.Errorf("two sells of the same 500 KO at once: answers %q and %q; want one to pass and the other rejected (no short sales)", outs[0].Status, outs[1].Status)
				}
			})
		}
	}
}

// TestCancelAllFindsAnOrderWhoseAnswerWasLost: docs/trading.md: "cancel
// all open orders of this scope ... cancels its working orders at the
// Trade service (those placed through this server)". An order this server
// sent, whose answer was lost, works at the Trade service; a halt and its
// cancel-all must stop it without waiting for the agent to retry (it may
// never: it crashed, or it was told trading is halted).
func TestCancelAllFindsAnOrderWhoseAnswerWasLost(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name+"/direct", func(t *testing.T) {
			f := newRaceFixture(t, open(t), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9},
				func(tr backends.Trade) backends.Trade { return &lostAnswerTrade{Trade: tr} })
			o := resting(t, f, "lost-then-halt")
			if _, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true}); err == nil {
				t.Fatal("the lost answer was reported as an outcome")
			}
			f.haltNow(t)
			if w := f.working(); len(w) != 0 {
				t.Errorf("after a global halt and its cancel-all, %d order(s) this server sent still work at the Trade service: %+v", len(w), w)
			}
		})
		t.Run(name+"/approved", func(t *testing.T) {
			f := newRaceFixture(t, open(t), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 100, MaxPositionWeight: 0.9},
				func(tr backends.Trade) backends.Trade { return &lostAnswerTrade{Trade: tr} })
			pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "lost-approved-then-halt"), trading.Confirmation{Claimed: true})
			if err != nil || pl.Outcome.Approval == nil {
				t.Fatalf("%+v %v", pl.Outcome, err)
			}
			if _, err := f.svc.Decide(t.Context(), bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil); err == nil {
				t.Fatal("the lost answer was reported as an outcome")
			}
			f.haltNow(t)
			if w := f.working(); len(w) != 0 {
				t.Errorf("after a global halt and its cancel-all, %d approved order(s) this server sent still work at the Trade service: %+v", len(w), w)
			}
		})
	}
}

// TestOrderWhoseAnswerWasLostHoldsWhatItSells: a resting sell of all 500 KO of
// ACC-1002 whose answer was lost works at the Trade service. A second sell
// of the same 500 KO under another key must be refused (the shares are
// held), not accepted: "a resting order placed through this server holds
// its unfilled part".
func TestOrderWhoseAnswerWasLostHoldsWhatItSells(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newRaceFixture(t, open(t), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 1e6, MaxPositionWeight: 1},
				func(tr backends.Trade) backends.Trade { return &lostAnswerTrade{Trade: tr} })
			q := koQuote(t)
			limit := float64(int(q.Bid*1.03*100)) / 100
			sell := func(key string) trading.OrderArgs {
				return trading.OrderArgs{AccountID: "ACC-1002", Ticker: "KO", Side: "sell", Type: "limit", Quantity: 500, LimitPrice: limit, IdempotencyKey: key}
			}
			if _, err := f.svc.PlaceOrder(t.Context(), bob, sell("lost-sell-1"), trading.Confirmation{Claimed: true}); err == nil {
				t.Fatal("the lost answer was reported as an outcome")
			}
			second, err := f.svc.PlaceOrder(t.Context(), bob, sell("lost-sell-2"), trading.Confirmation{Claimed: true})
			if err != nil {
				t.Fatal(err)
			}
			if w := f.working(); len(w) > 1 {
				t.Errorf("second sell of the same 500 KO: %q; %d sells of 500 KO work at the Trade service, want the second rejected (shares held by the first)", second.Outcome.Status, len(w))
			}
		})
	}
}

// fillOnRead fills an order at the demo Trade service the first time it is
// read after being armed: a resting order that fills while another order's
// check is under way.
type fillOnRead struct {
	backends.Trade
	demo  *demo.Backend
	armed atomic.Pointer[string]
}

func (f *fillOnRead) GetOrder(ctx context.Context, id string) (backends.Order, error) {
	if p := f.armed.Load(); p != nil && *p == id && f.armed.CompareAndSwap(p, nil) {
		o, err := f.demo.GetOrder(ctx, id)
		if err != nil {
			return o, err
		}
		if _, err := f.demo.Fill(id, o.Quantity); err != nil {
			return backends.Order{}, err
		}
	}
	return f.Trade.GetOrder(ctx, id)
}

func (f *fillOnRead) OrderByClientID(ctx context.Context, coid string) (backends.Order, error) {
	o, err := f.Trade.OrderByClientID(ctx, coid)
	if err == nil {
		return f.GetOrder(ctx, o.OrderID)
	}
	return o, err
}

// TestAFillDuringTheCheckIsCounted: a resting buy holds its cash until it
// fills, and the cash is then gone from the account. If it fills while
// another order is being checked, between the read of the account and the
// read of the working orders, the check must not count it in neither: the
// working orders are read first, then the account.
func TestAFillDuringTheCheckIsCounted(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			var fr *fillOnRead
			f := newRaceFixture(t, open(t), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 1e6, MaxPositionWeight: 1},
				func(tr backends.Trade) backends.Trade { fr = &fillOnRead{Trade: tr}; return fr })
			fr.demo = f.demo
			q := koQuote(t)
			limit := float64(int(q.Ask*0.99*100)) / 100
			buy := func(key string, qty float64) trading.OrderArgs {
				return trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "limit", Quantity: qty, LimitPrice: limit, IdempotencyKey: key}
			}
			// ACC-1001 has 25,400 cash: a resting buy of 300 KO holds most of it.
			first, err := f.svc.PlaceOrder(t.Context(), alice, buy("fill-during-1", 300), trading.Confirmation{Claimed: true})
			if err != nil || first.Outcome.Order == nil || !backends.Working(first.Outcome.Order.Status) {
				t.Fatalf("first resting buy: %+v %v", first.Outcome, err)
			}
			id := first.Outcome.Order.OrderID
			fr.armed.Store(&id)
			second, err := f.svc.PlaceOrder(t.Context(), alice, buy("fill-during-2", 299), trading.Confirmation{Claimed: true})
			if err != nil {
				t.Fatal(err)
			}
			if second.Outcome.Status != trading.StatusRejected {
				t.Errorf("a second buy of ~%.0f with ~%.0f of 25,400 cash spent by the first, which filled during the check: %q, want rejected (insufficient buying power)",
					299*limit, 300*limit, second.Outcome.Status)
			}
		})
	}
}
