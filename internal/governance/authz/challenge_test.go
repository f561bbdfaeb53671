package authz

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
)

type nopRec struct{}

func (nopRec) Refused(context.Context, *call.Call, catalog.Class, outcome.Outcome, string) {}

// RFC 6750 §3: scope = scope-token *( SP scope-token ), scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
var scopeParam = regexp.MustCompile(`scope="([\x21\x23-\x5B\x5D-\x7E]+(?: [\x21\x23-\x5B\x5D-\x7E]+)*)", resource_metadata=`)

// TestChallengeScopeSyntax: the scopes a pre-2026-07-28 challenge echoes
// from the token are valid RFC 6750 scope tokens; odd ones (a quote, a
// backslash, a control character, non-ASCII, a space) are left out.
func TestChallengeScopeSyntax(t *testing.T) {
	cat := catalog.New()
	cat.Add(catalog.Tool{Name: "place_order", Class: catalog.Trade})
	p := New(cat, catalog.Scopes{Read: "portfolio:read", Trade: "trade:write", Approve: "trade:approve"})
	for _, odd := range []string{`weird"scope`, `back\slash`, "ctl\x01", "caf\u00e9"} {
		pr := principal.Principal{Subject: "alice", Scopes: []string{"portfolio:read", odd}}
		c := call.FromTool("place_order", []byte(`{}`), "")
		c.ProtocolVersion = "2025-11-25"
		r := httptest.NewRequest("POST", "/mcp", nil)
		r = r.WithContext(call.With(principal.With(r.Context(), pr), c))
		w := httptest.NewRecorder()
		p.Challenge("https://x/.well-known/oauth-protected-resource/mcp", nopRec{})(http.NotFoundHandler()).ServeHTTP(w, r)
		if h := w.Header().Get("WWW-Authenticate"); !scopeParam.MatchString(h) {
			t.Errorf("token scope %q: challenge scope is not an RFC 6750 scope list: %s", odd, h)
		}
	}
}
