package observability

// The PodMonitors are checked against the pods Knative actually makes for
// the Services of knative/: the Deployment knative.dev/serving's revision
// reconciler builds (ports renamed to user-port, queue-proxy added, labels
// added), and the NetworkPolicies that must let Prometheus in.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	revconfig "knative.dev/serving/pkg/reconciler/revision/config"
	"sigs.k8s.io/yaml"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/knativetest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/dashboard/promnames"
)

// modes are the server's two Services, service-<mode>.yaml.
var modes = []string{"paper", "live"}

// The namespace the NetworkPolicies admit Prometheus from, where the
// PodMonitors and the PrometheusRule live.
const monitoringNamespace = "monitoring"

// knativeConfig is a fresh install's cluster configuration with what
// README.md asks for: queue-proxy serves its request metrics in Prometheus
// format.
func knativeConfig(t *testing.T) *revconfig.Config {
	t.Helper()
	return knativetest.Config(t, map[string]string{
		"metrics-protocol":         "prometheus",
		"request-metrics-protocol": "prometheus",
	})
}

// service reads one Knative Service manifest of knative/, defaulted as the
// webhook would.
func service(t *testing.T, cfg *revconfig.Config, file string) *servingv1.Service {
	t.Helper()
	return knativetest.Service(t, cfg, filepath.Join(knativeDir, file))
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
	return knativetest.Deployment(t, cfg, knativetest.Revision(t, cfg, svc))
}

// podMonitor is the part of a monitoring.coreos.com/v1 PodMonitor the
// checks read (knative/crd_apiserver_test.go validates the whole object on
// the API server).
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
	for _, doc := range knativetest.SplitYAML(t, readFile(t, file)) {
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
		docs := knativetest.SplitYAML(t, b)
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

// goList runs `go list` with args in this module.
func goList(args ...string) (string, error) {
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	return strings.TrimSpace(string(out)), err
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
