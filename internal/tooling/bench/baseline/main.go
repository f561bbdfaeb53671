// Command baseline is the floor the MCP server is measured against: plain
// net/http answering a stateless JSON-RPC tools/call of search_equities
// with the same result bytes as portfolio-mcp (2025-11-25, JSON response),
// searching the same demo universe through backends.SearchUniverse, with
// no MCP stack, auth, middleware or schema validation. See
// docs/performance.md. Usage: PORT=8090 baseline
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
)

type request struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  struct {
		Name      string `json:"name"`
		Arguments struct {
			Query        string  `json:"query,omitempty"`
			Sector       string  `json:"sector,omitempty"`
			Exchange     string  `json:"exchange,omitempty"`
			MinMarketCap float64 `json:"min_market_cap,omitempty"`
			MaxMarketCap float64 `json:"max_market_cap,omitempty"`
			Limit        int     `json:"limit,omitempty"`
			Cursor       string  `json:"cursor,omitempty"`
		} `json:"arguments"`
	} `json:"params"`
}

type textContent struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type result struct {
	Content           []textContent   `json:"content"`
	StructuredContent json.RawMessage `json:"structuredContent"`
	IsError           bool            `json:"isError,omitempty"`
}

type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  result          `json:"result"`
}

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8090"
	}
	md := demo.New(nil)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("POST /mcp", func(w http.ResponseWriter, r *http.Request) {
		var req request
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil || req.Method != "tools/call" || req.Params.Name != "search_equities" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		a := req.Params.Arguments
		page, err := md.SearchEquities(context.Background(), backends.EquityQuery{
			Text: a.Query, Sector: a.Sector, Exchange: a.Exchange,
			MinMarketCap: a.MinMarketCap, MaxMarketCap: a.MaxMarketCap, Limit: a.Limit, Cursor: a.Cursor,
		})
		var res result
		if err != nil {
			res = result{Content: []textContent{{"text", err.Error()}}, IsError: true}
		} else {
			out, _ := json.Marshal(page)
			res = result{Content: []textContent{{"text", string(out)}}, StructuredContent: out}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(response{JSONRPC: "2.0", ID: req.ID, Result: res})
	})
	addr := "127.0.0.1:" + port
	fmt.Fprintln(os.Stderr, "baseline listening on", addr)
	log.Fatal(http.ListenAndServe(addr, mux))
}
