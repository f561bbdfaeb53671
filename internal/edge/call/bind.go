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
			var own *Call
			switch p := req.GetParams().(type) {
			case *mcp.CallToolParamsRaw:
				own = FromTool(p.Name, p.Arguments, p.RequestState)
			case *mcp.ReadResourceParams:
				own = FromResource(p.URI)
			default:
				return next(ctx, method, req)
			}
			c := From(ctx)
			if c == nil {
				return next(With(ctx, own), method, req)
			}
			if c.Method != method || c.Tool != own.Tool || c.URI != own.URI || c.RequestState != own.RequestState ||
				!bytes.Equal(c.RawArgs, own.RawArgs) {
				return nil, &jsonrpc.Error{Code: CodeInvalidRequest, Message: "invalid request: the message is ambiguous (repeated or differently cased keys?); send plain JSON-RPC"}
			}
			return next(ctx, method, req)
		}
	}
}
