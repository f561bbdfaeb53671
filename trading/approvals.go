package trading

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/principal"
	"github.com/portfolio-mcp/portfolio-mcp/store"
)

// Decisions an approver can make.
const (
	DecisionApprove = "approve"
	DecisionReject  = "reject"
)

// approval loads an approval, expiring it first if its time is up.
func (s *Service) approval(ctx context.Context, id string) (Approval, error) {
	for {
		a, ver, err := getJSON[Approval](ctx, s.st, approvalKey(id))
		if errors.Is(err, store.ErrNotFound) {
			return Approval{}, ErrNotFound
		}
		if err != nil {
			return Approval{}, s.stateErr(ctx, err)
		}
		if a.Status != ApprovalPending || s.now().Before(a.ExpiresAt) {
			return a, nil
		}
		a.Status = ApprovalExpired
		if _, err := updateJSON(ctx, s.st, approvalKey(id), a, ver, s.cfg.IdempotencyTTL); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return Approval{}, s.stateErr(ctx, err)
		}
		s.st.IndexRemove(ctx, pendingIndex, id)
		return a, nil
	}
}

// visible reports whether p may see approval a: its requester, or anyone
// entitled to the account who holds the approve scope (checked by authz).
func visible(p principal.Principal, a Approval) bool {
	return a.Requester == p.Subject || p.Entitled(a.Order.AccountID)
}

func (s *Service) approvalOutcome(ctx context.Context, a Approval) Outcome {
	out := Outcome{Status: a.Status, Approval: &a, IdempotencyKey: a.Order.IdempotencyKey}
	switch a.Status {
	case ApprovalPending:
		out.Status = StatusPendingApproval
		out.Message = "waiting for a human approver until " + a.ExpiresAt.Format(time.RFC3339)
	case ApprovalApproved, ApprovalExecuting:
		out.Message = "approved by " + a.DecidedBy + "; execution in progress, poll get_order_status again"
	case ApprovalExecuted:
		out.Status = StatusExecuted
		out.Message = "approved by " + a.DecidedBy + " and executed as order " + a.OrderID
		if o, err := s.bs.Trade.GetOrder(ctx, a.OrderID); err == nil {
			out.Order = &o
		}
	case ApprovalRejected:
		out.Status = StatusRejected
		out.Message = "rejected by " + a.DecidedBy + ": " + a.Reason + "; the order was not placed"
	case ApprovalExpired:
		out.Message = "no approver decided before " + a.ExpiresAt.Format(time.RFC3339) + "; the order was not placed. Place it again with a new idempotency_key if still wanted"
	case ApprovalCancelled:
		out.Message = "cancelled before a decision; the order was not placed"
	case ApprovalFailed:
		out.Message = "approved, but the Trade service refused the order: " + a.Error
	}
	return out
}

// Decide records an approver's decision and, on approval, executes the
// order exactly once. A repeat of the same decision by the same approver is
// a no-op that re-drives an interrupted execution.
func (s *Service) Decide(ctx context.Context, approver principal.Principal, id, decision, reason string) (Outcome, error) {
	if decision != DecisionApprove && decision != DecisionReject {
		return Outcome{}, fmt.Errorf("%w: decision must be approve or reject", backends.ErrInvalid)
	}
	for {
		a, err := s.approval(ctx, id)
		if err != nil {
			return Outcome{}, err
		}
		if !approver.Entitled(a.Order.AccountID) {
			return Outcome{}, ErrNotFound
		}
		if a.Requester == approver.Subject {
			return Outcome{}, ErrFourEyes
		}
		switch a.Status {
		case ApprovalPending:
		case ApprovalExpired:
			return Outcome{}, ErrExpired
		default:
			sameDecision := a.DecidedBy == approver.Subject && (decision == DecisionApprove) == (a.Status != ApprovalRejected)
			if !sameDecision {
				return s.approvalOutcome(ctx, a), ErrAlreadyDecided
			}
			if decision == DecisionApprove {
				return s.execute(ctx, a.ID)
			}
			return s.approvalOutcome(ctx, a), nil
		}

		if err := s.journal.Record(ctx, JournalEntry{Action: "approval.decided", Principal: approver.Subject, AccountID: a.Order.AccountID,
			ArgsDigest: a.ArgsDigest, IdempotencyKey: a.Order.IdempotencyKey, ApprovalID: a.ID, Detail: decision + ": " + reason}); err != nil {
			s.log.ErrorContext(ctx, "journal refused approval decision", "error", err)
			return Outcome{}, ErrNotRecorded
		}
		now := s.now().UTC()
		a.DecidedBy, a.DecidedAt, a.Reason = approver.Subject, &now, reason
		a.Status = ApprovalApproved
		if decision == DecisionReject {
			a.Status = ApprovalRejected
		}
		if err := s.updateApproval(ctx, a); errors.Is(err, store.ErrConflict) {
			continue // decided or expired concurrently: look again
		} else if err != nil {
			return Outcome{}, err
		}
		s.st.IndexRemove(ctx, pendingIndex, a.ID)
		if decision == DecisionReject {
			return s.approvalOutcome(ctx, a), nil
		}
		return s.execute(ctx, a.ID)
	}
}

// updateApproval writes a after re-reading its version; callers loop on
// ErrConflict.
func (s *Service) updateApproval(ctx context.Context, a Approval) error {
	cur, ver, err := getJSON[Approval](ctx, s.st, approvalKey(a.ID))
	if err != nil {
		return s.stateErr(ctx, err)
	}
	if !validTransition(cur.Status, a.Status) {
		return store.ErrConflict
	}
	if _, err := updateJSON(ctx, s.st, approvalKey(a.ID), a, ver, s.cfg.IdempotencyTTL); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return err
		}
		return s.stateErr(ctx, err)
	}
	return nil
}

// validTransition is the approval state machine. Executing may be re-entered
// by a replica taking over an expired lease.
func validTransition(from, to string) bool {
	switch from {
	case ApprovalPending:
		return to == ApprovalApproved || to == ApprovalRejected || to == ApprovalExpired || to == ApprovalCancelled
	case ApprovalApproved:
		return to == ApprovalExecuting
	case ApprovalExecuting:
		return to == ApprovalExecuting || to == ApprovalExecuted || to == ApprovalFailed
	}
	return false
}

// execute places an approved order exactly once. Our bookkeeping is a
// lease-guarded compare-and-swap; the Trade service's client order id makes
// a repeat after a crash (between its acceptance and our record) harmless.
func (s *Service) execute(ctx context.Context, id string) (Outcome, error) {
	for {
		a, ver, err := getJSON[Approval](ctx, s.st, approvalKey(id))
		if err != nil {
			return Outcome{}, s.stateErr(ctx, err)
		}
		switch {
		case a.Status == ApprovalApproved, a.Status == ApprovalExecuting && a.LeaseUntil != nil && !s.now().Before(*a.LeaseUntil):
		default:
			return s.approvalOutcome(ctx, a), nil // done, or another replica holds the lease
		}
		lease := s.now().Add(s.cfg.Lease).UTC()
		a.Status, a.LeaseUntil = ApprovalExecuting, &lease
		if ver, err = updateJSON(ctx, s.st, approvalKey(id), a, ver, s.cfg.IdempotencyTTL); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return Outcome{}, s.stateErr(ctx, err)
		}

		o := a.Order
		order, err := s.bs.Trade.PlaceOrder(ctx, backends.OrderRequest{
			ClientOrderID: a.ClientOrderID, AccountID: o.AccountID, Ticker: o.Ticker, Side: o.Side,
			Type: o.Type, Quantity: o.Quantity, LimitPrice: o.LimitPrice,
		})
		switch {
		case errors.Is(err, backends.ErrInvalid) || errors.Is(err, backends.ErrNotFound):
			a.Status, a.Error, a.LeaseUntil = ApprovalFailed, strings.TrimPrefix(err.Error(), backends.ErrInvalid.Error()+": "), nil
		case err != nil:
			// Keep the lease: the next get_order_status or decision after it
			// ends retries with the same client order id.
			s.log.WarnContext(ctx, "trade backend failed executing approval", "approval_id", id, "error", err)
			return s.approvalOutcome(ctx, a), ErrTradeUnavailable
		default:
			a.Status, a.OrderID, a.LeaseUntil = ApprovalExecuted, order.OrderID, nil
		}
		if _, err := updateJSON(ctx, s.st, approvalKey(id), a, ver, s.cfg.IdempotencyTTL); err != nil {
			s.log.ErrorContext(ctx, "could not record execution; the lease expiry re-drives it idempotently", "approval_id", id, "error", err)
		}
		if a.Status == ApprovalExecuted {
			s.journalExecuted(ctx, a.DecidedBy, o, a.ArgsDigest, a.ID, a.OrderID)
		}
		return s.approvalOutcome(ctx, a), nil
	}
}

// Status reports an approval (by approval id) or an order (by order id).
// An approved approval whose execution was interrupted is driven forward,
// so any replica's status call completes it.
func (s *Service) Status(ctx context.Context, p principal.Principal, id string) (Outcome, error) {
	if strings.HasPrefix(id, "APR-") {
		a, err := s.approval(ctx, id)
		if err != nil {
			return Outcome{}, err
		}
		if !visible(p, a) {
			return Outcome{}, ErrNotFound
		}
		if a.Status == ApprovalApproved || a.Status == ApprovalExecuting {
			out, err := s.execute(ctx, id)
			if errors.Is(err, ErrTradeUnavailable) {
				return out, nil // status is still a truthful answer
			}
			return out, err
		}
		return s.approvalOutcome(ctx, a), nil
	}
	o, err := s.bs.Trade.GetOrder(ctx, id)
	if err != nil {
		if errors.Is(err, backends.ErrNotFound) {
			return Outcome{}, ErrNotFound
		}
		return Outcome{}, err
	}
	if !p.Entitled(o.AccountID) {
		return Outcome{}, ErrNotFound
	}
	return Outcome{Status: o.Status, Order: &o, Message: "order " + o.OrderID + " is " + o.Status}, nil
}

// Cancel withdraws a pending approval (its requester only) or cancels a
// resting order at the Trade service.
func (s *Service) Cancel(ctx context.Context, p principal.Principal, id string) (Outcome, error) {
	if strings.HasPrefix(id, "APR-") {
		for {
			a, err := s.approval(ctx, id)
			if err != nil {
				return Outcome{}, err
			}
			if !visible(p, a) {
				return Outcome{}, ErrNotFound
			}
			if a.Status == ApprovalCancelled {
				return s.approvalOutcome(ctx, a), nil
			}
			if a.Status != ApprovalPending || a.Requester != p.Subject {
				return s.approvalOutcome(ctx, a), ErrNotCancellable
			}
			if err := s.journal.Record(ctx, JournalEntry{Action: "approval.cancelled", Principal: p.Subject, AccountID: a.Order.AccountID, ApprovalID: a.ID, IdempotencyKey: a.Order.IdempotencyKey}); err != nil {
				return Outcome{}, ErrNotRecorded
			}
			a.Status = ApprovalCancelled
			if err := s.updateApproval(ctx, a); errors.Is(err, store.ErrConflict) {
				continue
			} else if err != nil {
				return Outcome{}, err
			}
			s.st.IndexRemove(ctx, pendingIndex, id)
			return s.approvalOutcome(ctx, a), nil
		}
	}
	cur, err := s.Status(ctx, p, id)
	if err != nil {
		return Outcome{}, err
	}
	if err := s.journal.Record(ctx, JournalEntry{Action: "order.cancel", Principal: p.Subject, AccountID: cur.Order.AccountID, OrderID: id}); err != nil {
		return Outcome{}, ErrNotRecorded
	}
	o, err := s.bs.Trade.CancelOrder(ctx, id)
	switch {
	case errors.Is(err, backends.ErrInvalid):
		return Outcome{Status: cur.Order.Status, Order: cur.Order, Message: "not cancelled: the order is " + cur.Order.Status}, ErrNotCancellable
	case err != nil:
		return Outcome{}, err
	}
	return Outcome{Status: o.Status, Order: &o, Message: "order " + o.OrderID + " is " + o.Status}, nil
}

// ListPending returns pending approvals p may see, oldest first.
func (s *Service) ListPending(ctx context.Context, p principal.Principal, limit int) ([]Approval, error) {
	ids, err := s.st.IndexRange(ctx, pendingIndex, 1000)
	if err != nil {
		return nil, s.stateErr(ctx, err)
	}
	out := []Approval{}
	for _, id := range ids {
		a, err := s.approval(ctx, id)
		if errors.Is(err, ErrNotFound) {
			s.st.IndexRemove(ctx, pendingIndex, id)
			continue
		}
		if err != nil {
			return nil, err
		}
		if a.Status != ApprovalPending {
			s.st.IndexRemove(ctx, pendingIndex, id)
			continue
		}
		if visible(p, a) {
			out = append(out, a)
			if len(out) == limit {
				break
			}
		}
	}
	return out, nil
}
