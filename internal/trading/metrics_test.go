package trading_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/promtest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// approvalMetrics scrapes reg and lists the approvals_* series as
// "name{k=v} value".
func approvalMetrics(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	var out []string
	for name, mf := range promtest.Families(t, reg) {
		if !strings.HasPrefix(name, "approvals_") {
			continue
		}
		for _, s := range promtest.Series(mf) {
			labels, v, _ := strings.Cut(s, " ")
			out = append(out, name+"{"+labels+"} "+v)
		}
	}
	sort.Strings(out)
	return out
}

// measuredFixture is newFixture's service with metrics on reg.
func measuredFixture(t *testing.T, st store.Store) (*fixture, *trading.Metrics, *prometheus.Registry) {
	t.Helper()
	f := newFixture(t, st)
	reg := prometheus.NewRegistry()
	m, err := trading.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	bs := demo.New(nil).Set()
	bs.Trade = f.trade
	rules := policy.Rules{Mode: "paper", MaxOrderNotional: 1e6, ApprovalNotional: 50_000, MaxPositionWeight: 0.5}
	f.svc = trading.New(trading.Config{Rules: rules, ApprovalTTL: 30 * time.Minute, Lease: 10 * time.Second, Metrics: m},
		st, bs, f.j, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), f.clock.Now)
	return f, m, reg
}

func wantMetrics(t *testing.T, reg *prometheus.Registry, pending int, oldest float64, approved, rejected, expired int) {
	t.Helper()
	want := []string{
		fmt.Sprintf("approvals_decided_total{decision=approve} %d", approved),
		fmt.Sprintf("approvals_decided_total{decision=reject} %d", rejected),
		fmt.Sprintf("approvals_expired_total{} %d", expired),
		fmt.Sprintf("approvals_oldest_pending_age_seconds{} %g", oldest),
		fmt.Sprintf("approvals_pending{} %d", pending),
	}
	if got := approvalMetrics(t, reg); !slices.Equal(got, want) {
		t.Errorf("approval metrics:\n got %q\nwant %q", got, want)
	}
}

// TestApprovalMetrics: the gauges follow the shared queue when refreshed;
// a decision is counted once however often it is repeated; an expiry is
// counted when the approval is first found past its time.
func TestApprovalMetrics(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			f, _, reg := measuredFixture(t, open(t))
			ctx := t.Context()
			refresh := func() {
				t.Helper()
				if err := f.svc.RefreshApprovalGaugesOnce(ctx); err != nil {
					t.Fatal(err)
				}
			}
			refresh()
			wantMetrics(t, reg, 0, 0, 0, 0, 0)

			var ids []string
			for i := range 3 {
				out, err := f.svc.Place(ctx, alice, large(fmt.Sprintf("metrics-%d", i)), "")
				if err != nil || out.Status != trading.StatusPendingApproval {
					t.Fatalf("order %d: %+v %v", i, out, err)
				}
				ids = append(ids, out.Approval.ID)
				f.clock.Add(time.Minute)
			}
			// The gauges change on a refresh, not before.
			wantMetrics(t, reg, 0, 0, 0, 0, 0)
			refresh()
			wantMetrics(t, reg, 3, 180, 0, 0, 0)
			f.clock.Add(30 * time.Second)
			refresh()
			wantMetrics(t, reg, 3, 210, 0, 0, 0)

			// Decisions, each repeated, and raced: counted once each.
			var wg sync.WaitGroup
			for range 5 {
				wg.Go(func() { f.svc.Decide(ctx, bob, ids[0], trading.DecisionApprove, "ok", nil) })
			}
			wg.Wait()
			for range 3 {
				if _, err := f.svc.Decide(ctx, bob, ids[1], trading.DecisionReject, "no", nil); err != nil {
					t.Fatal(err)
				}
			}
			// Refused decisions count nothing.
			if _, err := f.svc.Decide(ctx, alice, ids[2], trading.DecisionApprove, "mine", nil); !errors.Is(err, trading.ErrFourEyes) {
				t.Fatalf("self-approval: %v", err)
			}
			if _, err := f.svc.Decide(ctx, bob, ids[1], trading.DecisionApprove, "changed my mind", nil); !errors.Is(err, trading.ErrAlreadyDecided) {
				t.Fatalf("approve a rejected approval: %v", err)
			}
			refresh()
			wantMetrics(t, reg, 1, 90, 1, 1, 0) // ids[2], created a minute before the clock's 1m30s

			// Past its expiry: the refresh finds it and marks it, once.
			f.clock.Add(31 * time.Minute)
			refresh()
			wantMetrics(t, reg, 0, 0, 1, 1, 1)
			if out, err := f.svc.Status(ctx, alice, ids[2]); err != nil || out.Status != trading.StatusExpired {
				t.Fatalf("status: %+v %v", out, err)
			}
			if _, err := f.svc.Decide(ctx, bob, ids[2], trading.DecisionApprove, "late", nil); !errors.Is(err, trading.ErrExpired) {
				t.Fatalf("late approval: %v", err)
			}
			refresh()
			wantMetrics(t, reg, 0, 0, 1, 1, 1)
		})
	}
}

// TestApprovalExpiredCountedWhereverFound: an approval any read finds past
// its time is counted once, by the read that marks it.
func TestApprovalExpiredCountedWhereverFound(t *testing.T) {
	f, _, reg := measuredFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	out, err := f.svc.Place(ctx, alice, large("expire-1"), "")
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Add(31 * time.Minute)
	for range 3 {
		if st, err := f.svc.Status(ctx, alice, out.Approval.ID); err != nil || st.Status != trading.StatusExpired {
			t.Fatalf("status: %+v %v", st, err)
		}
	}
	wantMetrics(t, reg, 0, 0, 0, 0, 1)
}

// TestApprovalGaugesRefresher: the background loop refreshes at once and
// then on every tick, and stops with stop (or its context).
func TestApprovalGaugesRefresher(t *testing.T) {
	f, m, reg := measuredFixture(t, store.NewMemory(nil))
	ctx := t.Context()
	if _, err := f.svc.Place(ctx, alice, large("loop-1"), ""); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(time.Minute)
	refreshed := make(chan error)
	m.OnRefreshed(func(err error) { refreshed <- err })
	stop := f.svc.RefreshApprovalGauges(ctx, time.Millisecond)
	for range 3 { // the first refresh, then two ticks
		if err := <-refreshed; err != nil {
			t.Fatal(err)
		}
	}
	wantMetrics(t, reg, 1, 60, 0, 0, 0)
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	for {
		select {
		case <-refreshed: // one may have been under way
			continue
		case <-stopped:
		}
		break
	}

	// Without metrics nothing starts, and stop returns at once.
	plain := newFixture(t, store.NewMemory(nil))
	plain.svc.RefreshApprovalGauges(ctx, time.Millisecond)()
	if err := plain.svc.RefreshApprovalGaugesOnce(ctx); err != nil {
		t.Fatal(err)
	}
}
