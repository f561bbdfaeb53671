// Package audit is the server's audit trail: one record per tool call
// (allowed, denied, failed, rate-limited), sent as a CloudEvent to the sink
// Knative's SinkBinding names in K_SINK, with the K_CE_OVERRIDES extensions
// applied. Without K_SINK the records go to the structured log.
//
// Reads are recorded asynchronously through a bounded queue, so a slow sink
// never slows an agent down; a full queue or an undeliverable event is
// counted and written to the log instead. State-changing calls are recorded
// synchronously (EmitSync): the caller learns whether the sink acknowledged
// the event and fails closed if it did not.
//
// Every event is a link of this process's hash chain, sealed by signed
// checkpoints (chain.go, keys.go), so an exported trail can be checked for
// gaps, edits, insertions and reordering (cmd/auditverify).
package audit

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// EventType is the CloudEvent type of a tool-call record.
const EventType = "com.portfolio-mcp.tool.called"

// StepEventType is the CloudEvent type of one step of a state-changing
// operation (Event.Action set), recorded before the step takes effect.
const StepEventType = "com.portfolio-mcp.trade.step"

// DefaultSource is the CloudEvent source outside Knative.
const DefaultSource = "portfolio-mcp"

// Event is one audit record; the CloudEvent's data.
type Event struct {
	// ID is the CloudEvent id (a UUID), also in the trace of the request.
	ID             string          `json:"event_id,omitempty"`
	Time           time.Time       `json:"time"`
	Principal      string          `json:"principal"`
	ClientID       string          `json:"client_id,omitempty"`
	Tool           string          `json:"tool"`
	Class          catalog.Class   `json:"class"`                 // read, trade, approve
	ArgsDigest     string          `json:"args_digest,omitempty"` // sha256 of canonical JSON arguments
	Args           map[string]any  `json:"args,omitempty"`        // redacted arguments
	Outcome        outcome.Outcome `json:"outcome"`               // ok, tool_error, denied, rate_limited, failed, pending_approval, ...
	Error          string          `json:"error,omitempty"`
	ApprovalID     string          `json:"approval_id,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	OrderID        string          `json:"order_id,omitempty"`
	RequestID      string          `json:"request_id,omitempty"`
	// TraceID is the OpenTelemetry trace of the request, when it has one.
	TraceID   string  `json:"trace_id,omitempty"`
	LatencyMS float64 `json:"latency_ms"`
	// Revision is the Knative revision that handled the call; the Auditor
	// fills it in.
	Revision string `json:"revision,omitempty"`
	// Action names a step of a state-changing operation (order.intent,
	// approval.requested, order.executed, ...) journaled by the trading
	// service; empty on the one record per call.
	Action string `json:"action,omitempty"`
	// Provenance, on a step of an order, is how it came to be decided.
	Provenance map[string]string `json:"provenance,omitempty"`
	// Steps are the journaled steps that took effect during the call (an
	// order the Trade service accepted): carried by the call's own record,
	// so they cost no delivery of their own.
	Steps []Step `json:"steps,omitempty"`
	// Checkpoint is set on a checkpoint event only (CheckpointEventType).
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
	// Chain is the event's place in its stream, set when it is recorded;
	// the only member its hash does not cover (Canonical).
	Chain Link `json:"chain,omitzero"`

	// canonical is Canonical(e), kept from the chaining step when the
	// event goes to a sink: its CloudEvent data is these bytes with the
	// chain member appended, not a second encoding of the event.
	canonical []byte
}

// Config configures the audit trail. Knative's SinkBinding injects K_SINK
// and K_CE_OVERRIDES; without K_SINK audit events go to the structured log.
type Config struct {
	Sink        string `env:"K_SINK"`
	CEOverrides string `env:"K_CE_OVERRIDES"`
	QueueSize   int    `env:"AUDIT_QUEUE_SIZE, default=1024"`
	// CheckpointEvents and CheckpointInterval bound what a crash can leave
	// unsealed: a signed checkpoint follows at most about this many events,
	// and at most this long after an event (none while idle). 0: the
	// default.
	CheckpointEvents   int           `env:"AUDIT_CHECKPOINT_EVENTS, default=256"`
	CheckpointInterval time.Duration `env:"AUDIT_CHECKPOINT_INTERVAL, default=10s"`
}

// Checkpoint defaults, for a Config built without the environment.
const (
	defaultCheckpointEvents   = 256
	defaultCheckpointInterval = 10 * time.Second
)

// Validate reports a K_CE_OVERRIDES that is not Knative's duck type and
// checkpoint bounds out of range, each error starting with its variable.
func (c Config) Validate() error {
	var errs []error
	if _, err := parseOverrides(c.CEOverrides); err != nil {
		errs = append(errs, fmt.Errorf("K_CE_OVERRIDES %w", err))
	}
	if c.CheckpointEvents < 0 || c.CheckpointEvents > 1<<16 {
		errs = append(errs, fmt.Errorf("AUDIT_CHECKPOINT_EVENTS %d is outside 1..65536", c.CheckpointEvents))
	}
	if c.CheckpointInterval != 0 && (c.CheckpointInterval < time.Second || c.CheckpointInterval > 10*time.Minute) {
		errs = append(errs, fmt.Errorf("AUDIT_CHECKPOINT_INTERVAL %s is outside [1s, 10m]", c.CheckpointInterval))
	}
	return errors.Join(errs...)
}

// Option adjusts an Auditor.
type Option func(*options)

type options struct {
	signer *signer
	ticks  <-chan time.Time // replaces the checkpoint interval's ticker (tests)
}

// Delivery bounds: an asynchronous event gets a few retries with backoff; a
// synchronous one, which an agent is waiting for, fewer and a hard deadline.
const (
	asyncRetries   = 4
	asyncBackoff   = 100 * time.Millisecond
	asyncDeadline  = 30 * time.Second
	syncRetries    = 2
	syncBackoff    = 50 * time.Millisecond
	syncDeadline   = 5 * time.Second
	attemptTimeout = 3 * time.Second
	asyncWorkers   = 2
)

// Auditor records events. Its zero value is not usable; call New.
type Auditor struct {
	sink       *sink // nil: log only
	source     string
	revision   string
	extensions map[string]string
	log        *slog.Logger // operational messages, at the configured level
	record     *slog.Logger // audit records written to the log, whatever the level

	mu     sync.RWMutex // guards closed and sends on queue
	closed bool
	// queue holds events waiting for the workers, in slots from a pool
	// that the workers return them to. A channel of Event values would
	// reserve the whole queue up front (about 440 KB at the default size),
	// which the collector scans on every cycle and which, counted as live
	// heap, brings a collection into the start of a 2-CPU pod.
	queue chan *Event
	slots sync.Pool     // *Event
	done  chan struct{} // closed when the workers have drained the queue
	// abandon cancels the workers' deliveries when Close runs out of time:
	// what is left is logged instead.
	workCtx context.Context
	abandon context.CancelFunc

	delivered *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	queued    prometheus.GaugeFunc
	tracer    trace.Tracer

	chain       *chain
	signer      *signer
	encoders    sync.Pool // *encoder
	every       int       // events per checkpoint
	due         chan struct{}
	stopSeal    chan struct{} // closed by Close: the checkpoint loop ends
	sealLoop    chan struct{} // closed when the checkpoint loop ended
	sealOnce    sync.Once
	undelivered undelivered
}

// New builds an Auditor from the audit configuration. It starts the
// checkpoint loop and, with cfg.Sink set, the workers that deliver queued
// events; Close stops them. Without SigningKey among opts, checkpoints are
// signed with a key made for this process.
func New(cfg Config, rev telemetry.Revision, log *slog.Logger, reg prometheus.Registerer, tp trace.TracerProvider, opts ...Option) (*Auditor, error) {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	ext, err := parseOverrides(cfg.CEOverrides)
	if err != nil {
		return nil, fmt.Errorf("K_CE_OVERRIDES %w", err)
	}
	size := cfg.QueueSize
	if size < 1 {
		size = 1
	}
	a := &Auditor{
		tracer:     tp.Tracer("github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"),
		source:     source(rev),
		revision:   rev.Revision,
		extensions: ext,
		log:        log,
		record:     slog.New(alwaysEnabled{log.Handler()}),
		done:       make(chan struct{}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "audit_events_total", Help: "Audit events recorded, by mode (async, sync) and result (delivered, failed, logged).",
		}, []string{"mode", "result"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "audit_events_dropped_total", Help: "Asynchronous audit events not delivered to the sink (written to the log instead), by reason.",
		}, []string{"reason"}),
	}
	// Every series exists from the start at zero, so the first failure or
	// drop is an increase an alert's rate() sees.
	for _, mode := range []string{"async", "sync"} {
		for _, result := range []string{"delivered", "failed", "logged"} {
			a.delivered.WithLabelValues(mode, result)
		}
	}
	for _, reason := range []string{"queue_full", "closed", "shutdown", "delivery_failed"} {
		a.dropped.WithLabelValues(reason)
	}
	a.queued = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "audit_queue_length", Help: "Audit events waiting for delivery.",
	}, func() float64 { return float64(len(a.queue)) })
	if reg != nil {
		for _, c := range []prometheus.Collector{a.delivered, a.dropped, a.queued} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("audit metrics: %w", err)
			}
		}
	}
	if cfg.Sink == "" {
		close(a.done)
	} else if err := a.startWorkers(cfg.Sink, size); err != nil {
		return nil, err
	}
	a.startChain(cfg, o)
	return a, nil
}

// startWorkers connects the sink and starts the workers that deliver
// queued events.
func (a *Auditor) startWorkers(target string, queueSize int) error {
	var err error
	if a.sink, err = newSink(target, a.source, a.extensions); err != nil {
		return fmt.Errorf("audit sink: %w", err)
	}
	a.queue = make(chan *Event, queueSize)
	a.workCtx, a.abandon = context.WithCancel(context.Background())
	var workers sync.WaitGroup
	for range asyncWorkers {
		workers.Go(a.work)
	}
	go func() {
		workers.Wait()
		close(a.done)
	}()
	return nil
}

// Emit records e asynchronously. It never blocks: when the queue is full (or
// the Auditor is closed) the event is counted as dropped and written to the
// log, so it is not lost from the record altogether.
func (a *Auditor) Emit(ctx context.Context, e Event) {
	a.fill(ctx, &e)
	a.commit(&e)
	a.enqueue(ctx, e)
}

// enqueue hands a committed event to the workers, or to the log.
func (a *Auditor) enqueue(ctx context.Context, e Event) {
	if a.sink == nil {
		a.logEvent(ctx, slog.LevelInfo, logMessage(e), e)
		a.delivered.WithLabelValues("async", "logged").Inc()
		return
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	reason := "closed"
	if !a.closed {
		slot, _ := a.slots.Get().(*Event)
		if slot == nil {
			slot = new(Event)
		}
		*slot = e
		select {
		case a.queue <- slot:
			return
		default:
			*slot = Event{}
			a.slots.Put(slot)
			reason = "queue_full"
		}
	}
	a.dropped.WithLabelValues(reason).Inc()
	a.logUndelivered(ctx, slog.LevelWarn, reason, e)
}

// EmitSync records e and returns only once the sink acknowledged it (a 2xx)
// or delivery failed. Fail-closed callers must not report success when it
// returns an error. Delivery is attempted even if ctx is cancelled (the agent
// went away), bounded by a few seconds. Without a sink the event is logged.
func (a *Auditor) EmitSync(ctx context.Context, e Event) error {
	a.fill(ctx, &e)
	a.commit(&e)
	ctx, span := a.tracer.Start(ctx, "audit.deliver", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("cloudevents.event_id", e.ID), attribute.String("portfolio_mcp.audit.record", cmp.Or(e.Action, e.Tool))))
	defer span.End()
	if err := a.deliverSync(context.WithoutCancel(ctx), e); err != nil {
		span.SetStatus(codes.Error, "the audit sink did not acknowledge")
		a.log.ErrorContext(ctx, "audit sink did not acknowledge a synchronous event", "error", err, "tool", e.Tool)
		return fmt.Errorf("audit: recording %s call: %w", e.Tool, err)
	}
	return nil
}

// deliverSync sends a committed event to the sink within ctx, at most a
// synchronous event's deadline, and counts the result; an event the sink
// did not take is logged, with why. Without a sink the event is logged.
func (a *Auditor) deliverSync(ctx context.Context, e Event) error {
	if a.sink == nil {
		a.logEvent(ctx, slog.LevelInfo, logMessage(e), e)
		a.delivered.WithLabelValues("sync", "logged").Inc()
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, syncDeadline)
	defer cancel()
	if err := a.sink.deliver(dctx, e, syncRetries, syncBackoff); err != nil {
		a.delivered.WithLabelValues("sync", "failed").Inc()
		a.logUndelivered(ctx, slog.LevelError, err.Error(), e)
		return err
	}
	a.delivered.WithLabelValues("sync", "delivered").Inc()
	return nil
}

// Close stops accepting asynchronous events and waits until the queue is
// drained. If ctx ends first, deliveries in progress are abandoned and the
// events still queued are written to the log (and counted as dropped), so
// nothing is lost from the record. Then it seals the stream with its final
// checkpoint, delivered while ctx lasts and logged otherwise. Run it after
// in-flight requests finished (an httpserver OnDrained hook).
func (a *Auditor) Close(ctx context.Context) error {
	var err error
	a.sealOnce.Do(func() {
		close(a.stopSeal)
		<-a.sealLoop // a periodic checkpoint in progress goes out with the queue
		err = a.drain(ctx)
		a.sealFinal(ctx)
	})
	return err
}

// drain closes the queue and waits for the workers, abandoning what is
// left when ctx ends.
func (a *Auditor) drain(ctx context.Context) error {
	a.mu.Lock()
	a.closed = true
	if a.queue != nil { // nil without a sink
		close(a.queue)
	}
	a.mu.Unlock()
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
	}
	select {
	case <-a.done: // no sink, or drained just now
		return nil
	default:
	}
	left := len(a.queue)
	a.abandon()
	<-a.done // quick: sends are cancelled, the rest is only logged
	return fmt.Errorf("audit: draining the queue: %w (%d events logged instead of delivered)", ctx.Err(), left)
}

// work delivers queued events until the queue is closed and empty.
func (a *Auditor) work() {
	for slot := range a.queue {
		e := *slot
		*slot = Event{} // holds nothing for the collector while pooled
		a.slots.Put(slot)
		if a.workCtx.Err() != nil {
			a.dropped.WithLabelValues("shutdown").Inc()
			a.logUndelivered(context.Background(), slog.LevelWarn, "shutdown", e)
			continue
		}
		ctx, cancel := context.WithTimeout(a.workCtx, asyncDeadline)
		err := a.sink.deliver(ctx, e, asyncRetries, asyncBackoff)
		cancel()
		if err != nil {
			a.dropped.WithLabelValues("delivery_failed").Inc()
			a.logUndelivered(context.Background(), slog.LevelError, err.Error(), e)
			continue
		}
		a.delivered.WithLabelValues("async", "delivered").Inc()
	}
}

// fill completes e: its id, time, revision and trace; and notes the event
// on the request's span, so a trace leads to its audit records.
func (a *Auditor) fill(ctx context.Context, e *Event) {
	if e.ID == "" {
		e.ID = uuid.NewString()
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if e.Revision == "" {
		e.Revision = a.revision
	}
	span := trace.SpanFromContext(ctx)
	if sc := span.SpanContext(); e.TraceID == "" && sc.IsValid() {
		e.TraceID = sc.TraceID().String()
	}
	if span.IsRecording() {
		span.AddEvent("audit", trace.WithAttributes(attribute.String("cloudevents.event_id", e.ID),
			attribute.String("portfolio_mcp.audit.record", cmp.Or(e.Action, e.Tool)), attribute.String("portfolio_mcp.outcome", string(e.Outcome))))
	}
}

// logEvent writes e to the structured log: the record of last resort. It
// is written even when LOG_LEVEL would drop its level.
func (a *Auditor) logEvent(ctx context.Context, level slog.Level, msg string, e Event) {
	a.record.LogAttrs(ctx, level, msg, slog.Any(LogKey, e))
}

// logUndelivered logs an event the sink did not get, and notes it for the
// next checkpoint, which tells the verifier where the gap's event is.
func (a *Auditor) logUndelivered(ctx context.Context, level slog.Level, why string, e Event) {
	kind := "event"
	if e.Checkpoint != nil {
		kind = "checkpoint"
	}
	a.logEvent(ctx, level, "audit "+kind+" not delivered: "+why, e)
	a.undelivered.note(e.Chain.Seq)
}

// logMessage is the message of a record logged because there is no sink.
func logMessage(e Event) string {
	if e.Checkpoint != nil {
		return "audit checkpoint"
	}
	return "audit"
}

// TypeOf is the CloudEvent type of e.
func TypeOf(e Event) string {
	switch {
	case e.Checkpoint != nil:
		return CheckpointEventType
	case e.Action != "":
		return StepEventType
	}
	return EventType
}

// SubjectOf is the CloudEvent subject of e. A step's subject is its action
// (approval.requested, ...), also when a tool call took it: what a Trigger
// routes on (notifications).
func SubjectOf(e Event) string {
	switch {
	case e.Checkpoint != nil:
		return CheckpointSubject
	case e.Action != "":
		return e.Action
	}
	return e.Tool
}

// alwaysEnabled passes every record to its handler: an audit record must
// not depend on the operational log level.
type alwaysEnabled struct{ slog.Handler }

func (alwaysEnabled) Enabled(context.Context, slog.Level) bool { return true }

func (h alwaysEnabled) WithAttrs(as []slog.Attr) slog.Handler {
	return alwaysEnabled{h.Handler.WithAttrs(as)}
}

func (h alwaysEnabled) WithGroup(name string) slog.Handler {
	return alwaysEnabled{h.Handler.WithGroup(name)}
}

// source is the CloudEvent source: the Knative service and revision when
// running in Knative.
func source(rev telemetry.Revision) string {
	switch {
	case rev.Service != "" && rev.Revision != "":
		return "/portfolio-mcp/" + rev.Service + "/" + rev.Revision
	case rev.Service != "":
		return "/portfolio-mcp/" + rev.Service
	}
	return DefaultSource
}

// parseOverrides reads K_CE_OVERRIDES, Knative's duck type
// {"extensions": {"name": "value"}} (sdk-go does not apply it itself).
func parseOverrides(raw string) (map[string]string, error) {
	if raw == "" {
		return nil, nil
	}
	var o struct {
		Extensions map[string]string `json:"extensions"`
	}
	if err := json.Unmarshal([]byte(raw), &o); err != nil {
		return nil, fmt.Errorf(`is not JSON like {"extensions":{"name":"value"}}: %v`, err)
	}
	probe := cloudevents.NewEvent()
	for k, v := range o.Extensions {
		if err := probe.Context.SetExtension(k, v); err != nil {
			return nil, fmt.Errorf("extension %q: %v", k, err)
		}
	}
	return o.Extensions, nil
}
