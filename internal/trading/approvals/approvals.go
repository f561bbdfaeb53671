// Package approvals is how humans decide pending orders: an authenticated
// HTTP API for approval tools and people, and a CloudEvents receiver for an
// approval workflow (a Knative Trigger delivering approval.decided events).
// Both end in trading.Service.Decide, which enforces four eyes and executes
// an approved order exactly once.
package approvals

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/httpserver"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry/redact"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
)

// EventType is the CloudEvents type of an approval decision.
const EventType = "com.portfolio-mcp.approval.decided"

// SignatureExtension carries the event's HMAC-SHA256 signature (hex).
const SignatureExtension = "signature"

// Decider is the part of trading.Service the API drives.
type Decider interface {
	Decide(ctx context.Context, approver principal.Principal, id, decision, reason string, expect *trading.Expect) (trading.Outcome, error)
	Status(ctx context.Context, p principal.Principal, id string) (trading.Outcome, error)
	ListPending(ctx context.Context, p principal.Principal, limit int) ([]trading.Approval, error)
}

// Options configure the handlers.
type Options struct {
	Decider Decider
	// ApproveScope is the scope a principal needs to decide (trade:approve).
	ApproveScope string
	// EventSources are the CloudEvents sources trusted to send decisions.
	EventSources []string
	// EventKey returns the HMAC keys for event signatures, one per line
	// (two while a rotation is under way: eventKeys).
	EventKey func() ([]byte, error)
	// EventMaxAge refuses events whose time is older (replays of old
	// decisions); the approval TTL is the natural bound.
	EventMaxAge time.Duration
	// ApproverClients, if set, are the only OAuth clients (client_id) whose
	// tokens may decide approvals: the firm's approval tool, not agents.
	ApproverClients []string
	// Halt is the kill switch and CancelAll its cancel-all action (nil: no
	// /halts routes); HaltScope is the scope they need (trade:halt).
	Halt      *halt.Switch
	CancelAll func(ctx context.Context, by principal.Principal, scope, target, reason string) (trading.CancelReport, error)
	HaltScope string
	// Store remembers applied event ids, so a redelivery is a no-op.
	Store store.Store
	// Audit records every request to the API and every event received,
	// refused ones included (nil: none). Applied decisions are also
	// journaled synchronously by the trading service before they act.
	Audit func(ctx context.Context, op audit.Operation)
	// Limit takes one request from the caller's approve budget, the bucket
	// the MCP approval tools draw on (nil: no limit); refused, it says when
	// the caller may retry and why. Engaging a halt and cancelling open
	// orders are never limited: an emergency does not wait for a budget.
	Limit  func(ctx context.Context, subject string) (retryAfter time.Duration, reason string, ok bool)
	Logger *slog.Logger
	Now    func() time.Time
}

// API serves the routes.
type API struct{ o Options }

// New returns the API.
func New(o Options) *API {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &API{o: o}
}

// Routes are the authenticated HTTP API; mount them behind the bearer-token
// middleware.
func (a *API) Routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /approvals", a.audited("approvals.list", http.HandlerFunc(a.list)))
	mux.Handle("GET /approvals/{id}", a.audited("approvals.get", http.HandlerFunc(a.get)))
	mux.Handle("POST /approvals/{id}/decision", a.audited("approvals.decide", http.HandlerFunc(a.decide)))
	if a.o.Halt != nil {
		mux.Handle("GET /halts", a.audited("halts.list", http.HandlerFunc(a.halts)))
		mux.Handle("POST /halts", a.audited("halts.engage", http.HandlerFunc(a.engage)))
		mux.Handle("POST /halts/release", a.audited("halts.release", http.HandlerFunc(a.release)))
		mux.Handle("POST /halts/cancel-open", a.audited("halts.cancel_open", http.HandlerFunc(a.cancelOpen)))
	}
	return mux
}

// auditNote is what a handler learns that the audit record needs.
type auditNote struct {
	approver, approvalID string
}

type noteKey struct{}

// audited records one audit event per request: who, which approval, and
// the outcome by status (ok, denied for 4xx, failed for 5xx).
func (a *API) audited(tool string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.o.Audit == nil {
			next.ServeHTTP(w, r)
			return
		}
		start := a.o.Now()
		n := &auditNote{approvalID: r.PathValue("id")}
		rec := httpserver.NewStatusRecorder(w)
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), noteKey{}, n)))
		op := audit.Operation{Name: tool, Class: catalog.Approve, Start: start, Principal: n.approver, ApprovalID: n.approvalID, Outcome: outcome.OK}
		switch {
		case rec.Status == http.StatusTooManyRequests:
			op.Outcome, op.Error = outcome.RateLimited, http.StatusText(rec.Status)
		case rec.Status >= 500:
			op.Outcome, op.Error = outcome.Failed, http.StatusText(rec.Status)
		case rec.Status >= 400:
			op.Outcome, op.Error = outcome.Denied, http.StatusText(rec.Status)
		}
		a.o.Audit(r.Context(), op)
	})
}

// within takes one request of p, admitted, from its approve budget, and
// answers 429 with Retry-After beyond it. Only an admitted caller spends
// the budget: a token without the scope must not use up its subject's.
func (a *API) within(w http.ResponseWriter, r *http.Request, p principal.Principal) bool {
	if a.o.Limit == nil {
		return true
	}
	after, reason, ok := a.o.Limit(r.Context(), p.Subject)
	if !ok {
		note(r.Context(), func(n *auditNote) { n.approver = p.Subject })
		w.Header().Set("Retry-After", strconv.Itoa(max(int(math.Ceil(after.Seconds())), 1)))
		httpserver.WriteError(w, http.StatusTooManyRequests, reason)
	}
	return ok
}

// eventKeys reads the approval-event-key secret (EventKeys).
func eventKeys(read func() ([]byte, error)) ([][]byte, error) {
	raw, err := read()
	if err != nil {
		return nil, err
	}
	return EventKeys(raw)
}

// EventKeys parses the approval-event-key secret: one key per line, each of
// at least 32 bytes, any of which verifies an event. A rotation adds the
// new key on a line of its own, switches the approval workflow to it, and
// then removes the old one: pods that have the file before or after the
// switch verify both.
func EventKeys(raw []byte) ([][]byte, error) {
	var keys [][]byte
	for line := range bytes.Lines(raw) {
		if k := bytes.TrimRight(line, "\r\n"); len(k) > 0 {
			if len(k) < 32 {
				return nil, fmt.Errorf("a key of %d bytes: each line must hold at least 32", len(k))
			}
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no key")
	}
	return keys, nil
}

// logged is text an unauthenticated event carries, as a log line may hold
// it: cut, and without anything shaped like a credential.
func logged(s string) string { return redact.Text(s, 128) }

func note(ctx context.Context, f func(*auditNote)) {
	if n, ok := ctx.Value(noteKey{}).(*auditNote); ok {
		f(n)
	}
}

// Events receives approval.decided CloudEvents (binary or structured mode).
// It authenticates the event itself (trusted source + HMAC signature), not
// the HTTP caller: the Broker delivers on the workflow's behalf.
func (a *API) Events() http.Handler {
	return a.audited("approvals.event", http.HandlerFunc(a.event))
}

func (a *API) approver(w http.ResponseWriter, r *http.Request) (principal.Principal, bool) {
	p, ok := caller(w, r)
	return p, ok && a.admit(w, p, a.o.ApproveScope, "approvals are decided through the firm's approval tool, not this client") && a.within(w, r, p)
}

// caller is the request's principal; without one it answers 401.
func caller(w http.ResponseWriter, r *http.Request) (principal.Principal, bool) {
	p, ok := principal.From(r.Context())
	if !ok {
		httpserver.WriteError(w, http.StatusUnauthorized, "authentication required")
	}
	return p, ok
}

// admit answers 403 for a caller without scope, or from a client that is
// not one of the firm's tools (ApproverClients), saying so with notTool.
// It reports whether the caller may go on.
func (a *API) admit(w http.ResponseWriter, p principal.Principal, scope, notTool string) bool {
	switch {
	case !p.HasScope(scope):
		w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope", scope="`+scope+`"`)
		httpserver.WriteError(w, http.StatusForbidden, "the "+scope+" scope is required")
	case len(a.o.ApproverClients) > 0 && !slices.Contains(a.o.ApproverClients, p.ClientID):
		httpserver.WriteError(w, http.StatusForbidden, notTool)
	default:
		return true
	}
	return false
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	p, ok := a.approver(w, r)
	if !ok {
		return
	}
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	switch {
	case err != nil || limit < 1:
		limit = 50
	case limit > 100:
		limit = 100
	}
	as, err := a.o.Decider.ListPending(r.Context(), p, limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if as == nil {
		as = []trading.Approval{}
	}
	httpserver.WriteJSON(w, http.StatusOK, map[string]any{"approvals": as})
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	p, ok := a.approver(w, r)
	if !ok {
		return
	}
	out, err := a.o.Decider.Status(r.Context(), p, r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, out)
}

// Decision is the body of POST /approvals/{id}/decision and the data of an
// approval.decided event. An event also names the approver, and pins the
// exact order it decides (the approval's args_digest and requester), so it
// cannot be replayed against another approval.
type Decision struct {
	ApprovalID string `json:"approval_id,omitempty"`
	Decision   string `json:"decision"` // approve or reject
	Approver   string `json:"approver,omitempty"`
	Requester  string `json:"requester,omitempty"`
	ArgsDigest string `json:"args_digest,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

func (a *API) decide(w http.ResponseWriter, r *http.Request) {
	p, ok := a.approver(w, r)
	if !ok {
		return
	}
	var d Decision
	if !readJSON(w, r, &d, `{"decision": "approve"|"reject", "reason": "..."}`) {
		return
	}
	switch {
	case d.ApprovalID != "" && d.ApprovalID != r.PathValue("id"):
		httpserver.WriteError(w, http.StatusBadRequest, "approval_id in the body names another approval than the path")
		return
	}
	// A client that names the order it showed (as the console does) gets
	// its decision applied to that order only.
	var expect *trading.Expect
	if d.Requester != "" || d.ArgsDigest != "" {
		expect = &trading.Expect{ArgsDigest: d.ArgsDigest, Requester: d.Requester}
	}
	out, err := a.o.Decider.Decide(r.Context(), p, r.PathValue("id"), d.Decision, d.Reason, expect)
	switch {
	case errors.Is(err, trading.ErrSendPending):
		// Recorded; the next read of the approval's status sends the order.
		a.o.Logger.WarnContext(r.Context(), "approval decided; its order is not sent yet", "approval_id", r.PathValue("id"), "error", err)
		httpserver.WriteJSON(w, http.StatusAccepted, out)
	case err != nil:
		a.fail(w, r, err)
	default:
		httpserver.WriteJSON(w, http.StatusOK, out)
	}
}

func (a *API) event(w http.ResponseWriter, r *http.Request) {
	e, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil || e.Validate() != nil {
		httpserver.WriteError(w, http.StatusBadRequest, "not a valid CloudEvent")
		return
	}
	if e.Type() != EventType {
		httpserver.WriteError(w, http.StatusBadRequest, "unexpected event type "+strconv.Quote(e.Type()))
		return
	}
	if !slices.Contains(a.o.EventSources, e.Source()) {
		a.o.Logger.WarnContext(r.Context(), "approval event from untrusted source", "source", logged(e.Source()), "id", logged(e.ID()))
		httpserver.WriteError(w, http.StatusForbidden, "untrusted event source")
		return
	}
	sig, _ := e.Extensions()[SignatureExtension].(string)
	keys, err := eventKeys(a.o.EventKey)
	if err != nil {
		a.o.Logger.ErrorContext(r.Context(), "approval event key unavailable", "error", err)
		httpserver.WriteError(w, http.StatusServiceUnavailable, "cannot verify events now")
		return
	}
	if e.Time().IsZero() || !slices.ContainsFunc(keys, func(key []byte) bool {
		return hmac.Equal([]byte(sig), []byte(Sign(key, e.ID(), e.Source(), e.Type(), e.Time(), e.Data())))
	}) {
		a.o.Logger.WarnContext(r.Context(), "approval event with a bad signature", "source", logged(e.Source()), "id", logged(e.ID()))
		httpserver.WriteError(w, http.StatusUnauthorized, "bad event signature")
		return
	}
	now := a.o.Now()
	if age := now.Sub(e.Time()); age > a.o.EventMaxAge || age < -5*time.Minute {
		a.o.Logger.WarnContext(r.Context(), "stale approval event refused", "source", logged(e.Source()), "id", logged(e.ID()), "time", e.Time())
		httpserver.WriteError(w, http.StatusUnprocessableEntity, "event time is outside the accepted window")
		return
	}
	var d Decision
	err = json.Unmarshal(e.Data(), &d)
	note(r.Context(), func(n *auditNote) { n.approver, n.approvalID = d.Approver, d.ApprovalID })
	if err != nil || d.ApprovalID == "" || d.Approver == "" || d.Requester == "" || d.ArgsDigest == "" {
		httpserver.WriteError(w, http.StatusBadRequest, "data must be JSON with approval_id, decision, approver, requester and args_digest")
		return
	}
	seenSum := sha256.Sum256([]byte(e.Source() + "\x00" + e.ID()))
	seen := "approval-event:" + hex.EncodeToString(seenSum[:])
	if mark, _, err := a.o.Store.Get(r.Context(), seen); err == nil {
		if string(mark) == refusedEvent {
			httpserver.WriteError(w, http.StatusUnprocessableEntity, "this event was refused when first delivered; send a new decision")
			return
		}
		w.WriteHeader(http.StatusAccepted) // a redelivery of an applied event
		return
	}
	// The signed workflow is the authority on who approved: the approver
	// is entitled through it, and four eyes still compares subjects.
	approver := principal.Principal{Subject: d.Approver, Scopes: []string{a.o.ApproveScope}, Accounts: []string{principal.AllAccounts}}
	expect := &trading.Expect{ArgsDigest: d.ArgsDigest, Requester: d.Requester}
	if _, err := a.o.Decider.Decide(r.Context(), approver, d.ApprovalID, d.Decision, d.Reason, expect); err != nil {
		if errors.Is(err, trading.ErrSendPending) {
			// The decision is recorded; only the order's execution failed
			// (the Trade service down), and the next read of its status
			// (the agent's, the console's) drives it again. The event did
			// its part: a redelivery would change nothing, and one
			// dead-lettered after the retries would tell the approvers,
			// falsely, that their decision did not take effect.
			a.o.Logger.WarnContext(r.Context(), "approval decided; its order is not sent yet", "approval_id", d.ApprovalID, "error", err)
			a.remember(r, seen, nil)
			w.WriteHeader(http.StatusAccepted)
			return
		}
		if !refusedForGood(err) {
			a.fail(w, r, err)
			return
		}
		// Final, and answered so: a Broker retries a 409, and a decision
		// refused while a halt holds must not go through on a redelivery
		// after its release (nor a replay of the signed event).
		a.remember(r, seen, []byte(refusedEvent))
		httpserver.WriteError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	a.remember(r, seen, nil)
	w.WriteHeader(http.StatusAccepted)
}

// refusedEvent marks a decision event refused for good; an applied one is
// marked by an empty value.
const refusedEvent = "refused"

// refusedForGood reports whether the trading service refused a decision
// in a way no redelivery of the same event can change.
func refusedForGood(err error) bool {
	for _, final := range []error{trading.ErrAlreadyDecided, trading.ErrExpired, trading.ErrMismatch, trading.ErrHalted} {
		if errors.Is(err, final) {
			return true
		}
	}
	return false
}

// remember records what became of the event at key (seen), for as long as
// the event itself could be accepted.
func (a *API) remember(r *http.Request, seen string, mark []byte) {
	if err := a.o.Store.Create(r.Context(), seen, mark, a.o.EventMaxAge+5*time.Minute); err != nil && !errors.Is(err, store.ErrConflict) {
		a.o.Logger.WarnContext(r.Context(), "could not remember the event id", "error", err)
	}
}

// Sign is the signature of an approval event: hex HMAC-SHA256 over its id,
// source, type, time (Unix seconds) and data, with the approval-event-key
// secret.
func Sign(key []byte, id, source, typ string, t time.Time, data []byte) string {
	h := hmac.New(sha256.New, key)
	for _, part := range [][]byte{[]byte("portfolio-mcp/approval-event/v2"), []byte(id), []byte(source), []byte(typ), []byte(strconv.FormatInt(t.Unix(), 10)), data} {
		h.Write(part)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// readJSON decodes the request body, one JSON object of known fields, into
// v; on failure it has answered, with shape in the message.
func readJSON(w http.ResponseWriter, r *http.Request, v any, shape string) bool {
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		httpserver.WriteError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return false
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(new(json.RawMessage)) != io.EOF {
		err = errors.New("more than one JSON value")
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		httpserver.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", tooLarge.Limit))
		return false
	case err != nil:
		httpserver.WriteError(w, http.StatusBadRequest, "body must be one JSON object: "+shape)
		return false
	}
	return true
}

// fail maps trading errors to statuses for the API. The events route
// answers final refusals with 422 first (refusedForGood): a Broker retries
// a 409 as it does a 503.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, trading.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, trading.ErrFourEyes):
		status = http.StatusForbidden
	case errors.Is(err, trading.ErrAlreadyDecided), errors.Is(err, trading.ErrExpired), errors.Is(err, trading.ErrMismatch), errors.Is(err, trading.ErrHalted):
		status = http.StatusConflict
	case errors.Is(err, backends.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, trading.ErrStateUnavailable), errors.Is(err, trading.ErrNotRecorded), errors.Is(err, trading.ErrTradeUnavailable):
		status = http.StatusServiceUnavailable
	}
	msg := err.Error()
	if status == http.StatusInternalServerError {
		a.o.Logger.ErrorContext(r.Context(), "approval API failure", "error", err)
		msg = "internal error"
	}
	httpserver.WriteError(w, status, msg)
}
