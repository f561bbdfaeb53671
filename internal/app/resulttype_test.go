package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestResultTypeOnEveryToolResult: on protocol 2026-07-28 every result
// carries resultType (the TypeScript SDK v2 client refuses a tools/call
// result without it: "missing required resultType"). Results that a
// middleware answers instead of the tool (rate limit, entitlement, invalid
// arguments, a trade the audit trail could not record) must carry it too,
// on the direct path and the SDK's.
func TestResultTypeOnEveryToolResult(t *testing.T) {
	srv := startServer(t, map[string]string{"ENFORCE_MARKET_HOURS": "false",
		"RATE_READ_PER_SECOND": "0.01", "RATE_READ_BURST": "3"})
	const meta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"ts","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}`
	cases := []struct{ label, name, args string }{
		{"tool's own result", "get_quotes", `{"tickers":["AAPL"]}`},
		{"tool error from the tool", "get_portfolio", `{"account_id":"ACC-9999"}`},
		{"invalid arguments (authz)", "get_portfolio", `{"account_id":"ACC-1001","account_id":"ACC-1002"}`},
		{"rate limited", "get_quotes", `{"tickers":["AAPL"]}`},
		{"rate limited", "get_quotes", `{"tickers":["AAPL"]}`},
	}
	for i, c := range cases {
		body := `{"jsonrpc":"2.0","id":` + string(rune('1'+i)) + `,"method":"tools/call","params":{"name":"` + c.name + `","arguments":` + c.args + `,` + meta + `}}`
		resp, b := postMCP(t, http.DefaultClient, srv.URL, body, map[string]string{
			"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
			"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": c.name})
		var msg struct {
			Result map[string]json.RawMessage
			Error  json.RawMessage
		}
		if err := json.Unmarshal(b, &msg); err != nil || msg.Result == nil {
			t.Errorf("%s: HTTP %d %s, want a result", c.label, resp.StatusCode, b)
			continue
		}
		if _, ok := msg.Result["resultType"]; !ok {
			t.Errorf("%s: result without resultType: %s", c.label, b)
		}
	}

	// A trade the audit trail could not record: its result is withheld.
	trading, iss, _ := sinkDownServer(t)
	args := `{"account_id":"ACC-1001","ticker":"KO","side":"buy","quantity":1,"idempotency_key":"rt-unrecorded-1","confirm":true}`
	resp, b := postMCP(t, http.DefaultClient, trading.URL,
		`{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"place_order","arguments":`+args+`,`+meta+`}}`,
		map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
			"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "place_order",
			"Authorization": "Bearer " + iss.Token(t, iss.Claims("bob", secResource, allScopes, "ACC-1001"))})
	if !strings.Contains(string(b), "could not be recorded") || !strings.Contains(string(b), `"resultType":"complete"`) {
		t.Errorf("a trade the audit trail could not record: HTTP %d %s, want its withheld result marked complete", resp.StatusCode, b)
	}
}
