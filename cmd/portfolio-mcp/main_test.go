package main_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/kobuild"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/proctest"
)

var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// buildServer compiles this command, static and stripped as in the image, once per
// test binary run.
func buildServer(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		if build.dir, build.err = os.MkdirTemp("", "portfolio-mcp-test"); build.err != nil {
			return
		}
		build.bin = filepath.Join(build.dir, "portfolio-mcp")
		ko, err := kobuild.Load("portfolio-mcp")
		if err != nil {
			build.err = err
			return
		}
		out, err := ko.Command(context.Background(), "./cmd/portfolio-mcp", build.bin).CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}

func freePort(t testing.TB) int { return proctest.FreePort(t) }

// waitReady polls /readyz as fast as the server answers and returns once it
// says 200, or fails after a generous deadline.
func waitReady(t testing.TB, port int) {
	t.Helper()
	if err := proctest.PollReady(fmt.Sprintf("http://127.0.0.1:%d", port), nil); err != nil {
		t.Fatal(err)
	}
}

// TestSIGTERMDrainsAndExitsZero runs the real binary, sends SIGTERM and
// expects a clean drain (exit 0, "drained" logged).
func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	bin := buildServer(t)
	port := freePort(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "K_SERVICE=portfolio-mcp-paper", "K_REVISION=portfolio-mcp-paper-00001")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, port)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stdout.String())
	}
	logs := stdout.String()
	for _, want := range []string{`"msg":"draining"`, `"msg":"drained"`, `"k_revision":"portfolio-mcp-paper-00001"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
}

// TestBadConfigExitsTwo checks the start-up contract: exit code 2 and one
// line naming the variable.
func TestBadConfigExitsTwo(t *testing.T) {
	bin := buildServer(t)
	tests := map[string]string{
		"PORT=eighty":           "PORT",
		"LOG_LEVEL=loud":        "LOG_LEVEL",
		"DRAIN_TIMEOUT=forever": "DRAIN_TIMEOUT",
		"LISTEN_HOST=0.0.0.0":   "OAUTH_ISSUER",
		"TRADING_MODE=yolo":     "TRADING_MODE",
		"PORTFOLIO_URL=ftp://x": "PORTFOLIO_URL",
		// An issuer with no keys to sign confirmations: refused at start,
		// not "ready" and failing on the first order.
		"OAUTH_ISSUER=https://issuer.example PUBLIC_URL=https://mcp.example/mcp": "request-state-key",
		"SECRETS_DIR=/nonexistent-secrets":                                       "SECRETS_DIR",
	}
	for env, name := range tests {
		t.Run(env, func(t *testing.T) {
			cmd := exec.Command(bin)
			cmd.Env = append(os.Environ(), strings.Fields(env)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit: %v, want code 2", err)
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], name) {
				t.Errorf("stderr %q: want one line naming %s", stderr.String(), name)
			}
		})
	}
}

// TestFlags: --help and --version print and exit 0 without serving; an
// unknown flag or an argument is a usage error (exit 2, usage on stderr).
func TestFlags(t *testing.T) {
	bin := buildServer(t)
	tests := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"--help"}, 0, "Usage: portfolio-mcp", ""},
		{[]string{"-h"}, 0, "configured by environment variables", ""},
		{[]string{"--version"}, 0, "portfolio-mcp dev go1.", ""},
		{[]string{"--bogus"}, 2, "", "Usage: portfolio-mcp"},
		{[]string{"serve"}, 2, "", "takes no arguments"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			// A port that is taken: if the flag started a server, it would fail.
			cmd.Env = append(os.Environ(), "PORT=1")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

// BenchmarkStartup measures exec to /readyz 200 of the stripped binary and
// reports its idle RSS. Run: go test ./cmd/portfolio-mcp -run '^$' -bench Startup -benchtime 20x
func BenchmarkStartup(b *testing.B) {
	bin := buildServer(b)
	var rssKB float64
	var total time.Duration
	b.ResetTimer()
	for b.Loop() {
		port := freePort(b)
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "LOG_LEVEL=warn")
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		waitReady(b, port)
		elapsed := time.Since(start)
		b.StopTimer()
		total += elapsed
		rssKB = float64(proctest.StatusKB(b, cmd.Process.Pid, "VmRSS:"))
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms-to-ready")
	b.ReportMetric(rssKB/1024, "MB-RSS-idle")
}
