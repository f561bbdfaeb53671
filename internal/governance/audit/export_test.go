package audit

import (
	"cmp"
	"context"
	"net/http"
	"strconv"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// WithTicks replaces the checkpoint interval's ticker: a test decides when
// the interval has passed.
func WithTicks(c <-chan time.Time) Option { return func(o *options) { o.ticks = c } }

// Commit gives e its place in the stream, as Emit and EmitSync do, and
// sends it nowhere: the chaining step alone, for its benchmark.
func (a *Auditor) Commit(e *Event) { a.commit(e) }

// CloudEventData is the data of the CloudEvent e is sent as.
func (a *Auditor) CloudEventData(e Event) ([]byte, error) {
	ev, err := a.CloudEvent(e)
	return ev.Data(), err
}

// CloudEvent is e as sdk-go builds it: the reference the sink's own
// writing is compared with (TestSinkWritesTheSDKsRequest).
func (a *Auditor) CloudEvent(e Event) (cloudevents.Event, error) {
	ev := cloudevents.NewEvent()
	ev.SetID(cmp.Or(e.ID, "unfilled"))
	ev.SetType(TypeOf(e))
	ev.SetSource(a.source)
	if s := SubjectOf(e); s != "" {
		ev.SetSubject(s)
	}
	ev.SetTime(e.Time)
	b, err := data(e)
	if err != nil {
		return ev, err
	}
	if err := ev.SetData(cloudevents.ApplicationJSON, b); err != nil {
		return ev, err
	}
	for k, v := range a.extensions {
		ev.SetExtension(k, v)
	}
	ev.SetExtension(StreamExtension, e.Chain.Stream)
	ev.SetExtension(SeqExtension, strconv.FormatUint(e.Chain.Seq, 10))
	return ev, ev.Validate()
}

// SinkRequest is the request the sink sends for e, the event as committed.
func (a *Auditor) SinkRequest(ctx context.Context, e Event) (*http.Request, error) {
	b, err := data(e)
	if err != nil {
		return nil, err
	}
	return a.sink.request(ctx, e, b), nil
}

// Fill and commit e as Emit does, without sending it.
func (a *Auditor) FillAndCommit(ctx context.Context, e *Event) {
	a.fill(ctx, e)
	a.commit(e)
}

// PublicKey is the public key of an Ed25519 seed, as the key checks derive it.
func PublicKey(seed []byte) []byte { return publicKey(seed) }
