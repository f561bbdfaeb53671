package principal_test

import (
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
)

func TestValidAccountID(t *testing.T) {
	for id, want := range map[string]bool{
		"ACC-1001": true, "a": true, "0": true, "a.b_c-d": true, strings.Repeat("a", 64): true,
		"": false, strings.Repeat("a", 65): false, "-a": false, ".a": false, "_a": false,
		"a/b": false, "a b": false, "ä": false, "a\n": false, principal.AllAccounts: false,
	} {
		if got := principal.ValidAccountID(id); got != want {
			t.Errorf("ValidAccountID(%q) = %v, want %v", id, got, want)
		}
	}
}
