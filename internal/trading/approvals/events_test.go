package approvals_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/approvals"
)

// decision is a well-formed decision event's data for the fake Decider.
var decision = approvals.Decision{
	ApprovalID: "APR-7", Decision: trading.DecisionApprove, Approver: "bob", Requester: "alice",
	ArgsDigest: strings.Repeat("ab", 32), Reason: "approved in the workflow",
}

// newEvent is an approval.decided event from the trusted source at t0,
// signed with key.
func newEvent(t *testing.T, id string, d any, key []byte) cloudevents.Event {
	t.Helper()
	e := cloudevents.NewEvent()
	e.SetID(id)
	e.SetSource(trustedSource)
	e.SetType(approvals.EventType)
	e.SetTime(t0)
	if err := e.SetData(cloudevents.ApplicationJSON, d); err != nil {
		t.Fatal(err)
	}
	sign(&e, key)
	return e
}

func sign(e *cloudevents.Event, key []byte) {
	e.SetExtension(approvals.SignatureExtension, approvals.Sign(key, e.ID(), e.Source(), e.Type(), e.Time(), e.Data()))
}

// deliver is e as a Broker POSTs it: in binary mode (ce-* headers), or in
// structured mode (one application/cloudevents+json body).
func deliver(t *testing.T, e cloudevents.Event, structured bool) *http.Request {
	t.Helper()
	ctx := binding.WithForceBinary(t.Context())
	if structured {
		ctx = binding.WithForceStructured(t.Context())
	}
	req := request(t, http.MethodPost, "/events/approvals", "", nil)
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&e), req); err != nil {
		t.Fatal(err)
	}
	return req
}

// TestEventAuthentication: an event decides only when it is a CloudEvent of
// the decision type from a trusted source, signed with one of the keys (one
// per line, each of at least 32 bytes: two while a rotation is under way)
// over its id, source, type, time and data, no older than
// EventMaxAge nor more than five minutes ahead, and its data names the
// approval, approver, requester and order. Each one is audited, refusals
// included.
func TestEventAuthentication(t *testing.T) {
	otherKey := []byte("fedcba9876543210fedcba9876543210")
	shortKey := eventKey[:31]
	resigned := func(edit func(e *cloudevents.Event)) func(e *cloudevents.Event) {
		return func(e *cloudevents.Event) { edit(e); sign(e, eventKey) }
	}
	at := func(d time.Duration) func(e *cloudevents.Event) {
		return resigned(func(e *cloudevents.Event) { e.SetTime(t0.Add(d)) })
	}
	withData := func(data any) func(e *cloudevents.Event) {
		return resigned(func(e *cloudevents.Event) { e.SetData(cloudevents.ApplicationJSON, data) })
	}
	without := func(field string) func(e *cloudevents.Event) {
		var m map[string]any
		b, _ := json.Marshal(decision)
		json.Unmarshal(b, &m)
		delete(m, field)
		return withData(m)
	}
	tests := []struct {
		name       string
		opts       func(o *approvals.Options)
		edit       func(e *cloudevents.Event) // after signing
		structured bool
		plain      bool // not a CloudEvent: the decision POSTed as JSON
		want       int
	}{
		{name: "binary mode", want: http.StatusAccepted},
		{name: "structured mode", structured: true, want: http.StatusAccepted},
		{name: "EventMaxAge old", edit: at(-eventMaxAge), want: http.StatusAccepted},
		{name: "older than EventMaxAge", edit: at(-eventMaxAge - time.Second), want: http.StatusUnprocessableEntity},
		{name: "five minutes ahead", edit: at(5 * time.Minute), want: http.StatusAccepted},
		{name: "further ahead", edit: at(5*time.Minute + time.Second), want: http.StatusUnprocessableEntity},
		{name: "not a CloudEvent", plain: true, want: http.StatusBadRequest},
		{name: "another event type", edit: resigned(func(e *cloudevents.Event) { e.SetType("com.portfolio-mcp.order.placed") }), want: http.StatusBadRequest},
		{name: "untrusted source", edit: resigned(func(e *cloudevents.Event) { e.SetSource("urn:evil") }), want: http.StatusForbidden},
		{name: "second trusted source", opts: func(o *approvals.Options) { o.EventSources = append(o.EventSources, "urn:test:other") },
			edit: resigned(func(e *cloudevents.Event) { e.SetSource("urn:test:other") }), want: http.StatusAccepted},
		{name: "unsigned", edit: func(e *cloudevents.Event) { e.SetExtension(approvals.SignatureExtension, nil) }, want: http.StatusUnauthorized},
		{name: "garbage signature", edit: func(e *cloudevents.Event) { e.SetExtension(approvals.SignatureExtension, strings.Repeat("0", 64)) }, want: http.StatusUnauthorized},
		{name: "signed with another key", edit: func(e *cloudevents.Event) { sign(e, otherKey) }, want: http.StatusUnauthorized},
		{name: "data changed after signing", edit: func(e *cloudevents.Event) {
			d := decision
			d.ApprovalID = "APR-8"
			e.SetData(cloudevents.ApplicationJSON, d)
		}, want: http.StatusUnauthorized},
		{name: "time changed after signing", edit: func(e *cloudevents.Event) { e.SetTime(t0.Add(-time.Minute)) }, want: http.StatusUnauthorized},
		{name: "id changed after signing", edit: func(e *cloudevents.Event) { e.SetID("evt-2") }, want: http.StatusUnauthorized},
		{name: "no time", edit: resigned(func(e *cloudevents.Event) { e.SetTime(time.Time{}) }), want: http.StatusUnauthorized},
		{name: "key unavailable", opts: func(o *approvals.Options) {
			o.EventKey = func() ([]byte, error) { return nil, errors.New("secret not mounted") }
		}, want: http.StatusServiceUnavailable},
		{name: "key shorter than 32 bytes", opts: func(o *approvals.Options) { o.EventKey = func() ([]byte, error) { return shortKey, nil } },
			edit: func(e *cloudevents.Event) { sign(e, shortKey) }, want: http.StatusServiceUnavailable},
		{name: "rotation: signed with the new key", opts: func(o *approvals.Options) {
			o.EventKey = func() ([]byte, error) {
				return append(append([]byte{}, eventKey...), "\n"+string(otherKey)+"\n"...), nil
			}
		}, edit: func(e *cloudevents.Event) { sign(e, otherKey) }, want: http.StatusAccepted},
		{name: "rotation: signed with the old key", opts: func(o *approvals.Options) {
			o.EventKey = func() ([]byte, error) { return []byte(string(otherKey) + "\r\n" + string(eventKey)), nil }
		}, want: http.StatusAccepted},
		{name: "rotation: signed with neither", opts: func(o *approvals.Options) {
			o.EventKey = func() ([]byte, error) { return []byte(string(otherKey) + "\n" + strings.Repeat("z", 32)), nil }
		}, want: http.StatusUnauthorized},
		{name: "rotation: one line shorter than 32 bytes", opts: func(o *approvals.Options) {
			o.EventKey = func() ([]byte, error) { return []byte(string(eventKey) + "\n" + string(shortKey)), nil }
		}, want: http.StatusServiceUnavailable},
		{name: "data not JSON", edit: resigned(func(e *cloudevents.Event) { e.SetData("text/plain", []byte("approve APR-7")) }), want: http.StatusBadRequest},
		{name: "no approval id", edit: without("approval_id"), want: http.StatusBadRequest},
		{name: "no approver", edit: without("approver"), want: http.StatusBadRequest},
		{name: "no requester", edit: without("requester"), want: http.StatusBadRequest},
		{name: "no order digest", edit: without("args_digest"), want: http.StatusBadRequest},
		{name: "unknown data field", edit: withData(map[string]any{"approval_id": "APR-7", "decision": "approve", "approver": "bob", "requester": "alice",
			"args_digest": decision.ArgsDigest, "reason": "approved in the workflow", "workflow_run": 12}), want: http.StatusAccepted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &fakeDecider{}
			var opts []func(*approvals.Options)
			if tt.opts != nil {
				opts = append(opts, tt.opts)
			}
			f := newFixture(t, d, opts...)
			e := newEvent(t, "evt-1", decision, eventKey)
			if tt.edit != nil {
				tt.edit(&e)
			}
			req := deliver(t, e, tt.structured)
			if tt.plain {
				body, _ := json.Marshal(decision)
				req = request(t, http.MethodPost, "/events/approvals", "application/json", strings.NewReader(string(body)))
			}
			rec, got := f.serve(t, f.events, nil, req)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
			wantOut, wantErr := wantOutcome(tt.want)
			if got.op.Name != "approvals.event" || got.op.Class != catalog.Approve || got.op.Outcome != wantOut || got.op.Error != wantErr {
				t.Errorf("audited %+v, want approvals.event %s %q", got.op, wantOut, wantErr)
			}
			if tt.want != http.StatusAccepted {
				errorMessage(t, rec)
				if len(d.calls) != 0 {
					t.Errorf("refused event reached the trading service: %+v", d.calls)
				}
				return
			}
			// The signed workflow is the authority: its approver decides, as
			// an approver of every account, pinned to the order it names.
			want := deciderCall{method: "Decide", id: decision.ApprovalID, decision: decision.Decision, reason: decision.Reason,
				p:      principal.Principal{Subject: decision.Approver, Scopes: []string{approveScope}, Accounts: []string{principal.AllAccounts}},
				expect: &trading.Expect{ArgsDigest: decision.ArgsDigest, Requester: decision.Requester}}
			if len(d.calls) != 1 || !reflect.DeepEqual(d.calls[0], want) {
				t.Errorf("trading service calls %+v, want [%+v]", d.calls, want)
			}
			if got.op.Principal != decision.Approver || got.op.ApprovalID != decision.ApprovalID {
				t.Errorf("audited %+v, want approver %s and approval %s", got.op, decision.Approver, decision.ApprovalID)
			}
		})
	}
}

// TestEventRedelivery: a Broker redelivering an applied event (same source
// and id) gets 202 without deciding again; an event whose decision failed
// for now (503) is not remembered, so its redelivery retries; one refused
// for good (a halt, a mismatch, an expiry, a decision already made) is
// answered 422, which a Broker does not retry, and stays refused however
// often it comes back, even once the halt is released; the same id from
// another source is another event.
func TestEventRedelivery(t *testing.T) {
	d := &fakeDecider{}
	f := newFixture(t, d, func(o *approvals.Options) { o.EventSources = append(o.EventSources, "urn:test:other") })
	e := newEvent(t, "evt-1", decision, eventKey)
	other := e.Clone()
	other.SetSource("urn:test:other")
	sign(&other, eventKey)
	halted := newEvent(t, "evt-halted", decision, eventKey)
	steps := []struct {
		name  string
		err   error
		e     cloudevents.Event
		want  int
		calls int
	}{
		{"Trade service down", trading.ErrTradeUnavailable, e, http.StatusServiceUnavailable, 1},
		{"applied", nil, e, http.StatusAccepted, 2},
		{"redelivered", nil, e, http.StatusAccepted, 2},
		{"redelivered in structured mode", nil, e, http.StatusAccepted, 2},
		{"same id from another source", nil, other, http.StatusAccepted, 3},
		{"that one redelivered", trading.ErrAlreadyDecided, other, http.StatusAccepted, 3},
		{"refused while a halt holds", trading.ErrHalted, halted, http.StatusUnprocessableEntity, 4},
		{"redelivered after the halt's release", nil, halted, http.StatusUnprocessableEntity, 4},
	}
	for i, s := range steps {
		d.err = s.err
		rec, got := f.serve(t, f.events, nil, deliver(t, s.e, i%2 == 0))
		if rec.Code != s.want || len(d.calls) != s.calls {
			t.Fatalf("%s: status %d after %d decisions, want %d after %d: %s", s.name, rec.Code, len(d.calls), s.want, s.calls, rec.Body)
		}
		if out, _ := wantOutcome(s.want); got.op.Outcome != out || got.op.ApprovalID != decision.ApprovalID || got.op.Principal != decision.Approver {
			t.Errorf("%s: audited %+v, want %s by %s", s.name, got.op, out, decision.Approver)
		}
	}
}

// TestEventsThroughService: signed events on the real trading service. The
// workflow's approver is still held to four eyes, the event must pin the
// approval's own order and requester, and the order executes once however
// often the event is delivered.
func TestEventsThroughService(t *testing.T) {
	f := newFixture(t, nil)
	a := f.pending(t, alice, "ACC-1001", "event-order-0001")
	good := approvals.Decision{ApprovalID: a.ID, Decision: trading.DecisionApprove, Approver: "bob", Requester: a.Requester, ArgsDigest: a.ArgsDigest}
	with := func(edit func(d *approvals.Decision)) approvals.Decision { d := good; edit(&d); return d }
	steps := []struct {
		name, id string
		d        approvals.Decision
		want     int
		status   string
	}{
		{"requester approves own order", "evt-1", with(func(d *approvals.Decision) { d.Approver = "Alice" }), http.StatusForbidden, trading.StatusPendingApproval},
		{"another order's digest", "evt-2", with(func(d *approvals.Decision) { d.ArgsDigest = strings.Repeat("0", 64) }), http.StatusUnprocessableEntity, trading.StatusPendingApproval},
		{"another requester", "evt-3", with(func(d *approvals.Decision) { d.Requester = "mallory" }), http.StatusUnprocessableEntity, trading.StatusPendingApproval},
		{"unknown approval", "evt-4", with(func(d *approvals.Decision) { d.ApprovalID = "APR-00000000000000000000" }), http.StatusNotFound, trading.StatusPendingApproval},
		{"not a decision", "evt-5", with(func(d *approvals.Decision) { d.Decision = "defer" }), http.StatusBadRequest, trading.StatusPendingApproval},
		{"approved", "evt-6", good, http.StatusAccepted, backends.StatusFilled},
		{"redelivered", "evt-6", good, http.StatusAccepted, backends.StatusFilled},
		{"approved again under a new id", "evt-7", good, http.StatusAccepted, backends.StatusFilled},
		{"rejected afterwards", "evt-8", with(func(d *approvals.Decision) { d.Decision = trading.DecisionReject }), http.StatusUnprocessableEntity, backends.StatusFilled},
	}
	for _, s := range steps {
		rec, _ := f.serve(t, f.events, nil, deliver(t, newEvent(t, s.id, s.d, eventKey), false))
		if rec.Code != s.want {
			t.Fatalf("%s: status %d, want %d: %s", s.name, rec.Code, s.want, rec.Body)
		}
		if got := f.status(t, a.ID); got != s.status {
			t.Fatalf("%s: approval is %s, want %s", s.name, got, s.status)
		}
	}
	if n := f.trade.placed.Load(); n != 1 {
		t.Errorf("%d orders sent to the Trade service, want 1", n)
	}
}
