package trading_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// TestAccountLeaseThatRanOutStopsTheOrder: an order whose account lease
// ran out during its journal write (a slow audit sink), while a second
// order on the account took the lease and passed its check, must not be
// listed or sent: two sells of the same 500 KO never both work.
func TestAccountLeaseThatRanOutStopsTheOrder(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newRaceFixture(t, open(t), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 1e6, MaxPositionWeight: 1}, nil)
			q := koQuote(t)
			limit := float64(int(q.Bid*1.03*100)) / 100
			sell := func(key string) trading.OrderArgs {
				return trading.OrderArgs{AccountID: "ACC-1002", Ticker: "KO", Side: "sell", Type: "limit", Quantity: 500, LimitPrice: limit, IdempotencyKey: key}
			}
			stalled, resume := make(chan struct{}), make(chan struct{})
			var once sync.Once
			f.j.onRecord = func(e trading.JournalEntry) {
				if e.Action == "order.intent" && e.IdempotencyKey == "lapse-a" {
					once.Do(func() { close(stalled); <-resume })
				}
			}
			first := make(chan trading.Outcome, 1)
			go func() {
				out, err := f.svc.Place(context.WithoutCancel(t.Context()), bob, sell("lapse-a"), "")
				if err != nil {
					t.Logf("the stalled order: %v", err)
				}
				first <- out
			}()
			<-stalled
			f.clock.Add(11 * time.Second) // the audit sink took longer than the 10 s lease
			second, err := f.svc.Place(t.Context(), bob, sell("lapse-b"), "")
			if err != nil {
				t.Fatal(err)
			}
			close(resume)
			a := <-first
			if w := f.working(); len(w) > 1 {
				t.Errorf("two sells of the same 500 KO of ACC-1002 both work at the Trade service (answers %q and %q): the account lease lapsed during the journal write and nothing noticed", a.Status, second.Status)
			}
		})
	}
}

// raceOnApprovalCreate runs hook once, just before the first approval
// record is created: a console poll of another replica, landing between the
// approval's index entries and its record.
type raceOnApprovalCreate struct {
	store.Store
	hook func()
	done atomic.Bool
}

func (r *raceOnApprovalCreate) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if strings.HasPrefix(key, "approval:") && r.done.CompareAndSwap(false, true) {
		r.hook()
	}
	return r.Store.Create(ctx, key, value, ttl)
}

// TestQueuePollWhileAnApprovalIsRecorded: the approvers' queues are read
// (the console polls every 3 s) while an approval is being recorded; the
// approval must still be listed for approvers and held by its account.
func TestQueuePollWhileAnApprovalIsRecorded(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := &raceOnApprovalCreate{Store: open(t)}
			f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 100, MaxPositionWeight: 0.9}, nil)
			desk := principal.Principal{Subject: "desk", Accounts: []string{"ACC-2001"}} // an approver of one account
			st.hook = func() {
				ctx := context.WithoutCancel(t.Context())
				f.svc.ListPending(ctx, bob, 100)  // the global queue
				f.svc.ListPending(ctx, desk, 100) // the account's queue
			}
			pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "poll-race"), trading.Confirmation{Claimed: true})
			if err != nil || pl.Outcome.Approval == nil {
				t.Fatalf("%+v %v", pl.Outcome, err)
			}
			global, _ := f.svc.ListPending(t.Context(), bob, 100)
			acct, _ := f.svc.ListPending(t.Context(), desk, 100)
			held, _ := st.IndexRange(t.Context(), "approvals:pending:ACC-2001", 10)
			if len(global) != 1 || len(acct) != 1 {
				t.Errorf("approval %s is pending (%q), and the approvers' queues list %d (global) and %d (account ACC-2001) approvals, want 1 and 1; the account index a pre-trade check counts holds %q",
					pl.Outcome.Approval.ID, pl.Outcome.Status, len(global), len(acct), held)
			}
		})
	}
}

// applyThenFail applies the approve write, lets another replica act (hook),
// and then reports a store error: the write applied, its answer was lost.
type applyThenFail struct {
	store.Store
	hook func()
	done atomic.Bool
}

func (a *applyThenFail) Update(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) (int64, error) {
	v, err := a.Store.Update(ctx, key, value, version, ttl)
	if err == nil && strings.HasPrefix(key, "approval:") && strings.Contains(string(value), `"status":"approved"`) && a.done.CompareAndSwap(false, true) {
		a.hook()
		return 0, fmt.Errorf("%w: redis update: i/o timeout", store.ErrUnavailable)
	}
	return v, err
}

// TestApproveAppliedThenSentElsewhereIsNotSuperseded: an approve whose
// write applied but whose answer was lost, and whose order another replica
// sent before the read-back, took effect: it is not journaled as
// superseded, nor answered "no order was placed".
func TestApproveAppliedThenSentElsewhereIsNotSuperseded(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := &applyThenFail{Store: open(t)}
			f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 100, MaxPositionWeight: 0.9}, nil)
			pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "applied-then-sent"), trading.Confirmation{Claimed: true})
			if err != nil || pl.Outcome.Approval == nil {
				t.Fatalf("%+v %v", pl.Outcome, err)
			}
			id := pl.Outcome.Approval.ID
			st.hook = func() { f.svc.Status(context.WithoutCancel(t.Context()), alice, id) } // another replica drives it
			_, derr := f.svc.Decide(t.Context(), bob, id, trading.DecisionApprove, "ok", nil)
			superseded := 0
			f.j.mu.Lock()
			for _, e := range f.j.entries {
				if e.Action == "approval.decided.superseded" {
					superseded++
				}
			}
			f.j.mu.Unlock()
			if f.trade.orders() == 1 && (superseded > 0 || errors.Is(derr, trading.ErrStateUnavailable)) {
				t.Errorf("bob's approve took effect and its order was sent (%d order at the Trade service); Decide answered %v (ErrStateUnavailable: %v) and the trail holds %d approval.decided.superseded (\"nothing changed\")",
					f.trade.orders(), derr, errors.Is(derr, trading.ErrStateUnavailable), superseded)
			}
		})
	}
}

// createAppliedAnswerLost applies the first approval record's create and
// then reports a store error (a Redis timeout after the write).
type createAppliedAnswerLost struct {
	store.Store
	done atomic.Bool
}

func (c *createAppliedAnswerLost) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	err := c.Store.Create(ctx, key, value, ttl)
	if err == nil && strings.HasPrefix(key, "approval:") && c.done.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: redis create: i/o timeout", store.ErrUnavailable)
	}
	return err
}

// TestApprovalCreatedButAnswerLostIsNotNotPlaced: an approval whose create
// applied but whose answer was lost is not answered "no order was placed"
// while approvers can release it.
func TestApprovalCreatedButAnswerLostIsNotNotPlaced(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newRaceFixture(t, &createAppliedAnswerLost{Store: open(t)}, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 100, MaxPositionWeight: 0.9}, nil)
			_, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "create-lost"), trading.Confirmation{Claimed: true})
			queue, _ := f.svc.ListPending(t.Context(), bob, 10)
			for _, a := range queue {
				f.svc.Decide(t.Context(), bob, a.ID, trading.DecisionApprove, "ok", nil)
			}
			if err != nil && strings.Contains(err.Error(), "no order was placed") && f.trade.orders() > 0 {
				t.Errorf("place_order answered %q, and its approval was in bob's queue, approved and sent (%d order(s) at the Trade service)", err, f.trade.orders())
			}
		})
	}
}

// TestStaleApprovalEntriesDoNotBlockTheAccount: entries of an account's
// approvals index whose records are gone are dropped by the check that
// reads them, so more than 1,000 of them refuse orders once, not forever.
func TestStaleApprovalEntriesDoNotBlockTheAccount(t *testing.T) {
	st := store.NewMemory(nil)
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 1e6, MaxPositionWeight: 0.9}, nil)
	for i := range 1001 {
		if err := st.IndexAdd(t.Context(), "approvals:pending:ACC-2001", fmt.Sprintf("APR-GONE%05d", i), float64(i)); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	for i := range 3 {
		_, err = f.svc.Place(t.Context(), alice, tenKO(fmt.Sprintf("after-stale-%d", i)), "")
	}
	if errors.Is(err, trading.ErrTooManyOpen) {
		left, _ := st.IndexRange(t.Context(), "approvals:pending:ACC-2001", 2000)
		t.Errorf("no approval of ACC-2001 exists, and its third order is still refused (%v); its index still holds %d entries without records", err, len(left))
	}
}
