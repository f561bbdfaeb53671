package trading_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// TestOwnListingDoesNotHideAnOrderFromTheScan: with the order's own earlier
// listing among the 1,001 entries a check reads, the 1,002nd (a sell of
// all 500 KO) is not read: the check must refuse, not pass a second sell.
func TestOwnListingDoesNotHideAnOrderFromTheScan(t *testing.T) {
	st := store.NewMemory(nil)
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 1e6, MaxPositionWeight: 1}, nil)
	ctx := t.Context()
	idx := "orders:open:account:ACC-1002"
	q := koQuote(t)
	low := float64(int(q.Bid*0.5*100)) / 100
	high := float64(int(q.Ask*1.5*100)) / 100
	// The order being checked is listed already (its own earlier attempt).
	if err := st.IndexAdd(ctx, idx, trading.ClientOrderID("bob", "scan-self"), 0); err != nil {
		t.Fatal(err)
	}
	// 1,000 other working orders holding little: resting 1-share buys.
	for i := range 1000 {
		o, err := f.demo.PlaceOrder(ctx, backends.OrderRequest{ClientOrderID: fmt.Sprintf("other-%04d", i), AccountID: "ACC-1002", Ticker: "KO", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: low})
		if err != nil {
			t.Fatal(err)
		}
		st.IndexAdd(ctx, idx, o.OrderID, float64(1+i))
	}
	// The 1,001st other: a resting sell of all 500 KO.
	o, err := f.demo.PlaceOrder(ctx, backends.OrderRequest{ClientOrderID: "other-sell", AccountID: "ACC-1002", Ticker: "KO", Side: "sell", Type: "limit", Quantity: 500, LimitPrice: high})
	if err != nil {
		t.Fatal(err)
	}
	st.IndexAdd(ctx, idx, o.OrderID, 5000)
	out, err := f.svc.Place(ctx, bob, trading.OrderArgs{AccountID: "ACC-1002", Ticker: "KO", Side: "sell", Type: "limit", Quantity: 500, LimitPrice: high, IdempotencyKey: "scan-self"}, "")
	if err == nil && out.Status != trading.StatusRejected {
		t.Errorf("ACC-1002 has 1,001 other working orders, one of them selling all its 500 KO, and a second sell of 500 KO passed (%q); want ErrTooManyOpen or a rejection", out.Status)
	} else if !errors.Is(err, trading.ErrTooManyOpen) {
		t.Logf("answered %q %v", out.Status, err)
	}
}
