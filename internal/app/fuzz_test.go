package app_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
)

// fuzzServer is a server with real authentication whose one principal may
// read ACC-1001 only, with limits high enough that fuzzing never hits them.
func fuzzServer(f *testing.F) (base, token string) {
	f.Setenv("SECRET_REQUEST_STATE_KEY", "test-request-state-key-0123456789abcdef")
	f.Setenv("SECRET_APPROVAL_EVENT_KEY", approveKey)
	iss := oauthtest.New(f)
	env := tradingEnv(iss, "")
	env["RATE_READ_PER_SECOND"], env["RATE_READ_BURST"] = "1000000", "1000000"
	env["RATE_TRADE_PER_MINUTE"], env["RATE_TRADE_BURST"] = "1000000", "1000000"
	srv := startServer(f, env)
	return srv.URL, iss.Token(f, iss.Claims("fuzzer", secResource, readScopes, "ACC-1001"))
}

// post sends body to /mcp and checks what must hold for any input: no
// server error, no stack or panic text, JSON when the answer is 200, and
// nothing of an account the principal may not see (ACC-1002 belongs to the
// Chen Family Trust).
func post(t *testing.T, client *http.Client, base, token string, body []byte) {
	req, err := http.NewRequest(http.MethodPost, base+"/mcp", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("server unreachable (crashed?): %v", err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	s := string(out)
	switch {
	case resp.StatusCode >= 500:
		t.Fatalf("status %d for %q: %s", resp.StatusCode, body, out)
	case strings.Contains(s, "goroutine ") || strings.Contains(s, "panic") || strings.Contains(s, ".go:"):
		t.Fatalf("internals leaked for %q: %s", body, out)
	case resp.StatusCode == http.StatusOK && len(out) > 0 && !json.Valid(out):
		t.Fatalf("200 with a body that is not JSON for %q: %s", body, out)
	case strings.Contains(s, "Chen Family Trust") || strings.Contains(s, "Dividend Income"):
		t.Fatalf("a non-entitled account's data was returned for %q: %s", body, out)
	}
}

// FuzzMCPEntry feeds arbitrary bodies to the /mcp endpoint through every
// layer: token, scope challenge, JSON-RPC envelope, MCP middleware, tools.
//
//	go test ./app -run '^$' -fuzz '^FuzzMCPEntry$' -fuzztime 30s
func FuzzMCPEntry(f *testing.F) {
	for _, seed := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"f","version":"1"}}}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_portfolio","arguments":{"account_id":"ACC-1002"}}}`,
		`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"place_order","arguments":{"account_id":"ACC-1001","ticker":"KO","side":"buy","quantity":1,"idempotency_key":"k1","confirm":true}}}`,
		`{"jsonrpc":"2.0","id":5,"method":"resources/read","params":{"uri":"portfolio://accounts/ACC-1002"}}`,
		`{"jsonrpc":"2.0","id":6,"method":"resources/read","params":{"uri":"portfolio://accounts/ACC%2D1002"}}`,
		`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_portfolio","Name":"place_order","arguments":{}}}`,
		`{"jsonrpc":"2.0","id":8,"method":"prompts/get","params":{"name":"portfolio_review","arguments":{"account_id":"ACC-1002"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
		`{"jsonrpc":"2.0","id":{},"method":"tools/call","params":null}`,
		`{`,
	} {
		f.Add([]byte(seed))
	}
	base, token := fuzzServer(f)
	client := &http.Client{}
	f.Fuzz(func(t *testing.T, body []byte) {
		post(t, client, base, token, body)
	})
}

// FuzzToolArguments calls each tool with arbitrary arguments: schema
// validation, the entitlement check's argument walk, redaction and digest
// for the audit record, and the handlers all see hostile input.
//
//	go test ./app -run '^$' -fuzz '^FuzzToolArguments$' -fuzztime 30s
func FuzzToolArguments(f *testing.F) {
	tools := []string{"list_accounts", "get_portfolio", "get_risk_summary", "search_equities", "get_quotes",
		"preview_order", "place_order", "cancel_order", "get_order_status", "list_pending_approvals", "no_such_tool"}
	for i, seed := range []string{
		`{}`,
		`{"account_id":"ACC-1002"}`,
		`{"account_id":"ACC-1001","account_id":"ACC-1002"}`,
		`{"ACCOUNT_ID":"ACC-1002","account_id":"ACC-1001"}`,
		`{"query":"ko","limit":5,"cursor":"zz"}`,
		`{"tickers":["KO","MSFT","x/../y"]}`,
		`{"account_id":"ACC-1001","ticker":"KO","side":"buy","quantity":1e300,"idempotency_key":"k","confirm":true}`,
		`{"id":"ORD-1"}`,
		`{"account_id":{"account_id":"ACC-1002"}}`,
		`{"nested":[{"account_id":"ACC-1002"}]}`,
		`{"api_key":"secret","note":"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."}`,
		`[]`,
		`null`,
	} {
		f.Add(uint8(i), []byte(seed))
	}
	base, token := fuzzServer(f)
	client := &http.Client{}
	f.Fuzz(func(t *testing.T, tool uint8, args []byte) {
		if !json.Valid(args) {
			args, _ = json.Marshal(string(args)) // still deliver it, as a JSON string
		}
		body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
			"params": map[string]any{"name": tools[int(tool)%len(tools)], "arguments": json.RawMessage(args)}})
		if err != nil {
			t.Skip()
		}
		post(t, client, base, token, body)
	})
}
