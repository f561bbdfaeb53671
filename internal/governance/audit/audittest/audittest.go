// Package audittest helps tests of the tamper-evident audit trail: signing
// keys for a test's secrets, and an attacker who edits an exported trail
// (log records, CloudEvents or bare events, one JSON line each), knowing
// the hash chain's algorithm but not the signing key.
package audittest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/verify"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// Key makes a signing key: the line for the audit-signing-key secret and
// the line for a verifier's key file.
func Key(t testing.TB, id string) (secretLine, publicLine string) {
	t.Helper()
	secretLine, publicLine, err := audit.GenerateKey(id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return secretLine, publicLine
}

// Trail is the structured log of a process (no sink) that recorded n
// calls and drained, signed with secret: checkpoints after about every 4
// events (where exactly is up to the checkpoint loop) and the final one.
// Each event is one line: seq k is the k-th.
func Trail(t testing.TB, secret string, n int) []byte {
	t.Helper()
	signing, err := audit.SigningKey(func() ([]byte, error) { return []byte(secret), nil }, true, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	rev := telemetry.Revision{Service: "portfolio-mcp", Revision: "portfolio-mcp-00001"}
	a, err := audit.New(audit.Config{QueueSize: 1, CheckpointEvents: 4}, rev, telemetry.NewLogger(&log, "warn", rev), nil, nil, signing)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		err := a.EmitSync(context.Background(), audit.Event{Principal: "alice", Tool: "get_quotes", Outcome: outcome.OK,
			Args: map[string]any{"tickers": []any{"KO"}, "n": json.Number("1e3")}, Error: "<&> " + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return log.Bytes()
}

// Verify is auditverify as a function: exports checked against a key file
// (lines "<key id>:<base64 key>").
func Verify(t testing.TB, keyFile string, opt verify.Options, exports ...[]byte) *verify.Report {
	t.Helper()
	keys, err := audit.ParseKeys([]byte(keyFile))
	if err != nil {
		t.Fatal(err)
	}
	in := &verify.Input{}
	for i, e := range exports {
		if err := in.Read(bytes.NewReader(e), "export"+strconv.Itoa(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	return verify.Verify(in, keys, opt)
}

// Text is a report as auditverify prints it.
func Text(r *verify.Report) string {
	var b strings.Builder
	r.Write(&b)
	return b.String()
}

// Lines splits an export into its non-empty lines.
func Lines(export []byte) [][]byte {
	var out [][]byte
	for _, l := range bytes.Split(export, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// Join is the export of lines.
func Join(lines [][]byte) []byte {
	return append(bytes.Join(lines, []byte("\n")), '\n')
}

// record is one line of an export, decoded, with the event inside it.
type record struct {
	line  map[string]any
	event map[string]any // inside line: data, audit_event, or line itself
}

func decode(t testing.TB, line []byte) (record, bool) {
	t.Helper()
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	if d.Decode(&m) != nil {
		return record{}, false
	}
	for _, k := range []string{"data", audit.LogKey} {
		if ev, ok := m[k].(map[string]any); ok {
			return record{line: m, event: ev}, true
		}
	}
	if m["chain"] != nil {
		return record{line: m, event: m}, true
	}
	return record{}, false
}

func (r record) chain() map[string]any {
	c, _ := r.event["chain"].(map[string]any)
	return c
}

func (r record) seq() uint64 {
	n, _ := r.chain()["seq"].(json.Number)
	s, _ := strconv.ParseUint(string(n), 10, 64)
	return s
}

// setSeq moves the record to seq, in the chain and in the CloudEvent's
// extension (a careful attacker keeps the envelope consistent).
func (r record) setSeq(seq uint64) {
	r.chain()["seq"] = json.Number(strconv.FormatUint(seq, 10))
	if _, ok := r.line[audit.SeqExtension]; ok {
		r.line[audit.SeqExtension] = strconv.FormatUint(seq, 10)
	}
}

func encode(t testing.TB, r record) []byte {
	t.Helper()
	b, err := json.Marshal(r.line)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// find returns the index and record of the event at seq (the first line
// holding it).
func find(t testing.TB, lines [][]byte, seq uint64) (int, record) {
	t.Helper()
	for i, l := range lines {
		if r, ok := decode(t, l); ok && r.seq() == seq {
			return i, r
		}
	}
	t.Fatalf("the export has no event at seq %d", seq)
	return 0, record{}
}

// Delete drops the event at seq.
func Delete(t testing.TB, lines [][]byte, seq uint64) [][]byte {
	t.Helper()
	i, _ := find(t, lines, seq)
	return append(append([][]byte(nil), lines[:i]...), lines[i+1:]...)
}

// Edit sets one field of the event at seq, leaving its chain as it was.
func Edit(t testing.TB, lines [][]byte, seq uint64, field string, value any) [][]byte {
	t.Helper()
	out := append([][]byte(nil), lines...)
	i, r := find(t, out, seq)
	r.event[field] = value
	out[i] = encode(t, r)
	return out
}

// Move makes the event at seq claim the place to instead, its content
// otherwise unchanged.
func Move(t testing.TB, lines [][]byte, seq, to uint64) [][]byte {
	t.Helper()
	out := append([][]byte(nil), lines...)
	i, r := find(t, out, seq)
	r.setSeq(to)
	out[i] = encode(t, r)
	return out
}

// Reorder swaps the places of the events at a and b: each keeps its
// content and takes the other's sequence number.
func Reorder(t testing.TB, lines [][]byte, a, b uint64) [][]byte {
	t.Helper()
	out := append([][]byte(nil), lines...)
	i, ra := find(t, out, a)
	j, rb := find(t, out, b)
	ra.setSeq(b)
	rb.setSeq(a)
	out[i], out[j] = encode(t, ra), encode(t, rb)
	return out
}

// Insert forges an event after seq: a copy of that event with a new id
// and principal, chained in properly, and every later event of the stream
// renumbered and rehashed so the chain holds again. Only the checkpoints'
// signatures, which need the key, cannot be redone.
func Insert(t testing.TB, lines [][]byte, after uint64) [][]byte {
	t.Helper()
	i, orig := find(t, lines, after)
	forged, _ := decode(t, lines[i]) // a copy: decoded anew
	id := uuid.NewString()
	forged.event["event_id"], forged.event["principal"] = id, "mallory"
	if _, ok := forged.line["specversion"]; ok {
		forged.line["id"] = id
	}

	stream, _ := orig.chain()["stream"].(string)
	type placed struct {
		line int
		r    record
	}
	var later []placed
	for k, l := range lines {
		if r, ok := decode(t, l); ok && r.chain()["stream"] == stream && r.seq() > after {
			later = append(later, placed{k, r})
		}
	}
	slices.SortStableFunc(later, func(a, b placed) int { return cmp.Compare(a.r.seq(), b.r.seq()) })

	out := append([][]byte(nil), lines...)
	seq := after + 1
	forged.setSeq(seq)
	prev := relink(t, forged, orig.chain()["hash"].(string))
	moved := map[uint64]uint64{}  // old seq -> new seq
	before := map[uint64]string{} // new seq -> the hash it follows
	for _, p := range later {
		old := p.r.seq()
		if _, done := moved[old]; !done { // copies of one event move together
			seq++
			moved[old], before[seq] = seq, prev
		}
		p.r.setSeq(moved[old])
		prev = relink(t, p.r, before[moved[old]])
		out[p.line] = encode(t, p.r)
	}
	return append(out, encode(t, forged))
}

// relink gives r the previous hash prev and its own hash again, and
// returns that hash.
func relink(t testing.TB, r record, prev string) string {
	t.Helper()
	c := r.chain()
	c["prev"] = prev
	c["hash"] = ""
	var e audit.Event
	b, err := json.Marshal(r.event)
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&e); err != nil {
		t.Fatal(err)
	}
	body, err := audit.BodyDigest(e)
	if err != nil {
		t.Fatal(err)
	}
	var p [sha256.Size]byte
	if _, err := hex.Decode(p[:], []byte(prev)); err != nil {
		t.Fatal(err)
	}
	h := audit.LinkHash(p, e.Chain.Seq, body, e.Chain.Stream)
	c["hash"] = hex.EncodeToString(h[:])
	return c["hash"].(string)
}
