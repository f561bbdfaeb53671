package telemetry

import (
	"context"
	"log/slog"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry/redact"
)

// Metrics are the server's Prometheus collectors, registered on their own
// registry so tests can run several servers in one process.
//
// The Go runtime and process metrics are gathered from client_golang's
// default registry, which its package initialisation fills with exactly
// those two collectors, whether we use them or not: building a second Go
// collector was a tenth of a start's instructions (docs/performance.md).
// They describe the process, so every server in a process shares them.
type Metrics struct {
	Registry  *prometheus.Registry
	calls     *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	inFlight  prometheus.Gauge
	rpcErrors *prometheus.CounterVec
}

// NewMetrics creates and registers the collectors. Constant labels carry
// the Knative revision (not on the Go runtime and process metrics).
func NewMetrics(rev Revision) *Metrics {
	reg := prometheus.NewRegistry()
	labels := prometheus.Labels{}
	if rev.Service != "" {
		labels["k_service"] = rev.Service
	}
	if rev.Revision != "" {
		labels["k_revision"] = rev.Revision
	}
	factory := prometheus.WrapRegistererWith(labels, reg)
	m := &Metrics{
		Registry: reg,
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_tool_calls_total", Help: "MCP tools/call requests by tool and outcome.",
		}, []string{"tool", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mcp_tool_call_duration_seconds", Help: "MCP tools/call latency by tool, from the MCP layer's view.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"tool"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcp_requests_in_flight", Help: "MCP requests being handled now.",
		}),
		rpcErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_requests_total", Help: "MCP requests by JSON-RPC method and outcome.",
		}, []string{"method", "outcome"}),
	}
	factory.MustRegister(m.calls, m.latency, m.inFlight, m.rpcErrors)
	return m
}

// Gatherer is what /metrics serves: this server's registry, and the Go
// runtime and process metrics.
func (m *Metrics) Gatherer() prometheus.Gatherer {
	return prometheus.Gatherers{m.Registry, prometheus.DefaultGatherer}
}

// Registerer lets other packages add their collectors with the same labels.
func (m *Metrics) Registerer() prometheus.Registerer { return m.Registry }

// Middleware measures and logs every MCP request; tools/call gets its own
// per-tool metrics and one log line per call (tool, outcome, duration).
// Only names in tools become metric labels, so a client cannot blow up
// label cardinality by calling made-up tools.
func (m *Metrics) Middleware(log *slog.Logger, tools []string) mcp.Middleware {
	known := make(map[string]bool, len(tools))
	for _, t := range tools {
		known[t] = true
	}
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			m.inFlight.Inc()
			start := time.Now()
			ctx, learned := outcome.WithLearned(ctx)
			res, err := next(ctx, method, req)
			elapsed := time.Since(start)
			m.inFlight.Dec()

			o, msg := outcome.Classify(res, err)
			o = learned.Refine(o)
			m.rpcErrors.WithLabelValues(method, string(o)).Inc()
			span := trace.SpanFromContext(ctx)
			if span.IsRecording() {
				span.SetAttributes(attribute.String("portfolio_mcp.outcome", string(o)))
				switch o {
				case outcome.OK, outcome.InputRequired, outcome.PendingApproval, outcome.Recorded:
				default:
					// The semantic conventions' error.type: the call did not
					// do what was asked; only a server failure is an error status.
					span.SetAttributes(attribute.String("error.type", string(o)))
				}
				if o == outcome.Failed {
					span.SetStatus(codes.Error, string(o))
				}
			}
			if method != "tools/call" {
				return res, err
			}
			tool := "unknown"
			if p, ok := req.GetParams().(*mcp.CallToolParamsRaw); ok {
				tool = p.Name
			}
			if !known[tool] {
				tool = "unknown"
			}
			m.calls.WithLabelValues(tool, string(o)).Inc()
			observe(m.latency.WithLabelValues(tool), elapsed.Seconds(), span)
			attrs := []any{"tool", tool, "outcome", string(o), "duration_ms", float64(elapsed.Microseconds()) / 1000}
			if err != nil {
				attrs = append(attrs, "error", redact.Text(msg, 512))
			}
			log.InfoContext(ctx, "tool call", attrs...)
			return res, err
		}
	}
}

// observe records v, with the trace id as exemplar when this server
// recorded the call's span (sampled, tracing on): a slow bucket then leads
// to a trace of it. The agent's own trace context, merely carried on with
// tracing off, is no exemplar: it names a trace this server never recorded,
// which the agent chose.
func observe(o prometheus.Observer, v float64, span trace.Span) {
	if eo, ok := o.(prometheus.ExemplarObserver); ok && span.IsRecording() && span.SpanContext().IsSampled() {
		eo.ObserveWithExemplar(v, prometheus.Labels{"trace_id": span.SpanContext().TraceID().String()})
		return
	}
	o.Observe(v)
}
