package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

const projectNS = "portfolio-mcp"

// sample is one point of the pods-over-time series.
type sample struct {
	t                 time.Duration // since the scenario began
	pods, ready, want int
	desired, actual   int32 // PodAutoscaler status
	inFlight          int64
	phase             string
}

type recorder struct {
	mu      sync.Mutex
	samples []sample
	phase   atomic.Value
	flight  atomic.Int64
	t0      time.Time
}

func (rec *recorder) last() sample {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.samples) == 0 {
		return sample{}
	}
	return rec.samples[len(rec.samples)-1]
}

// record samples pods, the Deployment and the PodAutoscaler every 250ms.
func (r *runner) record(ctx context.Context, rec *recorder, rev string) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	sel := "serving.knative.dev/revision=" + rev
	for {
		s := sample{t: time.Since(rec.t0), inFlight: rec.flight.Load()}
		s.phase, _ = rec.phase.Load().(string)
		if pl, err := r.kc.CoreV1().Pods(projectNS).List(ctx, metav1.ListOptions{LabelSelector: sel}); err == nil {
			for _, p := range pl.Items {
				if p.DeletionTimestamp != nil {
					continue
				}
				s.pods++
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
						s.ready++
					}
				}
			}
		}
		if d, err := r.kc.AppsV1().Deployments(projectNS).Get(ctx, rev+"-deployment", metav1.GetOptions{}); err == nil && d.Spec.Replicas != nil {
			s.want = int(*d.Spec.Replicas)
		}
		if pa, err := r.sv.AutoscalingV1alpha1().PodAutoscalers(projectNS).Get(ctx, rev, metav1.GetOptions{}); err == nil {
			if pa.Status.DesiredScale != nil {
				s.desired = *pa.Status.DesiredScale
			}
			if pa.Status.ActualScale != nil {
				s.actual = *pa.Status.ActualScale
			}
		}
		rec.mu.Lock()
		rec.samples = append(rec.samples, s)
		rec.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// waitSample polls the recorder until cond holds.
func (rec *recorder) wait(ctx context.Context, d time.Duration, cond func(sample) bool) (time.Time, error) {
	var at time.Time
	err := poll(ctx, d, func() (bool, error) {
		if s := rec.last(); s.t > 0 && cond(s) {
			at = rec.t0.Add(s.t)
			return true, nil
		}
		return false, nil
	})
	return at, err
}

// mcpClient calls the Service through the activator the way the ingress
// would route it while the revision has no pods: to the activator's http1
// port with the revision named in Knative-Serving-* headers and the
// route's public Host.
type mcpClient struct {
	hc    *http.Client
	url   string
	host  string
	rev   string
	token string
}

const listTools = `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}`

func (c *mcpClient) call(ctx context.Context) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, strings.NewReader(listTools))
	if err != nil {
		return 0, "", err
	}
	req.Host = c.host
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-06-18")
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Knative-Serving-Namespace", projectNS)
	req.Header.Set("Knative-Serving-Revision", c.rev)
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), nil
}

type result struct {
	name, value, note string
}

func (r *runner) scenario(ctx context.Context) error {
	svc := r.opts.service
	rev := svc + "-00001"
	var res []result
	add := func(name, value, note string) {
		res = append(res, result{name, value, note})
		r.logf("RESULT %s: %s  %s", name, value, note)
	}
	defer func() { r.printSummary(res) }()

	err := poll(ctx, 3*time.Minute, func() (bool, error) {
		_, err := r.kc.AppsV1().Deployments(projectNS).Get(ctx, rev+"-deployment", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("the controller made no Deployment for %s: %w", rev, err)
	}
	r.logf("controller created Configuration, Revision %s, PodAutoscaler and Deployment", rev)

	rec := &recorder{t0: time.Now()}
	rec.phase.Store("initial")
	rctx, stopRec := context.WithCancel(ctx)
	defer stopRec()
	go r.record(rctx, rec, rev)
	defer func() {
		stopRec()
		if r.opts.timeline != "" {
			_ = r.writeTimeline(rec, r.opts.timeline)
		}
	}()

	// 1. The initial scale comes up, then goes back to zero without traffic.
	if _, err := rec.wait(ctx, 3*time.Minute, func(s sample) bool { return s.ready >= 1 }); err != nil {
		return fmt.Errorf("no pod of %s became ready: %w (see %s/pods/*/*.log)", rev, err, r.work)
	}
	initialReady := rec.last()
	r.logf("initial scale: %d pod(s) ready", initialReady.ready)
	rec.phase.Store("idle-initial")
	tIdle := time.Now()
	if _, err := rec.wait(ctx, 6*time.Minute, func(s sample) bool { return s.pods == 0 && s.want == 0 }); err != nil {
		return fmt.Errorf("%s never scaled to zero: %w", rev, err)
	}
	add("initial pods -> zero (no traffic)", fmtDur(time.Since(tIdle)), fmt.Sprintf("initial-scale pods ready, then idle; %d pod(s) at first", initialReady.ready))

	// 2. A cold call through the activator.
	tok, err := r.iss.token("e2e-agent", "https://"+svc+"."+projectNS+".example.com/mcp", "portfolio:read", []string{"ACC-1"}, time.Hour)
	if err != nil {
		return err
	}
	client := &mcpClient{
		hc:    &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 1000}},
		url:   "http://" + r.bridge.Gateway().String() + ":8012/mcp",
		host:  svc + "." + projectNS + ".example.com",
		rev:   rev,
		token: tok,
	}
	rec.phase.Store("cold-call")
	before := rec.last()
	t0 := time.Now()
	code, body, err := client.call(ctx)
	cold := time.Since(t0)
	if err != nil {
		return fmt.Errorf("cold call: %w", err)
	}
	if code != http.StatusOK || !strings.Contains(body, `"tools"`) {
		return fmt.Errorf("cold call: HTTP %d: %.300s", code, body)
	}
	add("cold start through the activator", fmtDur(cold), fmt.Sprintf("tools/list from %d pods: HTTP %d, answered after a pod started", before.pods, code))

	// 3. A burst: closed-loop clients, all through the activator.
	rec.phase.Store("burst")
	var ok, bad atomic.Int64
	var lat []time.Duration
	var latMu sync.Mutex
	bctx, cancel := context.WithTimeout(ctx, r.opts.burstDuration)
	var wg sync.WaitGroup
	tb := time.Now()
	for range r.opts.burstClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for bctx.Err() == nil {
				rec.flight.Add(1)
				s := time.Now()
				code, _, err := client.call(bctx)
				d := time.Since(s)
				rec.flight.Add(-1)
				if err == nil && code == http.StatusOK {
					ok.Add(1)
					latMu.Lock()
					lat = append(lat, d)
					latMu.Unlock()
				} else if bctx.Err() == nil {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	burstEnd := time.Now()
	maxPods, maxReady, maxDesired := 0, 0, int32(0)
	rec.mu.Lock()
	for _, s := range rec.samples {
		if s.t >= tb.Sub(rec.t0) {
			maxPods, maxReady, maxDesired = max(maxPods, s.pods), max(maxReady, s.ready), max(maxDesired, s.desired)
		}
	}
	rec.mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50, p99 := pct(lat, 0.5), pct(lat, 0.99)
	add("burst: max pods (ready)", fmt.Sprintf("%d (%d)", maxPods, maxReady),
		fmt.Sprintf("%d clients x %s: %d ok, %d failed, p50 %s p99 %s; KPA desired max %d",
			r.opts.burstClients, r.opts.burstDuration, ok.Load(), bad.Load(), fmtDur(p50), fmtDur(p99), maxDesired))

	// 4. Idle again: back to zero.
	rec.phase.Store("idle")
	if _, err := rec.wait(ctx, 6*time.Minute, func(s sample) bool { return s.pods == 0 && s.want == 0 }); err != nil {
		return fmt.Errorf("%s never scaled back to zero after the burst: %w", rev, err)
	}
	add("last call -> zero pods", fmtDur(time.Since(burstEnd)), "Deployment at 0, no pod left that is not terminating (queue-proxy then drains 30 s)")

	// 5. The pre-warm job raises min-scale: a pod without traffic.
	rec.phase.Store("prewarm")
	out, err := r.runPrewarm(ctx, r.opts.prewarmNow)
	if err != nil {
		return fmt.Errorf("prewarm: %w\n%s", err, out)
	}
	r.logf("prewarm (now=%s): %s", r.opts.prewarmNow, strings.TrimSpace(out))
	tp := time.Now()
	if _, err := rec.wait(ctx, 2*time.Minute, func(s sample) bool { return s.ready >= 1 }); err != nil {
		return fmt.Errorf("min-scale set by prewarm brought no pod: %w", err)
	}
	warm := time.Since(tp)
	// Hold past the stable window and the grace period: the pod stays.
	hold := 75 * time.Second
	hctx, hcancel := context.WithTimeout(ctx, hold)
	minReady := 1 << 30
	ht := time.NewTicker(500 * time.Millisecond)
	for hctx.Err() == nil {
		minReady = min(minReady, rec.last().ready)
		select {
		case <-hctx.Done():
		case <-ht.C:
		}
	}
	ht.Stop()
	hcancel()
	add("prewarm min-scale=1 -> pod Ready", fmtDur(warm), fmt.Sprintf("no traffic; fewest ready pods over the next %s: %d", hold, minReady))

	rec.phase.Store("prewarm-off")
	outside := strings.Replace(r.opts.prewarmNow, "T09:20", "T20:00", 1)
	out, err = r.runPrewarm(ctx, outside)
	if err != nil {
		return fmt.Errorf("prewarm restore: %w\n%s", err, out)
	}
	r.logf("prewarm (now=%s): %s", outside, strings.TrimSpace(out))
	tr := time.Now()
	if _, err := rec.wait(ctx, 6*time.Minute, func(s sample) bool { return s.pods == 0 && s.want == 0 }); err != nil {
		return fmt.Errorf("after prewarm restored min-scale, no scale to zero: %w", err)
	}
	add("prewarm restore -> scaled to zero", fmtDur(time.Since(tr)), "min-scale back to the declared 0; already idle past window+grace, so at once (pod then drains)")
	return nil
}

func pct(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[int(float64(len(d)-1)*q)]
}

func fmtDur(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// runPrewarm runs cmd/prewarm as the CronJob's container would, with the
// CronJob's args and its ServiceAccount's token, pretending it is now.
func (r *runner) runPrewarm(ctx context.Context, now string) (string, error) {
	cj, err := r.kc.BatchV1().CronJobs(projectNS).Get(ctx, "portfolio-mcp-prewarm", metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	spec := cj.Spec.JobTemplate.Spec.Template.Spec
	tr, err := r.kc.CoreV1().ServiceAccounts(projectNS).CreateToken(ctx, spec.ServiceAccountName,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))}}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	kcfg := filepath.Join(r.work, "prewarm.kubeconfig")
	if err := r.kubeconfig(kcfg, tr.Status.Token); err != nil {
		return "", err
	}
	args := append([]string{}, spec.Containers[0].Args...)
	args = append(args, "--kubeconfig="+kcfg, "--now="+now)
	cmd := exec.CommandContext(ctx, filepath.Join(r.work, "images", "prewarm"), args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Run()
	return buf.String(), err
}

func (r *runner) writeTimeline(rec *recorder, path string) error {
	var b strings.Builder
	b.WriteString("seconds,phase,pods,ready_pods,deployment_replicas,pa_desired,pa_actual,client_in_flight\n")
	rec.mu.Lock()
	for _, s := range rec.samples {
		fmt.Fprintf(&b, "%.2f,%s,%d,%d,%d,%d,%d,%d\n", s.t.Seconds(), s.phase, s.pods, s.ready, s.want, s.desired, s.actual, s.inFlight)
	}
	rec.mu.Unlock()
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func (r *runner) printSummary(res []result) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nE2E SUMMARY (%s, Knative Serving v0.50.0, kube-apiserver v1.36.1)\n", r.opts.service)
	fmt.Fprintf(&b, "| %-36s | %-10s | %s\n", "measure", "value", "detail")
	fmt.Fprintf(&b, "|%s|%s|%s\n", strings.Repeat("-", 38), strings.Repeat("-", 12), strings.Repeat("-", 40))
	for _, x := range res {
		fmt.Fprintf(&b, "| %-36s | %-10s | %s\n", x.name, x.value, x.note)
	}
	fmt.Print(b.String())
	if r.opts.summary != "" {
		_ = os.WriteFile(r.opts.summary, []byte(b.String()), 0o644)
	}
}
