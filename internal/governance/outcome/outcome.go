// Package outcome is the one vocabulary for how a call ended, shared by the
// audit trail and the metrics, and the way a governance step refuses a call:
// it returns a *Refused error carrying both the outcome to record and what
// the agent sees, so nothing downstream edits anyone's record in flight.
package outcome

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Outcome is how one call ended.
type Outcome string

// Outcomes, as recorded in audit events and labelled in metrics.
const (
	OK              Outcome = "ok"               // the tool returned a result
	ToolError       Outcome = "tool_error"       // the tool returned isError (bad input, unknown account, backend down)
	Denied          Outcome = "denied"           // missing scope or entitlement
	RateLimited     Outcome = "rate_limited"     // over the principal's rate limit
	Failed          Outcome = "failed"           // a JSON-RPC error: unknown tool, internal error
	InputRequired   Outcome = "input_required"   // the call asked the client for input (multi round-trip)
	PendingApproval Outcome = "pending_approval" // the call requested a human approval
	Recorded        Outcome = "recorded"         // a journaled step, before it takes effect
)

// Refused is a call a governance step refused: Outcome and Reason are for
// the record; Result (a tool result the model reads) or Err (a JSON-RPC
// error) is what the agent sees. Exactly one of Result and Err is set.
type Refused struct {
	Outcome Outcome
	Reason  string
	Result  *mcp.CallToolResult
	Err     *jsonrpc.Error
}

func (r *Refused) Error() string { return string(r.Outcome) + ": " + r.Reason }

// Learned carries what a step inside the chain learned of a call's outcome
// that its result does not show (that it requested an approval: the audit
// trail sees the journal's step) out to the steps outside it, so the
// metrics, the span and the log line say what the audit record says.
type Learned struct{ o Outcome }

type learnedKey struct{}

// WithLearned gives ctx a place for what inner steps learn; the outermost
// step that reads it calls this.
func WithLearned(ctx context.Context) (context.Context, *Learned) {
	l := &Learned{}
	return context.WithValue(ctx, learnedKey{}, l), l
}

// Learn records o for the steps outside, if any gave ctx a place for it.
func Learn(ctx context.Context, o Outcome) {
	if l, ok := ctx.Value(learnedKey{}).(*Learned); ok {
		l.o = o
	}
}

// Refine is o as inner steps learned it: a call that ended OK but
// requested an approval is PendingApproval.
func (l *Learned) Refine(o Outcome) Outcome {
	if o == OK && l.o != "" {
		return l.o
	}
	return o
}

// Classify says how a call ended from what its handlers returned, and the
// error text an agent saw (empty on success).
func Classify(res mcp.Result, err error) (Outcome, string) {
	var ref *Refused
	if errors.As(err, &ref) {
		return ref.Outcome, ref.Reason
	}
	if err != nil {
		var werr *jsonrpc.Error
		if errors.As(err, &werr) {
			return Failed, werr.Message
		}
		return Failed, err.Error()
	}
	r, ok := res.(*mcp.CallToolResult)
	switch {
	case !ok || r == nil:
		return OK, ""
	case r.IsError:
		for _, c := range r.Content {
			if t, ok := c.(*mcp.TextContent); ok {
				return ToolError, t.Text
			}
		}
		return ToolError, ""
	case len(r.InputRequests) > 0:
		return InputRequired, ""
	}
	return OK, ""
}

// Deliver turns a refusal into what the agent sees. It is the outermost MCP
// middleware: every step inside it may refuse with a *Refused error.
//
// complete reports whether a request's results must carry resultType
// (protocol 2026-07-28 on): a tool result given instead of the tool's is
// then marked complete (markComplete).
func Deliver(complete func(context.Context) bool) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			res, err := next(ctx, method, req)
			var ref *Refused
			if errors.As(err, &ref) {
				if ref.Result == nil {
					return nil, ref.Err
				}
				if complete(ctx) {
					return markComplete(ref.Result), nil
				}
				return ref.Result, nil
			}
			return res, err
		}
	}
}

// markComplete is a copy of r marked complete (resultType), as a result
// must be on protocol 2026-07-28: go-sdk marks a tool's own result so, and
// leaves an answer a middleware gives instead unmarked, which clients of
// that revision refuse. The mark is go-sdk's own field; decoding is the
// one way to set it from outside.
func markComplete(r *mcp.CallToolResult) *mcp.CallToolResult {
	var c mcp.CallToolResult
	if err := json.Unmarshal([]byte(`{"content":[],"resultType":"complete"}`), &c); err != nil {
		return r
	}
	c.Meta, c.Content, c.StructuredContent, c.IsError = r.Meta, r.Content, r.StructuredContent, r.IsError
	return &c
}
