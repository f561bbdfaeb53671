package trading

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
)

// leaseRecord is a lease in the state store: held until Until, or free once
// Released. Every replica takes it the same way, so it serialises a step
// across replicas; a holder that vanished (crash, scale-down) loses it when
// its time ends.
type leaseRecord struct {
	Until    time.Time `json:"until"`
	Released bool      `json:"released,omitempty"`
}

// heldLease is a lease this call holds, at version ver of its record.
// Versions only grow while a record lives, and it lives far longer than
// any holder (leaseKeep): a version once held and since moved on is never
// seen again, so a holder whose lease ran out can never take a later
// holder's record for its own.
type heldLease struct {
	s    *Service
	key  string
	ttl  time.Duration
	ver  int64
	once sync.Once
}

// leaseKeep is how long a lease record is kept after it was last written.
const leaseKeep = 24 * time.Hour

// errLeaseLost: the lease ran out while its holder was still at work (a
// stalled audit sink, a long pause) and another call took it; the holder
// must stop before it acts on what it checked.
var errLeaseLost = agentError("this order waited too long between its check and its recording, and another order on the account was checked meanwhile; nothing was placed. Retry with the same idempotency_key: it is checked again")

// lease takes the lease at key for ttl, waiting while another call holds
// it: woken when a holder on this replica hands it back, and polling for
// one on another. waiting says, in an error, what a call that gave up was
// waiting for.
func (s *Service) lease(ctx context.Context, key string, ttl time.Duration, waiting string) (*heldLease, error) {
	for wait := time.Millisecond; ; wait = min(wait*2, 20*time.Millisecond) {
		released, done := s.leases.wait(key) // before the read: no wake-up is missed
		l, again, err := s.tryLease(ctx, key, ttl)
		if l != nil || err != nil {
			done()
			return l, err
		}
		if again { // another call moved the record on: look again at once
			done()
			continue
		}
		select {
		case <-ctx.Done():
			done()
			return nil, fmt.Errorf("%s: %w", waiting, ctx.Err())
		case <-released:
		case <-time.After(wait):
		}
		done()
	}
}

// tryLease takes the lease at key if nobody holds it: the lease, or again
// (the record changed under this read), or neither (it is held).
func (s *Service) tryLease(ctx context.Context, key string, ttl time.Duration) (l *heldLease, again bool, err error) {
	rec := leaseRecord{Until: s.now().Add(ttl)}
	cur, ver, err := getJSON[leaseRecord](ctx, s.st, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if err := createJSON(ctx, s.st, key, rec, leaseKeep); err == nil {
			return &heldLease{s: s, key: key, ttl: ttl, ver: 1}, false, nil
		} else if !errors.Is(err, store.ErrConflict) {
			return nil, false, s.stateErr(ctx, err)
		}
		return nil, true, nil
	case err != nil:
		return nil, false, s.stateErr(ctx, err)
	case cur.Released || !s.now().Before(cur.Until):
		nv, err := updateJSON(ctx, s.st, key, rec, ver, leaseKeep)
		if err == nil {
			return &heldLease{s: s, key: key, ttl: ttl, ver: nv}, false, nil
		} else if !errors.Is(err, store.ErrConflict) {
			return nil, false, s.stateErr(ctx, err)
		}
		return nil, true, nil
	}
	return nil, false, nil
}

// renew proves the lease is still this call's and extends it: call it
// before acting on what was checked under it. A lease that ran out but
// that nobody took is still this call's (nothing was checked meanwhile).
func (l *heldLease) renew(ctx context.Context) error {
	nv, err := updateJSON(ctx, l.s.st, l.key, leaseRecord{Until: l.s.now().Add(l.ttl)}, l.ver, leaseKeep)
	switch {
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
		return errLeaseLost
	case err != nil:
		return l.s.stateErr(ctx, err)
	}
	l.ver = nv
	return nil
}

// unlock hands the lease back (more than once is harmless; one another
// call took meanwhile is left alone).
func (l *heldLease) unlock(ctx context.Context) {
	l.once.Do(func() {
		ctx := context.WithoutCancel(ctx)
		_, err := updateJSON(ctx, l.s.st, l.key, leaseRecord{Released: true}, l.ver, leaseKeep)
		if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			l.s.log.WarnContext(ctx, "could not release a lease; it frees itself when the lease ends", "key", l.key, "error", err)
		}
		l.s.leases.release(l.key)
	})
}

// leaseWaiters wakes the calls on this replica that wait for a lease when
// it is handed back, instead of leaving them to their next poll. A key's
// entry lives while someone waits on it.
type leaseWaiters struct {
	mu    sync.Mutex
	slots map[string]*waitSlot
	// onWait, if set (tests), is told when a call starts waiting for key.
	onWait func(key string)
}

type waitSlot struct {
	released chan struct{}
	waiting  int
}

// wait returns what is closed when the lease at key is next handed back
// here, and done, to call when no longer waiting.
func (w *leaseWaiters) wait(key string) (released <-chan struct{}, done func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.slots == nil {
		w.slots = map[string]*waitSlot{}
	}
	slot, ok := w.slots[key]
	if !ok {
		slot = &waitSlot{released: make(chan struct{})}
		w.slots[key] = slot
	}
	slot.waiting++
	if w.onWait != nil {
		w.onWait(key)
	}
	return slot.released, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if slot.waiting--; slot.waiting == 0 && w.slots[key] == slot {
			delete(w.slots, key)
		}
	}
}

func (w *leaseWaiters) release(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if slot, ok := w.slots[key]; ok {
		close(slot.released)
		delete(w.slots, key)
	}
}
