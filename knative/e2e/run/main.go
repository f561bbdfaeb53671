// Command run is the opt-in end-to-end job behind scripts/e2e-knative.sh:
// on one machine, with no cluster, it runs etcd, kube-apiserver and Knative
// Serving's controller, webhook, autoscaler and activator as processes,
// applies knative/ as `ko apply` would, runs pods with the node agent
// (knative/e2e/nodeagent), and measures a cold start through the
// activator, a burst scaled out by the KPA, the scale back to zero and the
// pre-warm job's min-scale. It must run as root inside
// `unshare --net --mount` (the script does that).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	apiext "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	servingclient "knative.dev/serving/pkg/client/clientset/versioned"

	"github.com/portfolio-mcp/portfolio-mcp/knative/e2e/internal/netns"
)

type runner struct {
	bin, work, repo string
	dirs            moduleDirs
	bridge          netns.Bridge
	pki             *pki
	adminToken      string
	adminKubeconfig string
	kc              kubernetes.Interface
	ext             apiext.Interface
	dyn             dynamic.Interface
	sv              servingclient.Interface
	mapper          *restmapper.DeferredDiscoveryRESTMapper
	iss             *issuer
	started         time.Time
	opts            options
}

type moduleDirs struct {
	serving, networking, caching, eventing, eso string
}

type options struct {
	service       string
	burstClients  int
	burstDuration time.Duration
	prewarmNow    string
	summary       string
	timeline      string
}

func (r *runner) logf(format string, args ...any) {
	fmt.Printf("[%7.1fs] %s\n", time.Since(r.started).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	r := &runner{started: time.Now()}
	flag.StringVar(&r.bin, "bin", "", "directory of the built binaries")
	flag.StringVar(&r.work, "work", "", "work directory (logs, etcd data, pods)")
	flag.StringVar(&r.repo, "repo", "", "the portfolio-mcp repository (knative/ manifests)")
	flag.StringVar(&r.dirs.serving, "serving-dir", "", "knative.dev/serving module directory (config/)")
	flag.StringVar(&r.dirs.networking, "networking-dir", "", "knative.dev/networking module directory")
	flag.StringVar(&r.dirs.caching, "caching-dir", "", "knative.dev/caching module directory")
	flag.StringVar(&r.dirs.eventing, "eventing-dir", "", "knative.dev/eventing module directory (CRDs only)")
	flag.StringVar(&r.dirs.eso, "eso-dir", "", "external-secrets module directory (CRDs only)")
	flag.StringVar(&r.opts.service, "service", "portfolio-mcp-live", "Knative Service to measure")
	flag.IntVar(&r.opts.burstClients, "burst-clients", 120, "concurrent MCP clients in the burst")
	flag.DurationVar(&r.opts.burstDuration, "burst", 60*time.Second, "burst length")
	flag.StringVar(&r.opts.prewarmNow, "prewarm-now", "2026-03-10T09:20:00-04:00", "instant the pre-warm job pretends it is (inside the session window)")
	flag.StringVar(&r.opts.summary, "summary", "", "write the summary table here too")
	flag.StringVar(&r.opts.timeline, "timeline", "", "write pods over time (CSV) here")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := r.run(ctx)
	stopAll()
	if err != nil {
		log.Fatalf("e2e: %v", err)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// system process addresses: each Knative component gets its own network
// namespace (their fixed ports 8008/9090 would clash otherwise), except the
// activator, which runs in the host namespace with the API server.
var sysIPs = map[string]string{
	"webhook":    "10.200.1.2",
	"controller": "10.200.1.3",
	"autoscaler": "10.200.1.4",
}

func (r *runner) run(ctx context.Context) error {
	for _, d := range []string{"logs", "etc", "pods", "images"} {
		if err := os.MkdirAll(filepath.Join(r.work, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(r.work, 0o755); err != nil {
		return err
	}
	r.bridge = netns.Bridge{Name: "kn0", Prefix: netip.MustParsePrefix("10.200.0.1/16")}
	gw := r.bridge.Gateway().String()
	var err error
	if r.pki, err = newPKI("login.example.com"); err != nil {
		return err
	}
	hosts := map[string]string{
		"login.example.com": gw,
		"kubernetes.default.svc.cluster.local kubernetes.default.svc kubernetes.default kubernetes": gw,
		"activator-service.knative-serving.svc.cluster.local activator-service.knative-serving.svc": gw,
		"autoscaler.knative-serving.svc.cluster.local autoscaler.knative-serving.svc":               sysIPs["autoscaler"],
		"webhook.knative-serving.svc.cluster.local webhook.knative-serving.svc":                     sysIPs["webhook"],
		"controller.knative-serving.svc.cluster.local controller.knative-serving.svc":               sysIPs["controller"],
	}
	if err := r.privateMounts(hostsFile(hosts), r.pki.caPEM); err != nil {
		return err
	}
	if err := r.bridge.Setup(); err != nil {
		return err
	}
	// Routed (DNATed) Service traffic crosses the host namespace.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return err
	}
	r.logf("network: bridge %s %s, private /run, /etc/hosts, resolv.conf, CA bundle", r.bridge.Name, r.bridge.Prefix)

	r.iss = &issuer{url: "https://login.example.com/", key: r.pki.issuerSigner, kid: "e2e-" + randHex(4)}
	if _, err := r.iss.serve(gw+":443", r.pki.issuerTLS); err != nil {
		return err
	}

	// Control plane.
	if err := r.startEtcd(ctx); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	r.logf("etcd ready")
	r.adminToken = randHex(16)
	if err := r.startAPIServer(ctx); err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	r.adminKubeconfig = filepath.Join(r.work, "admin.kubeconfig")
	if err := r.kubeconfig(r.adminKubeconfig, r.adminToken); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", r.adminKubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100, 200
	r.kc = kubernetes.NewForConfigOrDie(cfg)
	r.ext = apiext.NewForConfigOrDie(cfg)
	r.dyn = dynamic.NewForConfigOrDie(cfg)
	r.sv = servingclient.NewForConfigOrDie(cfg)
	newMapper(r)
	r.logf("kube-apiserver ready at https://%s:6443 (export KUBECONFIG=%s)", gw, r.adminKubeconfig)

	// Images: the binaries, content-addressed (see koResolve).
	binaries := map[string]string{}
	for imp, name := range map[string]string{
		"knative.dev/serving/cmd/queue":                            "queue",
		"github.com/portfolio-mcp/portfolio-mcp/cmd/portfolio-mcp": "portfolio-mcp",
		"github.com/portfolio-mcp/portfolio-mcp/cmd/notifier":      "notifier",
		"github.com/portfolio-mcp/portfolio-mcp/cmd/prewarm":       "prewarm",
	} {
		// Copied where uid 65532 can execute them ($HOME is not).
		dst := filepath.Join(r.work, "images", name)
		if err := copyFile(filepath.Join(r.bin, name), dst); err != nil {
			return err
		}
		binaries[imp] = dst
	}

	refs, images, err := imageRefs(binaries)
	if err != nil {
		return err
	}
	imgFile := filepath.Join(r.work, "images.txt")
	if err := imagesFile(imgFile, images); err != nil {
		return err
	}
	if err := r.installServing(ctx, refs, imgFile); err != nil {
		return err
	}
	if err := r.applyProject(ctx, refs); err != nil {
		return err
	}
	return r.scenario(ctx)
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

func imagesFile(path string, images map[string]string) error {
	var b strings.Builder
	for ref, bin := range images {
		fmt.Fprintf(&b, "%s=%s\n", ref, bin)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
