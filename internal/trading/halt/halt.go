// Package halt is the kill switch: halts engaged by a risk officer at four
// scopes (global, account, principal, agent) that stop new orders on every
// replica at once. The switch lives in the shared state store and is read
// on every order, so a halt engaged on one replica refuses the next order on
// any other; when the store cannot be read the switch fails safe and
// trading stops.
package halt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
)

// Scopes a halt applies to.
const (
	Global    = "global"    // every order
	Account   = "account"   // orders for one account
	Principal = "principal" // orders of one human (the token's subject)
	Agent     = "agent"     // orders from one agent (the OAuth client id)
)

// Scopes lists the scopes, broadest first.
var Scopes = []string{Global, Account, Principal, Agent}

// Halt is one engaged halt.
type Halt struct {
	Scope     string    `json:"scope"`
	Target    string    `json:"target,omitempty" jsonschema:"the account id, subject or client id; empty for global"`
	Reason    string    `json:"reason"`
	EngagedBy string    `json:"engaged_by"`
	EngagedAt time.Time `json:"engaged_at"`
	// Seq numbers the engagement (State.Seq).
	Seq int64 `json:"seq,omitempty"`
}

// same reports whether h and o are one engagement. A number one of them
// lost (an older replica's write) is not a difference.
func (h Halt) same(o Halt) bool {
	return h.Scope == o.Scope && h.Target == o.Target && (h.Seq == o.Seq || h.Seq == 0 || o.Seq == 0) &&
		h.EngagedBy == o.EngagedBy && h.EngagedAt.Equal(o.EngagedAt)
}

// Describe names the halt's scope for a person: "global", "account ACC-1".
func (h Halt) Describe() string {
	if h.Scope == Global {
		return "global"
	}
	return h.Scope + " " + h.Target
}

// State is every halt engaged now.
type State struct {
	Halts []Halt `json:"halts"`
	// Seq counts the halts ever engaged. An order's mark (CheckMark) is the
	// count when it passed the switch: a halt numbered above it came after,
	// which no comparison of two replicas' clocks can tell as surely.
	Seq int64 `json:"seq,omitempty"`
}

// releases are the latest halts released, oldest first (at most
// keepReleased): an order approved before a halt and still unsent when it
// is released must not go out after it by surprise (StoppedSince). They
// live under their own key, read only for such orders, not with the state
// every order reads. Forgotten is when the newest one dropped from the
// list was released; about the time before it, the list cannot say.
type releases struct {
	Released  []Released `json:"released"`
	Forgotten time.Time  `json:"forgotten,omitzero"`
	// ForgottenSeq is the highest Seq among the halts dropped from the list,
	// and ForgottenUnnumbered the latest release among those without one.
	ForgottenSeq        int64     `json:"forgotten_seq,omitempty"`
	ForgottenUnnumbered time.Time `json:"forgotten_unnumbered,omitzero"`
}

// Released is a halt as it was engaged, and its release.
type Released struct {
	Halt
	ReleasedBy string    `json:"released_by"`
	ReleasedAt time.Time `json:"released_at"`
}

// keepReleased bounds State.Released: the state is read for every order.
const keepReleased = 64

// clockSkew is how far the clocks of two replicas may disagree: for an
// order without a mark (recorded before marks were kept), a release stamped
// by one and the order's time by the other are compared with this much to
// spare (so such an order approved within seconds after a release fails
// too, the safe side).
const clockSkew = 5 * time.Second

// Event is one engage or release, kept in the switch's journal.
type Event struct {
	ID     string    `json:"id"`
	Action string    `json:"action"` // engaged or released
	Scope  string    `json:"scope"`
	Target string    `json:"target,omitempty"`
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// Order is what a halt is matched against.
type Order struct {
	Account   string
	Principal string
	Agent     string
}

// Matches reports whether h stops o.
func (h Halt) Matches(o Order) bool {
	switch h.Scope {
	case Global:
		return true
	case Account:
		return h.Target == o.Account
	case Principal:
		return Subject(h.Target) == Subject(o.Principal)
	case Agent:
		return h.Target == o.Agent
	}
	return true // an unknown scope (a newer replica's) stops everything: fail safe
}

// Halted is the error of an order a halt stops; its message names the
// scope and the reason and is safe to show an agent. ReleasedAt is set for
// a halt released since the order was approved (StoppedSince).
type Halted struct {
	Halt       Halt
	ReleasedAt time.Time
}

func (e *Halted) Error() string {
	if !e.ReleasedAt.IsZero() {
		return fmt.Sprintf("trading was halted (kill switch, %s scope) from %s to %s, after this order passed its check: %s. It was not placed; place it again if still wanted",
			e.Halt.Describe(), e.Halt.EngagedAt.Format(time.RFC3339), e.ReleasedAt.Format(time.RFC3339), e.Halt.Reason)
	}
	return fmt.Sprintf("trading is halted (kill switch, %s scope) since %s: %s. No order was placed; cancel_order and reads still work",
		e.Halt.Describe(), e.Halt.EngagedAt.Format(time.RFC3339), e.Halt.Reason)
}

// ErrReleasesForgotten: more halts were released since an order passed the
// switch than it keeps on record, so whether one of them covered it cannot
// be told (StoppedSince).
var ErrReleasesForgotten = errors.New("more halts were engaged and released since the order was approved than the kill switch keeps on record, so it was not sent, as a precaution; place it again if still wanted")

// ErrUnknown: the switch could not be read, so trading is halted.
var ErrUnknown = errors.New("the kill switch state cannot be read, so trading is halted as a precaution; no order was placed, retry shortly with the same idempotency_key")

// Errors of Engage and Release, safe to show the caller.
var (
	ErrScope      = errors.New("scope must be global, account, principal or agent, with a target for all but global")
	ErrReason     = errors.New("a reason is required")
	ErrNotEngaged = errors.New("no such halt is engaged")
	ErrChanged    = errors.New("the halt was released and engaged again meanwhile; nothing was changed: review it and release it again")
)

// Journal records an engage or release before it takes effect.
type Journal interface {
	Record(ctx context.Context, s audit.Step) error
}

// Switch is the kill switch.
type Switch struct {
	st      store.Store
	journal Journal
	log     *slog.Logger
	now     func() time.Time
}

// Store keys. The state has no expiry: a halt holds until released.
const (
	stateKey     = "halt:state"
	releasesKey  = "halt:released"
	countKey     = "halt:count"
	historyIndex = "halt:history"
	// historyTTL is how long the journal of engages and releases is kept in
	// the store; the audit trail keeps it for good.
	historyTTL = 400 * 24 * time.Hour
)

// New returns the switch over st; now is the clock (nil: time.Now).
func New(st store.Store, j Journal, log *slog.Logger, now func() time.Time) *Switch {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Switch{st: st, journal: j, log: log, now: now}
}

// State returns the halts engaged now.
func (s *Switch) State(ctx context.Context) (State, error) {
	st, _, err := s.read(ctx)
	return st, err
}

func (s *Switch) read(ctx context.Context) (State, int64, error) {
	return load[State](ctx, s.st, stateKey, "the kill switch")
}

// load reads the JSON value at key and its version (zero, and version 0,
// when there is none); what names it in errors.
func load[T any](ctx context.Context, st store.Store, key, what string) (T, int64, error) {
	var v T
	raw, ver, err := st.Get(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return v, 0, nil
	case err != nil:
		return v, 0, fmt.Errorf("read %s: %w", what, err)
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, 0, fmt.Errorf("decode %s: %w", what, err)
	}
	return v, ver, nil
}

// errUnchanged, from an edit passed to modify: nothing to write.
var errUnchanged = errors.New("unchanged")

// modify applies edit to the JSON value at key (its zero value when there
// is none) and writes it back by compare-and-swap, editing afresh after a
// conflict. An edit's error stops it, and is returned (errUnchanged: nil,
// nothing written). what names the value in errors.
func modify[T any](ctx context.Context, st store.Store, key, what string, edit func(*T) error) (T, error) {
	for {
		v, ver, err := load[T](ctx, st, key, what)
		if err != nil {
			return v, err
		}
		if err := edit(&v); errors.Is(err, errUnchanged) {
			return v, nil
		} else if err != nil {
			return v, err
		}
		raw, err := json.Marshal(v)
		if err != nil {
			return v, err
		}
		if ver == 0 {
			err = st.Create(ctx, key, raw, 0)
		} else {
			_, err = st.Update(ctx, key, raw, ver, 0)
		}
		switch {
		case errors.Is(err, store.ErrConflict):
			continue // changed concurrently: edit the new value
		case err != nil:
			return v, fmt.Errorf("write %s: %w", what, err)
		}
		return v, nil
	}
}

// Check returns a *Halted error if a halt stops o, or ErrUnknown (joined
// with the cause) if the switch cannot be read: no halt is ever assumed
// away.
func (s *Switch) Check(ctx context.Context, o Order) error {
	_, err := s.CheckPass(ctx, o)
	return err
}

// Pass is an order's pass of the switch. Mark is the count of halts ever
// engaged then (State.Seq): kept with the order, it lets StoppedSince tell
// which halts came after. Version is the state's store version then (0:
// not known; absentState: no halt was ever engaged), by which a look soon
// after can tell that nothing changed.
type Pass struct {
	Mark, Version int64
}

// absentState is the Version of a switch with no state record yet.
const absentState = -1

// version is a state record's version as a Pass keeps it.
func version(ver int64) int64 {
	if ver == 0 {
		return absentState
	}
	return ver
}

// CheckPass is Check, and o's pass when it passes.
func (s *Switch) CheckPass(ctx context.Context, o Order) (Pass, error) {
	st, ver, err := s.read(ctx)
	if err != nil {
		return Pass{}, errors.Join(ErrUnknown, err)
	}
	for _, h := range st.Halts {
		if h.Matches(o) {
			return Pass{}, &Halted{Halt: h}
		}
	}
	return Pass{Mark: st.Seq, Version: version(ver)}, nil
}

// StoppedSince is Check for an order that passed the switch with mark
// (CheckMark; at since, by its replica's clock) and is not sent (again)
// yet: a halt engaged after it stops it too, even once released, since it
// was meant to (the requester places it again if still wanted). An order
// without a mark (0: recorded before marks were kept) is compared by time:
// a halt released after since, with clockSkew to spare. If releases that
// late are no longer on record, it is stopped (ErrReleasesForgotten): no
// halt is ever assumed away.
func (s *Switch) StoppedSince(ctx context.Context, o Order, p Pass, since time.Time) error {
	st, ver, err := s.read(ctx)
	if err != nil {
		return errors.Join(ErrUnknown, err)
	}
	for _, h := range st.Halts {
		if h.Matches(o) {
			return &Halted{Halt: h}
		}
	}
	if p.Version != 0 && version(ver) == p.Version {
		return nil // the switch has not changed since the order passed
	}
	mark := p.Mark
	rs, _, err := s.releases(ctx)
	if err != nil {
		return errors.Join(ErrUnknown, err)
	}
	// after: a halt engaged (numbered seq) and released at released came
	// after the order passed. Numbers decide where both sides have them;
	// a halt engaged clearly later by the clock counts whatever its number
	// (a number that went back when a record lost the count); without
	// numbers, a release after the order passed counts.
	after := func(seq int64, engaged, released time.Time) bool {
		switch {
		case released.Before(since.Add(-clockSkew)):
			return false // released clearly before the order passed
		case engaged.After(since.Add(clockSkew)):
			return true // engaged clearly after it
		case mark > 0 && seq > 0:
			return seq > mark
		}
		return true // within the clocks' skew, and unnumbered: the safe side
	}
	for _, r := range slices.Backward(rs.Released) {
		if r.Matches(o) && after(r.Seq, r.EngagedAt, r.ReleasedAt) {
			return &Halted{Halt: r.Halt, ReleasedAt: r.ReleasedAt}
		}
	}
	// A dropped release after the order passed may have been of a halt
	// that stops it: by number where the order and the dropped halts have
	// numbers, else by time (with the skew to spare).
	if !rs.Forgotten.IsZero() && !rs.Forgotten.Before(since.Add(-clockSkew)) {
		byTime := mark == 0 || !rs.ForgottenUnnumbered.IsZero() && !rs.ForgottenUnnumbered.Before(since.Add(-clockSkew))
		if byTime || rs.ForgottenSeq > mark {
			return ErrReleasesForgotten
		}
	}
	return nil
}

func (s *Switch) releases(ctx context.Context) (releases, int64, error) {
	return load[releases](ctx, s.st, releasesKey, "the kill switch's releases")
}

// rememberRelease keeps r among the latest releases. It is written before the
// release takes effect: if the release then fails, an order approved before
// it is stopped by a halt that still holds anyway (the safe side).
func (s *Switch) rememberRelease(ctx context.Context, r Released) error {
	_, err := modify(ctx, s.st, releasesKey, "the kill switch's releases", func(rs *releases) error {
		// One record per engagement: a release that failed, or lost to
		// another officer's, and is tried again updates it.
		if i := slices.IndexFunc(rs.Released, func(o Released) bool { return o.same(r.Halt) }); i >= 0 {
			rs.Released = slices.Delete(rs.Released, i, i+1)
		}
		rs.Released = append(rs.Released, r)
		if n := len(rs.Released) - keepReleased; n > 0 {
			for _, d := range rs.Released[:n] {
				if d.ReleasedAt.After(rs.Forgotten) {
					rs.Forgotten = d.ReleasedAt
				}
				if d.Seq == 0 && d.ReleasedAt.After(rs.ForgottenUnnumbered) {
					rs.ForgottenUnnumbered = d.ReleasedAt
				}
				rs.ForgottenSeq = max(rs.ForgottenSeq, d.Seq)
			}
			rs.Released = slices.Delete(rs.Released, 0, n)
		}
		return nil
	})
	return err
}

// Engage engages a halt (or updates the reason of the same scope's halt),
// journaling it first. A halt is the safe direction: it takes effect even
// when the audit trail cannot record it (the store keeps its history entry,
// and the failure is logged).
func (s *Switch) Engage(ctx context.Context, by, scope, target, reason string) (State, error) {
	h, err := normalize(scope, target, reason)
	if err != nil {
		return State{}, err
	}
	h.EngagedBy, h.EngagedAt = by, s.now().UTC()
	// The count must never go back, even if the state record lost it (an
	// older replica's write): the number is taken from the count's own key
	// first (no older replica writes it), then from the state. If that key
	// cannot be read, the halt is engaged unnumbered, and orders are then
	// compared with it by time (the safe side): a halt is never held up,
	// nor numbered at or below an order's mark.
	n, known := s.reserveCount(ctx)
	st, err := s.change(ctx, Event{Action: "engaged", Scope: h.Scope, Target: h.Target, Reason: h.Reason, By: by}, false, func(st *State) error {
		top := st.Seq
		for _, o := range st.Halts {
			top = max(top, o.Seq)
		}
		// The state's count moves on either way: an order that passed
		// before this halt must not hold the mark of one after it.
		st.Seq = top + 1
		engaged := h
		if known {
			st.Seq = max(st.Seq, n)
			engaged.Seq = st.Seq
		}
		st.Halts = slices.DeleteFunc(st.Halts, func(o Halt) bool { return o.Scope == h.Scope && o.Target == h.Target })
		st.Halts = append(st.Halts, engaged)
		return nil
	})
	if err == nil && known && st.Seq > n {
		s.keepCount(ctx, st.Seq) // the key lagged the state
	}
	return st, err
}

// reserveCount takes the next number from the count's own key. known is
// false if it cannot be read or written.
func (s *Switch) reserveCount(ctx context.Context) (n int64, known bool) {
	n, err := modify(ctx, s.st, countKey, "the kill switch's count", func(c *int64) error { *c++; return nil })
	if err != nil {
		s.log.ErrorContext(ctx, "kill switch count unavailable; engaging the halt unnumbered", "error", err)
		return 0, false
	}
	return n, true
}

// keepCount raises the count's own key to n (never lowers it). A failure
// is logged: the state holds the count meanwhile.
func (s *Switch) keepCount(ctx context.Context, n int64) {
	_, err := modify(ctx, s.st, countKey, "the kill switch's count", func(c *int64) error {
		if *c >= n {
			return errUnchanged
		}
		*c = n
		return nil
	})
	if err != nil {
		s.log.ErrorContext(ctx, "kill switch count not kept", "error", err)
	}
}

// Release releases the halt of scope and target, journaling it first:
// trading resumes only on the record.
func (s *Switch) Release(ctx context.Context, by, scope, target, reason string) (State, error) {
	h, err := normalize(scope, target, reason)
	if err != nil {
		return State{}, err
	}
	st, err := s.State(ctx)
	if err != nil {
		return State{}, err
	}
	i := slices.IndexFunc(st.Halts, func(o Halt) bool { return o.Scope == h.Scope && o.Target == h.Target })
	if i < 0 {
		return State{}, ErrNotEngaged
	}
	// The release on record is of this engagement, and only this one is
	// released: if the scope was released and engaged again meanwhile, the
	// newer halt stays (ErrChanged), since what it stops was never
	// recorded as released.
	engaged := st.Halts[i]
	if err := s.rememberRelease(ctx, Released{Halt: engaged, ReleasedBy: by, ReleasedAt: s.now().UTC()}); err != nil {
		return State{}, fmt.Errorf("keep the release: %w", err)
	}
	return s.change(ctx, Event{Action: "released", Scope: h.Scope, Target: h.Target, Reason: h.Reason, By: by}, true, func(st *State) error {
		j := slices.IndexFunc(st.Halts, func(o Halt) bool { return o.Scope == h.Scope && o.Target == h.Target })
		switch {
		case j < 0:
			return ErrNotEngaged
		case !st.Halts[j].same(engaged):
			return ErrChanged
		}
		st.Halts = slices.Delete(st.Halts, j, j+1)
		return nil
	})
}

// Parse checks and normalises a scope and its target: a known scope, a
// target for all but global, and a principal's subject in the one form
// halts and indexes compare (subjects that differ only in case or
// surrounding space are one person, as for four eyes).
func Parse(scope, target string) (Halt, error) {
	h := Halt{Scope: strings.ToLower(strings.TrimSpace(scope)), Target: strings.TrimSpace(target)}
	if h.Scope == Principal {
		h.Target = Subject(h.Target)
	}
	switch {
	case !slices.Contains(Scopes, h.Scope), h.Scope == Global && h.Target != "", h.Scope != Global && h.Target == "", len(h.Target) > 256:
		return Halt{}, ErrScope
	}
	return h, nil
}

// Entitled reports whether p may operate a halt of scope and target: an
// account halt needs the account; a global, principal or agent halt
// reaches every account, so it needs them all.
func Entitled(p principal.Principal, scope, target string) bool {
	if strings.ToLower(strings.TrimSpace(scope)) == Account {
		return p.Entitled(strings.TrimSpace(target))
	}
	return p.Entitled(principal.AllAccounts)
}

// Subject is the form of a subject that principal halts compare.
func Subject(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

func normalize(scope, target, reason string) (Halt, error) {
	h, err := Parse(scope, target)
	if err != nil {
		return Halt{}, err
	}
	h.Reason = strings.TrimSpace(reason)
	if h.Reason == "" || len(h.Reason) > 1000 {
		return Halt{}, ErrReason
	}
	return h, nil
}

// superseded records that e, journaled before it took effect, did not
// take effect after all.
func (s *Switch) superseded(ctx context.Context, e Event, why error) {
	if err := s.journal.Record(ctx, audit.Step{Action: "halt." + e.Action + ".superseded", Principal: e.By, AccountID: accountOf(e),
		Detail: e.ID + " " + e.Scope + " " + e.Target + ": did not take effect: " + why.Error()}); err != nil {
		s.log.ErrorContext(ctx, "journal refused a superseded kill switch change", "halt_id", e.ID, "error", err)
	}
}

// change journals e, then applies edit to the state under compare-and-swap
// and keeps e in the switch's history. mustJournal: a journal failure
// stops the change.
func (s *Switch) change(ctx context.Context, e Event, mustJournal bool, edit func(*State) error) (State, error) {
	var id [8]byte
	rand.Read(id[:])
	e.ID, e.At = "HALT-"+strings.ToUpper(hex.EncodeToString(id[:])), s.now().UTC()
	journaled := false
	st, err := modify(ctx, s.st, stateKey, "the kill switch", func(st *State) error {
		if err := edit(st); err != nil {
			if journaled {
				// Another change came first (two officers releasing at
				// once): the trail must not keep a change that never was.
				s.superseded(ctx, e, err)
			}
			return err
		}
		if !journaled {
			if err := s.journal.Record(ctx, audit.Step{Action: "halt." + e.Action, Principal: e.By, AccountID: accountOf(e),
				Detail: e.ID + " " + e.Scope + " " + e.Target + ": " + e.Reason}); err != nil {
				if mustJournal {
					return fmt.Errorf("journal the kill switch change: %w", err)
				}
				s.log.ErrorContext(ctx, "kill switch engaged without an audit record; its history entry in the state store is the record", "halt_id", e.ID, "error", err)
			}
			journaled = true
		}
		return nil
	})
	if err != nil {
		return State{}, err
	}
	if err := s.remember(ctx, e); err != nil {
		return st, fmt.Errorf("the change took effect, but its history entry was not kept: %w", err)
	}
	return st, nil
}

func accountOf(e Event) string {
	if e.Scope == Account {
		return e.Target
	}
	return ""
}

func (s *Switch) remember(ctx context.Context, e Event) error {
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := s.st.Create(ctx, "halt:event:"+e.ID, raw, historyTTL); err != nil {
		return err
	}
	return s.st.IndexAdd(ctx, historyIndex, e.ID, -float64(e.At.UnixNano()))
}

// History returns the latest engages and releases, newest first.
func (s *Switch) History(ctx context.Context, limit int) ([]Event, error) {
	ids, err := s.st.IndexRange(ctx, historyIndex, limit)
	if err != nil {
		return nil, fmt.Errorf("read the kill switch history: %w", err)
	}
	out := make([]Event, 0, len(ids))
	for _, id := range ids {
		raw, _, err := s.st.Get(ctx, "halt:event:"+id)
		if errors.Is(err, store.ErrNotFound) {
			s.st.IndexRemove(ctx, historyIndex, id)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read the kill switch history: %w", err)
		}
		var e Event
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("decode the kill switch history: %w", err)
		}
		out = append(out, e)
	}
	return out, nil
}
