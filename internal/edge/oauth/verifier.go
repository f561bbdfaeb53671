// Package oauth makes the server an OAuth 2.1 resource server as the MCP
// authorization spec describes it: bearer JWTs are verified against the
// issuer's JWKS (found through the issuer's metadata, cached, refreshed on
// rotation), the issuer, audience (this server's resource URL), expiry and
// algorithm are checked, and the token becomes a principal.Principal in the
// request context. It also serves the RFC 9728 protected resource metadata
// that tells clients where to get a token.
//
// Libraries: github.com/golang-jwt/jwt/v5 parses and validates the JWT (it
// pins algorithms with WithValidMethods, refuses "none", insists on key types
// that match the algorithm, and applies one leeway to exp, nbf and iat), and
// github.com/MicahParks/keyfunc/v3 (on github.com/MicahParks/jwkset) keeps
// the JWKS: fetched once, refreshed periodically and, rate-limited, when a
// token names an unknown key id, so a rotation is picked up without a
// restart and a flood of made-up key ids cannot hammer the issuer. The HTTP
// middleware (middleware.go) answers refusals per RFC 6750 and hands the
// verified token to the go-sdk's auth.RequireBearerToken for the SDK.
package oauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry/redact"
)

// Options configure a Verifier.
type Options struct {
	// Issuer is the authorization server's issuer identifier.
	Issuer string
	// Audience is the required "aud": this server's resource URL.
	Audience string
	// Algorithms are the accepted JWS algorithms; asymmetric only.
	Algorithms []string
	// ClockSkew is tolerated on exp, nbf and iat.
	ClockSkew time.Duration
	// EntitlementsClaim names the claim listing the accounts a principal
	// may see and trade.
	EntitlementsClaim string
	// RefreshInterval re-reads the JWKS so removed keys stop being trusted
	// and pre-published ones are known before tokens use them. It also
	// bounds how long a caller exhausting the unknown-kid refresh (tokens
	// naming made-up key ids, which cost nothing to send) can keep a freshly
	// rotated key unknown. Default 2 minutes.
	RefreshInterval time.Duration
	// UnknownKeyInterval is the least time between two JWKS refreshes
	// caused by tokens naming an unknown key id. Default 30 seconds.
	UnknownKeyInterval time.Duration
	// CacheTTL is how long a verified token is trusted without checking its
	// signature again (never past its expiry). It bounds how long a token
	// signed by a key the issuer has withdrawn keeps working, on top of
	// RefreshInterval. Zero: 1 minute; negative: every call is verified.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached tokens (least recently used
	// are dropped first). Default 10,000.
	CacheSize int
	// HTTPClient fetches metadata and keys. Default: 5 s timeout.
	HTTPClient *http.Client
	Logger     *slog.Logger
	// TracerProvider traces the checks that are not answered from the
	// cache (nil: none).
	TracerProvider trace.TracerProvider
}

// Verifier verifies access tokens. It discovers the issuer's keys on first
// use (or Warm) and retries discovery at most every few seconds on failure.
type Verifier struct {
	tracer trace.Tracer
	opts   Options
	parser *jwt.Parser
	// life bounds the JWKS refresh goroutine; Close ends it.
	life  context.Context
	close context.CancelFunc

	// verified maps the SHA-256 of a token that passed every check to what
	// it says, until cachedToken.until; nil when caching is off.
	verified *lru.Cache[[sha256.Size]byte, cachedToken]
	now      func() time.Time
	checks   atomic.Int64 // full verifications, for tests

	mu      sync.Mutex
	keys    keyfunc.Keyfunc
	lastErr error
	retryAt time.Time
}

const (
	discoveryTimeout = 10 * time.Second
	discoveryBackoff = 5 * time.Second
)

// asymmetric are the JWS algorithms a resource server may accept: a token
// must be verifiable with the issuer's public key only.
var asymmetric = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true, "PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true, "EdDSA": true,
}

// NewVerifier returns a Verifier for o. It does no network I/O.
func NewVerifier(o Options) (*Verifier, error) {
	if o.Issuer == "" || o.Audience == "" {
		return nil, errors.New("oauth: issuer and audience are required")
	}
	if len(o.Algorithms) == 0 {
		return nil, errors.New("oauth: no algorithms configured")
	}
	for _, a := range o.Algorithms {
		if !asymmetric[a] {
			return nil, fmt.Errorf("oauth: %q is not an asymmetric JWS algorithm", a)
		}
	}
	if o.EntitlementsClaim == "" {
		o.EntitlementsClaim = "accounts"
	}
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = 2 * time.Minute
	}
	if o.UnknownKeyInterval <= 0 {
		o.UnknownKeyInterval = 30 * time.Second
	}
	if o.CacheTTL == 0 {
		o.CacheTTL = time.Minute
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 10_000
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	// RFC 9728 resource identifiers are compared as strings; the only
	// relaxation is the trailing slash, which issuers add or drop freely.
	aud := strings.TrimSuffix(o.Audience, "/")
	tp := o.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	v := &Verifier{
		tracer: tp.Tracer("github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth"),
		opts:   o,
		parser: jwt.NewParser(
			jwt.WithValidMethods(o.Algorithms),
			jwt.WithIssuer(o.Issuer),
			jwt.WithAudience(aud, aud+"/"),
			jwt.WithLeeway(o.ClockSkew),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithStrictDecoding(),
		),
	}
	v.now = time.Now
	if o.CacheTTL > 0 {
		var err error
		if v.verified, err = lru.New[[sha256.Size]byte, cachedToken](o.CacheSize); err != nil {
			return nil, fmt.Errorf("oauth: token cache: %w", err)
		}
	}
	v.life, v.close = context.WithCancel(context.Background())
	return v, nil
}

// Warm discovers the issuer's keys now rather than on the first request.
func (v *Verifier) Warm(ctx context.Context) error {
	_, err := v.keySet(ctx)
	return err
}

// Close stops the JWKS refresh.
func (v *Verifier) Close() { v.close() }

// keySet returns the JWKS cache, discovering it on first use.
func (v *Verifier) keySet(ctx context.Context) (keyfunc.Keyfunc, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.keys != nil {
		return v.keys, nil
	}
	if time.Now().Before(v.retryAt) {
		return nil, v.lastErr
	}
	// The first caller's cancellation must not fail discovery for everyone.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), discoveryTimeout)
	defer cancel()
	keys, err := v.discoverKeys(dctx)
	if err != nil {
		v.lastErr, v.retryAt = err, time.Now().Add(discoveryBackoff)
		v.opts.Logger.ErrorContext(ctx, "OAuth issuer discovery failed", "issuer", v.opts.Issuer, "error", err)
		return nil, err
	}
	v.keys = keys
	return keys, nil
}

func (v *Verifier) discoverKeys(ctx context.Context) (keyfunc.Keyfunc, error) {
	md, err := discover(ctx, v.opts.HTTPClient, v.opts.Issuer)
	if err != nil {
		return nil, err
	}
	noStartWithoutKeys := false
	log := v.opts.Logger
	keys, err := keyfunc.NewDefaultOverrideCtx(v.life, []string{md.JWKSURI}, keyfunc.Override{
		Client:                    v.opts.HTTPClient,
		HTTPTimeout:               v.opts.HTTPClient.Timeout,
		NoErrorReturnFirstHTTPReq: &noStartWithoutKeys,
		RefreshInterval:           v.opts.RefreshInterval,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(v.opts.UnknownKeyInterval), 1),
		// A request waits for the unknown-kid limiter only if a refresh is
		// due within a second (rate.Limiter refuses at once a wait that
		// would outlast the deadline); otherwise the token is refused now.
		RateLimitWaitMax: time.Second,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(ctx context.Context, err error) {
				log.WarnContext(ctx, "JWKS refresh failed", "jwks_uri", u, "error", err)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("loading the issuer's JWKS: %w", err)
	}
	return keys, nil
}

// Token is what a verified access token says.
type Token struct {
	Principal principal.Principal
	Expiry    time.Time
	// Nonce is the OpenID Connect nonce of an ID token ("" otherwise).
	Nonce string
	// info is the token as the go-sdk's auth.TokenInfo, made once when the
	// token is verified and shared, read-only, by every request the cache
	// answers.
	info *auth.TokenInfo
}

// cachedToken is a verified token, the key that verified it and the
// instant it must be checked again.
type cachedToken struct {
	token Token
	signingKey
	until time.Time
}

// signingKey is the key a token was verified with, and the token's alg.
type signingKey struct {
	kid, alg string
	key      crypto.PublicKey
}

// Verify checks raw and returns its principal. A token that fails any
// check yields an error wrapping auth.ErrInvalidToken whose text names the
// failed check and nothing from the token; an issuer that cannot be reached
// yields another error (the middleware answers 503, not 401).
//
// An agent sends the same token on every call, and checking its signature
// is most of the cost of authentication, so a token that passed is
// remembered (by its hash, never the token itself) for CacheTTL, never past
// its expiry plus the clock skew the parser allows, and only while the
// issuer's current key set still holds the very key that verified it: a
// withdrawn or replaced key ends the cached entries it signed as soon as
// the key set is refreshed, as it would end the tokens themselves.
// Refusals are not cached.
func (v *Verifier) Verify(ctx context.Context, raw string) (Token, error) {
	var hash [sha256.Size]byte
	if v.verified != nil {
		hash = sha256.Sum256([]byte(raw))
		if c, ok := v.verified.Get(hash); ok {
			if v.now().Before(c.until) && v.stillPublished(ctx, c) {
				return c.token, nil
			}
			v.verified.Remove(hash)
		}
	}
	ctx, span := v.tracer.Start(ctx, "oauth.verify_token")
	t, used, err := v.verify(ctx, raw)
	if err != nil {
		span.SetStatus(codes.Error, "token rejected")
	}
	span.End()
	if err == nil && v.verified != nil && used.kid != "" {
		until := v.now().Add(v.opts.CacheTTL)
		if last := t.Expiry.Add(v.opts.ClockSkew); last.Before(until) {
			until = last
		}
		v.verified.Add(hash, cachedToken{token: t, signingKey: used, until: until})
	}
	return t, err
}

// stillPublished reports whether the issuer's key set holds c's key under
// its key id, still for c's algorithm (the checks keyfunc makes on a key).
func (v *Verifier) stillPublished(ctx context.Context, c cachedToken) bool {
	keys, err := v.keySet(ctx)
	if err != nil {
		return false
	}
	jwk, err := keys.Storage().KeyRead(ctx, c.kid)
	if err != nil {
		return false
	}
	if a := jwk.Marshal().ALG.String(); a != "" && a != c.alg {
		return false
	}
	pub := jwk.Key()
	if sameKeyObject(pub, c.key) {
		return true // the very key parsed from the set that verified the token
	}
	if pk, ok := pub.(interface{ Public() crypto.PublicKey }); ok {
		pub = pk.Public()
	}
	eq, ok := c.key.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(pub)
}

// sameKeyObject reports whether a and b are one parsed key: until the key
// set is refreshed, every cache hit finds the key that verified the token
// itself, and comparing keys by value (rsa.PublicKey.Equal copies both
// moduli) on every call is then wasted. Key types that are not pointers
// are compared by value.
func sameKeyObject(a, b crypto.PublicKey) bool {
	switch a := a.(type) {
	case *rsa.PublicKey:
		b, ok := b.(*rsa.PublicKey)
		return ok && a == b
	case *ecdsa.PublicKey:
		b, ok := b.(*ecdsa.PublicKey)
		return ok && a == b
	}
	return false
}

// verify checks raw against the issuer's keys and every claim rule, and
// says which key verified it.
func (v *Verifier) verify(ctx context.Context, raw string) (Token, signingKey, error) {
	v.checks.Add(1)
	var used signingKey
	keys, err := v.keySet(ctx)
	if err != nil {
		return Token{}, used, errors.New("token verification is temporarily unavailable")
	}
	claims := jwt.MapClaims{}
	keyOf := keys.KeyfuncCtx(ctx)
	record := func(t *jwt.Token) (any, error) {
		k, err := keyOf(t)
		if err == nil {
			used.kid, _ = t.Header["kid"].(string)
			used.alg, _ = t.Header["alg"].(string)
			used.key = k
		}
		return k, err
	}
	if _, err := v.parser.ParseWithClaims(raw, claims, record); err != nil {
		reason := rejection(err)
		// The error may quote the unsigned header (a kid): cut and redacted.
		v.opts.Logger.InfoContext(ctx, "bearer token rejected", "reason", reason, "error", redact.Text(err.Error(), 256))
		return Token{}, used, fmt.Errorf("%w: %s", auth.ErrInvalidToken, reason)
	}
	p, err := v.principal(claims)
	if err != nil {
		v.opts.Logger.InfoContext(ctx, "bearer token rejected", "reason", err.Error())
		return Token{}, used, fmt.Errorf("%w: %s", auth.ErrInvalidToken, err)
	}
	exp, _ := claims.GetExpirationTime() // required and validated by the parser
	t := Token{Principal: p, Expiry: exp.Time, Nonce: str(claims["nonce"])}
	t.info = tokenInfo(t)
	return t, used, nil
}

// rejection names the failed check, safe to show the client.
func rejection(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{
		{jwt.ErrTokenMalformed, "malformed"},
		{jwt.ErrTokenExpired, "expired"},
		{jwt.ErrTokenNotValidYet, "not valid yet"},
		{jwt.ErrTokenUsedBeforeIssued, "issued in the future"},
		{jwt.ErrTokenInvalidIssuer, "wrong issuer"},
		{jwt.ErrTokenInvalidAudience, "wrong audience"},
		{jwt.ErrTokenRequiredClaimMissing, "a required claim is missing"},
		{jwt.ErrTokenSignatureInvalid, "bad signature"},
		{jwt.ErrTokenUnverifiable, "signing key or algorithm not accepted"},
	} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "invalid"
}

// principal maps verified claims: sub is the identity; client_id (RFC 9068)
// or azp the client; scope (space-separated, RFC 9068) or scp (string or
// list, as some issuers send) the scopes; the entitlements claim (a list,
// or a space- or comma-separated string) the accounts.
func (v *Verifier) principal(c jwt.MapClaims) (principal.Principal, error) {
	sub, _ := c.GetSubject()
	if sub == "" {
		return principal.Principal{}, errors.New("missing subject")
	}
	p := principal.Principal{Subject: sub}
	for _, k := range []string{"client_id", "azp"} {
		if s, ok := c[k].(string); ok && s != "" {
			p.ClientID = s
			break
		}
	}
	p.AuthorizedParty = str(c["azp"])
	if act, ok := c["act"].(map[string]any); ok {
		p.Actor = str(act["sub"])
	}
	p.Scopes = append(strings.Fields(str(c["scope"])), list(c["scp"])...)
	for _, a := range list(c[v.opts.EntitlementsClaim]) {
		if a == principal.AllAccounts || principal.ValidAccountID(a) {
			p.Accounts = append(p.Accounts, a)
		}
	}
	return p, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// list reads a claim that is a JSON array of strings or one string of
// space- or comma-separated values.
func list(v any) []string {
	switch v := v.(type) {
	case string:
		return strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' })
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
