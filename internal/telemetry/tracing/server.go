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
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry/redact"
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
//
// The span opens before the caller is authenticated, so nothing in its name
// or attributes is the caller's to choose freely: a tool name that known
// does not know is "unknown" (as in the metrics), and the request id and
// protocol version are cut short.
func (t Tracing) Server(known func(tool string) bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler { return t.server(known, next) }
}

func (t Tracing) server(known func(tool string) bool, next http.Handler) http.Handler {
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
		name, attrs := describe(c, known)
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

// maxEchoed bounds what of a request's id and version a span repeats.
const maxEchoed = 64

// describe names the span and sets the request's attributes.
func describe(c *call.Call, known func(string) bool) (string, []attribute.KeyValue) {
	attrs := []attribute.KeyValue{attribute.String("network.protocol.name", "http")}
	if c == nil {
		return "mcp", attrs
	}
	if c.ProtocolVersion != "" {
		attrs = append(attrs, attribute.String("mcp.protocol.version", redact.Cut(c.ProtocolVersion, maxEchoed)))
	}
	if len(c.ID) > 0 {
		attrs = append(attrs, attribute.String("jsonrpc.request.id", redact.Cut(string(bytes.Trim(c.ID, `"`)), maxEchoed)))
	}
	if c.Method == "" {
		return "mcp", attrs
	}
	if !call.KnownMethod(c.Method) {
		// A notification's method is not checked at the edge: any text.
		return "unknown", append(attrs, attribute.String("mcp.method.name", "unknown"))
	}
	attrs = append(attrs, attribute.String("mcp.method.name", c.Method))
	if c.Method == "tools/call" && c.Tool != "" {
		tool := c.Tool
		if !known(tool) {
			tool = "unknown"
		}
		attrs = append(attrs, attribute.String("gen_ai.tool.name", tool), attribute.String("gen_ai.operation.name", "execute_tool"))
		return c.Method + " " + tool, attrs
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
