package httpclient

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
)

// Outcomes of a backend call, the values of backend_request_duration_seconds'
// outcome label. Each logical call (all its attempts) has exactly one.
const (
	OutcomeOK          = "ok"           // a 2xx answer, decoded
	OutcomeNotFound    = "not_found"    // backends.ErrNotFound
	OutcomeInvalid     = "invalid"      // backends.ErrInvalid
	OutcomeTimeout     = "timeout"      // no answer within the call's deadline
	OutcomeBreakerOpen = "breaker_open" // refused locally: ErrCircuitOpen
	OutcomeError       = "error"        // anything else: 5xx, 401/403, refused connections, a caller that went away
)

// Metrics are the backend clients' Prometheus collectors. Build them once
// with NewMetrics and pass them to every client in Options.Metrics; a nil
// *Metrics measures nothing.
//
//   - backend_request_duration_seconds{service,operation,outcome}: one
//     observation per logical call, retries and backoff waits included, with
//     a trace_id exemplar when the caller's context carries a sampled span;
//   - backend_retries_total{service,operation}: attempts after the first;
//   - backend_breaker_state{service}: 0 closed, 1 half-open, 2 open;
//   - backend_breaker_transitions_total{service,to}: to is closed,
//     half_open or open.
//
// The series of one service are shared by all clients of it built with the
// same Metrics (the breaker gauge then shows the last change of any).
type Metrics struct {
	duration    *prometheus.HistogramVec
	retries     *prometheus.CounterVec
	state       *prometheus.GaugeVec
	transitions *prometheus.CounterVec

	mu sync.Mutex
	// breakers are read at each scrape: gobreaker moves from open to
	// half-open only when asked, and a service nobody calls (the Trade
	// service overnight) would otherwise show open long after its cooldown.
	breakers []func() gobreaker.State
}

// stateCollector is backend_breaker_state, brought up to date as it is
// collected.
type stateCollector struct{ m *Metrics }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) { c.m.state.Describe(ch) }

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	breakers := c.m.breakers
	c.m.mu.Unlock()
	for _, state := range breakers {
		state() // a due transition happens now, and breakerChanged records it
	}
	c.m.state.Collect(ch)
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "backend_request_duration_seconds",
			Help: "Calls to the Portfolio, Trade and Risk services, by service, operation and outcome: one per logical call, retries and backoff waits included.",
			// 1ms .. 10s: an in-cluster answer, a retried one, a call that
			// ran to its deadline (BACKEND_TIMEOUT, 2s by default).
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"service", "operation", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backend_retries_total",
			Help: "Attempts after the first of a call to a backend service (connection errors, 429 and 5xx of reads; unanswered idempotent writes).",
		}, []string{"service", "operation"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "backend_breaker_state",
			Help: "State of a backend service's circuit breaker: 0 closed, 1 half-open, 2 open (calls refused without a request).",
		}, []string{"service"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "backend_breaker_transitions_total",
			Help: "State changes of a backend service's circuit breaker, by the state entered (closed, half_open, open).",
		}, []string{"service", "to"}),
	}
	for _, c := range []prometheus.Collector{m.duration, m.retries, stateCollector{m}, m.transitions} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// breakerStates names gobreaker's states as the transitions label does.
var breakerStates = map[gobreaker.State]string{
	gobreaker.StateClosed:   "closed",
	gobreaker.StateHalfOpen: "half_open",
	gobreaker.StateOpen:     "open",
}

// service makes a service's breaker series exist from the start (a closed
// breaker, no transitions), so that alerts and rates see zeros, not gaps,
// and has the breaker's state read at each scrape.
func (m *Metrics) service(service string, state func() gobreaker.State) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.breakers = append(m.breakers, state)
	m.mu.Unlock()
	m.state.WithLabelValues(service).Set(float64(gobreaker.StateClosed))
	for _, to := range breakerStates {
		m.transitions.WithLabelValues(service, to)
	}
}

// breakerChanged records a breaker's move to state to.
func (m *Metrics) breakerChanged(service string, to gobreaker.State) {
	if m == nil {
		return
	}
	// gobreaker's states are 0 closed, 1 half-open, 2 open: the gauge's.
	m.state.WithLabelValues(service).Set(float64(to))
	if name, ok := breakerStates[to]; ok {
		m.transitions.WithLabelValues(service, name).Inc()
	}
}

// retried counts one attempt after the first.
func (m *Metrics) retried(service, operation string) {
	if m == nil {
		return
	}
	m.retries.WithLabelValues(service, operation).Inc()
}

// observe records one logical call that took d and ended with err (as the
// client returns it). ctx is the caller's: its sampled span, if any, becomes
// the observation's exemplar.
func (m *Metrics) observe(ctx context.Context, service, operation string, d time.Duration, err error) {
	if m == nil {
		return
	}
	obs := m.duration.WithLabelValues(service, operation, outcome(err))
	// Only a span this process records: with tracing off, the context holds
	// the agent's own trace, which this server never recorded.
	if span := trace.SpanFromContext(ctx); span.IsRecording() && span.SpanContext().IsSampled() {
		sc := span.SpanContext()
		if eo, ok := obs.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(d.Seconds(), prometheus.Labels{"trace_id": sc.TraceID().String()})
			return
		}
	}
	obs.Observe(d.Seconds())
}

// outcome classifies a call's error as the client returns it.
func outcome(err error) string {
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, ErrCircuitOpen):
		return OutcomeBreakerOpen
	case errors.Is(err, context.DeadlineExceeded):
		return OutcomeTimeout
	case errors.Is(err, backends.ErrNotFound):
		return OutcomeNotFound
	case errors.Is(err, backends.ErrInvalid):
		return OutcomeInvalid
	}
	return OutcomeError
}
