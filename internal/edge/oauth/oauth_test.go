package oauth_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
)

const resourceURL = "https://mcp.example.com/mcp"

// protected is a real HTTP server behind the verifier's middleware; it
// counts the requests that got through and remembers their principal.
type protected struct {
	url      string
	executed atomic.Int64
	last     atomic.Pointer[principal.Principal]
}

func newProtected(t *testing.T, iss *oauthtest.Issuer, opts ...func(*oauth.Options)) *protected {
	t.Helper()
	o := oauth.Options{
		Issuer: iss.URL, Audience: resourceURL, Algorithms: []string{"RS256", "ES256"},
		ClockSkew: 30 * time.Second, EntitlementsClaim: "accounts",
	}
	for _, f := range opts {
		f(&o)
	}
	v, err := oauth.NewVerifier(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	p := &protected{}
	h := v.Middleware("https://mcp.example.com/.well-known/oauth-protected-resource/mcp")(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			pr, ok := principal.From(r.Context())
			if !ok {
				t.Error("handler reached without a principal")
			}
			p.last.Store(&pr)
			p.executed.Add(1)
			io.WriteString(w, "ok")
		}))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

func (p *protected) call(t *testing.T, token string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, p.url, strings.NewReader(`{}`))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestRejectedTokens(t *testing.T) {
	iss := oauthtest.New(t)
	p := newProtected(t, iss)
	valid := func() jwt.MapClaims {
		return iss.Claims("alice", resourceURL, "portfolio:read", "ACC-1001")
	}
	with := func(k string, v any) jwt.MapClaims {
		c := valid()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	rsa := iss.Published("RS256")
	impostor := iss.NewKey(t, "RS256")
	impostor.ID = rsa.ID // same kid as a published key, different private key

	hmacWithPublicKey := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, valid())
		tok.Header["kid"] = rsa.ID
		s, err := tok.SignedString(rsa.PublicPEM())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	algNone := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, valid())
		tok.Header["kid"] = rsa.ID
		s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tamperedPayload := func() string {
		good := oauthtest.Sign(t, rsa, valid())
		other := oauthtest.Sign(t, rsa, iss.Claims("mallory", resourceURL, "portfolio:read trade:write", "*"))
		parts, otherParts := strings.Split(good, "."), strings.Split(other, ".")
		return parts[0] + "." + otherParts[1] + "." + parts[2]
	}
	hour := time.Hour

	cases := []struct {
		name   string
		token  string
		header string // raw Authorization header, overrides token
		reason string
	}{
		{name: "no token", reason: "no bearer token"},
		{name: "not bearer", header: "Basic YWxpY2U6cGFzcw==", reason: "no bearer token"},
		{name: "bearer without a token", header: "Bearer ", reason: "no bearer token"},
		{name: "two tokens", header: "Bearer abc def", reason: "no bearer token"},
		{name: "malformed", token: "not.a.jwt", reason: "malformed"},
		{name: "garbage", token: "abc", reason: "malformed"},
		{name: "expired", token: oauthtest.Sign(t, rsa, with("exp", time.Now().Add(-hour).Unix())), reason: "expired"},
		{name: "no expiry", token: oauthtest.Sign(t, rsa, with("exp", nil)), reason: "a required claim is missing"},
		{name: "not yet valid", token: oauthtest.Sign(t, rsa, with("nbf", time.Now().Add(hour).Unix())), reason: "not valid yet"},
		{name: "issued in the future", token: oauthtest.Sign(t, rsa, with("iat", time.Now().Add(hour).Unix())), reason: "issued in the future"},
		{name: "wrong issuer", token: oauthtest.Sign(t, rsa, with("iss", "https://evil.example.com")), reason: "wrong issuer"},
		{name: "wrong audience", token: oauthtest.Sign(t, rsa, with("aud", "https://other.example.com/mcp")), reason: "wrong audience"},
		{name: "no audience", token: oauthtest.Sign(t, rsa, with("aud", nil)), reason: "a required claim is missing"},
		{name: "no subject", token: oauthtest.Sign(t, rsa, with("sub", nil)), reason: "missing subject"},
		{name: "bad signature (impostor key, published kid)", token: oauthtest.Sign(t, impostor, valid()), reason: "bad signature"},
		{name: "tampered payload", token: tamperedPayload(), reason: "bad signature"},
		// jwt/v5 reports an algorithm outside WithValidMethods as an invalid signature.
		{name: "alg none", token: algNone(), reason: "bad signature"},
		{name: "HMAC signed with the public key", token: hmacWithPublicKey(), reason: "bad signature"},
		{name: "unknown kid", token: oauthtest.Sign(t, iss.NewKey(t, "RS256"), valid()), reason: "signing key or algorithm not accepted"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, p.url, strings.NewReader(`{}`))
			switch {
			case c.header != "":
				req.Header.Set("Authorization", c.header)
			case c.token != "":
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401 (body %q)", resp.StatusCode, body)
			}
			// RFC 6750 section 3.1: no error code without credentials,
			// invalid_token for a token that fails.
			want := `Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"`
			if c.token != "" {
				want = `Bearer error="invalid_token", error_description="` + c.reason + `", ` + want[len("Bearer "):]
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != want {
				t.Errorf("WWW-Authenticate = %q, want %q", got, want)
			}
			if !strings.Contains(string(body), c.reason) {
				t.Errorf("body %q does not name the reason %q", body, c.reason)
			}
			if c.token != "" && strings.Contains(string(body), c.token) {
				t.Error("the token was echoed in the response")
			}
		})
	}
	if n := p.executed.Load(); n != 0 {
		t.Fatalf("%d rejected requests reached the handler", n)
	}
}

func TestAcceptedTokensBecomePrincipals(t *testing.T) {
	iss := oauthtest.New(t)
	p := newProtected(t, iss)
	cases := []struct {
		name   string
		claims jwt.MapClaims
		key    oauthtest.Key
		want   principal.Principal
	}{
		{"RSA, scope string, account list", iss.Claims("alice", resourceURL, "portfolio:read trade:write", "ACC-1001", "ACC-1002"),
			iss.Published("RS256"),
			principal.Principal{Subject: "alice", ClientID: "test-agent", Scopes: []string{"portfolio:read", "trade:write"}, Accounts: []string{"ACC-1001", "ACC-1002"}}},
		{"EC key", iss.Claims("bob", resourceURL, "portfolio:read", "*"), iss.Published("ES256"),
			principal.Principal{Subject: "bob", ClientID: "test-agent", Scopes: []string{"portfolio:read"}, Accounts: []string{"*"}}},
		{"audience with trailing slash, scp list, expired within skew", func() jwt.MapClaims {
			c := iss.Claims("carol", resourceURL+"/", "")
			c["scp"] = []any{"trade:approve"}
			c["accounts"] = "ACC-1 ACC-2,ACC-3 ../bad"
			c["exp"] = time.Now().Add(-10 * time.Second).Unix()
			return c
		}(), iss.Published("RS256"),
			principal.Principal{Subject: "carol", ClientID: "test-agent", Scopes: []string{"trade:approve"}, Accounts: []string{"ACC-1", "ACC-2", "ACC-3"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := p.call(t, oauthtest.Sign(t, c.key, c.claims))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			got := *p.last.Load()
			if got.Subject != c.want.Subject || got.ClientID != c.want.ClientID ||
				strings.Join(got.Scopes, " ") != strings.Join(c.want.Scopes, " ") ||
				strings.Join(got.Accounts, " ") != strings.Join(c.want.Accounts, " ") {
				t.Errorf("principal = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestKeyRotationWithoutRestart(t *testing.T) {
	iss := oauthtest.New(t)
	p := newProtected(t, iss)
	claims := func() jwt.MapClaims { return iss.Claims("alice", resourceURL, "portfolio:read", "*") }

	old := iss.Token(t, claims())
	if resp, body := p.call(t, old); resp.StatusCode != http.StatusOK {
		t.Fatalf("before rotation: %d %s", resp.StatusCode, body)
	}
	fetches := iss.JWKSRequests()

	// The issuer rotates to a new EC key and retires the old ones.
	iss.Rotate(t, "ES256", true)
	if resp, body := p.call(t, iss.Token(t, claims())); resp.StatusCode != http.StatusOK {
		t.Fatalf("token signed with the rotated-in key: %d %s", resp.StatusCode, body)
	}
	if iss.JWKSRequests() != fetches+1 {
		t.Errorf("JWKS fetched %d times for the new kid, want once", iss.JWKSRequests()-fetches)
	}
	// The refreshed key set no longer holds the retired key.
	if resp, _ := p.call(t, old); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("token of a retired key: status %d, want 401", resp.StatusCode)
	}
}

func TestUnknownKeyIDsCannotHammerTheIssuer(t *testing.T) {
	iss := oauthtest.New(t)
	p := newProtected(t, iss, func(o *oauth.Options) { o.UnknownKeyInterval = time.Hour })
	if resp, _ := p.call(t, iss.Token(t, iss.Claims("alice", resourceURL, "portfolio:read"))); resp.StatusCode != http.StatusOK {
		t.Fatal("valid token refused")
	}
	before := iss.JWKSRequests()
	for range 20 {
		forged := oauthtest.Sign(t, iss.NewKey(t, "ES256"), iss.Claims("mallory", resourceURL, "portfolio:read"))
		if resp, _ := p.call(t, forged); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("forged token: status %d", resp.StatusCode)
		}
	}
	if n := iss.JWKSRequests() - before; n > 1 {
		t.Errorf("20 unknown kids caused %d JWKS fetches, want at most 1", n)
	}
}

func TestIssuerDownIsNotAnAuthenticationFailure(t *testing.T) {
	iss := oauthtest.New(t)
	iss.SetDown(true)
	p := newProtected(t, iss)
	resp, body := p.call(t, iss.Token(t, iss.Claims("alice", resourceURL, "portfolio:read")))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("status %d, Retry-After %q; want 503 with Retry-After (the token may be fine; the issuer is down)",
			resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp.Header.Get("WWW-Authenticate") != "" {
		t.Error("a challenge was sent: the client would discard a token that may be fine")
	}
	if strings.Contains(body, iss.URL) || strings.Contains(body, "127.0.0.1") {
		t.Errorf("the response reveals the issuer's address: %q", body)
	}
	if p.executed.Load() != 0 {
		t.Error("request executed without verification")
	}
}

func TestIssuerMetadataMustNameTheIssuer(t *testing.T) {
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	mux.HandleFunc("/.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": "https://impostor.example.com", "jwks_uri": srv.URL + "/jwks"})
	})
	v, err := oauth.NewVerifier(oauth.Options{Issuer: srv.URL, Audience: resourceURL, Algorithms: []string{"RS256"}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.Warm(context.Background()); err == nil || !strings.Contains(err.Error(), "impostor") {
		t.Fatalf("Warm = %v, want a refusal of metadata naming another issuer", err)
	}
}

func TestVerifierRefusesSymmetricAlgorithms(t *testing.T) {
	for _, algs := range [][]string{{"HS256"}, {"RS256", "none"}, nil} {
		if _, err := oauth.NewVerifier(oauth.Options{Issuer: "https://i", Audience: resourceURL, Algorithms: algs}); err == nil {
			t.Errorf("algorithms %v accepted", algs)
		}
	}
}

func TestProtectedResourceMetadata(t *testing.T) {
	res := oauth.Resource{URL: resourceURL, Issuers: []string{"https://login.example.com"},
		Scopes: []string{"portfolio:read", "trade:write", "trade:approve"}, Name: "Portfolio MCP"}
	mdURL, err := res.MetadataURL()
	if err != nil || mdURL != "https://mcp.example.com/.well-known/oauth-protected-resource/mcp" {
		t.Fatalf("MetadataURL = %q, %v", mdURL, err)
	}
	routes, err := res.Routes()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for p, h := range routes {
		mux.Handle(p, h)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, path := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Host = "evil.example.com" // a proxy or attacker-controlled Host must not change the answer
		req.Header.Set("X-Forwarded-Host", "evil.example.com")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var md map[string]any
		json.NewDecoder(resp.Body).Decode(&md)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || md["resource"] != resourceURL {
			t.Errorf("GET %s: %d %v", path, resp.StatusCode, md)
		}
		if s, _ := json.Marshal(md["scopes_supported"]); string(s) != `["portfolio:read","trade:write","trade:approve"]` {
			t.Errorf("scopes_supported = %s", s)
		}
		if s, _ := json.Marshal(md["authorization_servers"]); string(s) != `["https://login.example.com"]` {
			t.Errorf("authorization_servers = %s", s)
		}
	}
}
