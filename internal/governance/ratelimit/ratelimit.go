// Package ratelimit limits how fast each principal may call tools, per tool
// class (reads and trades have separate budgets). The limit is a token
// bucket / GCRA: a sustained rate plus a burst.
//
// Libraries: golang.org/x/time/rate keeps the buckets in process memory (the
// default, right for one replica); github.com/go-redis/redis_rate/v10 (GCRA
// in one Lua script on go-redis) keeps them in Redis when REDIS_URL is set,
// so the limit holds across every replica Knative runs.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
)

// CodeRateLimited is the JSON-RPC error code of a refused resources/read
// (in the implementation-defined server error range; 429 as a mnemonic),
// and the code in a refused tool call's MetaKey.
const CodeRateLimited = -32029

// MetaKey is the _meta key of a tool result refused by the rate limit. Its
// value is Refusal: when to retry, and which budget ran out.
const MetaKey = "portfolio-mcp/rate-limit"

// Refusal says why a call was refused and when to retry.
type Refusal struct {
	Code              int            `json:"code"`
	RetryAfterSeconds float64        `json:"retry_after_seconds"`
	Class             catalog.Bucket `json:"class"`
}

// Refused reads the Refusal of a tool result, if the rate limit refused it.
func Refused(res *mcp.CallToolResult) (Refusal, bool) {
	if res == nil || !res.IsError || res.Meta == nil {
		return Refusal{}, false
	}
	b, err := json.Marshal(res.Meta[MetaKey])
	var r Refusal
	if err != nil || json.Unmarshal(b, &r) != nil || r.Code != CodeRateLimited {
		return Refusal{}, false
	}
	return r, true
}

// Limit is a sustained rate (calls per second) and a burst.
type Limit struct {
	PerSecond float64
	Burst     int
}

// Limits are the limits by rate budget.
type Limits map[catalog.Bucket]Limit

// Config is the rate limits as configured.
type Config struct {
	ReadPerSecond  float64 `env:"RATE_READ_PER_SECOND, default=20"`
	ReadBurst      int     `env:"RATE_READ_BURST, default=40"`
	TradePerMinute float64 `env:"RATE_TRADE_PER_MINUTE, default=30"`
	TradeBurst     int     `env:"RATE_TRADE_BURST, default=5"`
	// Cancels have a budget of their own, so placements never use it up.
	CancelPerMinute float64 `env:"RATE_CANCEL_PER_MINUTE, default=120"`
	CancelBurst     int     `env:"RATE_CANCEL_BURST, default=20"`
}

// Validate reports every limit that is not positive, by variable.
func (c Config) Validate() error {
	var errs []error
	for _, v := range []struct {
		name string
		ok   bool
	}{
		{"RATE_READ_PER_SECOND", c.ReadPerSecond > 0}, {"RATE_READ_BURST", c.ReadBurst > 0},
		{"RATE_TRADE_PER_MINUTE", c.TradePerMinute > 0}, {"RATE_TRADE_BURST", c.TradeBurst > 0},
		{"RATE_CANCEL_PER_MINUTE", c.CancelPerMinute > 0}, {"RATE_CANCEL_BURST", c.CancelBurst > 0},
	} {
		if !v.ok {
			errs = append(errs, fmt.Errorf("%s must be positive", v.name))
		}
	}
	return errors.Join(errs...)
}

// Limits maps the configuration to limits: reads, trades, and cancels (a
// budget of their own); deciding approvals shares the trade budget's
// numbers (in a bucket of its own).
func (c Config) Limits() Limits {
	trade := Limit{PerSecond: c.TradePerMinute / 60, Burst: c.TradeBurst}
	return Limits{
		catalog.ReadBudget:    {PerSecond: c.ReadPerSecond, Burst: c.ReadBurst},
		catalog.TradeBudget:   trade,
		catalog.ApproveBudget: trade,
		catalog.CancelBudget:  {PerSecond: c.CancelPerMinute / 60, Burst: c.CancelBurst},
	}
}

// Decision is the answer for one call.
type Decision struct {
	Allowed bool
	// RetryAfter is how long until the call would be allowed.
	RetryAfter time.Duration
}

// store takes one token from the bucket at key.
type store interface {
	take(ctx context.Context, key string, l Limit) (Decision, error)
}

// Limiter applies Limits per principal and class.
type Limiter struct {
	limits Limits
	store  store
	// local keeps per-replica buckets used while Redis cannot be reached:
	// the limit degrades to per replica instead of failing open or closed.
	local   *memoryStore
	backend string
	// degraded is set while the shared store fails, so the switch to
	// per-replica limits (and back) is logged once, not per call.
	degraded atomic.Bool
	log      *slog.Logger
	limited  *prometheus.CounterVec
	errors   *prometheus.CounterVec
	tracer   trace.Tracer
}

// New returns a Limiter keeping buckets in rdb, or in memory when rdb is nil.
// tp traces the shared store's checks (nil: none).
func New(limits Limits, rdb redis.UniversalClient, reg prometheus.Registerer, log *slog.Logger, tp trace.TracerProvider) (*Limiter, error) {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	for class, l := range limits {
		if l.PerSecond <= 0 || l.Burst < 1 {
			return nil, fmt.Errorf("rate limit for %s: rate and burst must be positive", class)
		}
	}
	l := &Limiter{
		limits: limits,
		log:    log,
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_rate_limited_total", Help: "Calls refused by the rate limit, by tool class.",
		}, []string{"class"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_rate_limiter_errors_total", Help: "Calls limited by per-replica buckets because the shared (Redis) store failed, by tool class.",
		}, []string{"class"}),
		local:  newMemoryStore(),
		tracer: tp.Tracer("github.com/portfolio-mcp/portfolio-mcp/internal/governance/ratelimit"),
	}
	if rdb != nil {
		l.store, l.backend = redisStore{redis_rate.NewLimiter(rdb)}, "redis"
	} else {
		l.store, l.backend = l.local, "memory"
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{l.limited, l.errors} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("rate limit metrics: %w", err)
			}
		}
	}
	return l, nil
}

// Backend names where the buckets live: memory or redis.
func (l *Limiter) Backend() string { return l.backend }

// Allow takes one call from subject's budget for class. A class without a
// limit uses the read limit. If the shared store fails, the call is decided
// by this replica's own buckets and the store's error is returned with that
// decision (the limit still holds, per replica).
func (l *Limiter) Allow(ctx context.Context, subject string, class catalog.Bucket) (Decision, error) {
	lim, ok := l.limits[class]
	if !ok {
		class = catalog.ReadBudget
		lim = l.limits[class]
	}
	// The subject is hashed: keys stay short and Redis holds no identities.
	sum := sha256.Sum256([]byte(subject))
	key := "portfolio-mcp:" + string(class) + ":" + hex.EncodeToString(sum[:16])
	if l.backend == "redis" {
		var span trace.Span
		ctx, span = l.tracer.Start(ctx, "ratelimit.check", trace.WithAttributes(attribute.String("portfolio_mcp.rate_limit.class", string(class))))
		defer span.End()
	}
	d, err := l.store.take(ctx, key, lim)
	if err != nil {
		trace.SpanFromContext(ctx).SetStatus(codes.Error, "the shared rate-limit store failed; this replica's buckets decided")
		d, _ = l.local.take(ctx, key, lim)
	}
	return d, err
}

// Middleware refuses a governed call (call.Governed: a tools/call, or as a
// read a resources/read, resources/list or completion/complete) beyond the
// caller's budget: the catalog names the budget a call draws on
// (catalog.Tool.Budget). A tool call is refused with a tool result the
// model can read (isError, the retry-after in its text and in _meta under
// MetaKey); any other with a JSON-RPC error (CodeRateLimited)
// carrying the same hint. If Redis fails, this replica's buckets decide
// meanwhile (counted in mcp_rate_limiter_errors_total): the limit loosens
// to per replica rather than failing open, and a Redis outage does not by
// itself stop reads (state-changing calls fail closed in the trading layer,
// which cannot record them without the store).
func (l *Limiter) Middleware(cat *catalog.Catalog) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			c := call.From(ctx)
			if c == nil || !c.Governed() {
				return next(ctx, method, req)
			}
			class := catalog.ReadBudget
			if t, ok := cat.Lookup(c.Tool); ok && method == "tools/call" {
				class = t.Budget(c.Confirms())
			}
			pr, _ := principal.From(ctx)
			r, ok := l.Take(ctx, pr.Subject, class)
			if ok {
				return next(ctx, method, req)
			}
			ref := &outcome.Refused{Outcome: outcome.RateLimited, Reason: fmt.Sprintf("retry after %.1fs", r.RetryAfterSeconds)}
			if method == "tools/call" {
				ref.Result = r.result()
			} else {
				ref.Err = r.wireError()
			}
			return nil, ref
		}
	}
}

// Take takes one call of class from subject's budget for a surface other
// than MCP (the approvals API), counted and logged as Middleware counts
// and logs its calls: the two surfaces share one bucket per caller and
// class, so neither widens the other's budget. Refused, it answers ok
// false and the Refusal to give the caller.
func (l *Limiter) Take(ctx context.Context, subject string, class catalog.Bucket) (r Refusal, ok bool) {
	if _, known := l.limits[class]; !known {
		class = catalog.ReadBudget // as Allow decides, and so labelled
	}
	d, err := l.Allow(ctx, subject, class)
	if err != nil {
		l.errors.WithLabelValues(string(class)).Inc()
		if l.degraded.CompareAndSwap(false, true) {
			l.log.WarnContext(ctx, "shared rate limiter unavailable; limiting per replica until it answers again", "class", class, "error", err)
		}
	} else if l.degraded.CompareAndSwap(true, false) {
		l.log.InfoContext(ctx, "shared rate limiter answers again; limits hold across replicas again")
	}
	if d.Allowed {
		return Refusal{}, true
	}
	l.limited.WithLabelValues(string(class)).Inc()
	return refusal(class, d.RetryAfter), false
}

// refusal says when a refused call of class may be retried: rounded up to
// a tenth of a second, never advising a retry too early.
func refusal(class catalog.Bucket, after time.Duration) Refusal {
	return Refusal{Code: CodeRateLimited, Class: class, RetryAfterSeconds: max(math.Ceil(after.Seconds()*10)/10, 0.1)}
}

// Message is the refusal as one sentence for the caller.
func (r Refusal) Message() string {
	return fmt.Sprintf("rate limit exceeded for %s calls; retry after %.1f seconds", r.Class, r.RetryAfterSeconds)
}

// result is a refused tool call as a result the model reads.
func (r Refusal) result() *mcp.CallToolResult {
	return &mcp.CallToolResult{
		IsError: true,
		Content: []mcp.Content{&mcp.TextContent{Text: r.Message() + "; nothing was done, so the same call can be retried then"}},
		Meta:    mcp.Meta{MetaKey: r},
	}
}

// wireError is a refused resources/read as a JSON-RPC error.
func (r Refusal) wireError() *jsonrpc.Error {
	data, _ := json.Marshal(map[string]any{"retry_after_seconds": r.RetryAfterSeconds, "class": r.Class})
	return &jsonrpc.Error{Code: CodeRateLimited, Message: r.Message(), Data: data}
}

// redisStore is the fleet-wide store.
type redisStore struct{ l *redis_rate.Limiter }

func (s redisStore) take(ctx context.Context, key string, l Limit) (Decision, error) {
	// GCRA needs an integer rate per period: one call per emission interval.
	period := time.Duration(float64(time.Second) / l.PerSecond)
	res, err := s.l.Allow(ctx, key, redis_rate.Limit{Rate: 1, Burst: l.Burst, Period: period})
	if err != nil {
		return Decision{}, fmt.Errorf("redis rate limit: %w", err)
	}
	if res.Allowed > 0 {
		return Decision{Allowed: true}, nil
	}
	return Decision{RetryAfter: res.RetryAfter}, nil
}

// memoryStore is the single-process store. Buckets that have refilled are
// forgotten, so memory follows the number of recently active principals.
type memoryStore struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	calls   int
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
	full time.Duration // time to refill completely
}

const sweepEvery = 1024

func newMemoryStore() *memoryStore { return &memoryStore{buckets: map[string]*bucket{}} }

func (s *memoryStore) take(_ context.Context, key string, l Limit) (Decision, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.calls%sweepEvery == 0 {
		for k, b := range s.buckets {
			if now.Sub(b.last) > b.full {
				delete(s.buckets, k)
			}
		}
	}
	b, ok := s.buckets[key]
	if !ok {
		b = &bucket{
			lim:  rate.NewLimiter(rate.Limit(l.PerSecond), l.Burst),
			full: time.Duration(float64(l.Burst) / l.PerSecond * float64(time.Second)),
		}
		s.buckets[key] = b
	}
	b.last = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return Decision{RetryAfter: b.full}, nil
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // a refused call does not spend the budget
		return Decision{RetryAfter: d}, nil
	}
	return Decision{Allowed: true}, nil
}
