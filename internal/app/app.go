// Package app is the composition root: it turns a Config into a running
// HTTP server with the MCP handlers, backends and middleware wired in. main
// and the end-to-end tests build the server the same way, through New.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/backends/httpclient"
	"github.com/portfolio-mcp/portfolio-mcp/config"
	"github.com/portfolio-mcp/portfolio-mcp/handlers"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/httpserver"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/secrets"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// Version is stamped by the build (-ldflags "-X ...app.Version=v0.1.0").
var Version = "dev"

const instructions = `Governed access to the firm's portfolios, market data and risk.
Start with list_accounts, then get_portfolio or the resource portfolio://accounts/{account_id}, get_risk_summary, get_quotes and search_equities.
All amounts are in the account's base currency; weights are fractions of total account value (0..1). Every call is audited.`

// Option adjusts how New assembles the server.
type Option func(*options)

type options struct {
	backends *backends.Set
	typedSDK bool
}

// WithTypedSDKTools registers tools with the go-sdk's typed mcp.AddTool
// (per-call input and output validation) instead of the compiled path, for
// the differential tests and benchmarks.
func WithTypedSDKTools() Option {
	return func(o *options) { o.typedSDK = true }
}

// WithBackends replaces the backends chosen by the configuration, for tests
// that need a backend to misbehave on cue.
func WithBackends(bs backends.Set) Option {
	return func(o *options) { o.backends = &bs }
}

// New assembles the server described by cfg.
func New(ctx context.Context, cfg *config.Config, rev telemetry.Revision, log *slog.Logger, opts ...Option) (*httpserver.Server, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	sec, err := secrets.New(cfg.SecretsDir, log)
	if err != nil {
		return nil, &config.Error{Var: "SECRETS_DIR", Msg: err.Error()}
	}
	secret := sec.Get
	if cfg.SecretsDir == "" && cfg.Auth.Issuer == "" {
		secret = devSecrets(secret, log)
	} else if err := requireSecrets(cfg, sec.Get); err != nil {
		return nil, err
	}
	var bs backends.Set
	if o.backends != nil {
		bs = *o.backends
	} else if bs, err = newBackends(cfg, sec, log); err != nil {
		return nil, err
	}
	metrics := telemetry.NewMetrics(rev)
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "portfolio_mcp_build_info", Help: "Always 1; its labels name the build (version, Go version).",
		ConstLabels: prometheus.Labels{"version": Version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	if err := metrics.Registerer().Register(buildInfo); err != nil {
		return nil, fmt.Errorf("build info metric: %w", err)
	}
	log.Info("portfolio-mcp starting", "version", Version, "go", runtime.Version(), "trading_mode", cfg.Trading.Mode)
	st, err := newStore(cfg, sec.Get, metrics.Registerer(), log)
	if err != nil {
		return nil, err
	}
	gov, err := newSecurity(ctx, cfg, rev, metrics.Registerer(), st, log)
	if err != nil {
		return nil, err
	}
	tp, err := newTrading(cfg, st, bs, gov.journal(), gov.auditor.Emit, secret, log)
	if err != nil {
		return nil, err
	}

	srv := mcp.NewServer(&mcp.Implementation{Name: "portfolio-mcp", Title: "Portfolio MCP", Version: Version}, &mcp.ServerOptions{
		Instructions:      instructions,
		CompletionHandler: handlers.Completion(bs),
		// Tools sharing an output type (the order tools) resolve its schema
		// once: schema resolution is most of the start-up work.
		SchemaCache: mcp.NewSchemaCache(),
		// The SDK logs every stateless session at info; keep only its warnings.
		Logger: slog.New(levelFloor{log.Handler(), slog.LevelWarn}),
	})
	catalog := handlers.Register(srv, handlers.Deps{Backends: bs, Logger: log, Trading: tp.service, Confirm: tp.signer, TypedSDK: o.typedSDK})
	policy := gov.policy(catalog)
	srv.AddReceivingMiddleware(
		metrics.Middleware(log, catalog.Names()),
		gov.audit(policy), // outside Recover: a panicking call is audited too
		handlers.Recover(log),
		handlers.Coded(),
		gov.limit(policy),
		policy.Middleware(),
	)

	mcpHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{
		Stateless:    true,
		JSONResponse: true,
		// hostGuard in httpserver does this check, in a form that admits
		// Knative's queue-proxy (loopback connection, public Host).
		DisableLocalhostProtection: true,
		MaxRequestBodyBytes:        cfg.MaxBodyBytes,
		Logger:                     log,
	})

	return httpserver.New(httpserver.Options{
		Addr: cfg.Addr(),
		MCP:  gov.wrap(policy, mcpHandler),
		Routes: gov.routes(map[string]http.Handler{
			"/approvals":             gov.authenticate(tp.api.Routes()),
			"/approvals/":            gov.authenticate(tp.api.Routes()),
			"POST /events/approvals": tp.api.Events(),
		}),
		OnDrained:      []func(context.Context) error{func(context.Context) error { return st.Close() }, gov.close},
		Warm:           gov.warmed(),
		AllowedHosts:   cfg.AllowedHosts,
		AllowedOrigins: cfg.AllowedOrigins,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		DrainTimeout:   cfg.DrainTimeout,
		DrainDelay:     cfg.DrainDelay,
		Metrics:        metrics.Registry,
		Logger:         log,
	})
}

// newBackends picks the built-in demo backends when no backend URL is set,
// and HTTP clients of the firm's services when all three are. A partial set
// is refused: silently mixing demo data (or paper trading) with real
// services would be worse than not starting.
func newBackends(cfg *config.Config, sec *secrets.Store, log *slog.Logger) (backends.Set, error) {
	b := cfg.Backends
	if b.PortfolioURL == "" && b.TradeURL == "" && b.RiskURL == "" {
		return demo.New(nil).Set(), nil
	}
	for _, v := range []struct{ name, url string }{{"PORTFOLIO_URL", b.PortfolioURL}, {"TRADE_URL", b.TradeURL}, {"RISK_URL", b.RiskURL}} {
		if v.url == "" {
			return backends.Set{}, &config.Error{Var: v.name, Msg: "is required when any of PORTFOLIO_URL, TRADE_URL, RISK_URL is set (set all three, or none for the built-in demo backends)"}
		}
	}
	set, err := httpclient.NewSet(httpclient.URLs{Portfolio: b.PortfolioURL, Risk: b.RiskURL, Trade: b.TradeURL}, httpclient.Options{
		Timeout:         b.Timeout,
		Retries:         b.Retries,
		BreakerFailures: b.BreakerFailures,
		BreakerCooldown: b.BreakerCooldown,
		// Read per call so a rotated key applies at once. Without the
		// secret no Authorization header is sent and a backend that needs
		// one answers 401, which the logs name.
		Token: func() string {
			v, err := sec.Get(secrets.BackendAPIKey)
			if err != nil {
				return ""
			}
			return string(v)
		},
		Logger: log,
	})
	if err != nil {
		return backends.Set{}, fmt.Errorf("backend clients: %w", err)
	}
	return set, nil
}

// levelFloor drops records below min, whatever the wrapped handler allows.
type levelFloor struct {
	slog.Handler
	min slog.Level
}

func (h levelFloor) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h levelFloor) WithAttrs(as []slog.Attr) slog.Handler {
	return levelFloor{h.Handler.WithAttrs(as), h.min}
}

func (h levelFloor) WithGroup(name string) slog.Handler {
	return levelFloor{h.Handler.WithGroup(name), h.min}
}
