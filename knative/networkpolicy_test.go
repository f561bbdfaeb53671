package knative

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/knativetest"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"knative.dev/serving/pkg/networking"
)

// endpoint is one side of a connection as NetworkPolicy sees it: a pod
// (namespace and labels) or, outside the cluster, an IP address.
type endpoint struct {
	name      string // for messages
	namespace string
	labels    map[string]string
	ip        string
}

// The platform's pods, labelled as Knative, Kourier and Kubernetes label
// them (knative.dev/serving config/core/deployments, net-kourier,
// kube-dns).
var (
	activator  = endpoint{name: "activator", namespace: "knative-serving", labels: map[string]string{"app": "activator", "role": "activator"}}
	autoscaler = endpoint{name: "autoscaler", namespace: "knative-serving", labels: map[string]string{"app": "autoscaler"}}
	gateway    = endpoint{name: "kourier gateway", namespace: "kourier-system", labels: map[string]string{"app": "3scale-kourier-gateway"}}
	prom       = endpoint{name: "prometheus", namespace: "monitoring", labels: map[string]string{"app.kubernetes.io/name": "prometheus"}}
	kubeDNS    = endpoint{name: "kube-dns", namespace: "kube-system", labels: map[string]string{"k8s-app": "kube-dns"}}
	stranger   = endpoint{name: "a pod in default", namespace: "default", labels: map[string]string{"app": "x"}}
)

// backendPodPort is the container port of the firm's backends behind their
// Services (an assumption documented in the policy and docs/deploy.md).
const backendPodPort = 8080

// brokerIngressPodPort is the container port of Knative Eventing's
// multi-tenant broker ingress (config/brokers/mt-channel-broker).
const brokerIngressPodPort = 8080

// peerMatches applies NetworkPolicy's peer semantics to e, for a policy in
// namespace ns.
func peerMatches(t *testing.T, p networkingv1.NetworkPolicyPeer, ns string, e endpoint) bool {
	t.Helper()
	if p.IPBlock != nil {
		ip := net.ParseIP(e.ip)
		if ip == nil {
			return false
		}
		if !cidrContains(t, p.IPBlock.CIDR, ip) {
			return false
		}
		for _, ex := range p.IPBlock.Except {
			if cidrContains(t, ex, ip) {
				return false
			}
		}
		return true
	}
	if e.ip != "" {
		return false // pod and namespace selectors never match outside addresses
	}
	nsOK := e.namespace == ns
	if p.NamespaceSelector != nil {
		nsOK = selector(t, p.NamespaceSelector).Matches(labels.Set{corev1.LabelMetadataName: e.namespace})
	}
	podOK := true
	if p.PodSelector != nil {
		podOK = selector(t, p.PodSelector).Matches(labels.Set(e.labels))
	}
	return nsOK && podOK
}

func cidrContains(t *testing.T, cidr string, ip net.IP) bool {
	t.Helper()
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatalf("bad CIDR %q: %v", cidr, err)
	}
	return n.Contains(ip)
}

func selector(t *testing.T, s *metav1.LabelSelector) labels.Selector {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Fatalf("bad selector %v: %v", s, err)
	}
	return sel
}

// portMatches applies NetworkPolicy's port semantics (no ports: all;
// protocol defaults to TCP; numeric ports and ranges).
func portMatches(ports []networkingv1.NetworkPolicyPort, proto corev1.Protocol, port int) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		pp := corev1.ProtocolTCP
		if p.Protocol != nil {
			pp = *p.Protocol
		}
		if pp != proto {
			continue
		}
		if p.Port == nil {
			return true
		}
		lo := p.Port.IntValue()
		hi := lo
		if p.EndPort != nil {
			hi = int(*p.EndPort)
		}
		if lo != 0 && port >= lo && port <= hi {
			return true
		}
	}
	return false
}

// allowed reports whether any of the policies admits a connection with the
// peer e on proto/port, in the given direction.
func allowed(t *testing.T, policies []*networkingv1.NetworkPolicy, ingress bool, e endpoint, proto corev1.Protocol, port int) bool {
	t.Helper()
	for _, p := range policies {
		if ingress {
			for _, r := range p.Spec.Ingress {
				if peersMatch(t, r.From, p.Namespace, e) && portMatches(r.Ports, proto, port) {
					return true
				}
			}
		} else {
			for _, r := range p.Spec.Egress {
				if peersMatch(t, r.To, p.Namespace, e) && portMatches(r.Ports, proto, port) {
					return true
				}
			}
		}
	}
	return false
}

func peersMatch(t *testing.T, peers []networkingv1.NetworkPolicyPeer, ns string, e endpoint) bool {
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		if peerMatches(t, p, ns, e) {
			return true
		}
	}
	return false
}

// inCluster turns a URL of a cluster Service (name.namespace.svc...) into
// the endpoint of its pods: the namespace, and labels the policy's
// convention gives them (app.kubernetes.io/name or instance = the Service
// name).
func inCluster(t *testing.T, raw string, podLabel string) (endpoint, int) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(u.Hostname(), ".")
	if len(parts) < 3 || parts[2] != "svc" {
		t.Fatalf("%s is not a cluster Service URL (name.namespace.svc...)", raw)
	}
	port, _ := strconv.Atoi(u.Port())
	return endpoint{name: u.Hostname(), namespace: parts[1], labels: map[string]string{podLabel: parts[0]}}, port
}

// TestNetworkPoliciesIsolateThePods evaluates the policies that select
// each mode's pods (as Knative labels them) against the connections the
// deployment needs and a few it must never make: only the Knative data
// path reaches queue-proxy, only Prometheus the server's port; the pods
// reach DNS, their own backends, Redis, Broker and the issuer, and not the
// other mode's, a private address or the cloud metadata service.
func TestNetworkPoliciesIsolateThePods(t *testing.T) {
	cfg := knativetest.Config(t, nil)
	docs := loadManifests(t, manifestDir)
	svcs := admittedServices(t, cfg, resolved(docs))
	all := objectsOf[networkingv1.NetworkPolicy](t, docs, networkingv1.SchemeGroupVersion.WithKind("NetworkPolicy"))
	written := serverServices(t, docs)

	pods := map[string]endpoint{}
	for _, mode := range modes {
		tmpl := knativetest.Deployment(t, cfg, knativetest.Revision(t, cfg, svcs[serviceName(mode)])).Spec.Template
		pods[mode] = endpoint{name: mode + " pod", namespace: projectNamespace, labels: tmpl.Labels}
	}
	other := map[string]string{"paper": "live", "live": "paper"}

	for _, mode := range modes {
		pod := pods[mode]
		var policies []*networkingv1.NetworkPolicy
		for _, p := range all {
			if p.Namespace == projectNamespace && selector(t, &p.Spec.PodSelector).Matches(labels.Set(pod.labels)) {
				policies = append(policies, p)
			}
		}
		if len(policies) == 0 {
			t.Fatalf("no NetworkPolicy selects the %s pods (labels %v)", mode, pod.labels)
		}
		for _, p := range policies {
			var in, out bool
			for _, pt := range p.Spec.PolicyTypes {
				in = in || pt == networkingv1.PolicyTypeIngress
				out = out || pt == networkingv1.PolicyTypeEgress
			}
			if !in || !out {
				t.Errorf("NetworkPolicy %s: policyTypes %v; both directions must be isolated", p.Name, p.Spec.PolicyTypes)
			}
		}
		podCfg := loadPodConfig(t, docs, written[mode])
		userPort := podCfg.Port

		type conn struct {
			peer  endpoint
			proto corev1.Protocol
			port  int
			want  bool
		}
		ingress := []conn{
			{activator, corev1.ProtocolTCP, networking.BackendHTTPPort, true},
			{gateway, corev1.ProtocolTCP, networking.BackendHTTPPort, true},
			{gateway, corev1.ProtocolTCP, networking.BackendHTTP2Port, true},
			{autoscaler, corev1.ProtocolTCP, networking.AutoscalingQueueMetricsPort, true},
			{prom, corev1.ProtocolTCP, userPort, true},
			{prom, corev1.ProtocolTCP, networking.UserQueueMetricsPort, true},
			// The server's port is for Prometheus only: agents and the
			// platform go through queue-proxy.
			{activator, corev1.ProtocolTCP, userPort, false},
			{gateway, corev1.ProtocolTCP, userPort, false},
			{stranger, corev1.ProtocolTCP, networking.BackendHTTPPort, false},
			{stranger, corev1.ProtocolTCP, userPort, false},
			{pods[other[mode]], corev1.ProtocolTCP, networking.BackendHTTPPort, false},
			{pods[other[mode]], corev1.ProtocolTCP, userPort, false},
		}
		for _, c := range ingress {
			if got := allowed(t, policies, true, c.peer, c.proto, c.port); got != c.want {
				t.Errorf("%s pods: ingress from %s on %s/%d allowed=%v, want %v", mode, c.peer.name, c.proto, c.port, got, c.want)
			}
		}

		// What this mode's server dials, from its loaded configuration.
		egress := []conn{
			{kubeDNS, corev1.ProtocolUDP, 53, true},
			{kubeDNS, corev1.ProtocolTCP, 53, true},
			{endpoint{name: "public issuer", ip: "203.0.113.10"}, corev1.ProtocolTCP, 443, true},
			{endpoint{name: "cloud metadata", ip: "169.254.169.254"}, corev1.ProtocolTCP, 443, false},
			{endpoint{name: "cloud metadata", ip: "169.254.169.254"}, corev1.ProtocolTCP, 80, false},
			{endpoint{name: "a private address", ip: "10.1.2.3"}, corev1.ProtocolTCP, 443, false},
			{endpoint{name: "public address, plain HTTP", ip: "203.0.113.10"}, corev1.ProtocolTCP, 80, false},
			{stranger, corev1.ProtocolTCP, 8080, false},
		}
		for _, u := range []string{podCfg.Backends.PortfolioURL, podCfg.Backends.TradeURL, podCfg.Backends.RiskURL} {
			e, _ := inCluster(t, u, "app.kubernetes.io/name")
			egress = append(egress, conn{e, corev1.ProtocolTCP, backendPodPort, true})
		}
		redis, redisPort := inCluster(t, podCfg.RedisURL, "app.kubernetes.io/instance")
		egress = append(egress, conn{redis, corev1.ProtocolTCP, redisPort, true})
		sink, _ := inCluster(t, podCfg.Audit.Sink, "app")
		sink.labels = map[string]string{"eventing.knative.dev/brokerRole": "ingress"}
		egress = append(egress, conn{sink, corev1.ProtocolTCP, brokerIngressPodPort, true})

		// Never the other mode's trade engine or Redis.
		otherCfg := loadPodConfig(t, docs, written[other[mode]])
		otherTrade, _ := inCluster(t, otherCfg.Backends.TradeURL, "app.kubernetes.io/name")
		otherRedis, otherRedisPort := inCluster(t, otherCfg.RedisURL, "app.kubernetes.io/instance")
		egress = append(egress,
			conn{otherTrade, corev1.ProtocolTCP, backendPodPort, false},
			conn{otherRedis, corev1.ProtocolTCP, otherRedisPort, false})

		for _, c := range egress {
			if got := allowed(t, policies, false, c.peer, c.proto, c.port); got != c.want {
				t.Errorf("%s pods: egress to %s on %s/%d allowed=%v, want %v", mode, c.peer.name, c.proto, c.port, got, c.want)
			}
		}
		if iss, err := url.Parse(podCfg.Auth.Issuer); err != nil || iss.Scheme != "https" || (iss.Port() != "" && iss.Port() != "443") {
			t.Errorf("%s: OAUTH_ISSUER %q is not on https:443, the only external egress", mode, podCfg.Auth.Issuer)
		}
	}
}
