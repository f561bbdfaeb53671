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
	// Limits high enough that every call does the full work; the limiter
	// itself still runs.
	srv := startServer(b, map[string]string{"LOG_LEVEL": "error", "RATE_READ_PER_SECOND": "1000000", "RATE_READ_BURST": "1000000"})
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
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(data, []byte(`"structuredContent"`)) {
			b.Fatalf("status %d: %s", resp.StatusCode, data)
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
