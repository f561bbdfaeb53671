package audit_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
)

// TestSinkWritesTheSDKsRequest: the request the sink sends for an event is
// the one sdk-go's HTTP binding writes for the same CloudEvent (binary
// mode): the same headers, values and body, for a tool call, a journaled
// step, a checkpoint, an event without a subject, and with the
// K_CE_OVERRIDES extensions.
func TestSinkWritesTheSDKsRequest(t *testing.T) {
	a, _ := newAuditor(t, audit.Config{Sink: "http://sink.example/ingress", QueueSize: 8,
		CEOverrides: `{"extensions":{"cluster":"prod-eu","tenant":"desk7"}}`}, io.Discard)
	defer a.Close(context.Background())
	step := sample("place_order")
	step.Action = "approval.requested"
	noSubject := sample("")
	late := sample("get_quotes")
	late.Time = time.Date(2026, 12, 1, 23, 59, 59, 120000000, time.FixedZone("CET", 3600))
	for name, e := range map[string]audit.Event{
		"call": sample("search_equities"), "step": step, "checkpoint": {Checkpoint: &audit.Checkpoint{Reason: audit.SealEvents}},
		"no subject": noSubject, "time zone": late,
	} {
		a.FillAndCommit(context.Background(), &e)
		got, err := a.SinkRequest(context.Background(), e)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ev, err := a.CloudEvent(e)
		if err != nil {
			t.Fatalf("%s: sdk-go refuses the event: %v", name, err)
		}
		want, _ := http.NewRequest(http.MethodPost, "http://sink.example/ingress", nil)
		if err := cehttp.WriteRequest(context.Background(), binding.ToMessage(&ev), want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Header, want.Header) {
			t.Errorf("%s: headers\n got %v\nwant %v", name, got.Header, want.Header)
		}
		gotBody, _ := io.ReadAll(got.Body)
		wantBody, _ := io.ReadAll(want.Body)
		if !bytes.Equal(gotBody, wantBody) || got.ContentLength != want.ContentLength || got.Method != want.Method || got.URL.String() != want.URL.String() {
			t.Errorf("%s: body %s (%d), want %s (%d)", name, gotBody, got.ContentLength, wantBody, want.ContentLength)
		}
	}
}

// TestSinkRetriesAsSDKGoDoes: a status that says "try again" is retried
// until the sink takes the event; one that refuses it is not.
func TestSinkRetriesAsSDKGoDoes(t *testing.T) {
	var mu sync.Mutex
	var script, seen []int // statuses to answer, in order; then 202
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		status := http.StatusAccepted
		if len(script) > 0 {
			status, script = script[0], script[1:]
		}
		seen = append(seen, status)
		mu.Unlock()
		w.WriteHeader(status)
	}))
	defer srv.Close()
	answer := func(statuses ...int) {
		mu.Lock()
		script, seen = statuses, nil
		mu.Unlock()
	}
	attempts := func() []int {
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
	a, _ := newAuditor(t, audit.Config{Sink: srv.URL, QueueSize: 8}, io.Discard)
	defer a.Close(context.Background())

	answer(http.StatusServiceUnavailable, http.StatusTooManyRequests)
	if err := a.EmitSync(context.Background(), sample("place_order")); err != nil {
		t.Fatalf("EmitSync after two retriable answers: %v", err)
	}
	if got := attempts(); !slices.Equal(got, []int{503, 429, 202}) {
		t.Errorf("answers %v, want 503, 429, then 202", got)
	}
	answer(http.StatusBadRequest)
	if err := a.EmitSync(context.Background(), sample("place_order")); err == nil || len(attempts()) != 1 {
		t.Errorf("a 400 was retried or accepted: answers %v, %v", attempts(), err)
	}
	answer(503, 503, 503, 503)
	if err := a.EmitSync(context.Background(), sample("place_order")); err == nil || len(attempts()) != 3 {
		t.Errorf("a synchronous event has 3 attempts; answers %v, %v", attempts(), err)
	}
}

// TestSinkRedirectThatDropsTheBody: after a 301, 302 or 303 net/http's
// client would send a GET without the event, and a 2xx to it would count
// as delivered; the delivery fails instead, and nothing reaches the new
// address.
func TestSinkRedirectThatDropsTheBody(t *testing.T) {
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			var moved atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/moved" {
					http.Redirect(w, r, "/ingress", code)
					return
				}
				moved.Add(1)
				w.WriteHeader(http.StatusAccepted)
			}))
			defer srv.Close()
			a, _ := newAuditor(t, audit.Config{Sink: srv.URL + "/moved", QueueSize: 8}, io.Discard)
			defer a.Close(context.Background())
			for range 2 {
				if err := a.EmitSync(context.Background(), sample("place_order")); err == nil {
					t.Fatalf("EmitSync through a %d: delivered", code)
				}
			}
			if n := moved.Load(); n != 0 {
				t.Errorf("%d requests reached the redirect's target", n)
			}
		})
	}
}

// TestSinkAsNetHTTPsClient: what net/http's client did for sdk-go, the
// sink does too: credentials in K_SINK become basic auth, and a sink that
// redirects (307, 308) gets the event at the new address; once it has
// redirected, an event costs the redirect and the delivery, no more.
func TestSinkAsNetHTTPsClient(t *testing.T) {
	var mu sync.Mutex
	var got []string // "path auth" per request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "/ingress", http.StatusTemporaryRedirect)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	u.User, u.Path = url.UserPassword("audit", "s3cret"), "/moved"
	a, _ := newAuditor(t, audit.Config{Sink: u.String(), QueueSize: 8}, io.Discard)
	defer a.Close(context.Background())
	if err := a.EmitSync(context.Background(), sample("place_order")); err != nil {
		t.Fatalf("EmitSync through a redirect: %v", err)
	}
	mu.Lock()
	first := slices.Clone(got)
	mu.Unlock()
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("audit:s3cret"))
	if want := []string{"/moved " + basic, "/moved " + basic, "/ingress " + basic}; !slices.Equal(first, want) {
		t.Errorf("requests %q; want %q (the transport's, then the client's following the redirect)", first, want)
	}
	if err := a.EmitSync(context.Background(), sample("place_order")); err != nil {
		t.Fatalf("second EmitSync through a redirect: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"/moved " + basic, "/ingress " + basic}; !slices.Equal(got[len(first):], want) {
		t.Errorf("the next event's requests %q; want %q", got[len(first):], want)
	}
}
