package httpserver_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/httpserver"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

var (
	onLoopback = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	onPodIP    = &net.TCPAddr{IP: net.IPv4(10, 12, 0, 7), Port: 8080}
)

// arrivedOn is r as the server hands it over when the connection arrived on
// local address a.
func arrivedOn(r *http.Request, a net.Addr) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, a))
}

// ok answers 200 and what it saw: the request id, the parsed call's method
// and tool, and the body as it reached it.
var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	seen := map[string]string{"request_id": telemetry.RequestID(r.Context())}
	if c := call.From(r.Context()); c != nil {
		seen["method"], seen["tool"] = c.Method, c.Tool
	}
	body, _ := io.ReadAll(r.Body)
	seen["body"] = string(body)
	httpserver.WriteJSON(w, http.StatusOK, seen)
})

func serve(h http.Handler, r *http.Request) (*http.Response, map[string]any) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	res := rec.Result()
	var body map[string]any
	json.NewDecoder(res.Body).Decode(&body)
	return res, body
}

func TestRequestID(t *testing.T) {
	h := httpserver.RequestID(ok)
	for _, tc := range []struct {
		name, sent string
		adopted    bool
	}{
		{"well formed is adopted", "abc-123_X.y", true},
		{"none is made", "", false},
		{"a header injection is replaced", "abc\r\nX-Evil: 1", false},
		{"a space is replaced", "abc def", false},
		{"longer than 64 is replaced", strings.Repeat("a", 65), false},
		{"64 is adopted", strings.Repeat("a", 64), true},
		{"a UUID is adopted", "0b5f6f4e-3c1a-4b7e-9d2a-6f1c2e3d4a5b", true},
		{"punctuation first is adopted", ".x_-", true},
		{"non-ASCII is replaced", "idé", false},
		{"a slash is replaced", "a/b", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/mcp", nil)
			r.Header["X-Request-Id"] = []string{tc.sent}
			res, seen := serve(h, r)
			echoed := res.Header.Get("X-Request-Id")
			if echoed == "" || echoed != seen["request_id"] {
				t.Fatalf("echoed %q, handler saw %q; want the same non-empty id", echoed, seen["request_id"])
			}
			if adopted := echoed == tc.sent; adopted != tc.adopted {
				t.Errorf("id %q adopted = %v, want %v", tc.sent, adopted, tc.adopted)
			}
		})
	}
}

func TestLimitBodyAndParseCall(t *testing.T) {
	h := httpserver.Chain(ok, httpserver.LimitBody(1024), httpserver.ParseCall)
	toolCall := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_quote","arguments":{"tickers":["KO"]}}}`
	for _, tc := range []struct {
		name        string
		method      string
		contentType string
		body        io.Reader
		status      int
		rpcCode     float64 // a JSON-RPC error's code, 0: none
		tool        string
	}{
		{"a tool call is parsed and its body handed on", http.MethodPost, "application/json", strings.NewReader(toolCall), 200, 0, "get_quote"},
		{"malformed JSON is a JSON-RPC parse error", http.MethodPost, "application/json", strings.NewReader(`{"jsonrpc":`), 400, -32700, ""},
		{"not JSON-RPC 2.0", http.MethodPost, "application/json", strings.NewReader(`{"jsonrpc":"1.0","id":1,"method":"ping"}`), 400, -32600, ""},
		{"a GET passes unparsed", http.MethodGet, "", nil, 200, 0, ""},
		{"another content type passes unparsed (the SDK refuses it)", http.MethodPost, "text/plain", strings.NewReader("hello"), 200, 0, ""},
		// No Content-Length: only reading finds the body too large.
		{"a streamed body over the limit", http.MethodPost, "application/json", io.MultiReader(strings.NewReader(`{"x":"`), strings.NewReader(strings.Repeat("a", 2048))), 413, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/mcp", tc.body)
			r.ContentLength = -1
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			res, body := serve(h, r)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %v)", res.StatusCode, tc.status, body)
			}
			if tc.rpcCode != 0 {
				e, _ := body["error"].(map[string]any)
				if body["jsonrpc"] != "2.0" || e == nil || e["code"] != tc.rpcCode {
					t.Fatalf("body %v; want a JSON-RPC error with code %v", body, tc.rpcCode)
				}
			}
			if tc.status == 200 && tc.tool != "" && body["tool"] != tc.tool {
				t.Errorf("parsed tool %v, want %q", body["tool"], tc.tool)
			}
			if tc.status == 200 && tc.tool == "" && body["method"] != nil {
				t.Errorf("parsed %v, want the request passed on unparsed", body["method"])
			}
			if tc.tool != "" && body["body"] != toolCall {
				t.Errorf("the next handler read %q, want the body as sent", body["body"])
			}
		})
	}

	t.Run("a declared length over the limit is refused unread", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(strings.Repeat("a", 2048)))
		r.Header.Set("Content-Type", "application/json")
		if res, _ := serve(h, r); res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413", res.StatusCode)
		}
	})
}

func TestGuard(t *testing.T) {
	open, err := httpserver.Guard(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	listed, err := httpserver.Guard([]string{"mcp.example.com", ".apps.example.org"}, []string{"https://console.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		guard   func(http.Handler) http.Handler
		on      net.Addr
		host    string
		headers map[string]string
		allowed bool
	}{
		{"localhost on loopback", open, onLoopback, "localhost:8080", nil, true},
		{"a loopback IP on loopback", open, onLoopback, "[::1]:8080", nil, true},
		{"DNS rebinding: a public name on loopback, no allow list", open, onLoopback, "evil.example:8080", nil, false},
		{"*.localhost is not loopback (DNS decides)", open, onLoopback, "app.localhost:8080", nil, false},
		{"behind an ingress without an allow list", open, onPodIP, "mcp.example.com", nil, true},
		{"an allowed name through queue-proxy on loopback", listed, onLoopback, "MCP.example.com.", nil, true},
		{"a subdomain of an allowed domain", listed, onPodIP, "x.apps.example.org", nil, true},
		{"the allowed domain itself", listed, onPodIP, "apps.example.org", nil, true},
		{"a lookalike of the allowed domain", listed, onPodIP, "evilapps.example.org", nil, false},
		{"a name off the allow list", listed, onPodIP, "other.example.com", nil, false},
		{"a cross-site browser POST", open, onLoopback, "localhost:8080", map[string]string{"Origin": "https://evil.example"}, false},
		{"a cross-site fetch without Origin", open, onLoopback, "localhost:8080", map[string]string{"Sec-Fetch-Site": "cross-site"}, false},
		{"a same-origin browser POST", open, onLoopback, "localhost:8080", map[string]string{"Origin": "http://localhost:8080"}, true},
		{"a trusted origin", listed, onPodIP, "mcp.example.com", map[string]string{"Origin": "https://console.example.com"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := arrivedOn(httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader("{}")), tc.on)
			r.Host = tc.host
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			res, body := serve(tc.guard(ok), r)
			if allowed := res.StatusCode == http.StatusOK; allowed != tc.allowed {
				t.Fatalf("Host %q from %v: status %d (%v), allowed = %v, want %v", tc.host, tc.on, res.StatusCode, body, allowed, tc.allowed)
			}
			if !tc.allowed && res.StatusCode != http.StatusForbidden {
				t.Errorf("refused with %d, want 403", res.StatusCode)
			}
		})
	}

	if _, err := httpserver.Guard(nil, []string{"not an origin"}); err == nil {
		t.Error("Guard accepted a malformed trusted origin")
	}
}
