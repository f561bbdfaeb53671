package knativetest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Pod is a private network namespace standing in for a Kubernetes pod's:
// its own loopback and an address of its own (the pod IP) on it, so the
// fixed ports of Knative's queue-proxy (8012, 8022, 9090, 9091) and the
// server's containerPort never clash with anything else on the machine.
// Processes started in it share it, as a pod's containers do.
//
// The namespace belongs to one goroutine locked to its OS thread: that
// thread alone entered it (unshare affects the calling thread only), and
// everything that must happen inside (starting a process, opening a
// socket) runs there. The thread is never unlocked, so Go retires it when
// the test ends instead of running other goroutines in the pod.
type Pod struct {
	// Name is the pod's name (metadata.name) and IP its address
	// (status.podIP).
	Name, IP string

	calls chan func()
}

// NewPod makes a network namespace with loopback up and ip on it. Where
// this machine cannot (no root, no CAP_SYS_ADMIN, no iproute2), the test
// is skipped with one line saying so; under CI (CI set) it fails instead.
func NewPod(tb testing.TB, name, ip string) *Pod {
	tb.Helper()
	p := &Pod{Name: name, IP: ip, calls: make(chan func())}
	entered := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see Pod
		if err := unshareNetwork(); err != nil {
			entered <- err
			return
		}
		entered <- nil
		for f := range p.calls {
			f()
		}
	}()
	err := <-entered
	if err == nil {
		tb.Cleanup(func() { close(p.calls) })
		err = p.setUp()
	}
	if err != nil {
		msg := fmt.Sprintf("no private network namespace for a pod on this machine (needs root with CAP_SYS_ADMIN and iproute2's ip): %v", err)
		if os.Getenv("CI") != "" {
			tb.Fatal(msg + " (CI is set, so this is a failure, not a skip)")
		}
		tb.Skip(msg)
	}
	return p
}

// setUp brings loopback up and puts the pod address on it.
func (p *Pod) setUp() error {
	if _, err := exec.LookPath("ip"); err != nil {
		return err
	}
	for _, args := range [][]string{{"link", "set", "lo", "up"}, {"addr", "add", p.IP + "/32", "dev", "lo"}} {
		var out []byte
		var err error
		p.do(func() { out, err = exec.Command("ip", args...).CombinedOutput() })
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// do runs f on the thread that is inside the namespace, and waits for it.
func (p *Pod) do(f func()) {
	done := make(chan struct{})
	p.calls <- func() {
		defer close(done)
		f()
	}
	<-done
}

// DialContext opens a connection from inside the pod. Connecting happens
// on the pod's one thread, so dials are serial; on loopback that is quick.
func (p *Pod) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	p.do(func() { c, err = (&net.Dialer{}).DialContext(ctx, network, addr) })
	return c, err
}

// Listen opens a listener inside the pod.
func (p *Pod) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	var err error
	p.do(func() { ln, err = net.Listen(network, addr) })
	return ln, err
}

// HTTPClient returns a client whose every connection goes to addr inside
// the pod (the pod IP and a port), whatever host the request URL names:
// what Knative's ingress and activator do, which keep the route's Host and
// connect to the pod. Connections are not reused, so each request in
// flight has a connection of its own.
func (p *Pod) HTTPClient(addr string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return p.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}}
}

// Egress makes the host-side TCP address hostAddr (such as a test server
// on 127.0.0.1) reachable from inside the pod at the same address, the way
// a cluster routes a pod's egress: a listener in the pod whose connections
// are spliced to hostAddr, dialled from outside.
func (p *Pod) Egress(tb testing.TB, hostAddr string) {
	tb.Helper()
	ln, err := p.Listen("tcp", hostAddr)
	if err != nil {
		tb.Fatalf("egress to %s: %v", hostAddr, err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.Dial("tcp", hostAddr)
				if err != nil {
					return
				}
				defer out.Close()
				go func() {
					io.Copy(out, in)
					out.(*net.TCPConn).CloseWrite()
				}()
				io.Copy(in, out)
			}()
		}
	}()
}

// Fields resolves the downward-API fields Knative's pod spec reads
// (fieldRef) for this pod.
func (p *Pod) Fields() map[string]string {
	return map[string]string{"metadata.name": p.Name, "status.podIP": p.IP, "status.hostIP": p.IP}
}

// Env is the environment the kubelet gives container c in pod p: its
// values, and its fieldRefs resolved. Any other source fails the test, so
// a Knative upgrade that adds one is noticed.
func (p *Pod) Env(tb testing.TB, c *corev1.Container) map[string]string {
	tb.Helper()
	fields := p.Fields()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && fields[e.ValueFrom.FieldRef.FieldPath] != "":
			env[e.Name] = fields[e.ValueFrom.FieldRef.FieldPath]
		default:
			tb.Fatalf("container %s: env %s comes from %+v, which this pod cannot provide", c.Name, e.Name, e.ValueFrom)
		}
	}
	return env
}

// failureLogLines is how much of a process's output a failed test logs:
// its end, where the failure usually is.
const failureLogLines = 60

// Process is a program running in a pod.
type Process struct {
	Name string

	cmd  *exec.Cmd
	mu   sync.Mutex
	out  []string
	done chan struct{}
	err  error
}

// Start runs path in the pod with exactly env (no variable of the test's
// own), collecting its output lines. A process still running when the
// test ends is killed; its output is logged if the test failed.
func (p *Pod) Start(tb testing.TB, name, path string, env map[string]string, args ...string) *Process {
	tb.Helper()
	pr := &Process{Name: name, cmd: exec.Command(path, args...), done: make(chan struct{})}
	for k, v := range env {
		pr.cmd.Env = append(pr.cmd.Env, k+"="+v)
	}
	r, w := io.Pipe()
	pr.cmd.Stdout, pr.cmd.Stderr = w, w
	var err error
	p.do(func() { err = pr.cmd.Start() })
	if err != nil {
		tb.Fatalf("starting %s in the pod: %v", name, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			pr.mu.Lock()
			pr.out = append(pr.out, sc.Text())
			pr.mu.Unlock()
		}
	}()
	go func() {
		err := pr.cmd.Wait()
		w.Close()
		<-scanned
		pr.mu.Lock()
		pr.err = err
		pr.mu.Unlock()
		close(pr.done)
	}()
	tb.Cleanup(func() {
		select {
		case <-pr.done:
		default:
			pr.cmd.Process.Kill()
			<-pr.done
		}
		if tb.Failed() {
			lines := pr.Lines()
			if len(lines) > failureLogLines {
				lines = append([]string{"..."}, lines[len(lines)-failureLogLines:]...)
			}
			tb.Logf("%s output:\n%s", name, strings.Join(lines, "\n"))
		}
	})
	return pr
}

// Signal sends sig to the process.
func (pr *Process) Signal(sig os.Signal) error { return pr.cmd.Process.Signal(sig) }

// Done is closed once the process has exited and its output is read.
func (pr *Process) Done() <-chan struct{} { return pr.done }

// Wait waits up to timeout for the process to exit and returns its exit
// status (nil: exit code 0).
func (pr *Process) Wait(timeout time.Duration) error {
	select {
	case <-pr.done:
		pr.mu.Lock()
		defer pr.mu.Unlock()
		return pr.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %v", pr.Name, timeout)
	}
}

// Lines returns the output lines so far.
func (pr *Process) Lines() []string {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return append([]string(nil), pr.out...)
}

// Output returns the output so far as one text.
func (pr *Process) Output() string { return strings.Join(pr.Lines(), "\n") }
