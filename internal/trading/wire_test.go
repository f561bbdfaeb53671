package trading_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// beforeWireRead runs hook once, just before the first read of the
// switch's state after an order was listed to be sent (the last look).
type beforeWireRead struct {
	store.Store
	listed atomic.Bool
	fired  atomic.Bool
	hook   func()
}

func (s *beforeWireRead) IndexAddAll(ctx context.Context, idx []string, m string, sc float64) error {
	err := s.Store.IndexAddAll(ctx, idx, m, sc)
	s.listed.Store(true)
	return err
}

func (s *beforeWireRead) Get(ctx context.Context, key string) ([]byte, int64, error) {
	if key == "halt:state" && s.listed.Load() && s.fired.CompareAndSwap(false, true) {
		s.hook()
	}
	return s.Store.Get(ctx, key)
}

// TestLapsedClaimRefusedAtTheWireLeavesNoListing: a direct order's last look
// is slow; its claim lapses, a retry with the same key takes it over and is
// refused by the halt at its own check (listing nothing). The first attempt,
// stopped too and told its claim was lost, drops its listing once it sees
// the key given back unsent: nothing will send that order, so nothing may
// hold for it or show in the halt's cancel-all as "being sent".
func TestLapsedClaimRefusedAtTheWireLeavesNoListing(t *testing.T) {
	st := &beforeWireRead{Store: store.NewMemory(nil)}
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9}, nil)
	o := resting(t, f, "lapsed-at-wire")
	ctx := context.WithoutCancel(t.Context())
	var retryErr error
	st.hook = func() {
		if _, err := f.halt.Engage(ctx, "risk-officer", halt.Global, "", "runaway"); err != nil {
			t.Error(err)
		}
		f.clock.Add(11 * time.Second) // past the 10 s lease
		_, retryErr = f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Claimed: true})
	}
	_, err := f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Claimed: true})
	if !errors.Is(retryErr, trading.ErrHalted) || !errors.Is(err, trading.ErrClaimLost) || f.trade.orders() != 0 {
		t.Fatalf("retry %v, first %v, %d orders: want the retry halted, the first told its claim was lost, nothing sent", retryErr, err, f.trade.orders())
	}
	officer := principal.Principal{Subject: "risk-officer", Accounts: []string{"*"}}
	rep, err := f.svc.CancelAll(ctx, officer, halt.Global, "", "runaway")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failed) != 0 {
		t.Errorf("nothing was sent and nothing will be, yet the listing stays: cancel-all reports %q", rep.Failed)
	}
}

// TestLapsedClaimStoppedAtTheWireLetsTheRetryAnswer: a direct order's last
// look is slow; meanwhile a global halt is engaged and released, the claim
// lapses, and a retry with the same key (checked after the release) places
// the order. The first attempt, stopped by the released halt, does not
// answer "not placed; place it again" (doubling the order if followed): it
// says another attempt took the order over, which answers.
func TestLapsedClaimStoppedAtTheWireLetsTheRetryAnswer(t *testing.T) {
	st := &beforeWireRead{Store: store.NewMemory(nil)}
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9}, nil)
	o := resting(t, f, "lapsed-retry-placed")
	ctx := context.WithoutCancel(t.Context())
	var retry trading.Placement
	var retryErr error
	st.hook = func() {
		if _, err := f.halt.Engage(ctx, "risk-officer", halt.Global, "", "runaway"); err != nil {
			t.Error(err)
		}
		if _, err := f.halt.Release(ctx, "risk-officer-2", halt.Global, "", "ok"); err != nil {
			t.Error(err)
		}
		f.clock.Add(11 * time.Second) // past the 10 s lease
		retry, retryErr = f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Claimed: true})
	}
	_, err := f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Claimed: true})
	if retryErr != nil || retry.Outcome.Order == nil || f.trade.orders() != 1 {
		t.Fatalf("retry %+v %v, %d orders: want the retry placed", retry.Outcome, retryErr, f.trade.orders())
	}
	if !errors.Is(err, trading.ErrClaimLost) {
		t.Errorf("the first attempt answers %q, while the retry placed the order under its key", err)
	}
}

// afterListedReleases runs hook once, after the first read of the switch's
// releases that follows an order's listing (an approved order's last look),
// before that read's answer is used.
type afterListedReleases struct {
	store.Store
	listed, fired atomic.Bool
	hook          func()
}

func (s *afterListedReleases) IndexAddAll(ctx context.Context, idx []string, m string, sc float64) error {
	err := s.Store.IndexAddAll(ctx, idx, m, sc)
	s.listed.Store(true)
	return err
}

func (s *afterListedReleases) Get(ctx context.Context, key string) ([]byte, int64, error) {
	v, ver, err := s.Store.Get(ctx, key)
	if key == "halt:released" && s.hook != nil && s.listed.Load() && s.fired.CompareAndSwap(false, true) {
		s.hook()
	}
	return v, ver, err
}

// TestTakeoverIsComparedFromTheApprovalsPass: an approved order's last
// look at the switch answers slowly; a global halt is engaged and released
// after the look read the switch, before the send is recorded, and the
// send's answer is lost. The takeover's resend is compared from the
// approval's pass, not from when the send was recorded, so that halt, which
// came after the approval, stops it.
func TestTakeoverIsComparedFromTheApprovalsPass(t *testing.T) {
	st := &afterListedReleases{Store: store.NewMemory(nil)}
	var late *firstLost
	f := newRaceFixture(t, st, approveAll, losingFirst(&late, func(context.Context) error {
		return fmt.Errorf("%w: timeout", backends.ErrUnavailable)
	}))
	id := approvedUnsent(t, f, resting(t, f, "takeover-since"))
	ctx := context.WithoutCancel(t.Context())
	st.listed.Store(false) // the approval's own listing is not the send's
	st.hook = func() {
		f.clock.Add(time.Second)
		if _, err := f.halt.Engage(ctx, "risk-officer", halt.Global, "", "runaway"); err != nil {
			t.Error(err)
		}
		f.clock.Add(time.Second)
		if _, err := f.halt.Release(ctx, "risk-officer-2", halt.Global, "", "ok"); err != nil {
			t.Error(err)
		}
		f.clock.Add(6 * time.Second) // the read answers slowly
	}
	f.svc.Status(ctx, alice, id) // sends; the answer is lost
	if !st.fired.Load() || late == nil || late.held == nil {
		t.Fatal("the first send did not go out past the slow last look")
	}
	f.clock.Add(11 * time.Second) // its lease lapses: a takeover resends
	out, err := f.svc.Status(ctx, alice, id)
	if n := f.trade.orders(); n != 0 {
		t.Errorf("a halt engaged after the approval (and before its first send went out) was released; the takeover resent the order anyway: %d order(s), %s %v", n, out.Status, err)
	}
}

// ctxStore fails calls whose context is done, as the Redis client does.
type ctxStore struct{ beforeWireRead }

func (s *ctxStore) Get(ctx context.Context, key string) ([]byte, int64, error) {
	if key == "halt:state" && s.listed.Load() && s.fired.CompareAndSwap(false, true) {
		s.hook()
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", store.ErrUnavailable, err)
	}
	return s.Store.Get(ctx, key)
}

func (s *ctxStore) Update(ctx context.Context, key string, v []byte, ver int64, ttl time.Duration) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("%w: %v", store.ErrUnavailable, err)
	}
	return s.Store.Update(ctx, key, v, ver, ttl)
}

// TestCallerGoneAtTheWireLeavesNoListing: the agent hangs up while its
// direct order is at its last look. Nothing is sent, and the listing goes:
// what an order leaves behind does not depend on its caller still waiting.
func TestCallerGoneAtTheWireLeavesNoListing(t *testing.T) {
	st := &ctxStore{beforeWireRead{Store: store.NewMemory(nil)}}
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	st.hook = cancel
	if _, err := f.svc.PlaceOrder(ctx, alice, resting(t, f, "gone-at-wire"), trading.Confirmation{Claimed: true}); err == nil || f.trade.orders() != 0 {
		t.Fatalf("%v, %d orders: want refused, nothing sent", err, f.trade.orders())
	}
	officer := principal.Principal{Subject: "risk-officer", Accounts: []string{"*"}}
	rep, err := f.svc.CancelAll(context.WithoutCancel(t.Context()), officer, halt.Global, "", "check")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failed) != 0 {
		t.Errorf("nothing was sent, yet the listing stays: %q", rep.Failed)
	}
}
