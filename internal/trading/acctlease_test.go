package trading_test

import (
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// TestSlowCheckKeepsTheAccountLease: an order whose check is slow (its
// quote takes 6 s, within the execution lease) while a second order on the
// account waits keeps the account's lease: it is placed, not refused as if
// another order had been checked meanwhile.
func TestSlowCheckKeepsTheAccountLease(t *testing.T) {
	f := newRaceFixture(t, store.NewMemory(nil), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 1e6, MaxPositionWeight: 0.9}, nil)
	a := resting(t, f, "slow-check-a")
	b := resting(t, f, "slow-check-b")
	b.Quantity = 7
	doneB := make(chan struct{})
	var outB trading.Outcome
	var errB error
	slow := func() {
		f.clock.Add(6 * time.Second) // the quote takes 6 s
		go func() {
			defer close(doneB)
			outB, errB = f.svc.Place(t.Context(), bob, b, "")
		}()
		select { // the second order arrives meanwhile
		case <-doneB:
		case <-time.After(300 * time.Millisecond):
		}
	}
	f.market.onQuotes.Store(&slow)
	outA, errA := f.svc.Place(t.Context(), alice, a, "")
	<-doneB
	t.Logf("first (slow check): %q %v; second: %q %v", outA.Status, errA, outB.Status, errB)
	if errA != nil || outA.Status != backends.StatusAccepted {
		t.Errorf("an order whose check took 6 s under a 10 s lease was refused: %v", errA)
	}
}
