// Command autoscalesim replays a request trace through Knative's own
// autoscaler (the KPA's decider from knative.dev/serving, ticking every 2 s)
// and a model of pods and requests, to choose autoscaling settings before
// paying for them. It compares, in one run, the Service manifest's settings,
// a fixed-floor HPA-style baseline and pre-warmed schedules (min-scale raised
// around the trading session), and prints a table, optionally writing CSV
// and a PNG chart.
//
//	go run ./cmd/autoscalesim -manifest knative/service-live.yaml -png day.png
//
// See docs/autoscaling.md. This binary is separate from the server so the
// server stays free of knative.dev/serving.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/portfolio-mcp/portfolio-mcp/internal/prewarm"
	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/autoscale"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "autoscalesim:", err)
		}
		os.Exit(2)
	}
}

type options struct {
	manifest, asConfig       string
	trace, date              string
	peak                     float64
	coldStart, serviceTime   time.Duration
	backendLatency           time.Duration
	constantService          bool
	parallelism              int
	seed                     uint64
	fresh                    bool
	hpaMin, hpaMax           int
	hpaTarget                float64
	noHPA, noKnative         bool
	prewarmJob               string
	prewarm                  string
	prewarmBefore, prewarmAf time.Duration
	prewarmHold              time.Duration
	memIdle, memPerCall      quantity
	study                    string
	holidays, earlyCloses    string
	csvPath, summaryPath     string
	pngPath                  string
	progress                 string
	annotations              map[string]string
	containerConcurrency     int64
	variants                 []variant
	prewarmOn                string
}

// variant is a named set of template overrides simulated beside the
// manifest.
type variant struct {
	name        string
	annotations map[string]string
	cc          int64 // -1: keep
}

// annotationKey expands a short key to the autoscaling.knative.dev group.
func annotationKey(k string) string {
	if !strings.Contains(k, "/") {
		return "autoscaling.knative.dev/" + k
	}
	return k
}

func parseVariant(s string) (variant, error) {
	name, body, ok := strings.Cut(s, ":")
	v := variant{name: strings.TrimSpace(name), annotations: map[string]string{}, cc: -1}
	if !ok || v.name == "" {
		return v, errors.New("want name:key=value,key=value")
	}
	for _, kv := range splitList(body) {
		k, val, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return v, fmt.Errorf("%q: want key=value", kv)
		}
		if k == "container-concurrency" {
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < 0 {
				return v, fmt.Errorf("container-concurrency %q", val)
			}
			v.cc = n
			continue
		}
		v.annotations[annotationKey(k)] = val
	}
	return v, nil
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{annotations: map[string]string{}}
	fs := flag.NewFlagSet("autoscalesim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Func("annotation", "override a template annotation, key=value (repeatable; value \"\" removes it), to try settings without editing the manifest", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return errors.New("want key=value")
		}
		o.annotations[annotationKey(k)] = v
		return nil
	})
	fs.Func("variant", "simulate another named setting beside the manifest: name:key=value,... (template annotations, short keys in autoscaling.knative.dev/, or container-concurrency=N); repeatable", func(s string) error {
		v, err := parseVariant(s)
		if err != nil {
			return err
		}
		o.variants = append(o.variants, v)
		return nil
	})
	fs.StringVar(&o.prewarmOn, "prewarm-on", "", "variant the pre-warm schedules apply to (default: the manifest)")
	fs.Int64Var(&o.containerConcurrency, "container-concurrency", -1, "override the manifest's containerConcurrency")
	fs.StringVar(&o.manifest, "manifest", "knative/service-live.yaml", "Knative Service manifest whose template annotations and containerConcurrency are simulated")
	fs.StringVar(&o.asConfig, "autoscaler-config", "", "optional config-autoscaler ConfigMap manifest (default: Knative's defaults)")
	fs.StringVar(&o.trace, "trace", "trading-day", "trading-day, closed-day, or a CSV file (one timestamp per request, or time,rate rows)")
	fs.StringVar(&o.date, "date", "2026-03-10", "exchange date for the built-in traces (YYYY-MM-DD)")
	fs.Float64Var(&o.peak, "peak-rps", 1500, "request rate at the opening bell for the trading-day trace")
	fs.DurationVar(&o.coldStart, "cold-start", measuredColdStart, "replica requested -> ready: the container's start to ready plus scheduling (image pull excluded)")
	fs.DurationVar(&o.serviceTime, "service-time", measuredServiceTime, "mean CPU time of one tool call (it holds one of the pod's servers)")
	fs.DurationVar(&o.backendLatency, "backend-latency", 0, "mean time a call then waits on the backends (in flight, holding no CPU)")
	fs.BoolVar(&o.constantService, "constant-service-time", false, "every call takes exactly -service-time (default: exponential)")
	fs.IntVar(&o.parallelism, "pod-parallelism", 0, "calls one pod runs on CPU at once (0: the container's CPU limit rounded up, else 1); per-replica capacity = this / -service-time")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed (arrivals, service times, load balancing)")
	fs.BoolVar(&o.fresh, "fresh-revision", false, "start from a newly created revision instead of a running one")
	fs.IntVar(&o.hpaMin, "hpa-min", 3, "HPA baseline min replicas")
	fs.IntVar(&o.hpaMax, "hpa-max", 8, "HPA baseline max replicas")
	fs.Float64Var(&o.hpaTarget, "hpa-target", 70, "HPA baseline target CPU utilisation, percent")
	fs.BoolVar(&o.noHPA, "no-hpa", false, "skip the HPA baseline")
	fs.BoolVar(&o.noKnative, "no-knative", false, "skip the manifest-as-is scenario")
	fs.StringVar(&o.prewarmJob, "prewarm-job", "knative/prewarm.yaml", "the pre-warm CronJob manifest: its schedule is simulated on the manifest as the \"shipped\" scenario (empty: none)")
	fs.StringVar(&o.prewarm, "prewarm-min-scale", "", "comma-separated min-scale values to simulate pre-warmed with the -prewarm-* window (empty: none)")
	fs.DurationVar(&o.prewarmBefore, "prewarm-before", 15*time.Minute, "raise min-scale this long before the open")
	fs.DurationVar(&o.prewarmAf, "prewarm-after", 15*time.Minute, "lower min-scale this long after the close")
	fs.DurationVar(&o.prewarmHold, "prewarm-hold", 0, "if set, lower min-scale this long after the open instead (warm for the opening burst only)")
	o.memIdle, o.memPerCall = mustQuantity(measuredIdleMemory), mustQuantity(measuredMemoryPerCall)
	fs.Var(&o.memIdle, "memory-idle", "resident memory of an idle pod (checked with -memory-per-call against the manifest's memory limit)")
	fs.Var(&o.memPerCall, "memory-per-call", "resident memory per call in flight")
	fs.StringVar(&o.holidays, "holidays", "", "extra exchange holidays, comma-separated YYYY-MM-DD")
	fs.StringVar(&o.earlyCloses, "early-closes", "", "extra early closes, comma-separated YYYY-MM-DD=HH:MM")
	fs.StringVar(&o.csvPath, "csv", "", "write the per-second time series of every scenario to this CSV file")
	fs.StringVar(&o.summaryPath, "summary-csv", "", "write the summary table to this CSV file")
	fs.StringVar(&o.pngPath, "png", "", "write a chart to this PNG file")
	fs.StringVar(&o.study, "study", "", "regenerate the study's tables in this Markdown file (docs/autoscaling.md) and, with -png, its chart; other flags are ignored")
	fs.StringVar(&o.progress, "progress", "auto", "progress bar on stderr: auto (when a terminal), on, off")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, nil
}

// calendar builds the NYSE calendar plus the -holidays and -early-closes.
func (o *options) calendar() (*calendar.Calendar, error) {
	return calendar.NYSEFromLists(o.holidays, o.earlyCloses)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func loadTrace(o *options, cal *calendar.Calendar) (autoscale.Trace, error) {
	switch o.trace {
	case "trading-day", "closed-day":
		d, err := calendar.ParseDate(o.date)
		if err != nil {
			return nil, err
		}
		if o.trace == "closed-day" {
			return autoscale.QuietDay(cal.Location(), d), nil
		}
		return autoscale.TradingDay(cal, d, o.peak)
	default:
		f, err := os.Open(o.trace)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return autoscale.ReadCSV(f, o.trace)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.study != "" {
		return writeStudy(o.study, o.pngPath, stderr)
	}
	sim, err := prepare(o)
	if err != nil {
		return err
	}
	sim.describe(stdout)
	bar := newProgress(stderr, o.progress, len(sim.runs))
	results, err := sim.simulate(bar)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	if err := autoscale.WriteTable(stdout, results); err != nil {
		return err
	}
	writeComparison(stdout, results)

	if o.csvPath != "" {
		if err := writeFile(o.csvPath, func(w io.Writer) error { return autoscale.WriteSamplesCSV(w, results) }); err != nil {
			return err
		}
	}
	if o.summaryPath != "" {
		if err := writeFile(o.summaryPath, func(w io.Writer) error { return autoscale.WriteSummaryCSV(w, results) }); err != nil {
			return err
		}
	}
	if o.pngPath != "" {
		return sim.chart(o.pngPath, results)
	}
	return nil
}

// simulation is one invocation's scenarios, ready to run.
type simulation struct {
	o        *options
	cal      *calendar.Calendar
	settings *autoscale.Settings
	variants []*autoscale.Settings
	trace    autoscale.Trace
	model    autoscale.Model
	parallel string // where model.Parallelism came from
	runs     []autoscale.Run
}

// prepare reads the manifest, the variants, the trace and the model.
func prepare(o *options) (*simulation, error) {
	cal, err := o.calendar()
	if err != nil {
		return nil, err
	}
	svc, err := autoscale.LoadService(o.manifest)
	if err != nil {
		return nil, fmt.Errorf("%w (set -manifest)", err)
	}
	applyOverrides(svc, o.annotations, o.containerConcurrency)
	cfg, err := autoscale.AutoscalerConfig(nil)
	if o.asConfig != "" {
		cfg, err = autoscale.LoadAutoscalerConfigMap(o.asConfig)
	}
	if err != nil {
		return nil, err
	}
	sim := &simulation{o: o, cal: cal}
	if sim.settings, err = autoscale.FromService(svc, cfg); err != nil {
		return nil, err
	}
	sim.variants = make([]*autoscale.Settings, len(o.variants))
	for i, v := range o.variants {
		vs := svc.DeepCopy()
		applyOverrides(vs, v.annotations, v.cc)
		if sim.variants[i], err = autoscale.FromService(vs, cfg); err != nil {
			return nil, fmt.Errorf("variant %s: %w", v.name, err)
		}
		sim.variants[i].Name = v.name
	}
	if sim.trace, err = loadTrace(o, cal); err != nil {
		return nil, err
	}
	sim.model = autoscale.Model{ColdStart: o.coldStart, ServiceTime: o.serviceTime, IOTime: o.backendLatency,
		ConstantServiceTime: o.constantService, Parallelism: o.parallelism}
	sim.parallel = "-pod-parallelism"
	switch {
	case sim.model.Parallelism < 0:
		return nil, errors.New("-pod-parallelism must not be negative")
	case sim.model.Parallelism == 0 && sim.settings.CPULimit > 0:
		sim.model.Parallelism, sim.parallel = int(math.Ceil(sim.settings.CPULimit)), "the CPU limit"
	case sim.model.Parallelism == 0:
		sim.model.Parallelism, sim.parallel = 1, "no CPU limit: default"
	}
	if sim.runs, err = scenarios(o, cal, sim.settings, sim.variants); err != nil {
		return nil, err
	}
	if len(sim.runs) == 0 {
		return nil, errors.New("no scenario to run")
	}
	for i := range sim.runs {
		sim.runs[i].Trace, sim.runs[i].Model, sim.runs[i].Seed, sim.runs[i].Fresh = sim.trace, sim.model, o.seed, o.fresh
	}
	return sim, nil
}

// describe prints the settings, the model and the trace being simulated.
func (sim *simulation) describe(w io.Writer) {
	m := sim.model
	fmt.Fprintf(w, "manifest: %s\n", sim.o.manifest)
	fmt.Fprintf(w, "knative:  %s\n", sim.settings)
	for _, v := range sim.variants {
		fmt.Fprintf(w, "variant:  %s\n", v)
	}
	dist := "exponential"
	if m.ConstantServiceTime {
		dist = "constant"
	}
	fmt.Fprintf(w, "model:    cold start %v; per call %v CPU + %v backend wait (%s); %d CPU per pod (%s): capacity ~%.0f req/s per pod\n",
		m.ColdStart, m.ServiceTime, m.IOTime, dist, m.Parallelism, sim.parallel, float64(m.Parallelism)/m.ServiceTime.Seconds())
	memoryLine(w, sim.settings, sim.o.memIdle.Value(), sim.o.memPerCall.Value())
	fmt.Fprintf(w, "trace:    %s, %s from %s, seed %d\n", sim.trace.Name(), sim.trace.Duration(),
		sim.trace.Start().In(sim.cal.Location()).Format("2006-01-02 15:04 MST"), sim.o.seed)
}

// simulate runs every scenario, two at a time (one per core here).
func (sim *simulation) simulate(bar *progress) ([]*autoscale.Result, error) {
	results := make([]*autoscale.Result, len(sim.runs))
	errs := make([]error, len(sim.runs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for i := range sim.runs {
		sim.runs[i].Progress = bar.reporter(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i], errs[i] = autoscale.Simulate(sim.runs[i])
		}()
	}
	wg.Wait()
	bar.done()
	return results, errors.Join(errs...)
}

// chart draws the results, with a zoom on the open for a trading day.
func (sim *simulation) chart(path string, results []*autoscale.Result) error {
	var zf, zt time.Time
	if d, err := calendar.ParseDate(sim.o.date); err == nil && sim.o.trace == "trading-day" {
		if open, _, ok := sim.cal.Session(d); ok {
			zf, zt = open.Add(-10*time.Minute), open.Add(20*time.Minute)
		}
	}
	return writeChart(path, sim.trace.Name(), results, sim.cal.Location(), zf, zt)
}

// memoryLine checks the manifest's memory limit against the measured
// memory of a pod holding containerConcurrency calls.
func memoryLine(w io.Writer, s *autoscale.Settings, idle, perCall int64) {
	if s.ContainerConcurrency == 0 {
		fmt.Fprintf(w, "memory:   %s idle + %s per call in flight; no containerConcurrency, so no bound per pod\n", mib(idle), mib(perCall))
		return
	}
	peak := idle + s.ContainerConcurrency*perCall
	verdict := "no memory limit"
	if s.MemoryLimit > 0 {
		verdict = fmt.Sprintf("%.0f%% of the %s limit", 100*float64(peak)/float64(s.MemoryLimit), mib(s.MemoryLimit))
		if peak > s.MemoryLimit {
			verdict += ": OVER THE LIMIT"
		}
	}
	fmt.Fprintf(w, "memory:   %s idle + %d in flight x %s = %s per pod at containerConcurrency, %s\n",
		mib(idle), s.ContainerConcurrency, mib(perCall), mib(peak), verdict)
}

// applyOverrides edits the Service's revision template: annotations (an
// empty value removes one) and containerConcurrency (cc < 0: keep).
func applyOverrides(svc *servingv1.Service, anns map[string]string, cc int64) {
	tmpl := &svc.Spec.Template
	for k, v := range anns {
		if tmpl.Annotations == nil {
			tmpl.Annotations = map[string]string{}
		}
		if v == "" {
			delete(tmpl.Annotations, k)
		} else {
			tmpl.Annotations[k] = v
		}
	}
	if cc >= 0 {
		tmpl.Spec.ContainerConcurrency = &cc
	}
}

// The scenarios simulated by default: the manifest with the pre-warm job as
// shipped, and the manifest alone.
const (
	shippedName  = "shipped (manifest + pre-warm job)"
	manifestName = "manifest only"
)

func scenarios(o *options, cal *calendar.Calendar, s *autoscale.Settings, variants []*autoscale.Settings) ([]autoscale.Run, error) {
	var runs []autoscale.Run
	if o.prewarmJob != "" {
		job, err := prewarm.FromCronJob(o.prewarmJob, "prewarm")
		if err != nil {
			return nil, fmt.Errorf("-prewarm-job: %w", err)
		}
		runs = append(runs, autoscale.Run{Name: shippedName, Knative: s, MinScale: autoscale.PrewarmFloor(cal, job)})
	}
	if !o.noKnative {
		runs = append(runs, autoscale.Run{Name: manifestName, Knative: s})
	}
	prewarmBase, prewarmLabel := s, ""
	for _, v := range variants {
		runs = append(runs, autoscale.Run{Name: v.Name, Knative: v})
		if v.Name == o.prewarmOn {
			prewarmBase, prewarmLabel = v, " + "+v.Name
		}
	}
	if o.prewarmOn != "" && prewarmLabel == "" {
		return nil, fmt.Errorf("-prewarm-on %q: no such -variant", o.prewarmOn)
	}
	if !o.noHPA {
		h := autoscale.DefaultHPA()
		h.Min, h.Max, h.TargetUtilization = o.hpaMin, o.hpaMax, o.hpaTarget/100
		if h.Min < 1 || h.Max < h.Min || h.TargetUtilization <= 0 {
			return nil, errors.New("HPA baseline needs 1 <= -hpa-min <= -hpa-max and a positive -hpa-target")
		}
		runs = append(runs, autoscale.Run{Name: fmt.Sprintf("hpa %d-%d @%.0f%%", h.Min, h.Max, o.hpaTarget), HPA: &h})
	}
	for _, v := range splitList(o.prewarm) {
		n, err := strconv.Atoi(v)
		sched := prewarm.Schedule{MinScale: n, Before: o.prewarmBefore, After: o.prewarmAf, Hold: o.prewarmHold}
		if err != nil {
			return nil, fmt.Errorf("-prewarm-min-scale %q: want integers", v)
		}
		if err := sched.Validate(); err != nil {
			return nil, fmt.Errorf("-prewarm-*: %w", err)
		}
		runs = append(runs, autoscale.Run{
			Name:     fmt.Sprintf("prewarm %d%s", n, prewarmLabel),
			Knative:  prewarmBase,
			MinScale: autoscale.PrewarmFloor(cal, sched),
		})
	}
	return runs, nil
}

// writeComparison relates each Knative scenario to the HPA baseline.
func writeComparison(w io.Writer, results []*autoscale.Result) {
	var base *autoscale.Result
	for _, r := range results {
		if strings.HasPrefix(r.Name, "hpa ") {
			base = r
		}
	}
	if base == nil || base.PodSeconds == 0 {
		return
	}
	fmt.Fprintln(w)
	for _, r := range results {
		if r == base {
			continue
		}
		fmt.Fprintf(w, "%s: %.2f pod-hours = %.0f%% of the %s baseline (%.2f)\n",
			r.Name, r.PodHours(), 100*r.PodSeconds/base.PodSeconds, base.Name, base.PodHours())
	}
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
