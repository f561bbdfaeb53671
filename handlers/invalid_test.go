package handlers

import (
	"testing"

	"github.com/google/jsonschema-go/jsonschema"
)

// TestTakes: what an agent that sent an unknown argument is told the tool
// takes, also for a tool that takes nothing or nothing required.
func TestTakes(t *testing.T) {
	str := &jsonschema.Schema{Type: "string"}
	for _, tc := range []struct {
		schema *jsonschema.Schema
		want   string
	}{
		{&jsonschema.Schema{Type: "object"}, "list_accounts takes no arguments."},
		{&jsonschema.Schema{Type: "object", Properties: map[string]*jsonschema.Schema{"cursor": str}}, "list_accounts takes: cursor (all optional)."},
		{&jsonschema.Schema{Type: "object", Properties: map[string]*jsonschema.Schema{"cursor": str, "account_id": str}, Required: []string{"account_id"}},
			"list_accounts takes: account_id, cursor (required: account_id)."},
	} {
		if got := takes("list_accounts", tc.schema); got != tc.want {
			t.Errorf("takes: %q, want %q", got, tc.want)
		}
	}
}
