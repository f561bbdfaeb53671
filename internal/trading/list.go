package trading

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
)

// ordersIndex lists the place_order calls of one principal on one account,
// newest first: the score is minus the time in microseconds (exact in a
// float64, and it orders orders placed in the same millisecond), so the
// lowest scores a range returns are the latest. Members are
// "<unix µs>|<first 16 hex of the order's digest>|<idempotency key>": the
// digest ties an entry to this account's order, not to a later reuse of the
// key elsewhere.
func ordersIndex(subject, account string) string {
	sum := sha256.Sum256([]byte(subject))
	return "orders:" + hex.EncodeToString(sum[:16]) + ":" + account
}

// remember indexes a place_order call for list_orders. Best effort: the
// order's truth is in its own records; a missing entry only hides it from
// the list.
func (s *Service) remember(ctx context.Context, subject string, o OrderArgs) {
	now := s.now().UnixMicro()
	member := strconv.FormatInt(now, 10) + "|" + o.Digest()[:16] + "|" + o.IdempotencyKey
	if err := s.st.IndexAdd(ctx, ordersIndex(subject, o.AccountID), member, -float64(now)); err != nil {
		s.log.WarnContext(ctx, "could not index the order for list_orders", "error", err)
	}
}

// ListQuery selects orders for ListOrders.
type ListQuery struct {
	AccountID string
	// States keeps outcomes in one of these statuses; "open" stands for
	// every status that may still change (pending_approval, approved,
	// accepted, partially_filled, submitted, in_progress).
	States       []string
	Since, Until time.Time // zero: unbounded
	Limit        int
	Cursor       string
}

// OrderList is one page of a principal's orders, newest first.
type OrderList struct {
	Orders     []ListedOrder `json:"orders" jsonschema:"your orders and approval requests on the account, newest first"`
	NextCursor string        `json:"next_cursor,omitempty" jsonschema:"pass as cursor for the next page; absent on the last page"`
}

// ListedOrder is one place_order call and where it stands now.
type ListedOrder struct {
	PlacedAt time.Time `json:"placed_at" jsonschema:"when place_order was first called with this idempotency_key"`
	Outcome
	entry string // its index member, for the next page's cursor
}

// StatusInProgress: the order's first attempt is in flight, or was
// interrupted before its outcome was recorded.
const StatusInProgress = "in_progress"

// openStates are the statuses that may still change.
var openStates = []string{StatusPendingApproval, StatusApproved, backends.StatusAccepted, backends.StatusPartiallyFilled, StatusSubmitted, StatusInProgress}

// ListOrders returns p's orders on an account, newest first, each in its
// current state (working orders and approvals refreshed, as
// get_order_status does). The list comes from this server's state store:
// orders placed through it, for as long as their records are kept.
func (s *Service) ListOrders(ctx context.Context, p principal.Principal, q ListQuery) (OrderList, error) {
	if !p.Entitled(q.AccountID) {
		return OrderList{}, fmt.Errorf("account %q: %w", q.AccountID, backends.ErrNotFound)
	}
	// The cursor is the index entry a page ended on: the next page starts
	// after it, without reading the entries before it again, and orders
	// placed meanwhile do not shift it.
	after, err := parseCursor(q.Cursor)
	if err != nil {
		return OrderList{}, err
	}
	idx := ordersIndex(p.Subject, q.AccountID)
	out := OrderList{Orders: []ListedOrder{}}
	examined, last := 0, ""
	for m, err := range s.indexFrom(ctx, idx, after) {
		if err != nil {
			return OrderList{}, s.stateErr(ctx, err)
		}
		if examined == maxExamined {
			// A page reads at most this many entries (each a store read,
			// a working order a Trade service read): past them, a short
			// page whose cursor continues from the last one read.
			out.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(last))
			break
		}
		examined, last = examined+1, m
		e, _ := parseEntry(m)
		if !q.Since.IsZero() && e.placed.Before(q.Since) {
			break // newest first: the rest are older still
		}
		if !q.Until.IsZero() && e.placed.After(q.Until) {
			continue
		}
		o, found, err := s.listed(ctx, p, e.key, e.digest)
		if errors.Is(err, errNotPlaced) {
			continue // kept: a retry with the key may still place it
		}
		if err != nil {
			return OrderList{}, err
		}
		if !found {
			s.st.IndexRemove(ctx, idx, m) // its records expired
			continue
		}
		if !wanted(o.Status, q.States) {
			continue
		}
		if len(out.Orders) == q.Limit {
			last := out.Orders[len(out.Orders)-1]
			out.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(last.entry))
			break
		}
		out.Orders = append(out.Orders, ListedOrder{PlacedAt: e.placed, Outcome: o, entry: m})
	}
	return out, nil
}

// indexScan is how many index entries ListOrders reads at a time, and
// maxExamined how many one page may examine at most.
const (
	indexScan   = 200
	maxExamined = 1000
)

// indexFrom yields the members of an orders index after the cursor's entry
// (newest first), a batch at a time from the last one's score, so a page
// can start anywhere in an index of any length. Members of one microsecond
// share a score: a batch that holds nothing new (all of that microsecond)
// is read again, larger.
func (s *Service) indexFrom(ctx context.Context, idx string, after entry) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		last, from, n := after, math.Inf(-1), indexScan
		if after.ok {
			from = -float64(after.us)
		}
		for {
			members, err := s.st.IndexRangeFrom(ctx, idx, from, n)
			if err != nil {
				yield("", err)
				return
			}
			moved := false
			for _, m := range members {
				e, ok := parseEntry(m)
				if !ok || last.ok && !e.olderThan(last) {
					continue
				}
				if !yield(m, nil) {
					return
				}
				last, moved = e, true
			}
			switch {
			case len(members) < n:
				return
			case moved:
				from, n = -float64(last.us), indexScan
			default:
				n *= 2
			}
		}
	}
}

// entry is one member of an orders index.
type entry struct {
	ok          bool
	us          int64 // placed, unix microseconds
	placed      time.Time
	member      string
	digest, key string
}

func parseEntry(m string) (entry, bool) {
	parts := strings.SplitN(m, "|", 3)
	if len(parts) != 3 {
		return entry{}, false
	}
	us, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return entry{}, false
	}
	return entry{ok: true, us: us, placed: time.UnixMicro(us).UTC(), member: m, digest: parts[1], key: parts[2]}, true
}

// olderThan reports whether e comes after c in the index (newest first;
// entries of the same microsecond by member, as the index orders them).
func (e entry) olderThan(c entry) bool {
	return e.us < c.us || e.us == c.us && e.member > c.member
}

func parseCursor(cursor string) (entry, error) {
	if cursor == "" {
		return entry{}, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	e, ok := parseEntry(string(raw))
	if err != nil || !ok {
		return entry{}, fmt.Errorf("%w: cursor is not valid; repeat the call without it", backends.ErrInvalid)
	}
	return e, nil
}

func wanted(status string, states []string) bool {
	if len(states) == 0 || slices.Contains(states, status) {
		return true
	}
	return slices.Contains(states, "open") && slices.Contains(openStates, status)
}

// errNotPlaced: a place_order call that placed nothing, which list_orders
// does not show.
var errNotPlaced = errors.New("not placed")

// listed is where the order with p's idempotency key stands now.
// Its record must be the indexed order's (digest prefix), not a later
// reuse of the key after the record expired.
func (s *Service) listed(ctx context.Context, p principal.Principal, key, digest string) (Outcome, bool, error) {
	rec, _, err := getJSON[idemRecord](ctx, s.st, idemKey(p.Subject, "place_order", key))
	switch {
	case errors.Is(err, store.ErrNotFound) || err == nil && !strings.HasPrefix(rec.Digest, digest):
		return Outcome{}, false, nil
	case err != nil:
		return Outcome{}, false, s.stateErr(ctx, err)
	case rec.State == idemReleased:
		// The call ended in an error before anything was sent: no order,
		// unless its approval was created before the error.
		a, _, err := s.approval(ctx, approvalID(p.Subject, key))
		switch {
		case errors.Is(err, ErrNotFound) || err == nil && !strings.HasPrefix(a.ArgsDigest, digest):
			return Outcome{}, false, errNotPlaced
		case err != nil:
			return Outcome{}, false, err
		}
		out, err := s.refresh(ctx, Outcome{Approval: &a})
		if errors.Is(err, ErrStateUnavailable) {
			return Outcome{}, false, err
		}
		if err != nil {
			out = s.approvalOutcome(ctx, a)
		}
		out.IdempotencyKey = key
		return out, true, nil
	case rec.State != idemDone || rec.Outcome == nil:
		// Sent and unanswered: the Trade service may hold it, in whatever
		// state it is now (the record's next retry would learn the same).
		if rec.mayBeSent() {
			if o, err := s.bs.Trade.OrderByClientID(ctx, clientOrderID(p.Subject, key)); err == nil {
				out := orderOutcome(o)
				out.IdempotencyKey, out.Provenance = key, s.provenanceOf(ctx, o.ClientOrderID)
				return out, true, nil
			}
		}
		return Outcome{Status: StatusInProgress, IdempotencyKey: key,
			Message: "an attempt is in flight or was interrupted before its outcome was recorded; call place_order again with the same idempotency_key and arguments to learn it"}, true, nil
	}
	out, err := s.refresh(ctx, *rec.Outcome)
	if errors.Is(err, ErrStateUnavailable) {
		return Outcome{}, false, err
	}
	if err != nil {
		out = *rec.Outcome // as recorded; get_order_status says more
	}
	out.IdempotencyKey = key
	return out, true, nil
}
