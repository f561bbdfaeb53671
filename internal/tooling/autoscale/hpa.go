package autoscale

import (
	"math"
	"time"
)

// HPA is a fixed-floor, CPU-style HorizontalPodAutoscaler baseline: what the
// service would cost as a plain Deployment. It follows the Kubernetes HPA
// algorithm (desired = ceil(ready * utilization / target) outside a
// tolerance, scale-up limited to max(+4 pods, +100%) per sync, scale-down
// stabilised over a window), with "CPU" being the busy fraction of the pods'
// servers. Requests go straight to a random ready pod (a ClusterIP Service);
// there is no activator and no scale to zero.
type HPA struct {
	Min, Max int
	// TargetUtilization is the target busy fraction (0.7 = 70% CPU).
	TargetUtilization float64
	// SyncPeriod is the controller's period (Kubernetes default 15 s).
	SyncPeriod time.Duration
	// MetricWindow is the utilization averaging window (metrics-server
	// resolution; default 30 s).
	MetricWindow time.Duration
	// Tolerance is the ratio band in which nothing changes (default 0.1).
	Tolerance float64
	// ScaleDownStabilization is the window whose highest recommendation a
	// scale-down may not go below (default 5 min).
	ScaleDownStabilization time.Duration
}

// DefaultHPA is the baseline the comparison uses: 3 to 8 replicas at 70%.
func DefaultHPA() HPA {
	return HPA{Min: 3, Max: 8, TargetUtilization: 0.7, SyncPeriod: 15 * time.Second,
		MetricWindow: 30 * time.Second, Tolerance: 0.1, ScaleDownStabilization: 5 * time.Minute}
}

type hpaRec struct {
	at      time.Duration
	desired int
}

type hpaState struct {
	cfg          HPA
	busy, server []float64 // per-second areas, ring
	pos, filled  int
	recs         []hpaRec
}

func newHPA(cfg HPA) *hpaState {
	n := max(int(cfg.MetricWindow/time.Second), 1)
	if cfg.SyncPeriod <= 0 {
		cfg.SyncPeriod = 15 * time.Second
	}
	return &hpaState{cfg: cfg, busy: make([]float64, n), server: make([]float64, n)}
}

func (h *hpaState) observe(busy, servers float64) {
	h.busy[h.pos], h.server[h.pos] = busy, servers
	h.pos = (h.pos + 1) % len(h.busy)
	h.filled = min(h.filled+1, len(h.busy))
}

func (h *hpaState) sync(f *sim, now time.Duration) {
	var b, sv float64
	for i := 0; i < h.filled; i++ {
		b += h.busy[i]
		sv += h.server[i]
	}
	cur := f.replicas()
	desired := cur
	if ready := f.readyPods(); sv > 0 && ready > 0 {
		ratio := (b / sv) / h.cfg.TargetUtilization
		if math.Abs(ratio-1) > h.cfg.Tolerance {
			desired = int(math.Ceil(float64(ready) * ratio))
		}
	}
	// Scale-down stabilisation: never below the highest recent recommendation.
	h.recs = append(h.recs, hpaRec{now, desired})
	keep := h.recs[:0]
	highest := desired
	for _, r := range h.recs {
		if now-r.at <= h.cfg.ScaleDownStabilization {
			keep = append(keep, r)
			highest = max(highest, r.desired)
		}
	}
	h.recs = keep
	if desired < cur {
		desired = min(highest, cur)
	}
	// Scale-up policy: at most max(4 pods, 100%) per period.
	desired = min(desired, max(cur+4, 2*cur))
	desired = min(max(desired, h.cfg.Min), h.cfg.Max)
	if desired != cur {
		f.setReplicas(desired, now)
	}
}
