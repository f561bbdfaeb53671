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
	// DrainTimeout bounds graceful shutdown: in-flight calls get this long to
	// finish after SIGTERM. Keep it below the pod's termination grace period
	// (Knative sets that to the Service's timeoutSeconds).
	DrainTimeout time.Duration `env:"DRAIN_TIMEOUT, default=20s"`
	// DrainDelay is how long readiness reports failure before the listener
	// closes, so the load balancer stops routing new calls first.
	DrainDelay time.Duration `env:"DRAIN_DELAY, default=0s"`

	Backends Backends
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
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Addr is the listen address.
func (c *Config) Addr() string {
	return net.JoinHostPort(c.ListenHost, fmt.Sprint(c.Port))
}

func (c *Config) validate() error {
	switch {
	case c.Port < 1 || c.Port > 65535:
		return &Error{"PORT", fmt.Sprintf("%d is not a TCP port (1-65535)", c.Port)}
	case c.ListenHost != "" && net.ParseIP(c.ListenHost) == nil && c.ListenHost != "localhost":
		return &Error{"LISTEN_HOST", fmt.Sprintf("%q is not an IP address or localhost", c.ListenHost)}
	case !validLevel(c.LogLevel):
		return &Error{"LOG_LEVEL", fmt.Sprintf("%q is not one of debug, info, warn, error", c.LogLevel)}
	case c.MaxBodyBytes < 1024 || c.MaxBodyBytes > 64<<20:
		return &Error{"MAX_BODY_BYTES", fmt.Sprintf("%d is outside 1024..67108864", c.MaxBodyBytes)}
	case c.DrainTimeout <= 0 || c.DrainTimeout > 10*time.Minute:
		return &Error{"DRAIN_TIMEOUT", fmt.Sprintf("%s is outside (0, 10m]", c.DrainTimeout)}
	case c.DrainDelay < 0 || c.DrainDelay >= c.DrainTimeout:
		return &Error{"DRAIN_DELAY", fmt.Sprintf("%s must be >= 0 and below DRAIN_TIMEOUT", c.DrainDelay)}
	case c.Backends.Timeout <= 0 || c.Backends.Timeout > time.Minute:
		return &Error{"BACKEND_TIMEOUT", fmt.Sprintf("%s is outside (0, 1m]", c.Backends.Timeout)}
	}
	if c.PublicURL != "" {
		if err := checkURL(c.PublicURL, true); err != nil {
			return &Error{"PUBLIC_URL", err.Error()}
		}
	}
	for name, u := range map[string]string{
		"PORTFOLIO_URL": c.Backends.PortfolioURL,
		"TRADE_URL":     c.Backends.TradeURL,
		"RISK_URL":      c.Backends.RiskURL,
	} {
		if u != "" {
			if err := checkURL(u, false); err != nil {
				return &Error{name, err.Error()}
			}
		}
	}
	for _, o := range c.AllowedOrigins {
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return &Error{"ALLOWED_ORIGINS", fmt.Sprintf("%q is not an origin like https://host[:port]", o)}
		}
	}
	for _, h := range c.AllowedHosts {
		if h == "" || strings.ContainsAny(h, "/ *") {
			return &Error{"ALLOWED_HOSTS", fmt.Sprintf("%q is not a host name (use .example.com for a domain)", h)}
		}
	}
	return nil
}

func checkURL(raw string, https bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("%q is not an absolute http(s) URL", raw)
	}
	if https && u.Scheme != "https" && !isLoopbackHost(u.Hostname()) {
		return fmt.Errorf("%q must use https (http only for loopback)", raw)
	}
	return nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
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
	field, cause, ok := strings.Cut(err.Error(), ": ")
	if !ok {
		return fmt.Errorf("config: %w", err)
	}
	if name := envName(reflect.TypeFor[Config](), field); name != "" {
		return &Error{name, cause}
	}
	if errors.Is(err, envconfig.ErrMissingRequired) {
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
