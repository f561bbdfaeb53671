package verify

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
)

// Kind names what is wrong.
type Kind string

// What the verifier reports.
const (
	Malformed    Kind = "malformed"     // a record that cannot be read as an audit event
	Unchained    Kind = "unchained"     // an event with no stream or sequence number
	Edited       Kind = "edited"        // content or chain fields changed since it was written
	Inserted     Kind = "inserted"      // an event in a place the chain does not have for it
	Reordered    Kind = "reordered"     // an event moved to another place of its stream
	BrokenLink   Kind = "broken-link"   // an event that does not follow the one before it
	Gap          Kind = "gap"           // missing sequence numbers
	BadSignature Kind = "bad-signature" // a checkpoint whose signature does not verify
	UnknownKey   Kind = "unknown-key"   // a checkpoint signed by a key id not given
	Mismatch     Kind = "envelope"      // CloudEvent attributes that contradict the data
	Unsealed     Kind = "unsealed"      // events no signed checkpoint vouches for
)

// Problem is one finding.
type Problem struct {
	Kind   Kind
	Stream string
	Seq    uint64 // the place it is about; 0 when none
	Last   uint64 // the end of a range (gaps, unsealed tails); 0 when one place
	Where  string // file:line of the record, when one record
	Detail string
}

// Options adjust what counts as a problem.
type Options struct {
	// AllowOpen accepts streams without a final checkpoint (replicas still
	// running): their unsealed tail is a note, not a problem. The tail
	// itself is then not vouched for: it may have been cut, or forged (the
	// hash chain needs no key), and the report's verdict is OPEN, not OK.
	AllowOpen bool
	// MaxUnsealed, if above 0, is the longest unsealed tail AllowOpen
	// accepts. A running replica's is about AUDIT_CHECKPOINT_EVENTS events
	// (or AUDIT_CHECKPOINT_INTERVAL's worth), plus what it commits while its
	// checkpoint is signed and delivered: leave room.
	MaxUnsealed int
}

// Stream is the verdict on one stream.
type Stream struct {
	ID          string
	Events      int    // distinct places present
	First, Last uint64 // lowest and highest sequence number present
	// Sealed is the last place a valid signed checkpoint vouches for, and
	// Final whether that checkpoint ends the stream.
	Sealed     uint64
	Final      bool
	Keys       []string // key ids of the valid checkpoints
	Duplicates int      // identical copies (at-least-once delivery), ignored
	// Open counts the places after Sealed accepted under AllowOpen: not
	// vouched for by any signature.
	Open     uint64
	Problems []Problem
	Notes    []string
}

// Report is the verdict on an export.
type Report struct {
	Streams []*Stream
	// Problems not tied to a stream (unreadable records).
	Problems []Problem
	Skipped  int
}

// Open counts the places of open streams that no signed checkpoint vouches
// for (accepted under AllowOpen).
func (r *Report) Open() uint64 {
	var n uint64
	for _, s := range r.Streams {
		n += s.Open
	}
	return n
}

// OK reports whether nothing is wrong.
func (r *Report) OK() bool {
	if len(r.Problems) > 0 {
		return false
	}
	for _, s := range r.Streams {
		if len(s.Problems) > 0 {
			return false
		}
	}
	return true
}

// Verify checks every stream of in with keys. The order of records in the
// export does not matter (two delivery workers and a Broker do not keep
// it): the order that counts is the chain's.
func Verify(in *Input, keys *audit.Keys, opt Options) *Report {
	r := &Report{Problems: slices.Clone(in.Problems), Skipped: in.Skipped}
	streams := map[string][]*item{}
	for _, e := range in.Entries {
		c := e.Event.Chain
		if c.Stream == "" || c.Seq == 0 {
			r.Problems = append(r.Problems, Problem{Kind: Unchained, Where: e.Where,
				Detail: fmt.Sprintf("event %s has no stream or sequence number: written by a server without the chain, or inserted", e.Event.ID)})
			continue
		}
		streams[c.Stream] = append(streams[c.Stream], newItem(e))
	}
	for _, id := range slices.Sorted(maps.Keys(streams)) {
		v := &streamCheck{Stream: &Stream{ID: id}, keys: keys, opt: opt}
		v.run(streams[id])
		r.Streams = append(r.Streams, v.Stream)
	}
	return r
}

// item is one event with what its chain fields say and what its content
// hashes to.
type item struct {
	Entry
	hash, prev [sha256.Size]byte // as stated
	body       [sha256.Size]byte // SHA-256 of its canonical bytes
	valid      bool              // the stated hash is the hash of this content at this place
	why        string            // why not, when it is not a matter of the hash
}

func newItem(e Entry) *item {
	it := &item{Entry: e}
	c := e.Event.Chain
	var err error
	if it.body, err = audit.BodyDigest(e.Event); err != nil {
		it.why = err.Error()
		return it
	}
	h, err1 := hex.DecodeString(c.Hash)
	p, err2 := hex.DecodeString(c.Prev)
	if err1 != nil || err2 != nil || len(h) != sha256.Size || len(p) != sha256.Size {
		it.why = "its chain fields are not hex SHA-256 hashes"
		return it
	}
	copy(it.hash[:], h)
	copy(it.prev[:], p)
	it.valid = audit.LinkHash(it.prev, c.Seq, it.body, c.Stream) == it.hash
	return it
}

func (it *item) seq() uint64 { return it.Event.Chain.Seq }

// streamCheck is the state of checking one stream.
type streamCheck struct {
	*Stream
	keys   *audit.Keys
	opt    Options
	places map[uint64]*item            // the event the chain has at each place
	byHash map[[sha256.Size]byte]*item // valid events by their hash
	logged map[uint64]uint64           // seq -> the checkpoint listing it as logged, not delivered
}

func (v *streamCheck) problem(kind Kind, seq uint64, where, format string, args ...any) {
	v.Problems = append(v.Problems, Problem{Kind: kind, Stream: v.ID, Seq: seq, Where: where, Detail: fmt.Sprintf(format, args...)})
}

func (v *streamCheck) run(items []*item) {
	v.places, v.byHash = map[uint64]*item{}, map[[sha256.Size]byte]*item{}
	v.logged = map[uint64]uint64{}
	for _, it := range items {
		if it.valid {
			v.byHash[it.hash] = it
		}
	}
	v.choose(items)
	v.envelopes()
	v.checkpoints()
	v.walk()
	v.tail()
	if v.Duplicates > 0 {
		v.Notes = append(v.Notes, fmt.Sprintf("%d identical copies ignored (at-least-once delivery, or an event both delivered and logged)", v.Duplicates))
	}
	slices.SortStableFunc(v.Problems, func(a, b Problem) int { return cmp.Compare(a.Seq, b.Seq) })
}

// choose settles which event holds each place: identical copies are
// duplicates; of different events claiming one place, the one the chain
// continues from (or, failing that, one whose hash is right) holds it and
// the others are insertions.
func (v *streamCheck) choose(items []*item) {
	bySeq := map[uint64][]*item{}
	for _, it := range items {
		bySeq[it.seq()] = append(bySeq[it.seq()], it)
	}
	for _, seq := range slices.Sorted(maps.Keys(bySeq)) {
		cands := v.distinct(bySeq[seq])
		best := cands[0]
		for _, c := range cands[1:] {
			if v.score(c, bySeq[seq+1]) > v.score(best, bySeq[seq+1]) {
				best = c
			}
		}
		v.places[seq] = best
		for _, c := range cands {
			if c != best {
				v.problem(Inserted, seq, c.Where, "event %s claims seq %d, which event %s (%s) holds in the chain", c.Event.ID, seq, best.Event.ID, best.Where)
			}
		}
	}
	v.Events = len(v.places)
}

// distinct drops identical copies, counting them.
func (v *streamCheck) distinct(items []*item) []*item {
	type copyKey struct {
		chain audit.Link
		body  [sha256.Size]byte
	}
	seen := map[copyKey]bool{}
	var out []*item
	for _, it := range items {
		key := copyKey{it.Event.Chain, it.body}
		if seen[key] {
			v.Duplicates++
			continue
		}
		seen[key] = true
		out = append(out, it)
	}
	return out
}

// score ranks events claiming one place: a right hash, a link from the
// place before, and a link from the place after.
func (v *streamCheck) score(it *item, next []*item) int {
	s := 0
	if it.valid {
		s += 4
	}
	if prev := v.places[it.seq()-1]; prev != nil && prev.valid && prev.hash == it.prev {
		s += 2
	}
	if slices.ContainsFunc(next, func(n *item) bool { return n.valid && n.prev == it.hash }) {
		s++
	}
	return s
}

// envelopes checks the CloudEvent attributes against the data.
func (v *streamCheck) envelopes() {
	for seq, it := range v.places {
		env := it.Envelope
		if env == nil {
			continue
		}
		e := it.Event
		want := map[string][2]string{
			"id":                  {env.ID, e.ID},
			"type":                {env.Type, audit.TypeOf(e)},
			"subject":             {env.Subject, audit.SubjectOf(e)},
			audit.StreamExtension: {env.Stream, e.Chain.Stream},
			audit.SeqExtension:    {env.Seq, strconv.FormatUint(e.Chain.Seq, 10)},
		}
		for _, name := range slices.Sorted(maps.Keys(want)) {
			if got := want[name]; got[0] != got[1] && (got[0] != "" || name == "id" || name == "type") {
				v.problem(Mismatch, seq, it.Where, "CloudEvent attribute %s is %q; the event's data says %q", name, got[0], got[1])
			}
		}
	}
}

// checkpoints verifies every checkpoint's signature and notes what the
// valid ones vouch for and list as logged.
func (v *streamCheck) checkpoints() {
	keys := map[string]bool{}
	for _, seq := range slices.Sorted(maps.Keys(v.places)) {
		it := v.places[seq]
		cp := it.Event.Checkpoint
		if cp == nil {
			continue
		}
		c := it.Event.Chain
		switch err := v.keys.Verify(c.KeyID, c.Sig, it.hash); {
		case c.Sig == "":
			v.problem(BadSignature, seq, it.Where, "checkpoint %s carries no signature", it.Event.ID)
			continue
		case errors.Is(err, audit.ErrUnknownKey):
			v.problem(UnknownKey, seq, it.Where, "checkpoint %s is signed by key %q, which the key file does not list", it.Event.ID, c.KeyID)
			continue
		case err != nil:
			v.problem(BadSignature, seq, it.Where, "checkpoint %s: %v: the events before it were changed (the chain was rewritten), or the key file holds another key for %q", it.Event.ID, err, c.KeyID)
			continue
		case !it.valid:
			continue // signed, but its content changed: reported by walk
		}
		keys[c.KeyID] = true
		v.Sealed, v.Final = seq, cp.Final
		for _, s := range cp.Undelivered {
			v.logged[s] = seq
		}
	}
	v.Keys = slices.Sorted(maps.Keys(keys))
}

// walk follows the chain from seq 1 to the last place present: gaps,
// events whose hash is wrong, and events that do not follow their
// predecessor.
func (v *streamCheck) walk() {
	if len(v.places) == 0 {
		return
	}
	order := slices.Sorted(maps.Keys(v.places))
	v.First, v.Last = order[0], order[len(order)-1]
	// Over the places present, not every number up to the last: one forged
	// record claiming seq 2^64-1 must not keep the verifier counting.
	next := uint64(1)
	for _, seq := range order {
		if seq > next {
			v.gap(next, seq-1)
		}
		v.link(seq, v.places[seq])
		next = seq + 1
	}
}

// link checks one place against its content and its predecessor.
func (v *streamCheck) link(seq uint64, it *item) {
	switch {
	case it.why != "":
		v.problem(Edited, seq, it.Where, "event %s: %s", it.Event.ID, it.why)
	case !it.valid:
		if from, ok := v.movedFrom(it); ok {
			v.problem(Reordered, seq, it.Where, "event %s was written as seq %d and now claims seq %d", it.Event.ID, from, seq)
			return
		}
		v.problem(Edited, seq, it.Where, "event %s: its content or chain fields changed since it was written (the hash does not match)", it.Event.ID)
	case seq == 1 && it.Event.Chain.Prev != audit.GenesisPrev:
		v.problem(BrokenLink, seq, it.Where, "event %s holds seq 1 but does not start a chain: the stream's beginning was replaced", it.Event.ID)
	case seq > 1:
		prev := v.places[seq-1]
		if prev == nil || !prev.valid || prev.hash == it.prev {
			return // a gap or a bad predecessor, reported at its place
		}
		if p, ok := v.byHash[it.prev]; ok {
			v.problem(Reordered, seq, it.Where, "event %s at seq %d follows seq %d (event %s) in the chain, not seq %d", it.Event.ID, seq, p.seq(), p.Event.ID, seq-1)
			return
		}
		v.problem(BrokenLink, seq, it.Where, "event %s does not follow seq %d (event %s): one of them was inserted or replaced", it.Event.ID, seq-1, prev.Event.ID)
	}
}

// moveWindow is how far from its claimed place an event with a wrong hash
// is looked for (one SHA-256 a place).
const moveWindow = 1024

// movedFrom finds the place an event with a wrong hash was written at: a
// nearby place where its content, its prev and its hash agree. Only its
// sequence number changed: it was moved.
func (v *streamCheck) movedFrom(it *item) (uint64, bool) {
	seq := it.seq()
	lo, hi := max(seq, moveWindow+1)-moveWindow, seq+moveWindow
	if hi < seq {
		hi = math.MaxUint64 // near the top of the range: no wrapping round
	}
	for s := lo; ; s++ {
		if s != seq && audit.LinkHash(it.prev, s, it.body, v.ID) == it.hash {
			return s, true
		}
		if s == hi {
			return 0, false
		}
	}
}

// gap reports missing places, with what the checkpoints say of them.
func (v *streamCheck) gap(first, last uint64) {
	n := last - first + 1
	var logged, by uint64
	for s, cp := range v.logged { // what the checkpoints list, not the whole range
		if s >= first && s <= last {
			logged++
			by = max(by, cp)
		}
	}
	detail := fmt.Sprintf("%d event(s) missing", n)
	switch {
	case logged == n:
		detail += fmt.Sprintf(": the replica logged them instead of delivering them (checkpoint seq %d lists them); add the replica's log export", by)
	case logged > 0:
		detail += fmt.Sprintf(", %d of them logged instead of delivered (checkpoint seq %d lists them); the others were deleted", logged, by)
	default:
		detail += ": deleted from the export, or lost in delivery"
	}
	v.Problems = append(v.Problems, Problem{Kind: Gap, Stream: v.ID, Seq: first, Last: last, Detail: detail})
}

// tail judges the end of the stream: a stream is closed by a valid final
// checkpoint with nothing after it.
func (v *streamCheck) tail() {
	if v.Events == 0 {
		return
	}
	switch {
	case v.Final && v.Last > v.Sealed:
		v.Problems = append(v.Problems, Problem{Kind: Inserted, Stream: v.ID, Seq: v.Sealed + 1, Last: v.Last,
			Detail: fmt.Sprintf("events after the stream's final checkpoint (seq %d), where nothing may follow", v.Sealed)})
	case v.Final:
	default:
		what := fmt.Sprintf("no valid final checkpoint, and seq %d-%d are not vouched for by a valid signed checkpoint: the replica is still running or crashed, or the end of its stream was cut", v.Sealed+1, v.Last)
		if v.Sealed == v.Last {
			what = fmt.Sprintf("no valid final checkpoint after seq %d: the replica is still running or crashed, or the end of its stream was cut", v.Last)
		}
		limited := v.opt.MaxUnsealed > 0 && v.Last-v.Sealed > uint64(v.opt.MaxUnsealed)
		if v.opt.AllowOpen && !limited {
			v.Notes = append(v.Notes, "open: "+what)
			v.Open = v.Last - v.Sealed
			return
		}
		if v.opt.AllowOpen {
			what += fmt.Sprintf("; more than the %d unsealed events accepted (-max-unsealed)", v.opt.MaxUnsealed)
		}
		v.Problems = append(v.Problems, Problem{Kind: Unsealed, Stream: v.ID, Seq: v.Sealed + 1, Last: v.Last, Detail: what})
	}
}
