package trading

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
)

// What an account's orders hold is known only if every order that may be
// working is listed before it can be: an order is listed under its client
// order id (with what it would hold) before it goes on the wire, so a send
// whose answer is lost still holds its cash or shares and is still found by
// the kill switch's cancel-all. And a check that passes must hold until its
// order is listed or its approval recorded: lockAccount serialises those
// steps per account, on every replica, so two orders that each fit cannot
// both pass against the same cash or shares.

// sending is what an order listed before its send holds while the Trade
// service does not know it: not sent yet, or sent and its answer lost.
type sending struct {
	Order    OrderArgs `json:"order"`
	Notional float64   `json:"notional"` // estimated at the check: a market buy's cash
	At       time.Time `json:"at"`       // when it was (last) listed to be sent
}

func sendingKey(clientOrderID string) string { return "sending:" + clientOrderID }

// isClientOrderID tells the entries of the open-order indexes apart: a
// client order id (ours, listed before the send) or, in entries written
// before orders were listed that way, the Trade service's order id.
func isClientOrderID(entry string) bool { return strings.HasPrefix(entry, clientOrderPrefix) }

// listSending lists the order about to be sent under coid in every
// cancel-all index and records what it holds meanwhile. A failure stops the
// send: an unlisted order would hold nothing and escape a halt. notional 0
// (a resend) keeps what the first send recorded.
func (s *Service) listSending(ctx context.Context, o OrderArgs, coid string, prov *Provenance, notional float64) error {
	rec := sending{Order: o, Notional: notional, At: s.now().UTC()}
	if notional == 0 {
		// A resend keeps what the first send holds: a record it cannot read
		// must not be written over with nothing held.
		switch prev, _, err := getJSON[sending](ctx, s.st, sendingKey(coid)); {
		case err == nil:
			rec.Notional = prev.Notional
		case !errors.Is(err, store.ErrNotFound):
			return s.stateErr(ctx, err)
		}
	}
	// Kept past the resend window, after which an order the Trade service
	// never saw holds nothing (a retry checks it afresh).
	if err := putJSON(ctx, s.st, sendingKey(coid), rec, s.cfg.ResendWindow+s.cfg.Lease); err != nil {
		return s.stateErr(ctx, err)
	}
	if err := s.st.IndexAddAll(ctx, openIndexes(o.AccountID, prov), coid, float64(s.now().Unix())); err != nil {
		return s.stateErr(ctx, err)
	}
	return nil
}

// unlistSending drops an order that was listed to be sent and is known
// never to work: the Trade service refused it, or it was never sent. (Its
// hold record, no longer listed, is never read again and expires.)
func (s *Service) unlistSending(ctx context.Context, account, coid string, prov *Provenance) {
	ctx = context.WithoutCancel(ctx)
	if err := s.st.IndexRemoveAll(ctx, openIndexes(account, prov), coid); err != nil {
		s.log.WarnContext(ctx, "could not unlist an order never sent; its hold ends with the resend window", "client_order_id", coid, "error", err)
	}
}

// openEntry is what an open-order index entry stands for now: the order
// the Trade service holds, or, for one it does not know yet, what the order
// being sent holds. Neither: the entry is stale (drop it).
type openEntry struct {
	order   *backends.Order
	sending *sending
}

// resolveOpen looks an index entry up. A client order id the Trade service
// does not know is still being sent, or its answer was lost and it may yet
// land, until the resend window after it was listed.
func (s *Service) resolveOpen(ctx context.Context, entry string) (openEntry, error) {
	if !isClientOrderID(entry) {
		o, err := s.bs.Trade.GetOrder(ctx, entry)
		if errors.Is(err, backends.ErrNotFound) {
			return openEntry{}, nil
		}
		return openEntry{order: &o}, err
	}
	o, err := s.bs.Trade.OrderByClientID(ctx, entry)
	switch {
	case err == nil:
		return openEntry{order: &o}, nil
	case !errors.Is(err, backends.ErrNotFound):
		return openEntry{}, err
	}
	rec, _, err := getJSON[sending](ctx, s.st, sendingKey(entry))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return openEntry{}, nil
	case err != nil:
		return openEntry{}, s.stateErr(ctx, err)
	case !landable(rec.At, s.now(), s.cfg.ResendWindow):
		return openEntry{}, nil
	}
	return openEntry{sending: &rec}, nil
}

// lockAccount takes the account's lease for a check and what makes its
// order count for the next check (its approval recorded, or the order
// listed to be sent), waiting while another order of the account holds it.
// It lasts the execution lease (EXECUTION_LEASE, longer than a backend
// call may take): what it covers is the check's backend reads, a few
// store calls and a journal write. A lease a call could not hand back (the
// store down as it tried) holds the account's orders until it ends.
func (s *Service) lockAccount(ctx context.Context, account string) (*heldLease, error) {
	return s.lease(ctx, "acctlock:"+account, s.cfg.Lease, "waiting for another order on the account to be checked")
}
