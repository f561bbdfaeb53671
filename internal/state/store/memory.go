package store

import (
	"cmp"
	"context"
	"math"
	"slices"
	"sync"
	"time"
)

// Memory is the in-process Store: correct for exactly one server process
// (the laptop default); a fleet needs Redis.
type Memory struct {
	mu      sync.Mutex
	now     func() time.Time
	values  map[string]memValue
	indexes map[string]map[string]float64
	tallies map[string]memTally
	writes  int // since the last sweep
}

type memTally struct {
	members map[string]float64
	expires time.Time // zero: never
}

// sweepEvery bounds memory: expired keys that are never read again (used
// confirmation nonces, old idempotency records) are dropped every so many
// writes, in one pass.
const sweepEvery = 1024

type memValue struct {
	data    []byte
	version int64
	expires time.Time // zero: never
}

// NewMemory returns an empty store; now is the clock (nil: time.Now).
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{now: now, values: map[string]memValue{}, indexes: map[string]map[string]float64{}, tallies: map[string]memTally{}}
}

func (m *Memory) live(key string) (memValue, bool) {
	v, ok := m.values[key]
	if ok && expired(v.expires, m.now()) {
		delete(m.values, key)
		return memValue{}, false
	}
	return v, ok
}

// expired reports whether an entry expiring at (zero: never) is gone at now.
func expired(at, now time.Time) bool { return !at.IsZero() && !now.Before(at) }

// wrote counts a write and sweeps expired keys now and then. Callers hold mu.
func (m *Memory) wrote() {
	m.writes++
	if m.writes < sweepEvery {
		return
	}
	m.writes = 0
	now := m.now()
	for k, v := range m.values {
		if expired(v.expires, now) {
			delete(m.values, k)
		}
	}
	for k, t := range m.tallies {
		if expired(t.expires, now) {
			delete(m.tallies, k)
		}
	}
}

func (m *Memory) tally(key string) memTally {
	t, ok := m.tallies[key]
	if !ok || expired(t.expires, m.now()) {
		return memTally{members: map[string]float64{}}
	}
	return t
}

// Tally implements Store.
func (m *Memory) Tally(ctx context.Context, key, member string, amount float64, maxCount int, maxSum float64, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.tally(key)
	if _, ok := t.members[member]; ok {
		return nil
	}
	sum := 0.0
	for _, v := range t.members {
		sum += v
	}
	if (maxCount > 0 && len(t.members)+1 > maxCount) || (maxSum > 0 && sum+amount > maxSum) {
		return ErrLimit
	}
	t.members[member] = amount
	if ttl > 0 {
		t.expires = m.now().Add(ttl)
	}
	m.tallies[key] = t
	m.wrote()
	return nil
}

// TallyRead implements Store.
func (m *Memory) TallyRead(ctx context.Context, key, exclude string) (int, float64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, sum := 0, 0.0
	for k, v := range m.tally(key).members {
		if k != exclude {
			n++
			sum += v
		}
	}
	return n, sum, nil
}

// Len is the number of keys held, expired or not (for tests and metrics).
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.values)
}

func (m *Memory) expiry(ttl time.Duration) time.Time {
	if ttl <= 0 {
		return time.Time{}
	}
	return m.now().Add(ttl)
}

// Get implements Store.
func (m *Memory) Get(ctx context.Context, key string) ([]byte, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.live(key)
	if !ok {
		return nil, 0, ErrNotFound
	}
	return slices.Clone(v.data), v.version, nil
}

// Create implements Store.
func (m *Memory) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.live(key); ok {
		return ErrConflict
	}
	m.values[key] = memValue{data: slices.Clone(value), version: 1, expires: m.expiry(ttl)}
	m.wrote()
	return nil
}

// Update implements Store.
func (m *Memory) Update(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.live(key)
	if !ok {
		return 0, ErrNotFound
	}
	if v.version != version {
		return 0, ErrConflict
	}
	m.values[key] = memValue{data: slices.Clone(value), version: version + 1, expires: m.expiry(ttl)}
	m.wrote()
	return version + 1, nil
}

// IndexAdd implements Store.
func (m *Memory) IndexAdd(ctx context.Context, index, member string, score float64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.indexes[index] == nil {
		m.indexes[index] = map[string]float64{}
	}
	m.indexes[index][member] = score
	return nil
}

// IndexRemove implements Store.
func (m *Memory) IndexRemove(ctx context.Context, index, member string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.indexes[index], member)
	return nil
}

// IndexAddAll implements Store.
func (m *Memory) IndexAddAll(ctx context.Context, indexes []string, member string, score float64) error {
	for _, idx := range indexes {
		if err := m.IndexAdd(ctx, idx, member, score); err != nil {
			return err
		}
	}
	return nil
}

// IndexRemoveAll implements Store.
func (m *Memory) IndexRemoveAll(ctx context.Context, indexes []string, members ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, idx := range indexes {
		for _, member := range members {
			delete(m.indexes[idx], member)
		}
	}
	return nil
}

// IndexRange implements Store.
func (m *Memory) IndexRange(ctx context.Context, index string, limit int) ([]string, error) {
	return m.IndexRangeFrom(ctx, index, math.Inf(-1), limit)
}

// IndexRangeFrom implements Store.
func (m *Memory) IndexRangeFrom(ctx context.Context, index string, from float64, limit int) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	type entry struct {
		member string
		score  float64
	}
	var es []entry
	for k, s := range m.indexes[index] {
		if s >= from {
			es = append(es, entry{k, s})
		}
	}
	slices.SortFunc(es, func(a, b entry) int { return cmp.Or(cmp.Compare(a.score, b.score), cmp.Compare(a.member, b.member)) })
	n := max(0, limit)
	if n > len(es) {
		n = len(es)
	}
	out := make([]string, 0, n)
	for _, e := range es[:n] {
		out = append(out, e.member)
	}
	return out, nil
}

// Ping implements Store.
func (m *Memory) Ping(ctx context.Context) error { return nil }

// Close implements Store.
func (m *Memory) Close() error { return nil }
