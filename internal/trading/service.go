// Package trading is the state-changing half of the server: pre-trade
// checks, the approval gate (durable, four eyes, expiring) and exactly-once
// order execution. Every record lives in a store.Store shared by all
// replicas; every step that moves money is journaled (audited) before it
// happens, and fails closed when the journal or the store cannot record it.
package trading

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/confirm"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// Errors with messages safe to show an agent.
var (
	ErrNotFound       = agentError("no such order or approval, or it is not accessible to you")
	ErrKeyReused      = agentError("idempotency_key was already used for a different order; use a new key for a new order")
	ErrFourEyes       = agentError("four-eyes rule: the principal who requested an order cannot decide its approval")
	ErrAlreadyDecided = agentError("the approval was already decided")
	ErrExpired        = agentError("the approval has expired; the order was not placed")
	ErrNotCancellable = agentError("only a pending approval or a working order (accepted or partially_filled) can be cancelled")
	// ErrNotRequester: a pending approval is withdrawn by its requester
	// only; an approver rejects it instead.
	ErrNotRequester     = agentError("only the person who requested this approval can withdraw it; an approver can reject it instead (the approvals console or API); nothing was changed")
	ErrStateUnavailable = agentError("the approval and idempotency store is unavailable, so no order was placed; retry shortly with the same idempotency_key")
	ErrNotRecorded      = agentError("the order could not be recorded in the audit trail, so it was not placed; retry shortly with the same idempotency_key")
	// ErrTooManyOpen: the account has more pending approvals or working
	// orders through this server than one pre-trade check reads (heldScan),
	// so what they hold cannot all be counted and no order may pass.
	ErrTooManyOpen      = agentError("the account has more than 1,000 orders working or waiting for an approver through this server, more than a pre-trade check can count, so no new order can pass it: nothing was placed; cancel some first (list_orders, cancel_order)")
	ErrTradeUnavailable = agentError("the Trade service did not answer; retry with the same idempotency_key: it never creates a second order")
	ErrClaimLost        = agentError("another attempt with the same idempotency_key took this order over, and this one sent nothing; retry with the same idempotency_key to learn its outcome")
	// ErrHalted: the kill switch stops the order (the error's message names
	// the halt's scope and reason), or its state cannot be read.
	ErrHalted         = agentError("trading is halted by the kill switch")
	ErrTooManyPending = agentError("too many of your orders are waiting for an approver, so this one was not placed; wait for decisions (list_pending_approvals, get_order_status) or cancel some with cancel_order, then retry with the same idempotency_key")
)

// errOutcomeUnknown: the order was sent and no answer came back. It may
// still land; the key is marked sent, so every retry reconciles and then
// resends as is, never re-checking the order against its own late fill.
var errOutcomeUnknown = fmt.Errorf("%w (sent, no answer)", ErrTradeUnavailable)

// Outcome statuses of place_order, get_order_status and cancel_order that
// are not an order's own: before an order reaches the Trade service. Once it
// has, the outcome's status is the order's (backends.StatusAccepted,
// StatusPartiallyFilled, StatusFilled, StatusCancelled, StatusRejected,
// StatusExpired): an agent is told an order filled only when it did.
const (
	StatusPendingApproval = "pending_approval"
	// StatusApproved: an approver released the order; it is being sent.
	StatusApproved = "approved"
	// StatusSubmitted: the order reached the Trade service, whose current
	// state of it could not be read just now.
	StatusSubmitted = "submitted"
	// StatusRejected: refused by pre-trade checks, an approver or the Trade
	// service; nothing is working.
	StatusRejected = backends.StatusRejected
	// StatusExpired: an approval nobody decided in time, or an order whose
	// time in force ended.
	StatusExpired = backends.StatusExpired
	// StatusCancelled: a withdrawn approval or order.
	StatusCancelled = backends.StatusCancelled
	// StatusNeedsConfirmation: nothing was placed; the user must confirm.
	StatusNeedsConfirmation = "confirmation_required"
	// StatusNotConfirmed: the user declined; nothing was placed.
	StatusNotConfirmed = "not_confirmed"
)

// Outcome is what the order tools return.
type Outcome struct {
	Status         string          `json:"status" jsonschema:"confirmation_required, not_confirmed, pending_approval, approved (being sent), rejected, expired or cancelled; once the Trade service has the order, its state: accepted (working, nothing filled), partially_filled, filled, cancelled, rejected or expired; submitted when that state could not be read just now"`
	Message        string          `json:"message" jsonschema:"what happened and what to do next"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	Replayed       bool            `json:"replayed,omitempty" jsonschema:"true when this is the stored outcome of an earlier call with the same idempotency_key"`
	Order          *backends.Order `json:"order,omitempty"`
	Approval       *Approval       `json:"approval,omitempty"`
	Violations     []string        `json:"violations,omitempty" jsonschema:"pre-trade rules that rejected the order"`
	Preview        *policy.Preview `json:"preview,omitempty" jsonschema:"the pre-trade check, when the order still needs the user's confirmation"`
	Duplicate      *Duplicate      `json:"possible_duplicate,omitempty" jsonschema:"an identical order entered moments ago under another idempotency_key: place this one only if the user confirms they want a second order"`
	Provenance     *Provenance     `json:"provenance,omitempty" jsonschema:"how the order came to be decided: the user and agent, the confirmation, the policy version, the approver"`
}

// AgentError is an error whose message was written for the agent: safe to
// show (no internals) and saying what to do next. Every sentinel of this
// package is one, so a new one cannot leak as "internal error" for want of
// being listed somewhere.
type AgentError struct {
	msg string
	is  error // the sentinel a specific message stands for, if any
}

func (e *AgentError) Error() string { return e.msg }

// Is lets a specific message match its sentinel (errors.Is(err, ErrHalted)).
func (e *AgentError) Is(target error) bool { return e.is != nil && target == e.is }

func agentError(msg string) error { return &AgentError{msg: msg} }

// Journal is the audit trail as the service uses it (audit.Journal):
// Record journals a step before it takes effect, and an error means the
// step must not happen (fail closed); RecordDone journals a step that has
// taken effect (an order the Trade service accepted).
type Journal interface {
	Record(ctx context.Context, e JournalEntry) error
	RecordDone(ctx context.Context, e JournalEntry) error
}

// JournalEntry is one journaled step.
type JournalEntry = audit.Step

// Config are the service's settings.
type Config struct {
	Rules       policy.Rules
	ApprovalTTL time.Duration
	// Lease bounds how long a replica may hold an execution before another
	// replica (or a retry) may take it over; it must exceed a Trade call.
	Lease time.Duration
	// IdempotencyTTL is how long outcomes are remembered.
	IdempotencyTTL time.Duration
	// MaxPending is how many approvals one requester may have pending at
	// once (default 20).
	MaxPending int
	// Metrics, if set, counts decisions and expiries, and holds the gauges
	// RefreshApprovalGauges keeps (see NewMetrics); nil measures nothing.
	Metrics *Metrics
	// Halt is the kill switch, checked before every order goes out (nil:
	// none, for tests of other things).
	Halt *halt.Switch
	// ResendWindow is how long after an unanswered send a retry still
	// resends the same order unchecked, because the first may yet land;
	// after it, the Trade service's "never seen" is final and the order is
	// checked and confirmed afresh. It must exceed a Trade call's deadline
	// (default 15 minutes, or four leases if longer).
	ResendWindow time.Duration
	// DuplicateWindow: an order identical in account, side, ticker and
	// quantity to one entered this recently under another idempotency key
	// needs the user to confirm it is not a duplicate (0: no check).
	DuplicateWindow time.Duration
}

// Service implements the order tools' behaviour.
type Service struct {
	cfg     Config
	st      store.Store
	bs      backends.Set
	journal Journal
	signer  *confirm.Signer
	log     *slog.Logger
	now     func() time.Time
	// policyVersion names the rule set (policy.Rules.Version), recorded
	// with each order.
	policyVersion string
	leases        *leaseWaiters
}

// New returns a Service. signer signs and checks the confirmations put to
// users through input requests (nil: such confirmations are unavailable);
// now is the clock (nil: time.Now).
func New(cfg Config, st store.Store, bs backends.Set, j Journal, signer *confirm.Signer, log *slog.Logger, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 20
	}
	if cfg.Lease == 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.IdempotencyTTL == 0 {
		cfg.IdempotencyTTL = 7 * 24 * time.Hour
	}
	if cfg.ResendWindow == 0 {
		cfg.ResendWindow = max(15*time.Minute, 4*cfg.Lease)
	}
	return &Service{cfg: cfg, st: st, bs: bs, journal: j, signer: signer, log: log, now: now, policyVersion: cfg.Rules.Version(), leases: &leaseWaiters{}}
}

// Preview runs the pre-trade check for p without side effects. With an
// idempotency key, the order's own approval (a retry's) is not counted
// against it.
func (s *Service) Preview(ctx context.Context, p principal.Principal, o OrderArgs) (policy.Preview, error) {
	if err := o.validate(); err != nil {
		return policy.Preview{}, err
	}
	o = o.Normalize()
	if !p.Entitled(o.AccountID) {
		return policy.Preview{}, fmt.Errorf("account %q: %w", o.AccountID, backends.ErrNotFound)
	}
	var self selfOrder
	if o.IdempotencyKey != "" {
		self = selfOf(p.Subject, o.IdempotencyKey)
	}
	pre, err := s.check(ctx, p.Subject, p.ClientID, o, self, false)
	if err == nil {
		if herr := s.guard(ctx, p.Subject, p.ClientID, o.AccountID); herr != nil {
			pre.Violations, pre.Allowed = append(pre.Violations, herr.Error()), false
		}
	}
	return pre, err
}

// Recheck runs the pre-trade check of a pending approval's order again, as
// the account and market are now (the approval itself not counted against
// its own order), for an approver about to decide it.
func (s *Service) Recheck(ctx context.Context, p principal.Principal, a Approval) (policy.Preview, error) {
	if !p.Entitled(a.Order.AccountID) {
		return policy.Preview{}, ErrNotFound
	}
	return s.check(ctx, a.Requester, a.RequesterClient, a.Order, a.self(), false)
}

// check runs the pre-trade policy against the account and market as they
// are now; see evaluate.
func (s *Service) check(ctx context.Context, subject, agent string, o OrderArgs, self selfOrder, strict bool) (policy.Preview, error) {
	return s.evaluate(ctx, subject, agent, o, self, strict)
}

// market is what a pre-trade check reads from the backends.
type market struct {
	portfolio backends.PortfolioValuation
	quote     backends.Quote
}

func (s *Service) fetch(ctx context.Context, o OrderArgs) (market, error) {
	pv, err := s.bs.Portfolio.GetPortfolio(ctx, o.AccountID)
	if err != nil {
		return market{}, fmt.Errorf("portfolio: %w", err)
	}
	qs, err := s.bs.MarketData.Quotes(ctx, []string{o.Ticker})
	if err != nil {
		return market{}, fmt.Errorf("quote: %w", err)
	}
	if len(qs.Quotes) == 0 {
		return market{}, &AgentError{msg: fmt.Sprintf("ticker %q is not a listed equity the market data knows; find the right ticker with search_equities", o.Ticker), is: ErrUnknownTicker}
	}
	return market{portfolio: pv, quote: qs.Quotes[0]}, nil
}

// evaluate runs the pre-trade policy on m, with what the account's other
// orders (awaiting approval, being sent, working) hold counted as spent, and
// what the requester (subject) and the agent entered today counted against
// the daily limits. self is this order (selfOrder). strict checks
// (placing, executing) fail when the state store cannot say what is
// committed or used; a preview goes on without it and says so.
//
// What other orders hold is read before the account: an order that fills
// between the two reads is then counted twice (working, and gone from the
// cash), never not at all.
func (s *Service) evaluate(ctx context.Context, subject, agent string, o OrderArgs, self selfOrder, strict bool) (policy.Preview, error) {
	committed, err := s.committed(ctx, o.AccountID, self)
	unknown := err != nil
	if unknown && (strict || !errors.Is(err, ErrStateUnavailable) && !errors.Is(err, ErrTradeUnavailable)) {
		return policy.Preview{}, err
	}
	m, err := s.fetch(ctx, o)
	if err != nil {
		return policy.Preview{}, err
	}
	usage, err := s.usage(ctx, subject, agent, o.IdempotencyKey)
	if err != nil {
		if strict || !errors.Is(err, ErrStateUnavailable) {
			return policy.Preview{}, err
		}
		usage.Unknown = true
	}
	p := policy.Check(s.cfg.Rules, o.policyOrder(), m.portfolio, m.quote, committed, usage, s.now())
	p.CommittedUnknown = unknown
	p.PolicyVersion = s.policyVersion
	return p, nil
}

// resolution is what resolve learned about an idempotency key.
type resolution struct {
	// Found: the key has an answer, Outcome (stored, its approval's, or the
	// order the Trade service holds).
	Found   bool
	Outcome Outcome
	// Resend: an earlier attempt sent the order and never heard back, and
	// the Trade service has not seen it (yet): place it again as it is, with
	// no new check or confirmation (it was checked and confirmed before it
	// was sent, and a late arrival must not count against itself).
	Resend bool
	// Unsettled: as Resend, but first sent longer ago than the resend
	// window, so it is not sent again unchecked; until its last send can
	// no longer land, it is not checked afresh either (errOutcomeUnknown).
	Unsettled bool
}

// resolve answers a place_order whose idempotency key may have been used
// before, from what is known about it, before any pre-trade check runs (an
// order must never be checked against its own fill or its own approval):
// the stored outcome, else the approval the key created, else the order the
// Trade service holds for the key's client order id. Neither Found nor
// Resend: the order was never recorded nor sent, and may be checked,
// confirmed and placed. A call with the same key in progress elsewhere is
// waited for.
func (s *Service) resolve(ctx context.Context, p principal.Principal, o OrderArgs) (resolution, error) {
	o = o.Normalize()
	if !p.Entitled(o.AccountID) {
		return resolution{}, fmt.Errorf("account %q: %w", o.AccountID, backends.ErrNotFound)
	}
	key, digest := idemKey(p.Subject, "place_order", o.IdempotencyKey), o.Digest()
	rec, ver, err := s.fence(ctx, key, digest)
	switch {
	case errors.Is(err, store.ErrNotFound):
		ver = 0
	case err != nil:
		return resolution{}, err
	case rec.State == idemDone:
		out, err := s.refresh(ctx, *rec.Outcome)
		out.Replayed = true
		return resolution{Found: true, Outcome: out}, err
	}
	out, found, err := s.reconcile(ctx, p, o, digest, true)
	if err != nil || !found {
		mayLand := rec.State == idemSent && s.landable(rec)
		return resolution{Resend: mayLand && s.resendable(rec), Unsettled: mayLand && !s.resendable(rec)}, err
	}
	s.settle(ctx, key, digest, ver, out)
	out.Replayed = true
	return resolution{Found: true, Outcome: out}, nil
}

// fence reads the key's idempotency record as await does, and takes a
// lapsed claim away from its owner: what is answered from here on (fresh
// checks may refuse the order) must stay true, and an owner that is only
// slow would otherwise renew its claim, its version unchanged, and send.
// The owner's renewal now fails, so it sends nothing; if it renewed first,
// its lease runs again and this call waits for its outcome.
func (s *Service) fence(ctx context.Context, key, digest string) (idemRecord, int64, error) {
	for {
		rec, ver, err := s.await(ctx, key, digest)
		if err != nil || rec.State != idemInProgress {
			return rec, ver, err
		}
		lapsed := idemRecord{Digest: digest, State: idemReleased}
		if rec.Sent {
			lapsed.State, lapsed.SentAt, lapsed.FirstSentAt, lapsed.HaltMark, lapsed.HaltMarkAt = idemSent, rec.SentAt, rec.firstSent(), rec.HaltMark, rec.HaltMarkAt
		}
		nv, err := updateJSON(ctx, s.st, key, lapsed, ver, s.cfg.IdempotencyTTL)
		switch {
		case err == nil:
			return lapsed, nv, nil
		case !errors.Is(err, store.ErrConflict):
			return rec, 0, s.stateErr(ctx, err)
		}
	}
}

// reconcile finds what an earlier attempt with o's key left behind: its
// approval, or (when askTrade) the order the Trade service accepted for its
// client order id, whose missing order.executed it journals. found is false
// when there is neither. If the Trade service cannot say, nothing may be
// decided: the error is ErrTradeUnavailable.
func (s *Service) reconcile(ctx context.Context, p principal.Principal, o OrderArgs, digest string, askTrade bool) (Outcome, bool, error) {
	a, _, err := s.approval(ctx, approvalID(p.Subject, o.IdempotencyKey))
	switch {
	case err == nil:
		if a.ArgsDigest != digest {
			return Outcome{}, false, ErrKeyReused // an older approval outlived its idempotency record
		}
		if a.Status == ApprovalPending {
			// The earlier attempt may have died before indexing it.
			if err := s.index(ctx, a); err != nil {
				return Outcome{}, false, err
			}
		}
		out, err := s.refresh(ctx, Outcome{Approval: &a})
		return out, true, err
	case !errors.Is(err, ErrNotFound):
		return Outcome{}, false, err
	case !askTrade:
		return Outcome{}, false, nil
	}
	order, err := s.bs.Trade.OrderByClientID(ctx, clientOrderID(p.Subject, o.IdempotencyKey))
	switch {
	case errors.Is(err, backends.ErrNotFound):
		return Outcome{}, false, nil
	case err != nil:
		s.log.WarnContext(ctx, "cannot ask the Trade service whether an earlier attempt reached it", "error", err)
		return Outcome{}, false, ErrTradeUnavailable
	case !order.Matches(o.request(order.ClientOrderID)):
		return Outcome{}, false, ErrKeyReused
	}
	prov := s.provenanceOf(ctx, order.ClientOrderID)
	s.journalExecuted(ctx, p.Subject, o, digest, "", order, prov, "reconciled: the Trade service had accepted the order of an earlier attempt")
	out := orderOutcome(order)
	out.Provenance = prov
	// A halt engaged while it was on its way stops it here too.
	return s.stopIfHalted(ctx, p.Subject, p.ClientID, out), true, nil
}

// settle stores a reconciled outcome as the key's, if the record is still
// as it was read (version ver, 0: absent), so later retries need not ask the
// Trade service again. Losing that race is harmless: the outcome is the same.
func (s *Service) settle(ctx context.Context, key, digest string, ver int64, out Outcome) {
	rec := idemRecord{Digest: digest, State: idemDone, Outcome: &out}
	var err error
	if ver == 0 {
		err = createJSON(ctx, s.st, key, rec, s.cfg.IdempotencyTTL)
	} else {
		_, err = updateJSON(ctx, s.st, key, rec, ver, s.cfg.IdempotencyTTL)
	}
	if err != nil && !errors.Is(err, store.ErrConflict) {
		s.log.WarnContext(ctx, "could not store the reconciled outcome; the next retry reconciles again", "error", err)
	}
}

// place places a confirmed order: exactly once per (principal, idempotency
// key), whatever the concurrency or crashes.
//
// approvalReason, if not empty, sends the order to a human approver whatever
// its size, for that reason (e.g. a confirmation the server cannot verify in
// live trading). prov is how the order came to be confirmed.
func (s *Service) place(ctx context.Context, p principal.Principal, o OrderArgs, approvalReason string, prov *Provenance) (Outcome, error) {
	o = o.Normalize()
	if !p.Entitled(o.AccountID) {
		return Outcome{}, fmt.Errorf("account %q: %w", o.AccountID, backends.ErrNotFound)
	}
	key := idemKey(p.Subject, "place_order", o.IdempotencyKey)
	digest := o.Digest()
	out, owned, ver, prev, err := s.claim(ctx, key, digest)
	if err != nil || !owned {
		return out, err
	}
	takeover := prev.State != ""
	if !takeover {
		s.remember(ctx, p.Subject, o)
	}
	// renew re-takes the claim just before the order is sent (sending) or
	// its approval created: a claim that lapsed to another attempt (a slow
	// check, a stalled journal) must not act, since that attempt owns the
	// key now. Renewed to send, the record says the order may be on the
	// wire from then on, so that a takeover resends rather than re-checks.
	// A send may land for a resend window after it, and is resent unchecked
	// only within the window of the first send: a retry that keeps
	// resending must not keep the order going out unchecked for ever.
	mayLand := prev.mayBeSent() && s.landable(prev)
	resend := mayLand && s.resendable(prev)
	sent, sentAt, firstAt, haltMark, haltMarkAt := resend, prev.SentAt, prev.firstSent(), prev.HaltMark, prev.HaltMarkAt
	// pass is the kill switch check a first send passed.
	renew := func(ctx context.Context, sending bool, pass haltPass) error {
		sent = sent || sending
		if sending {
			sentAt = s.now().UTC()
			if !resend {
				firstAt, haltMark, haltMarkAt = sentAt, pass.Mark, pass.at
			}
		}
		lease := idemRecord{Digest: digest, State: idemInProgress, LeaseUntil: s.now().Add(s.cfg.Lease), Sent: sent, SentAt: sentAt, FirstSentAt: firstAt,
			HaltMark: haltMark, HaltMarkAt: haltMarkAt}
		nv, err := updateJSON(ctx, s.st, key, lease, ver, s.cfg.IdempotencyTTL)
		switch {
		case errors.Is(err, store.ErrConflict):
			return ErrClaimLost
		case err != nil:
			return s.stateErr(ctx, err)
		}
		ver = nv
		return nil
	}

	// Under the claim, before any check: an earlier attempt that took this
	// key may have created the approval or reached the Trade service.
	out, found, err := s.reconcile(ctx, p, o, digest, takeover)
	switch {
	case err != nil || found:
	case mayLand && !resend:
		// First sent longer ago than the window: not again unchecked, and
		// not checked afresh while the last send may still land.
		sent, err = true, errOutcomeUnknown
	case resend:
		// Sent before, never answered, not seen by the Trade service (yet):
		// the same order again, unchecked but for the kill switch (and a
		// halt released since the send it repeats); the client order id
		// makes a late arrival of the first one and this one the same
		// order. (Sent longer ago than that, it never landed: it is decided
		// afresh below.)
		first := prev.haltPass()
		if err = s.guardSince(ctx, p.Subject, p.ClientID, o.AccountID, first.Pass, first.at); err == nil {
			if firstProv := s.provenanceOf(ctx, clientOrderID(p.Subject, o.IdempotencyKey)); firstProv != nil {
				prov = firstProv
			}
			resent := func(ctx context.Context, sending bool) error { return renew(ctx, sending, haltPass{}) } // the first send's pass stays
			out, err = s.send(ctx, p, o, digest, "resend after an unanswered attempt", resent, prov, 0, nil, first)
		}
		err = s.unsure(ctx, err)
	default:
		out, err = s.decide(ctx, p, o, digest, approvalReason, renew, prov)
	}
	// What happened is recorded even if the caller has gone meanwhile (an
	// agent that gave up while its order was on the wire): a retry reads it.
	ctx = context.WithoutCancel(ctx)
	switch {
	case errors.Is(err, ErrClaimLost):
		return Outcome{}, err // the record is another attempt's now
	case err != nil:
		// Nothing irrevocable happened, or it is safe to redo (the backend
		// dedups the client order id, and a retry reconciles first): hand the
		// key back for a retry, remembering an unanswered send.
		next := idemRecord{Digest: digest, State: idemReleased}
		if errors.Is(err, errOutcomeUnknown) || sent {
			next.State, next.SentAt, next.FirstSentAt, next.HaltMark, next.HaltMarkAt = idemSent, sentAt, firstAt, haltMark, haltMarkAt
		}
		if _, rerr := updateJSON(ctx, s.st, key, next, ver, s.cfg.IdempotencyTTL); rerr != nil {
			s.log.WarnContext(ctx, "could not release idempotency claim; it frees itself when the lease ends", "error", rerr)
		}
		return Outcome{}, err
	}
	out.IdempotencyKey = o.IdempotencyKey
	done := idemRecord{Digest: digest, State: idemDone, Outcome: &out}
	_, err = updateJSON(ctx, s.st, key, done, ver, s.cfg.IdempotencyTTL)
	if errors.Is(err, store.ErrConflict) && out.Order != nil {
		// Something took the key over after we sent: the Trade service's
		// order is the truth, whatever that attempt recorded.
		err = forceJSON(ctx, s.st, key, done, s.cfg.IdempotencyTTL)
	}
	if err != nil {
		// The order is placed (or pending) and its record is durable in the
		// approval or at the backend; a retry re-derives the same outcome.
		s.log.ErrorContext(ctx, "could not store idempotent outcome", "error", err)
	}
	return out, nil
}

// landable reports whether rec's unanswered send may still land (see
// landable).
func (s *Service) landable(rec idemRecord) bool {
	return landable(rec.SentAt, s.now(), s.cfg.ResendWindow)
}

// resendable reports whether rec's order may still be resent unchecked:
// within the resend window of its first send.
func (s *Service) resendable(rec idemRecord) bool {
	return landable(rec.firstSent(), s.now(), s.cfg.ResendWindow)
}

// unsure is the answer to a resend that stopped before the wire: this
// attempt sent nothing, but the earlier, unanswered send may still land,
// so "no order was placed" would not be true.
func (s *Service) unsure(ctx context.Context, err error) error {
	switch {
	case err == nil, errors.Is(err, ErrClaimLost), errors.Is(err, errOutcomeUnknown):
		return err
	case errors.Is(err, ErrHalted):
		return &AgentError{msg: "the kill switch stops this order now, so this attempt sent nothing; but an earlier send of it got no answer and may still land: " +
			"read its status again, or retry with the same idempotency_key, to learn its outcome (reads and cancel_order still work)", is: ErrHalted}
	}
	s.log.WarnContext(ctx, "a resend stopped before the wire; the first send may still land", "error", err)
	return errOutcomeUnknown
}

// await reads the key's idempotency record, waiting while another call owns
// it and its lease runs: what it returns is done, released, lapsed, or (with
// store.ErrNotFound) absent.
func (s *Service) await(ctx context.Context, key, digest string) (idemRecord, int64, error) {
	for wait := 10 * time.Millisecond; ; wait = min(wait*2, 200*time.Millisecond) {
		rec, ver, err := getJSON[idemRecord](ctx, s.st, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return rec, 0, err
		case err != nil:
			return rec, 0, s.stateErr(ctx, err)
		case rec.Digest != digest:
			return rec, 0, ErrKeyReused
		case rec.State != idemInProgress || !s.now().Before(rec.LeaseUntil):
			return rec, ver, nil
		}
		// Another call owns the key and is working: wait for its outcome.
		select {
		case <-ctx.Done():
			return rec, 0, fmt.Errorf("waiting for a concurrent call with the same idempotency_key: %w", ctx.Err())
		case <-time.After(wait):
		}
	}
}

// claim takes ownership of the idempotency key, or returns the outcome of
// the caller that owned it. Concurrent callers with the same key wait for
// the owner; an owner that vanished (crash, scale-down) loses its lease.
// prev is the record an earlier attempt left (zero when the key is new):
// that attempt may have reached the Trade service.
func (s *Service) claim(ctx context.Context, key, digest string) (out Outcome, owned bool, ver int64, prev idemRecord, err error) {
	for {
		rec, v, err := s.await(ctx, key, digest)
		lease := idemRecord{Digest: digest, State: idemInProgress, LeaseUntil: s.now().Add(s.cfg.Lease)}
		switch {
		case errors.Is(err, store.ErrNotFound):
			err = createJSON(ctx, s.st, key, lease, s.cfg.IdempotencyTTL)
			if err == nil {
				return Outcome{}, true, 1, idemRecord{}, nil
			}
		case err != nil:
			return Outcome{}, false, 0, idemRecord{}, err
		case rec.State == idemDone:
			out, err := s.refresh(ctx, *rec.Outcome)
			out.Replayed = true
			return out, false, 0, idemRecord{}, err
		default: // released, sent, or the owner's lease ran out
			lease.Sent, lease.SentAt, lease.FirstSentAt, lease.HaltMark, lease.HaltMarkAt = rec.mayBeSent(), rec.SentAt, rec.firstSent(), rec.HaltMark, rec.HaltMarkAt // still, until this attempt knows better
			nv, err := updateJSON(ctx, s.st, key, lease, v, s.cfg.IdempotencyTTL)
			if err == nil {
				// A lapsed owner renewed its claim just before sending and
				// sends within BACKEND_TIMEOUT, below the lease: it either
				// sent long ago (the Trade service answers the lookup) or
				// never will (its renewal now fails).
				return Outcome{}, true, nv, rec, nil
			}
		}
		if !errors.Is(err, store.ErrConflict) {
			return Outcome{}, false, 0, idemRecord{}, s.stateErr(ctx, err)
		}
	}
}

// decide runs the kill switch and the checks, counts the order against
// the day's limits, and either records a pending approval or executes.
func (s *Service) decide(ctx context.Context, p principal.Principal, o OrderArgs, digest, approvalReason string, renewMarked func(context.Context, bool, haltPass) error, prov *Provenance) (Outcome, error) {
	// The order's send keeps the pass, dated before the switch is read: a
	// halt engaged after this check stops the send, and a resend of it,
	// even once released.
	at := s.now().UTC()
	hp, err := s.guardMark(ctx, p.Subject, p.ClientID, o.AccountID)
	if err != nil {
		return Outcome{}, err
	}
	pass := haltPass{Pass: hp, at: at}
	renew := func(ctx context.Context, sending bool) error { return renewMarked(ctx, sending, pass) }
	// The account, the market and what other orders commit are read again
	// under the claim: they may have changed since the preview the user
	// confirmed (an elicitation can take minutes), and must be known to
	// place. The account's lease holds from this check until this order
	// counts for the next one (its approval recorded, or it listed to be
	// sent).
	acct, err := s.lockAccount(ctx, o.AccountID)
	if err != nil {
		return Outcome{}, err
	}
	defer acct.unlock(ctx)
	pre, err := s.evaluate(ctx, p.Subject, p.ClientID, o, selfOf(p.Subject, o.IdempotencyKey), true)
	if err != nil {
		return Outcome{}, err
	}
	if !pre.Allowed {
		return Outcome{Status: StatusRejected, Violations: pre.Violations,
			Message: "the order was rejected by pre-trade checks and not placed; see violations"}, nil
	}
	release, err := s.claimRecent(ctx, o, prov)
	if err != nil {
		return Outcome{}, err
	}
	entered := false
	defer func() {
		if !entered {
			release()
		}
	}()
	if prov == nil {
		prov = s.provenance(ctx, p, ConfirmedUnknown, previewDigest(pre))
	}
	entry := JournalEntry{Action: "order.intent", Principal: p.Subject, AccountID: o.AccountID, ArgsDigest: digest, IdempotencyKey: o.IdempotencyKey, Provenance: prov.fields()}
	if approvalReason != "" {
		pre.RequiresApproval = true
		pre.ApprovalReasons = append(pre.ApprovalReasons, approvalReason)
	}
	if pre.RequiresApproval {
		a := Approval{
			ID: approvalID(p.Subject, o.IdempotencyKey), Status: ApprovalPending, Requester: p.Subject, RequesterClient: p.ClientID, Order: o, ArgsDigest: digest,
			ClientOrderID: clientOrderID(p.Subject, o.IdempotencyKey), Preview: &pre, Provenance: prov,
			CreatedAt: s.now().UTC(), ExpiresAt: s.now().Add(s.cfg.ApprovalTTL).UTC(),
		}
		entry.Action, entry.ApprovalID = "approval.requested", a.ID
		requester, err := s.lockRequester(ctx, p.Subject)
		if err != nil {
			return Outcome{}, err
		}
		defer requester.unlock(ctx)
		if err := s.underPendingCap(ctx, p.Subject, a.ID); err != nil {
			return Outcome{}, err
		}
		if err := s.journal.Record(ctx, entry); err != nil {
			s.log.ErrorContext(ctx, "journal refused approval request", "error", err)
			return Outcome{}, ErrNotRecorded
		}
		// As before a send: a claim that lapsed to another attempt (a stalled
		// journal) must not create the approval that attempt may have
		// answered against.
		if err := renew(ctx, false); err != nil {
			return Outcome{}, err
		}
		if err := s.reserve(ctx, p.Subject, p.ClientID, o.IdempotencyKey, pre.EstimatedNotional); err != nil {
			return Outcome{}, err
		}
		// Nor may it be created if another order on the account, or of the
		// requester, was checked since this one was (a lease that ran out).
		if err := acct.renew(ctx); err != nil {
			return Outcome{}, err
		}
		if err := requester.renew(ctx); err != nil {
			return Outcome{}, err
		}
		// The id derives from the idempotency key: a retry after a crash
		// finds the approval it already created instead of a second one.
		switch err := s.createApproval(ctx, a); {
		case errors.Is(err, store.ErrConflict):
			existing, _, err := s.approval(ctx, a.ID)
			if err != nil {
				return Outcome{}, err
			}
			if existing.ArgsDigest != digest {
				return Outcome{}, ErrKeyReused // an older approval outlived its idempotency record
			}
			if existing.Status == ApprovalPending {
				// Our earlier attempt may have died before indexing it.
				if err := s.index(ctx, existing); err != nil {
					return Outcome{}, err
				}
			}
			entered = true
			return s.approvalOutcome(ctx, existing), nil
		case err != nil:
			return Outcome{}, err
		}
		if err := s.index(ctx, a); err != nil {
			out, err := s.unlisted(ctx, a, entry, err)
			entered = err == nil
			return out, err
		}
		entered = true
		s.rememberEntered(ctx, o, a.ID)
		return Outcome{Status: StatusPendingApproval, Approval: &a, Provenance: prov,
			Message: fmt.Sprintf("the order needs a human approver (%s); it executes once approved by someone other than you before %s. Poll get_order_status with approval_id %s.",
				joinReasons(pre.ApprovalReasons), a.ExpiresAt.Format(time.RFC3339), a.ID)}, nil
	}
	out, err := s.send(ctx, p, o, digest, "", renew, prov, pre.EstimatedNotional, acct, pass)
	// Sent, or maybe sent: the order was entered. One the Trade service
	// refused is no duplicate of a later one.
	entered = (err == nil && out.Status != StatusRejected) || errors.Is(err, errOutcomeUnknown)
	return out, err
}

// tradeRefusal is why the Trade service refused an order, for the agent:
// its own words for an invalid order (the client keeps them to what the
// service says of the order), never a route or an internal name.
func tradeRefusal(err error) string {
	if errors.Is(err, backends.ErrNotFound) {
		return "it does not know the account or the instrument"
	}
	return strings.TrimPrefix(err.Error(), backends.ErrInvalid.Error()+": ")
}

// errApprovalUnknown: the store did not say whether an approval was
// recorded; a retry with the same key learns it.
var errApprovalUnknown = agentError("the approval and idempotency store did not answer, so whether this order's approval was recorded is not known; retry with the same idempotency_key to learn it (it never creates a second one)")

// createApproval records a new approval. A write whose answer was lost is
// read back: created after all is success, unknown is errApprovalUnknown,
// and only an approval known not to exist is "nothing was placed".
func (s *Service) createApproval(ctx context.Context, a Approval) error {
	err := createJSON(ctx, s.st, approvalKey(a.ID), a, s.cfg.IdempotencyTTL)
	if err == nil || errors.Is(err, store.ErrConflict) {
		return err
	}
	got, _, rerr := getJSON[Approval](ctx, s.st, approvalKey(a.ID))
	switch {
	case rerr == nil && got.ArgsDigest == a.ArgsDigest && got.CreatedAt.Equal(a.CreatedAt):
		return nil
	case rerr == nil:
		return store.ErrConflict // another attempt's
	case errors.Is(rerr, store.ErrNotFound):
		return s.stateErr(ctx, err)
	}
	s.log.WarnContext(ctx, "cannot tell whether an approval was recorded", "approval_id", a.ID, "error", err, "read_error", rerr)
	return errApprovalUnknown
}

// unlisted answers for an approval recorded but not listed (the store
// failed in between): approvers may not see it and it holds nothing, so it
// is withdrawn and the call answers that nothing was placed (true), with
// the request's journal step superseded; one an approver decided meanwhile
// is answered as it stands.
func (s *Service) unlisted(ctx context.Context, a Approval, requested JournalEntry, cause error) (Outcome, error) {
	ctx = context.WithoutCancel(ctx)
	w := a
	w.Status, w.Reason = ApprovalCancelled, "withdrawn: it could not be listed for approvers (the state store failed), and nothing was placed"
	_, err := updateJSON(ctx, s.st, approvalKey(a.ID), w, 1, s.cfg.IdempotencyTTL)
	switch {
	case err == nil:
		s.unindex(ctx, w)
		s.superseded(ctx, requested, w.Reason)
		return Outcome{}, cause
	case errors.Is(err, store.ErrConflict):
		if now, _, err := s.approval(ctx, a.ID); err == nil {
			return s.approvalOutcome(ctx, now), nil
		}
	}
	return Outcome{}, errApprovalUnknown
}

// send journals the intent and keeps the order's provenance, lists the
// order to be sent (listSending), renews the key's claim and sends the
// order. An answer that never came is errOutcomeUnknown: the order may
// still land, and stays listed. notional is what the order counts against
// the daily limits when it goes out (a resend's reservation, made at its
// first send, is found again). acct, if not nil, is the account's lease
// the order was checked under: it must still be this call's when the
// order is listed, and is handed back then (the account's next check
// counts the order from then on).
func (s *Service) send(ctx context.Context, p principal.Principal, o OrderArgs, digest, detail string, renew func(context.Context, bool) error, prov *Provenance, notional float64, acct *heldLease, pass haltPass) (Outcome, error) {
	entry := JournalEntry{Action: "order.intent", Principal: p.Subject, AccountID: o.AccountID, ArgsDigest: digest, IdempotencyKey: o.IdempotencyKey, Detail: detail, Provenance: prov.fields()}
	if err := s.journal.Record(ctx, entry); err != nil {
		s.log.ErrorContext(ctx, "journal refused order intent", "error", err)
		return Outcome{}, ErrNotRecorded
	}
	coid := clientOrderID(p.Subject, o.IdempotencyKey)
	if err := s.keepProvenance(ctx, coid, prov); err != nil {
		return Outcome{}, err
	}
	// Counted against the day's limits before the lease says the order may
	// be on the wire: a takeover resends such an order unchecked, so it must
	// already be counted (the count is per key: a resend adds nothing).
	if err := s.reserve(ctx, p.Subject, p.ClientID, o.IdempotencyKey, notional); err != nil {
		return Outcome{}, err
	}
	if acct != nil {
		// The key's claim first: a call that lost it is told so (the retry
		// that took it over answers), not that the account moved on.
		if err := renew(ctx, false); err != nil {
			return Outcome{}, err
		}
		if err := acct.renew(ctx); err != nil {
			return Outcome{}, err
		}
	}
	if err := s.listSending(ctx, o, coid, prov, notional); err != nil {
		if acct == nil {
			// A resend: its listing is the first send's, which may still
			// land, so it stays, and "nothing was placed" would be false.
			s.log.WarnContext(ctx, "could not list a resend; the first send may still land", "error", err)
			return Outcome{}, errOutcomeUnknown
		}
		// A first send: nothing was sent, so what was written of its
		// listing goes.
		s.unlistSending(ctx, o.AccountID, coid, prov)
		return Outcome{}, err
	}
	if acct != nil {
		acct.unlock(ctx)
	}
	// The kill switch once more, listed (so a halt's cancel-all finds the
	// order) and just before the wire: a halt engaged since the order's
	// check, even one released again during the work above, stops it.
	if err := s.guardSince(ctx, p.Subject, p.ClientID, o.AccountID, pass.Pass, pass.at); err != nil {
		// A first send: nothing went out, so its listing goes, but only
		// while this call still holds the key: otherwise the attempt that
		// took it over may be sending the same order under that listing
		// (and it answers). One the store cannot confirm stays listed
		// until the resend window ends.
		if acct != nil {
			switch rerr := renew(context.WithoutCancel(ctx), false); {
			case rerr == nil:
				s.unlistSending(ctx, o.AccountID, coid, prov)
			case errors.Is(rerr, ErrClaimLost):
				s.superseded(ctx, entry, "not sent by this attempt: another attempt took the order over")
				return Outcome{}, ErrClaimLost
			default:
				// Whether another attempt holds the key is not known: the
				// answer sends the agent back to the same key, which
				// answers with that attempt's order if there is one.
				s.superseded(ctx, entry, "not sent by this attempt: "+safeMessage(err))
				return Outcome{}, ErrStateUnavailable
			}
		}
		s.superseded(ctx, entry, "not sent by this attempt: "+safeMessage(err))
		return Outcome{}, err
	}
	// A claim lost here leaves the listing: the attempt that took the key
	// over sends the same client order id.
	if err := renew(ctx, true); err != nil {
		return Outcome{}, err
	}
	order, err := s.bs.Trade.PlaceOrder(ctx, o.request(coid))
	switch {
	case errors.Is(err, backends.ErrInvalid) || errors.Is(err, backends.ErrNotFound):
		s.unlistSending(ctx, o.AccountID, coid, prov)
		return Outcome{Status: StatusRejected, Message: "the Trade service rejected the order: " + tradeRefusal(err)}, nil
	case err != nil:
		s.log.WarnContext(ctx, "trade backend failed", "error", err)
		return Outcome{}, errOutcomeUnknown
	}
	// The order exists: its record and listing must not depend on the
	// caller still waiting.
	ctx = context.WithoutCancel(ctx)
	s.journalExecuted(ctx, p.Subject, o, digest, "", order, prov, order.Status)
	s.rememberEntered(ctx, o, order.OrderID)
	out := orderOutcome(order)
	out.Provenance = prov
	return s.stopIfHalted(ctx, p.Subject, p.ClientID, out), nil
}

// journalExecuted records that the Trade service has the order, with its
// state then (or how we learned of it) as detail, and lists it for the
// kill switch's cancel-all while it works.
func (s *Service) journalExecuted(ctx context.Context, who string, o OrderArgs, digest, approvalID string, order backends.Order, prov *Provenance, detail string) {
	if err := s.journal.RecordDone(ctx, JournalEntry{Action: "order.executed", Principal: who, AccountID: o.AccountID, ArgsDigest: digest,
		IdempotencyKey: o.IdempotencyKey, ApprovalID: approvalID, OrderID: order.OrderID, Detail: detail, Provenance: prov.fields()}); err != nil {
		// The intent was journaled before execution; this is the follow-up.
		s.log.ErrorContext(ctx, "journal refused order.executed after execution", "order_id", order.OrderID, "error", err)
	}
	s.indexOpen(ctx, order, prov)
}

// refresh brings a stored outcome up to date: an approval may have been
// decided since, and a working order may have filled or been cancelled.
// If the Trade service cannot be asked, the stored outcome is the answer,
// saying when it was true.
func (s *Service) refresh(ctx context.Context, out Outcome) (Outcome, error) {
	switch {
	case out.Approval != nil:
		a, _, err := s.approval(ctx, out.Approval.ID)
		if err != nil {
			return out, err
		}
		if a.AwaitingSend() {
			// Drive an interrupted execution; if the Trade service is down
			// the approval's state is still a truthful answer.
			// A halt, too: a status read is still answered.
			// And the audit trail or the state store failing it: the
			// approval stays as it is, and a later read sends it, so "not
			// placed" would not be true.
			if out, err := s.execute(ctx, a.ID); !errors.Is(err, ErrTradeUnavailable) && !errors.Is(err, ErrHalted) &&
				!errors.Is(err, ErrNotRecorded) && !errors.Is(err, ErrStateUnavailable) {
				if out.Approval == nil && out.Order == nil {
					out = s.approvalOutcome(ctx, a) // as read, beside the error
				}
				return out, err
			}
		}
		return s.approvalOutcome(ctx, a), nil
	case out.Order != nil && backends.Working(out.Order.Status):
		fresh, err := s.current(ctx, out)
		if err != nil {
			s.log.WarnContext(ctx, "could not refresh a working order", "order_id", out.Order.OrderID, "error", err)
			out.Message += " (as of " + out.Order.UpdatedAt.Format(time.RFC3339) + "; the Trade service could not be asked just now)"
			return out, nil
		}
		return fresh, nil
	}
	return out, nil
}

// orderOutcome reports an order the Trade service holds, in its true state.
func orderOutcome(o backends.Order) Outcome {
	out := Outcome{Status: o.Status, Order: &o}
	id := "order " + o.OrderID
	switch o.Status {
	case backends.StatusAccepted:
		out.Message = id + " is working at the venue" + limitText(o) + "; nothing has filled yet. Poll get_order_status to follow it, or cancel_order to withdraw it"
	case backends.StatusPartiallyFilled:
		out.Message = fmt.Sprintf("%s is working: %g of %g shares filled at an average %.2f; the rest may still fill. Poll get_order_status, or cancel_order to withdraw the rest",
			id, o.FilledQuantity, o.Quantity, o.AveragePrice)
	case backends.StatusFilled:
		out.Message = fmt.Sprintf("%s filled: %s %g %s at an average %.2f", id, o.Side, o.FilledQuantity, o.Ticker, o.AveragePrice)
	case backends.StatusCancelled, backends.StatusExpired:
		out.Message = fmt.Sprintf("%s was %s with %g of %g shares filled", id, o.Status, o.FilledQuantity, o.Quantity)
	case backends.StatusRejected:
		out.Message = id + " was rejected by the Trade service; nothing was executed"
	default:
		out.Message = id + " is " + o.Status
	}
	return out
}

func limitText(o backends.Order) string {
	if o.Type != backends.OrderLimit {
		return ""
	}
	return " (limit " + policy.Price(o.LimitPrice) + ")"
}

func (s *Service) stateErr(ctx context.Context, err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		s.log.ErrorContext(ctx, "state store unavailable", "error", err)
		return ErrStateUnavailable
	}
	return err
}

func joinReasons(rs []string) string {
	if len(rs) == 0 {
		return "policy"
	}
	return strings.Join(rs, "; ")
}
