package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// GuardOptions bound what a slow or dead Redis can cost a caller.
type GuardOptions struct {
	// Timeout is every command's deadline (a pipeline's as a whole). Keep
	// it well below BACKEND_TIMEOUT: a read's rate-limit check waits this
	// long at most before the per-replica fallback decides.
	Timeout time.Duration
	// Failures consecutive failed commands open the breaker.
	Failures int
	// Cooldown is how long an open breaker fails commands at once before it
	// lets one probe through.
	Cooldown time.Duration
	// OnOpen, if set, is told when the breaker opens (true) and closes
	// (false): a gauge.
	OnOpen func(open bool)
	Logger *slog.Logger
}

// NewGuard returns a go-redis hook that runs every command under its own
// deadline and a circuit breaker (github.com/sony/gobreaker, as the backend
// clients use). Redis frozen with its connections open (SIGSTOP, a full
// swap, a partition that drops packets) then costs a caller at most
// Timeout, and nothing at all once the breaker is open; Redis refusing
// connections costs a dial. Every user of the client (the state store and
// the rate limiter) gets the same bound. Set the client's
// ContextTimeoutEnabled so the deadline reaches the socket.
func NewGuard(o GuardOptions) redis.Hook {
	g := &guard{timeout: o.Timeout}
	g.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "redis",
		MaxRequests: 1,
		Timeout:     o.Cooldown,
		ReadyToTrip: func(n gobreaker.Counts) bool { return n.ConsecutiveFailures >= uint32(o.Failures) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			level := slog.LevelInfo
			if to == gobreaker.StateOpen {
				level = slog.LevelWarn
			}
			o.Logger.Log(context.Background(), level, "redis circuit breaker changed state", "from", from.String(), "to", to.String())
			if o.OnOpen != nil {
				o.OnOpen(to == gobreaker.StateOpen)
			}
		},
		IsSuccessful: redisHealthy,
		// A caller that went away says nothing about Redis, nor does a
		// command that never got a connection: every one of the pool's was
		// busy (a burst on this replica). Counted, one burst would open the
		// breaker and fail every state-changing call for the cooldown; a
		// Redis that stops answering still fails the commands holding the
		// connections, which are counted.
		IsExcluded: func(err error) bool {
			return errors.As(err, new(callerGone)) || errors.Is(err, context.Canceled) || poolSaturated(err)
		},
	})
	return g
}

// poolSaturated reports whether err is a command's wait for a connection
// running out: the pool's own timeout, or the guard's deadline passing
// before any I/O (a deadline reached on the socket is a net.Error timeout,
// not the context's error).
func poolSaturated(err error) bool {
	var ne net.Error
	return errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout())
}

type guard struct {
	timeout time.Duration
	cb      *gobreaker.CircuitBreaker[struct{}]
}

// redisHealthy: an answer is health, whatever it says (a missing key, a
// script not cached yet, a WRONGTYPE); only no answer is a failure.
func redisHealthy(err error) bool {
	var reply redis.Error
	return err == nil || errors.Is(err, redis.Nil) || errors.As(err, &reply)
}

// inGuard marks a context already running under the guard: go-redis runs
// a new connection's handshake (HELLO, AUTH) through the same hooks, inside
// the command that needed the connection. Counted again, it would be refused
// by the half-open breaker that let its command through, and the breaker
// could never close.
type inGuard struct{}

func (g *guard) run(ctx context.Context, f func(context.Context) error) error {
	if ctx.Value(inGuard{}) != nil {
		return f(ctx)
	}
	caller := ctx
	ctx = context.WithValue(ctx, inGuard{}, true)
	_, err := g.cb.Execute(func() (struct{}, error) {
		ctx, cancel := context.WithTimeout(ctx, g.timeout)
		defer cancel()
		err := f(ctx)
		if err != nil && caller.Err() != nil {
			// The caller gave up (its own deadline, a cancel): that says
			// nothing about Redis.
			return struct{}{}, callerGone{err}
		}
		return struct{}{}, err
	})
	var gone callerGone
	switch {
	case errors.As(err, &gone):
		return gone.err
	case errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests):
		return fmt.Errorf("redis circuit breaker open after repeated failures: %w", err)
	}
	return err
}

// callerGone carries a command's error when its caller had already given
// up, so the breaker does not count it.
type callerGone struct{ err error }

func (c callerGone) Error() string { return c.err.Error() }

// DialHook implements redis.Hook: dials are bounded by the client's
// DialTimeout and counted through the command that needed them.
func (g *guard) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (g *guard) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return g.run(ctx, func(ctx context.Context) error { return next(ctx, cmd) })
	}
}

// ProcessPipelineHook implements redis.Hook.
func (g *guard) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return g.run(ctx, func(ctx context.Context) error { return next(ctx, cmds) })
	}
}
