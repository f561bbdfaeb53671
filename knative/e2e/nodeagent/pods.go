package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var probeClient = &http.Client{
	// Like the kubelet: no keep-alive between probes, no redirects followed
	// to other hosts.
	Transport: &http.Transport{DisableKeepAlives: true},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// resolvePort turns a named or numbered port into a number, using the
// pod's container ports for names.
func resolvePort(p *pod, port intstr.IntOrString) (int, error) {
	if port.Type == intstr.Int {
		return int(port.IntVal), nil
	}
	for _, c := range p.spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == port.StrVal {
				return int(cp.ContainerPort), nil
			}
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("no container port named %q", port.StrVal)
}

// httpProbe performs an HTTP GET the way the kubelet's prober does
// (User-Agent kube-probe/<version>, which queue-proxy recognises).
func httpProbe(ctx context.Context, ip netip.Addr, p *pod, g *corev1.HTTPGetAction) (bool, error) {
	port, err := resolvePort(p, g.Port)
	if err != nil {
		return false, err
	}
	host := ip.String()
	if g.Host != "" {
		host = g.Host
	}
	scheme := "http"
	if g.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+path, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("User-Agent", "kube-probe/1.36")
	req.Header.Set("Accept", "*/*")
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Set(h.Name, h.Value)
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400, nil
}

func runProbe(ctx context.Context, p *pod, pr *corev1.Probe) bool {
	timeout := time.Duration(max(pr.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p.mu.Lock()
	ip := p.ip
	p.mu.Unlock()
	switch {
	case pr.HTTPGet != nil:
		ok, _ := httpProbe(ctx, ip, p, pr.HTTPGet)
		return ok
	case pr.TCPSocket != nil:
		port, err := resolvePort(p, pr.TCPSocket.Port)
		if err != nil {
			return false
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
		if err != nil {
			return false
		}
		conn.Close()
		return true
	default:
		// exec and gRPC probes are not implemented: treated as passing.
		return true
	}
}

// probeLoop runs c's readiness probe every periodSeconds (at least 1s, as
// the kubelet), the first one as soon as the container runs after
// initialDelaySeconds.
func (a *agent) probeLoop(p *pod, c *container) {
	pr := c.spec.ReadinessProbe
	period := time.Duration(max(pr.PeriodSeconds, 1)) * time.Second
	success, failure := max(pr.SuccessThreshold, 1), max(pr.FailureThreshold, 3)
	delay := time.Duration(pr.InitialDelaySeconds) * time.Second
	timer := time.NewTimer(delay)
	defer timer.Stop()
	var okRun, failRun int32
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-timer.C:
		}
		p.mu.Lock()
		running := c.running
		p.mu.Unlock()
		if !running {
			// Not started (or restarting): probe as soon as it runs.
			okRun, failRun = 0, 0
			timer.Reset(50 * time.Millisecond)
			continue
		}
		timer.Reset(period)
		ok := runProbe(p.ctx, p, pr)
		if ok {
			okRun, failRun = okRun+1, 0
		} else {
			okRun, failRun = 0, failRun+1
		}
		p.mu.Lock()
		was := c.ready
		if ok && okRun >= success {
			c.ready = true
		}
		if !ok && (failRun >= failure || !c.ready) {
			c.ready = false
		}
		changed := was != c.ready
		p.mu.Unlock()
		if changed {
			log.Printf("pod %s/%s container %s: ready=%v", p.ns, p.name, c.spec.Name, !was)
			a.poke()
		}
	}
}

// containerEnv is the environment the kubelet would give c: PATH and
// HOSTNAME, then the container's env in order (values, downward API
// fields, Secret and ConfigMap keys). $(VAR) references are expanded.
func (a *agent) containerEnv(p *pod, c corev1.Container) ([]string, error) {
	p.mu.Lock()
	ip := p.ip.String()
	p.mu.Unlock()
	vals := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	set("PATH", "/usr/local/bin:/usr/bin:/bin")
	set("HOSTNAME", p.name)
	ctx := p.ctx
	for _, ef := range c.EnvFrom {
		switch {
		case ef.SecretRef != nil:
			s, err := a.kc.CoreV1().Secrets(p.ns).Get(ctx, ef.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			for k, v := range s.Data {
				set(ef.Prefix+k, string(v))
			}
		case ef.ConfigMapRef != nil:
			cm, err := a.kc.CoreV1().ConfigMaps(p.ns).Get(ctx, ef.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			for k, v := range cm.Data {
				set(ef.Prefix+k, v)
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, os.Expand(e.Value, func(k string) string { return vals[k] }))
			continue
		}
		switch vf := e.ValueFrom; {
		case vf.FieldRef != nil:
			v, err := fieldValue(p, ip, a.node, vf.FieldRef.FieldPath)
			if err != nil {
				return nil, err
			}
			set(e.Name, v)
		case vf.SecretKeyRef != nil:
			s, err := a.kc.CoreV1().Secrets(p.ns).Get(ctx, vf.SecretKeyRef.Name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			set(e.Name, string(s.Data[vf.SecretKeyRef.Key]))
		case vf.ConfigMapKeyRef != nil:
			cm, err := a.kc.CoreV1().ConfigMaps(p.ns).Get(ctx, vf.ConfigMapKeyRef.Name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			set(e.Name, cm.Data[vf.ConfigMapKeyRef.Key])
		case vf.ResourceFieldRef != nil:
			set(e.Name, resourceValue(c, vf.ResourceFieldRef))
		}
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vals[k])
	}
	return env, nil
}

func fieldValue(p *pod, ip, node, path string) (string, error) {
	switch path {
	case "metadata.name":
		return p.name, nil
	case "metadata.namespace":
		return p.ns, nil
	case "metadata.uid":
		return string(p.uid), nil
	case "status.podIP", "status.podIPs":
		return ip, nil
	case "status.hostIP", "status.hostIPs":
		return ip, nil
	case "spec.nodeName":
		return node, nil
	case "spec.serviceAccountName":
		return p.spec.ServiceAccountName, nil
	}
	return "", fmt.Errorf("field %s is not supported", path)
}

func resourceValue(c corev1.Container, r *corev1.ResourceFieldSelector) string {
	name, isLimit := strings.CutPrefix(r.Resource, "limits.")
	if !isLimit {
		name = strings.TrimPrefix(r.Resource, "requests.")
	}
	list := c.Resources.Requests
	if isLimit {
		list = c.Resources.Limits
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		return "0"
	}
	div := int64(1)
	if r.Divisor.Value() > 0 {
		div = r.Divisor.Value()
	}
	if name == "cpu" {
		return strconv.FormatInt((q.MilliValue()+999)/1000/div, 10)
	}
	return strconv.FormatInt(q.Value()/div, 10)
}

// prepareVolumes materialises the pod's volumes as directories: Secrets
// and ConfigMaps as files with their modes, emptyDirs, and the projected
// service account token the ServiceAccount admission plugin adds.
func (a *agent) prepareVolumes(ctx context.Context, p *pod, dir string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range p.spec.Volumes {
		vd := filepath.Join(dir, "volumes", v.Name)
		if err := os.MkdirAll(vd, 0o755); err != nil {
			return nil, err
		}
		out[v.Name] = vd
		switch {
		case v.Secret != nil:
			s, err := a.kc.CoreV1().Secrets(p.ns).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
			mode := os.FileMode(0o644)
			if v.Secret.DefaultMode != nil {
				mode = os.FileMode(*v.Secret.DefaultMode)
			}
			for k, val := range s.Data {
				if err := writeFile(filepath.Join(vd, k), val, mode); err != nil {
					return nil, err
				}
			}
		case v.ConfigMap != nil:
			cm, err := a.kc.CoreV1().ConfigMaps(p.ns).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
			for k, val := range cm.Data {
				if err := writeFile(filepath.Join(vd, k), []byte(val), 0o644); err != nil {
					return nil, err
				}
			}
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				switch {
				case src.ServiceAccountToken != nil:
					exp := src.ServiceAccountToken.ExpirationSeconds
					tr := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
						ExpirationSeconds: exp,
						BoundObjectRef:    &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.name, UID: p.uid},
					}}
					if aud := src.ServiceAccountToken.Audience; aud != "" {
						tr.Spec.Audiences = []string{aud}
					}
					tok, err := a.kc.CoreV1().ServiceAccounts(p.ns).CreateToken(ctx, p.spec.ServiceAccountName, tr, metav1.CreateOptions{})
					if err != nil {
						return nil, fmt.Errorf("volume %s: token: %w", v.Name, err)
					}
					if err := writeFile(filepath.Join(vd, src.ServiceAccountToken.Path), []byte(tok.Status.Token), 0o644); err != nil {
						return nil, err
					}
				case src.DownwardAPI != nil:
					for _, it := range src.DownwardAPI.Items {
						if it.FieldRef != nil && it.FieldRef.FieldPath == "metadata.namespace" {
							if err := writeFile(filepath.Join(vd, it.Path), []byte(p.ns), 0o644); err != nil {
								return nil, err
							}
						}
					}
				}
			}
		}
	}
	return out, nil
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		return err
	}
	return os.Chmod(path, mode)
}
