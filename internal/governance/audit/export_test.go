package audit

import "time"

// WithTicks replaces the checkpoint interval's ticker: a test decides when
// the interval has passed.
func WithTicks(c <-chan time.Time) Option { return func(o *options) { o.ticks = c } }

// Commit gives e its place in the stream, as Emit and EmitSync do, and
// sends it nowhere: the chaining step alone, for its benchmark.
func (a *Auditor) Commit(e *Event) { a.commit(e) }

// CloudEventData is the data of the CloudEvent e is sent as.
func (a *Auditor) CloudEventData(e Event) ([]byte, error) {
	ev, err := a.cloudEvent(e)
	return ev.Data(), err
}

// PublicKey is the public key of an Ed25519 seed, as the key checks derive it.
func PublicKey(seed []byte) []byte { return publicKey(seed) }
