package console

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

var decideT0 = time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)

type fixJournal struct{}

func (fixJournal) Record(context.Context, audit.Step) error     { return nil }
func (fixJournal) RecordDone(context.Context, audit.Step) error { return nil }

// flakyTrade: the Trade service, whose PlaceOrder / GetOrder can be made to fail.
type flakyTrade struct {
	backends.Trade
	failPlace, failGet atomic.Bool
}

func (t *flakyTrade) PlaceOrder(ctx context.Context, r backends.OrderRequest) (backends.Order, error) {
	if t.failPlace.Load() {
		return backends.Order{}, fmt.Errorf("%w: connection refused", backends.ErrUnavailable)
	}
	return t.Trade.PlaceOrder(ctx, r)
}

func (t *flakyTrade) GetOrder(ctx context.Context, id string) (backends.Order, error) {
	if t.failGet.Load() {
		return backends.Order{}, fmt.Errorf("%w: connection refused", backends.ErrUnavailable)
	}
	return t.Trade.GetOrder(ctx, id)
}

func (t *flakyTrade) OrderByClientID(ctx context.Context, id string) (backends.Order, error) {
	if t.failGet.Load() || t.failPlace.Load() {
		return backends.Order{}, fmt.Errorf("%w: connection refused", backends.ErrUnavailable)
	}
	return t.Trade.OrderByClientID(ctx, id)
}

// shrinkingPortfolio: the account's cash can drop (other activity).
type shrinkingPortfolio struct {
	backends.Portfolio
	cut atomic.Int64
}

func (p *shrinkingPortfolio) GetPortfolio(ctx context.Context, id string) (backends.PortfolioValuation, error) {
	pv, err := p.Portfolio.GetPortfolio(ctx, id)
	pv.Cash -= float64(p.cut.Load())
	return pv, err
}

type decideFixture struct {
	clock  *atomic.Int64 // unix nanoseconds
	sw     *halt.Switch
	svc    *trading.Service
	trade  *flakyTrade
	pf     *shrinkingPortfolio
	h      http.Handler
	cookie *http.Cookie
	csrf   string
	audits []audit.Operation
	// overBudget makes the approve budget refuse (Options.Limit).
	overBudget atomic.Bool
}

var (
	requester = principal.Principal{Subject: "alice", ClientID: "agent", Scopes: []string{"trade:write"}, Accounts: []string{"ACC-1001"}}
)

func newDecideFixture(t *testing.T) *decideFixture {
	t.Helper()
	f := &decideFixture{}
	st := store.NewMemory(nil)
	bs := demo.New(nil).Set()
	f.trade = &flakyTrade{Trade: bs.Trade}
	bs.Trade = f.trade
	f.pf = &shrinkingPortfolio{Portfolio: bs.Portfolio}
	bs.Portfolio = f.pf
	f.clock = &atomic.Int64{}
	f.clock.Store(decideT0.UnixNano())
	now := func() time.Time { return time.Unix(0, f.clock.Load()).UTC() }
	rules := policy.Rules{Mode: "live", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.9}
	sw := halt.New(st, fixJournal{}, nil, now)
	f.sw = sw
	f.svc = trading.New(trading.Config{Rules: rules, ApprovalTTL: 30 * time.Minute, Lease: 10 * time.Second, Halt: sw},
		st, bs, fixJournal{}, nil, slog.New(slog.DiscardHandler), now)
	sessions, err := NewSessions([]byte("0123456789abcdef0123456789abcdef"), now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Service: f.svc, Sessions: sessions, Personas: []Persona{{Key: "bob", Subject: "bob"}}, PersonaKey: "0123456789abcdef0123",
		ApproveScope: "trade:approve", HaltScope: "trade:halt", Halt: sw, Now: now,
		Limit: func(context.Context, string) (time.Duration, string, bool) {
			return 2 * time.Second, "rate limit exceeded for approve calls; retry after 2.0 seconds", !f.overBudget.Load()
		},
		Audit: func(_ context.Context, op audit.Operation) { f.audits = append(f.audits, op) }})
	if err != nil {
		t.Fatal(err)
	}
	f.h = c.Handler()
	rec := httptest.NewRecorder()
	if err := sessions.Start(rec, Session{Subject: "bob", ClientID: "console", Scopes: []string{"trade:approve", "trade:halt"}, Accounts: []string{principal.AllAccounts}, Expires: decideT0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	f.cookie = rec.Result().Cookies()[0]
	r := httptest.NewRequest(http.MethodGet, "/console/queue", nil)
	r.AddCookie(f.cookie)
	sess, ok := sessions.Get(r)
	if !ok {
		t.Fatal("no session")
	}
	f.csrf = sessions.CSRF(sess)
	return f
}

func (f *decideFixture) get(t *testing.T, path string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.AddCookie(f.cookie)
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, r)
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

// decide posts the console's decision form and follows the redirect.
func (f *decideFixture) decide(t *testing.T, a trading.Approval, decision string) string {
	t.Helper()
	form := url.Values{"csrf": {f.csrf}, "decision": {decision}, "reason": {"ok"}, "args_digest": {a.ArgsDigest}, "requester": {a.Requester}}
	r := httptest.NewRequest(http.MethodPost, "/console/approvals/"+a.ID+"/decision", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.AddCookie(f.cookie)
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, r)
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("decision: %d %s", rec.Code, rec.Body)
	}
	loc, _ := url.Parse(rec.Header().Get("Location"))
	return loc.Query().Get("result")
}

func (f *decideFixture) pending(t *testing.T, o trading.OrderArgs) trading.Approval {
	t.Helper()
	pl, err := f.svc.PlaceOrder(t.Context(), requester, o, trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Approval == nil || pl.Outcome.Status != trading.StatusPendingApproval {
		t.Fatalf("placing %s: %+v %v", o.IdempotencyKey, pl.Outcome, err)
	}
	return *pl.Outcome.Approval
}

func ko(key string, qty float64) trading.OrderArgs {
	return trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: backends.SideBuy, Type: backends.OrderMarket, Quantity: qty, IdempotencyKey: key}
}

// TestApprovedButRefusedAtExecutionIsToldSo: an approval whose pre-trade
// re-check at execution refuses it (the account changed since the request)
// ends "failed", not placed, and the console says so, not "sent".
func TestApprovedButRefusedAtExecutionIsToldSo(t *testing.T) {
	f := newDecideFixture(t)
	a := f.pending(t, ko("rev-refused-1", 100))
	f.pf.cut.Store(25_000) // cash spent elsewhere meanwhile
	body := f.decide(t, a, trading.DecisionApprove)
	out, _ := f.svc.Status(t.Context(), principal.Principal{Subject: "bob", Accounts: []string{"*"}}, a.ID)
	if out.Approval == nil || out.Approval.Status != trading.ApprovalFailed {
		t.Fatalf("setup: approval is %+v", out.Approval)
	}
	if body == "approved" {
		t.Errorf("approval %s ended %q (%s), not sent; the console says: %q", a.ID, out.Approval.Status, out.Approval.Error, results[body])
	}
}

// TestApproveRecordedWhileTheTradeServiceIsDown: the approve is recorded
// but the order could not be sent yet: the console says it was approved
// and will be sent, and audits the decision as done.
func TestApproveRecordedWhileTheTradeServiceIsDown(t *testing.T) {
	f := newDecideFixture(t)
	a := f.pending(t, ko("rev-down-1", 10))
	f.trade.failPlace.Store(true)
	body := f.decide(t, a, trading.DecisionApprove)
	out, _ := f.svc.Status(t.Context(), principal.Principal{Subject: "bob", Accounts: []string{"*"}}, a.ID)
	st := out.Approval.Status
	if st != trading.ApprovalExecuting && st != trading.ApprovalApproved {
		t.Fatalf("setup: approval %s", st)
	}
	last := f.audits[len(f.audits)-1]
	for _, op := range f.audits {
		if op.Name == "console.decide" {
			last = op
		}
	}
	if last.Outcome != outcome.OK {
		t.Errorf("console.decide audited %q (%s) though the approval is %s, decided by bob", last.Outcome, last.Error, st)
	}
	if body == "failed" {
		t.Errorf("approval %s by bob is recorded; the console says %q", st, results[body])
	}
}

// TestApprovedUnsentApprovalIsListed: an approval decided whose order is
// not sent yet (executing, Trade service down) is in the history and its
// export, where reading it sends the order.
func TestApprovedUnsentApprovalIsListed(t *testing.T) {
	f := newDecideFixture(t)
	a := f.pending(t, ko("rev-exec-1", 10))
	f.trade.failPlace.Store(true)
	if _, err := f.svc.Decide(t.Context(), principal.Principal{Subject: "bob", Accounts: []string{"*"}}, a.ID, trading.DecisionApprove, "ok", nil); err == nil {
		t.Fatal("setup: decide succeeded")
	}
	all, _ := f.svc.History(t.Context(), principal.Principal{Subject: "bob", Accounts: []string{"*"}}, trading.HistoryQuery{})
	var st string
	for _, h := range all {
		if h.ID == a.ID {
			st = h.Status
		}
	}
	if st != trading.ApprovalExecuting {
		t.Fatalf("setup: unfiltered history has it as %q", st)
	}
	for _, path := range []string{"/console/history", "/console/history?status=approved", "/console/history.csv"} {
		code, body := f.get(t, path)
		if code != 200 || !strings.Contains(body, a.ID) {
			t.Errorf("%s (%d): the approved, unsent approval %s is not listed", path, code, a.ID)
		}
	}
}

// TestRecheckSaysWhenItCannotCount: with a working order the Trade service
// cannot be read for, the detail page's re-check does not say "No rule
// blocks this order now".
func TestRecheckSaysWhenItCannotCount(t *testing.T) {
	f := newDecideFixture(t)
	rest := trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: backends.SideBuy, Type: backends.OrderLimit, Quantity: 10, LimitPrice: 1, IdempotencyKey: "rev-rest-1"}
	ra := f.pending(t, rest)
	if out, err := f.svc.Decide(t.Context(), principal.Principal{Subject: "bob", Accounts: []string{"*"}}, ra.ID, trading.DecisionApprove, "ok", nil); err != nil || out.Order == nil || !backends.Working(out.Order.Status) {
		t.Fatalf("resting: %+v %v", out, err)
	}
	a := f.pending(t, ko("rev-unknown-1", 10))
	f.trade.failGet.Store(true)
	_, body := f.get(t, "/console/approvals/"+a.ID)
	shownOK := strings.Contains(body, "No rule blocks this order now")
	after := f.decide(t, a, trading.DecisionApprove)
	if shownOK {
		t.Errorf("detail page: %q while working orders could not be counted; approving then answers %q", "No rule blocks this order now", results[after])
	}
}

// TestSubPennyLimitShownExactly: a sub-dollar limit price on the tick
// (0.0001) is shown as it is on the detail page and in the queue.
func TestSubPennyLimitShownExactly(t *testing.T) {
	c := &Console{o: Options{Now: time.Now}}
	appr := trading.Approval{ID: "APR-1", Status: trading.ApprovalPending, Requester: "alice",
		Order: trading.OrderArgs{AccountID: "ACC-1001", Ticker: "XYZ", Side: "buy", Type: "limit", Quantity: 1000, LimitPrice: 0.1234}}
	for name, p := range map[string]page{
		"detail": {Title: "x", Session: &Session{Subject: "bob"}, Data: detailData{Approval: appr, Pending: true, Check: &policy.Preview{EstimatedPrice: 0.1234, Allowed: true}}},
		"queue":  {Title: "x", Session: &Session{Subject: "bob"}, Data: queueData{Rows: []row{{Approval: appr}}}},
	} {
		var w htmlWriter
		head, content, _ := c.view(&w, p)
		layout(&w, p, head, content)
		page := string(w.b)
		if strings.Contains(page, "0.12<") || strings.Contains(page, "0.12 ") || !strings.Contains(strings.ReplaceAll(page, `"limit_price": 0.1234`, ""), "0.1234") {
			t.Errorf("%s: limit 0.1234 is shown as 0.12", name)
		}
	}
}

// lastDecide is the console.decide audit record of the latest decision.
func (f *decideFixture) lastDecide() audit.Operation {
	var last audit.Operation
	for _, op := range f.audits {
		if op.Name == "console.decide" {
			last = op
		}
	}
	return last
}

// TestRepeatApproveWhileUnsentSaysRecorded: a second approve (a double
// click, a second tab) while the first's order is still being sent is
// "recorded", never "sent".
func TestRepeatApproveWhileUnsentSaysRecorded(t *testing.T) {
	f := newDecideFixture(t)
	a := f.pending(t, ko("repeat-unsent-1", 10))
	f.trade.failPlace.Store(true)
	for i := range 2 {
		if r := f.decide(t, a, trading.DecisionApprove); r != "recorded" {
			t.Errorf("approve %d while the order is not sent: %q", i+1, results[r])
		}
	}
}

// TestTakeoverUnderAHaltSaysHalted: an approve that re-drives an unsent
// order after a halt was engaged is refused by the halt, and the console
// says so (audited as denied): the send is held, not that the Trade service
// did not answer.
func TestTakeoverUnderAHaltSaysHalted(t *testing.T) {
	f := newDecideFixture(t)
	a := f.pending(t, ko("takeover-halt-1", 10))
	f.trade.failPlace.Store(true)
	if r := f.decide(t, a, trading.DecisionApprove); r != "recorded" {
		t.Fatalf("setup: %q", r)
	}
	f.trade.failPlace.Store(false)
	f.clock.Add(int64(time.Minute)) // the lease lapsed, within the resend window
	if _, err := f.sw.Engage(t.Context(), "risk", halt.Global, "", "incident"); err != nil {
		t.Fatal(err)
	}
	if r := f.decide(t, a, trading.DecisionApprove); r != "heldbyhalt" || f.lastDecide().Outcome != outcome.Denied {
		t.Errorf("approve under a halt: %q, audited %q; want heldbyhalt, denied", results[r], f.lastDecide().Outcome)
	}
}

// TestConsoleDrawsOnTheApproveBudget: a decision and a halt's release in the
// console draw on the approve budget the approvals API and the MCP tools
// draw on, so the console is no way around their limit; beyond it nothing
// changes, the page says so, and the refusal is audited as rate_limited.
// Engaging a halt is never refused for budget.
func TestConsoleDrawsOnTheApproveBudget(t *testing.T) {
	f := newDecideFixture(t)
	a := f.pending(t, ko("over-budget-1", 10))
	f.overBudget.Store(true)
	if r := f.decide(t, a, trading.DecisionApprove); r != "limited" {
		t.Errorf("approve beyond the budget: %q", results[r])
	}
	if op := f.lastDecide(); op.Outcome != outcome.RateLimited {
		t.Errorf("audited %+v, want rate_limited", op)
	}
	if st, err := f.svc.Status(t.Context(), requester, a.ID); err != nil || st.Approval.Status != trading.ApprovalPending {
		t.Fatalf("after a refused decision: %+v %v, want it pending", st.Approval, err)
	}
	halt := func(action string) string {
		t.Helper()
		form := url.Values{"csrf": {f.csrf}, "scope": {"global"}, "reason": {"drill"}}
		r := httptest.NewRequest(http.MethodPost, "/console/halts/"+action, strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.AddCookie(f.cookie)
		rec := httptest.NewRecorder()
		f.h.ServeHTTP(rec, r)
		loc, _ := url.Parse(rec.Header().Get("Location"))
		return loc.Query().Get("result")
	}
	if r := halt("engage"); r != "engaged" {
		t.Errorf("engaging a halt beyond the budget: %q", r)
	}
	if r := halt("release"); r != "limited" {
		t.Errorf("releasing a halt beyond the budget: %q", r)
	}
	if st, _ := f.sw.State(t.Context()); len(st.Halts) != 1 {
		t.Errorf("halts after a refused release: %+v", st.Halts)
	}
	f.overBudget.Store(false)
	if r := halt("release"); r != "released" {
		t.Errorf("releasing within the budget: %q", r)
	}
	f.clock.Add(int64(time.Minute)) // approved after the release, it goes out
	if r := f.decide(t, a, trading.DecisionApprove); r != "approved" {
		t.Errorf("approve within the budget: %q", results[r])
	}
}
