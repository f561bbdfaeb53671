package handlers

import (
	"regexp"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
)

// TestValidAccountID: the check behind the resource template, the prompts
// and the token's entitlements accepts exactly what the tools' input
// schemas accept (accountIDPattern); FuzzValidAccountID looks further.
func TestValidAccountID(t *testing.T) {
	schema := regexp.MustCompile(accountIDPattern)
	for _, id := range []string{
		"", "A", "ACC-1001", "acc.1_2-3", "-ACC", ".x", "_x", "ACC 1", "ACC/1", "ACC%2F", "ÄCC", "0", "9z",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 65), "a\n", "a\x00", "*",
	} {
		if got, want := principal.ValidAccountID(id), schema.MatchString(id); got != want {
			t.Errorf("ValidAccountID(%q) = %v, schema pattern says %v", id, got, want)
		}
	}
}

func FuzzValidAccountID(f *testing.F) {
	for _, s := range []string{"ACC-1001", "-x", "a.b", "Ä", strings.Repeat("z", 65)} {
		f.Add(s)
	}
	schema := regexp.MustCompile(accountIDPattern)
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := principal.ValidAccountID(id), schema.MatchString(id); got != want {
			t.Errorf("ValidAccountID(%q) = %v, schema pattern says %v", id, got, want)
		}
	})
}

// TestValidTicker: the quote resource accepts exactly the tickers the
// tools' input schemas accept (tickerPattern).
func TestValidTicker(t *testing.T) {
	schema := regexp.MustCompile(tickerPattern)
	for _, s := range []string{
		"", "A", "AAPL", "BRK.B", "BF-B", "aapl", "1A", ".A", "-A", "A1", "A 1", "A/B", "ÄPL", "ABCDEFGHIJ", "ABCDEFGHIJK", "A\n", "A_B",
	} {
		if got, want := validTicker(s), schema.MatchString(s); got != want {
			t.Errorf("validTicker(%q) = %v, schema pattern says %v", s, got, want)
		}
	}
}

func FuzzValidTicker(f *testing.F) {
	for _, s := range []string{"AAPL", "BRK.B", "1A", "ABCDEFGHIJK"} {
		f.Add(s)
	}
	schema := regexp.MustCompile(tickerPattern)
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validTicker(s), schema.MatchString(s); got != want {
			t.Errorf("validTicker(%q) = %v, schema pattern says %v", s, got, want)
		}
	})
}
