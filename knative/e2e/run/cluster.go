package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/knative/e2e/internal/netns"
)

// proc is one process this program started.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// procs are stopped in reverse start order on exit.
var procs []*proc

// start runs argv (in network namespace ns unless ns is empty) with env
// added to a minimal environment, its output in <work>/logs/<name>.log.
func (r *runner) start(name, ns string, env []string, argv ...string) (*proc, error) {
	var cmd *exec.Cmd
	if ns == "" {
		cmd = exec.Command(argv[0], argv[1:]...)
	} else {
		cmd = netns.Command(ns, argv...)
	}
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + r.work}, env...)
	logPath := filepath.Join(r.work, "logs", name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	procs = append(procs, p)
	r.logf("started %s (pid %d), log %s", name, cmd.Process.Pid, logPath)
	return p, nil
}

// stopAll sends SIGTERM to every started process, newest first, and waits
// a few seconds for each before SIGKILL.
func stopAll() {
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		if p.cmd.Process == nil {
			continue
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
}

// privateMounts gives this run its own /run (so `ip netns` names stay
// private), /etc/hosts (the cluster DNS names the system components dial),
// /etc/resolv.conf (the cluster search path; no real resolver, so unknown
// names fail fast) and a CA bundle that also trusts the test issuer. All of
// it lives in the mount namespace `unshare --mount` gave this process.
func (r *runner) privateMounts(hosts string, caPEM []byte) error {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private (run under unshare --mount): %w", err)
	}
	if err := syscall.Mount("tmpfs", "/run", "tmpfs", 0, "mode=755"); err != nil {
		return fmt.Errorf("tmpfs on /run: %w", err)
	}
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return err
	}
	bind := func(content []byte, target string) error {
		src := filepath.Join(r.work, "etc", filepath.Base(target))
		if err := os.WriteFile(src, content, 0o644); err != nil {
			return err
		}
		if err := syscall.Mount(src, target, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", target, err)
		}
		return nil
	}
	if err := bind([]byte(hosts), "/etc/hosts"); err != nil {
		return err
	}
	resolv := "# e2e: cluster search path, no resolver (unknown names fail at once)\nnameserver 127.0.0.1\nsearch portfolio-mcp.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:1\n"
	if err := bind([]byte(resolv), "/etc/resolv.conf"); err != nil {
		return err
	}
	const bundle = "/etc/ssl/certs/ca-certificates.crt"
	sys, err := os.ReadFile(bundle)
	if err != nil {
		return err
	}
	return bind(append(append(sys, '\n'), caPEM...), bundle)
}

// pki is the run's key material.
type pki struct {
	caPEM        []byte
	issuerTLS    tls.Certificate
	saKeyPEM     []byte
	saPubPEM     []byte
	issuerSigner *rsa.PrivateKey
}

func newPKI(hosts ...string) (*pki, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "portfolio-mcp e2e CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: hosts[0]}, DNSNames: hosts,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return nil, err
	}
	iss, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return &pki{
		caPEM:        pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		issuerTLS:    tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey},
		saKeyPEM:     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(sa)}),
		saPubPEM:     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
		issuerSigner: iss,
	}, nil
}

// waitHTTP polls url until it answers 200 or the deadline passes.
func waitHTTP(ctx context.Context, url, token string, d time.Duration, p *proc) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	return poll(ctx, d, func() (bool, error) {
		if p != nil {
			select {
			case <-p.done:
				return false, fmt.Errorf("%s exited (%v); see %s", p.name, p.cmd.ProcessState, p.log)
			default:
			}
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// poll calls f every 100ms until it reports done, fails, or d passes.
func poll(ctx context.Context, d time.Duration, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := f()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return errors.New("interrupted")
			}
			return fmt.Errorf("timed out after %s", d)
		case <-t.C:
		}
	}
}

// startEtcd and startAPIServer bring up the control plane in the host
// namespace: etcd on loopback, kube-apiserver on the bridge address.
func (r *runner) startEtcd(ctx context.Context) error {
	p, err := r.start("etcd", "", nil, filepath.Join(r.bin, "etcd"),
		"--name=e2e", "--data-dir="+filepath.Join(r.work, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=e2e=http://127.0.0.1:2380", "--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return err
	}
	return waitHTTP(ctx, "http://127.0.0.1:2379/health", "", time.Minute, p)
}

func (r *runner) startAPIServer(ctx context.Context) error {
	d := filepath.Join(r.work, "apiserver")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
	}
	files := map[string][]byte{
		"sa.key":     r.pki.saKeyPEM,
		"sa.pub":     r.pki.saPubPEM,
		"tokens.csv": []byte(r.adminToken + ",admin,admin,system:masters\n"),
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(d, n), b, 0o600); err != nil {
			return err
		}
	}
	gw := r.bridge.Gateway().String()
	p, err := r.start("kube-apiserver", "", nil, filepath.Join(r.bin, "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address="+gw, "--advertise-address="+gw, "--secure-port=6443",
		"--cert-dir="+d,
		"--token-auth-file="+filepath.Join(d, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+filepath.Join(d, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(d, "sa.key"),
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=10.96.0.0/16",
		// Admission and conversion webhooks are called on endpoint
		// addresses (there is no kube-proxy for ClusterIPs).
		"--enable-aggregator-routing=true",
		"--profiling=false")
	if err != nil {
		return err
	}
	return waitHTTP(ctx, "https://"+net.JoinHostPort(gw, "6443")+"/readyz", r.adminToken, 3*time.Minute, p)
}

// kubeconfig writes a kubeconfig for token at path.
func (r *runner) kubeconfig(path, token string) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://%s:6443
    insecure-skip-tls-verify: true
users:
- name: u
  user:
    token: %s
contexts:
- name: e2e
  context: {cluster: e2e, user: u}
current-context: e2e
`, r.bridge.Gateway(), token)
	return os.WriteFile(path, []byte(cfg), 0o644)
}

func hostsFile(entries map[string]string) string {
	var b strings.Builder
	b.WriteString("127.0.0.1 localhost\n::1 localhost\n# e2e: cluster DNS stand-in\n")
	for name, ip := range entries {
		fmt.Fprintf(&b, "%s %s\n", ip, name)
	}
	return b.String()
}
