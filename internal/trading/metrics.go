package trading

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the approval gate's Prometheus collectors:
//
//   - approvals_pending: approvals waiting for a decision, all accounts;
//   - approvals_oldest_pending_age_seconds: how long the oldest of them has
//     waited (0 when none);
//   - approvals_decided_total{decision}: decisions applied (approve,
//     reject), each once, however often it is repeated;
//   - approvals_expired_total: pending approvals found past their expiry
//     and marked expired.
//
// The gauges are set by RefreshApprovalGauges from the shared store, never
// on a scrape: every replica reports the same fleet-wide values (aggregate
// them with max, not sum). The counters count what this replica did (sum
// them).
type Metrics struct {
	pending prometheus.Gauge
	oldest  prometheus.Gauge
	decided *prometheus.CounterVec
	expired prometheus.Counter

	// refreshed, if set, is told when a refresh has ended (tests).
	refreshed func(error)
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "approvals_pending",
			Help: "Approvals waiting for a human decision, all accounts (the shared state, as last read; the same on every replica).",
		}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "approvals_oldest_pending_age_seconds",
			Help: "How long the oldest pending approval has waited, in seconds; 0 when none is pending.",
		}),
		decided: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "approvals_decided_total",
			Help: "Approval decisions applied by this replica, by decision (approve, reject); a repeated decision is counted once.",
		}, []string{"decision"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "approvals_expired_total",
			Help: "Pending approvals this replica found past their expiry and marked expired (nobody decided in time).",
		}),
	}
	for _, c := range []prometheus.Collector{m.pending, m.oldest, m.decided, m.expired} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.decided.WithLabelValues(DecisionApprove)
	m.decided.WithLabelValues(DecisionReject)
	return m, nil
}

func (m *Metrics) decidedOnce(decision string) {
	if m != nil {
		m.decided.WithLabelValues(decision).Inc()
	}
}

func (m *Metrics) expiredOnce() {
	if m != nil {
		m.expired.Inc()
	}
}

// pendingScan bounds how many entries of the pending queue one refresh
// reads: far above any real queue (MaxPending per requester), and a cap on
// what a runaway one costs. The oldest are read first, so the age stays
// right; the count shows at most this.
const pendingScan = 5000

// RefreshApprovalGaugesOnce sets approvals_pending and
// approvals_oldest_pending_age_seconds from the shared store. It reads the
// pending queue as ListPending does for an approver of every account, with
// the same upkeep: an approval past its expiry is marked expired (and
// counted in approvals_expired_total), and entries that are no longer
// pending leave the queue. If the store cannot be read the gauges keep
// their last values and the error is returned.
func (s *Service) RefreshApprovalGaugesOnce(ctx context.Context) error {
	m := s.cfg.Metrics
	if m == nil {
		return nil
	}
	err := s.refreshApprovalGauges(ctx, m)
	if m.refreshed != nil {
		m.refreshed(err)
	}
	return err
}

func (s *Service) refreshApprovalGauges(ctx context.Context, m *Metrics) error {
	as, err := s.indexed(ctx, pendingIndex, pendingScan)
	if err != nil {
		return err
	}
	pending := 0
	var oldest time.Time
	for _, a := range as {
		if a.Status != ApprovalPending {
			s.unindexDone(ctx, a)
			continue
		}
		pending++
		if oldest.IsZero() || a.CreatedAt.Before(oldest) {
			oldest = a.CreatedAt
		}
	}
	age := 0.0
	if !oldest.IsZero() {
		age = max(0, s.now().Sub(oldest).Seconds())
	}
	m.pending.Set(float64(pending))
	m.oldest.Set(age)
	return nil
}

// RefreshApprovalGauges starts refreshing the approval gauges in the
// background: at once, then every every (15s when every <= 0), until ctx
// ends or stop is called; stop returns once the loop has ended. A refresh
// that fails (the store unavailable) is logged, and the next one tries
// again. Without Metrics it starts nothing.
func (s *Service) RefreshApprovalGauges(ctx context.Context, every time.Duration) (stop func()) {
	if s.cfg.Metrics == nil {
		return func() {}
	}
	if every <= 0 {
		every = 15 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			// One refresh never outlasts its period.
			rctx, rcancel := context.WithTimeout(ctx, every)
			if err := s.RefreshApprovalGaugesOnce(rctx); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "could not refresh the approval gauges; they keep their last values", "error", err)
			}
			rcancel()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
