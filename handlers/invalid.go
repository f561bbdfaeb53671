package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// explainInvalidArguments rewrites a tools/call refused by input-schema
// validation, whose text is the JSON Schema library's ("validating
// /properties/limit: maximum: 1000/1 is greater than 100.000000"), into a
// sentence an agent can act on ("limit must be between 1 and 100; got
// 1000"), read from the tool's own schema. It sits next to the tools, so
// every protocol generation and both registration paths get the same text.
func explainInvalidArguments(schemas map[string]schemaSource) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			res, err := next(ctx, method, req)
			ctr, ok := res.(*mcp.CallToolResult)
			p, isCall := req.GetParams().(*mcp.CallToolParamsRaw)
			if err != nil || !ok || !isCall || !ctr.IsError || len(ctr.Content) != 1 {
				return res, err
			}
			tc, ok := ctr.Content[0].(*mcp.TextContent)
			if !ok || !strings.HasPrefix(tc.Text, `validating "arguments": `) {
				return res, err
			}
			var args map[string]any
			json.Unmarshal(p.Arguments, &args)
			var schema *jsonschema.Schema
			if in := schemas[p.Name]; in != nil {
				schema = in()
			}
			ctr.Content = []mcp.Content{&mcp.TextContent{Text: explain(p.Name, schema, args, tc.Text)}}
			return ctr, nil
		}
	}
}

// The validator's messages, parsed only when an agent's arguments were
// refused: compiled on first use, not at every start.
var (
	validatingProp = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`validating /properties/([^/:]+)(/items)?[^:]*: (\w+): (.*)$`)
	})
	quotedValue = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^"((?:[^"\\]|\\.)*)"`) })
	listValue   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\[(.*)\]`) })
)

// explain is the agent's sentence for a validation error of tool.
func explain(tool string, schema *jsonschema.Schema, args map[string]any, text string) string {
	if schema == nil {
		return text
	}
	if _, rest, ok := strings.Cut(text, "required: missing properties: "); ok {
		return fmt.Sprintf("missing required argument(s) %s. %s", describe(schema, parseList(rest)), takes(tool, schema))
	}
	if _, rest, ok := strings.Cut(text, "unexpected additional properties "); ok {
		return fmt.Sprintf("unknown argument(s) %s. %s", strings.Join(parseList(rest), ", "), takes(tool, schema))
	}
	m := validatingProp().FindStringSubmatch(text)
	if m == nil {
		return strings.TrimPrefix(strings.TrimPrefix(text, `validating "arguments": `), "validating root: ")
	}
	name, items, keyword, detail := m[1], m[2] != "", m[3], m[4]
	prop := schema.Properties[name]
	if prop == nil {
		return text
	}
	subject, s := name, prop
	if items && prop.Items != nil {
		subject, s = "each entry of "+name, prop.Items
	}
	got := "got " + jsonText(args[name])
	if q := quotedValue().FindStringSubmatch(detail); items && q != nil {
		got = "got " + strconv.Quote(q[1])
	}
	switch keyword {
	case "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum":
		return fmt.Sprintf("%s must be %s; %s", subject, bounds(s.Minimum, s.ExclusiveMinimum, s.Maximum, s.ExclusiveMaximum), got)
	case "minItems", "maxItems":
		return fmt.Sprintf("%s must list %s item(s); %s", subject, intBounds(s.MinItems, s.MaxItems), got)
	case "minLength", "maxLength":
		return fmt.Sprintf("%s must be %s character(s) long; %s", subject, intBounds(s.MinLength, s.MaxLength), got)
	case "enum":
		return fmt.Sprintf("%s must be one of %s; %s", subject, jsonList(s.Enum), got)
	case "type":
		return fmt.Sprintf("%s must be %s; %s", subject, typeName(s), got)
	case "pattern":
		hint := s.Description
		if hint == "" {
			hint = prop.Description
		}
		return fmt.Sprintf("%s is not in the expected form (%s, matching %s); %s", subject, hint, s.Pattern, got)
	}
	return fmt.Sprintf("%s is not valid (%s: %s); %s", subject, keyword, detail, got)
}

func parseList(s string) []string {
	m := listValue().FindStringSubmatch(s)
	if m == nil {
		return nil
	}
	var out []string
	if json.Unmarshal([]byte("["+m[1]+"]"), &out) != nil {
		return strings.Fields(m[1])
	}
	return out
}

// describe lists names with what the schema says of each.
func describe(schema *jsonschema.Schema, names []string) string {
	var parts []string
	for _, n := range names {
		if p := schema.Properties[n]; p != nil && p.Description != "" {
			n += " (" + p.Description + ")"
		}
		parts = append(parts, n)
	}
	return strings.Join(parts, ", ")
}

func takes(tool string, schema *jsonschema.Schema) string {
	names := make([]string, 0, len(schema.Properties))
	for n := range schema.Properties {
		names = append(names, n)
	}
	slices.Sort(names)
	switch {
	case len(names) == 0:
		return tool + " takes no arguments."
	case len(schema.Required) == 0:
		return fmt.Sprintf("%s takes: %s (all optional).", tool, strings.Join(names, ", "))
	}
	return fmt.Sprintf("%s takes: %s (required: %s).", tool, strings.Join(names, ", "), strings.Join(schema.Required, ", "))
}

func bounds(min, xmin, max, xmax *float64) string {
	num := func(f *float64) string { return strconv.FormatFloat(*f, 'g', -1, 64) }
	switch {
	case min != nil && max != nil:
		return "between " + num(min) + " and " + num(max)
	case xmin != nil && max != nil:
		return "above " + num(xmin) + " and at most " + num(max)
	case min != nil:
		return "at least " + num(min)
	case xmin != nil:
		return "above " + num(xmin)
	case max != nil:
		return "at most " + num(max)
	case xmax != nil:
		return "below " + num(xmax)
	}
	return "in range"
}

func intBounds(min, max *int) string {
	switch {
	case min != nil && max != nil:
		return fmt.Sprintf("between %d and %d", *min, *max)
	case min != nil:
		return fmt.Sprintf("at least %d", *min)
	case max != nil:
		return fmt.Sprintf("at most %d", *max)
	}
	return "any number of"
}

func typeName(s *jsonschema.Schema) string {
	switch s.Type {
	case "integer":
		return "a whole number"
	case "number":
		return "a number"
	case "string":
		return "a string"
	case "boolean":
		return "true or false"
	case "array":
		return "a list (JSON array)"
	case "object":
		return "an object"
	}
	return "of type " + strings.Join(s.Types, " or ")
}

func jsonText(v any) string {
	if v == nil {
		return "nothing (null or absent)"
	}
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}

func jsonList(vs []any) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = jsonText(v)
	}
	return strings.Join(parts, ", ")
}
