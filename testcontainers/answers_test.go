package integration

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// answers runs every read capability the backends feed (the read tools,
// the portfolio resource and search pagination) against one server and
// returns each answer as canonical JSON (or the tool error's text), keyed
// by a name for the call.
func answers(t *testing.T, cs *mcp.ClientSession) map[string]string {
	t.Helper()
	out := map[string]string{}
	call := func(key, tool string, args map[string]any) map[string]any {
		res := callTool(t, cs, tool, args)
		if res.IsError {
			out[key] = "error: " + resultText(res)
			return nil
		}
		b, err := json.Marshal(res.StructuredContent)
		if err != nil {
			t.Fatal(err)
		}
		out[key] = string(b)
		var m map[string]any
		json.Unmarshal(b, &m)
		return m
	}

	accts := call("list_accounts", "list_accounts", nil)
	list, _ := accts["accounts"].([]any)
	if len(list) == 0 {
		t.Fatalf("list_accounts returned no accounts: %s", out["list_accounts"])
	}
	for _, a := range list {
		id := a.(map[string]any)["account_id"].(string)
		call("get_portfolio "+id, "get_portfolio", map[string]any{"account_id": id})
		call("get_risk_summary "+id, "get_risk_summary", map[string]any{"account_id": id})
		rr, err := cs.ReadResource(t.Context(), &mcp.ReadResourceParams{URI: "portfolio://accounts/" + id})
		if err != nil {
			t.Fatalf("reading the portfolio resource of %s: %v", id, err)
		}
		out["resource "+id] = rr.Contents[0].MIMEType + " " + rr.Contents[0].Text
	}
	call("get_portfolio unknown", "get_portfolio", map[string]any{"account_id": "ACC-0000"})
	call("get_risk_summary unknown", "get_risk_summary", map[string]any{"account_id": "ACC-0000"})

	call("get_quotes mixed", "get_quotes", map[string]any{"tickers": []string{"AAPL", "msft", "BRK.B", "NOPE", "aapl"}})
	for i, args := range []map[string]any{
		{},
		{"query": "MA", "limit": 5},
		{"query": "inc", "limit": 100},
		{"sector": "Energy", "min_market_cap": 5e10},
		{"exchange": "NASDAQ", "max_market_cap": 1e11, "limit": 7},
		{"query": "x", "cursor": "not-a-cursor"},
	} {
		call(fmt.Sprintf("search_equities %d %v", i, args), "search_equities", args)
	}

	// Every page of the whole universe, and quotes for all of it in
	// batches of the tool's maximum.
	var tickers []string
	cursor := ""
	for page := 0; ; page++ {
		args := map[string]any{"limit": 23}
		if cursor != "" {
			args["cursor"] = cursor
		}
		p := call(fmt.Sprintf("search page %d", page), "search_equities", args)
		if p == nil {
			t.Fatalf("search page %d failed: %s", page, out[fmt.Sprintf("search page %d", page)])
		}
		for _, e := range p["equities"].([]any) {
			tickers = append(tickers, e.(map[string]any)["ticker"].(string))
		}
		next, _ := p["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = next
	}
	for i := 0; i < len(tickers); i += 50 {
		call(fmt.Sprintf("get_quotes batch %d", i/50), "get_quotes", map[string]any{"tickers": tickers[i:min(i+50, len(tickers))]})
	}
	return out
}

// compareAnswers fails the test for every call whose answers differ.
func compareAnswers(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if got[k] != want[k] {
			t.Errorf("%s: %s differs:\n got: %.400s\nwant: %.400s", what, k, got[k], want[k])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d answers, demo gave %d", what, len(got), len(want))
	}
}

// readOnlyToolsCovered logs any read-only tool the comparison does not
// exercise, so a new one is noticed.
func readOnlyToolsCovered(t *testing.T, cs *mcp.ClientSession) {
	t.Helper()
	covered := []string{"list_accounts", "get_portfolio", "get_risk_summary", "get_quotes", "search_equities"}
	tools, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
		if tool.Annotations != nil && tool.Annotations.ReadOnlyHint && !slices.Contains(covered, tool.Name) {
			t.Logf("read-only tool %s is not compared (it reads no backend state the demo and fakes share, or needs orders placed first)", tool.Name)
		}
	}
	for _, c := range covered {
		if !slices.Contains(names, c) {
			t.Errorf("tool %s is not served (tools: %s)", c, strings.Join(names, ", "))
		}
	}
}

// TestSameAnswersAsDemo: the server as a local process on the containerised
// fakes answers every read exactly as the server on its built-in demo
// backends does.
func TestSameAnswersAsDemo(t *testing.T) {
	s := needDocker(t)
	s.fakes.reset(t)
	demoSrv := startProcess(t, s, nil)
	want := answers(t, connect(t, demoSrv.endpoint()))

	onFakes := startProcess(t, s, s.fakes.hostEnv(t))
	cs := connect(t, onFakes.endpoint())
	readOnlyToolsCovered(t, cs)
	compareAnswers(t, "server process on the fakes", answers(t, cs), want)

	// The answers really came over HTTP from the fakes.
	if n := s.fakes.hits(t, "GET /v1/equities"); n == 0 {
		t.Errorf("the fakes saw no search requests")
	}
}
