package trading

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
)

// TestLeaseWaitersDoNotOutliveTheirWait: a call that gives up waiting for
// a lease another replica holds leaves nothing behind on its own replica:
// the wake-up entry for a key lives only while someone waits on it.
func TestLeaseWaitersDoNotOutliveTheirWait(t *testing.T) {
	st := store.NewMemory(nil)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := New(Config{Lease: 10 * time.Second}, st, backends.Set{}, nil, nil, log, nil)
	b := New(Config{Lease: 10 * time.Second}, st, backends.Set{}, nil, nil, log, nil)
	for i := range 50 {
		key := fmt.Sprintf("acctlock:ACC-%d", i)
		held, err := b.lease(t.Context(), key, 5*time.Second, "waiting")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Millisecond)
		if _, err := a.lease(ctx, key, 5*time.Second, "waiting"); err == nil {
			t.Fatal("took a held lease")
		}
		cancel()
		held.unlock(t.Context())
	}
	a.leases.mu.Lock()
	n := len(a.leases.slots)
	a.leases.mu.Unlock()
	if n != 0 {
		t.Errorf("replica A keeps %d wake-up channels for leases nobody on it waits for any more", n)
	}
}
