package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
)

// The tamper-evident trail (docs/security.md, "Tamper-evident audit
// trail"). Every event this process records is a link of one hash chain,
// the process's stream: it carries the stream's id, its sequence number and
// the hash of the event before it. Every so often, and when the process
// drains, a checkpoint event joins the chain and is signed (Ed25519, see
// keys.go): its signature covers its own hash, so it vouches for every
// event before it. Events are cheap (one SHA-256 of their bytes, one of
// 100 more); signatures are rare.
//
// Why one stream per process: replicas are interchangeable and emit on
// their own, asynchronously; one stream shared by the fleet would need a
// global sequencer (Redis on every read's path) and would tie the trail's
// integrity to it. A process's stream needs one mutex. The stream id is the
// host (the pod's name) and a UUIDv7 made at start, so a restarted pod
// starts a new stream and streams sort by start time.

// CheckpointEventType is the CloudEvent type of a signed checkpoint.
const CheckpointEventType = "com.portfolio-mcp.audit.checkpoint"

// CheckpointSubject is the CloudEvent subject of a checkpoint.
const CheckpointSubject = "audit.checkpoint"

// Reasons a checkpoint was written.
const (
	SealEvents   = "events"   // AUDIT_CHECKPOINT_EVENTS events since the last one
	SealInterval = "interval" // AUDIT_CHECKPOINT_INTERVAL passed with events unsealed
	SealClose    = "close"    // the process drained: the stream's last event
)

// Link is an event's place in its stream: not part of what its hash
// covers (canonical bytes leave it out), but bound by the hash input.
type Link struct {
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"`
	// Prev is the hex hash of the event before (seq-1); 64 zeros for seq 1.
	Prev string `json:"prev"`
	// Hash is hex SHA-256(prev || seq || SHA-256(canonical bytes) || stream).
	Hash string `json:"hash"`
	// KeyID and Sig are set on checkpoints only: the Ed25519 signature
	// (standard base64) of SignedMessage(KeyID, Hash).
	KeyID string `json:"key_id,omitempty"`
	Sig   string `json:"sig,omitempty"`
}

// Checkpoint is what a checkpoint event says, inside its hashed body.
type Checkpoint struct {
	Reason string `json:"reason"` // SealEvents, SealInterval, SealClose
	// Final marks the stream's end: nothing may follow it.
	Final bool `json:"final,omitempty"`
	// Undelivered are the sequence numbers of this stream's events that
	// went to the process's log instead of the sink since the previous
	// checkpoint (queue full, sink down): gaps in the sink's archive that
	// the log export fills. At most maxUndelivered, then only counted.
	Undelivered        []uint64 `json:"undelivered,omitempty"`
	UndeliveredOmitted int      `json:"undelivered_omitted,omitempty"`
}

// GenesisPrev is the Prev of a stream's first event.
var GenesisPrev = strings.Repeat("0", 2*sha256.Size)

// LinkHash is an event's hash from the previous event's hash, its sequence
// number, the SHA-256 of its canonical bytes and its stream. Fixed-width
// fields first and the stream last, so no two inputs share an encoding.
func LinkHash(prev [sha256.Size]byte, seq uint64, body [sha256.Size]byte, stream string) [sha256.Size]byte {
	var buf [2*sha256.Size + 8 + 128]byte // on the stack for streams up to 128 bytes
	b := append(buf[:0], prev[:]...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, body[:]...)
	b = append(b, stream...)
	return sha256.Sum256(b)
}

// Canonical is the bytes an event's hash covers: the event as
// encoding/json writes it (fields in declaration order, map keys sorted,
// HTML characters escaped, numbers as recorded) without its chain member.
// A verifier decodes an exported event and encodes it again; both sides
// land on the same bytes whatever the exporter did to spacing, key order or
// escaping.
func Canonical(e Event) ([]byte, error) {
	e.Chain = Link{}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("audit: encoding event: %w", err)
	}
	return normalize(b)
}

// BodyDigest is SHA-256 of Canonical(e).
func BodyDigest(e Event) ([sha256.Size]byte, error) {
	b, err := Canonical(e)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// replacement is how encoding/json writes a byte that is not UTF-8.
var replacement = []byte(`\ufffd`)

// normalize makes b what decoding and encoding it again gives: the same
// bytes, except that encoding/json writes invalid UTF-8 as the escape
// \ufffd and a decoded U+FFFD back as the character itself. Only then (a
// quick scan) does it pay for the round trip.
func normalize(b []byte) ([]byte, error) {
	if !bytes.Contains(b, replacement) {
		return b, nil
	}
	var e Event
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&e); err != nil {
		return nil, fmt.Errorf("audit: normalizing event: %w", err)
	}
	e.Chain = Link{}
	out, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("audit: normalizing event: %w", err)
	}
	return out, nil
}

// SignedMessage is what a checkpoint's signature signs: a domain tag (the
// key signs nothing else that could be mistaken for it), the key id (a
// signature cannot be moved to another id) and the checkpoint's hash.
func SignedMessage(keyID string, hash [sha256.Size]byte) []byte {
	const tag = "portfolio-mcp audit checkpoint v1\x00"
	m := make([]byte, 0, len(tag)+len(keyID)+1+sha256.Size)
	m = append(m, tag...)
	m = append(m, keyID...)
	m = append(m, 0)
	return append(m, hash[:]...)
}

// chain is one stream: the next sequence number and the last hash, behind
// a mutex held for one small SHA-256. The order of seq is the order in
// which events were committed, whatever order the sink receives them in.
type chain struct {
	stream string

	mu      sync.Mutex
	seq     uint64
	prev    [sha256.Size]byte
	prevHex string
	since   int // events since the last checkpoint
}

func newChain(stream string) *chain {
	return &chain{stream: stream, prevHex: GenesisPrev}
}

// link gives e the next place in the stream and returns its hash and how
// many events now wait for a checkpoint.
func (c *chain) link(e *Event, body [sha256.Size]byte) (hash [sha256.Size]byte, since int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	hash = LinkHash(c.prev, c.seq, body, c.stream)
	var h [2 * sha256.Size]byte
	hex.Encode(h[:], hash[:])
	e.Chain = Link{Stream: c.stream, Seq: c.seq, Prev: c.prevHex, Hash: string(h[:])}
	c.prev, c.prevHex = hash, e.Chain.Hash
	if e.Checkpoint != nil {
		c.since = 0
	} else {
		c.since++
	}
	return hash, c.since
}

// pending is how many events wait for a checkpoint.
func (c *chain) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.since
}

// encoder writes canonical bytes into a reused buffer: hashing an event
// costs no buffer growth and no encoder allocation, and the event is
// encoded from a copy in the pool, so the caller's event (a value on its
// stack) does not escape to the heap for it.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
	ev  Event
}

func newEncoder() any {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	return e
}

// digest is BodyDigest(*e) for an event whose chain is still empty, with
// a pooled encoder. json.Encoder escapes HTML as json.Marshal does; its
// trailing newline is not part of the canonical bytes. With keep, the
// canonical bytes are also returned (a copy the caller owns), unless
// normalizing changed them.
func digest(pool *sync.Pool, e *Event, keep bool) ([sha256.Size]byte, []byte, error) {
	enc := pool.Get().(*encoder)
	defer pool.Put(enc)
	enc.buf.Reset()
	enc.ev = *e
	err := enc.enc.Encode(&enc.ev)
	enc.ev = Event{} // the pool keeps no event's data
	if err != nil {
		return [sha256.Size]byte{}, nil, fmt.Errorf("audit: encoding event: %w", err)
	}
	raw := bytes.TrimSuffix(enc.buf.Bytes(), []byte("\n"))
	b, err := normalize(raw)
	if err != nil {
		return [sha256.Size]byte{}, nil, err
	}
	var kept []byte
	if keep && len(b) == len(raw) {
		kept = bytes.Clone(b)
	}
	return sha256.Sum256(b), kept, nil
}

// data is the event's JSON as json.Marshal writes it: the canonical bytes
// kept by the chaining step with the chain member (the last field) put
// back, or, without them, a fresh encoding.
func data(e Event) ([]byte, error) {
	c := e.canonical
	if len(c) < 2 || c[len(c)-1] != '}' {
		return json.Marshal(e)
	}
	link, err := json.Marshal(e.Chain)
	if err != nil {
		return json.Marshal(e)
	}
	out := make([]byte, 0, len(c)+len(link)+10)
	out = append(out, c[:len(c)-1]...)
	if len(c) > 2 {
		out = append(out, ',')
	}
	out = append(out, `"chain":`...)
	out = append(out, link...)
	return append(out, '}'), nil
}
