package app_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

// BenchmarkSearchEquitiesHTTP measures one tools/call of search_equities
// through the full HTTP stack (request id, body limit, Host/Origin checks,
// JSON-RPC guard, go-sdk stateless handler, metrics and logging middleware,
// schema validation, the tool) from a keep-alive HTTP client, as agents and
// queue-proxy call it. Run: go test ./app -run '^$' -bench SearchEquities -benchmem
func BenchmarkSearchEquitiesHTTP(b *testing.B) {
	srv := startServer(b, map[string]string{"LOG_LEVEL": "error"})
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_equities","arguments":{"query":"in","limit":20}}}`)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	post := func() {
		req, _ := http.NewRequest("POST", srv.URL+"/mcp", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("MCP-Protocol-Version", "2025-11-25")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n < 100 {
			b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
		}
	}
	post()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			post()
		}
	})
}
