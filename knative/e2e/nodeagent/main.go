// Command nodeagent stands in for the kubelet (and for the Deployment,
// ReplicaSet and EndpointSlice controllers of kube-controller-manager) on a
// single machine, for the opt-in end-to-end job scripts/e2e-knative.sh.
//
// For every Deployment it keeps spec.replicas Pods: it creates the Pod
// object (already bound to this node), gives the pod its own network
// namespace and address on a bridge, runs each container's image as a
// process (an image reference maps to a local binary, see -images), probes
// readiness like the kubelet, writes Pod and Deployment status, and on
// deletion runs preStop hooks, sends SIGTERM and removes the namespace.
// For every Service with a selector it keeps the Endpoints and an
// EndpointSlice current from the Pods it selects.
//
// Usage (as root): nodeagent -kubeconfig FILE -images FILE -workdir DIR
//
//	nodeagent podinit ...   (internal: the step that execs a container)
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/portfolio-mcp/portfolio-mcp/knative/e2e/internal/netns"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "podinit" {
		if err := podInit(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(127)
		}
		return
	}
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the API server")
	images := flag.String("images", "", "file of image=binary lines: which local binary an image reference runs")
	workdir := flag.String("workdir", "", "directory for pod volumes and logs (must be traversable by uid 65532)")
	node := flag.String("node", "e2e-node", "node name pods are bound to")
	bridge := flag.String("bridge", "kn0", "host bridge")
	bridgeCIDR := flag.String("bridge-cidr", "10.200.0.1/16", "bridge address; pods get addresses in its subnet")
	podRange := flag.String("pod-range", "10.200.2.0/23", "addresses handed to pods")
	hostsFile := flag.String("hosts-file", "", "stand in for kube-proxy and cluster DNS: program iptables for ClusterIPs and write Service names into this file (bind-mounted on /etc/hosts); empty: off")
	flag.Parse()

	imageMap, err := readImages(*images)
	if err != nil {
		return err
	}
	bp, err := netip.ParsePrefix(*bridgeCIDR)
	if err != nil {
		return err
	}
	pr, err := netip.ParsePrefix(*podRange)
	if err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 200, 400
	// Knative reads v1 Endpoints; the deprecation warning is known.
	cfg.WarningHandler = rest.NoWarnings{}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	f := informers.NewSharedInformerFactory(kc, 0)
	a := &agent{
		kc:      kc,
		node:    *node,
		self:    self,
		images:  imageMap,
		workdir: *workdir,
		bridge:  netns.Bridge{Name: *bridge, Prefix: bp},
		ips:     newIPAM(pr),
		deploys: f.Apps().V1().Deployments().Lister(),
		pods:    f.Core().V1().Pods().Lister(),
		svcs:    f.Core().V1().Services().Lister(),
		kick:    make(chan struct{}, 1),
		running: map[string]*pod{},
		eps:     f.Core().V1().Endpoints().Lister(),
	}
	if *hostsFile != "" {
		b, err := os.ReadFile(*hostsFile)
		if err != nil {
			return err
		}
		a.hostsFile, a.hostsStatic = *hostsFile, string(b)
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.poke() },
		UpdateFunc: func(any, any) { a.poke() },
		DeleteFunc: func(any) { a.poke() },
	}
	for _, inf := range []cache.SharedIndexInformer{
		f.Apps().V1().Deployments().Informer(),
		f.Core().V1().Pods().Informer(),
		f.Core().V1().Services().Informer(),
		f.Core().V1().Endpoints().Informer(),
	} {
		if _, err := inf.AddEventHandler(h); err != nil {
			return err
		}
	}
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	log.Printf("nodeagent: node %s, %d images, pods in %s", *node, len(imageMap), pr)
	a.loop(ctx)
	a.shutdownAll()
	return nil
}

// readImages reads image=binary lines (# comments allowed).
func readImages(path string) (map[string]string, error) {
	m := map[string]string{}
	if path == "" {
		return m, nil
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		img, bin, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: bad line %q", path, line)
		}
		m[strings.TrimSpace(img)] = strings.TrimSpace(bin)
	}
	return m, sc.Err()
}
