// Package config holds the server's typed configuration: environment variables
// read with go-envconfig (the Knative way: the Service's env list), validated
// once at start so a bad value stops the process with a message naming it.
package config

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/loopback"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/ratelimit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry/tracing"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
)

// Config is every setting the server reads. Field tags name the environment
// variable and its default; docs/configuration lives in the README table.
type Config struct {
	// Port is the TCP port to listen on. Knative sets PORT for the user container.
	Port int `env:"PORT, default=8080"`
	// ListenHost is the address to bind. The loopback default keeps a laptop run
	// private; in a cluster it is 0.0.0.0 so kubelet probes reach the pod IP.
	ListenHost string `env:"LISTEN_HOST, default=127.0.0.1"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `env:"LOG_LEVEL, default=info"`

	// PublicURL is the MCP endpoint as agents reach it (the Knative route URL
	// plus /mcp). It names the OAuth protected resource; never derived from a
	// request, which an attacker controls.
	PublicURL string `env:"PUBLIC_URL"`
	// AllowedHosts are extra Host header values accepted on top of loopback
	// names (the route host, cluster-local names). A leading dot allows a
	// domain and its subdomains. Empty: only loopback connections are checked.
	AllowedHosts []string `env:"ALLOWED_HOSTS"`
	// AllowedOrigins are browser origins (scheme://host[:port]) trusted to call
	// /mcp cross-origin, e.g. a hosted MCP inspector. Empty: none.
	AllowedOrigins []string `env:"ALLOWED_ORIGINS"`
	// MaxBodyBytes bounds one request body.
	MaxBodyBytes int64 `env:"MAX_BODY_BYTES, default=1048576"`
	// DrainTimeout bounds graceful shutdown after SIGTERM: in-flight calls
	// get this long to finish (less DRAIN_DELAY, and less a quarter of the
	// rest, at most 5s, kept for delivering the audit queue and sealing it).
	// Keep it below the pod's termination grace period (Knative sets that to
	// the Service's timeoutSeconds).
	DrainTimeout time.Duration `env:"DRAIN_TIMEOUT, default=20s"`
	// DrainDelay is how long readiness reports failure before the listener
	// closes, so the load balancer stops routing new calls first.
	DrainDelay time.Duration `env:"DRAIN_DELAY, default=0s"`

	Backends Backends
	Auth     Auth
	// AllowUnauthenticated permits serving without OAUTH_ISSUER on a
	// non-loopback address: for a sealed test network only (containers in
	// CI). Refused in live trading mode.
	AllowUnauthenticated bool `env:"ALLOW_UNAUTHENTICATED, default=false"`
	Limits               ratelimit.Config
	Audit                audit.Config
	Trading              Trading
	Console              Console
	// Tracing is OpenTelemetry's standard OTEL_* environment.
	Tracing tracing.Config

	// RedisURL selects the Redis state store (approvals, idempotency records,
	// rate-limit buckets) shared by every replica, e.g. redis://redis:6379/0.
	// Empty: in-process memory, correct for exactly one process.
	RedisURL string `env:"REDIS_URL"`
	// RedisTimeout bounds every Redis command. A Redis that hangs then costs
	// a read at most this (the rate limiter falls back to this replica's
	// buckets) and a trade a fast fail-closed refusal. Keep it well below
	// BACKEND_TIMEOUT.
	RedisTimeout time.Duration `env:"REDIS_TIMEOUT, default=250ms"`
	// RedisBreakerFailures consecutive failed commands open the Redis
	// circuit breaker: commands then fail at once for RedisBreakerCooldown.
	RedisBreakerFailures int           `env:"REDIS_BREAKER_FAILURES, default=3"`
	RedisBreakerCooldown time.Duration `env:"REDIS_BREAKER_COOLDOWN, default=2s"`
	// SecretsDir is the directory of secret files (a mounted Kubernetes
	// Secret synced by External Secrets). Files are re-read when they change.
	// Empty: development fallback to environment variables.
	SecretsDir string `env:"SECRETS_DIR"`
}

// Auth configures the OAuth 2.1 resource server.
type Auth struct {
	// Issuer is the OAuth/OIDC issuer whose JWKS signs access tokens. Empty:
	// no authentication, allowed only when listening on loopback.
	Issuer string `env:"OAUTH_ISSUER"`
	// Audience is the required "aud" claim; defaults to PUBLIC_URL.
	Audience string `env:"OAUTH_AUDIENCE"`
	// Algorithms are the accepted JWS algorithms (asymmetric only).
	Algorithms []string `env:"OAUTH_ALGORITHMS, default=RS256,ES256"`
	// ClockSkew tolerated on exp/nbf/iat.
	ClockSkew time.Duration `env:"OAUTH_CLOCK_SKEW, default=30s"`
	// TokenCacheTTL is how long a verified token is trusted without checking
	// its signature again (never past its expiry, and only while the key
	// that signed it is still published); 0 verifies every call.
	TokenCacheTTL time.Duration `env:"OAUTH_TOKEN_CACHE_TTL, default=1m"`
	// Scope names granting each tool class.
	ScopeRead    string `env:"SCOPE_READ, default=portfolio:read"`
	ScopeTrade   string `env:"SCOPE_TRADE, default=trade:write"`
	ScopeApprove string `env:"SCOPE_APPROVE, default=trade:approve"`
	// ScopeHalt grants the kill switch: engaging and releasing halts and
	// cancelling a scope's open orders (a risk officer's role).
	ScopeHalt string `env:"SCOPE_HALT, default=trade:halt"`
	// EntitlementsClaim is the token claim listing the account ids a
	// principal may see and trade ("*" grants all).
	EntitlementsClaim string `env:"ENTITLEMENTS_CLAIM, default=accounts"`
}

// Console configures the approvals console served under /console/. With
// OAUTH_ISSUER, approvers sign in there (OpenID Connect, authorization code
// with PKCE) and the console is on once CONSOLE_CLIENT_ID is set; its cookie
// key is the console-cookie-key secret. Without an issuer (a laptop run) it
// offers built-in personas instead.
type Console struct {
	// ClientID is the console's client at OAUTH_ISSUER: a public client
	// (PKCE; a console-client-secret secret, if present, is sent too) whose
	// redirect URI is CONSOLE_REDIRECT_URL.
	ClientID string `env:"CONSOLE_CLIENT_ID"`
	// RedirectURL is the sign-in callback registered at the issuer; default
	// PUBLIC_URL's origin + /console/callback.
	RedirectURL string `env:"CONSOLE_REDIRECT_URL"`
	// SessionTTL bounds a sign-in (the access token's own expiry bounds it
	// too).
	SessionTTL time.Duration `env:"CONSOLE_SESSION_TTL, default=8h"`
	// PersonaKey guards the laptop personas (no issuer): the sign-in link
	// the server prints carries it. Empty: a random key per process.
	PersonaKey string `env:"CONSOLE_PERSONA_KEY"`
}

// Trading configures the order tools and their pre-trade policy.
type Trading struct {
	// Mode is paper or live. Live is a separate Service with separate
	// credentials, never a flag flipped on a paper deployment.
	Mode string `env:"TRADING_MODE, default=paper"`
	// MaxOrderNotional rejects any single order above it (base currency).
	MaxOrderNotional float64 `env:"ORDER_MAX_NOTIONAL, default=1000000"`
	// ApprovalNotional: orders at or above it need a human approver.
	ApprovalNotional float64 `env:"APPROVAL_NOTIONAL, default=50000"`
	// MaxPositionWeight rejects a buy that would lift one position above
	// this share of the account (0..1).
	MaxPositionWeight float64 `env:"MAX_POSITION_WEIGHT, default=0.25"`
	// SymbolAllow, if set, is the only tickers that may be traded.
	SymbolAllow []string `env:"SYMBOL_ALLOW"`
	// SymbolDeny tickers may never be traded (restricted list).
	SymbolDeny []string `env:"SYMBOL_DENY"`
	// EnforceMarketHours refuses orders outside the regular US session.
	// Unset, it is on, except on the built-in demo backends, whose prices
	// are frozen at a close anyway: see Config.MarketHoursEnforced.
	EnforceMarketHours *bool `env:"ENFORCE_MARKET_HOURS, noinit"`
	// Holidays are extra exchange holidays (YYYY-MM-DD) beyond the built-in calendar.
	Holidays []calendar.Date `env:"MARKET_HOLIDAYS"`
	// PriceCollar refuses a limit price further than this fraction from the
	// last price on the side that hurts (a buy above, a sell below), and a
	// market order when the quote itself is outside that band; market buys
	// are sized at the band's top. 0 turns the collar off.
	PriceCollar float64 `env:"PRICE_COLLAR, default=0.05"`
	// Daily limits per exchange trading day (it rolls over at the close),
	// shared by all replicas: orders entered and their gross estimated
	// notional, per principal (the human) and per agent (the OAuth client).
	// 0 is no limit.
	DailyOrdersPerPrincipal   int     `env:"DAILY_MAX_ORDERS_PER_PRINCIPAL, default=200"`
	DailyNotionalPerPrincipal float64 `env:"DAILY_MAX_NOTIONAL_PER_PRINCIPAL, default=5000000"`
	DailyOrdersPerAgent       int     `env:"DAILY_MAX_ORDERS_PER_AGENT, default=100"`
	DailyNotionalPerAgent     float64 `env:"DAILY_MAX_NOTIONAL_PER_AGENT, default=2000000"`
	// DuplicateWindow: an order identical in account, side, ticker and
	// quantity to one entered this recently under another idempotency key
	// needs the user's explicit acknowledgement (0: no check).
	DuplicateWindow time.Duration `env:"DUPLICATE_ORDER_WINDOW, default=2m"`
	// ApprovalTTL is how long a pending approval can be decided.
	ApprovalTTL time.Duration `env:"APPROVAL_TTL, default=30m"`
	// MaxPendingApprovals is how many orders one requester may have waiting
	// for an approver at once, so an agent cannot bury the approvers' queue
	// (where a flood invites a careless approval).
	MaxPendingApprovals int `env:"MAX_PENDING_APPROVALS, default=20"`
	// ConfirmTTL is how long a user confirmation round-trip stays valid.
	ConfirmTTL time.Duration `env:"CONFIRM_TTL, default=5m"`
	// ExecutionLease is how long one replica may hold an order's execution
	// before another (or the client's retry) may take it over, e.g. after a
	// crash. Keep it above BACKEND_TIMEOUT.
	ExecutionLease time.Duration `env:"EXECUTION_LEASE, default=30s"`
	// ApproverClients, if set, are the only OAuth client ids whose tokens
	// may decide approvals over HTTP (the firm's approval tool), so an
	// agent holding trade:approve cannot release orders itself. Required
	// in live trading.
	ApproverClients []string `env:"APPROVER_CLIENT_IDS"`
	// ApprovalEventSources are the CloudEvents sources trusted to send
	// approval.decided events (signed with the approval-event-key secret).
	ApprovalEventSources []string `env:"APPROVAL_EVENT_SOURCES, default=urn:portfolio-mcp:approvals"`
}

// Backends locates the firm's services. An empty URL selects the built-in
// demo implementation, so the server runs with no network at all.
type Backends struct {
	// PortfolioURL serves accounts, reference data and market data.
	PortfolioURL string `env:"PORTFOLIO_URL"`
	// TradeURL serves order entry.
	TradeURL string `env:"TRADE_URL"`
	// RiskURL serves risk analytics.
	RiskURL string `env:"RISK_URL"`
	// Timeout bounds one backend call (each retry attempt included) unless the
	// caller's own deadline is sooner.
	Timeout time.Duration `env:"BACKEND_TIMEOUT, default=2s"`
	// Retries is how many extra attempts a read gets after a connection
	// error, 429 or 5xx, with jittered backoff, within Timeout. Writes are
	// resent only when no response arrived (the contract's idempotency).
	Retries int `env:"BACKEND_RETRIES, default=2"`
	// BreakerFailures consecutive failed attempts open a service's circuit
	// breaker: calls then fail at once instead of waiting on a dead service.
	BreakerFailures int `env:"BACKEND_BREAKER_FAILURES, default=5"`
	// BreakerCooldown is how long an open breaker refuses calls before it
	// lets one probe through to see whether the service recovered.
	BreakerCooldown time.Duration `env:"BACKEND_BREAKER_COOLDOWN, default=10s"`
}

// Error is a configuration problem, reported as one line naming the variable.
type Error struct {
	Var string
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("config: %s: %s", e.Var, e.Msg) }

// Load reads the configuration from the process environment.
func Load(ctx context.Context) (*Config, error) {
	return LoadFrom(ctx, envconfig.OsLookuper())
}

// LoadFrom reads the configuration from l and validates it. Tests pass a map.
func LoadFrom(ctx context.Context, l envconfig.Lookuper) (*Config, error) {
	var c Config
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &c, Lookuper: l}); err != nil {
		return nil, decodeError(err)
	}
	if errs := c.validate(); len(errs) > 0 {
		return nil, errors.Join(errs...) // every bad variable at once
	}
	return &c, nil
}

// Addr is the listen address.
func (c *Config) Addr() string {
	return net.JoinHostPort(c.ListenHost, fmt.Sprint(c.Port))
}

func (c *Config) validate() []error {
	var errs []error
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, &Error{"PORT", fmt.Sprintf("%d is not a TCP port (0-65535; 0 picks a free one)", c.Port)})
	}
	if c.ListenHost != "" && net.ParseIP(c.ListenHost) == nil && c.ListenHost != "localhost" {
		errs = append(errs, &Error{"LISTEN_HOST", fmt.Sprintf("%q is not an IP address or localhost", c.ListenHost)})
	}
	if !validLevel(c.LogLevel) {
		errs = append(errs, &Error{"LOG_LEVEL", fmt.Sprintf("%q is not one of debug, info, warn, error", c.LogLevel)})
	}
	if c.MaxBodyBytes < 1024 || c.MaxBodyBytes > 64<<20 {
		errs = append(errs, &Error{"MAX_BODY_BYTES", fmt.Sprintf("%d is outside 1024..67108864", c.MaxBodyBytes)})
	}
	if c.DrainTimeout <= 0 || c.DrainTimeout > 10*time.Minute {
		errs = append(errs, &Error{"DRAIN_TIMEOUT", fmt.Sprintf("%s is outside (0, 10m]", c.DrainTimeout)})
	}
	if c.DrainDelay < 0 || c.DrainDelay >= c.DrainTimeout {
		errs = append(errs, &Error{"DRAIN_DELAY", fmt.Sprintf("%s must be >= 0 and below DRAIN_TIMEOUT", c.DrainDelay)})
	}
	if c.Backends.Timeout <= 0 || c.Backends.Timeout > time.Minute {
		errs = append(errs, &Error{"BACKEND_TIMEOUT", fmt.Sprintf("%s is outside (0, 1m]", c.Backends.Timeout)})
	}
	if c.Backends.Retries < 0 || c.Backends.Retries > 5 {
		errs = append(errs, &Error{"BACKEND_RETRIES", fmt.Sprintf("%d is outside 0..5", c.Backends.Retries)})
	}
	if c.Backends.BreakerFailures < 1 || c.Backends.BreakerFailures > 1000 {
		errs = append(errs, &Error{"BACKEND_BREAKER_FAILURES", fmt.Sprintf("%d is outside 1..1000", c.Backends.BreakerFailures)})
	}
	if c.Backends.BreakerCooldown < 100*time.Millisecond || c.Backends.BreakerCooldown > 10*time.Minute {
		errs = append(errs, &Error{"BACKEND_BREAKER_COOLDOWN", fmt.Sprintf("%s is outside [100ms, 10m]", c.Backends.BreakerCooldown)})
	}
	errs = append(errs, c.validateSecurity()...)
	errs = append(errs, c.validateTrading()...)
	if c.PublicURL != "" {
		if err := checkURL(c.PublicURL, true); err != nil {
			errs = append(errs, &Error{"PUBLIC_URL", err.Error()})
		}
	}
	for name, u := range map[string]string{
		"PORTFOLIO_URL": c.Backends.PortfolioURL,
		"TRADE_URL":     c.Backends.TradeURL,
		"RISK_URL":      c.Backends.RiskURL,
	} {
		if u != "" {
			if err := checkURL(u, false); err != nil {
				errs = append(errs, &Error{name, err.Error()})
			}
		}
	}
	for _, o := range c.AllowedOrigins {
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			errs = append(errs, &Error{"ALLOWED_ORIGINS", fmt.Sprintf("%q is not an origin like https://host[:port]", o)})
		}
	}
	for _, h := range c.AllowedHosts {
		if h == "" || strings.ContainsAny(h, "/ *") {
			errs = append(errs, &Error{"ALLOWED_HOSTS", fmt.Sprintf("%q is not a host name (use .example.com for a domain)", h)})
		}
	}
	return errs
}

// named turns a package's validation errors, each starting with the
// variable it is about (the convention every package Config follows), into
// Errors naming it.
func named(err error) []error {
	if err == nil {
		return nil
	}
	list := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	}
	out := make([]error, 0, len(list))
	for _, e := range list {
		name, msg, _ := strings.Cut(e.Error(), " ")
		out = append(out, &Error{name, msg})
	}
	return out
}

func checkURL(raw string, https bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("%q is not an absolute http(s) URL", raw)
	}
	if https && u.Scheme != "https" && !loopback.Name(u.Hostname()) {
		return fmt.Errorf("%q must use https (http only for loopback)", raw)
	}
	return nil
}

func validLevel(s string) bool {
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
		return true
	}
	return false
}

// decodeError turns go-envconfig's "FieldName: cause" into an Error naming
// the environment variable, which is what an operator can fix.
func decodeError(err error) error {
	// Nested fields come as "Struct: Field: cause".
	rest := err.Error()
	for {
		field, cause, ok := strings.Cut(rest, ": ")
		if !ok {
			break
		}
		if name := envName(reflect.TypeFor[Config](), field); name != "" {
			return &Error{name, cause}
		}
		rest = cause
	}
	if errors.Is(err, envconfig.ErrMissingRequired) {
		_, cause, _ := strings.Cut(err.Error(), ": ")
		return &Error{strings.TrimPrefix(cause, envconfig.ErrMissingRequired.Error()+": "), "is required"}
	}
	return fmt.Errorf("config: %w", err)
}

// envName finds the environment variable of the struct field called field,
// searching nested structs.
func envName(t reflect.Type, field string) string {
	for f := range t.Fields() {
		if f.Type.Kind() == reflect.Struct && f.Tag.Get("env") == "" {
			if n := envName(f.Type, field); n != "" {
				return n
			}
			continue
		}
		if f.Name == field {
			name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			return name
		}
	}
	return ""
}

// Demo reports whether the built-in demo backends serve (no backend URL
// is set).
func (c *Config) Demo() bool {
	b := c.Backends
	return b.PortfolioURL == "" && b.TradeURL == "" && b.RiskURL == ""
}

// MarketHoursEnforced is ENFORCE_MARKET_HOURS, or when it is unset: true,
// except on the demo backends, so a first try on a laptop can place a
// paper order at any hour while any real deployment stays strict.
func (c *Config) MarketHoursEnforced() bool {
	if c.Trading.EnforceMarketHours != nil {
		return *c.Trading.EnforceMarketHours
	}
	return !c.Demo()
}

// ResourceURL is the protected resource agents' tokens are for (RFC 9728):
// PUBLIC_URL, else an https OAUTH_AUDIENCE. Validation guarantees it is an
// absolute URL whenever OAUTH_ISSUER is set.
func (c *Config) ResourceURL() string {
	if c.PublicURL != "" {
		return c.PublicURL
	}
	return c.Auth.Audience
}

// ConsoleOn reports whether the approvals console is served: always on a
// laptop run (personas), with an issuer once it has a client id.
//
// The personas are offered only on loopback: with ALLOW_UNAUTHENTICATED on
// a wider network the console stays off.
func (c *Config) ConsoleOn() bool {
	if c.Auth.Issuer == "" {
		return loopback.Name(c.ListenHost)
	}
	return c.Console.ClientID != ""
}

// ConsoleRedirectURL is the console's sign-in callback.
func (c *Config) ConsoleRedirectURL() string {
	if c.Console.RedirectURL != "" {
		return c.Console.RedirectURL
	}
	u, err := url.Parse(c.ResourceURL())
	if err != nil || u.Host == "" {
		return ""
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/console/callback"}).String()
}

// TokenAudience is the "aud" claim tokens must carry: OAUTH_AUDIENCE, else
// the resource URL.
func (c *Config) TokenAudience() string {
	if c.Auth.Audience != "" {
		return c.Auth.Audience
	}
	return c.ResourceURL()
}

func (c *Config) validateSecurity() []error {
	var errs []error
	a := c.Auth
	if a.Issuer == "" {
		if !loopback.Name(c.ListenHost) && !c.AllowUnauthenticated {
			errs = append(errs, &Error{"OAUTH_ISSUER", "is required when LISTEN_HOST is not loopback (set ALLOW_UNAUTHENTICATED=true only on a sealed test network)"})
		}
	} else {
		if err := checkURL(a.Issuer, true); err != nil {
			errs = append(errs, &Error{"OAUTH_ISSUER", err.Error()})
		}
		if c.PublicURL == "" && checkURL(a.Audience, true) != nil {
			errs = append(errs, &Error{"PUBLIC_URL", "is required with OAUTH_ISSUER: it is the protected resource the tokens are for (OAUTH_AUDIENCE stands in only when it is an https URL)"})
		}
	}
	for _, alg := range a.Algorithms {
		switch alg {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA":
		default:
			errs = append(errs, &Error{"OAUTH_ALGORITHMS", fmt.Sprintf("%q is not an asymmetric JWS algorithm", alg)})
		}
	}
	if a.ClockSkew < 0 || a.ClockSkew > 5*time.Minute {
		errs = append(errs, &Error{"OAUTH_CLOCK_SKEW", fmt.Sprintf("%s is outside [0, 5m]", a.ClockSkew)})
	}
	if a.TokenCacheTTL < 0 || a.TokenCacheTTL > 10*time.Minute {
		errs = append(errs, &Error{"OAUTH_TOKEN_CACHE_TTL", fmt.Sprintf("%s is outside [0, 10m]", a.TokenCacheTTL)})
	}
	if a.ScopeRead == "" {
		errs = append(errs, &Error{"SCOPE_READ", "must not be empty"})
	}
	if a.ScopeTrade == "" {
		errs = append(errs, &Error{"SCOPE_TRADE", "must not be empty"})
	}
	if a.ScopeApprove == "" {
		errs = append(errs, &Error{"SCOPE_APPROVE", "must not be empty"})
	}
	if a.ScopeHalt == "" {
		errs = append(errs, &Error{"SCOPE_HALT", "must not be empty"})
	}
	if c.Console.SessionTTL < 5*time.Minute || c.Console.SessionTTL > 24*time.Hour {
		errs = append(errs, &Error{"CONSOLE_SESSION_TTL", fmt.Sprintf("%s is outside [5m, 24h]", c.Console.SessionTTL)})
	}
	if a.Issuer != "" && c.Console.ClientID != "" {
		if err := checkURL(c.ConsoleRedirectURL(), true); err != nil {
			errs = append(errs, &Error{"CONSOLE_REDIRECT_URL", err.Error()})
		} else if u, _ := url.Parse(c.ConsoleRedirectURL()); u.Path != "/console/callback" {
			errs = append(errs, &Error{"CONSOLE_REDIRECT_URL", "must end in /console/callback (the console's callback)"})
		}
	}
	if c.Audit.QueueSize < 1 || c.Audit.QueueSize > 1<<20 {
		errs = append(errs, &Error{"AUDIT_QUEUE_SIZE", fmt.Sprintf("%d is outside 1..1048576", c.Audit.QueueSize)})
	}
	errs = append(errs, named(c.Limits.Validate())...)
	errs = append(errs, named(c.Audit.Validate())...)
	if err := c.Tracing.Validate(); err != nil {
		errs = append(errs, &Error{"OTEL_TRACES_SAMPLER", err.Error()})
	}
	if c.Audit.Sink != "" {
		if err := checkURL(c.Audit.Sink, false); err != nil {
			errs = append(errs, &Error{"K_SINK", err.Error()})
		}
	}
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			errs = append(errs, &Error{"REDIS_URL", "must be a redis:// or rediss:// URL"})
		}
	}
	if c.RedisTimeout < time.Millisecond || c.RedisTimeout >= c.Backends.Timeout {
		errs = append(errs, &Error{"REDIS_TIMEOUT", fmt.Sprintf("%s must be at least 1ms and below BACKEND_TIMEOUT (%s)", c.RedisTimeout, c.Backends.Timeout)})
	}
	if c.RedisBreakerFailures < 1 || c.RedisBreakerFailures > 1000 {
		errs = append(errs, &Error{"REDIS_BREAKER_FAILURES", fmt.Sprintf("%d is outside 1..1000", c.RedisBreakerFailures)})
	}
	if c.RedisBreakerCooldown < 100*time.Millisecond || c.RedisBreakerCooldown > 10*time.Minute {
		errs = append(errs, &Error{"REDIS_BREAKER_COOLDOWN", fmt.Sprintf("%s is outside [100ms, 10m]", c.RedisBreakerCooldown)})
	}
	return errs
}

func (c *Config) validateTrading() []error {
	var errs []error
	t := c.Trading
	if t.Mode != "paper" && t.Mode != "live" {
		errs = append(errs, &Error{"TRADING_MODE", fmt.Sprintf("%q is not paper or live", t.Mode)})
	}
	if t.Mode == "live" && c.AllowUnauthenticated {
		errs = append(errs, &Error{"ALLOW_UNAUTHENTICATED", "is never allowed with TRADING_MODE=live"})
	}
	if t.Mode == "live" && c.Auth.Issuer == "" {
		errs = append(errs, &Error{"OAUTH_ISSUER", "is required with TRADING_MODE=live"})
	}
	for _, id := range t.ApproverClients {
		if id == "" || strings.TrimSpace(id) != id {
			// An empty id would admit the tokens that name no client.
			errs = append(errs, &Error{"APPROVER_CLIENT_IDS", fmt.Sprintf("%q is not a client id (non-empty, no surrounding spaces)", id)})
			break
		}
	}
	if t.Mode == "live" && c.Demo() {
		errs = append(errs, &Error{"PORTFOLIO_URL", "PORTFOLIO_URL, TRADE_URL and RISK_URL are required with TRADING_MODE=live: the built-in demo backends fill orders that never reach a market"})
	}
	if t.Mode == "live" && c.RedisURL == "" {
		// Per-process state would differ between replicas (a duplicate
		// order) and vanish at each scale to zero (pending approvals).
		errs = append(errs, &Error{"REDIS_URL", "is required with TRADING_MODE=live: approvals, idempotency records and limits must be shared by every replica and outlive each"})
	}
	if t.Mode == "live" && c.Audit.Sink == "" {
		errs = append(errs, &Error{"K_SINK", "is required with TRADING_MODE=live: the audit trail's archive (a SinkBinding sets it)"})
	}
	if t.Mode == "live" && len(t.ApproverClients) == 0 {
		// Otherwise an agent whose user may approve could release orders
		// with that user's token: four eyes, but no human.
		errs = append(errs, &Error{"APPROVER_CLIENT_IDS", "is required with TRADING_MODE=live: the client ids of the firm's approval tools (the console's among them)"})
	}
	if t.MaxOrderNotional <= 0 {
		errs = append(errs, &Error{"ORDER_MAX_NOTIONAL", "must be positive"})
	}
	if t.ApprovalNotional < 0 {
		errs = append(errs, &Error{"APPROVAL_NOTIONAL", "must not be negative"})
	}
	if t.MaxPositionWeight <= 0 || t.MaxPositionWeight > 1 {
		errs = append(errs, &Error{"MAX_POSITION_WEIGHT", fmt.Sprintf("%g is outside (0, 1]", t.MaxPositionWeight)})
	}
	if t.PriceCollar < 0 || t.PriceCollar > 0.5 {
		errs = append(errs, &Error{"PRICE_COLLAR", fmt.Sprintf("%g is outside [0, 0.5]", t.PriceCollar)})
	}
	for _, l := range []struct {
		name string
		v    float64
	}{{"DAILY_MAX_ORDERS_PER_PRINCIPAL", float64(t.DailyOrdersPerPrincipal)}, {"DAILY_MAX_NOTIONAL_PER_PRINCIPAL", t.DailyNotionalPerPrincipal},
		{"DAILY_MAX_ORDERS_PER_AGENT", float64(t.DailyOrdersPerAgent)}, {"DAILY_MAX_NOTIONAL_PER_AGENT", t.DailyNotionalPerAgent}} {
		if l.v < 0 {
			errs = append(errs, &Error{l.name, "must not be negative (0 is no limit)"})
		}
	}
	if t.DuplicateWindow < 0 || t.DuplicateWindow > 24*time.Hour {
		errs = append(errs, &Error{"DUPLICATE_ORDER_WINDOW", fmt.Sprintf("%s is outside [0, 24h]", t.DuplicateWindow)})
	}
	if t.ApprovalTTL < time.Minute || t.ApprovalTTL > 7*24*time.Hour {
		errs = append(errs, &Error{"APPROVAL_TTL", fmt.Sprintf("%s is outside [1m, 168h]", t.ApprovalTTL)})
	}
	if t.MaxPendingApprovals < 1 || t.MaxPendingApprovals > 500 {
		errs = append(errs, &Error{"MAX_PENDING_APPROVALS", fmt.Sprintf("%d is outside [1, 500]", t.MaxPendingApprovals)})
	}
	if t.ExecutionLease <= c.Backends.Timeout || t.ExecutionLease > 10*time.Minute {
		errs = append(errs, &Error{"EXECUTION_LEASE", fmt.Sprintf("%s must exceed BACKEND_TIMEOUT (%s) and be at most 10m", t.ExecutionLease, c.Backends.Timeout)})
	}
	if t.ConfirmTTL < 10*time.Second || t.ConfirmTTL > time.Hour {
		errs = append(errs, &Error{"CONFIRM_TTL", fmt.Sprintf("%s is outside [10s, 1h]", t.ConfirmTTL)})
	}
	return errs
}
