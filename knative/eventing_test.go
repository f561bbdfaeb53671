package knative

import (
	"context"
	"encoding/json"
	"fmt"
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	eventingconfig "knative.dev/eventing/pkg/apis/config"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/apis/feature"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	"knative.dev/eventing/pkg/eventfilter"
	"knative.dev/eventing/pkg/eventfilter/subscriptionsapi"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
)

// Event contract with the rest of the system.
const (
	// approvalEventType is the CloudEvents type of an approval decision.
	approvalEventType = "com.portfolio-mcp.approval.decided"
	// approvalPath is where the server receives approval decisions.
	approvalPath = "/events/approvals"
)

// eventingObject is what the eventing webhook needs of an object.
type eventingObject interface {
	apis.Defaultable
	apis.Validatable
}

// eventingContext is the context Knative Eventing's webhook works in on a
// fresh install: the config-br-defaults and config-features ConfigMaps the
// eventing release itself ships (read from its module), parsed by its own
// constructors.
func eventingContext(t *testing.T) context.Context {
	t.Helper()
	pkg, err := build.Import("knative.dev/eventing/config/core/configmaps", manifestDir, build.FindOnly)
	if err != nil {
		t.Fatalf("locating Knative Eventing's shipped ConfigMaps: %v", err)
	}
	read := func(file string) *corev1.ConfigMap {
		b, err := os.ReadFile(filepath.Join(pkg.Dir, file))
		if err != nil {
			t.Fatal(err)
		}
		var cm corev1.ConfigMap
		if err := decodeStrict(b, &cm); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		return &cm
	}
	defaults, err := eventingconfig.NewDefaultsConfigFromConfigMap(read("default-broker.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	flags, err := feature.NewFlagsConfigFromConfigMap(read("features.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := eventingconfig.ToContext(context.Background(), &eventingconfig.Config{Defaults: defaults})
	return apis.WithinCreate(feature.ToContext(ctx, flags))
}

// admitEventing decodes d strictly into obj, then defaults and validates
// it with knative.dev/eventing's own code, as its webhook does on create.
func admitEventing(ctx context.Context, d document, obj eventingObject) error {
	if err := decodeStrict(d.Raw, obj); err != nil {
		return fmt.Errorf("%s: %w", d.Source, err)
	}
	obj.SetDefaults(ctx)
	return admissionError(d.Source, "Knative Eventing", obj.Validate(ctx))
}

// eventingObjects admits every Broker, Trigger and SinkBinding in docs.
func eventingObjects(t *testing.T, docs []document) (map[string]*eventingv1.Broker, map[string]*eventingv1.Trigger, map[string]*sourcesv1.SinkBinding) {
	t.Helper()
	brokers := map[string]*eventingv1.Broker{}
	triggers := map[string]*eventingv1.Trigger{}
	bindings := map[string]*sourcesv1.SinkBinding{}
	ctx := eventingContext(t)
	for _, d := range docs {
		var err error
		switch d.GVK() {
		case eventingv1.SchemeGroupVersion.WithKind("Broker"):
			b := new(eventingv1.Broker)
			brokers[d.Name] = b
			err = admitEventing(ctx, d, b)
		case eventingv1.SchemeGroupVersion.WithKind("Trigger"):
			tr := new(eventingv1.Trigger)
			triggers[d.Name] = tr
			err = admitEventing(ctx, d, tr)
		case sourcesv1.SchemeGroupVersion.WithKind("SinkBinding"):
			sb := new(sourcesv1.SinkBinding)
			bindings[d.Name] = sb
			err = admitEventing(ctx, d, sb)
		}
		if err != nil {
			t.Error(err)
		}
	}
	return brokers, triggers, bindings
}

// TestEventingWiring admits the Brokers, SinkBindings and Triggers through
// Knative Eventing's defaulting and validation, then follows each mode's
// events: audit events from its Service go to its own Broker, tagged with
// the mode; approval decisions, and only those, come back from that Broker
// to that Service's approval path.
func TestEventingWiring(t *testing.T) {
	docs := loadManifests(t, manifestDir)
	svcs := objectsOf[servingv1.Service](t, resolved(docs), servingv1.SchemeGroupVersion.WithKind("Service"))
	brokers, triggers, bindings := eventingObjects(t, docs)

	for _, mode := range modes {
		svc := serviceName(mode)
		var binding *sourcesv1.SinkBinding
		for _, b := range bindings {
			s := b.Spec.Subject
			if s.APIVersion == servingv1.SchemeGroupVersion.String() && s.Kind == "Service" && s.Name == svc {
				if binding != nil {
					t.Errorf("two SinkBindings bind %s; K_SINK would flip between them", svc)
				}
				binding = b
			}
		}
		if binding == nil {
			t.Fatalf("no SinkBinding gives %s its K_SINK", svc)
		}
		if svcs[svc] == nil {
			t.Fatalf("SinkBinding %s binds %s, which the manifests do not create", binding.Name, svc)
		}
		sink := binding.Spec.Sink.Ref
		if sink == nil || sink.Kind != "Broker" || brokers[sink.Name] == nil || !strings.Contains(sink.Name, mode) {
			t.Errorf("SinkBinding %s sends %s's audit events to %+v; want this mode's Broker of these manifests", binding.Name, svc, sink)
		}
		if ov := binding.Spec.CloudEventOverrides; ov == nil || ov.Extensions["tradingmode"] != mode {
			t.Errorf("SinkBinding %s: ceOverrides %+v; want extension tradingmode=%s on every audit event", binding.Name, ov, mode)
		}

		var approvals []*eventingv1.Trigger
		for _, tr := range triggers {
			if ref := tr.Spec.Subscriber.Ref; ref != nil && ref.Kind == "Service" && ref.Name == svc {
				approvals = append(approvals, tr)
			}
		}
		if len(approvals) != 1 {
			t.Fatalf("%d Triggers deliver to %s; want one, for approval decisions", len(approvals), svc)
		}
		tr := approvals[0]
		if sink != nil && tr.Spec.Broker != sink.Name {
			t.Errorf("Trigger %s listens on Broker %q; approvals must come from the Broker of this mode (%s)", tr.Name, tr.Spec.Broker, sink.Name)
		}
		if ref := tr.Spec.Subscriber.Ref; ref.APIVersion != servingv1.SchemeGroupVersion.String() {
			t.Errorf("Trigger %s subscriber apiVersion %q", tr.Name, ref.APIVersion)
		}
		if u := tr.Spec.Subscriber.URI; u == nil || u.Path != approvalPath || u.Host != "" {
			t.Errorf("Trigger %s delivers to %v; want the path %s of the Service", tr.Name, u, approvalPath)
		}
		var attrs map[string]string
		if tr.Spec.Filter != nil {
			attrs = tr.Spec.Filter.Attributes
		}
		trusted := loadPodConfig(t, docs, svcs[svc]).Trading.ApprovalEventSources
		if len(tr.Spec.Filters) > 0 || len(attrs) != 2 || attrs["type"] != approvalEventType || !slices.Contains(trusted, attrs["source"]) {
			t.Errorf("Trigger %s filters %v %v; want exactly type=%s and a source the server trusts (APPROVAL_EVENT_SOURCES %v)",
				tr.Name, attrs, tr.Spec.Filters, approvalEventType, trusted)
		}
		if slices.Contains([]string{audit.EventType, audit.StepEventType}, attrs["type"]) {
			t.Errorf("Trigger %s would deliver the server's own audit events back to it", tr.Name)
		}
		if d := tr.Spec.Delivery; d == nil || d.Retry == nil || *d.Retry < 3 {
			t.Errorf("Trigger %s: delivery %+v; an approval decision needs retries", tr.Name, d)
		}
		// A decision that never takes effect is told to the approvers: dead
		// letters go to this mode's notifier Service.
		notifier := svc + "-notifier"
		if d := tr.Spec.Delivery; d == nil || d.DeadLetterSink == nil || d.DeadLetterSink.Ref == nil ||
			d.DeadLetterSink.Ref.Kind != "Service" || d.DeadLetterSink.Ref.APIVersion != servingv1.SchemeGroupVersion.String() ||
			d.DeadLetterSink.Ref.Name != notifier || !knativeServiceIn(docs, notifier) {
			t.Errorf("Trigger %s: dead letters go to %+v; want the Knative Service %s", tr.Name, d, notifier)
		}
	}
}

// knativeServiceIn reports whether the manifests define the Knative
// Service name.
func knativeServiceIn(docs []document, name string) bool {
	for _, d := range docs {
		if d.APIVersion == servingv1.SchemeGroupVersion.String() && d.Kind == "Service" && d.Name == name {
			return true
		}
	}
	return false
}

// TestAuditArchiveWiring follows each mode's audit records to its archive:
// one Trigger on the Broker the mode's SinkBinding feeds delivers to the
// archiver's Kubernetes Service in the namespace, its filters, run by
// Knative Eventing's own filter code, pass exactly the three audit types
// (not approval decisions, not anything else), and its retries outlast an
// archiver outage of an hour.
func TestAuditArchiveWiring(t *testing.T) {
	docs := loadManifests(t, manifestDir)
	_, triggers, bindings := eventingObjects(t, docs)
	for _, mode := range modes {
		var broker string
		for _, b := range bindings {
			if b.Spec.Subject.Name == serviceName(mode) && b.Spec.Sink.Ref != nil {
				broker = b.Spec.Sink.Ref.Name
			}
		}
		var archives []*eventingv1.Trigger
		for _, tr := range triggers {
			if ref := tr.Spec.Subscriber.Ref; ref != nil && ref.APIVersion == "v1" && ref.Kind == "Service" && tr.Spec.Broker == broker {
				archives = append(archives, tr)
			}
		}
		if len(archives) != 1 {
			t.Fatalf("%d Triggers on %s's Broker %q deliver to a Kubernetes Service; want one, the audit archive", len(archives), serviceName(mode), broker)
		}
		tr := archives[0]
		if ref := tr.Spec.Subscriber.Ref; !strings.Contains(ref.Name, mode) || (ref.Namespace != "" && ref.Namespace != projectNamespace) || tr.Spec.Subscriber.URI != nil {
			t.Errorf("Trigger %s delivers to %+v %v; want this mode's archive Service in %s, at its root", tr.Name, ref, tr.Spec.Subscriber.URI, projectNamespace)
		}
		if tr.Spec.Filter != nil && len(tr.Spec.Filter.Attributes) > 0 {
			t.Errorf("Trigger %s mixes filter and filters; Knative would ignore the former", tr.Name)
		}
		filter := subscriptionsapi.CreateSubscriptionsAPIFilters(zap.NewNop(), tr.Spec.Filters)
		for typ, want := range map[string]eventfilter.FilterResult{
			audit.EventType: eventfilter.PassFilter, audit.StepEventType: eventfilter.PassFilter, audit.CheckpointEventType: eventfilter.PassFilter,
			approvalEventType: eventfilter.FailFilter, "com.portfolio-mcp.tool.called.v2": eventfilter.FailFilter, "dev.knative.sources.ping": eventfilter.FailFilter,
		} {
			ev := cloudevents.NewEvent()
			ev.SetID("1")
			ev.SetSource("/portfolio-mcp/" + serviceName(mode) + "/" + serviceName(mode) + "-00001")
			ev.SetType(typ)
			if got := filter.Filter(context.Background(), ev); got != want {
				t.Errorf("Trigger %s: an event of type %s: %s, want %s", tr.Name, typ, got, want)
			}
		}
		filter.Cleanup()
		checkArchiveDelivery(t, tr)
	}
}

// checkArchiveDelivery requires exponential retries whose backoff adds up
// to an hour or more.
func checkArchiveDelivery(t *testing.T, tr *eventingv1.Trigger) {
	t.Helper()
	d := tr.Spec.Delivery
	if d == nil || d.Retry == nil || d.BackoffPolicy == nil || *d.BackoffPolicy != "exponential" || d.BackoffDelay == nil {
		t.Errorf("Trigger %s: delivery %+v; want retries with exponential backoff", tr.Name, d)
		return
	}
	m := isoSeconds.FindStringSubmatch(*d.BackoffDelay)
	if m == nil {
		t.Fatalf("Trigger %s: backoffDelay %q; want PT<n>S", tr.Name, *d.BackoffDelay)
	}
	delay, _ := strconv.Atoi(m[1])
	if total := time.Duration(delay) * time.Second * time.Duration(1<<*d.Retry-1); total < time.Hour {
		t.Errorf("Trigger %s: retries give up after %v; an archiver outage of an hour would lose records", tr.Name, total)
	}
}

// TestEventingValidationCatchesMistakes proves the admission above can
// fail: Knative Eventing refuses a filter attribute name CloudEvents does
// not allow and a SinkBinding with no subject.
func TestEventingValidationCatchesMistakes(t *testing.T) {
	for name, raw := range map[string]string{
		"upper-case filter attribute": `apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t, namespace: portfolio-mcp}
spec:
  broker: b
  filter: {attributes: {Type: x}}
  subscriber: {uri: "http://example.com/"}
`,
		"SinkBinding without subject": `apiVersion: sources.knative.dev/v1
kind: SinkBinding
metadata: {name: s, namespace: portfolio-mcp}
spec:
  sink: {uri: "http://example.com/"}
`,
	} {
		ds, err := splitDocuments(name, []byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		var obj eventingObject = new(eventingv1.Trigger)
		if ds[0].Kind == "SinkBinding" {
			obj = new(sourcesv1.SinkBinding)
		}
		if err := admitEventing(eventingContext(t), ds[0], obj); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// sinkBindingEnv is what the SinkBinding injects into the Service's pods:
// K_SINK, the Broker's address (multi-tenant channel broker ingress), and
// K_CE_OVERRIDES, its ceOverrides as JSON.
func sinkBindingEnv(t *testing.T, docs []document, svc string) map[string]string {
	t.Helper()
	_, _, bindings := eventingObjects(t, docs)
	for _, b := range bindings {
		if b.Spec.Subject.Name != svc {
			continue
		}
		ov, err := json.Marshal(b.Spec.CloudEventOverrides)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]string{
			"K_SINK":         fmt.Sprintf("http://broker-ingress.knative-eventing.svc.cluster.local/%s/%s", b.Namespace, b.Spec.Sink.Ref.Name),
			"K_CE_OVERRIDES": string(ov),
		}
	}
	t.Fatalf("no SinkBinding for %s", svc)
	return nil
}
