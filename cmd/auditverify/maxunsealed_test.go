package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/audittest"
)

// TestReviewNegativeMaxUnsealed: -max-unsealed is "the longest unsealed
// tail accepted". A negative value is converted to uint64 in
// verify.(*streamCheck).tail and becomes 2^64-1: any unsealed tail, of any
// length, is accepted. It must be refused as a usage error (exit 2), as 2
// (the bound below the tail here) is refused as a problem.
// TestMaxUnsealed: -open -max-unsealed N fails a longer unsealed tail, and
// a negative N is a usage error (not "no limit at all").
func TestMaxUnsealed(t *testing.T) {
	_, public := audittest.Key(t, "2026-07")
	forger, _ := audittest.Key(t, "forger")
	dir := t.TempDir()
	trail := filepath.Join(dir, "forged.jsonl")
	keys := filepath.Join(dir, "keys.pub")
	os.WriteFile(trail, audittest.Join(audittest.Lines(audittest.Trail(t, forger, 3))[:3]), 0o600)
	os.WriteFile(keys, []byte(public+"\n"), 0o600)

	for _, c := range []struct {
		max  string
		code int
	}{{"2", exitProblem}, {"-1", exitUsage}} {
		var out, errOut bytes.Buffer
		code := run([]string{"-keys", keys, "-open", "-max-unsealed", c.max, trail}, strings.NewReader(""), &out, &errOut)
		if code != c.code {
			t.Errorf("-open -max-unsealed %s on 3 unsealed events: exit %d, want %d\n%s%s", c.max, code, c.code, out.String(), errOut.String())
		}
	}
}
