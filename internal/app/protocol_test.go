package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/internal/app"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/ratelimit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/loadgen"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
)

var generations = []string{"2026-07-28", "2025-11-25", "2025-06-18"}

// TestAgentFacingErrors: what an agent sees when it gets an argument
// wrong is a sentence naming the argument, its bounds and what was sent,
// the same on every protocol generation; a prompt's missing argument is
// -32602 naming it, never a JSON-RPC error with code 0.
func TestAgentFacingErrors(t *testing.T) {
	srv := startServer(t, map[string]string{"ENFORCE_MARKET_HOURS": "false"})
	for _, v := range generations {
		t.Run(v, func(t *testing.T) {
			cs := connect(t, srv.URL+"/mcp", v, nil)
			for _, tc := range []struct {
				tool string
				args map[string]any
				want string
			}{
				{"search_equities", map[string]any{"limit": 1000}, "limit must be between 1 and 100; got 1000"},
				{"get_quotes", map[string]any{"tickers": nil}, "tickers must be a list (JSON array); got nothing"},
				{"get_quotes", map[string]any{"tickers": []string{}}, "tickers must list between 1 and 50 item(s); got []"},
				{"get_quotes", map[string]any{"tickers": []string{"AAPL", "no way"}}, `each entry of tickers is not in the expected form`},
				{"get_portfolio", map[string]any{}, "missing required argument(s) account_id"},
				{"get_portfolio", map[string]any{"account_id": "ACC-1001", "extra": 1}, "unknown argument(s) extra"},
				{"preview_order", map[string]any{"account_id": "ACC-1001", "ticker": "KO", "side": "hold", "quantity": 1}, `side must be one of "buy", "sell"; got "hold"`},
			} {
				if msg := callToolError(t, cs, tc.tool, tc.args); !strings.Contains(msg, tc.want) {
					t.Errorf("%s %v: %q, want it to say %q", tc.tool, tc.args, msg, tc.want)
				}
			}

			_, err := cs.GetPrompt(t.Context(), &mcp.GetPromptParams{Name: "portfolio_review"})
			var wire *jsonrpc.Error
			if !errors.As(err, &wire) || wire.Code != jsonrpc.CodeInvalidParams || !strings.Contains(wire.Message, "account_id") {
				t.Errorf("portfolio_review without account_id: %v, want -32602 naming account_id", err)
			}

			// The person confirming a limit order sees its limit price.
			var out trading.Outcome
			callTool(t, cs, "place_order", map[string]any{"account_id": "ACC-1001", "ticker": "KO", "side": "buy", "quantity": 5,
				"order_type": "limit", "limit_price": 60, "idempotency_key": "limit-summary-" + v}, &out)
			if out.Status != trading.StatusNeedsConfirmation || !strings.Contains(out.Message, "limit order at 60.00") {
				t.Errorf("limit order confirmation: %q", out.Message)
			}
		})
	}

	// A required list never admits null.
	cs := connect(t, srv.URL+"/mcp", "2026-07-28", nil)
	tools, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range tools.Tools {
		b, _ := json.Marshal(tool.InputSchema)
		var s jsonschema.Schema
		json.Unmarshal(b, &s)
		for _, name := range s.Required {
			if p := s.Properties[name]; p != nil && slices.Contains(p.Types, "null") {
				t.Errorf("%s: required argument %s admits null (%v)", tool.Name, name, p.Types)
			}
		}
	}
}

// TestUnknownMethodStatus: on 2026-07-28 an unknown method is HTTP 404
// with -32601, as the spec requires; before it, HTTP 200 with -32601.
func TestUnknownMethodStatus(t *testing.T) {
	srv := startServer(t, nil)
	for version, status := range map[string]int{"2026-07-28": http.StatusNotFound, "2025-11-25": http.StatusOK, "2025-06-18": http.StatusOK} {
		body := `{"jsonrpc":"2.0","id":7,"method":"no/such/method","params":{}}`
		req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.URL+"/mcp", bytes.NewReader([]byte(body)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", version)
		req.Header.Set("Mcp-Method", "no/such/method")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var msg struct {
			Error struct{ Code int }
		}
		json.NewDecoder(resp.Body).Decode(&msg)
		resp.Body.Close()
		if resp.StatusCode != status || msg.Error.Code != jsonrpc.CodeMethodNotFound {
			t.Errorf("%s: HTTP %d code %d, want HTTP %d code -32601", version, resp.StatusCode, msg.Error.Code, status)
		}
	}
}

// TestRateLimitsDoNotPunishCorrectUse: with a trade budget of one call, a
// confirmation round-trip still places its order (the confirming round is
// not charged as a trade), a cancel still goes through after placements
// used the budget up, and the next placement is refused with a tool result
// that says when to retry.
func TestRateLimitsDoNotPunishCorrectUse(t *testing.T) {
	for _, v := range []string{"2026-07-28", "2025-11-25"} {
		t.Run(v, func(t *testing.T) {
			srv := startServer(t, map[string]string{"ENFORCE_MARKET_HOURS": "false",
				"RATE_TRADE_PER_MINUTE": "0.01", "RATE_TRADE_BURST": "1"})
			cs := connect(t, srv.URL+"/mcp", v, nil)
			limit := map[string]any{"account_id": "ACC-1001", "ticker": "KO", "side": "buy", "quantity": 1,
				"order_type": "limit", "limit_price": 1, "idempotency_key": "budget-1"}
			var out trading.Outcome
			callTool(t, cs, "place_order", limit, &out)
			if out.Status != trading.StatusNeedsConfirmation {
				t.Fatalf("first round: %+v", out)
			}
			limit["confirm"] = true
			callTool(t, cs, "place_order", limit, &out)
			if out.Status != backends.StatusAccepted || out.Order == nil {
				t.Fatalf("confirmed round: %+v, want the resting order", out)
			}
			res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "place_order", Arguments: confirmedArgs("ACC-1001", "budget-2", 1)})
			r, ok := ratelimit.Refused(res)
			if err != nil || !ok || r.Class != "trade" || !strings.Contains(resultText(res), "retry after") {
				t.Fatalf("second placement: %+v %v, want a refusal the model can read", res, err)
			}
			var cancelled trading.Outcome
			callTool(t, cs, "cancel_order", map[string]any{"id": out.Order.OrderID}, &cancelled)
			if cancelled.Status != backends.StatusCancelled {
				t.Fatalf("cancel with the trade budget spent: %+v", cancelled)
			}
		})
	}
}

// TestLoadgenOnEveryGeneration: mcpload's engine speaks 2026-07-28 (the
// Mcp-Method and Mcp-Name headers) as well as the older generations, and
// reports a rate-limit refusal as such, with what the server said.
func TestLoadgenOnEveryGeneration(t *testing.T) {
	for _, v := range generations {
		t.Run(v, func(t *testing.T) {
			srv := startServer(t, map[string]string{"RATE_READ_PER_SECOND": "1", "RATE_READ_BURST": "5"})
			res, err := loadgen.Run(t.Context(), loadgen.Config{
				URL: srv.URL + "/mcp", Protocol: v, Concurrency: 1, Duration: time.Minute, MaxCalls: 10,
				Mix: []loadgen.Call{{Tool: "get_quotes", Arguments: json.RawMessage(`{"tickers":["AAPL"]}`), Weight: 1}},
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Calls != 10 || res.OK < 1 || res.Errors["rate_limited"] < 1 || res.OK+res.Errors["rate_limited"] != 10 {
				t.Fatalf("%+v, want some calls served and the rest refused by the rate limit", res)
			}
			if !strings.Contains(res.Samples["rate_limited"], "retry after") {
				t.Errorf("rate-limit sample %q", res.Samples["rate_limited"])
			}
		})
	}
}

// TestDiscoverability: an agent can find what exists without guessing ids:
// resources/list names the portfolios the caller may see (and no others),
// and completion/complete completes account ids (entitled ones only) and
// tickers, on every protocol generation.
func TestDiscoverability(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	srv := startServer(t, map[string]string{"OAUTH_ISSUER": iss.URL, "PUBLIC_URL": "http://127.0.0.1/mcp"})
	token := iss.Token(t, iss.Claims("maya", "http://127.0.0.1/mcp", readScopes, "ACC-1001", "ACC-1003"))
	for _, v := range generations {
		t.Run(v, func(t *testing.T) {
			cs := connect(t, srv.URL+"/mcp", v, bearer(token))
			res, err := cs.ListResources(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			var uris []string
			for _, r := range res.Resources {
				uris = append(uris, r.URI)
			}
			if !slices.Equal(uris, []string{"portfolio://accounts/ACC-1001", "portfolio://accounts/ACC-1003"}) {
				t.Errorf("resources/list = %v, want the two entitled portfolios", uris)
			}
			rr, err := cs.ReadResource(t.Context(), &mcp.ReadResourceParams{URI: uris[0]})
			if err != nil || len(rr.Contents) != 1 {
				t.Fatalf("reading a listed resource: %v", err)
			}

			complete := func(ref *mcp.CompleteReference, arg, value string) []string {
				t.Helper()
				c, err := cs.Complete(t.Context(), &mcp.CompleteParams{Ref: ref, Argument: mcp.CompleteParamsArgument{Name: arg, Value: value}})
				if err != nil {
					t.Fatalf("complete %s %q: %v", arg, value, err)
				}
				return c.Completion.Values
			}
			prompt := &mcp.CompleteReference{Type: "ref/prompt", Name: "portfolio_review"}
			if got := complete(prompt, "account_id", "acc-1"); !slices.Equal(got, []string{"ACC-1001", "ACC-1003"}) {
				t.Errorf("account_id completions %v, want the entitled ACC-1001 and ACC-1003 only", got)
			}
			if got := complete(&mcp.CompleteReference{Type: "ref/resource", URI: "portfolio://accounts/{account_id}"}, "account_id", "ACC-2"); len(got) != 0 {
				t.Errorf("completions for accounts not entitled: %v", got)
			}
			got := complete(&mcp.CompleteReference{Type: "ref/resource", URI: "quote://tickers/{ticker}"}, "ticker", "MS")
			if len(got) == 0 || got[0] != "MSFT" && got[0] != "MS" {
				t.Errorf("ticker completions for MS: %v", got)
			}
			// An argument the ref does not have gets nothing; a ref the
			// server does not have is invalid params.
			if got := complete(&mcp.CompleteReference{Type: "ref/resource", URI: "portfolio://accounts/{account_id}"}, "ticker", "NV"); len(got) != 0 {
				t.Errorf("ticker completions under the portfolio template: %v", got)
			}
			for _, ref := range []*mcp.CompleteReference{{Type: "ref/prompt", Name: "no_such_prompt"}, {Type: "ref/resource", URI: "quote://nothing/{x}"}} {
				_, err := cs.Complete(t.Context(), &mcp.CompleteParams{Ref: ref, Argument: mcp.CompleteParamsArgument{Name: "ticker", Value: "NV"}})
				var je *jsonrpc.Error
				if !errors.As(err, &je) || je.Code != jsonrpc.CodeInvalidParams {
					t.Errorf("completion for %+v: %v, want invalid params", ref, err)
				}
			}
		})
	}
}

// TestListOrders: a principal sees its own orders and approval requests on
// an account, newest first, in their current states, filtered by state and
// time, page by page; another principal on the same account sees none of
// them.
func TestListOrders(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	srv := startServer(t, tradingEnv(iss, ""))
	aud := "http://127.0.0.1/mcp"
	alice := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(iss.Token(t, iss.Claims("alice", aud, allScopes, "ACC-2001"))))
	bob := connect(t, srv.URL+"/mcp", "2026-07-28", bearer(iss.Token(t, iss.Claims("bob", aud, allScopes, "ACC-2001"))))

	before := time.Now().UTC().Add(-time.Second)
	var out trading.Outcome
	callTool(t, alice, "place_order", confirmedArgs("ACC-2001", "list-filled-1", 10), &out)
	resting := confirmedArgs("ACC-2001", "list-resting-1", 11)
	resting["order_type"], resting["limit_price"] = "limit", 1
	callTool(t, alice, "place_order", resting, &out)
	callTool(t, alice, "place_order", confirmedArgs("ACC-2001", "list-pending-1", 1000), &out)
	callTool(t, bob, "place_order", confirmedArgs("ACC-2001", "bobs-own-1", 5), &out)

	keys := func(l trading.OrderList) (ks []string) {
		for _, o := range l.Orders {
			ks = append(ks, o.IdempotencyKey+"="+o.Status)
		}
		return ks
	}
	var all trading.OrderList
	callTool(t, alice, "list_orders", map[string]any{"account_id": "ACC-2001"}, &all)
	want := []string{"list-pending-1=pending_approval", "list-resting-1=accepted", "list-filled-1=filled"}
	if !slices.Equal(keys(all), want) {
		t.Fatalf("alice's orders %v, want %v", keys(all), want)
	}
	var open trading.OrderList
	callTool(t, alice, "list_orders", map[string]any{"account_id": "ACC-2001", "states": []string{"open"}}, &open)
	if !slices.Equal(keys(open), want[:2]) {
		t.Errorf("open orders %v, want %v", keys(open), want[:2])
	}
	var page1, page2 trading.OrderList
	callTool(t, alice, "list_orders", map[string]any{"account_id": "ACC-2001", "limit": 2, "since": before.Format(time.RFC3339)}, &page1)
	// An order placed between pages does not shift the next page.
	callTool(t, alice, "place_order", confirmedArgs("ACC-2001", "list-between-pages-1", 1), &out)
	callTool(t, alice, "list_orders", map[string]any{"account_id": "ACC-2001", "limit": 2, "since": before.Format(time.RFC3339), "cursor": page1.NextCursor}, &page2)
	if !slices.Equal(keys(page1), want[:2]) || page1.NextCursor == "" || !slices.Equal(keys(page2), want[2:]) || page2.NextCursor != "" {
		t.Errorf("pages %v (%q) and %v (%q)", keys(page1), page1.NextCursor, keys(page2), page2.NextCursor)
	}
	var none trading.OrderList
	callTool(t, alice, "list_orders", map[string]any{"account_id": "ACC-2001", "until": before.Format(time.RFC3339)}, &none)
	if len(none.Orders) != 0 {
		t.Errorf("orders placed before %s: %v", before, keys(none))
	}
	var bobs trading.OrderList
	callTool(t, bob, "list_orders", map[string]any{"account_id": "ACC-2001"}, &bobs)
	if !slices.Equal(keys(bobs), []string{"bobs-own-1=filled"}) {
		t.Errorf("bob's orders %v, want only his own", keys(bobs))
	}
}

// downPortfolio is a Portfolio service that is down.
type downPortfolio struct{ backends.Portfolio }

func (downPortfolio) GetPortfolio(context.Context, string) (backends.PortfolioValuation, error) {
	return backends.PortfolioValuation{}, fmt.Errorf("%w: connection refused", backends.ErrUnavailable)
}

// TestNoErrorWithoutCode: a failure behind a method other than a tool call
// (here resources/read with the Portfolio service down) leaves as a
// JSON-RPC error with a code (-32603) and a message an agent can act on,
// never code 0.
func TestNoErrorWithoutCode(t *testing.T) {
	set := demo.New(nil).Set()
	set.Portfolio = downPortfolio{set.Portfolio}
	srv := startServer(t, nil, app.WithBackends(set))
	for _, v := range generations {
		cs := connect(t, srv.URL+"/mcp", v, nil)
		_, err := cs.ReadResource(t.Context(), &mcp.ReadResourceParams{URI: "portfolio://accounts/ACC-1001"})
		var wire *jsonrpc.Error
		if !errors.As(err, &wire) || wire.Code != jsonrpc.CodeInternalError || !strings.Contains(wire.Message, "retry") {
			t.Errorf("%s: resources/read with the Portfolio service down: %v, want -32603 saying to retry", v, err)
		}
	}
}

// jsonRPCPost posts body to /mcp with the protocol version header (none
// when version is empty) and the token (none when empty).
func jsonRPCPost(t *testing.T, base, token, version, body string) (int, []byte) {
	t.Helper()
	h := map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
	if version != "" {
		h["Mcp-Protocol-Version"] = version
	}
	if token != "" {
		h["Authorization"] = "Bearer " + token
	}
	resp, b := postMCP(t, http.DefaultClient, base, body, h)
	return resp.StatusCode, b
}

// TestBatchesOnTheGenerationsThatHaveThem: 2025-03-26 (which a request
// without the version header is taken for) and 2024-11-05 must accept
// JSON-RPC batches; later generations have none. Each message of a batch
// is governed on its own: refused without its scope, and audited.
func TestBatchesOnTheGenerationsThatHaveThem(t *testing.T) {
	srv, iss, sink := auditedServer(t, nil)
	reader := iss.Token(t, iss.Claims("alice", secResource, "portfolio:read", "ACC-1001"))
	halter := iss.Token(t, iss.Claims("hal", secResource, "trade:halt", "*"))
	batch := `[{"jsonrpc":"2.0","id":1,"method":"ping"},` +
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_accounts","arguments":{}}}]`
	for _, v := range []string{"2025-03-26", "", "2024-11-05"} {
		status, b := jsonRPCPost(t, srv.URL, reader, v, batch)
		var out []struct {
			ID     json.RawMessage
			Result *mcp.CallToolResult
			Error  *jsonrpc.Error
		}
		// Answers come in any order (JSON-RPC 2.0, 6): matched by id.
		decoded := json.Unmarshal(b, &out) == nil
		byID := map[string]int{}
		for i, o := range out {
			byID[string(o.ID)] = i
		}
		call, answered := byID["2"]
		_, pinged := byID["1"]
		if status != http.StatusOK || !decoded || len(out) != 2 || !pinged || !answered ||
			out[call].Result == nil || out[call].Result.IsError {
			t.Errorf("version %q: %d %s, want both answered", v, status, b)
		}
	}
	// Without the read scope, the tool call in the batch is refused, and
	// the ping is still answered.
	status, b := jsonRPCPost(t, srv.URL, halter, "2025-03-26", batch)
	if status != http.StatusOK || !strings.Contains(string(b), `"id":2,"error"`) || strings.Contains(string(b), "ACC-1001") {
		t.Errorf("batch without the read scope: %d %s", status, b)
	}
	for _, v := range []string{"2025-06-18", "2025-11-25"} {
		if status, b := jsonRPCPost(t, srv.URL, reader, v, batch); status != http.StatusBadRequest || !strings.Contains(string(b), "-32600") {
			t.Errorf("version %s: %d %s, want 400 -32600 (no batches)", v, status, b)
		}
	}
	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
	// Four tool calls, each audited (the pings are not governed).
	if n := len(sink.byType(audit.EventType)); n != 4 {
		t.Errorf("%d audit records for the batches' 4 tool calls", n)
	}
}

// TestNumericIDsComeBackExactly: an id the response could not carry exactly
// (the go-sdk reads numbers as float64) is refused, with the id as sent, so
// the client can match the refusal; the ids it can carry come back as sent,
// on the direct path and the SDK's.
func TestNumericIDsComeBackExactly(t *testing.T) {
	srv := startServer(t, nil)
	for _, v := range []string{"2025-11-25", "2026-07-28"} {
		for _, c := range []struct {
			id string
			ok bool
		}{{`1234567890123456789`, false}, {`9007199254740993`, false}, {`1.5`, false}, {`1e2`, false}, {`-0`, false},
			{`9007199254740992`, true}, {`-5`, true}, {`0`, true}, {`"9007199254740993"`, true}} {
			for _, m := range []struct{ method, params, name string }{{"tools/call", `"name":"list_accounts","arguments":{}`, "list_accounts"}, {"tools/list", "", ""}} {
				params := m.params
				h := map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": v}
				if v >= "2026-07-28" {
					if params != "" {
						params += ","
					}
					params += newMeta
					h["Mcp-Method"] = m.method
					if m.name != "" {
						h["Mcp-Name"] = m.name
					}
				}
				body := `{"jsonrpc":"2.0","id":` + c.id + `,"method":"` + m.method + `","params":{` + params + `}}`
				resp, b := postMCP(t, http.DefaultClient, srv.URL, body, h)
				var out struct{ ID json.RawMessage }
				json.Unmarshal(b, &out)
				if string(out.ID) != c.id || c.ok != (resp.StatusCode == http.StatusOK) {
					t.Errorf("%s %s id %s: %d %s (want ok=%v, the id as sent)", v, m.method, c.id, resp.StatusCode, b, c.ok)
				}
			}
		}
	}
}

// TestDuplicateKeyIsAToolError: the README promises "Bad arguments ...
// come back as tool results with isError"; a repeated key in the arguments
// is one, on every protocol generation (a JSON-RPC error would be HTTP 400
// on 2026-07-28, which most clients show as a transport failure, not as
// something the model can correct).
func TestDuplicateKeyIsAToolError(t *testing.T) {
	srv := startServer(t, nil)
	for _, v := range []string{"2025-11-25", "2026-07-28"} {
		params := `"name":"search_equities","arguments":{"query":"bank","query":"tech"}`
		h := map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": v}
		if v >= "2026-07-28" {
			params += "," + newMeta
			h["Mcp-Method"], h["Mcp-Name"] = "tools/call", "search_equities"
		}
		resp, b := postMCP(t, http.DefaultClient, srv.URL, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{`+params+`}}`, h)
		var out struct {
			Result *struct{ IsError bool } `json:"result"`
		}
		json.Unmarshal(b, &out)
		if resp.StatusCode != http.StatusOK || out.Result == nil || !out.Result.IsError {
			t.Errorf("%s: %d %s, want 200 and an isError tool result", v, resp.StatusCode, b)
		}
	}
}

// TestResourcesListRefusesACursorItNeverIssued: tools/list and
// resources/templates/list refuse a cursor they never issued with -32602,
// and so does resources/list (one page, always), rather than answer the
// first page again as if it were the next.
func TestResourcesListRefusesACursorItNeverIssued(t *testing.T) {
	srv := startServer(t, nil)
	h := map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-11-25"}
	for _, m := range []string{"tools/list", "resources/templates/list", "resources/list"} {
		_, b := postMCP(t, http.DefaultClient, srv.URL, `{"jsonrpc":"2.0","id":1,"method":"`+m+`","params":{"cursor":"garbage"}}`, h)
		var out struct {
			Error *struct{ Code int } `json:"error"`
		}
		json.Unmarshal(b, &out)
		if out.Error == nil || out.Error.Code != -32602 {
			t.Errorf("%s with a cursor it never issued: %.200s, want -32602", m, b)
		}
	}
}
