package console

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
)

// Cookie names. The __Host- prefix makes the browser refuse a cookie that
// is not Secure, has a Domain, or a Path other than /: a sibling subdomain
// cannot plant or overwrite it.
const (
	sessionCookie = "__Host-portfolio-console"
	loginCookie   = "__Host-portfolio-console-login"
)

// Session is a signed-in approver: who they are as the token said, until
// when, and the id their CSRF token is bound to.
type Session struct {
	Subject  string    `json:"sub"`
	ClientID string    `json:"cid,omitempty"`
	Scopes   []string  `json:"scp,omitempty"`
	Accounts []string  `json:"acc,omitempty"`
	Expires  time.Time `json:"exp"`
	ID       string    `json:"sid"`
}

// Principal is the session's identity as the trading service knows it.
func (s Session) Principal() principal.Principal {
	return principal.Principal{Subject: s.Subject, ClientID: s.ClientID, Scopes: s.Scopes, Accounts: s.Accounts}
}

// loginState is what a sign-in in progress keeps between the redirect to
// the issuer and its callback.
type loginState struct {
	State    string    `json:"st"`
	Nonce    string    `json:"n"`
	Verifier string    `json:"v"`
	Next     string    `json:"next,omitempty"`
	Expires  time.Time `json:"exp"`
}

// Sessions seals cookies with AES-256-GCM: a cookie is confidential (the
// browser cannot read the entitlements in it) and authenticated (a forged
// or edited cookie does not open). Sessions are stateless, so any replica
// serves any request; their lifetime is bounded by the cookie's expiry.
type Sessions struct {
	aead   cipher.AEAD
	csrf   []byte
	now    func() time.Time
	secure bool
}

// NewSessions derives the cookie keys from secret (at least 32 bytes, from
// SECRETS_DIR; every replica must hold the same).
func NewSessions(secret []byte, now func() time.Time) (*Sessions, error) {
	if len(secret) < 32 {
		return nil, errors.New("the console cookie key must be at least 32 bytes")
	}
	enc := derive(secret, "portfolio-mcp console cookie encryption")
	block, err := aes.NewCipher(enc)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Sessions{aead: aead, csrf: derive(secret, "portfolio-mcp console csrf"), now: now, secure: true}, nil
}

func derive(secret []byte, label string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// seal encrypts v for the cookie name (the name is authenticated too, so a
// login cookie cannot be replayed as a session).
func (s *Sessions) seal(name string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(name))), nil
}

func (s *Sessions) open(name, value string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return errors.New("malformed cookie")
	}
	plain, err := s.aead.Open(nil, raw[:s.aead.NonceSize()], raw[s.aead.NonceSize():], []byte(name))
	if err != nil {
		return errors.New("cookie does not authenticate")
	}
	return json.Unmarshal(plain, v)
}

// ErrSessionTooLarge: the sign-in holds more (scopes, entitlements) than a
// cookie can carry; a browser would drop it silently.
var ErrSessionTooLarge = errors.New("the sign-in carries too many scopes and accounts for a session cookie")

// maxCookie is below the 4096 bytes browsers keep per cookie, name and
// attributes included.
const maxCookie = 3800

// Start sets a new session's cookie.
func (s *Sessions) Start(w http.ResponseWriter, sess Session) error {
	sess.ID = rand.Text()
	v, err := s.seal(sessionCookie, sess)
	if err != nil {
		return err
	}
	if len(v) > maxCookie {
		return ErrSessionTooLarge
	}
	http.SetCookie(w, s.cookie(sessionCookie, v, sess.Expires, http.SameSiteStrictMode))
	return nil
}

// Get returns the request's session, if it has a valid, unexpired one.
func (s *Sessions) Get(r *http.Request) (Session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return Session{}, false
	}
	var sess Session
	if err := s.open(sessionCookie, c.Value, &sess); err != nil || sess.Subject == "" || !s.now().Before(sess.Expires) {
		return Session{}, false
	}
	return sess, true
}

// End clears the session cookie.
func (s *Sessions) End(w http.ResponseWriter) {
	http.SetCookie(w, s.cookie(sessionCookie, "", time.Unix(0, 0), http.SameSiteStrictMode))
}

// CSRF is the token a session's forms carry: bound to the session id, so a
// token from another session (or none) is refused.
func (s *Sessions) CSRF(sess Session) string {
	m := hmac.New(sha256.New, s.csrf)
	m.Write([]byte(sess.ID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// CheckCSRF reports whether token is sess's.
func (s *Sessions) CheckCSRF(sess Session, token string) bool {
	return token != "" && hmac.Equal([]byte(token), []byte(s.CSRF(sess)))
}

// resultMAC binds the result a form's redirect names to the session and
// the page it lands on: a link from anyone else cannot put one of the
// console's own messages ("already decided", "released") on an approver's
// page.
func (s *Sessions) resultMAC(sess Session, page, result string) string {
	m := hmac.New(sha256.New, s.csrf)
	m.Write([]byte("result\x00" + sess.ID + "\x00" + page + "\x00" + result))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

// The login cookie is SameSite=Lax: the issuer's redirect back to the
// callback is a cross-site navigation, on which a Strict cookie is not sent.
func (s *Sessions) startLogin(w http.ResponseWriter, l loginState) error {
	v, err := s.seal(loginCookie, l)
	if err != nil {
		return err
	}
	http.SetCookie(w, s.cookie(loginCookie, v, l.Expires, http.SameSiteLaxMode))
	return nil
}

// takeLogin reads and clears the sign-in in progress: each is used once.
func (s *Sessions) takeLogin(w http.ResponseWriter, r *http.Request) (loginState, bool) {
	c, err := r.Cookie(loginCookie)
	if err != nil {
		return loginState{}, false
	}
	http.SetCookie(w, s.cookie(loginCookie, "", time.Unix(0, 0), http.SameSiteLaxMode))
	var l loginState
	if err := s.open(loginCookie, c.Value, &l); err != nil || !s.now().Before(l.Expires) {
		return loginState{}, false
	}
	return l, true
}

func (s *Sessions) cookie(name, value string, expires time.Time, site http.SameSite) *http.Cookie {
	c := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: s.secure, SameSite: site, Expires: expires}
	if value == "" {
		c.MaxAge = -1
	} else {
		c.MaxAge = max(1, int(expires.Sub(s.now()).Seconds()))
	}
	return c
}
