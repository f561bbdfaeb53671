// Package app is the composition root: it turns a Config into a running
// HTTP server with the MCP handlers, backends and middleware wired in. main
// and the end-to-end tests build the server the same way, through New.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/backends/httpclient"
	"github.com/portfolio-mcp/portfolio-mcp/config"
	"github.com/portfolio-mcp/portfolio-mcp/handlers"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/direct"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/httpserver"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/authz"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/secrets"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry/tracing"
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
	observe  func(*call.Call)
	noDirect bool
	served   func(tool string)
}

// WithCallObserver calls f with each /mcp request's parsed call once the
// request was served, for tests and benchmarks that count what the request
// path did (how many times the arguments were decoded).
func WithCallObserver(f func(*call.Call)) Option {
	return func(o *options) { o.observe = f }
}

// WithTypedSDKTools registers tools with the go-sdk's typed mcp.AddTool
// (per-call input and output validation) instead of the compiled path, for
// the differential tests and benchmarks.
func WithTypedSDKTools() Option {
	return func(o *options) { o.typedSDK = true }
}

// WithDirectPath sets whether stateless tools/calls of tools that never ask
// for input are answered without a go-sdk session (internal/edge/direct;
// on by default), and calls served, if not nil, with the tool of each call
// that path answered: the differential test turns it off on one server and
// proves the other took it.
func WithDirectPath(on bool, served func(tool string)) Option {
	return func(o *options) { o.noDirect, o.served = !on, served }
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
	// Tracing is a no-op (nothing initialised) unless an OTLP endpoint is
	// configured: off the path to ready for everyone who does not use it.
	tr, err := tracing.New(ctx, cfg.Tracing, Version, revisionAttributes(rev)...)
	if err != nil {
		return nil, &config.Error{Var: "OTEL_EXPORTER_OTLP_ENDPOINT", Msg: err.Error()}
	}
	st, err := newStore(cfg, sec.Get, metrics.Registerer(), tr.Provider, log)
	if err != nil {
		return nil, err
	}
	// Early: it starts fetching the issuer's keys, which readiness waits
	// for, so the rest of start-up overlaps the round trips.
	gov, err := newSecurity(ctx, cfg, rev, metrics.Registerer(), st, tr, sec.Get, log)
	if err != nil {
		return nil, err
	}
	var bs backends.Set
	if o.backends != nil {
		bs = *o.backends
	} else if bs, err = newBackends(cfg, sec, metrics.Registerer(), tr, log); err != nil {
		return nil, err
	}
	tp, err := newTrading(cfg, st, bs, gov.auditor.Journal(), gov.auditor.RecordOperation, gov.approveBudget, secret, metrics.Registerer(), log)
	if err != nil {
		return nil, err
	}
	// The approval queue's gauges, read from the shared store in the
	// background (never on a scrape).
	stopGauges := tp.service.RefreshApprovalGauges(ctx, 15*time.Second)

	impl := &mcp.Implementation{Name: "portfolio-mcp", Title: "Portfolio MCP", Version: Version}
	srv := mcp.NewServer(impl, &mcp.ServerOptions{
		Instructions: instructions,
		// The lists never change while a process runs (a new set of tools
		// is a new revision), so no list_changed notification will ever
		// come: saying so spares clients a subscriptions/listen stream that
		// would stay open for nothing, hold a replica up (no scale to zero
		// while an idle agent is connected) and hold up its drain.
		Capabilities: &mcp.ServerCapabilities{
			Logging:   &mcp.LoggingCapabilities{},
			Tools:     &mcp.ToolCapabilities{},
			Prompts:   &mcp.PromptCapabilities{},
			Resources: &mcp.ResourceCapabilities{},
		},
		CompletionHandler: handlers.Completion(bs),
		// Tools sharing an output type (the order tools) resolve its schema
		// once: schema resolution is most of the start-up work.
		SchemaCache: mcp.NewSchemaCache(),
		// The SDK logs every stateless session at info; keep only its warnings.
		Logger: slog.New(levelFloor{log.Handler(), slog.LevelWarn}),
	})
	surface := handlers.Register(srv, handlers.Deps{Backends: bs, Logger: log, Trading: tp.service, TypedSDK: o.typedSDK})
	policy := authz.New(surface.Catalog, gov.scopes)
	middleware := mcpMiddleware(metrics, log, gov, policy, surface)
	srv.AddReceivingMiddleware(middleware...)

	var mcpHandler http.Handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{
		Stateless:    true,
		JSONResponse: true,
		// The Host guard at the edge does this check, in a form that admits
		// Knative's queue-proxy (loopback connection, public Host).
		DisableLocalhostProtection: true,
		MaxRequestBodyBytes:        cfg.MaxBodyBytes,
		Logger:                     log,
	})
	if !o.noDirect {
		// A stateless call of a tool that never asks for input needs no
		// session: answer it with the same middleware and handler, and the
		// same bytes, without the SDK creating one.
		mcpHandler = direct.New(direct.Options{Tools: surface.Direct, Middleware: middleware, Server: impl, Served: o.served, Logger: log}, mcpHandler)
	}
	if o.observe != nil {
		mcpHandler = observed(mcpHandler, o.observe)
	}
	guard, err := httpserver.Guard(cfg.AllowedHosts, cfg.AllowedOrigins)
	if err != nil {
		return nil, &config.Error{Var: "ALLOWED_ORIGINS", Msg: err.Error()}
	}
	approvalsAPI := approvalsEdge(cfg, gov, guard, tp.api.Routes())
	routes := map[string]http.Handler{
		"/mcp":                   mcpEdge(cfg, gov, policy, guard, tr, mcpHandler),
		"/approvals":             approvalsAPI,
		"/approvals/":            approvalsAPI,
		"/halts":                 approvalsAPI,
		"/halts/":                approvalsAPI,
		"POST /events/approvals": approvalsEdge(cfg, nil, guard, tp.api.Events()),
	}
	closeConsole := func() {}
	if cfg.ConsoleOn() {
		var h http.Handler
		if h, closeConsole, err = newConsole(cfg, gov, tp.service, tp.halt, secret, log); err != nil {
			return nil, err
		}
		routes["/console/"] = consoleEdge(cfg, guard, h)
	}
	return httpserver.New(httpserver.Options{
		Addr:   cfg.Addr(),
		Routes: gov.routes(routes, guard),
		// The hooks run side by side; the spans are flushed after the audit
		// queue's, whose deliveries they include.
		OnDrained: []func(context.Context) error{func(context.Context) error { return st.Close() },
			func(ctx context.Context) error { return errors.Join(gov.close(ctx), tr.Shutdown(ctx)) },
			func(context.Context) error { closeConsole(); stopGauges(); return nil }},
		Warm:         gov.warmed(),
		DrainTimeout: cfg.DrainTimeout,
		DrainDelay:   cfg.DrainDelay,
		Metrics:      metrics.Gatherer(),
		Logger:       log,
	})
}

// mcpEdge is the HTTP path of a request to /mcp, outermost first: every
// check a call passes before MCP runs, in the order it passes them.
func mcpEdge(cfg *config.Config, gov *security, policy *authz.Policy, guard func(http.Handler) http.Handler, tr tracing.Tracing, mcpHandler http.Handler) http.Handler {
	return httpserver.Chain(mcpHandler,
		httpserver.RequestID,                   // adopt or make the id every log line and record carries
		httpserver.LimitBody(cfg.MaxBodyBytes), // bound what anyone can make us read
		guard,                                  // Host (DNS rebinding) and Origin (cross-site browsers)
		httpserver.CORS(cfg.AllowedOrigins),    // the trusted origins' preflights, and their pages may read the answer
		httpserver.ParseCall,                   // read the JSON-RPC message once; refuse what is not one
		tr.Server(policy.Known),                // the request's server span, child of the agent's trace
		gov.authenticate,                       // bearer token -> principal, or 401 naming the metadata
		gov.challenge(policy),                  // 403 insufficient_scope step-up, before MCP runs
	)
}

// approvalsEdge is the HTTP path of the approvals API and of approval
// events: the same request id, body limit and Host/Origin rules as /mcp
// (the API is as worth a DNS-rebinding or cross-site attempt as the tools
// are); the API authenticates its caller, the events carry their own
// signature (gov nil).
func approvalsEdge(cfg *config.Config, gov *security, guard func(http.Handler) http.Handler, api http.Handler) http.Handler {
	auth := func(h http.Handler) http.Handler { return h }
	if gov != nil {
		auth = gov.authenticate
	}
	return httpserver.Chain(api,
		httpserver.RequestID,
		httpserver.LimitBody(cfg.MaxBodyBytes),
		guard,
		auth,
	)
}

// revisionAttributes name the Knative revision in the trace resource.
func revisionAttributes(rev telemetry.Revision) []attribute.KeyValue {
	var kv []attribute.KeyValue
	for k, v := range map[string]string{"k8s.service.name": rev.Service, "knative.revision.name": rev.Revision} {
		if v != "" {
			kv = append(kv, attribute.String(k, v))
		}
	}
	return kv
}

// mcpMiddleware is every MCP step a request passes, outermost first.
func mcpMiddleware(m *telemetry.Metrics, log *slog.Logger, gov *security, policy *authz.Policy, s handlers.Surface) []mcp.Middleware {
	return append([]mcp.Middleware{
		outcome.Deliver(call.ResultsTyped),   // a step's refusal becomes what the agent sees, after metrics and audit classified it
		m.Middleware(log, s.Catalog.Names()), // request metrics and the one log line per call
		call.Bind(),                          // the parsed call every later step reads; an ambiguous message stops here
		gov.auditor.Middleware(s.Catalog),    // the call's record: outside the rest, so denied, limited and panicking calls are recorded
		handlers.Recover(log),                // a panic becomes an internal error, never a crash
		handlers.Coded(),                     // every error leaves with a JSON-RPC code
		gov.limiter.Middleware(s.Catalog),    // the caller's rate budget for this call
		policy.Middleware(),                  // scope and account entitlement: the authoritative check
	}, s.Middleware...) // the handlers' own, next to the tools
}

// observed calls f with the request's parsed call after h served it.
func observed(h http.Handler, f func(*call.Call)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if c := call.From(r.Context()); c != nil {
			f(c)
		}
	})
}

// newBackends picks the built-in demo backends when no backend URL is set,
// and HTTP clients of the firm's services when all three are. A partial set
// is refused: silently mixing demo data (or paper trading) with real
// services would be worse than not starting.
func newBackends(cfg *config.Config, sec *secrets.Store, reg prometheus.Registerer, tr tracing.Tracing, log *slog.Logger) (backends.Set, error) {
	b := cfg.Backends
	if cfg.Demo() {
		return demo.New(nil).Set(), nil
	}
	for _, v := range []struct{ name, url string }{{"PORTFOLIO_URL", b.PortfolioURL}, {"TRADE_URL", b.TradeURL}, {"RISK_URL", b.RiskURL}} {
		if v.url == "" {
			return backends.Set{}, &config.Error{Var: v.name, Msg: "is required when any of PORTFOLIO_URL, TRADE_URL, RISK_URL is set (set all three, or none for the built-in demo backends)"}
		}
	}
	metrics, err := httpclient.NewMetrics(reg)
	if err != nil {
		return backends.Set{}, err
	}
	set, err := httpclient.NewSet(httpclient.URLs{Portfolio: b.PortfolioURL, Risk: b.RiskURL, Trade: b.TradeURL}, httpclient.Options{
		Metrics: metrics, TracerProvider: tr.Provider, Propagator: tr.Propagator,
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
