package oauth

import (
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
)

// TestVerifiedTokenCache: a token that passed is not verified again until
// the cache's TTL or its own expiry (plus skew) passes, or the key that
// verified it leaves the issuer's key set; refusals are never cached.
func TestVerifiedTokenCache(t *testing.T) {
	const aud = "https://mcp.example.com/mcp"
	iss := oauthtest.New(t)
	newV := func(t *testing.T, ttl time.Duration) (*Verifier, *time.Time) {
		v, err := NewVerifier(Options{Issuer: iss.URL, Audience: aud, Algorithms: []string{"RS256", "ES256"},
			ClockSkew: 30 * time.Second, CacheTTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(v.Close)
		clock := time.Now()
		v.now = func() time.Time { return clock }
		return v, &clock
	}
	verify := func(t *testing.T, v *Verifier, token string, wantOK bool, wantChecks int64) {
		t.Helper()
		got, err := v.Verify(t.Context(), token)
		if (err == nil) != wantOK {
			t.Fatalf("Verify: %v, want ok=%v", err, wantOK)
		}
		if wantOK && got.Principal.Subject != "alice" {
			t.Fatalf("principal %+v", got.Principal)
		}
		if n := v.checks.Load(); n != wantChecks {
			t.Fatalf("%d full verifications, want %d", n, wantChecks)
		}
	}

	t.Run("hit until the TTL passes", func(t *testing.T) {
		v, clock := newV(t, time.Minute)
		token := iss.Token(t, iss.Claims("alice", aud, "portfolio:read"))
		verify(t, v, token, true, 1)
		verify(t, v, token, true, 1)
		*clock = clock.Add(59 * time.Second)
		verify(t, v, token, true, 1)
		*clock = clock.Add(2 * time.Second)
		verify(t, v, token, true, 2)
	})
	t.Run("never past the token's expiry plus skew", func(t *testing.T) {
		v, clock := newV(t, time.Hour)
		c := iss.Claims("alice", aud, "portfolio:read")
		exp := time.Now().Add(10 * time.Second)
		c["exp"] = exp.Unix()
		token := iss.Token(t, c)
		verify(t, v, token, true, 1)
		*clock = exp.Add(29 * time.Second)
		verify(t, v, token, true, 1)
		*clock = exp.Add(31 * time.Second)
		verify(t, v, token, true, 2) // the parser's own clock is still before exp
	})
	t.Run("refusals are not cached", func(t *testing.T) {
		v, _ := newV(t, time.Minute)
		bad := oauthtest.Sign(t, iss.NewKey(t, "RS256"), iss.Claims("alice", aud, "portfolio:read"))
		verify(t, v, bad, false, 1)
		verify(t, v, bad, false, 2)
	})
	t.Run("off", func(t *testing.T) {
		v, _ := newV(t, -1)
		token := iss.Token(t, iss.Claims("alice", aud, "portfolio:read"))
		verify(t, v, token, true, 1)
		verify(t, v, token, true, 2)
	})
	// Last: it changes the issuer's keys.
	t.Run("ends when the key is withdrawn", func(t *testing.T) {
		v, _ := newV(t, time.Hour)
		token := iss.Token(t, iss.Claims("alice", aud, "portfolio:read"))
		verify(t, v, token, true, 1)
		iss.Rotate(t, "ES256", true)
		// Still cached: the verifier has not seen the new key set yet, as
		// it would not for an uncached token either.
		verify(t, v, token, true, 1)
		// A token of the new key makes it refresh the key set.
		verify(t, v, iss.Token(t, iss.Claims("alice", aud, "portfolio:read")), true, 2)
		verify(t, v, token, false, 3)
	})
}
