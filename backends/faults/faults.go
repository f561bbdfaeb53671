// Package faults injects failures into HTTP routes at run time: added
// latency, error statuses at a deterministic rate, hangs and dropped
// connections, per route, set and cleared over a small admin API. The
// containerised fakes use it so integration tests can make a backend slow,
// flaky, stuck or gone on cue, and take it back.
package faults

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"time"
)

// AllRoutes as a Fault's Route applies it to every route that has no fault
// of its own.
const AllRoutes = "*"

// Fault is what to do to the requests of one route.
type Fault struct {
	// Route is a route pattern as the mux registered it ("GET /v1/accounts"),
	// or "*" for every route.
	Route string `json:"route"`
	// Latency is added before the request is handled (or failed).
	Latency Duration `json:"latency,omitempty"`
	// Status, if set, answers the request with this HTTP status and a
	// contract error body instead of handling it.
	Status int `json:"status,omitempty"`
	// ErrorRate is the share of matching requests that get Status, 0..1;
	// 0 with a Status means 1. It is deterministic: the n-th matching request
	// fails when floor(n*rate) > floor((n-1)*rate), so 0.5 fails every second.
	ErrorRate float64 `json:"error_rate,omitempty"`
	// Hang holds the request without answering until the client gives up,
	// the fault is cleared (then it is served normally) or the server stops.
	Hang bool `json:"hang,omitempty"`
	// Drop closes the connection without an answer.
	Drop bool `json:"drop,omitempty"`
	// After applies Hang or Drop once the request has been served: the
	// service acted (an order was accepted) and the answer is withheld (Hang;
	// sent late if the fault is cleared first) or lost (Drop). This is the
	// fault an exactly-once, truthful client must survive.
	After bool `json:"after,omitempty"`
	// Times limits the fault to this many matching requests, after which it
	// clears itself; 0 keeps it until cleared.
	Times int `json:"times,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("250ms").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`latency must be a duration string such as "250ms"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	*d = Duration(v)
	return nil
}

func (f *Fault) validate(routes []string) error {
	switch {
	case f.Route != AllRoutes && !slices.Contains(routes, f.Route):
		return fmt.Errorf("unknown route %q; known: %q or one of %q", f.Route, AllRoutes, routes)
	case f.Latency < 0 || time.Duration(f.Latency) > 10*time.Minute:
		return errors.New("latency must be between 0 and 10m")
	case f.Status != 0 && (f.Status < 400 || f.Status > 599):
		return errors.New("status must be an HTTP error status (400-599)")
	case f.ErrorRate < 0 || f.ErrorRate > 1:
		return errors.New("error_rate must be between 0 and 1")
	case f.ErrorRate > 0 && f.Status == 0:
		return errors.New("error_rate needs a status")
	case f.Times < 0:
		return errors.New("times must not be negative")
	case f.Status == 0 && !f.Hang && !f.Drop && f.Latency == 0:
		return errors.New("a fault needs latency, status, hang or drop")
	case f.After && (f.Hang == f.Drop || f.Status != 0):
		return errors.New("after needs exactly one of hang or drop, and no status")
	}
	if f.Status != 0 && f.ErrorRate == 0 {
		f.ErrorRate = 1
	}
	return nil
}

// active is a fault in force and how often it has matched.
type active struct {
	Fault
	matched int
	release chan struct{} // closed when the fault is cleared: frees hung requests
}

// Injector holds the faults in force and counts requests per route.
type Injector struct {
	routes []string

	mu     sync.Mutex
	faults map[string]*active
	hits   map[string]int
}

// New returns an Injector for the given route patterns, with no faults.
func New(routes []string) *Injector {
	return &Injector{routes: routes, faults: map[string]*active{}, hits: map[string]int{}}
}

// Set puts f in force, replacing any fault on the same route.
func (in *Injector) Set(f Fault) error {
	if err := f.validate(in.routes); err != nil {
		return err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.clearLocked(f.Route)
	in.faults[f.Route] = &active{Fault: f, release: make(chan struct{})}
	return nil
}

// Clear removes the fault on route, or every fault when route is empty.
// Requests held by a hang are released and served normally.
func (in *Injector) Clear(route string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if route != "" {
		in.clearLocked(route)
		return
	}
	for r := range in.faults {
		in.clearLocked(r)
	}
}

// Reset clears every fault and the request counters.
func (in *Injector) Reset() {
	in.Clear("")
	in.mu.Lock()
	defer in.mu.Unlock()
	clear(in.hits)
}

func (in *Injector) clearLocked(route string) {
	if a, ok := in.faults[route]; ok {
		close(a.release)
		delete(in.faults, route)
	}
}

// State is what the admin API reports.
type State struct {
	Faults []Fault `json:"faults"`
	// Hits counts requests per route since the last reset, faulted or not.
	Hits map[string]int `json:"hits"`
}

// State reports the faults in force and the request counters.
func (in *Injector) State() State {
	in.mu.Lock()
	defer in.mu.Unlock()
	st := State{Faults: []Fault{}, Hits: make(map[string]int, len(in.hits))}
	for _, a := range in.faults {
		st.Faults = append(st.Faults, a.Fault)
	}
	slices.SortFunc(st.Faults, func(a, b Fault) int { return cmp.Compare(a.Route, b.Route) })
	for r, n := range in.hits {
		st.Hits[r] = n
	}
	return st
}

// action is what one request gets, decided under the lock.
type action struct {
	latency time.Duration
	status  int
	hang    bool
	drop    bool
	after   bool
	release <-chan struct{}
}

// next counts a request on route and decides its fate.
func (in *Injector) next(route string) (action, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.hits[route]++
	a, ok := in.faults[route]
	if !ok {
		a, ok = in.faults[AllRoutes]
	}
	if !ok {
		return action{}, false
	}
	a.matched++
	n := float64(a.matched)
	act := action{latency: time.Duration(a.Latency), hang: a.Hang, drop: a.Drop, after: a.After, release: a.release}
	if a.Status != 0 && math.Floor(n*a.ErrorRate) > math.Floor((n-1)*a.ErrorRate) {
		act.status = a.Status
	}
	if a.Times > 0 && a.matched >= a.Times {
		// The last matching request still gets the fault; hangs of this
		// fault stay held until their clients give up.
		delete(in.faults, a.Route)
	}
	return act, true
}

// Wrap applies the faults in force to next. It must run after routing,
// since it keys on r.Pattern.
func (in *Injector) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		act, ok := in.next(r.Pattern)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		if act.latency > 0 {
			t := time.NewTimer(act.latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if act.after {
			withheld(w, r, next, act)
			return
		}
		switch {
		case act.drop:
			// The server closes the connection without writing a response.
			panic(http.ErrAbortHandler)
		case act.hang:
			select {
			case <-r.Context().Done():
				return
			case <-act.release:
			}
		case act.status != 0:
			writeFault(w, act.status)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// withheld serves r, then loses the answer (drop) or holds it until the
// client gives up or the fault is cleared (hang), when it is sent late.
func withheld(w http.ResponseWriter, r *http.Request, next http.Handler, act action) {
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, r)
	if act.hang {
		select {
		case <-r.Context().Done():
			return
		case <-act.release:
		}
	}
	if act.drop {
		panic(http.ErrAbortHandler)
	}
	maps.Copy(w.Header(), rec.Header())
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

// writeFault answers with the contract's error body for status.
func writeFault(w http.ResponseWriter, status int) {
	code := "unavailable"
	switch {
	case status == http.StatusNotFound:
		code = "not_found"
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		code = "unauthorized"
	case status < 500 && status != http.StatusTooManyRequests:
		code = "invalid"
	case status == http.StatusInternalServerError:
		code = "internal"
	}
	writeJSON(w, status, map[string]map[string]string{"error": {"code": code, "message": "injected fault"}})
}

// Admin serves the admin API, to be mounted at /admin/:
//
//	GET    /admin/faults   the faults in force and request counts (State)
//	POST   /admin/faults   put a Fault (JSON body) in force on its route
//	DELETE /admin/faults   clear every fault, or one with ?route=
//	POST   /admin/reset    clear every fault and the counters
func (in *Injector) Admin() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, in.State())
	})
	mux.HandleFunc("POST /admin/faults", func(w http.ResponseWriter, r *http.Request) {
		var f Fault
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		if err := in.Set(f); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, in.State())
	})
	mux.HandleFunc("DELETE /admin/faults", func(w http.ResponseWriter, r *http.Request) {
		in.Clear(r.URL.Query().Get("route"))
		writeJSON(w, http.StatusOK, in.State())
	})
	mux.HandleFunc("POST /admin/reset", func(w http.ResponseWriter, r *http.Request) {
		in.Reset()
		writeJSON(w, http.StatusOK, in.State())
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
