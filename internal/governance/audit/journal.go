package audit

import (
	"context"
	"errors"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry/redact"
)

// Step is one step of a state-changing operation (order.intent,
// approval.requested, approval.decided, order.executed, ...).
type Step struct {
	Action         string    `json:"action"`
	Time           time.Time `json:"time"`
	Principal      string    `json:"principal,omitempty"`
	AccountID      string    `json:"account_id,omitempty"`
	ArgsDigest     string    `json:"args_digest,omitempty"`
	IdempotencyKey string    `json:"idempotency_key,omitempty"`
	ApprovalID     string    `json:"approval_id,omitempty"`
	OrderID        string    `json:"order_id,omitempty"`
	Detail         string    `json:"detail,omitempty"`
	// Provenance is how an order came to be decided (the agent, the
	// confirmation, the policy version, the approver): see
	// trading.Provenance.
	Provenance map[string]string `json:"provenance,omitempty"`
}

// Journal is the audit trail's API for the trading service: steps that
// must be on record before they take effect, and steps that took effect.
// Inside an audited call, the call's own record gathers the ids of its
// steps and carries the ones that took effect, so a call pays one
// synchronous delivery per step that must precede its effect plus its own.
type Journal struct{ a *Auditor }

// Journal returns the trail's journal.
func (a *Auditor) Journal() Journal { return Journal{a} }

// Record records s before it takes effect, synchronously: an error means
// the sink did not acknowledge it and the step must not happen.
func (j Journal) Record(ctx context.Context, s Step) error {
	s = clean(s)
	if err := j.a.EmitSync(ctx, j.stepEvent(ctx, s)); err != nil {
		return errors.Join(errors.New("the audit trail could not record the step"), err)
	}
	if t := trailFrom(ctx); t != nil {
		t.note(s, false)
	}
	return nil
}

// RecordDone records s, a step that has already taken effect. Inside an
// audited call it travels with the call's record; outside one (an approver's
// decision through the approvals API) it is delivered now.
func (j Journal) RecordDone(ctx context.Context, s Step) error {
	s = clean(s)
	if t := trailFrom(ctx); t != nil && t.note(s, true) {
		return nil
	}
	if err := j.a.EmitSync(ctx, j.stepEvent(ctx, s)); err != nil {
		return errors.Join(errors.New("the audit trail could not record the step"), err)
	}
	return nil
}

// clean stamps s and redacts its free text (a reject reason is typed by a
// person).
func clean(s Step) Step {
	if s.Time.IsZero() {
		s.Time = time.Now().UTC()
	}
	s.Detail = redact.Text(s.Detail, maxErrorBytes)
	return s
}

// stepEvent is the record of a step on its own, naming the call it is part
// of when there is one.
func (j Journal) stepEvent(ctx context.Context, s Step) Event {
	ev := Event{
		Time: s.Time, Action: s.Action, Principal: s.Principal, ArgsDigest: s.ArgsDigest,
		Args: map[string]any{"account_id": s.AccountID}, Outcome: outcome.Recorded,
		ApprovalID: s.ApprovalID, IdempotencyKey: s.IdempotencyKey, OrderID: s.OrderID,
		RequestID: telemetry.RequestID(ctx), Provenance: s.Provenance,
	}
	if s.Detail != "" {
		ev.Args["detail"] = s.Detail
	}
	if t := trailFrom(ctx); t != nil {
		ev.Tool, ev.Class, ev.ClientID = t.subject, t.class, t.clientID
	}
	return ev
}
