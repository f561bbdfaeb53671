package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/audittest"
)

// TestCommand runs auditverify as an operator would: keys made by keygen,
// kept as a file or as a mounted Secret's directory, trails from files or
// stdin; the exit status says whether the trail verifies.
func TestCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"keygen", "2026-07"}, nil, &out, &errOut); code != exitOK {
		t.Fatalf("keygen: exit %d: %s", code, errOut.String())
	}
	var secret, public string
	for _, l := range strings.Split(out.String(), "\n") {
		switch {
		case strings.HasPrefix(l, "#") || l == "":
		case secret == "":
			secret = l
		default:
			public = l
		}
	}
	if k, err := audit.ParseKeys([]byte(public)); err != nil || k.Active != "" {
		t.Fatalf("keygen's public line %q: %v (active %q)", public, err, k.Active)
	}

	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	trail := audittest.Trail(t, secret, 5)
	lines := audittest.Lines(trail)
	clean := write("clean.jsonl", trail)
	edited := write("edited.jsonl", audittest.Join(audittest.Edit(t, lines, 2, "principal", "mallory")))
	pub := write("keys.pub", []byte("# published audit keys\n"+public+"\n"))
	// A mounted Secret: the data behind ..data, each key a link to it.
	write("mounted/..2026_07_01/audit-signing-key", []byte(secret))
	os.Symlink("..2026_07_01", filepath.Join(dir, "mounted", "..data"))
	os.Symlink(filepath.Join("..data", "audit-signing-key"), filepath.Join(dir, "mounted", "audit-signing-key"))

	for _, c := range []struct {
		name   string
		args   []string
		stdin  string
		code   int
		stdout string // a line of it
		stderr string
	}{
		{"clean trail", []string{"-keys", pub, clean}, "", exitOK, "OK: 1 stream(s)", ""},
		{"from stdin", []string{"-keys", pub}, string(trail), exitOK, "OK: 1 stream(s)", ""},
		{"the mounted secret as keys", []string{"-keys", filepath.Join(dir, "mounted"), clean}, "", exitOK, "OK: 1 stream(s)", "holds a private key"},
		{"edited trail", []string{"-keys", pub, edited}, "", exitProblem, "seq 2 edited", ""},
		{"no keys", []string{clean}, "", exitUsage, "", "-keys is required"},
		{"no such trail", []string{"-keys", pub, filepath.Join(dir, "missing")}, "", exitUsage, "", "no such file"},
		{"keygen without an id", []string{"keygen"}, "", exitUsage, "", "usage: auditverify keygen"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(c.args, strings.NewReader(c.stdin), &out, &errOut)
			if code != c.code || !strings.Contains(out.String(), c.stdout) || !strings.Contains(errOut.String(), c.stderr) {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, c.code, out.String(), errOut.String())
			}
		})
	}
}
