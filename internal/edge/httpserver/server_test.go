package httpserver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/httpserver"
)

// running is a Server serving on a loopback port until stop.
type running struct {
	url  string
	stop context.CancelFunc
	done chan error
}

func start(t *testing.T, o httpserver.Options) *running {
	t.Helper()
	o.Addr = "127.0.0.1:0"
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := httpserver.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{url: "http://" + ln.Addr().String(), stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

func status(t *testing.T, url string, host string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if host != "" {
		req.Host = host
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	res.Body.Close()
	return res.StatusCode
}

// waitFor polls cond (a state change in another goroutine) until it holds;
// the test's own deadline bounds it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-t.Context().Done():
			t.Fatalf("gave up waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestReadinessWaitsForWarmUp(t *testing.T) {
	warm := make(chan struct{})
	r := start(t, httpserver.Options{Warm: warm, DrainTimeout: time.Second})
	waitFor(t, "the server to serve", func() bool {
		res, err := http.Get(r.url + "/healthz")
		if err == nil {
			res.Body.Close()
		}
		return err == nil
	})
	if got := status(t, r.url+"/readyz", ""); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before warm-up = %d, want 503", got)
	}
	if got := status(t, r.url+"/healthz", ""); got != http.StatusOK {
		t.Fatalf("/healthz before warm-up = %d, want 200 (alive, not ready)", got)
	}
	close(warm)
	if got := status(t, r.url+"/readyz", ""); got != http.StatusOK {
		t.Fatalf("/readyz after warm-up = %d, want 200", got)
	}
}

func TestMetricsAreForTheScraperOnly(t *testing.T) {
	r := start(t, httpserver.Options{Metrics: prometheus.NewRegistry(), DrainTimeout: time.Second})
	waitFor(t, "the server to serve", func() bool { _, err := net.Dial("tcp", r.url[len("http://"):]); return err == nil })
	for host, want := range map[string]int{
		"":                        http.StatusOK,       // a developer's curl to the loopback address
		"localhost":               http.StatusOK,       // or to localhost
		"portfolio.example.com":   http.StatusNotFound, // the public route, through queue-proxy on loopback
		"portfolio.ns.svc.local.": http.StatusNotFound,
	} {
		if got := status(t, r.url+"/metrics", host); got != want {
			t.Errorf("/metrics with Host %q = %d, want %d", host, got, want)
		}
	}
}

// TestDrain: on shutdown readiness fails first, then the listener closes,
// a request in flight finishes with its answer, and the drain hooks run
// after it (the audit flush must see its record).
func TestDrain(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	var finished, hookSawFinished atomic.Bool
	slow := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(started)
		<-release
		finished.Store(true)
		io.WriteString(w, "done")
	})
	r := start(t, httpserver.Options{
		Routes:       map[string]http.Handler{"GET /slow": slow},
		DrainDelay:   3 * time.Second, // long enough to see /readyz fail before the listener closes
		DrainTimeout: 30 * time.Second,
		OnDrained: []func(context.Context) error{func(context.Context) error {
			hookSawFinished.Store(finished.Load())
			return nil
		}},
	})
	waitFor(t, "readiness", func() bool {
		res, err := http.Get(r.url + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})

	answer := make(chan string, 1)
	go func() {
		res, err := http.Get(r.url + "/slow")
		if err != nil {
			answer <- "error: " + err.Error()
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		answer <- string(b)
	}()
	<-started
	r.stop()

	if got := status(t, r.url+"/readyz", ""); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining = %d, want 503", got)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	waitFor(t, "the listener to close", func() bool {
		res, err := client.Get(r.url + "/healthz")
		if err == nil {
			res.Body.Close()
		}
		return err != nil
	})
	select {
	case err := <-r.done:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	if got := <-answer; got != "done" {
		t.Fatalf("the in-flight request got %q, want its answer", got)
	}
	if err := <-r.done; err != nil {
		t.Fatalf("Serve = %v, want a clean drain", err)
	}
	r.done <- nil // for the cleanup
	if !hookSawFinished.Load() {
		t.Error("a drain hook ran before the in-flight request finished")
	}
}

// TestDrainHookFailureIsReported: a hook that cannot finish (the audit sink
// unreachable) makes Serve fail, so the process exits non-zero and the
// loss is visible.
func TestDrainHookFailureIsReported(t *testing.T) {
	r := start(t, httpserver.Options{
		DrainTimeout: time.Second,
		OnDrained:    []func(context.Context) error{func(context.Context) error { return errors.New("audit sink unreachable") }},
	})
	r.stop()
	err := <-r.done
	r.done <- nil
	if err == nil {
		t.Fatal("Serve = nil, want the hook's error")
	}
}

// TestDrainKeepsTheHooksTime: a request that never ends (a stream) is cut
// at the drain's deadline less the hooks' reserve, and the hooks (the
// audit queue, its final checkpoint) start with time left, not with an
// expired context.
func TestDrainKeepsTheHooksTime(t *testing.T) {
	started := make(chan struct{})
	stream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done() // until the server cuts it
	})
	hookErr := make(chan error, 1)
	r := start(t, httpserver.Options{
		Routes:       map[string]http.Handler{"GET /stream": stream},
		DrainTimeout: 2 * time.Second,
		OnDrained: []func(context.Context) error{func(ctx context.Context) error {
			hookErr <- ctx.Err()
			return nil
		}},
	})
	go func() {
		if res, err := http.Get(r.url + "/stream"); err == nil {
			res.Body.Close()
		}
	}()
	<-started
	r.stop()
	err := <-r.done
	r.done <- nil
	if herr := <-hookErr; herr != nil {
		t.Errorf("the drain hook started with its context done (%v): a stream took the hooks' time", herr)
	}
	if err == nil {
		t.Error("Serve = nil with a request cut at the deadline; want the drain reported as incomplete")
	}
}
