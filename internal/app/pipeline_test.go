package app_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/internal/app"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
)

// TestArgumentsDecodedOnce: every step of the request path (the scope
// challenge, audit, rate limit, entitlement, the tool's validation) reads
// the arguments the edge decoded, so a call's arguments are decoded exactly
// once, whatever the tool and outcome.
func TestArgumentsDecodedOnce(t *testing.T) {
	var mu sync.Mutex
	decodes := map[string]int{}
	srv := startServer(t, nil, app.WithCallObserver(func(c *call.Call) {
		if c.Method != "tools/call" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		decodes[c.Tool] += c.ArgsDecodes()
	}))
	cs := connect(t, srv.URL+"/mcp", protocols[0], nil)
	calls := []struct {
		tool string
		args map[string]any
	}{
		{"get_portfolio", map[string]any{"account_id": "ACC-001"}},
		{"get_quotes", map[string]any{"tickers": []string{"AAPL"}}},
		{"preview_order", map[string]any{"account_id": "ACC-001", "ticker": "AAPL", "side": "buy", "quantity": 1}},
		{"place_order", map[string]any{"account_id": "ACC-001", "ticker": "AAPL", "side": "buy", "quantity": 1, "idempotency_key": "decode-once-1"}},
		{"get_portfolio", map[string]any{"account_id": "bad id"}}, // refused by the tool's schema
	}
	for _, c := range calls {
		if _, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: c.tool, Arguments: c.args}); err != nil {
			t.Fatalf("%s: %v", c.tool, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]int{"get_portfolio": 2, "get_quotes": 1, "preview_order": 1, "place_order": 1}
	for tool, n := range want {
		if decodes[tool] != n {
			t.Errorf("%s: arguments decoded %d times over its calls, want %d (once per call)", tool, decodes[tool], n)
		}
	}
}

var update = flag.Bool("update", false, "rewrite testdata/surface.json from the running server")

// TestSurfaceSnapshot pins what agents see: every tool, resource template
// and prompt with its description, schemas and annotations. A change to it
// is a reviewed diff of testdata/surface.json (go test ./internal/app -run
// TestSurfaceSnapshot -update), never an accident.
func TestSurfaceSnapshot(t *testing.T) {
	srv := startServer(t, nil)
	cs := connect(t, srv.URL+"/mcp", protocols[0], nil)
	tools, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	templates, err := cs.ListResourceTemplates(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	prompts, err := cs.ListPrompts(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.MarshalIndent(map[string]any{
		"tools": tools.Tools, "resourceTemplates": templates.ResourceTemplates, "prompts": prompts.Prompts,
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "surface.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (create it with -update and review it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("the MCP surface changed; review the diff and run go test ./internal/app -run TestSurfaceSnapshot -update\n%s", diff(string(want), string(got)))
	}
}

// diff is the first line where want and got differ.
func diff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, w, g)
		}
	}
	return ""
}
