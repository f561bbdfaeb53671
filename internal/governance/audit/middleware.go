package audit

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry/redact"
)

// ResourceRead is the Tool recorded for a resources/read call.
const ResourceRead = call.ResourceRead

const maxErrorBytes = 512

// Middleware records every governed call (call.Governed: a tools/call, a
// resources/read or resources/list, a completion/complete) as one event,
// built here and only here: from the parsed call (call.From), the
// principal, the steps the call journaled (Journal) and how it ended
// (outcome.Classify). Calls of a state-changing class are recorded with
// EmitSync: if the sink does not acknowledge, the agent gets an error
// result saying the call could not be recorded instead of the tool's
// result. Install it outside the authorization and rate-limit middleware so
// that denied and limited calls are recorded too.
func (a *Auditor) Middleware(cat *catalog.Catalog) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			c := call.From(ctx)
			if c == nil || !c.Governed() {
				return next(ctx, method, req)
			}
			class := catalog.Read
			if method == "tools/call" {
				t, _ := cat.Lookup(c.Tool)
				class = t.Class // "" for a tool the server does not know
			}
			start := time.Now()
			ev := newEvent(ctx, c, class, start)
			tr := &trail{subject: ev.Tool, class: class, clientID: ev.ClientID, requestID: ev.RequestID}
			res, err := next(context.WithValue(ctx, trailKey{}, tr), method, req)

			o, msg := outcome.Classify(res, err)
			steps, ids, pending := tr.close()
			if pending && o == outcome.OK {
				o = outcome.PendingApproval
				outcome.Learn(ctx, o)
			}
			ev.Outcome, ev.Error = o, redact.Text(msg, maxErrorBytes)
			ev.ApprovalID, ev.IdempotencyKey, ev.OrderID = ids.ApprovalID, ids.IdempotencyKey, ids.OrderID
			ev.Steps = steps
			ev.LatencyMS = float64(time.Since(start).Microseconds()) / 1000

			// A read, or a call refused before anything ran (no scope, over
			// its budget: nothing was done, and the refusal says so with
			// its retry-after), is queued; withholding a refusal would tell
			// the agent its call may have taken effect.
			refused := (o == outcome.Denied || o == outcome.RateLimited) && len(steps) == 0
			if !class.StateChanging() && len(steps) == 0 || refused {
				a.Emit(ctx, ev)
				return res, err
			}
			// A read can carry steps that took effect too (get_order_status
			// driving an approved order out): their record must not wait in
			// a queue that may be full.
			if serr := a.EmitSync(ctx, ev); serr != nil {
				if !class.StateChanging() {
					// What the read did has happened; its answer stands.
					a.log.ErrorContext(ctx, "audit: steps that took effect during a read were not recorded", "tool", ev.Tool, "error", serr)
					return res, err
				}
				return nil, unrecorded(ctx)
			}
			return res, err
		}
	}
}

// newEvent is the record of call c as it starts: the one constructor every
// per-call record (MCP middleware, the HTTP scope challenge) goes through,
// so every free-text field is redacted the same way.
func newEvent(ctx context.Context, c *call.Call, class catalog.Class, start time.Time) Event {
	ev := Event{Time: start.UTC(), Tool: redact.Text(c.Subject(), redact.MaxStringBytes), Class: class, RequestID: telemetry.RequestID(ctx)}
	if p, ok := principal.From(ctx); ok {
		ev.Principal, ev.ClientID = p.Subject, p.ClientID
	}
	if c.Method == "resources/read" {
		uri := map[string]any{"uri": c.URI}
		ev.ArgsDigest, ev.Args = digestValue(uri), redact.Value(uri)
		return ev
	}
	v, err := c.Args()
	switch {
	case err != nil:
		ev.ArgsDigest = digestBytes(c.RawArgs)
		ev.Args = map[string]any{"_invalid": redact.Text("arguments were refused: "+err.Error(), redact.MaxStringBytes)}
	case v == nil:
		ev.ArgsDigest = digestValue(map[string]any{})
	default:
		ev.ArgsDigest, ev.Args = digestValue(v), redact.Value(v)
	}
	return ev
}

// Refused records a call refused before MCP ran (the HTTP scope
// challenge), built exactly as the middleware builds its records.
func (a *Auditor) Refused(ctx context.Context, c *call.Call, class catalog.Class, o outcome.Outcome, reason string) {
	ev := newEvent(ctx, c, class, time.Now())
	ev.Outcome, ev.Error = o, redact.Text(reason, maxErrorBytes)
	a.Emit(ctx, ev)
}

// unrecorded is what an agent sees when a state-changing call could not be
// recorded: the result is withheld, and the agent is told to check state
// rather than assume either way. A refusal, delivered as every other
// (outcome.Deliver).
func unrecorded(ctx context.Context) *outcome.Refused {
	r := &mcp.CallToolResult{}
	r.SetError(errors.New("this call could not be recorded in the audit trail, so its result is withheld. " +
		"Do not assume it succeeded or failed: check the current state (for example the order's status) before retrying, " +
		"and retry in a few seconds (ref " + telemetry.RequestID(ctx) + ")"))
	return &outcome.Refused{Outcome: outcome.ToolError, Reason: "not recorded in the audit trail", Result: r}
}

// trail is what one call journaled while it ran: audit's own per-call
// state, reached only through the Journal.
type trail struct {
	subject, clientID, requestID string
	class                        catalog.Class

	mu      sync.Mutex
	done    bool
	ids     Step
	pending bool
	after   []Step // steps that took effect, delivered with the call's record
}

type trailKey struct{}

func trailFrom(ctx context.Context) *trail {
	t, _ := ctx.Value(trailKey{}).(*trail)
	return t
}

// note copies a recorded step's ids onto the call; it reports false once
// the call's record is being built.
func (t *trail) note(s Step, after bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return false
	}
	if s.ApprovalID != "" {
		t.ids.ApprovalID = s.ApprovalID
	}
	if s.IdempotencyKey != "" {
		t.ids.IdempotencyKey = s.IdempotencyKey
	}
	if s.OrderID != "" {
		t.ids.OrderID = s.OrderID
	}
	if s.Action == "approval.requested" {
		t.pending = true
	}
	if after {
		t.after = append(t.after, s)
	}
	return true
}

func (t *trail) close() (after []Step, ids Step, pending bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done = true
	return t.after, t.ids, t.pending
}

// Operation is a governed request that is not an MCP call (a decision
// through the approvals API), as its handler knows it.
type Operation struct {
	Name       string // e.g. approvals.approve
	Class      catalog.Class
	Start      time.Time
	Principal  string // the decider, when the handler learned it
	ApprovalID string
	Outcome    outcome.Outcome
	Error      string
}

// maxIDBytes bounds an id a request names (an approval id from the path):
// real ones are far shorter, and anything may be sent.
const maxIDBytes = 64

// RecordOperation records op asynchronously, built and redacted as a call's
// record is.
func (a *Auditor) RecordOperation(ctx context.Context, op Operation) {
	ev := Event{
		Time: op.Start.UTC(), Tool: redact.Text(op.Name, redact.MaxStringBytes), Class: op.Class, Principal: op.Principal,
		ApprovalID: redact.Text(op.ApprovalID, maxIDBytes), RequestID: telemetry.RequestID(ctx), Outcome: op.Outcome, Error: redact.Text(op.Error, maxErrorBytes),
		LatencyMS: float64(time.Since(op.Start).Microseconds()) / 1000,
	}
	if p, ok := principal.From(ctx); ok {
		ev.Principal, ev.ClientID = p.Subject, p.ClientID
	}
	a.Emit(ctx, ev)
}
