package console

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
)

// downStore: the console's service whose shared store is unavailable.
type downStore struct{ *trading.Service }

func (downStore) ListPending(context.Context, principal.Principal, int) ([]trading.Approval, error) {
	return nil, trading.ErrStateUnavailable
}
func (downStore) Status(context.Context, principal.Principal, string) (trading.Outcome, error) {
	return trading.Outcome{}, trading.ErrStateUnavailable
}

func rebuild(t *testing.T, f *decideFixture, svc Service) {
	t.Helper()
	now := func() time.Time { return time.Unix(0, f.clock.Load()).UTC() }
	sessions, err := NewSessions([]byte("0123456789abcdef0123456789abcdef"), now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Service: svc, Sessions: sessions, Personas: []Persona{{Key: "bob", Subject: "bob"}}, PersonaKey: "0123456789abcdef0123",
		ApproveScope: "trade:approve", HaltScope: "trade:halt", Halt: f.sw, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	f.h = c.Handler()
}

// TestQueueFragmentSaysWhenTheQueueCannotBeRead: the live update of the
// queue (every 3s) never says "Nothing is waiting" about a queue it could
// not read: it answers 503 (the script keeps the rows and says it is
// behind), and the full page says so too.
func TestQueueFragmentSaysWhenTheQueueCannotBeRead(t *testing.T) {
	f := newDecideFixture(t)
	f.pending(t, ko("rev-frag-1", 10))
	rebuild(t, f, downStore{f.svc})
	code, body := f.get(t, "/console/queue?fragment=rows")
	if code != http.StatusServiceUnavailable || strings.Contains(body, "Nothing is waiting") || !strings.Contains(body, "cannot be read") {
		t.Errorf("queue unreadable, live fragment: %d\n%s\nwant 503 saying it cannot be read", code, body)
	}
	if _, page := f.get(t, "/console/queue"); strings.Contains(page, "Nothing is waiting") {
		t.Errorf("queue unreadable, the page says nothing is waiting:\n%s", page)
	}
}

// TestDetailUnreadableIsUnavailableNotNotFound: an approval that exists,
// read while the store is unavailable, is "cannot be read just now" (503),
// not "No such approval" (404).
func TestDetailUnreadableIsUnavailableNotNotFound(t *testing.T) {
	f := newDecideFixture(t)
	a := f.pending(t, ko("rev-detail-1", 10))
	rebuild(t, f, downStore{f.svc})
	code, body := f.get(t, "/console/approvals/"+a.ID)
	if code != http.StatusServiceUnavailable || strings.Contains(body, "No such approval") {
		t.Errorf("store unavailable: detail answers %d %q; want a 503 saying it cannot be read now", code, between(body, `id="message">`, "</p>"))
	}
}

func between(s, a, b string) string {
	_, s, _ = strings.Cut(s, a)
	s, _, _ = strings.Cut(s, b)
	return s
}

// TestQueueShowsTheNewestApprovals: with many approvals waiting, the
// queue ("every pending approval ..., newest first") lists the one asked
// last.
func TestQueueShowsTheNewestApprovals(t *testing.T) {
	f := newDecideFixture(t)
	var last trading.Approval
	for i := range 101 {
		f.clock.Add(int64(time.Second))
		p := requester
		p.Subject = fmt.Sprintf("trader-%03d", i)
		pl, err := f.svc.PlaceOrder(t.Context(), p, ko(fmt.Sprintf("rev-many-%03d", i), 1), trading.Confirmation{Claimed: true})
		if err != nil || pl.Outcome.Approval == nil {
			t.Fatalf("placing %d: %+v %v", i, pl.Outcome, err)
		}
		last = *pl.Outcome.Approval
	}
	_, body := f.get(t, "/console/queue")
	if !strings.Contains(body, `data-id="`+last.ID+`"`) {
		t.Errorf("the newest approval %s (asked by %s) is not in the queue, which lists %d rows newest first",
			last.ID, last.Requester, strings.Count(body, "data-id="))
	}
}

// TestDecisionOnAWithdrawnApprovalSaysWithdrawn: the requester withdrew the
// order (cancel_order) while the approver had its page open; the approver's
// click is answered that it was withdrawn, not "decided by someone else".
func TestDecisionOnAWithdrawnApprovalSaysWithdrawn(t *testing.T) {
	f := newDecideFixture(t)
	a := f.pending(t, ko("rev-withdrawn-1", 1))
	if _, err := f.svc.Cancel(t.Context(), requester, a.ID); err != nil {
		t.Fatal(err)
	}
	r := f.decide(t, a, trading.DecisionApprove)
	if strings.Contains(results[r], "decided by someone else") {
		t.Errorf("approve of a withdrawn approval: %q", results[r])
	}
}

// TestOwnEarlierDecisionIsNamedAsYours: the approver approved in one tab,
// then clicks Reject in a second, stale tab: told that they decided it
// already, not "someone else".
func TestOwnEarlierDecisionIsNamedAsYours(t *testing.T) {
	f := newDecideFixture(t)
	a := f.pending(t, ko("rev-twotabs-1", 1))
	if r := f.decide(t, a, trading.DecisionApprove); r != "approved" {
		t.Fatalf("setup: %q", r)
	}
	r := f.decide(t, a, trading.DecisionReject)
	if strings.Contains(results[r], "decided by someone else") {
		t.Errorf("bob's own stale tab, after bob approved: %q", results[r])
	}
}

// TestHeldSendOfAnApprovedOrderIsNotCalledPending: an approved order whose
// send went unanswered, re-driven by the approver's repeat click under a
// halt, is not answered "The approval stays pending; a rejection still
// works": it is approved, and a rejection is refused.
func TestHeldSendOfAnApprovedOrderIsNotCalledPending(t *testing.T) {
	f := newDecideFixture(t)
	a := f.pending(t, ko("rev-halt-approved-1", 1))
	f.trade.failPlace.Store(true)
	if r := f.decide(t, a, trading.DecisionApprove); r != "recorded" {
		t.Fatalf("setup: %q", r)
	}
	f.trade.failPlace.Store(false)
	f.clock.Add(int64(time.Minute))
	if _, err := f.sw.Engage(t.Context(), "risk", "global", "", "incident"); err != nil {
		t.Fatal(err)
	}
	r := f.decide(t, a, trading.DecisionApprove)
	_, page := f.get(t, "/console/approvals/"+a.ID)
	st := between(page, `id="status">`, "</span>")
	rej := f.decide(t, a, trading.DecisionReject)
	if strings.Contains(results[r], "stays pending") && st != "pending" {
		t.Errorf("told %q; the page shows the approval %q, and a rejection now answers %q", results[r], st, results[rej])
	}
}

// TestHistoryAndCSVSayWhyAnApprovedOrderWasNotPlaced: an approval approved
// but not placed (the re-check at execution refused it) is listed in the
// history and the CSV with why it was not placed, beside the approver's
// note.
func TestHistoryAndCSVSayWhyAnApprovedOrderWasNotPlaced(t *testing.T) {
	f := newDecideFixture(t)
	a := f.pending(t, ko("rev-hist-failed-1", 100))
	f.pf.cut.Store(25_000)
	if r := f.decide(t, a, trading.DecisionApprove); r != "notplaced" {
		t.Fatalf("setup: %q", r)
	}
	_, hist := f.get(t, "/console/history")
	_, csv := f.get(t, "/console/history.csv")
	for name, body := range map[string]string{"history": hist, "csv": csv} {
		if !strings.Contains(body, "insufficient buying power") {
			t.Errorf("%s: a failed approval without its cause:\n%s", name, between(body, a.ID, "\n"))
		}
	}
}
