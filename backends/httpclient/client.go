// Package httpclient implements the backends interfaces over the firm's
// Portfolio, Risk and Trade services, speaking the HTTP/JSON contract in
// backends/CONTRACT.md.
//
// Every call runs under one deadline (the caller's, or Options.Timeout if
// sooner); reads are retried with jittered exponential backoff inside it
// (github.com/cenkalti/backoff/v5); each service has its own circuit breaker
// (github.com/sony/gobreaker/v2); connections are pooled per service host.
// Each call is measured (Options.Metrics: Prometheus, see Metrics) and each
// attempt is an OpenTelemetry client span whose context the request carries
// (otelhttp; Options.TracerProvider and Options.Propagator).
// Failures come back as the backends sentinel errors, worded for logs: the
// handlers turn them into what an agent sees, and only an ErrInvalid's text
// (a bounded, URL-free message from the service) is ever shown verbatim.
package httpclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/cenkalti/backoff/v5"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// ErrCircuitOpen marks a call refused without touching the network because
// the service's circuit breaker is open. It always comes wrapped together
// with backends.ErrUnavailable.
var ErrCircuitOpen = errors.New("circuit breaker open")

// Limits on what a service may send back.
const (
	maxResponseBytes = 8 << 20
	maxErrorBytes    = 64 << 10
	maxMessageRunes  = 200
)

// Backoff between attempts: 50ms, 100ms, 200ms, ... up to 1s, each
// randomised by +/-50% so that replicas retrying together spread out.
const (
	backoffInitial    = 50 * time.Millisecond
	backoffMultiplier = 2
	backoffJitter     = 0.5
	backoffMax        = time.Second
)

// Options configure the clients. The zero value of a field means its
// default, except Retries, which is used as given.
type Options struct {
	// Timeout bounds one call, all attempts and waits included, unless the
	// caller's deadline is sooner. Default 2s.
	Timeout time.Duration
	// Retries is how many extra attempts a read gets after a connection
	// error, 429 or 5xx.
	Retries int
	// BreakerFailures is how many consecutive failed attempts open a
	// service's breaker. Default 5.
	BreakerFailures int
	// BreakerCooldown is how long an open breaker refuses calls before it
	// lets one probe through. Default 10s.
	BreakerCooldown time.Duration
	// Token, if set, returns the bearer token for each request; it is called
	// per request so a rotated secret is picked up without a restart. An
	// empty token sends no Authorization header.
	Token func() string
	// Transport carries the requests; nil uses a new pooled NewTransport.
	Transport http.RoundTripper
	// Logger receives breaker state changes and retries; nil discards.
	Logger *slog.Logger
	// Metrics, if set, measures calls, retries and the breakers (see
	// NewMetrics); nil measures nothing.
	Metrics *Metrics
	// TracerProvider makes the client span of each attempt; nil uses the
	// provider of the caller's span, else the global one.
	TracerProvider trace.TracerProvider
	// Propagator injects the span context into each request (traceparent
	// with propagation.TraceContext); nil uses the global propagator, which
	// injects nothing until otel.SetTextMapPropagator installs one.
	Propagator propagation.TextMapPropagator
}

func (o Options) withDefaults() (Options, error) {
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	if o.BreakerFailures == 0 {
		o.BreakerFailures = 5
	}
	if o.BreakerCooldown == 0 {
		o.BreakerCooldown = 10 * time.Second
	}
	switch {
	case o.Timeout < 0:
		return o, errors.New("timeout must be positive")
	case o.Retries < 0:
		return o, errors.New("retries must not be negative")
	case o.BreakerFailures < 0:
		return o, errors.New("breaker failures must be positive")
	case o.BreakerCooldown < 0:
		return o, errors.New("breaker cooldown must be positive")
	}
	if o.Transport == nil {
		o.Transport = NewTransport()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// NewTransport returns the pooled transport the clients use by default. It
// keeps enough idle connections per host for a replica's burst of
// concurrent tool calls (the standard library keeps 2), bounds connection
// set-up, and never uses an HTTP proxy: the services are in-cluster.
func NewTransport() *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          128,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       60 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// caller is the HTTP machinery one service's client shares: base URL,
// pooled client, options and breaker.
type caller struct {
	service string
	base    string // scheme://host[:port][/prefix], no trailing slash
	hc      *http.Client
	opts    Options
	breaker *gobreaker.CircuitBreaker[[]byte]
}

func newCaller(service, baseURL string, o Options) (*caller, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("%s client: %w", service, err)
	}
	u, err := url.Parse(baseURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("%s client: base URL must be http(s)://host[:port][/path] without credentials or query", service)
	}
	c := &caller{
		service: service,
		base:    strings.TrimSuffix(u.String(), "/"),
		hc: &http.Client{
			Transport: traced(o.Transport, o),
			// The contract has no redirects; one is a misrouted base URL,
			// reported rather than followed to wherever it points.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		opts: o,
	}
	c.breaker = gobreaker.NewCircuitBreaker[[]byte](gobreaker.Settings{
		Name:        service,
		MaxRequests: 1,
		Timeout:     o.BreakerCooldown,
		ReadyToTrip: func(n gobreaker.Counts) bool { return n.ConsecutiveFailures >= uint32(o.BreakerFailures) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			level := slog.LevelInfo
			if to == gobreaker.StateOpen {
				level = slog.LevelWarn
			}
			o.Logger.Log(context.Background(), level, "backend circuit breaker changed state",
				"service", name, "from", from.String(), "to", to.String())
			o.Metrics.breakerChanged(name, to)
		},
		IsSuccessful: backendHealthy,
		// A caller that went away says nothing about the service.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
	})
	o.Metrics.service(service, c.breaker.State)
	return c, nil
}

// request is one contract call. route is the contract's pattern, used in
// errors, logs and span names instead of the URL (which may carry ids and
// hosts); op names the client method in metrics (get_portfolio, ...).
type request struct {
	op     string
	method string
	route  string
	path   string // escaped path below the base URL
	query  url.Values
	body   any
	// replaySafe marks a write the contract makes idempotent, so it may be
	// resent when no response was received. Reads are always retryable.
	replaySafe bool
}

func (r request) read() bool { return r.method == http.MethodGet }

// do runs r under the call's deadline, retries and breaker, decodes a 2xx
// body into out, and measures the call as one.
func (c *caller) do(ctx context.Context, r request, out any) error {
	start := time.Now()
	err := c.call(ctx, r, out)
	c.opts.Metrics.observe(ctx, c.service, r.op, time.Since(start), err)
	return err
}

func (c *caller) call(ctx context.Context, r request, out any) error {
	parent := ctx
	ctx, cancel := context.WithTimeout(withRoute(ctx, r.route), c.opts.Timeout)
	defer cancel()

	var payload []byte
	if r.body != nil {
		var err error
		if payload, err = json.Marshal(r.body); err != nil {
			return fmt.Errorf("%s service: %s: encoding request: %w", c.service, r.route, err)
		}
	}

	attempts := 0 // requests sent
	var last error
	op := func() ([]byte, error) {
		body, err := c.breaker.Execute(func() ([]byte, error) {
			// Counted only when sent: a retry the breaker refuses is none.
			if attempts++; attempts > 1 {
				c.opts.Metrics.retried(c.service, r.op)
			}
			return c.attempt(ctx, r, payload)
		})
		if err == nil {
			return body, nil
		}
		if last != nil && (errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests)) {
			// The service was called and failed, which opened the breaker:
			// that failure is the call's outcome, not the local refusal.
			return nil, backoff.Permanent(last)
		}
		last = err
		if !c.retryable(ctx, r, err) {
			return nil, backoff.Permanent(err)
		}
		var he *httpError
		if errors.As(err, &he) && he.retryAfter > 0 {
			return nil, errors.Join(err, &backoff.RetryAfterError{Duration: he.retryAfter})
		}
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	bo := &backoff.ExponentialBackOff{
		InitialInterval:     backoffInitial,
		RandomizationFactor: backoffJitter,
		Multiplier:          backoffMultiplier,
		MaxInterval:         backoffMax,
	}
	body, err := backoff.Retry(ctx, op,
		backoff.WithBackOff(bo),
		backoff.WithMaxTries(uint(1+c.opts.Retries)),
		// Never start a wait that would end past the deadline: give up with
		// the last error instead, while there is still time to report it.
		backoff.WithMaxElapsedTime(time.Until(deadline)),
		backoff.WithNotify(func(err error, wait time.Duration) {
			c.opts.Logger.DebugContext(ctx, "retrying backend call", "service", c.service, "route", r.route,
				"attempt", attempts, "wait", wait.String(), "error", err.Error())
		}),
	)
	if err != nil {
		return c.callError(parent, ctx, r, attempts, last, err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s service: %s: decoding response: %w", c.service, r.route, err)
	}
	return nil
}

// callError turns the outcome of a failed call into one error: the
// backends sentinel for the handlers, the details for the log.
func (c *caller) callError(parent, ctx context.Context, r request, attempts int, last, err error) error {
	where := fmt.Sprintf("%s service: %s", c.service, r.route)
	switch {
	case parent.Err() != nil && errors.Is(parent.Err(), context.Canceled):
		return fmt.Errorf("%s: %w", where, context.Canceled)
	case errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests):
		return fmt.Errorf("%w: %s: %w: not called until it recovers", backends.ErrUnavailable, where, ErrCircuitOpen)
	}
	var he *httpError
	if errors.As(err, &he) {
		switch {
		case errors.Is(he, backends.ErrInvalid):
			// The one message an agent sees verbatim: the service's own,
			// sanitised.
			return fmt.Errorf("%w: %s", backends.ErrInvalid, he.message)
		case errors.Is(he, backends.ErrNotFound):
			return fmt.Errorf("%s: %w", where, backends.ErrNotFound)
		case errors.Is(he, backends.ErrUnavailable):
			return fmt.Errorf("%w: %s: %s after %d attempt(s)", backends.ErrUnavailable, where, he.Error(), attempts)
		}
		return fmt.Errorf("%s: %w", where, he)
	}
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		detail := ""
		if last != nil && !errors.Is(last, context.DeadlineExceeded) {
			detail = "; last error: " + last.Error()
		}
		return fmt.Errorf("%w: %s: no answer within the deadline (%d attempt(s)%s): %w",
			backends.ErrUnavailable, where, attempts, detail, context.DeadlineExceeded)
	}
	return fmt.Errorf("%w: %s: %w (after %d attempt(s))", backends.ErrUnavailable, where, err, attempts)
}

// retryable reports whether a failed attempt may be tried again.
func (c *caller) retryable(ctx context.Context, r request, err error) bool {
	if ctx.Err() != nil || errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return false
	}
	var te *transportError
	if errors.As(err, &te) {
		// No response arrived: a read is safe to resend, and so is a write
		// the contract makes idempotent.
		return r.read() || r.replaySafe
	}
	var he *httpError
	if errors.As(err, &he) {
		// The service answered: only reads are retried, since a write may
		// have taken effect before the service failed.
		return r.read() && he.transient()
	}
	return false
}

// attempt sends r once and returns the body of a 2xx answer.
func (c *caller) attempt(ctx context.Context, r request, payload []byte) ([]byte, error) {
	target := c.base + r.path
	if len(r.query) > 0 {
		target += "?" + r.query.Encode()
	}
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, target, body)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "portfolio-mcp")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	if c.opts.Token != nil {
		if tok := c.opts.Token(); tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	if id := telemetry.RequestID(ctx); id != "" {
		req.Header.Set("X-Request-Id", id)
	}

	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, &transportError{err: unwrapURLError(err)}
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		he := &httpError{status: resp.StatusCode, retryAfter: retryAfter(resp.Header.Get("Retry-After"))}
		var eb struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
		if json.Unmarshal(raw, &eb) == nil {
			he.code, he.message = eb.Error.Code, safeMessage(eb.Error.Message)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBytes)) // let the connection be reused
		return nil, he
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		// The answer was cut off: as good as no answer.
		return nil, &transportError{err: fmt.Errorf("reading response: %w", unwrapURLError(err))}
	}
	if len(data) > maxResponseBytes {
		return nil, fmt.Errorf("response larger than %d bytes", maxResponseBytes)
	}
	return data, nil
}

// unwrapURLError drops *url.Error's wrapping, whose text quotes the full
// URL; what remains (e.g. "dial tcp 10.0.0.7:80: connection refused")
// names at most an address, and only reaches the log.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// transportError is an attempt that got no (complete) response.
type transportError struct{ err error }

func (e *transportError) Error() string { return "no response: " + e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// httpError is an answered non-2xx response.
type httpError struct {
	status     int
	code       string
	message    string // sanitised; empty if the body was not the contract's
	retryAfter time.Duration
}

func (e *httpError) Error() string {
	if e.code != "" {
		return fmt.Sprintf("status %d (%s)", e.status, e.code)
	}
	return fmt.Sprintf("status %d", e.status)
}

// Unwrap maps the status to the backends sentinel, per the contract.
func (e *httpError) Unwrap() error {
	switch {
	case (e.status == http.StatusBadRequest || e.status == http.StatusConflict || e.status == http.StatusUnprocessableEntity) && e.message != "":
		return backends.ErrInvalid
	case e.status == http.StatusNotFound && e.code == "not_found":
		// A bare 404 is a wrong base URL or route, not a missing account.
		return backends.ErrNotFound
	case e.status == http.StatusUnauthorized || e.status == http.StatusForbidden || e.transient():
		return backends.ErrUnavailable
	}
	return nil
}

// transient reports a status that may succeed if tried again.
func (e *httpError) transient() bool {
	switch e.status {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// backendHealthy is the breaker's view of an attempt: the service answered
// sensibly. Not-found, invalid and auth answers are the service working;
// connection errors, timeouts, 429 and 5xx are it failing.
func backendHealthy(err error) bool {
	if err == nil {
		return true
	}
	var he *httpError
	if errors.As(err, &he) {
		return !he.transient() && he.status < 500
	}
	var te *transportError
	if errors.As(err, &te) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	return true // a local error (building the request, an oversized body)
}

// retryAfter parses a Retry-After header given in seconds; dates and
// garbage are ignored.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(min(n, 3600)) * time.Second
}

// safeMessage bounds a service's error message to what may be shown to an
// agent: one short line of printable text with no URLs. Anything else is
// replaced by a generic refusal.
func safeMessage(m string) string {
	m = strings.TrimSpace(m)
	if m == "" || strings.Contains(m, "://") || strings.ContainsFunc(m, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return "the request was refused by the service"
	}
	if r := []rune(m); len(r) > maxMessageRunes {
		m = string(r[:maxMessageRunes]) + "..."
	}
	return m
}
