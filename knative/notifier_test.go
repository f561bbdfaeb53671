package knative

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/url"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/knativetest"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	eventingduckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/serving/pkg/apis/autoscaling"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"knative.dev/serving/pkg/networking"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
)

// The approval notifier (cmd/notifier, docs/notifications.md): one Knative
// Service per mode, fed by that mode's Broker.
const (
	notifierImportPath = "github.com/portfolio-mcp/portfolio-mcp/cmd/notifier"
	notifierSuffix     = "-notifier"
	// notifierConfigFile declares the variables the notifier reads.
	notifierConfigFile = "cmd/notifier/config.go"
)

// notifiedSteps are the trade steps the notifier posts, one Trigger each.
var notifiedSteps = []string{"approval.decided", "approval.decided.superseded", "approval.requested"}

func notifierName(mode string) string { return serviceName(mode) + notifierSuffix }

// notifierEnv lists the variables the notifier's Config reads, from its
// env struct tags (it is a main package, so read from source).
func notifierEnv(t *testing.T) map[string]bool {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(moduleRoot, notifierConfigFile), nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != "Config" {
			return true
		}
		for _, field := range ts.Type.(*ast.StructType).Fields.List {
			if field.Tag == nil {
				continue
			}
			tag, _ := strconv.Unquote(field.Tag.Value)
			if name, _, _ := strings.Cut(reflect.StructTag(tag).Get("env"), ","); name != "" {
				names[name] = true
			}
		}
		return false
	})
	if !names["CONSOLE_URL"] || !names["WEBHOOK_URL_FILE"] {
		t.Fatalf("%s reads %v; the tag walk is broken", notifierConfigFile, names)
	}
	return names
}

// isoSeconds reads the "PT<n>S" durations of the Triggers' delivery.
var isoSeconds = regexp.MustCompile(`^PT(\d+)S$`)

// TestNotifierWiring follows each mode's approval notifications: the
// Service runs the notifier image with an environment it reads, links to
// its own mode's console, gets only the webhook URL from its own mode's
// AWS secret as a whole-mounted file, runs as a token-less account, and
// one Trigger per notified step on its mode's Broker delivers exactly the
// approval steps, with retries and a timeout its retry budget fits in.
func TestNotifierWiring(t *testing.T) {
	docs := loadManifests(t, manifestDir)
	written := objectsOf[servingv1.Service](t, docs, servingv1.SchemeGroupVersion.WithKind("Service"))
	servers := serverServices(t, docs)
	accounts := objectsOf[corev1.ServiceAccount](t, docs, corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
	externals := decodeLoose[externalSecret](t, docs, "ExternalSecret")
	_, triggers, bindings := eventingObjects(t, docs)
	read := notifierEnv(t)

	var refs int
	for _, d := range docs {
		refs += strings.Count(strings.Join(koRefs(d.Raw), " "), notifierImportPath)
	}
	if refs != len(modes) {
		t.Errorf("ko://%s is referenced %d times; want one notifier Service per mode", notifierImportPath, refs)
	}

	for _, mode := range modes {
		svc := written[notifierName(mode)]
		if svc == nil {
			t.Fatalf("no Service %s", notifierName(mode))
		}
		spec := svc.Spec.Template.Spec
		c := spec.GetContainer()
		if len(spec.Containers) != 1 || c.Image != "ko://"+notifierImportPath || len(c.Ports) != 1 || c.Ports[0].Name != "http1" {
			t.Errorf("%s: containers %d, image %q, ports %v; want the notifier alone on one http1 port", svc.Name, len(spec.Containers), c.Image, c.Ports)
		}

		// Environment: only what the notifier reads, literal.
		for _, err := range envProblems(c, read) {
			t.Errorf("%s: %v", svc.Name, strings.ReplaceAll(err.Error(), "config.Config", notifierConfigFile))
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		if env["LISTEN_HOST"] != "0.0.0.0" {
			t.Errorf("%s: LISTEN_HOST %q; the kubelet's liveness probe needs the pod IP", svc.Name, env["LISTEN_HOST"])
		}
		public, _ := envValue(servers[mode].Spec.Template.Spec.GetContainer(), "PUBLIC_URL")
		if want := strings.TrimSuffix(public, "/mcp"); env["CONSOLE_URL"] != want {
			t.Errorf("%s: CONSOLE_URL %q, want the %s route %q (PUBLIC_URL without /mcp)", svc.Name, env["CONSOLE_URL"], mode, want)
		}
		if u, err := url.Parse(env["CONSOLE_URL"]); err != nil || u.Scheme != "https" {
			t.Errorf("%s: CONSOLE_URL %q is not https", svc.Name, env["CONSOLE_URL"])
		}
		budget, err := time.ParseDuration(env["WEBHOOK_RETRY_BUDGET"])
		if err != nil {
			t.Errorf("%s: WEBHOOK_RETRY_BUDGET %q: %v", svc.Name, env["WEBHOOK_RETRY_BUDGET"], err)
		}
		drain, err := time.ParseDuration(env["DRAIN_TIMEOUT"])
		if err != nil || queueProxyQuietPeriod+drain >= time.Duration(*spec.TimeoutSeconds)*time.Second {
			t.Errorf("%s: queue-proxy quiet period %v + DRAIN_TIMEOUT %q does not fit in the %ds grace period", svc.Name, queueProxyQuietPeriod, env["DRAIN_TIMEOUT"], *spec.TimeoutSeconds)
		}
		// Deduplication is per process: every redelivery must meet the same pod.
		ann := svc.Spec.Template.Annotations
		if ann[autoscaling.MinScaleAnnotationKey] != "0" || ann[autoscaling.MaxScaleAnnotationKey] != "1" {
			t.Errorf("%s: min-scale %q max-scale %q; want 0 and 1", svc.Name, ann[autoscaling.MinScaleAnnotationKey], ann[autoscaling.MaxScaleAnnotationKey])
		}

		// The webhook URL: a whole Secret volume at the file's directory,
		// written by an ExternalSecret of this mode with that one key.
		file := env["WEBHOOK_URL_FILE"]
		var secretName string
		for _, m := range c.VolumeMounts {
			if m.MountPath != path.Dir(file) {
				continue
			}
			if !m.ReadOnly || m.SubPath != "" || m.SubPathExpr != "" {
				t.Errorf("%s: the webhook mount must be read-only and whole (no subPath): %+v", svc.Name, m)
			}
			for _, v := range spec.Volumes {
				if v.Name == m.Name && v.Secret != nil && v.Secret.Items == nil {
					secretName = v.Secret.SecretName
				}
			}
		}
		if file == "" || secretName == "" {
			t.Fatalf("%s: no whole Secret volume mounted at the directory of WEBHOOK_URL_FILE=%q", svc.Name, file)
		}
		if slices.ContainsFunc(servers[mode].Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
			return v.Secret != nil && v.Secret.SecretName == secretName
		}) {
			t.Errorf("%s mounts the server's Secret %s; the notifier gets the webhook URL only", svc.Name, secretName)
		}
		es := writerOf(t, externals, svc.Name, secretName)
		if d := es.Spec.Data; len(d) != 1 || d[0].SecretKey != path.Base(file) || !strings.HasSuffix(d[0].RemoteRef.Key, "/"+mode) {
			t.Errorf("%s writes %+v; want the one key %s from the %s AWS secret", es.Metadata.Name, d, path.Base(file), mode)
		}
		if store := es.Spec.SecretStoreRef; store.Kind != "SecretStore" || !strings.HasSuffix(store.Name, "-"+mode) {
			t.Errorf("%s reads through %s %s, not the %s mode's SecretStore", es.Metadata.Name, store.Kind, store.Name, mode)
		}

		sa := accounts[spec.ServiceAccountName]
		if sa == nil || sa.Name == servers[mode].Spec.Template.Spec.ServiceAccountName {
			t.Errorf("%s runs as %q; want a ServiceAccount of its own from these manifests", svc.Name, spec.ServiceAccountName)
		}

		// One Trigger per notified step on this mode's Broker.
		var broker string
		for _, b := range bindings {
			if b.Spec.Subject.Name == serviceName(mode) {
				broker = b.Spec.Sink.Ref.Name
			}
		}
		var steps []string
		for _, tr := range triggers {
			ref := tr.Spec.Subscriber.Ref
			if ref == nil || ref.Name != svc.Name {
				continue
			}
			if ref.Kind != "Service" || ref.APIVersion != servingv1.SchemeGroupVersion.String() || tr.Spec.Subscriber.URI != nil {
				t.Errorf("Trigger %s delivers to %+v %v; want the notifier Service's root path", tr.Name, ref, tr.Spec.Subscriber.URI)
			}
			if tr.Spec.Broker != broker {
				t.Errorf("Trigger %s listens on %q; want the Broker %s's events go to (%q)", tr.Name, tr.Spec.Broker, serviceName(mode), broker)
			}
			attrs := map[string]string{}
			if tr.Spec.Filter != nil {
				attrs = tr.Spec.Filter.Attributes
			}
			if len(tr.Spec.Filters) > 0 || len(attrs) != 2 || attrs["type"] != audit.StepEventType {
				t.Errorf("Trigger %s filters %v %v; want exactly type=%s and a subject", tr.Name, attrs, tr.Spec.Filters, audit.StepEventType)
			}
			steps = append(steps, attrs["subject"])
			checkNotifierDelivery(t, tr, budget)
		}
		slices.Sort(steps)
		if !slices.Equal(steps, notifiedSteps) {
			t.Errorf("Triggers deliver the steps %v to %s; want one Trigger for each of %v", steps, svc.Name, notifiedSteps)
		}
	}
}

// checkNotifierDelivery: a notification is redelivered for minutes with
// backoff, and each attempt waits longer than the notifier's own retries.
func checkNotifierDelivery(t *testing.T, tr *eventingv1.Trigger, budget time.Duration) {
	t.Helper()
	d := tr.Spec.Delivery
	if d == nil || d.Retry == nil || *d.Retry < 3 || d.BackoffPolicy == nil || *d.BackoffPolicy != eventingduckv1.BackoffPolicyExponential {
		t.Errorf("Trigger %s: delivery %+v; want retries with exponential backoff", tr.Name, d)
		return
	}
	m := isoSeconds.FindStringSubmatch(ptrValue(d.Timeout))
	if m == nil {
		t.Errorf("Trigger %s: delivery timeout %q; want PT<n>S", tr.Name, ptrValue(d.Timeout))
		return
	}
	secs, _ := strconv.Atoi(m[1])
	if timeout := time.Duration(secs) * time.Second; timeout <= budget+5*time.Second {
		t.Errorf("Trigger %s: an attempt times out after %v, within the notifier's retry budget %v plus a cold start; the Broker would give up on a delivery still in progress", tr.Name, timeout, budget)
	}
}

func ptrValue(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// TestNotifierNetworkPolicy evaluates the policies that select each mode's
// notifier pods: only the Knative data path reaches queue-proxy; out, only
// DNS and HTTPS to public addresses (the webhook), never the cluster's
// backends, Redis or Broker, a private address or the cloud metadata
// service. The server's policy does not select the notifier, nor the other
// way round.
func TestNotifierNetworkPolicy(t *testing.T) {
	cfg := knativetest.Config(t, nil)
	docs := loadManifests(t, manifestDir)
	svcs := admittedServices(t, cfg, resolved(docs))
	all := objectsOf[networkingv1.NetworkPolicy](t, docs, networkingv1.SchemeGroupVersion.WithKind("NetworkPolicy"))
	servers := serverServices(t, docs)

	podOf := func(name string) endpoint {
		tmpl := knativetest.Deployment(t, cfg, knativetest.Revision(t, cfg, svcs[name])).Spec.Template
		return endpoint{name: name + " pod", namespace: projectNamespace, labels: tmpl.Labels}
	}
	for _, mode := range modes {
		pod, server := podOf(notifierName(mode)), podOf(serviceName(mode))
		var policies []*networkingv1.NetworkPolicy
		for _, p := range all {
			sel := selector(t, &p.Spec.PodSelector)
			if p.Namespace != projectNamespace || !sel.Matches(labels.Set(pod.labels)) {
				continue
			}
			if sel.Matches(labels.Set(server.labels)) {
				t.Errorf("NetworkPolicy %s selects both %s and the server's pods", p.Name, notifierName(mode))
			}
			if !slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
				t.Errorf("NetworkPolicy %s: policyTypes %v; both directions must be isolated", p.Name, p.Spec.PolicyTypes)
			}
			policies = append(policies, p)
		}
		if len(policies) == 0 {
			t.Fatalf("no NetworkPolicy selects the %s pods (labels %v)", notifierName(mode), pod.labels)
		}
		userPort := int(svcs[notifierName(mode)].Spec.Template.Spec.GetContainer().Ports[0].ContainerPort)
		podCfg := loadPodConfig(t, docs, servers[mode])

		type conn struct {
			ingress bool
			peer    endpoint
			proto   corev1.Protocol
			port    int
			want    bool
		}
		conns := []conn{
			{true, activator, corev1.ProtocolTCP, networking.BackendHTTPPort, true},
			{true, gateway, corev1.ProtocolTCP, networking.BackendHTTPPort, true},
			{true, autoscaler, corev1.ProtocolTCP, networking.AutoscalingQueueMetricsPort, true},
			{true, activator, corev1.ProtocolTCP, userPort, false},
			{true, gateway, corev1.ProtocolTCP, userPort, false},
			{true, stranger, corev1.ProtocolTCP, networking.BackendHTTPPort, false},
			{true, server, corev1.ProtocolTCP, networking.BackendHTTPPort, false},
			{true, server, corev1.ProtocolTCP, userPort, false},
			{false, kubeDNS, corev1.ProtocolUDP, 53, true},
			{false, kubeDNS, corev1.ProtocolTCP, 53, true},
			{false, endpoint{name: "public webhook", ip: "203.0.113.10"}, corev1.ProtocolTCP, 443, true},
			{false, endpoint{name: "public address, plain HTTP", ip: "203.0.113.10"}, corev1.ProtocolTCP, 80, false},
			{false, endpoint{name: "cloud metadata", ip: "169.254.169.254"}, corev1.ProtocolTCP, 80, false},
			{false, endpoint{name: "a private address", ip: "10.1.2.3"}, corev1.ProtocolTCP, 443, false},
			{false, stranger, corev1.ProtocolTCP, 8080, false},
		}
		trade, _ := inCluster(t, podCfg.Backends.TradeURL, "app.kubernetes.io/name")
		redis, redisPort := inCluster(t, podCfg.RedisURL, "app.kubernetes.io/instance")
		sink, _ := inCluster(t, podCfg.Audit.Sink, "app")
		sink.labels = map[string]string{"eventing.knative.dev/brokerRole": "ingress"}
		conns = append(conns,
			conn{false, trade, corev1.ProtocolTCP, backendPodPort, false},
			conn{false, redis, corev1.ProtocolTCP, redisPort, false},
			conn{false, sink, corev1.ProtocolTCP, brokerIngressPodPort, false})
		for _, c := range conns {
			dir := map[bool]string{true: "ingress from", false: "egress to"}[c.ingress]
			if got := allowed(t, policies, c.ingress, c.peer, c.proto, c.port); got != c.want {
				t.Errorf("%s pods: %s %s on %s/%d allowed=%v, want %v", notifierName(mode), dir, c.peer.name, c.proto, c.port, got, c.want)
			}
		}
	}
}
