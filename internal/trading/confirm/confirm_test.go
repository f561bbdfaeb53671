package confirm_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/confirm"
)

func TestStateLifecycle(t *testing.T) {
	key := bytes.Repeat([]byte("k"), 32)
	now := time.Date(2026, 11, 24, 15, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	st := store.NewMemory(clock)
	s := confirm.NewSigner(func() ([]byte, error) { return key, nil }, st, 5*time.Minute, clock)
	b := confirm.Binding{Principal: "alice", Tool: "place_order", Digest: "abc"}

	issue := func() string {
		state, err := s.Issue(b, "preview-1")
		if err != nil {
			t.Fatal(err)
		}
		return state
	}

	state := issue()
	if shown, err := s.Verify(t.Context(), state, b); err != nil || shown != "preview-1" {
		t.Fatalf("fresh state: shown %q, %v", shown, err)
	}
	if _, err := s.Verify(t.Context(), state, b); !errors.Is(err, confirm.ErrReplayed) {
		t.Fatalf("replay: %v, want ErrReplayed", err)
	}

	tampered := func(st string) string {
		body, mac, _ := strings.Cut(st, ".")
		raw, _ := base64.RawURLEncoding.DecodeString(body)
		raw = bytes.Replace(raw, []byte(`"abc"`), []byte(`"abd"`), 1)
		return base64.RawURLEncoding.EncodeToString(raw) + "." + mac
	}
	tests := []struct {
		name  string
		state string
		b     confirm.Binding
		want  error
	}{
		{"other principal", issue(), confirm.Binding{Principal: "mallory", Tool: "place_order", Digest: "abc"}, confirm.ErrInvalid},
		{"other tool", issue(), confirm.Binding{Principal: "alice", Tool: "cancel_order", Digest: "abc"}, confirm.ErrInvalid},
		{"other arguments", issue(), confirm.Binding{Principal: "alice", Tool: "place_order", Digest: "abd"}, confirm.ErrInvalid},
		{"a warning the user was not shown", issue(), confirm.Binding{Principal: "alice", Tool: "place_order", Digest: "abc", Warning: "possible duplicate"}, confirm.ErrInvalid},
		{"tampered payload", tampered(issue()), confirm.Binding{Principal: "alice", Tool: "place_order", Digest: "abd"}, confirm.ErrInvalid},
		{"garbage", "not-a-state", b, confirm.ErrInvalid},
		{"truncated mac", issue()[:40], b, confirm.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Verify(t.Context(), tt.state, tt.b); !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}

	// Signed with another key (or a rotated one): invalid.
	other := confirm.NewSigner(func() ([]byte, error) { return bytes.Repeat([]byte("o"), 32), nil }, st, 5*time.Minute, clock)
	foreign, _ := other.Issue(b, "")
	if _, err := s.Verify(t.Context(), foreign, b); !errors.Is(err, confirm.ErrInvalid) {
		t.Fatalf("foreign key: %v", err)
	}

	old := issue()
	now = now.Add(5 * time.Minute)
	if _, err := s.Verify(t.Context(), old, b); !errors.Is(err, confirm.ErrExpired) {
		t.Fatalf("expired: %v", err)
	}

	short := confirm.NewSigner(func() ([]byte, error) { return []byte("short"), nil }, st, time.Minute, clock)
	if _, err := short.Issue(b, ""); err == nil {
		t.Fatal("a short key must be refused")
	}
}
