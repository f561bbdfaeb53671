package trading_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// TestIntentLostToAnAttemptThatFailedTheApproval: an approved order is
// being re-checked by one read (A) when a halt is engaged and a second read
// (B) fails the approval. A loses the compare-and-swap: its trail says the
// approval failed and nothing was sent (not that another attempt sends
// it), and its "sending" listing, written after B unlisted, goes, so the
// order holds no cash and is no cancel-all target.
func TestIntentLostToAnAttemptThatFailedTheApproval(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			f := newRaceFixture(t, st, approveAll, nil)
			o := resting(t, f, "cas-vs-fail")
			id := approvedUnsent(t, f, o)
			hook := func() {
				if _, err := f.halt.Engage(t.Context(), "risk-officer", halt.Global, "", "stop"); err != nil {
					t.Error(err)
				}
				b, err := f.svc.Status(t.Context(), alice, id) // B: fails it
				t.Logf("B: %s %v", b.Status, err)
			}
			f.market.onQuotes.Store(&hook)
			a, err := f.svc.Status(t.Context(), alice, id) // A
			t.Logf("A: %s %v (%v)", a.Status, err, a.Approval.Status)
			if n := f.trade.orders(); n != 0 {
				t.Fatalf("%d orders sent", n)
			}
			if a.Approval == nil || a.Approval.Status != trading.ApprovalFailed {
				t.Fatalf("approval %+v, want failed", a.Approval)
			}
			var trail []string
			for _, e := range f.journaled() {
				if e.ApprovalID == id {
					trail = append(trail, e.Action+"("+e.Detail+")")
				}
			}
			t.Logf("trail: %v", trail)
			if slices.ContainsFunc(trail, func(s string) bool { return strings.Contains(s, "another attempt sends the order") }) {
				t.Errorf("the trail says another attempt sends the order; the approval failed and nothing was sent")
			}
			coid := trading.ClientOrderID(alice.Subject, o.IdempotencyKey)
			for _, idx := range []string{"orders:open", "orders:open:account:ACC-2001"} {
				ms, err := st.IndexRange(t.Context(), idx, 100)
				if err != nil {
					t.Fatal(err)
				}
				if slices.Contains(ms, coid) {
					t.Errorf("failed approval's order still listed as being sent in %s (holds its notional, cancel-all target)", idx)
				}
			}
			if _, err := f.halt.Release(t.Context(), "risk-officer", halt.Global, "", "ok"); err != nil {
				t.Fatal(err)
			}
			pre, err := f.svc.Preview(t.Context(), alice, resting(t, f, ""))
			t.Logf("preview after release: committed_cash=%.2f err=%v", pre.CommittedCash, err)
			if pre.CommittedCash > 0 {
				t.Errorf("the failed approval's order, never sent, still commits %.2f of the account's cash", pre.CommittedCash)
			}
		})
	}
}

// TestResendNotStoppedByAHaltReleasedBeforeItsFirstSend: a halt released
// seconds before an order's first send (whose answer is lost) does not
// stop its resend: the order keeps the switch's mark of its check, and
// only a halt engaged after it counts, whatever the clocks say.
func TestResendNotStoppedByAHaltReleasedBeforeItsFirstSend(t *testing.T) {
	var late *firstLost
	f := newRaceFixture(t, store.NewMemory(nil), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9},
		losingFirst(&late, func(context.Context) error { return fmt.Errorf("%w: timeout", backends.ErrUnavailable) }))
	if _, err := f.halt.Engage(t.Context(), "risk-officer", halt.Global, "", "pause"); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(time.Minute)
	if _, err := f.halt.Release(t.Context(), "risk-officer-2", halt.Global, "", "resume"); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(2 * time.Second)
	o := resting(t, f, "resend-after-old-release")
	if _, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true}); err == nil {
		t.Fatal("lost answer reported as an outcome")
	}
	f.clock.Add(time.Second)
	_, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
	t.Logf("retry: %v", err)
	if errors.Is(err, trading.ErrHalted) {
		t.Errorf("no halt is engaged and the only one ended before the first send, yet the resend answers halted: %v", err)
	}
	if n := f.trade.orders(); n != 1 {
		t.Errorf("the resend did not go out: %d orders", n)
	}
}

// TestForgottenReleasesDoNotClaimAHalt: 65 halts of another account,
// engaged and released after an approval, push the releases it would be
// checked against off the record: it fails safe, saying so, and does not
// claim a global halt that never was.
func TestForgottenReleasesDoNotClaimAHalt(t *testing.T) {
	f := newRaceFixture(t, store.NewMemory(nil), approveAll, nil)
	id := approvedUnsent(t, f, resting(t, f, "forgotten"))
	for range 65 {
		f.clock.Add(time.Second)
		if _, err := f.halt.Engage(t.Context(), "risk-officer", halt.Account, "ACC-9999", "other desk"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.halt.Release(t.Context(), "risk-officer", halt.Account, "ACC-9999", "ok"); err != nil {
			t.Fatal(err)
		}
	}
	st, err := f.svc.Status(t.Context(), alice, id)
	t.Logf("status: %s %v: %s", st.Status, err, st.Message)
	if st.Approval != nil && st.Approval.Status == trading.ApprovalFailed && strings.Contains(st.Message, "global scope") {
		t.Errorf("no global halt was ever engaged, yet the answer says one was: %q", st.Message)
	}
}

// TestIntentStoppedBeforeTheWireIsFollowedUp: a status read journals an
// approved order's intent, then a store error stops it before the wire
// (its listing); the next read sends it. The first intent is followed by
// order.intent.superseded, so the trail does not show two sends.
func TestIntentStoppedBeforeTheWireIsFollowedUp(t *testing.T) {
	st := &failIndexOnce{Store: store.NewMemory(nil), index: "orders:open"}
	f := newRaceFixture(t, st, approveAll, nil)
	id := approvedUnsent(t, f, resting(t, f, "orphan-intent"))
	out, err := f.svc.Status(t.Context(), alice, id)
	if !st.failed.Load() {
		t.Fatal("fault not injected")
	}
	t.Logf("first read: %s %v", out.Status, err)
	if out, err := f.svc.Status(t.Context(), alice, id); err != nil || out.Order == nil {
		t.Fatalf("second read: %+v %v", out, err)
	}
	var steps []string
	for _, e := range f.journaled() {
		if e.ApprovalID == id {
			steps = append(steps, e.Action)
		}
	}
	t.Logf("trail: %v", steps)
	intents := 0
	for _, s := range steps {
		if s == "order.intent" {
			intents++
		}
	}
	if intents > 1 && !slices.Contains(steps, "order.intent.superseded") {
		t.Errorf("%d order.intent steps for one send, none followed up: %v", intents, steps)
	}
}

// TestUnreadableSwitchDoesNotFailAnApproval: the kill switch cannot be read
// once while an approved order is driven (no halt was ever engaged): the
// send stops for now, and the approval stays approved, sent by the next
// read, not failed for good.
func TestUnreadableSwitchDoesNotFailAnApproval(t *testing.T) {
	broken := &atomic.Bool{}
	f := newRaceFixture(t, unreadableSwitch{store.NewMemory(nil), broken}, approveAll, nil)
	id := approvedUnsent(t, f, resting(t, f, "switch-blip"))
	broken.Store(true)
	out, err := f.svc.Status(t.Context(), alice, id)
	broken.Store(false)
	t.Logf("read with the switch unreadable: %s %v: %s", out.Status, err, out.Message)
	out, err = f.svc.Status(t.Context(), alice, id)
	t.Logf("read once readable: %s %v", out.Status, err)
	if out.Approval == nil || out.Approval.Status == trading.ApprovalFailed {
		t.Errorf("no halt was ever engaged; one unreadable switch read failed the approved order for good")
	}
}
