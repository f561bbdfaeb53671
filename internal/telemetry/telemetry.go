// Package telemetry is the server's observability: Prometheus metrics for
// tool calls, the JSON slog logger with Knative's revision labels, and the
// per-request id that ties an agent's error message to a log line.
package telemetry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

type requestIDKey struct{}

// WithRequestID returns ctx carrying id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id in ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// NewRequestID returns a random 16-hex-digit id.
func NewRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Revision is the Knative identity of this process (empty outside Knative).
type Revision struct {
	Service, Configuration, Revision string
}

// NewLogger returns a JSON logger at level that stamps every line with the
// Knative revision (when set) and the request id found in the context.
func NewLogger(w io.Writer, level string, rev Revision) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(strings.ToUpper(level)))
	var h slog.Handler = slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})
	var attrs []slog.Attr
	for k, v := range map[string]string{"k_service": rev.Service, "k_configuration": rev.Configuration, "k_revision": rev.Revision} {
		if v != "" {
			attrs = append(attrs, slog.String(k, v))
		}
	}
	if len(attrs) > 0 {
		h = h.WithAttrs(attrs)
	}
	return slog.New(requestIDHandler{h})
}

// requestIDHandler adds request_id, and the OpenTelemetry trace_id and
// span_id, from the record's context.
type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(as)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}
