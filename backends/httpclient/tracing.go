package httpclient

import (
	"context"
	"net/http"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// callKey carries the contract route ("GET /v1/orders/{order_id}") an HTTP
// request belongs to down to the transport, which names its span after it.
type callKey struct{}

func withRoute(ctx context.Context, route string) context.Context {
	return context.WithValue(ctx, callKey{}, route)
}

func routeOf(r *http.Request) (string, bool) {
	route, ok := r.Context().Value(callKey{}).(string)
	return route, ok
}

// traced wraps base so that every attempt is an OpenTelemetry client span
// (otelhttp, with its HTTP semantic conventions) whose context is injected
// into the request headers by the propagator (a traceparent header with
// propagation.TraceContext). A span is named after the contract route,
// "GET /v1/accounts/{account_id}/portfolio" ({method} {url.template}, per
// the conventions), never the URL. The provider and propagator are o's, or
// when unset the caller's span's provider (else the global one) and the
// global propagator, which injects nothing until one is installed with
// otel.SetTextMapPropagator. otelhttp's own OpenTelemetry metrics are off:
// the Prometheus backend_* metrics are this client's.
func traced(base http.RoundTripper, o Options) http.RoundTripper {
	opts := []otelhttp.Option{
		otelhttp.WithSpanNameFormatter(spanName),
		otelhttp.WithMeterProvider(noop.NewMeterProvider()),
	}
	if o.TracerProvider != nil {
		opts = append(opts, otelhttp.WithTracerProvider(o.TracerProvider))
	}
	if o.Propagator != nil {
		opts = append(opts, otelhttp.WithPropagators(o.Propagator))
	}
	return otelhttp.NewTransport(redactedURL{base}, opts...)
}

func spanName(_ string, r *http.Request) string {
	if route, ok := routeOf(r); ok {
		return route
	}
	return "HTTP " + r.Method
}

// redactedURL runs inside otelhttp's span: it replaces the span's url.full
// with the URL whose query values are "REDACTED" (search text and tickers
// are what an agent typed, and have no place in traces), and adds the
// contract route as url.template.
type redactedURL struct{ next http.RoundTripper }

func (t redactedURL) RoundTrip(r *http.Request) (*http.Response, error) {
	if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
		if r.URL.RawQuery != "" {
			u := *r.URL
			u.User = nil
			q := u.Query()
			for k := range q {
				q[k] = []string{"REDACTED"}
			}
			u.RawQuery = q.Encode()
			span.SetAttributes(semconv.URLFull(u.String()))
		}
		if route, ok := routeOf(r); ok {
			if _, tmpl, ok := strings.Cut(route, " "); ok {
				span.SetAttributes(semconv.URLTemplate(tmpl))
			}
		}
	}
	return t.next.RoundTrip(r)
}
