// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// settings and traces what the server does for a request: the server span
// of each MCP request (internal/edge/httpserver starts it with Server) and
// child spans of the steps that cost time. Off (a no-op provider, nothing
// initialised) unless an OTLP endpoint is configured.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Config is the standard OpenTelemetry environment, as far as the server
// reads it itself (the exporter reads the rest, e.g. OTEL_EXPORTER_OTLP_HEADERS
// and its TLS settings, from the process environment).
type Config struct {
	// Exporter is OTEL_TRACES_EXPORTER: "otlp", "none", or empty (otlp when
	// an endpoint is set).
	Exporter string `env:"OTEL_TRACES_EXPORTER"`
	// Endpoint and TracesEndpoint are OTEL_EXPORTER_OTLP_ENDPOINT (a base
	// URL; /v1/traces is appended for http/protobuf) and
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the full URL). Neither: tracing off.
	Endpoint       string `env:"OTEL_EXPORTER_OTLP_ENDPOINT"`
	TracesEndpoint string `env:"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"`
	// Protocol is OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or
	// OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf (default) or grpc.
	Protocol       string `env:"OTEL_EXPORTER_OTLP_PROTOCOL, default=http/protobuf"`
	TracesProtocol string `env:"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"`
	// Sampler and SamplerArg are OTEL_TRACES_SAMPLER (default
	// parentbased_always_on) and OTEL_TRACES_SAMPLER_ARG (the ratio).
	Sampler    string `env:"OTEL_TRACES_SAMPLER, default=parentbased_always_on"`
	SamplerArg string `env:"OTEL_TRACES_SAMPLER_ARG"`
	// ServiceName is OTEL_SERVICE_NAME.
	ServiceName string `env:"OTEL_SERVICE_NAME, default=portfolio-mcp"`
	// ResourceAttributes is OTEL_RESOURCE_ATTRIBUTES (key=value,...).
	ResourceAttributes string `env:"OTEL_RESOURCE_ATTRIBUTES"`
}

// On reports whether traces are exported.
func (c Config) On() bool {
	return c.Exporter != "none" && (c.Endpoint != "" || c.TracesEndpoint != "")
}

func (c Config) protocol() string {
	if c.TracesProtocol != "" {
		return c.TracesProtocol
	}
	return c.Protocol
}

// Validate checks the settings the server reads.
func (c Config) Validate() error {
	var errs []error
	switch c.Exporter {
	case "", "otlp", "none":
	default:
		errs = append(errs, fmt.Errorf("OTEL_TRACES_EXPORTER %q: only otlp and none are supported", c.Exporter))
	}
	switch c.protocol() {
	case "http/protobuf", "grpc":
	default:
		errs = append(errs, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: want http/protobuf or grpc", c.protocol()))
	}
	if _, err := c.sampler(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sampler maps OTEL_TRACES_SAMPLER as the specification defines it.
func (c Config) sampler() (sdktrace.Sampler, error) {
	ratio := 1.0
	if c.SamplerArg != "" {
		r, err := strconv.ParseFloat(c.SamplerArg, 64)
		if err != nil || r < 0 || r > 1 {
			return nil, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG %q: want a ratio in [0, 1]", c.SamplerArg)
		}
		ratio = r
	}
	switch c.Sampler {
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio), nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), nil
	}
	return nil, fmt.Errorf("OTEL_TRACES_SAMPLER %q: want always_on, always_off, traceidratio or their parentbased_ forms", c.Sampler)
}

// Tracing is the provider every traced step uses, the propagator that
// reads and writes W3C trace context, and how to flush on drain.
type Tracing struct {
	Provider   trace.TracerProvider
	Propagator propagation.TextMapPropagator
	// Shutdown flushes the spans still queued and stops the exporter.
	Shutdown func(context.Context) error
	on       bool
}

// Off is tracing disabled: a no-op provider; trace context is still read
// and passed on, so the backends see the agent's trace.
func Off() Tracing {
	return Tracing{Provider: noop.NewTracerProvider(), Propagator: propagator(), Shutdown: func(context.Context) error { return nil }}
}

// spanLimits are the SDK's (OTEL_SPAN_* variables), with attribute values
// cut at 1 KiB unless OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT says otherwise:
// no value a caller sends is exported whole, however large.
func spanLimits() sdktrace.SpanLimits {
	l := sdktrace.NewSpanLimits()
	if l.AttributeValueLengthLimit < 0 {
		l.AttributeValueLengthLimit = 1024
	}
	return l
}

// propagator reads and writes W3C trace context only: an agent's baggage is
// its own to send, and is not carried into the firm's services, where
// baggage may end up in their spans and logs or steer what they do.
func propagator() propagation.TextMapPropagator { return propagation.TraceContext{} }

// New starts tracing as c says. Spans are batched and exported in the
// background: a full queue drops spans, a slow or absent collector never
// holds a request. version names the service version.
func New(ctx context.Context, c Config, version string, attrs ...attribute.KeyValue) (Tracing, error) {
	if !c.On() {
		return Off(), nil
	}
	sampler, err := c.sampler()
	if err != nil {
		return Tracing{}, err
	}
	var exp *otlptrace.Exporter
	switch c.protocol() {
	case "grpc":
		var opts []otlptracegrpc.Option
		if c.TracesEndpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(c.TracesEndpoint))
		} else {
			opts = append(opts, otlptracegrpc.WithEndpointURL(c.Endpoint))
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	default:
		var opts []otlptracehttp.Option
		if c.TracesEndpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpointURL(c.TracesEndpoint))
		} else {
			opts = append(opts, otlptracehttp.WithEndpointURL(strings.TrimSuffix(c.Endpoint, "/")+"/v1/traces"))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	}
	if err != nil {
		return Tracing{}, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	kv := []attribute.KeyValue{semconv.ServiceName(c.ServiceName), semconv.ServiceVersion(version)}
	res, err := resource.New(ctx, resource.WithAttributes(append(kv, attrs...)...), resource.WithFromEnv())
	if err != nil && res == nil {
		return Tracing{}, fmt.Errorf("trace resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sampler),
		sdktrace.WithRawSpanLimits(spanLimits()),
		sdktrace.WithResource(res),
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second), sdktrace.WithMaxQueueSize(4096)),
	)
	return Tracing{Provider: tp, Propagator: propagator(), Shutdown: tp.Shutdown, on: true}, nil
}
