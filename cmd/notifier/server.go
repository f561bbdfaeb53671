package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// maxEventBytes bounds one delivery's body; an audit event is a few KiB.
const maxEventBytes = 256 << 10

// notifier receives CloudEvents and posts the approval ones.
type notifier struct {
	console *url.URL
	hook    *webhook
	seen    *dedup
	log     *slog.Logger
	ready   atomic.Bool // serving and not draining
}

// newNotifier builds the notifier from a validated configuration.
func newNotifier(cfg Config, log *slog.Logger) (*notifier, error) {
	console, err := consoleBase(cfg.ConsoleURL)
	if err != nil {
		return nil, fmt.Errorf("CONSOLE_URL: %w", err)
	}
	return &notifier{console: console, hook: newWebhook(cfg), seen: newDedup(cfg.DedupSize), log: log}, nil
}

// checkWebhook logs, at start, whether the webhook URL file is usable: a
// missing Secret shows in the log before the first approval does.
func (n *notifier) checkWebhook(ctx context.Context) {
	if _, err := n.hook.url(); err != nil {
		n.log.WarnContext(ctx, "approval events will be answered 503 until the webhook URL file is fixed", "error", err.Error())
	}
}

// routes is the notifier's HTTP surface: CloudEvents on POST /, and the
// probes.
func (n *notifier) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{$}", n.receive)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !n.ready.Load() {
			answer(w, http.StatusServiceUnavailable, "not ready")
			return
		}
		answer(w, http.StatusOK, "ok")
	})
	return mux
}

// receive handles one CloudEvent delivery. Answers: 200 posted (or posted
// before), 202 not an approval event, 400 not a CloudEvent or not safe to
// notify, 503 not posted (the Broker redelivers).
func (n *notifier) receive(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	r.Body = http.MaxBytesReader(w, r.Body, maxEventBytes)
	ev, err := cehttp.NewEventFromHTTPRequest(r)
	if err == nil {
		err = ev.Validate()
	}
	if err != nil {
		n.log.WarnContext(ctx, "refused a request that is not a CloudEvent", "error", err.Error())
		answer(w, http.StatusBadRequest, "not a CloudEvent")
		return
	}
	log := n.log.With("event_id", ev.ID(), "event_source", ev.Source(), "event_type", ev.Type(), "event_subject", ev.Subject())
	msg, err := approvalMessage(*ev, n.console)
	switch {
	case errors.Is(err, errIgnored):
		log.DebugContext(ctx, "event ignored")
		answer(w, http.StatusAccepted, "ignored")
		return
	case err != nil:
		log.WarnContext(ctx, "refused an approval event", "error", err.Error())
		answer(w, http.StatusBadRequest, "malformed approval event")
		return
	}
	log = log.With("action", msg.action, "approval_id", msg.approvalID)

	key := ev.Source() + "\x00" + ev.ID() // CloudEvents: source and id identify an event
	for {
		mine, busy := n.seen.claim(key)
		if mine {
			break
		}
		if busy == nil {
			log.InfoContext(ctx, "redelivered event already posted; not posting again")
			answer(w, http.StatusOK, "already posted")
			return
		}
		select {
		case <-busy: // the other delivery ended: posted, or ours to try
		case <-ctx.Done():
			answer(w, http.StatusServiceUnavailable, "not posted")
			return
		}
	}
	attempts, err := n.hook.post(ctx, msg.text, func(err error, wait time.Duration) {
		log.WarnContext(ctx, "webhook post failed; retrying", "error", err.Error(), "retry_in", wait.String())
	})
	n.seen.release(key, err == nil)
	if err != nil {
		log.ErrorContext(ctx, "approval notification not posted; answering 503 for redelivery", "error", err.Error(), "attempts", attempts)
		answer(w, http.StatusServiceUnavailable, "not posted")
		return
	}
	log.InfoContext(ctx, "approval notification posted", "attempts", attempts)
	answer(w, http.StatusOK, "posted")
}

// answer writes a small JSON status, as the server's probes do.
func answer(w http.ResponseWriter, code int, status string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"status": status})
}

// serve serves n on ln until ctx ends, then drains: readiness fails at
// once, the listener closes, and deliveries in flight get up to drain to
// finish.
func serve(ctx context.Context, ln net.Listener, n *notifier, drain time.Duration) error {
	srv := &http.Server{
		Handler:           n.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	n.ready.Store(true)
	n.log.InfoContext(ctx, "notifier serving", "addr", ln.Addr().String(), "console", n.console.String())
	select {
	case err := <-errc:
		n.ready.Store(false)
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	n.ready.Store(false)
	n.log.Info("draining")
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("draining: %w", err)
	}
	return nil
}
