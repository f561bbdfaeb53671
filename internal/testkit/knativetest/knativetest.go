// Package knativetest gives tests the pod Knative Serving makes for a
// Service manifest, computed by knative.dev/serving's own code (defaulting,
// the configuration and revision reconcilers, MakeDeployment), and runs
// such a pod on this machine: the server and Knative's real queue-proxy
// (knative.dev/serving/cmd/queue, a tool dependency of the module, so its
// version is go.mod's) as processes in a private network namespace.
//
// It is shared by the knative/ tests that read the generated pod and by the
// tests that run it, so both see the same pod.
package knativetest

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	netcfg "knative.dev/networking/pkg/config"
	"knative.dev/pkg/apis"
	"knative.dev/pkg/logging"
	_ "knative.dev/pkg/system/testing" // SYSTEM_NAMESPACE, which the revision reconciler reads
	apicfg "knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	asconfig "knative.dev/serving/pkg/autoscaler/config"
	"knative.dev/serving/pkg/deployment"
	knobservability "knative.dev/serving/pkg/observability"
	cfgresources "knative.dev/serving/pkg/reconciler/configuration/resources"
	revconfig "knative.dev/serving/pkg/reconciler/revision/config"
	revresources "knative.dev/serving/pkg/reconciler/revision/resources"
	svcresources "knative.dev/serving/pkg/reconciler/service/resources"
	"sigs.k8s.io/yaml"
)

// QueueProxyQuietPeriod is how long queue-proxy's drain waits with no new
// request before /wait-for-drain (the user container's preStop) returns:
// drainSleepDuration in knative.dev/serving/pkg/queue/sharedmain, a
// constant there (no setting changes it). Every request that arrives while
// draining starts the period again.
const QueueProxyQuietPeriod = 30 * time.Second

// standInImage replaces ko:// references, which ko resolves at deploy time.
const standInImage = "ko.local/portfolio-mcp@sha256:0000000000000000000000000000000000000000000000000000000000000000"

var (
	koRef     = regexp.MustCompile(`ko://[^\s"']+`)
	separator = regexp.MustCompile(`(?m)^---\s*$`)
)

// Config is a fresh install's cluster configuration (config-defaults,
// config-features, config-autoscaler, config-deployment, config-network,
// config-logging, config-observability), parsed by Knative's own
// constructors. observability holds config-observability's data (nil: the
// defaults, where queue-proxy exports no request metrics).
func Config(tb testing.TB, observability map[string]string) *revconfig.Config {
	tb.Helper()
	must := func(what string, err error) {
		tb.Helper()
		if err != nil {
			tb.Fatalf("knative %s: %v", what, err)
		}
	}
	defaults, err := apicfg.NewDefaultsConfigFromMap(nil)
	must("config-defaults", err)
	features, err := apicfg.NewFeaturesConfigFromMap(nil)
	must("config-features", err)
	autoscaler, err := asconfig.NewConfigFromMap(nil)
	must("config-autoscaler", err)
	dep, err := deployment.NewConfigFromMap(map[string]string{
		deployment.QueueSidecarImageKey: "ko.local/queue-proxy@sha256:" + strings.Repeat("1", 64),
	})
	must("config-deployment", err)
	network, err := netcfg.NewConfigFromMap(nil)
	must("config-network", err)
	logs, err := logging.NewConfigFromMap(nil)
	must("config-logging", err)
	obs, err := knobservability.NewFromMap(observability)
	must("config-observability", err)
	return &revconfig.Config{
		Config:        &apicfg.Config{Defaults: defaults, Features: features, Autoscaler: autoscaler},
		Deployment:    dep,
		Logging:       logs,
		Network:       network,
		Observability: obs,
	}
}

// WebhookContext is the context the serving webhook gives SetDefaults and
// Validate when an object is created.
func WebhookContext(cfg *revconfig.Config) context.Context {
	return apis.WithinCreate(apicfg.ToContext(context.Background(), cfg.Config))
}

// SplitYAML cuts a YAML stream at its document separators, dropping empty
// documents.
func SplitYAML(tb testing.TB, b []byte) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, d := range separator.Split(string(b), -1) {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d), &m); err != nil {
			tb.Fatal(err)
		}
		if len(m) > 0 {
			out = append(out, []byte(d))
		}
	}
	return out
}

// Service reads the first Knative Service of the manifest at path, with
// ko:// references replaced, decoded strictly and defaulted as the webhook
// would.
func Service(tb testing.TB, cfg *revconfig.Config, path string) *servingv1.Service {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	for _, doc := range SplitYAML(tb, koRef.ReplaceAll(b, []byte(standInImage))) {
		var head struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal(doc, &head); err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		if head.APIVersion != servingv1.SchemeGroupVersion.String() || head.Kind != "Service" {
			continue
		}
		var svc servingv1.Service
		if err := yaml.UnmarshalStrict(doc, &svc); err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		svc.SetDefaults(WebhookContext(cfg))
		return &svc
	}
	tb.Fatalf("%s holds no Knative Service", path)
	return nil
}

// Revision is svc's first Revision as the controllers stamp it out
// (service reconciler: Configuration; configuration reconciler: Revision),
// defaulted and validated as the webhook admits it.
func Revision(tb testing.TB, cfg *revconfig.Config, svc *servingv1.Service) *servingv1.Revision {
	tb.Helper()
	ctx := WebhookContext(cfg)
	conf := svcresources.MakeConfiguration(svc)
	rev := cfgresources.MakeRevision(ctx, conf, time.Unix(0, 0))
	rev.Name = conf.Name + "-00001"
	rev.SetDefaults(ctx)
	if err := rev.Validate(ctx).Filter(apis.ErrorLevel); err != nil {
		tb.Fatalf("revision of %s: %v", svc.Name, err)
	}
	return rev
}

// Deployment is what the revision reconciler makes for rev: the pod that
// runs, queue-proxy beside the user container.
func Deployment(tb testing.TB, cfg *revconfig.Config, rev *servingv1.Revision) *appsv1.Deployment {
	tb.Helper()
	d, err := revresources.MakeDeployment(rev, cfg)
	if err != nil {
		tb.Fatalf("revision reconciler cannot make a Deployment for %s: %v", rev.Name, err)
	}
	return d
}

// Container returns the container called name of pod.
func Container(tb testing.TB, pod *corev1.PodSpec, name string) *corev1.Container {
	tb.Helper()
	for i := range pod.Containers {
		if pod.Containers[i].Name == name {
			return &pod.Containers[i]
		}
	}
	tb.Fatalf("pod has no container %q", name)
	return nil
}
