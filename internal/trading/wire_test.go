package trading_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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
// direct order is at its last look. Nothing is sent, and the listing goes
// (its claim check outlives the caller): what an order leaves behind does
// not depend on its caller still waiting.
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

// hooked runs one-shot hooks: afterList after the next IndexAddAll,
// afterIdem after the next successful Update of an idempotency record,
// beforeHalt before the next read of the switch's state.
type hooked struct {
	store.Store
	mu                               sync.Mutex
	afterList, afterIdem, beforeHalt func()
}

func (s *hooked) take(p *func()) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := *p
	*p = nil
	return f
}

func (s *hooked) set(p *func(), f func()) { s.mu.Lock(); *p = f; s.mu.Unlock() }

func (s *hooked) IndexAddAll(ctx context.Context, idx []string, m string, sc float64) error {
	err := s.Store.IndexAddAll(ctx, idx, m, sc)
	if f := s.take(&s.afterList); f != nil {
		f()
	}
	return err
}

func (s *hooked) Update(ctx context.Context, key string, v []byte, ver int64, ttl time.Duration) (int64, error) {
	nv, err := s.Store.Update(ctx, key, v, ver, ttl)
	if err == nil && strings.HasPrefix(key, "idem:") {
		if f := s.take(&s.afterIdem); f != nil {
			f()
		}
	}
	return nv, err
}

func (s *hooked) Get(ctx context.Context, key string) ([]byte, int64, error) {
	if key == "halt:state" {
		if f := s.take(&s.beforeHalt); f != nil {
			f()
		}
	}
	return s.Store.Get(ctx, key)
}

var wireRules = policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9}

// TestStalledTakeoverLeavesTheNextAttemptsListing: a takeover stalls past
// its own lease at the switch while a later attempt takes the key over and
// places the order; then the takeover is halted. It must not drop the
// listing the later attempt's working order is under: the halt's cancel-all
// cancels that order.
func TestStalledTakeoverLeavesTheNextAttemptsListing(t *testing.T) {
	st := &hooked{Store: store.NewMemory(nil)}
	f := newRaceFixture(t, st, wireRules, nil)
	o := resting(t, f, "takeover-vs-next")
	ctx := context.WithoutCancel(t.Context())
	f.j.fail.Store(true) // the first attempt: the audit sink refuses, the key is given back unsent
	if _, err := f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Claimed: true}); err == nil {
		t.Fatal("want the first attempt refused")
	}
	f.j.fail.Store(false)
	var next trading.Placement
	var nextErr error
	st.set(&st.afterIdem, func() { // B claimed the key (a takeover); its switch read stalls
		st.set(&st.beforeHalt, func() {
			f.clock.Add(11 * time.Second) // past B's lease
			next, nextErr = f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Claimed: true})
			if _, err := f.halt.Engage(ctx, "risk-officer", halt.Global, "", "runaway"); err != nil {
				t.Error(err)
			}
		})
	})
	_, err := f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Claimed: true})
	if nextErr != nil || next.Outcome.Order == nil || f.trade.orders() != 1 {
		t.Fatalf("B %v; C %+v %v, %d orders: want C placed", err, next.Outcome, nextErr, f.trade.orders())
	}
	t.Logf("B answered %v", err)
	officer := principal.Principal{Subject: "risk-officer", Accounts: []string{"*"}}
	rep, err := f.svc.CancelAll(ctx, officer, halt.Global, "", "flatten")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Cancelled) != 1 {
		t.Errorf("order %s is working, yet cancel-all cancelled %q (failed %q): the stalled takeover dropped its listing",
			next.Outcome.Order.OrderID, rep.Cancelled, rep.Failed)
	}
}

// flaky fails the next Update of an idempotency record once armed.
type flaky struct {
	hooked
	failIdem bool
}

func (s *flaky) Update(ctx context.Context, key string, v []byte, ver int64, ttl time.Duration) (int64, error) {
	s.mu.Lock()
	fail := s.failIdem && strings.HasPrefix(key, "idem:")
	if fail {
		s.failIdem = false
	}
	s.mu.Unlock()
	if fail {
		return 0, store.ErrUnavailable
	}
	return s.hooked.Update(ctx, key, v, ver, ttl)
}

// TestLastLookStoreErrorLeavesTheOwnersListing: a send stopped at its last
// look cannot confirm it still holds the key (the store errs): it keeps the
// listing, which an attempt that took the key over may have placed the
// order under, and sends the agent back to the same key rather than saying
// "place it again".
func TestLastLookStoreErrorLeavesTheOwnersListing(t *testing.T) {
	st := &flaky{hooked: hooked{Store: store.NewMemory(nil)}}
	f := newRaceFixture(t, st, wireRules, nil)
	o := resting(t, f, "lastlook-store-error")
	ctx := context.WithoutCancel(t.Context())
	var retry trading.Placement
	var retryErr error
	st.set(&st.afterList, func() {
		st.set(&st.beforeHalt, func() {
			if _, err := f.halt.Engage(ctx, "risk-officer", halt.Global, "", "runaway"); err != nil {
				t.Error(err)
			}
			if _, err := f.halt.Release(ctx, "risk-officer-2", halt.Global, "", "ok"); err != nil {
				t.Error(err)
			}
			f.clock.Add(11 * time.Second)
			retry, retryErr = f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Claimed: true})
			st.mu.Lock()
			st.failIdem = true // A's claim check at its last look: the store does not answer
			st.mu.Unlock()
		})
	})
	_, err := f.svc.PlaceOrder(ctx, alice, o, trading.Confirmation{Claimed: true})
	if retryErr != nil || retry.Outcome.Order == nil || f.trade.orders() != 1 {
		t.Fatalf("retry %+v %v: want placed", retry.Outcome, retryErr)
	}
	t.Logf("A answered %v", err)
	officer := principal.Principal{Subject: "risk-officer", Accounts: []string{"*"}}
	rep, err := f.svc.CancelAll(ctx, officer, halt.Global, "", "flatten")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Cancelled) != 1 {
		t.Errorf("order %s is working, yet cancel-all cancelled %q: the lapsed attempt dropped its listing", retry.Outcome.Order.OrderID, rep.Cancelled)
	}
}
