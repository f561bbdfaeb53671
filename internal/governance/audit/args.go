package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// Redaction limits: an audit record keeps what a reviewer needs to see what
// was asked, not whatever an agent chose to paste into an argument.
const (
	Redacted       = "[REDACTED]"
	maxStringBytes = 256
	maxDepth       = 4
	maxItems       = 50
)

// secretKeyParts mark argument names whose values are never recorded.
var secretKeyParts = []string{
	"token", "secret", "password", "passwd", "passphrase", "credential",
	"authorization", "api_key", "apikey", "private_key", "signature", "cookie",
	"request_state", "requeststate",
}

// secretValue matches values that carry a credential whatever the argument
// is called: a JWT (three base64url segments, header starting {"), or a
// bearer/basic authorization string.
var secretValue = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.|(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}`)

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

// Redact decodes raw tool arguments and returns them safe to record: values
// of credential-like names or shapes replaced by [REDACTED], long strings
// truncated, deep or long structures cut. Non-object arguments are recorded
// under "_value".
func Redact(raw json.RawMessage) map[string]any {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return map[string]any{"_invalid": fmt.Sprintf("arguments are not valid JSON (%d bytes)", len(raw))}
	}
	if m, ok := v.(map[string]any); ok {
		return redactMap(m, 0)
	}
	return map[string]any{"_value": redactValue(v, 0)}
}

func redactMap(m map[string]any, depth int) map[string]any {
	out := make(map[string]any, len(m))
	n := 0
	for k, v := range m {
		if n == maxItems {
			out["_truncated"] = fmt.Sprintf("%d more keys", len(m)-maxItems)
			break
		}
		n++
		if secretName(k) {
			out[truncate(k)] = Redacted
			continue
		}
		out[truncate(k)] = redactValue(v, depth+1)
	}
	return out
}

func redactValue(v any, depth int) any {
	if depth > maxDepth {
		return "[TRUNCATED]"
	}
	switch v := v.(type) {
	case string:
		if secretValue.MatchString(v) {
			return Redacted
		}
		return truncate(v)
	case map[string]any:
		return redactMap(v, depth)
	case []any:
		n := min(len(v), maxItems)
		out := make([]any, 0, n+1)
		for _, item := range v[:n] {
			out = append(out, redactValue(item, depth+1))
		}
		if len(v) > n {
			out = append(out, fmt.Sprintf("[%d more items]", len(v)-n))
		}
		return out
	}
	return v // numbers (json.Number), booleans, null
}

func secretName(k string) bool {
	k = strings.ToLower(k)
	for _, p := range secretKeyParts {
		if strings.Contains(k, p) {
			return true
		}
	}
	return false
}

func truncate(s string) string {
	if len(s) <= maxStringBytes {
		return s
	}
	cut := maxStringBytes
	for cut > 0 && !validStart(s[cut]) {
		cut-- // do not split a UTF-8 sequence
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:cut], len(s))
}

func validStart(b byte) bool { return b&0xC0 != 0x80 }
