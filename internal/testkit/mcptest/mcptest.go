// Package mcptest serves an MCP server over real Streamable HTTP in a test
// and connects the go-sdk client to it: what the governance packages'
// middleware tests need without the whole application.
package mcptest

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Connect serves srv statelessly with JSON responses, behind wrap (for
// example a step that puts a principal in the context; nil: none), and
// returns a connected client session. Both close when the test ends.
func Connect(t testing.TB, srv *mcp.Server, wrap func(http.Handler) http.Handler) *mcp.ClientSession {
	t.Helper()
	var h http.Handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	if wrap != nil {
		h = wrap(h)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "1"}, nil).
		Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: hs.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}
