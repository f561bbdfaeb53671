package loadgen_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/loadgen"
)

// fakeMCP answers tools/call by tool name: ok, a tool error, a JSON-RPC
// error, or HTTP 503; it records what it saw.
func fakeMCP(t *testing.T, seen *atomic.Int64, sawMeta *atomic.Bool) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		if r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get("MCP-Protocol-Version") == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var req struct {
			Params struct {
				Name string         `json:"name"`
				Meta map[string]any `json:"_meta"`
			} `json:"params"`
		}
		json.Unmarshal(body, &req)
		if req.Params.Meta["io.modelcontextprotocol/protocolVersion"] == "2026-07-28" {
			sawMeta.Store(true)
		}
		switch req.Params.Name {
		case "ok":
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
		case "tool_error":
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}`)
		case "rpc_error":
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}`)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
}

func TestRunClassifiesAndBounds(t *testing.T) {
	var seen atomic.Int64
	var sawMeta atomic.Bool
	srv := fakeMCP(t, &seen, &sawMeta)
	defer srv.Close()
	res, err := loadgen.Run(t.Context(), loadgen.Config{
		URL: srv.URL, Token: "tok", Protocol: "2026-07-28", Concurrency: 4, Duration: time.Minute, MaxCalls: 400,
		Mix: []loadgen.Call{{Tool: "ok", Weight: 1}, {Tool: "tool_error", Weight: 1}, {Tool: "rpc_error", Weight: 1}, {Tool: "down", Weight: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Calls != 400 || seen.Load() != 400 {
		t.Fatalf("calls %d, server saw %d; want 400 (MaxCalls)", res.Calls, seen.Load())
	}
	if res.OK+res.Errors["tool_error"]+res.Errors["jsonrpc_-32602"]+res.Errors["http_503"] != 400 || res.OK == 0 ||
		res.Errors["tool_error"] == 0 || res.Errors["jsonrpc_-32602"] == 0 || res.Errors["http_503"] == 0 {
		t.Fatalf("classification: ok %d, errors %v", res.OK, res.Errors)
	}
	if !sawMeta.Load() {
		t.Error("2026-07-28 requests carry no protocol _meta")
	}
	if res.LatencyMS.P50 <= 0 || res.LatencyMS.Max < res.LatencyMS.P99 || res.ByTool["ok"] == 0 {
		t.Errorf("latency %+v by tool %v", res.LatencyMS, res.ByTool)
	}
}

func TestRunOpenLoopStopsAtDuration(t *testing.T) {
	var seen atomic.Int64
	var sawMeta atomic.Bool
	srv := fakeMCP(t, &seen, &sawMeta)
	defer srv.Close()
	res, err := loadgen.Run(t.Context(), loadgen.Config{
		URL: srv.URL, Token: "tok", Protocol: "2025-11-25", Concurrency: 8, Rate: 200, Duration: 300 * time.Millisecond,
		Mix: []loadgen.Call{{Tool: "ok", Weight: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// At 200/s for 0.3s the schedule holds at most 61 arrivals.
	if res.Calls == 0 || res.Calls > 61 || res.OK != res.Calls {
		t.Fatalf("open loop made %d calls (%d ok)", res.Calls, res.OK)
	}
}

func TestValidate(t *testing.T) {
	base := loadgen.Config{URL: "http://x/mcp", Protocol: "2025-11-25", Concurrency: 1, Duration: time.Second, Mix: []loadgen.Call{{Tool: "t", Weight: 1}}}
	tests := map[string]func(c *loadgen.Config){
		"duration":    func(c *loadgen.Config) { c.Duration = 0 },
		"url":         func(c *loadgen.Config) { c.URL = "" },
		"protocol":    func(c *loadgen.Config) { c.Protocol = "2024-01-01" },
		"mix":         func(c *loadgen.Config) { c.Mix = nil },
		"weight":      func(c *loadgen.Config) { c.Mix = []loadgen.Call{{Tool: "t"}} },
		"arguments":   func(c *loadgen.Config) { c.Mix = []loadgen.Call{{Tool: "t", Weight: 1, Arguments: []byte("{")}} },
		"concurrency": func(c *loadgen.Config) { c.Concurrency = 0 },
	}
	for name, mutate := range tests {
		c := base
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), map[string]string{
			"duration": "duration", "url": "URL", "protocol": "protocol", "mix": "tool", "weight": "weight", "arguments": "JSON", "concurrency": "concurrency",
		}[name]) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
}
