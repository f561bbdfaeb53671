package trading

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// OrderArgs are place_order's order fields plus the caller's idempotency key.
type OrderArgs struct {
	AccountID      string  `json:"account_id"`
	Ticker         string  `json:"ticker"`
	Side           string  `json:"side"`
	Type           string  `json:"type"`
	Quantity       float64 `json:"quantity"`
	LimitPrice     float64 `json:"limit_price,omitempty"`
	IdempotencyKey string  `json:"idempotency_key"`
}

// Normalize upper-cases the ticker and defaults the order type, so equal
// orders have equal digests.
func (o OrderArgs) Normalize() OrderArgs {
	o.Ticker = strings.ToUpper(strings.TrimSpace(o.Ticker))
	o.Side = strings.ToLower(o.Side)
	o.Type = strings.ToLower(o.Type)
	if o.Type == "" {
		o.Type = backends.OrderMarket
	}
	if o.Type == backends.OrderMarket {
		o.LimitPrice = 0
	}
	return o
}

// Digest is the SHA-256 of the canonical order, idempotency key included:
// what an approval, an idempotency record and a confirmation are bound to.
func (o OrderArgs) Digest() string {
	o = o.Normalize()
	canon := strings.Join([]string{o.AccountID, o.Ticker, o.Side, o.Type,
		strconv.FormatFloat(o.Quantity, 'g', -1, 64), strconv.FormatFloat(o.LimitPrice, 'g', -1, 64), o.IdempotencyKey}, "\x00")
	sum := sha256.Sum256([]byte(canon))
	return hex.EncodeToString(sum[:])
}

// request is the Trade service's request for o under a client order id.
func (o OrderArgs) request(clientOrderID string) backends.OrderRequest {
	return backends.OrderRequest{ClientOrderID: clientOrderID, AccountID: o.AccountID, Ticker: o.Ticker,
		Side: o.Side, Type: o.Type, Quantity: o.Quantity, LimitPrice: o.LimitPrice}
}

func (o OrderArgs) policyOrder() policy.Order {
	return policy.Order{AccountID: o.AccountID, Ticker: o.Ticker, Side: o.Side, Type: o.Type, Quantity: o.Quantity, LimitPrice: o.LimitPrice}
}

// Approval statuses.
const (
	ApprovalPending   = "pending"
	ApprovalApproved  = "approved"  // decided; not yet sent
	ApprovalExecuting = "executing" // a replica holds the execution lease
	// ApprovalSubmitted: the Trade service has the order (OrderID); the
	// order's own status says whether it filled. Records written before
	// this state had its name say "executed", read as submitted.
	ApprovalSubmitted = "submitted"
	ApprovalRejected  = "rejected"
	ApprovalExpired   = "expired"
	ApprovalCancelled = "cancelled"
	ApprovalFailed    = "failed" // the Trade service refused the order
)

// Approval is the durable record of an order waiting for, or released by, a
// human approver.
type Approval struct {
	ID        string `json:"approval_id"`
	Status    string `json:"status"`
	Requester string `json:"requester" jsonschema:"principal who placed the order"`
	// RequesterClient is the OAuth client (the agent) the order came from.
	RequesterClient string          `json:"requester_client,omitempty" jsonschema:"OAuth client id of the agent that placed the order"`
	Order           OrderArgs       `json:"order"`
	ArgsDigest      string          `json:"args_digest"`
	ClientOrderID   string          `json:"client_order_id"`
	Preview         *policy.Preview `json:"preview,omitempty" jsonschema:"the pre-trade check at request time"`
	Provenance      *Provenance     `json:"provenance,omitempty" jsonschema:"how the order was entered: the user and agent, the confirmation, the policy version"`
	CreatedAt       time.Time       `json:"created_at"`
	ExpiresAt       time.Time       `json:"expires_at"`
	DecidedBy       string          `json:"decided_by,omitempty"`
	DecidedAt       *time.Time      `json:"decided_at,omitempty"`
	Reason          string          `json:"reason,omitempty"`
	OrderID         string          `json:"order_id,omitempty"`
	LeaseUntil      *time.Time      `json:"lease_until,omitempty"`
	// SentAt is when the approved order was first sent: an unanswered send
	// is resent unchecked only within the resend window of it.
	SentAt *time.Time `json:"sent_at,omitempty" jsonschema:"when the approved order was first sent to the Trade service"`
	// HaltMark is the kill switch's mark when the approve passed it: a halt
	// engaged after it stops the send, even once released.
	HaltMark int64  `json:"halt_mark,omitempty" jsonschema:"the kill switch's count of halts engaged when the order was approved"`
	Error    string `json:"error,omitempty"`
}

// AwaitingSend reports whether a is approved and its order not sent yet:
// approved, or being sent under a lease. Reading its status sends it.
func (a Approval) AwaitingSend() bool {
	return a.Status == ApprovalApproved || a.Status == ApprovalExecuting
}

// idemRecord is the idempotency record of one (principal, tool, key).
type idemRecord struct {
	Digest     string    `json:"digest"`
	State      string    `json:"state"` // in_progress, done, released, sent
	LeaseUntil time.Time `json:"lease_until"`
	Outcome    *Outcome  `json:"outcome,omitempty"`
	// Sent, on an in_progress record: the order may be on the wire (an
	// earlier attempt's send got no answer, or the owner renewed its lease
	// to send it). Whoever takes the key over resends it, as for "sent".
	Sent bool `json:"sent,omitempty"`
	// SentAt is when the order was last put on the wire, for a "sent"
	// record or a lease marked Sent (zero on records from before it was
	// kept: resent, as then).
	SentAt time.Time `json:"sent_at,omitzero"`
	// FirstSentAt is when it was first put on the wire: resends go out
	// unchecked only within the resend window of it, so retries cannot
	// keep an order going out unchecked for ever (zero: SentAt, as
	// records from before it was kept).
	FirstSentAt time.Time `json:"first_sent_at,omitzero"`
	// HaltMark and HaltMarkAt are the kill switch's mark, and the time,
	// when the first send's check passed it: a halt engaged after it stops
	// a resend, even once released.
	HaltMark   int64     `json:"halt_mark,omitempty"`
	HaltMarkAt time.Time `json:"halt_mark_at,omitzero"`
}

// haltPass is an order's pass of the kill switch, and when it began (the
// clock read before the switch was).
type haltPass struct {
	halt.Pass
	at time.Time
}

// haltPass is the pass r's first send was checked with (its send time,
// for records from before the time was kept).
func (r idemRecord) haltPass() haltPass {
	if r.HaltMarkAt.IsZero() {
		return haltPass{Pass: halt.Pass{Mark: r.HaltMark}, at: r.SentAt}
	}
	return haltPass{Pass: halt.Pass{Mark: r.HaltMark}, at: r.HaltMarkAt}
}

// firstSent is when r's order was first put on the wire.
func (r idemRecord) firstSent() time.Time {
	if r.FirstSentAt.IsZero() {
		return r.SentAt
	}
	return r.FirstSentAt
}

// mayBeSent reports whether r's order may have reached the Trade service
// already: a retry must then send the same order again, unchecked, never
// answer from fresh checks.
func (r idemRecord) mayBeSent() bool { return r.State == idemSent || r.Sent }

// landable reports whether an unanswered send may still reach the Trade
// service at now: only within window of it. Past that, the Trade service's
// "never seen" is final, and the order is checked (and confirmed) afresh,
// not sent days later, unchecked, into another market.
func landable(sentAt, now time.Time, window time.Duration) bool {
	return sentAt.IsZero() || now.Before(sentAt.Add(window))
}

// Idempotency record states.
const (
	idemInProgress = "in_progress"
	idemDone       = "done"
	idemReleased   = "released" // the owner failed before deciding; anyone may retake it
	idemSent       = "sent"     // sent to the Trade service, no answer: retakes reconcile, then resend unchecked
)

const pendingIndex = "approvals:pending"

func approvalKey(id string) string { return "approval:" + id }

func idemKey(principal, tool, key string) string {
	sum := sha256.Sum256([]byte(principal + "\x00" + tool + "\x00" + key))
	return "idem:" + hex.EncodeToString(sum[:20])
}

// clientOrderID derives the Trade service's idempotency key from ours, so a
// retry after any crash names the same backend order.
func clientOrderID(principal, key string) string {
	sum := sha256.Sum256([]byte("client-order\x00" + principal + "\x00" + key))
	return clientOrderPrefix + hex.EncodeToString(sum[:16])
}

// clientOrderPrefix starts every client order id this server makes.
const clientOrderPrefix = "pmcp-"

func approvalID(principal, key string) string {
	sum := sha256.Sum256([]byte("approval\x00" + principal + "\x00" + key))
	return "APR-" + strings.ToUpper(hex.EncodeToString(sum[:10]))
}

// getJSON and friends keep the JSON encoding of records in one place.
func getJSON[T any](ctx context.Context, st store.Store, key string) (T, int64, error) {
	var v T
	raw, ver, err := st.Get(ctx, key)
	if err != nil {
		return v, 0, err
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return v, ver, nil
}

func createJSON(ctx context.Context, st store.Store, key string, v any, ttl time.Duration) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return st.Create(ctx, key, raw, ttl)
}

// putJSON writes v at key, creating it or replacing whatever is there
// (also when the record expires between the attempts).
func putJSON(ctx context.Context, st store.Store, key string, v any, ttl time.Duration) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	for {
		err := st.Create(ctx, key, raw, ttl)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
		_, ver, err := st.Get(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if _, err := st.Update(ctx, key, raw, ver, ttl); !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
}

// forceJSON writes v over the record at key whatever its version: for a
// record that must win a race and must already exist (ErrNotFound if it
// does not), such as the order the Trade service holds.
func forceJSON(ctx context.Context, st store.Store, key string, v any, ttl time.Duration) error {
	for {
		_, ver, err := getJSON[json.RawMessage](ctx, st, key)
		if err != nil {
			return err
		}
		if _, err = updateJSON(ctx, st, key, v, ver, ttl); !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
}

func updateJSON(ctx context.Context, st store.Store, key string, v any, ver int64, ttl time.Duration) (int64, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	return st.Update(ctx, key, raw, ver, ttl)
}

func isTransient(err error) bool {
	return errors.Is(err, backends.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}
