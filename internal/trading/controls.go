package trading

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// The market-access controls around the pre-trade policy: the kill switch
// (package halt), daily limits per principal and per agent, duplicate-order
// detection across idempotency keys, and each order's decision provenance.

// How the user's consent to an order reached the server (Provenance).
const (
	ConfirmedByInputRequest = "input_request"    // the server asked the user; the answer is signed and verified
	ConfirmedByArgument     = "confirm_argument" // the client says the user confirmed; the server cannot check it
	ConfirmedBefore         = "resend"           // an unanswered send, confirmed before it first went out
)

// Provenance is how an order came to be decided: who asked (the human and
// the agent, and the token's delegation claims), how the user confirmed and
// what they were shown, which rule set allowed it and who approved it. It
// is kept with the order, returned by get_order_status and journaled.
type Provenance struct {
	Subject         string `json:"subject" jsonschema:"the human the order was placed for (the token's subject)"`
	Agent           string `json:"agent,omitempty" jsonschema:"OAuth client id of the agent that placed it"`
	AuthorizedParty string `json:"azp,omitempty" jsonschema:"the token's azp claim"`
	Actor           string `json:"actor,omitempty" jsonschema:"subject of the token's act claim: who acted for the user (delegation)"`
	TraceID         string `json:"trace_id,omitempty" jsonschema:"the trace of the call that placed it"`
	Confirmation    string `json:"confirmation" jsonschema:"input_request (the server asked the user and verified the answer), confirm_argument (the client's word) or resend (an unanswered send, confirmed before)"`
	PreviewDigest   string `json:"preview_digest,omitempty" jsonschema:"digest of the pre-trade check the user was shown (input_request) or the order was placed on"`
	// DuplicateOf is the idempotency key of the earlier, identical order
	// the user confirmed this one is not a duplicate of.
	DuplicateOf    string     `json:"duplicate_acknowledged,omitempty" jsonschema:"idempotency_key of the earlier, identical order the user confirmed this one is not a duplicate of"`
	PolicyVersion  string     `json:"policy_version" jsonschema:"the pre-trade rule set that allowed it"`
	EnteredAt      time.Time  `json:"entered_at"`
	ApprovedBy     string     `json:"approved_by,omitempty"`
	ApprovalReason string     `json:"approval_reason,omitempty"`
	DecidedAt      *time.Time `json:"decided_at,omitempty"`
}

// provenance starts an order's provenance from the caller's token and the
// call's trace.
func (s *Service) provenance(ctx context.Context, p principal.Principal, confirmation, previewDigest string) *Provenance {
	prov := &Provenance{Subject: p.Subject, Agent: p.ClientID, AuthorizedParty: p.AuthorizedParty, Actor: p.Actor,
		Confirmation: confirmation, PreviewDigest: previewDigest, PolicyVersion: s.policyVersion, EnteredAt: s.now().UTC()}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		prov.TraceID = sc.TraceID().String()
	}
	return prov
}

// withApproval adds an approval's decision to its order's provenance.
func (a Approval) provenance() *Provenance {
	if a.Provenance == nil {
		return nil
	}
	prov := *a.Provenance
	prov.ApprovedBy, prov.ApprovalReason, prov.DecidedAt = a.DecidedBy, a.Reason, a.DecidedAt
	return &prov
}

// fields is the provenance as the audit trail records it.
func (p *Provenance) fields() map[string]string {
	if p == nil {
		return nil
	}
	m := map[string]string{"subject": p.Subject, "agent": p.Agent, "azp": p.AuthorizedParty, "actor": p.Actor, "trace_id": p.TraceID,
		"confirmation": p.Confirmation, "preview_digest": p.PreviewDigest, "duplicate_acknowledged": p.DuplicateOf,
		"policy_version": p.PolicyVersion, "approved_by": p.ApprovedBy, "approval_reason": p.ApprovalReason}
	maps.DeleteFunc(m, func(_, v string) bool { return v == "" })
	return m
}

// previewDigest names a pre-trade check, for the provenance of the order
// placed on it.
func previewDigest(p policy.Preview) string {
	b, _ := json.Marshal(p) // plain data: cannot fail
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:12])
}

// provenanceKey keeps an order's provenance by its client order id, written
// before the order is sent, so an order found again after a crash still
// has it.
func provenanceKey(clientOrderID string) string { return "provenance:" + clientOrderID }

func (s *Service) keepProvenance(ctx context.Context, clientOrderID string, prov *Provenance) error {
	if prov == nil {
		return nil
	}
	return s.stateErr(ctx, putJSON(ctx, s.st, provenanceKey(clientOrderID), prov, s.cfg.IdempotencyTTL))
}

// provenanceOf reads an order's provenance; nil when it has none (placed
// before provenance was kept, or its record expired).
func (s *Service) provenanceOf(ctx context.Context, clientOrderID string) *Provenance {
	prov, _, err := getJSON[Provenance](ctx, s.st, provenanceKey(clientOrderID))
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.WarnContext(ctx, "could not read an order's provenance", "client_order_id", clientOrderID, "error", err)
		}
		return nil
	}
	return &prov
}

// guard is the kill switch for an order of p's (or of the requester of an
// approval): an engaged halt, or a switch that cannot be read, stops it.
func (s *Service) guard(ctx context.Context, subject, agent, account string) error {
	_, err := s.guardMark(ctx, subject, agent, account)
	return err
}

// guardMark is guard, and the order's pass when it passes
// (halt.CheckPass): kept with the order, so that a halt engaged after it
// stops it even once released (guardSince).
func (s *Service) guardMark(ctx context.Context, subject, agent, account string) (halt.Pass, error) {
	if s.cfg.Halt == nil {
		return halt.Pass{}, nil
	}
	pass, err := s.cfg.Halt.CheckPass(ctx, halt.Order{Account: account, Principal: subject, Agent: agent})
	return pass, s.haltErr(ctx, err)
}

// guardSince is guard for an order that passed the switch with pass (at
// since) and is not sent (again) yet: a halt engaged after it stops it
// too, even once released (halt.StoppedSince).
func (s *Service) guardSince(ctx context.Context, subject, agent, account string, pass halt.Pass, since time.Time) error {
	if s.cfg.Halt == nil {
		return nil
	}
	return s.haltErr(ctx, s.cfg.Halt.StoppedSince(ctx, halt.Order{Account: account, Principal: subject, Agent: agent}, pass, since))
}

// errSwitchUnreadable is the answer when the kill switch cannot be read:
// nothing goes out, and nothing is decided for good (ErrHalted, too).
var errSwitchUnreadable = &AgentError{msg: halt.ErrUnknown.Error(), is: ErrHalted}

// haltErr is the answer to a switch's verdict.
func (s *Service) haltErr(ctx context.Context, err error) error {
	var h *halt.Halted
	switch {
	case err == nil:
		return nil
	case errors.As(err, &h):
		return &AgentError{msg: h.Error(), is: ErrHalted}
	case errors.Is(err, halt.ErrReleasesForgotten):
		return &AgentError{msg: err.Error(), is: ErrHalted}
	default:
		s.log.ErrorContext(ctx, "kill switch unreadable: trading halted", "error", err)
		return errSwitchUnreadable
	}
}

// stopIfHalted cancels an order that reached the Trade service as a halt
// covering it was engaged: one that was on its way when the halt came must
// not go on working as if it came before it. The order is listed first (before
// its send) and the switch read after, so either the halt's cancel-all
// finds the order or this finds the halt. A switch that cannot be read
// leaves the order be: that stops new orders, and a halt, if there is one,
// has its cancel-all. An order the Trade service took well before the halt
// (a retry learning of it only now) is left as the halt left its twins:
// working, unless the halt's cancel-all cancelled them.
func (s *Service) stopIfHalted(ctx context.Context, subject, agent string, out Outcome) Outcome {
	if s.cfg.Halt == nil || out.Order == nil || !backends.Working(out.Order.Status) {
		return out
	}
	var h *halt.Halted
	if err := s.cfg.Halt.Check(ctx, halt.Order{Account: out.Order.AccountID, Principal: subject, Agent: agent}); !errors.As(err, &h) {
		return out
	}
	if created := out.Order.CreatedAt; !created.IsZero() && created.Before(h.Halt.EngagedAt.Add(-haltClockSkew)) {
		return out
	}
	// As it is now: the halt's cancel-all may have cancelled it already,
	// or it may have filled.
	if now, err := s.current(ctx, out); err == nil && !backends.Working(now.Order.Status) {
		return now
	}
	detail := "kill switch (" + h.Halt.Describe() + ") engaged while the order was being sent: " + h.Halt.Reason
	cancelled, err := s.cancelOrder(ctx, h.Halt.EngagedBy, out, detail)
	if errors.Is(err, errAlreadyCancelled) {
		err = nil // the halt's cancel-all came first
	}
	if err != nil {
		s.log.ErrorContext(ctx, "could not cancel an order sent as a halt was engaged", "order_id", out.Order.OrderID, "error", err)
		now, rerr := s.current(ctx, out)
		if rerr == nil && !backends.Working(now.Order.Status) {
			return now // cancelled or filled meanwhile
		}
		out.Message += ". A trading halt was engaged as it was sent, and cancelling it failed: cancel it with cancel_order"
		return out
	}
	cancelled.Approval, cancelled.IdempotencyKey = out.Approval, out.IdempotencyKey
	cancelled.Message = "cancelled as soon as this server learned it had been placed: a trading halt (" + h.Halt.Describe() + ") was engaged while it was on its way. " + cancelled.Message
	return cancelled
}

// haltClockSkew is how far the Trade service's clock may be behind ours
// and an order it timed before a halt still be one sent after it.
const haltClockSkew = time.Minute

// current is out with its order as the Trade service holds it now.
func (s *Service) current(ctx context.Context, out Outcome) (Outcome, error) {
	o, err := s.bs.Trade.GetOrder(ctx, out.Order.OrderID)
	if err != nil {
		return out, err
	}
	now := orderOutcome(o)
	now.Approval, now.IdempotencyKey, now.Provenance = out.Approval, out.IdempotencyKey, out.Provenance
	return now, nil
}

// openIndexes are the indexes of orders placed through this server that
// may still be working, per kill-switch scope, for "cancel all open orders"
// of a scope. Entries are dropped once their order is no longer working.
func openIndexes(account string, prov *Provenance) []string {
	subject, agent := "", ""
	if prov != nil {
		subject, agent = prov.Subject, prov.Agent
	}
	return []string{openIndex(halt.Global, ""), openIndex(halt.Account, account), openIndex(halt.Principal, halt.Subject(subject)), openIndex(halt.Agent, agent)}
}

func openIndex(scope, target string) string {
	if scope == halt.Global {
		return "orders:open"
	}
	return "orders:open:" + scope + ":" + target
}

// indexOpen keeps an order the Trade service holds listed, under every
// scope it may be cancelled by, while it works (it was listed by its client
// order id before it was sent), and unlists it once it does not.
func (s *Service) indexOpen(ctx context.Context, o backends.Order, prov *Provenance) {
	if !backends.Working(o.Status) {
		s.unindexOpen(ctx, o, prov)
		return
	}
	entry := o.ClientOrderID
	if entry == "" {
		entry = o.OrderID
	}
	if err := s.st.IndexAddAll(ctx, openIndexes(o.AccountID, prov), entry, float64(s.now().Unix())); err != nil {
		s.log.WarnContext(ctx, "could not index an open order for cancel-all", "order_id", o.OrderID, "error", err)
	}
}

// unindexOpen drops an order that no longer works from the cancel-all
// indexes, so they hold what may still need cancelling: its client order
// id, and its order id (how it was listed before orders were listed by
// client order id).
func (s *Service) unindexOpen(ctx context.Context, o backends.Order, prov *Provenance) {
	entries := []string{o.OrderID}
	if o.ClientOrderID != "" {
		entries = append(entries, o.ClientOrderID)
	}
	s.st.IndexRemoveAll(ctx, openIndexes(o.AccountID, prov), entries...)
}

// dailyKey is a budget's tally for one trading day: the orders it counts,
// by the digest of their idempotency record key, with their notional.
// Keyed by order, a retry never counts twice.
func dailyKey(day, kind, who string) string {
	sum := sha256.Sum256([]byte(who))
	return "daily:" + day + ":" + kind + ":" + hex.EncodeToString(sum[:16])
}

// dailyTTL keeps a day's usage past any clock skew and the weekend.
const dailyTTL = 8 * 24 * time.Hour

// tradingDay is the exchange trading day an order entered now counts
// towards.
func (s *Service) tradingDay() calendar.Date {
	if cal := s.cfg.Rules.Calendar; cal != nil {
		return cal.TradingDay(s.now())
	}
	return calendar.DateOf(s.now(), time.UTC)
}

// budget is one of the day's two budgets.
type budget struct {
	kind, who string
	orders    int
	notional  float64
}

// on reports whether the budget limits anything (0 is no limit).
func (b budget) on() bool { return b.orders > 0 || b.notional > 0 }

// budgets are the principal's and the agent's. A token with no client id
// gets an agent budget of its own per subject, never one shared by every
// such token.
func (s *Service) budgets(subject, agent string) []budget {
	l := s.cfg.Rules.Daily
	if agent == "" {
		agent = "no-client:" + subject
	}
	return []budget{{"principal", halt.Subject(subject), l.PrincipalOrders, l.PrincipalNotional}, {"agent", agent, l.AgentOrders, l.AgentNotional}}
}

// Tallies hold notional in whole cents, so sums are exact whatever order
// they are added in (Redis and Go agree at the limit).
func cents(x float64) float64 { return math.Round(x * 100) }

// tallied is the member an order is counted as in the daily tallies: its
// idempotency record's key, so a resend is the same member.
func tallied(subject, idempotencyKey string) string {
	return idemKey(subject, "place_order", idempotencyKey)
}

// usage reads what subject and agent have entered on the trading day, not
// counting the order with idempotency key self (an approval re-checked at
// execution).
func (s *Service) usage(ctx context.Context, subject, agent, self string) (policy.Usage, error) {
	day := s.tradingDay().String()
	u := policy.Usage{Day: day}
	for _, b := range s.budgets(subject, agent) {
		if !b.on() {
			continue
		}
		n, sum, err := s.st.TallyRead(ctx, dailyKey(day, b.kind, b.who), tallied(subject, self))
		if err != nil {
			return u, s.stateErr(ctx, err)
		}
		used := policy.Used{Orders: n, Notional: sum / 100}
		if b.kind == "principal" {
			u.Principal = used
		} else {
			u.Agent = used
		}
	}
	return u, nil
}

// ErrDailyLimit: the budget was used up by a concurrent order between the
// check and the order's entry.
var ErrDailyLimit = agentError("a daily order limit was reached while this order was being entered, so it was not placed; see preview_order for today's remaining budget")

// reserve counts the order (idempotency key key, with its notional) against the day's
// budgets of subject and agent, refusing it if either would pass its limit.
// Each budget is one atomic step in the store, so concurrent orders on any
// replica cannot both take the last place. It runs at the moment an order
// is entered (just before the approval is created or the order sent, and
// again when an approval is executed on a later trading day), and is never
// handed back: an order counts once entered, whatever becomes of it (a
// refusal by the agent's budget after the principal's counted it leaves the
// principal's count one high, the conservative side).
func (s *Service) reserve(ctx context.Context, subject, agent, key string, notional float64) error {
	day := s.tradingDay().String()
	for _, b := range s.budgets(subject, agent) {
		if !b.on() {
			continue
		}
		err := s.st.Tally(ctx, dailyKey(day, b.kind, b.who), tallied(subject, key), cents(notional), b.orders, cents(b.notional), dailyTTL)
		switch {
		case errors.Is(err, store.ErrLimit):
			return ErrDailyLimit
		case err != nil:
			return s.stateErr(ctx, err)
		}
	}
	return nil
}

// Duplicate is an earlier order identical in account, side, ticker and
// quantity, entered within the duplicate window under another idempotency
// key: an agent that loops and mints a new key each time.
type Duplicate struct {
	IdempotencyKey string    `json:"idempotency_key"`
	Ref            string    `json:"ref" jsonschema:"the earlier order's order id or approval id"`
	EnteredAt      time.Time `json:"entered_at"`
}

// ConfirmedUnknown: how the user confirmed is not known (an order entered
// through a path without a confirmation step).
const ConfirmedUnknown = "unknown"

func duplicateKey(o OrderArgs) string {
	canon := o.AccountID + "\x00" + o.Side + "\x00" + o.Ticker + "\x00" + strconv.FormatFloat(o.Quantity, 'g', -1, 64)
	sum := sha256.Sum256([]byte(canon))
	return "recent-order:" + hex.EncodeToString(sum[:16])
}

// duplicateOf returns the earlier identical order under another key, if one
// was entered within the window.
func (s *Service) duplicateOf(ctx context.Context, o OrderArgs) (*Duplicate, error) {
	if s.cfg.DuplicateWindow <= 0 {
		return nil, nil
	}
	d, _, err := getJSON[Duplicate](ctx, s.st, duplicateKey(o))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, s.stateErr(ctx, err)
	case d.IdempotencyKey == o.IdempotencyKey || s.now().Sub(d.EnteredAt) >= s.cfg.DuplicateWindow:
		return nil, nil
	}
	return &d, nil
}

// ErrDuplicate: an identical order was entered under another key while
// this one was being confirmed (the message says which, and what to do).
var ErrDuplicate = agentError("possible duplicate order")

// claimRecent takes the duplicate-detection slot of o as it is entered,
// atomically: of identical orders raced in under different keys, one goes
// on and the others are refused, unless the user acknowledged the
// duplicate they were shown (prov.DuplicateOf). If the order is then not
// entered after all, release hands the slot back.
func (s *Service) claimRecent(ctx context.Context, o OrderArgs, prov *Provenance) (release func(), err error) {
	if s.cfg.DuplicateWindow <= 0 {
		return func() {}, nil
	}
	key := duplicateKey(o)
	mine := Duplicate{IdempotencyKey: o.IdempotencyKey, EnteredAt: s.now().UTC()}
	release = func() {
		ctx := context.WithoutCancel(ctx)
		d, ver, err := getJSON[Duplicate](ctx, s.st, key)
		if err == nil && d.IdempotencyKey == o.IdempotencyKey && d.Ref == "" {
			updateJSON(ctx, s.st, key, Duplicate{}, ver, time.Second) // zero EnteredAt: outside any window
		}
	}
	for {
		err := createJSON(ctx, s.st, key, mine, s.cfg.DuplicateWindow)
		if !errors.Is(err, store.ErrConflict) {
			return release, s.stateErr(ctx, err)
		}
		d, ver, err := getJSON[Duplicate](ctx, s.st, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue // expired meanwhile
		case err != nil:
			return nil, s.stateErr(ctx, err)
		case d.IdempotencyKey != o.IdempotencyKey && s.now().Sub(d.EnteredAt) < s.cfg.DuplicateWindow && (prov == nil || prov.DuplicateOf != d.IdempotencyKey):
			return nil, &AgentError{msg: duplicateWarning(o, &d, s.now()) + "; nothing was placed. Ask the user whether they want a second, separate order; only if they do, call place_order again with confirm=true, acknowledge_duplicate set to the earlier order's idempotency_key (" + d.IdempotencyKey + ") and the same idempotency_key", is: ErrDuplicate}
		}
		if _, err := updateJSON(ctx, s.st, key, mine, ver, s.cfg.DuplicateWindow); !errors.Is(err, store.ErrConflict) {
			return release, s.stateErr(ctx, err)
		}
	}
}

// rememberEntered notes an entered order for duplicate detection. Losing
// the note only weakens the next check, so a failure is logged.
func (s *Service) rememberEntered(ctx context.Context, o OrderArgs, ref string) {
	if s.cfg.DuplicateWindow <= 0 {
		return
	}
	d := Duplicate{IdempotencyKey: o.IdempotencyKey, Ref: ref, EnteredAt: s.now().UTC()}
	if err := putJSON(ctx, s.st, duplicateKey(o), d, s.cfg.DuplicateWindow); err != nil {
		s.log.WarnContext(ctx, "could not note an order for duplicate detection", "error", err)
	}
}

// forgetEntered takes a withdrawn approval's order out of duplicate
// detection: nothing was placed, and the same order asked for again is no
// duplicate of it.
func (s *Service) forgetEntered(ctx context.Context, a Approval) {
	if s.cfg.DuplicateWindow <= 0 {
		return
	}
	key := duplicateKey(a.Order)
	if d, ver, err := getJSON[Duplicate](ctx, s.st, key); err == nil && d.IdempotencyKey == a.Order.IdempotencyKey && d.Ref == a.ID {
		updateJSON(ctx, s.st, key, Duplicate{}, ver, time.Second) // zero EnteredAt: outside any window
	}
}

// duplicateBinding is what a signed confirmation of a possible duplicate
// is bound to: the earlier order, stably (the warning's text says how long
// ago, which changes while the user reads it).
func duplicateBinding(d *Duplicate) string {
	if d == nil {
		return ""
	}
	return "duplicate of " + d.IdempotencyKey + " entered " + d.EnteredAt.UTC().Format(time.RFC3339Nano)
}

// duplicateWarning is what the user must confirm about a duplicate.
func duplicateWarning(o OrderArgs, d *Duplicate, now time.Time) string {
	ref := d.IdempotencyKey
	if d.Ref != "" {
		ref += ", " + d.Ref
	}
	return fmt.Sprintf("possible duplicate: the same order (%s %g %s in account %s) was entered %s ago under another idempotency_key (%s)",
		o.Side, o.Quantity, o.Ticker, o.AccountID, now.Sub(d.EnteredAt).Round(time.Second), ref)
}

// CancelReport is what a cancel-all did.
type CancelReport struct {
	Scope     string   `json:"scope"`
	Target    string   `json:"target,omitempty"`
	Cancelled []string `json:"cancelled_orders" jsonschema:"working orders cancelled at the Trade service"`
	Withdrawn []string `json:"withdrawn_approvals" jsonschema:"pending approvals withdrawn"`
	Failed    []string `json:"failed,omitempty" jsonschema:"orders or approvals that could not be cancelled, with why; try again"`
	// Truncated: the scope held more than one pass reads; run it again.
	Truncated bool `json:"truncated,omitempty"`
}

// cancelScan bounds one cancel-all pass over an index.
const cancelScan = 50_000

// CancelAll cancels, on behalf of by (a risk officer), every working order
// placed through this server and every pending approval within a kill-switch
// scope, journaling each. It goes on past a failure and reports it (with
// what it did before an error that stopped it); what by is not entitled to
// is left alone.
func (s *Service) CancelAll(ctx context.Context, by principal.Principal, scope, target, reason string) (CancelReport, error) {
	h, err := halt.Parse(scope, target)
	if err != nil {
		return CancelReport{}, &AgentError{msg: err.Error()}
	}
	rep := CancelReport{Scope: h.Scope, Target: h.Target, Cancelled: []string{}, Withdrawn: []string{}}
	detail := "kill switch cancel-all (" + h.Describe() + "): " + reason

	pending := pendingIndex
	if h.Scope == halt.Account {
		pending = accountIndex(h.Target)
	}
	ids, err := s.st.IndexRange(ctx, pending, cancelScan)
	if err != nil {
		return rep, s.stateErr(ctx, err)
	}
	rep.Truncated = len(ids) == cancelScan
	for _, id := range ids {
		_, err := s.withdraw(ctx, by.Subject, id, detail, func(a Approval) error {
			if !by.Entitled(a.Order.AccountID) || !h.Matches(halt.Order{Account: a.Order.AccountID, Principal: a.Requester, Agent: a.RequesterClient}) {
				return errSkip
			}
			return nil
		})
		switch {
		case err == nil:
			rep.Withdrawn = append(rep.Withdrawn, id)
		case errors.Is(err, errSkip), errors.Is(err, ErrNotCancellable), errors.Is(err, ErrNotFound), errors.Is(err, errAlreadyCancelled):
			// another scope's, or decided or withdrawn meanwhile
		default:
			rep.Failed = append(rep.Failed, id+": "+safeMessage(err))
		}
	}

	idx := openIndex(h.Scope, h.Target)
	ids, err = s.st.IndexRange(ctx, idx, cancelScan)
	if err != nil {
		return rep, s.stateErr(ctx, err)
	}
	rep.Truncated = rep.Truncated || len(ids) == cancelScan
	for _, id := range ids {
		e, err := s.resolveOpen(ctx, id)
		switch {
		case errors.Is(err, ErrStateUnavailable):
			rep.Failed = append(rep.Failed, id+": "+safeMessage(err))
			continue
		case err != nil:
			rep.Failed = append(rep.Failed, id+": the Trade service did not answer")
			continue
		case e.sending != nil:
			if acct := e.sending.Order.AccountID; by.Entitled(acct) {
				rep.Failed = append(rep.Failed, "client order "+id+" (account "+acct+"): being sent, or sent and not yet acknowledged; the Trade service does not show it yet. Run the cancel-all again shortly")
			}
			continue
		case e.order == nil:
			s.st.IndexRemove(ctx, idx, id)
			continue
		case !by.Entitled(e.order.AccountID):
			continue
		}
		o := *e.order
		prov := s.provenanceOf(ctx, o.ClientOrderID)
		if !backends.Working(o.Status) {
			s.unindexOpen(ctx, o, prov)
			continue
		}
		cur := orderOutcome(o)
		cur.Provenance = prov
		switch _, err := s.cancelOrder(ctx, by.Subject, cur, detail); {
		case errors.Is(err, errAlreadyCancelled), errors.Is(err, ErrNotCancellable):
			// cancelled by someone else meanwhile, or filled: not this halt's
		case err != nil:
			rep.Failed = append(rep.Failed, o.OrderID+": "+safeMessage(err))
		default:
			rep.Cancelled = append(rep.Cancelled, o.OrderID)
		}
	}
	return rep, nil
}

// errSkip: not in the scope being cancelled.
var errSkip = errors.New("not in scope")

// safeMessage is err's message if it was written for people, else a
// generic one (the details are logged by the caller's caller).
func safeMessage(err error) string {
	var ae *AgentError
	if errors.As(err, &ae) {
		return ae.Error()
	}
	return "failed; see the server log"
}
