package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// Recorder receives the audit event of a call refused at the HTTP layer.
type Recorder interface {
	Emit(ctx context.Context, e audit.Event)
}

// Challenge answers a tools/call or resources/read whose scope the
// principal lacks with HTTP 403 and
//
//	WWW-Authenticate: Bearer error="insufficient_scope", scope="trade:write",
//	  resource_metadata="https://.../.well-known/oauth-protected-resource/mcp", ...
//
// before MCP runs: the runtime scope challenge of the MCP authorization spec
// (2025-11-25), which clients answer with step-up authorization. The scope
// parameter names only the scope this operation needs (as RFC 6750 section
// 3.1 and the 2026-07-28 revision of the spec say); the client adds it to
// what it already holds.
//
// This works with the stateless handler because each POST carries exactly
// one JSON-RPC message (batches are refused upstream). Anything the peek
// cannot classify passes on to the MCP middleware, which enforces the same
// policy authoritatively.
func (p *Policy) Challenge(resourceMetadataURL string, rec Recorder) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			pr, ok := principal.From(r.Context())
			if r.Method != http.MethodPost || !ok {
				next.ServeHTTP(w, r)
				return
			}
			body, err := io.ReadAll(r.Body) // bounded by the server's body limit
			if err != nil {
				next.ServeHTTP(w, r) // let the MCP handler report the read error
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			call, ok := peek(body)
			if !ok {
				next.ServeHTTP(w, r)
				return
			}
			scope, class, known := p.operationScope(call)
			if !known || pr.HasScope(scope) {
				next.ServeHTTP(w, r)
				return
			}
			rec.Emit(r.Context(), audit.Event{
				Time:       time.Now().UTC(),
				Principal:  pr.Subject,
				ClientID:   pr.ClientID,
				Tool:       call.subject(),
				Class:      class,
				ArgsDigest: audit.Digest(call.args),
				Args:       audit.Redact(call.args),
				Outcome:    audit.OutcomeDenied,
				Error:      "insufficient_scope: " + scope,
				RequestID:  telemetry.RequestID(r.Context()),
			})
			writeChallenge(w, resourceMetadataURL, scope, call)
		})
	}
}

// rpcCall is what the challenge needs from a JSON-RPC request.
type rpcCall struct {
	id     json.RawMessage
	method string
	tool   string          // tools/call
	uri    string          // resources/read
	args   json.RawMessage // tools/call arguments, or {"uri": ...}
}

func (c rpcCall) subject() string {
	if c.method == "tools/call" {
		return c.tool
	}
	return audit.ResourceRead
}

// peek decodes the method and the tool name or URI. It reads object keys
// exactly (no case folding), as the SDK does.
func peek(body []byte) (rpcCall, bool) {
	var msg map[string]json.RawMessage
	if json.Unmarshal(body, &msg) != nil {
		return rpcCall{}, false
	}
	var c rpcCall
	if json.Unmarshal(msg["method"], &c.method) != nil {
		return rpcCall{}, false
	}
	c.id = msg["id"]
	var params map[string]json.RawMessage
	if json.Unmarshal(msg["params"], &params) != nil {
		return rpcCall{}, false
	}
	switch c.method {
	case "tools/call":
		if json.Unmarshal(params["name"], &c.tool) != nil {
			return rpcCall{}, false
		}
		c.args = params["arguments"]
	case "resources/read":
		if json.Unmarshal(params["uri"], &c.uri) != nil {
			return rpcCall{}, false
		}
		c.args, _ = json.Marshal(map[string]string{"uri": c.uri})
	default:
		return rpcCall{}, false
	}
	return c, true
}

// operationScope is the scope call needs and the class recorded for it.
func (p *Policy) operationScope(c rpcCall) (scope, class string, known bool) {
	if c.method == "resources/read" {
		return p.ReadScope(), audit.ReadClass, true
	}
	scope, known = p.ToolScope(c.tool)
	return scope, p.ClassOf(c.tool), known
}

func writeChallenge(w http.ResponseWriter, resourceMetadataURL, scope string, c rpcCall) {
	what := "reading resources"
	if c.method == "tools/call" {
		what = fmt.Sprintf("the tool %q", c.tool)
	}
	desc := fmt.Sprintf("%s requires the scope %s", what, scope)
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(
		`Bearer error="insufficient_scope", scope=%q, resource_metadata=%q, error_description=%q`,
		scope, resourceMetadataURL, desc))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusForbidden)
	id := c.id
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	data, _ := json.Marshal(map[string]string{"error": "insufficient_scope", "scope": scope})
	json.NewEncoder(w).Encode(map[string]any{
		"jsonrpc": "2.0",
		"id":      id,
		"error": map[string]any{
			"code":    CodeInsufficientScope,
			"message": "insufficient scope: " + desc + "; obtain a token that grants it",
			"data":    json.RawMessage(data),
		},
	})
}
