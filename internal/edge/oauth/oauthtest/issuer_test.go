package oauthtest_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
)

const (
	resourceURL = "https://mcp.example.com/mcp"
	clientID    = "approvals-console"
	callback    = "https://console.example.com/oauth/callback"
	otherURI    = "https://console.example.com/other/callback"
)

// flow is a console signing users in at a test issuer.
type flow struct {
	iss *oauthtest.Issuer
	cfg oauth2.Config
	// browser does not follow redirects, so a test reads Location.
	browser *http.Client
}

func newFlow(t *testing.T) *flow {
	t.Helper()
	iss := oauthtest.New(t)
	iss.RegisterClient(clientID, callback, otherURI)
	return &flow{
		iss: iss,
		cfg: oauth2.Config{
			ClientID: clientID,
			Endpoint: oauth2.Endpoint{
				AuthURL: iss.URL + "/authorize", TokenURL: iss.URL + "/token",
				AuthStyle: oauth2.AuthStyleInParams,
			},
			RedirectURL: callback,
			Scopes:      []string{"openid", "portfolio:read"},
		},
		browser: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
	}
}

// visit GETs u as a browser would and returns the response, closed.
func (f *flow) visit(t *testing.T, u string) *http.Response {
	t.Helper()
	resp, err := f.browser.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// redirected GETs u, expects a 302 to the callback and returns its query.
func (f *flow) redirected(t *testing.T, u string) url.Values {
	t.Helper()
	resp := f.visit(t, u)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: HTTP %d, want 302", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != callback {
		t.Fatalf("redirected to %s, want %s", got, callback)
	}
	return loc.Query()
}

// authorize runs the authorization request and returns the code.
func (f *flow) authorize(t *testing.T, state, verifier string, opts ...oauth2.AuthCodeOption) string {
	t.Helper()
	q := f.redirected(t, f.cfg.AuthCodeURL(state, append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}, opts...)...))
	if q.Get("state") != state || q.Get("code") == "" || q.Get("error") != "" {
		t.Fatalf("authorize redirected with %v, want a code and state %q", q, state)
	}
	if q.Get("iss") != f.iss.URL {
		t.Errorf("iss = %q, want %q", q.Get("iss"), f.iss.URL)
	}
	return q.Get("code")
}

func verifier(t *testing.T, iss *oauthtest.Issuer, aud string) *oauth.Verifier {
	t.Helper()
	v, err := oauth.NewVerifier(oauth.Options{
		Issuer: iss.URL, Audience: aud, Algorithms: []string{"RS256", "ES256"},
		ClockSkew: 30 * time.Second, EntitlementsClaim: "accounts",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// unverified reads a JWT's header and claims (after a Verifier passed it).
func unverified(t *testing.T, raw string) (map[string]any, jwt.MapClaims) {
	t.Helper()
	c := jwt.MapClaims{}
	tok, _, err := jwt.NewParser().ParseUnverified(raw, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Header, c
}

func TestMetadataAtBothWellKnownLocations(t *testing.T) {
	f := newFlow(t)
	f.iss.SignIn("alice", "portfolio:read trade:approve")
	var docs []map[string]any
	for _, p := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		resp, err := http.Get(f.iss.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		var md map[string]any
		err = json.NewDecoder(resp.Body).Decode(&md)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: HTTP %d, %v", p, resp.StatusCode, err)
		}
		docs = append(docs, md)
	}
	if a, b := jsonString(docs[0]), jsonString(docs[1]); a != b {
		t.Errorf("the two documents differ:\n%s\n%s", a, b)
	}
	for k, want := range map[string]any{
		"issuer":                                f.iss.URL,
		"authorization_endpoint":                f.iss.URL + "/authorize",
		"token_endpoint":                        f.iss.URL + "/token",
		"jwks_uri":                              f.iss.URL + "/jwks",
		"response_types_supported":              []string{"code"},
		"grant_types_supported":                 []string{"authorization_code"},
		"token_endpoint_auth_methods_supported": []string{"none"},
		"code_challenge_methods_supported":      []string{"S256"},
		"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
		"scopes_supported":                      []string{"openid", "portfolio:read", "trade:approve"},
	} {
		if got, want := jsonString(docs[0][k]), jsonString(want); got != want {
			t.Errorf("%s = %s, want %s", k, got, want)
		}
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestAuthorizationCodeFlowWithPKCE(t *testing.T) {
	f := newFlow(t)
	ctx := context.Background()
	atVerifier, idVerifier := verifier(t, f.iss, resourceURL), verifier(t, f.iss, clientID)

	for _, user := range []struct {
		sub, scopes string
		accounts    []string
	}{
		{"alice", "portfolio:read trade:approve", []string{"ACC-1001", "ACC-1002"}},
		{"bob", "portfolio:read", []string{"ACC-2001"}}, // the next sign-in is someone else
	} {
		f.iss.SignIn(user.sub, user.scopes, user.accounts...)
		pkce, state, nonce := oauth2.GenerateVerifier(), random(), random()
		code := f.authorize(t, state, pkce,
			oauth2.SetAuthURLParam("resource", resourceURL), oauth2.SetAuthURLParam("nonce", nonce))

		before := f.iss.TokenRequests()
		tok, err := f.cfg.Exchange(ctx, code, oauth2.VerifierOption(pkce),
			oauth2.SetAuthURLParam("resource", resourceURL))
		if err != nil {
			t.Fatal(err)
		}
		if n := f.iss.TokenRequests() - before; n != 1 {
			t.Errorf("%d token requests, want 1", n)
		}
		if tok.TokenType != "Bearer" || tok.Expiry.IsZero() || tok.Extra("scope") != user.scopes {
			t.Errorf("token response: type %q, expiry %v, scope %v", tok.TokenType, tok.Expiry, tok.Extra("scope"))
		}

		at, err := atVerifier.Verify(ctx, tok.AccessToken)
		if err != nil {
			t.Fatalf("access token refused at audience %s: %v", resourceURL, err)
		}
		p := at.Principal
		if p.Subject != user.sub || p.ClientID != clientID ||
			!slices.Equal(p.Scopes, strings.Fields(user.scopes)) || !slices.Equal(p.Accounts, user.accounts) {
			t.Errorf("access token principal = %+v, want %s of %s with %s on %v", p, user.sub, clientID, user.scopes, user.accounts)
		}
		if _, err := idVerifier.Verify(ctx, tok.AccessToken); err == nil {
			t.Error("the access token passed as an ID token")
		}

		raw, _ := tok.Extra("id_token").(string)
		id, err := idVerifier.Verify(ctx, raw)
		if err != nil {
			t.Fatalf("ID token refused at audience %s: %v", clientID, err)
		}
		if id.Principal.Subject != user.sub {
			t.Errorf("ID token sub = %q, want %q", id.Principal.Subject, user.sub)
		}
		if _, err := atVerifier.Verify(ctx, raw); err == nil {
			t.Error("the ID token passed as an access token")
		}
		h, c := unverified(t, raw)
		if h["typ"] != "JWT" {
			t.Errorf("ID token typ = %v, want JWT", h["typ"])
		}
		sum := sha256.Sum256([]byte(tok.AccessToken))
		for k, want := range map[string]any{
			"nonce": nonce, "azp": clientID, "aud": clientID, "iss": f.iss.URL,
			"at_hash": base64.RawURLEncoding.EncodeToString(sum[:16]),
		} {
			if c[k] != want {
				t.Errorf("ID token %s = %v, want %v", k, c[k], want)
			}
		}
		if _, ok := c["iat"].(float64); !ok {
			t.Error("ID token has no iat")
		}
	}
}

// random is a fresh state or nonce.
func random() string { return oauth2.GenerateVerifier()[:22] }

// golang.org/x/oauth2's default auth style tries an Authorization header
// first; the refusal must not spend the code.
func TestAuthStyleDetectionDoesNotSpendTheCode(t *testing.T) {
	f := newFlow(t)
	f.cfg.Endpoint.AuthStyle = oauth2.AuthStyleAutoDetect
	f.iss.SignIn("alice", "portfolio:read", "ACC-1001")
	pkce := oauth2.GenerateVerifier()
	code := f.authorize(t, "s1", pkce, oauth2.SetAuthURLParam("resource", resourceURL))
	if _, err := f.cfg.Exchange(context.Background(), code, oauth2.VerifierOption(pkce)); err != nil {
		t.Fatal(err)
	}
	if n := f.iss.TokenRequests(); n != 2 {
		t.Errorf("%d token requests, want 2 (header, then body)", n)
	}
	if n := f.iss.TokensIssued(); n != 1 {
		t.Errorf("%d tokens issued, want 1", n)
	}
}

func TestAudienceWithoutResource(t *testing.T) {
	f := newFlow(t)
	f.iss.SignIn("alice", "portfolio:read")
	ctx := context.Background()

	pkce := oauth2.GenerateVerifier()
	code := f.authorize(t, "s1", pkce)
	_, err := f.cfg.Exchange(ctx, code, oauth2.VerifierOption(pkce))
	wantOAuthError(t, err, "invalid_target")

	f.iss.SetDefaultAudience(resourceURL)
	pkce = oauth2.GenerateVerifier()
	code = f.authorize(t, "s2", pkce)
	tok, err := f.cfg.Exchange(ctx, code, oauth2.VerifierOption(pkce))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifier(t, f.iss, resourceURL).Verify(ctx, tok.AccessToken); err != nil {
		t.Errorf("default audience: %v", err)
	}

	// A token request may not widen the authorized resource.
	pkce = oauth2.GenerateVerifier()
	code = f.authorize(t, "s3", pkce, oauth2.SetAuthURLParam("resource", resourceURL))
	_, err = f.cfg.Exchange(ctx, code, oauth2.VerifierOption(pkce), oauth2.SetAuthURLParam("resource", "https://elsewhere.example.com/"))
	wantOAuthError(t, err, "invalid_target")
}

// wantOAuthError checks err is an RFC 6749 error response code, HTTP 400.
func wantOAuthError(t *testing.T, err error, code string) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("got %v, want an OAuth error %s", err, code)
	}
	if re.ErrorCode != code || re.Response.StatusCode != http.StatusBadRequest {
		t.Errorf("got HTTP %d %s (%s), want 400 %s", re.Response.StatusCode, re.ErrorCode, re.ErrorDescription, code)
	}
}

func TestTokenRequestRefusals(t *testing.T) {
	f := newFlow(t)
	f.iss.SignIn("alice", "portfolio:read", "ACC-1001")
	ctx := context.Background()
	res := oauth2.SetAuthURLParam("resource", resourceURL)

	t.Run("wrong verifier", func(t *testing.T) {
		pkce := oauth2.GenerateVerifier()
		code := f.authorize(t, "s", pkce, res)
		_, err := f.cfg.Exchange(ctx, code, oauth2.VerifierOption(oauth2.GenerateVerifier()))
		wantOAuthError(t, err, "invalid_grant")
		// The failed attempt spent the code.
		_, err = f.cfg.Exchange(ctx, code, oauth2.VerifierOption(pkce))
		wantOAuthError(t, err, "invalid_grant")
	})
	t.Run("no verifier", func(t *testing.T) {
		code := f.authorize(t, "s", oauth2.GenerateVerifier(), res)
		_, err := f.cfg.Exchange(ctx, code)
		wantOAuthError(t, err, "invalid_grant")
	})
	t.Run("reused code", func(t *testing.T) {
		pkce := oauth2.GenerateVerifier()
		code := f.authorize(t, "s", pkce, res)
		if _, err := f.cfg.Exchange(ctx, code, oauth2.VerifierOption(pkce)); err != nil {
			t.Fatal(err)
		}
		_, err := f.cfg.Exchange(ctx, code, oauth2.VerifierOption(pkce))
		wantOAuthError(t, err, "invalid_grant")
	})
	t.Run("redirect_uri differs from the authorization's", func(t *testing.T) {
		pkce := oauth2.GenerateVerifier()
		code := f.authorize(t, "s", pkce, res)
		other := f.cfg
		other.RedirectURL = otherURI // registered, but not the one authorized
		_, err := other.Exchange(ctx, code, oauth2.VerifierOption(pkce))
		wantOAuthError(t, err, "invalid_grant")
	})
	t.Run("another client", func(t *testing.T) {
		f.iss.RegisterClient("other-client", callback)
		pkce := oauth2.GenerateVerifier()
		code := f.authorize(t, "s", pkce, res)
		other := f.cfg
		other.ClientID = "other-client"
		_, err := other.Exchange(ctx, code, oauth2.VerifierOption(pkce))
		wantOAuthError(t, err, "invalid_grant")
		// The code stays its own client's.
		if _, err := f.cfg.Exchange(ctx, code, oauth2.VerifierOption(pkce)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unknown code", func(t *testing.T) {
		_, err := f.cfg.Exchange(ctx, "made-up", oauth2.VerifierOption(oauth2.GenerateVerifier()))
		wantOAuthError(t, err, "invalid_grant")
	})
	t.Run("wrong grant type", func(t *testing.T) {
		resp, err := http.PostForm(f.iss.URL+"/token", url.Values{
			"grant_type": {"client_credentials"}, "client_id": {clientID},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode != http.StatusBadRequest || e.Error != "unsupported_grant_type" ||
			resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("HTTP %d %q (%s)", resp.StatusCode, e.Error, resp.Header.Get("Content-Type"))
		}
	})
}

func TestAuthorizationRefusals(t *testing.T) {
	f := newFlow(t)
	f.iss.SignIn("alice", "portfolio:read")
	pkce := oauth2.GenerateVerifier()
	s256 := oauth2.S256ChallengeOption(pkce)

	// No redirect to a URI the client did not register, nor for an
	// unknown client.
	for name, cfg := range map[string]oauth2.Config{
		"unregistered redirect URI": func() oauth2.Config { c := f.cfg; c.RedirectURL = "https://evil.example.com/cb"; return c }(),
		"redirect URI prefix":       func() oauth2.Config { c := f.cfg; c.RedirectURL = callback + "/x"; return c }(),
		"unknown client":            func() oauth2.Config { c := f.cfg; c.ClientID = "nobody"; return c }(),
	} {
		resp := f.visit(t, cfg.AuthCodeURL("s", s256))
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Errorf("%s: HTTP %d, Location %q; want 400 and no redirect", name, resp.StatusCode, resp.Header.Get("Location"))
		}
	}

	for _, c := range []struct {
		name, state, err string
		opts             []oauth2.AuthCodeOption
	}{
		{"plain challenge", "s1", "invalid_request", []oauth2.AuthCodeOption{
			oauth2.SetAuthURLParam("code_challenge", pkce), oauth2.SetAuthURLParam("code_challenge_method", "plain")}},
		{"no challenge method", "s2", "invalid_request", []oauth2.AuthCodeOption{
			oauth2.SetAuthURLParam("code_challenge", pkce)}},
		{"no challenge", "s3", "invalid_request", nil},
		{"no state", "", "invalid_request", []oauth2.AuthCodeOption{s256}},
		{"implicit", "s4", "unsupported_response_type", []oauth2.AuthCodeOption{
			s256, oauth2.SetAuthURLParam("response_type", "token")}},
		{"resource with fragment", "s5", "invalid_target", []oauth2.AuthCodeOption{
			s256, oauth2.SetAuthURLParam("resource", resourceURL+"#frag")}},
	} {
		q := f.redirected(t, f.cfg.AuthCodeURL(c.state, c.opts...))
		if q.Get("error") != c.err || q.Get("state") != c.state || q.Has("code") {
			t.Errorf("%s: redirected with %v, want error=%s state=%q", c.name, q, c.err, c.state)
		}
	}
}

func TestDenyNextAndSignOut(t *testing.T) {
	f := newFlow(t)
	f.iss.SignIn("alice", "portfolio:read")
	s256 := oauth2.S256ChallengeOption(oauth2.GenerateVerifier())

	f.iss.DenyNext("access_denied")
	q := f.redirected(t, f.cfg.AuthCodeURL("st-1", s256))
	if q.Get("error") != "access_denied" || q.Get("state") != "st-1" || q.Has("code") {
		t.Errorf("denied authorization redirected with %v", q)
	}
	f.authorize(t, "st-2", oauth2.GenerateVerifier()) // only the next one

	f.iss.SignOut()
	q = f.redirected(t, f.cfg.AuthCodeURL("st-3", s256))
	if q.Get("error") != "login_required" || q.Get("state") != "st-3" {
		t.Errorf("signed out authorization redirected with %v", q)
	}
	if n := f.iss.AuthorizeRequests(); n != 3 {
		t.Errorf("%d authorization requests, want 3", n)
	}
}
