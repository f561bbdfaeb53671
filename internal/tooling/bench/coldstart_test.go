package bench

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/proctest"
)

// TestColdStart measures exec-to-ready (the first 200 from /readyz, wall
// clock, each process pinned to startCPUs) of bench/initfloor (plain
// net/http linking the same libraries: the floor they set) and of the
// server in dev and production mode, in interleaved rounds, and reports
// each one's median and its idle resident memory.
//
//	BENCH_COLD=1 go test ./internal/tooling/bench -count=1 -run TestColdStart -v
//
// BENCH_COLD_ROUNDS (default 15) sets the rounds, BENCH_COLD_CPUS the CPUs
// (default 0; 0,1 is the deployed shape). With valgrind installed,
// each binary's instructions from exec to ready (callgrind, which the
// machine's noise does not move) are reported beside the wall clock.
func TestColdStart(t *testing.T) {
	if os.Getenv("BENCH_COLD") == "" {
		t.Skip("set BENCH_COLD=1 to measure exec-to-ready against the library floor")
	}
	rounds := 15
	if n, err := strconv.Atoi(os.Getenv("BENCH_COLD_ROUNDS")); err == nil && n >= 3 {
		rounds = n
	}
	targets := startTargets(t)
	// On this VM the same executable starts up to 10% faster or slower
	// from one file than from a copy of it (where the page cache put the
	// file, presumably: the fault counts are equal). Rounds rotate over
	// copies of each binary, so no row rests on one placement.
	copies := make([][]string, len(targets))
	for i, tg := range targets {
		copies[i] = fileCopies(t, tg.bin, 3)
	}
	starts := make([][]time.Duration, len(targets))
	for r := range rounds {
		for i, tg := range targets {
			run := tg
			run.bin = copies[i][r%len(copies[i])]
			starts[i] = append(starts[i], readyTimes(t, run, 1)...)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nexec to ready, median of %d interleaved rounds on CPUs %s\n\n| binary | exec→ready ms | x floor | idle RSS MB | of which anonymous | instructions exec→ready |\n|---|---|---|---|---|---|\n", rounds, startCPUs())
	var floor time.Duration
	for i, tg := range targets {
		slices.Sort(starts[i])
		med := starts[i][len(starts[i])/2]
		if i == 0 {
			floor = med
		}
		rss, anon := idleRSS(t, tg)
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.1f | %.1f | %s |\n", tg.name, ms(med), float64(med)/float64(floor), float64(rss)/1024, float64(anon)/1024, startupInstructions(t, tg))
	}
	t.Log(b.String())
}

// fileCopies returns bin and n-1 copies of it, each under its own
// directory with bin's name (the process name stays the same).
func fileCopies(t *testing.T, bin string, n int) []string {
	t.Helper()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{bin}
	for range n - 1 {
		p := filepath.Join(t.TempDir(), filepath.Base(bin))
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// startTargets builds the floor and the server and returns the starts the
// start-up tests compare: the floor, the server in dev and in production
// mode (against a real issuer and audit sink), and in dev mode whatever
// BENCH_EXTRA names ("name=/path/to/portfolio-mcp[;VAR=value...],...";
// TestStartFaults traces a process by the first 15 bytes of its file's
// name, so it must not start with "bench.test" or "taskset").
func startTargets(t *testing.T) []target {
	t.Helper()
	bins := buildAll(t, t.TempDir(), "initfloor", "portfolio-mcp")
	iss := oauthtest.New(t)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }))
	t.Cleanup(sink.Close)
	dev, prod := benchEnv(iss, sink.URL)
	return append([]target{
		{name: "bench/initfloor", bin: bins["initfloor"]},
		{name: "portfolio-mcp, dev mode", bin: bins["portfolio-mcp"], env: dev},
		{name: "portfolio-mcp, production", bin: bins["portfolio-mcp"], env: prod},
	}, extraTargets(dev, "dev mode")...)
}

// idleRSS starts tg, waits until it is ready, and reads its resident
// memory, in KiB: all of it, and the anonymous part (heap, stacks, written
// data). The rest is pages of the executable, which every replica of the
// image on a node shares through the page cache.
func idleRSS(t *testing.T, tg target) (rss, anon int64) {
	t.Helper()
	cmd, _, stop := startReady(t, tg, true)
	defer stop()
	return proctest.StatusKB(t, cmd.Process.Pid, "VmRSS:"), proctest.StatusKB(t, cmd.Process.Pid, "RssAnon:")
}

// startCPUs is the CPU list (taskset -c) the start-up measurements pin
// each process to: BENCH_COLD_CPUS, by default core 0 alone, which gives
// the most comparable rows. "0,1" is the deployed shape
// (knative/service-live.yaml gives 2 CPUs, and Go sets GOMAXPROCS from
// them), where start-up work on other goroutines runs beside main's.
func startCPUs() string {
	if c := os.Getenv("BENCH_COLD_CPUS"); c != "" {
		return c
	}
	return "0"
}

// startReady starts tg, pinned to startCPUs if pin (as TestColdStart runs
// it), and returns once it answers /readyz: its process, its base URL,
// and stop, which kills it.
func startReady(t *testing.T, tg target, pin bool) (cmd *exec.Cmd, base string, stop func()) {
	t.Helper()
	port := proctest.FreePort(t)
	cmd = exec.Command(tg.bin)
	if pin {
		cmd = exec.Command("taskset", "-c", startCPUs(), tg.bin)
	}
	cmd.Env = append(os.Environ(), append([]string{"PORT=" + strconv.Itoa(port)}, tg.env...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop = func() { cmd.Process.Kill(); cmd.Wait() }
	base = fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := proctest.PollReady(base, nil); err != nil {
		stop()
		t.Fatalf("%s: %v", tg.name, err)
	}
	return cmd, base, stop
}

// startupInstructions counts what tg executes from exec until its first
// ready /readyz, under callgrind ("n/a" without valgrind).
func startupInstructions(t *testing.T, tg target) string {
	t.Helper()
	if _, err := exec.LookPath("valgrind"); err != nil {
		return "n/a"
	}
	p := startCallgrind(t, tg, filepath.Join(t.TempDir(), "callgrind.out"))
	defer p.stop()
	// Polled every 20 ms, not as fast as the wall-clock rounds: each
	// answered poll is counted too.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(p.base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s under callgrind: not ready in a minute", tg.name)
		}
	}
	return fmt.Sprintf("%.1f M", float64(p.dump(t))/1e6)
}
