package trading_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/redistest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

var (
	alice = principal.Principal{Subject: "alice", Accounts: []string{"ACC-1001", "ACC-2001"}}
	bob   = principal.Principal{Subject: "bob", Accounts: []string{"*"}}
	eve   = principal.Principal{Subject: "eve", Accounts: []string{"ACC-1003"}}
)

// countingTrade counts orders the backend really created.
type countingTrade struct {
	backends.Trade
	mu      sync.Mutex
	created map[string]bool
	calls   atomic.Int64
	fail    atomic.Bool
}

func (c *countingTrade) PlaceOrder(ctx context.Context, r backends.OrderRequest) (backends.Order, error) {
	c.calls.Add(1)
	if c.fail.Load() {
		return backends.Order{}, fmt.Errorf("%w: connection refused", backends.ErrUnavailable)
	}
	o, err := c.Trade.PlaceOrder(ctx, r)
	if err == nil {
		c.mu.Lock()
		c.created[o.OrderID] = true
		c.mu.Unlock()
	}
	return o, err
}

func (c *countingTrade) orders() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.created)
}

type journal struct {
	mu      sync.Mutex
	entries []trading.JournalEntry
	fail    atomic.Bool
	// onRecord, if set, runs inside Record: a slow sink, simulated.
	onRecord func(trading.JournalEntry)
}

func (j *journal) Record(ctx context.Context, e trading.JournalEntry) error {
	if j.fail.Load() {
		return errors.New("sink down")
	}
	if j.onRecord != nil {
		j.onRecord(e)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = append(j.entries, e)
	return nil
}

func (j *journal) RecordDone(ctx context.Context, e trading.JournalEntry) error {
	return j.Record(ctx, e)
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

type fixture struct {
	svc   *trading.Service
	trade *countingTrade
	j     *journal
	clock *clock
	st    store.Store
}

func newFixture(t testing.TB, st store.Store) *fixture {
	t.Helper()
	d := demo.New(nil)
	bs := d.Set()
	ct := &countingTrade{Trade: d, created: map[string]bool{}}
	bs.Trade = ct
	f := &fixture{trade: ct, j: &journal{}, clock: &clock{now: time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)}, st: st}
	f.svc = newService(st, bs, f.j, f.clock)
	return f
}

func newService(st store.Store, bs backends.Set, j trading.Journal, c *clock) *trading.Service {
	rules := policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.5}
	return trading.New(trading.Config{Rules: rules, ApprovalTTL: 30 * time.Minute, Lease: 10 * time.Second},
		st, bs, j, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), c.Now)
}

func small(key string) trading.OrderArgs {
	return trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 10, IdempotencyKey: key}
}

func large(key string) trading.OrderArgs {
	return trading.OrderArgs{AccountID: "ACC-2001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 1000, IdempotencyKey: key}
}

func stores(t testing.TB) map[string]func(t testing.TB) store.Store {
	return map[string]func(t testing.TB) store.Store{
		"memory": func(t testing.TB) store.Store { return store.NewMemory(nil) },
		"redis": func(t testing.TB) store.Store {
			srv := redistest.Start(t)
			return store.NewRedis(redis.NewClient(&redis.Options{Addr: srv.Addr}), "t:")
		},
	}
}

func TestIdempotentPlace(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, open(t))
			ctx := t.Context()
			out, err := f.svc.Place(ctx, alice, small("key-00000001"), "")
			if err != nil || out.Status != backends.StatusFilled || out.Order == nil {
				t.Fatalf("first place: %+v %v", out, err)
			}
			again, err := f.svc.Place(ctx, alice, small("key-00000001"), "")
			if err != nil || !again.Replayed || again.Order.OrderID != out.Order.OrderID {
				t.Fatalf("replay: %+v %v", again, err)
			}
			diff := small("key-00000001")
			diff.Quantity = 11
			if _, err := f.svc.Place(ctx, alice, diff, ""); !errors.Is(err, trading.ErrKeyReused) {
				t.Fatalf("same key, other args: %v, want ErrKeyReused", err)
			}
			// The key is per principal: bob's identical key is his own order.
			bobOut, err := f.svc.Place(ctx, bob, small("key-00000001"), "")
			if err != nil || bobOut.Order.OrderID == out.Order.OrderID {
				t.Fatalf("bob's order: %+v %v", bobOut, err)
			}
			if f.trade.orders() != 2 {
				t.Fatalf("backend has %d orders, want 2", f.trade.orders())
			}
			if _, err := f.svc.Place(ctx, eve, small("key-00000002"), ""); !errors.Is(err, backends.ErrNotFound) {
				t.Fatalf("unentitled account: %v", err)
			}
		})
	}
}

// TestConcurrentSameKey: 100 concurrent calls with one key make one order;
// 100 with distinct keys make 100. Two services on one store act as two
// replicas.
func TestConcurrentSameKey(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			f := newFixture(t, st)
			d := demo.New(nil)
			bs2 := d.Set()
			bs2.Trade = f.trade // one Trade backend behind both replicas
			replica2 := newService(st, bs2, f.j, f.clock)

			var wg sync.WaitGroup
			ids := make(chan string, 100)
			for i := range 100 {
				svc := f.svc
				if i%2 == 1 {
					svc = replica2
				}
				wg.Go(func() {
					out, err := svc.Place(t.Context(), alice, small("same-key-123"), "")
					if err != nil {
						t.Error(err)
						return
					}
					ids <- out.Order.OrderID
				})
			}
			wg.Wait()
			close(ids)
			first := ""
			for id := range ids {
				if first == "" {
					first = id
				}
				if id != first {
					t.Fatalf("two order ids for one key: %s, %s", first, id)
				}
			}
			if f.trade.orders() != 1 || f.trade.calls.Load() != 1 {
				t.Fatalf("%d orders from %d backend calls, want 1 and 1", f.trade.orders(), f.trade.calls.Load())
			}

			// The demo book spends cash on every fill: 100 more buys need
			// the pension account's.
			for i := range 100 {
				wg.Go(func() {
					o := small(fmt.Sprintf("distinct-%04d", i))
					o.AccountID = "ACC-2001"
					if _, err := f.svc.Place(t.Context(), alice, o, ""); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if f.trade.orders() != 101 {
				t.Fatalf("%d orders, want 101", f.trade.orders())
			}
		})
	}
}

func TestApprovalFourEyesAndExactlyOnce(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, open(t))
			ctx := t.Context()
			out, err := f.svc.Place(ctx, alice, large("big-order-1"), "")
			if err != nil || out.Status != trading.StatusPendingApproval || out.Approval == nil {
				t.Fatalf("large order: %+v %v", out, err)
			}
			id := out.Approval.ID
			if f.trade.calls.Load() != 0 {
				t.Fatal("a pending order reached the backend")
			}
			pending, _ := f.svc.ListPending(ctx, bob, 10)
			if len(pending) != 1 || pending[0].ID != id {
				t.Fatalf("pending = %+v", pending)
			}
			if _, err := f.svc.Decide(ctx, alice, id, trading.DecisionApprove, "mine", nil); !errors.Is(err, trading.ErrFourEyes) {
				t.Fatalf("self-approval: %v", err)
			}
			if _, err := f.svc.Decide(ctx, eve, id, trading.DecisionApprove, "", nil); !errors.Is(err, trading.ErrNotFound) {
				t.Fatalf("unentitled approver: %v", err)
			}

			// Many approvers racing (and retrying) still execute once.
			var wg sync.WaitGroup
			for range 20 {
				wg.Go(func() { f.svc.Decide(ctx, bob, id, trading.DecisionApprove, "ok", nil) })
			}
			wg.Wait()
			st, err := f.svc.Status(ctx, alice, id)
			if err != nil || st.Status != backends.StatusFilled || st.Order == nil {
				t.Fatalf("status after approval: %+v %v", st, err)
			}
			if f.trade.orders() != 1 {
				t.Fatalf("%d backend orders, want 1", f.trade.orders())
			}
			if _, err := f.svc.Decide(ctx, principal.Principal{Subject: "carol", Accounts: []string{"*"}}, id, trading.DecisionReject, "late", nil); !errors.Is(err, trading.ErrAlreadyDecided) {
				t.Fatalf("late reject: %v", err)
			}
			// The agent's retry of place_order with the same key sees the execution.
			replay, err := f.svc.Place(ctx, alice, large("big-order-1"), "")
			if err != nil || replay.Status != backends.StatusFilled {
				t.Fatalf("replay after approval: %+v %v", replay, err)
			}
			if pending, _ := f.svc.ListPending(ctx, bob, 10); len(pending) != 0 {
				t.Fatalf("still pending: %+v", pending)
			}
		})
	}
}

func TestRejectExpireCancel(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	rejected, _ := f.svc.Place(ctx, alice, large("reject-me-1"), "")
	if out, err := f.svc.Decide(ctx, bob, rejected.Approval.ID, trading.DecisionReject, "too big", nil); err != nil || out.Status != trading.StatusRejected {
		t.Fatalf("reject: %+v %v", out, err)
	}
	expiring, _ := f.svc.Place(ctx, alice, large("expire-me-1"), "")
	cancelled, _ := f.svc.Place(ctx, alice, large("cancel-me-1"), "")
	if _, err := f.svc.Cancel(ctx, bob, cancelled.Approval.ID); !errors.Is(err, trading.ErrNotRequester) {
		t.Fatalf("cancel by non-requester: %v", err)
	}
	if out, err := f.svc.Cancel(ctx, alice, cancelled.Approval.ID); err != nil || out.Status != trading.ApprovalCancelled {
		t.Fatalf("cancel: %+v %v", out, err)
	}
	f.clock.Add(31 * time.Minute)
	if _, err := f.svc.Decide(ctx, bob, expiring.Approval.ID, trading.DecisionApprove, "", nil); !errors.Is(err, trading.ErrExpired) {
		t.Fatalf("approve after expiry: %v", err)
	}
	if _, err := f.svc.Decide(ctx, bob, cancelled.Approval.ID, trading.DecisionApprove, "", nil); !errors.Is(err, trading.ErrAlreadyDecided) {
		t.Fatalf("approve cancelled: %v", err)
	}
	if f.trade.calls.Load() != 0 {
		t.Fatalf("rejected/expired/cancelled orders reached the backend %d times", f.trade.calls.Load())
	}
}

// TestFailClosed: no journal, no trade; the key is free for the retry.
func TestFailClosed(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	f.j.fail.Store(true)
	if _, err := f.svc.Place(ctx, alice, small("journal-down-1"), ""); !errors.Is(err, trading.ErrNotRecorded) {
		t.Fatalf("journal down: %v", err)
	}
	if f.trade.calls.Load() != 0 {
		t.Fatal("traded without a journal record")
	}
	f.j.fail.Store(false)
	if out, err := f.svc.Place(ctx, alice, small("journal-down-1"), ""); err != nil || out.Status != backends.StatusFilled {
		t.Fatalf("retry after recovery: %+v %v", out, err)
	}

	// Backend down: error, and the retry with the same key makes one order.
	f.trade.fail.Store(true)
	if _, err := f.svc.Place(ctx, alice, small("backend-down-1"), ""); !errors.Is(err, trading.ErrTradeUnavailable) {
		t.Fatalf("backend down: %v", err)
	}
	f.trade.fail.Store(false)
	if out, err := f.svc.Place(ctx, alice, small("backend-down-1"), ""); err != nil || out.Status != backends.StatusFilled {
		t.Fatalf("retry: %+v %v", out, err)
	}
}

// TestCrashAfterBackendAccepted: the owner of a claim died after the Trade
// service accepted the order but before the outcome was recorded. The
// client's retry (after the lease) neither loses nor duplicates the order.
func TestCrashAfterBackendAccepted(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	// Simulate the dead replica: the backend has the order under the
	// derived client order id, our record is an in-progress claim.
	crashed := newService(f.st, backends.Set{Portfolio: demo.New(nil), MarketData: demo.New(nil), Trade: crashingTrade{f.trade}}, f.j, f.clock)
	cctx, cancel := context.WithCancel(ctx)
	if _, err := crashed.Place(cctx, alice, small("crash-key-1"), ""); err == nil {
		t.Fatal("crashing replica reported success")
	}
	cancel()
	if f.trade.orders() != 1 {
		t.Fatalf("backend orders %d, want 1 accepted before the crash", f.trade.orders())
	}
	out, err := f.svc.Place(ctx, alice, small("crash-key-1"), "")
	if err != nil || out.Status != backends.StatusFilled {
		t.Fatalf("retry after crash: %+v %v", out, err)
	}
	if f.trade.orders() != 1 {
		t.Fatalf("backend orders %d after retry, want still 1", f.trade.orders())
	}
}

// crashingTrade accepts the order at the backend, then fails as if the
// process died before hearing the answer.
type crashingTrade struct{ *countingTrade }

func (c crashingTrade) PlaceOrder(ctx context.Context, r backends.OrderRequest) (backends.Order, error) {
	c.countingTrade.PlaceOrder(ctx, r)
	return backends.Order{}, fmt.Errorf("%w: connection reset after send", backends.ErrUnavailable)
}

// hangingTrade accepts the order at the backend and then never answers, as
// a replica that was SIGKILLed mid-call looks to everyone else.
type hangingTrade struct {
	*countingTrade
	accepted chan struct{}
	release  chan struct{}
}

func (h hangingTrade) PlaceOrder(ctx context.Context, r backends.OrderRequest) (backends.Order, error) {
	o, err := h.countingTrade.PlaceOrder(ctx, r)
	close(h.accepted)
	<-h.release
	return o, err
}

// TestLeaseTakeover: the claim's owner is gone (never answers, never
// releases). After its lease another replica takes over and the backend's
// client order id keeps the order single: the takeover asks the Trade
// service first, finds the order, and never sends it again.
func TestLeaseTakeover(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	ht := hangingTrade{countingTrade: f.trade, accepted: make(chan struct{}), release: make(chan struct{})}
	d := demo.New(nil)
	dead := newService(f.st, backends.Set{Portfolio: d, MarketData: d, Trade: ht}, f.j, f.clock)
	go dead.Place(ctx, alice, small("lease-key-1"), "")
	<-ht.accepted
	defer close(ht.release)

	f.clock.Add(11 * time.Second) // past the 10s lease
	out, err := f.svc.Place(ctx, alice, small("lease-key-1"), "")
	if err != nil || out.Status != backends.StatusFilled {
		t.Fatalf("takeover: %+v %v", out, err)
	}
	if f.trade.orders() != 1 || f.trade.calls.Load() != 1 {
		t.Fatalf("%d orders from %d calls, want 1 order from 1 call", f.trade.orders(), f.trade.calls.Load())
	}
}

// TestApprovalExecutionTakeover: the replica executing an approved order
// died after the Trade service accepted it. Whoever asks next, after the
// lease, finds the order at the Trade service: it is reported in its true
// state, journaled, and never sent (or re-checked against its own fill)
// again.
func TestApprovalExecutionTakeover(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	pend, err := f.svc.Place(ctx, alice, large("takeover-apr-1"), "")
	if err != nil || pend.Status != trading.StatusPendingApproval {
		t.Fatalf("large order: %+v %v", pend, err)
	}
	ht := hangingTrade{countingTrade: f.trade, accepted: make(chan struct{}), release: make(chan struct{})}
	d := demo.New(nil)
	dead := newService(f.st, backends.Set{Portfolio: d, MarketData: d, Trade: ht}, f.j, f.clock)
	go dead.Decide(ctx, bob, pend.Approval.ID, trading.DecisionApprove, "ok", nil)
	<-ht.accepted
	defer close(ht.release)

	mid, err := f.svc.Status(ctx, alice, pend.Approval.ID)
	if err != nil || mid.Status != trading.StatusApproved {
		t.Fatalf("while the lease runs: %+v %v", mid, err)
	}
	f.clock.Add(11 * time.Second) // past the 10s lease
	out, err := f.svc.Status(ctx, alice, pend.Approval.ID)
	if err != nil || out.Status != backends.StatusFilled || out.Order == nil || out.Approval.Status != trading.ApprovalSubmitted {
		t.Fatalf("after the lease: %+v %v", out, err)
	}
	if f.trade.orders() != 1 || f.trade.calls.Load() != 1 {
		t.Fatalf("%d orders from %d calls, want 1 order from 1 call", f.trade.orders(), f.trade.calls.Load())
	}
	var reconciled bool
	f.j.mu.Lock()
	defer f.j.mu.Unlock()
	for _, e := range f.j.entries {
		reconciled = reconciled || e.Action == "order.executed" && e.OrderID == out.Order.OrderID && strings.HasPrefix(e.Detail, "reconciled")
	}
	if !reconciled {
		t.Fatalf("journal has no reconciled order.executed: %+v", f.j.entries)
	}
}

// TestApprovalGuards covers the review's findings: execution re-checks
// policy, an expiry that passes while the decision is journaled wins, a
// decision pinned to another order changes nothing, four eyes ignores case,
// and the queue is per account.
func TestApprovalGuards(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()

	// An approval requested in the session and approved after the close
	// fails its re-check at execution instead of trading after hours.
	cal, err := calendar.NYSE(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := demo.New(nil)
	hours := trading.New(trading.Config{
		Rules:       policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.5, EnforceMarketHours: true, Calendar: cal},
		ApprovalTTL: 24 * time.Hour, Lease: 10 * time.Second,
	}, store.NewMemory(nil), backends.Set{Portfolio: d, MarketData: d, Trade: f.trade}, f.j, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), f.clock.Now)
	f.clock.now = time.Date(2026, 11, 23, 11, 0, 0, 0, cal.Location()) // Monday, in session
	out, err := hours.Place(ctx, alice, large("session-0001"), "")
	if err != nil || out.Status != trading.StatusPendingApproval {
		t.Fatalf("in session: %+v %v", out, err)
	}
	f.clock.Add(9 * time.Hour) // 20:00, closed
	out, err = hours.Decide(ctx, bob, out.Approval.ID, trading.DecisionApprove, "late", nil)
	if err != nil || out.Status != trading.StatusRejected || out.Approval.Status != trading.ApprovalFailed || !strings.Contains(out.Message, "closed") || f.trade.calls.Load() != 0 {
		t.Fatalf("approved after the close: %+v %v (backend calls %d)", out, err, f.trade.calls.Load())
	}

	// Pinned decisions.
	pend, _ := f.svc.Place(ctx, alice, large("pinned-0001"), "")
	id := pend.Approval.ID
	if _, err := f.svc.Decide(ctx, bob, id, trading.DecisionApprove, "", &trading.Expect{ArgsDigest: "other", Requester: "alice"}); !errors.Is(err, trading.ErrMismatch) {
		t.Fatalf("mismatched digest: %v", err)
	}
	if _, err := f.svc.Decide(ctx, principal.Principal{Subject: " ALICE ", Accounts: []string{"*"}}, id, trading.DecisionApprove, "", nil); !errors.Is(err, trading.ErrFourEyes) {
		t.Fatalf("requester in other case: %v", err)
	}

	// Account-scoped approvers see their accounts' queue only.
	if got, _ := f.svc.ListPending(ctx, principal.Principal{Subject: "carol", Accounts: []string{"ACC-2001"}}, 10); len(got) != 1 || got[0].ID != id {
		t.Fatalf("ACC-2001 approver sees %+v", got)
	}
	if got, _ := f.svc.ListPending(ctx, principal.Principal{Subject: "dave", Accounts: []string{"ACC-1003"}}, 10); len(got) != 0 {
		t.Fatalf("ACC-1003 approver sees %+v", got)
	}

	// The sink takes so long that the approval expires meanwhile.
	f.j.onRecord = func(e trading.JournalEntry) {
		if e.Action == "approval.decided" {
			f.clock.Add(31 * time.Minute)
		}
	}
	if _, err := f.svc.Decide(ctx, bob, id, trading.DecisionApprove, "slow", nil); !errors.Is(err, trading.ErrExpired) {
		t.Fatalf("decision landing after expiry: %v", err)
	}
}

// capped is another service (a replica) on f's store, journal and clock,
// allowing n pending approvals per requester.
func (f *fixture) capped(n int) *trading.Service {
	rules := policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.5}
	return trading.New(trading.Config{Rules: rules, ApprovalTTL: 30 * time.Minute, Lease: 10 * time.Second, MaxPending: n},
		f.st, demo.New(nil).Set(), f.j, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), f.clock.Now)
}

// TestPendingApprovalCap: one requester cannot have more than MaxPending
// orders waiting for an approver; others are unaffected, a decision or a
// cancellation frees a place, and a retry of a pending order is not refused.
func TestPendingApprovalCap(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, open(t))
			svc := f.capped(3)
			ctx := t.Context()
			var ids []string
			for i := range 3 {
				out, err := svc.Place(ctx, alice, large(fmt.Sprintf("cap-%d", i)), "")
				if err != nil || out.Status != trading.StatusPendingApproval {
					t.Fatalf("order %d: %+v %v", i, out, err)
				}
				ids = append(ids, out.Approval.ID)
			}
			if _, err := svc.Place(ctx, alice, large("cap-3"), ""); !errors.Is(err, trading.ErrTooManyPending) {
				t.Fatalf("fourth pending order: %v, want ErrTooManyPending", err)
			}
			// Subjects are case-sensitive (OIDC): "ALICE" is someone else,
			// and alice's full queue must not lock them out.
			if out, err := svc.Place(ctx, principal.Principal{Subject: "ALICE", Accounts: alice.Accounts}, large("cap-3b"), ""); err != nil || out.Status != trading.StatusPendingApproval {
				t.Fatalf("another subject's order: %+v %v", out, err)
			}
			// A small order that needs no approver is not capped.
			if out, err := svc.Place(ctx, alice, small("cap-small"), ""); err != nil || out.Status != backends.StatusFilled {
				t.Fatalf("small order: %+v %v", out, err)
			}
			// Another requester has a queue of their own.
			if out, err := svc.Place(ctx, bob, large("cap-bob"), ""); err != nil || out.Status != trading.StatusPendingApproval {
				t.Fatalf("bob's order: %+v %v", out, err)
			}
			// A retry of a pending order answers with its approval.
			if out, err := svc.Place(ctx, alice, large("cap-1"), ""); err != nil || out.Approval == nil || out.Approval.ID != ids[1] {
				t.Fatalf("retry of a pending order: %+v %v", out, err)
			}
			// A decision and a cancellation each free a place; the refused
			// key works once there is room.
			if _, err := svc.Decide(ctx, bob, ids[0], trading.DecisionReject, "no", nil); err != nil {
				t.Fatal(err)
			}
			if out, err := svc.Place(ctx, alice, large("cap-3"), ""); err != nil || out.Status != trading.StatusPendingApproval {
				t.Fatalf("after a decision: %+v %v", out, err)
			}
			if _, err := svc.Cancel(ctx, alice, ids[1]); err != nil {
				t.Fatal(err)
			}
			if out, err := svc.Place(ctx, alice, large("cap-4"), ""); err != nil || out.Status != trading.StatusPendingApproval {
				t.Fatalf("after a cancellation: %+v %v", out, err)
			}
			// A record that cannot be read is not counted (and does not
			// lock alice out).
			if err := f.st.Create(ctx, "approval:APR-garbage", []byte("{not json"), time.Hour); err != nil {
				t.Fatal(err)
			}
			if err := f.st.IndexAdd(ctx, "approvals:pending:by:alice", "APR-garbage", 0); err != nil {
				t.Fatal(err)
			}
			if _, err := svc.Cancel(ctx, alice, ids[2]); err != nil {
				t.Fatal(err)
			}
			if out, err := svc.Place(ctx, alice, large("cap-6"), ""); err != nil || out.Status != trading.StatusPendingApproval {
				t.Fatalf("with an unreadable record in the queue: %+v %v", out, err)
			}
			// Expiry frees every place.
			f.clock.Add(31 * time.Minute)
			if out, err := svc.Place(ctx, alice, large("cap-5"), ""); err != nil || out.Status != trading.StatusPendingApproval {
				t.Fatalf("after expiry: %+v %v", out, err)
			}
		})
	}
}

// TestPendingApprovalCapConcurrent: simultaneous orders of one requester,
// even from two replicas sharing the store, never overshoot the cap.
func TestPendingApprovalCapConcurrent(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, open(t))
			replicas := []*trading.Service{f.capped(3), f.capped(3)}
			var pending, refused atomic.Int64
			var wg sync.WaitGroup
			for i := range 12 {
				wg.Go(func() {
					out, err := replicas[i%2].Place(t.Context(), alice, large(fmt.Sprintf("race-%d", i)), "")
					switch {
					case errors.Is(err, trading.ErrTooManyPending):
						refused.Add(1)
					case err != nil:
						t.Errorf("order %d: %v", i, err)
					case out.Status == trading.StatusPendingApproval:
						pending.Add(1)
					}
				})
			}
			wg.Wait()
			if pending.Load() != 3 || refused.Load() != 9 {
				t.Fatalf("%d pending and %d refused, want 3 and 9", pending.Load(), refused.Load())
			}
		})
	}
}

// TestPendingApprovalsCommitCashAndShares: orders awaiting approval hold
// their cash and shares, so orders that each fit cannot together overdraw
// the account or sell the same shares twice; an order's own approval never
// counts against it (its retry, its execution).
func TestPendingApprovalsCommitCashAndShares(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	order := func(key, ticker, side string, qty float64) trading.OrderArgs {
		return trading.OrderArgs{AccountID: "ACC-2001", Ticker: ticker, Side: side, Type: "market", Quantity: qty, IdempotencyKey: key}
	}
	place := func(o trading.OrderArgs) trading.Outcome {
		t.Helper()
		out, err := f.svc.Place(ctx, alice, o, "")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// The pension account has 1.85M in cash: two buys of ~0.84M wait for
	// approval, a third does not fit beside them.
	b1 := place(order("buy-1", "KO", "buy", 12_000))
	b2 := place(order("buy-2", "KO", "buy", 12_000))
	if b1.Status != trading.StatusPendingApproval || b2.Status != trading.StatusPendingApproval {
		t.Fatalf("two buys: %s, %s", b1.Status, b2.Status)
	}
	if b2.Approval.Preview.CommittedCash != b1.Approval.Preview.EstimatedNotional {
		t.Fatalf("second buy saw %.2f committed, want the first's %.2f", b2.Approval.Preview.CommittedCash, b1.Approval.Preview.EstimatedNotional)
	}
	b3 := place(order("buy-3", "KO", "buy", 12_000))
	if b3.Status != trading.StatusRejected || !strings.Contains(strings.Join(b3.Violations, ";"), "awaiting approval") {
		t.Fatalf("third buy: %+v", b3)
	}
	// The account holds 9,500 AAPL: two sells of 4,000 wait, a third would
	// sell shares already promised.
	s1 := place(order("sell-1", "AAPL", "sell", 4_000))
	place(order("sell-2", "AAPL", "sell", 4_000))
	s3 := place(order("sell-3", "AAPL", "sell", 4_000))
	if s3.Status != trading.StatusRejected || !strings.Contains(strings.Join(s3.Violations, ";"), "8000 are in sell orders awaiting approval") {
		t.Fatalf("third sell: %+v", s3)
	}
	// Executing an approved buy re-checks without counting itself.
	out, err := f.svc.Decide(ctx, bob, b1.Approval.ID, trading.DecisionApprove, "", nil)
	if err != nil || out.Status != backends.StatusFilled {
		t.Fatalf("approving the first buy: %+v %v", out, err)
	}
	// Cancelling frees what an order held.
	if _, err := f.svc.Cancel(ctx, alice, s1.Approval.ID); err != nil {
		t.Fatal(err)
	}
	if s4 := place(order("sell-4", "AAPL", "sell", 4_000)); s4.Status != trading.StatusPendingApproval {
		t.Fatalf("sell after a cancellation: %+v", s4)
	}
	// An unreadable record in the account's queue does not stop trading.
	if err := f.st.Create(ctx, "approval:APR-garbage", []byte("{not json"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := f.st.IndexAdd(ctx, "approvals:pending:ACC-2001", "APR-garbage", 0); err != nil {
		t.Fatal(err)
	}
	if out := place(order("small-after-garbage", "KO", "buy", 10)); out.Status != backends.StatusFilled {
		t.Fatalf("with an unreadable record in the queue: %+v", out)
	}
}

// landingTrade is a Trade service whose first answer never comes and whose
// first order lands late: after the retry has asked for it (404) and before
// the retry could check the account, as a slow Trade service does it.
type landingTrade struct {
	*countingTrade
	mu      sync.Mutex
	pending *backends.OrderRequest
}

func (l *landingTrade) PlaceOrder(ctx context.Context, r backends.OrderRequest) (backends.Order, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending == nil && l.calls.Load() == 0 {
		l.calls.Add(1)
		l.pending = &r // in flight: it lands later
		return backends.Order{}, fmt.Errorf("%w: timeout awaiting response headers", backends.ErrUnavailable)
	}
	return l.countingTrade.PlaceOrder(ctx, r)
}

func (l *landingTrade) OrderByClientID(ctx context.Context, id string) (backends.Order, error) {
	o, err := l.countingTrade.OrderByClientID(ctx, id)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending != nil { // the late arrival, right after the lookup missed it
		l.countingTrade.PlaceOrder(ctx, *l.pending)
		l.pending = nil
	}
	return o, err
}

// TestLateArrivalIsNotRejected: the first send timed out and its order
// landed later. The retry, which could not see it yet, resends the same
// order as it is instead of re-checking the account its own late fill has
// changed, and reports the one order filled.
func TestLateArrivalIsNotRejected(t *testing.T) {
	d := demo.New(nil)
	ct := &countingTrade{Trade: d, created: map[string]bool{}}
	lt := &landingTrade{countingTrade: ct}
	bs := d.Set()
	bs.Trade = lt
	clk := &clock{now: time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)}
	svc := newService(store.NewMemory(nil), bs, &journal{}, clk)
	anika := principal.Principal{Subject: "anika", Accounts: []string{"ACC-2002"}}
	pv, err := d.GetPortfolio(t.Context(), "ACC-2002")
	if err != nil {
		t.Fatal(err)
	}
	q, _ := d.Quotes(t.Context(), []string{"INTC"})
	tight := trading.OrderArgs{AccountID: "ACC-2002", Ticker: "INTC", Side: "buy", Type: "market",
		Quantity: float64(int(0.7 * pv.Cash / q.Quotes[0].Ask)), IdempotencyKey: "late-landing-1"}

	if _, err := svc.Place(t.Context(), anika, tight, ""); !errors.Is(err, trading.ErrTradeUnavailable) {
		t.Fatalf("first attempt: %v, want the Trade service unavailable", err)
	}
	res, err := svc.Resolve(t.Context(), anika, tight)
	if err != nil || res.Found || !res.Resend {
		t.Fatalf("resolve: %+v %v, want a resend", res, err)
	}
	out, err := svc.Place(t.Context(), anika, tight, "")
	if err != nil || out.Status != backends.StatusFilled || len(out.Violations) > 0 {
		t.Fatalf("retry: %+v %v, want the one order filled", out, err)
	}
	if ct.orders() != 1 {
		t.Fatalf("%d orders, want 1", ct.orders())
	}
}

// TestLapsedClaimDoesNotSend: a call whose claim lapsed while it was
// journaling (a stalled sink) and was taken over by a retry does not send
// when it resumes; the retry's order is the only one and the answer on
// record.
func TestLapsedClaimDoesNotSend(t *testing.T) {
	f := newFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	var retry trading.Outcome
	var retryErr error
	var stalled atomic.Bool
	f.j.onRecord = func(e trading.JournalEntry) {
		if e.Action != "order.intent" || stalled.Swap(true) {
			return
		}
		f.clock.Add(11 * time.Second) // past the 10s lease
		retry, retryErr = f.svc.Place(ctx, alice, small("lapsed-claim-1"), "")
	}
	_, err := f.svc.Place(ctx, alice, small("lapsed-claim-1"), "")
	if !errors.Is(err, trading.ErrClaimLost) {
		t.Fatalf("the lapsed call: %v, want ErrClaimLost", err)
	}
	if retryErr != nil || retry.Status != backends.StatusFilled {
		t.Fatalf("the retry: %+v %v", retry, retryErr)
	}
	if f.trade.orders() != 1 || f.trade.calls.Load() != 1 {
		t.Fatalf("%d orders from %d sends, want 1 from 1", f.trade.orders(), f.trade.calls.Load())
	}
	replay, found, err := resolve(f.svc, ctx, small("lapsed-claim-1"))
	if err != nil || !found || replay.Order == nil || replay.Order.OrderID != retry.Order.OrderID {
		t.Fatalf("on record: %+v %v", replay, err)
	}
}

func resolve(svc *trading.Service, ctx context.Context, o trading.OrderArgs) (trading.Outcome, bool, error) {
	res, err := svc.Resolve(ctx, alice, o)
	return res.Outcome, res.Found, err
}

// TestHistory: decided approvals stay listed, newest first, filtered by
// account and state, and only for accounts the reader is entitled to.
func TestHistory(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, open(t))
			ctx := t.Context()
			var ids []string
			agent := alice
			agent.ClientID = "claude-desktop"
			for _, key := range []string{"hist-order-1", "hist-order-2", "hist-order-3"} {
				out, err := f.svc.Place(ctx, agent, large(key), "")
				if err != nil || out.Approval == nil {
					t.Fatalf("%s: %+v %v", key, out, err)
				}
				ids = append(ids, out.Approval.ID)
				f.clock.Add(time.Second)
			}
			if _, err := f.svc.Decide(ctx, bob, ids[0], trading.DecisionReject, "too big", nil); err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.Decide(ctx, bob, ids[1], trading.DecisionApprove, "", nil); err != nil {
				t.Fatal(err)
			}
			all, err := f.svc.History(ctx, bob, trading.HistoryQuery{})
			if err != nil || len(all) != 3 || all[0].ID != ids[2] || all[2].ID != ids[0] {
				t.Fatalf("history: %v %v", approvalIDs(all), err)
			}
			if all[2].Reason != "too big" || all[2].DecidedBy != bob.Subject || all[0].RequesterClient != "claude-desktop" {
				t.Errorf("history records: %+v", all[2])
			}
			rejected, _ := f.svc.History(ctx, bob, trading.HistoryQuery{AccountID: "ACC-2001", Statuses: []string{trading.ApprovalRejected}})
			if len(rejected) != 1 || rejected[0].ID != ids[0] {
				t.Errorf("rejected: %v", approvalIDs(rejected))
			}
			for name, q := range map[string]trading.HistoryQuery{"other account": {AccountID: "ACC-1001"}, "limit": {Limit: 1}} {
				got, _ := f.svc.History(ctx, bob, q)
				if want := map[string]int{"other account": 0, "limit": 1}[name]; len(got) != want {
					t.Errorf("%s: %d approvals, want %d", name, len(got), want)
				}
			}
			if got, _ := f.svc.History(ctx, eve, trading.HistoryQuery{}); len(got) != 0 {
				t.Errorf("an unentitled reader sees %v", approvalIDs(got))
			}
			if got, _ := f.svc.History(ctx, eve, trading.HistoryQuery{AccountID: "ACC-2001"}); len(got) != 0 {
				t.Errorf("an unentitled reader asking for the account sees %v", approvalIDs(got))
			}
			// The pending one, re-checked for its approver.
			pre, err := f.svc.Recheck(ctx, bob, all[0])
			if err != nil || pre.EstimatedNotional == 0 {
				t.Errorf("recheck: %+v %v", pre, err)
			}
			if _, err := f.svc.Recheck(ctx, eve, all[0]); !errors.Is(err, trading.ErrNotFound) {
				t.Errorf("recheck by an unentitled reader: %v", err)
			}
		})
	}
}

func approvalIDs(as []trading.Approval) []string {
	var ids []string
	for _, a := range as {
		ids = append(ids, a.ID+":"+a.Status)
	}
	return ids
}

// TestCancelAnApprovedOrderByItsApprovalID: an agent may hold only the
// approval id of its order; once approved and sent, cancel_order with it
// cancels the order, as get_order_status says it may.
func TestCancelAnApprovedOrderByItsApprovalID(t *testing.T) {
	f := newRaceFixture(t, store.NewMemory(nil), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 100, MaxPositionWeight: 0.9}, nil)
	pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "cancel-by-apr"), trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Approval == nil {
		t.Fatalf("%+v %v", pl.Outcome, err)
	}
	id := pl.Outcome.Approval.ID
	if out, err := f.svc.Decide(t.Context(), bob, id, trading.DecisionApprove, "ok", nil); err != nil || out.Order == nil || !backends.Working(out.Order.Status) {
		t.Fatalf("approve: %+v %v, want the order working", out, err)
	}
	out, err := f.svc.Cancel(t.Context(), alice, id)
	if err != nil || out.Status != backends.StatusCancelled {
		t.Errorf("cancel_order with the approval id of a working approved order: %+v %v, want it cancelled", out, err)
	}
	if w := f.working(); len(w) != 0 {
		t.Errorf("still working: %+v", w)
	}
}
