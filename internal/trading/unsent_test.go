package trading_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// failOneOpenIndexAdd fails the first IndexAdd to a principal's open-order
// index: a store blip in the middle of listSending.
type failOneOpenIndexAdd struct {
	store.Store
	done atomic.Bool
}

func (f *failOneOpenIndexAdd) IndexAddAll(ctx context.Context, indexes []string, member string, score float64) error {
	for i, idx := range indexes {
		if strings.HasPrefix(idx, "orders:open:principal:") && f.done.CompareAndSwap(false, true) {
			// Those before it were written.
			if err := f.Store.IndexAddAll(ctx, indexes[:i], member, score); err != nil {
				return err
			}
			return fmt.Errorf("%w: redis zadd: i/o timeout", store.ErrUnavailable)
		}
	}
	return f.Store.IndexAddAll(ctx, indexes, member, score)
}

// TestAListingOfAnOrderNeverSentIsDropped: the listing before a send fails
// half-way (the store), and the call answers that nothing was placed; what
// was written of the listing must not hold the shares, nor show in a
// cancel-all as an order being sent.
func TestAListingOfAnOrderNeverSentIsDropped(t *testing.T) {
	st := &failOneOpenIndexAdd{Store: store.NewMemory(nil)}
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 1e6, MaxPositionWeight: 1}, nil)
	q := koQuote(t)
	limit := float64(int(q.Bid*1.03*100)) / 100
	sell := func(key string) trading.OrderArgs {
		return trading.OrderArgs{AccountID: "ACC-1002", Ticker: "KO", Side: "sell", Type: "limit", Quantity: 500, LimitPrice: limit, IdempotencyKey: key}
	}
	_, err := f.svc.Place(t.Context(), bob, sell("stuck-a"), "")
	if !errors.Is(err, trading.ErrStateUnavailable) || f.trade.calls.Load() != 0 {
		t.Fatalf("first: %v, %d sends", err, f.trade.calls.Load())
	}
	t.Logf("first answered: %v", err)
	rep, _ := f.svc.CancelAll(t.Context(), bob, "account", "ACC-1002", "test")
	out, err := f.svc.Place(t.Context(), bob, sell("stuck-b"), "") // the user gives up on the first and places anew
	if err != nil || out.Status == trading.StatusRejected || len(rep.Failed) > 0 {
		t.Errorf("nothing was sent for stuck-a (told %q), yet a new sell of the 500 KO answers %q %v %v, and cancel-all reports failed %q",
			trading.ErrStateUnavailable, out.Status, out.Violations, err, rep.Failed)
	}
}
