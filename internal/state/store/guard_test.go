package store_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/redistest"
)

// guarded is a Redis store whose client runs under store.NewGuard, as the
// server wires it.
func guarded(t *testing.T, srv *redistest.Server, open *atomic.Bool) store.Store {
	t.Helper()
	timeout := 100 * time.Millisecond
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout,
		PoolTimeout: timeout, ContextTimeoutEnabled: true, MaxRetries: -1})
	c.AddHook(store.NewGuard(store.GuardOptions{Timeout: timeout, Failures: 3, Cooldown: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), OnOpen: open.Store}))
	s := store.NewRedis(c, "guard:")
	t.Cleanup(func() { s.Close() })
	return s
}

// guardedWithKey is a guarded store on a fresh Redis holding k=v.
func guardedWithKey(t *testing.T) (*redistest.Server, store.Store, *atomic.Bool) {
	t.Helper()
	srv := redistest.Start(t)
	var open atomic.Bool
	s := guarded(t, srv, &open)
	if err := s.Create(t.Context(), "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	return srv, s, &open
}

// TestGuardFrozenRedis: with Redis frozen (connections open, nothing
// answering) a command costs at most the guard's deadline, then nothing
// once the breaker is open; after Redis thaws the store works again.
func TestGuardFrozenRedis(t *testing.T) {
	srv, s, open := guardedWithKey(t)
	ctx := t.Context()
	srv.Freeze()
	for i := range 10 {
		if _, _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("get %d with Redis frozen: %v, want ErrUnavailable", i, err)
		}
	}
	if !open.Load() {
		t.Fatal("breaker not open after 10 failed commands")
	}
	srv.Thaw()
	waitUntil(t, func() bool {
		v, _, err := s.Get(ctx, "k")
		return err == nil && string(v) == "v"
	})
	if open.Load() {
		t.Fatal("breaker still open after a successful command")
	}
}

// TestGuardRedisRestarted: Redis refused connections for a while, then came
// back (empty: no persistence here); the store recovers by itself.
func TestGuardRedisRestarted(t *testing.T) {
	srv, s, _ := guardedWithKey(t)
	ctx := t.Context()
	srv.Stop()
	for range 30 {
		if _, _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("get with Redis down: %v", err)
		}
	}
	srv.Restart()
	waitUntil(t, func() bool {
		_, _, err := s.Get(ctx, "k")
		return errors.Is(err, store.ErrNotFound)
	})
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not reached within 10s")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestGuardSaturatedPoolIsNotADeadRedis: every connection of the pool is
// busy (a burst on this replica), so commands time out waiting for one.
// That is this replica's load, not Redis failing: the commands fail, but
// the breaker stays closed, or one burst would fail every state-changing
// call for the cooldown.
func TestGuardSaturatedPoolIsNotADeadRedis(t *testing.T) {
	srv := redistest.Start(t)
	timeout := 100 * time.Millisecond
	var open atomic.Bool
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout,
		PoolTimeout: timeout, ContextTimeoutEnabled: true, MaxRetries: -1, PoolSize: 1})
	c.AddHook(store.NewGuard(store.GuardOptions{Timeout: timeout, Failures: 3, Cooldown: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), OnOpen: open.Store}))
	s := store.NewRedis(c, "guard:")
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	if err := s.Create(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	busy := c.Conn() // holds the pool's one connection
	if err := busy.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, _, err := s.Get(ctx, "k"); err == nil {
			t.Fatalf("get %d with the pool saturated answered", i)
		}
	}
	if open.Load() {
		t.Error("a saturated pool opened the breaker")
	}
	busy.Close()
	if v, _, err := s.Get(ctx, "k"); err != nil || string(v) != "v" {
		t.Errorf("get once a connection is free: %q %v", v, err)
	}
}
