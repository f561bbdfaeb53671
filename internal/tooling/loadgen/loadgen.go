// Package loadgen drives an MCP server with tools/call requests over
// Streamable HTTP and measures what a client sees: throughput, latency
// distribution and errors by kind. It speaks raw JSON-RPC (one POST per
// call, as a stateless server expects) so the generator's own cost stays
// small next to the server's. Every run is bounded by a duration.
package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Call is one weighted entry of the request mix.
type Call struct {
	Tool      string
	Arguments json.RawMessage
	Weight    int
}

// Config describes one run.
type Config struct {
	URL         string        // the MCP endpoint, e.g. https://route/mcp
	Token       string        // bearer token, optional
	Protocol    string        // 2026-07-28, 2025-11-25 or 2025-06-18
	Mix         []Call        // at least one
	Concurrency int           // workers (closed loop) or max in flight (open loop)
	Rate        float64       // target calls/s; 0 runs closed loop as fast as responses allow
	Duration    time.Duration // required: the run stops after it
	MaxCalls    int64         // optional cap on calls (0: none)
	Timeout     time.Duration // per call
	Seed        uint64        // for the mix choice
	// Progress, if set, is called about once a second with a snapshot.
	Progress func(Snapshot)
}

// Snapshot is the state of a run so far.
type Snapshot struct {
	Elapsed  time.Duration
	Calls    int64
	Errors   int64
	P50, P99 time.Duration
}

// Result summarises a run.
type Result struct {
	Calls  int64            `json:"calls"`
	OK     int64            `json:"ok"`
	Errors map[string]int64 `json:"errors"` // by kind: rate_limited, tool_error, jsonrpc_<code>, http_<status>, timeout, transport
	// Samples holds, per error kind, what the first such answer said (the
	// JSON-RPC code and message, the tool's text), so a run that fails says
	// why.
	Samples    map[string]string `json:"error_samples,omitempty"`
	Duration   time.Duration     `json:"duration_ns"`
	Throughput float64           `json:"throughput_per_s"`
	LatencyMS  Latency           `json:"latency_ms"`
	ByTool     map[string]int64  `json:"by_tool"`
}

// Latency percentiles in milliseconds.
type Latency struct {
	Min, P50, P90, P99, P999, Max, Mean float64
}

// Validate checks a configuration before any traffic is sent.
func (c *Config) Validate() error {
	switch {
	case c.URL == "":
		return errors.New("a target URL is required")
	case c.Duration <= 0:
		return errors.New("an explicit duration is required (runs are always bounded)")
	case c.Duration > time.Hour:
		return errors.New("duration above 1h refused: split the run")
	case len(c.Mix) == 0:
		return errors.New("at least one tool call is required")
	case c.Concurrency < 1 || c.Concurrency > 10000:
		return errors.New("concurrency must be 1..10000")
	case c.Rate < 0:
		return errors.New("rate must not be negative")
	}
	switch c.Protocol {
	case "2026-07-28", "2025-11-25", "2025-06-18":
	default:
		return fmt.Errorf("protocol %q: use 2026-07-28, 2025-11-25 or 2025-06-18", c.Protocol)
	}
	for _, m := range c.Mix {
		if m.Tool == "" || m.Weight < 1 {
			return errors.New("every mix entry needs a tool name and a positive weight")
		}
		if len(m.Arguments) > 0 && !json.Valid(m.Arguments) {
			return fmt.Errorf("arguments of %s are not valid JSON", m.Tool)
		}
	}
	return nil
}

type recorder struct {
	mu      sync.Mutex
	hist    *hdrhistogram.Histogram
	errs    map[string]int64
	samples map[string]string
	byTool  map[string]int64
	ok      int64
	calls   atomic.Int64
	failed  atomic.Int64
}

func (r *recorder) record(tool string, d time.Duration, kind string) {
	r.recordSample(tool, d, kind, "")
}

// recordSample records a call, and for an error kind not seen before what
// the answer said.
func (r *recorder) recordSample(tool string, d time.Duration, kind, sample string) {
	r.calls.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hist.RecordValue(d.Microseconds())
	r.byTool[tool]++
	if kind == "" {
		r.ok++
		return
	}
	r.failed.Add(1)
	r.errs[kind]++
	if _, seen := r.samples[kind]; !seen && sample != "" {
		if r.samples == nil {
			r.samples = map[string]string{}
		}
		r.samples[kind] = sample
	}
}

// Run sends load until Duration, MaxCalls or ctx ends, whichever is first.
func Run(ctx context.Context, c Config) (Result, error) {
	if err := c.Validate(); err != nil {
		return Result{}, err
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	bodies, weights := c.prepare()
	client := &http.Client{
		Timeout: c.Timeout,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        c.Concurrency * 2,
			MaxIdleConnsPerHost: c.Concurrency * 2,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	defer client.CloseIdleConnections()
	rec := &recorder{hist: hdrhistogram.New(1, 120_000_000, 3), errs: map[string]int64{}, byTool: map[string]int64{}}

	ctx, cancel := context.WithTimeout(ctx, c.Duration)
	defer cancel()
	start := time.Now()
	stopProgress := c.progress(ctx, start, rec)
	defer stopProgress()

	var issued atomic.Int64
	take := func() bool { // reserve one call within MaxCalls
		return c.MaxCalls == 0 || issued.Add(1) <= c.MaxCalls
	}
	var wg sync.WaitGroup
	if c.Rate == 0 {
		for w := range c.Concurrency {
			rng := rand.New(rand.NewPCG(c.Seed, uint64(w)))
			wg.Go(func() {
				for ctx.Err() == nil && take() {
					i := pick(rng, weights)
					c.call(ctx, client, rec, c.Mix[i].Tool, bodies[i])
				}
			})
		}
	} else {
		// Open loop: arrivals on a fixed schedule, independent of responses,
		// so queueing at the server shows up as latency, not as fewer calls.
		slots := make(chan struct{}, c.Concurrency)
		rng := rand.New(rand.NewPCG(c.Seed, 0))
		interval := time.Duration(float64(time.Second) / c.Rate)
		next := time.Now()
	loop:
		for take() {
			select {
			case <-ctx.Done():
				break loop
			case <-time.After(time.Until(next)):
			}
			next = next.Add(interval)
			select {
			case slots <- struct{}{}:
			default:
				rec.record("(dropped)", 0, "client_saturated")
				continue
			}
			i := pick(rng, weights)
			wg.Go(func() {
				defer func() { <-slots }()
				c.call(ctx, client, rec, c.Mix[i].Tool, bodies[i])
			})
		}
	}
	wg.Wait()
	return rec.result(time.Since(start)), nil
}

func (c *Config) prepare() ([][]byte, []int) {
	bodies := make([][]byte, len(c.Mix))
	weights := make([]int, len(c.Mix))
	for i, m := range c.Mix {
		params := map[string]any{"name": m.Tool}
		if len(m.Arguments) > 0 {
			params["arguments"] = m.Arguments
		}
		if c.Protocol >= "2026-07-28" {
			params["_meta"] = map[string]any{
				"io.modelcontextprotocol/protocolVersion":    c.Protocol,
				"io.modelcontextprotocol/clientInfo":         map[string]string{"name": "mcpload", "version": "1"},
				"io.modelcontextprotocol/clientCapabilities": map[string]any{},
			}
		}
		bodies[i], _ = json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
		weights[i] = m.Weight
	}
	return bodies, weights
}

func pick(rng *rand.Rand, weights []int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	n := rng.IntN(total)
	for i, w := range weights {
		if n < w {
			return i
		}
		n -= w
	}
	return len(weights) - 1
}

// call sends one request and classifies the answer.
func (c *Config) call(ctx context.Context, client *http.Client, rec *recorder, tool string, body []byte) {
	req, err := http.NewRequestWithContext(ctx, "POST", c.URL, bytes.NewReader(body))
	if err != nil {
		rec.record(tool, 0, "transport")
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", c.Protocol)
	if c.Protocol >= "2026-07-28" {
		// 2026-07-28 routes on headers that repeat the body's method and name.
		req.Header.Set("Mcp-Method", "tools/call")
		req.Header.Set("Mcp-Name", tool)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return // the run ended while this call was in flight: not a sample
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			rec.record(tool, time.Since(start), "timeout")
		} else {
			rec.record(tool, time.Since(start), "transport")
		}
		return
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			return // the run ended while the body was being read: not a sample
		}
		rec.record(tool, elapsed, "transport")
		return
	}
	kind, sample := classify(resp.StatusCode, data)
	rec.recordSample(tool, elapsed, kind, sample)
}

// codeRateLimited is portfolio-mcp's JSON-RPC code for a rate-limit
// refusal, also in a refused tool result's _meta.
const codeRateLimited = -32029

// classify returns "" for a successful tool result, else the error kind and
// what the answer said.
func classify(status int, body []byte) (kind, sample string) {
	var msg struct {
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		Result *struct {
			IsError bool `json:"isError"`
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
			Meta map[string]struct {
				Code int `json:"code"`
			} `json:"_meta"`
		} `json:"result"`
	}
	err := json.Unmarshal(body, &msg)
	switch {
	case status != http.StatusOK && err == nil && msg.Error != nil:
		return "http_" + strconv.Itoa(status), fmt.Sprintf("%d %s", msg.Error.Code, msg.Error.Message)
	case status != http.StatusOK:
		return "http_" + strconv.Itoa(status), strings.TrimSpace(string(body[:min(len(body), 200)]))
	case err != nil:
		return "bad_response", "not JSON-RPC: " + string(body[:min(len(body), 200)])
	case msg.Error != nil && msg.Error.Code == codeRateLimited:
		return "rate_limited", msg.Error.Message
	case msg.Error != nil:
		return "jsonrpc_" + strconv.Itoa(msg.Error.Code), msg.Error.Message
	case msg.Result == nil:
		return "bad_response", "neither result nor error"
	case !msg.Result.IsError:
		return "", ""
	}
	text := ""
	if len(msg.Result.Content) > 0 {
		text = msg.Result.Content[0].Text
	}
	for _, m := range msg.Result.Meta {
		if m.Code == codeRateLimited {
			return "rate_limited", text
		}
	}
	return "tool_error", text
}

func (c *Config) progress(ctx context.Context, start time.Time, rec *recorder) func() {
	if c.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				rec.mu.Lock()
				s := Snapshot{Elapsed: time.Since(start), Calls: rec.calls.Load(), Errors: rec.failed.Load(),
					P50: time.Duration(rec.hist.ValueAtQuantile(50)) * time.Microsecond,
					P99: time.Duration(rec.hist.ValueAtQuantile(99)) * time.Microsecond}
				rec.mu.Unlock()
				c.Progress(s)
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (r *recorder) result(elapsed time.Duration) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	ms := func(us int64) float64 { return float64(us) / 1000 }
	res := Result{
		Calls: r.calls.Load(), OK: r.ok, Errors: r.errs, Samples: r.samples, Duration: elapsed, ByTool: r.byTool,
		LatencyMS: Latency{
			Min: ms(r.hist.Min()), P50: ms(r.hist.ValueAtQuantile(50)), P90: ms(r.hist.ValueAtQuantile(90)),
			P99: ms(r.hist.ValueAtQuantile(99)), P999: ms(r.hist.ValueAtQuantile(99.9)), Max: ms(r.hist.Max()),
			Mean: r.hist.Mean() / 1000,
		},
	}
	if elapsed > 0 {
		res.Throughput = float64(res.Calls) / elapsed.Seconds()
	}
	return res
}
