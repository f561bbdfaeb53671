package audit_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
)

func TestDigestIsCanonical(t *testing.T) {
	a := audit.Digest(json.RawMessage(`{"b": 1.50, "a": ["x", {"d": true, "c": null}]}`))
	b := audit.Digest(json.RawMessage(`{"a":["x",{"c":null,"d":true}],"b":1.50}`))
	c := audit.Digest(json.RawMessage(`{"a":["x",{"c":null,"d":true}],"b":1.5}`))
	if a != b {
		t.Errorf("key order or whitespace changed the digest: %s != %s", a, b)
	}
	if a == c {
		t.Error("1.50 and 1.5 digest alike: numbers must be kept as written")
	}
	if len(a) != 64 {
		t.Errorf("digest %q is not hex SHA-256", a)
	}
	if audit.Digest(nil) != audit.Digest(json.RawMessage(`{}`)) {
		t.Error("absent arguments should digest as {}")
	}
}

func TestRedact(t *testing.T) {
	jwt := "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
	long := strings.Repeat("é", 300)
	cases := []struct {
		name, in string
		check    func(map[string]any) bool
	}{
		{"secret names", `{"api_key":"k","Password":"p","access_token":"t","requestState":"s","account_id":"ACC-1"}`,
			func(m map[string]any) bool {
				return m["api_key"] == audit.Redacted && m["Password"] == audit.Redacted &&
					m["access_token"] == audit.Redacted && m["requestState"] == audit.Redacted && m["account_id"] == "ACC-1"
			}},
		{"jwt value under an innocent name", `{"note":"` + jwt + `"}`,
			func(m map[string]any) bool { return m["note"] == audit.Redacted }},
		{"bearer value", `{"note":"Authorization: Bearer abcdefghijklmnop"}`,
			func(m map[string]any) bool { return m["note"] == audit.Redacted }},
		{"nested", `{"order":{"legs":[{"secret":"x","qty":10}]}}`,
			func(m map[string]any) bool {
				leg := m["order"].(map[string]any)["legs"].([]any)[0].(map[string]any)
				return leg["secret"] == audit.Redacted && leg["qty"] == json.Number("10")
			}},
		{"long string truncated on a rune boundary", `{"q":"` + long + `"}`,
			func(m map[string]any) bool {
				s := m["q"].(string)
				return len(s) < 300 && strings.HasSuffix(s, "(600 bytes)") && !strings.Contains(s, "\uFFFD")
			}},
		{"non-object", `[1,2]`, func(m map[string]any) bool { return m["_value"] != nil }},
		{"invalid", `{"a":`, func(m map[string]any) bool { return m["_invalid"] != nil }},
		{"credentials as keys", `{"account_id":"ACC-1","` + jwt + `":1,"note":{"Bearer sk_live_0123456789":true}}`,
			func(m map[string]any) bool {
				return m["account_id"] == "ACC-1" && len(m) == 3 && len(m["note"].(map[string]any)) == 1
			}},
		{"idempotency key kept", `{"idempotency_key":"idem-1"}`,
			func(m map[string]any) bool { return m["idempotency_key"] == "idem-1" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := audit.Redact(json.RawMessage(c.in))
			if !c.check(got) {
				t.Errorf("Redact(%s) = %v", c.in, got)
			}
			b, _ := json.Marshal(got)
			for _, secret := range []string{`"k"`, `"p"`, `"t"`, jwt, "abcdefghijklmnop", "sk_live"} {
				if strings.Contains(string(b), secret) {
					t.Errorf("redacted output %s still contains %s", b, secret)
				}
			}
		})
	}
	if audit.Redact(nil) != nil {
		t.Error("absent arguments should redact to nil")
	}
}
