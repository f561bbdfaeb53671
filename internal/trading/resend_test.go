package trading_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
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
// send's listing stays, since its order may still land, a halt's cancel-all
// finds the order once it does, and the answer does not say nothing was
// placed.
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
			if st.armed.Load() {
				t.Fatal("the fault was never injected")
			}
			if err == nil || strings.Contains(err.Error(), "no order was placed") {
				t.Errorf("the resend answered %v; the first send may still land, so it must not say nothing was placed", err)
			}
			late.land(t) // the first attempt's order arrives after all
			f.haltNow(t)
			if w := f.working(); len(w) != 0 {
				t.Errorf("a global halt and its cancel-all left %d order(s) working (the first send's listing was dropped by the resend's failed listing): %+v", len(w), w)
			}
		})
	}
}

// blipSendingRead fails (once, when armed) a read of an order's "sending:"
// record: a store blip in a resend's listSending.
type blipSendingRead struct {
	store.Store
	armed atomic.Bool
}

func (f *blipSendingRead) Get(ctx context.Context, key string) ([]byte, int64, error) {
	if strings.HasPrefix(key, "sending:") && f.armed.CompareAndSwap(true, false) {
		return nil, 0, fmt.Errorf("%w: redis get: i/o timeout", store.ErrUnavailable)
	}
	return f.Store.Get(ctx, key)
}

// TestResendKeepsTheHold: a resend whose read of the first send's hold
// record fails must not write it over with nothing held: the order, which
// may still land, keeps holding its cash.
func TestResendKeepsTheHold(t *testing.T) {
	st := &blipSendingRead{Store: store.NewMemory(nil)}
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9}, nil)
	f.trade.fail.Store(true) // no answer from the Trade service
	o := resting(t, f, "resend-hold")
	held := func() float64 {
		t.Helper()
		raw, _, err := st.Store.Get(t.Context(), "sending:"+trading.ClientOrderID(alice.Subject, o.IdempotencyKey))
		var rec struct{ Notional float64 }
		if err != nil || json.Unmarshal(raw, &rec) != nil {
			t.Fatalf("the order's hold record: %s %v", raw, err)
		}
		return rec.Notional
	}
	if _, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true}); err == nil {
		t.Fatal("an unanswered send was reported as an outcome")
	}
	first := held()
	if first <= 0 {
		t.Fatalf("the first send holds %.2f, want its notional", first)
	}
	st.armed.Store(true)
	_, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
	if st.armed.Load() {
		t.Fatal("the fault was never injected")
	}
	if now := held(); now != first {
		t.Errorf("the first send held %.2f; after a resend whose read failed (%v) the order, which may still land, holds %.2f", first, err, now)
	}
}

// TestResendStoppedBeforeTheWireSaysTheFirstMayLand: a retry of an order
// whose send got no answer stops before it sends again (the audit trail
// refuses its intent, or a halt came). The first send may still land, so
// the answer must not say that no order was placed, as it did: an agent
// told so places the order again, under a new key.
func TestResendStoppedBeforeTheWireSaysTheFirstMayLand(t *testing.T) {
	for name, block := range map[string]func(t *testing.T, f *raceFixture){
		"journal down": func(t *testing.T, f *raceFixture) { f.j.fail.Store(true) },
		"halted": func(t *testing.T, f *raceFixture) {
			if _, err := f.halt.Engage(t.Context(), "risk-officer", halt.Global, "", "stop"); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			var late *firstLost
			f := newRaceFixture(t, store.NewMemory(nil), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9},
				losingFirst(&late, func(context.Context) error { return fmt.Errorf("%w: timeout", backends.ErrUnavailable) }))
			o := resting(t, f, "resend-blocked")
			if _, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true}); err == nil {
				t.Fatal("a send without an answer was reported as an outcome")
			}
			block(t, f)
			_, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
			if err == nil {
				t.Fatal("a blocked resend was reported as an outcome")
			}
			if msg := strings.ToLower(err.Error()); strings.Contains(msg, "not placed") || strings.Contains(msg, "no order was placed") {
				t.Errorf("retry answered %q, while the first send may still land", err)
			}
			late.land(t) // and it does
			if n := f.trade.orders(); n != 1 {
				t.Fatalf("%d orders at the Trade service, want the first send's", n)
			}
		})
	}
}

// TestRetriesCannotKeepResendingUnchecked: the Trade service takes orders
// but never answers, and the agent retries every ten minutes. Each retry
// resent the order unchecked and restarted the resend window, so it went
// out, once the Trade service answered again, hours after its only check
// and into a market where a check refuses it. A resend goes out unchecked
// only within the window of the first send; after that the retry waits
// until the last send can no longer land, then checks afresh.
func TestRetriesCannotKeepResendingUnchecked(t *testing.T) {
	f := newRaceFixture(t, store.NewMemory(nil), tightRules, nil)
	o := tenKO("resend-chain")
	f.trade.fail.Store(true)
	if _, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true}); err == nil {
		t.Fatal("an unanswered send was reported as an outcome")
	}
	f.market.scale.Store(200) // from now on, a check refuses the order
	rejected := false
	for range 12 {
		f.clock.Add(10 * time.Minute)
		pl, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
		switch {
		case err == nil && pl.Outcome.Status == trading.StatusRejected:
			rejected = true
		case err == nil:
			t.Fatalf("retry: %+v, want no answer yet or a refusal", pl.Outcome)
		case rejected:
			t.Fatalf("after a fresh check refused it, a retry answered %v", err)
		}
	}
	if !rejected {
		t.Error("two hours of retries, and the order was never checked afresh")
	}
	f.trade.fail.Store(false)
	f.clock.Add(10 * time.Minute)
	if pl, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true}); err != nil || pl.Outcome.Status != trading.StatusRejected {
		t.Errorf("retry once the Trade service answers: %+v %v, want the fresh check's refusal", pl.Outcome, err)
	}
	if n := f.trade.orders(); n != 0 {
		t.Errorf("%d orders went out unchecked after the market moved", n)
	}
}
