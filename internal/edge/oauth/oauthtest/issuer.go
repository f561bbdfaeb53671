// Package oauthtest is a real OAuth issuer for tests: RFC 8414 metadata and
// a JWKS served over HTTP on loopback, real RSA and EC keys, key rotation,
// and access tokens signed with them. It writes its JWKs by hand rather
// than through the library the server verifies with, so a test does not
// check that library against itself.
//
// It is also an OpenID Connect provider for public clients, a real one but
// for the login form: the authorization-code flow with PKCE (S256 only),
// state, nonce and RFC 8707 resource indicators, single-use codes, and
// access and ID tokens signed with the current key. Who is signed in at
// the IdP is set with SignIn, so a browser test completes the flow without
// typing anything, and DenyNext makes the next authorization fail.
package oauthtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Key is one signing key of the issuer.
type Key struct {
	ID     string
	Alg    string // RS256 or ES256
	Signer crypto.Signer
}

// Method is the jwt signing method of k.
func (k Key) Method() jwt.SigningMethod { return jwt.GetSigningMethod(k.Alg) }

// PublicPEM is k's public key in PEM, as an attacker would find it.
func (k Key) PublicPEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(k.Signer.Public())
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Issuer is a running test authorization server.
type Issuer struct {
	// URL is the issuer identifier and base URL.
	URL string

	srv       *httptest.Server
	mu        sync.Mutex
	published []Key
	current   Key
	n         int
	jwksHits  atomic.Int64
	down      atomic.Bool
	hold      atomic.Pointer[chan struct{}]

	// The authorization-code flow's state, under flowMu (apart from mu:
	// the handlers sign tokens, which takes mu, while holding it).
	flowMu     sync.Mutex
	clients    map[string][]string // client id: registered redirect URIs
	user       *identity           // who is signed in; nil: nobody
	denyNext   string              // error for the next authorization
	scopes     []string            // scopes_supported: openid and every SignIn's
	codes      map[string]*grant   // issued codes, spent ones kept
	defaultAud string

	authorizeHits atomic.Int64
	tokenHits     atomic.Int64
	tokensIssued  atomic.Int64
}

// identity is the user signed in at the issuer.
type identity struct {
	sub, scopes string
	accounts    []string
	at          time.Time // sign-in, for auth_time
}

// grant is what an authorization code stands for.
type grant struct {
	client, redirectURI, challenge string
	nonce, scope, resource         string
	who                            identity
	expires                        time.Time
	spent                          bool
}

// Flow timings.
const (
	codeLifetime  = time.Minute
	tokenLifetime = 5 * time.Minute
)

// New starts an issuer with an RSA (current) and an EC key published.
func New(t testing.TB) *Issuer {
	t.Helper()
	i := &Issuer{clients: map[string][]string{}, codes: map[string]*grant{}}
	i.srv = httptest.NewServer(http.HandlerFunc(i.serve))
	t.Cleanup(i.srv.Close)
	i.URL = i.srv.URL
	ec := i.NewKey(t, "ES256")
	rs := i.NewKey(t, "RS256")
	i.mu.Lock()
	i.published = []Key{rs, ec}
	i.current = rs
	i.mu.Unlock()
	return i
}

// NewKey makes a fresh key (not published).
func (i *Issuer) NewKey(t testing.TB, alg string) Key {
	t.Helper()
	i.mu.Lock()
	i.n++
	id := fmt.Sprintf("key-%d-%s", i.n, alg)
	i.mu.Unlock()
	var (
		s   crypto.Signer
		err error
	)
	switch alg {
	case "RS256":
		s, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		s, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		t.Fatalf("oauthtest: unsupported alg %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return Key{ID: id, Alg: alg, Signer: s}
}

// Current is the key tokens are signed with.
func (i *Issuer) Current() Key {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.current
}

// Published returns a key of alg that is in the JWKS.
func (i *Issuer) Published(alg string) Key {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, k := range i.published {
		if k.Alg == alg {
			return k
		}
	}
	panic("oauthtest: no published " + alg + " key")
}

// Rotate publishes a new key of alg, signs with it from now on and, if
// retire is set, removes every older key from the JWKS.
func (i *Issuer) Rotate(t testing.TB, alg string, retire bool) Key {
	k := i.NewKey(t, alg)
	i.mu.Lock()
	defer i.mu.Unlock()
	if retire {
		i.published = nil
	}
	i.published = append(i.published, k)
	i.current = k
	return k
}

// SetDown makes the issuer answer 503 to everything.
func (i *Issuer) SetDown(down bool) { i.down.Store(down) }

// Hold makes every request wait until the returned function is called (a
// slow issuer, e.g. far away at a cold start).
func (i *Issuer) Hold() (release func()) {
	c := make(chan struct{})
	i.hold.Store(&c)
	var once sync.Once
	return func() { once.Do(func() { close(c) }) }
}

// JWKSRequests counts JWKS fetches so far.
func (i *Issuer) JWKSRequests() int64 { return i.jwksHits.Load() }

// Claims returns the claims of a valid access token for sub at audience
// aud: issued now, valid for five minutes.
func (i *Issuer) Claims(sub, aud string, scopes string, accounts ...string) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"iss":       i.URL,
		"sub":       sub,
		"aud":       aud,
		"client_id": "test-agent",
		"scope":     scopes,
		"iat":       now.Unix(),
		"nbf":       now.Unix(),
		"exp":       now.Add(5 * time.Minute).Unix(),
		"jti":       rand.Text(),
	}
	if accounts != nil {
		c["accounts"] = accounts
	}
	return c
}

// Token signs claims with the current key.
func (i *Issuer) Token(t testing.TB, claims jwt.MapClaims) string {
	return Sign(t, i.Current(), claims)
}

// Sign signs claims with k, naming k.ID as kid.
func Sign(t testing.TB, k Key, claims jwt.MapClaims) string {
	t.Helper()
	s, err := sign(k, "at+jwt", claims)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sign signs claims with k as a JWT of type typ (RFC 9068's at+jwt for
// access tokens, JWT for ID tokens).
func sign(k Key, typ string, claims jwt.MapClaims) (string, error) {
	tok := jwt.NewWithClaims(k.Method(), claims)
	tok.Header["kid"] = k.ID
	tok.Header["typ"] = typ
	return tok.SignedString(k.Signer)
}

// RegisterClient registers (or re-registers, replacing its redirect URIs)
// a public client: no secret, token endpoint authentication "none", PKCE
// required. Redirect URIs are compared exactly; each must be an absolute
// URL without a fragment.
func (i *Issuer) RegisterClient(clientID string, redirectURIs ...string) {
	if clientID == "" {
		panic("oauthtest: empty client id")
	}
	for _, u := range redirectURIs {
		p, err := url.Parse(u)
		if err != nil || !p.IsAbs() || p.Host == "" || p.Fragment != "" || strings.Contains(u, "#") {
			panic(fmt.Sprintf("oauthtest: redirect URI %q is not an absolute URL without fragment", u))
		}
	}
	i.flowMu.Lock()
	defer i.flowMu.Unlock()
	i.clients[clientID] = slices.Clone(redirectURIs)
}

// SignIn makes sub the user signed in at the issuer: the authorizations
// from now on (until the next SignIn or SignOut) issue codes for sub,
// whose access tokens carry scopes (space-separated) as "scope" and
// accounts as "accounts" (no claim when none are given). A code is bound
// to the user signed in when it was issued.
func (i *Issuer) SignIn(sub, scopes string, accounts ...string) {
	i.flowMu.Lock()
	defer i.flowMu.Unlock()
	i.user = &identity{sub: sub, scopes: scopes, accounts: slices.Clone(accounts), at: time.Now()}
	for _, s := range strings.Fields(scopes) {
		if s != "openid" && !slices.Contains(i.scopes, s) {
			i.scopes = append(i.scopes, s)
		}
	}
}

// SignOut signs the user out: authorizations redirect with
// error=login_required until the next SignIn.
func (i *Issuer) SignOut() {
	i.flowMu.Lock()
	defer i.flowMu.Unlock()
	i.user = nil
}

// DenyNext makes the next authorization request that names a registered
// client and redirect URI and is otherwise valid redirect back with
// error=err (e.g. "access_denied") and its state instead of a code.
func (i *Issuer) DenyNext(err string) {
	i.flowMu.Lock()
	defer i.flowMu.Unlock()
	i.denyNext = err
}

// SetDefaultAudience sets the audience of access tokens whose authorization
// and token requests named no resource. Without one, such a token request
// fails with invalid_target.
func (i *Issuer) SetDefaultAudience(aud string) {
	i.flowMu.Lock()
	defer i.flowMu.Unlock()
	i.defaultAud = aud
}

// AuthorizeRequests counts requests to the authorization endpoint.
func (i *Issuer) AuthorizeRequests() int64 { return i.authorizeHits.Load() }

// TokenRequests counts requests to the token endpoint, refused ones too
// (golang.org/x/oauth2's auth style detection sends two).
func (i *Issuer) TokenRequests() int64 { return i.tokenHits.Load() }

// TokensIssued counts successful token responses.
func (i *Issuer) TokensIssued() int64 { return i.tokensIssued.Load() }

func (i *Issuer) serve(w http.ResponseWriter, r *http.Request) {
	if c := i.hold.Load(); c != nil {
		select {
		case <-*c:
		case <-r.Context().Done():
			return
		}
	}
	if i.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	switch r.URL.Path {
	case "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration":
		writeJSON(w, i.metadata())
	case "/authorize":
		i.authorizeHits.Add(1)
		i.authorize(w, r)
	case "/token":
		i.tokenHits.Add(1)
		i.token(w, r)
	case "/jwks":
		i.jwksHits.Add(1)
		i.mu.Lock()
		keys := make([]map[string]string, 0, len(i.published))
		for _, k := range i.published {
			keys = append(keys, jwk(k))
		}
		i.mu.Unlock()
		writeJSON(w, map[string]any{"keys": keys})
	default:
		http.NotFound(w, r)
	}
}

// jwk is the public JWK of k (RFC 7517/7518).
func jwk(k Key) map[string]string {
	b64 := base64.RawURLEncoding.EncodeToString
	m := map[string]string{"kid": k.ID, "alg": k.Alg, "use": "sig"}
	switch pub := k.Signer.Public().(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		pt, err := pub.Bytes() // 0x04 || X || Y
		if err != nil {
			panic(err)
		}
		m["kty"], m["crv"], m["x"], m["y"] = "EC", "P-256", b64(pt[1:33]), b64(pt[33:65])
	}
	return m
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// metadata is the issuer's RFC 8414 metadata, which is also its OpenID
// Connect discovery document. scopes_supported lists openid and the
// scopes of every user signed in so far.
func (i *Issuer) metadata() map[string]any {
	i.flowMu.Lock()
	scopes := append([]string{"openid"}, i.scopes...)
	i.flowMu.Unlock()
	return map[string]any{
		"issuer":                                         i.URL,
		"authorization_endpoint":                         i.URL + "/authorize",
		"token_endpoint":                                 i.URL + "/token",
		"jwks_uri":                                       i.URL + "/jwks",
		"response_types_supported":                       []string{"code"},
		"response_modes_supported":                       []string{"query"},
		"grant_types_supported":                          []string{"authorization_code"},
		"code_challenge_methods_supported":               []string{"S256"},
		"token_endpoint_auth_methods_supported":          []string{"none"},
		"scopes_supported":                               scopes,
		"subject_types_supported":                        []string{"public"},
		"id_token_signing_alg_values_supported":          []string{"RS256", "ES256"},
		"claims_supported":                               []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "azp", "at_hash"},
		"authorization_response_iss_parameter_supported": true,
	}
}

// authorize is the authorization endpoint (RFC 6749 section 4.1.1, RFC
// 7636, RFC 8707, OpenID Connect Core 3.1.2). The user is whoever SignIn
// named; there is no login form and no consent screen.
//
// An unknown client or a redirect URI not registered for it is answered
// 400 (never a redirect: RFC 6749 section 4.1.2.1); any other error is
// redirected with error, error_description, state and iss.
func (i *Issuer) authorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	clientID, redirectURI := q.Get("client_id"), q.Get("redirect_uri")
	i.flowMu.Lock()
	uris, known := i.clients[clientID]
	i.flowMu.Unlock()
	switch {
	case len(q["client_id"]) != 1 || !known:
		http.Error(w, "invalid_request: unknown client_id", http.StatusBadRequest)
		return
	case len(q["redirect_uri"]) != 1 || !slices.Contains(uris, redirectURI):
		http.Error(w, "invalid_request: redirect_uri is not registered for this client", http.StatusBadRequest)
		return
	}
	state := q.Get("state")
	fail := func(code, desc string) {
		v := url.Values{"error": {code}, "iss": {i.URL}}
		if desc != "" {
			v.Set("error_description", desc)
		}
		if state != "" && len(q["state"]) == 1 {
			v.Set("state", state)
		}
		redirect(w, r, redirectURI, v)
	}
	for k, vs := range q {
		if len(vs) > 1 {
			code := "invalid_request"
			if k == "resource" {
				code = "invalid_target" // RFC 8707 allows several; this issuer does not
			}
			fail(code, k+" is repeated")
			return
		}
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	resource := q.Get("resource")
	switch {
	case state == "":
		fail("invalid_request", "state is required")
		return
	case q.Get("response_type") != "code":
		fail("unsupported_response_type", "only response_type=code is supported")
		return
	case challenge == "":
		fail("invalid_request", "code_challenge is required (PKCE)")
		return
	case method != "S256":
		fail("invalid_request", "code_challenge_method must be S256")
		return
	case !validChallenge(challenge):
		fail("invalid_request", "code_challenge is not a base64url SHA-256 hash")
		return
	case resource != "" && !validResource(resource):
		fail("invalid_target", "resource must be an absolute URI without fragment")
		return
	}
	i.flowMu.Lock()
	deny := i.denyNext
	i.denyNext = ""
	who := i.user
	var code string
	if deny == "" && who != nil {
		code = rand.Text() + rand.Text()
		i.codes[code] = &grant{
			client: clientID, redirectURI: redirectURI, challenge: challenge,
			nonce: q.Get("nonce"), scope: q.Get("scope"), resource: resource,
			who: *who, expires: time.Now().Add(codeLifetime),
		}
	}
	i.flowMu.Unlock()
	switch {
	case deny != "":
		fail(deny, "")
	case who == nil:
		fail("login_required", "nobody is signed in (SignIn)")
	default:
		redirect(w, r, redirectURI, url.Values{"code": {code}, "state": {state}, "iss": {i.URL}})
	}
}

// redirect sends the user agent to uri with params added to its query.
func redirect(w http.ResponseWriter, r *http.Request, uri string, params url.Values) {
	u, err := url.Parse(uri) // registered, so it parses
	if err != nil {
		http.Error(w, "bad redirect URI", http.StatusInternalServerError)
		return
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// validChallenge: an S256 code challenge is the unpadded base64url
// encoding of a SHA-256 hash.
func validChallenge(c string) bool {
	b, err := base64.RawURLEncoding.Strict().DecodeString(c)
	return err == nil && len(b) == sha256.Size
}

// validVerifier: RFC 7636 section 4.1, 43 to 128 unreserved characters.
func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for _, c := range []byte(v) {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// validResource: RFC 8707 section 2, an absolute URI without fragment.
func validResource(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.IsAbs() && !strings.Contains(s, "#")
}

// token is the token endpoint for the authorization_code grant of public
// clients (RFC 6749 section 4.1.3, RFC 7636 section 4.6, RFC 8707 section
// 2.2, OpenID Connect Core 3.1.3). Errors are RFC 6749 section 5.2 JSON.
//
// A code is spent by the first request that presents it from its client,
// whether or not the rest of the request is right, so a wrong
// code_verifier cannot be retried. A request that fails client
// authentication (an Authorization header: public clients have no secret)
// spends nothing, so golang.org/x/oauth2's detection of the auth style,
// which tries the header first, still works.
func (i *Issuer) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		tokenError(w, http.StatusMethodNotAllowed, "invalid_request", "use POST")
		return
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-www-form-urlencoded" {
		tokenError(w, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		tokenError(w, http.StatusBadRequest, "invalid_request", "unreadable form")
		return
	}
	f := r.PostForm
	for k, vs := range f {
		if len(vs) > 1 {
			tokenError(w, http.StatusBadRequest, "invalid_request", k+" is repeated")
			return
		}
	}
	clientID := f.Get("client_id")
	i.flowMu.Lock()
	_, known := i.clients[clientID]
	i.flowMu.Unlock()
	switch {
	case r.Header.Get("Authorization") != "":
		w.Header().Set("WWW-Authenticate", `Basic realm="oauthtest"`)
		tokenError(w, http.StatusUnauthorized, "invalid_client", "public clients do not authenticate; send client_id in the body")
		return
	case f.Get("client_secret") != "":
		tokenError(w, http.StatusBadRequest, "invalid_client", "public clients have no secret")
		return
	case f.Get("grant_type") == "":
		tokenError(w, http.StatusBadRequest, "invalid_request", "grant_type is required")
		return
	case f.Get("grant_type") != "authorization_code":
		tokenError(w, http.StatusBadRequest, "unsupported_grant_type", "only authorization_code is supported")
		return
	case clientID == "":
		tokenError(w, http.StatusBadRequest, "invalid_request", "client_id is required")
		return
	case !known:
		tokenError(w, http.StatusBadRequest, "invalid_client", "unknown client_id")
		return
	case f.Get("code") == "":
		tokenError(w, http.StatusBadRequest, "invalid_request", "code is required")
		return
	}

	now := time.Now()
	i.flowMu.Lock()
	g, found := i.codes[f.Get("code")]
	var spent bool
	if found && g.client == clientID {
		spent, g.spent = g.spent, true
	}
	var gr grant
	if found {
		gr = *g
	}
	defaultAud := i.defaultAud
	i.flowMu.Unlock()
	switch {
	case !found || gr.client != clientID:
		tokenError(w, http.StatusBadRequest, "invalid_grant", "unknown code")
		return
	case spent:
		tokenError(w, http.StatusBadRequest, "invalid_grant", "code already used")
		return
	case !now.Before(gr.expires):
		tokenError(w, http.StatusBadRequest, "invalid_grant", "code expired")
		return
	case f.Get("redirect_uri") != gr.redirectURI:
		tokenError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri differs from the authorization request's")
		return
	case !validVerifier(f.Get("code_verifier")):
		tokenError(w, http.StatusBadRequest, "invalid_grant", "code_verifier missing or malformed")
		return
	}
	sum := sha256.Sum256([]byte(f.Get("code_verifier")))
	if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(gr.challenge)) != 1 {
		tokenError(w, http.StatusBadRequest, "invalid_grant", "code_verifier does not match code_challenge")
		return
	}
	aud := gr.resource
	if res := f.Get("resource"); res != "" {
		if !validResource(res) || (gr.resource != "" && res != gr.resource) {
			tokenError(w, http.StatusBadRequest, "invalid_target", "resource was not authorized")
			return
		}
		aud = res
	}
	if aud == "" {
		aud = defaultAud
	}
	if aud == "" {
		tokenError(w, http.StatusBadRequest, "invalid_target", "no resource requested and no default audience (SetDefaultAudience)")
		return
	}

	key := i.Current()
	at := i.Claims(gr.who.sub, aud, gr.who.scopes, gr.who.accounts...)
	at["client_id"] = gr.client
	access, err := sign(key, "at+jwt", at)
	if err != nil {
		tokenError(w, http.StatusInternalServerError, "server_error", "signing the access token failed")
		return
	}
	resp := map[string]any{
		"access_token": access,
		"token_type":   "Bearer",
		"expires_in":   int(tokenLifetime / time.Second),
		"scope":        gr.who.scopes,
	}
	if slices.Contains(strings.Fields(gr.scope), "openid") {
		idt := jwt.MapClaims{
			"iss":       i.URL,
			"sub":       gr.who.sub,
			"aud":       gr.client,
			"azp":       gr.client,
			"iat":       now.Unix(),
			"exp":       now.Add(tokenLifetime).Unix(),
			"auth_time": gr.who.at.Unix(),
			"at_hash":   atHash(access),
		}
		if gr.nonce != "" {
			idt["nonce"] = gr.nonce
		}
		if resp["id_token"], err = sign(key, "JWT", idt); err != nil {
			tokenError(w, http.StatusInternalServerError, "server_error", "signing the ID token failed")
			return
		}
	}
	i.tokensIssued.Add(1)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, resp)
}

// atHash is the ID token's at_hash for access token at (OpenID Connect
// Core 3.1.3.6): the left half of its SHA-256, as RS256 and ES256 use
// SHA-256.
func atHash(at string) string {
	sum := sha256.Sum256([]byte(at))
	return base64.RawURLEncoding.EncodeToString(sum[:sha256.Size/2])
}

// tokenError writes an RFC 6749 section 5.2 error.
func tokenError(w http.ResponseWriter, status int, code, desc string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}
