package store_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/redistest"
)

// implementations runs the contract against every Store.
func implementations(t *testing.T) map[string]func(t *testing.T) store.Store {
	return map[string]func(t *testing.T) store.Store{
		"memory": func(t *testing.T) store.Store { return store.NewMemory(nil) },
		"redis": func(t *testing.T) store.Store {
			srv := redistest.Start(t)
			c := redis.NewClient(&redis.Options{Addr: srv.Addr})
			s := store.NewRedis(c, fmt.Sprintf("test:%s:", t.Name()))
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}

func TestContract(t *testing.T) {
	for name, open := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			s := open(t)

			if _, _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Get missing: %v, want ErrNotFound", err)
			}
			if err := s.Create(ctx, "k", []byte("one"), 0); err != nil {
				t.Fatal(err)
			}
			if err := s.Create(ctx, "k", []byte("two"), 0); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("second Create: %v, want ErrConflict", err)
			}
			v, ver, err := s.Get(ctx, "k")
			if err != nil || string(v) != "one" || ver != 1 {
				t.Fatalf("Get = %q v%d %v", v, ver, err)
			}
			nv, err := s.Update(ctx, "k", []byte("three"), 1, 0)
			if err != nil || nv != 2 {
				t.Fatalf("Update = v%d %v", nv, err)
			}
			if _, err := s.Update(ctx, "k", []byte("stale"), 1, 0); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("stale Update: %v, want ErrConflict", err)
			}
			if _, err := s.Update(ctx, "nope", []byte("x"), 1, 0); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Update missing: %v, want ErrNotFound", err)
			}
			v, _, _ = s.Get(ctx, "k")
			if string(v) != "three" {
				t.Fatalf("value %q after update", v)
			}

			for i, m := range []string{"c", "a", "b"} {
				if err := s.IndexAdd(ctx, "idx", m, float64(10-i)); err != nil {
					t.Fatal(err)
				}
			}
			s.IndexRemove(ctx, "idx", "a")
			got, err := s.IndexRange(ctx, "idx", 10)
			if err != nil || fmt.Sprint(got) != "[b c]" {
				t.Fatalf("IndexRange = %v %v, want [b c]", got, err)
			}
			if got, _ := s.IndexRange(ctx, "idx", 1); fmt.Sprint(got) != "[b]" {
				t.Fatalf("IndexRange limit 1 = %v", got)
			}
			// From a score on (b is 8, c 10), and from either infinity.
			for _, c := range []struct {
				from  float64
				limit int
				want  string
			}{{9, 10, "[c]"}, {8, 10, "[b c]"}, {8, 1, "[b]"}, {math.Inf(-1), 10, "[b c]"}, {math.Inf(1), 10, "[]"}, {-1e15, 10, "[b c]"}} {
				if got, err := s.IndexRangeFrom(ctx, "idx", c.from, c.limit); err != nil || fmt.Sprint(got) != c.want {
					t.Fatalf("IndexRangeFrom(%g, %d) = %v %v, want %s", c.from, c.limit, got, err, c.want)
				}
			}
			// One entry in several indexes at once, and out of them.
			if err := s.IndexAddAll(ctx, []string{"x", "y"}, "m", 5); err != nil {
				t.Fatal(err)
			}
			s.IndexAddAll(ctx, []string{"y"}, "n", 6)
			for idx, want := range map[string]string{"x": "[m]", "y": "[m n]"} {
				if got, err := s.IndexRange(ctx, idx, 10); err != nil || fmt.Sprint(got) != want {
					t.Fatalf("after IndexAddAll, %s = %v %v, want %s", idx, got, err, want)
				}
			}
			if err := s.IndexRemoveAll(ctx, []string{"x", "y"}, "m", "n", "absent"); err != nil {
				t.Fatal(err)
			}
			for _, idx := range []string{"x", "y"} {
				if got, err := s.IndexRange(ctx, idx, 10); err != nil || len(got) != 0 {
					t.Fatalf("after IndexRemoveAll, %s = %v %v, want []", idx, got, err)
				}
			}
			if err := s.Ping(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	m := store.NewMemory(clock)
	ctx := t.Context()
	m.Create(ctx, "k", []byte("x"), time.Minute)
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	if _, _, err := m.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired key: %v", err)
	}
	if err := m.Create(ctx, "k", []byte("y"), 0); err != nil {
		t.Fatalf("Create after expiry: %v", err)
	}

	// Expired keys nobody reads again are swept by later writes.
	for i := range 2048 {
		m.Create(ctx, fmt.Sprint("nonce-", i), nil, time.Minute)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	for i := range 1024 {
		m.Create(ctx, fmt.Sprint("fresh-", i), nil, time.Minute)
	}
	if n := m.Len(); n > 1024+1 {
		t.Fatalf("%d keys held after expiry and a sweep, want about 1025", n)
	}

	// Redis expiry is Redis's own; check the TTL is set, not the passage of time.
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	r := store.NewRedis(c, "exp:")
	r.Create(ctx, "k", []byte("x"), time.Minute)
	if ttl := c.PTTL(ctx, "exp:k").Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("redis TTL %v", ttl)
	}
	_, ver, _ := r.Get(ctx, "k")
	r.Update(ctx, "k", []byte("y"), ver, 0)
	if ttl := c.PTTL(ctx, "exp:k").Val(); ttl != -1 {
		t.Fatalf("TTL after update with ttl 0: %v, want none", ttl)
	}
}

// TestConcurrentTransitions: of many racing compare-and-swaps from the same
// version, exactly one wins, on both implementations.
func TestConcurrentTransitions(t *testing.T) {
	for name, open := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			ctx := t.Context()
			s.Create(ctx, "race", []byte("pending"), 0)
			var wins, creates atomic.Int64
			var wg sync.WaitGroup
			for i := range 50 {
				wg.Go(func() {
					if _, err := s.Update(ctx, "race", []byte(fmt.Sprint("by ", i)), 1, 0); err == nil {
						wins.Add(1)
					} else if !errors.Is(err, store.ErrConflict) {
						t.Error(err)
					}
					if err := s.Create(ctx, "claim", []byte("x"), 0); err == nil {
						creates.Add(1)
					}
				})
			}
			wg.Wait()
			if wins.Load() != 1 || creates.Load() != 1 {
				t.Fatalf("%d updates and %d creates won, want 1 and 1", wins.Load(), creates.Load())
			}
		})
	}
}

// TestTally: a tally counts each member once, refuses past either bound
// (count or sum, edges inclusive) however many replicas race for the last
// place, and reads back without the excluded member.
func TestTally(t *testing.T) {
	for name, open := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			ctx := t.Context()
			if n, sum, err := s.TallyRead(ctx, "budget", ""); err != nil || n != 0 || sum != 0 {
				t.Fatalf("empty tally: %d %g %v", n, sum, err)
			}
			if err := s.Tally(ctx, "budget", "a", 60, 3, 100, time.Hour); err != nil {
				t.Fatal(err)
			}
			if err := s.Tally(ctx, "budget", "a", 60, 3, 100, time.Hour); err != nil {
				t.Fatalf("a retry must not count again: %v", err)
			}
			if err := s.Tally(ctx, "budget", "b", 40.5, 3, 100, time.Hour); !errors.Is(err, store.ErrLimit) {
				t.Fatalf("past the sum: %v, want ErrLimit", err)
			}
			if err := s.Tally(ctx, "budget", "b", 40, 3, 100, time.Hour); err != nil {
				t.Fatalf("to the sum exactly: %v", err)
			}
			if n, sum, err := s.TallyRead(ctx, "budget", "a"); err != nil || n != 1 || sum != 40 {
				t.Fatalf("read without a: %d %g %v", n, sum, err)
			}
			var won atomic.Int64
			var wg sync.WaitGroup
			for i := range 40 {
				wg.Go(func() {
					err := s.Tally(ctx, "race", fmt.Sprint("m", i), 1, 5, 0, time.Hour)
					switch {
					case err == nil:
						won.Add(1)
					case !errors.Is(err, store.ErrLimit):
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if n, _, _ := s.TallyRead(ctx, "race", ""); won.Load() != 5 || n != 5 {
				t.Fatalf("%d of 40 racers counted (tally %d), want 5", won.Load(), n)
			}
		})
	}
}

// TestRedisDown: with the server gone every call reports ErrUnavailable
// (callers fail closed), and the store recovers without a new client.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	s := store.NewRedis(c, "down:")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	srv.Stop()
	if err := s.Create(ctx, "k", []byte("x"), 0); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Create with redis down: %v", err)
	}
	if _, _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Get with redis down: %v", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Ping with redis down: %v", err)
	}
	srv.Restart()
	if err := s.Create(ctx, "k", []byte("x"), 0); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}
