package httpserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// serverMethods are the JSON-RPC methods an MCP server answers (requests the
// client sends; notifications are accepted separately). It mirrors the
// go-sdk server's method table, which the SDK does not export.
var serverMethods = map[string]bool{
	"initialize": true, "ping": true, "server/discover": true,
	"tools/list": true, "tools/call": true,
	"resources/list": true, "resources/read": true, "resources/templates/list": true,
	"resources/subscribe": true, "resources/unsubscribe": true, "subscriptions/listen": true,
	"prompts/list": true, "prompts/get": true,
	"completion/complete": true, "logging/setLevel": true,
}

// JSON-RPC 2.0 error codes.
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
	codeMethodNotFound = -32601
)

// jsonrpcGuard answers malformed JSON-RPC with a JSON-RPC error object, as
// the spec requires, where the SDK answers with plain text. It validates the
// envelope only (the SDK decodes the message itself), so a POST body is
// read once into memory, bounded by limitBody upstream.
func jsonrpcGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", mbe.Limit))
				return
			}
			WriteError(w, http.StatusBadRequest, "could not read request body")
			return
		}
		if code, msg, id := checkEnvelope(body); code != 0 {
			writeRPCError(w, r.Header.Get("Mcp-Protocol-Version"), id, code, msg)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

// envelope is the part of a JSON-RPC message the guard checks.
type envelope struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  *string         `json:"method"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// checkEnvelope returns a JSON-RPC error code and message for an invalid
// message, or 0. Responses (result/error) pass: clients answer server
// requests on the same endpoint.
func checkEnvelope(body []byte) (code int, msg string, id json.RawMessage) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if !json.Valid(trimmed) {
			return codeParseError, "parse error: request body is not valid JSON", nil
		}
		return codeInvalidRequest, "invalid request: JSON-RPC batches are not supported; send one message per request", nil
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) || errors.Is(err, io.ErrUnexpectedEOF) || !json.Valid(body) {
			return codeParseError, "parse error: request body is not valid JSON", nil
		}
		return codeInvalidRequest, "invalid request: not a JSON-RPC 2.0 message object", nil
	}
	switch {
	case env.JSONRPC != "2.0":
		return codeInvalidRequest, `invalid request: "jsonrpc" must be "2.0"`, env.ID
	case env.Method == nil && (env.Result != nil || env.Error != nil):
		return 0, "", nil
	case env.Method == nil:
		return codeInvalidRequest, `invalid request: "method" is required`, env.ID
	case env.ID == nil || string(env.ID) == "null":
		return 0, "", nil // a notification: the SDK accepts or ignores it
	case !serverMethods[*env.Method]:
		return codeMethodNotFound, fmt.Sprintf("method not found: %q", *env.Method), env.ID
	}
	return 0, "", nil
}

// writeRPCError answers a refused message. An unknown method is HTTP 404 on
// protocol 2026-07-28 and later (as the spec requires, and as the SDK
// answers methods that version removed), and 200 before it.
func writeRPCError(w http.ResponseWriter, version string, id json.RawMessage, code int, msg string) {
	if id == nil {
		id = json.RawMessage("null")
	}
	status := http.StatusBadRequest
	if code == codeMethodNotFound {
		status = http.StatusOK
		if version >= "2026-07-28" {
			status = http.StatusNotFound
		}
	}
	WriteJSON(w, status, map[string]any{
		"jsonrpc": "2.0",
		"id":      id,
		"error":   map[string]any{"code": code, "message": msg},
	})
}
