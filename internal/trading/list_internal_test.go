package trading

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// countingStore counts reads.
type countingStore struct {
	store.Store
	gets atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, key string) ([]byte, int64, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, key)
}

// TestListOrdersPageWorkIsBounded: behind a principal's newest order lie
// thousands of refused calls (kept in the index: a retry may still place
// them). A page reads at most maxExamined of them, then hands back a cursor,
// and following the cursors still reaches the oldest order.
func TestListOrdersPageWorkIsBounded(t *testing.T) {
	cs := &countingStore{Store: store.NewMemory(nil)}
	now := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	rules := policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.5}
	s := New(Config{Rules: rules}, cs, demo.New(nil).Set(), nopJournal{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), clock)
	p := principal.Principal{Subject: "alice", Accounts: []string{"ACC-1001"}}
	ctx := t.Context()
	oldest := OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 1, IdempotencyKey: "oldest"}
	if out, err := s.place(ctx, p, oldest, "", nil); err != nil || out.Order == nil {
		t.Fatalf("%+v %v", out, err)
	}
	const refused = 2*maxExamined + 500
	for i := range refused {
		now = now.Add(time.Millisecond)
		o := OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 10, IdempotencyKey: fmt.Sprintf("refused-%05d", i)}
		s.remember(ctx, p.Subject, o)
		if err := putJSON(ctx, cs, idemKey(p.Subject, "place_order", o.IdempotencyKey), idemRecord{Digest: o.Digest(), State: idemReleased}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	cursor, pages, found := "", 0, false
	for !found {
		cs.gets.Store(0)
		l, err := s.ListOrders(ctx, p, ListQuery{AccountID: "ACC-1001", Limit: 10, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		if g := cs.gets.Load(); g > 3*maxExamined {
			t.Fatalf("page %d made %d store reads; a page examines at most %d entries", pages, g, maxExamined)
		}
		pages++
		for _, o := range l.Orders {
			found = found || o.IdempotencyKey == "oldest"
		}
		if l.NextCursor == "" {
			break
		}
		cursor = l.NextCursor
	}
	if !found || pages != 3 {
		t.Errorf("the oldest order found: %v, after %d pages (want 3: %d refused entries, %d a page)", found, pages, refused, maxExamined)
	}
}

// nopJournal records nothing.
type nopJournal struct{}

func (nopJournal) Record(context.Context, JournalEntry) error     { return nil }
func (nopJournal) RecordDone(context.Context, JournalEntry) error { return nil }
