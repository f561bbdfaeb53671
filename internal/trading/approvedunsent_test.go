package trading_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// brokenQuotes is market data that does not answer: an approve then takes
// effect, and its order waits to be sent (ErrSendPending).
type brokenQuotes struct{ backends.MarketData }

func (brokenQuotes) Quotes(context.Context, []string) (backends.QuoteSet, error) {
	return backends.QuoteSet{}, fmt.Errorf("%w: market data down", backends.ErrUnavailable)
}

// approvedUnsent places an order that needs an approver, and approves it
// while market data is down, so its order is approved and not sent yet.
func approvedUnsent(t *testing.T, f *raceFixture, o trading.OrderArgs) string {
	t.Helper()
	pl, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Approval == nil {
		t.Fatalf("placing: %+v %v, want an approval", pl.Outcome, err)
	}
	md := f.market.MarketData
	f.market.MarketData = brokenQuotes{md}
	if _, err := f.svc.Decide(t.Context(), bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil); !errors.Is(err, trading.ErrSendPending) {
		t.Fatalf("approve: %v, want ErrSendPending", err)
	}
	f.market.MarketData = md
	return pl.Outcome.Approval.ID
}

var approveAll = policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 100, MaxPositionWeight: 0.9}

// TestApprovedBeforeAHaltIsNotSentAfterItsRelease: an order approved, and
// not sent yet, when a halt is engaged must not go out once the halt is
// released (a status read sends approved orders): the halt was meant to
// stop it. Nothing else fails it meanwhile: cancel-all leaves approved
// orders alone, and nothing reads it during the halt.
func TestApprovedBeforeAHaltIsNotSentAfterItsRelease(t *testing.T) {
	for _, scope := range []struct{ scope, target string }{{halt.Global, ""}, {halt.Account, "ACC-2001"}, {halt.Principal, "Alice"}} {
		t.Run(scope.scope, func(t *testing.T) {
			f := newRaceFixture(t, store.NewMemory(nil), approveAll, nil)
			id := approvedUnsent(t, f, resting(t, f, "pre-halt-approved"))
			// A halt elsewhere, released, stops nothing here.
			if _, err := f.halt.Engage(t.Context(), "risk-officer", halt.Account, "ACC-9999", "another account"); err != nil {
				t.Fatal(err)
			}
			if _, err := f.halt.Release(t.Context(), "risk-officer-2", halt.Account, "ACC-9999", "done"); err != nil {
				t.Fatal(err)
			}
			if _, err := f.halt.Engage(t.Context(), "risk-officer", scope.scope, scope.target, "runaway agent"); err != nil {
				t.Fatal(err)
			}
			officer := principal.Principal{Subject: "risk-officer", Accounts: []string{"*"}}
			if _, err := f.svc.CancelAll(t.Context(), officer, scope.scope, scope.target, "flatten"); err != nil {
				t.Fatal(err)
			}
			f.clock.Add(2 * time.Hour)
			if _, err := f.halt.Release(t.Context(), "risk-officer-2", scope.scope, scope.target, "all clear"); err != nil {
				t.Fatal(err)
			}
			st, err := f.svc.Status(t.Context(), alice, id)
			if n := f.trade.orders(); n != 0 {
				t.Fatalf("sent after the halt's release by a status read: %d order(s), status %s, %v", n, st.Status, err)
			}
			if err != nil || st.Approval == nil || st.Approval.Status != trading.ApprovalFailed {
				t.Errorf("status after the release: %+v %v, want the approval failed", st.Approval, err)
			}
			if !slices.ContainsFunc(f.journaled(), func(e trading.JournalEntry) bool { return e.ApprovalID == id && e.Action == "approval.failed" }) {
				t.Error("the failure is not in the audit trail")
			}
		})
	}
	// Approved after a halt was released, it goes out.
	f := newRaceFixture(t, store.NewMemory(nil), approveAll, nil)
	if _, err := f.halt.Engage(t.Context(), "risk-officer", halt.Global, "", "pause"); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(time.Minute)
	if _, err := f.halt.Release(t.Context(), "risk-officer-2", halt.Global, "", "resume"); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(time.Minute)
	id := approvedUnsent(t, f, resting(t, f, "post-halt-approved"))
	if st, err := f.svc.Status(t.Context(), alice, id); err != nil || st.Order == nil {
		t.Errorf("approved after the halt's release: %+v %v, want it sent", st, err)
	}
}

// TestApprovedOrderIsJournaledBeforeItGoesOut: an approved order's send,
// deferred and then driven by a status read, is journaled before it goes
// out, as a direct order's is; with the audit trail refusing, it does not.
func TestApprovedOrderIsJournaledBeforeItGoesOut(t *testing.T) {
	f := newRaceFixture(t, store.NewMemory(nil), approveAll, nil)
	id := approvedUnsent(t, f, resting(t, f, "approved-journal-down"))
	f.j.fail.Store(true)
	st, err := f.svc.Status(t.Context(), alice, id)
	if n := f.trade.orders(); n != 0 {
		t.Fatalf("with the audit trail refusing every step, a status read sent the order (%s, %v)", st.Status, err)
	}
	f.j.fail.Store(false)
	if st, err = f.svc.Status(t.Context(), alice, id); err != nil || st.Order == nil {
		t.Fatalf("status once the trail records again: %+v %v, want the order sent", st, err)
	}
	if !slices.ContainsFunc(f.journaled(), func(e trading.JournalEntry) bool { return e.ApprovalID == id && e.Action == "order.intent" }) {
		t.Error("the approved order went out without its intent in the audit trail")
	}
}

// TestFailedExecutionIsJournaled: an approved order that fails its check
// at execution, or that the Trade service refuses, leaves an
// approval.failed step with the reason; the trail no longer ends at the
// approval, which reads as an order that may have gone out.
func TestFailedExecutionIsJournaled(t *testing.T) {
	t.Run("check at execution", func(t *testing.T) {
		f := newRaceFixture(t, store.NewMemory(nil), policy.Rules{Mode: "paper", MaxOrderNotional: 1000, ApprovalNotional: 100, MaxPositionWeight: 0.9}, nil)
		pl, err := f.svc.PlaceOrder(t.Context(), alice, tenKO("failed-exec"), trading.Confirmation{Claimed: true})
		if err != nil || pl.Outcome.Approval == nil {
			t.Fatalf("placing: %+v %v", pl.Outcome, err)
		}
		f.market.scale.Store(200) // the check at execution now refuses it
		out, err := f.svc.Decide(t.Context(), bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil)
		if err != nil || out.Approval == nil || out.Approval.Status != trading.ApprovalFailed {
			t.Fatalf("approve: %+v %v, want the approval failed", out, err)
		}
		f.wantFailedStep(t, out.Approval.ID, "pre-trade check at execution")
	})
	t.Run("refused by the Trade service", func(t *testing.T) {
		f := newRaceFixture(t, store.NewMemory(nil), approveAll, func(tr backends.Trade) backends.Trade { return refusingTrade{tr} })
		pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "refused-exec"), trading.Confirmation{Claimed: true})
		if err != nil || pl.Outcome.Approval == nil {
			t.Fatalf("placing: %+v %v", pl.Outcome, err)
		}
		out, err := f.svc.Decide(t.Context(), bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil)
		if err != nil || out.Approval == nil || out.Approval.Status != trading.ApprovalFailed {
			t.Fatalf("approve: %+v %v, want the approval failed", out, err)
		}
		f.wantFailedStep(t, out.Approval.ID, "the Trade service refused it")
	})
}

// refusingTrade refuses every order.
type refusingTrade struct{ backends.Trade }

func (refusingTrade) PlaceOrder(context.Context, backends.OrderRequest) (backends.Order, error) {
	return backends.Order{}, fmt.Errorf("%w: symbol not tradable", backends.ErrInvalid)
}

func (f *raceFixture) wantFailedStep(t *testing.T, id, reason string) {
	t.Helper()
	i := slices.IndexFunc(f.journaled(), func(e trading.JournalEntry) bool { return e.ApprovalID == id && e.Action == "approval.failed" })
	if i < 0 {
		t.Fatalf("approval %s failed, and its trail has no approval.failed step: %v", id, f.journaled())
	}
	if e := f.journaled()[i]; e.Principal != "bob" || !strings.Contains(e.Detail, reason) {
		t.Errorf("approval.failed step %+v, want bob's approval and the reason %q", e, reason)
	}
}

// journaled is a copy of what the journal recorded.
func (f *raceFixture) journaled() []trading.JournalEntry {
	f.j.mu.Lock()
	defer f.j.mu.Unlock()
	return slices.Clone(f.j.entries)
}
