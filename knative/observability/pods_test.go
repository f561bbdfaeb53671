package observability

// The PodMonitors are checked against the pods Knative actually makes for
// the Services of knative/: the Deployment knative.dev/serving's revision
// reconciler builds (ports renamed to user-port, queue-proxy added, labels
// added), and the NetworkPolicies that must let Prometheus in.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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

	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/dashboard/promnames"
)

// modes are the server's two Services, service-<mode>.yaml.
var modes = []string{"paper", "live"}

// The namespace the NetworkPolicies admit Prometheus from, where the
// PodMonitors and the PrometheusRule live.
const monitoringNamespace = "monitoring"

// standInImage replaces the ko:// reference, which ko resolves at deploy
// time.
const standInImage = "registry.example.com/portfolio-mcp@sha256:0000000000000000000000000000000000000000000000000000000000000000"

var koRef = regexp.MustCompile(`ko://[^\s"']+`)

// knativeConfig is a fresh install's cluster configuration, parsed by
// Knative's own constructors (as knative/service_test.go does).
func knativeConfig(t *testing.T) *revconfig.Config {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	defaults, err := apicfg.NewDefaultsConfigFromMap(nil)
	must(err)
	features, err := apicfg.NewFeaturesConfigFromMap(nil)
	must(err)
	autoscaler, err := asconfig.NewConfigFromMap(nil)
	must(err)
	dep, err := deployment.NewConfigFromMap(map[string]string{deployment.QueueSidecarImageKey: "ko.local/queue-proxy@sha256:" + strings.Repeat("1", 64)})
	must(err)
	network, err := netcfg.NewConfigFromMap(nil)
	must(err)
	logs, err := logging.NewConfigFromMap(nil)
	must(err)
	obs, err := knobservability.NewFromMap(map[string]string{
		// What README.md asks for: the queue-proxy serves its request
		// metrics in Prometheus format.
		"metrics-protocol":         "prometheus",
		"request-metrics-protocol": "prometheus",
	})
	must(err)
	return &revconfig.Config{
		Config:        &apicfg.Config{Defaults: defaults, Features: features, Autoscaler: autoscaler},
		Deployment:    dep,
		Logging:       logs,
		Network:       network,
		Observability: obs,
	}
}

func webhookContext(cfg *revconfig.Config) context.Context {
	return apis.WithinCreate(apicfg.ToContext(context.Background(), cfg.Config))
}

// service reads one Knative Service manifest, defaulted as the webhook
// would.
func service(t *testing.T, cfg *revconfig.Config, file string) *servingv1.Service {
	t.Helper()
	b := koRef.ReplaceAll(readFile(t, filepath.Join(knativeDir, file)), []byte(standInImage))
	for _, doc := range splitYAML(t, b) {
		var head struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatal(err)
		}
		if head.APIVersion != servingv1.SchemeGroupVersion.String() || head.Kind != "Service" {
			continue
		}
		var svc servingv1.Service
		if err := yaml.UnmarshalStrict(doc, &svc); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		svc.SetDefaults(webhookContext(cfg))
		return &svc
	}
	t.Fatalf("%s holds no Knative Service", file)
	return nil
}

// serverServices are the server's Services of both modes.
func serverServices(t *testing.T) []*servingv1.Service {
	t.Helper()
	cfg := knativeConfig(t)
	var out []*servingv1.Service
	for _, m := range modes {
		out = append(out, service(t, cfg, "service-"+m+".yaml"))
	}
	return out
}

// podOf is the Deployment the revision reconciler makes for svc's first
// revision: the pod that runs, queue-proxy beside the server.
func podOf(t *testing.T, cfg *revconfig.Config, svc *servingv1.Service) *appsv1.Deployment {
	t.Helper()
	ctx := webhookContext(cfg)
	conf := svcresources.MakeConfiguration(svc)
	rev := cfgresources.MakeRevision(ctx, conf, time.Unix(0, 0))
	rev.Name = conf.Name + "-00001"
	rev.SetDefaults(ctx)
	if err := rev.Validate(ctx).Filter(apis.ErrorLevel); err != nil {
		t.Fatalf("revision of %s: %v", svc.Name, err)
	}
	d, err := revresources.MakeDeployment(rev, cfg)
	if err != nil {
		t.Fatalf("revision reconciler cannot make a Deployment for %s: %v", rev.Name, err)
	}
	return d
}

// podMonitor is the part of a monitoring.coreos.com/v1 PodMonitor the
// checks read (crd_test.go validates the whole object).
type podMonitor struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector            metav1.LabelSelector `json:"selector"`
		PodMetricsEndpoints []struct {
			Port        string `json:"port"`
			Path        string `json:"path"`
			Relabelings []struct {
				SourceLabels []string `json:"sourceLabels"`
				TargetLabel  string   `json:"targetLabel"`
				Replacement  string   `json:"replacement"`
			} `json:"relabelings"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

func podMonitors(t *testing.T, file string) []podMonitor {
	t.Helper()
	var out []podMonitor
	for _, doc := range splitYAML(t, readFile(t, file)) {
		var pm podMonitor
		if err := yaml.Unmarshal(doc, &pm); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if pm.Kind == "PodMonitor" {
			out = append(out, pm)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s holds no PodMonitor", file)
	}
	return out
}

// splitYAML cuts a stream at document separators, dropping empty ones.
func splitYAML(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d), &m); err != nil {
			t.Fatal(err)
		}
		if len(m) > 0 {
			out = append(out, []byte(d))
		}
	}
	return out
}

// metaLabel is Prometheus' discovery label for a pod label.
func metaLabel(podLabel string) string {
	return "__meta_kubernetes_pod_label_" + regexp.MustCompile(`[^a-zA-Z0-9_]`).ReplaceAllString(podLabel, "_")
}

// TestPodMonitorsScrapeTheServerPods: for each mode, both PodMonitors of
// podmonitor.yaml select the pod Knative makes (and not the notifier's),
// in its namespace, on ports that pod has on the right container, which
// the mode's NetworkPolicy opens to the monitoring namespace; and every
// pod label they copy exists on that pod.
func TestPodMonitorsScrapeTheServerPods(t *testing.T) {
	cfg := knativeConfig(t)
	pms := podMonitors(t, "podmonitor.yaml")
	wantContainer := map[string]string{"portfolio-mcp": "portfolio-mcp", "portfolio-mcp-queue-proxy": "queue-proxy"}
	for _, mode := range modes {
		svc := service(t, cfg, "service-"+mode+".yaml")
		dep := podOf(t, cfg, svc)
		pod := dep.Spec.Template
		policy := networkPolicy(t, "networkpolicy-"+mode+".yaml")
		notifier := service(t, cfg, "notifier-"+mode+".yaml")
		notifierPod := podOf(t, cfg, notifier).Spec.Template
		for _, pm := range pms {
			t.Run(mode+"/"+pm.Metadata.Name, func(t *testing.T) {
				if pm.Metadata.Namespace != monitoringNamespace {
					t.Errorf("in namespace %q, want %q (where the NetworkPolicies admit Prometheus from)", pm.Metadata.Namespace, monitoringNamespace)
				}
				if !slices.Contains(pm.Spec.NamespaceSelector.MatchNames, dep.Namespace) {
					t.Errorf("namespaces %q leave out %s", pm.Spec.NamespaceSelector.MatchNames, dep.Namespace)
				}
				sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
				if err != nil {
					t.Fatal(err)
				}
				if !sel.Matches(labels.Set(pod.Labels)) {
					t.Errorf("selector %s does not select %s's pods (labels %v)", sel, svc.Name, pod.Labels)
				}
				if sel.Matches(labels.Set(notifierPod.Labels)) {
					t.Errorf("selector %s also selects the notifier's pods", sel)
				}
				if len(pm.Spec.PodMetricsEndpoints) != 1 {
					t.Fatalf("%d endpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
				}
				ep := pm.Spec.PodMetricsEndpoints[0]
				container, port := findPort(&pod.Spec, ep.Port)
				if container == "" {
					t.Fatalf("port %q is not on the pod Knative makes (it has %s)", ep.Port, ports(&pod.Spec))
				}
				if want := wantContainer[pm.Metadata.Name]; container != want {
					t.Errorf("port %q is on container %s, want %s", ep.Port, container, want)
				}
				if ep.Path != "/metrics" {
					t.Errorf("path %q", ep.Path)
				}
				if !admitsMonitoring(policy, port) {
					t.Errorf("%s does not admit namespace %s on port %d (%s)", policy.Name, monitoringNamespace, port, ep.Port)
				}
				targets := map[string]string{}
				for _, r := range ep.Relabelings {
					targets[r.TargetLabel] = r.Replacement
					for _, src := range r.SourceLabels {
						if !strings.HasPrefix(src, "__meta_kubernetes_pod_label_") {
							continue
						}
						found := false
						for l := range pod.Labels {
							found = found || metaLabel(l) == src
						}
						if !found {
							t.Errorf("relabeling reads %s, but the pod has no such label (labels %v)", src, pod.Labels)
						}
					}
				}
				// The backends' metrics have a label "service": a target
				// label of that name would rename theirs to exported_service.
				if _, ok := targets["service"]; ok {
					t.Error("a target label named service would clash with backend_* metrics' own")
				}
				for _, l := range []string{"job", "knative_service", "knative_revision", "trading_mode"} {
					if _, ok := targets[l]; !ok {
						t.Errorf("no relabeling sets %s, which the rules and the dashboard group by", l)
					}
				}
				if pm.Metadata.Name == "portfolio-mcp" && targets["job"] != "portfolio-mcp" {
					t.Errorf("job %q, want portfolio-mcp (the rules select on it)", targets["job"])
				}
			})
		}
	}
}

func findPort(pod *corev1.PodSpec, name string) (container string, port int32) {
	for _, c := range pod.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return c.Name, p.ContainerPort
			}
		}
	}
	return "", 0
}

func ports(pod *corev1.PodSpec) string {
	var out []string
	for _, c := range pod.Containers {
		for _, p := range c.Ports {
			out = append(out, fmt.Sprintf("%s/%s:%d", c.Name, p.Name, p.ContainerPort))
		}
	}
	return strings.Join(out, ", ")
}

func networkPolicy(t *testing.T, file string) *networkingv1.NetworkPolicy {
	t.Helper()
	var np networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict(readFile(t, filepath.Join(knativeDir, file)), &np); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return &np
}

// admitsMonitoring reports whether an ingress rule of np lets any pod of
// the monitoring namespace reach port (TCP).
func admitsMonitoring(np *networkingv1.NetworkPolicy, port int32) bool {
	for _, rule := range np.Spec.Ingress {
		from := len(rule.From) == 0
		for _, peer := range rule.From {
			if peer.IPBlock == nil && peer.PodSelector == nil && peer.NamespaceSelector != nil &&
				peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == monitoringNamespace {
				from = true
			}
		}
		if !from {
			continue
		}
		if len(rule.Ports) == 0 {
			return true
		}
		for _, p := range rule.Ports {
			if (p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) && p.Port != nil && p.Port.IntVal == port {
				return true
			}
		}
	}
	return false
}

// TestKnativePodMonitorSelectsItsComponents: the knative-serving PodMonitor
// selects the autoscaler (kn_revision_pods_*) and the activator
// (kn_revision_request_*) by the labels and port name of Knative Serving
// 1.23's own Deployments, read from knative.dev/serving's config/core.
func TestKnativePodMonitorSelectsItsComponents(t *testing.T) {
	pms := podMonitors(t, "podmonitor-knative-serving.yaml")
	if len(pms) != 1 {
		t.Fatalf("%d PodMonitors", len(pms))
	}
	pm := pms[0]
	if !slices.Equal(pm.Spec.NamespaceSelector.MatchNames, []string{"knative-serving"}) {
		t.Errorf("namespaces %q, want knative-serving", pm.Spec.NamespaceSelector.MatchNames)
	}
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	dir := servingModuleDir(t)
	for _, component := range []string{"autoscaler", "activator"} {
		var dep appsv1.Deployment
		b := readFile(t, filepath.Join(dir, "config/core/deployments", component+".yaml"))
		docs := splitYAML(t, b)
		if err := yaml.Unmarshal(docs[0], &dep); err != nil {
			t.Fatal(err)
		}
		if dep.Kind != "Deployment" {
			t.Fatalf("%s.yaml starts with a %s", component, dep.Kind)
		}
		if !sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
			t.Errorf("selector %s misses the %s (labels %v)", sel, component, dep.Spec.Template.Labels)
		}
		if c, _ := findPort(&dep.Spec.Template.Spec, pm.Spec.PodMetricsEndpoints[0].Port); c == "" {
			t.Errorf("the %s has no port %q (%s)", component, pm.Spec.PodMetricsEndpoints[0].Port, ports(&dep.Spec.Template.Spec))
		}
	}
}

// servingModuleDir is knative.dev/serving's directory in the module cache
// (the version go.mod requires).
func servingModuleDir(t *testing.T) string {
	t.Helper()
	out, err := goList("-m", "-f", "{{.Dir}}", "knative.dev/serving")
	if err != nil || out == "" {
		t.Fatalf("go list -m knative.dev/serving: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "config/core/deployments")); err != nil {
		t.Fatalf("knative.dev/serving has no config/core/deployments: %v", err)
	}
	return out
}

// TestKnativeSeriesExistInServing: every Knative series the pack uses is an
// OpenTelemetry instrument of knative.dev/serving at the version go.mod
// requires, and its Prometheus name is the exporter's translation of it.
func TestKnativeSeriesExistInServing(t *testing.T) {
	dir := servingModuleDir(t)
	var src strings.Builder
	err := filepath.WalkDir(filepath.Join(dir, "pkg"), func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			src.Write(readFile(t, path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for prom, instrument := range promnames.KnativeSeries {
		if !strings.Contains(src.String(), `"`+instrument+`"`) {
			t.Errorf("knative.dev/serving defines no instrument %q (for %s)", instrument, prom)
		}
		want := strings.ReplaceAll(instrument, ".", "_")
		if strings.HasSuffix(prom, "_seconds") {
			want += "_seconds" // unit "s"
		}
		if prom != want {
			t.Errorf("%s: the exporter names %q %s", prom, instrument, want)
		}
	}
}
