package trading

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// Decisions an approver can make.
const (
	DecisionApprove = "approve"
	DecisionReject  = "reject"
)

// approval loads an approval and its version, expiring it first if its
// time is up.
func (s *Service) approval(ctx context.Context, id string) (Approval, int64, error) {
	for {
		a, ver, err := getJSON[Approval](ctx, s.st, approvalKey(id))
		if errors.Is(err, store.ErrNotFound) {
			return Approval{}, 0, ErrNotFound
		}
		if err != nil {
			return Approval{}, 0, s.stateErr(ctx, err)
		}
		if a.Status == legacyExecuted {
			a.Status = ApprovalSubmitted
		}
		if a.Status != ApprovalPending || s.now().Before(a.ExpiresAt) {
			return a, ver, nil
		}
		a.Status = ApprovalExpired
		nv, err := updateJSON(ctx, s.st, approvalKey(id), a, ver, s.cfg.IdempotencyTTL)
		if errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return Approval{}, 0, s.stateErr(ctx, err)
		}
		s.cfg.Metrics.expiredOnce()
		s.unindex(ctx, a)
		return a, nv, nil
	}
}

// legacyExecuted is what ApprovalSubmitted was called before orders had a
// lifecycle: "executed" did not say whether the order filled.
const legacyExecuted = "executed"

// The pending queue is indexed globally (for approvers of every account)
// and per account, so one account's flood cannot hide another's approvals,
// and per requester, to cap how many one requester may have pending.
func accountIndex(account string) string { return pendingIndex + ":" + account }

// requesterIndex is keyed by the exact subject: OIDC subjects are
// case-sensitive, and folding them here would let one user fill another's
// cap (four eyes folds case the other way, where folding only refuses more).
func requesterIndex(subject string) string { return pendingIndex + ":by:" + subject }

// lockRequester takes the requester's lease on creating approvals: the cap
// is checked and the approval created under it, so concurrent requests of
// one requester (on any replica) cannot both take the last place.
func (s *Service) lockRequester(ctx context.Context, subject string) (*heldLease, error) {
	return s.lease(ctx, "pendingcap:"+subject, s.cfg.Lease, "waiting for another order of yours to be recorded")
}

// underPendingCap refuses a new approval when the requester already has
// MaxPending pending (id itself, an approval being re-created by a retry,
// does not count against it). Call it holding lockRequester. A record that
// cannot be read is skipped, so one bad record cannot lock its requester
// out.
func (s *Service) underPendingCap(ctx context.Context, requester, id string) error {
	idx := requesterIndex(requester)
	ids, err := s.st.IndexRange(ctx, idx, 1000)
	if err != nil {
		return s.stateErr(ctx, err)
	}
	if slices.Contains(ids, id) {
		return nil
	}
	pending := 0
	for _, other := range ids {
		if pending >= s.cfg.MaxPending {
			break
		}
		a, _, err := s.approval(ctx, other) // unindexes what is no longer pending
		switch {
		case errors.Is(err, ErrNotFound):
			s.st.IndexRemove(ctx, idx, other)
		case errors.Is(err, ErrStateUnavailable):
			return err
		case err != nil:
			s.log.WarnContext(ctx, "unreadable approval record not counted against the pending cap", "approval_id", other, "error", err)
		case a.Status == ApprovalPending:
			pending++
		}
	}
	if pending >= s.cfg.MaxPending {
		return ErrTooManyPending
	}
	return nil
}

func (s *Service) index(ctx context.Context, a Approval) error {
	score := float64(a.CreatedAt.Unix())
	if err := s.st.IndexAddAll(ctx, []string{pendingIndex, accountIndex(a.Order.AccountID), requesterIndex(a.Requester)}, a.ID, score); err != nil {
		return s.stateErr(ctx, err)
	}
	// The history keeps every approval, newest first, for as long as its
	// record lives (entries of expired records are dropped when read).
	if err := s.st.IndexAddAll(ctx, []string{historyIndex, historyIndex + ":" + a.Order.AccountID}, a.ID, -score); err != nil {
		return s.stateErr(ctx, err)
	}
	return nil
}

// indexed loads the approvals an index lists (up to max, in its order),
// dropping the entries whose records have expired.
func (s *Service) indexed(ctx context.Context, idx string, max int) ([]Approval, error) {
	ids, err := s.st.IndexRange(ctx, idx, max)
	if err != nil {
		return nil, s.stateErr(ctx, err)
	}
	out := make([]Approval, 0, len(ids))
	for _, id := range ids {
		a, _, err := s.approval(ctx, id)
		if errors.Is(err, ErrNotFound) {
			s.st.IndexRemove(ctx, idx, id)
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// historyIndex lists every approval, globally and per account.
const historyIndex = "approvals:history"

// HistoryQuery selects approvals for History.
type HistoryQuery struct {
	// AccountID, if set, limits the history to one account.
	AccountID string
	// Statuses, if set, keeps only approvals in these statuses.
	Statuses []string
	// Limit caps the result (default 100, at most 500).
	Limit int
}

// History lists the approvals p may see, newest first: pending ones and
// the decided, expired, cancelled and failed ones whose records are still
// kept (IDEMPOTENCY_TTL).
func (s *Service) History(ctx context.Context, p principal.Principal, q HistoryQuery) ([]Approval, error) {
	limit := q.Limit
	switch {
	case limit < 1:
		limit = 100
	case limit > 500:
		limit = 500
	}
	var indexes []string
	switch {
	case q.AccountID != "":
		if !p.Entitled(q.AccountID) {
			return []Approval{}, nil
		}
		indexes = []string{historyIndex + ":" + q.AccountID}
	case p.Entitled(principal.AllAccounts):
		indexes = []string{historyIndex}
	default:
		for _, acct := range p.Accounts {
			indexes = append(indexes, historyIndex+":"+acct)
		}
	}
	out := []Approval{}
	for _, idx := range indexes {
		// Newest first: a few times the limit leaves room for the state
		// filter without reading a long history.
		as, err := s.indexed(ctx, idx, min(2000, 4*limit))
		if err != nil {
			return nil, err
		}
		for _, a := range as {
			if p.Entitled(a.Order.AccountID) && (len(q.Statuses) == 0 || slices.Contains(q.Statuses, a.Status)) {
				out = append(out, a)
			}
		}
	}
	slices.SortFunc(out, func(x, y Approval) int {
		return cmp.Or(y.CreatedAt.Compare(x.CreatedAt), cmp.Compare(x.ID, y.ID))
	})
	return out[:min(limit, len(out))], nil
}

func (s *Service) unindex(ctx context.Context, a Approval) {
	s.st.IndexRemoveAll(ctx, []string{pendingIndex, accountIndex(a.Order.AccountID), requesterIndex(a.Requester)}, a.ID)
}

// unindexDone takes an approval that is no longer pending off the indexes
// it no longer belongs in; an approved one whose order is not yet sent
// stays in its account's (unqueue).
func (s *Service) unindexDone(ctx context.Context, a Approval) {
	if a.Status == ApprovalApproved || a.Status == ApprovalExecuting {
		s.unqueue(ctx, a)
		return
	}
	s.unindex(ctx, a)
}

// unqueue takes an approval that was approved off the approvers' queues
// and its requester's cap. It stays in its account's index, holding what
// its order would, until the order is listed to be sent or the approval
// fails (unindex).
func (s *Service) unqueue(ctx context.Context, a Approval) {
	s.st.IndexRemoveAll(ctx, []string{pendingIndex, requesterIndex(a.Requester)}, a.ID)
}

// holds reports whether an approval still holds what its order would: it
// is pending, or approved and not yet listed to be sent (an executing one
// is listed, and counted as an order).
func (a Approval) holds() bool {
	return a.Status == ApprovalPending || a.Status == ApprovalApproved
}

// committed sums what the account's approvals and orders other than self
// (the order being checked: its approval id, its client order id) hold:
// the estimated notional of buys, the shares of sells. A record that cannot
// be read is skipped (and logged), as in the cap.
func (s *Service) committed(ctx context.Context, account string, self selfOrder) (policy.Committed, error) {
	idx := accountIndex(account)
	ids, err := s.st.IndexRange(ctx, idx, heldScan+1)
	if err != nil {
		return policy.Committed{}, s.stateErr(ctx, err)
	}
	c := policy.Committed{Shares: map[string]float64{}}
	for _, id := range ids {
		if id == self.approvalID {
			continue
		}
		a, _, err := s.approval(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			s.st.IndexRemove(ctx, idx, id) // its record expired
			continue
		case errors.Is(err, ErrStateUnavailable):
			return policy.Committed{}, err
		case err != nil:
			// One bad record must not stop the account's trading.
			s.log.WarnContext(ctx, "unreadable approval record not counted as committed", "approval_id", id, "error", err)
			continue
		}
		if !a.holds() {
			s.unindexDone(ctx, a)
			continue
		}
		if a.Order.Side == backends.SideSell {
			c.Shares[strings.ToUpper(a.Order.Ticker)] += a.Order.Quantity
		} else if a.Preview != nil {
			c.Cash += a.Preview.EstimatedNotional
		}
	}
	if len(ids) > heldScan {
		// Those that no longer hold were dropped from the index above, so a
		// later check may read them all.
		return policy.Committed{}, ErrTooManyOpen
	}
	return c, s.working(ctx, account, self.clientOrderID, &c)
}

// selfOrder names the order a check is for, which never counts against
// itself: a retry finds its own approval, an execution re-checks it.
type selfOrder struct{ approvalID, clientOrderID string }

func selfOf(subject, idempotencyKey string) selfOrder {
	return selfOrder{approvalID(subject, idempotencyKey), clientOrderID(subject, idempotencyKey)}
}

func (a Approval) self() selfOrder { return selfOrder{a.ID, a.ClientOrderID} }

// working adds what the account's working orders hold to c: the unfilled
// part of each, a resting buy's cash at its limit, a resting sell's shares,
// and all of an order being sent (or whose answer was lost). The account's
// cash and holdings show only what filled, so without this two resting
// sells could sell the same shares and two resting buys spend the same
// cash. Orders placed through this server are known (the cancel-all index);
// their state is the Trade service's, read now.
func (s *Service) working(ctx context.Context, account, self string, c *policy.Committed) error {
	idx := openIndex(halt.Account, account)
	ids, err := s.st.IndexRange(ctx, idx, heldScan+1)
	if err != nil {
		return s.stateErr(ctx, err)
	}
	tooMany := len(ids) > heldScan // with self among them, one was not read
	ids = slices.DeleteFunc(ids, func(id string) bool { return id == self })
	entries, err := s.readOpen(ctx, ids)
	if err != nil {
		return err
	}
	var marketBuys []backends.Order // priced below, with one quote request
	for i, e := range entries {
		switch {
		case e.sending != nil:
			o := e.sending.Order
			switch {
			case o.Side == backends.SideSell:
				c.Shares[strings.ToUpper(o.Ticker)] += o.Quantity
			case o.Type == backends.OrderLimit:
				c.Cash += o.Quantity * o.LimitPrice
			default:
				c.Cash += e.sending.Notional
			}
			continue
		case e.order == nil:
			s.st.IndexRemove(ctx, idx, ids[i]) // stale: never sent, or long gone
			continue
		}
		o := *e.order
		if !backends.Working(o.Status) {
			s.unindexOpen(ctx, o, s.provenanceOf(ctx, o.ClientOrderID))
			continue
		}
		left := max(0, o.Quantity-o.FilledQuantity)
		switch {
		case o.Side == backends.SideSell:
			c.Shares[strings.ToUpper(o.Ticker)] += left
		case o.Type == backends.OrderLimit:
			c.Cash += left * o.LimitPrice
		default:
			marketBuys = append(marketBuys, o)
		}
	}
	if tooMany {
		// Those that no longer work were dropped from the index above, so a
		// later check may read them all.
		return ErrTooManyOpen
	}
	return s.holdMarketBuys(ctx, marketBuys, c)
}

// heldScan bounds the approvals and the orders one pre-trade check reads
// for an account. Past it the check cannot know what the rest hold, and
// refuses (ErrTooManyOpen) rather than count a part.
const heldScan = 1000

// readOpen resolves open-order index entries (resolveOpen), a few at a
// time: a check of an account with many resting orders would otherwise
// wait for each in turn. A failure fails the whole read: what an unread
// order holds is unknown.
func (s *Service) readOpen(ctx context.Context, ids []string) ([]openEntry, error) {
	out := make([]openEntry, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, id := range ids {
		g.Go(func() error {
			e, err := s.resolveOpen(gctx, id)
			if err != nil {
				s.log.WarnContext(ctx, "cannot read a working order to count what it holds", "order", id, "error", err)
				if errors.Is(err, ErrStateUnavailable) {
					return err
				}
				return ErrTradeUnavailable
			}
			out[i] = e
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// holdMarketBuys adds the cash of market buys still working (a halted
// stock, an order not yet filled): their unfilled part at the worse of
// the price filled so far and the market now (the ask, else the last
// price). One with no price is listed as unpriced; market data that does
// not answer fails the check.
func (s *Service) holdMarketBuys(ctx context.Context, orders []backends.Order, c *policy.Committed) error {
	if len(orders) == 0 {
		return nil
	}
	var tickers []string
	for _, o := range orders {
		if !slices.Contains(tickers, o.Ticker) {
			tickers = append(tickers, o.Ticker)
		}
	}
	qs, err := s.bs.MarketData.Quotes(ctx, tickers)
	if err != nil {
		s.log.WarnContext(ctx, "cannot price working market buys to count what they hold", "error", err)
		return ErrTradeUnavailable
	}
	price := map[string]float64{}
	for _, q := range qs.Quotes {
		price[strings.ToUpper(q.Ticker)] = max(q.Ask, q.Price)
	}
	for _, o := range orders {
		p := price[strings.ToUpper(o.Ticker)]
		if p <= 0 {
			// A halted stock, the very reason it does not fill: the cash it
			// holds is unknown, which stops buys (policy.Check), not sells.
			c.Unpriced = append(c.Unpriced, o.OrderID+" ("+o.Ticker+")")
			continue
		}
		c.Cash += max(0, o.Quantity-o.FilledQuantity) * max(o.AveragePrice, p)
	}
	return nil
}

// sameSubject compares principals for four eyes: subjects that differ only
// in case or surrounding space are the same person.
// RequestedBy reports whether subject asked for the approval's order: the
// four-eyes rule, which refuses that subject's decision.
func (a Approval) RequestedBy(subject string) bool { return sameSubject(a.Requester, subject) }

func sameSubject(a, b string) bool {
	return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
}

// visible reports whether p may see approval a: its requester, or anyone
// entitled to the account who holds the approve scope (checked by authz).
func visible(p principal.Principal, a Approval) bool {
	return a.Requester == p.Subject || p.Entitled(a.Order.AccountID)
}

// approvalOutcome reports an approval; once its order reached the Trade
// service, in the order's current state.
func (s *Service) approvalOutcome(ctx context.Context, a Approval) Outcome {
	out := Outcome{Status: a.Status, Approval: &a, IdempotencyKey: a.Order.IdempotencyKey, Provenance: a.provenance()}
	switch a.Status {
	case ApprovalPending:
		out.Status = StatusPendingApproval
		out.Message = "waiting for a human approver until " + a.ExpiresAt.Format(time.RFC3339) + "; poll get_order_status with approval_id " + a.ID
	case ApprovalApproved, ApprovalExecuting:
		out.Status = StatusApproved
		out.Message = "approved by " + a.DecidedBy + "; being sent to the Trade service, poll get_order_status again"
	case ApprovalSubmitted:
		o, err := s.bs.Trade.GetOrder(ctx, a.OrderID)
		if err != nil {
			s.log.WarnContext(ctx, "could not read an approved order's state", "order_id", a.OrderID, "error", err)
			out.Status = StatusSubmitted
			out.Message = "approved by " + a.DecidedBy + " and sent to the Trade service as order " + a.OrderID +
				"; its current state could not be read just now, poll get_order_status with " + a.OrderID
			return out
		}
		return approvedOrder(a, o)
	case ApprovalRejected:
		out.Status = StatusRejected
		out.Message = "rejected by " + a.DecidedBy + ": " + a.Reason + "; the order was not placed"
	case ApprovalExpired:
		out.Status = StatusExpired
		out.Message = "no approver decided before " + a.ExpiresAt.Format(time.RFC3339) + "; the order was not placed. Place it again with a new idempotency_key if still wanted"
	case ApprovalCancelled:
		out.Status = StatusCancelled
		out.Message = "cancelled before a decision; the order was not placed"
	case ApprovalFailed:
		out.Status = StatusRejected
		out.Message = "approved, but not placed: " + a.Error
	}
	return out
}

// Expect pins a decision to the approval it was made for: a signed event
// must name the exact order (its argument digest) and requester it decides,
// so it cannot be replayed against a later approval with the same id; an
// API client may name either. A field left empty is not compared.
type Expect struct {
	ArgsDigest string
	Requester  string
}

// ErrMismatch: the decision names a different order than the approval holds.
var ErrMismatch = agentError("the decision does not match the approval's order or requester; nothing was changed")

// Decide records an approver's decision and, on approval, executes the
// order exactly once. A repeat of the same decision by the same approver is
// a no-op that re-drives an interrupted execution. expect, if set, must
// match the approval.
func (s *Service) Decide(ctx context.Context, approver principal.Principal, id, decision, reason string, expect *Expect) (Outcome, error) {
	if decision != DecisionApprove && decision != DecisionReject {
		return Outcome{}, fmt.Errorf("%w: decision must be approve or reject", backends.ErrInvalid)
	}
	for {
		a, ver, err := s.approval(ctx, id)
		if err != nil {
			return Outcome{}, err
		}
		if !approver.Entitled(a.Order.AccountID) {
			return Outcome{}, ErrNotFound
		}
		if expect != nil && ((expect.ArgsDigest != "" && expect.ArgsDigest != a.ArgsDigest) || (expect.Requester != "" && expect.Requester != a.Requester)) {
			return Outcome{}, ErrMismatch
		}
		if a.RequestedBy(approver.Subject) {
			return Outcome{}, ErrFourEyes
		}
		var pass halt.Pass
		passedAt := s.now().UTC() // before the switch is read
		switch a.Status {
		case ApprovalPending:
			if decision == DecisionApprove {
				// Nothing is released while the kill switch holds it; the
				// approval stays pending, and a rejection still works. The
				// mark goes with the approval: a halt engaged after it
				// stops the order's send even once released.
				if pass, err = s.guardMark(ctx, a.Requester, a.RequesterClient, a.Order.AccountID); err != nil {
					return s.approvalOutcome(ctx, a), err
				}
			}
		case ApprovalExpired:
			return Outcome{}, ErrExpired
		default:
			sameDecision := a.DecidedBy == approver.Subject && (decision == DecisionApprove) == (a.Status != ApprovalRejected)
			if !sameDecision {
				return s.approvalOutcome(ctx, a), ErrAlreadyDecided
			}
			if decision == DecisionApprove {
				return s.released(ctx, a)
			}
			return s.approvalOutcome(ctx, a), nil
		}

		decided := JournalEntry{Action: "approval.decided", Principal: approver.Subject, AccountID: a.Order.AccountID,
			ArgsDigest: a.ArgsDigest, IdempotencyKey: a.Order.IdempotencyKey, ApprovalID: a.ID, Detail: decision + ": " + reason, Provenance: a.Provenance.fields()}
		if err := s.journal.Record(ctx, decided); err != nil {
			s.log.ErrorContext(ctx, "journal refused approval decision", "error", err)
			return Outcome{}, ErrNotRecorded
		}
		now := s.now().UTC()
		if !now.Before(a.ExpiresAt) {
			s.superseded(ctx, decided, "the approval expired first")
			continue
		}
		// An approve is dated when it passed the kill switch, before the
		// journal's write: a halt engaged after that, even one released
		// while the audit sink was slow, stops its order.
		a.DecidedBy, a.DecidedAt, a.Reason = approver.Subject, &now, reason
		a.Status, a.HaltMark = ApprovalApproved, pass.Mark
		if decision == DecisionApprove {
			a.DecidedAt = &passedAt
		}
		if decision == DecisionReject {
			a.Status = ApprovalRejected
		}
		if _, err := updateJSON(ctx, s.st, approvalKey(a.ID), a, ver, s.cfg.IdempotencyTTL); errors.Is(err, store.ErrConflict) {
			s.superseded(ctx, decided, "another decision or a cancellation took effect first")
			continue // look again
		} else if err != nil && !s.unrecorded(ctx, decided, a) {
			return Outcome{}, s.stateErr(ctx, err)
		}
		s.cfg.Metrics.decidedOnce(decision)
		if decision == DecisionReject {
			s.unindex(ctx, a)
			return s.approvalOutcome(ctx, a), nil
		}
		s.unqueue(ctx, a)
		return s.released(ctx, a)
	}
}

// ErrSendPending: an approve took effect, and its order is not sent yet
// (the Trade service did not answer, or another request is sending it).
// Reading the approval's status sends it. A decision answered with it did
// its part, and is reported as done, not as failed.
var ErrSendPending = errors.New("approved; the order is not sent yet")

// released executes an approve that took effect (a, as recorded). What
// keeps its order from going out now, but for a halt, is ErrSendPending,
// wrapping the cause; also a failure to read the approval back, which
// leaves it as recorded.
func (s *Service) released(ctx context.Context, a Approval) (Outcome, error) {
	out, err := s.execute(ctx, a.ID)
	if out.Approval == nil && out.Order == nil && err != nil && !errors.Is(err, ErrHalted) {
		out = s.approvalOutcome(ctx, a)
	}
	// A switch that could not be read holds the send for now: the approve
	// took effect, and its order is not sent yet (ErrSendPending), not
	// refused for good as a halt's is.
	halted := errors.Is(err, ErrHalted) && !errors.Is(err, errSwitchUnreadable)
	if halted || out.Order != nil || out.Approval == nil || !out.Approval.AwaitingSend() {
		return out, err
	}
	if err == nil {
		return out, ErrSendPending
	}
	return out, fmt.Errorf("%w: %w", ErrSendPending, err)
}

// execute places an approved order exactly once. Our bookkeeping is a
// lease-guarded compare-and-swap; the Trade service's client order id makes
// a repeat after a crash harmless, and a takeover asks the Trade service
// first, so an order that reached it is never checked against its own fill.
func (s *Service) execute(ctx context.Context, id string) (Outcome, error) {
	for {
		a, ver, err := s.approval(ctx, id)
		if err != nil {
			return Outcome{}, err
		}
		takeover := a.Status == ApprovalExecuting && a.LeaseUntil != nil && !s.now().Before(*a.LeaseUntil)
		if a.Status != ApprovalApproved && !takeover {
			return s.approvalOutcome(ctx, a), nil // done, or another replica holds the lease
		}
		if takeover {
			order, err := s.bs.Trade.OrderByClientID(ctx, a.ClientOrderID)
			switch {
			case err == nil:
				return s.submitted(ctx, a, ver, order, "reconciled: the Trade service had accepted the order of an earlier attempt")
			case !errors.Is(err, backends.ErrNotFound):
				s.log.WarnContext(ctx, "cannot ask the Trade service whether an interrupted execution reached it", "approval_id", id, "error", err)
				return s.approvalOutcome(ctx, a), ErrTradeUnavailable
			}
			// Not seen (yet): the interrupted attempt may still land, so it
			// is sent again as it is, without a re-check that would count
			// a late fill against itself; the client order id makes the two
			// one order. Sent longer ago than the resend window, it never
			// landed: the order is checked afresh, as a first attempt. First
			// sent longer ago than that, it is not sent again unchecked, nor
			// checked afresh while its last send may still land.
			lastSent := a.LeaseUntil.Add(-s.cfg.Lease)
			firstSent := lastSent
			if a.SentAt != nil {
				firstSent = *a.SentAt
			}
			switch {
			case !landable(lastSent, s.now(), s.cfg.ResendWindow):
				takeover = false
			case !landable(firstSent, s.now(), s.cfg.ResendWindow):
				return s.approvalOutcome(ctx, a), ErrTradeUnavailable
			}
		}
		// The kill switch, after the Trade service was asked about an
		// interrupted send (whose order, if it landed, is recorded above):
		// a halt released since the approval (or since the send a takeover
		// repeats) stops the order too, as one engaged now does.
		if err := s.guardSince(ctx, a.Requester, a.RequesterClient, a.Order.AccountID, halt.Pass{Mark: a.HaltMark}, s.haltSince(a)); err != nil {
			switch {
			case takeover:
				// It may still land: keep the lease's state for the
				// reconciliation after the halt is released, and never
				// say that nothing was placed.
				return s.approvalOutcome(ctx, a), s.unsure(ctx, err)
			case errors.Is(err, errSwitchUnreadable):
				// Stopped for now, and nothing decided for good.
				return s.approvalOutcome(ctx, a), err
			}
			// Approved before the halt, never sent: it does not go out later
			// by surprise; the requester places it again if still wanted.
			if out, retry, err := s.failApproval(ctx, a, ver, "not sent: "+err.Error()); !retry {
				return out, err
			}
			continue
		}
		nv, out, retry, err := s.readyToSend(ctx, &a, ver, takeover)
		if retry {
			continue
		}
		if out != nil {
			if takeover {
				err = s.unsure(ctx, err) // the first send may still land
			}
			return *out, err
		}
		ver = nv

		order, err := s.bs.Trade.PlaceOrder(ctx, a.Order.request(a.ClientOrderID))
		// Whatever the answer, it is recorded even if the caller has gone.
		ctx := context.WithoutCancel(ctx)
		switch {
		case errors.Is(err, backends.ErrInvalid) || errors.Is(err, backends.ErrNotFound):
			executing := a
			a.Status, a.Error, a.LeaseUntil = ApprovalFailed, "the Trade service refused it: "+tradeRefusal(err), nil
			if _, err := updateJSON(ctx, s.st, approvalKey(id), a, ver, s.cfg.IdempotencyTTL); err != nil {
				// Unrecorded, the refusal is not final: the lease expiry
				// re-drives the execution. Say only what is on record.
				s.log.ErrorContext(ctx, "could not record a refused execution; the lease expiry re-drives it", "approval_id", id, "error", err)
				return s.approvalOutcome(ctx, executing), ErrStateUnavailable
			}
			s.journalFailed(ctx, a)
			s.unlistSending(ctx, a.Order.AccountID, a.ClientOrderID, a.provenance())
			s.unindex(ctx, a)
			return s.approvalOutcome(ctx, a), nil
		case err != nil:
			// Keep the lease: the next get_order_status or decision after it
			// ends asks the Trade service, then retries if it never saw it.
			s.log.WarnContext(ctx, "trade backend failed executing approval", "approval_id", id, "error", err)
			return s.approvalOutcome(ctx, a), ErrTradeUnavailable
		}
		return s.submitted(ctx, a, ver, order, order.Status)
	}
}

// readyToSend gets an approved order ready to go on the wire: on a first
// attempt (not a takeover, which resends as it is) it checks it again, as
// the account and market are now, and counts it against the day's limits;
// then it lists it to be sent and marks the approval executing under a
// lease. The account's lease spans the check and the listing, so no other
// order's check passes against what this one holds in between. out, if
// set, is the answer instead (the approval failed, or an error); retry: the
// approval changed meanwhile, look again. Ready, *a is what was recorded and
// nv its version.
func (s *Service) readyToSend(ctx context.Context, a *Approval, ver int64, takeover bool) (nv int64, out *Outcome, retry bool, err error) {
	answer := func(o Outcome, err error) (int64, *Outcome, bool, error) { return 0, &o, false, err }
	fail := func(why string) (int64, *Outcome, bool, error) {
		o, retry, err := s.failApproval(ctx, *a, ver, why)
		if retry {
			return 0, nil, true, nil
		}
		return 0, &o, false, err
	}
	notional := 0.0 // a takeover's listing keeps the first attempt's
	var acct *heldLease
	if !takeover {
		var err error
		if acct, err = s.lockAccount(ctx, a.Order.AccountID); err != nil {
			return answer(s.approvalOutcome(ctx, *a), err)
		}
		defer acct.unlock(ctx)
		// The account may have changed since the request (other orders,
		// other approvals, the session closing): check again before money
		// moves. The order's own approval never counts against it.
		pre, err := s.check(ctx, a.Requester, a.RequesterClient, a.Order, a.self(), true)
		if err != nil {
			s.log.WarnContext(ctx, "pre-trade re-check failed", "approval_id", a.ID, "error", err)
			return answer(s.approvalOutcome(ctx, *a), ErrTradeUnavailable)
		}
		if !pre.Allowed {
			return fail("pre-trade check at execution: " + strings.Join(pre.Violations, "; "))
		}
		// Released on a later trading day than it was entered, the order
		// counts against that day's budgets too (a no-op on the same day).
		err = s.reserve(ctx, a.Requester, a.RequesterClient, a.Order.IdempotencyKey, pre.EstimatedNotional)
		if errors.Is(err, ErrDailyLimit) {
			return fail("not sent: the daily limit of the trading day it was released on is used up")
		} else if err != nil {
			return answer(s.approvalOutcome(ctx, *a), err)
		}
		notional = pre.EstimatedNotional
	}
	// Journaled once it passed its check, before it can go out, as a direct
	// order's intent is: if the audit trail cannot record it, it does not
	// go out. (The caller answers a takeover's refusal as "not known yet":
	// its first send may still land.)
	intent := JournalEntry{Action: "order.intent", Principal: a.DecidedBy, AccountID: a.Order.AccountID, ArgsDigest: a.ArgsDigest,
		IdempotencyKey: a.Order.IdempotencyKey, ApprovalID: a.ID, Detail: "approved order", Provenance: a.Provenance.fields()}
	if takeover {
		intent.Detail = "approved order, resent after an unanswered attempt"
	}
	if err := s.journal.Record(ctx, intent); err != nil {
		s.log.ErrorContext(ctx, "journal refused an approved order's intent", "approval_id", a.ID, "error", err)
		return answer(s.approvalOutcome(ctx, *a), ErrNotRecorded)
	}
	// From here, a step that stops the order before the wire says so in
	// the trail: the intent did not go out (this time).
	stopped := func(err error) (int64, *Outcome, bool, error) {
		s.superseded(ctx, intent, "not sent by this attempt: "+safeMessage(err))
		return answer(s.approvalOutcome(ctx, *a), err)
	}
	if err := s.keepProvenance(ctx, a.ClientOrderID, a.provenance()); err != nil {
		return stopped(err)
	}
	if acct != nil {
		if err := acct.renew(ctx); err != nil {
			return stopped(err)
		}
	}
	if err := s.listSending(ctx, a.Order, a.ClientOrderID, a.provenance(), notional); err != nil {
		return stopped(err)
	}
	// The kill switch once more, listed (a halt's cancel-all finds it) and
	// just before the wire: a halt engaged since the approval, even one
	// released again during the work above, stops it.
	if err := s.guardSince(ctx, a.Requester, a.RequesterClient, a.Order.AccountID, halt.Pass{Mark: a.HaltMark}, s.haltSince(*a)); err != nil {
		if takeover || errors.Is(err, errSwitchUnreadable) {
			if !takeover {
				s.unlistSending(ctx, a.Order.AccountID, a.ClientOrderID, a.provenance())
			}
			return stopped(err) // the caller answers a takeover's as "may still land"
		}
		s.superseded(ctx, intent, "not sent: "+safeMessage(err))
		// Failed on the record first: if another attempt moved the
		// approval on meanwhile (it may be sending the order, under the
		// same listing), the listing stays unless nothing will send it.
		o, retry, ferr := s.failApproval(ctx, *a, ver, "not sent: "+err.Error())
		if retry {
			if now, _, rerr := s.approval(ctx, a.ID); rerr == nil && !now.onItsWay() {
				s.unlistSending(ctx, a.Order.AccountID, a.ClientOrderID, a.provenance())
			}
			return 0, nil, true, nil
		}
		return 0, &o, false, ferr
	}
	next := *a
	now := s.now().UTC()
	lease := now.Add(s.cfg.Lease)
	next.Status, next.LeaseUntil = ApprovalExecuting, &lease
	switch {
	case !takeover:
		next.SentAt = &now // a first send, or one checked afresh
	case a.SentAt == nil:
		// Written before first sends were kept (or by an older replica):
		// its last send stands for the first, so the window still ends.
		first := a.LeaseUntil.Add(-s.cfg.Lease)
		next.SentAt = &first
	}
	nv, err = updateJSON(ctx, s.st, approvalKey(a.ID), next, ver, s.cfg.IdempotencyTTL)
	switch {
	case errors.Is(err, store.ErrConflict):
		// Another attempt moved it on. If that one sends the order (the
		// same client order id), the listing is its too; if it failed or
		// withdrew the approval, nothing is sent, and the listing, written
		// after it unlisted, goes.
		why := "another attempt sends the order"
		if now, _, err := s.approval(ctx, a.ID); err != nil || !now.onItsWay() {
			why = "the approval changed meanwhile; nothing was sent"
			if err == nil {
				why = "the approval is " + now.Status + " now; nothing was sent"
				// Not on its way: this attempt's listing goes. A takeover's
				// listing is the first send's, which stays while the
				// approval still waits for its send (it may land), and goes
				// once nothing will send it.
				if !takeover || !now.AwaitingSend() {
					s.unlistSending(ctx, a.Order.AccountID, a.ClientOrderID, a.provenance())
				}
			}
		}
		s.superseded(ctx, intent, why)
		return 0, nil, true, nil
	case err != nil:
		if !takeover {
			// Not executing, so not sent: the approval holds, not a listing.
			s.unlistSending(ctx, a.Order.AccountID, a.ClientOrderID, a.provenance())
		}
		s.superseded(ctx, intent, "not sent: the approval could not be marked as being sent")
		return answer(Outcome{}, s.stateErr(ctx, err))
	}
	*a = next
	return nv, nil, false, nil
}

// haltSince is when approval a passed the kill switch: its approve. A
// takeover's resend is compared from there too: a halt engaged after the
// approve would have stopped the first send at its last look, unless it
// came as that send went out, which the resend must not repeat.
func (s *Service) haltSince(a Approval) time.Time {
	if a.DecidedAt != nil {
		return *a.DecidedAt
	}
	return time.Time{}
}

// onItsWay reports whether a's order is on its way or at the Trade service:
// an attempt sends it, or sent it.
func (a Approval) onItsWay() bool {
	return a.Status == ApprovalExecuting || a.Status == ApprovalSubmitted
}

// failApproval records that an approved order will not be sent, and why.
// retry: the approval changed meanwhile; look again.
func (s *Service) failApproval(ctx context.Context, a Approval, ver int64, why string) (out Outcome, retry bool, err error) {
	a.Status, a.Error, a.LeaseUntil = ApprovalFailed, why, nil
	if _, err := updateJSON(ctx, s.st, approvalKey(a.ID), a, ver, s.cfg.IdempotencyTTL); errors.Is(err, store.ErrConflict) {
		return Outcome{}, true, nil
	} else if err != nil {
		return Outcome{}, false, s.stateErr(ctx, err)
	}
	s.journalFailed(ctx, a)
	s.unindex(ctx, a)
	s.unlistSending(ctx, a.Order.AccountID, a.ClientOrderID, a.provenance()) // an earlier attempt's, if any
	return s.approvalOutcome(ctx, a), false, nil
}

// journalFailed records that approved a's order will not be sent, and why:
// the trail must not end at the approval, which reads as an order that may
// have gone out.
func (s *Service) journalFailed(ctx context.Context, a Approval) {
	e := JournalEntry{Action: "approval.failed", Principal: a.DecidedBy, AccountID: a.Order.AccountID, ArgsDigest: a.ArgsDigest,
		IdempotencyKey: a.Order.IdempotencyKey, ApprovalID: a.ID, Detail: a.Error, Provenance: a.Provenance.fields()}
	if err := s.journal.RecordDone(ctx, e); err != nil {
		s.log.ErrorContext(ctx, "journal refused approval.failed", "approval_id", a.ID, "error", err)
	}
}

// submitted records that the Trade service has an approval's order, and
// journals it. If the record cannot be written, the lease expiry re-drives
// the execution, which then finds the order by its client order id.
func (s *Service) submitted(ctx context.Context, a Approval, ver int64, order backends.Order, detail string) (Outcome, error) {
	a.Status, a.OrderID, a.LeaseUntil = ApprovalSubmitted, order.OrderID, nil
	_, err := updateJSON(ctx, s.st, approvalKey(a.ID), a, ver, s.cfg.IdempotencyTTL)
	if errors.Is(err, store.ErrConflict) {
		// Another replica took the execution over meanwhile: the Trade
		// service holding the order is the truth, whatever it recorded.
		err = forceJSON(ctx, s.st, approvalKey(a.ID), a, s.cfg.IdempotencyTTL)
	}
	if err != nil {
		s.log.ErrorContext(ctx, "could not record execution; the lease expiry re-drives it idempotently", "approval_id", a.ID, "error", err)
	} else {
		s.unindex(ctx, a) // its order holds now, not the approval
	}
	s.journalExecuted(ctx, a.DecidedBy, a.Order, a.ArgsDigest, a.ID, order, a.provenance(), detail)
	return s.stopIfHalted(ctx, a.Requester, a.RequesterClient, approvedOrder(a, order)), nil
}

// approvedOrder reports an approval whose order the Trade service holds,
// in the order's state.
func approvedOrder(a Approval, order backends.Order) Outcome {
	out := orderOutcome(order)
	out.Approval, out.IdempotencyKey = &a, a.Order.IdempotencyKey
	out.Message = "approved by " + a.DecidedBy + "; " + out.Message
	return out
}

// Status reports an approval (by approval id) or an order (by order id).
// An approved approval whose execution was interrupted is driven forward,
// so any replica's status call completes it.
func (s *Service) Status(ctx context.Context, p principal.Principal, id string) (Outcome, error) {
	if strings.HasPrefix(id, "APR-") {
		a, _, err := s.approval(ctx, id)
		if err != nil {
			return Outcome{}, err
		}
		if !visible(p, a) {
			return Outcome{}, ErrNotFound
		}
		return s.refresh(ctx, Outcome{Approval: &a})
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
	out := orderOutcome(o)
	out.Provenance = s.provenanceOf(ctx, o.ClientOrderID)
	return out, nil
}

// Cancel withdraws a pending approval (its requester only) or cancels a
// resting order at the Trade service.
func (s *Service) Cancel(ctx context.Context, p principal.Principal, id string) (Outcome, error) {
	out, err := s.cancel(ctx, p, id)
	if errors.Is(err, errAlreadyCancelled) {
		err = nil // cancelling twice is harmless: it is cancelled
	}
	return out, err
}

func (s *Service) cancel(ctx context.Context, p principal.Principal, id string) (Outcome, error) {
	if strings.HasPrefix(id, "APR-") {
		// An approval whose order was sent is cancelled as that order is
		// (an agent may hold only the approval id); one being sent cannot
		// be yet.
		if a, _, err := s.approval(ctx, id); err == nil && visible(p, a) {
			switch {
			case a.Status == ApprovalSubmitted && a.OrderID != "":
				id = a.OrderID
			case a.AwaitingSend():
				return s.approvalOutcome(ctx, a), &AgentError{is: ErrNotCancellable, msg: "approval " + a.ID + " was approved by " + a.DecidedBy +
					" and its order is being sent to the Trade service; it can be cancelled once it is there: poll get_order_status with " + a.ID + ", then cancel_order again"}
			}
		}
	}
	if strings.HasPrefix(id, "APR-") {
		return s.withdraw(ctx, p.Subject, id, "", func(a Approval) error {
			if !visible(p, a) {
				return ErrNotFound
			}
			// The requester's exact subject: folding case, as four eyes
			// does to refuse more, would here let another subject do more.
			if a.Requester != p.Subject && a.Status == ApprovalPending {
				return ErrNotRequester
			}
			return nil
		})
	}
	cur, err := s.Status(ctx, p, id)
	if err != nil {
		return Outcome{}, err
	}
	return s.cancelOrder(ctx, p.Subject, cur, "")
}

// errAlreadyCancelled: the order or approval was cancelled before this
// cancel (by someone else, or an earlier try). Cancel answers it as done;
// a cancel-all does not count it as its own.
var errAlreadyCancelled = errors.New("already cancelled")

// withdraw cancels a pending approval on behalf of by, if may allows it.
func (s *Service) withdraw(ctx context.Context, by, id, detail string, may func(Approval) error) (Outcome, error) {
	for {
		a, ver, err := s.approval(ctx, id)
		if err != nil {
			return Outcome{}, err
		}
		if err := may(a); err != nil {
			if errors.Is(err, ErrNotFound) {
				return Outcome{}, err
			}
			return s.approvalOutcome(ctx, a), err
		}
		if a.Status == ApprovalCancelled {
			return s.approvalOutcome(ctx, a), errAlreadyCancelled
		}
		if a.Status != ApprovalPending {
			return s.approvalOutcome(ctx, a), ErrNotCancellable
		}
		cancelled := JournalEntry{Action: "approval.cancelled", Principal: by, AccountID: a.Order.AccountID, ApprovalID: a.ID, IdempotencyKey: a.Order.IdempotencyKey, Detail: detail}
		if err := s.journal.Record(ctx, cancelled); err != nil {
			return Outcome{}, ErrNotRecorded
		}
		a.Status = ApprovalCancelled
		if detail != "" {
			a.Reason = detail
		}
		if _, err := updateJSON(ctx, s.st, approvalKey(a.ID), a, ver, s.cfg.IdempotencyTTL); errors.Is(err, store.ErrConflict) {
			s.superseded(ctx, cancelled, "a decision took effect first")
			continue
		} else if err != nil && !s.unrecorded(ctx, cancelled, a) {
			return Outcome{}, s.stateErr(ctx, err)
		}
		s.unindex(ctx, a)
		s.forgetEntered(ctx, a)
		return s.approvalOutcome(ctx, a), nil
	}
}

// superseded records that a step journaled before its effect never took
// effect: another change of the same approval won the compare-and-swap.
// The trail then shows no decision or cancellation that did not happen.
func (s *Service) superseded(ctx context.Context, e JournalEntry, why string) {
	s.followUp(ctx, e, ".superseded", why)
}

func (s *Service) followUp(ctx context.Context, e JournalEntry, suffix, why string) {
	e.Action, e.Detail, e.Time = e.Action+suffix, why, time.Time{}
	if err := s.journal.RecordDone(ctx, e); err != nil {
		s.log.ErrorContext(ctx, "journal refused a follow-up step", "action", e.Action, "approval_id", e.ApprovalID, "error", err)
	}
}

// unrecorded follows step e, journaled before the write of want that then
// failed for another reason than a lost race (a store error): read back, a
// write that did not apply is superseded, and one that cannot be read back
// is followed by e's action + ".unconfirmed" (the approval's state says
// whether it took effect). applied: it did take effect after all (the
// error came after the write).
func (s *Service) unrecorded(ctx context.Context, e JournalEntry, want Approval) (applied bool) {
	ctx = context.WithoutCancel(ctx)
	now, _, err := getJSON[Approval](ctx, s.st, approvalKey(want.ID))
	switch {
	case err == nil && want.DecidedAt != nil && now.DecidedAt != nil && now.DecidedAt.Equal(*want.DecidedAt) && now.DecidedBy == want.DecidedBy:
		// This decision (its time is this write's), whatever the approval
		// went on to since (an approved order another replica sent).
		return true
	case err == nil && want.Status == ApprovalCancelled && now.Status == ApprovalCancelled && now.Reason == want.Reason:
		return true
	case err == nil:
		s.superseded(ctx, e, "the state store did not record it; nothing changed")
	default:
		s.followUp(ctx, e, ".unconfirmed", "the state store did not confirm it; the approval's state says whether it took effect")
	}
	return false
}

// cancelOrder journals and sends the cancel of an order whose current
// state is cur.
// An order that is no longer working is not cancellable, and no cancel is
// journaled for it; one the Trade service refuses after the journal (it
// filled in between) is followed by order.cancel.superseded, so the trail
// shows no cancel that never happened.
func (s *Service) cancelOrder(ctx context.Context, by string, cur Outcome, detail string) (Outcome, error) {
	id := cur.Order.OrderID
	// Cancelling twice is harmless: an order already cancelled is the
	// answer. Any other finished order is not cancellable, and the agent
	// is told what it is.
	notCancelled := func(o backends.Order, msg string) (Outcome, error) {
		out := Outcome{Status: o.Status, Order: &o, Message: msg, Provenance: cur.Provenance}
		if o.Status == backends.StatusCancelled {
			return out, errAlreadyCancelled
		}
		out.Message = "not cancelled: " + msg
		return out, &AgentError{msg: fmt.Sprintf("order %s is %s (%s): %s", o.OrderID, o.Status, msg, ErrNotCancellable), is: ErrNotCancellable}
	}
	if !backends.Working(cur.Order.Status) {
		return notCancelled(*cur.Order, cur.Message)
	}
	cancel := JournalEntry{Action: "order.cancel", Principal: by, AccountID: cur.Order.AccountID, OrderID: id, Detail: detail}
	if err := s.journal.Record(ctx, cancel); err != nil {
		return Outcome{}, ErrNotRecorded
	}
	o, err := s.bs.Trade.CancelOrder(ctx, id)
	switch {
	case errors.Is(err, backends.ErrInvalid):
		s.superseded(ctx, cancel, "the Trade service refused the cancel")
		now, err := s.bs.Trade.GetOrder(ctx, id)
		switch {
		case err != nil:
			return Outcome{}, ErrTradeUnavailable
		case backends.Working(now.Status):
			// Still working (a cancel already pending, a lagging read): it
			// stays listed for cancel-all, and the agent may try again.
			return orderOutcome(now), &AgentError{msg: fmt.Sprintf("the Trade service refused to cancel order %s, which is still %s; try again shortly", id, now.Status)}
		}
		s.unindexOpen(ctx, now, cur.Provenance)
		return notCancelled(now, orderOutcome(now).Message)
	case err != nil:
		return Outcome{}, err
	}
	s.unindexOpen(ctx, o, cur.Provenance)
	out := orderOutcome(o)
	out.Provenance = cur.Provenance
	return out, nil
}

// ListPending returns pending approvals p may see, oldest first: from the
// per-account queues of the accounts p is entitled to, or the global queue
// for a principal entitled to every account.
func (s *Service) ListPending(ctx context.Context, p principal.Principal, limit int) ([]Approval, error) {
	indexes := []string{pendingIndex}
	if !p.Entitled(principal.AllAccounts) {
		indexes = indexes[:0]
		for _, acct := range p.Accounts {
			indexes = append(indexes, accountIndex(acct))
		}
	}
	out := []Approval{}
	for _, idx := range indexes {
		as, err := s.indexed(ctx, idx, 1000)
		if err != nil {
			return nil, err
		}
		for _, a := range as {
			if a.Status != ApprovalPending {
				s.unindexDone(ctx, a)
				continue
			}
			if visible(p, a) {
				out = append(out, a)
			}
		}
	}
	slices.SortFunc(out, func(x, y Approval) int {
		return cmp.Or(x.CreatedAt.Compare(y.CreatedAt), cmp.Compare(x.ID, y.ID))
	})
	return out[:min(limit, len(out))], nil
}
