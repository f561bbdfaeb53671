package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/httpserver"
)

const scope = "github.com/portfolio-mcp/portfolio-mcp"

// Server is the HTTP step that opens the server span of an MCP request,
// named and attributed as the OpenTelemetry semantic conventions for MCP
// ask ("tools/call get_quotes": mcp.method.name, gen_ai.tool.name,
// gen_ai.operation.name, mcp.protocol.version, jsonrpc.request.id; never an
// argument). It runs after the call was parsed (httpserver.ParseCall).
//
// The parent is the agent's trace: the W3C traceparent in the params'
// _meta, as MCP clients pass it, else the HTTP header. When both are there
// and differ (a proxy's hop), the header's is kept as a link.
//
// With tracing off only the agent's trace context is carried on (to the
// logs, the audit events and the backends): no span, no wrapped writer.
func (t Tracing) Server(next http.Handler) http.Handler {
	tracer := t.Provider.Tracer(scope)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := call.From(r.Context())
		ctx, link := t.parent(r, c)
		if !t.on {
			if ctx != r.Context() { // the agent sent a trace to carry on
				r = r.WithContext(ctx)
			}
			next.ServeHTTP(w, r)
			return
		}
		name, attrs := describe(c)
		opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...)}
		if link.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: link}))
		}
		ctx, span := tracer.Start(ctx, name, opts...)
		defer span.End()
		rec := httpserver.NewStatusRecorder(w)
		next.ServeHTTP(rec, r.WithContext(ctx))
		span.SetAttributes(attribute.Int("http.response.status_code", rec.Status))
		if rec.Status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(rec.Status))
			span.SetAttributes(attribute.String("error.type", strconv.Itoa(rec.Status)))
		}
	})
}

// parent is the request's context carrying the agent's trace: the
// traceparent in the params' _meta, else the HTTP header's; when both are
// there and differ, the header's is returned as the link to keep.
func (t Tracing) parent(r *http.Request, c *call.Call) (context.Context, trace.SpanContext) {
	ctx := t.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	if c == nil || !bytes.Contains(c.Meta, []byte("traceparent")) {
		return ctx, trace.SpanContext{}
	}
	var meta map[string]any
	if json.Unmarshal(c.Meta, &meta) != nil {
		return ctx, trace.SpanContext{}
	}
	mctx := t.Propagator.Extract(ctx, metaCarrier(meta))
	header, agent := trace.SpanContextFromContext(ctx), trace.SpanContextFromContext(mctx)
	if !agent.IsValid() || agent.Equal(header) {
		return ctx, trace.SpanContext{}
	}
	return mctx, header
}

// describe names the span and sets the request's attributes.
func describe(c *call.Call) (string, []attribute.KeyValue) {
	attrs := []attribute.KeyValue{attribute.String("network.protocol.name", "http")}
	if c == nil {
		return "mcp", attrs
	}
	if c.ProtocolVersion != "" {
		attrs = append(attrs, attribute.String("mcp.protocol.version", c.ProtocolVersion))
	}
	if len(c.ID) > 0 {
		attrs = append(attrs, attribute.String("jsonrpc.request.id", string(bytes.Trim(c.ID, `"`))))
	}
	if c.Method == "" {
		return "mcp", attrs
	}
	attrs = append(attrs, attribute.String("mcp.method.name", c.Method))
	if c.Method == "tools/call" && c.Tool != "" {
		attrs = append(attrs, attribute.String("gen_ai.tool.name", c.Tool), attribute.String("gen_ai.operation.name", "execute_tool"))
		return c.Method + " " + c.Tool, attrs
	}
	return c.Method, attrs
}

// metaCarrier reads traceparent and tracestate from the params' _meta.
type metaCarrier map[string]any

func (m metaCarrier) Get(key string) string {
	s, _ := m[key].(string)
	return s
}

func (m metaCarrier) Set(string, string) {}

func (m metaCarrier) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}
