package app_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
)

// BenchmarkSearchEquitiesHTTP measures one tools/call of search_equities
// through the full HTTP stack (request id, body limit, Host/Origin checks,
// JSON-RPC guard, go-sdk stateless handler, metrics and logging middleware,
// schema validation, the tool) from a keep-alive HTTP client, as agents and
// queue-proxy call it. "dev" runs without authentication and audits to the
// log; "production" verifies a bearer JWT against a real JWKS issuer and
// posts every audit event to a CloudEvents sink.
// Run: go test ./app -run '^$' -bench SearchEquities -benchmem
func BenchmarkSearchEquitiesHTTP(b *testing.B) {
	// Limits high enough that every call does the full work; the limiter
	// itself still runs.
	common := map[string]string{"LOG_LEVEL": "error", "RATE_READ_PER_SECOND": "1000000", "RATE_READ_BURST": "1000000"}
	b.Run("dev", func(b *testing.B) { benchSearch(b, startServer(b, common), "", "2025-11-25") })
	b.Run("dev-2026-07-28", func(b *testing.B) { benchSearch(b, startServer(b, common), "", "2026-07-28") })
	b.Run("production", func(b *testing.B) {
		setSecrets(b)
		iss := oauthtest.New(b)
		sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusAccepted)
		}))
		b.Cleanup(sink.Close)
		env := map[string]string{"OAUTH_ISSUER": iss.URL, "PUBLIC_URL": secResource, "K_SINK": sink.URL}
		for k, v := range common {
			env[k] = v
		}
		claims := iss.Claims("bench", secResource, "portfolio:read", "ACC-1001")
		claims["exp"] = time.Now().Add(time.Hour).Unix()
		benchSearch(b, startServer(b, env), iss.Token(b, claims), "2025-11-25")
	})
}

func benchSearch(b *testing.B, srv *testServer, token, protocol string) {
	meta := ""
	if protocol >= "2026-07-28" {
		meta = `,"_meta":{"io.modelcontextprotocol/protocolVersion":"` + protocol + `","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}`
	}
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_equities","arguments":{"query":"in","limit":20}` + meta + `}}`)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	post := func() {
		req, _ := http.NewRequest("POST", srv.URL+"/mcp", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("MCP-Protocol-Version", protocol)
		if protocol >= "2026-07-28" {
			req.Header.Set("Mcp-Method", "tools/call")
			req.Header.Set("Mcp-Name", "search_equities")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
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
