package store_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/promtest"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/redistest"
)

// durations scrapes reg and lists state_store_operation_duration_seconds
// as "operation=...,outcome=... count".
func durations(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mf := promtest.Families(t, reg)["state_store_operation_duration_seconds"]
	if mf != nil && mf.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("type %v, want a histogram", mf.GetType())
	}
	return promtest.Series(mf)
}

func measure(t *testing.T, s store.Store) (*store.Measured, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := store.Measure(s, reg)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// TestMeasuredOutcomes: every operation is observed once, with the outcome
// its error maps to, the same way on both stores.
func TestMeasuredOutcomes(t *testing.T) {
	for name, open := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			s, reg := measure(t, open(t))
			ctx := t.Context()
			s.Get(ctx, "k")                       // not_found
			s.Create(ctx, "k", []byte("v"), 0)    // ok
			s.Create(ctx, "k", []byte("v"), 0)    // conflict
			s.Get(ctx, "k")                       // ok
			s.Update(ctx, "k", []byte("w"), 1, 0) // ok
			s.Update(ctx, "k", []byte("x"), 1, 0) // conflict
			s.Update(ctx, "gone", nil, 1, 0)      // not_found
			s.IndexAdd(ctx, "idx", "a", 1)
			s.IndexAdd(ctx, "idx", "b", 2)
			s.IndexRemove(ctx, "idx", "a")
			if got, err := s.IndexRange(ctx, "idx", 10); err != nil || fmt.Sprint(got) != "[b]" {
				t.Fatalf("IndexRange = %v %v: the wrapper must not change answers", got, err)
			}
			s.Ping(ctx)
			want := []string{
				"operation=create,outcome=conflict 1",
				"operation=create,outcome=ok 1",
				"operation=get,outcome=not_found 1",
				"operation=get,outcome=ok 1",
				"operation=index_add,outcome=ok 2",
				"operation=index_range,outcome=ok 1",
				"operation=index_remove,outcome=ok 1",
				"operation=ping,outcome=ok 1",
				"operation=update,outcome=conflict 1",
				"operation=update,outcome=not_found 1",
				"operation=update,outcome=ok 1",
			}
			if got := durations(t, reg); !slices.Equal(got, want) {
				t.Errorf("state_store_operation_duration_seconds:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestMeasuredRedisFailures: a Redis that is down is unavailable; a record
// the store cannot read is an error.
func TestMeasuredRedisFailures(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	s, reg := measure(t, store.NewRedis(c, "m:"))
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	if err := c.HSet(ctx, "m:corrupt", "v", "not-a-number", "d", "x").Err(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx, "corrupt"); err == nil || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("corrupt record: %v", err)
	}
	srv.Stop()
	if err := s.Create(ctx, "k", []byte("x"), 0); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Create with Redis down: %v", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Ping with Redis down: %v", err)
	}
	want := []string{
		"operation=create,outcome=unavailable 1",
		"operation=get,outcome=error 1",
		"operation=ping,outcome=unavailable 1",
	}
	if got := durations(t, reg); !slices.Equal(got, want) {
		t.Errorf("state_store_operation_duration_seconds:\n got %q\nwant %q", got, want)
	}
}

// TestMeasuredGuardOpen: with the guard's breaker open, a refused command
// is measured as unavailable, as fast as the guard refuses it.
func TestMeasuredGuardOpen(t *testing.T) {
	srv, raw, _ := guardedWithKey(t)
	s, reg := measure(t, raw)
	ctx := t.Context()
	srv.Freeze()
	defer srv.Thaw()
	for range 5 {
		if _, _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Get with Redis frozen: %v", err)
		}
	}
	if got, want := durations(t, reg), []string{"operation=get,outcome=unavailable 5"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRedisClient(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	r := store.NewRedis(c, "x:")
	measured, _ := measure(t, r)
	twice, _ := measure(t, measured)
	for _, s := range []store.Store{r, measured, twice} {
		if store.RedisClient(s) != c {
			t.Errorf("RedisClient(%T) is not the store's client", s)
		}
	}
	mem, _ := measure(t, store.NewMemory(nil))
	for _, s := range []store.Store{store.NewMemory(nil), mem, nil} {
		if store.RedisClient(s) != nil {
			t.Errorf("RedisClient(%T) is not nil", s)
		}
	}
	if measured.Unwrap() != r {
		t.Error("Unwrap is not the measured store")
	}
}

// TestInstrumentRedis: each command is a client span under the caller's
// span, named by the command, with db.system=redis and nothing of its
// arguments (keys name principals).
func TestInstrumentRedis(t *testing.T) {
	srv := redistest.Start(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	c.AddHook(store.NewGuard(store.GuardOptions{Timeout: time.Second, Failures: 3, Cooldown: time.Second, Logger: slog.New(slog.DiscardHandler)}))
	if err := store.InstrumentRedis(c, tp); err != nil {
		t.Fatal(err)
	}
	s := store.NewRedis(c, "pmcp:paper:")
	t.Cleanup(func() { s.Close() })

	ctx, parent := tp.Tracer("test").Start(t.Context(), "approve")
	if err := s.Create(ctx, "idem:alice@example.com", []byte(`{"order":"secret"}`), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx, "idem:alice@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := s.IndexAdd(ctx, "approvals:pending:by:alice@example.com", "APR-1", 1); err != nil {
		t.Fatal(err)
	}
	parent.End()

	var names []string
	for _, sp := range rec.Ended() {
		if sp.Name() == "approve" {
			continue
		}
		if sp.Name() == "redis.dial" {
			continue // the connection the first command opened
		}
		names = append(names, sp.Name())
		if sp.SpanKind() != trace.SpanKindClient {
			t.Errorf("%s: kind %v, want client", sp.Name(), sp.SpanKind())
		}
		if sp.SpanContext().TraceID() != parent.SpanContext().TraceID() {
			t.Errorf("%s: not in the caller's trace", sp.Name())
		}
		if (sp.Name() == "hmget" || sp.Name() == "zadd") && sp.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("%s: not a child of the caller's span", sp.Name())
		}
		attrs := map[attribute.Key]string{}
		for _, kv := range sp.Attributes() {
			attrs[kv.Key] = kv.Value.Emit()
			if v := kv.Value.Emit(); strings.Contains(v, "alice") || strings.Contains(v, "secret") {
				t.Errorf("%s: attribute %s = %q carries an argument", sp.Name(), kv.Key, v)
			}
		}
		if attrs["db.system"] != "redis" {
			t.Errorf("%s: db.system = %q", sp.Name(), attrs["db.system"])
		}
		if _, ok := attrs["db.statement"]; ok {
			t.Errorf("%s: has db.statement", sp.Name())
		}
		for _, ev := range sp.Events() {
			for _, kv := range ev.Attributes {
				if strings.Contains(kv.Value.Emit(), "alice") {
					t.Errorf("%s: event %s carries an argument", sp.Name(), ev.Name)
				}
			}
		}
	}
	t.Logf("spans: %q", names)
	// The create script runs as EVALSHA, then EVAL when not cached yet.
	for _, want := range []string{"evalsha", "eval", "hmget", "zadd"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %q span in %q", want, names)
		}
	}
	for _, n := range names {
		if strings.Contains(n, "alice") || strings.Contains(n, "pmcp") {
			t.Errorf("span name %q carries an argument", n)
		}
	}
}
