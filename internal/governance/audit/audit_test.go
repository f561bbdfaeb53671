package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// receiver is a CloudEvents sink: it decodes each request with the SDK's
// own HTTP binding (so a malformed event fails the test) and can be told to
// refuse or to hold requests until released.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	events []cloudevents.Event
	status int           // answer with this status when not 0
	hold   chan struct{} // when not nil, block each request until closed
	held   chan string   // receives each held request's ce-subject
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	hold, held, status := r.hold, r.held, r.status
	r.mu.Unlock()
	if hold != nil {
		held <- req.Header.Get("Ce-Subject")
		<-hold
	}
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	ev, err := cehttp.NewEventFromHTTPRequest(req)
	if err != nil {
		r.t.Errorf("sink received a malformed CloudEvent: %v", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if err := ev.Validate(); err != nil {
		r.t.Errorf("sink received an invalid CloudEvent: %v", err)
	}
	r.mu.Lock()
	r.events = append(r.events, *ev)
	r.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

// received is what the sink got, checkpoints left out (Close always adds
// one; chain_test.go looks at them).
func (r *receiver) received() []cloudevents.Event {
	var out []cloudevents.Event
	for _, ev := range r.all() {
		if ev.Type() != audit.CheckpointEventType {
			out = append(out, ev)
		}
	}
	return out
}

// all is everything the sink got.
func (r *receiver) all() []cloudevents.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]cloudevents.Event(nil), r.events...)
}

// holdRequests makes the sink block every request until release (at the
// latest when the test ends); each blocked request is announced on held.
func (r *receiver) holdRequests() {
	r.mu.Lock()
	r.hold, r.held = make(chan struct{}), make(chan string, 64)
	r.mu.Unlock()
	r.t.Cleanup(r.release)
}

func (r *receiver) release() {
	r.mu.Lock()
	if r.hold != nil {
		close(r.hold)
		r.hold = nil
	}
	r.mu.Unlock()
}

func (r *receiver) setStatus(code int) {
	r.mu.Lock()
	r.status = code
	r.mu.Unlock()
}

func newAuditor(t *testing.T, cfg audit.Config, log io.Writer) (*audit.Auditor, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	a, err := audit.New(cfg, telemetry.Revision{Service: "portfolio-mcp", Revision: "portfolio-mcp-00007"},
		slog.New(slog.NewJSONHandler(log, nil)), reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a, reg
}

func sample(tool string) audit.Event {
	return audit.Event{
		Principal: "alice", ClientID: "agent-1", Tool: tool, Class: "trade",
		Args:       audit.Redact(json.RawMessage(`{"account_id":"ACC-1001","token":"s3cret"}`)),
		ArgsDigest: audit.Digest(json.RawMessage(`{"account_id":"ACC-1001","token":"s3cret"}`)),
		Outcome:    outcome.OK, IdempotencyKey: "idem-1", RequestID: "req-1", LatencyMS: 1.5,
	}
}

func TestSyncEventIsAWellFormedCloudEvent(t *testing.T) {
	rcv := newReceiver(t)
	a, _ := newAuditor(t, audit.Config{Sink: rcv.srv.URL, QueueSize: 8,
		CEOverrides: `{"extensions":{"cluster":"prod-eu"}}`}, io.Discard)
	defer a.Close(context.Background())

	if err := a.EmitSync(context.Background(), sample("place_order")); err != nil {
		t.Fatal(err)
	}
	if err := a.EmitSync(context.Background(), sample("place_order")); err != nil {
		t.Fatal(err)
	}
	got := rcv.received()
	if len(got) != 2 {
		t.Fatalf("sink got %d events, want 2", len(got))
	}
	ev := got[0]
	checks := map[string][2]string{
		"type":        {ev.Type(), audit.EventType},
		"source":      {ev.Source(), "/portfolio-mcp/portfolio-mcp/portfolio-mcp-00007"},
		"subject":     {ev.Subject(), "place_order"},
		"datacontent": {ev.DataContentType(), "application/json"},
		"extension":   {ev.Extensions()["cluster"].(string), "prod-eu"},
	}
	for name, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %q, want %q", name, c[0], c[1])
		}
	}
	if ev.ID() == "" || ev.ID() == got[1].ID() {
		t.Errorf("event ids %q and %q are not unique", ev.ID(), got[1].ID())
	}
	var data audit.Event
	if err := ev.DataAs(&data); err != nil {
		t.Fatal(err)
	}
	if data.Principal != "alice" || data.IdempotencyKey != "idem-1" || data.Revision != "portfolio-mcp-00007" || data.Time.IsZero() {
		t.Errorf("data = %+v", data)
	}
	if strings.Contains(string(ev.Data()), "s3cret") || data.Args["token"] != audit.Redacted {
		t.Errorf("a secret argument reached the sink: %s", ev.Data())
	}
}

func TestSyncFailsWhenSinkRefusesOrIsDown(t *testing.T) {
	rcv := newReceiver(t)
	a, reg := newAuditor(t, audit.Config{Sink: rcv.srv.URL, QueueSize: 8}, io.Discard)
	defer a.Close(context.Background())

	rcv.setStatus(http.StatusInternalServerError)
	if err := a.EmitSync(context.Background(), sample("place_order")); err == nil {
		t.Error("EmitSync succeeded although the sink answered 500")
	}
	rcv.srv.Close()
	if err := a.EmitSync(context.Background(), sample("place_order")); err == nil {
		t.Error("EmitSync succeeded although the sink is down")
	}
	if n := metric(t, reg, "audit_events_total", "mode", "sync", "result", "failed"); n != 2 {
		t.Errorf("failed sync deliveries counted %v, want 2", n)
	}
}

func TestAsyncQueueIsBoundedAndDrainedOnClose(t *testing.T) {
	rcv := newReceiver(t)
	rcv.holdRequests()
	var logs syncBuffer
	a, reg := newAuditor(t, audit.Config{Sink: rcv.srv.URL, QueueSize: 1}, &logs)
	overflow(a, rcv)

	if n := metric(t, reg, "audit_events_dropped_total", "reason", "queue_full"); n != 1 {
		t.Errorf("queue_full drops = %v, want 1", n)
	}
	if !strings.Contains(logs.String(), `"tool":"list_accounts"`) {
		t.Errorf("the dropped event was not written to the log: %s", logs.String())
	}
	rcv.release()
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(rcv.received()); got != 3 {
		t.Errorf("after Close the sink has %d events, want the 3 accepted", got)
	}
	// After Close, Emit neither blocks nor panics.
	a.Emit(context.Background(), sample("get_quotes"))
	if n := metric(t, reg, "audit_events_dropped_total", "reason", "closed"); n != 1 {
		t.Errorf("closed drops = %v, want 1", n)
	}
}

func TestCloseGivesUpWhenItsContextEnds(t *testing.T) {
	rcv := newReceiver(t)
	rcv.holdRequests()
	var logs syncBuffer
	a, _ := newAuditor(t, audit.Config{Sink: rcv.srv.URL, QueueSize: 4}, &logs)
	for range 3 {
		a.Emit(context.Background(), sample("get_portfolio"))
	}
	<-rcv.held
	<-rcv.held
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Close(ctx); err == nil {
		t.Fatal("Close reported a clean drain although the sink never answered")
	}
	if got := strings.Count(logs.String(), "audit event not delivered"); got != 3 {
		t.Errorf("%d undelivered events logged, want 3:\n%s", got, logs.String())
	}
}

func TestWithoutSinkEventsGoToTheLog(t *testing.T) {
	var logs syncBuffer
	// Audit records are written even when the log level is above info.
	a, err := audit.New(audit.Config{QueueSize: 1}, telemetry.Revision{},
		slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelError})), prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Emit(context.Background(), sample("get_portfolio"))
	if err := a.EmitSync(context.Background(), sample("place_order")); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if strings.Count(out, `"msg":"audit"`) != 2 || !strings.Contains(out, `"tool":"place_order"`) {
		t.Errorf("log = %s", out)
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("a secret argument reached the log: %s", out)
	}
}

func TestBadOverridesNameTheVariable(t *testing.T) {
	for _, o := range []string{`not json`, `{"extensions":{"bad-name":"x"}}`, `{"extensions":{"id":"x"}}`} {
		cfg := audit.Config{CEOverrides: o, QueueSize: 1}
		_, err := audit.New(cfg, telemetry.Revision{}, slog.New(slog.DiscardHandler), nil, nil)
		if err == nil || !strings.Contains(err.Error(), "K_CE_OVERRIDES") {
			t.Errorf("K_CE_OVERRIDES=%s: err = %v, want an error naming the variable", o, err)
		}
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "K_CE_OVERRIDES") {
			t.Errorf("K_CE_OVERRIDES=%s: Validate = %v, want an error naming the variable", o, err)
		}
	}
}

// overflow emits four reads into an Auditor with a one-slot queue whose
// sink holds requests: two workers each take one and block in the sink,
// the third fits the queue, the fourth (list_accounts) is dropped, counted
// and logged, and Emit does not block.
func overflow(a *audit.Auditor, rcv *receiver) {
	a.Emit(context.Background(), sample("get_portfolio"))
	<-rcv.held
	a.Emit(context.Background(), sample("get_portfolio"))
	<-rcv.held
	a.Emit(context.Background(), sample("get_quotes"))
	a.Emit(context.Background(), sample("list_accounts"))
}

// metric returns the value of the counter name with the given label pairs
// (0 if it was never incremented).
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := want[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// syncBuffer is a bytes.Buffer safe for the auditor's workers and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
