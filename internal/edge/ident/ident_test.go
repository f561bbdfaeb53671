package ident_test

import (
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/ident"
)

func TestValidAndChars(t *testing.T) {
	for _, tc := range []struct {
		s            string
		valid, chars bool
	}{
		{"ACC-1001", true, true}, {"a.b_c-d", true, true}, {"0", true, true},
		{strings.Repeat("a", 8), true, true}, {strings.Repeat("a", 9), false, false},
		{"", false, false}, {".x", false, true}, {"_x", false, true}, {"-x", false, true},
		{"a/b", false, false}, {"a b", false, false}, {"ä", false, false}, {"a\n", false, false}, {"*", false, false},
	} {
		if got := ident.Valid(tc.s, 8); got != tc.valid {
			t.Errorf("Valid(%q, 8) = %v, want %v", tc.s, got, tc.valid)
		}
		if got := ident.Chars(tc.s, 8); got != tc.chars {
			t.Errorf("Chars(%q, 8) = %v, want %v", tc.s, got, tc.chars)
		}
	}
}
