// Package confirm signs and checks the RequestState of a multi round-trip
// confirmation (MCP 2026-07-28): the server asks the agent's user to confirm
// an order and the client echoes the state back with the answer. The state
// travels through the client, so it is HMAC-signed, bound to the caller, the
// tool and a digest of the exact arguments, expires, and is single-use. No
// replica keeps it in memory: any replica can verify the echo.
package confirm

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
)

// Errors Verify returns; all mean "ask again", none says which check failed
// beyond what the caller may know.
var (
	ErrInvalid  = errors.New("confirmation state is invalid")
	ErrExpired  = errors.New("confirmation state has expired")
	ErrReplayed = errors.New("confirmation state was already used")
)

// Binding is what a state is valid for.
type Binding struct {
	Principal string
	Tool      string
	Digest    string // of the canonical arguments, idempotency key included
	// Warning is what else the user was told (a possible duplicate): an
	// answer counts only for the same warning.
	Warning string
}

// Signer issues and verifies states.
type Signer struct {
	key   func() ([]byte, error) // current HMAC key (rotates via the secrets dir)
	store store.Store            // single-use nonces
	ttl   time.Duration
	now   func() time.Time
}

// NewSigner returns a Signer. key is read on every call so a rotated secret
// takes effect at once; states signed with the previous key then fail and
// the user is simply asked again.
func NewSigner(key func() ([]byte, error), st store.Store, ttl time.Duration, now func() time.Time) *Signer {
	if now == nil {
		now = time.Now
	}
	return &Signer{key: key, store: st, ttl: ttl, now: now}
}

type payload struct {
	Principal string `json:"p"`
	Tool      string `json:"t"`
	Digest    string `json:"d"`
	Warning   string `json:"w,omitempty"`
	Shown     string `json:"s,omitempty"`
	Expires   int64  `json:"e"`
	Nonce     string `json:"n"`
}

// Issue returns a signed state for b. shown names what the user is shown
// (a digest of the pre-trade check); Verify returns it, so the record of
// the order can say what exactly the user confirmed.
func (s *Signer) Issue(b Binding, shown string) (string, error) {
	var n [16]byte
	rand.Read(n[:])
	p := payload{Principal: b.Principal, Tool: b.Tool, Digest: b.Digest, Warning: b.Warning, Shown: shown,
		Expires: s.now().Add(s.ttl).Unix(), Nonce: hex.EncodeToString(n[:])}
	body, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("encode state: %w", err)
	}
	mac, err := s.mac(body)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(body) + "." + base64.RawURLEncoding.EncodeToString(mac), nil
}

// Verify checks state against b and consumes it: a second Verify of the same
// state fails with ErrReplayed, on any replica sharing the store. It
// returns what the user was shown, as given to Issue.
func (s *Signer) Verify(ctx context.Context, state string, b Binding) (shown string, err error) {
	bodyB64, macB64, ok := strings.Cut(state, ".")
	if !ok || len(state) > 2048 {
		return "", ErrInvalid
	}
	body, err1 := base64.RawURLEncoding.DecodeString(bodyB64)
	mac, err2 := base64.RawURLEncoding.DecodeString(macB64)
	if err1 != nil || err2 != nil {
		return "", ErrInvalid
	}
	want, err := s.mac(body)
	if err != nil {
		return "", err
	}
	if !hmac.Equal(mac, want) {
		return "", ErrInvalid
	}
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return "", ErrInvalid
	}
	if p.Principal != b.Principal || p.Tool != b.Tool || p.Digest != b.Digest || p.Warning != b.Warning {
		return "", ErrInvalid
	}
	exp := time.Unix(p.Expires, 0)
	if !s.now().Before(exp) {
		return "", ErrExpired
	}
	// Keep the nonce until the state would have expired anyway.
	if err := s.store.Create(ctx, "confirm-nonce:"+p.Nonce, nil, exp.Sub(s.now())+time.Second); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return "", ErrReplayed
		}
		return "", fmt.Errorf("record confirmation nonce: %w", err)
	}
	return p.Shown, nil
}

func (s *Signer) mac(body []byte) ([]byte, error) {
	key, err := s.key()
	if err != nil {
		return nil, fmt.Errorf("confirmation key: %w", err)
	}
	if len(key) < 32 {
		return nil, errors.New("confirmation key: shorter than 32 bytes")
	}
	h := hmac.New(sha256.New, key)
	h.Write([]byte("portfolio-mcp/confirm/v1\x00"))
	h.Write(body)
	return h.Sum(nil), nil
}
