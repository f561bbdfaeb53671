package handlers

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
)

// TestToolsWithHeaderParametersStayOffTheDirectPath: the SDK refuses a
// 2026-07-28 call of a tool with x-mcp-header parameters whose headers do
// not match its arguments, a missing header included; the direct path does
// not check them, so such a tool is served by the SDK alone, whether its
// schema is generated or reflected.
func TestToolsWithHeaderParametersStayOffTheDirectPath(t *testing.T) {
	type args struct {
		AccountID string `json:"account_id"`
	}
	annotated := inputSchema[args](func(p map[string]*jsonschema.Schema) {
		p["account_id"].Extra = map[string]any{"x-mcp-header": "Account"}
	})
	plain := inputSchema[args](nil)
	h := func(context.Context, *mcp.CallToolRequest, args) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{}, nil, nil
	}
	for _, tc := range []struct {
		name      string
		in        schemaSource
		generated bool
		direct    bool
	}{
		{"reflected, annotated", annotated, false, false},
		{"generated, annotated", annotated, true, false},
		{"reflected, plain", plain, false, true},
		{"generated, plain", plain, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRegistrar(mcp.NewServer(&mcp.Implementation{Name: "t", Version: "1"}, nil), false)
			if tc.generated {
				raw, err := json.Marshal(tc.in())
				if err != nil {
					t.Fatal(err)
				}
				r.schemas = map[string]generatedSchema{"get_thing": {In: tc.in, InJSON: raw, HeaderParams: !tc.direct}}
			}
			addTool(r, catalog.Tool{Class: catalog.Read}, &mcp.Tool{Name: "get_thing"}, tc.in, h)
			if _, ok := r.direct["get_thing"]; ok != tc.direct {
				t.Errorf("on the direct path: %v, want %v", ok, tc.direct)
			}
		})
	}
}
