package call

import (
	"bytes"
	"context"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Bind is the first MCP middleware: it makes sure every later step reads
// the Call of the request the go-sdk is about to run. A request from the
// HTTP edge must agree with its Call exactly (method, tool or resource,
// the argument bytes): the edge's checks were made on that Call, so a
// message two parsers read differently is refused, never run. A request
// from an in-process transport gets a Call of its own.
func Bind() mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			c := From(ctx)
			var tool, uri, state string
			var args []byte
			switch p := req.GetParams().(type) {
			case *mcp.CallToolParamsRaw:
				if c == nil {
					return next(With(ctx, FromTool(p.Name, p.Arguments, p.RequestState)), method, req)
				}
				tool, args, state = p.Name, p.Arguments, p.RequestState
			case *mcp.ReadResourceParams:
				if c == nil {
					return next(With(ctx, FromResource(p.URI)), method, req)
				}
				uri = p.URI
			default:
				return next(ctx, method, req)
			}
			if c.Method != method || c.Tool != tool || c.URI != uri || c.RequestState != state || !bytes.Equal(c.RawArgs, args) {
				return nil, &jsonrpc.Error{Code: CodeInvalidRequest, Message: "invalid request: the message is ambiguous (repeated or differently cased keys?); send plain JSON-RPC"}
			}
			return next(ctx, method, req)
		}
	}
}
