package trading_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// failSendingRewrite fails (once, when armed) the rewrite of an order's
// "sending:" record: a store blip in a resend's listSending.
type failSendingRewrite struct {
	store.Store
	armed atomic.Bool
}

func (f *failSendingRewrite) Update(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) (int64, error) {
	if strings.HasPrefix(key, "sending:") && f.armed.CompareAndSwap(true, false) {
		return 0, fmt.Errorf("%w: redis update: i/o timeout", store.ErrUnavailable)
	}
	return f.Store.Update(ctx, key, value, version, ttl)
}

// TestResendListingFailureKeepsTheFirstSendListed: a resend after an
// unanswered send fails to list the order again (the store); the first
// send's listing stays, since its order may still land, and a halt's
// cancel-all finds the order once it does.
func TestResendListingFailureKeepsTheFirstSendListed(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := &failSendingRewrite{Store: open(t)}
			var late *firstLost
			f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9},
				losingFirst(&late, func(context.Context) error { return fmt.Errorf("%w: timeout", backends.ErrUnavailable) }))
			o := resting(t, f, "resend-blip")
			if _, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true}); err == nil {
				t.Fatal("the lost answer was reported as an outcome")
			}
			st.armed.Store(true)
			_, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
			t.Logf("retry (resend) answered: %v", err)
			if st.armed.Load() {
				t.Fatal("the fault was never injected")
			}
			late.land(t) // the first attempt's order arrives after all
			f.haltNow(t)
			if w := f.working(); len(w) != 0 {
				t.Errorf("a global halt and its cancel-all left %d order(s) working (the first send's listing was dropped by the resend's failed listing): %+v", len(w), w)
			}
		})
	}
}
