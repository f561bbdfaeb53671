package app_test

import (
	"bytes"
	"encoding/json"

	"io"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/portfolio-mcp/portfolio-mcp/internal/app"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
)

// diffCall is one JSON-RPC request of the differential test.
type diffCall struct {
	protocol     string
	body         string
	method, name string // the Mcp-Method and Mcp-Name headers
}

// rpc is a JSON-RPC request body; fields are the params' members, to which
// the 2026-07-28 per-request _meta is added.
func rpc(protocol, method, fields string) diffCall {
	if protocol >= "2026-07-28" {
		meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"` + protocol + `",` +
			`"io.modelcontextprotocol/clientInfo":{"name":"diff","version":"1"},` +
			`"io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}`
		if fields == "" {
			fields = meta
		} else {
			fields += "," + meta
		}
	}
	return diffCall{protocol: protocol, method: method, body: `{"jsonrpc":"2.0","id":1,"method":"` + method + `","params":{` + fields + `}}`}
}

func toolCall(protocol, name, args string) diffCall {
	fields := `"name":"` + name + `"`
	if args != "-" {
		fields += `,"arguments":` + args
	}
	c := rpc(protocol, "tools/call", fields)
	c.name = name
	return c
}

// diffCalls cover every tool: valid calls, defaults filled in, every kind of
// bad argument, tool errors, MRTR input requests and old-protocol
// confirmation, and protocol errors.
func diffCalls() []diffCall {
	const p, old = "2026-07-28", "2025-11-25"
	calls := []diffCall{
		rpc(p, "tools/list", ""),
		rpc(old, "tools/list", ""),
		func() diffCall {
			c := rpc(p, "prompts/get", `"name":"portfolio_review","arguments":{"account_id":"ACC-1001"}`)
			c.name = "portfolio_review"
			return c
		}(),
	}
	order := `{"account_id":"ACC-1001","ticker":"KO","side":"buy"`
	for _, c := range []struct{ name, args string }{
		{"search_equities", `{"query":"in","limit":20}`},
		{"search_equities", `{"query":"in"}`},
		{"search_equities", `{}`},
		{"search_equities", `-`},
		{"search_equities", `null`},
		{"search_equities", `{"limit":1.0}`},
		{"search_equities", `{"limit":2.5}`},
		{"search_equities", `{"limit":0}`},
		{"search_equities", `{"limit":"20"}`},
		{"search_equities", `{"limit":20,"limit":5}`},
		{"search_equities", `{"Query":"in"}`},
		{"search_equities", `{"bogus":true}`},
		{"search_equities", `{"sector":"Nope"}`},
		{"search_equities", `{"query":"in","limit":5,"cursor":"garbage"}`},
		{"search_equities", `[1]`},
		{"search_equities", `"x"`},
		{"search_equities", `{"query":"<script>&"}`},
		{"get_quotes", `{"tickers":["AAPL","MSFT","ZZZZ"]}`},
		{"get_quotes", `{"tickers":[]}`},
		{"get_quotes", `{"tickers":["bad ticker!"]}`},
		{"get_quotes", `{}`},
		{"list_accounts", `{}`},
		{"list_accounts", `-`},
		{"get_portfolio", `{"account_id":"ACC-1001"}`},
		{"get_portfolio", `{"account_id":"ACC-9999"}`},
		{"get_portfolio", `{"account_id":"../etc"}`},
		{"get_risk_summary", `{"account_id":"ACC-1001"}`},
		{"get_risk_summary", `{"account_id":42}`},
		{"preview_order", order + `,"quantity":10}`},
		{"preview_order", order + `,"quantity":10,"order_type":"limit","limit_price":1}`},
		{"preview_order", `{"account_id":"ACC-1001","ticker":"KO","quantity":10}`},
		{"preview_order", order + `,"quantity":-1}`},
		{"place_order", order + `,"quantity":10,"idempotency_key":"diff-key-1"}`},
		{"place_order", order + `,"quantity":10,"idempotency_key":"diff-key-1","confirm":true}`},
		{"place_order", order + `,"quantity":10,"idempotency_key":"diff-key-1","confirm":true}`},
		{"place_order", order + `,"quantity":1000000,"idempotency_key":"diff-key-2","confirm":true}`},
		{"cancel_order", `{"id":"ORD-nope"}`},
		{"get_order_status", `{"id":"APR-nope"}`},
		{"list_pending_approvals", `{}`},
		{"list_pending_approvals", `{"limit":1000}`},
		{"no_such_tool", `{}`},
	} {
		calls = append(calls, toolCall(p, c.name, c.args))
		calls = append(calls, toolCall(old, c.name, c.args))
	}
	return calls
}

// volatile are values that differ between any two servers or runs
// (signed request state, fresh ids, clocks, request references).
var volatile = regexp.MustCompile(`"requestState":"[^"]*"|\b(ORD|APR|req)-[A-Za-z0-9_-]+|\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)|ref [A-Za-z0-9_-]+`)

// TestToolsDifferential proves that registering tools through
// handlers.compileTool changes nothing a client sees compared with the
// go-sdk's typed mcp.AddTool: for every request above, the two servers
// answer with the same status and the same JSON (after masking values that
// differ between any two servers). Byte-identical answers are counted; the
// rest differ only in the order of object keys inside structuredContent and
// its text copy (declared order instead of alphabetical).
func TestToolsDifferential(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	token := iss.Token(t, iss.Claims("alice", "http://127.0.0.1/mcp", allScopes, "ACC-1001"))
	env := tradingEnv(iss, "")
	typed := startServer(t, env, app.WithTypedSDKTools())
	compiled := startServer(t, env)
	hc := bearer(token)

	var outputSchemas map[string]*jsonschema.Resolved
	identical, inputRequests := 0, 0
	calls := diffCalls()
	for i, c := range calls {
		ts, tb := rawPost(t, hc, typed.URL, c)
		cs, cb := rawPost(t, hc, compiled.URL, c)
		if ts != cs {
			t.Errorf("%s %s: status typed %d, compiled %d", c.protocol, c.body, ts, cs)
			continue
		}
		if bytes.Equal(tb, cb) {
			identical++
		}
		if bytes.Contains(tb, []byte(`"inputRequests"`)) {
			inputRequests++
		}
		if !bytes.Contains(tb, []byte(`"structuredContent"`)) && !bytes.Equal(volatile.ReplaceAll(tb, nil), volatile.ReplaceAll(cb, nil)) {
			// Errors, tool errors, input requests and lists: byte for byte.
			t.Errorf("%s %s: not byte-identical:\n typed:    %s\n compiled: %s", c.protocol, c.body, tb, cb)
		}
		tn, cn := normalise(t, tb), normalise(t, cb)
		if !reflect.DeepEqual(tn, cn) {
			t.Errorf("%s %s:\n typed:    %s\n compiled: %s", c.protocol, c.body, tb, cb)
		}
		if i == 0 {
			outputSchemas = resolveOutputSchemas(t, cb)
		}
		checkOutput(t, c, cb, outputSchemas)
	}
	if inputRequests == 0 {
		t.Error("no call asked for input (MRTR): the test lost its coverage")
	}
	t.Logf("%d of %d answers byte-identical, all JSON-identical", identical, len(calls))
}

func rawPost(t *testing.T, hc *http.Client, base string, c diffCall) (int, []byte) {
	t.Helper()
	h := map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": c.protocol}
	if c.protocol >= "2026-07-28" {
		h["Mcp-Method"] = c.method
		if c.name != "" {
			h["Mcp-Name"] = c.name
		}
	}
	resp, b := postMCP(t, hc, base, c.body, h)
	return resp.StatusCode, b
}

// postMCP posts body to base's /mcp with headers and returns the response
// (its body already read and closed) and the body.
func postMCP(t *testing.T, hc *http.Client, base, body string, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// normalise masks volatile values and parses the answer, and the JSON text
// content beside structured content, into comparable values.
func normalise(t *testing.T, b []byte) any {
	t.Helper()
	masked := volatile.ReplaceAllFunc(b, func(m []byte) []byte {
		if bytes.HasPrefix(m, []byte(`"requestState"`)) {
			return []byte(`"requestState":"X"`)
		}
		return []byte("X")
	})
	var v any
	if err := json.Unmarshal(masked, &v); err != nil {
		t.Fatalf("answer is not JSON: %v: %s", err, b)
	}
	if m, ok := v.(map[string]any); ok {
		if r, ok := m["result"].(map[string]any); ok && r["structuredContent"] != nil {
			if content, ok := r["content"].([]any); ok {
				for _, c := range content {
					cm := c.(map[string]any)
					var parsed any
					if s, ok := cm["text"].(string); ok && json.Unmarshal([]byte(s), &parsed) == nil {
						cm["text"] = parsed
					}
				}
			}
		}
	}
	return v
}

func resolveOutputSchemas(t *testing.T, list []byte) map[string]*jsonschema.Resolved {
	t.Helper()
	var resp struct {
		Result struct {
			Tools []struct {
				Name         string             `json:"name"`
				OutputSchema *jsonschema.Schema `json:"outputSchema"`
			} `json:"tools"`
		} `json:"result"`
	}
	if err := json.Unmarshal(list, &resp); err != nil || len(resp.Result.Tools) == 0 {
		t.Fatalf("tools/list: %v: %s", err, list)
	}
	out := map[string]*jsonschema.Resolved{}
	for _, tool := range resp.Result.Tools {
		if tool.OutputSchema == nil {
			t.Errorf("%s: no output schema", tool.Name)
			continue
		}
		r, err := tool.OutputSchema.Resolve(&jsonschema.ResolveOptions{ValidateDefaults: true})
		if err != nil {
			t.Fatalf("%s: output schema: %v", tool.Name, err)
		}
		out[tool.Name] = r
	}
	return out
}

// checkOutput holds compiled tools to the promise the typed path checked on
// every call: structured content validates against the declared output
// schema, and the schema's defaults add nothing to it.
func checkOutput(t *testing.T, c diffCall, b []byte, schemas map[string]*jsonschema.Resolved) {
	t.Helper()
	var req struct {
		Params struct {
			Name string `json:"name"`
		} `json:"params"`
	}
	var resp struct {
		Result struct {
			StructuredContent json.RawMessage `json:"structuredContent"`
		} `json:"result"`
	}
	if json.Unmarshal([]byte(c.body), &req) != nil || json.Unmarshal(b, &resp) != nil || resp.Result.StructuredContent == nil {
		return
	}
	r := schemas[req.Params.Name]
	if r == nil {
		t.Errorf("%s: structured content without an output schema", req.Params.Name)
		return
	}
	var v, before any
	json.Unmarshal(resp.Result.StructuredContent, &v)
	json.Unmarshal(resp.Result.StructuredContent, &before)
	if err := r.ApplyDefaults(&v); err != nil {
		t.Errorf("%s: applying output defaults: %v", req.Params.Name, err)
	}
	if !reflect.DeepEqual(v, before) {
		t.Errorf("%s: output schema defaults change the output", req.Params.Name)
	}
	if err := r.Validate(&v); err != nil {
		t.Errorf("%s %s: output does not match its schema: %v", c.protocol, c.body, err)
	}
}
