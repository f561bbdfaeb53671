package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"filippo.io/edwards25519"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/ident"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/secrets"
)

// Why Ed25519 and not HMAC: a checkpoint's signature must convince someone
// who does not run the server (compliance, an auditor, a regulator) and
// must not let them write a trail of their own. An HMAC key verifies only
// in the hands of whoever could also forge with it; an Ed25519 public key
// can be handed to every verifier, published even, and the private key
// never leaves the secret manager and the pods. Signing costs some tens of
// microseconds, which is why only checkpoints are signed.
//
// The key format, one key a line, the same for the secret and for a
// verifier's key file:
//
//	<key id>:<standard base64 of the key>
//
// A 64-byte key is a private key (seed and public key, as Go and libsodium
// store it), a 32-byte key a public key. Blank lines and text from '#' on
// are ignored; entries may also be separated by spaces (an environment
// variable has no lines). In the secret, the first private key signs; the
// others may stay during a rotation and are otherwise unused (the server
// only signs). A verifier needs only the public keys of every key id that
// ever signed.

// validKeyID reports whether id is a key id: 1 to 64 letters, digits, '.',
// '_' or '-', starting with a letter or digit; short, and safe in a log
// line.
func validKeyID(id string) bool { return ident.Valid(id, 64) }

// Keys is a set of audit keys read from the key format.
type Keys struct {
	// Active is the id of the key that signs: the first private key, ""
	// when the set holds only public keys.
	Active string
	signer ed25519.PrivateKey
	public map[string]ed25519.PublicKey
}

// ParseKeys reads keys in the key format. Every entry must parse: a
// mistyped key stops start-up rather than signing with the wrong one.
func ParseKeys(b []byte) (*Keys, error) {
	k := &Keys{public: map[string]ed25519.PublicKey{}}
	for n, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		for _, entry := range strings.Fields(line) {
			if err := k.add(entry); err != nil {
				return nil, fmt.Errorf("line %d: %w", n+1, err)
			}
		}
	}
	if len(k.public) == 0 {
		return nil, errors.New(`no key (want lines "<key id>:<base64 key>")`)
	}
	return k, nil
}

func (k *Keys) add(entry string) error {
	id, b64, ok := strings.Cut(entry, ":")
	if !ok || !validKeyID(id) {
		return fmt.Errorf(`an entry is not "<key id>:<base64 key>" with a key id of letters, digits, '.', '_', '-' (at most 64)`)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("key %s: not standard base64", id)
	}
	var pub ed25519.PublicKey
	switch len(raw) {
	case ed25519.PrivateKeySize:
		pub = publicKey(raw[:ed25519.SeedSize])
		if !bytes.Equal(pub, raw[ed25519.SeedSize:]) {
			return fmt.Errorf("key %s: the private key's public half does not match its seed", id)
		}
		if k.signer == nil {
			k.Active, k.signer = id, ed25519.PrivateKey(raw)
		}
	case ed25519.PublicKeySize:
		pub = raw
	default:
		return fmt.Errorf("key %s: %d bytes; want an Ed25519 private (64) or public (32) key", id, len(raw))
	}
	if old, dup := k.public[id]; dup && !bytes.Equal(old, pub) {
		return fmt.Errorf("key id %s names two different keys", id)
	}
	k.public[id] = pub
	return nil
}

// IDs lists the key ids in the set.
func (k *Keys) IDs() []string {
	ids := make([]string, 0, len(k.public))
	for id := range k.public {
		ids = append(ids, id)
	}
	return ids
}

// ErrUnknownKey is a signature by a key id the verifier was not given.
var ErrUnknownKey = errors.New("unknown key id")

// ErrBadSignature is a signature that does not verify.
var ErrBadSignature = errors.New("signature does not verify")

// Verify checks a checkpoint's signature (standard base64) over its hash.
func (k *Keys) Verify(keyID, sig string, hash [sha256.Size]byte) error {
	pub, ok := k.public[keyID]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownKey, keyID)
	}
	s, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || !ed25519.Verify(pub, SignedMessage(keyID, hash), s) {
		return fmt.Errorf("%w under key %s", ErrBadSignature, keyID)
	}
	return nil
}

// GenerateKey makes a key: the line for the secret (private) and the line
// for verifiers (public).
func GenerateKey(id string, random io.Reader) (secretLine, publicLine string, err error) {
	if !validKeyID(id) {
		return "", "", fmt.Errorf("key id %q: use letters, digits, '.', '_', '-' (at most 64), e.g. 2026-07", id)
	}
	pub, priv, err := ed25519.GenerateKey(random)
	if err != nil {
		return "", "", fmt.Errorf("generating a key: %w", err)
	}
	return id + ":" + base64.StdEncoding.EncodeToString(priv), id + ":" + base64.StdEncoding.EncodeToString(pub), nil
}

// publicKey is seed's Ed25519 public key (RFC 8032, section 5.1.5), as
// ed25519.NewKeyFromSeed derives it, but with one variable-base scalar
// multiplication. crypto/ed25519 uses the fixed-base one, whose first use
// in a process builds a table of 256 affine multiples of the base point:
// about 10 M instructions, a quarter of a cold start
// (docs/performance.md). Checking a key and making a development key need
// one multiplication, not the table; the first checkpoint's signature
// builds it, in the checkpoint goroutine, off every request's path.
// TestPublicKeyIsEd25519s compares the two.
func publicKey(seed []byte) ed25519.PublicKey {
	h := sha512.Sum512(seed)
	s, err := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	if err != nil {
		panic(fmt.Sprintf("audit: clamping a hashed seed: %v", err)) // takes any 32 bytes
	}
	return new(edwards25519.Point).ScalarMult(s, edwards25519.NewGeneratorPoint()).Bytes()
}

// signer hands the active key to each checkpoint. It reads the secret
// again for every checkpoint (the secrets store only stats the file while
// it is unchanged), so a rotated key signs the next checkpoint with no
// restart. A secret that goes missing or bad keeps the last good key, and
// says so: a checkpoint signed with the old key still verifies, one not
// written would leave the stream unsealed.
type signer struct {
	load func() ([]byte, error) // nil: a fixed key
	log  *slog.Logger

	mu    sync.Mutex
	raw   []byte
	id    string
	key   ed25519.PrivateKey
	fails bool // the last load failed (logged once, until it works again)
}

// current returns the key that signs now.
func (s *signer) current() (string, ed25519.PrivateKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.load == nil {
		return s.id, s.key
	}
	raw, err := s.load()
	if err == nil && bytes.Equal(raw, s.raw) {
		return s.id, s.key
	}
	var k *Keys
	if err == nil {
		k, err = activeKeys(raw)
	}
	if err != nil {
		if !s.fails {
			s.log.Error("audit signing key unreadable; checkpoints stay signed with the last good key", "key_id", s.id, "error", err)
		}
		s.fails = true
		return s.id, s.key
	}
	if s.id != "" && k.Active != s.id {
		s.log.Info("audit signing key rotated", "key_id", k.Active, "previous_key_id", s.id)
	}
	s.raw, s.id, s.key, s.fails = bytes.Clone(raw), k.Active, k.signer, false
	return s.id, s.key
}

// activeKeys parses the secret and requires a key that can sign.
func activeKeys(raw []byte) (*Keys, error) {
	k, err := ParseKeys(raw)
	if err != nil {
		return nil, err
	}
	if k.signer == nil {
		return nil, errors.New("no private key: the secret lists only public keys, which cannot sign")
	}
	return k, nil
}

// keygenHint says how to make a key, in errors an operator reads.
const keygenHint = `one line "<key id>:<base64 Ed25519 private key>"; make one with: go run ./cmd/auditverify keygen <key id>`

// SigningKey chooses where checkpoint signatures come from: the secret
// that load reads (audit-signing-key in SECRETS_DIR, or
// SECRET_AUDIT_SIGNING_KEY without one), re-read at every checkpoint. When
// the secret does not exist, production (required) refuses to start, with
// a message saying what to provide; a laptop run gets a key made for this
// process, whose id and public key are logged so its trail can still be
// verified, and which no one else can ever check. A secret that exists
// but does not parse stops start-up either way.
func SigningKey(load func() ([]byte, error), required bool, log *slog.Logger) (Option, error) {
	raw, err := load()
	switch {
	case err == nil:
		k, err := activeKeys(raw)
		if err != nil {
			return nil, fmt.Errorf("the secret %s: %w (%s)", secrets.AuditSigningKey, err, keygenHint)
		}
		log.Info("audit trail signing key", "key_id", k.Active)
		// Starts with the key just read: there is always a last good key.
		s := &signer{load: load, log: log, raw: bytes.Clone(raw), id: k.Active, key: k.signer}
		return func(o *options) { o.signer = s }, nil
	case !errors.Is(err, secrets.ErrNotFound):
		return nil, fmt.Errorf("the secret %s: %w", secrets.AuditSigningKey, err)
	case required:
		return nil, fmt.Errorf("the secret %s is missing: the tamper-evident audit trail signs with it (%s)", secrets.AuditSigningKey, keygenHint)
	}
	s := ephemeralSigner(log)
	return func(o *options) { o.signer = s }, nil
}

// ephemeralSigner is a key for this process only: development, and an
// Auditor built without SigningKey (tests, tools).
func ephemeralSigner(log *slog.Logger) *signer {
	seed := make([]byte, ed25519.SeedSize, ed25519.PrivateKeySize)
	rand.Read(seed) // never fails (crypto/rand crashes the program instead)
	pub := publicKey(seed)
	priv := ed25519.PrivateKey(append(seed, pub...))
	sum := sha256.Sum256(pub)
	id := "ephemeral-" + hex.EncodeToString(sum[:4])
	log.Warn("audit signing key not configured; signing checkpoints with a key made for this process (development only: never in production)",
		"key_id", id, "public_key", id+":"+base64.StdEncoding.EncodeToString(pub))
	return &signer{id: id, key: priv, log: log}
}
