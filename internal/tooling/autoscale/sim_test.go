package autoscale

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// manifest builds a Service with the given template annotations (short
// keys are in autoscaling.knative.dev/) and containerConcurrency.
func manifest(cc int, anns ...string) string {
	var b strings.Builder
	b.WriteString("apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: t\n  namespace: ns\nspec:\n  template:\n    metadata:\n      annotations:\n")
	for i := 0; i+1 < len(anns); i += 2 {
		fmt.Fprintf(&b, "        autoscaling.knative.dev/%s: %q\n", anns[i], anns[i+1])
	}
	fmt.Fprintf(&b, "    spec:\n      containerConcurrency: %d\n      containers:\n        - image: example.com/app\n", cc)
	return b.String()
}

func settings(t *testing.T, cc int, anns ...string) *Settings {
	t.Helper()
	svc, err := ParseService([]byte(manifest(cc, anns...)))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := AutoscalerConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := FromService(svc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var t0 = time.Date(2026, time.March, 10, 0, 0, 0, 0, time.UTC)

// burst is n requests arriving together at each offset.
func burst(span time.Duration, n int, at ...time.Duration) *TimestampTrace {
	tr := &TimestampTrace{Label: "burst", From: t0, Span: span}
	for _, a := range at {
		for i := 0; i < n; i++ {
			tr.Offsets = append(tr.Offsets, a)
		}
	}
	return tr
}

// held is a model whose requests never finish within the test: concurrency
// stays exactly at the number of arrivals.
var held = Model{ColdStart: 500 * time.Millisecond, ServiceTime: 24 * time.Hour, ConstantServiceTime: true, Parallelism: 1000}

func simulate(t *testing.T, r Run) *Result {
	t.Helper()
	res, err := Simulate(r)
	if err != nil {
		t.Fatal(err)
	}
	// The per-second series agree with the totals (calls finishing after
	// the trace's end are in the totals only).
	var cold int64
	var slowest time.Duration
	for _, s := range res.Samples {
		cold += int64(s.ColdDelayed)
		slowest = max(slowest, s.Slowest)
	}
	if cold > res.ColdDelayed || (res.ColdDelayed > 0) != (cold > 0) || slowest > res.Max {
		t.Errorf("samples: %d cold-delayed, slowest %v; totals %d, max %v", cold, slowest, res.ColdDelayed, res.Max)
	}
	return res
}

// replicasAt is the replica count the fleet had during second sec (the
// sample taken at its end, before that instant's autoscaler tick).
func replicasAt(r *Result, sec int) int { return r.Samples[sec-1].Replicas }

func TestSettingsFromManifest(t *testing.T) {
	svc, err := LoadService("testdata/service-live.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := AutoscalerConfig(nil)
	s, err := FromService(svc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// target 10 capped by containerConcurrency 10, times 70% utilisation.
	if s.Decider.TargetValue != 7 || s.Decider.TotalValue != 10 || s.ContainerConcurrency != 10 {
		t.Errorf("target/total/cc = %v/%v/%v", s.Decider.TargetValue, s.Decider.TotalValue, s.ContainerConcurrency)
	}
	if s.MinScale != 0 || s.MaxScale != 20 || s.InitialScale != 1 {
		t.Errorf("bounds = %d..%d initial %d", s.MinScale, s.MaxScale, s.InitialScale)
	}
	if s.StableWindow != time.Minute || s.PanicWindow != 6*time.Second || s.Decider.PanicThreshold != 2 {
		t.Errorf("windows %v/%v threshold %v", s.StableWindow, s.PanicWindow, s.Decider.PanicThreshold)
	}
	// Knative defaults come through for what the manifest leaves out.
	if s.Decider.TargetBurstCapacity != 211 || s.ScaleToZeroGracePeriod != 30*time.Second || s.Decider.MaxScaleDownRate != 2 {
		t.Errorf("defaults: tbc %v grace %v msdr %v", s.Decider.TargetBurstCapacity, s.ScaleToZeroGracePeriod, s.Decider.MaxScaleDownRate)
	}
	if s.CPULimit != 1 {
		t.Errorf("CPU limit %v, want 1", s.CPULimit)
	}
	if s.Name != "portfolio-mcp-live" || !strings.Contains(s.String(), "target=7") {
		t.Errorf("String() = %s", s)
	}
}

func TestManifestErrors(t *testing.T) {
	cfg, _ := AutoscalerConfig(nil)
	for name, m := range map[string]string{
		"min above max": manifest(10, "min-scale", "5", "max-scale", "2"),
		"hpa class":     manifest(10, "class", "hpa.autoscaling.knative.dev", "metric", "cpu"),
		"bad window":    manifest(10, "window", "1s"),
	} {
		svc, err := ParseService([]byte(m))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := FromService(svc, cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ParseService([]byte("apiVersion: v1\nkind: ConfigMap\n")); err == nil {
		t.Error("ConfigMap accepted as a Service")
	}
	if _, err := ParseService([]byte(manifest(10) + "  bogusField: 1\n")); err == nil {
		t.Error("unknown field accepted")
	}
}

func TestStepScalesToTargetWithinPanicWindow(t *testing.T) {
	// 60 requests held from t=10 s; target 10 per pod; one warm pod
	// (min-scale 1); target-burst-capacity 0 keeps the activator out of the
	// path, so the stats are the pods' alone. The 6 s panic window fills at
	// one 1 s bucket per scrape: the panic average is 2*60/6 = 20 at the tick
	// at 12 s (=> 2 pods, and 2/1 ready >= the 200% threshold: panic),
	// 4*60/6 = 40 at 14 s (=> 4) and 60 at 16 s (=> 6 = 60/10).
	s := settings(t, 0, "target", "10", "target-utilization-percentage", "100", "min-scale", "1",
		"target-burst-capacity", "0")
	res := simulate(t, Run{Knative: s, Trace: burst(90*time.Second, 60, 10*time.Second), Model: held})
	want := map[int]int{10: 1, 12: 1, 13: 2, 14: 2, 15: 4, 16: 4, 17: 6}
	for sec, n := range want {
		if got := replicasAt(res, sec); got != n {
			t.Errorf("second %d: %d replicas, want %d", sec, got, n)
		}
	}
	// Panic mode never scales down, and the stable window then agrees.
	for sec := 17; sec <= 90; sec++ {
		if got := replicasAt(res, sec); got != 6 {
			t.Fatalf("second %d: %d replicas, want 6 to hold", sec, got)
		}
	}
	if res.MaxReplicas != 6 {
		t.Errorf("max replicas %d", res.MaxReplicas)
	}
}

func TestScaleFromZeroThroughActivator(t *testing.T) {
	// The same step with min-scale 0 and the activator in the path: the
	// first request is reported at once and pokes the decider, so one pod is
	// asked for at 10 s and ready at 10.5 s; the burst then fills the panic
	// window as above and the fleet reaches 60/10 = 6.
	s := settings(t, 0, "target", "10", "target-utilization-percentage", "100")
	res := simulate(t, Run{Knative: s, Trace: burst(60*time.Second, 60, 10*time.Second), Model: held})
	if got := replicasAt(res, 11); got != 1 {
		t.Errorf("second 11: %d replicas, want 1 (poked at 10 s)", got)
	}
	reached := 0
	for sec := 11; sec <= 60; sec++ {
		if replicasAt(res, sec) == 6 {
			reached = sec
			break
		}
	}
	if reached == 0 || reached > 20 {
		t.Fatalf("6 replicas reached at second %d, want by 20", reached)
	}
	if res.ScaleFromZero != 1 || res.ColdAtZero != 60 {
		t.Errorf("scale-from-zero %d, at-zero requests %d", res.ScaleFromZero, res.ColdAtZero)
	}
}

func TestIdleScalesToZeroAfterWindowAndGrace(t *testing.T) {
	// One 10 ms request at t=1 s. The stable window (60 s) forgets it at
	// t=61 s, so the decider says 0 at the tick at 62 s; the PA has been
	// active since 1.5 s, >= 60 s, so it goes Inactive and the SKS moves to
	// proxy mode (target-burst-capacity 0 had kept the activator out). The
	// scale-to-zero grace period (30 s) then runs from 62 s: zero at 92 s.
	quick := Model{ColdStart: 500 * time.Millisecond, ServiceTime: 10 * time.Millisecond, ConstantServiceTime: true, Parallelism: 1}
	s := settings(t, 0, "target-burst-capacity", "0")
	res := simulate(t, Run{Knative: s, Trace: burst(150*time.Second, 1, time.Second), Model: quick})
	if got := replicasAt(res, 92); got != 1 {
		t.Errorf("second 92: %d replicas, want 1 (grace period running)", got)
	}
	if got := replicasAt(res, 93); got != 0 {
		t.Errorf("second 93: %d replicas, want 0", got)
	}
	if res.Requests != 1 || res.ColdAtZero != 1 || res.ColdP50 < 500*time.Millisecond {
		t.Errorf("requests %d at-zero %d cold p50 %v", res.Requests, res.ColdAtZero, res.ColdP50)
	}
	// The pod lived from 1 s to 92 s.
	if res.PodSeconds < 90.9 || res.PodSeconds > 91.1 {
		t.Errorf("pod-seconds %.2f, want 91", res.PodSeconds)
	}

	// With the default target-burst-capacity the activator stays in the path,
	// so the grace period has long elapsed when the PA goes Inactive at 62 s:
	// zero at the next tick, 64 s.
	s = settings(t, 0)
	res = simulate(t, Run{Knative: s, Trace: burst(150*time.Second, 1, time.Second), Model: quick})
	if got, got2 := replicasAt(res, 64), replicasAt(res, 65); got != 1 || got2 != 0 {
		t.Errorf("seconds 64/65: %d/%d replicas, want 1/0", got, got2)
	}

	// scale-down-delay 30s: the decider reports the max of its
	// recommendations over a 30 s window of 2 s ticks (15 ticks: 62..90), so
	// it says 0 from the tick at 90 s instead of 62 s; Inactive at 90, zero at
	// the tick at 92 s.
	s = settings(t, 0, "scale-down-delay", "30s")
	res = simulate(t, Run{Knative: s, Trace: burst(150*time.Second, 1, time.Second), Model: quick})
	if got, got2 := replicasAt(res, 92), replicasAt(res, 93); got != 1 || got2 != 0 {
		t.Errorf("with scale-down-delay, seconds 92/93: %d/%d replicas, want 1/0", got, got2)
	}
}

func TestMinAndMaxScaleHonoured(t *testing.T) {
	quick := Model{ColdStart: 500 * time.Millisecond, ServiceTime: 20 * time.Second, ConstantServiceTime: true, Parallelism: 100}
	s := settings(t, 0, "target", "10", "target-utilization-percentage", "100", "min-scale", "2", "max-scale", "5")
	// 200 requests held 20 s at t=10 s: 20 pods wanted, capped at 5; then
	// idle for minutes: back down to 2 and never below.
	res := simulate(t, Run{Knative: s, Trace: burst(10*time.Minute, 200, 10*time.Second), Model: quick})
	for sec := 1; sec <= 600; sec++ {
		if n := replicasAt(res, sec); n < 2 || n > 5 {
			t.Fatalf("second %d: %d replicas outside [2,5]", sec, n)
		}
	}
	if res.MaxReplicas != 5 || replicasAt(res, 600) != 2 {
		t.Errorf("max %d, final %d; want 5 and 2", res.MaxReplicas, replicasAt(res, 600))
	}
	if res.ScaleFromZero != 0 {
		t.Errorf("scaled from zero %d times under min-scale 2", res.ScaleFromZero)
	}
}

func TestInitialScaleOnFreshRevision(t *testing.T) {
	// A new revision starts initial-scale pods, becomes Active once they are
	// ready, then (no traffic) drops to 1 until the stable window has passed
	// and to 0 after it, as the KPA does.
	s := settings(t, 0, "initial-scale", "3")
	res := simulate(t, Run{Knative: s, Trace: burst(3*time.Minute, 0), Model: held, Fresh: true})
	if got := replicasAt(res, 1); got != 3 {
		t.Errorf("second 1: %d replicas, want 3", got)
	}
	if got := replicasAt(res, 5); got != 1 {
		t.Errorf("second 5: %d replicas, want 1", got)
	}
	if got := replicasAt(res, 180); got != 0 {
		t.Errorf("second 180: %d replicas, want 0", got)
	}
}

func TestPrewarmScheduleRaisesFloor(t *testing.T) {
	s := settings(t, 0)
	floor := func(at time.Time) (int32, bool) {
		if d := at.Sub(t0); d >= 30*time.Second && d < 90*time.Second {
			return 4, true
		}
		return 0, false
	}
	res := simulate(t, Run{Knative: s, Trace: burst(4*time.Minute, 0), Model: held, MinScale: floor})
	if got := replicasAt(res, 29); got != 0 {
		t.Errorf("second 29: %d", got)
	}
	if got := replicasAt(res, 33); got != 4 {
		t.Errorf("second 33: %d replicas, want 4", got)
	}
	if got := replicasAt(res, 89); got != 4 {
		t.Errorf("second 89: %d replicas, want 4", got)
	}
	// After the window the decider's 0 applies once the PA has been active
	// for a stable window and the activator is in the path.
	if got := replicasAt(res, 240); got != 0 {
		t.Errorf("second 240: %d replicas, want 0", got)
	}
}

func TestContainerConcurrencyBuffersInActivator(t *testing.T) {
	// containerConcurrency 1, one warm pod, 3 simultaneous 1 s requests,
	// high target so no scale-up: the activator hands them out one at a
	// time: latencies 1, 2, 3 s.
	s := settings(t, 1, "min-scale", "1", "max-scale", "1")
	m := Model{ColdStart: time.Second, ServiceTime: time.Second, ConstantServiceTime: true, Parallelism: 4}
	res := simulate(t, Run{Knative: s, Trace: burst(20*time.Second, 3, 5*time.Second), Model: m})
	if res.Requests != 3 || res.Max < 2990*time.Millisecond || res.Max > 3010*time.Millisecond || res.P50 < 1990*time.Millisecond {
		t.Errorf("requests %d p50 %v max %v, want 3, ~2 s, ~3 s", res.Requests, res.P50, res.Max)
	}
	if res.ColdDelayed != 0 {
		t.Errorf("%d cold-delayed with a warm pod", res.ColdDelayed)
	}
}

func TestBackendWaitHoldsNoServer(t *testing.T) {
	// One warm pod with one server; four simultaneous calls of 10 ms server
	// time then 1 s waiting on the backends. Without containerConcurrency
	// the server work is serial (10, 20, 30, 40 ms) but the waits overlap:
	// the last call ends at 1.04 s, not 4 s.
	m := Model{ColdStart: time.Second, ServiceTime: 10 * time.Millisecond, IOTime: time.Second, ConstantServiceTime: true, Parallelism: 1}
	s := settings(t, 0, "min-scale", "1", "max-scale", "1")
	res := simulate(t, Run{Knative: s, Trace: burst(20*time.Second, 4, 5*time.Second), Model: m})
	if res.Requests != 4 || res.Max < 1035*time.Millisecond || res.Max > 1045*time.Millisecond {
		t.Errorf("requests %d max %v, want 4 and 1.04 s", res.Requests, res.Max)
	}
	// containerConcurrency 2 counts calls waiting on the backends as in
	// flight: the third and fourth wait at the activator for the first two
	// to finish (1.01 s, 1.02 s), and end at 2.02 s and 2.03 s.
	s = settings(t, 2, "min-scale", "1", "max-scale", "1")
	res = simulate(t, Run{Knative: s, Trace: burst(20*time.Second, 4, 5*time.Second), Model: m})
	if res.Max < 2025*time.Millisecond || res.Max > 2035*time.Millisecond {
		t.Errorf("with containerConcurrency 2, max %v, want 2.03 s", res.Max)
	}
}

func TestHPABaseline(t *testing.T) {
	h := DefaultHPA()
	m := Model{ColdStart: 500 * time.Millisecond, ServiceTime: 10 * time.Millisecond, ConstantServiceTime: true, Parallelism: 1}
	// 3 pods at 100 req/s each; 600 req/s from 60 s to 180 s (2x capacity),
	// then 30 req/s.
	rates := make([]float64, 15*60)
	for i := range rates {
		rates[i] = 30
		if i >= 60 && i < 180 {
			rates[i] = 600
		}
	}
	tr := &RateTrace{Label: "step", From: t0, Step: time.Second, Rates: rates}
	res := simulate(t, Run{HPA: &h, Trace: tr, Model: m, Seed: 7})
	if got := replicasAt(res, 59); got != 3 {
		t.Errorf("floor: %d replicas, want 3", got)
	}
	if res.MaxReplicas != 8 {
		t.Errorf("max %d, want the 8 cap", res.MaxReplicas)
	}
	// Scale-down waits for the 5 min stabilisation window.
	if got := replicasAt(res, 180+4*60); got != 8 {
		t.Errorf("4 min after the burst: %d replicas, want still 8", got)
	}
	if got := replicasAt(res, 15*60); got != 3 {
		t.Errorf("end: %d replicas, want the floor 3", got)
	}
	if res.ColdAtZero != 0 || res.ScaleFromZero != 0 {
		t.Error("HPA baseline scaled from zero")
	}
}

func TestDeterministic(t *testing.T) {
	s := settings(t, 10, "target", "5")
	rates := make([]float64, 600)
	for i := range rates {
		rates[i] = float64(50 + 400*(i/120%2))
	}
	tr := &RateTrace{Label: "square", From: t0, Step: time.Second, Rates: rates}
	m := Model{ColdStart: 500 * time.Millisecond, ServiceTime: 3 * time.Millisecond, Parallelism: 1}
	a := simulate(t, Run{Knative: s, Trace: tr, Model: m, Seed: 42})
	b := simulate(t, Run{Knative: s, Trace: tr, Model: m, Seed: 42})
	c := simulate(t, Run{Knative: s, Trace: tr, Model: m, Seed: 43})
	if a.Requests != b.Requests || a.PodSeconds != b.PodSeconds || a.P99 != b.P99 || a.ColdDelayed != b.ColdDelayed {
		t.Errorf("same seed, different results: %+v vs %+v", a, b)
	}
	if a.Requests == c.Requests && a.P99 == c.P99 {
		t.Error("different seeds, identical results")
	}
	if _, err := Simulate(Run{Trace: tr, Model: m}); err != ErrNoPolicy {
		t.Errorf("no policy: %v", err)
	}
}
