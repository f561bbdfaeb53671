package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/kobuild"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/proctest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/loadgen"
)

// TestInstructions counts the instructions one tools/call search_equities
// costs the server, with valgrind's callgrind, which counts instructions
// rather than time and so does not move with the machine's noise (two runs
// agree within 1%). Each server runs twice, for N and for 2N sequential
// calls from mcpload, counting from readiness to the last answer, and the
// cost of a call is (Ir(2N) - Ir(N)) / N: what a run costs whatever its
// length (the first calls' warm-up) cancels out. Go's asynchronous preemption signals abort
// callgrind, hence GODEBUG=asyncpreemptoff=1, and valgrind 3.19 cannot
// execute RDTSCP, which the runtime's cputicks uses, hence cpu.rdtscp=off. Each row is measured with
// Go's default GC and with GOGC=off (what the call itself executes, GC
// excluded). Bytes allocated per call come from the server's own
// go_memstats_alloc_bytes_total over 2N calls run natively.
//
//	BENCH_ICOUNT=1 go test ./internal/tooling/bench -count=1 -run TestInstructions -v -timeout 30m
//
// BENCH_ICOUNT_N (default 400) sets N; BENCH_ICOUNT_OUT, a directory, keeps
// the callgrind dumps there (one per run, named after the row) and builds
// the binaries with their symbols, for callgrind_annotate.
func TestInstructions(t *testing.T) {
	if os.Getenv("BENCH_ICOUNT") == "" {
		t.Skip("set BENCH_ICOUNT=1 to count instructions per call under callgrind (several minutes)")
	}
	if _, err := exec.LookPath("valgrind"); err != nil {
		t.Skip("valgrind is not installed")
	}
	n := 400
	if v, err := strconv.Atoi(os.Getenv("BENCH_ICOUNT_N")); err == nil && v >= 10 {
		n = v
	}
	dir := t.TempDir()
	bins := buildAll(t, dir, "baseline", "mcpgo", "portfolio-mcp", "mcpload")
	dumps := dir
	if out := os.Getenv("BENCH_ICOUNT_OUT"); out != "" {
		dumps = out
	}

	iss := oauthtest.New(t)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }))
	t.Cleanup(sink.Close)
	tokenFile := benchToken(t, iss, dir)
	common, prod := benchEnv(iss, sink.URL)

	type variant struct {
		name     string
		target   target
		protocol string
	}
	var variants []variant
	for _, p := range []string{"2025-11-25", "2026-07-28"} {
		if p == "2025-11-25" { // the baseline and mcp-go speak the initialize-era generation
			variants = append(variants,
				variant{"plain net/http (bench/baseline)", target{bin: bins["baseline"]}, p},
				variant{"mark3labs/mcp-go v1.2.1, no governance (bench/mcpgo)", target{bin: bins["mcpgo"]}, p})
		}
		variants = append(variants,
			variant{"portfolio-mcp, dev mode", target{bin: bins["portfolio-mcp"], env: common}, p},
			variant{"portfolio-mcp, production", target{bin: bins["portfolio-mcp"], env: prod, auth: true}, p})
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\ninstructions per tools/call search_equities, (Ir(%d calls) - Ir(%d calls)) / %d, callgrind\n\n", 2*n, n, n)
	fmt.Fprintf(&b, "| server | protocol | Ir/call | baseline/x | Ir/call, GOGC=off | bytes allocated/call |\n|---|---|---|---|---|---|\n")
	var baseIr float64
	for _, v := range variants {
		v.target.name = v.name
		per := map[string]float64{}
		for _, gc := range []string{"", "GOGC=off"} {
			tg := v.target
			if gc != "" {
				tg.env = append(append([]string(nil), tg.env...), gc)
			}
			name := strings.NewReplacer(" ", "_", ",", "", "/", "", "(", "", ")", "").Replace(fmt.Sprintf("%s_%s_%s", v.name, v.protocol, gc))
			ir1 := callgrindRun(t, tg, bins["mcpload"], tokenFile, v.protocol, n, filepath.Join(dumps, name+".n"))
			ir2 := callgrindRun(t, tg, bins["mcpload"], tokenFile, v.protocol, 2*n, filepath.Join(dumps, name+".2n"))
			per[gc] = float64(ir2-ir1) / float64(n)
		}
		if baseIr == 0 {
			baseIr = per[""]
		}
		alloc := "n/a"
		if v.target.bin == bins["portfolio-mcp"] { // the others have no /metrics
			alloc = fmt.Sprintf("%.1f KB", allocPerCall(t, v.target, bins["mcpload"], tokenFile, v.protocol, 2*n)/1000)
		}
		fmt.Fprintf(&b, "| %s | %s | %.2f M | %.2f | %.2f M | %s |\n", v.name, v.protocol, per[""]/1e6, baseIr/per[""], per["GOGC=off"]/1e6, alloc)
	}
	t.Log(b.String())
}

const benchPublic = "http://127.0.0.1/mcp"

// benchEnv is the server's environment in dev mode (no authentication,
// audit to the log) and in production mode (bearer tokens from iss, audit
// CloudEvents to sink, the signing secrets production requires). Rate
// limits are lifted: the load is one token's.
func benchEnv(iss *oauthtest.Issuer, sink string) (dev, prod []string) {
	dev = []string{"LOG_LEVEL=error", "RATE_READ_PER_SECOND=1000000", "RATE_READ_BURST=1000000", "DRAIN_DELAY=0s"}
	prod = append([]string{"OAUTH_ISSUER=" + iss.URL, "PUBLIC_URL=" + benchPublic, "K_SINK=" + sink,
		"SECRET_REQUEST_STATE_KEY=bench-request-state-key-0123456789abcdef",
		"SECRET_APPROVAL_EVENT_KEY=bench-approval-event-key-0123456789abcdef"}, dev...)
	return dev, prod
}

// buildAll builds the named commands of this repository into dir.
func buildAll(t *testing.T, dir string, names ...string) map[string]string {
	t.Helper()
	pkgs := map[string]string{
		"baseline": "./internal/tooling/bench/baseline", "initfloor": "./internal/tooling/bench/initfloor",
		"portfolio-mcp": "./cmd/portfolio-mcp", "mcpload": "./cmd/mcpload",
		"mcpgo": ".", // its own module, in internal/tooling/bench/mcpgo
	}
	// As ko.yaml builds the image: static (no libc or dynamic loader at
	// start), no paths, no symbol tables, without gRPC's x/net/trace.
	ko, err := kobuild.Load("portfolio-mcp")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("BENCH_ICOUNT_OUT") != "" {
		ko.Ldflags = nil // symbols, for callgrind_annotate
	}
	out := map[string]string{}
	for _, name := range names {
		bin := filepath.Join(dir, name)
		cmd := ko.Command(t.Context(), pkgs[name], bin)
		if name == "mcpgo" {
			cmd.Dir = "mcpgo"
		}
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, b)
		}
		out[name] = bin
	}
	return out
}

// benchToken writes a read-scoped token, valid for an hour, to a file.
func benchToken(t *testing.T, iss *oauthtest.Issuer, dir string) string {
	t.Helper()
	claims := iss.Claims("bench", benchPublic, "portfolio:read", "ACC-1001")
	claims["exp"] = time.Now().Add(time.Hour).Unix()
	f := filepath.Join(dir, "token")
	if err := os.WriteFile(f, []byte(iss.Token(t, claims)), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

var totals = regexp.MustCompile(`(?m)^(?:totals|summary): (\d+)`)

// callgrindRun serves calls sequential calls under callgrind and returns
// the instructions the process executed from readiness to the last answer:
// the counters are zeroed once the server is ready and dumped after the
// load (callgrind_control), and the process is then killed. (Letting it
// exit on SIGTERM is not an option: callgrind 3.19 asserts on Go's signal
// handling.)
func callgrindRun(t *testing.T, tg target, mcpload, tokenFile, protocol string, calls int, out string) int64 {
	t.Helper()
	p := startCallgrind(t, tg, out)
	defer p.stop()
	if err := proctest.PollReady(p.base, nil); err != nil {
		t.Fatalf("%s under callgrind: %v\n%s", tg.name, err, p.stderr.String())
	}
	p.control(t, "-z")
	load(t, tg, mcpload, tokenFile, p.base, protocol, calls)
	return p.dump(t)
}

// callgrindProc is a server running under callgrind.
type callgrindProc struct {
	name, base, out string
	cmd             *exec.Cmd
	stderr          *bytes.Buffer
}

// startCallgrind starts tg under callgrind, its dumps written to out.1,
// out.2, ...; stop kills it.
func startCallgrind(t *testing.T, tg target, out string) *callgrindProc {
	t.Helper()
	port := proctest.FreePort(t)
	p := &callgrindProc{name: tg.name, base: fmt.Sprintf("http://127.0.0.1:%d", port), out: out, stderr: &bytes.Buffer{},
		cmd: exec.Command("valgrind", "--tool=callgrind", "--fair-sched=yes", "--callgrind-out-file="+out, tg.bin)}
	p.cmd.Env = append(os.Environ(), append([]string{"PORT=" + strconv.Itoa(port), "GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off"}, tg.env...)...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *callgrindProc) stop() { p.cmd.Process.Kill(); p.cmd.Wait() }

// control runs callgrind_control with op (-z zeroes the counters, -d dumps).
func (p *callgrindProc) control(t *testing.T, op string) {
	t.Helper()
	if b, err := exec.Command("callgrind_control", op, strconv.Itoa(p.cmd.Process.Pid)).CombinedOutput(); err != nil {
		t.Fatalf("callgrind_control %s: %v: %s", op, err, b)
	}
}

// dump writes the counters' first dump and returns its instruction total.
func (p *callgrindProc) dump(t *testing.T) int64 {
	t.Helper()
	p.control(t, "-d")
	f, err := os.ReadFile(p.out + ".1")
	if err != nil {
		t.Fatalf("%s: no callgrind dump: %v\n%s", p.name, err, p.stderr.String())
	}
	m := totals.FindSubmatch(f)
	if m == nil {
		t.Fatalf("%s: no totals in %s", p.name, p.out)
	}
	ir, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return ir
}

// allocPerCall runs the server natively and reads how many bytes it
// allocated over calls sequential calls.
func allocPerCall(t *testing.T, tg target, mcpload, tokenFile, protocol string, calls int) float64 {
	t.Helper()
	_, base, stop := startReady(t, tg, false)
	defer stop()
	load(t, tg, mcpload, tokenFile, base, protocol, 20) // warm: caches, first-use allocations
	before := proctest.Metric(t, base, "go_memstats_alloc_bytes_total")
	load(t, tg, mcpload, tokenFile, base, protocol, calls)
	return (proctest.Metric(t, base, "go_memstats_alloc_bytes_total") - before) / float64(calls)
}

// load makes calls sequential calls with mcpload.
func load(t *testing.T, tg target, mcpload, tokenFile, base, protocol string, calls int) {
	t.Helper()
	args := []string{"-url", base + "/mcp", "-d", "20m", "-timeout", "5m", "-c", "1", "-n", strconv.Itoa(calls), "-protocol", protocol, "-q", "-json"}
	if tg.auth {
		args = append(args, "-token-file", tokenFile)
	}
	out, err := exec.Command(mcpload, args...).Output()
	if err != nil {
		t.Fatalf("%s: mcpload: %v: %s", tg.name, err, out)
	}
	var res loadgen.Result
	if err := json.Unmarshal(out, &res); err != nil || res.OK != int64(calls) {
		t.Fatalf("%s: not every call succeeded (%v): %s", tg.name, err, out)
	}
}

// TestAllocations is the bytes column of TestInstructions alone, without
// callgrind: what the server allocates per tools/call search_equities,
// from its own go_memstats_alloc_bytes_total, in dev and production mode
// on both protocol generations. About 20 seconds.
//
//	BENCH_ALLOC=1 go test ./internal/tooling/bench -count=1 -run TestAllocations -v
func TestAllocations(t *testing.T) {
	if os.Getenv("BENCH_ALLOC") == "" {
		t.Skip("set BENCH_ALLOC=1 to measure bytes allocated per call")
	}
	dir := t.TempDir()
	bins := buildAll(t, dir, "portfolio-mcp", "mcpload")
	iss := oauthtest.New(t)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }))
	t.Cleanup(sink.Close)
	tokenFile := benchToken(t, iss, dir)
	dev, prod := benchEnv(iss, sink.URL)
	var b strings.Builder
	fmt.Fprintf(&b, "\nbytes allocated per tools/call search_equities, over 800 calls\n\n| server | protocol | bytes allocated/call |\n|---|---|---|\n")
	for _, p := range []string{"2025-11-25", "2026-07-28"} {
		for _, tg := range []target{
			{name: "portfolio-mcp, dev mode", bin: bins["portfolio-mcp"], env: dev},
			{name: "portfolio-mcp, production", bin: bins["portfolio-mcp"], env: prod, auth: true},
		} {
			fmt.Fprintf(&b, "| %s | %s | %.1f KB |\n", tg.name, p, allocPerCall(t, tg, bins["mcpload"], tokenFile, p, 800)/1000)
		}
	}
	t.Log(b.String())
}
