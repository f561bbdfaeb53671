// Package httpserver is the process's HTTP front: the /mcp endpoint behind
// Host/Origin checks, body limits and request ids; the Knative probes
// /healthz and /readyz; /metrics; and the graceful drain on shutdown.
package httpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/loopback"
)

// Options configure a Server.
type Options struct {
	Addr string
	// Routes are the served endpoints (/mcp, the approvals API), each
	// already wrapped in its edge chain (see the composition root).
	Routes       map[string]http.Handler
	DrainTimeout time.Duration
	DrainDelay   time.Duration
	// OnDrained runs after in-flight requests finished (e.g. flush audit).
	OnDrained []func(context.Context) error
	// Warm, if not nil, holds readiness until it is closed: start-up work
	// without which every call would wait (the issuer's signing keys). It
	// must close whether that work succeeds or fails, so a failing
	// dependency leaves the pod ready to answer errors fast.
	Warm    <-chan struct{}
	Metrics prometheus.Gatherer
	Logger  *slog.Logger
}

// Server serves until its context ends, then drains.
type Server struct {
	opts     Options
	srv      *http.Server
	draining atomic.Bool
	serving  atomic.Bool
}

// New builds the server and its routes.
func New(o Options) (*Server, error) {
	s := &Server{opts: o}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	if o.Metrics != nil {
		mux.Handle("GET /metrics", scrapeOnly(promhttp.HandlerFor(o.Metrics, promhttp.HandlerOpts{EnableOpenMetrics: true})))
	}
	for p, h := range o.Routes {
		mux.Handle(p, h)
	}
	s.srv = &http.Server{
		Addr:              o.Addr,
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute,
		// Longer than the idle timeout of queue-proxy's keep-alive pool
		// (Go's default transport, 90s): the proxy closes an idle
		// connection first, so it never sends a request on one this server
		// is closing at that moment, which a proxied POST cannot retry
		// (a 502 for the agent; golang/go#40747).
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Listen binds the address; Serve then serves on it. Split so that tests
// and main can learn the real port (PORT=0) before serving.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", s.opts.Addr, err)
	}
	return ln, nil
}

// Serve serves on ln until ctx is done, then drains: readiness fails at once,
// after DrainDelay the listener closes, in-flight requests get what is left
// of DrainTimeout but the hooks' reserve (a quarter of it, at most 5s) to
// finish, and the OnDrained hooks run within the rest. A request that never ends (a stream) is cut at its
// deadline and cannot take the hooks' time: the audit queue and its final
// checkpoint always get theirs.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(ln) }()
	s.serving.Store(true)
	s.opts.Logger.Info("serving", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	deadline := time.Now().Add(s.opts.DrainTimeout)
	s.draining.Store(true)
	s.opts.Logger.Info("draining", "delay", s.opts.DrainDelay.String(), "timeout", s.opts.DrainTimeout.String())
	if s.opts.DrainDelay > 0 {
		time.Sleep(s.opts.DrainDelay) // let the load balancer see readiness fail
	}
	sctx, cancelShutdown := context.WithDeadline(context.Background(), deadline.Add(-hookReserve(time.Until(deadline))))
	defer cancelShutdown()
	err := s.srv.Shutdown(sctx)
	if err != nil {
		err = fmt.Errorf("drain: %w", err)
		s.srv.Close()
	}
	hctx, cancelHooks := context.WithDeadline(context.Background(), deadline)
	defer cancelHooks()
	var hooks sync.WaitGroup
	errs := make([]error, len(s.opts.OnDrained))
	for i, f := range s.opts.OnDrained {
		hooks.Go(func() { errs[i] = f(hctx) })
	}
	hooks.Wait()
	if err := errors.Join(append(errs, err)...); err != nil {
		return err
	}
	s.opts.Logger.Info("drained")
	return nil
}

// hookReserve is the part of what is left of the drain, once the listener
// closed, kept for the OnDrained hooks (delivering the audit queue and
// sealing it): a quarter, at most 5s.
func hookReserve(left time.Duration) time.Duration { return max(0, min(left/4, 5*time.Second)) }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	}
	if !s.serving.Load() || !closed(s.opts.Warm) {
		WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting"})
		return
	}
	// Ready means configured, serving and warm (the first attempt to load
	// the issuer's keys has ended, whatever its result). Neither the
	// backends nor Redis gate it: a slow dependency failing every pod's
	// readiness would take the whole Service down, where reads can still be
	// served and trades fail closed on their own.
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// closed reports whether c is nil or closed.
func closed(c <-chan struct{}) bool {
	if c == nil {
		return true
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// scrapeOnly keeps /metrics off the public route. Prometheus scrapes the
// pod IP directly; everything from the Knative route arrives through
// queue-proxy on loopback with the public Host. So a loopback connection
// naming a non-loopback Host is a public caller and gets 404, while a
// developer's curl to localhost and the scraper both get the metrics.
func scrapeOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrivedOnLoopback(r) && !loopback.Name(hostname(r.Host)) {
			http.NotFound(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// WriteJSON answers with v as JSON, never cached: the form of every
// non-MCP answer (probes, the approvals API).
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// WriteError answers {"error": msg} with status.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]string{"error": msg})
}
