package autoscale

import (
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric/noop"
	"go.uber.org/zap"
	"knative.dev/serving/pkg/autoscaler/scaling"
)

// scaleUnknown is the KPA's "no decision yet" (kpa/scaler.go).
const scaleUnknown = -1

// tickInterval is the decider's evaluation period (scaling/multiscaler.go).
const tickInterval = 2 * time.Second

// activeCond is the PodAutoscaler's Active condition.
type activeCond int

const (
	condActivating activeCond = iota // Unknown
	condActive                       // True
	condInactive                     // False
)

// fleet is what the KPA controls: a Deployment's replicas and the pods'
// readiness.
type fleet interface {
	readyPods() int
	replicas() int
	setReplicas(n int, now time.Duration)
}

// kpa runs Knative's real decider (scaling.New: the UniScaler the
// autoscaler's MultiScaler ticks every 2 s) and mirrors, step for step, the
// parts of the KPA reconciler that turn its recommendation into replicas:
//
//   - scaler.scale and applyBounds: min/max/initial-scale bounds
//     (pkg/reconciler/autoscaling/kpa/scaler.go),
//   - scaler.handleScaleToZero: the stable-window wait while Active, then the
//     scale-to-zero grace period and last-pod retention while Inactive
//     (same file),
//   - ReconcileKind's SKS mode choice (activator in the path unless want > 0
//     and excess burst capacity >= 0) and computeActiveCondition
//     (pkg/reconciler/autoscaling/kpa/kpa.go).
//
// The reconciler code itself needs a cluster (listers, SKS, probes,
// wall-clock condition timestamps), hence the mirror; the decider is not
// mirrored but called.
type kpa struct {
	s      *Settings
	start  time.Time
	scaler scaling.UniScaler
	mc     *metricClient
	fleet  fleet
	log    *zap.SugaredLogger

	// minScale overrides Settings.MinScale over time (the pre-warm schedule
	// patching the Revision's min-scale annotation).
	minScale func(time.Time) (int32, bool)

	// Decider status.
	desired int32
	ebc     int32

	// PodAutoscaler status.
	cond        activeCond
	condSince   time.Duration
	initialized bool

	// ServerlessService mode.
	proxy      bool
	proxySince time.Duration

	// constructing is true while scaling.New runs: the pod counter then
	// reports 0, as for a new revision (see newAutoscaler's panic-mode
	// start, which reads the wall clock).
	constructing bool
}

// podCounter adapts the fleet to resources.EndpointsCounter.
type podCounter struct{ k *kpa }

func (p podCounter) ReadyCount() (int, error) {
	if p.k.constructing {
		return 0, nil
	}
	return p.k.fleet.readyPods(), nil
}

func (p podCounter) NotReadyCount() (int, error) {
	if p.k.constructing {
		return 0, nil
	}
	return p.k.fleet.replicas() - p.k.fleet.readyPods(), nil
}

func newKPA(s *Settings, start time.Time, f fleet, minScale func(time.Time) (int32, bool)) *kpa {
	k := &kpa{s: s, start: start, fleet: f, mc: newMetricClient(s), minScale: minScale,
		log: zap.NewNop().Sugar(), constructing: true}
	spec := s.Decider
	k.scaler = scaling.New(attribute.NewSet(), noop.NewMeterProvider(), "sim", s.Name, k.mc, podCounter{k}, &spec)
	k.constructing = false
	return k
}

func (k *kpa) at(d time.Duration) time.Time { return k.start.Add(d) }

// bounds is PodAutoscaler.ScaleBounds with the schedule's min-scale.
func (k *kpa) bounds(now time.Duration) (lo, hi int32) {
	lo, hi = k.s.MinScale, k.s.MaxScale
	if k.minScale != nil {
		if m, ok := k.minScale(k.at(now)); ok {
			lo = m
		}
	}
	return lo, hi
}

// tick is one MultiScaler tick: Scale, and if the result is valid, record it
// as the decider's status; then the KPA reconciles.
func (k *kpa) tick(now time.Duration) {
	sr := k.scaler.Scale(k.log, k.at(now))
	if sr.ScaleValid {
		k.desired = sr.DesiredPodCount
		k.ebc = sr.ExcessBurstCapacity
	}
	k.reconcile(now)
}

// poke mirrors MultiScaler.Poke: a stat with non-zero concurrency while the
// decider's last recommendation is 0 triggers an immediate tick.
func (k *kpa) poke(now time.Duration, concurrency float64) {
	if k.desired == 0 && concurrency != 0 {
		k.tick(now)
	}
}

// reconcile is ReconcileKind minus the API plumbing.
func (k *kpa) reconcile(now time.Duration) {
	want := k.scale(now)
	proxy := !(want > 0 && k.ebc >= 0)
	if proxy && !k.proxy {
		k.proxySince = now
	}
	k.proxy = proxy
	k.computeActiveCondition(now, want)
}

// scale mirrors scaler.scale.
func (k *kpa) scale(now time.Duration) int32 {
	desired := k.desired
	if desired < 0 && k.cond != condActivating {
		return desired
	}
	lo, hi := k.bounds(now)
	if k.s.InitialScale > 1 && !k.initialized {
		lo = max(k.s.InitialScale, lo)
	}
	desired = applyBounds(lo, hi, desired)
	desired, apply := k.handleScaleToZero(now, desired)
	if !apply {
		return desired
	}
	if int(desired) != k.fleet.replicas() {
		k.fleet.setReplicas(int(desired), now)
	}
	return desired
}

// applyBounds is kpa/scaler.go's applyBounds.
func applyBounds(lo, hi, x int32) int32 {
	if x < lo {
		return lo
	}
	if hi != 0 && x > hi {
		return hi
	}
	return x
}

// handleScaleToZero mirrors scaler.handleScaleToZero. The activator probe is
// taken to succeed as soon as the SKS is in proxy mode (no network
// programming delay), and activation never times out (pods always start).
func (k *kpa) handleScaleToZero(now time.Duration, desired int32) (int32, bool) {
	if desired != 0 {
		return desired, true
	}
	if !k.s.EnableScaleToZero {
		return 1, true
	}
	switch k.cond {
	case condActivating:
		return scaleUnknown, false
	case condActive:
		if now-k.condSince >= k.s.StableWindow {
			return desired, false // mark Inactive first
		}
		return 1, true
	default:
		if k.s.Decider.TargetBurstCapacity != -1 && !k.proxy {
			return desired, false // not yet backed by the activator
		}
		inactiveFor := now - k.condSince
		lastPod := k.s.ScaleToZeroPodRetention
		if inactiveFor >= max(k.s.ScaleToZeroGracePeriod, lastPod) {
			return desired, true
		}
		if lastPod > 0 && inactiveFor < lastPod {
			return desired, false
		}
		if now-k.proxySince >= k.s.ScaleToZeroGracePeriod {
			return desired, true
		}
		return desired, false
	}
}

// computeActiveCondition mirrors kpa.go's computeActiveCondition and
// activeThreshold.
func (k *kpa) computeActiveCondition(now time.Duration, want int32) {
	lo, _ := k.bounds(now)
	minReady := int(max(lo, 1))
	if !k.initialized {
		minReady = int(max(lo, k.s.InitialScale))
	}
	ready := k.fleet.readyPods()
	if ready >= minReady {
		k.initialized = true
	}
	switch {
	case want == 0 || minReady == 0:
		k.setCond(now, condInactive)
	case ready < minReady:
		if want > 0 || k.cond != condInactive {
			k.setCond(now, condActivating)
		} else {
			k.setCond(now, condInactive)
		}
	default:
		if want > 0 || k.cond != condInactive {
			k.setCond(now, condActive)
		}
	}
}

func (k *kpa) setCond(now time.Duration, c activeCond) {
	if k.cond != c {
		k.cond = c
		k.condSince = now
	}
}
