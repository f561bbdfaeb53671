package secrets_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/state/secrets"
)

// mount lays out dir the way the kubelet's atomic writer mounts a Secret:
// the data in a timestamped directory, ..data a symlink to it, and each key a
// symlink through ..data. Calling it again publishes a new version by
// swapping ..data with a rename, exactly as a rotation does.
type mount struct {
	t   *testing.T
	dir string
	gen int
}

func (m *mount) publish(files map[string]string) {
	m.t.Helper()
	m.gen++
	version := filepath.Join(m.dir, "..2026_01_01_00_00_0"+string(rune('0'+m.gen)))
	if err := os.Mkdir(version, 0o755); err != nil {
		m.t.Fatal(err)
	}
	for name, v := range files {
		if err := os.WriteFile(filepath.Join(version, name), []byte(v), 0o400); err != nil {
			m.t.Fatal(err)
		}
		link := filepath.Join(m.dir, name)
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				m.t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(m.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(version), tmp); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.dir, "..data")); err != nil {
		m.t.Fatal(err)
	}
}

func sign(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

func TestRotationBySymlinkSwapNeedsNoRestart(t *testing.T) {
	m := &mount{t: t, dir: t.TempDir()}
	m.publish(map[string]string{secrets.RequestStateKey: "old-key\n", secrets.BackendAPIKey: "api-1"})

	var logs bytes.Buffer
	s, err := secrets.New(m.dir, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	key, err := s.Get(secrets.RequestStateKey)
	if err != nil {
		t.Fatal(err)
	}
	if string(key) != "old-key" {
		t.Fatalf("key = %q, want old-key (trailing newline trimmed)", key)
	}
	before := sign(key, "state")

	m.publish(map[string]string{secrets.RequestStateKey: "new-key", secrets.BackendAPIKey: "api-2"})

	key, err = s.Get(secrets.RequestStateKey)
	if err != nil {
		t.Fatal(err)
	}
	after := sign(key, "state")
	if !hmac.Equal(after, sign([]byte("new-key"), "state")) || hmac.Equal(after, before) {
		t.Fatalf("after rotation the signature does not use the new key (key %q)", key)
	}
	if api, _ := s.Get(secrets.BackendAPIKey); string(api) != "api-2" {
		t.Fatalf("backend key = %q, want api-2", api)
	}
	if strings.Contains(logs.String(), "new-key") || strings.Contains(logs.String(), "old-key") {
		t.Fatalf("a secret value reached the log: %s", logs.String())
	}
	if !strings.Contains(logs.String(), "secret reloaded") {
		t.Fatalf("rotation was not logged by name: %q", logs.String())
	}
}

func TestInPlaceRewriteIsPickedUp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, secrets.ApprovalEventKey)
	if err := os.WriteFile(path, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := secrets.New(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(secrets.ApprovalEventKey); err != nil || string(v) != "first" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	// A different length guarantees a different identity whatever the
	// file system's timestamp resolution.
	if err := os.WriteFile(path, []byte("second-value"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(secrets.ApprovalEventKey); err != nil || string(v) != "second-value" {
		t.Fatalf("Get after rewrite = %q, %v", v, err)
	}
}

func TestMissingOrEmptyIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := secrets.New(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"absent", "empty", "../etc/passwd", "..data", ""} {
		v, err := s.Get(name)
		if err == nil || v != nil {
			t.Errorf("Get(%q) = %q, %v; want an error and no value", name, v, err)
		}
	}
	if _, err := s.Get("absent"); !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("missing secret error %v is not ErrNotFound", err)
	}
	if _, err := secrets.New(filepath.Join(dir, "nope"), nil); err == nil {
		t.Error("New accepted a directory that does not exist")
	}
}

// TestNamesAreChecked: a name that is not a Secret key is refused before
// any file is read, even when a file of that name exists (inside the
// directory or, through "..", beside it); every Secret key is read.
func TestNamesAreChecked(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "secrets")
	long := strings.Repeat("a", 253)
	refused := []string{"-x", ".hidden", "..data", "_x", "ä", "a b", long + "a", "../outside"}
	accepted := []string{"a.b_c-d", "0", long}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(parent, "outside"), []byte("value"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range append(slices.Clone(refused[:len(refused)-1]), accepted...) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("value"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err := secrets.New(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range refused {
		if v, err := s.Get(name); err == nil || errors.Is(err, secrets.ErrNotFound) || v != nil {
			t.Errorf("Get(%q) = %q, %v; want it refused as a name", name, v, err)
		}
	}
	for _, name := range accepted {
		if v, err := s.Get(name); err != nil || string(v) != "value" {
			t.Errorf("Get(%q) = %q, %v; want its value", name, v, err)
		}
	}
}

func TestEnvFallback(t *testing.T) {
	t.Setenv("SECRET_REQUEST_STATE_KEY", "dev-key\n")
	t.Setenv("SECRET_BACKEND_API_KEY", "")
	s, err := secrets.New("", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(secrets.RequestStateKey); err != nil || string(v) != "dev-key" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	_, err = s.Get(secrets.BackendAPIKey)
	if !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "SECRET_BACKEND_API_KEY") {
		t.Fatalf("empty env secret: err = %v, want ErrNotFound naming the variable", err)
	}
}
