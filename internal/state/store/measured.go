package store

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Operations and outcomes of state_store_operation_duration_seconds.
const (
	OpGet         = "get"
	OpCreate      = "create"
	OpUpdate      = "update"
	OpIndexAdd    = "index_add"
	OpIndexRemove = "index_remove"
	OpIndexRange  = "index_range"
	OpTally       = "tally"
	OpTallyRead   = "tally_read"
	OpPing        = "ping"

	OutcomeOK          = "ok"
	OutcomeNotFound    = "not_found"   // ErrNotFound
	OutcomeConflict    = "conflict"    // ErrConflict
	OutcomeLimit       = "limit"       // ErrLimit
	OutcomeUnavailable = "unavailable" // ErrUnavailable (Redis down, breaker open, deadline)
	OutcomeError       = "error"       // anything else (a corrupt record)
)

// Measured is a Store whose every operation is observed in
// state_store_operation_duration_seconds{operation,outcome}: the layer the
// server uses, so the memory and Redis stores are measured alike.
type Measured struct {
	s        Store
	duration *prometheus.HistogramVec
}

var _ Store = (*Measured)(nil)

// Measure wraps s and registers its histogram with reg.
func Measure(s Store, reg prometheus.Registerer) (*Measured, error) {
	m := &Measured{s: s, duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "state_store_operation_duration_seconds",
		Help: "Shared state store operations (approvals, idempotency records, confirmation nonces), by operation and outcome.",
		// 100µs .. 2.5s: a local Redis answers in well under a millisecond;
		// REDIS_TIMEOUT bounds the slowest.
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"operation", "outcome"})}
	if err := reg.Register(m.duration); err != nil {
		return nil, err
	}
	return m, nil
}

// Unwrap returns the measured store.
func (m *Measured) Unwrap() Store { return m.s }

func (m *Measured) observe(op string, start time.Time, err error) {
	m.duration.WithLabelValues(op, outcome(err)).Observe(time.Since(start).Seconds())
}

func outcome(err error) string {
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, ErrNotFound):
		return OutcomeNotFound
	case errors.Is(err, ErrConflict):
		return OutcomeConflict
	case errors.Is(err, ErrLimit):
		return OutcomeLimit
	case errors.Is(err, ErrUnavailable):
		return OutcomeUnavailable
	}
	return OutcomeError
}

// Get implements Store.
func (m *Measured) Get(ctx context.Context, key string) ([]byte, int64, error) {
	start := time.Now()
	v, ver, err := m.s.Get(ctx, key)
	m.observe(OpGet, start, err)
	return v, ver, err
}

// Create implements Store.
func (m *Measured) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	start := time.Now()
	err := m.s.Create(ctx, key, value, ttl)
	m.observe(OpCreate, start, err)
	return err
}

// Update implements Store.
func (m *Measured) Update(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) (int64, error) {
	start := time.Now()
	v, err := m.s.Update(ctx, key, value, version, ttl)
	m.observe(OpUpdate, start, err)
	return v, err
}

// IndexAdd implements Store.
func (m *Measured) IndexAdd(ctx context.Context, index, member string, score float64) error {
	start := time.Now()
	err := m.s.IndexAdd(ctx, index, member, score)
	m.observe(OpIndexAdd, start, err)
	return err
}

// IndexAddAll implements Store.
func (m *Measured) IndexAddAll(ctx context.Context, indexes []string, member string, score float64) error {
	start := time.Now()
	err := m.s.IndexAddAll(ctx, indexes, member, score)
	m.observe(OpIndexAdd, start, err)
	return err
}

// IndexRemoveAll implements Store.
func (m *Measured) IndexRemoveAll(ctx context.Context, indexes []string, members ...string) error {
	start := time.Now()
	err := m.s.IndexRemoveAll(ctx, indexes, members...)
	m.observe(OpIndexRemove, start, err)
	return err
}

// IndexRemove implements Store.
func (m *Measured) IndexRemove(ctx context.Context, index, member string) error {
	start := time.Now()
	err := m.s.IndexRemove(ctx, index, member)
	m.observe(OpIndexRemove, start, err)
	return err
}

// IndexRange implements Store.
func (m *Measured) IndexRange(ctx context.Context, index string, limit int) ([]string, error) {
	start := time.Now()
	out, err := m.s.IndexRange(ctx, index, limit)
	m.observe(OpIndexRange, start, err)
	return out, err
}

// IndexRangeFrom implements Store.
func (m *Measured) IndexRangeFrom(ctx context.Context, index string, from float64, limit int) ([]string, error) {
	start := time.Now()
	out, err := m.s.IndexRangeFrom(ctx, index, from, limit)
	m.observe(OpIndexRange, start, err)
	return out, err
}

// Tally implements Store.
func (m *Measured) Tally(ctx context.Context, key, member string, amount float64, maxCount int, maxSum float64, ttl time.Duration) error {
	start := time.Now()
	err := m.s.Tally(ctx, key, member, amount, maxCount, maxSum, ttl)
	m.observe(OpTally, start, err)
	return err
}

// TallyRead implements Store.
func (m *Measured) TallyRead(ctx context.Context, key, exclude string) (int, float64, error) {
	start := time.Now()
	n, sum, err := m.s.TallyRead(ctx, key, exclude)
	m.observe(OpTallyRead, start, err)
	return n, sum, err
}

// Ping implements Store.
func (m *Measured) Ping(ctx context.Context) error {
	start := time.Now()
	err := m.s.Ping(ctx)
	m.observe(OpPing, start, err)
	return err
}

// Close implements Store.
func (m *Measured) Close() error { return m.s.Close() }

// RedisClient returns the Redis client under s (through any wrappers with
// an Unwrap() Store method, such as Measured), or nil when s is not backed
// by Redis.
func RedisClient(s Store) redis.UniversalClient {
	for s != nil {
		switch v := s.(type) {
		case *Redis:
			return v.Client()
		case interface{ Unwrap() Store }:
			s = v.Unwrap()
		default:
			return nil
		}
	}
	return nil
}
