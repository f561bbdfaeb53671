package trading_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
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
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// movingMarket is market data whose prices can be scaled: the market
// moving between an attempt and its retry. onQuotes, if set, runs once in
// the next quote read: something happening while an order is checked.
type movingMarket struct {
	backends.MarketData
	scale    atomic.Int64 // percent; 0 is 100
	onQuotes atomic.Pointer[func()]
}

func (m *movingMarket) Quotes(ctx context.Context, tickers []string) (backends.QuoteSet, error) {
	if f := m.onQuotes.Swap(nil); f != nil {
		(*f)()
	}
	qs, err := m.MarketData.Quotes(ctx, tickers)
	if pct := m.scale.Load(); pct != 0 {
		for i := range qs.Quotes {
			q := &qs.Quotes[i]
			q.Price, q.Bid, q.Ask = q.Price*float64(pct)/100, q.Bid*float64(pct)/100, q.Ask*float64(pct)/100
		}
	}
	return qs, err
}

// tightRules leave room for 10 KO at today's price, not at twice it: a
// retry against a market that moved is refused by its checks.
var tightRules = policy.Rules{Mode: "paper", MaxOrderNotional: 1000, ApprovalNotional: 50_000, MaxPositionWeight: 0.9}

// tenKO is a market buy of 10 KO on ACC-2001 with idempotency key key.
func tenKO(key string) trading.OrderArgs {
	return trading.OrderArgs{AccountID: "ACC-2001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 10, IdempotencyKey: key}
}

// raceFixture is a service over the demo backends with a market that can
// move and a Trade service that can be wrapped.
type raceFixture struct {
	svc    *trading.Service
	demo   *demo.Backend
	trade  *countingTrade
	market *movingMarket
	halt   *halt.Switch
	j      *journal
	clock  *clock
}

func newRaceFixture(t *testing.T, st store.Store, rules policy.Rules, wrap func(backends.Trade) backends.Trade) *raceFixture {
	t.Helper()
	d := demo.New(nil)
	bs := d.Set()
	f := &raceFixture{demo: d, trade: &countingTrade{Trade: d, created: map[string]bool{}}, market: &movingMarket{MarketData: bs.MarketData},
		j: &journal{}, clock: &clock{now: time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)}}
	bs.Trade, bs.MarketData = f.trade, f.market
	if wrap != nil {
		bs.Trade = wrap(f.trade)
	}
	f.halt = halt.New(st, f.j, nil, f.clock.Now)
	f.svc = trading.New(trading.Config{Rules: rules, ApprovalTTL: 30 * time.Minute, Lease: 10 * time.Second, Halt: f.halt},
		st, bs, f.j, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), f.clock.Now)
	return f
}

// TestLapsedOwnerSendsNothingAfterARetryAnswered: an attempt stalls (a slow
// audit sink) past its claim's lease; a retry with the same key, checked
// against a market that moved, is told the order was rejected and not
// placed. The stalled attempt must then place nothing, neither the order
// nor an approval request: the retry's answer has to stay true.
func TestLapsedOwnerSendsNothingAfterARetryAnswered(t *testing.T) {
	for _, tc := range []struct {
		name, stallsAt string
		rules          policy.Rules
	}{
		{"direct", "order.intent", tightRules},
		{"approval", "approval.requested", policy.Rules{Mode: "paper", MaxOrderNotional: 1000, ApprovalNotional: 100, MaxPositionWeight: 0.9}},
	} {
		for name, open := range stores(t) {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				f := newRaceFixture(t, open(t), tc.rules, nil)
				o := tenKO("lapse-1")
				stalled, resume := make(chan struct{}), make(chan struct{})
				var once sync.Once
				f.j.onRecord = func(e trading.JournalEntry) {
					if e.Action == tc.stallsAt {
						once.Do(func() { close(stalled); <-resume })
					}
				}
				first := make(chan error, 1)
				go func() {
					_, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
					first <- err
				}()
				<-stalled
				f.clock.Add(11 * time.Second) // past the 10 s lease
				f.market.scale.Store(200)
				retry, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
				if err != nil || retry.Outcome.Status != trading.StatusRejected {
					t.Fatalf("retry: %+v %v, want rejected by the checks", retry.Outcome, err)
				}
				close(resume)
				if err := <-first; !errors.Is(err, trading.ErrClaimLost) {
					t.Errorf("stalled attempt: %v, want ErrClaimLost", err)
				}
				if n := f.trade.orders(); n != 0 {
					t.Errorf("the retry answered rejected, and %d orders reached the Trade service", n)
				}
				if pending, err := f.svc.ListPending(t.Context(), bob, 10); err != nil || len(pending) != 0 {
					t.Errorf("the retry answered rejected, and approvals are pending: %+v %v", pending, err)
				}
			})
		}
	}
}

// firstLost holds the first order request: its sender gets no answer (the
// error lose returns), and it reaches the Trade service only when land is
// called.
type firstLost struct {
	*countingTrade
	lose func(ctx context.Context) error
	mu   sync.Mutex
	held *backends.OrderRequest
}

func (l *firstLost) PlaceOrder(ctx context.Context, r backends.OrderRequest) (backends.Order, error) {
	l.mu.Lock()
	first := l.held == nil
	if first {
		l.held = &r
	}
	l.mu.Unlock()
	if first {
		return backends.Order{}, l.lose(ctx)
	}
	return l.countingTrade.PlaceOrder(ctx, r)
}

// losingFirst is a newRaceFixture wrapper that puts a firstLost (with
// lose) in front of the Trade service and in *into.
func losingFirst(into **firstLost, lose func(context.Context) error) func(backends.Trade) backends.Trade {
	return func(tr backends.Trade) backends.Trade {
		*into = &firstLost{countingTrade: tr.(*countingTrade), lose: lose}
		return *into
	}
}

// land delivers the first request, late.
func (l *firstLost) land(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	r := *l.held
	l.mu.Unlock()
	if _, err := l.countingTrade.PlaceOrder(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

// TestCancelledSendIsRemembered: the agent goes away while its order is on
// the wire. Whatever the store, the attempt must leave the key marked as
// sent, so that a retry sends the same order again (one order, by its client
// order id) rather than checking it afresh and answering "rejected" for an
// order that then lands.
func TestCancelledSendIsRemembered(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			var late *firstLost
			f := newRaceFixture(t, open(t), tightRules, losingFirst(&late, func(ctx context.Context) error { // the agent gives up while it is in flight
				cancel()
				<-ctx.Done()
				return ctx.Err()
			}))
			o := tenKO("gone-1")
			if _, err := f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Claimed: true}); err == nil {
				t.Fatal("the abandoned attempt reported success")
			}
			f.clock.Add(11 * time.Second)
			f.market.scale.Store(200) // fresh checks would now refuse it
			retry, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
			late.land(t)
			if err != nil || retry.Outcome.Order == nil {
				t.Fatalf("retry: %+v %v, want the order sent again", retry.Outcome, err)
			}
			if n := f.trade.orders(); n != 1 {
				t.Errorf("%d orders at the Trade service, want 1", n)
			}
		})
	}
}

// haltNow engages a global halt and runs its cancel-all, as a risk officer
// does: what must stop every order, including one already past its checks.
func (f *raceFixture) haltNow(t *testing.T) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	if _, err := f.halt.Engage(ctx, "risk-officer", halt.Global, "", "stop everything"); err != nil {
		t.Error(err)
	}
	officer := principal.Principal{Subject: "risk-officer", Accounts: []string{"*"}}
	if _, err := f.svc.CancelAll(ctx, officer, halt.Global, "", "stop everything"); err != nil {
		t.Error(err)
	}
}

// working is what orders still work at the Trade service.
func (f *raceFixture) working() []backends.Order {
	var out []backends.Order
	for _, o := range f.demo.Orders() {
		if backends.Working(o.Status) {
			out = append(out, o)
		}
	}
	return out
}

// TestHaltWhileAnOrderIsSent: a halt and its cancel-all that come while an
// order is past the kill switch's check but not yet at the Trade service
// (a direct order in its audit write, an approved one in its re-check)
// find nothing to cancel. The order must not work anyway: the switch is
// read once more just before the wire, so it is not sent, and the answer
// says so; and a halt that comes even later, as the order goes on the
// wire, has it cancelled as soon as it is sent.
func TestHaltWhileAnOrderIsSent(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("direct", func(t *testing.T) {
				f := newRaceFixture(t, open(t), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9}, nil)
				var once sync.Once
				f.j.onRecord = func(e trading.JournalEntry) {
					if e.Action == "order.intent" {
						once.Do(func() { f.haltNow(t) })
					}
				}
				pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "halt-race-1"), trading.Confirmation{Claimed: true})
				if !errors.Is(err, trading.ErrHalted) || f.trade.orders() != 0 {
					t.Errorf("placing: %+v %v (%d orders), want it refused as halted, unsent", pl.Outcome, err, f.trade.orders())
				}
			})
			t.Run("direct, at the wire", func(t *testing.T) {
				st := &onSendingRenew{Store: open(t)}
				f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9}, nil)
				st.hook = func() { f.haltNow(t) }
				pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "halt-race-3"), trading.Confirmation{Claimed: true})
				if !st.fired.Load() {
					t.Fatal("the halt never came")
				}
				if err != nil || pl.Outcome.Status != backends.StatusCancelled {
					t.Errorf("placing: %+v %v, want the order cancelled", pl.Outcome, err)
				}
				if w := f.working(); len(w) != 0 {
					t.Errorf("working after the halt: %+v", w)
				}
			})
			t.Run("approved", func(t *testing.T) {
				f := newRaceFixture(t, open(t), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 100, MaxPositionWeight: 0.9}, nil)
				pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "halt-race-2"), trading.Confirmation{Claimed: true})
				if err != nil || pl.Outcome.Approval == nil {
					t.Fatalf("placing: %+v %v, want a pending approval", pl.Outcome, err)
				}
				halt := func() { f.haltNow(t) }
				f.market.onQuotes.Store(&halt) // during the re-check at execution
				out, err := f.svc.Decide(t.Context(), bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil)
				if err != nil || out.Approval == nil || out.Approval.Status != trading.ApprovalFailed || f.trade.orders() != 0 {
					t.Errorf("approving: %+v %v (%d orders), want the approval failed, unsent", out, err, f.trade.orders())
				}
			})
		})
	}
}

// onSendingRenew runs hook once, as an order's idempotency claim is renewed
// to send it: the last step before the wire.
type onSendingRenew struct {
	store.Store
	hook  func()
	fired atomic.Bool
}

func (s *onSendingRenew) Update(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) (int64, error) {
	if bytes.Contains(value, []byte(`"sent":true`)) && bytes.Contains(value, []byte(`"state":"in_progress"`)) && s.fired.CompareAndSwap(false, true) {
		s.hook()
	}
	return s.Store.Update(ctx, key, value, version, ttl)
}

// resting is a limit buy below the market: it works until cancelled.
func resting(t *testing.T, f *raceFixture, key string) trading.OrderArgs {
	t.Helper()
	qs, err := f.market.MarketData.Quotes(t.Context(), []string{"KO"})
	if err != nil {
		t.Fatal(err)
	}
	limit := float64(int(qs.Quotes[0].Ask*0.99*100)) / 100
	return trading.OrderArgs{AccountID: "ACC-2001", Ticker: "KO", Side: "buy", Type: "limit", Quantity: 10, LimitPrice: limit, IdempotencyKey: key}
}

// TestLosingDecisionIsSuperseded: two approvers decide one approval at
// once. Each decision is journaled before it takes effect; the one that
// loses the compare-and-swap is followed by a record that it did not, so
// the trail shows only what happened.
func TestLosingDecisionIsSuperseded(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newRaceFixture(t, open(t), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 100, MaxPositionWeight: 0.9}, nil)
			pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "two-deciders"), trading.Confirmation{Claimed: true})
			if err != nil || pl.Outcome.Approval == nil {
				t.Fatalf("placing: %+v %v", pl.Outcome, err)
			}
			id := pl.Outcome.Approval.ID
			carol := principal.Principal{Subject: "carol", Accounts: []string{"*"}}
			var once sync.Once
			f.j.onRecord = func(e trading.JournalEntry) {
				if e.Action == "approval.decided" && e.Principal == "bob" {
					once.Do(func() { // carol decides while bob's decision is journaled
						if _, err := f.svc.Decide(context.WithoutCancel(t.Context()), carol, id, trading.DecisionReject, "too large", nil); err != nil {
							t.Error(err)
						}
					})
				}
			}
			if _, err := f.svc.Decide(t.Context(), bob, id, trading.DecisionApprove, "fine", nil); !errors.Is(err, trading.ErrAlreadyDecided) {
				t.Errorf("bob's late approval: %v, want ErrAlreadyDecided", err)
			}
			var trail []string
			f.j.mu.Lock()
			for _, e := range f.j.entries {
				if e.ApprovalID == id && e.Action != "approval.requested" {
					trail = append(trail, e.Principal+" "+e.Action)
				}
			}
			f.j.mu.Unlock()
			want := []string{"carol approval.decided", "bob approval.decided", "bob approval.decided.superseded"}
			if !slices.Equal(trail, want) {
				t.Errorf("trail %q, want %q", trail, want)
			}
			if n := f.trade.orders(); n != 0 {
				t.Errorf("%d orders sent for a rejected approval", n)
			}
		})
	}
}

// lostAnswerTrade accepts the first order but loses its answer on the way
// back: the order works at the Trade service, and its sender never knew.
type lostAnswerTrade struct {
	backends.Trade
	lost atomic.Bool
}

func (l *lostAnswerTrade) PlaceOrder(ctx context.Context, r backends.OrderRequest) (backends.Order, error) {
	o, err := l.Trade.PlaceOrder(ctx, r)
	if err == nil && l.lost.CompareAndSwap(false, true) {
		return backends.Order{}, fmt.Errorf("%w: the answer was lost", backends.ErrUnavailable)
	}
	return o, err
}

// TestReconciledOrderUnderAHalt: an order whose answer was lost works at
// the Trade service but is listed nowhere, so a halt's cancel-all misses
// it. The retry that finds it must stop it too, as a send would.
func TestReconciledOrderUnderAHalt(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newRaceFixture(t, open(t), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9},
				func(tr backends.Trade) backends.Trade { return &lostAnswerTrade{Trade: tr} })
			o := resting(t, f, "lost-answer-1")
			if _, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true}); err == nil {
				t.Fatal("the lost answer was reported as an outcome")
			}
			f.haltNow(t)
			retry, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
			if err != nil || retry.Outcome.Status != backends.StatusCancelled {
				t.Errorf("retry under the halt: %+v %v, want the order found and cancelled", retry.Outcome, err)
			}
			if w := f.working(); len(w) != 0 {
				t.Errorf("working under the halt: %+v", w)
			}
		})
	}
}

// TestOrderWorkingBeforeAHaltIsLeftByARetry: an order the Trade service
// took long before a halt (its answer was lost) is, under a halt engaged
// without cancel-all, what its twins are: working. A retry that learns of
// it only now must not cancel it as an order that was on its way.
func TestOrderWorkingBeforeAHaltIsLeftByARetry(t *testing.T) {
	f := newRaceFixture(t, store.NewMemory(nil), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9},
		func(tr backends.Trade) backends.Trade { return &lostAnswerTrade{Trade: tr} })
	o := resting(t, f, "lost-before-halt")
	if _, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true}); err == nil {
		t.Fatal("the lost answer was reported as an outcome")
	}
	// The demo Trade service times orders by the wall clock; the halt comes
	// an hour after this one was taken.
	f.clock.Add(time.Since(f.clock.Now()) + time.Hour)
	if _, err := f.halt.Engage(t.Context(), "risk-officer", halt.Account, "ACC-2001", "runaway agent"); err != nil {
		t.Fatal(err)
	}
	retry, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
	if err != nil || retry.Outcome.Order == nil || !backends.Working(retry.Outcome.Status) || strings.Contains(retry.Outcome.Message, "cancelled") {
		t.Errorf("retry under a halt engaged an hour after the order was taken: %+v %v, want it found and still working", retry.Outcome, err)
	}
}

// TestLapsedResendStaysASend: the first send got no answer; the retry that
// resends it stalls past its lease; a third attempt must still treat the
// key as sent (resend the same order), not check it afresh and answer
// "rejected" for an order whose first request then lands.
func TestLapsedResendStaysASend(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			var lost *firstLost
			f := newRaceFixture(t, open(t), tightRules, losingFirst(&lost, func(context.Context) error { return fmt.Errorf("%w: timeout", backends.ErrUnavailable) }))
			o := tenKO("resend-lapse")
			if _, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true}); err == nil {
				t.Fatal("the unanswered send was reported as an outcome")
			}
			stalled, resume := make(chan struct{}), make(chan struct{})
			var first atomic.Bool
			f.j.onRecord = func(e trading.JournalEntry) {
				if e.Action == "order.intent" && e.Detail != "" && first.CompareAndSwap(false, true) { // the first resend's
					close(stalled)
					<-resume
				}
			}
			resend := make(chan error, 1)
			go func() {
				_, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
				resend <- err
			}()
			<-stalled
			f.clock.Add(11 * time.Second)
			f.market.scale.Store(200) // fresh checks would refuse it
			third, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
			close(resume)
			<-resend
			lost.land(t)
			if err != nil || third.Outcome.Order == nil {
				t.Errorf("third attempt: %+v %v, want the order sent again", third.Outcome, err)
			}
			if n := f.trade.orders(); n != 1 {
				t.Errorf("%d orders at the Trade service, want 1", n)
			}
		})
	}
}

// listHook runs f once, right after an order is listed for cancel-all the
// second time: the first is before its send (by client order id), the
// second once the Trade service has it.
type listHook struct {
	store.Store
	listed atomic.Int32
	f      func()
}

func (l *listHook) IndexAddAll(ctx context.Context, indexes []string, member string, score float64) error {
	err := l.Store.IndexAddAll(ctx, indexes, member, score)
	if slices.Contains(indexes, "orders:open") && l.listed.Add(1) == 2 {
		l.f()
	}
	return err
}

// TestHaltCancelsOnce: a halt whose cancel-all finds the order just sent
// and the sender's own check after its send do not both cancel it.
func TestHaltCancelsOnce(t *testing.T) {
	h := &listHook{Store: store.NewMemory(nil)}
	f := newRaceFixture(t, h, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9}, nil)
	h.f = func() { f.haltNow(t) }
	pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "cancel-once"), trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Status != backends.StatusCancelled {
		t.Errorf("placing: %+v %v, want the order, cancelled", pl.Outcome, err)
	}
	n := 0
	f.j.mu.Lock()
	for _, e := range f.j.entries {
		if e.Action == "order.cancel" {
			n++
		}
	}
	f.j.mu.Unlock()
	if n != 1 {
		t.Errorf("order.cancel journaled %d times, want once", n)
	}
}

// stallingTally holds the first daily-limit reservation until resumed.
type stallingTally struct {
	store.Store
	first           atomic.Bool
	stalled, resume chan struct{}
}

func (s *stallingTally) Tally(ctx context.Context, key, member string, amount float64, maxCount int, maxSum float64, ttl time.Duration) error {
	if s.first.CompareAndSwap(false, true) {
		close(s.stalled)
		<-s.resume
	}
	return s.Store.Tally(ctx, key, member, amount, maxCount, maxSum, ttl)
}

// TestStalledReservationIsNotResentUncounted: an order stalls in its
// daily-limit reservation past its lease while another order takes the
// budget. The retry must not send it unchecked as if it may already be on
// the wire: nothing was sent, and nothing was counted.
func TestStalledReservationIsNotResentUncounted(t *testing.T) {
	st := &stallingTally{Store: store.NewMemory(nil), stalled: make(chan struct{}), resume: make(chan struct{})}
	probe := newRaceFixture(t, store.NewMemory(nil), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 1e6, MaxPositionWeight: 0.9}, nil)
	qs, err := probe.market.MarketData.Quotes(t.Context(), []string{"KO"})
	if err != nil {
		t.Fatal(err)
	}
	budget := qs.Quotes[0].Ask * 15 // room for 10 KO or 9 KO, not both
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 1e6, MaxPositionWeight: 0.9,
		Daily: policy.DailyLimits{PrincipalNotional: budget}}, nil)
	a := trading.OrderArgs{AccountID: "ACC-2001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 10, IdempotencyKey: "stall-a"}
	b := trading.OrderArgs{AccountID: "ACC-2001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 9, IdempotencyKey: "stall-b"}
	first := make(chan error, 1)
	go func() {
		_, err := f.svc.PlaceOrder(context.WithoutCancel(t.Context()), alice, a, trading.Confirmation{Claimed: true})
		first <- err
	}()
	select {
	case <-st.stalled:
	case err := <-first:
		t.Fatalf("the first order ended before reserving: %v", err)
	}
	// Past a's leases: its claim, and the account's, which b needs.
	f.clock.Add(11 * time.Second)
	if pb, err := f.svc.PlaceOrder(t.Context(), alice, b, trading.Confirmation{Claimed: true}); err != nil || pb.Outcome.Order == nil {
		t.Fatalf("order b: %+v %v", pb.Outcome, err)
	}
	f.svc.PlaceOrder(t.Context(), alice, a, trading.Confirmation{Claimed: true})
	close(st.resume)
	<-first
	if n := f.trade.orders(); n != 1 {
		t.Errorf("%d orders sent against a daily budget with room for one", n)
	}
}
