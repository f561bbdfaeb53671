package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/audittest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/verify"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/secrets"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// keyring is a signing key for an Auditor and the public line a verifier
// gets; the secret can be rotated while the Auditor runs.
type keyring struct {
	mu     sync.Mutex
	secret string
	public []string
}

func newKeyring(t *testing.T, id string) *keyring {
	k := &keyring{}
	k.rotate(t, id)
	return k
}

func (k *keyring) rotate(t *testing.T, id string) {
	s, p := audittest.Key(t, id)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.secret, k.public = s, append(k.public, p)
}

func (k *keyring) load() ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return []byte(k.secret), nil
}

// keyFile is a verifier's key file: every key that has signed.
func (k *keyring) keyFile() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return strings.Join(k.public, "\n")
}

// chained is an Auditor signing with k, its sink rcv (none: the log).
func chained(t *testing.T, cfg audit.Config, k *keyring, log io.Writer, opts ...audit.Option) *audit.Auditor {
	t.Helper()
	signing, err := audit.SigningKey(k.load, true, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	a, err := audit.New(cfg, telemetry.Revision{Service: "portfolio-mcp", Revision: "portfolio-mcp-00007"},
		slog.New(slog.NewJSONHandler(log, nil)), prometheus.NewRegistry(), nil, append(opts, signing)...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// dump is what an archive subscriber stores: each CloudEvent in
// structured mode, one JSON line each.
func dump(t *testing.T, evs []cloudevents.Event) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, ev := range evs {
		line, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(line, '\n'))
	}
	return b.Bytes()
}

// check verifies exports with every key of k.
func check(t *testing.T, k *keyring, exports ...[]byte) *verify.Report {
	t.Helper()
	return audittest.Verify(t, k.keyFile(), verify.Options{}, exports...)
}

// TestChainHoldsAcrossAsyncAndSyncPaths: reads (the queue, two workers)
// and trades (synchronous) recorded concurrently form one gapless stream,
// sealed by count checkpoints and the final one, whatever order the sink
// received them in.
func TestChainHoldsAcrossAsyncAndSyncPaths(t *testing.T) {
	rcv := newReceiver(t)
	k := newKeyring(t, "2026-07")
	a := chained(t, audit.Config{Sink: rcv.srv.URL, QueueSize: 64, CheckpointEvents: 7}, k, io.Discard)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			if i%3 == 0 {
				if err := a.EmitSync(context.Background(), sample("place_order")); err != nil {
					t.Error(err)
				}
				return
			}
			a.Emit(context.Background(), sample("get_portfolio"))
		})
	}
	wg.Wait()
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs := rcv.all()
	r := check(t, k, dump(t, evs))
	if !r.OK() || len(r.Streams) != 1 {
		t.Fatalf("the trail does not verify:\n%s", audittest.Text(r))
	}
	s := r.Streams[0]
	if s.First != 1 || s.Last != uint64(len(evs)) || s.Sealed != s.Last || !s.Final {
		t.Errorf("stream %+v; want seq 1..%d sealed by its final checkpoint", s, len(evs))
	}
	checkpoints := 0
	for _, ev := range evs {
		if ev.Type() == audit.CheckpointEventType {
			checkpoints++
		}
		if ev.Extensions()[audit.StreamExtension] != s.ID {
			t.Errorf("event %s: extension %s = %v, want the stream", ev.ID(), audit.StreamExtension, ev.Extensions()[audit.StreamExtension])
		}
	}
	if checkpoints < 2 {
		t.Errorf("%d checkpoints for 40 events at one per 7 (and one at close)", checkpoints)
	}
}

// TestLoggedEventsAreGapsTheCheckpointExplains: an event the full queue
// sent to the log leaves a gap in the sink's archive that the next
// checkpoint names; the archive plus the log verifies.
func TestLoggedEventsAreGapsTheCheckpointExplains(t *testing.T) {
	rcv := newReceiver(t)
	rcv.holdRequests()
	var logs syncBuffer
	k := newKeyring(t, "k1")
	a := chained(t, audit.Config{Sink: rcv.srv.URL, QueueSize: 1}, k, &logs)
	overflow(a, rcv) // seq 4 goes to the log
	rcv.release()
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	archive := dump(t, rcv.all())
	r := check(t, k, archive)
	if r.OK() || len(r.Streams) != 1 || len(r.Streams[0].Problems) != 1 {
		t.Fatalf("archive alone: want one gap:\n%s", audittest.Text(r))
	}
	if p := r.Streams[0].Problems[0]; p.Kind != verify.Gap || p.Seq != 4 || !strings.Contains(p.Detail, "logged them instead of delivering them") {
		t.Errorf("gap %+v; want seq 4, explained by the checkpoint", p)
	}
	if r := check(t, k, archive, []byte(logs.String())); !r.OK() {
		t.Errorf("archive and log together do not verify:\n%s", audittest.Text(r))
	}
}

// TestCheckpointsFollowTheIntervalOnlyWhenBusy: a tick seals the events
// since the last checkpoint; a tick with nothing new writes nothing.
func TestCheckpointsFollowTheIntervalOnlyWhenBusy(t *testing.T) {
	var logs syncBuffer
	ticks := make(chan time.Time) // unbuffered: a send returns once the loop took it
	k := newKeyring(t, "k1")
	a := chained(t, audit.Config{QueueSize: 4}, k, &logs, audit.WithTicks(ticks))
	ticks <- time.Now() // idle: nothing to seal
	a.Emit(context.Background(), sample("get_portfolio"))
	ticks <- time.Now()
	ticks <- time.Now() // taken only after the first sealed; nothing new since
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var reasons []string
	in := &verify.Input{}
	if err := in.Read(strings.NewReader(logs.String()), "log"); err != nil {
		t.Fatal(err)
	}
	for _, e := range in.Entries {
		if e.Event.Checkpoint != nil {
			reasons = append(reasons, e.Event.Checkpoint.Reason)
		}
	}
	if strings.Join(reasons, " ") != "interval close" {
		t.Errorf("checkpoints %v; want one for the interval with an event, then the final one", reasons)
	}
	if r := check(t, k, []byte(logs.String())); !r.OK() {
		t.Errorf("log trail:\n%s", audittest.Text(r))
	}
}

// TestRotatedKeySignsTheNextCheckpoint: a new key in the secret signs the
// next checkpoint without a restart; a verifier needs every key that
// signed and names the one it lacks.
func TestRotatedKeySignsTheNextCheckpoint(t *testing.T) {
	var logs syncBuffer
	ticks := make(chan time.Time)
	k := newKeyring(t, "2026-06")
	a := chained(t, audit.Config{QueueSize: 4}, k, &logs, audit.WithTicks(ticks))
	a.Emit(context.Background(), sample("get_portfolio"))
	ticks <- time.Now()
	ticks <- time.Now() // the first checkpoint is written
	old := k.keyFile()
	k.rotate(t, "2026-07")
	a.Emit(context.Background(), sample("get_portfolio"))
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := check(t, k, []byte(logs.String()))
	if !r.OK() || strings.Join(r.Streams[0].Keys, ",") != "2026-06,2026-07" {
		t.Fatalf("with both keys: want OK, signed by both:\n%s", audittest.Text(r))
	}
	r = audittest.Verify(t, old, verify.Options{}, []byte(logs.String()))
	if r.OK() || !slices.ContainsFunc(r.Streams[0].Problems, func(p verify.Problem) bool { return p.Kind == verify.UnknownKey }) {
		t.Errorf("with the old key only: want an unknown key id:\n%s", audittest.Text(r))
	}
}

// TestSigningKeyInProductionAndOnALaptop: where the signing key comes from
// and what stops start-up.
func TestSigningKeyInProductionAndOnALaptop(t *testing.T) {
	secret, public := audittest.Key(t, "2026-07")
	missing := func() ([]byte, error) { return nil, secrets.ErrNotFound }
	for _, c := range []struct {
		name     string
		load     func() ([]byte, error)
		required bool
		wantErr  string // "" : starts
		wantLog  string
		hint     bool // the error says how to make a key
	}{
		{"configured", func() ([]byte, error) { return []byte(secret), nil }, true, "", `"key_id":"2026-07"`, false},
		{"missing in production", missing, true, "audit-signing-key is missing", "", true},
		{"missing on a laptop", missing, false, "", `"key_id":"ephemeral-`, false},
		{"public key only", func() ([]byte, error) { return []byte(public), nil }, false, "cannot sign", "", true},
		{"garbled", func() ([]byte, error) { return []byte("2026-07:not-base64!"), nil }, false, "not standard base64", "", true},
		{"unreadable", func() ([]byte, error) { return nil, errors.New("permission denied") }, false, "permission denied", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs syncBuffer
			_, err := audit.SigningKey(c.load, c.required, slog.New(slog.NewJSONHandler(&logs, nil)))
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("err = %v, want none", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("err = %v, want one saying %q", err, c.wantErr)
			case c.hint && !strings.Contains(err.Error(), "auditverify keygen"):
				t.Errorf("err = %v does not say how to make a key", err)
			}
			if !strings.Contains(logs.String(), c.wantLog) {
				t.Errorf("log %s; want %s", logs.String(), c.wantLog)
			}
			if strings.Contains(logs.String(), strings.SplitN(secret, ":", 2)[1]) {
				t.Error("the private key was logged")
			}
		})
	}
}

// TestCanonicalBytesSurviveReencoding: whoever re-encodes an event (the
// log's handler does not escape HTML; an archiver may reorder keys or
// indent), decoding it gives back the bytes its hash covers.
func TestCanonicalBytesSurviveReencoding(t *testing.T) {
	e := sample("place_order")
	e.Error = "price <limit> & \u2028 \xff bad byte"
	e.Args = audit.Redact(json.RawMessage(`{"qty":1e3,"limit":10.50,"note":"a<b","nested":{"z":[1,{"y":null}],"a":true}}`))
	e.Checkpoint = &audit.Checkpoint{Reason: audit.SealEvents, Undelivered: []uint64{3, 9}}
	want, err := audit.BodyDigest(e)
	if err != nil {
		t.Fatal(err)
	}
	compact, _ := json.Marshal(e)
	var generic map[string]any // keys re-sorted, numbers kept
	d := json.NewDecoder(bytes.NewReader(compact))
	d.UseNumber()
	if err := d.Decode(&generic); err != nil {
		t.Fatal(err)
	}
	reordered, _ := json.Marshal(generic)
	indented, _ := json.MarshalIndent(generic, "", "  ")
	var noHTML bytes.Buffer
	enc := json.NewEncoder(&noHTML)
	enc.SetEscapeHTML(false) // as slog's JSON handler writes
	enc.Encode(e)
	for name, b := range map[string][]byte{"json.Marshal": compact, "keys reordered": reordered, "indented": indented, "HTML unescaped": noHTML.Bytes()} {
		var got audit.Event
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		if err := d.Decode(&got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if sum, err := audit.BodyDigest(got); err != nil || sum != want {
			t.Errorf("%s: the digest changed (%v)", name, err)
		}
	}
}

// TestCheckpointSettingsNameTheVariable: out-of-range checkpoint bounds
// stop start-up with the variable's name; 0 means the default.
func TestCheckpointSettingsNameTheVariable(t *testing.T) {
	for _, c := range []struct {
		cfg  audit.Config
		want string // "" : valid
	}{
		{audit.Config{}, ""},
		{audit.Config{CheckpointEvents: 256, CheckpointInterval: 10 * time.Second}, ""},
		{audit.Config{CheckpointEvents: -1}, "AUDIT_CHECKPOINT_EVENTS"},
		{audit.Config{CheckpointEvents: 1 << 20}, "AUDIT_CHECKPOINT_EVENTS"},
		{audit.Config{CheckpointInterval: 100 * time.Millisecond}, "AUDIT_CHECKPOINT_INTERVAL"},
		{audit.Config{CheckpointInterval: time.Hour}, "AUDIT_CHECKPOINT_INTERVAL"},
	} {
		err := c.cfg.Validate()
		if (c.want == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), c.want+" ")) {
			t.Errorf("%+v: Validate = %v, want %q", c.cfg, err, c.want)
		}
	}
}

// BenchmarkCommit is the chaining step every event pays: its canonical
// bytes hashed, then its place taken under the stream's lock (every 256th
// also wakes the checkpoint loop, which signs on its own goroutine). For
// scale: one json.Marshal of the same event, which sending it as a
// CloudEvent costs anyway.
func BenchmarkCommit(b *testing.B) {
	a, err := audit.New(audit.Config{QueueSize: 1}, telemetry.Revision{Revision: "portfolio-mcp-00007"}, slog.New(slog.DiscardHandler), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close(context.Background())
	e := sample("place_order")
	e.ID, e.Time, e.Revision, e.Outcome = "0190f1e2-7c1a-7d4e-9b61-3f0c2a9d8e11", time.Now().UTC(), "portfolio-mcp-00007", outcome.OK
	size, _ := json.Marshal(e)
	b.Run("commit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ev := e
			a.Commit(&ev)
		}
		b.ReportMetric(float64(len(size)), "event-bytes")
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			json.Marshal(e)
		}
	})
}

// TestCloudEventDataIsTheEvent: the CloudEvent data built from the
// chaining step's canonical bytes is exactly what json.Marshal writes for
// the committed event, for every kind of event (a call, a step with its
// provenance, text that JSON escapes, invalid UTF-8, a checkpoint's
// signature), so the sink and the verifier see the same bytes as before
// the event was encoded only once.
func TestCloudEventDataIsTheEvent(t *testing.T) {
	rcv := newReceiver(t)
	a := chained(t, audit.Config{Sink: rcv.srv.URL, QueueSize: 8}, newKeyring(t, "2026-07"), io.Discard)
	step := sample("place_order")
	step.Action, step.Provenance = "order.intent", map[string]string{"agent": "a<b>&c", "policy_version": "rules-1"}
	escaped := sample("search_equities")
	escaped.Args = map[string]any{"query": "<script>\"x\" & \u2028 ü", "limit": 20}
	broken := sample("get_portfolio")
	broken.Error = "bad \xff byte"
	checkpoint := audit.Event{Checkpoint: &audit.Checkpoint{Reason: "close", Final: true}}
	checkpoint.Chain.KeyID, checkpoint.Chain.Sig = "2026-07", "c2ln"
	for name, e := range map[string]audit.Event{"call": sample("list_accounts"), "step": step, "escaped": escaped, "invalid utf-8": broken, "empty": {}} {
		t.Run(name, func(t *testing.T) {
			a.Commit(&e)
			got, err := a.CloudEventData(e)
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("data\n %s\nwant\n %s", got, want)
			}
		})
	}
	t.Run("checkpoint", func(t *testing.T) {
		e := checkpoint
		key := e.Chain
		a.Commit(&e)
		e.Chain.KeyID, e.Chain.Sig = key.KeyID, key.Sig // signed after the commit, as seal does
		got, _ := a.CloudEventData(e)
		if want, _ := json.Marshal(e); !bytes.Equal(got, want) {
			t.Errorf("data\n %s\nwant\n %s", got, want)
		}
	})
}
