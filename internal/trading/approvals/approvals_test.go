package approvals_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/httpserver"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/approvals"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

const (
	approveScope  = "trade:approve"
	approverTool  = "approval-tool"
	trustedSource = "urn:test:approval-workflow"
	eventMaxAge   = 30 * time.Minute
	maxBody       = 1 << 10 // the edge's body limit, as the app mounts the API
)

var (
	t0       = time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	eventKey = []byte("0123456789abcdef0123456789abcdef")
)

// Callers. alice requests orders (and holds the approve scope, so four eyes
// is what stops her); bob approves every account, dave ACC-1001, carol only
// ACC-1003; rita may read but not approve.
var (
	alice = principal.Principal{Subject: "alice", ClientID: approverTool, Scopes: []string{"trade:write", approveScope}, Accounts: []string{"ACC-1001", "ACC-1003"}}
	bob   = principal.Principal{Subject: "bob", ClientID: approverTool, Scopes: []string{approveScope}, Accounts: []string{principal.AllAccounts}}
	carol = principal.Principal{Subject: "carol", ClientID: approverTool, Scopes: []string{approveScope}, Accounts: []string{"ACC-1003"}}
	dave  = principal.Principal{Subject: "dave", ClientID: approverTool, Scopes: []string{approveScope}, Accounts: []string{"ACC-1001"}}
	erin  = principal.Principal{Subject: "erin", ClientID: approverTool, Scopes: []string{approveScope}, Accounts: []string{"ACC-2002"}}
	rita  = principal.Principal{Subject: "rita", ClientID: approverTool, Scopes: []string{"portfolio:read"}, Accounts: []string{principal.AllAccounts}}
)

// fixture is the API under test, with what it was handed recorded.
type fixture struct {
	api    http.Handler // Routes, behind the body limit as the app mounts them
	events http.Handler // Events, likewise
	svc    *trading.Service
	trade  *countingTrade
	audits []auditRecord
}

// auditRecord is one Options.Audit call: the operation and the principal
// on the context it was handed (the caller the audit trail names).
type auditRecord struct {
	op     audit.Operation
	caller principal.Principal
	authed bool
}

// newFixture builds the API over d, or over a real trading.Service on the
// demo backends in live mode (every claimed order waits for an approver)
// when d is nil. tweaks adjust the Options.
func newFixture(t *testing.T, d approvals.Decider, tweaks ...func(*approvals.Options)) *fixture {
	t.Helper()
	f := &fixture{}
	st := store.NewMemory(nil)
	logger := slog.New(slog.DiscardHandler)
	if d == nil {
		bs := demo.New(nil).Set()
		f.trade = &countingTrade{Trade: bs.Trade}
		bs.Trade = f.trade
		rules := policy.Rules{Mode: "live", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.5}
		f.svc = trading.New(trading.Config{Rules: rules, ApprovalTTL: 30 * time.Minute, Lease: 10 * time.Second},
			st, bs, nopJournal{}, nil, logger, func() time.Time { return t0 })
		d = f.svc
	}
	o := approvals.Options{
		Decider: d, ApproveScope: approveScope, EventSources: []string{trustedSource},
		EventKey: func() ([]byte, error) { return eventKey, nil }, EventMaxAge: eventMaxAge, Store: st,
		Audit: func(ctx context.Context, op audit.Operation) {
			p, ok := principal.From(ctx)
			f.audits = append(f.audits, auditRecord{op: op, caller: p, authed: ok})
		},
		Logger: logger,
		Now:    func() time.Time { return t0 },
	}
	for _, tweak := range tweaks {
		tweak(&o)
	}
	api := approvals.New(o)
	f.api = httpserver.LimitBody(maxBody)(api.Routes())
	f.events = httpserver.LimitBody(maxBody)(api.Events())
	return f
}

// serve runs req through h as caller (nil: unauthenticated), and returns the
// response and the one audit record the request must have left.
func (f *fixture) serve(t *testing.T, h http.Handler, caller *principal.Principal, req *http.Request) (*httptest.ResponseRecorder, auditRecord) {
	t.Helper()
	if caller != nil {
		req = req.WithContext(principal.With(req.Context(), *caller))
	}
	before := len(f.audits)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if n := len(f.audits) - before; n != 1 {
		t.Fatalf("%s %s left %d audit records, want 1", req.Method, req.URL, n)
	}
	return rec, f.audits[len(f.audits)-1]
}

// pending has requester place a small order on account, which waits for an
// approver.
func (f *fixture) pending(t *testing.T, requester principal.Principal, account, key string) trading.Approval {
	t.Helper()
	o := trading.OrderArgs{AccountID: account, Ticker: "KO", Side: backends.SideBuy, Type: backends.OrderMarket, Quantity: 10, IdempotencyKey: key}
	pl, err := f.svc.PlaceOrder(t.Context(), requester, o, trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Status != trading.StatusPendingApproval || pl.Outcome.Approval == nil {
		t.Fatalf("placing %s on %s: %+v, %v; want pending_approval", key, account, pl.Outcome, err)
	}
	return *pl.Outcome.Approval
}

// status is the approval's status as an entitled approver sees it.
func (f *fixture) status(t *testing.T, id string) string {
	t.Helper()
	out, err := f.svc.Status(t.Context(), bob, id)
	if err != nil {
		t.Fatalf("status of %s: %v", id, err)
	}
	return out.Status
}

func request(t *testing.T, method, target, contentType string, body io.Reader) *http.Request {
	req := httptest.NewRequestWithContext(t.Context(), method, target, body)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}

func decisionRequest(t *testing.T, id, body string) *http.Request {
	return request(t, http.MethodPost, "/approvals/"+id+"/decision", "application/json", strings.NewReader(body))
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("response %d %q is not the JSON expected: %v", rec.Code, rec.Body, err)
	}
	return v
}

// errorMessage is the {"error": msg} body every refusal carries.
func errorMessage(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("refusal Content-Type %q, want application/json", ct)
	}
	msg := decode[map[string]string](t, rec)["error"]
	if msg == "" {
		t.Errorf("refusal %d without an error message: %s", rec.Code, rec.Body)
	}
	return msg
}

// wantOutcome is the audit outcome of a response status, as the API
// documents it: ok, denied for 4xx, failed for 5xx.
func wantOutcome(status int) (outcome.Outcome, string) {
	switch {
	case status >= 500:
		return outcome.Failed, http.StatusText(status)
	case status >= 400:
		return outcome.Denied, http.StatusText(status)
	}
	return outcome.OK, ""
}

// fakeDecider records what the API asks of the trading service.
type fakeDecider struct {
	err     error
	pending []trading.Approval
	calls   []deciderCall
}

type deciderCall struct {
	method               string
	p                    principal.Principal
	id, decision, reason string
	expect               *trading.Expect
	limit                int
}

func (d *fakeDecider) Decide(_ context.Context, p principal.Principal, id, decision, reason string, expect *trading.Expect) (trading.Outcome, error) {
	d.calls = append(d.calls, deciderCall{method: "Decide", p: p, id: id, decision: decision, reason: reason, expect: expect})
	if d.err != nil {
		return trading.Outcome{}, d.err
	}
	return trading.Outcome{Status: trading.StatusApproved, Message: "approved by " + p.Subject}, nil
}

func (d *fakeDecider) Status(_ context.Context, p principal.Principal, id string) (trading.Outcome, error) {
	d.calls = append(d.calls, deciderCall{method: "Status", p: p, id: id})
	if d.err != nil {
		return trading.Outcome{}, d.err
	}
	return trading.Outcome{Status: trading.StatusPendingApproval, Approval: &trading.Approval{ID: id, Status: trading.ApprovalPending}}, nil
}

func (d *fakeDecider) ListPending(_ context.Context, p principal.Principal, limit int) ([]trading.Approval, error) {
	d.calls = append(d.calls, deciderCall{method: "ListPending", p: p, limit: limit})
	return d.pending, d.err
}

type nopJournal struct{}

func (nopJournal) Record(context.Context, trading.JournalEntry) error     { return nil }
func (nopJournal) RecordDone(context.Context, trading.JournalEntry) error { return nil }

// countingTrade counts the orders sent to the Trade service.
type countingTrade struct {
	backends.Trade
	placed atomic.Int64
}

func (c *countingTrade) PlaceOrder(ctx context.Context, r backends.OrderRequest) (backends.Order, error) {
	c.placed.Add(1)
	return c.Trade.PlaceOrder(ctx, r)
}

// routes are the API's three routes, each with a request it accepts.
var routes = []struct {
	name, method, target, body string
	decider                    string // the Decider method the route drives
}{
	{"list", http.MethodGet, "/approvals", "", "ListPending"},
	{"get", http.MethodGet, "/approvals/APR-7", "", "Status"},
	{"decide", http.MethodPost, "/approvals/APR-7/decision", `{"decision":"approve","reason":"ok"}`, "Decide"},
}

func routeRequest(t *testing.T, method, target, body string) *http.Request {
	if method == http.MethodPost {
		return request(t, method, target, "application/json", strings.NewReader(body))
	}
	return request(t, method, target, "", nil)
}

// TestApproverIsChecked: every route refuses a caller who is not an
// approver (401 unauthenticated; 403 with an insufficient_scope challenge
// without the approve scope; 403 from a client other than the approval
// tool when those are configured) before the trading service is asked.
func TestApproverIsChecked(t *testing.T) {
	viaAgent := bob
	viaAgent.ClientID = "agent-cli"
	callers := []struct {
		name      string
		caller    *principal.Principal
		clients   []string
		want      int
		challenge bool
	}{
		{"unauthenticated", nil, nil, http.StatusUnauthorized, false},
		{"without the approve scope", &rita, nil, http.StatusForbidden, true},
		{"approver", &bob, nil, http.StatusOK, false},
		{"approver through another client", &viaAgent, []string{approverTool}, http.StatusForbidden, false},
		{"approver through the approval tool", &bob, []string{"other-tool", approverTool}, http.StatusOK, false},
		{"any client when none are configured", &viaAgent, nil, http.StatusOK, false},
	}
	for _, rt := range routes {
		for _, c := range callers {
			t.Run(rt.name+"/"+c.name, func(t *testing.T) {
				d := &fakeDecider{pending: []trading.Approval{}}
				f := newFixture(t, d, func(o *approvals.Options) { o.ApproverClients = c.clients })
				rec, _ := f.serve(t, f.api, c.caller, routeRequest(t, rt.method, rt.target, rt.body))
				if rec.Code != c.want {
					t.Fatalf("status %d, want %d: %s", rec.Code, c.want, rec.Body)
				}
				challenge := rec.Header().Get("WWW-Authenticate")
				if c.challenge != (challenge != "") {
					t.Errorf("WWW-Authenticate %q, want a challenge: %v", challenge, c.challenge)
				}
				if c.challenge && (!strings.Contains(challenge, `error="insufficient_scope"`) || !strings.Contains(challenge, `scope="`+approveScope+`"`)) {
					t.Errorf("challenge %q does not name the missing %s scope", challenge, approveScope)
				}
				if c.want != http.StatusOK {
					errorMessage(t, rec)
					if len(d.calls) != 0 {
						t.Errorf("refused caller reached the trading service: %+v", d.calls)
					}
					return
				}
				if len(d.calls) != 1 || d.calls[0].method != rt.decider || !reflect.DeepEqual(d.calls[0].p, *c.caller) {
					t.Errorf("trading service calls %+v, want one %s as %s", d.calls, rt.decider, c.caller.Subject)
				}
			})
		}
	}
}

// TestDecisionBody: a decision must be a JSON object of known fields sent as
// application/json; what it says reaches the trading service as is, for the
// approval in the path and with no pinned order (that is for events).
func TestDecisionBody(t *testing.T) {
	oversized := func() io.Reader { // streamed, so only the edge's reader limit stops it
		return io.MultiReader(strings.NewReader(`{"decision":"approve","reason":"`), strings.NewReader(strings.Repeat("x", maxBody)), strings.NewReader(`"}`))
	}
	tests := []struct {
		name, contentType string
		body              io.Reader
		want              int
		decision, reason  string
	}{
		{"approve with a reason", "application/json", strings.NewReader(`{"decision":"approve","reason":"within mandate"}`), http.StatusOK, "approve", "within mandate"},
		{"reject without a reason", "application/json", strings.NewReader(`{"decision":"reject"}`), http.StatusOK, "reject", ""},
		{"charset parameter", "application/json; charset=utf-8", strings.NewReader(`{"decision":"approve"}`), http.StatusOK, "approve", ""},
		{"the service judges the decision word", "application/json", strings.NewReader(`{"decision":"maybe"}`), http.StatusOK, "maybe", ""},
		{"no Content-Type", "", strings.NewReader(`{"decision":"approve"}`), http.StatusUnsupportedMediaType, "", ""},
		{"form encoded", "application/x-www-form-urlencoded", strings.NewReader(`decision=approve`), http.StatusUnsupportedMediaType, "", ""},
		{"empty body", "application/json", strings.NewReader(``), http.StatusBadRequest, "", ""},
		{"malformed JSON", "application/json", strings.NewReader(`{"decision":`), http.StatusBadRequest, "", ""},
		{"not an object", "application/json", strings.NewReader(`"approve"`), http.StatusBadRequest, "", ""},
		{"the token, not the body, names the approver", "application/json", strings.NewReader(`{"decision":"approve","approver":"mallory"}`), http.StatusOK, "approve", ""},
		{"unknown field", "application/json", strings.NewReader(`{"decision":"approve","decided_by":"mallory"}`), http.StatusBadRequest, "", ""},
		{"body over the limit", "application/json", oversized(), http.StatusRequestEntityTooLarge, "", ""},
		{"a second JSON value", "application/json", strings.NewReader(`{"decision":"reject"}{"decision":"approve"}`), http.StatusBadRequest, "", ""},
		{"approval_id naming another approval", "application/json", strings.NewReader(`{"approval_id":"APR-9","decision":"approve"}`), http.StatusBadRequest, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &fakeDecider{}
			f := newFixture(t, d)
			rec, _ := f.serve(t, f.api, &bob, request(t, http.MethodPost, "/approvals/APR-42/decision", tt.contentType, tt.body))
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
			if tt.want != http.StatusOK {
				errorMessage(t, rec)
				if len(d.calls) != 0 {
					t.Errorf("refused body reached the trading service: %+v", d.calls)
				}
				return
			}
			want := deciderCall{method: "Decide", p: bob, id: "APR-42", decision: tt.decision, reason: tt.reason}
			if len(d.calls) != 1 || !reflect.DeepEqual(d.calls[0], want) {
				t.Errorf("trading service calls %+v, want [%+v]", d.calls, want)
			}
		})
	}
}

// TestListLimit: ?limit= between 1 and 100 is passed on; anything else asks
// for the default 50.
func TestListLimit(t *testing.T) {
	for query, want := range map[string]int{"": 50, "?limit=1": 1, "?limit=10": 10, "?limit=100": 100, "?limit=0": 50, "?limit=-3": 50, "?limit=101": 100, "?limit=ten": 50} {
		t.Run(query, func(t *testing.T) {
			d := &fakeDecider{pending: []trading.Approval{}}
			f := newFixture(t, d)
			rec, _ := f.serve(t, f.api, &bob, request(t, http.MethodGet, "/approvals"+query, "", nil))
			if rec.Code != http.StatusOK || len(d.calls) != 1 || d.calls[0].limit != want {
				t.Fatalf("status %d, calls %+v; want 200 and limit %d", rec.Code, d.calls, want)
			}
		})
	}
}

// TestErrorStatus: the trading service's errors become statuses a client
// can act on, with the service's message (written to be shown); anything
// unexpected is a 500 that does not leak its text.
func TestErrorStatus(t *testing.T) {
	leaky := errors.New("redis: dial tcp 10.0.0.7:6379: connection refused")
	tests := []struct {
		err  error
		want int
	}{
		{trading.ErrNotFound, http.StatusNotFound},
		{fmt.Errorf("looking it up: %w", trading.ErrNotFound), http.StatusNotFound},
		{trading.ErrFourEyes, http.StatusForbidden},
		{trading.ErrAlreadyDecided, http.StatusConflict},
		{trading.ErrExpired, http.StatusConflict},
		{trading.ErrMismatch, http.StatusConflict},
		{fmt.Errorf("%w: decision must be approve or reject", backends.ErrInvalid), http.StatusBadRequest},
		{trading.ErrStateUnavailable, http.StatusServiceUnavailable},
		{trading.ErrNotRecorded, http.StatusServiceUnavailable},
		{trading.ErrTradeUnavailable, http.StatusServiceUnavailable},
		{leaky, http.StatusInternalServerError},
	}
	for _, rt := range routes {
		for _, tt := range tests {
			t.Run(rt.name+"/"+tt.err.Error(), func(t *testing.T) {
				f := newFixture(t, &fakeDecider{err: tt.err})
				rec, _ := f.serve(t, f.api, &bob, routeRequest(t, rt.method, rt.target, rt.body))
				if rec.Code != tt.want {
					t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body)
				}
				msg := errorMessage(t, rec)
				switch {
				case tt.want == http.StatusInternalServerError && strings.Contains(msg, "10.0.0.7"):
					t.Errorf("internal error leaked to the client: %q", msg)
				case tt.want != http.StatusInternalServerError && msg != tt.err.Error():
					t.Errorf("message %q, want the service's %q", msg, tt.err.Error())
				}
			})
		}
	}
}

// TestAuditRecordsEveryRequest: each request, refused ones included, is
// handed to Options.Audit once: its route, the approve class, the approval
// in the path, the outcome by status, and the caller on the context.
func TestAuditRecordsEveryRequest(t *testing.T) {
	tests := []struct {
		name, method, target, body string
		caller                     *principal.Principal
		err                        error
		wantName, wantID           string
		wantStatus                 int
	}{
		{"list", http.MethodGet, "/approvals", "", &bob, nil, "approvals.list", "", http.StatusOK},
		{"get", http.MethodGet, "/approvals/APR-7", "", &bob, nil, "approvals.get", "APR-7", http.StatusOK},
		{"get without the scope", http.MethodGet, "/approvals/APR-7", "", &rita, nil, "approvals.get", "APR-7", http.StatusForbidden},
		{"decide", http.MethodPost, "/approvals/APR-8/decision", `{"decision":"approve"}`, &bob, nil, "approvals.decide", "APR-8", http.StatusOK},
		{"decide unauthenticated", http.MethodPost, "/approvals/APR-8/decision", `{"decision":"approve"}`, nil, nil, "approvals.decide", "APR-8", http.StatusUnauthorized},
		{"decide malformed", http.MethodPost, "/approvals/APR-8/decision", `{`, &bob, nil, "approvals.decide", "APR-8", http.StatusBadRequest},
		{"decide own order", http.MethodPost, "/approvals/APR-8/decision", `{"decision":"approve"}`, &alice, trading.ErrFourEyes, "approvals.decide", "APR-8", http.StatusForbidden},
		{"decide with the store down", http.MethodPost, "/approvals/APR-8/decision", `{"decision":"approve"}`, &bob, trading.ErrStateUnavailable, "approvals.decide", "APR-8", http.StatusServiceUnavailable},
		{"decide failing", http.MethodPost, "/approvals/APR-8/decision", `{"decision":"approve"}`, &bob, errors.New("boom"), "approvals.decide", "APR-8", http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, &fakeDecider{err: tt.err, pending: []trading.Approval{}})
			rec, got := f.serve(t, f.api, tt.caller, routeRequest(t, tt.method, tt.target, tt.body))
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			wantOut, wantErr := wantOutcome(tt.wantStatus)
			op := got.op
			if op.Name != tt.wantName || op.Class != catalog.Approve || op.ApprovalID != tt.wantID || op.Outcome != wantOut || op.Error != wantErr || op.Start.IsZero() {
				t.Errorf("audited %+v; want %s, class %s, approval %q, %s %q, a start time", op, tt.wantName, catalog.Approve, tt.wantID, wantOut, wantErr)
			}
			if (tt.caller != nil) != got.authed || (tt.caller != nil && got.caller.Subject != tt.caller.Subject) {
				t.Errorf("audit context carries caller %+v (present %v), want %v", got.caller, got.authed, tt.caller)
			}
		})
	}
}

// TestNoAudit: without Options.Audit the routes serve as usual.
func TestNoAudit(t *testing.T) {
	d := &fakeDecider{}
	f := newFixture(t, d, func(o *approvals.Options) { o.Audit = nil })
	rec := httptest.NewRecorder()
	f.api.ServeHTTP(rec, decisionRequest(t, "APR-1", `{"decision":"approve"}`).WithContext(principal.With(t.Context(), bob)))
	if rec.Code != http.StatusOK || len(d.calls) != 1 || len(f.audits) != 0 {
		t.Fatalf("status %d, calls %+v, audits %d; want 200, one decision, no audit", rec.Code, d.calls, len(f.audits))
	}
}

// TestDecideThroughService: decisions over HTTP on the real trading
// service. Four eyes and entitlement hold, a decision word is validated, a
// reject needs no reason, and repeating one's own decision is harmless (one
// order) while contradicting a made decision is a conflict.
func TestDecideThroughService(t *testing.T) {
	aliceShouting := alice
	aliceShouting.Subject = " ALICE"
	approve, reject := `{"decision":"approve","reason":"within mandate"}`, `{"decision":"reject"}`
	type step struct {
		caller  principal.Principal
		body    string
		want    int
		wantErr error  // the refusal's message, when it is a sentinel's
		status  string // the outcome's status, on 200
	}
	tests := []struct {
		name   string
		steps  []step
		final  string
		orders int64
	}{
		{"approve executes", []step{{bob, approve, http.StatusOK, nil, backends.StatusFilled}}, backends.StatusFilled, 1},
		{"reject without a reason", []step{{bob, reject, http.StatusOK, nil, trading.StatusRejected}}, trading.StatusRejected, 0},
		{"requester cannot approve own order", []step{{alice, approve, http.StatusForbidden, trading.ErrFourEyes, ""}}, trading.StatusPendingApproval, 0},
		{"requester under another spelling", []step{{aliceShouting, approve, http.StatusForbidden, trading.ErrFourEyes, ""}}, trading.StatusPendingApproval, 0},
		{"requester cannot reject own order", []step{{alice, reject, http.StatusForbidden, trading.ErrFourEyes, ""}}, trading.StatusPendingApproval, 0},
		{"approver not entitled to the account", []step{{carol, approve, http.StatusNotFound, trading.ErrNotFound, ""}}, trading.StatusPendingApproval, 0},
		{"decision must be approve or reject", []step{{bob, `{"decision":"APPROVE"}`, http.StatusBadRequest, nil, ""}}, trading.StatusPendingApproval, 0},
		{"same approval twice", []step{{dave, approve, http.StatusOK, nil, backends.StatusFilled}, {dave, approve, http.StatusOK, nil, backends.StatusFilled}}, backends.StatusFilled, 1},
		{"same rejection twice", []step{{bob, reject, http.StatusOK, nil, trading.StatusRejected}, {bob, reject, http.StatusOK, nil, trading.StatusRejected}}, trading.StatusRejected, 0},
		{"approve after own rejection", []step{{bob, reject, http.StatusOK, nil, trading.StatusRejected}, {bob, approve, http.StatusConflict, trading.ErrAlreadyDecided, ""}}, trading.StatusRejected, 0},
		{"second approver after a decision", []step{{bob, approve, http.StatusOK, nil, backends.StatusFilled}, {dave, approve, http.StatusConflict, trading.ErrAlreadyDecided, ""}}, backends.StatusFilled, 1},
		// A client that names the order it showed decides that order only.
		{"pinned to another order", []step{{bob, `{"decision":"approve","args_digest":"` + strings.Repeat("0", 64) + `"}`, http.StatusConflict, trading.ErrMismatch, ""}}, trading.StatusPendingApproval, 0},
		{"pinned to another requester", []step{{bob, `{"decision":"approve","requester":"mallory"}`, http.StatusConflict, trading.ErrMismatch, ""}}, trading.StatusPendingApproval, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			a := f.pending(t, alice, "ACC-1001", "http-decide-0001")
			for i, s := range tt.steps {
				rec, got := f.serve(t, f.api, &s.caller, decisionRequest(t, a.ID, s.body))
				if rec.Code != s.want {
					t.Fatalf("step %d (%s): status %d, want %d: %s", i, s.caller.Subject, rec.Code, s.want, rec.Body)
				}
				if out, _ := wantOutcome(s.want); got.op.Outcome != out || got.op.ApprovalID != a.ID {
					t.Errorf("step %d audited %+v, want %s for %s", i, got.op, out, a.ID)
				}
				if s.want != http.StatusOK {
					if msg := errorMessage(t, rec); s.wantErr != nil && msg != s.wantErr.Error() {
						t.Errorf("step %d: message %q, want %q", i, msg, s.wantErr.Error())
					}
					continue
				}
				out := decode[trading.Outcome](t, rec)
				if out.Status != s.status || out.Approval == nil || out.Approval.ID != a.ID || out.Approval.DecidedBy != s.caller.Subject {
					t.Errorf("step %d: outcome %+v, want %s decided by %s", i, out, s.status, s.caller.Subject)
				}
			}
			if got := f.status(t, a.ID); got != tt.final {
				t.Errorf("approval ends %s, want %s", got, tt.final)
			}
			if got := f.trade.placed.Load(); got != tt.orders {
				t.Errorf("%d orders sent to the Trade service, want %d", got, tt.orders)
			}
		})
	}
}

// TestListAndGetThroughService: GET /approvals lists the pending approvals
// of the accounts the approver is entitled to as {"approvals": [...]} (an
// empty array, not null, when there are none), and GET /approvals/{id}
// answers the approval's outcome, or the same 404 as an unknown id to an
// approver not entitled to it.
func TestListAndGetThroughService(t *testing.T) {
	f := newFixture(t, nil)
	a1001 := f.pending(t, alice, "ACC-1001", "http-list-0001")
	a1003 := f.pending(t, alice, "ACC-1003", "http-list-0002")
	decided := f.pending(t, alice, "ACC-1001", "http-list-0003")
	if rec, _ := f.serve(t, f.api, &bob, decisionRequest(t, decided.ID, `{"decision":"reject","reason":"no"}`)); rec.Code != http.StatusOK {
		t.Fatalf("rejecting %s: %d %s", decided.ID, rec.Code, rec.Body)
	}

	t.Run("list", func(t *testing.T) {
		tests := []struct {
			caller principal.Principal
			query  string
			want   []string
		}{
			{bob, "", []string{a1001.ID, a1003.ID}},
			{dave, "", []string{a1001.ID}},
			{carol, "", []string{a1003.ID}},
			{erin, "", []string{}},
			{bob, "?limit=1", nil}, // one of them
		}
		for _, tt := range tests {
			rec, _ := f.serve(t, f.api, &tt.caller, request(t, http.MethodGet, "/approvals"+tt.query, "", nil))
			if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Cache-Control") != "no-store" {
				t.Fatalf("%s lists: %d %v %s", tt.caller.Subject, rec.Code, rec.Header(), rec.Body)
			}
			raw := decode[map[string]json.RawMessage](t, rec)
			list := decode[map[string][]trading.Approval](t, rec)["approvals"]
			if len(raw) != 1 || raw["approvals"] == nil || string(raw["approvals"]) == "null" {
				t.Fatalf("%s lists %s, want only an approvals array", tt.caller.Subject, rec.Body)
			}
			var ids []string
			for _, a := range list {
				ids = append(ids, a.ID)
				if a.Status != trading.ApprovalPending || a.Requester != alice.Subject || a.ArgsDigest == "" || a.Order.Ticker != "KO" || a.ExpiresAt.IsZero() {
					t.Errorf("%s lists %+v, want a pending approval of alice's KO order", tt.caller.Subject, a)
				}
			}
			slices.Sort(ids)
			switch {
			case tt.want == nil && len(ids) != 1:
				t.Errorf("%s lists %v with %s, want one", tt.caller.Subject, ids, tt.query)
			case tt.want != nil && !slices.Equal(ids, tt.want):
				t.Errorf("%s lists %v, want %v", tt.caller.Subject, ids, tt.want)
			}
		}
	})

	t.Run("get", func(t *testing.T) {
		tests := []struct {
			caller principal.Principal
			id     string
			want   int
			status string
		}{
			{bob, a1001.ID, http.StatusOK, trading.StatusPendingApproval},
			{carol, a1003.ID, http.StatusOK, trading.StatusPendingApproval},
			{bob, decided.ID, http.StatusOK, trading.StatusRejected},
			{carol, a1001.ID, http.StatusNotFound, ""},
			{carol, "APR-00000000000000000000", http.StatusNotFound, ""},
		}
		for _, tt := range tests {
			rec, got := f.serve(t, f.api, &tt.caller, request(t, http.MethodGet, "/approvals/"+tt.id, "", nil))
			if rec.Code != tt.want || got.op.ApprovalID != tt.id {
				t.Fatalf("%s gets %s: %d %s (audited %+v), want %d", tt.caller.Subject, tt.id, rec.Code, rec.Body, got.op, tt.want)
			}
			if tt.want != http.StatusOK {
				if msg := errorMessage(t, rec); msg != trading.ErrNotFound.Error() {
					t.Errorf("%s gets %s: %q, want the not-found message whether or not it exists", tt.caller.Subject, tt.id, msg)
				}
				continue
			}
			out := decode[trading.Outcome](t, rec)
			if out.Status != tt.status || out.Message == "" || out.Approval == nil || out.Approval.ID != tt.id {
				t.Errorf("%s gets %s: %+v, want %s with its approval and a message", tt.caller.Subject, tt.id, out, tt.status)
			}
		}
	})
}

// downTrade: the Trade service does not answer.
type downTrade struct{ backends.Trade }

func (downTrade) PlaceOrder(context.Context, backends.OrderRequest) (backends.Order, error) {
	return backends.Order{}, fmt.Errorf("%w: connection refused", backends.ErrUnavailable)
}
func (downTrade) GetOrder(context.Context, string) (backends.Order, error) {
	return backends.Order{}, fmt.Errorf("%w: connection refused", backends.ErrUnavailable)
}
func (downTrade) OrderByClientID(context.Context, string) (backends.Order, error) {
	return backends.Order{}, fmt.Errorf("%w: connection refused", backends.ErrUnavailable)
}

// TestDecisionTakenWhileTheTradeServiceIsDown: with the Trade service
// down, an approve event is recorded (the approval is approved; the next
// status read sends the order) and answered 202: a 503 would be redelivered,
// dead-lettered after the retries, and announced to the approvers as a
// decision that did not take effect.
func TestDecisionTakenWhileTheTradeServiceIsDown(t *testing.T) {
	f := newFixture(t, nil)
	// A resting limit buy on the account (approved and working).
	rest := trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: backends.SideBuy, Type: backends.OrderLimit, Quantity: 10, LimitPrice: 1, IdempotencyKey: "resting-0001"}
	pl, err := f.svc.PlaceOrder(t.Context(), alice, rest, trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Approval == nil {
		t.Fatal(pl, err)
	}
	out, err := f.svc.Decide(t.Context(), bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil)
	if err != nil || out.Order == nil || !backends.Working(out.Order.Status) {
		t.Fatalf("resting order: %+v %v", out, err)
	}
	a := f.pending(t, alice, "ACC-1001", "event-order-503")
	f.trade.Trade = downTrade{f.trade.Trade}
	good := approvals.Decision{ApprovalID: a.ID, Decision: trading.DecisionApprove, Approver: "bob", Requester: a.Requester, ArgsDigest: a.ArgsDigest}
	for i := range 3 { // the Broker's redeliveries
		rec, _ := f.serve(t, f.events, nil, deliver(t, newEvent(t, "evt-503", good, eventKey), false))
		if rec.Code != http.StatusAccepted {
			t.Fatalf("delivery %d of a decision that took effect: %d, want 202", i, rec.Code)
		}
	}
	if st := f.status(t, a.ID); st == trading.StatusPendingApproval {
		t.Fatalf("approval still pending after an accepted decision")
	}
}

// TestLostRaceDecisionEventIsRefused: dave approved while the Trade service
// was down (the approval stays approved, its order not sent); bob's reject
// event, which lost, is refused as already decided, not acknowledged as if
// it had taken effect.
func TestLostRaceDecisionEventIsRefused(t *testing.T) {
	f := newFixture(t, nil)
	rest := trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: backends.SideBuy, Type: backends.OrderLimit, Quantity: 10, LimitPrice: 1, IdempotencyKey: "resting-0001"}
	pl, err := f.svc.PlaceOrder(t.Context(), alice, rest, trading.Confirmation{Claimed: true})
	if err != nil || pl.Outcome.Approval == nil {
		t.Fatal(pl, err)
	}
	if _, err := f.svc.Decide(t.Context(), bob, pl.Outcome.Approval.ID, trading.DecisionApprove, "ok", nil); err != nil {
		t.Fatal(err)
	}
	a := f.pending(t, alice, "ACC-1001", "event-race-1")
	f.trade.Trade = downTrade{f.trade.Trade}
	if _, err := f.svc.Decide(t.Context(), dave, a.ID, trading.DecisionApprove, "dave approves", nil); !errors.Is(err, trading.ErrTradeUnavailable) {
		t.Fatalf("dave's approval with the Trade service down: %v", err)
	}
	reject := approvals.Decision{ApprovalID: a.ID, Decision: trading.DecisionReject, Reason: "too big", Approver: "bob", Requester: a.Requester, ArgsDigest: a.ArgsDigest}
	rec, _ := f.serve(t, f.events, nil, deliver(t, newEvent(t, "evt-reject-race", reject, eventKey), false))
	st := f.status(t, a.ID)
	if rec.Code != http.StatusUnprocessableEntity {
		t.Errorf("bob's reject, which lost to dave's approval (approval now %s, decided by dave): %d, want 422 already decided", st, rec.Code)
	}
}

// TestAPIDecisionRecordedWhileTheTradeServiceIsDown: POST
// /approvals/{id}/decision whose approve is recorded but whose order could
// not be sent yet answers 202 with the approval, audited as done, not 503.
func TestAPIDecisionRecordedWhileTheTradeServiceIsDown(t *testing.T) {
	f := newFixture(t, nil)
	a := f.pending(t, alice, "ACC-1001", "rev-api-down-1")
	f.trade.Trade = downTrade{f.trade.Trade}
	rec, au := f.serve(t, f.api, &bob, decisionRequest(t, a.ID, `{"decision":"approve","reason":"ok"}`))
	out, _ := f.svc.Status(t.Context(), bob, a.ID)
	if out.Approval == nil || out.Approval.DecidedBy != "bob" || (out.Approval.Status != trading.ApprovalExecuting && out.Approval.Status != trading.ApprovalApproved) {
		t.Fatalf("setup: %+v", out.Approval)
	}
	if rec.Code >= 500 || au.op.Outcome != outcome.OK {
		t.Errorf("approve recorded (approval %s, decided by bob): HTTP %d %s, audited %q", out.Approval.Status, rec.Code, rec.Body, au.op.Outcome)
	}
}
