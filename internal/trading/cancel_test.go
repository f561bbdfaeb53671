package trading_test

import (
	"errors"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// TestCancelOfADecidedApprovalByAnotherSaysWhy: cancelling an approval
// someone else requested that was already rejected is refused as not
// cancellable (it is decided), not with "only the requester can withdraw
// it; an approver can reject it", which is false of a rejected one.
func TestCancelOfADecidedApprovalByAnotherSaysWhy(t *testing.T) {
	f := newRaceFixture(t, store.NewMemory(nil), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 100, MaxPositionWeight: 0.9}, nil)
	pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "decided-then-cancel"), trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Approval == nil {
		t.Fatalf("%+v %v", pl.Outcome, err)
	}
	if _, err := f.svc.Decide(t.Context(), bob, pl.Outcome.Approval.ID, trading.DecisionReject, "no", nil); err != nil {
		t.Fatal(err)
	}
	carol := principal.Principal{Subject: "carol", Accounts: []string{"ACC-2001"}}
	out, err := f.svc.Cancel(t.Context(), carol, pl.Outcome.Approval.ID)
	t.Logf("carol's cancel of a rejected approval: status %q, error %v", out.Status, err)
	if errors.Is(err, trading.ErrNotRequester) || !errors.Is(err, trading.ErrNotCancellable) {
		t.Errorf("got %v, want ErrNotCancellable (the approval was already rejected; no approver can reject it now)", err)
	}
}
