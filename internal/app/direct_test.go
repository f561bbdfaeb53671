package app_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/app"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
)

// directCase is one request of TestDirectPathIsTheSDKPath: a JSON-RPC body
// and the headers it is sent with.
type directCase struct {
	name    string
	body    string
	headers map[string]string
	direct  bool // the direct path must answer it (else the SDK does)
}

const newMeta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"diff","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}`

// directCases are the requests both paths answer: every read tool's valid
// and invalid calls, denied and unknown tools, on each protocol generation,
// and the id, header and _meta variants the direct path must either answer
// exactly as the SDK or leave to it.
func directCases() []directCase {
	std := func(version, tool string) map[string]string {
		h := map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": version}
		if version >= "2026-07-28" {
			h["Mcp-Method"], h["Mcp-Name"] = "tools/call", tool
		}
		return h
	}
	body := func(version, id, tool, args string) string {
		params := `"name":"` + tool + `"`
		if args != "" {
			params += `,"arguments":` + args
		}
		if version >= "2026-07-28" {
			params += "," + newMeta
		}
		return `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{` + params + `}}`
	}
	var cases []directCase
	for _, v := range []string{"2025-06-18", "2025-11-25", "2026-07-28"} {
		for _, c := range []struct{ tool, args string }{
			{"search_equities", `{"query":"in","limit":20}`},
			{"search_equities", `{"query":"<b>&amp;</b>"}`},
			{"search_equities", `{}`},
			{"search_equities", ``},
			{"search_equities", `{"limit":"20"}`},
			{"search_equities", `{"limit":20,"limit":5}`},
			{"search_equities", `{"cursor":"garbage"}`},
			{"get_quotes", `{"tickers":["AAPL","MSFT","ZZZZ"]}`},
			{"get_quotes", `{"tickers":["bad ticker!"]}`},
			{"list_accounts", `{}`},
			{"get_portfolio", `{"account_id":"ACC-1001"}`},
			{"get_portfolio", `{"account_id":"ACC-2001"}`}, // not entitled: denied
			{"get_portfolio", `{"account_id":"ACC-9999"}`},
			{"get_risk_summary", `{"account_id":"ACC-1001"}`},
			{"get_risk_summary", `{"account_id":42}`},
			{"preview_order", `{"account_id":"ACC-1001","ticker":"KO","side":"buy","quantity":10}`},
			{"preview_order", `{"account_id":"ACC-1001","ticker":"KO","side":"buy","quantity":10,"order_type":"limit"}`},
			{"get_order_status", `{"id":"ORD-nope"}`},
			{"list_orders", `{"account_id":"ACC-1001"}`},
			{"list_pending_approvals", `{}`},
		} {
			cases = append(cases, directCase{v + " " + c.tool + " " + c.args, body(v, "7", c.tool, c.args), std(v, c.tool), true})
		}
		// Not on the direct path: unknown and trade tools.
		cases = append(cases,
			directCase{v + " unknown tool", body(v, "7", "no_such_tool", `{}`), std(v, "no_such_tool"), false},
			directCase{v + " trade tool", body(v, "7", "cancel_order", `{"id":"ORD-nope"}`), std(v, "cancel_order"), false},
		)
		// Ids: echoed byte for byte when plain, else left to the SDK.
		for id, direct := range map[string]bool{
			`0`: true, `123456789012345`: true, `"abc-1"`: true, `"<a&b>"`: true,
			`1234567890123456789`: false, `-1`: false, `1.5`: false, `1e2`: false, `"\u0041"`: false, `"é"`: false,
		} {
			cases = append(cases, directCase{v + " id " + id, body(v, id, "list_accounts", `{}`), std(v, "list_accounts"), direct})
		}
		// Header variants.
		variant := func(name string, edit func(h map[string]string), direct bool) {
			h := std(v, "list_accounts")
			edit(h)
			cases = append(cases, directCase{v + " " + name, body(v, "7", "list_accounts", `{}`), h, direct})
		}
		variant("Accept */*", func(h map[string]string) { h["Accept"] = "*/*" }, true)
		variant("Accept JSON only", func(h map[string]string) { h["Accept"] = "application/json" }, false)
		variant("charset", func(h map[string]string) { h["Content-Type"] = "application/json; charset=utf-8" }, true)
		variant("Last-Event-ID", func(h map[string]string) { h["Last-Event-ID"] = "1" }, false)
		variant("empty Last-Event-ID", func(h map[string]string) { h["Last-Event-ID"] = "" }, false)
	}
	const nv = "2026-07-28"
	newVariant := func(name string, edit func(h map[string]string), meta string) {
		h := std(nv, "list_accounts")
		edit(h)
		b := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_accounts","arguments":{}` + meta + `}}`
		cases = append(cases, directCase{nv + " " + name, b, h, false})
	}
	keep := func(map[string]string) {}
	newVariant("wrong Mcp-Name", func(h map[string]string) { h["Mcp-Name"] = "get_quotes" }, ","+newMeta)
	newVariant("no Mcp-Method", func(h map[string]string) { delete(h, "Mcp-Method") }, ","+newMeta)
	newVariant("Mcp-Param header", func(h map[string]string) { h["Mcp-Param-Account"] = "ACC-1001" }, ","+newMeta)
	newVariant("no _meta", keep, "")
	newVariant("_meta version mismatch", keep, `,"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25","io.modelcontextprotocol/clientCapabilities":{}}`)
	newVariant("no capabilities", keep, `,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`)
	newVariant("bad capabilities", keep, `,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":7}}`)
	newVariant("bad client info", keep, `,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":"me","io.modelcontextprotocol/clientCapabilities":{}}`)
	newVariant("input responses", keep, `,"inputResponses":{},`+newMeta)
	oldMeta := std("2025-11-25", "list_accounts")
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	cases = append(cases,
		directCase{"2025-11-25 an error member beside the method", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_accounts"},"error":"x"}`, oldMeta, false},
		directCase{"2025-11-25 _meta twice", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_accounts","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"},"_meta":{}}}`, oldMeta, false},
		directCase{"2025-11-25 _meta twice, the second escaped", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_accounts","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"},"\u005fmeta":{}}}`, oldMeta, false},
		directCase{"2026-07-28 an argument beyond float64", body(nv, "7", "search_equities", `{"limit":1e400}`), std(nv, "search_equities"), false},
		directCase{"2026-07-28 _meta twice", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_accounts","_meta":{"io.modelcontextprotocol/clientInfo":"bad"},` + newMeta + `}}`, std(nv, "list_accounts"), false},
		directCase{"2025-11-25 deep arguments", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_accounts","arguments":{"x":` + deep(100) + `}}}`, oldMeta, false},
		directCase{"2025-11-25 nested past the SDK's limit", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_accounts"},"x":` + deep(1001) + `}`, oldMeta, false},
		directCase{"2025-11-25 _meta naming a version", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_accounts","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`, oldMeta, false},
		directCase{"2025-03-26 (not proven)", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_accounts"}}`, map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-03-26"}, false},
		directCase{"no protocol header", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_accounts"}}`, map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}, false},
	)
	return cases
}

// TestDirectPathIsTheSDKPath proves the direct path (internal/edge/direct)
// changes nothing a client sees: two servers, one with it and one without,
// answer every request above with the same status, the same headers and the
// same bytes (after masking clocks and per-server ids), and the direct path
// answered exactly the requests it was meant to. Run it on every go-sdk
// upgrade (it is part of go test ./...).
func TestDirectPathIsTheSDKPath(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	env := tradingEnv(iss, "")
	var mu sync.Mutex
	var served []string
	withDirect := startServer(t, env, app.WithDirectPath(true, func(tool string) {
		mu.Lock()
		served = append(served, tool)
		mu.Unlock()
	}))
	withSDK := startServer(t, env, app.WithDirectPath(false, func(string) { t.Error("the direct path answered on the server without it") }))
	token := iss.Token(t, iss.Claims("alice", "http://127.0.0.1/mcp", allScopes, "ACC-1001"))

	for _, c := range directCases() {
		mu.Lock()
		before := len(served)
		mu.Unlock()
		ds, dh, db := directPost(t, withDirect.URL, token, c)
		ss, sh, sb := directPost(t, withSDK.URL, token, c)
		mu.Lock()
		took := len(served) > before
		mu.Unlock()
		if took != c.direct {
			t.Errorf("%s: answered by the direct path = %v, want %v", c.name, took, c.direct)
		}
		if ds != ss {
			t.Errorf("%s: status direct %d, SDK %d\n direct: %s\n SDK:    %s", c.name, ds, ss, db, sb)
			continue
		}
		if dh != sh {
			t.Errorf("%s: headers differ\n direct: %s\n SDK:    %s", c.name, dh, sh)
		}
		if !bytes.Equal(volatile.ReplaceAll(db, nil), volatile.ReplaceAll(sb, nil)) {
			t.Errorf("%s: bodies differ\n direct: %s\n SDK:    %s", c.name, db, sb)
		}
	}
	if len(served) == 0 {
		t.Fatal("the direct path answered nothing: the test lost its subject")
	}
	// Every tool the direct path answers must have been compared here: a
	// new read tool joins the direct path on its own, and must join this
	// test too.
	for _, tool := range listTools(t, withSDK.URL, token) {
		if tool != "place_order" && tool != "cancel_order" && !slices.Contains(served, tool) {
			t.Errorf("tool %s: no request of it took the direct path here; add its calls to directCases", tool)
		}
	}
}

// listTools is the names tools/list gives.
func listTools(t *testing.T, base, token string) []string {
	t.Helper()
	_, _, body := directPost(t, base, token, directCase{
		body:    `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`,
		headers: map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-11-25"},
	})
	var list struct {
		Result struct {
			Tools []struct{ Name string } `json:"tools"`
		} `json:"result"`
	}
	if err := json.Unmarshal(body, &list); err != nil || len(list.Result.Tools) == 0 {
		t.Fatalf("tools/list: %v: %s", err, body)
	}
	var names []string
	for _, tl := range list.Result.Tools {
		names = append(names, tl.Name)
	}
	return names
}

// directPost sends c and returns the status, the response headers that a
// client may read (all but the date) in a canonical form, and the body.
func directPost(t *testing.T, base, token string, c directCase) (int, string, []byte) {
	t.Helper()
	h := maps.Clone(c.headers)
	h["Authorization"] = "Bearer " + token
	h["X-Request-Id"] = "direct-diff" // adopted: error refs match
	resp, b := postMCP(t, http.DefaultClient, base, c.body, h)
	var hs []string
	for k, vs := range resp.Header {
		if k != "Date" {
			hs = append(hs, k+": "+strings.Join(vs, ", "))
		}
	}
	slices.Sort(hs)
	return resp.StatusCode, strings.Join(hs, "; "), b
}

// TestDirectPathRefusalsAreTheSDKs: a call refused by a governance step (a
// JSON-RPC error, not a tool result) reads the same on both paths.
func TestDirectPathRefusalsAreTheSDKs(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	env := tradingEnv(iss, "")
	env["RATE_READ_BURST"], env["RATE_READ_PER_SECOND"] = "1", "0.001"
	withDirect := startServer(t, env)
	withSDK := startServer(t, env, app.WithDirectPath(false, nil))
	token := iss.Token(t, iss.Claims("alice", "http://127.0.0.1/mcp", allScopes, "ACC-1001"))
	for _, v := range []string{"2025-11-25", "2026-07-28"} {
		c := directCases()[0]
		for _, dc := range directCases() {
			if strings.HasPrefix(dc.name, v+" list_accounts") {
				c = dc
			}
		}
		var answers [2][]byte
		for i, base := range []string{withDirect.URL, withSDK.URL} {
			directPost(t, base, token, c) // spends the burst
			status, headers, body := directPost(t, base, token, c)
			answers[i] = []byte(fmt.Sprintf("%d\n%s\n%s", status, headers, volatile.ReplaceAll(body, nil)))
		}
		if !bytes.Contains(answers[0], []byte("rate")) {
			t.Fatalf("%s: the second call was not rate limited: %s", v, answers[0])
		}
		if !bytes.Equal(answers[0], answers[1]) {
			t.Errorf("%s: refusals differ\n direct: %s\n SDK:    %s", v, answers[0], answers[1])
		}
	}
}
