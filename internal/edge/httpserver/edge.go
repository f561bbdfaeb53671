package httpserver

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/ident"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// The steps of an edge chain. Each wraps the next handler; the composition
// root lists them, in order, in one place.

// validRequestID is the shape of an adopted request id: 1 to 64 ASCII
// letters, digits, '.', '_' or '-', safe to echo and to log.
func validRequestID(id string) bool { return ident.Chars(id, 64) }

// RequestID adopts a well-formed X-Request-Id from the caller (Knative and
// most ingresses set one) or makes one, and echoes it in the response.
func RequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			id = telemetry.NewRequestID()
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(telemetry.WithRequestID(r.Context(), id)))
	})
}

// LimitBody refuses a body over max bytes.
func LimitBody(max int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > max {
				WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", max))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, max)
			next.ServeHTTP(w, r)
		})
	}
}

// Guard is the Host and Origin check (see hostGuard).
func Guard(allowedHosts, allowedOrigins []string) (func(http.Handler) http.Handler, error) {
	g, err := newHostGuard(allowedHosts, allowedOrigins, nil)
	if err != nil {
		return nil, fmt.Errorf("allowed origins: %w", err)
	}
	return func(next http.Handler) http.Handler {
		return &hostGuard{hosts: g.hosts, cop: g.cop, next: next} // one parsed allow list for every route
	}, nil
}

// ParseCall reads a POSTed JSON-RPC message once, answers a malformed one
// with a JSON-RPC error (as the spec requires, where the SDK answers plain
// text), and puts the parsed call.Call into the request's context for every
// later step. The body is handed on as read, for the SDK.
func ParseCall(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !call.JSONBody(r.Header.Get("Content-Type")) {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", mbe.Limit))
				return
			}
			WriteError(w, http.StatusBadRequest, "could not read request body")
			return
		}
		version := r.Header.Get("Mcp-Protocol-Version")
		c, perr := call.Parse(body, version)
		if perr != nil {
			call.WriteError(w, perr.Status(version), perr.ID, perr.Code, perr.Message, nil)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if c.Batch {
			// Its messages get their Calls from call.Bind, one by one.
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r.WithContext(call.With(r.Context(), c)))
	})
}

// Chain applies steps to h, the first step outermost.
func Chain(h http.Handler, steps ...func(http.Handler) http.Handler) http.Handler {
	for i := len(steps) - 1; i >= 0; i-- {
		h = steps[i](h)
	}
	return h
}

// StatusRecorder remembers the status a handler wrote (200 if none), for
// the steps that report on a request after it was served (audit, the
// server span).
type StatusRecorder struct {
	http.ResponseWriter
	Status int
}

// NewStatusRecorder wraps w.
func NewStatusRecorder(w http.ResponseWriter) *StatusRecorder {
	return &StatusRecorder{ResponseWriter: w, Status: http.StatusOK}
}

// WriteHeader records code and writes it.
func (s *StatusRecorder) WriteHeader(code int) {
	s.Status = code
	s.ResponseWriter.WriteHeader(code)
}

// Flush passes streaming responses through.
func (s *StatusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (s *StatusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
