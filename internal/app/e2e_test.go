package app_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
)

// TestToolsEndToEnd drives every capability through real HTTP with the
// go-sdk client, on each protocol generation.
func TestToolsEndToEnd(t *testing.T) {
	srv := startServer(t, nil)
	for _, version := range protocols {
		t.Run(version, func(t *testing.T) {
			cs := connect(t, srv.URL+"/mcp", version, nil)
			if got := cs.InitializeResult().ProtocolVersion; got != version {
				t.Fatalf("negotiated protocol %q, want %q", got, version)
			}

			tools, err := cs.ListTools(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tool := range tools.Tools {
				names = append(names, tool.Name)
				a := tool.Annotations
				if tool.Description == "" || tool.OutputSchema == nil || a == nil || a.OpenWorldHint == nil {
					t.Fatalf("tool %s: want description, output schema and annotations", tool.Name)
				}
				stateChanging := tool.Name == "place_order" || tool.Name == "cancel_order"
				if a.ReadOnlyHint == stateChanging || stateChanging != (a.DestructiveHint != nil && *a.DestructiveHint) {
					t.Errorf("tool %s: readOnlyHint %v, destructiveHint %v", tool.Name, a.ReadOnlyHint, a.DestructiveHint)
				}
			}
			slices.Sort(names)
			want := []string{"cancel_order", "get_order_status", "get_portfolio", "get_quotes", "get_risk_summary",
				"list_accounts", "list_orders", "list_pending_approvals", "place_order", "preview_order", "search_equities"}
			if !slices.Equal(names, want) {
				t.Fatalf("tools = %v, want %v", names, want)
			}

			var accts struct{ Accounts []backends.Account }
			callTool(t, cs, "list_accounts", nil, &accts)
			if len(accts.Accounts) < 3 {
				t.Fatalf("list_accounts returned %d accounts", len(accts.Accounts))
			}
			id := accts.Accounts[0].ID

			var pv backends.PortfolioValuation
			callTool(t, cs, "get_portfolio", map[string]any{"account_id": id}, &pv)
			checkValuation(t, pv)

			// The resource is the same document as the tool's output.
			rr, err := cs.ReadResource(t.Context(), &mcp.ReadResourceParams{URI: "portfolio://accounts/" + id})
			if err != nil {
				t.Fatal(err)
			}
			var fromResource backends.PortfolioValuation
			if err := json.Unmarshal([]byte(rr.Contents[0].Text), &fromResource); err != nil {
				t.Fatal(err)
			}
			if rr.Contents[0].MIMEType != "application/json" || fromResource.TotalValue != pv.TotalValue || len(fromResource.Holdings) != len(pv.Holdings) {
				t.Errorf("resource and tool disagree: %+v vs %+v", fromResource.TotalValue, pv.TotalValue)
			}
			tmpls, err := cs.ListResourceTemplates(t.Context(), nil)
			var uris []string
			if err == nil {
				for _, rt := range tmpls.ResourceTemplates {
					uris = append(uris, rt.URITemplate)
				}
				slices.Sort(uris)
			}
			if !slices.Equal(uris, []string{"portfolio://accounts/{account_id}", "quote://tickers/{ticker}"}) {
				t.Errorf("resource templates = %v, %v", uris, err)
			}

			var quotes backends.QuoteSet
			callTool(t, cs, "get_quotes", map[string]any{"tickers": []string{"AAPL", "msft", "NOPE", "AAPL"}}, &quotes)
			if len(quotes.Quotes) != 2 || quotes.Quotes[0].Ticker != "AAPL" || quotes.Quotes[1].Ticker != "MSFT" || !slices.Equal(quotes.Missing, []string{"NOPE"}) {
				t.Errorf("get_quotes = %+v", quotes)
			}
			for _, q := range quotes.Quotes {
				if q.Price <= 0 || q.Bid >= q.Ask || q.AsOf.IsZero() {
					t.Errorf("implausible quote %+v", q)
				}
			}

			var rs backends.RiskSummary
			callTool(t, cs, "get_risk_summary", map[string]any{"account_id": id}, &rs)
			if len(rs.VaR) != 2 || rs.VaR[0].Confidence != 0.95 || rs.VaR[1].Confidence != 0.99 ||
				rs.VaR[1].Amount < rs.VaR[0].Amount || rs.VaR[0].Amount <= 0 || rs.VaRMethod == "" {
				t.Errorf("VaR = %+v (%s)", rs.VaR, rs.VaRMethod)
			}
			if len(rs.SectorExposure) == 0 || len(rs.TopConcentrations) == 0 || rs.Beta <= 0 {
				t.Errorf("risk summary incomplete: %+v", rs)
			}

			var page backends.EquityPage
			callTool(t, cs, "search_equities", map[string]any{"query": "MA", "limit": 5}, &page)
			if page.Equities[0].Ticker != "MA" {
				t.Errorf("search MA: first is %s, want the exact ticker MA", page.Equities[0].Ticker)
			}

			prompt, err := cs.GetPrompt(t.Context(), &mcp.GetPromptParams{Name: "portfolio_review", Arguments: map[string]string{"account_id": id}})
			if err != nil {
				t.Fatal(err)
			}
			text := prompt.Messages[0].Content.(*mcp.TextContent).Text
			for _, tool := range []string{"get_portfolio", "get_risk_summary", "get_quotes", "search_equities"} {
				if !strings.Contains(text, tool) {
					t.Errorf("prompt does not mention %s", tool)
				}
			}
		})
	}
}

func checkValuation(t *testing.T, pv backends.PortfolioValuation) {
	t.Helper()
	if len(pv.Holdings) == 0 || pv.AsOf.IsZero() || pv.BaseCurrency != "USD" {
		t.Fatalf("portfolio incomplete: %+v", pv)
	}
	var mv, w float64
	for i, h := range pv.Holdings {
		mv += h.MarketValue
		w += h.Weight
		if i > 0 && h.MarketValue > pv.Holdings[i-1].MarketValue {
			t.Errorf("holdings not sorted by market value at %s", h.Ticker)
		}
	}
	if d := mv + pv.Cash - pv.TotalValue; d > 0.05 || d < -0.05 {
		t.Errorf("positions %.2f + cash %.2f != total %.2f", mv, pv.Cash, pv.TotalValue)
	}
	if d := w + pv.CashWeight - 1; d > 1e-4 || d < -1e-4 {
		t.Errorf("weights sum to %f, want 1", w+pv.CashWeight)
	}
}

// TestInputSchemasResolve: every advertised input schema resolves, with its
// defaults valid against it. Tools resolve their schema on the first call
// (handlers/compile.go), so this is where a bad pattern or default fails.
func TestInputSchemasResolve(t *testing.T) {
	srv := startServer(t, nil)
	cs := connect(t, srv.URL+"/mcp", protocols[0], nil)
	tools, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tools.Tools) < 10 {
		t.Fatalf("%d tools listed, want every tool", len(tools.Tools))
	}
	for _, tool := range tools.Tools {
		b, err := json.Marshal(tool.InputSchema)
		if err != nil {
			t.Fatal(err)
		}
		var s jsonschema.Schema
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%s: %v", tool.Name, err)
		}
		if _, err := s.Resolve(&jsonschema.ResolveOptions{ValidateDefaults: true}); err != nil {
			t.Errorf("%s: input schema does not resolve: %v", tool.Name, err)
		}
	}
}

// TestSearchPagination walks every page of a search and checks the pages
// partition the result set, and that a cursor cannot be reused on another query.
func TestSearchPagination(t *testing.T) {
	srv := startServer(t, nil)
	cs := connect(t, srv.URL+"/mcp", protocols[0], nil)

	var all backends.EquityPage
	callTool(t, cs, "search_equities", map[string]any{"limit": 100}, &all)
	if all.Total < 150 {
		t.Fatalf("universe has %d equities, want >= 150", all.Total)
	}

	seen := map[string]bool{}
	cursor, pages := "", 0
	for {
		args := map[string]any{"limit": 17}
		if cursor != "" {
			args["cursor"] = cursor
		}
		var page backends.EquityPage
		callTool(t, cs, "search_equities", args, &page)
		pages++
		for _, e := range page.Equities {
			if seen[e.Ticker] {
				t.Fatalf("%s returned twice", e.Ticker)
			}
			seen[e.Ticker] = true
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if len(seen) != all.Total || pages != (all.Total+16)/17 {
		t.Errorf("paged %d equities in %d pages, want %d in %d", len(seen), pages, all.Total, (all.Total+16)/17)
	}

	var first backends.EquityPage
	callTool(t, cs, "search_equities", map[string]any{"sector": "Energy", "limit": 2}, &first)
	msg := callToolError(t, cs, "search_equities", map[string]any{"sector": "Utilities", "cursor": first.NextCursor})
	if !strings.Contains(msg, "cursor") {
		t.Errorf("reused cursor: %q, want a message about the cursor", msg)
	}

	var energy backends.EquityPage
	callTool(t, cs, "search_equities", map[string]any{"sector": "Energy", "min_market_cap": 50e9, "exchange": "NYSE", "limit": 100}, &energy)
	for _, e := range energy.Equities {
		if e.Sector != "Energy" || e.MarketCap < 50e9 || e.Exchange != "NYSE" {
			t.Errorf("filter leaked %+v", e)
		}
	}
}

// TestToolErrors checks that bad input and unknown entities come back as
// tool results an agent can act on, and protocol misuse as JSON-RPC errors.
func TestToolErrors(t *testing.T) {
	srv := startServer(t, nil)
	cs := connect(t, srv.URL+"/mcp", protocols[1], nil)

	tests := []struct {
		tool string
		args map[string]any
		want string
	}{
		{"get_portfolio", map[string]any{"account_id": "ACC-9999"}, "not found"},
		{"get_risk_summary", map[string]any{"account_id": "ACC-9999"}, "not found"},
		{"get_portfolio", map[string]any{"account_id": "../../etc/passwd"}, "account_id"},
		{"get_portfolio", map[string]any{}, "account_id"},
		{"search_equities", map[string]any{"limit": 500}, "limit"},
		{"search_equities", map[string]any{"sector": "Crypto"}, "sector"},
		{"search_equities", map[string]any{"cursor": "not-a-cursor"}, "cursor"},
		{"get_quotes", map[string]any{"tickers": []string{}}, "tickers"},
		{"get_quotes", map[string]any{"tickers": strings.Split(strings.Repeat("A,", 51)+"A", ",")}, "tickers"},
		{"get_quotes", map[string]any{"tickers": []string{"AAPL; DROP"}}, "tickers"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %v", tt.tool, tt.args), func(t *testing.T) {
			msg := callToolError(t, cs, tt.tool, tt.args)
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not mention %q", msg, tt.want)
			}
		})
	}

	if _, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "transfer_funds"}); err == nil {
		t.Error("unknown tool: want a JSON-RPC error")
	}
	if _, err := cs.ReadResource(t.Context(), &mcp.ReadResourceParams{URI: "portfolio://accounts/ACC-9999"}); err == nil {
		t.Error("unknown account resource: want resource-not-found")
	}
	if _, err := cs.GetPrompt(t.Context(), &mcp.GetPromptParams{Name: "portfolio_review", Arguments: map[string]string{"account_id": "<script>"}}); err == nil {
		t.Error("prompt with a bad account id: want an error")
	}
}

// TestRawHTTP covers what an SDK client never sends: malformed JSON-RPC,
// wrong methods and media types, oversized bodies.
func TestRawHTTP(t *testing.T) {
	srv := startServer(t, map[string]string{"MAX_BODY_BYTES": "4096"})
	tests := []struct {
		name, method, body, ctype string
		status                    int
		contains                  string
	}{
		{"parse error", "POST", `{"jsonrpc":"2.0","id":1,"method":`, "application/json", 400, `"code":-32700`},
		{"batch", "POST", `[1,2,3]`, "application/json", 400, `"code":-32600`},
		{"not an object", "POST", `"hello"`, "application/json", 400, `"code":-32600`},
		{"wrong version", "POST", `{"jsonrpc":"1.0","id":3,"method":"ping"}`, "application/json", 400, `"id":3`},
		{"no method", "POST", `{"jsonrpc":"2.0","id":4}`, "application/json", 400, `"code":-32600`},
		{"GET not allowed", "GET", "", "", 405, ""},
		{"DELETE not allowed", "DELETE", "", "", 405, ""},
		{"wrong content type", "POST", `{}`, "text/plain", 415, ""},
		{"too large", "POST", `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":"` + strings.Repeat("a", 5000) + `"}}`, "application/json", 413, ""},
		{"unknown method", "POST", `{"jsonrpc":"2.0","id":7,"method":"no/such","params":{}}`, "application/json", 200, `"code":-32601`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+"/mcp", strings.NewReader(tt.body))
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("MCP-Protocol-Version", "2025-11-25")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Errorf("status %d (%s), want %d", resp.StatusCode, body, tt.status)
			}
			if !strings.Contains(string(body), tt.contains) {
				t.Errorf("body %s does not contain %s", body, tt.contains)
			}
			if strings.Contains(string(body), "goroutine") || strings.Contains(string(body), ".go:") {
				t.Errorf("body leaks internals: %s", body)
			}
		})
	}
}
