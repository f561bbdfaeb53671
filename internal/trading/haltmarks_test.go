package trading_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
			trail := f.trailOf(id)
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
			switched(t)(f.halt.Release(t.Context(), "risk-officer", halt.Global, "", "ok"))
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
	switched(t)(f.halt.Engage(t.Context(), "risk-officer", halt.Global, "", "pause"))
	f.clock.Add(time.Minute)
	switched(t)(f.halt.Release(t.Context(), "risk-officer-2", halt.Global, "", "resume"))
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
		switched(t)(f.halt.Engage(t.Context(), "risk-officer", halt.Account, "ACC-9999", "other desk"))
		switched(t)(f.halt.Release(t.Context(), "risk-officer", halt.Account, "ACC-9999", "ok"))
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

// TestHaltEngagedAfterACountResetIsSeen: an older replica rewrites the
// switch without its count of halts. A halt engaged after an approval, and
// released, still stops its order: the count goes on from the highest
// number on record, and a halt engaged clearly later by the clock counts
// whatever its number.
func TestHaltEngagedAfterACountResetIsSeen(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			f := newRaceFixture(t, st, approveAll, nil)
			ctx := t.Context()
			for range 3 { // some history: Seq = 3
				f.clock.Add(time.Second)
				switched(t)(f.halt.Engage(ctx, "risk-officer", halt.Account, "ACC-9999", "other desk"))
				switched(t)(f.halt.Release(ctx, "risk-officer", halt.Account, "ACC-9999", "ok"))
			}
			f.clock.Add(time.Minute)
			id := approvedUnsent(t, f, resting(t, f, "seq-reset")) // HaltMark 3
			// An older replica engages and releases an unrelated halt: its
			// State has no seq, so the write drops it.
			rewriteAsOlderReplica(t, st)
			f.clock.Add(time.Hour)
			s0, _ := f.halt.State(ctx)
			switched(t)(f.halt.Engage(ctx, "risk-officer", halt.Global, "", "runaway"))
			s1, _ := f.halt.State(ctx)
			t.Logf("seq before %d, new halt seq %d", s0.Seq, s1.Halts[0].Seq)
			f.clock.Add(time.Hour)
			switched(t)(f.halt.Release(ctx, "risk-officer-2", halt.Global, "", "ok"))
			out, err := f.svc.Status(ctx, alice, id)
			if n := f.trade.orders(); n != 0 {
				t.Errorf("approved before a global halt, sent after its release: %d order(s) (%s %v)", n, out.Status, err)
			}
		})
	}
}

// refuseAfterLost: the first send's answer is lost; every later send is
// refused. onLookup runs once, in the next OrderByClientID.
type refuseAfterLost struct {
	backends.Trade
	sends    atomic.Int32
	onLookup atomic.Pointer[func()]
}

func (r *refuseAfterLost) PlaceOrder(ctx context.Context, req backends.OrderRequest) (backends.Order, error) {
	if r.sends.Add(1) == 1 {
		return backends.Order{}, fmt.Errorf("%w: timeout", backends.ErrUnavailable)
	}
	return backends.Order{}, fmt.Errorf("%w: symbol not tradable", backends.ErrInvalid)
}

func (r *refuseAfterLost) OrderByClientID(ctx context.Context, id string) (backends.Order, error) {
	if f := r.onLookup.Swap(nil); f != nil {
		(*f)()
	}
	return r.Trade.OrderByClientID(ctx, id)
}

// TestTakeoverLosingToAFailureDropsItsListing: two takeovers of an approval
// whose send went unanswered. T1 resends, the Trade service refuses, T1
// fails the approval and unlists the order; T2 lists it again and loses
// the compare-and-swap to the failure: its listing goes too, so the
// refused order holds no cash and is no cancel-all target.
func TestTakeoverLosingToAFailureDropsItsListing(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			var tr *refuseAfterLost
			f := newRaceFixture(t, st, approveAll, func(b backends.Trade) backends.Trade { tr = &refuseAfterLost{Trade: b}; return tr })
			o := resting(t, f, "takeover-leak")
			pl, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
			if err != nil || pl.Outcome.Approval == nil {
				t.Fatalf("placing: %+v %v", pl.Outcome, err)
			}
			id := pl.Outcome.Approval.ID
			f.svc.Decide(t.Context(), bob, id, trading.DecisionApprove, "ok", nil) // first send lost: executing
			f.clock.Add(20 * time.Second)                                          // lease over
			hook := func() {
				t1, err := f.svc.Status(t.Context(), alice, id) // T1
				t.Logf("T1: %s %v", t1.Status, err)
			}
			tr.onLookup.Store(&hook)
			t2, err := f.svc.Status(t.Context(), alice, id) // T2
			t.Logf("T2: %s %v approval=%v", t2.Status, err, t2.Approval.Status)
			if t2.Approval == nil || t2.Approval.Status != trading.ApprovalFailed {
				t.Fatalf("want the approval failed, got %+v", t2.Approval)
			}
			trail := f.trailOf(id)
			t.Logf("trail: %v", trail)
			coid := trading.ClientOrderID(alice.Subject, o.IdempotencyKey)
			ms, _ := st.IndexRange(t.Context(), "orders:open:account:ACC-2001", 100)
			if slices.Contains(ms, coid) {
				t.Errorf("the refused, failed approval's order is still listed as being sent")
			}
			pre, err := f.svc.Preview(t.Context(), alice, resting(t, f, ""))
			if pre.CommittedCash > 0 {
				t.Errorf("the refused order still commits %.2f of the account's cash (%v)", pre.CommittedCash, err)
			}
		})
	}
}

// switchBlip fails the nth read of the kill switch after it is armed.
type switchBlip struct {
	store.Store
	reads atomic.Int32
	nth   int32
}

func (s *switchBlip) Get(ctx context.Context, key string) ([]byte, int64, error) {
	if key == "halt:state" && s.nth > 0 && s.reads.Add(1) == s.nth {
		return nil, 0, store.ErrUnavailable
	}
	return s.Store.Get(ctx, key)
}

// TestApproveThatTookEffectIsPendingWhenTheSwitchBlips: the approve passes
// the switch and takes effect; the switch then cannot be read as the order
// is to be sent. The approver is told the order is not sent yet
// (ErrSendPending), not that it is halted for good, and the next status
// read sends it.
func TestApproveThatTookEffectIsPendingWhenTheSwitchBlips(t *testing.T) {
	st := &switchBlip{Store: store.NewMemory(nil)}
	f := newRaceFixture(t, st, approveAll, nil)
	pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "approve-blip"), trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Approval == nil {
		t.Fatalf("placing: %+v %v", pl.Outcome, err)
	}
	id := pl.Outcome.Approval.ID
	st.nth = 2 // Decide's guard reads it (1), execute's reads it (2)
	out, err := f.svc.Decide(t.Context(), bob, id, trading.DecisionApprove, "ok", nil)
	st.nth = 0
	t.Logf("decide: status=%s approval=%s err=%v", out.Status, out.Approval.Status, err)
	if errors.Is(err, trading.ErrHalted) && !errors.Is(err, trading.ErrSendPending) {
		t.Errorf("the approve took effect (approval %s), but the approver is answered halted: %q", out.Approval.Status, err)
	}
	next, err := f.svc.Status(t.Context(), alice, id)
	t.Logf("next read: %s %v, %d order(s) sent", next.Status, err, f.trade.orders())
}

// TestReleaseRemovesOnlyTheEngagementItRecorded: officer A's release of
// the global halt H1 is slow in the audit trail; meanwhile officer B
// releases H1, an order is approved, and officer C engages H3 on the same
// scope. A's release does not remove H3 (it recorded H1's release, not
// H3's), so the order approved before H3 does not go out.
func TestReleaseRemovesOnlyTheEngagementItRecorded(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			f := newRaceFixture(t, st, approveAll, nil)
			ctx := t.Context()
			switched(t)(f.halt.Engage(ctx, "risk-officer", halt.Global, "", "H1"))
			var id string
			slowA := &journal{}
			once := false
			slowA.onRecord = func(e trading.JournalEntry) {
				if e.Action != "halt.released" || once {
					return
				}
				once = true
				f.clock.Add(time.Minute)
				if _, err := f.halt.Release(ctx, "officer-b", halt.Global, "", "B: all clear"); err != nil {
					t.Error(err)
				}
				f.clock.Add(time.Minute)
				id = approvedUnsent(t, f, resting(t, f, "stale-release"))
				f.clock.Add(time.Minute)
				if _, err := f.halt.Engage(ctx, "officer-c", halt.Global, "", "H3: runaway agent"); err != nil {
					t.Error(err)
				}
				s, _ := f.halt.State(ctx)
				t.Logf("engaged now: %+v", s.Halts)
			}
			officerA := halt.New(st, slowA, nil, f.clock.Now)
			if _, err := officerA.Release(ctx, "officer-a", halt.Global, "", "A: all clear"); err != nil {
				t.Logf("A's release: %v", err)
			}
			s, _ := f.halt.State(ctx)
			t.Logf("after A's release, engaged: %d halt(s)", len(s.Halts))
			out, err := f.svc.Status(ctx, alice, id)
			if n := f.trade.orders(); n != 0 {
				t.Errorf("approved before H3, sent after A's release removed H3 (release on record says seq 1): %d order(s), %s %v", n, out.Status, err)
			}
		})
	}
	_ = store.ErrConflict
}

// TestOldReleaseAfterACountResetDoesNotStopAnOrder: after an older
// replica's write dropped the switch's count, halts on the order's account
// released an hour before its approval do not stop it, though their
// numbers are above the count the approval passed with.
func TestOldReleaseAfterACountResetDoesNotStopAnOrder(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			f := newRaceFixture(t, st, approveAll, nil)
			ctx := t.Context()
			for range 3 { // halts of this account, long over: seqs 1..3
				f.clock.Add(time.Second)
				f.halt.Engage(ctx, "risk-officer", halt.Account, "ACC-2001", "old")
				f.halt.Release(ctx, "risk-officer", halt.Account, "ACC-2001", "ok")
			}
			rewriteAsOlderReplica(t, st)
			f.clock.Add(time.Hour)
			f.halt.Engage(ctx, "risk-officer", halt.Account, "ACC-9999", "other desk") // seq 1 again
			f.halt.Release(ctx, "risk-officer", halt.Account, "ACC-9999", "ok")
			f.clock.Add(time.Hour)
			pl, err := f.svc.PlaceOrder(ctx, alice, resting(t, f, "old-release"), trading.Confirmation{Claimed: true})
			if err != nil || pl.Outcome.Approval == nil {
				t.Fatalf("placing: %+v %v", pl.Outcome, err)
			}
			out, err := f.svc.Decide(ctx, bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil) // mark 1
			t.Logf("approve: %s %v: %s (%d orders)", out.Status, err, out.Message, f.trade.orders())
			if out.Approval != nil && out.Approval.Status == trading.ApprovalFailed {
				t.Errorf("approved two hours after the account's last halt was released, yet failed as halted")
			}
		})
	}
}

// TestCountSurvivesAnOlderReplicasWriteOfEngagedHalts: an older replica's
// write drops the numbers of halts still engaged (not yet in the releases).
// The count, kept under its own key too, does not go back: a halt engaged
// two seconds after an approval and released still stops its order.
func TestCountSurvivesAnOlderReplicasWriteOfEngagedHalts(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			f := newRaceFixture(t, st, approveAll, nil)
			ctx := t.Context()
			// Two halts elsewhere, still engaged: Seq = 2, nothing released.
			for _, acct := range []string{"ACC-9998", "ACC-9999"} {
				switched(t)(f.halt.Engage(ctx, "risk-officer", halt.Account, acct, "other desk"))
			}
			id := approvedUnsent(t, f, resting(t, f, "reset-engaged")) // HaltMark 2
			// An older replica rewrites the state (no seq anywhere).
			raw, ver, err := st.Get(ctx, "halt:state")
			if err != nil {
				t.Fatal(err)
			}
			var old struct {
				Halts []halt.Halt `json:"halts"`
			}
			json.Unmarshal(raw, &old)
			for i := range old.Halts {
				old.Halts[i].Seq = 0
			}
			raw, _ = json.Marshal(old)
			if _, err := st.Update(ctx, "halt:state", raw, ver, 0); err != nil {
				t.Fatal(err)
			}
			f.clock.Add(2 * time.Second)
			switched(t)(f.halt.Engage(ctx, "risk-officer", halt.Global, "", "runaway"))
			s, _ := f.halt.State(ctx)
			t.Logf("new global halt: %+v", s.Halts[len(s.Halts)-1])
			f.clock.Add(time.Second)
			switched(t)(f.halt.Release(ctx, "risk-officer-2", halt.Global, "", "ok"))
			f.clock.Add(time.Hour)
			out, err := f.svc.Status(ctx, alice, id)
			if n := f.trade.orders(); n != 0 {
				t.Errorf("approved before a global halt (engaged 2 s later, released), sent after its release: %d order(s) (%s %v)", n, out.Status, err)
			}
		})
	}
}

// TestFailedReleasesDoNotCrowdTheRecord: 65 attempts to release one halt,
// each refused by the audit trail, leave one release record, not 65: they
// push nothing off the record, and an approved order on another account
// goes out (no halt covering it was engaged or released).
func TestFailedReleasesDoNotCrowdTheRecord(t *testing.T) {
	f := newRaceFixture(t, store.NewMemory(nil), approveAll, nil)
	ctx := t.Context()
	switched(t)(f.halt.Engage(ctx, "risk-officer", halt.Account, "ACC-9999", "other desk"))
	f.clock.Add(time.Minute)
	id := approvedUnsent(t, f, resting(t, f, "failed-releases")) // mark 1
	f.j.fail.Store(true)
	for range 65 {
		f.clock.Add(time.Second)
		if _, err := f.halt.Release(ctx, "risk-officer-2", halt.Account, "ACC-9999", "ok"); err == nil {
			t.Fatal("release with the trail down took effect")
		}
	}
	f.j.fail.Store(false)
	s, _ := f.halt.State(ctx)
	t.Logf("still engaged: %d halt(s)", len(s.Halts))
	out, err := f.svc.Status(ctx, alice, id)
	if n := f.trade.orders(); n != 1 {
		t.Errorf("no halt covering ACC-2001 was ever engaged, and none was released; yet the order was not sent: %s %v", out.Status, err)
	}
}

// releasesBlip fails reads of halt:released while armed.
type releasesBlip struct {
	store.Store
	armed atomic.Bool
}

func (r *releasesBlip) Get(ctx context.Context, key string) ([]byte, int64, error) {
	if key == "halt:released" && r.armed.Load() {
		return nil, 0, store.ErrUnavailable
	}
	return r.Store.Get(ctx, key)
}

// TestReleaseBeforeAnOrderPassedNeverStopsIt: after an older replica's
// write dropped the count, and an engage that could not read the releases,
// halts of the account released two hours before an approval do not stop
// it, whatever their numbers: released before the order passed, they were
// engaged before it too.
func TestReleaseBeforeAnOrderPassedNeverStopsIt(t *testing.T) {
	st := &releasesBlip{Store: store.NewMemory(nil)}
	f := newRaceFixture(t, st, approveAll, nil)
	ctx := t.Context()
	for range 3 { // halts of this account, long over: seqs 1..3
		f.clock.Add(time.Second)
		f.halt.Engage(ctx, "risk-officer", halt.Account, "ACC-2001", "old")
		f.halt.Release(ctx, "risk-officer", halt.Account, "ACC-2001", "ok")
	}
	raw, ver, _ := st.Get(ctx, "halt:state") // an older replica's write
	var old struct {
		Halts []halt.Halt `json:"halts"`
	}
	json.Unmarshal(raw, &old)
	raw, _ = json.Marshal(old)
	if _, err := st.Update(ctx, "halt:state", raw, ver, 0); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(time.Hour)
	st.armed.Store(true)
	if _, err := f.halt.Engage(ctx, "risk-officer", halt.Account, "ACC-9999", "other desk"); err != nil { // seq 1 again
		t.Fatal(err)
	}
	st.armed.Store(false)
	f.halt.Release(ctx, "risk-officer", halt.Account, "ACC-9999", "ok")
	f.clock.Add(time.Hour)
	pl, err := f.svc.PlaceOrder(ctx, alice, resting(t, f, "old-release-blip"), trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Approval == nil {
		t.Fatalf("placing: %+v %v", pl.Outcome, err)
	}
	out, err := f.svc.Decide(ctx, bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil) // mark 1
	t.Logf("approve: %s %v: %s (%d orders)", out.Status, err, out.Message, f.trade.orders())
	if out.Approval != nil && out.Approval.Status == trading.ApprovalFailed {
		t.Errorf("approved two hours after the account's last halt was released, yet failed as halted: %s", out.Approval.Error)
	}
}

// TestHaltDuringAnApprovedSendsPreparationStopsIt: a halt engaged and
// released while an approved order's send is being prepared (its re-check
// at execution) stops it: the switch is read once more just before the
// wire.
func TestHaltDuringAnApprovedSendsPreparationStopsIt(t *testing.T) {
	f := newRaceFixture(t, store.NewMemory(nil), approveAll, nil)
	id := approvedUnsent(t, f, resting(t, f, "gap-recheck"))
	f.clock.Add(time.Minute)
	hook := func() {
		ctx := context.WithoutCancel(t.Context())
		f.clock.Add(time.Second)
		if _, err := f.halt.Engage(ctx, "risk-officer", halt.Global, "", "runaway"); err != nil {
			t.Error(err)
		}
		f.clock.Add(time.Second)
		if _, err := f.halt.Release(ctx, "risk-officer-2", halt.Global, "", "ok"); err != nil {
			t.Error(err)
		}
	}
	f.market.onQuotes.Store(&hook)
	out, err := f.svc.Status(t.Context(), alice, id)
	if n := f.trade.orders(); n != 0 {
		t.Errorf("approved order sent after a global halt engaged (and released) after it passed: %d order(s), %s %v", n, out.Status, err)
	}
}

// TestApproveIsDatedWhenItPassedTheSwitch: a halt engaged after an approve
// passed the switch, and released while the decision's audit write was slow
// (6 s), stops its order: the approve is dated when it passed the switch,
// not after the write.
func TestApproveIsDatedWhenItPassedTheSwitch(t *testing.T) {
	f := newRaceFixture(t, store.NewMemory(nil), approveAll, nil)
	pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "slow-decided"), trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Approval == nil {
		t.Fatalf("placing: %+v %v", pl.Outcome, err)
	}
	var once sync.Once
	f.j.onRecord = func(e trading.JournalEntry) {
		if e.Action != "approval.decided" {
			return
		}
		once.Do(func() {
			ctx := context.WithoutCancel(t.Context())
			f.clock.Add(time.Second)
			if _, err := f.halt.Engage(ctx, "risk-officer", halt.Global, "", "runaway"); err != nil {
				t.Error(err)
			}
			f.clock.Add(time.Second)
			if _, err := f.halt.Release(ctx, "risk-officer-2", halt.Global, "", "ok"); err != nil {
				t.Error(err)
			}
			f.clock.Add(6 * time.Second) // the audit sink is slow
		})
	}
	out, err := f.svc.Decide(t.Context(), bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil)
	if n := f.trade.orders(); n != 0 {
		t.Errorf("approve passed the switch, then a global halt was engaged and released; the order went out anyway: %d order(s), %s %v", n, out.Status, err)
	}
}

// TestCountIsReservedBeforeTheHaltIsWritten: a halt's number is taken
// from the count's own key before the halt is in the state, so no rewrite
// of the state by an older replica in between can make the next halt
// reuse it.
func TestCountIsReservedBeforeTheHaltIsWritten(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := &onStateWrite{Store: open(t)}
			f := newRaceFixture(t, st, approveAll, nil)
			st.hook = func() {
				c, _, err := st.Store.Get(t.Context(), "halt:count")
				if err != nil || string(c) != "1" {
					t.Errorf("the halt is written before its number is kept: count %q %v", c, err)
				}
			}
			switched(t)(f.halt.Engage(t.Context(), "risk-officer", halt.Account, "ACC-9999", "other desk"))
			if !st.done.Load() {
				t.Fatal("the state was never written")
			}
		})
	}
}

// onStateWrite runs hook once, as the kill switch's state is first written.
type onStateWrite struct {
	store.Store
	done atomic.Bool
	hook func()
}

func (c *onStateWrite) Create(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	if key == "halt:state" && c.done.CompareAndSwap(false, true) {
		c.hook()
	}
	return c.Store.Create(ctx, key, v, ttl)
}

// TestHaltDuringADirectOrdersCheckStopsItsSend: a halt engaged after a
// direct order passed the switch, and released while its check was still
// running (slow market data), stops its send: the switch is read once more
// just before the wire. Nothing went out, so the retry is checked afresh,
// and goes out.
func TestHaltDuringADirectOrdersCheckStopsItsSend(t *testing.T) {
	f := newRaceFixture(t, store.NewMemory(nil), policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9}, nil)
	o := resting(t, f, "halt-during-check")
	halted := func() {
		ctx := context.WithoutCancel(t.Context())
		f.clock.Add(time.Second)
		if _, err := f.halt.Engage(ctx, "risk-officer", halt.Global, "", "runaway"); err != nil {
			t.Error(err)
		}
		f.clock.Add(time.Second)
		if _, err := f.halt.Release(ctx, "risk-officer-2", halt.Global, "", "ok"); err != nil {
			t.Error(err)
		}
		f.clock.Add(6 * time.Second) // slow market data
	}
	second := func() { f.market.onQuotes.Store(&halted) } // the check under the claim reads the market again
	f.market.onQuotes.Store(&second)
	if _, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true}); !errors.Is(err, trading.ErrHalted) || f.trade.orders() != 0 {
		t.Fatalf("placing through a halt engaged during its check: %v, %d orders; want refused as halted, unsent", err, f.trade.orders())
	}
	if !slices.ContainsFunc(f.journaled(), func(e trading.JournalEntry) bool {
		return e.Action == "order.intent.superseded" && e.IdempotencyKey == o.IdempotencyKey
	}) {
		t.Error("the trail keeps the intent of an order the switch stopped, without saying it did not go out")
	}
	f.clock.Add(time.Second)
	if pl, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true}); err != nil || pl.Outcome.Order == nil {
		t.Errorf("the retry after the release: %+v %v, want it checked afresh and placed", pl.Outcome, err)
	}
}

// switchReads is a store that counts reads per key, fails reads of the
// kill switch's count while failCount is set, and runs onGet after a read.
type switchReads struct {
	store.Store
	failCount atomic.Bool
	onGet     atomic.Pointer[func(key string)]
	mu        sync.Mutex
	gets      map[string]int
}

func (s *switchReads) Get(ctx context.Context, key string) ([]byte, int64, error) {
	s.mu.Lock()
	if s.gets == nil {
		s.gets = map[string]int{}
	}
	s.gets[key]++
	s.mu.Unlock()
	if key == "halt:count" && s.failCount.Load() {
		return nil, 0, fmt.Errorf("%w: count slot down", store.ErrUnavailable)
	}
	v, ver, err := s.Store.Get(ctx, key)
	if h := s.onGet.Load(); h != nil {
		(*h)(key)
	}
	return v, ver, err
}

func (s *switchReads) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[key]
}

// TestCountComingBackDoesNotHideAHalt: an older replica's write resets the
// switch's count, and an unnumbered halt (the count's key unreadable)
// brings it back to an approval's mark. A global halt engaged and released
// after the approval still stops its order: equal numbers do not prove
// that nothing happened; only an unchanged switch does.
func TestCountComingBackDoesNotHideAHalt(t *testing.T) {
	st := &switchReads{Store: store.NewMemory(nil)}
	f := newRaceFixture(t, st, approveAll, nil)
	ctx := t.Context()
	switched(t)(f.halt.Engage(ctx, "risk-officer", halt.Account, "ACC-9999", "other desk"))
	switched(t)(f.halt.Release(ctx, "risk-officer-2", halt.Account, "ACC-9999", "done"))
	f.clock.Add(time.Minute)
	id := approvedUnsent(t, f, resting(t, f, "count-back")) // mark 1
	f.clock.Add(time.Minute)
	if _, err := f.halt.Engage(ctx, "risk-officer", halt.Global, "", "runaway"); err != nil { // number 2
		t.Fatal(err)
	}
	rewriteAsOlderReplica(t, st.Store)
	f.clock.Add(time.Minute)
	switched(t)(f.halt.Release(ctx, "risk-officer-2", halt.Global, "", "ok"))
	st.failCount.Store(true)
	if _, err := f.halt.Engage(ctx, "risk-officer", halt.Account, "ACC-9999", "other desk again"); err != nil { // unnumbered; the state's count 1 again
		t.Fatal(err)
	}
	st.failCount.Store(false)
	out, err := f.svc.Status(ctx, alice, id)
	if n := f.trade.orders(); n != 0 {
		t.Errorf("approved, then a global halt engaged and released: the order went out anyway (%d order(s), %s %v)", n, out.Status, err)
	}
}

// TestRefusedRecheckKeepsAnotherAttemptsListing: two executions of one
// approved order. A passes its last look at the switch and goes on the
// wire (its answer lost); B, which waited for the account's lease, is
// refused at its last look by a halt engaged meanwhile. B must not remove
// the listing A's order is under: when A's order lands, the halt's
// cancel-all finds and cancels it.
func TestRefusedRecheckKeepsAnotherAttemptsListing(t *testing.T) {
	atWire, land := make(chan struct{}), make(chan struct{})
	var late *firstLost
	f := newRaceFixture(t, store.NewMemory(nil), approveAll, losingFirst(&late, func(context.Context) error {
		close(atWire)
		<-land
		return fmt.Errorf("%w: timeout", backends.ErrUnavailable)
	}))
	id := approvedUnsent(t, f, resting(t, f, "two-executions"))
	bWaits := make(chan struct{})
	var once sync.Once
	f.svc.OnLeaseWait(func(string) { once.Do(func() { close(bWaits) }) })
	bDone, haltedNow := make(chan error, 1), make(chan struct{})
	inB := func() { <-haltedNow } // B's check runs once the halt is engaged
	inA := func() {               // A is in its check, holding the account's lease: B starts, and waits for it
		f.market.onQuotes.Store(&inB)
		go func() { _, err := f.svc.Status(context.WithoutCancel(t.Context()), alice, id); bDone <- err }()
		<-bWaits
	}
	f.market.onQuotes.Store(&inA)
	aDone := make(chan error, 1)
	go func() { _, err := f.svc.Status(context.WithoutCancel(t.Context()), alice, id); aDone <- err }()
	<-atWire
	if _, err := f.halt.Engage(context.WithoutCancel(t.Context()), "risk-officer", halt.Global, "", "stop everything"); err != nil {
		t.Fatal(err)
	}
	close(haltedNow)
	<-bDone
	close(land)
	<-aDone
	late.land(t)
	officer := principal.Principal{Subject: "risk-officer", Accounts: []string{"*"}}
	if _, err := f.svc.CancelAll(context.WithoutCancel(t.Context()), officer, halt.Global, "", "stop everything"); err != nil {
		t.Fatal(err)
	}
	if w := f.working(); len(w) != 0 {
		t.Errorf("an order sent past the halt works, and the halt's cancel-all did not find it: %+v", w)
	}
}

// TestPassIsDatedBeforeTheSwitchIsRead: the switch read of a direct order's
// check is slow, and a global halt is engaged and released while it runs
// (numbered after the order's mark): the order does not go out. Its pass
// is dated before the read, so the release is not "before it passed".
func TestPassIsDatedBeforeTheSwitchIsRead(t *testing.T) {
	st := &switchReads{Store: store.NewMemory(nil)}
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9}, nil)
	ctx := context.WithoutCancel(t.Context())
	switched(t)(f.halt.Engage(ctx, "risk-officer", halt.Account, "ACC-9999", "other desk"))
	switched(t)(f.halt.Release(ctx, "risk-officer-2", halt.Account, "ACC-9999", "done"))
	f.clock.Add(time.Hour)
	var once sync.Once
	slowRead := func(key string) {
		if key != "halt:state" {
			return
		}
		once.Do(func() { // the check's read of the switch (mark 1) answers slowly
			st.onGet.Store(nil)
			f.clock.Add(time.Second)
			if _, err := f.halt.Engage(ctx, "risk-officer", halt.Global, "", "runaway"); err != nil {
				t.Error(err)
			}
			f.clock.Add(time.Second)
			if _, err := f.halt.Release(ctx, "risk-officer-2", halt.Global, "", "ok"); err != nil {
				t.Error(err)
			}
			f.clock.Add(6 * time.Second)
		})
	}
	arm := func() { st.onGet.Store(&slowRead) } // after the preview's market read: the next switch read is the check's
	f.market.onQuotes.Store(&arm)
	pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "slow-read"), trading.Confirmation{Claimed: true})
	if n := f.trade.orders(); n != 0 {
		t.Errorf("a halt engaged and released during the order's check did not stop it: %d order(s), %s %v", n, pl.Outcome.Status, err)
	}
}

// TestDirectOrderReadsTheSwitchStateOnly: with no halt engaged since, a
// direct order's last look at the switch reads its state, not its
// releases (the state's version shows nothing changed).
func TestDirectOrderReadsTheSwitchStateOnly(t *testing.T) {
	st := &switchReads{Store: store.NewMemory(nil)}
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9}, nil)
	if pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "reads"), trading.Confirmation{Claimed: true}); err != nil || pl.Outcome.Order == nil {
		t.Fatalf("%+v %v", pl.Outcome, err)
	}
	if n := st.count("halt:released"); n != 0 {
		t.Errorf("a direct order with no halt ever engaged read the switch's releases %d times", n)
	}
}
