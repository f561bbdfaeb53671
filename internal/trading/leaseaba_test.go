package trading_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// TestLeaseThatRanOutIsNotRenewedOverALaterHolder: A's account lease runs
// out while it stalls; B takes it, places and hands it back, and C takes it
// again. A's renewal must fail (a lease record's versions never start over
// while a holder may still act), so A does not sell what B sold.
func TestLeaseThatRanOutIsNotRenewedOverALaterHolder(t *testing.T) {
	var c *clock
	st := store.NewMemory(func() time.Time { return c.Now() }) // the store's TTLs on the same clock
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 1e6, MaxPositionWeight: 1}, nil)
	c = f.clock
	q := koQuote(t)
	limit := float64(int(q.Bid*1.03*100)) / 100
	sell := func(key string) trading.OrderArgs {
		return trading.OrderArgs{AccountID: "ACC-1002", Ticker: "KO", Side: "sell", Type: "limit", Quantity: 500, LimitPrice: limit, IdempotencyKey: key}
	}
	stallA, resumeA := make(chan struct{}), make(chan struct{})
	stallC, resumeC := make(chan struct{}), make(chan struct{})
	var onceA, onceC sync.Once
	f.j.onRecord = func(e trading.JournalEntry) {
		if e.Action != "order.intent" {
			return
		}
		switch e.IdempotencyKey {
		case "aba-a":
			onceA.Do(func() { close(stallA); <-resumeA })
		case "aba-c":
			onceC.Do(func() { close(stallC); <-resumeC })
		}
	}
	ctx := context.WithoutCancel(t.Context())
	first := make(chan error, 1)
	go func() { _, err := f.svc.Place(ctx, bob, sell("aba-a"), ""); first <- err }()
	<-stallA                                                            // A checked under the account lease (version 1) and stalls in the audit sink
	f.clock.Add(11 * time.Second)                                       // A's lease (10 s) ran out; its record expired
	if _, err := f.svc.Place(ctx, bob, sell("aba-b"), ""); err != nil { // B takes the lease, passes, is sent
		t.Fatal(err)
	}
	f.clock.Add(11 * time.Second) // B's released lease record expired too
	third := make(chan error, 1)
	go func() {
		// C: any order on the account; it re-creates the lease record at version 1.
		_, err := f.svc.Place(ctx, bob, trading.OrderArgs{AccountID: "ACC-1002", Ticker: "KO", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: float64(int(q.Bid*0.5*100)) / 100, IdempotencyKey: "aba-c"}, "")
		third <- err
	}()
	<-stallC
	close(resumeA)
	errA := <-first
	close(resumeC)
	<-third
	sells := 0
	for _, o := range f.working() {
		if o.Side == "sell" {
			sells++
		}
	}
	if sells > 1 {
		t.Errorf("two sells of the same 500 KO of ACC-1002 both work (A answered err=%v): A's account lease lapsed and was taken by B, yet A's renew (CAS on version 1) succeeded against C's re-created lease record", errA)
	}
}
