// Command mcpgo is the comparison row of the load harness: the same
// search_equities tool (the demo universe through backends.SearchUniverse,
// the same structured result and its JSON text copy) served by
// github.com/mark3labs/mcp-go's stateless Streamable HTTP server, with no
// governance. It is its own module so the server's go.mod never links
// another MCP library. Usage: PORT=8092 mcpgo
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8092"
	}
	md := demo.New(nil)
	s := server.NewMCPServer("mcpgo-bench", "1", server.WithToolCapabilities(false))
	s.AddTool(mcp.NewTool("search_equities",
		mcp.WithDescription("Search equities by ticker, name or kind of business."),
		mcp.WithString("query"), mcp.WithString("sector"), mcp.WithString("exchange"),
		mcp.WithNumber("min_market_cap"), mcp.WithNumber("max_market_cap"),
		mcp.WithNumber("limit"), mcp.WithString("cursor"),
	), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		page, err := md.SearchEquities(ctx, backends.EquityQuery{
			Text: req.GetString("query", ""), Sector: req.GetString("sector", ""), Exchange: req.GetString("exchange", ""),
			MinMarketCap: req.GetFloat("min_market_cap", 0), MaxMarketCap: req.GetFloat("max_market_cap", 0),
			Limit: req.GetInt("limit", 0), Cursor: req.GetString("cursor", ""),
		})
		if err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		out, err := json.Marshal(page)
		if err != nil {
			return nil, err
		}
		return mcp.NewToolResultStructured(json.RawMessage(out), string(out)), nil
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.Handle("/mcp", server.NewStreamableHTTPServer(s, server.WithStateLess(true)))
	addr := "127.0.0.1:" + port
	fmt.Fprintln(os.Stderr, "mcpgo listening on", addr)
	log.Fatal(http.ListenAndServe(addr, mux))
}
