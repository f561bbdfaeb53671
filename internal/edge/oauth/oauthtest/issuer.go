// Package oauthtest is a real OAuth issuer for tests: RFC 8414 metadata and
// a JWKS served over HTTP on loopback, real RSA and EC keys, key rotation,
// and access tokens signed with them. It writes its JWKs by hand rather
// than through the library the server verifies with, so a test does not
// check that library against itself.
package oauthtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
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
}

// New starts an issuer with an RSA (current) and an EC key published.
func New(t testing.TB) *Issuer {
	t.Helper()
	i := &Issuer{}
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
	tok := jwt.NewWithClaims(k.Method(), claims)
	tok.Header["kid"] = k.ID
	tok.Header["typ"] = "at+jwt"
	s, err := tok.SignedString(k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

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
	case "/.well-known/oauth-authorization-server":
		writeJSON(w, map[string]any{
			"issuer":                           i.URL,
			"authorization_endpoint":           i.URL + "/authorize",
			"token_endpoint":                   i.URL + "/token",
			"jwks_uri":                         i.URL + "/jwks",
			"response_types_supported":         []string{"code"},
			"code_challenge_methods_supported": []string{"S256"},
		})
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
