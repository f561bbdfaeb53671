package trading_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// blipAfterApprove is a store that fails the next read of an approval
// record once, right after an approve was written: a Redis timeout
// between the decision and the execution.
type blipAfterApprove struct {
	store.Store
	blip atomic.Int32
}

func (b *blipAfterApprove) Update(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) (int64, error) {
	v, err := b.Store.Update(ctx, key, value, version, ttl)
	if err == nil && strings.HasPrefix(key, "approval:") && strings.Contains(string(value), `"status":"approved"`) {
		b.blip.Store(1)
	}
	return v, err
}

func (b *blipAfterApprove) Get(ctx context.Context, key string) ([]byte, int64, error) {
	if strings.HasPrefix(key, "approval:") && b.blip.CompareAndSwap(1, 0) {
		return nil, 0, fmt.Errorf("%w: redis get: i/o timeout", store.ErrUnavailable)
	}
	return b.Store.Get(ctx, key)
}

// TestApproveThatTookEffectIsSendPendingAfterAStoreBlip: an approve that
// took effect (recorded as approved) and whose order is not sent yet is
// ErrSendPending, one answer for the console, the API and approval events
// (202, "recorded"). A state-store blip in the execution step must not turn
// it into ErrStateUnavailable (503 "nothing changed; retry", console
// "failed", and a dead-lettered event telling approvers their decision
// never took effect).
func TestApproveThatTookEffectIsSendPendingAfterAStoreBlip(t *testing.T) {
	st := &blipAfterApprove{Store: store.NewMemory(nil)}
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 100, MaxPositionWeight: 0.9}, nil)
	pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "blip-approve"), trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Approval == nil {
		t.Fatalf("%+v %v", pl.Outcome, err)
	}
	_, err = f.svc.Decide(t.Context(), bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil)
	now, serr := f.svc.Status(t.Context(), bob, pl.Outcome.Approval.ID)
	t.Logf("decide: %v; status afterwards: %q (%v)", err, now.Status, serr)
	if err != nil && !errors.Is(err, trading.ErrSendPending) {
		t.Errorf("the approve took effect (the approval is %q) and was answered %q (ErrStateUnavailable: %v), want ErrSendPending",
			"approved", err, errors.Is(err, trading.ErrStateUnavailable))
	}
}

// failIndexOnce fails the first IndexAdd to one index: a Redis timeout in
// the middle of recording an approval.
type failIndexOnce struct {
	store.Store
	index  string
	failed atomic.Bool
}

func (f *failIndexOnce) IndexAdd(ctx context.Context, index, member string, score float64) error {
	return f.IndexAddAll(ctx, []string{index}, member, score)
}

// IndexAddAll writes the indexes before f.index, then fails (a pipeline
// cut short).
func (f *failIndexOnce) IndexAddAll(ctx context.Context, indexes []string, member string, score float64) error {
	if i := slices.Index(indexes, f.index); i >= 0 && f.failed.CompareAndSwap(false, true) {
		if err := f.Store.IndexAddAll(ctx, indexes[:i], member, score); err != nil {
			return err
		}
		return fmt.Errorf("%w: redis index add: i/o timeout", store.ErrUnavailable)
	}
	return f.Store.IndexAddAll(ctx, indexes, member, score)
}

// TestNotPlacedMeansNoApprovalExists: a store failure while an approval is
// recorded answers "the store is unavailable, so no order was placed", and
// that must be true: no approval an approver could release exists (it is
// listed before its record is created).
func TestNotPlacedMeansNoApprovalExists(t *testing.T) {
	st := &failIndexOnce{Store: store.NewMemory(nil), index: "approvals:pending:ACC-2001"}
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 100, MaxPositionWeight: 0.9}, nil)
	pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "half-indexed"), trading.Confirmation{Claimed: true})
	if !st.failed.Load() {
		t.Fatal("the index write never failed: the test tests nothing")
	}
	t.Logf("place_order: %q %v", pl.Outcome.Status, err)
	queue, _ := f.svc.ListPending(t.Context(), bob, 10)
	for _, a := range queue {
		out, derr := f.svc.Decide(t.Context(), bob, a.ID, trading.DecisionApprove, "ok", nil)
		t.Logf("approver bob approved %s from his queue: %q %v", a.ID, out.Status, derr)
	}
	if err != nil && strings.Contains(err.Error(), "no order was placed") && f.trade.orders() > 0 {
		t.Errorf("place_order answered %q, and its order was then approved and sent (%d order(s) at the Trade service)", err, f.trade.orders())
	}
}

// TestListOrdersAsksTheTradeServiceAboutAnUnansweredSend: an order whose
// answer was lost filled at the Trade service. list_orders promises each
// order "in its current state (working orders and approvals re-read, as
// get_order_status does)": it is listed as filled, and a filter for filled
// orders finds it.
func TestListOrdersAsksTheTradeServiceAboutAnUnansweredSend(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newRaceFixture(t, open(t), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9},
				func(tr backends.Trade) backends.Trade { return &lostAnswerTrade{Trade: tr} })
			if _, err := f.svc.PlaceOrder(t.Context(), alice, tenKO("lost-fill"), trading.Confirmation{Claimed: true}); err == nil {
				t.Fatal("the lost answer was reported as an outcome")
			}
			all, err := f.svc.ListOrders(t.Context(), alice, trading.ListQuery{AccountID: "ACC-2001", Limit: 20})
			if err != nil || len(all.Orders) != 1 {
				t.Fatalf("%+v %v", all, err)
			}
			filled, err := f.svc.ListOrders(t.Context(), alice, trading.ListQuery{AccountID: "ACC-2001", Limit: 20, States: []string{backends.StatusFilled}})
			if err != nil {
				t.Fatal(err)
			}
			if all.Orders[0].Status != backends.StatusFilled || len(filled.Orders) != 1 {
				t.Errorf("the Trade service filled the order; list_orders says %q (%q), and states=[filled] lists %d",
					all.Orders[0].Status, all.Orders[0].Message, len(filled.Orders))
			}
		})
	}
}

// refuseApproveWrite refuses (connection refused: it certainly did not
// apply) the write that would approve an approval.
type refuseApproveWrite struct{ store.Store }

func (r refuseApproveWrite) Update(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) (int64, error) {
	if strings.HasPrefix(key, "approval:") && strings.Contains(string(value), `"status":"approved"`) {
		return 0, fmt.Errorf("%w: redis update: connection refused", store.ErrUnavailable)
	}
	return r.Store.Update(ctx, key, value, version, ttl)
}

// TestDecisionTheStoreRefusedIsSuperseded: the superseded records exist
// so "the trail shows no decision or cancellation that did not happen". A
// decision the store refused (the API answers 503, nothing changed) is
// followed in the trail by approval.decided.superseded.
func TestDecisionTheStoreRefusedIsSuperseded(t *testing.T) {
	f := newRaceFixture(t, refuseApproveWrite{store.NewMemory(nil)}, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 100, MaxPositionWeight: 0.9}, nil)
	pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "unapplied-decision"), trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Approval == nil {
		t.Fatalf("%+v %v", pl.Outcome, err)
	}
	if _, err := f.svc.Decide(t.Context(), bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil); !errors.Is(err, trading.ErrStateUnavailable) {
		t.Fatalf("decide: %v, want ErrStateUnavailable", err)
	}
	now, _ := f.svc.Status(t.Context(), alice, pl.Outcome.Approval.ID)
	decided, superseded := 0, 0
	f.j.mu.Lock()
	for _, e := range f.j.entries {
		switch e.Action {
		case "approval.decided":
			decided++
		case "approval.decided.superseded":
			superseded++
		}
	}
	f.j.mu.Unlock()
	if now.Status == trading.StatusPendingApproval && decided > superseded {
		t.Errorf("the approval is still %q, and the trail holds %d approval.decided and %d approval.decided.superseded", now.Status, decided, superseded)
	}
}
