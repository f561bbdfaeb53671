// Package secrets reads the server's secrets (HMAC keys, signing keys,
// backend API keys) from files in a directory: a Kubernetes Secret, synced
// from the firm's secret manager by External Secrets, mounted into the pod.
// Rotation needs no restart: each read checks whether the file changed
// (including Kubernetes' atomic symlink swap of the ..data directory) and
// reloads it if so.
//
// Secret values are never logged: only a secret's name, when it is reloaded.
// With no directory configured (a laptop run), secrets come from
// SECRET_<NAME> environment variables instead.
package secrets

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/ident"
)

// Names of the secrets the project uses.
const (
	// RequestStateKey signs MRTR RequestState (HMAC).
	RequestStateKey = "request-state-key"
	// ApprovalEventKey verifies approval CloudEvents (HMAC).
	ApprovalEventKey = "approval-event-key"
	// BackendAPIKey is the bearer token presented to the backends.
	BackendAPIKey = "backend-api-key"
	// ConsoleCookieKey seals the approvals console's session cookies
	// (AES-GCM); every replica holds the same.
	ConsoleCookieKey = "console-cookie-key"
	// AuditSigningKey signs the audit trail's checkpoints (Ed25519 private
	// keys, one "<key id>:<base64>" a line; the first signs): see
	// internal/governance/audit/keys.go.
	AuditSigningKey = "audit-signing-key"
)

// MaxSize bounds one secret file; anything larger is a misconfiguration.
const MaxSize = 64 << 10

// ErrNotFound reports a secret that is not configured (no file, no env var).
var ErrNotFound = errors.New("secret not found")

// validName is what a secret (a Kubernetes Secret key) may be called: 1
// to maxNameLen ASCII letters, digits, '.', '_' or '-', starting with a
// letter or digit. It keeps names from escaping the directory and from
// naming the ..data links.
func validName(name string) bool { return ident.Valid(name, maxNameLen) }

const maxNameLen = 253

// Store hands out the current value of each secret.
type Store struct {
	dir string
	log *slog.Logger

	mu    sync.Mutex
	cache map[string]entry
}

// entry is a cached secret and the identity of the file it was read from.
type entry struct {
	value []byte
	id    fileID
}

// fileID identifies one version of a file: Kubernetes writes each version
// into a new directory (new inode) and swaps a symlink; an in-place edit
// changes size or modification time.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

// New returns a Store reading files from dir. An empty dir selects the
// development fallback: environment variables named SECRET_<NAME>, with the
// name upper-cased and '-' and '.' turned into '_'.
func New(dir string, log *slog.Logger) (*Store, error) {
	if dir != "" {
		fi, err := os.Stat(dir)
		if err != nil {
			return nil, fmt.Errorf("secrets directory: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("secrets directory %s is not a directory", dir)
		}
	}
	return &Store{dir: dir, log: log, cache: map[string]entry{}}, nil
}

// EnvName is the environment variable that holds secret name in the
// development fallback, e.g. SECRET_REQUEST_STATE_KEY.
func EnvName(name string) string {
	return "SECRET_" + strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(name))
}

// Get returns the current value of the secret name. A missing or empty
// secret is an error, never an empty key. Trailing newlines (left by editors
// and `echo`) are removed. The returned slice must not be modified.
func (s *Store) Get(name string) ([]byte, error) {
	if !validName(name) {
		return nil, fmt.Errorf("secret name %q is not valid", name)
	}
	if s.dir == "" {
		return fromEnv(name)
	}
	path := filepath.Join(s.dir, name)
	fi, err := os.Stat(path) // follows the Kubernetes symlinks to the live version
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %q (no file %s)", ErrNotFound, name, path)
		}
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	id := identify(fi)

	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.cache[name]; ok && e.id == id {
		return e.value, nil
	}
	value, id, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	_, reloaded := s.cache[name]
	s.cache[name] = entry{value: value, id: id}
	if reloaded {
		s.log.Info("secret reloaded", "secret", name)
	}
	return value, nil
}

// Close forgets the cached values. The store holds no goroutines or
// descriptors; Close exists so callers need not change if it ever does.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.cache)
	return nil
}

func fromEnv(name string) ([]byte, error) {
	v := strings.TrimRight(os.Getenv(EnvName(name)), "\r\n")
	if v == "" {
		return nil, fmt.Errorf("%w: %q (SECRETS_DIR is unset and %s is empty)", ErrNotFound, name, EnvName(name))
	}
	return []byte(v), nil
}

// readFile reads one version of a secret file and the identity of what it
// read (stat of the open descriptor, so a swap in between cannot mismatch).
func readFile(path string) ([]byte, fileID, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fileID{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileID{}, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fileID{}, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fileID{}, err
	}
	if len(b) > MaxSize {
		return nil, fileID{}, fmt.Errorf("file is larger than %d bytes", MaxSize)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) == 0 {
		return nil, fileID{}, fmt.Errorf("%w: file %s is empty", ErrNotFound, path)
	}
	return b, identify(fi), nil
}

func identify(fi os.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), st.Ino
	}
	return id
}
