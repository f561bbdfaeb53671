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

// heldLease is a lease this call holds.
type heldLease struct {
	s    *Service
	key  string
	ver  int64
	once sync.Once
}

// errLeaseLost: the lease ran out while its holder was still at work (a
// stalled audit sink, a long pause) and another call took it; the holder
// must stop before it acts on what it checked.
var errLeaseLost = agentError("this order waited too long between its check and its recording, and another order on the account was checked meanwhile; nothing was placed. Retry with the same idempotency_key: it is checked again")

// lease takes the lease at key, waiting while another call holds it.
// waiting says, in an error, what a call that gave up was waiting for.
func (s *Service) lease(ctx context.Context, key, waiting string) (*heldLease, error) {
	rec := leaseRecord{Until: s.now().Add(s.cfg.Lease)}
	for wait := 5 * time.Millisecond; ; wait = min(wait*2, 100*time.Millisecond) {
		cur, ver, err := getJSON[leaseRecord](ctx, s.st, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if err := createJSON(ctx, s.st, key, rec, s.cfg.Lease); err == nil {
				return &heldLease{s: s, key: key, ver: 1}, nil
			} else if !errors.Is(err, store.ErrConflict) {
				return nil, s.stateErr(ctx, err)
			}
			continue
		case err != nil:
			return nil, s.stateErr(ctx, err)
		case cur.Released || !s.now().Before(cur.Until):
			nv, err := updateJSON(ctx, s.st, key, rec, ver, s.cfg.Lease)
			if err == nil {
				return &heldLease{s: s, key: key, ver: nv}, nil
			} else if !errors.Is(err, store.ErrConflict) {
				return nil, s.stateErr(ctx, err)
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w", waiting, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// renew proves the lease is still this call's and extends it: call it
// before acting on what was checked under it. A lease that ran out but
// that nobody took is still this call's (nothing was checked meanwhile).
func (l *heldLease) renew(ctx context.Context) error {
	nv, err := updateJSON(ctx, l.s.st, l.key, leaseRecord{Until: l.s.now().Add(l.s.cfg.Lease)}, l.ver, l.s.cfg.Lease)
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
		_, err := updateJSON(ctx, l.s.st, l.key, leaseRecord{Released: true}, l.ver, l.s.cfg.Lease)
		if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
			l.s.log.WarnContext(ctx, "could not release a lease; it frees itself when the lease ends", "key", l.key, "error", err)
		}
	})
}
