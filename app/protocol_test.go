package app_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/trading"
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
