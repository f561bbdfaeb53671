package handlers

import (
	"context"
	"encoding/json"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// listedSchemas are a tool's schemas as tools/list sends them (out nil:
// the tool has no output schema).
type listedSchemas struct{ in, out json.RawMessage }

// listSchemas answers tools/list with each tool's generated schemas
// (schemas_gen.go), the bytes the SDK would write for the schemas
// reflection derives, in place of the bare object schemas the SDK holds
// (see addTool). Besides sparing a cold start about a thousand schema
// nodes, a listing then copies the schemas' JSON instead of marshalling
// them.
// The differential test in internal/app compares the listing with the
// SDK's own, from reflection, byte for byte.
func listSchemas(listed map[string]listedSchemas) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			res, err := next(ctx, method, req)
			lr, ok := res.(*mcp.ListToolsResult)
			if method != "tools/list" || err != nil || !ok || lr == nil {
				return res, err
			}
			out := *lr
			out.Tools = make([]*mcp.Tool, len(lr.Tools))
			for i, t := range lr.Tools {
				if s, ok := listed[toolName(t)]; ok {
					c := *t // the SDK's registered tool: never written
					c.InputSchema = s.in
					if s.out != nil {
						c.OutputSchema = s.out
					}
					t = &c
				}
				out.Tools[i] = t
			}
			return &out, nil
		}
	}
}

func toolName(t *mcp.Tool) string {
	if t == nil {
		return ""
	}
	return t.Name
}
