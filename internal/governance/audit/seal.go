package audit

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
)

// Where an exported trail carries the chain, besides the event's data.
const (
	// LogKey is the attribute of a log record that holds the event.
	LogKey = "audit_event"
	// StreamExtension and SeqExtension are CloudEvent extensions repeating
	// Chain.Stream and Chain.Seq.
	StreamExtension = "auditstream"
	SeqExtension    = "auditseq"
)

// maxUndelivered bounds the sequence numbers one checkpoint lists.
const maxUndelivered = 1000

// startChain opens this process's stream and starts the loop that writes
// checkpoints.
func (a *Auditor) startChain(cfg Config, o options) {
	a.chain = newChain(streamID())
	a.signer = o.signer
	if a.signer == nil {
		a.signer = ephemeralSigner(a.log)
	}
	a.encoders.New = newEncoder
	a.every = cmp.Or(cfg.CheckpointEvents, defaultCheckpointEvents)
	a.due = make(chan struct{}, 1)
	a.stopSeal = make(chan struct{})
	a.sealLoop = make(chan struct{})
	ticks, stop := o.ticks, func() {}
	if ticks == nil {
		t := time.NewTicker(cmp.Or(cfg.CheckpointInterval, defaultCheckpointInterval))
		ticks, stop = t.C, t.Stop
	}
	go a.checkpoints(ticks, stop)
	id, _ := a.signer.current()
	a.log.Info("audit stream opened", "stream", a.chain.stream, "key_id", id)
}

// streamID names a new stream: the host (in Kubernetes, the pod) and a
// UUIDv7, unique per process start and sorting by it.
func streamID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = DefaultSource
	}
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New()
	}
	return host + "/" + id.String()
}

// commit gives e its place in the stream: after this, its content is
// fixed. The sequence number is taken here, in the caller's goroutine, so
// an event that waits in the queue or goes to the log keeps its place.
func (a *Auditor) commit(e *Event) [sha256.Size]byte {
	e.Chain = Link{}
	body, canonical, err := digest(&a.encoders, e, a.sink != nil)
	e.canonical = canonical
	if err != nil { // not with these types; its hash then covers nothing
		a.log.Error("audit event cannot be encoded", "error", err, "tool", e.Tool)
	}
	hash, since := a.chain.link(e, body)
	if since >= a.every {
		select {
		case a.due <- struct{}{}:
		default: // already signalled
		}
	}
	return hash
}

// checkpoints writes a checkpoint whenever a.every events are unsealed
// and, while any are, at every tick. An idle replica writes none.
func (a *Auditor) checkpoints(ticks <-chan time.Time, stop func()) {
	defer close(a.sealLoop)
	defer stop()
	for {
		reason := SealInterval
		select {
		case <-a.stopSeal:
			return
		case <-ticks:
		case <-a.due:
			reason = SealEvents
		}
		if a.chain.pending() > 0 {
			a.enqueue(context.Background(), a.seal(reason, false))
		}
	}
}

// seal commits and signs a checkpoint. Its signature covers its hash,
// which covers every event before it in the stream.
func (a *Auditor) seal(reason string, final bool) Event {
	e := Event{ID: uuid.NewString(), Time: time.Now().UTC(), Revision: a.revision, Outcome: outcome.Recorded,
		Checkpoint: &Checkpoint{Reason: reason, Final: final}}
	e.Checkpoint.Undelivered, e.Checkpoint.UndeliveredOmitted = a.undelivered.take()
	hash := a.commit(&e)
	id, key := a.signer.current()
	e.Chain.KeyID = id
	e.Chain.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(key, SignedMessage(id, hash)))
	return e
}

// sealFinal ends the stream with its final checkpoint, delivered within
// what is left of ctx (at most a synchronous event's deadline) and logged
// if not.
func (a *Auditor) sealFinal(ctx context.Context) {
	a.deliverSync(ctx, a.seal(SealClose, true)) // counted and, if not taken, logged
}

// undelivered collects the sequence numbers of events that went to the
// log instead of the sink, for the next checkpoint to list.
type undelivered struct {
	mu      sync.Mutex
	seqs    []uint64
	omitted int
}

func (u *undelivered) note(seq uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seqs) < maxUndelivered {
		u.seqs = append(u.seqs, seq)
	} else {
		u.omitted++
	}
}

func (u *undelivered) take() ([]uint64, int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	seqs, omitted := u.seqs, u.omitted
	u.seqs, u.omitted = nil, 0
	return seqs, omitted
}
