package verify_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/audittest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/verify"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// TestReviewOpenAcceptsWhatARunningReplicaLeaves: a replica that records
// calls concurrently (every replica does) signs its checkpoint in a
// goroutine of its own after AUDIT_CHECKPOINT_EVENTS events are unsealed,
// so more events than that can be unsealed at an instant. An export taken
// at such an instant, of a healthy replica still running, must be accepted
// by -open with -max-unsealed set to the servers' AUDIT_CHECKPOINT_EVENTS,
// as docs/security.md and the flag's help say.
// TestOpenAcceptsWhatARunningReplicaLeaves: a busy replica's trail,
// exported before its next checkpoint arrived, verifies as OPEN under
// -open: its unsealed tail can be far longer than AUDIT_CHECKPOINT_EVENTS
// (events go on being committed while the checkpoint is signed).
func TestOpenAcceptsWhatARunningReplicaLeaves(t *testing.T) {
	const every = 4
	secret, public := audittest.Key(t, "2026-07")
	signing, err := audit.SigningKey(func() ([]byte, error) { return []byte(secret), nil }, true, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	rev := telemetry.Revision{Service: "portfolio-mcp", Revision: "portfolio-mcp-00001"}
	a, err := audit.New(audit.Config{QueueSize: 1, CheckpointEvents: every}, rev, telemetry.NewLogger(&log, "warn", rev), nil, nil, signing)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				a.EmitSync(context.Background(), audit.Event{Principal: "alice", Tool: "get_quotes", Outcome: outcome.OK})
			}
		})
	}
	wg.Wait()
	a.Close(context.Background())
	lines := audittest.Lines(log.Bytes())

	// By place in the stream: the longest run of events between two
	// checkpoints, and the export of everything before the second one (what
	// the archive holds once those events are delivered and the checkpoint
	// is not yet written).
	type rec struct {
		seq  uint64
		cp   bool
		line []byte
	}
	var recs []rec
	for _, l := range lines {
		var m struct {
			Event struct {
				Checkpoint any `json:"checkpoint"`
				Chain      struct {
					Seq uint64 `json:"seq"`
				} `json:"chain"`
			} `json:"audit_event"`
		}
		if json.Unmarshal(l, &m) != nil || m.Event.Chain.Seq == 0 {
			continue
		}
		recs = append(recs, rec{m.Event.Chain.Seq, m.Event.Checkpoint != nil, l})
	}
	slices.SortFunc(recs, func(x, y rec) int { return cmp.Compare(x.seq, y.seq) })
	var prev, longest, cutSeq uint64
	for _, r := range recs {
		if r.cp {
			if r.seq-prev-1 > longest {
				longest, cutSeq = r.seq-prev-1, r.seq
			}
			prev = r.seq
		}
	}
	var export [][]byte
	for _, r := range recs {
		if r.seq < cutSeq {
			export = append(export, r.line)
		}
	}
	t.Logf("%d lines; longest unsealed run %d events (checkpoint every %d)", len(lines), longest, every)
	r := audittest.Verify(t, public, verify.Options{AllowOpen: true}, audittest.Join(export))
	if !r.OK() || r.Open() == 0 {
		t.Errorf("a running replica's trail, exported before its next checkpoint was written (%d events unsealed), under -open:\n%s\nwant OPEN",
			longest, audittest.Text(r))
	}
}
