// Package principal is who is calling: the identity, scopes and account
// entitlements established by authentication and read by every policy
// decision (scope checks, entitlements, four eyes, audit).
package principal

import (
	"context"
	"slices"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/ident"
)

// AllAccounts in Accounts entitles a principal to every account.
const AllAccounts = "*"

// Principal is an authenticated caller.
type Principal struct {
	// Subject is the stable identity (the token's "sub", qualified by the
	// issuer where several issuers are trusted).
	Subject string
	// ClientID is the OAuth client the token was issued to, if known.
	ClientID string
	// AuthorizedParty is the token's azp claim, and Actor the subject of
	// its act claim (RFC 8693 delegation: who acts for Subject), when the
	// token carries them: recorded in each order's provenance.
	AuthorizedParty string
	Actor           string
	Scopes          []string
	// Accounts the principal may see and trade; AllAccounts for all.
	Accounts []string
}

// ValidAccountID reports whether id has the shape of an account id: 1 to
// 64 ASCII letters, digits, '.', '_' or '-', starting with a letter or
// digit (the tools' input schemas carry the same rule as a pattern).
func ValidAccountID(id string) bool { return ident.Valid(id, 64) }

// HasScope reports whether p holds scope.
func (p Principal) HasScope(scope string) bool { return slices.Contains(p.Scopes, scope) }

// Entitled reports whether p may see or trade account.
func (p Principal) Entitled(account string) bool {
	return slices.Contains(p.Accounts, AllAccounts) || slices.Contains(p.Accounts, account)
}

type key struct{}

// With returns ctx carrying p.
func With(ctx context.Context, p Principal) context.Context { return context.WithValue(ctx, key{}, p) }

// From returns the principal in ctx.
func From(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(key{}).(Principal)
	return p, ok
}
