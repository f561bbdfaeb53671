package app

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/portfolio-mcp/portfolio-mcp/config"
	"github.com/portfolio-mcp/portfolio-mcp/internal/console"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/httpserver"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/secrets"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
)

// Console secrets (in SECRETS_DIR).
const (
	secretConsoleCookie = secrets.ConsoleCookieKey
	secretConsoleClient = "console-client-secret" // optional: a confidential console client
)

// newConsole assembles the approvals console: OIDC sign-in at the server's
// issuer (its access tokens checked by the same verifier as /mcp's), or
// the laptop personas when the server runs unauthenticated. close stops
// the ID-token verifier.
func newConsole(cfg *config.Config, gov *security, svc *trading.Service, kill *halt.Switch, secret func(string) ([]byte, error), log *slog.Logger) (h http.Handler, close func(), err error) {
	key, err := consoleKey(cfg, secret, log)
	if err != nil {
		return nil, nil, err
	}
	sessions, err := console.NewSessions(key, nil)
	if err != nil {
		return nil, nil, &config.Error{Var: "SECRETS_DIR", Msg: err.Error()}
	}
	o := console.Options{
		Service: svc, Sessions: sessions, ApproveScope: cfg.Auth.ScopeApprove, ApproverClients: cfg.Trading.ApproverClients,
		Halt: kill, HaltScope: cfg.Auth.ScopeHalt,
		SessionTTL: cfg.Console.SessionTTL, Mode: cfg.Trading.Mode, Limit: gov.approveBudget, Audit: gov.auditor.RecordOperation, Logger: log,
	}
	close = func() {}
	if gov.verifier == nil {
		o.Personas = console.DevPersonas(cfg.Auth.ScopeRead, cfg.Auth.ScopeTrade, cfg.Auth.ScopeApprove, cfg.Auth.ScopeHalt)
		o.PersonaKey = cfg.Console.PersonaKey
		if o.PersonaKey == "" {
			o.PersonaKey = rand.Text()
		}
		log.Warn("approvals console with laptop personas; sign in at http://" + cfg.Addr() + "/console/signin?key=" + o.PersonaKey)
	} else {
		id, err := oauth.NewVerifier(oauth.Options{
			Issuer: cfg.Auth.Issuer, Audience: cfg.Console.ClientID, Algorithms: cfg.Auth.Algorithms,
			ClockSkew: cfg.Auth.ClockSkew, EntitlementsClaim: cfg.Auth.EntitlementsClaim, Logger: log, CacheTTL: -1, TracerProvider: gov.tracer,
		})
		if err != nil {
			return nil, nil, &config.Error{Var: "OAUTH_ISSUER", Msg: err.Error()}
		}
		close = id.Close
		clientSecret, _ := secret(secretConsoleClient)
		o.OIDC = &console.OIDC{
			Issuer: cfg.Auth.Issuer, ClientID: cfg.Console.ClientID, ClientSecret: string(bytes.TrimSpace(clientSecret)),
			RedirectURL: cfg.ConsoleRedirectURL(), Resource: cfg.ResourceURL(),
			Scopes: []string{cfg.Auth.ScopeRead, cfg.Auth.ScopeApprove, cfg.Auth.ScopeHalt}, Access: gov.verifier, ID: id,
		}
	}
	c, err := console.New(o)
	if err != nil {
		close()
		return nil, nil, err
	}
	return c.Handler(), close, nil
}

// consoleKey is the cookie key: the console-cookie-key secret, required
// with an issuer (every replica must open every other's cookies); on a
// laptop run without it, a random key for this one process.
func consoleKey(cfg *config.Config, secret func(string) ([]byte, error), log *slog.Logger) ([]byte, error) {
	k, err := secret(secretConsoleCookie)
	switch {
	case err == nil && len(k) >= 32:
		return k, nil
	case cfg.Auth.Issuer != "" && err != nil:
		return nil, &config.Error{Var: "SECRETS_DIR", Msg: "the secret " + secretConsoleCookie + " is missing: the approvals console (CONSOLE_CLIENT_ID) needs it, at least 32 random bytes, the same on every replica"}
	case cfg.Auth.Issuer != "":
		return nil, &config.Error{Var: "SECRETS_DIR", Msg: fmt.Sprintf("the secret %s is %d bytes; it must be at least 32", secretConsoleCookie, len(k))}
	}
	log.Warn("secret not configured; using a random per-process key (development only)", "secret", secretConsoleCookie)
	k = make([]byte, 32)
	rand.Read(k)
	return k, nil
}

// consoleEdge is the console's HTTP path: request id, body limit and the
// Host/Origin guard (cross-origin form posts refused), as every route.
func consoleEdge(cfg *config.Config, guard func(http.Handler) http.Handler, h http.Handler) http.Handler {
	return httpserver.Chain(h, httpserver.RequestID, httpserver.LimitBody(cfg.MaxBodyBytes), guard)
}
