package trading

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/confirm"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// Errors of the confirmation step, with messages safe to show an agent.
var (
	ErrLimitPriceMissing   = agentError("limit_price is required for a limit order")
	ErrUnknownTicker       = errors.New("unknown ticker")
	ErrLimitPriceOnMarket  = agentError("limit_price is given for a market order, which would ignore it: set order_type to limit to trade at that price or better, or leave limit_price out; nothing was placed")
	ErrConfirmUnavailable  = agentError("order confirmation is unavailable (signing key missing); no order was placed")
	ErrConfirmUncheckable  = agentError("the confirmation could not be checked; no order was placed, retry shortly")
	ErrTimedOutBeforeKnown = agentError("the call timed out before the order was confirmed placed; retry with the same idempotency_key to learn its outcome")
)

// Confirmation is how the user's consent to an order reached the server.
type Confirmation struct {
	// Askable: the client can be asked through an input request (MCP
	// 2026-07-28 with the elicitation capability), whose answer the server
	// can verify. Otherwise only the client's word, Claimed, is available.
	Askable bool
	// State is the signed state the client echoed with the user's answer
	// (empty: the user has not been asked yet).
	State string
	// Accepted is the user's answer to that input request.
	Accepted bool
	// Claimed is the confirm argument: the client says the user confirmed.
	Claimed bool
	// DuplicateAcknowledged is the acknowledge_duplicate argument: the
	// idempotency key of the possible duplicate the user was shown and
	// confirmed they want this order besides (clients that cannot be
	// asked). It counts only for that earlier order.
	DuplicateAcknowledged string
}

// Placement is PlaceOrder's answer: the order's outcome, or (Ask set, and
// nothing placed) the confirmation to put to the user.
type Placement struct {
	Outcome Outcome
	Ask     *Ask
}

// Ask is a confirmation for the client to put to its user through an input
// request: the order summary, and the signed state to echo with the answer.
type Ask struct {
	Message string
	State   string
}

// liveUnverified is why a live order confirmed only by the confirm argument
// waits for a human approver as well: no server can check that claim.
const liveUnverified = "live order confirmed by an argument the server cannot verify (the client cannot be asked through an input request)"

// PlaceOrder is place_order: answer a retry from what its key left, else
// check the order, settle the user's confirmation, and place it exactly once
// (executed, or pending a human approver). The portfolio and quote are read
// once per call.
func (s *Service) PlaceOrder(ctx context.Context, p principal.Principal, o OrderArgs, c Confirmation) (Placement, error) {
	if err := o.validate(); err != nil {
		if !errors.Is(err, ErrLimitPriceOnMarket) {
			return Placement{}, err
		}
		// A key whose order was placed, or sent, before this check existed
		// (a market order's limit price was dropped, and the digest ignores
		// it) goes on as it did: answered with that order, or resent.
		// When the key's state cannot be told (the Trade service or the
		// store not answering), that is the answer: an earlier send may
		// still land, so "nothing was placed" would not be true.
		switch res, rerr := s.resolve(ctx, p, o); {
		case rerr != nil && !errors.Is(rerr, ErrKeyReused):
			return Placement{Outcome: res.Outcome}, rerr
		case res.Unsettled:
			return Placement{}, errOutcomeUnknown
		case rerr != nil || !res.Found && !res.Resend:
			return Placement{}, err
		}
	}
	out, ask, err := s.placeOrder(ctx, p, o.Normalize(), c)
	if errors.Is(err, context.DeadlineExceeded) {
		err = ErrTimedOutBeforeKnown
	}
	return Placement{Outcome: out, Ask: ask}, err
}

// placeOrder is PlaceOrder on o, validated and normalized.
func (s *Service) placeOrder(ctx context.Context, p principal.Principal, o OrderArgs, c Confirmation) (Outcome, *Ask, error) {
	// A retry is answered from what its earlier attempt left (the stored
	// outcome, its approval, or the order the Trade service accepted), before
	// any check and without asking the user again.
	res, err := s.resolve(ctx, p, o)
	switch {
	case err != nil:
		return Outcome{}, nil, err
	case res.Found:
		return res.Outcome, nil, nil
	case res.Unsettled:
		return Outcome{}, nil, errOutcomeUnknown
	case res.Resend:
		// Checked and confirmed before it was first sent; it goes again as
		// it is (a late arrival of the first send is the same order).
		out, err := s.place(ctx, p, o, "", s.provenance(ctx, p, ConfirmedBefore, ""))
		return out, nil, err
	}
	// A halted order is refused before anyone is asked to confirm it.
	if err := s.guard(ctx, p.Subject, p.ClientID, o.AccountID); err != nil {
		return Outcome{}, nil, err
	}
	pre, err := s.evaluate(ctx, p.Subject, p.ClientID, o, selfOf(p.Subject, o.IdempotencyKey), false)
	if err != nil {
		return Outcome{}, nil, err
	}
	if !pre.Allowed {
		return Outcome{Status: StatusRejected, Violations: pre.Violations, Preview: &pre, IdempotencyKey: o.IdempotencyKey,
			Message: "the order breaks pre-trade rules and was not placed; see violations"}, nil, nil
	}
	dup, err := s.duplicateOf(ctx, o)
	if err != nil {
		return Outcome{}, nil, err
	}
	prov, out, ask, err := s.confirmation(ctx, p, o, pre, c, dup)
	if err != nil || ask != nil || out.Status != "" {
		return out, ask, err
	}
	reason := ""
	if !c.Askable && pre.Mode == "live" {
		reason = liveUnverified
	}
	out, err = s.place(ctx, p, o, reason, prov)
	return out, nil, err
}

// confirmation settles whether the user confirmed o, and confirmed it
// knowing of a possible duplicate (dup). It returns the order's provenance
// when the order may go on, else an outcome or an ask.
func (s *Service) confirmation(ctx context.Context, p principal.Principal, o OrderArgs, pre policy.Preview, c Confirmation, dup *Duplicate) (*Provenance, Outcome, *Ask, error) {
	warning := ""
	if dup != nil {
		warning = duplicateWarning(o, dup, s.now())
	}
	if !c.Askable {
		switch {
		case !c.Claimed:
			msg := "nothing was placed yet: show the user the order (" + summary(o, pre) + ") and, only if they confirm, call place_order again with confirm=true and the same idempotency_key"
			if dup != nil {
				msg = "nothing was placed yet. " + strings.ToUpper(warning[:1]) + warning[1:] + ". Show the user this warning and the order (" + summary(o, pre) +
					"); only if they confirm they want a second, separate order, call place_order again with confirm=true, acknowledge_duplicate set to the earlier order's idempotency_key (possible_duplicate.idempotency_key) and the same idempotency_key"
			}
			return nil, Outcome{Status: StatusNeedsConfirmation, Preview: &pre, Duplicate: dup, IdempotencyKey: o.IdempotencyKey, Message: msg}, nil, nil
		case dup != nil && c.DuplicateAcknowledged != dup.IdempotencyKey:
			return nil, Outcome{Status: StatusNeedsConfirmation, Preview: &pre, Duplicate: dup, IdempotencyKey: o.IdempotencyKey,
				Message: "nothing was placed: " + warning + ". Ask the user whether they want a second, separate order; only if they do, call place_order again with confirm=true, acknowledge_duplicate set to the earlier order's idempotency_key (possible_duplicate.idempotency_key) and the same idempotency_key"}, nil, nil
		}
		prov := s.provenance(ctx, p, ConfirmedByArgument, previewDigest(pre))
		if dup != nil {
			prov.DuplicateOf = dup.IdempotencyKey
		}
		return prov, Outcome{}, nil, nil
	}
	binding := confirm.Binding{Principal: p.Subject, Tool: "place_order", Digest: o.Digest(), Warning: duplicateBinding(dup)}
	if s.signer == nil {
		return nil, Outcome{}, nil, ErrConfirmUnavailable
	}
	if c.State == "" {
		state, err := s.signer.Issue(binding, previewDigest(pre))
		if err != nil {
			s.log.ErrorContext(ctx, "cannot sign confirmation state", "error", err)
			return nil, Outcome{}, nil, ErrConfirmUnavailable
		}
		msg := "Confirm order: " + summary(o, pre)
		if dup != nil {
			msg = "POSSIBLE DUPLICATE: " + warning + ". Confirm only if you want a second, separate order: " + summary(o, pre)
		}
		return nil, Outcome{}, &Ask{Message: msg, State: state}, nil
	}
	shown, err := s.signer.Verify(ctx, c.State, binding)
	if err != nil {
		s.log.WarnContext(ctx, "confirmation state refused", "error", err)
		if errors.Is(err, confirm.ErrInvalid) || errors.Is(err, confirm.ErrExpired) || errors.Is(err, confirm.ErrReplayed) {
			return nil, Outcome{}, nil, agentError(err.Error() + "; no order was placed: call place_order again without requestState to ask the user afresh")
		}
		return nil, Outcome{}, nil, ErrConfirmUncheckable
	}
	if !c.Accepted {
		return nil, Outcome{Status: StatusNotConfirmed, IdempotencyKey: o.IdempotencyKey,
			Message: "the user did not confirm; no order was placed"}, nil, nil
	}
	prov := s.provenance(ctx, p, ConfirmedByInputRequest, shown)
	if dup != nil {
		prov.DuplicateOf = dup.IdempotencyKey
	}
	return prov, Outcome{}, nil, nil
}

// summary is what the user confirms: the order type and, for a limit order,
// the limit price itself, with the notional estimated at the worse of the
// limit and the market.
func summary(o OrderArgs, pre policy.Preview) string {
	s := fmt.Sprintf("%s %g %s in account %s: ", o.Side, o.Quantity, o.Ticker, o.AccountID)
	if o.Type == backends.OrderLimit {
		s += fmt.Sprintf("limit order at %s (estimated fill price %.2f), estimated notional up to %.2f", policy.Price(o.LimitPrice), pre.EstimatedPrice, pre.EstimatedNotional)
	} else {
		at := "about"
		if pre.PriceBandHigh > 0 && o.Side == backends.SideBuy {
			at = "up to" // sized at the price collar's top
		}
		s += fmt.Sprintf("market order at %s %s, estimated notional %s %.2f", at, policy.Price(pre.EstimatedPrice), at, pre.EstimatedNotional)
	}
	s += ", " + pre.Mode + " trading"
	if pre.RequiresApproval {
		s += "; it will then wait for a human approver"
	}
	return s
}

// validate refuses what the schema cannot: a limit order without its
// price, and a market order with one (order_type defaults to market, so an
// agent that forgot it would otherwise buy at any price). It reads the
// arguments as sent, before Normalize drops a market order's limit.
func (o OrderArgs) validate() error {
	typ := strings.ToLower(o.Type)
	switch {
	case typ == backends.OrderLimit && o.LimitPrice <= 0:
		return ErrLimitPriceMissing
	case (typ == "" || typ == backends.OrderMarket) && o.LimitPrice != 0:
		return ErrLimitPriceOnMarket
	}
	return nil
}
