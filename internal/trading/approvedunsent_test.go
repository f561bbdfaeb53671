package trading_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// brokenQuotes is market data that does not answer: an approve then takes
// effect, and its order waits to be sent (ErrSendPending).
type brokenQuotes struct{ backends.MarketData }

func (brokenQuotes) Quotes(context.Context, []string) (backends.QuoteSet, error) {
	return backends.QuoteSet{}, fmt.Errorf("%w: market data down", backends.ErrUnavailable)
}

// approvedUnsent places an order that needs an approver, and approves it
// while market data is down, so its order is approved and not sent yet.
func approvedUnsent(t *testing.T, f *raceFixture, o trading.OrderArgs) string {
	t.Helper()
	pl, err := f.svc.PlaceOrder(t.Context(), alice, o, trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Approval == nil {
		t.Fatalf("placing: %+v %v, want an approval", pl.Outcome, err)
	}
	md := f.market.MarketData
	f.market.MarketData = brokenQuotes{md}
	if _, err := f.svc.Decide(t.Context(), bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil); !errors.Is(err, trading.ErrSendPending) {
		t.Fatalf("approve: %v, want ErrSendPending", err)
	}
	f.market.MarketData = md
	return pl.Outcome.Approval.ID
}

var approveAll = policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 100, MaxPositionWeight: 0.9}

// TestApprovedBeforeAHaltIsNotSentAfterItsRelease: an order approved, and
// not sent yet, when a halt is engaged must not go out once the halt is
// released (a status read sends approved orders): the halt was meant to
// stop it. Nothing else fails it meanwhile: cancel-all leaves approved
// orders alone, and nothing reads it during the halt.
func TestApprovedBeforeAHaltIsNotSentAfterItsRelease(t *testing.T) {
	for _, scope := range []struct{ scope, target string }{{halt.Global, ""}, {halt.Account, "ACC-2001"}, {halt.Principal, "Alice"}} {
		t.Run(scope.scope, func(t *testing.T) {
			f := newRaceFixture(t, store.NewMemory(nil), approveAll, nil)
			id := approvedUnsent(t, f, resting(t, f, "pre-halt-approved"))
			// A halt elsewhere, released, stops nothing here.
			switched(t)(f.halt.Engage(t.Context(), "risk-officer", halt.Account, "ACC-9999", "another account"))
			switched(t)(f.halt.Release(t.Context(), "risk-officer-2", halt.Account, "ACC-9999", "done"))
			switched(t)(f.halt.Engage(t.Context(), "risk-officer", scope.scope, scope.target, "runaway agent"))
			officer := principal.Principal{Subject: "risk-officer", Accounts: []string{"*"}}
			if _, err := f.svc.CancelAll(t.Context(), officer, scope.scope, scope.target, "flatten"); err != nil {
				t.Fatal(err)
			}
			f.clock.Add(2 * time.Hour)
			switched(t)(f.halt.Release(t.Context(), "risk-officer-2", scope.scope, scope.target, "all clear"))
			st, err := f.svc.Status(t.Context(), alice, id)
			if n := f.trade.orders(); n != 0 {
				t.Fatalf("sent after the halt's release by a status read: %d order(s), status %s, %v", n, st.Status, err)
			}
			if err != nil || st.Approval == nil || st.Approval.Status != trading.ApprovalFailed {
				t.Errorf("status after the release: %+v %v, want the approval failed", st.Approval, err)
			}
			if !slices.ContainsFunc(f.journaled(), func(e trading.JournalEntry) bool { return e.ApprovalID == id && e.Action == "approval.failed" }) {
				t.Error("the failure is not in the audit trail")
			}
		})
	}
	// Approved after a halt was released, it goes out.
	f := newRaceFixture(t, store.NewMemory(nil), approveAll, nil)
	switched(t)(f.halt.Engage(t.Context(), "risk-officer", halt.Global, "", "pause"))
	f.clock.Add(time.Minute)
	switched(t)(f.halt.Release(t.Context(), "risk-officer-2", halt.Global, "", "resume"))
	f.clock.Add(time.Minute)
	id := approvedUnsent(t, f, resting(t, f, "post-halt-approved"))
	if st, err := f.svc.Status(t.Context(), alice, id); err != nil || st.Order == nil {
		t.Errorf("approved after the halt's release: %+v %v, want it sent", st, err)
	}
}

// TestApprovedOrderIsJournaledBeforeItGoesOut: an approved order's send,
// deferred and then driven by a status read, is journaled before it goes
// out, as a direct order's is; with the audit trail refusing, it does not.
func TestApprovedOrderIsJournaledBeforeItGoesOut(t *testing.T) {
	f := newRaceFixture(t, store.NewMemory(nil), approveAll, nil)
	id := approvedUnsent(t, f, resting(t, f, "approved-journal-down"))
	f.j.fail.Store(true)
	st, err := f.svc.Status(t.Context(), alice, id)
	if n := f.trade.orders(); n != 0 {
		t.Fatalf("with the audit trail refusing every step, a status read sent the order (%s, %v)", st.Status, err)
	}
	f.j.fail.Store(false)
	if st, err = f.svc.Status(t.Context(), alice, id); err != nil || st.Order == nil {
		t.Fatalf("status once the trail records again: %+v %v, want the order sent", st, err)
	}
	if !slices.ContainsFunc(f.journaled(), func(e trading.JournalEntry) bool { return e.ApprovalID == id && e.Action == "order.intent" }) {
		t.Error("the approved order went out without its intent in the audit trail")
	}
}

// TestFailedExecutionIsJournaled: an approved order that fails its check
// at execution, or that the Trade service refuses, leaves an
// approval.failed step with the reason; the trail no longer ends at the
// approval, which reads as an order that may have gone out.
func TestFailedExecutionIsJournaled(t *testing.T) {
	t.Run("check at execution", func(t *testing.T) {
		f := newRaceFixture(t, store.NewMemory(nil), policy.Rules{Mode: "paper", MaxOrderNotional: 1000, ApprovalNotional: 100, MaxPositionWeight: 0.9}, nil)
		pl, err := f.svc.PlaceOrder(t.Context(), alice, tenKO("failed-exec"), trading.Confirmation{Claimed: true})
		if err != nil || pl.Outcome.Approval == nil {
			t.Fatalf("placing: %+v %v", pl.Outcome, err)
		}
		f.market.scale.Store(200) // the check at execution now refuses it
		out, err := f.svc.Decide(t.Context(), bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil)
		if err != nil || out.Approval == nil || out.Approval.Status != trading.ApprovalFailed {
			t.Fatalf("approve: %+v %v, want the approval failed", out, err)
		}
		f.wantFailedStep(t, out.Approval.ID, "pre-trade check at execution")
	})
	t.Run("refused by the Trade service", func(t *testing.T) {
		f := newRaceFixture(t, store.NewMemory(nil), approveAll, func(tr backends.Trade) backends.Trade { return refusingTrade{tr} })
		pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "refused-exec"), trading.Confirmation{Claimed: true})
		if err != nil || pl.Outcome.Approval == nil {
			t.Fatalf("placing: %+v %v", pl.Outcome, err)
		}
		out, err := f.svc.Decide(t.Context(), bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil)
		if err != nil || out.Approval == nil || out.Approval.Status != trading.ApprovalFailed {
			t.Fatalf("approve: %+v %v, want the approval failed", out, err)
		}
		f.wantFailedStep(t, out.Approval.ID, "the Trade service refused it")
	})
}

// refusingTrade refuses every order.
type refusingTrade struct{ backends.Trade }

func (refusingTrade) PlaceOrder(context.Context, backends.OrderRequest) (backends.Order, error) {
	return backends.Order{}, fmt.Errorf("%w: symbol not tradable", backends.ErrInvalid)
}

func (f *raceFixture) wantFailedStep(t *testing.T, id, reason string) {
	t.Helper()
	i := slices.IndexFunc(f.journaled(), func(e trading.JournalEntry) bool { return e.ApprovalID == id && e.Action == "approval.failed" })
	if i < 0 {
		t.Fatalf("approval %s failed, and its trail has no approval.failed step: %v", id, f.journaled())
	}
	if e := f.journaled()[i]; e.Principal != "bob" || !strings.Contains(e.Detail, reason) {
		t.Errorf("approval.failed step %+v, want bob's approval and the reason %q", e, reason)
	}
}

// journaled is a copy of what the journal recorded.
func (f *raceFixture) journaled() []trading.JournalEntry {
	f.j.mu.Lock()
	defer f.j.mu.Unlock()
	return slices.Clone(f.j.entries)
}

// TestResentApprovalStoppedBeforeTheWireSaysTheFirstMayLand: an approved
// order whose send got no answer is taken over and stopped before it goes
// out again (a halt released since that send, one engaged now, a store
// error while it is listed again). The first send may still land, and
// does: no answer may tell the approver or the requester that the order
// was not placed, or to place it again.
func TestResentApprovalStoppedBeforeTheWireSaysTheFirstMayLand(t *testing.T) {
	for name, block := range map[string]func(t *testing.T, f *raceFixture, st *failSendingRewrite){
		"halt released since the send": func(t *testing.T, f *raceFixture, _ *failSendingRewrite) {
			switched(t)(f.halt.Engage(t.Context(), "risk-officer", halt.Global, "", "pause"))
			f.clock.Add(time.Second)
			switched(t)(f.halt.Release(t.Context(), "risk-officer-2", halt.Global, "", "resume"))
		},
		"halt engaged": func(t *testing.T, f *raceFixture, _ *failSendingRewrite) {
			switched(t)(f.halt.Engage(t.Context(), "risk-officer", halt.Global, "", "pause"))
		},
		"store error listing it again": func(t *testing.T, _ *raceFixture, st *failSendingRewrite) { st.armed.Store(true) },
		"audit trail refusing":         func(t *testing.T, f *raceFixture, _ *failSendingRewrite) { f.j.fail.Store(true) },
	} {
		t.Run(name, func(t *testing.T) {
			st := &failSendingRewrite{Store: store.NewMemory(nil)}
			var late *firstLost
			f := newRaceFixture(t, st, approveAll, losingFirst(&late, func(context.Context) error { return fmt.Errorf("%w: timeout", backends.ErrUnavailable) }))
			pl, err := f.svc.PlaceOrder(t.Context(), alice, resting(t, f, "takeover-stopped"), trading.Confirmation{Claimed: true})
			if err != nil || pl.Outcome.Approval == nil {
				t.Fatalf("placing: %+v %v", pl.Outcome, err)
			}
			id := pl.Outcome.Approval.ID
			if _, err := f.svc.Decide(t.Context(), bob, id, trading.DecisionApprove, "ok", nil); !errors.Is(err, trading.ErrSendPending) {
				t.Fatalf("approve: %v, want ErrSendPending", err)
			}
			f.clock.Add(20 * time.Second) // its lease runs out: the next read takes it over
			block(t, f, st)
			_, serr := f.svc.Status(t.Context(), alice, id)
			block(t, f, st) // again, for the approver's call (a halt is engaged anew)
			_, derr := f.svc.Decide(t.Context(), bob, id, trading.DecisionApprove, "ok", nil)
			for who, err := range map[string]error{"requester": serr, "approver": derr} {
				if msg := strings.ToLower(fmt.Sprint(err)); strings.Contains(msg, "not placed") || strings.Contains(msg, "no order was placed") || strings.Contains(msg, "place it again") {
					t.Errorf("the %s was told %q, while the first send may still land", who, err)
				}
			}
			if n := f.trade.orders(); n != 0 {
				t.Fatalf("%d orders went out past the stop", n)
			}
			late.land(t)
			f.j.fail.Store(false)
			if st, err := f.svc.Status(t.Context(), alice, id); err != nil || st.Order == nil {
				t.Errorf("status once the first send landed: %+v %v, want its order", st, err)
			}
		})
	}
}

// TestApprovalWithoutSentAtIsNotResentForEver: an approval being sent when
// this version came (or rewritten by an older replica) has no sent_at; its
// resends must not restart the window for ever. Its first resend pins its
// last send as its first.
func TestApprovalWithoutSentAtIsNotResentForEver(t *testing.T) {
	st := store.NewMemory(nil)
	f := newRaceFixture(t, st, policy.Rules{Mode: "paper", MaxOrderNotional: 1000, ApprovalNotional: 100, MaxPositionWeight: 0.9}, nil)
	pl, err := f.svc.PlaceOrder(t.Context(), alice, tenKO("legacy-approval"), trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Approval == nil {
		t.Fatalf("placing: %+v %v", pl.Outcome, err)
	}
	id := pl.Outcome.Approval.ID
	f.trade.fail.Store(true)
	if _, err := f.svc.Decide(t.Context(), bob, id, trading.DecisionApprove, "ok", nil); !errors.Is(err, trading.ErrSendPending) {
		t.Fatalf("approve: %v, want ErrSendPending", err)
	}
	raw, ver, err := st.Get(t.Context(), "approval:"+id)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(raw, &m)
	if _, ok := m["sent_at"]; !ok {
		t.Fatalf("no sent_at to remove: %s", raw)
	}
	delete(m, "sent_at") // as an older replica writes it
	raw, _ = json.Marshal(m)
	if _, err := st.Update(t.Context(), "approval:"+id, raw, ver, 0); err != nil {
		t.Fatal(err)
	}
	f.market.scale.Store(200) // a fresh check now refuses it
	for range 12 {
		f.clock.Add(10 * time.Minute)
		f.svc.Status(t.Context(), alice, id)
	}
	f.trade.fail.Store(false)
	f.clock.Add(10 * time.Minute)
	out, err := f.svc.Status(t.Context(), alice, id)
	if n := f.trade.orders(); n != 0 {
		t.Errorf("went out unchecked two hours after its only check: %d order(s), %s %v", n, out.Status, err)
	}
}

// TestStatusReadWithTheTrailDownDoesNotSayNotPlaced: a status read that
// would send an approved order, while the audit trail refuses its intent,
// answers with the approval as it stands (approved, to be sent), not "it
// was not placed": the next read sends it.
func TestStatusReadWithTheTrailDownDoesNotSayNotPlaced(t *testing.T) {
	f := newRaceFixture(t, store.NewMemory(nil), approveAll, nil)
	id := approvedUnsent(t, f, resting(t, f, "read-journal-down"))
	f.j.fail.Store(true)
	st, err := f.svc.Status(t.Context(), alice, id)
	if err != nil || st.Approval == nil || !st.Approval.AwaitingSend() {
		t.Errorf("status with the trail down: %+v %v, want the approval as it stands", st.Approval, err)
	}
	f.j.fail.Store(false)
	if st, err := f.svc.Status(t.Context(), alice, id); err != nil || st.Order == nil {
		t.Errorf("status once the trail records: %+v %v, want it sent", st, err)
	}
}

// TestApprovedOrderIntentIsJournaledOncePerSend: reads that cannot send an
// approved order (its check cannot run) journal nothing; the send that
// goes out journals one order.intent.
func TestApprovedOrderIntentIsJournaledOncePerSend(t *testing.T) {
	f := newRaceFixture(t, store.NewMemory(nil), approveAll, nil)
	id := approvedUnsent(t, f, resting(t, f, "intent-once"))
	md := f.market.MarketData
	f.market.MarketData = brokenQuotes{md}
	for range 3 {
		f.svc.Status(t.Context(), alice, id)
	}
	f.market.MarketData = md
	if st, err := f.svc.Status(t.Context(), alice, id); err != nil || st.Order == nil {
		t.Fatalf("status: %+v %v", st, err)
	}
	var steps []string
	for _, e := range f.journaled() {
		if e.ApprovalID == id {
			steps = append(steps, e.Action)
		}
	}
	if want := []string{"approval.requested", "approval.decided", "order.intent", "order.executed"}; !slices.Equal(steps, want) {
		t.Errorf("trail %v, want %v", steps, want)
	}
}

// TestReleasedHaltIsSeenAcrossClockSkew: the replica that released a halt
// runs a few seconds behind the one that recorded the approval; the halt,
// engaged and released after the approval, still stops its order.
func TestReleasedHaltIsSeenAcrossClockSkew(t *testing.T) {
	st := store.NewMemory(nil)
	f := newRaceFixture(t, st, approveAll, nil)
	behind := &clock{now: f.clock.Now().Add(-3 * time.Second)}
	officers := halt.New(st, f.j, nil, behind.Now)
	id := approvedUnsent(t, f, resting(t, f, "skew"))
	f.clock.Add(time.Second)
	behind.Add(time.Second)
	if _, err := officers.Engage(t.Context(), "risk-officer", halt.Global, "", "runaway"); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(time.Second)
	behind.Add(time.Second)
	if _, err := officers.Release(t.Context(), "risk-officer-2", halt.Global, "", "ok"); err != nil {
		t.Fatal(err)
	}
	f.svc.Status(t.Context(), alice, id)
	if n := f.trade.orders(); n != 0 {
		t.Errorf("approved before a halt, sent after its release (clocks 3 s apart): %d order(s)", n)
	}
}

// TestReleasesSurviveAnOlderReplicasWrite: a replica of the previous
// version rewrites the switch's state as it knows it (engaged halts only);
// the releases an approved, unsent order is checked against are kept apart
// from it, so the order still does not go out after the halt.
func TestReleasesSurviveAnOlderReplicasWrite(t *testing.T) {
	st := store.NewMemory(nil)
	f := newRaceFixture(t, st, approveAll, nil)
	id := approvedUnsent(t, f, resting(t, f, "old-replica"))
	f.clock.Add(time.Minute)
	switched(t)(f.halt.Engage(t.Context(), "risk-officer", halt.Global, "", "runaway"))
	f.clock.Add(time.Minute)
	switched(t)(f.halt.Release(t.Context(), "risk-officer-2", halt.Global, "", "ok"))
	rewriteAsOlderReplica(t, st)
	f.svc.Status(t.Context(), alice, id)
	if n := f.trade.orders(); n != 0 {
		t.Errorf("after an older replica's write of the switch, the approved order went out after the halt: %d order(s)", n)
	}
}

// rewriteAsOlderReplica rewrites the kill switch's state as a replica of
// the previous version writes it: engaged halts only, without what it does
// not know (the count of halts, their numbers).
func rewriteAsOlderReplica(t *testing.T, st store.Store) {
	t.Helper()
	raw, ver, err := st.Get(t.Context(), "halt:state")
	if err != nil {
		t.Fatal(err)
	}
	var old struct {
		Halts []struct {
			Scope     string    `json:"scope"`
			Target    string    `json:"target,omitempty"`
			Reason    string    `json:"reason"`
			EngagedBy string    `json:"engaged_by"`
			EngagedAt time.Time `json:"engaged_at"`
		} `json:"halts"`
	}
	if err := json.Unmarshal(raw, &old); err != nil {
		t.Fatal(err)
	}
	raw, _ = json.Marshal(old)
	if _, err := st.Update(t.Context(), "halt:state", raw, ver, 0); err != nil {
		t.Fatal(err)
	}
}

// trailOf is approval id's journal steps, as "action(detail)".
func (f *raceFixture) trailOf(id string) []string {
	var trail []string
	for _, e := range f.journaled() {
		if e.ApprovalID == id {
			trail = append(trail, e.Action+"("+e.Detail+")")
		}
	}
	return trail
}

// switched fails the test if a change of the kill switch (Engage,
// Release) failed: switched(t)(f.halt.Engage(...)).
func switched(t *testing.T) func(halt.State, error) {
	return func(_ halt.State, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}
