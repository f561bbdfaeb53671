// Command mcpload is a load generator for MCP servers over Streamable HTTP.
// Aim it at a deployment (or a laptop run) with a bounded duration:
//
//	mcpload -url http://127.0.0.1:8080/mcp -d 10s -c 16 \
//	  -call 'search_equities:{"query":"bank","limit":20}' -call '2*get_quotes:{"tickers":["AAPL"]}'
//
// The bearer token comes from -token-file or $MCPLOAD_TOKEN (never a flag,
// so it stays out of shell history and process lists).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/loadgen"
)

type callFlags []loadgen.Call

func (c *callFlags) String() string { return fmt.Sprint(len(*c), " calls") }

// Set parses [weight*]tool[:json-arguments].
func (c *callFlags) Set(v string) error {
	weight := 1
	if w, rest, ok := strings.Cut(v, "*"); ok && !strings.ContainsAny(w, ":{") {
		n, err := strconv.Atoi(w)
		if err != nil || n < 1 {
			return fmt.Errorf("weight %q is not a positive integer", w)
		}
		weight, v = n, rest
	}
	tool, args, _ := strings.Cut(v, ":")
	call := loadgen.Call{Tool: tool, Weight: weight}
	if args != "" {
		if !json.Valid([]byte(args)) {
			return fmt.Errorf("arguments of %s are not valid JSON", tool)
		}
		call.Arguments = json.RawMessage(args)
	}
	*c = append(*c, call)
	return nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mcpload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		calls     callFlags
		url       = fs.String("url", "", "MCP endpoint URL (required), e.g. https://portfolio-mcp.example.com/mcp")
		duration  = fs.Duration("d", 0, "run duration (required), e.g. 30s")
		conc      = fs.Int("c", 16, "concurrent workers (closed loop) or max in flight (with -rate)")
		rate      = fs.Float64("rate", 0, "target calls per second (open loop); 0 = as fast as responses allow")
		maxCalls  = fs.Int64("n", 0, "stop after this many calls (0: duration only)")
		protocol  = fs.String("protocol", "2025-11-25", "MCP protocol version: 2026-07-28, 2025-11-25 or 2025-06-18")
		timeout   = fs.Duration("timeout", 30*time.Second, "per-call timeout")
		tokenFile = fs.String("token-file", "", "file holding the bearer token (default: $MCPLOAD_TOKEN)")
		jsonOut   = fs.Bool("json", false, "print the result as JSON on stdout")
		quiet     = fs.Bool("q", false, "no progress line")
		seed      = fs.Uint64("seed", 1, "seed for choosing calls from the mix")
	)
	fs.Var(&calls, "call", "a call in the mix: [weight*]tool[:json-arguments]; repeatable (default search_equities)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if len(calls) == 0 {
		calls = callFlags{{Tool: "search_equities", Arguments: json.RawMessage(`{"query":"in","limit":20}`), Weight: 1}}
	}
	token := os.Getenv("MCPLOAD_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintln(stderr, "mcpload:", err)
			return 2
		}
		token = strings.TrimSpace(string(b))
	}
	cfg := loadgen.Config{
		URL: *url, Token: token, Protocol: *protocol, Mix: calls, Concurrency: *conc, Rate: *rate,
		Duration: *duration, MaxCalls: *maxCalls, Timeout: *timeout, Seed: *seed,
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "mcpload:", err)
		fs.Usage()
		return 2
	}
	if !*quiet {
		cfg.Progress = func(s loadgen.Snapshot) {
			fmt.Fprintf(stderr, "\r%5.1fs  %8d calls  %8.0f/s  %6d errors  p50 %6.2fms  p99 %6.2fms ",
				s.Elapsed.Seconds(), s.Calls, float64(s.Calls)/s.Elapsed.Seconds(), s.Errors,
				float64(s.P50.Microseconds())/1000, float64(s.P99.Microseconds())/1000)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := loadgen.Run(ctx, cfg)
	if !*quiet {
		fmt.Fprintln(stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "mcpload:", err)
		return 1
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	} else {
		printSummary(stdout, res)
	}
	if res.OK == 0 {
		fmt.Fprintln(stderr, "mcpload: no call succeeded")
		return 1
	}
	return 0
}

func printSummary(w io.Writer, r loadgen.Result) {
	l := r.LatencyMS
	fmt.Fprintf(w, "calls        %d in %.1fs (%.0f/s), %d ok\n", r.Calls, r.Duration.Seconds(), r.Throughput, r.OK)
	fmt.Fprintf(w, "latency ms   min %.2f  p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f\n",
		l.Min, l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean)
	keys := make([]string, 0, len(r.Errors))
	for k := range r.Errors {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "errors       %-18s %d", k, r.Errors[k])
		if s := r.Samples[k]; s != "" {
			fmt.Fprintf(w, "  e.g. %s", s)
		}
		fmt.Fprintln(w)
	}
	if len(keys) == 0 {
		fmt.Fprintln(w, "errors       none")
	}
	if n := r.Errors["rate_limited"]; n > 0 {
		fmt.Fprintf(w, "note         %d calls (%.0f%%) were refused by the server's per-principal rate limit, not failed:\n"+
			"             one token sends all the load. Lower -c or set -rate below the limit, or, for a throughput\n"+
			"             run, raise the limit on the server under test (portfolio-mcp: RATE_READ_PER_SECOND,\n"+
			"             RATE_READ_BURST, RATE_TRADE_PER_MINUTE).\n", n, 100*float64(n)/float64(max(r.Calls, 1)))
	}
}
