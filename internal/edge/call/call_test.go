package call_test

import (
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
)

func TestTooDeep(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want bool
	}{
		{strings.Repeat("[", 65) + strings.Repeat("]", 65), 64, true},
		{strings.Repeat("[", 64) + strings.Repeat("]", 64), 64, false},
		{`{"a":"` + strings.Repeat("[", 200) + `\"["}`, 64, false}, // brackets in a string do not count
		{`{"a":[{"b":[1]}]}`, 4, false},
		{`{"a":[{"b":[1]}]}`, 3, true},
	} {
		if got := call.TooDeep([]byte(tc.in), tc.max); got != tc.want {
			t.Errorf("TooDeep(%.20s..., %d) = %v, want %v", tc.in, tc.max, got, tc.want)
		}
	}
}

// TestParseRefusesDeepNesting: a body of nested brackets is refused before
// any parser recurses into it (it used to cost seconds, and a few MB of
// them overflowed the stack), with the error the edge answers.
func TestParseRefusesDeepNesting(t *testing.T) {
	deep := `{"jsonrpc":"2.0","id":1,"method":"ping","x":` + strings.Repeat("[", 1<<20) + strings.Repeat("]", 1<<20) + `}`
	c, err := call.Parse([]byte(deep), "2025-11-25")
	if c != nil || err == nil || err.Code != call.CodeInvalidRequest || !strings.Contains(err.Message, "nests deeper") {
		t.Fatalf("Parse = %v, %+v; want an invalid-request error about nesting", c, err)
	}
	ok := `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":` + strings.Repeat("[", call.MaxDepth-2) + strings.Repeat("]", call.MaxDepth-2) + `}}`
	if _, err := call.Parse([]byte(ok), "2025-11-25"); err != nil {
		t.Fatalf("Parse at the limit = %+v, want it accepted", err)
	}
}
