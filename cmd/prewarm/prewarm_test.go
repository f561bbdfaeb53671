package main

import (
	"bytes"
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stesting "k8s.io/client-go/testing"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"knative.dev/serving/pkg/client/clientset/versioned/fake"

	"github.com/portfolio-mcp/portfolio-mcp/internal/prewarm"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/knativetest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
)

const ns = "portfolio-mcp"

func revision(svc, name string, anns map[string]string) *servingv1.Revision {
	return &servingv1.Revision{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: name, Annotations: anns,
		Labels: map[string]string{serving.ServiceLabelKey: svc, serving.ConfigurationLabelKey: svc},
	}}
}

func service(name string, traffic map[string]int64) *servingv1.Service {
	s := &servingv1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for rev, pct := range traffic {
		pct := pct
		s.Status.Traffic = append(s.Status.Traffic, servingv1.TrafficTarget{RevisionName: rev, Percent: &pct})
	}
	return s
}

// fixture: live routes 100% to -00002; -00001 is old; paper is another
// Service whose revision must never be touched.
func fixture() *fake.Clientset {
	return fake.NewSimpleClientset(
		service("portfolio-mcp-live", map[string]int64{"portfolio-mcp-live-00002": 100, "portfolio-mcp-live-00001": 0}),
		revision("portfolio-mcp-live", "portfolio-mcp-live-00001", map[string]string{minScaleKey: "0"}),
		revision("portfolio-mcp-live", "portfolio-mcp-live-00002", map[string]string{minScaleKey: "0", "other": "kept"}),
		service("portfolio-mcp-paper", map[string]int64{"portfolio-mcp-paper-00001": 100}),
		revision("portfolio-mcp-paper", "portfolio-mcp-paper-00001", map[string]string{minScaleKey: "0"}),
	)
}

func newPrewarmer(t *testing.T, c *fake.Clientset) (*prewarmer, *bytes.Buffer) {
	t.Helper()
	cal, err := calendar.NYSE(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	return &prewarmer{client: c, namespace: ns, services: []string{"portfolio-mcp-live"}, cal: cal,
		sched: prewarm.Schedule{MinScale: 6, Before: 15 * time.Minute, After: 15 * time.Minute}, out: &out}, &out
}

func et(t *testing.T, s string) time.Time {
	t.Helper()
	loc, _ := time.LoadLocation("America/New_York")
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func annotations(t *testing.T, c *fake.Clientset, name string) map[string]string {
	t.Helper()
	r, err := c.ServingV1().Revisions(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Annotations
}

func patches(c *fake.Clientset) []k8stesting.PatchAction {
	var out []k8stesting.PatchAction
	for _, a := range c.Actions() {
		if p, ok := a.(k8stesting.PatchAction); ok {
			out = append(out, p)
		}
	}
	return out
}

func TestWarmsRoutedRevisionOnlyAndRestores(t *testing.T) {
	ctx := context.Background()
	c := fixture()
	p, _ := newPrewarmer(t, c)

	// Monday 2026-03-09 09:00 ET: before the window.
	if err := p.reconcile(ctx, et(t, "2026-03-09 09:00")); err != nil {
		t.Fatal(err)
	}
	if n := len(patches(c)); n != 0 {
		t.Fatalf("%d patches before the window", n)
	}

	// 09:15: warm. Only the revision taking traffic is raised, no new Revision
	// is created and the Service is not written.
	if err := p.reconcile(ctx, et(t, "2026-03-09 09:15")); err != nil {
		t.Fatal(err)
	}
	got := annotations(t, c, "portfolio-mcp-live-00002")
	if got[minScaleKey] != "6" || got[declaredKey] != "0" || got["other"] != "kept" {
		t.Fatalf("routed revision annotations = %v", got)
	}
	if a := annotations(t, c, "portfolio-mcp-live-00001"); a[minScaleKey] != "0" || a[declaredKey] != "" {
		t.Errorf("unrouted revision touched: %v", a)
	}
	if a := annotations(t, c, "portfolio-mcp-paper-00001"); a[minScaleKey] != "0" {
		t.Errorf("other Service's revision touched: %v", a)
	}
	for _, a := range c.Actions() {
		if a.GetVerb() == "create" || (a.GetResource().Resource == "services" && a.GetVerb() != "get") {
			t.Errorf("unexpected action %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
	for _, pa := range patches(c) {
		if pa.GetResource().Resource != "revisions" || pa.GetName() != "portfolio-mcp-live-00002" {
			t.Errorf("patched %s %s", pa.GetResource().Resource, pa.GetName())
		}
	}

	// Idempotent within the window.
	before := len(patches(c))
	if err := p.reconcile(ctx, et(t, "2026-03-09 12:00")); err != nil {
		t.Fatal(err)
	}
	if n := len(patches(c)) - before; n != 0 {
		t.Errorf("%d patches on a second warm run", n)
	}

	// 16:15: restored to exactly what was declared.
	if err := p.reconcile(ctx, et(t, "2026-03-09 16:15")); err != nil {
		t.Fatal(err)
	}
	got = annotations(t, c, "portfolio-mcp-live-00002")
	if got[minScaleKey] != "0" {
		t.Errorf("min-scale after the close = %q", got[minScaleKey])
	}
	if _, ok := got[declaredKey]; ok {
		t.Errorf("marker left behind: %v", got)
	}
}

func TestCalendarDrivesTheWindow(t *testing.T) {
	cases := []struct {
		at   string
		warm bool
	}{
		{"2026-03-07 10:00", false}, // Saturday
		{"2026-07-03 10:00", false}, // Independence Day observed
		{"2026-11-27 13:10", true},  // early close 13:00 + 15m
		{"2026-11-27 13:15", false},
		{"2026-03-09 09:14", false}, // first Monday of EDT: 09:30 EDT - 15m
		{"2026-03-09 09:15", true},
	}
	for _, tc := range cases {
		c := fixture()
		p, _ := newPrewarmer(t, c)
		if err := p.reconcile(context.Background(), et(t, tc.at)); err != nil {
			t.Fatal(err)
		}
		warm := annotations(t, c, "portfolio-mcp-live-00002")[minScaleKey] == "6"
		if warm != tc.warm {
			t.Errorf("%s: warm = %v, want %v", tc.at, warm, tc.warm)
		}
	}
}

func TestMissingAnnotationIsRemovedAgainAndHigherFloorKept(t *testing.T) {
	ctx := context.Background()
	c := fake.NewSimpleClientset(
		service("live", map[string]int64{"live-a": 50, "live-b": 50}),
		revision("live", "live-a", nil),                                 // no min-scale at all
		revision("live", "live-b", map[string]string{minScaleKey: "8"}), // already above the warm floor
	)
	p, _ := newPrewarmer(t, c)
	p.services = []string{"live"}
	if err := p.reconcile(ctx, et(t, "2026-03-10 10:00")); err != nil {
		t.Fatal(err)
	}
	if a := annotations(t, c, "live-a"); a[minScaleKey] != "6" {
		t.Fatalf("live-a not raised: %v", a)
	}
	if a := annotations(t, c, "live-b"); a[minScaleKey] != "8" || a[declaredKey] != "" {
		t.Fatalf("live-b changed: %v", a)
	}
	if err := p.reconcile(ctx, et(t, "2026-03-10 20:00")); err != nil {
		t.Fatal(err)
	}
	if a := annotations(t, c, "live-a"); len(a) != 0 {
		t.Fatalf("live-a after restore: %v, want no annotations", a)
	}
}

func TestTrafficMovesToNewRevision(t *testing.T) {
	ctx := context.Background()
	c := fixture()
	p, _ := newPrewarmer(t, c)
	if err := p.reconcile(ctx, et(t, "2026-03-10 09:20")); err != nil {
		t.Fatal(err)
	}
	// A deploy at 11:00 routes everything to -00003, created from the
	// template with min-scale 0.
	if _, err := c.ServingV1().Revisions(ns).Create(ctx,
		revision("portfolio-mcp-live", "portfolio-mcp-live-00003", map[string]string{minScaleKey: "0"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ServingV1().Services(ns).UpdateStatus(ctx,
		service("portfolio-mcp-live", map[string]int64{"portfolio-mcp-live-00003": 100}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := p.reconcile(ctx, et(t, "2026-03-10 11:05")); err != nil {
		t.Fatal(err)
	}
	if a := annotations(t, c, "portfolio-mcp-live-00003"); a[minScaleKey] != "6" {
		t.Errorf("new revision not raised: %v", a)
	}
	if a := annotations(t, c, "portfolio-mcp-live-00002"); a[minScaleKey] != "0" || a[declaredKey] != "" {
		t.Errorf("retired revision not restored: %v", a)
	}
}

func TestRunDryRunAndFlags(t *testing.T) {
	c := fixture()
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"-now", "2026-03-10T14:00:00Z", "-dry-run", "-min-scale", "4"}, &out, &errb, c)
	if err != nil {
		t.Fatal(err, errb.String())
	}
	if !strings.Contains(out.String(), "warm (min-scale 4)") || !strings.Contains(out.String(), `"autoscaling.knative.dev/min-scale":"4"`) {
		t.Errorf("output:\n%s", out.String())
	}
	if n := len(patches(c)); n != 0 {
		t.Errorf("dry run patched %d times", n)
	}
	// An extra holiday from the flag closes the day.
	out.Reset()
	if err := run(context.Background(), []string{"-now", "2026-03-10T14:00:00Z", "-holidays", "2026-03-10"}, &out, &errb, c); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), ": cold") || len(patches(c)) != 0 {
		t.Errorf("holiday flag ignored:\n%s", out.String())
	}
	// -hold: warm for the opening burst only.
	out.Reset()
	if err := run(context.Background(), []string{"-now", "2026-03-10T15:00:00Z", "-hold", "1h", "-dry-run"}, &out, &errb, c); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), ": cold") {
		t.Errorf("11:00 ET with -hold 1h is warm:\n%s", out.String())
	}
	if err := run(context.Background(), []string{"-min-scale", "0"}, &out, &errb, c); err == nil {
		t.Error("-min-scale 0 accepted")
	}
	if err := run(context.Background(), []string{"-services", "missing", "-now", "2026-03-10T14:00:00Z"}, &out, &errb, c); err == nil {
		t.Error("missing Service not reported")
	}
}

// TestPrewarmRollsNoPods: raising and restoring the floor leaves the
// revision's Deployment as Knative's own code builds it (its hash label
// unchanged), so the revision's pods are not replaced: only the
// PodAutoscaler reads the annotations.
func TestPrewarmRollsNoPods(t *testing.T) {
	cfg := knativetest.Config(t, nil)
	svc := knativetest.Service(t, cfg, "../../knative/service-live.yaml")
	rev := knativetest.Revision(t, cfg, svc)
	hash := func(r *servingv1.Revision) string {
		return knativetest.Deployment(t, cfg, r).Labels[serving.RevisionDeploymentHashLabelKey]
	}
	before, original := hash(rev), maps.Clone(rev.Annotations)
	raised := patched(t, rev, raisePatch(rev, 3))
	if raised.Annotations[minScaleKey] != "3" {
		t.Fatalf("raised annotations %v", raised.Annotations)
	}
	restored := patched(t, raised, restorePatch(raised))
	if h := hash(raised); h != before {
		t.Errorf("raising min-scale changes the Deployment (hash %s, was %s): the revision's pods would roll", h, before)
	}
	if h := hash(restored); h != before || !maps.Equal(restored.Annotations, original) {
		t.Errorf("restored: hash %s (was %s), annotations %v (were %v)", h, before, restored.Annotations, original)
	}
}

// patched is rev after a JSON merge patch of its annotations.
func patched(t *testing.T, rev *servingv1.Revision, patch map[string]any) *servingv1.Revision {
	t.Helper()
	out := rev.DeepCopy()
	anns, ok := patch["metadata"].(map[string]any)["annotations"].(map[string]any)
	if !ok {
		t.Fatalf("patch %v", patch)
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	for k, v := range anns {
		if v == nil {
			delete(out.Annotations, k)
		} else {
			out.Annotations[k] = v.(string)
		}
	}
	return out
}

// TestRaisedByAnEarlierVersionIsRestored: a revision an earlier version
// raised (its bookkeeping under prewarm.portfolio-mcp.dev/) is restored to
// its declared floor, and the old key removed; raised again, it moves to
// the new key.
func TestRaisedByAnEarlierVersionIsRestored(t *testing.T) {
	rev := revision("portfolio-mcp-live", "portfolio-mcp-live-00001", map[string]string{minScaleKey: "6", legacyDeclaredKey: "0", "other": "kept"})
	restored := patched(t, rev, restorePatch(rev))
	if want := map[string]string{minScaleKey: "0", "other": "kept"}; !maps.Equal(restored.Annotations, want) {
		t.Errorf("restored annotations %v, want %v", restored.Annotations, want)
	}
	raised := patched(t, rev, raisePatch(rev, 6))
	if want := map[string]string{minScaleKey: "6", declaredKey: "0", "other": "kept"}; !maps.Equal(raised.Annotations, want) {
		t.Errorf("raised again: annotations %v, want %v", raised.Annotations, want)
	}
}
