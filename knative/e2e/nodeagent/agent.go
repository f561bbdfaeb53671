package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/portfolio-mcp/portfolio-mcp/knative/e2e/internal/netns"
)

// agent is the process kubelet plus the Deployment and endpoint controllers.
type agent struct {
	kc      kubernetes.Interface
	node    string
	self    string
	images  map[string]string
	workdir string
	bridge  netns.Bridge
	ips     *ipam
	deploys appslisters.DeploymentLister
	pods    corelisters.PodLister
	svcs    corelisters.ServiceLister
	kick    chan struct{}

	mu      sync.Mutex
	running map[string]*pod // namespace/name
	wg      sync.WaitGroup

	lastEP    map[string]string // what was last written per Service
	lastSlice map[string]string

	// kube-proxy and cluster DNS stand-in (proxy.go).
	eps         corelisters.EndpointsLister
	hostsFile   string
	hostsStatic string
	lastRules   string
	lastHosts   string
	proxyInit   bool
}

// pod is one pod this agent runs.
type pod struct {
	ns, name, deploy string
	uid              types.UID
	spec             corev1.PodSpec
	created          time.Time

	mu          sync.Mutex
	ip          netip.Addr
	nsName      string
	started     time.Time
	containers  []*container
	seen        bool // the Pod was in the informer cache once
	terminating bool
	lastStatus  string
	ctx         context.Context
	cancel      context.CancelFunc
}

type container struct {
	spec     corev1.Container
	cmd      *exec.Cmd
	running  bool
	ready    bool
	restarts int32
	started  time.Time
	waiting  string // reason while not running
	exited   chan struct{}
}

func (a *agent) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// loop reconciles on every informer event and once a second.
func (a *agent) loop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-t.C:
		}
		a.reconcile(ctx)
	}
}

func key(ns, name string) string { return ns + "/" + name }

func (a *agent) reconcile(ctx context.Context) {
	ds, err := a.deploys.List(labels.Everything())
	if err != nil {
		log.Printf("list deployments: %v", err)
		return
	}
	a.mu.Lock()
	byDeploy := map[string][]*pod{}
	for _, p := range a.running {
		// A Pod deleted by someone else (or whose Deployment went) is
		// terminated like the kubelet would.
		obj, err := a.pods.Pods(p.ns).Get(p.name)
		p.mu.Lock()
		if err == nil && obj.UID == p.uid {
			p.seen = true
		}
		gone := p.seen && (apierrors.IsNotFound(err) || (obj != nil && obj.DeletionTimestamp != nil))
		term := p.terminating
		p.mu.Unlock()
		if gone && !term {
			a.terminate(p, false)
			continue
		}
		if !term {
			byDeploy[key(p.ns, p.deploy)] = append(byDeploy[key(p.ns, p.deploy)], p)
		}
	}
	a.mu.Unlock()

	live := map[string]bool{}
	for _, d := range ds {
		k := key(d.Namespace, d.Name)
		live[k] = true
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		have := byDeploy[k]
		for i := int32(len(have)); i < want; i++ {
			a.startPod(ctx, d)
		}
		if extra := len(have) - int(want); extra > 0 {
			// Like the ReplicaSet controller: unready before ready, newest first.
			sort.Slice(have, func(i, j int) bool {
				ri, rj := have[i].isReady(), have[j].isReady()
				if ri != rj {
					return !ri
				}
				return have[i].created.After(have[j].created)
			})
			for _, p := range have[:extra] {
				a.terminate(p, true)
			}
		}
		a.syncDeploymentStatus(ctx, d)
	}
	a.mu.Lock()
	for k, ps := range byDeploy {
		if !live[k] {
			for _, p := range ps {
				a.terminate(p, true)
			}
		}
	}
	ps := make([]*pod, 0, len(a.running))
	for _, p := range a.running {
		ps = append(ps, p)
	}
	a.mu.Unlock()
	for _, p := range ps {
		a.syncPodStatus(ctx, p)
	}
	a.syncEndpoints(ctx)
	a.syncServiceProxy()
}

func randSuffix() string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// startPod creates a Pod for d, bound to this node, and runs it.
func (a *agent) startPod(ctx context.Context, d *appsv1.Deployment) {
	tmpl := d.Spec.Template.DeepCopy()
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        d.Name + "-" + randSuffix(),
			Namespace:   d.Namespace,
			Labels:      tmpl.Labels,
			Annotations: tmpl.Annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID,
				Controller: ptr(true),
			}},
		},
		Spec: tmpl.Spec,
	}
	obj.Spec.NodeName = a.node
	created, err := a.kc.CoreV1().Pods(d.Namespace).Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		log.Printf("create pod for %s/%s: %v", d.Namespace, d.Name, err)
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	p := &pod{
		ns: created.Namespace, name: created.Name, deploy: d.Name, uid: created.UID,
		spec: created.Spec, created: time.Now(), ctx: pctx, cancel: cancel,
	}
	a.mu.Lock()
	a.running[key(p.ns, p.name)] = p
	a.mu.Unlock()
	log.Printf("pod %s/%s: created for deployment %s", p.ns, p.name, d.Name)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.runPod(p); err != nil {
			log.Printf("pod %s/%s: %v", p.ns, p.name, err)
		}
	}()
}

func ptr[T any](v T) *T { return &v }

func (p *pod) isReady() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.readyLocked()
}

func (p *pod) readyLocked() bool {
	if p.terminating || len(p.containers) == 0 {
		return false
	}
	for _, c := range p.containers {
		if !c.running || !c.ready {
			return false
		}
	}
	return true
}

// podDir holds a pod's volumes and container logs.
func (a *agent) podDir(p *pod) string {
	return filepath.Join(a.workdir, "pods", p.ns+"_"+p.name)
}

// runPod gives p a network namespace and address, its volumes, and starts
// its containers and their probes.
func (a *agent) runPod(p *pod) error {
	ip, err := a.ips.alloc()
	if err != nil {
		return err
	}
	id := strings.ReplaceAll(ip.String(), ".", "-")
	nsName := "pod-" + id
	hostIf := "v" + strings.Join(strings.Split(ip.String(), ".")[2:], "x")
	if err := a.bridge.Add(nsName, hostIf, ip); err != nil {
		a.ips.free(ip)
		return err
	}
	dir := a.podDir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	vols, err := a.prepareVolumes(p.ctx, p, dir)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ip, p.nsName, p.started = ip, nsName, time.Now()
	for _, cs := range p.spec.Containers {
		p.containers = append(p.containers, &container{spec: cs, waiting: "ContainerCreating"})
	}
	cs := slices.Clone(p.containers)
	p.mu.Unlock()
	log.Printf("pod %s/%s: network namespace %s, address %s", p.ns, p.name, nsName, ip)
	for _, c := range cs {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.superviseContainer(p, c, vols, dir)
		}()
		if c.spec.ReadinessProbe != nil {
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				a.probeLoop(p, c)
			}()
		}
	}
	a.poke()
	return nil
}

// superviseContainer runs c and restarts it when it exits (restartPolicy
// Always), with the kubelet's doubling back-off, until the pod ends.
func (a *agent) superviseContainer(p *pod, c *container, vols map[string]string, dir string) {
	backoff := 10 * time.Second
	for {
		exited, err := a.startContainer(p, c, vols, dir)
		if err != nil {
			log.Printf("pod %s/%s container %s: %v", p.ns, p.name, c.spec.Name, err)
		}
		a.poke()
		if exited != nil {
			select {
			case <-exited:
			case <-p.ctx.Done():
				return
			}
			p.mu.Lock()
			term := p.terminating
			c.running, c.ready, c.waiting = false, false, "CrashLoopBackOff"
			c.restarts++
			p.mu.Unlock()
			a.poke()
			if term {
				return
			}
			log.Printf("pod %s/%s container %s exited: %v; restarting in %s", p.ns, p.name, c.spec.Name, c.cmd.ProcessState, backoff)
		}
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Minute)
	}
}

// startContainer execs the binary c's image maps to, inside the pod's
// network namespace, as the container's user, with its env and mounts.
func (a *agent) startContainer(p *pod, c *container, vols map[string]string, dir string) (chan struct{}, error) {
	bin, ok := a.images[c.spec.Image]
	if !ok {
		p.mu.Lock()
		c.waiting = "ErrImagePull"
		p.mu.Unlock()
		return nil, fmt.Errorf("no local binary for image %q", c.spec.Image)
	}
	if len(c.spec.Command) > 0 {
		return nil, fmt.Errorf("image %q: command overrides are not supported, only args", c.spec.Image)
	}
	env, err := a.containerEnv(p, c.spec)
	if err != nil {
		p.mu.Lock()
		c.waiting = "CreateContainerConfigError"
		p.mu.Unlock()
		return nil, err
	}
	var binds []string
	for _, m := range c.spec.VolumeMounts {
		src, ok := vols[m.Name]
		if !ok {
			continue
		}
		if m.SubPath != "" {
			src = filepath.Join(src, m.SubPath)
		}
		b := src + ":" + m.MountPath
		if m.ReadOnly {
			b += ":ro"
		}
		binds = append(binds, b)
	}
	uid, gid := runAs(p.spec.SecurityContext, c.spec.SecurityContext)
	argv := append([]string{bin}, c.spec.Args...)
	cmd := netns.Command(p.nsName, append([]string{a.self}, podInitArgs(uid, gid, binds, argv)...)...)
	cmd.Env = env
	logf, err := os.OpenFile(filepath.Join(dir, c.spec.Name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	exited := make(chan struct{})
	p.mu.Lock()
	c.cmd, c.running, c.started, c.waiting, c.exited = cmd, true, time.Now(), "", exited
	c.ready = c.spec.ReadinessProbe == nil
	p.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	return exited, nil
}

// runAs is the uid and gid a container runs as. Images built by ko run as
// the base image's nonroot user (65532) unless the pod says otherwise.
func runAs(psc *corev1.PodSecurityContext, sc *corev1.SecurityContext) (int64, int64) {
	uid, gid := int64(65532), int64(65532)
	if psc != nil {
		if psc.RunAsUser != nil {
			uid = *psc.RunAsUser
		}
		if psc.RunAsGroup != nil {
			gid = *psc.RunAsGroup
		}
	}
	if sc != nil {
		if sc.RunAsUser != nil {
			uid = *sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = *sc.RunAsGroup
		}
	}
	return uid, gid
}

// terminate ends p the way the kubelet does: out of the endpoints first,
// then preStop hooks, SIGTERM, the grace period, SIGKILL; finally the Pod
// object is removed.
func (a *agent) terminate(p *pod, deleteObject bool) {
	p.mu.Lock()
	if p.terminating {
		p.mu.Unlock()
		return
	}
	p.terminating = true
	p.mu.Unlock()
	grace := int64(30)
	if p.spec.TerminationGracePeriodSeconds != nil {
		grace = *p.spec.TerminationGracePeriodSeconds
	}
	log.Printf("pod %s/%s: terminating (grace %ds)", p.ns, p.name, grace)
	a.poke()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx := context.Background()
		if deleteObject {
			if err := a.kc.CoreV1().Pods(p.ns).Delete(ctx, p.name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil && !apierrors.IsNotFound(err) {
				log.Printf("pod %s/%s: delete: %v", p.ns, p.name, err)
			}
		}
		a.stopContainers(p, time.Duration(grace)*time.Second)
		p.cancel()
		p.mu.Lock()
		nsName, ip := p.nsName, p.ip
		p.mu.Unlock()
		if nsName != "" {
			if err := netns.Delete(nsName); err != nil {
				log.Printf("pod %s/%s: %v", p.ns, p.name, err)
			}
			a.ips.free(ip)
		}
		err := a.kc.CoreV1().Pods(p.ns).Delete(ctx, p.name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr(int64(0)),
			Preconditions:      &metav1.Preconditions{UID: &p.uid},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			log.Printf("pod %s/%s: final delete: %v", p.ns, p.name, err)
		}
		a.mu.Lock()
		delete(a.running, key(p.ns, p.name))
		a.mu.Unlock()
		log.Printf("pod %s/%s: gone", p.ns, p.name)
		a.poke()
	}()
}

// stopContainers stops every container the way the kubelet's
// killContainer does, all containers in parallel: each runs its own preStop
// hook (if any) and then gets SIGTERM, so a container without a hook
// (queue-proxy) is signalled at once while the user container's hook (its
// /wait-for-drain call to queue-proxy) blocks. Whatever still runs at the
// end of the grace period gets SIGKILL.
func (a *agent) stopContainers(p *pod, grace time.Duration) {
	deadline := time.Now().Add(grace)
	p.mu.Lock()
	cs := slices.Clone(p.containers)
	ip := p.ip
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			defer cancel()
			if h := c.spec.Lifecycle; h != nil && h.PreStop != nil && h.PreStop.HTTPGet != nil {
				if _, err := httpProbe(ctx, ip, p, h.PreStop.HTTPGet); err != nil {
					log.Printf("pod %s/%s container %s preStop: %v", p.ns, p.name, c.spec.Name, err)
				}
			}
			p.mu.Lock()
			cmd, exited, running := c.cmd, c.exited, c.running
			p.mu.Unlock()
			if !running || cmd == nil || cmd.Process == nil {
				return
			}
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-ctx.Done():
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			}
		}()
	}
	wg.Wait()
}

// shutdownAll stops every pod on exit (SIGTERM, a short grace).
func (a *agent) shutdownAll() {
	a.mu.Lock()
	ps := make([]*pod, 0, len(a.running))
	for _, p := range a.running {
		ps = append(ps, p)
	}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.mu.Lock()
			p.terminating = true
			p.mu.Unlock()
			a.stopContainers(p, 2*time.Second)
			p.cancel()
			if p.nsName != "" {
				_ = netns.Delete(p.nsName)
			}
		}()
	}
	wg.Wait()
}

// ipam hands out addresses of a prefix. It never reuses one within a run,
// so no neighbour (ARP) cache entry of a gone pod can point at a new one.
type ipam struct {
	mu   sync.Mutex
	next netip.Addr
	pfx  netip.Prefix
}

func newIPAM(p netip.Prefix) *ipam { return &ipam{pfx: p, next: p.Addr().Next()} }

func (m *ipam) alloc() (netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.pfx.Contains(m.next) {
		return netip.Addr{}, fmt.Errorf("pod range %s exhausted", m.pfx)
	}
	a := m.next
	m.next = m.next.Next()
	return a, nil
}

func (m *ipam) free(netip.Addr) {}
