package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/serving/pkg/apis/autoscaling"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	clientset "knative.dev/serving/pkg/client/clientset/versioned"

	"github.com/portfolio-mcp/portfolio-mcp/internal/prewarm"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
)

const (
	// minScaleKey is Knative's per-revision floor.
	minScaleKey = autoscaling.MinScaleAnnotationKey
	// declaredKey remembers, on a revision we raised, the min-scale it had
	// before ("" = none), so lowering restores exactly that. It is under
	// Knative's autoscaling prefix on purpose: the revision reconciler
	// copies every other Revision annotation into the pod template, and a
	// changed template rolls the revision's pods (twice a day). Knative
	// validates only the autoscaling keys it knows.
	declaredKey = autoscaling.GroupName + "/prewarm-declared-min-scale"
	// legacyDeclaredKey is where earlier versions kept it: still read, so
	// a revision raised by one is restored, and removed by the next patch
	// (which rolls its pods one last time).
	legacyDeclaredKey = "prewarm.portfolio-mcp.dev/declared-min-scale"
	// fieldManager names this tool in managedFields.
	fieldManager = "portfolio-mcp-prewarm"
)

// prewarmer raises autoscaling.knative.dev/min-scale on the Revisions that
// serve a Knative Service's traffic ahead of the market open and restores it
// after the close. It patches Revision metadata, never the Service template:
// a template change would stamp out a new Revision (a rollout) twice a day,
// while Revision annotations are mutable and the revision reconciler copies
// autoscaling annotations from the Revision to its PodAutoscaler, which the
// KPA reads (see docs/autoscaling.md).
type prewarmer struct {
	client    clientset.Interface
	namespace string
	services  []string
	cal       *calendar.Calendar
	sched     prewarm.Schedule
	dryRun    bool
	out       io.Writer
}

// reconcile brings every Service's routed revisions to the floor the
// calendar asks for at now. It is idempotent: run it as often as you like.
func (p *prewarmer) reconcile(ctx context.Context, now time.Time) error {
	warm := p.warmAt(now)
	for _, name := range p.services {
		if err := p.reconcileService(ctx, name, warm); err != nil {
			return fmt.Errorf("service %s/%s: %w", p.namespace, name, err)
		}
	}
	return nil
}

// warmAt reports whether t is in the warm window.
func (p *prewarmer) warmAt(t time.Time) bool {
	return p.sched.Warm(p.cal, t)
}

func (p *prewarmer) reconcileService(ctx context.Context, name string, warm bool) error {
	svc, err := p.client.ServingV1().Services(p.namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	routed := routedRevisions(svc)
	sel := labels.SelectorFromSet(labels.Set{serving.ServiceLabelKey: name}).String()
	revs, err := p.client.ServingV1().Revisions(p.namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return err
	}
	sort.Slice(revs.Items, func(i, j int) bool { return revs.Items[i].Name < revs.Items[j].Name })
	for i := range revs.Items {
		rev := &revs.Items[i]
		if rev.Labels[serving.ServiceLabelKey] != name {
			continue // belt and braces: never touch another Service's revisions
		}
		var patch map[string]any
		if warm && routed[rev.Name] {
			patch = raisePatch(rev, int32(p.sched.MinScale))
		} else {
			patch = restorePatch(rev)
		}
		if patch == nil {
			continue
		}
		if err := p.apply(ctx, rev, patch); err != nil {
			return err
		}
	}
	return nil
}

// routedRevisions are the revisions the Service's route sends traffic to,
// or its latest ready revision before any traffic status exists.
func routedRevisions(svc *servingv1.Service) map[string]bool {
	out := map[string]bool{}
	for _, t := range svc.Status.Traffic {
		if t.RevisionName != "" && (t.Percent == nil || *t.Percent > 0) {
			out[t.RevisionName] = true
		}
	}
	if len(out) == 0 && svc.Status.LatestReadyRevisionName != "" {
		out[svc.Status.LatestReadyRevisionName] = true
	}
	return out
}

// raisePatch sets min-scale to warm unless the revision's own floor is
// already at least that; it records the declared value once.
func raisePatch(rev *servingv1.Revision, warm int32) map[string]any {
	cur, hasCur := rev.Annotations[minScaleKey]
	declared, raised := declaredOf(rev)
	if !raised {
		declared = cur
		if n, err := strconv.ParseInt(cur, 10, 32); hasCur && err == nil && int32(n) >= warm {
			return nil // the manifest already asks for at least this much
		}
	} else if n, err := strconv.ParseInt(declared, 10, 32); err == nil && int32(n) >= warm {
		return restorePatch(rev) // the manifest now asks for more: stand back
	}
	want := strconv.Itoa(int(warm))
	_, legacy := rev.Annotations[legacyDeclaredKey]
	if raised && cur == want && !legacy {
		return nil
	}
	return annotationsPatch(map[string]any{minScaleKey: want, declaredKey: declared, legacyDeclaredKey: nil})
}

// declaredOf is the min-scale a raised revision had before (raised: it was
// raised), under the key of this version or an earlier one.
func declaredOf(rev *servingv1.Revision) (declared string, raised bool) {
	if v, ok := rev.Annotations[declaredKey]; ok {
		return v, true
	}
	v, ok := rev.Annotations[legacyDeclaredKey]
	return v, ok
}

// restorePatch puts back the declared min-scale on a revision we raised.
func restorePatch(rev *servingv1.Revision) map[string]any {
	declared, raised := declaredOf(rev)
	if !raised {
		return nil
	}
	var ms any = declared
	if declared == "" {
		ms = nil // there was none: remove ours
	}
	return annotationsPatch(map[string]any{minScaleKey: ms, declaredKey: nil, legacyDeclaredKey: nil})
}

func annotationsPatch(anns map[string]any) map[string]any {
	return map[string]any{"metadata": map[string]any{"annotations": anns}}
}

func (p *prewarmer) apply(ctx context.Context, rev *servingv1.Revision, patch map[string]any) error {
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	if p.dryRun {
		fmt.Fprintf(p.out, "dry-run: would patch revision %s/%s: %s\n", rev.Namespace, rev.Name, b)
		return nil
	}
	_, err = p.client.ServingV1().Revisions(rev.Namespace).Patch(ctx, rev.Name, types.MergePatchType, b,
		metav1.PatchOptions{FieldManager: fieldManager})
	if err != nil {
		return fmt.Errorf("patch revision %s: %w", rev.Name, err)
	}
	fmt.Fprintf(p.out, "patched revision %s/%s: %s\n", rev.Namespace, rev.Name, b)
	return nil
}
