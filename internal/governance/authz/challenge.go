package authz

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
)

// Recorder records a call refused at the HTTP layer (the audit trail).
type Recorder interface {
	Refused(ctx context.Context, c *call.Call, class catalog.Class, o outcome.Outcome, reason string)
}

// Challenge answers a tools/call, resources/read or completion/complete
// whose scope the principal lacks with HTTP 403 and
//
//	WWW-Authenticate: Bearer error="insufficient_scope", scope="trade:write",
//	  resource_metadata="https://.../.well-known/oauth-protected-resource/mcp", ...
//
// before MCP runs: the runtime scope challenge of the MCP authorization spec
// (2025-11-25), which clients answer with step-up authorization. The scope
// parameter names what challengeScope says. It reads the call parsed at the edge (call.From);
// anything else passes on to the MCP middleware, which enforces the same
// policy authoritatively.
func (p *Policy) Challenge(resourceMetadataURL string, rec Recorder) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			pr, ok := principal.From(r.Context())
			c := call.From(r.Context())
			if !ok || c == nil {
				next.ServeHTTP(w, r)
				return
			}
			scope, class, known := p.Scope(c)
			if !known || pr.HasScope(scope) {
				next.ServeHTTP(w, r)
				return
			}
			rec.Refused(r.Context(), c, class, outcome.Denied, "insufficient_scope: "+scope)
			desc := fmt.Sprintf("%s requires the scope %s", what(c), scope)
			ask := p.challengeScope(pr, c, scope)
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(
				`Bearer error="insufficient_scope", scope=%q, resource_metadata=%q, error_description="%s"`,
				ask, resourceMetadataURL, descriptionText(fmt.Sprintf("%s requires the scope %s", whatPlain(c), scope))))
			call.WriteError(w, http.StatusForbidden, c.ID, CodeInsufficientScope,
				"insufficient scope: "+desc+"; obtain a token that grants it",
				map[string]string{"error": "insufficient_scope", "scope": ask})
		})
	}
}

// challengeScope is the scope a challenge for call c names, need being the
// one the operation lacks. From 2026-07-28 on it is need alone: the client
// adds it to what it holds (RFC 6750 section 3.1, as that revision says).
// A client of an earlier revision re-authorizes with exactly the scope the
// challenge names, and the 2025-11-25 revision asks the server to include
// the scopes already granted, lest the client lose them: so for it, every
// scope the token holds comes too (trade:halt for this server's /halts, an
// identity provider's own), then need.
func (p *Policy) challengeScope(pr principal.Principal, c *call.Call, need string) string {
	if c.ProtocolVersion >= "2026-07-28" {
		return need
	}
	var scopes []string
	for _, s := range append(slices.Clone(pr.Scopes), need) {
		if scopeToken(s) && !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	return strings.Join(scopes, " ")
}

// scopeToken reports whether s is a scope token as RFC 6750 (section 3)
// allows in a challenge: printable ASCII but for the space, '"' and '\'.
// A token's odd scope string is left out rather than echoed.
func scopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// descriptionText is s as RFC 6750 section 3 allows an error_description:
// printable ASCII without '"' or '\\' (a strict client rejects the whole
// challenge otherwise, and never steps up).
func descriptionText(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}
