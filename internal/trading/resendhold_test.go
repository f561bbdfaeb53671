package trading_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// blipSendingRead fails (once, when armed) a read of a "sending:" record and
// remembers the last value written to one.
type blipSendingRead struct {
	store.Store
	armed atomic.Bool
	mu    sync.Mutex
	last  []byte
}

func (f *blipSendingRead) Get(ctx context.Context, key string) ([]byte, int64, error) {
	if strings.HasPrefix(key, "sending:") && f.armed.CompareAndSwap(true, false) {
		return nil, 0, fmt.Errorf("%w: redis get: i/o timeout", store.ErrUnavailable)
	}
	return f.Store.Get(ctx, key)
}
func (f *blipSendingRead) note(key string, v []byte) {
	if strings.HasPrefix(key, "sending:") {
		f.mu.Lock()
		f.last = append([]byte(nil), v...)
		f.mu.Unlock()
	}
}
func (f *blipSendingRead) Create(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	err := f.Store.Create(ctx, key, v, ttl)
	if err == nil {
		f.note(key, v)
	}
	return err
}
func (f *blipSendingRead) Update(ctx context.Context, key string, v []byte, ver int64, ttl time.Duration) (int64, error) {
	nv, err := f.Store.Update(ctx, key, v, ver, ttl)
	if err == nil {
		f.note(key, v)
	}
	return nv, err
}

type loseAll struct{ backends.Trade }

func (loseAll) PlaceOrder(context.Context, backends.OrderRequest) (backends.Order, error) {
	return backends.Order{}, fmt.Errorf("%w: timeout", backends.ErrUnavailable)
}

// TestResendKeepsTheHold: a resend whose read of the first send's hold
// record fails must not write it over with nothing held: the order, which
// may still land, keeps holding its cash.
func TestResendKeepsTheHold(t *testing.T) {
	st := &blipSendingRead{Store: store.NewMemory(nil)}
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9},
		func(tr backends.Trade) backends.Trade { return loseAll{tr} })
	o := resting(t, f, "resend-hold")
	if _, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true}); err == nil {
		t.Fatal("lost answer reported as an outcome")
	}
	var first struct{ Notional float64 }
	json.Unmarshal(st.last, &first)
	st.armed.Store(true)
	_, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
	t.Logf("resend: %v", err)
	var now struct{ Notional float64 }
	json.Unmarshal(st.last, &now)
	if first.Notional > 0 && now.Notional == 0 {
		t.Errorf("the first send held %.2f; after a resend whose read blipped the order (which may still land) holds %.2f", first.Notional, now.Notional)
	}
}
