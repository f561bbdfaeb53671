package faults_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/portfolio-mcp/portfolio-mcp/backends/faults"
)

var routes = []string{"GET /a", "GET /b"}

// serve starts a mux with two routes behind the injector and its admin API.
func serve(t *testing.T) (*httptest.Server, *faults.Injector) {
	t.Helper()
	inj := faults.New(routes)
	mux := http.NewServeMux()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	for _, r := range routes {
		mux.Handle(r, inj.Wrap(ok))
	}
	mux.Handle("/admin/", inj.Admin())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, inj
}

func get(ctx context.Context, srv *httptest.Server, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", srv.URL+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func statuses(t *testing.T, srv *httptest.Server, path string, n int) []int {
	t.Helper()
	var out []int
	for range n {
		s, err := get(t.Context(), srv, path)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func admin(t *testing.T, srv *httptest.Server, method, path, body string) (int, faults.State) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st faults.State
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &st)
	return resp.StatusCode, st
}

func TestErrorPatterns(t *testing.T) {
	cases := []struct {
		name  string
		fault string
		path  string
		want  []int
	}{
		{"every request", `{"route":"GET /a","status":503}`, "/a", []int{503, 503, 503}},
		{"half", `{"route":"GET /a","status":500,"error_rate":0.5}`, "/a", []int{200, 500, 200, 500, 200, 500}},
		{"a quarter", `{"route":"GET /a","status":429,"error_rate":0.25}`, "/a", []int{200, 200, 200, 429, 200, 200, 200, 429}},
		{"for a while", `{"route":"GET /a","status":503,"times":2}`, "/a", []int{503, 503, 200, 200}},
		{"other route untouched", `{"route":"GET /a","status":503}`, "/b", []int{200, 200}},
		{"every route", `{"route":"*","status":502}`, "/b", []int{502, 502}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := serve(t)
			if code, _ := admin(t, srv, "POST", "/admin/faults", tc.fault); code != 200 {
				t.Fatalf("setting fault: %d", code)
			}
			got := statuses(t, srv, tc.path, len(tc.want))
			if !slices.Equal(got, tc.want) {
				t.Errorf("statuses %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAdminAPI(t *testing.T) {
	srv, _ := serve(t)
	for _, bad := range []string{
		`{"route":"GET /nope","status":500}`,
		`{"route":"GET /a"}`,
		`{"route":"GET /a","status":200}`,
		`{"route":"GET /a","error_rate":0.5}`,
		`{"route":"GET /a","status":500,"error_rate":2}`,
		`{"route":"GET /a","latency":"soon"}`,
		`{"route":"GET /a","latency":250}`,
		`{"route":"GET /a","hang":true,"times":-1}`,
		`{"route":"GET /a","stauts":500}`,
	} {
		if code, _ := admin(t, srv, "POST", "/admin/faults", bad); code != 400 {
			t.Errorf("fault %s accepted (%d)", bad, code)
		}
	}
	admin(t, srv, "POST", "/admin/faults", `{"route":"GET /a","status":503,"latency":"1ms"}`)
	admin(t, srv, "POST", "/admin/faults", `{"route":"GET /b","status":500}`)
	statuses(t, srv, "/a", 2)
	_, st := admin(t, srv, "GET", "/admin/faults", "")
	if len(st.Faults) != 2 || st.Faults[0].Route != "GET /a" || time.Duration(st.Faults[0].Latency) != time.Millisecond || st.Hits["GET /a"] != 2 {
		t.Errorf("state = %+v", st)
	}
	_, st = admin(t, srv, "DELETE", "/admin/faults?route=GET+/a", "")
	if len(st.Faults) != 1 || st.Faults[0].Route != "GET /b" {
		t.Errorf("after clearing GET /a: %+v", st)
	}
	if got := statuses(t, srv, "/a", 1); got[0] != 200 {
		t.Errorf("cleared route answers %d", got[0])
	}
	_, st = admin(t, srv, "POST", "/admin/reset", "")
	if len(st.Faults) != 0 || len(st.Hits) != 0 {
		t.Errorf("after reset: %+v", st)
	}
}

// TestHang: a hung request is held until its client gives up, or released
// (and served) when the fault is cleared; either way nothing is left behind.
func TestHang(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv, inj := serve(t)
	defer srv.Close()
	if err := inj.Set(faults.Fault{Route: "GET /a", Hang: true}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := get(ctx, srv, "/a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung request: err = %v, want the client's deadline", err)
	}

	done := make(chan int, 1)
	go func() {
		code, _ := get(context.Background(), srv, "/a")
		done <- code
	}()
	deadline := time.Now().Add(10 * time.Second)
	for inj.State().Hits["GET /a"] < 2 {
		if time.Now().After(deadline) {
			t.Fatal("second request never arrived")
		}
		time.Sleep(5 * time.Millisecond)
	}
	inj.Clear("")
	if code := <-done; code != 200 {
		t.Errorf("released request answered %d, want 200", code)
	}
	srv.Client().CloseIdleConnections()
}

func TestDrop(t *testing.T) {
	srv, inj := serve(t)
	if err := inj.Set(faults.Fault{Route: "GET /a", Drop: true, Times: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := get(t.Context(), srv, "/a"); err == nil {
		t.Fatal("dropped request got an answer")
	}
	if got := statuses(t, srv, "/a", 1); got[0] != 200 {
		t.Errorf("after the single drop: %d", got[0])
	}
}

// TestAfter: the request is served (the service acted) and its answer is
// lost (drop) or held until the fault is cleared (hang), as a client that
// must not act twice sees it.
func TestAfter(t *testing.T) {
	inj := faults.New([]string{"POST /orders"})
	var served atomic.Int32
	mux := http.NewServeMux()
	mux.Handle("POST /orders", inj.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		io.WriteString(w, "accepted")
	})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	post := func(ctx context.Context) (string, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/orders", nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	if err := inj.Set(faults.Fault{Route: "POST /orders", Drop: true, After: true, Times: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := post(t.Context()); err == nil || served.Load() != 1 {
		t.Fatalf("drop after: err %v, served %d; want no answer and one served request", err, served.Load())
	}

	if err := inj.Set(faults.Fault{Route: "POST /orders", Hang: true, After: true}); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		body, _ := post(context.Background())
		done <- body
	}()
	deadline := time.Now().Add(10 * time.Second)
	for served.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("held request never served")
		}
		time.Sleep(5 * time.Millisecond)
	}
	inj.Clear("")
	if body := <-done; body != "accepted" {
		t.Fatalf("held answer: %q, want it delivered late", body)
	}
	for _, bad := range []faults.Fault{
		{Route: "POST /orders", After: true},
		{Route: "POST /orders", After: true, Hang: true, Drop: true},
		{Route: "POST /orders", After: true, Drop: true, Status: 503},
	} {
		if err := inj.Set(bad); err == nil {
			t.Errorf("%+v accepted, want refused", bad)
		}
	}
}

// TestLatency: added latency delays the answer past a client deadline
// shorter than it, and is served normally otherwise.
func TestLatency(t *testing.T) {
	srv, inj := serve(t)
	if err := inj.Set(faults.Fault{Route: "GET /a", Latency: faults.Duration(5 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := get(ctx, srv, "/a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the client's deadline", err)
	}
	if err := inj.Set(faults.Fault{Route: "GET /a", Latency: faults.Duration(time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if got := statuses(t, srv, "/a", 1); got[0] != 200 {
		t.Errorf("with small latency: %d", got[0])
	}
}

func TestDurationJSON(t *testing.T) {
	b, err := json.Marshal(faults.Fault{Route: "GET /a", Latency: faults.Duration(1500 * time.Millisecond)})
	if err != nil || !bytes.Contains(b, []byte(`"latency":"1.5s"`)) {
		t.Errorf("marshal = %s, %v", b, err)
	}
}
