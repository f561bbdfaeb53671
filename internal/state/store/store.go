// Package store keeps what must outlive one request and be seen by every
// replica: approval records, idempotency records and single-use confirmation
// nonces. Two implementations share one contract: Memory (one process, the
// default) and Redis (a fleet). Values are opaque bytes with a version, so
// every state change is a compare-and-swap and no two replicas can both win
// the same transition.
package store

import (
	"context"
	"errors"
	"time"
)

var (
	// ErrNotFound: no value at the key (never stored, deleted or expired).
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: Create found the key taken, or Update found a newer version.
	ErrConflict = errors.New("store: conflict")
	// ErrUnavailable: the store could not be reached. State-changing callers
	// must fail closed on it.
	ErrUnavailable = errors.New("store: unavailable")
	// ErrLimit: Tally would take the tally past a bound.
	ErrLimit = errors.New("store: limit reached")
)

// Store is the shared state contract.
type Store interface {
	// Get returns the value at key and its version.
	Get(ctx context.Context, key string) (value []byte, version int64, err error)
	// Create stores value at key with version 1 if the key is absent, else
	// returns ErrConflict. ttl > 0 expires the key.
	Create(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Update replaces the value at key if its version is still version and
	// returns the new version; otherwise ErrConflict (or ErrNotFound).
	// ttl > 0 resets the expiry; 0 keeps none.
	Update(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) (int64, error)
	// IndexAdd records member in the named index with a sort score.
	IndexAdd(ctx context.Context, index, member string, score float64) error
	// IndexRemove drops member from the index.
	IndexRemove(ctx context.Context, index, member string) error
	// IndexAddAll records member in each of indexes with one score, and
	// IndexRemoveAll drops members from each of indexes: one round trip
	// each, for an entry kept in several indexes at once.
	IndexAddAll(ctx context.Context, indexes []string, member string, score float64) error
	IndexRemoveAll(ctx context.Context, indexes []string, members ...string) error
	// IndexRange lists up to limit members by ascending score.
	IndexRange(ctx context.Context, index string, limit int) ([]string, error)
	// IndexRangeFrom lists up to limit members with a score of at least
	// from, by ascending score: the next page of an index, from where the
	// last one ended.
	IndexRangeFrom(ctx context.Context, index string, from float64, limit int) ([]string, error)
	// Tally adds member, with amount, to the tally at key unless it is
	// there already (a retry), in one atomic step across replicas; ErrLimit
	// if the tally would then hold more than maxCount members or sum to
	// more than maxSum (0: no bound). ttl > 0 resets the tally's expiry.
	Tally(ctx context.Context, key, member string, amount float64, maxCount int, maxSum float64, ttl time.Duration) error
	// TallyRead returns how many members the tally at key holds and their
	// sum, leaving out exclude (zero for a missing tally).
	TallyRead(ctx context.Context, key, exclude string) (count int, sum float64, err error)
	// Ping reports whether the store answers (readiness).
	Ping(ctx context.Context) error
	Close() error
}
