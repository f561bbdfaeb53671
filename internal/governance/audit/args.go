package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry/redact"
)

// Redacted replaces a recorded value that carried a credential.
const Redacted = redact.Redacted

// Redact decodes raw tool arguments and returns them safe to record (see
// redact.Raw).
func Redact(raw json.RawMessage) map[string]any { return redact.Raw(raw) }

// Digest returns the hex SHA-256 of the canonical JSON of raw (object keys
// sorted, insignificant whitespace removed, numbers kept verbatim), so the
// same arguments always digest the same way. Invalid JSON digests as bytes.
func Digest(raw json.RawMessage) string {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("{}")
	}
	sum := sha256.Sum256(canonical(raw))
	return hex.EncodeToString(sum[:])
}

func canonical(raw []byte) []byte {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil || d.More() {
		return raw
	}
	b, err := json.Marshal(v) // map keys are sorted; json.Number is kept as written
	if err != nil {
		return raw
	}
	return b
}

// digestValue is Digest of an already decoded JSON value.
func digestValue(v any) string {
	b, err := json.Marshal(v) // map keys are sorted; json.Number is kept as written
	if err != nil {
		return digestBytes(nil)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// digestBytes digests bytes that are not valid arguments as they are.
func digestBytes(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}
