package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"

	"github.com/portfolio-mcp/portfolio-mcp/config"
)

func TestDefaultsAreValid(t *testing.T) {
	c, err := config.LoadFrom(t.Context(), envconfig.MapLookuper(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr() != "127.0.0.1:8080" || c.Trading.Mode != "paper" || c.Auth.ScopeRead != "portfolio:read" {
		t.Errorf("defaults: %+v", c)
	}
}

// TestBadValuesNameTheVariable: every rejection names the variable an
// operator must fix.
func TestBadValuesNameTheVariable(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"PORT": "http"}, "PORT"},
		{map[string]string{"PORT": "70000"}, "PORT"},
		{map[string]string{"LISTEN_HOST": "example.com"}, "LISTEN_HOST"},
		{map[string]string{"LOG_LEVEL": "trace"}, "LOG_LEVEL"},
		{map[string]string{"DRAIN_TIMEOUT": "0s"}, "DRAIN_TIMEOUT"},
		{map[string]string{"DRAIN_DELAY": "30s"}, "DRAIN_DELAY"},
		{map[string]string{"MAX_BODY_BYTES": "10"}, "MAX_BODY_BYTES"},
		{map[string]string{"PUBLIC_URL": "http://mcp.example.com/mcp"}, "PUBLIC_URL"},
		{map[string]string{"ALLOWED_ORIGINS": "example.com"}, "ALLOWED_ORIGINS"},
		{map[string]string{"ALLOWED_HOSTS": "*.example.com"}, "ALLOWED_HOSTS"},
		{map[string]string{"TRADE_URL": "trade:8080"}, "TRADE_URL"},
		{map[string]string{"BACKEND_TIMEOUT": "2m"}, "BACKEND_TIMEOUT"},
		{map[string]string{"LISTEN_HOST": "0.0.0.0"}, "OAUTH_ISSUER"},
		{map[string]string{"OAUTH_ISSUER": "http://issuer.example.com"}, "OAUTH_ISSUER"},
		{map[string]string{"OAUTH_ISSUER": "https://issuer.example.com"}, "PUBLIC_URL"},
		{map[string]string{"OAUTH_ISSUER": "https://issuer.example.com", "OAUTH_AUDIENCE": "api://portfolio"}, "PUBLIC_URL"},
		{map[string]string{"PUBLIC_URL": "http://mcp.localhost/mcp"}, "PUBLIC_URL"},
		{map[string]string{"OAUTH_ALGORITHMS": "HS256"}, "OAUTH_ALGORITHMS"},
		{map[string]string{"OAUTH_CLOCK_SKEW": "6m"}, "OAUTH_CLOCK_SKEW"},
		{map[string]string{"OAUTH_TOKEN_CACHE_TTL": "11m"}, "OAUTH_TOKEN_CACHE_TTL"},
		{map[string]string{"OAUTH_TOKEN_CACHE_TTL": "-1s"}, "OAUTH_TOKEN_CACHE_TTL"},
		{map[string]string{"MAX_PENDING_APPROVALS": "0"}, "MAX_PENDING_APPROVALS"},
		{map[string]string{"RATE_READ_PER_SECOND": "0"}, "RATE_READ_PER_SECOND"},
		{map[string]string{"REDIS_URL": "http://redis:6379"}, "REDIS_URL"},
		{map[string]string{"K_SINK": "broker"}, "K_SINK"},
		{map[string]string{"TRADING_MODE": "real"}, "TRADING_MODE"},
		{map[string]string{"TRADING_MODE": "live"}, "OAUTH_ISSUER"},
		{liveWithout("APPROVER_CLIENT_IDS"), "APPROVER_CLIENT_IDS"},
		{liveWithout("PORTFOLIO_URL", "TRADE_URL", "RISK_URL"), "PORTFOLIO_URL"},
		{liveWithout("REDIS_URL"), "REDIS_URL"},
		{liveWithout("K_SINK"), "K_SINK"},
		{map[string]string{"APPROVER_CLIENT_IDS": " "}, "APPROVER_CLIENT_IDS"},
		{map[string]string{"APPROVER_CLIENT_IDS": "console,"}, "APPROVER_CLIENT_IDS"},
		{map[string]string{"TRADING_MODE": "live", "ALLOW_UNAUTHENTICATED": "true"}, "ALLOW_UNAUTHENTICATED"},
		{map[string]string{"MAX_POSITION_WEIGHT": "1.5"}, "MAX_POSITION_WEIGHT"},
		{map[string]string{"MARKET_HOLIDAYS": "2026-13-01"}, "MARKET_HOLIDAYS"},
		{map[string]string{"EXECUTION_LEASE": "1s"}, "EXECUTION_LEASE"},
		{map[string]string{"APPROVAL_TTL": "10s"}, "APPROVAL_TTL"},
	}
	for _, tt := range tests {
		_, err := config.LoadFrom(t.Context(), envconfig.MapLookuper(tt.env))
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Var != tt.want {
			t.Errorf("%v: error %v, want one naming %s", tt.env, err, tt.want)
		}
	}
}

// liveWithout is a complete live configuration less the variables named.
func liveWithout(names ...string) map[string]string {
	env := map[string]string{
		"TRADING_MODE": "live", "OAUTH_ISSUER": "https://issuer.example.com", "PUBLIC_URL": "https://mcp.example.com/mcp",
		"APPROVER_CLIENT_IDS": "console", "REDIS_URL": "rediss://redis.example.com:6379",
		"PORTFOLIO_URL": "https://portfolio.example.com", "TRADE_URL": "https://trade.example.com", "RISK_URL": "https://risk.example.com",
		"K_SINK": "http://broker-ingress.knative-eventing.svc.cluster.local/portfolio-mcp/audit",
	}
	for _, n := range names {
		delete(env, n)
	}
	return env
}

// TestLiveNeedsTheFirmsServicesSharedStateAndTheArchive: live trading is
// refused on the demo backends (fills that reach no market), without Redis
// (state per replica, lost at scale to zero) and without the audit sink;
// with all of them it loads.
func TestLiveNeedsTheFirmsServicesSharedStateAndTheArchive(t *testing.T) {
	if _, err := config.LoadFrom(t.Context(), envconfig.MapLookuper(liveWithout())); err != nil {
		t.Fatalf("a complete live configuration: %v", err)
	}
}

func TestEveryBadVariableAtOnce(t *testing.T) {
	_, err := config.LoadFrom(t.Context(), envconfig.MapLookuper(map[string]string{
		"LOG_LEVEL": "loud", "RATE_TRADE_BURST": "0", "MAX_POSITION_WEIGHT": "2", "SCOPE_TRADE": "",
	}))
	for _, name := range []string{"LOG_LEVEL", "RATE_TRADE_BURST", "MAX_POSITION_WEIGHT"} {
		if err == nil || !strings.Contains(err.Error(), "config: "+name+":") {
			t.Errorf("error %v does not name %s", err, name)
		}
	}
}

// TestMarketHoursDefault: a laptop on the demo backends can try an order at
// any hour; a deployment on real backends is strict unless told otherwise.
func TestMarketHoursDefault(t *testing.T) {
	real := map[string]string{"PORTFOLIO_URL": "https://p.internal", "TRADE_URL": "https://t.internal", "RISK_URL": "https://r.internal"}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"demo backends", map[string]string{}, false},
		{"demo backends, enforced", map[string]string{"ENFORCE_MARKET_HOURS": "true"}, true},
		{"real backends", real, true},
		{"real backends, switched off", map[string]string{"PORTFOLIO_URL": "https://p.internal", "TRADE_URL": "https://t.internal", "RISK_URL": "https://r.internal", "ENFORCE_MARKET_HOURS": "false"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.LoadFrom(t.Context(), envconfig.MapLookuper(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.MarketHoursEnforced(); got != tc.want {
				t.Errorf("MarketHoursEnforced() = %v, want %v", got, tc.want)
			}
		})
	}
}
