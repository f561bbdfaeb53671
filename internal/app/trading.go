package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/config"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/approvals"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/confirm"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// Secret file names (in SECRETS_DIR, or SECRET_<NAME> in development).
const (
	secretRequestState  = "request-state-key"
	secretApprovalEvent = "approval-event-key"
	secretRedisPassword = "redis-password" // optional
)

// newStore selects the shared state store: Redis when REDIS_URL is set,
// else process memory (one replica only).
//
// A Redis password, if any, comes from the redis-password secret file rather
// than the URL (which sits in the Service spec); it is read for every new
// connection, so a rotation applies without a restart.
//
// Every command runs under REDIS_TIMEOUT and a circuit breaker (store.Guard):
// a Redis that hangs must never stall reads (whose rate-limit check falls
// back to this replica) nor hold a trade longer than a fast refusal.
//
// Both stores are measured (state_store_operation_duration_seconds), and
// Redis commands are traced.
func newStore(cfg *config.Config, secret func(string) ([]byte, error), reg prometheus.Registerer, tp trace.TracerProvider, log *slog.Logger) (store.Store, error) {
	if cfg.RedisURL == "" {
		return store.Measure(store.NewMemory(nil), reg)
	}
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, &config.Error{Var: "REDIS_URL", Msg: "cannot be parsed"}
	}
	// Fail fast rather than queue or retry: the guard's deadline must reach
	// the socket, and a retry would double what a hung Redis costs.
	opts.DialTimeout = cfg.RedisTimeout
	opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = cfg.RedisTimeout, cfg.RedisTimeout, cfg.RedisTimeout
	opts.ContextTimeoutEnabled = true
	opts.MaxRetries = -1
	if opts.Password == "" {
		user := opts.Username
		opts.CredentialsProvider = func() (string, string) {
			pw, err := secret(secretRedisPassword)
			if err != nil {
				return user, "" // none configured: an open Redis behind a NetworkPolicy
			}
			return user, string(pw)
		}
	}
	open := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mcp_state_store_breaker_open",
		Help: "1 while the Redis circuit breaker is open: state-changing calls fail closed at once, rate limits are per replica.",
	})
	if err := reg.Register(open); err != nil {
		return nil, fmt.Errorf("state store metrics: %w", err)
	}
	c := redis.NewClient(opts)
	c.AddHook(store.NewGuard(store.GuardOptions{
		Timeout: cfg.RedisTimeout, Failures: cfg.RedisBreakerFailures, Cooldown: cfg.RedisBreakerCooldown, Logger: log,
		OnOpen: func(o bool) {
			if o {
				open.Set(1)
			} else {
				open.Set(0)
			}
		},
	}))
	// After the guard: spans are the commands that reached Redis.
	if err := store.InstrumentRedis(c, tp); err != nil {
		return nil, fmt.Errorf("redis tracing: %w", err)
	}
	return store.Measure(store.NewRedis(c, "pmcp:"+cfg.Trading.Mode+":"), reg)
}

// tradingParts are the trading components New wires into handlers and routes.
type tradingParts struct {
	service *trading.Service
	api     *approvals.API
	halt    *halt.Switch
}

func newTrading(cfg *config.Config, st store.Store, bs backends.Set, j trading.Journal, record func(context.Context, audit.Operation), limit func(context.Context, string) (time.Duration, string, bool), secret func(string) ([]byte, error), reg prometheus.Registerer, log *slog.Logger) (*tradingParts, error) {
	cal, err := calendar.NYSE(cfg.Trading.Holidays, nil)
	if err != nil {
		return nil, fmt.Errorf("exchange calendar: %w", err)
	}
	t := cfg.Trading
	rules := policy.Rules{
		Mode: t.Mode, MaxOrderNotional: t.MaxOrderNotional, ApprovalNotional: t.ApprovalNotional,
		MaxPositionWeight: t.MaxPositionWeight, SymbolAllow: t.SymbolAllow, SymbolDeny: t.SymbolDeny,
		EnforceMarketHours: cfg.MarketHoursEnforced(), Calendar: cal, Collar: t.PriceCollar,
		Daily: policy.DailyLimits{PrincipalOrders: t.DailyOrdersPerPrincipal, PrincipalNotional: t.DailyNotionalPerPrincipal,
			AgentOrders: t.DailyOrdersPerAgent, AgentNotional: t.DailyNotionalPerAgent},
	}
	signer := confirm.NewSigner(func() ([]byte, error) { return secret(secretRequestState) }, st, t.ConfirmTTL, nil)
	metrics, err := trading.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	kill := halt.New(st, j, log, nil)
	svc := trading.New(trading.Config{Rules: rules, ApprovalTTL: t.ApprovalTTL, Lease: t.ExecutionLease, MaxPending: t.MaxPendingApprovals, Metrics: metrics,
		Halt: kill, DuplicateWindow: t.DuplicateWindow},
		st, bs, j, signer, log, nil)
	api := approvals.New(approvals.Options{
		Decider: svc, ApproveScope: cfg.Auth.ScopeApprove, EventSources: t.ApprovalEventSources,
		EventKey:    func() ([]byte, error) { return secret(secretApprovalEvent) },
		EventMaxAge: t.ApprovalTTL, ApproverClients: t.ApproverClients, Store: st, Audit: record, Limit: limit, Logger: log,
		Halt: kill, CancelAll: svc.CancelAll, HaltScope: cfg.Auth.ScopeHalt,
	})
	return &tradingParts{service: svc, api: api, halt: kill}, nil
}

// requireSecrets refuses to start a server that would report ready and then
// fail every order: outside development (an issuer or a secrets directory is
// configured) the keys that sign confirmations and verify approval events
// must exist, and be long enough, before the first call.
func requireSecrets(cfg *config.Config, get func(string) ([]byte, error)) error {
	for _, name := range []string{secretRequestState, secretApprovalEvent} {
		where := "the file " + name + " in SECRETS_DIR (" + cfg.SecretsDir + ")"
		if cfg.SecretsDir == "" {
			where = "SECRET_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) + " (or SECRETS_DIR with the file " + name + ")"
		}
		v, err := get(name)
		switch {
		case err != nil:
			return &config.Error{Var: "SECRETS_DIR", Msg: "the secret " + name + " is missing: provide " + where}
		case len(v) < 32:
			return &config.Error{Var: "SECRETS_DIR", Msg: fmt.Sprintf("the secret %s is %d bytes; it must be at least 32 (%s)", name, len(v), where)}
		}
		if name == secretApprovalEvent {
			if _, err := approvals.EventKeys(v); err != nil {
				return &config.Error{Var: "SECRETS_DIR", Msg: fmt.Sprintf("the secret %s: %v (%s)", name, err, where)}
			}
		}
	}
	return nil
}

// devSecrets backs secrets on a laptop run with no SECRETS_DIR: missing keys
// become random per-process keys, which is correct for exactly one process
// and never used when a secrets directory is configured.
func devSecrets(get func(string) ([]byte, error), log *slog.Logger) func(string) ([]byte, error) {
	generated := map[string][]byte{}
	for _, name := range []string{secretRequestState, secretApprovalEvent} {
		if _, err := get(name); err != nil {
			key := make([]byte, 32)
			rand.Read(key)
			generated[name] = []byte(hex.EncodeToString(key)) // text, as a provider's secret is: one line
			log.Warn("secret not configured; using a random per-process key (development only)", "secret", name)
		}
	}
	return func(name string) ([]byte, error) {
		if k, ok := generated[name]; ok {
			return k, nil
		}
		return get(name)
	}
}
