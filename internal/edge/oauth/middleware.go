package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/auth"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
)

// LocalDeveloper is the principal of an unauthenticated laptop run: every
// scope, every account.
const LocalDeveloper = "local-developer"

// Middleware requires a valid bearer token on every request and puts the
// token's principal into the request context for the policy middleware
// (and the go-sdk's auth.TokenInfo where the SDK looks for it). Refusals
// follow RFC 6750 section 3 and the MCP authorization spec:
//
//   - no bearer token: 401, WWW-Authenticate: Bearer resource_metadata="..."
//     (no error code, as the RFC asks for a request without credentials);
//   - a token that fails any check: 401 with error="invalid_token" and an
//     error_description naming the failed check, never the token;
//   - the issuer's keys cannot be had: 503 with Retry-After, since the token
//     may be fine and the client should retry, not re-authenticate.
func (v *Verifier) Middleware(resourceMetadataURL string) func(http.Handler) http.Handler {
	// The go-sdk's middleware stores the token info under its own context
	// key; it runs after the checks below and is handed their result.
	attach := auth.RequireBearerToken(func(ctx context.Context, _ string, _ *http.Request) (*auth.TokenInfo, error) {
		ti, ok := ctx.Value(verifiedKey{}).(*auth.TokenInfo)
		if !ok { // cannot happen: only reached through the checks below
			return nil, errors.New("token not verified")
		}
		return ti, nil
	}, &auth.RequireBearerTokenOptions{ClockSkew: v.opts.ClockSkew, ResourceMetadataURL: resourceMetadataURL})
	md := fmt.Sprintf("resource_metadata=%q", resourceMetadataURL)
	return func(next http.Handler) http.Handler {
		inner := attach(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			raw, ok := bearerToken(r)
			if !ok {
				w.Header().Set("WWW-Authenticate", "Bearer "+md)
				http.Error(w, "no bearer token", http.StatusUnauthorized)
				return
			}
			t, err := v.Verify(r.Context(), raw)
			switch {
			case errors.Is(err, auth.ErrInvalidToken):
				reason := strings.TrimPrefix(err.Error(), auth.ErrInvalidToken.Error()+": ")
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer error="invalid_token", error_description=%q, %s`, reason, md))
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			case err != nil:
				w.Header().Set("Retry-After", strconv.Itoa(int(discoveryBackoff.Seconds())))
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			// One context for both: the principal for the policy, the
			// token info for the SDK's middleware to attach where the SDK
			// looks for it.
			ctx := principal.With(context.WithValue(r.Context(), verifiedKey{}, t.info), t.Principal)
			inner.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

type verifiedKey struct{}

// bearerToken is the token of an "Authorization: Bearer <token>" header
// (the scheme is case-insensitive).
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" || strings.ContainsAny(token, " \t") {
		return "", false
	}
	return token, true
}

// tokenInfo is t as the go-sdk's auth.TokenInfo.
func tokenInfo(t Token) *auth.TokenInfo {
	return &auth.TokenInfo{
		Scopes:     t.Principal.Scopes,
		Expiration: t.Expiry,
		UserID:     t.Principal.Subject,
	}
}

// Unauthenticated puts the fixed LocalDeveloper principal, holding scopes
// and every account, into each request's context. Only for a server bound to
// loopback with no issuer configured (config refuses anything else).
func Unauthenticated(scopes []string) func(http.Handler) http.Handler {
	p := principal.Principal{
		Subject:  LocalDeveloper,
		ClientID: LocalDeveloper,
		Scopes:   append([]string(nil), scopes...),
		Accounts: []string{principal.AllAccounts},
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r.WithContext(principal.With(r.Context(), p)))
		})
	}
}
