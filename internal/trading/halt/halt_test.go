package halt_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
)

type journal struct {
	steps []audit.Step
	fail  bool
	// during, if set, runs inside Record (once taken): something happening
	// while a step is being journaled.
	during func(audit.Step)
}

func (j *journal) Record(_ context.Context, s audit.Step) error {
	if j.fail {
		return errors.New("sink down")
	}
	if f := j.during; f != nil {
		j.during = nil
		f(s)
	}
	j.steps = append(j.steps, s)
	return nil
}

// TestRaceLostReleaseIsSuperseded: two officers release one halt at once.
// Each release is journaled before it takes effect; the one that finds the
// halt gone is followed by a record that it did not take effect.
func TestRaceLostReleaseIsSuperseded(t *testing.T) {
	j := &journal{}
	sw := halt.New(store.NewMemory(nil), j, nil, nil)
	ctx := t.Context()
	if _, err := sw.Engage(ctx, "risk", halt.Global, "", "incident"); err != nil {
		t.Fatal(err)
	}
	j.during = func(audit.Step) { // bob releases while alice's release is journaled
		if _, err := sw.Release(ctx, "bob", halt.Global, "", "resolved"); err != nil {
			t.Error(err)
		}
	}
	if _, err := sw.Release(ctx, "alice", halt.Global, "", "resolved"); !errors.Is(err, halt.ErrNotEngaged) {
		t.Fatalf("alice's release: %v, want ErrNotEngaged", err)
	}
	var got []string
	for _, s := range j.steps {
		got = append(got, s.Principal+" "+s.Action)
	}
	want := []string{"risk halt.engaged", "bob halt.released", "alice halt.released", "alice halt.released.superseded"}
	if !slices.Equal(got, want) {
		t.Errorf("journal %q, want %q", got, want)
	}
}

// down is a store that cannot be reached.
type down struct{ store.Store }

func (down) Get(context.Context, string) ([]byte, int64, error) { return nil, 0, store.ErrUnavailable }

func TestScopes(t *testing.T) {
	ctx := context.Background()
	order := halt.Order{Account: "ACC-1", Principal: "alice", Agent: "agent-a"}
	tests := []struct {
		scope, target string
		stops         bool
	}{
		{halt.Global, "", true},
		{halt.Account, "ACC-1", true},
		{halt.Account, "ACC-2", false},
		{halt.Principal, "alice", true},
		{halt.Principal, " Alice ", true}, // four eyes folds subjects the same way
		{halt.Principal, "bob", false},
		{halt.Agent, "agent-a", true},
		{halt.Agent, "agent-b", false},
	}
	for _, tt := range tests {
		t.Run(tt.scope+"/"+tt.target, func(t *testing.T) {
			sw := halt.New(store.NewMemory(nil), &journal{}, nil, nil)
			if _, err := sw.Engage(ctx, "risk", tt.scope, tt.target, "runaway agent"); err != nil {
				t.Fatal(err)
			}
			err := sw.Check(ctx, order)
			var h *halt.Halted
			if got := errors.As(err, &h); got != tt.stops {
				t.Fatalf("Check = %v, want stopped %v", err, tt.stops)
			}
			if tt.stops && (!strings.Contains(err.Error(), "runaway agent") || !strings.Contains(err.Error(), tt.scope)) {
				t.Errorf("message %q does not name the scope and reason", err)
			}
		})
	}
}

func TestEngageReleaseJournaled(t *testing.T) {
	ctx := context.Background()
	j := &journal{}
	sw := halt.New(store.NewMemory(nil), j, nil, nil)
	for _, bad := range [][3]string{{"galaxy", "", "r"}, {halt.Global, "x", "r"}, {halt.Account, "", "r"}, {halt.Global, "", " "}} {
		if _, err := sw.Engage(ctx, "risk", bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("Engage%q accepted", bad)
		}
	}
	if _, err := sw.Engage(ctx, "risk", halt.Account, "ACC-1", "fat finger storm"); err != nil {
		t.Fatal(err)
	}
	st, err := sw.Engage(ctx, "risk", halt.Account, "ACC-1", "still investigating")
	if err != nil || len(st.Halts) != 1 || st.Halts[0].Reason != "still investigating" {
		t.Fatalf("re-engage: %+v %v", st, err)
	}
	if _, err := sw.Release(ctx, "risk2", halt.Agent, "nobody", "oops"); !errors.Is(err, halt.ErrNotEngaged) {
		t.Errorf("release of nothing: %v", err)
	}
	if st, err := sw.Release(ctx, "risk2", halt.Account, "ACC-1", "cleared"); err != nil || len(st.Halts) != 0 {
		t.Fatalf("release: %+v %v", st, err)
	}
	if err := sw.Check(ctx, halt.Order{Account: "ACC-1"}); err != nil {
		t.Errorf("after release: %v", err)
	}
	for i, s := range j.steps {
		id, _, _ := strings.Cut(s.Detail, " ")
		if !strings.HasPrefix(id, "HALT-") {
			t.Errorf("step %d does not name its history entry: %q", i, s.Detail)
		}
		j.steps[i].Detail = strings.TrimPrefix(s.Detail, id+" ")
	}
	var actions []string
	for _, s := range j.steps {
		actions = append(actions, s.Action+" "+s.Principal+" "+s.Detail)
	}
	want := []string{"halt.engaged risk account ACC-1: fat finger storm", "halt.engaged risk account ACC-1: still investigating", "halt.released risk2 account ACC-1: cleared"}
	if strings.Join(actions, "|") != strings.Join(want, "|") {
		t.Errorf("journal %q, want %q", actions, want)
	}
	h, err := sw.History(ctx, 10)
	if err != nil || len(h) != 3 || h[0].Action != "released" || h[2].Reason != "fat finger storm" {
		t.Errorf("history newest first: %+v %v", h, err)
	}
}

// TestFailSafe: an unreadable switch halts trading; a halt engages even if
// the audit trail cannot record it, but a release does not.
func TestFailSafe(t *testing.T) {
	ctx := context.Background()
	sw := halt.New(down{store.NewMemory(nil)}, &journal{}, nil, nil)
	if err := sw.Check(ctx, halt.Order{Account: "ACC-1"}); !errors.Is(err, halt.ErrUnknown) || !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("unreadable switch: %v, want ErrUnknown", err)
	}
	j := &journal{fail: true}
	sw = halt.New(store.NewMemory(nil), j, nil, nil)
	if _, err := sw.Engage(ctx, "risk", halt.Global, "", "r"); err != nil {
		t.Fatalf("a halt must engage without the audit trail: %v", err)
	}
	if _, err := sw.Release(ctx, "risk", halt.Global, "", "r"); err == nil {
		t.Fatal("released without a journal entry")
	}
	if st, _ := sw.State(ctx); len(st.Halts) != 1 {
		t.Errorf("unjournaled release took effect: %+v", st)
	}
}

// TestStoppedSince: an order that passed the switch (its mark, and its
// time) is stopped by a halt engaged now, and by one engaged after it and
// released since, in its scope only; not by one released before it passed,
// however close the clocks. An order without a mark (recorded before marks
// were kept) is compared by time, with a few seconds to spare for
// replicas' clocks. Once more releases came than the switch keeps, an order
// that passed before the oldest kept one is stopped (nothing on record
// says no halt covered it).
func TestStoppedSince(t *testing.T) {
	now := time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	sw := halt.New(store.NewMemory(nil), &journal{}, nil, clock)
	ctx := t.Context()
	acc1, acc2 := halt.Order{Account: "ACC-1"}, halt.Order{Account: "ACC-2"}
	engage := func(target, reason string) {
		t.Helper()
		if _, err := sw.Engage(ctx, "rita", halt.Account, target, reason); err != nil {
			t.Fatal(err)
		}
	}
	release := func(target string) {
		t.Helper()
		if _, err := sw.Release(ctx, "ron", halt.Account, target, "done"); err != nil {
			t.Fatal(err)
		}
	}
	// An earlier halt, released just before the order passed.
	engage("ACC-1", "earlier")
	release("ACC-1")
	pass, err := sw.CheckPass(ctx, acc1)
	if err != nil || pass.Mark != 1 {
		t.Fatalf("pass %+v %v, want mark 1", pass, err)
	}
	mark := halt.Pass{Mark: pass.Mark} // as kept with an order
	passed := now
	now = now.Add(time.Minute)
	if err := sw.StoppedSince(ctx, acc1, mark, passed); err != nil {
		t.Errorf("a halt released before the order passed: %v", err)
	}
	engage("ACC-1", "runaway")
	var h *halt.Halted
	if err := sw.StoppedSince(ctx, acc1, mark, passed); !errors.As(err, &h) || !h.ReleasedAt.IsZero() {
		t.Errorf("engaged now: %v", err)
	}
	if _, err := sw.CheckPass(ctx, acc1); !errors.As(err, &h) {
		t.Errorf("CheckPass while engaged: %v", err)
	}
	if err := sw.StoppedSince(ctx, acc1, pass, passed); !errors.As(err, &h) {
		t.Errorf("engaged since the pass, its version stale: %v", err)
	}
	now = now.Add(time.Minute)
	release("ACC-1")
	if err := sw.StoppedSince(ctx, acc1, mark, passed); !errors.As(err, &h) || !h.ReleasedAt.Equal(now) || !strings.Contains(err.Error(), "runaway") {
		t.Errorf("engaged after the order passed, released since: %v", err)
	}
	if err := sw.StoppedSince(ctx, acc2, mark, passed); err != nil {
		t.Errorf("another account: %v", err)
	}
	if err := sw.Check(ctx, acc1); err != nil {
		t.Errorf("Check after the release: %v", err)
	}
	// Without a mark: by time, with 5 s to spare.
	if err := sw.StoppedSince(ctx, acc1, halt.Pass{}, now.Add(4*time.Second)); err == nil {
		t.Error("no mark, passed 4 s after the release: not stopped")
	}
	if err := sw.StoppedSince(ctx, acc1, halt.Pass{}, now.Add(time.Minute)); err != nil {
		t.Errorf("no mark, passed a minute after the release: %v", err)
	}
	// 64 more releases on ACC-2: the ACC-1 ones drop off the list.
	for range 64 {
		now = now.Add(time.Minute)
		engage("ACC-2", "drill")
		release("ACC-2")
	}
	if err := sw.StoppedSince(ctx, acc1, mark, passed); !errors.Is(err, halt.ErrReleasesForgotten) {
		t.Errorf("passed before releases no longer on record: %v", err)
	}
	late, err := sw.CheckPass(ctx, acc1)
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.StoppedSince(ctx, acc1, halt.Pass{Mark: late.Mark}, now); err != nil {
		t.Errorf("passed after every release: %v", err)
	}
	if err := sw.StoppedSince(ctx, acc1, late, now.Add(-time.Hour)); err != nil {
		t.Errorf("the switch unchanged since the pass (its version): %v", err)
	}
}

// TestReleaseAcrossAnOlderReplicasWrite: while an officer's release is
// being journaled, an older replica rewrites the state, dropping the halt's
// number. It is still the engagement the officer read: released, not
// answered "engaged again meanwhile".
func TestReleaseAcrossAnOlderReplicasWrite(t *testing.T) {
	st := store.NewMemory(nil)
	j := &journal{}
	sw := halt.New(st, j, nil, nil)
	ctx := t.Context()
	if _, err := sw.Engage(ctx, "risk", halt.Global, "", "incident"); err != nil {
		t.Fatal(err)
	}
	j.during = func(s audit.Step) { // an older replica's write of the state
		raw, ver, err := st.Get(ctx, "halt:state")
		if err != nil {
			t.Fatal(err)
		}
		var old struct {
			Halts []json.RawMessage `json:"halts"`
		}
		json.Unmarshal(raw, &old)
		var hs []halt.Halt
		for _, r := range old.Halts {
			var h halt.Halt
			json.Unmarshal(r, &h)
			h.Seq = 0 // the older Halt has no seq
			hs = append(hs, h)
		}
		raw, _ = json.Marshal(map[string]any{"halts": hs})
		if _, err := st.Update(ctx, "halt:state", raw, ver, 0); err != nil {
			t.Fatal(err)
		}
	}
	_, err := sw.Release(ctx, "alice", halt.Global, "", "resolved")
	s, _ := sw.State(ctx)
	t.Logf("release: %v; engaged now: %+v", err, s.Halts)
	if errors.Is(err, halt.ErrChanged) {
		t.Errorf("the halt was never released nor engaged again, yet the release answered ErrChanged: %v", err)
	}
}
