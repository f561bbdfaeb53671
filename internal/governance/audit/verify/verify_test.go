package verify_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/audittest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/verify"
)

func kinds(r *verify.Report) []verify.Kind {
	var out []verify.Kind
	for _, p := range r.Problems {
		out = append(out, p.Kind)
	}
	for _, s := range r.Streams {
		for _, p := range s.Problems {
			out = append(out, p.Kind)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestVerifierFindsEachTampering: a clean trail passes in any order and
// with redelivered copies; each way of tampering is reported for what it
// is.
func TestVerifierFindsEachTampering(t *testing.T) {
	secret, public := audittest.Key(t, "2026-07")
	_, otherPublic := audittest.Key(t, "2026-07")
	_, strangerPublic := audittest.Key(t, "other")
	lines := audittest.Lines(audittest.Trail(t, secret, 10))
	last := uint64(len(lines)) // one line an event: the final checkpoint
	shuffled := slices.Clone(lines)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for _, c := range []struct {
		name  string
		lines [][]byte
		keys  string
		opt   verify.Options
		want  []verify.Kind // nil: OK
	}{
		{"as written", lines, public, verify.Options{}, nil},
		{"lines shuffled", shuffled, public, verify.Options{}, nil},
		{"an event delivered twice", append(slices.Clone(lines), lines[3]), public, verify.Options{}, nil},
		{"deleted", audittest.Delete(t, lines, 3), public, verify.Options{}, []verify.Kind{verify.Gap}},
		{"edited", audittest.Edit(t, lines, 7, "principal", "mallory"), public, verify.Options{}, []verify.Kind{verify.Edited}},
		{"field added", audittest.Edit(t, lines, 7, "approved_by", "mallory"), public, verify.Options{}, []verify.Kind{verify.Edited, verify.Gap}},
		{"reordered", audittest.Reorder(t, lines, 2, 3), public, verify.Options{}, []verify.Kind{verify.Reordered}},
		// What Go's decoder reads is not what a case-sensitive reader (jq)
		// reads: a name repeated in another case, or in another case only.
		{"a name repeated in another case", rename(t, lines, 7, `"principal":`, `"principal":"mallory","PRINCIPAL":`), public, verify.Options{}, []verify.Kind{verify.Gap, verify.Malformed}},
		{"a name repeated", rename(t, lines, 7, `"principal":`, `"principal":"mallory","principal":`), public, verify.Options{}, []verify.Kind{verify.Gap, verify.Malformed}},
		{"a name in another case", rename(t, lines, 7, `"principal":`, `"Principal":`), public, verify.Options{}, []verify.Kind{verify.Gap, verify.Malformed}},
		// One forged place at the top of the range: reported, not counted up to.
		{"moved to the last seq", audittest.Move(t, lines, 3, math.MaxUint64), public, verify.Options{}, []verify.Kind{verify.Edited, verify.Gap, verify.Inserted}},
		{"moved to within the move window of the last seq", audittest.Move(t, lines, 3, math.MaxUint64-1024), public, verify.Options{}, []verify.Kind{verify.Edited, verify.Gap, verify.Inserted}},
		{"inserted and the chain rebuilt", audittest.Insert(t, lines, 6), public, verify.Options{}, []verify.Kind{verify.BadSignature, verify.Unsealed}},
		{"tail cut", audittest.Delete(t, audittest.Delete(t, lines, last), last-1), public, verify.Options{}, []verify.Kind{verify.Unsealed}},
		{"tail cut, stream still open", audittest.Delete(t, lines, last), public, verify.Options{AllowOpen: true}, nil},
		{"another key under the same id", lines, otherPublic, verify.Options{}, []verify.Kind{verify.BadSignature, verify.Unsealed}},
		{"a key id the verifier lacks", lines, strangerPublic, verify.Options{}, []verify.Kind{verify.UnknownKey, verify.Unsealed}},
		{"an unchained event", append(slices.Clone(lines), []byte(`{"audit_event":{"time":"2026-01-02T15:04:05Z","principal":"mallory","tool":"place_order","class":"trade","outcome":"ok","latency_ms":1}}`)), public, verify.Options{}, []verify.Kind{verify.Unchained}},
		{"a cut line", append(slices.Clone(lines), lines[2][:len(lines[2])/2]), public, verify.Options{}, []verify.Kind{verify.Malformed}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := audittest.Verify(t, c.keys, c.opt, audittest.Join(c.lines))
			out := audittest.Text(r)
			if got := kinds(r); !slices.Equal(got, c.want) || r.OK() != (c.want == nil) {
				t.Errorf("problems %v, want %v:\n%s", got, c.want, out)
			}
			verdict := map[bool]string{true: "OK:", false: "FAIL:"}[c.want == nil]
			if c.want == nil && r.Open() > 0 {
				verdict = "OPEN:" // accepted under -open, not vouched for
			}
			if !strings.HasPrefix(lastLine(out), verdict) {
				t.Errorf("summary does not lead with the verdict:\n%s", out)
			}
		})
	}
}

// rename replaces old with new once in the line of the event at seq (the
// line must hold old).
func rename(t *testing.T, lines [][]byte, seq uint64, old, new string) [][]byte {
	t.Helper()
	out := slices.Clone(lines)
	marker := fmt.Sprintf(`"seq":%d,`, seq)
	for i, l := range out {
		if bytes.Contains(l, []byte(marker)) && bytes.Contains(l, []byte(old)) {
			out[i] = bytes.Replace(l, []byte(old), []byte(new), 1)
			return out
		}
	}
	t.Fatalf("no line of seq %d holds %s", seq, old)
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestVerifierSeparatesInterleavedStreams: two replicas' records in one
// export are two streams, each checked on its own.
func TestVerifierSeparatesInterleavedStreams(t *testing.T) {
	secret, public := audittest.Key(t, "k")
	a, b := audittest.Lines(audittest.Trail(t, secret, 3)), audittest.Lines(audittest.Trail(t, secret, 5))
	var mixed [][]byte
	for i := range max(len(a), len(b)) {
		if i < len(a) {
			mixed = append(mixed, a[i])
		}
		if i < len(b) {
			mixed = append(mixed, b[i])
		}
	}
	r := audittest.Verify(t, public, verify.Options{}, audittest.Join(mixed))
	if !r.OK() || len(r.Streams) != 2 {
		t.Fatalf("two clean streams: %+v", r)
	}
	r = audittest.Verify(t, public, verify.Options{}, audittest.Join(audittest.Delete(t, audittest.Delete(t, mixed, 2), 2)))
	bad := 0
	for _, s := range r.Streams {
		if len(s.Problems) > 0 {
			bad++
		}
	}
	if bad != 2 { // seq 2 of both streams deleted
		t.Errorf("%d streams with problems, want 2", bad)
	}
}

// TestCloudEventEnvelopeMustMatchItsData: the attributes a Trigger routes
// on are outside the hash, so the verifier holds them to the data.
func TestCloudEventEnvelopeMustMatchItsData(t *testing.T) {
	secret, public := audittest.Key(t, "k")
	in := &verify.Input{}
	if err := in.Read(bytes.NewReader(audittest.Trail(t, secret, 1)), "log"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for i, e := range in.Entries {
		ce := map[string]any{"specversion": "1.0", "id": e.Event.ID, "source": "/portfolio-mcp", "type": audit.EventType,
			"subject": e.Event.Tool, "datacontenttype": "application/json", "data": e.Event}
		if e.Event.Checkpoint != nil {
			ce["type"], ce["subject"] = audit.CheckpointEventType, audit.CheckpointSubject
		}
		if i == 0 {
			ce["subject"] = "place_order" // routed as a trade
		}
		b, _ := json.Marshal(ce)
		out.Write(append(b, '\n'))
	}
	r := audittest.Verify(t, public, verify.Options{}, out.Bytes())
	if got := kinds(r); !slices.Equal(got, []verify.Kind{verify.Mismatch}) {
		t.Errorf("problems %v, want only the envelope mismatch", got)
	}
}

// TestOpenStreamsAreNotCalledVerified: the hash chain needs no key, so
// anyone who can write to the archive can make up a stream of events with
// no checkpoint. -open accepts such a tail only as long as a running
// replica leaves one (a replica signs at least every
// AUDIT_CHECKPOINT_EVENTS events), and even then the verdict is OPEN,
// naming what no signature vouches for, never OK.
func TestOpenStreamsAreNotCalledVerified(t *testing.T) {
	_, public := audittest.Key(t, "2026-07")
	forgerSecret, _ := audittest.Key(t, "forger")                      // never in the verifier's key file
	forged := audittest.Lines(audittest.Trail(t, forgerSecret, 3))[:3] // seq 1-3, before any checkpoint

	r := audittest.Verify(t, public, verify.Options{AllowOpen: true}, audittest.Join(forged))
	if out := audittest.Text(r); !r.OK() || r.Open() != 3 || !strings.HasPrefix(lastLine(out), "OPEN: ") {
		t.Errorf("-open on three events no key signed: ok %v, open %d:\n%s\nwant accepted as OPEN with 3 events not vouched for", r.OK(), r.Open(), out)
	}
	r = audittest.Verify(t, public, verify.Options{AllowOpen: true, MaxUnsealed: 2}, audittest.Join(forged))
	if out := audittest.Text(r); r.OK() || !slices.Equal(kinds(r), []verify.Kind{verify.Unsealed}) || !strings.HasPrefix(lastLine(out), "FAIL: ") {
		t.Errorf("-open with an unsealed tail longer than a replica leaves: %v\n%s\nwant unsealed, FAIL", kinds(r), out)
	}
}
