// Package app is the composition root: it turns a Config into a running
// HTTP server with the MCP handlers, backends and middleware wired in. main
// and the end-to-end tests build the server the same way, through New.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/config"
	"github.com/portfolio-mcp/portfolio-mcp/handlers"
	"github.com/portfolio-mcp/portfolio-mcp/httpserver"
	"github.com/portfolio-mcp/portfolio-mcp/secrets"
	"github.com/portfolio-mcp/portfolio-mcp/telemetry"
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
	var bs backends.Set
	if o.backends != nil {
		bs = *o.backends
	} else {
		var err error
		if bs, err = newBackends(cfg); err != nil {
			return nil, err
		}
	}
	metrics := telemetry.NewMetrics(rev)

	sec, err := secrets.New(cfg.SecretsDir, log)
	if err != nil {
		return nil, &config.Error{Var: "SECRETS_DIR", Msg: err.Error()}
	}
	secret := sec.Get
	if cfg.SecretsDir == "" && cfg.Auth.Issuer == "" {
		secret = devSecrets(secret, log)
	}
	st, err := newStore(cfg)
	if err != nil {
		return nil, err
	}
	tp, err := newTrading(cfg, st, bs, logJournal{log}, secret, log)
	if err != nil {
		return nil, err
	}

	srv := mcp.NewServer(&mcp.Implementation{Name: "portfolio-mcp", Title: "Portfolio MCP", Version: Version}, &mcp.ServerOptions{
		Instructions: instructions,
		// The SDK logs every stateless session at info; keep only its warnings.
		Logger: slog.New(levelFloor{log.Handler(), slog.LevelWarn}),
	})
	catalog := handlers.Register(srv, handlers.Deps{Backends: bs, Logger: log, Trading: tp.service, Confirm: tp.signer})
	srv.AddReceivingMiddleware(
		metrics.Middleware(log, catalog.Names()),
		handlers.Recover(log),
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
		MCP:  mcpHandler,
		Routes: map[string]http.Handler{
			"/approvals":             tp.api.Routes(),
			"/approvals/":            tp.api.Routes(),
			"POST /events/approvals": tp.api.Events(),
		},
		OnDrained:      []func(context.Context) error{func(context.Context) error { return st.Close() }},
		AllowedHosts:   cfg.AllowedHosts,
		AllowedOrigins: cfg.AllowedOrigins,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		DrainTimeout:   cfg.DrainTimeout,
		DrainDelay:     cfg.DrainDelay,
		Metrics:        metrics.Registry,
		Logger:         log,
	})
}

func newBackends(cfg *config.Config) (backends.Set, error) {
	b := cfg.Backends
	if b.PortfolioURL != "" || b.TradeURL != "" || b.RiskURL != "" {
		return backends.Set{}, fmt.Errorf("backend URLs are not supported yet; unset PORTFOLIO_URL, TRADE_URL and RISK_URL to use the built-in demo backends")
	}
	return demo.New(nil).Set(), nil
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
