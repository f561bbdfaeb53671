package knative

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/knativetest"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"
	"knative.dev/pkg/apis"
	_ "knative.dev/pkg/system/testing" // SYSTEM_NAMESPACE, which the revision reconciler reads
	"knative.dev/serving/pkg/apis/autoscaling"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"knative.dev/serving/pkg/networking"
	"knative.dev/serving/pkg/queue"
	"knative.dev/serving/pkg/queue/readiness"
	kparesources "knative.dev/serving/pkg/reconciler/autoscaling/kpa/resources"
	aresources "knative.dev/serving/pkg/reconciler/autoscaling/resources"
	revconfig "knative.dev/serving/pkg/reconciler/revision/config"
	revresources "knative.dev/serving/pkg/reconciler/revision/resources"

	"github.com/portfolio-mcp/portfolio-mcp/internal/prewarm"
)

// queueProxyQuietPeriod is how long Knative's queue-proxy keeps serving
// after SIGTERM with no new request before it lets the user container's
// preStop hook return (drainSleepDuration in
// knative.dev/serving/pkg/queue/sharedmain; unexported there). Only then
// does the server get its SIGTERM, so the server's whole drain must fit in
// what is left of the grace period.
const queueProxyQuietPeriod = 30 * time.Second

// knativeConfig is the cluster configuration the serving webhook and
// controllers work with on a fresh install: config-defaults,
// config-features, config-autoscaler, config-deployment, config-network,
// config-logging and config-observability all at Knative's defaults, parsed
// by Knative's own constructors.
func admitService(ctx context.Context, d document) (*servingv1.Service, error) {
	var svc servingv1.Service
	if err := decodeStrict(d.Raw, &svc); err != nil {
		return nil, fmt.Errorf("%s: %w", d.Source, err)
	}
	svc.SetDefaults(ctx)
	if err := admissionError(d.Source, "Knative Serving", svc.Validate(ctx)); err != nil {
		return nil, err
	}
	return &svc, nil
}

// admissionError reports a webhook's verdict: errors reject the object;
// warnings (which kubectl prints on apply) are held to the same bar here,
// so the manifests apply without any.
func admissionError(source, webhook string, errs *apis.FieldError) error {
	if errs == nil {
		return nil
	}
	if e := errs.Filter(apis.ErrorLevel); e != nil {
		return fmt.Errorf("%s: rejected by %s validation: %w", source, webhook, e)
	}
	return fmt.Errorf("%s: %s admits it with warnings: %w", source, webhook, errs.Filter(apis.WarningLevel))
}

// admittedServices admits every Service in docs (already resolved), keyed
// by name.
func admittedServices(t *testing.T, cfg *revconfig.Config, docs []document) map[string]*servingv1.Service {
	t.Helper()
	ctx := knativetest.WebhookContext(cfg)
	out := map[string]*servingv1.Service{}
	for _, d := range docs {
		if d.GVK() != servingv1.SchemeGroupVersion.WithKind("Service") {
			continue
		}
		svc, err := admitService(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		out[svc.Name] = svc
	}
	return out
}

// revisionOf stamps out the first Revision of svc the way the controllers
// do (service reconciler: Configuration; configuration reconciler:
// Revision), then admits it through the webhook as the API server would.
func envValue(c *corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// TestServicesPassKnativeAdmission runs each Service through
// knative.dev/serving's SetDefaults and Validate under the default cluster
// configuration, and checks there is exactly one per mode, alone in its
// service-<mode>.yaml (the autoscaling simulator reads those files).
func TestServicesPassKnativeAdmission(t *testing.T) {
	docs := loadManifests(t, manifestDir)
	cfg := knativetest.Config(t, nil)
	svcs := admittedServices(t, cfg, resolved(docs))
	var names []string
	for name := range svcs {
		names = append(names, name)
	}
	slices.Sort(names)
	if want := []string{serviceName("live"), notifierName("live"), serviceName("paper"), notifierName("paper")}; !slices.Equal(names, want) {
		t.Fatalf("Knative Services = %v, want %v", names, want)
	}
	for _, mode := range modes {
		file := "service-" + mode + ".yaml"
		var inFile []string
		for _, d := range docs {
			if d.File == file {
				inFile = append(inFile, d.Source)
			}
		}
		if len(inFile) != 1 || !strings.Contains(inFile[0], "Service "+serviceName(mode)) {
			t.Errorf("%s holds %v; want exactly the Service %s", file, inFile, serviceName(mode))
		}
	}
	for _, mode := range modes { // the notifiers: notifier_test.go
		svc := svcs[serviceName(mode)]
		c := svc.Spec.Template.Spec.GetContainer()
		if len(svc.Spec.Template.Spec.Containers) != 1 {
			t.Errorf("%s: %d containers; the server runs alone beside queue-proxy", svc.Name, len(svc.Spec.Template.Spec.Containers))
		}
		if c.Image != "ko.local/portfolio-mcp@"+fakeDigest {
			t.Errorf("%s: image %q, want ko://%s", svc.Name, c.Image, serverImportPath)
		}
		// Go's net/http serves HTTP/1.1 only (no h2c): queue-proxy must not
		// speak HTTP/2 cleartext to it.
		if len(c.Ports) != 1 || c.Ports[0].Name != "http1" {
			t.Errorf("%s: ports %v, want one port named http1", svc.Name, c.Ports)
		}
		if tr := svc.Spec.Traffic; len(tr) != 1 || tr[0].LatestRevision == nil || !*tr[0].LatestRevision || tr[0].Percent == nil || *tr[0].Percent != 100 {
			t.Errorf("%s: traffic %+v, want 100%% to the latest revision (pinning is a rollout step, docs/deploy.md)", svc.Name, tr)
		}
	}
}

// TestKnativeAdmissionRejectsBrokenServices proves the admission above is
// real: the same Service with a broken field is refused by Knative's code.
func TestKnativeAdmissionRejectsBrokenServices(t *testing.T) {
	docs := resolved(loadManifests(t, manifestDir))
	ctx := knativetest.WebhookContext(knativetest.Config(t, nil))
	var paper document
	for _, d := range docs {
		if d.File == "service-paper.yaml" {
			paper = d
		}
	}
	for _, c := range []struct {
		name, old, new, wantErr string
	}{
		{"min-scale above max-scale", `autoscaling.knative.dev/min-scale: "0"`, `autoscaling.knative.dev/min-scale: "11"`, "max-scale"},
		{"PORT set by hand (Knative's to set)", `- name: LISTEN_HOST`, "- name: PORT\n          value: \"9999\"\n        - name: LISTEN_HOST", "reserved environment variable"},
		{"timeout with aggressive probing", "            path: /readyz", "            path: /readyz\n          timeoutSeconds: 5", "timeoutSeconds is disallowed"},
		{"scale-down-delay over an hour", `scale-down-delay: "15m"`, `scale-down-delay: "2h"`, "scale-down-delay"},
	} {
		raw := strings.Replace(string(paper.Raw), c.old, c.new, 1)
		if raw == string(paper.Raw) {
			t.Fatalf("%s: edit did not apply; the manifest changed", c.name)
		}
		bad := paper
		bad.Raw = []byte(raw)
		_, err := admitService(ctx, bad)
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s: admission error %v, want one mentioning %q", c.name, err, c.wantErr)
		}
	}
}

// TestScalingDecisions derives each Service's autoscaling the way Knative
// does (PodAutoscaler from the revision reconciler, decider from the KPA)
// and checks the decisions the manifests promise.
func TestScalingDecisions(t *testing.T) {
	cfg := knativetest.Config(t, nil)
	as := cfg.Autoscaler
	docs := loadManifests(t, manifestDir)
	svcs := admittedServices(t, cfg, resolved(docs))
	job, prewarmed := prewarmJob(t, docs)
	for _, mode := range modes {
		svc := svcs[serviceName(mode)]
		rev := knativetest.Revision(t, cfg, svc)
		if err := autoscaling.ValidateAnnotations(context.Background(), as, rev.Annotations); err != nil {
			t.Fatalf("%s: autoscaling annotations: %v", svc.Name, err)
		}
		pa := revresources.MakePA(rev, nil)
		decider := kparesources.MakeDecider(pa, as)
		minScale, maxScale := pa.ScaleBounds(as)
		initial := kparesources.GetInitialScale(as, pa)
		cc := rev.Spec.GetContainerConcurrency()
		target, hasTarget := pa.Target()
		delay, _ := pa.ScaleDownDelay()
		_, hasWindow := pa.Window()
		metric := aresources.MakeMetric(pa, svc.Name, as)
		window := metric.Spec.StableWindow
		t.Logf("%s: class=%s metric=%s target=%v (x%.0f%% = %.1f) cc=%d min=%d max=%d initial=%d scale-down-delay=%v window=%v panic-window=%v panic-threshold=%.0f%% timeout=%ds",
			svc.Name, pa.Class(), pa.Metric(), target, decider.Spec.TargetValue/target*100, decider.Spec.TargetValue,
			cc, minScale, maxScale, initial, delay, window, metric.Spec.PanicWindow, decider.Spec.PanicThreshold*100,
			*rev.Spec.TimeoutSeconds)

		if pa.Class() != autoscaling.KPA || pa.Metric() != autoscaling.Concurrency || decider.Spec.ScalingMetric != autoscaling.Concurrency {
			t.Errorf("%s: class %s metric %s, want the KPA on concurrency", svc.Name, pa.Class(), pa.Metric())
		}
		// Scale to zero overnight: allowed by the cluster and by the Service.
		if minScale != 0 || !as.EnableScaleToZero {
			t.Errorf("%s: min-scale %d (cluster scale-to-zero %v); the Service must be allowed to reach zero pods", svc.Name, minScale, as.EnableScaleToZero)
		}
		// Bounded burst, and a rollout or wake-up never exceeds the bound.
		if maxScale < 2 {
			t.Errorf("%s: max-scale %d; want a bound of at least 2 for the trading-day burst", svc.Name, maxScale)
		}
		if initial < 1 || initial > maxScale {
			t.Errorf("%s: initial-scale %d outside [1, max-scale %d]: a new revision must prove one ready pod", svc.Name, initial, maxScale)
		}
		if act, ok := pa.ActivationScale(); ok && (act < 1 || act > maxScale) {
			t.Errorf("%s: activation-scale %d outside [1, %d]", svc.Name, act, maxScale)
		}
		// Soft target below the hard cap, so the autoscaler adds pods
		// before queue-proxy starts queueing.
		if !hasTarget || cc <= 0 || decider.Spec.TargetValue >= float64(cc) {
			t.Errorf("%s: effective target %.1f (annotation set: %v) must be below containerConcurrency %d", svc.Name, decider.Spec.TargetValue, hasTarget, cc)
		}
		if !hasWindow || decider.Spec.PanicThreshold <= 1 || metric.Spec.PanicWindow >= window {
			t.Errorf("%s: stable window %v (set: %v), panic window %v, panic threshold %.2f; want an explicit window and a shorter panic window above target",
				svc.Name, window, hasWindow, metric.Spec.PanicWindow, decider.Spec.PanicThreshold)
		}
		// Idle pods stay through an agent's pauses in the trading session,
		// yet the night is spent at zero. Either the scale-down delay keeps
		// the last pod through a pause, or the pre-warm job holds a floor
		// over the whole session (Knative applies a changed min-scale to a
		// running revision at once, but not a changed scale-down-delay).
		// From the last call to zero: the stable window empties, the delay
		// passes, then the scale-to-zero grace period.
		toZero := window + delay + as.ScaleToZeroGracePeriod
		sessionFloor := prewarmed[svc.Name] && job.Hold == 0 && job.MinScale >= 1
		if delay < 5*time.Minute && !sessionFloor || toZero > 30*time.Minute {
			t.Errorf("%s: scale-down-delay %v, %v from the last call to zero pods, pre-warm session floor %v; want a delay of 5m or more or a floor over the session, and zero within 30m",
				svc.Name, delay, toZero, sessionFloor)
		}
	}
	paper, live := knativetest.Revision(t, cfg, svcs[serviceName("paper")]), knativetest.Revision(t, cfg, svcs[serviceName("live")])
	_, paperMax := revresources.MakePA(paper, nil).ScaleBounds(as)
	_, liveMax := revresources.MakePA(live, nil).ScaleBounds(as)
	if liveMax < paperMax {
		t.Errorf("live max-scale %d below paper's %d", liveMax, paperMax)
	}
}

// prewarmJob is the shipped pre-warm CronJob's schedule and the Services
// it names in --services.
func prewarmJob(t *testing.T, docs []document) (prewarm.Schedule, map[string]bool) {
	t.Helper()
	job, err := prewarm.FromCronJob(filepath.Join(manifestDir, "prewarm.yaml"), "prewarm")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, d := range docs {
		if d.GVK() != batchv1.SchemeGroupVersion.WithKind("CronJob") {
			continue
		}
		var cj batchv1.CronJob
		if err := decodeStrict(d.Raw, &cj); err != nil {
			t.Fatal(err)
		}
		for _, c := range cj.Spec.JobTemplate.Spec.Template.Spec.Containers {
			for _, a := range c.Args {
				if list, ok := strings.CutPrefix(a, "--services="); ok {
					for _, n := range strings.Split(list, ",") {
						names[strings.TrimSpace(n)] = true
					}
				}
			}
		}
	}
	if len(names) == 0 {
		t.Fatal("the pre-warm CronJob names no --services")
	}
	return job, names
}

// TestDrainFitsTheGracePeriod checks the shutdown timeline on the pod
// Knative makes: the grace period is timeoutSeconds, the server's preStop
// waits for queue-proxy's drain, and the server's own drain
// (DRAIN_TIMEOUT) fits in what is left.
func TestDrainFitsTheGracePeriod(t *testing.T) {
	cfg := knativetest.Config(t, nil)
	svcs := admittedServices(t, cfg, resolved(loadManifests(t, manifestDir)))
	for _, mode := range modes {
		rev := knativetest.Revision(t, cfg, svcs[serviceName(mode)])
		pod := knativetest.Deployment(t, cfg, rev).Spec.Template.Spec
		user := knativetest.Container(t, &pod, rev.Spec.GetContainer().Name)

		grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
		if want := time.Duration(*rev.Spec.TimeoutSeconds) * time.Second; grace != want {
			t.Errorf("%s: grace period %v, want timeoutSeconds %v", rev.Name, grace, want)
		}
		if ps := user.Lifecycle; ps == nil || ps.PreStop == nil || ps.PreStop.HTTPGet == nil ||
			ps.PreStop.HTTPGet.Path != queue.RequestQueueDrainPath || ps.PreStop.HTTPGet.Port.IntValue() != networking.QueueAdminPort {
			t.Fatalf("%s: user container has no preStop waiting for queue-proxy's drain: %+v", rev.Name, user.Lifecycle)
		}
		drainTimeout := durationEnv(t, user, "DRAIN_TIMEOUT")
		drainDelay := durationEnv(t, user, "DRAIN_DELAY")
		if budget := queueProxyQuietPeriod + drainDelay + drainTimeout; budget >= grace {
			t.Errorf("%s: queue-proxy quiet period %v + DRAIN_DELAY %v + DRAIN_TIMEOUT %v = %v, not below the %v grace period: the server would be killed mid-drain",
				rev.Name, queueProxyQuietPeriod, drainDelay, drainTimeout, budget, grace)
		}
		if drainDelay != 0 {
			t.Errorf("%s: DRAIN_DELAY %v; queue-proxy has already held new requests off for %v before SIGTERM reaches the server", rev.Name, drainDelay, queueProxyQuietPeriod)
		}
	}
}

// durationEnv reads a duration env var the manifest sets on c.
func durationEnv(t *testing.T, c *corev1.Container, name string) time.Duration {
	t.Helper()
	v, ok := envValue(c, name)
	if !ok {
		t.Fatalf("container %s does not set %s", c.Name, name)
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// TestProbesAndPortOnTheGeneratedPod checks the probes and the port as the
// running pod has them: Knative moves the readiness probe into queue-proxy
// (which probes the server over loopback), points liveness at the server's
// port, and sets PORT to the container port.
func TestProbesAndPortOnTheGeneratedPod(t *testing.T) {
	cfg := knativetest.Config(t, nil)
	svcs := admittedServices(t, cfg, resolved(loadManifests(t, manifestDir)))
	for _, mode := range modes {
		rev := knativetest.Revision(t, cfg, svcs[serviceName(mode)])
		port := rev.Spec.GetContainer().Ports[0].ContainerPort
		pod := knativetest.Deployment(t, cfg, rev).Spec.Template.Spec
		user := knativetest.Container(t, &pod, rev.Spec.GetContainer().Name)
		qp := knativetest.Container(t, &pod, "queue-proxy")

		if v, _ := envValue(user, "PORT"); v != fmt.Sprint(port) {
			t.Errorf("%s: PORT=%q in the pod, want %d", rev.Name, v, port)
		}
		lp := user.LivenessProbe
		if lp == nil || lp.HTTPGet == nil || lp.HTTPGet.Path != "/healthz" || lp.HTTPGet.Port.IntValue() != int(port) {
			t.Errorf("%s: liveness probe %+v, want GET /healthz on port %d", rev.Name, lp, port)
		}
		if user.ReadinessProbe != nil {
			t.Errorf("%s: the kubelet probes the user container's readiness itself; Knative should have moved it to queue-proxy", rev.Name)
		}
		raw, _ := envValue(qp, "SERVING_READINESS_PROBE")
		probes, err := readiness.DecodeProbes(raw, false)
		if err != nil || len(probes) != 1 {
			t.Fatalf("%s: queue-proxy readiness probe %q: %v", rev.Name, raw, err)
		}
		rp := probes[0]
		if rp.HTTPGet == nil || rp.HTTPGet.Path != "/readyz" || rp.HTTPGet.Port.IntValue() != int(port) || rp.HTTPGet.Host != "127.0.0.1" {
			t.Errorf("%s: queue-proxy probes %+v, want GET 127.0.0.1:%d/readyz", rev.Name, rp.ProbeHandler, port)
		}
		if rp.PeriodSeconds != 0 {
			t.Errorf("%s: readiness periodSeconds %d; 0 selects Knative's aggressive probing for fast cold starts", rev.Name, rp.PeriodSeconds)
		}
	}
}

// TestGeneratedPodMeetsRestrictedPodSecurity evaluates the pod Knative
// generates (server and queue-proxy) with the Pod Security Admission
// library at the restricted level the namespace enforces, and checks what
// that profile leaves optional: a read-only root filesystem, and no API
// token in the pod.
func TestGeneratedPodMeetsRestrictedPodSecurity(t *testing.T) {
	cfg := knativetest.Config(t, nil)
	docs := loadManifests(t, manifestDir)
	svcs := admittedServices(t, cfg, resolved(docs))
	accounts := objectsOf[corev1.ServiceAccount](t, docs, corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
	namespaces := objectsOf[corev1.Namespace](t, docs, corev1.SchemeGroupVersion.WithKind("Namespace"))
	if ns := namespaces[projectNamespace]; ns == nil || ns.Labels[psaapi.EnforceLevelLabel] != string(psaapi.LevelRestricted) {
		t.Errorf("namespace %s does not enforce the restricted Pod Security level", projectNamespace)
	}
	eval, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range slices.Sorted(maps.Keys(svcs)) { // every Service: the servers and the notifiers
		rev := knativetest.Revision(t, cfg, svcs[name])
		tmpl := knativetest.Deployment(t, cfg, rev).Spec.Template
		res := psapolicy.AggregateCheckResults(eval.EvaluatePod(
			psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}, &tmpl.ObjectMeta, &tmpl.Spec))
		if !res.Allowed {
			t.Errorf("%s: the pod Knative makes violates Pod Security restricted: %s: %s", rev.Name, res.ForbiddenReason(), res.ForbiddenDetail())
		}
		for _, c := range tmpl.Spec.Containers {
			if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: container %s has a writable root filesystem", rev.Name, c.Name)
			}
		}
		sa := accounts[tmpl.Spec.ServiceAccountName]
		if sa == nil {
			t.Errorf("%s runs as ServiceAccount %q, which the manifests do not create", rev.Name, tmpl.Spec.ServiceAccountName)
		} else if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken || len(sa.Annotations) > 0 {
			t.Errorf("%s: ServiceAccount %s must mount no token and carry no cloud role (it needs neither)", rev.Name, sa.Name)
		}
		if c := knativetest.Container(t, &tmpl.Spec, rev.Spec.GetContainer().Name); c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
			t.Errorf("%s: resources %+v, want a memory limit and a CPU request", rev.Name, c.Resources)
		}
	}
	// Every other workload in the namespace meets the same level, or the
	// namespace's enforcement would refuse its pods.
	restricted := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	for _, d := range docs {
		var tmpl *corev1.PodTemplateSpec
		switch d.GVK() {
		case batchv1.SchemeGroupVersion.WithKind("CronJob"):
			var cj batchv1.CronJob
			if err := decodeStrict(d.Raw, &cj); err != nil {
				t.Fatal(err)
			}
			tmpl = &cj.Spec.JobTemplate.Spec.Template
		case batchv1.SchemeGroupVersion.WithKind("Job"):
			var j batchv1.Job
			if err := decodeStrict(d.Raw, &j); err != nil {
				t.Fatal(err)
			}
			tmpl = &j.Spec.Template
		default:
			continue
		}
		res := psapolicy.AggregateCheckResults(eval.EvaluatePod(restricted, &tmpl.ObjectMeta, &tmpl.Spec))
		if !res.Allowed {
			t.Errorf("%s: pods violate Pod Security restricted, which namespace %s enforces: %s: %s", d.Source, projectNamespace, res.ForbiddenReason(), res.ForbiddenDetail())
		}
	}
}
