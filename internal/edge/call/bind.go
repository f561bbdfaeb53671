package call

import (
	"bytes"
	"context"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// errAmbiguous refuses a message the edge and the go-sdk read differently.
var errAmbiguous = &jsonrpc.Error{Code: CodeInvalidRequest, Message: "invalid request: the message is ambiguous (repeated or differently cased keys?); send plain JSON-RPC"}

// Bind is the first MCP middleware: it makes sure every later step reads
// the Call of the request the go-sdk is about to run. A request from the
// HTTP edge must agree with its Call exactly (method, tool or resource,
// the argument bytes): the edge's checks were made on that Call, so a
// message two parsers read differently is refused, never run. A request
// from an in-process transport, or one the edge did not parse, gets a Call
// of its own: governance decides on the Call, so a request without one
// would not be governed at all.
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
				if c == nil {
					return next(With(ctx, &Call{Method: method}), method, req)
				}
				if c.Method != method {
					return nil, errAmbiguous
				}
				return next(ctx, method, req)
			}
			if c.Method != method || c.Tool != tool || c.URI != uri || c.RequestState != state || !bytes.Equal(c.RawArgs, args) {
				return nil, errAmbiguous
			}
			return next(ctx, method, req)
		}
	}
}
