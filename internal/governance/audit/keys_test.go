package audit_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/audittest"
)

// TestParseKeys: the key format of the secret and of a verifier's key
// file, and the mistakes that must stop start-up rather than sign wrong.
func TestParseKeys(t *testing.T) {
	secretA, publicA := audittest.Key(t, "2026-07")
	secretB, publicB := audittest.Key(t, "2026-06")
	_, otherA := audittest.Key(t, "2026-07")
	priv, _ := base64.StdEncoding.DecodeString(strings.SplitN(secretA, ":", 2)[1])
	copy(priv[32:], make([]byte, 32)) // a seed with someone else's public half
	for _, c := range []struct {
		name, file string
		active     string // "" with want: no signing key
		ids        int
		want       string // error text; "" : parses
	}{
		{"secret with a retiring key", secretA + "\n" + secretB + "\n", "2026-07", 2, ""},
		{"verifier file with comments", "# published keys\n" + publicA + "  # since July\n\n" + publicB, "", 2, ""},
		{"entries on one line (an env var)", secretB + " " + publicA, "2026-06", 2, ""},
		{"the same key as private and public", secretA + "\n" + publicA, "2026-07", 1, ""},
		{"empty", "# nothing\n", "", 0, "no key"},
		{"no key id", ":" + strings.SplitN(publicA, ":", 2)[1], "", 0, "key id"},
		{"key id with a space", "my key:" + strings.SplitN(publicA, ":", 2)[1], "", 0, "key id"},
		{"not base64", "2026-07:%%%", "", 0, "not standard base64"},
		{"wrong length", "2026-07:" + base64.StdEncoding.EncodeToString(make([]byte, 16)), "", 0, "16 bytes"},
		{"halves that do not match", "2026-07:" + base64.StdEncoding.EncodeToString(priv), "", 0, "does not match its seed"},
		{"one id, two keys", publicA + "\n" + otherA, "", 0, "names two different keys"},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, err := audit.ParseKeys([]byte(c.file))
			if c.want != "" {
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("err = %v, want %q", err, c.want)
				}
				for _, f := range strings.Fields(c.file) {
					if _, key, _ := strings.Cut(f, ":"); len(key) > 8 && strings.Contains(err.Error(), key) {
						t.Errorf("the error quotes a key: %v", err)
					}
				}
				return
			}
			if err != nil || k.Active != c.active || len(k.IDs()) != c.ids {
				t.Fatalf("keys %+v, err %v; want active %q and %d ids", k, err, c.active, c.ids)
			}
		})
	}
}

// TestPublicKeyIsEd25519s: the start-up's own public key derivation (one
// variable-base multiplication instead of crypto/ed25519's base-point
// table) gives crypto/ed25519's key for every seed: RFC 8032's first test
// vector and random seeds.
func TestPublicKeyIsEd25519s(t *testing.T) {
	seed, _ := hex.DecodeString("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	want, _ := hex.DecodeString("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
	if got := audit.PublicKey(seed); !bytes.Equal(got, want) {
		t.Fatalf("RFC 8032 test 1: public key %x, want %x", got, want)
	}
	for range 200 {
		seed := make([]byte, ed25519.SeedSize)
		rand.Read(seed)
		want := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		if got := audit.PublicKey(seed); !bytes.Equal(got, want) {
			t.Fatalf("seed %x: public key %x, crypto/ed25519 says %x", seed, got, want)
		}
	}
}
