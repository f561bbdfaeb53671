package oauth

import (
	"context"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/auth"

	"github.com/portfolio-mcp/portfolio-mcp/principal"
)

// LocalDeveloper is the principal of an unauthenticated laptop run: every
// scope, every account.
const LocalDeveloper = "local-developer"

const principalExtra = "principal"

// Middleware requires a valid bearer token on every request (the go-sdk's
// auth.RequireBearerToken: 401 with WWW-Authenticate: Bearer
// resource_metadata="..." when it is missing or invalid) and puts the
// token's principal into the request context for the policy middleware.
func (v *Verifier) Middleware(resourceMetadataURL string) func(http.Handler) http.Handler {
	require := auth.RequireBearerToken(v.tokenVerifier, &auth.RequireBearerTokenOptions{
		ResourceMetadataURL: resourceMetadataURL,
		ClockSkew:           v.opts.ClockSkew,
	})
	return func(next http.Handler) http.Handler {
		return require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ti := auth.TokenInfoFromContext(r.Context())
			p, ok := ti.Extra[principalExtra].(principal.Principal)
			if !ok { // cannot happen: tokenVerifier always sets it
				http.Error(w, "internal error", http.StatusInternalServerError)
				return
			}
			next.ServeHTTP(w, r.WithContext(principal.With(r.Context(), p)))
		}))
	}
}

func (v *Verifier) tokenVerifier(ctx context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
	t, err := v.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	return &auth.TokenInfo{
		Scopes:     t.Principal.Scopes,
		Expiration: t.Expiry,
		UserID:     t.Principal.Subject,
		Extra:      map[string]any{principalExtra: t.Principal},
	}, nil
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
