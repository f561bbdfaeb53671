// Package redact makes text and values that callers typed safe to record:
// credential-shaped values and the values of credential-like names become
// [REDACTED], long strings are cut, deep or long structures trimmed. The
// audit trail and the logs use it for every field that can carry what an
// agent or a person typed.
package redact

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// Redaction limits: an audit record keeps what a reviewer needs to see what
// was asked, not whatever an agent chose to paste into an argument.
const (
	Redacted       = "[REDACTED]"
	MaxStringBytes = 256
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

// Raw decodes raw tool arguments and returns them safe to record: values
// of credential-like names or shapes replaced by [REDACTED], long strings
// truncated, deep or long structures cut. Non-object arguments are recorded
// under "_value".
func Raw(raw json.RawMessage) map[string]any {
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
		if secretValue.MatchString(k) {
			// A credential sent as a key is not recorded either; the
			// number keeps two such keys apart.
			out[fmt.Sprintf("[REDACTED-KEY-%d]", n)] = redactValue(v, depth+1)
			continue
		}
		if secretName(k) {
			out[Truncate(k)] = Redacted
			continue
		}
		out[Truncate(k)] = redactValue(v, depth+1)
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
		return Truncate(v)
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

// Truncate cuts s to the recorded maximum, saying how long it was.
func Truncate(s string) string {
	if len(s) <= MaxStringBytes {
		return s
	}
	cut := MaxStringBytes
	for cut > 0 && !validStart(s[cut]) {
		cut-- // do not split a UTF-8 sequence
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:cut], len(s))
}

func validStart(b byte) bool { return b&0xC0 != 0x80 }

// Value is Raw of an already decoded JSON value.
func Value(v any) map[string]any {
	if m, ok := v.(map[string]any); ok {
		return redactMap(m, 0)
	}
	return map[string]any{"_value": redactValue(v, 0)}
}

// Text makes free text safe to record, as arguments are: any
// credential-shaped run (a JWT, a bearer or basic authorization) is
// replaced by [REDACTED], and the text is cut to max bytes. Every text an
// agent or approver typed that reaches a record or a log line (an error
// quoting a rejected value, an unknown tool's name, a reject reason) goes
// through it.
func Text(s string, max int) string {
	return Cut(secretValue.ReplaceAllString(s, Redacted), max)
}

// Cut cuts s to max bytes, at a character boundary, marking the cut: for
// text that cannot hold a credential but may be long (an id, a version).
func Cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && !validStart(s[max]) {
		max-- // do not split a UTF-8 sequence
	}
	return s[:max] + "…"
}
