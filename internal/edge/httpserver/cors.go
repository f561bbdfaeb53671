package httpserver

import (
	"net/http"

	"github.com/rs/cors"
)

// CORS answers the browser's side of a cross-origin call to /mcp from the
// trusted origins (ALLOWED_ORIGINS, e.g. a hosted MCP inspector): the
// preflight, and the headers that let the page read the answer. The guard
// before it has already refused every other origin; with no trusted origin
// it is not in the chain at all. Bearer tokens, never cookies: no
// credentials mode.
func CORS(origins []string) func(http.Handler) http.Handler {
	if len(origins) == 0 {
		return func(h http.Handler) http.Handler { return h }
	}
	c := cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: []string{http.MethodPost},
		// What MCP clients send: the token, the protocol's own headers
		// (both generations) and trace context.
		AllowedHeaders: []string{"Authorization", "Content-Type", "Accept", "Mcp-Protocol-Version", "Mcp-Session-Id",
			"Mcp-Method", "Mcp-Name", "Last-Event-ID", "X-Request-Id", "Traceparent", "Tracestate"},
		// What a client reads: the challenge naming the metadata, the
		// request's id for support, and when to retry.
		ExposedHeaders: []string{"WWW-Authenticate", "Mcp-Session-Id", "Mcp-Protocol-Version", "X-Request-Id", "Retry-After"},
		MaxAge:         600,
	})
	return c.Handler
}
