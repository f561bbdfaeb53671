package handlers

import (
	"regexp"
	"strings"
	"testing"
)

// TestValidAccountID: the check behind the resource template accepts
// exactly what the tools' input schemas accept (accountIDPattern).
func TestValidAccountID(t *testing.T) {
	schema := regexp.MustCompile(accountIDPattern)
	for _, id := range []string{
		"", "A", "ACC-1001", "acc.1_2-3", "-ACC", ".x", "_x", "ACC 1", "ACC/1", "ACC%2F", "ÄCC",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 65), "a\n",
	} {
		if got, want := validAccountID(id), schema.MatchString(id); got != want {
			t.Errorf("validAccountID(%q) = %v, schema pattern says %v", id, got, want)
		}
	}
}
