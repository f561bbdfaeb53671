// Package autoscale simulates how a Knative Service's pods follow a request
// trace. The scaling decisions come from Knative's own autoscaler code
// (knative.dev/serving/pkg/autoscaler/scaling, the decider the KPA runs,
// ticked every 2 s), fed by a metric client built on Knative's aggregation
// buckets; the KPA reconciler's bounds and scale-to-zero logic are mirrored
// (see kpa). Around it sit a model of pods (cold start until ready, a
// per-pod number of parallel servers, queue-proxy's containerConcurrency
// limit, draining on scale-down) and of requests (trace arrivals, service
// times, FIFO queueing at the activator and at the pods).
//
// For comparison the same model can run a fixed-floor HPA-style baseline
// (see HPA) and a pre-warm schedule that raises min-scale around the
// trading session.
package autoscale

import (
	"errors"
	"math"
	"math/rand/v2"
	"time"
)

// Model is the pod and request model.
type Model struct {
	// ColdStart is the time from a replica being requested to it being ready
	// (scheduling, container start, readiness; image pull excluded unless
	// included here).
	ColdStart time.Duration
	// ServiceTime is the mean time one request occupies one server (CPU)
	// of a pod.
	ServiceTime time.Duration
	// IOTime is the mean time a request then waits on the backends, in
	// flight at the pod (it counts towards concurrency and
	// containerConcurrency) but holding no server.
	IOTime time.Duration
	// ConstantServiceTime makes every request take exactly ServiceTime and
	// IOTime; otherwise both are exponential with those means.
	ConstantServiceTime bool
	// Parallelism is how many requests one pod serves at once (its servers:
	// its CPUs); further requests queue in the pod. 0 means 1.
	Parallelism int
}

// Run is one simulation: a trace through a model under one autoscaling
// policy: Knative's (Knative set, optionally with a MinScale schedule) or the
// HPA-style baseline (HPA set).
type Run struct {
	Name  string
	Trace Trace
	Model Model
	// Knative holds the KPA settings (see FromService).
	Knative *Settings
	// MinScale, if set, overrides Knative.MinScale over time: the pre-warm
	// schedule. ok=false means "use the manifest's".
	MinScale func(t time.Time) (minScale int32, ok bool)
	// HPA selects the HPA-style baseline instead of Knative.
	HPA *HPA
	// Seed makes arrivals (for rate traces), service times and load
	// balancing reproducible.
	Seed uint64
	// Fresh starts from a newly created revision (initial-scale pods
	// starting, no metrics); otherwise the revision has been running: its
	// replicas are at min-scale and ready, and the decider's last
	// recommendation is that.
	Fresh bool
	// Progress, if set, is called with the fraction of the trace simulated.
	Progress func(done float64)
}

// Sample is the state of the fleet over one second of the trace.
type Sample struct {
	// At is the end of the second, from the trace start.
	At time.Duration
	// Replicas is the number of pods wanted and not terminating (starting or
	// ready); Ready of those are ready.
	Replicas, Ready int
	// Draining counts pods terminating with requests still in flight.
	Draining int
	// Arrivals is the number of requests that arrived in the second.
	Arrivals int
	// Concurrency is the time-averaged number of requests in the system.
	Concurrency float64
	// Activator is the number of requests buffered in the activator at the
	// end of the second.
	Activator int
	// ColdDelayed counts the requests that started service in the second
	// after waiting for a cold start.
	ColdDelayed int
	// Slowest is the largest latency of the requests completed in the
	// second (0 if none).
	Slowest time.Duration
}

// Result summarises one Run.
type Result struct {
	Name    string
	Start   time.Time
	Samples []Sample
	// Requests is the number of requests completed.
	Requests int64
	// PodSeconds is the integral of pods alive (starting, ready or draining)
	// over the trace: what you pay for.
	PodSeconds float64
	// MaxReplicas is the largest replica count.
	MaxReplicas int
	// P50 and P99 are end-to-end latency percentiles (queueing plus
	// service), Max the largest.
	P50, P99, Max time.Duration
	// ColdDelayed counts requests that waited for a cold start: they were
	// served by a pod that was still starting when they arrived (buffered by
	// the activator until it was ready). ColdAtZero is the subset that
	// arrived with no pod ready at all (a scale from zero). ColdP50 and
	// ColdP99 are percentiles of the wait of the ColdDelayed requests: the
	// extra latency the cold start cost them.
	ColdDelayed, ColdAtZero int64
	ColdP50, ColdP99        time.Duration
	// ScaleFromZero counts how often replicas went from 0 to more.
	ScaleFromZero int
}

// PodHours is PodSeconds in hours.
func (r *Result) PodHours() float64 { return r.PodSeconds / 3600 }

type request struct {
	arrival, service, io time.Duration
	viaActivator         bool
	atZero               bool
}

type pod struct {
	readyAt     time.Duration
	ready       bool
	terminating bool
	inflight    int // queued or in service at the pod
	busy        int // in service
	queue       fifo
}

type fifo struct {
	buf  []request
	head int
}

func (q *fifo) push(r request) { q.buf = append(q.buf, r) }
func (q *fifo) len() int       { return len(q.buf) - q.head }
func (q *fifo) pop() request {
	r := q.buf[q.head]
	q.head++
	if q.head > 1024 && q.head*2 > len(q.buf) {
		n := copy(q.buf, q.buf[q.head:])
		q.buf = q.buf[:n]
		q.head = 0
	}
	return r
}

type completion struct {
	at  time.Duration
	pod *pod
	req request
	io  bool // the end of the backend wait, not of the server time
}

// compHeap is a binary min-heap of completions by time.
type compHeap []completion

func (h *compHeap) push(c completion) {
	*h = append(*h, c)
	a := *h
	i := len(a) - 1
	for i > 0 {
		p := (i - 1) / 2
		if a[p].at <= a[i].at {
			break
		}
		a[p], a[i] = a[i], a[p]
		i = p
	}
}

func (h *compHeap) pop() completion {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a = a[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && a[r].at < a[l].at {
			m = r
		}
		if a[i].at <= a[m].at {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
	return top
}

type sim struct {
	run      Run
	start    time.Time
	end      time.Duration
	parallel int
	cc       int // containerConcurrency (0 = unlimited)

	svcRNG, lbRNG *rand.Rand

	kpa *kpa
	hpa *hpaState

	now      time.Duration
	last     time.Duration
	alive    int      // pods alive (incl. starting and draining)
	starting []*pod   // FIFO by readyAt
	ready    []*pod   // ready, not terminating; last = most recently ready
	draining int      // terminating pods with requests in flight
	comps    compHeap // server and backend-wait completions
	actQ     fifo

	inSystem, viaAct, busy int

	// Areas (count x seconds) since the last scrape.
	areaN, areaA, areaBusy, areaServers float64
	arrivalsSec, coldSec                int
	slowestSec                          time.Duration
	actEntry                            bool
	firstAdj                            float64

	res      Result
	hist     histogram
	coldHist histogram
}

// ErrNoPolicy is returned by Simulate when a Run names no policy.
var ErrNoPolicy = errors.New("autoscale: run needs Knative settings or an HPA")

// drainLimit bounds how long past the trace's end in-flight requests are
// followed to completion.
const drainLimit = 10 * time.Minute

// Simulate runs r and returns its result. It is deterministic for a given
// Run.
func Simulate(r Run) (*Result, error) {
	if (r.Knative == nil) == (r.HPA == nil) {
		return nil, ErrNoPolicy
	}
	if r.Trace == nil {
		return nil, errors.New("autoscale: run needs a trace")
	}
	if r.Model.ServiceTime <= 0 || r.Model.IOTime < 0 || r.Model.ColdStart < 0 {
		return nil, errors.New("autoscale: service time must be positive, backend wait and cold start not negative")
	}
	s := &sim{
		run:      r,
		start:    r.Trace.Start(),
		end:      r.Trace.Duration(),
		parallel: max(r.Model.Parallelism, 1),
		svcRNG:   rand.New(rand.NewPCG(r.Seed, 2)),
		lbRNG:    rand.New(rand.NewPCG(r.Seed, 3)),
	}
	s.res.Name, s.res.Start = r.Name, s.start
	s.res.Samples = make([]Sample, 0, int(s.end/time.Second)+1)
	if r.Knative != nil {
		s.cc = int(r.Knative.ContainerConcurrency)
		s.kpa = newKPA(r.Knative, s.start, s, r.MinScale)
		s.initKnative()
	} else {
		s.hpa = newHPA(*r.HPA)
		for i := 0; i < r.HPA.Min; i++ {
			s.addReadyPod()
		}
	}
	s.loop()
	s.res.P50, s.res.P99, s.res.Max = s.hist.quantile(0.50), s.hist.quantile(0.99), s.hist.max
	s.res.ColdP50, s.res.ColdP99 = s.coldHist.quantile(0.50), s.coldHist.quantile(0.99)
	return &s.res, nil
}

func (s *sim) initKnative() {
	k := s.kpa
	if s.run.Fresh {
		k.desired = scaleUnknown
		k.cond = condActivating
		k.proxy, k.proxySince = true, 0
		s.setReplicas(int(max(k.s.InitialScale, 0)), 0)
		return
	}
	lo, _ := k.bounds(0)
	k.initialized = true
	k.desired = lo
	k.proxy, k.proxySince = true, -time.Hour
	k.cond, k.condSince = condInactive, -time.Hour
	if lo > 0 {
		k.cond = condActive
		for i := int32(0); i < lo; i++ {
			s.addReadyPod()
		}
	}
}

func (s *sim) addReadyPod() {
	p := &pod{ready: true, readyAt: -time.Hour}
	s.ready = append(s.ready, p)
	s.alive++
	s.res.MaxReplicas = max(s.res.MaxReplicas, s.replicas())
}

// fleet implementation.
func (s *sim) readyPods() int { return len(s.ready) }
func (s *sim) replicas() int  { return len(s.ready) + len(s.starting) }

func (s *sim) setReplicas(n int, now time.Duration) {
	cur := s.replicas()
	if cur == 0 && n > 0 {
		s.res.ScaleFromZero++
	}
	for ; cur < n; cur++ {
		p := &pod{readyAt: now + s.run.Model.ColdStart}
		s.starting = append(s.starting, p)
		s.alive++
	}
	for ; cur > n; cur-- {
		// ReplicaSet victim order: not-ready pods first, then the most
		// recently ready.
		if k := len(s.starting); k > 0 {
			s.starting = s.starting[:k-1]
			s.alive--
			continue
		}
		k := len(s.ready)
		p := s.ready[k-1]
		s.ready = s.ready[:k-1]
		p.terminating = true
		if p.inflight == 0 {
			s.alive--
		} else {
			s.draining++
		}
	}
	s.res.MaxReplicas = max(s.res.MaxReplicas, s.replicas())
}

// advance accumulates the time integrals up to t.
func (s *sim) advance(t time.Duration) {
	if t <= s.last {
		return
	}
	dt := (t - s.last).Seconds()
	s.areaN += float64(s.inSystem) * dt
	s.areaA += float64(s.viaAct) * dt
	s.areaBusy += float64(s.busy) * dt
	s.areaServers += float64(len(s.ready)*s.parallel) * dt
	if s.last < s.end {
		upto := min(t, s.end)
		s.res.PodSeconds += float64(s.alive) * (upto - s.last).Seconds()
	}
	s.last = t
}

func (s *sim) sample(mean time.Duration) time.Duration {
	if mean == 0 || s.run.Model.ConstantServiceTime {
		return mean
	}
	return time.Duration(s.svcRNG.ExpFloat64() * float64(mean))
}

func (s *sim) loop() {
	arr := s.run.Trace.Arrivals(s.run.Seed)
	nextArr, hasArr := arr.Next()
	nextScrape := time.Second
	nextTick := tickInterval
	nextHPA := time.Duration(math.MaxInt64)
	if s.hpa != nil {
		nextHPA = s.hpa.cfg.SyncPeriod
	}
	progressStep := s.end / 100
	nextProgress := progressStep
	hardEnd := s.end + drainLimit
	for {
		// Pick the earliest event; ties resolve in this order.
		t, kind := hardEnd, evEnd
		if len(s.starting) > 0 && s.starting[0].readyAt < t {
			t, kind = s.starting[0].readyAt, evReady
		}
		if len(s.comps) > 0 && s.comps[0].at < t {
			t, kind = s.comps[0].at, evComplete
		}
		if nextScrape < t {
			t, kind = nextScrape, evScrape
		}
		if s.kpa != nil && nextTick < t {
			t, kind = nextTick, evTick
		}
		if nextHPA < t {
			t, kind = nextHPA, evHPA
		}
		if hasArr && nextArr < t {
			t, kind = nextArr, evArrival
		}
		if t > s.end && !hasArr && s.inSystem == 0 {
			break
		}
		if kind == evEnd {
			break
		}
		s.advance(t)
		s.now = t
		switch kind {
		case evReady:
			p := s.starting[0]
			s.starting = s.starting[1:]
			p.ready = true
			s.ready = append(s.ready, p)
			if s.kpa != nil {
				s.kpa.reconcile(t)
			}
			s.dispatchActivator()
		case evComplete:
			s.complete(s.comps.pop())
		case evScrape:
			s.scrape()
			nextScrape += time.Second
		case evTick:
			s.kpa.tick(t)
			s.dispatchActivator()
			nextTick += tickInterval
		case evHPA:
			s.hpa.sync(s, t)
			nextHPA += s.hpa.cfg.SyncPeriod
		case evArrival:
			s.arrive(t)
			if t >= s.end {
				hasArr = false
			} else {
				nextArr, hasArr = arr.Next()
				if hasArr && nextArr >= s.end {
					hasArr = false
				}
			}
		}
		if s.run.Progress != nil && progressStep > 0 && t >= nextProgress {
			s.run.Progress(min(float64(t)/float64(s.end), 1))
			nextProgress += progressStep
		}
	}
	if s.run.Progress != nil {
		s.run.Progress(1)
	}
}

const (
	evEnd = iota
	evReady
	evComplete
	evScrape
	evTick
	evHPA
	evArrival
)

func (s *sim) arrive(t time.Duration) {
	r := request{arrival: t, service: s.sample(s.run.Model.ServiceTime), io: s.sample(s.run.Model.IOTime)}
	r.atZero = len(s.ready) == 0
	s.inSystem++
	s.arrivalsSec++
	if s.kpa != nil && (s.kpa.proxy || len(s.ready) == 0) {
		r.viaActivator = true
		s.viaAct++
		if !s.actEntry {
			// The activator reports a revision's first request at once
			// (ConcurrencyReporter.handleRequestIn) and the autoscaler's
			// stat server pokes the decider with it.
			s.actEntry = true
			s.firstAdj++
			s.kpa.mc.record(s.kpa.at(t), 1, 1)
			s.kpa.poke(t, 1)
		}
		s.actQ.push(r)
		s.dispatchActivator()
		return
	}
	if len(s.ready) == 0 { // HPA with no ready pod: wait like at a Service with no endpoints
		s.actQ.push(r)
		return
	}
	p := s.ready[s.lbRNG.IntN(len(s.ready))]
	s.toPod(p, r)
}

// dispatchActivator sends buffered requests to ready pods with spare
// containerConcurrency, least loaded first (the activator's capacity-aware
// load balancing).
func (s *sim) dispatchActivator() {
	for s.actQ.len() > 0 {
		var best *pod
		for _, p := range s.ready {
			if s.cc > 0 && p.inflight >= s.cc {
				continue
			}
			if best == nil || p.inflight < best.inflight {
				best = p
			}
		}
		if best == nil {
			return
		}
		s.toPod(best, s.actQ.pop())
	}
}

func (s *sim) toPod(p *pod, r request) {
	p.inflight++
	if p.busy < s.parallel {
		s.startService(p, r)
		return
	}
	p.queue.push(r)
}

func (s *sim) startService(p *pod, r request) {
	p.busy++
	s.busy++
	if p.readyAt > r.arrival {
		s.res.ColdDelayed++
		s.coldSec++
		s.coldHist.add(s.now - r.arrival)
		if r.atZero {
			s.res.ColdAtZero++
		}
	}
	s.comps.push(completion{at: s.now + r.service, pod: p, req: r})
}

func (s *sim) complete(c completion) {
	p, r := c.pod, c.req
	if !c.io {
		p.busy--
		s.busy--
		if p.queue.len() > 0 {
			s.startService(p, p.queue.pop())
		}
		if r.io > 0 {
			s.comps.push(completion{at: s.now + r.io, pod: p, req: r, io: true})
			return
		}
	}
	p.inflight--
	s.inSystem--
	if r.viaActivator {
		s.viaAct--
	}
	s.res.Requests++
	s.hist.add(s.now - r.arrival)
	s.slowestSec = max(s.slowestSec, s.now-r.arrival)
	if p.terminating {
		if p.inflight == 0 {
			s.draining--
			s.alive--
		}
		return
	}
	if s.actQ.len() > 0 {
		s.dispatchActivator()
	}
}

// scrape closes one second: the autoscaler's collector records the
// queue-proxies' and activator's stats (net of proxied requests, so every
// request in the system counts once), and a Sample is taken.
func (s *sim) scrape() {
	sec := time.Second.Seconds()
	if s.kpa != nil {
		act := math.Max(s.areaA/sec-s.firstAdj, 0)
		conc := (s.areaN-s.areaA)/sec + act
		reqs := math.Max(float64(s.arrivalsSec)-s.firstAdj, 0)
		if len(s.ready) > 0 || s.actEntry {
			s.kpa.mc.record(s.kpa.at(s.now), conc, reqs)
		}
		if s.actEntry && s.areaA == 0 {
			s.actEntry = false // a zero report: the activator forgets the revision
		}
		s.firstAdj = 0
	}
	if s.hpa != nil {
		s.hpa.observe(s.areaBusy, s.areaServers)
	}
	if s.now <= s.end {
		s.res.Samples = append(s.res.Samples, Sample{
			At:          s.now,
			Replicas:    s.replicas(),
			Ready:       len(s.ready),
			Draining:    s.draining,
			Arrivals:    s.arrivalsSec,
			Concurrency: s.areaN / sec,
			Activator:   s.actQ.len(),
			ColdDelayed: s.coldSec,
			Slowest:     s.slowestSec,
		})
	}
	s.areaN, s.areaA, s.areaBusy, s.areaServers = 0, 0, 0, 0
	s.arrivalsSec, s.coldSec, s.slowestSec = 0, 0, 0
}
