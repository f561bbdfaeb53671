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

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/confirm"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// controlled is a fixture with every market-access control on: the NYSE
// calendar's trading days, daily limits, the duplicate window and a kill
// switch, over st.
func controlled(t *testing.T, st store.Store, daily policy.DailyLimits, window time.Duration) (*fixture, *halt.Switch) {
	t.Helper()
	cal, err := calendar.NYSE(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := demo.New(nil)
	bs := d.Set()
	ct := &countingTrade{Trade: d, created: map[string]bool{}}
	bs.Trade = ct
	f := &fixture{trade: ct, j: &journal{}, clock: &clock{now: time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)}, st: st}
	sw := halt.New(st, f.j, nil, f.clock.Now)
	signer := confirm.NewSigner(func() ([]byte, error) { return []byte("test-confirmation-key-0123456789abcdef"), nil }, st, 5*time.Minute, f.clock.Now)
	rules := policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.5, Calendar: cal, Daily: daily}
	f.svc = trading.New(trading.Config{Rules: rules, ApprovalTTL: 30 * time.Minute, Lease: 10 * time.Second, Halt: sw, DuplicateWindow: window},
		st, bs, f.j, signer, slog.New(slog.NewTextHandler(io.Discard, nil)), f.clock.Now)
	return f, sw
}

func orderOf(qty float64, key string) trading.OrderArgs {
	return trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "market", Quantity: qty, IdempotencyKey: key}
}

// TestDailyLimitsOverTradingDays: two orders per agent per trading day.
// The day is the exchange's session: it rolls over at the close (early
// closes included), a weekend or holiday counts towards the next session,
// and a DST change moves none of that. A retry of a counted order is never
// counted again.
func TestDailyLimitsOverTradingDays(t *testing.T) {
	ny, _ := time.LoadLocation("America/New_York")
	at := func(y int, m time.Month, d, h, min int) time.Time { return time.Date(y, m, d, h, min, 0, 0, ny) }
	type step struct {
		at     time.Time
		qty    float64
		placed bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"rollover at the close", []step{
			{at(2026, 11, 23, 10, 0), 1, true}, {at(2026, 11, 23, 15, 59), 2, true},
			{at(2026, 11, 23, 15, 59), 3, false}, // third of Monday's session
			{at(2026, 11, 23, 16, 0), 4, true},   // Tuesday's
		}},
		{"early close on the day after Thanksgiving", []step{
			{at(2026, 11, 27, 9, 30), 1, true}, {at(2026, 11, 27, 12, 59), 2, true},
			{at(2026, 11, 27, 12, 59), 3, false},
			{at(2026, 11, 27, 13, 0), 4, true}, // after the 13:00 close: Monday's
			{at(2026, 11, 28, 11, 0), 5, true}, // Saturday: Monday's too
			{at(2026, 11, 30, 10, 0), 6, false},
		}},
		{"DST start weekend counts towards Monday", []step{
			{at(2026, 3, 6, 17, 0), 1, true}, // Friday after the close
			{at(2026, 3, 8, 3, 30), 2, true}, // Sunday, just after the clocks went forward
			{at(2026, 3, 9, 9, 45), 3, false},
			{at(2026, 3, 9, 16, 0), 4, true}, // Tuesday's
		}},
		{"holiday counts towards the next session", []step{
			{at(2026, 11, 25, 16, 30), 1, true}, // Wednesday after the close: Friday's
			{at(2026, 11, 26, 12, 0), 2, true},  // Thanksgiving: Friday's
			{at(2026, 11, 27, 10, 0), 3, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := controlled(t, store.NewMemory(nil), policy.DailyLimits{AgentOrders: 2}, 0)
			agent := alice
			agent.ClientID = "agent-a"
			for i, s := range tt.steps {
				f.clock.mu.Lock()
				f.clock.now = s.at
				f.clock.mu.Unlock()
				key := fmt.Sprintf("daily-%02d", i)
				out, err := f.svc.Place(t.Context(), agent, orderOf(s.qty, key), "")
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if placed := out.Order != nil; placed != s.placed {
					t.Fatalf("step %d at %s: placed %v (%s %v), want %v", i, s.at, placed, out.Status, out.Violations, s.placed)
				}
				if s.placed {
					// A retry of a counted order is answered, never counted again.
					if again, err := f.svc.Place(t.Context(), agent, orderOf(s.qty, key), ""); err != nil || !again.Replayed {
						t.Fatalf("retry of step %d: %+v %v", i, again, err)
					}
				}
			}
		})
	}
}

// TestDailyLimitsShared: per principal across agents and per agent across
// principals, on one store as the replicas share it, and exact under a race
// for the last places; the preview shows what is left.
func TestDailyLimitsShared(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f, _ := controlled(t, open(t), policy.DailyLimits{PrincipalOrders: 3, AgentNotional: 10_000}, 0)
			a1, a2 := alice, alice
			a1.ClientID, a2.ClientID = "agent-1", "agent-2"
			for i, p := range []principal.Principal{a1, a2} {
				if out, err := f.svc.Place(t.Context(), p, orderOf(float64(1+i), fmt.Sprint("shared-", i)), ""); err != nil || out.Order == nil {
					t.Fatalf("order %d: %+v %v", i, out, err)
				}
			}
			pre, err := f.svc.Preview(t.Context(), a2, orderOf(1, ""))
			if err != nil || pre.DailyLimits == nil || *pre.DailyLimits.Principal.OrdersRemaining != 1 || pre.DailyLimits.Agent.OrdersLimit != 0 ||
				pre.DailyLimits.Agent.NotionalUsed == 0 || *pre.DailyLimits.Agent.NotionalRemaining >= 10_000 {
				t.Fatalf("preview budgets: %+v %v", pre.DailyLimits, err)
			}
			// Ten racers for the principal's last place.
			var wg sync.WaitGroup
			var mu sync.Mutex
			placed := 0
			for i := range 10 {
				wg.Go(func() {
					out, err := f.svc.Place(t.Context(), a1, orderOf(float64(10+i), fmt.Sprint("race-", i)), "")
					if err != nil && !errors.Is(err, trading.ErrDailyLimit) {
						t.Error(err)
					}
					if out.Order != nil {
						mu.Lock()
						placed++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if placed != 1 {
				t.Fatalf("%d racers placed, want 1 (the principal's third)", placed)
			}
			// Another principal through agent-2 meets agent-2's notional.
			bobAgent := bob
			bobAgent.ClientID = "agent-2"
			big := orderOf(200, "bob-big")
			big.AccountID = "ACC-1001"
			out, err := f.svc.Place(t.Context(), bobAgent, big, "")
			if err != nil || out.Status != trading.StatusRejected || !strings.Contains(strings.Join(out.Violations, ";"), "this agent's remaining daily notional") {
				t.Fatalf("agent's notional: %+v %v", out, err)
			}
		})
	}
}

// TestDuplicateDetection: an identical order under another key within the
// window needs the user's acknowledgement; a retry of the same key, another
// quantity or account, or the window's end do not; racing duplicates let
// exactly one through.
func TestDuplicateDetection(t *testing.T) {
	claimed := trading.Confirmation{Claimed: true}
	acked := trading.Confirmation{Claimed: true, DuplicateAcknowledged: "dup-1"}
	blanket := trading.Confirmation{Claimed: true, DuplicateAcknowledged: "some-other-key"}
	tests := []struct {
		name    string
		second  func(trading.OrderArgs) trading.OrderArgs
		after   time.Duration
		c       trading.Confirmation
		wantDup bool
	}{
		{"another key", func(o trading.OrderArgs) trading.OrderArgs { o.IdempotencyKey = "dup-2"; return o }, 0, claimed, true},
		{"another key, acknowledged", func(o trading.OrderArgs) trading.OrderArgs { o.IdempotencyKey = "dup-2"; return o }, 0, acked, false},
		{"an acknowledgement naming another order", func(o trading.OrderArgs) trading.OrderArgs { o.IdempotencyKey = "dup-2"; return o }, 0, blanket, true},
		{"the same key (a retry)", func(o trading.OrderArgs) trading.OrderArgs { return o }, 0, claimed, false},
		{"another quantity", func(o trading.OrderArgs) trading.OrderArgs { o.IdempotencyKey, o.Quantity = "dup-2", 11; return o }, 0, claimed, false},
		{"another side", func(o trading.OrderArgs) trading.OrderArgs { o.IdempotencyKey, o.Side = "dup-2", "sell"; return o }, 0, claimed, false},
		{"another account", func(o trading.OrderArgs) trading.OrderArgs {
			o.IdempotencyKey, o.AccountID = "dup-2", "ACC-2001"
			return o
		}, 0, claimed, false},
		{"just inside the window", func(o trading.OrderArgs) trading.OrderArgs { o.IdempotencyKey = "dup-2"; return o }, time.Minute - time.Second, claimed, true},
		{"after the window", func(o trading.OrderArgs) trading.OrderArgs { o.IdempotencyKey = "dup-2"; return o }, time.Minute, claimed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := controlled(t, store.NewMemory(nil), policy.DailyLimits{}, time.Minute)
			first := orderOf(10, "dup-1")
			if pl, err := f.svc.PlaceOrder(t.Context(), alice, first, claimed); err != nil || pl.Outcome.Order == nil {
				t.Fatalf("first: %+v %v", pl, err)
			}
			f.clock.Add(tt.after)
			before := f.trade.orders()
			pl, err := f.svc.PlaceOrder(t.Context(), alice, tt.second(first), tt.c)
			if err != nil {
				t.Fatal(err)
			}
			gotDup := pl.Outcome.Duplicate != nil
			if gotDup != tt.wantDup || (gotDup && (pl.Outcome.Status != trading.StatusNeedsConfirmation || f.trade.orders() != before)) {
				t.Fatalf("second: %s dup=%v, %d orders (was %d); want dup %v", pl.Outcome.Status, gotDup, f.trade.orders(), before, tt.wantDup)
			}
			if tt.c == acked && (pl.Outcome.Provenance == nil || pl.Outcome.Provenance.DuplicateOf != "dup-1") {
				t.Errorf("acknowledged duplicate without its provenance: %+v", pl.Outcome.Provenance)
			}
		})
	}

	t.Run("asked through an input request", func(t *testing.T) {
		f, _ := controlled(t, store.NewMemory(nil), policy.DailyLimits{}, time.Minute)
		if _, err := f.svc.PlaceOrder(t.Context(), alice, orderOf(10, "dup-1"), claimed); err != nil {
			t.Fatal(err)
		}
		second := orderOf(10, "dup-2")
		pl, err := f.svc.PlaceOrder(t.Context(), alice, second, trading.Confirmation{Askable: true})
		if err != nil || pl.Ask == nil || !strings.HasPrefix(pl.Ask.Message, "POSSIBLE DUPLICATE") {
			t.Fatalf("ask: %+v %v", pl, err)
		}
		f.clock.Add(7 * time.Second) // the user reads the warning
		pl, err = f.svc.PlaceOrder(t.Context(), alice, second, trading.Confirmation{Askable: true, State: pl.Ask.State, Accepted: true})
		if err != nil || pl.Outcome.Order == nil {
			t.Fatalf("accepted: %+v %v", pl, err)
		}
		if p := pl.Outcome.Provenance; p == nil || p.Confirmation != trading.ConfirmedByInputRequest || p.DuplicateOf != "dup-1" || p.PreviewDigest == "" {
			t.Errorf("provenance: %+v", p)
		}
	})

	t.Run("racing duplicates", func(t *testing.T) {
		f, _ := controlled(t, store.NewMemory(nil), policy.DailyLimits{}, time.Minute)
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Go(func() {
				_, err := f.svc.Place(t.Context(), alice, orderOf(10, fmt.Sprint("racer-", i)), "")
				if err != nil && !errors.Is(err, trading.ErrDuplicate) {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if n := f.trade.orders(); n != 1 {
			t.Fatalf("%d of 10 identical racing orders placed, want 1", n)
		}
	})
}

// TestHaltInTheService: under a halt nothing is placed or released,
// rejections and cancels go on, and cancel-all empties the scope.
func TestHaltInTheService(t *testing.T) {
	f, sw := controlled(t, store.NewMemory(nil), policy.DailyLimits{}, 0)
	ctx := t.Context()
	working := orderOf(5, "halt-working")
	working.Type, working.LimitPrice = "limit", 1
	w, err := f.svc.Place(ctx, alice, working, "")
	if err != nil || w.Order == nil || !backends.Working(w.Order.Status) {
		t.Fatalf("working order: %+v %v", w, err)
	}
	p1, _ := f.svc.Place(ctx, alice, large("halt-pending-1"), "")
	p2, _ := f.svc.Place(ctx, alice, large("halt-pending-2"), "")
	if p1.Approval == nil || p2.Approval == nil {
		t.Fatalf("pending: %+v %+v", p1, p2)
	}
	if _, err := sw.Engage(ctx, "risk", halt.Global, "", "market-wide incident"); err != nil {
		t.Fatal(err)
	}
	before := f.trade.orders()
	if _, err := f.svc.Place(ctx, alice, orderOf(3, "halt-new"), ""); !errors.Is(err, trading.ErrHalted) {
		t.Fatalf("new order: %v, want ErrHalted", err)
	}
	if _, err := f.svc.Decide(ctx, bob, p1.Approval.ID, trading.DecisionApprove, "ok", nil); !errors.Is(err, trading.ErrHalted) {
		t.Fatalf("release under a halt: %v", err)
	}
	if out, err := f.svc.Decide(ctx, bob, p1.Approval.ID, trading.DecisionReject, "not now", nil); err != nil || out.Status != trading.StatusRejected {
		t.Fatalf("rejection under a halt: %+v %v", out, err)
	}
	rep, err := f.svc.CancelAll(ctx, bob, halt.Global, "", "flatten")
	if err != nil || len(rep.Cancelled) != 1 || rep.Cancelled[0] != w.Order.OrderID || len(rep.Withdrawn) != 1 || rep.Withdrawn[0] != p2.Approval.ID || len(rep.Failed) != 0 {
		t.Fatalf("cancel-all: %+v %v", rep, err)
	}
	if st, _ := f.svc.Status(ctx, alice, w.Order.OrderID); st.Status != backends.StatusCancelled {
		t.Errorf("working order after cancel-all: %s", st.Status)
	}
	if f.trade.orders() != before {
		t.Errorf("orders placed under the halt")
	}
	// A global halt stops every account, and a made-up scope is refused,
	// never read as "everything".
	if _, err := f.svc.Place(ctx, eve, trading.OrderArgs{AccountID: "ACC-1003", Ticker: "KO", Side: "buy", Type: "market", Quantity: 2, IdempotencyKey: "eve-order"}, ""); !errors.Is(err, trading.ErrHalted) {
		t.Errorf("eve's order under a global halt: %v", err)
	}
	if _, err := f.svc.CancelAll(ctx, bob, "Account ", "", "typo"); err == nil {
		t.Error("cancel-all with a bad scope ran")
	}
}

// unreadableSwitch is a store whose kill switch record cannot be read
// once broken is set.
type unreadableSwitch struct {
	store.Store
	broken *atomic.Bool
}

func (u unreadableSwitch) Get(ctx context.Context, key string) ([]byte, int64, error) {
	if key == "halt:state" && u.broken.Load() {
		return nil, 0, store.ErrUnavailable
	}
	return u.Store.Get(ctx, key)
}

// TestHaltFailsSafe: with only the switch unreadable (everything else
// working), orders are refused as halted and cancels go on.
func TestHaltFailsSafe(t *testing.T) {
	broken := &atomic.Bool{}
	f, _ := controlled(t, unreadableSwitch{store.NewMemory(nil), broken}, policy.DailyLimits{}, 0)
	resting := orderOf(5, "failsafe-rest")
	resting.Type, resting.LimitPrice = "limit", 1
	w, err := f.svc.Place(t.Context(), alice, resting, "")
	if err != nil || w.Order == nil {
		t.Fatalf("resting order: %+v %v", w, err)
	}
	broken.Store(true)
	before := f.trade.orders()
	_, err = f.svc.Place(t.Context(), alice, orderOf(3, "failsafe-new"), "")
	if !errors.Is(err, trading.ErrHalted) || !strings.Contains(err.Error(), "cannot be read") || f.trade.orders() != before {
		t.Fatalf("order with the switch unreadable: %v (%d orders, was %d)", err, f.trade.orders(), before)
	}
	if out, err := f.svc.Cancel(t.Context(), alice, w.Order.OrderID); err != nil || out.Status != backends.StatusCancelled {
		t.Fatalf("cancel with the switch unreadable: %+v %v", out, err)
	}
}

// TestWithdrawnApprovalIsNoDuplicate: an order withdrawn while it waited
// for an approver placed nothing; the same order asked for again under a
// new key is no possible duplicate of it (rejected and expired ones are:
// someone decided, or nobody did, and the agent asks again).
func TestWithdrawnApprovalIsNoDuplicate(t *testing.T) {
	f, _ := controlled(t, store.NewMemory(nil), policy.DailyLimits{}, time.Minute)
	ctx := t.Context()
	first, err := f.svc.PlaceOrder(ctx, alice, large("withdrawn-1"), trading.Confirmation{Claimed: true})
	if err != nil || first.Outcome.Approval == nil {
		t.Fatalf("%+v %v", first.Outcome, err)
	}
	if _, err := f.svc.Cancel(ctx, alice, first.Outcome.Approval.ID); err != nil {
		t.Fatal(err)
	}
	again, err := f.svc.PlaceOrder(ctx, alice, large("withdrawn-2"), trading.Confirmation{Claimed: true})
	if err != nil || again.Outcome.Duplicate != nil || again.Outcome.Approval == nil {
		t.Errorf("the same order again after the first was withdrawn: %+v %v, want a new approval and no duplicate warning", again.Outcome, err)
	}
}
