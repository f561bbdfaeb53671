package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/autoscale"
)

// The study is docs/autoscaling.md's evidence: every table there between
// <!-- study:NAME --> and <!-- /study:NAME --> markers is written by
// writeStudy from the runs below, on the shipped manifests and the
// simulator's measured defaults, so the doc cannot drift from what the
// manifests cost. Run from the repository root:
//
//	go run ./cmd/autoscalesim -study docs/autoscaling.md -png docs/autoscaling-trading-day.png

// job is one simulator invocation that yields exactly one scenario (or,
// with all set, every scenario of the invocation).
type job struct {
	args []string
	all  bool
}

func (j job) key() string { return strings.Join(j.args, "\x00") }

// shipped, manifestOnly and fixedFleet run one scenario under the given
// inputs and overrides: the manifest with its pre-warm job, the manifest
// alone, and the HPA-style fixed fleet.
func shipped(args ...string) job {
	return job{args: append(args, "-no-hpa", "-no-knative")}
}

func manifestOnly(args ...string) job {
	return job{args: append(args, "-prewarm-job", "", "-no-hpa")}
}

func fixedFleet(args ...string) job {
	return job{args: append(args, "-prewarm-job", "", "-no-knative")}
}

// Inputs the choice and sensitivity tables stress the settings with.
var (
	measured = []string{}
	slowDay  = []string{"-backend-latency", "50ms", "-peak-rps", "3000"}
)

type dayRow struct {
	label  string
	inputs []string
}

var days = []dayRow{
	{"weekday, Tue 2026-03-10", measured},
	{"early close (13:00), Fri 2026-11-27", []string{"-date", "2026-11-27"}},
	{"holiday, Fri 2026-12-25", []string{"-trace", "closed-day", "-date", "2026-12-25"}},
	{"2x traffic (peak 3,000 calls/s)", []string{"-peak-rps", "3000"}},
	{"0.5x traffic (peak 750 calls/s)", []string{"-peak-rps", "750"}},
}

// choiceRow changes one thing from the shipped configuration.
type choiceRow struct {
	label string
	run   func(inputs []string) job
	// fleet is added to the fixed fleet's inputs when the row changes the
	// pod itself, so both run the same pods.
	fleet []string
}

func override(args ...string) func([]string) job {
	return func(inputs []string) job { return shipped(append(append([]string{}, inputs...), args...)...) }
}

var choices = []choiceRow{
	{"**as shipped**", override(), nil},
	{"stable window 60s (instead of 30s)", override("-annotation", "window=60s"), nil},
	{"scale-down-delay 5m (instead of 0s)", override("-annotation", "scale-down-delay=5m"), nil},
	{"scale-down-delay 15m (instead of 0s)", override("-annotation", "scale-down-delay=15m"), nil},
	{"no pre-warm job", func(in []string) job { return manifestOnly(in...) }, nil},
	{"pre-warm floor of 2 pods (instead of 1)", override("-prewarm-job", "", "-prewarm-min-scale", "2", "-no-knative"), nil},
	{"target 20 (instead of 40)", override("-annotation", "target=20"), nil},
	{"target 60 (instead of 40)", override("-annotation", "target=60"), nil},
	{"containerConcurrency 50 (instead of 200)", override("-container-concurrency", "50"), nil},
	{"containerConcurrency 100 (instead of 200)", override("-container-concurrency", "100"), nil},
	{"max-scale 30 (instead of 10)", override("-annotation", "max-scale=30"), nil},
	{"1 CPU per pod (instead of 2)", override("-pod-parallelism", "1"), []string{"-pod-parallelism", "1"}},
}

var sensitivity = []dayRow{
	{"calls also wait 5 ms on the backends", []string{"-backend-latency", "5ms"}},
	{"... 20 ms", []string{"-backend-latency", "20ms"}},
	{"... 50 ms", []string{"-backend-latency", "50ms"}},
	{"... 50 ms, 2x traffic", slowDay},
	{"... 100 ms, 2x traffic", []string{"-backend-latency", "100ms", "-peak-rps", "3000"}},
	{"cold start 5 s (an image pull)", []string{"-cold-start", "5s"}},
	{"another random day (seed 2)", []string{"-seed", "2"}},
	{"another random day (seed 3)", []string{"-seed", "3"}},
}

// study runs jobs once each, two at a time.
type study struct {
	mu      sync.Mutex
	results map[string][]*autoscale.Result
	sims    map[string]*simulation
}

func (s *study) runAll(jobs []job) error {
	s.results, s.sims = map[string][]*autoscale.Result{}, map[string]*simulation{}
	seen := map[string]bool{}
	var todo []job
	for _, j := range jobs {
		if !seen[j.key()] {
			seen[j.key()] = true
			todo = append(todo, j)
		}
	}
	errs := make([]error, len(todo))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for i, j := range todo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			o, err := parseFlags(append([]string{"-progress", "off"}, j.args...), io.Discard)
			if err != nil {
				errs[i] = fmt.Errorf("%q: %w", j.args, err)
				return
			}
			sim, err := prepare(o)
			if err != nil {
				errs[i] = fmt.Errorf("%q: %w", j.args, err)
				return
			}
			if !j.all && len(sim.runs) != 1 {
				errs[i] = fmt.Errorf("%q: %d scenarios, want 1", j.args, len(sim.runs))
				return
			}
			res, err := sim.simulate(newProgress(io.Discard, "off", len(sim.runs)))
			if err != nil {
				errs[i] = fmt.Errorf("%q: %w", j.args, err)
				return
			}
			s.mu.Lock()
			s.results[j.key()], s.sims[j.key()] = res, sim
			s.mu.Unlock()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *study) one(j job) *autoscale.Result { return s.results[j.key()][0] }

var mainDay = job{args: []string{}, all: true}

func studyJobs() []job {
	jobs := []job{mainDay}
	for _, d := range append(append([]dayRow{}, days...), sensitivity...) {
		jobs = append(jobs, shipped(d.inputs...), fixedFleet(d.inputs...))
	}
	for _, in := range [][]string{measured, slowDay} {
		for _, c := range choices {
			jobs = append(jobs, c.run(in), fixedFleet(append(append([]string{}, in...), c.fleet...)...))
		}
	}
	return jobs
}

// writeStudy runs the study and rewrites the doc's generated blocks, and
// the chart of the default day when png is set.
func writeStudy(doc, png string, stderr io.Writer) error {
	text, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	start := time.Now()
	var s study
	if err := s.runAll(studyJobs()); err != nil {
		return err
	}
	out := string(text)
	for name, body := range map[string]string{
		"inputs":      inputsTable(),
		"main":        s.mainTable(),
		"days":        s.compareTable("day", days, false),
		"choices":     s.choicesTable(),
		"sensitivity": s.compareTable("inputs (default day otherwise)", sensitivity, true),
	} {
		if out, err = replaceBlock(out, name, body); err != nil {
			return fmt.Errorf("%s: %w", doc, err)
		}
	}
	if err := os.WriteFile(doc, []byte(out), 0o644); err != nil {
		return err
	}
	if png != "" {
		if err := s.sims[mainDay.key()].chart(png, s.results[mainDay.key()]); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "autoscalesim: study written to %s in %s\n", doc, time.Since(start).Round(time.Second))
	return nil
}

// replaceBlock replaces the text between "<!-- study:name" (to the end of
// its line) and "<!-- /study:name -->".
func replaceBlock(doc, name, body string) (string, error) {
	open, end := "<!-- study:"+name, "<!-- /study:"+name+" -->"
	i := strings.Index(doc, open)
	if i < 0 {
		return "", fmt.Errorf("no %q marker", open)
	}
	nl := strings.IndexByte(doc[i:], '\n')
	j := strings.Index(doc, end)
	if nl < 0 || j < i+nl {
		return "", fmt.Errorf("no %q after %q", end, open)
	}
	return doc[:i+nl+1] + body + doc[j:], nil
}

func inputsTable() string {
	var b strings.Builder
	b.WriteString("| input | default | measured by |\n|---|---:|---|\n")
	fmt.Fprintf(&b, "| CPU per call (`-service-time`) | %v | production build under load: `BENCH_LOAD=1 go test ./internal/tooling/bench -run TestLoad -v`, column CPU µs/call |\n", measuredServiceTime)
	fmt.Fprintf(&b, "| memory of an idle pod (`-memory-idle`) | %s | same run, RSS idle |\n", measuredIdleMemory)
	fmt.Fprintf(&b, "| memory per call in flight (`-memory-per-call`) | %s | same run, (RSS peak at 200 concurrent calls - RSS idle) / 200 |\n", measuredMemoryPerCall)
	fmt.Fprintf(&b, "| cold start (`-cold-start`) | %v | %.1f s container start to ready, `go test ./testcontainers -run 'TestServerContainer$' -count=5 -v`, plus a %.1f s allowance for scheduling, the pod sandbox and queue-proxy |\n",
		measuredColdStart, measuredContainer.Seconds(), coldStartAllowance.Seconds())
	b.WriteString("| backend wait per call (`-backend-latency`) | 0 | not measurable here (the demo backends answer in-process); see the sensitivity table |\n")
	return b.String()
}

func (s *study) mainTable() string {
	res := s.results[mainDay.key()]
	var fixed, ship *autoscale.Result
	for _, r := range res {
		switch {
		case r.Name == shippedName:
			ship = r
		case strings.HasPrefix(r.Name, "hpa "):
			fixed = r
		}
	}
	var b strings.Builder
	b.WriteString("| scenario | pod-hours | of the fixed fleet | max pods | p50 ms | p99 ms | max ms | calls delayed by a cold start | share of calls | cold wait p50 / p99 ms |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range res {
		name, ph := r.Name, fmt.Sprintf("%.2f", r.PodHours())
		if r == ship {
			name, ph = "**"+name+"**", "**"+ph+"**"
		}
		if r == fixed {
			name = "fixed fleet: HPA, 3-8 pods at 70% CPU"
		}
		cold := "-"
		if r.ColdDelayed > 0 {
			cold = fmt.Sprintf("%s / %s", autoscale.Millis(r.ColdP50), autoscale.Millis(r.ColdP99))
		}
		fmt.Fprintf(&b, "| %s | %s | %.1f%% | %d | %s | %s | %s | %s | %s | %s |\n", name, ph, pct(r.PodSeconds, fixed.PodSeconds),
			r.MaxReplicas, autoscale.Millis(r.P50), autoscale.Millis(r.P99), autoscale.Millis(r.Max), thousands(r.ColdDelayed), share(r.ColdDelayed, r.Requests), cold)
	}
	fmt.Fprintf(&b, "\nThe goals on this day, for the shipped configuration:\n\n")
	fmt.Fprintf(&b, "- pod-hours at most 25%% of the fixed fleet's: **%.1f%%** (%.2f of %.2f)\n", pct(ship.PodSeconds, fixed.PodSeconds), ship.PodHours(), fixed.PodHours())
	fmt.Fprintf(&b, "- at most 0.1%% of calls delayed by a cold start: **%s** (%s of %s)\n", share(ship.ColdDelayed, ship.Requests), thousands(ship.ColdDelayed), thousands(ship.Requests))
	fmt.Fprintf(&b, "- p99 latency no worse than the fixed fleet's: **%s ms** against %s ms\n", autoscale.Millis(ship.P99), autoscale.Millis(fixed.P99))
	return b.String()
}

// compareTable sets the shipped configuration against the fixed fleet
// under each row's inputs; flags adds the inputs as flags to the label.
func (s *study) compareTable(first string, rows []dayRow, flags bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| %s | calls | shipped pod-hours | fixed fleet pod-hours | shipped / fixed | max pods | calls delayed by a cold start (share) | p99 ms, shipped / fixed |\n", first)
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, d := range rows {
		sh, fx := s.one(shipped(d.inputs...)), s.one(fixedFleet(d.inputs...))
		label := d.label
		if flags {
			label += " (`" + strings.Join(d.inputs, " ") + "`)"
		}
		fmt.Fprintf(&b, "| %s | %s | %.2f | %.2f | %.1f%% | %d | %s (%s) | %s / %s |\n", label, thousands(sh.Requests), sh.PodHours(), fx.PodHours(),
			pct(sh.PodSeconds, fx.PodSeconds), sh.MaxReplicas, thousands(sh.ColdDelayed), share(sh.ColdDelayed, sh.Requests), autoscale.Millis(sh.P99), autoscale.Millis(fx.P99))
	}
	return b.String()
}

func (s *study) choicesTable() string {
	var b strings.Builder
	b.WriteString("| row | setting | pod-hours | max pods | p99 ms (fixed fleet) | cold-delayed | 50 ms backends, 2x traffic: pod-hours | max pods | p99 ms (fixed fleet) | cold-delayed |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, c := range choices {
		fmt.Fprintf(&b, "| %d | %s", i+1, c.label)
		for _, in := range [][]string{measured, slowDay} {
			r, fx := s.one(c.run(in)), s.one(fixedFleet(append(append([]string{}, in...), c.fleet...)...))
			fmt.Fprintf(&b, " | %.2f | %d | %s (%s) | %s", r.PodHours(), r.MaxReplicas, autoscale.Millis(r.P99), autoscale.Millis(fx.P99), thousands(r.ColdDelayed))
		}
		b.WriteString(" |\n")
	}
	return b.String()
}

func pct(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * a / b
}

// share is n/total as a percentage with two significant digits.
func share(n, total int64) string {
	if total == 0 || n == 0 {
		return "0%"
	}
	return strconv.FormatFloat(100*float64(n)/float64(total), 'g', 2, 64) + "%"
}

// thousands writes n with comma separators.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
