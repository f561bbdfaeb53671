package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	sjson "github.com/segmentio/encoding/json"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
)

// compileTool is mcp.AddTool's typed-tool adapter with the per-call work
// that can be done once moved to registration (docs/performance.md):
//
//   - the input schema is resolved once; each call validates the raw
//     arguments against it, applies its defaults and decodes them into In,
//     re-encoding only when a default was filled in or a direct decode fails;
//   - the output is marshalled once from Out into StructuredContent and the
//     text content, with no per-call output validation: Out's shape is the
//     output schema (derived from Out exactly as mcp.AddTool derives it), and
//     a test validates every tool's real output against it.
//
// What a client sees is what mcp.AddTool produces: the same tool
// definition, the same isError texts for bad arguments and tool errors,
// the same JSON value in structuredContent and text (keys in the type's
// declared order instead of re-sorted, numbers not round-tripped through
// float64), and nothing instead of content when the handler asks for input
// (multi round-trip).
func compileTool[In, Out any](t *mcp.Tool, in schemaSource, h mcp.ToolHandlerFor[In, Out], outputs outputSchemas) (*mcp.Tool, mcp.ToolHandler) {
	tt := *t
	// Built and resolved on the first call, not at start-up: resolution
	// (regular expressions, defaults checked against the schema) is a
	// third of registering a tool, and a cold start should not pay it for
	// tools nobody calls. TestInputSchemasResolve proves every schema
	// resolves.
	type input struct {
		resolved *jsonschema.Resolved
		nested   bool
	}
	resolve := sync.OnceValues(func() (input, error) {
		s := in()
		r, err := s.Resolve(&jsonschema.ResolveOptions{ValidateDefaults: true})
		return input{r, nestedDefaults(s)}, err
	})

	// Output schema and zero value exactly as mcp.AddTool derives them: a
	// nil *T result is sent as T's zero value, never as null.
	var elemZero any
	rt := reflect.TypeFor[Out]()
	if rt.Kind() == reflect.Pointer {
		rt = rt.Elem()
		elemZero = reflect.Zero(rt).Interface()
	}
	hasOutput := tt.OutputSchema != nil || reflect.TypeFor[Out]() != reflect.TypeFor[any]()
	if tt.OutputSchema == nil && hasOutput {
		tt.OutputSchema = outputs.forType(rt)
	}

	th := func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		input, err := resolve()
		if err != nil {
			return nil, fmt.Errorf("tool %q: input schema: %w", t.Name, err)
		}
		var args In
		if err := decodeArgs(parsedArgs(ctx, t.Name), req.Params.Arguments, input.resolved, input.nested, &args); err != nil {
			var r mcp.CallToolResult
			r.SetError(err)
			return &r, nil
		}
		res, out, err := h(ctx, req, args)
		if err != nil {
			if wireErr, ok := err.(*jsonrpc.Error); ok {
				return nil, wireErr
			}
			var r mcp.CallToolResult
			r.SetError(err)
			return &r, nil
		}
		if res == nil {
			res = &mcp.CallToolResult{}
		}
		if res.InputRequests != nil || !hasOutput {
			// Content and inputRequests are mutually exclusive on the wire.
			return res, nil
		}
		var outval any = out
		if elemZero != nil {
			var z Out
			if any(out) == any(z) {
				outval = elemZero
			}
		}
		if outval == nil {
			return res, nil
		}
		b, err := json.Marshal(outval)
		if err != nil {
			return nil, fmt.Errorf("marshaling output: %w", err)
		}
		res.StructuredContent = json.RawMessage(b)
		// The text copy shares b's bytes: nothing writes to b after this.
		text := unsafe.String(unsafe.SliceData(b), len(b))
		if res.Content == nil {
			res.Content = []mcp.Content{&mcp.TextContent{Text: text}}
		} else if !isObjectJSON(b) {
			res.Content = append(res.Content, &mcp.TextContent{Text: text})
		}
		return res, nil
	}
	return &tt, th
}

// outputSchemas shares the derived output schema between the tools of one
// Register call with the same output type (the order tools), as
// mcp.ServerOptions.SchemaCache does for the typed path.
type outputSchemas map[reflect.Type]*jsonschema.Schema

func (c outputSchemas) forType(rt reflect.Type) *jsonschema.Schema {
	if s, ok := c[rt]; ok {
		return s
	}
	s, err := jsonschema.ForType(rt, &jsonschema.ForOptions{})
	if err != nil || s == nil {
		panic(fmt.Sprintf("output schema for %v: %v", rt, err))
	}
	c[rt] = s
	return s
}

// decodeArgs is the go-sdk's input handling (validate the arguments as a
// JSON object with defaults applied, then decode into the typed input, both
// with the SDK's JSON decoder settings) without its per-call costs: a 32 KiB
// decoder buffer per unmarshal and an unconditional re-encode of the map.
//
// parsed, if not nil, is the arguments as the edge decoded them
// (call.Call.Args): validation then works on a copy of that value instead
// of decoding the bytes again.
func decodeArgs[In any](parsed map[string]any, raw json.RawMessage, resolved *jsonschema.Resolved, nested bool, dst *In) error {
	v := make(map[string]any)
	if parsed != nil {
		v = parsed
	} else if len(raw) > 0 {
		if err := unmarshal(raw, &v); err != nil {
			return fmt.Errorf("validating \"arguments\": %v", fmt.Errorf("unmarshaling arguments: %w", err))
		}
	}
	var value any = v
	n := len(v)
	if _, ok := value.(map[string]any); ok {
		if err := resolved.ApplyDefaults(&value); err != nil {
			return fmt.Errorf("validating \"arguments\": %v", fmt.Errorf("applying schema defaults:\n%w", err))
		}
	}
	if err := resolved.Validate(&value); err != nil {
		return fmt.Errorf("validating \"arguments\": %v", err)
	}
	m, _ := value.(map[string]any)
	if !nested && len(m) == n && len(raw) > 0 && unmarshal(raw, dst) == nil {
		return nil // no default filled in: the arguments decode as sent
	}
	data, err := json.Marshal(value)
	if err != nil {
		return fmt.Errorf("validating \"arguments\": marshalling with defaults: %v", err)
	}
	var zero In
	*dst = zero
	return unmarshal(data, dst)
}

// parsedArgs is a private copy of the arguments the edge decoded for this
// call of tool, with numbers as float64 (what the schema validator
// expects), or nil when there is none to use (an in-process call, or
// arguments the edge could not decode: the bytes then decide, with the
// SDK's own error texts).
func parsedArgs(ctx context.Context, tool string) map[string]any {
	c := call.From(ctx)
	if c == nil || c.Tool != tool {
		return nil
	}
	v, err := c.Args()
	m, ok := v.(map[string]any)
	if err != nil || !ok {
		return nil
	}
	out, ok := plain(m).(map[string]any)
	if !ok {
		return nil
	}
	return out
}

// plain deep-copies a decoded JSON value, turning json.Number into
// float64 as a decode into any would; nil if a number does not fit.
func plain(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			p := plain(e)
			if p == nil && e != nil {
				return nil
			}
			m[k] = p
		}
		return m
	case []any:
		a := make([]any, len(v))
		for i, e := range v {
			p := plain(e)
			if p == nil && e != nil {
				return nil
			}
			a[i] = p
		}
		return a
	case json.Number:
		f, err := v.Float64()
		if err != nil {
			return nil
		}
		return f
	}
	return v
}

// unmarshal decodes data as the go-sdk's internal JSON decoder does
// (segmentio/encoding, case-sensitive field names) but straight from the
// slice, without a reader and its buffer. The arguments reach a tool only
// after the SDK has parsed the whole message with its nesting limit.
func unmarshal(data []byte, v any) error {
	_, err := sjson.Parse(data, v, sjson.DontMatchCaseInsensitiveStructFields)
	return err
}

// nestedDefaults reports whether s has defaults below its top-level
// properties, where a filled-in default cannot be seen from the key count.
func nestedDefaults(s *jsonschema.Schema) bool {
	for _, p := range s.Properties {
		if p != nil && hasDefault(p.Items, p.AdditionalProperties) {
			return true
		}
		if p != nil {
			for _, c := range p.Properties {
				if hasDefault(c) {
					return true
				}
			}
		}
	}
	return false
}

// hasDefault reports whether any of ss or their subschemas has a default.
func hasDefault(ss ...*jsonschema.Schema) bool {
	for _, s := range ss {
		if s == nil {
			continue
		}
		if s.Default != nil || hasDefault(s.Items, s.AdditionalProperties) {
			return true
		}
		for _, c := range s.Properties {
			if hasDefault(c) {
				return true
			}
		}
	}
	return false
}

func isObjectJSON(data []byte) bool {
	for _, b := range data {
		switch b {
		case ' ', '\t', '\n', '\r':
			continue
		case '{':
			return true
		default:
			return false
		}
	}
	return false
}
