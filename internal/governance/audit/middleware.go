package audit

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// ReadClass is the tool class recorded asynchronously; every other known
// class changes state and is recorded synchronously, failing closed.
const ReadClass = "read"

// ResourceRead is the Tool recorded for a resources/read call.
const ResourceRead = "resources/read"

const maxErrorBytes = 512

// note carries the event of the call in progress so that code further in
// (policy middleware, tool handlers) can add to it with Annotate.
type note struct {
	mu   sync.Mutex
	ev   *Event
	done bool
}

type noteKey struct{}

// Annotate lets a handler or middleware add to the audit event of the call
// in ctx: an approval id, idempotency key or order id, or an explicit
// outcome such as OutcomePendingApproval or OutcomeDenied (which the
// middleware keeps instead of the outcome it would infer). It does nothing
// outside an audited call or after the call's event was emitted.
func Annotate(ctx context.Context, f func(*Event)) {
	n, ok := ctx.Value(noteKey{}).(*note)
	if !ok {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.done {
		f(n.ev)
	}
}

// Middleware records every tools/call and resources/read as one event.
// classOf maps a tool name to its class (read, trade, approve; "" for a
// tool the server does not know). Calls of a state-changing class are
// recorded with EmitSync: if the sink does not acknowledge, the agent gets
// an error result saying the call could not be recorded instead of the
// tool's result. Install it outside the authorization and rate-limit
// middleware so that denied and limited calls are recorded too.
func (a *Auditor) Middleware(classOf func(tool string) string) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			var (
				ev  Event
				raw json.RawMessage
			)
			switch p := req.GetParams().(type) {
			case *mcp.CallToolParamsRaw:
				ev.Tool, ev.Class, raw = truncate(p.Name), classOf(p.Name), p.Arguments
			case *mcp.ReadResourceParams:
				ev.Tool, ev.Class = ResourceRead, ReadClass
				raw, _ = json.Marshal(map[string]string{"uri": p.URI})
			default:
				return next(ctx, method, req)
			}
			start := time.Now()
			ev.Time = start.UTC()
			ev.RequestID = telemetry.RequestID(ctx)
			if p, ok := principal.From(ctx); ok {
				ev.Principal, ev.ClientID = p.Subject, p.ClientID
			}
			ev.ArgsDigest, ev.Args = Digest(raw), Redact(raw)

			n := &note{ev: &ev}
			res, err := next(context.WithValue(ctx, noteKey{}, n), method, req)

			n.mu.Lock()
			n.done = true
			n.mu.Unlock()
			ev.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
			outcome, msg := infer(res, err)
			if ev.Outcome == "" {
				ev.Outcome = outcome
			}
			if ev.Error == "" {
				ev.Error = msg
			}

			if ev.Class == ReadClass || ev.Class == "" {
				a.Emit(ctx, ev)
				return res, err
			}
			if serr := a.EmitSync(ctx, ev); serr != nil {
				return unrecorded(ctx), nil
			}
			return res, err
		}
	}
}

// infer derives the outcome and agent-visible error of a call from what the
// inner handlers returned.
func infer(res mcp.Result, err error) (outcome, msg string) {
	if err != nil {
		var werr *jsonrpc.Error
		if errors.As(err, &werr) {
			return OutcomeFailed, truncateTo(werr.Message, maxErrorBytes)
		}
		return OutcomeFailed, truncateTo(err.Error(), maxErrorBytes)
	}
	r, ok := res.(*mcp.CallToolResult)
	switch {
	case !ok || r == nil:
		return OutcomeOK, ""
	case r.IsError:
		for _, c := range r.Content {
			if t, ok := c.(*mcp.TextContent); ok {
				return OutcomeToolError, truncateTo(t.Text, maxErrorBytes)
			}
		}
		return OutcomeToolError, ""
	case len(r.InputRequests) > 0:
		return OutcomeInputRequired, ""
	}
	return OutcomeOK, ""
}

// unrecorded is what an agent sees when a state-changing call could not be
// recorded: the result is withheld, and the agent is told to check state
// rather than assume either way.
func unrecorded(ctx context.Context) *mcp.CallToolResult {
	r := &mcp.CallToolResult{}
	r.SetError(errors.New("this call could not be recorded in the audit trail, so its result is withheld. " +
		"Do not assume it succeeded or failed: check the current state (for example the order's status) before retrying, " +
		"and retry in a few seconds (ref " + telemetry.RequestID(ctx) + ")"))
	return r
}

func truncateTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !validStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
