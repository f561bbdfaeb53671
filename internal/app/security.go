package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-mcp/portfolio-mcp/config"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/httpserver"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/authz"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/ratelimit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/secrets"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry/tracing"
)

// security is the governance wrapped around the MCP handler: bearer-token
// authentication (or the local developer on loopback), scopes and
// entitlements, rate limits and the audit trail.
//
// The order in which its steps run is in mcpEdge and mcpMiddleware.
type security struct {
	scopes   catalog.Scopes
	auditor  *audit.Auditor
	limiter  *ratelimit.Limiter
	verifier *oauth.Verifier // nil when unauthenticated
	// warm is closed when the first attempt to load the issuer's keys has
	// ended; nil when unauthenticated.
	warm     chan struct{}
	resource oauth.Resource
	mdURL    string
	tracer   trace.TracerProvider
	log      *slog.Logger
}

func newSecurity(ctx context.Context, cfg *config.Config, rev telemetry.Revision, reg prometheus.Registerer, st store.Store, tr tracing.Tracing, secret func(string) ([]byte, error), log *slog.Logger) (*security, error) {
	s := &security{
		scopes: catalog.Scopes{Read: cfg.Auth.ScopeRead, Trade: cfg.Auth.ScopeTrade, Approve: cfg.Auth.ScopeApprove},
		tracer: tr.Provider,
		log:    log,
	}
	// First: fetching the issuer's keys then overlaps the rest of start-up.
	if cfg.Auth.Issuer == "" {
		// config refuses this off loopback unless ALLOW_UNAUTHENTICATED.
		log.Warn("OAUTH_ISSUER is not set: serving WITHOUT authentication as " + oauth.LocalDeveloper +
			" with every scope and account (development only)")
	} else if err := s.startAuth(ctx, cfg, tr, log); err != nil {
		return nil, err
	}

	// The trail's checkpoints are signed with the audit-signing-key secret,
	// required in production: on Knative (K_SERVICE) outside development
	// (as requireSecrets: an issuer or SECRETS_DIR). Elsewhere a missing
	// key is replaced by one made for the process.
	production := rev.Service != "" && (cfg.SecretsDir != "" || cfg.Auth.Issuer != "")
	signing, err := audit.SigningKey(func() ([]byte, error) { return secret(secrets.AuditSigningKey) }, production, log)
	if err != nil {
		return nil, &config.Error{Var: "SECRETS_DIR", Msg: err.Error()}
	}
	if s.auditor, err = audit.New(cfg.Audit, rev, log, reg, tr.Provider, signing); err != nil {
		return nil, err
	}
	// Rate-limit buckets live where the rest of the shared state lives.
	rdb := store.RedisClient(st)
	if s.limiter, err = ratelimit.New(cfg.Limits.Limits(), rdb, reg, log, tr.Provider); err != nil {
		return nil, err
	}
	return s, nil
}

// approveBudget takes one request of the approvals API from subject's
// approve budget: the bucket the MCP approval tools draw on, so the HTTP
// API is no way around their limit.
func (s *security) approveBudget(ctx context.Context, subject string) (retryAfter time.Duration, reason string, ok bool) {
	r, ok := s.limiter.Take(ctx, subject, catalog.ApproveBudget)
	return time.Duration(r.RetryAfterSeconds * float64(time.Second)), r.Message(), ok
}

// startAuth sets up the bearer-token verifier and starts fetching the
// issuer's keys.
func (s *security) startAuth(ctx context.Context, cfg *config.Config, tr tracing.Tracing, log *slog.Logger) error {
	var err error
	resourceURL, audience := cfg.ResourceURL(), cfg.TokenAudience() // validated by config
	s.resource = oauth.Resource{URL: resourceURL, Issuers: []string{cfg.Auth.Issuer}, Scopes: s.scopes.All(), Name: "Portfolio MCP"}
	if s.mdURL, err = s.resource.MetadataURL(); err != nil {
		return &config.Error{Var: "PUBLIC_URL", Msg: err.Error()}
	}
	s.verifier, err = oauth.NewVerifier(oauth.Options{
		Issuer: cfg.Auth.Issuer, Audience: audience, Algorithms: cfg.Auth.Algorithms,
		ClockSkew: cfg.Auth.ClockSkew, EntitlementsClaim: cfg.Auth.EntitlementsClaim, Logger: log,
		CacheTTL: cacheTTL(cfg.Auth.TokenCacheTTL), TracerProvider: tr.Provider,
	})
	if err != nil {
		return &config.Error{Var: "OAUTH_ISSUER", Msg: err.Error()}
	}
	// Fetch the issuer's keys while the process starts, and stay unready
	// until that attempt ends: a new replica in a burst should not take
	// calls that would each wait for the issuer. A failure is retried on
	// demand, and does not hold readiness (calls then answer 503 at once).
	// Package initialisation comes before main, so the fetch overlaps
	// little of start-up, and none at one CPU: it is most of what a cold
	// start in production adds to one in dev mode, hence its duration in
	// the log (docs/performance.md).
	s.warm = make(chan struct{})
	go func() {
		defer close(s.warm)
		began := time.Now()
		if err := s.verifier.Warm(ctx); err != nil {
			log.Warn("OAuth issuer not reachable yet; will retry on the first call", "error", err)
			return
		}
		log.Info("OAuth issuer keys loaded", "issuer", cfg.Auth.Issuer, "duration_ms", float64(time.Since(began).Microseconds())/1000)
	}()
	return nil
}

// cacheTTL maps OAUTH_TOKEN_CACHE_TTL (0: off) to oauth.Options.CacheTTL
// (negative: off).
func cacheTTL(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// warmed is closed once the issuer's keys were first tried (nil, always
// ready, when unauthenticated).
func (s *security) warmed() <-chan struct{} { return s.warm }

// challenge is the HTTP scope challenge step (none when unauthenticated:
// the local developer holds every scope).
func (s *security) challenge(p *authz.Policy) func(http.Handler) http.Handler {
	if s.verifier == nil {
		return func(h http.Handler) http.Handler { return h }
	}
	return p.Challenge(s.mdURL, s.auditor)
}

// authenticate requires a bearer token (or, unauthenticated, supplies the
// local developer) and puts the principal into the request context.
func (s *security) authenticate(h http.Handler) http.Handler {
	if s.verifier == nil {
		return oauth.Unauthenticated(s.scopes.All())(h)
	}
	return s.verifier.Middleware(s.mdURL)(h)
}

// routes adds the protected resource metadata to routes, behind the Host
// and Origin guard.
func (s *security) routes(routes map[string]http.Handler, guard func(http.Handler) http.Handler) map[string]http.Handler {
	if s.verifier == nil {
		return routes
	}
	md, err := s.resource.Routes()
	if err != nil { // MetadataURL already parsed the same URL
		panic(fmt.Sprintf("protected resource metadata: %v", err))
	}
	for p, h := range md {
		routes[p] = httpserver.Chain(h, httpserver.RequestID, guard)
	}
	return routes
}

// close drains the audit queue and stops the JWKS refresh (OnDrained).
func (s *security) close(ctx context.Context) error {
	if s.verifier != nil {
		s.verifier.Close()
	}
	return s.auditor.Close(ctx)
}
