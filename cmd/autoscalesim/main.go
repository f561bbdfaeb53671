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
	prewarm                  string
	prewarmBefore, prewarmAf time.Duration
	prewarmHold              time.Duration
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
	fs.DurationVar(&o.coldStart, "cold-start", 500*time.Millisecond, "replica requested -> ready (image pull excluded)")
	fs.DurationVar(&o.serviceTime, "service-time", 3*time.Millisecond, "mean CPU time of one tool call (it holds one of the pod's servers)")
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
	fs.StringVar(&o.prewarm, "prewarm-min-scale", "5", "comma-separated min-scale values to simulate pre-warmed (empty: none)")
	fs.DurationVar(&o.prewarmBefore, "prewarm-before", 15*time.Minute, "raise min-scale this long before the open")
	fs.DurationVar(&o.prewarmAf, "prewarm-after", 15*time.Minute, "lower min-scale this long after the close")
	fs.DurationVar(&o.prewarmHold, "prewarm-hold", 0, "if set, lower min-scale this long after the open instead (warm for the opening burst only)")
	fs.StringVar(&o.holidays, "holidays", "", "extra exchange holidays, comma-separated YYYY-MM-DD")
	fs.StringVar(&o.earlyCloses, "early-closes", "", "extra early closes, comma-separated YYYY-MM-DD=HH:MM")
	fs.StringVar(&o.csvPath, "csv", "", "write the per-second time series of every scenario to this CSV file")
	fs.StringVar(&o.summaryPath, "summary-csv", "", "write the summary table to this CSV file")
	fs.StringVar(&o.pngPath, "png", "", "write a chart to this PNG file")
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
	cal, err := o.calendar()
	if err != nil {
		return err
	}
	svc, err := autoscale.LoadService(o.manifest)
	if err != nil {
		return fmt.Errorf("%w (set -manifest)", err)
	}
	applyOverrides(svc, o.annotations, o.containerConcurrency)
	cfg, err := autoscale.AutoscalerConfig(nil)
	if o.asConfig != "" {
		cfg, err = autoscale.LoadAutoscalerConfigMap(o.asConfig)
	}
	if err != nil {
		return err
	}
	settings, err := autoscale.FromService(svc, cfg)
	if err != nil {
		return err
	}
	variantSettings := make([]*autoscale.Settings, len(o.variants))
	for i, v := range o.variants {
		vs := svc.DeepCopy()
		applyOverrides(vs, v.annotations, v.cc)
		if variantSettings[i], err = autoscale.FromService(vs, cfg); err != nil {
			return fmt.Errorf("variant %s: %w", v.name, err)
		}
		variantSettings[i].Name = v.name
	}
	trace, err := loadTrace(o, cal)
	if err != nil {
		return err
	}
	model := autoscale.Model{ColdStart: o.coldStart, ServiceTime: o.serviceTime, IOTime: o.backendLatency,
		ConstantServiceTime: o.constantService, Parallelism: o.parallelism}
	parallelFrom := "-pod-parallelism"
	switch {
	case model.Parallelism < 0:
		return errors.New("-pod-parallelism must not be negative")
	case model.Parallelism == 0 && settings.CPULimit > 0:
		model.Parallelism, parallelFrom = int(math.Ceil(settings.CPULimit)), "the CPU limit"
	case model.Parallelism == 0:
		model.Parallelism, parallelFrom = 1, "no CPU limit: default"
	}

	runs, err := scenarios(o, cal, settings, variantSettings)
	if err != nil {
		return err
	}
	if len(runs) == 0 {
		return errors.New("no scenario to run")
	}
	for i := range runs {
		runs[i].Trace, runs[i].Model, runs[i].Seed, runs[i].Fresh = trace, model, o.seed, o.fresh
	}

	fmt.Fprintf(stdout, "manifest: %s\n", o.manifest)
	fmt.Fprintf(stdout, "knative:  %s\n", settings)
	for _, v := range variantSettings {
		fmt.Fprintf(stdout, "variant:  %s\n", v)
	}
	dist := "exponential"
	if model.ConstantServiceTime {
		dist = "constant"
	}
	fmt.Fprintf(stdout, "model:    cold start %v; per call %v CPU + %v backend wait (%s); %d CPU per pod (%s): capacity ~%.0f req/s per pod\n",
		model.ColdStart, model.ServiceTime, model.IOTime, dist, model.Parallelism, parallelFrom,
		float64(model.Parallelism)/model.ServiceTime.Seconds())
	fmt.Fprintf(stdout, "trace:    %s, %s from %s, seed %d\n", trace.Name(), trace.Duration(),
		trace.Start().In(cal.Location()).Format("2006-01-02 15:04 MST"), o.seed)

	bar := newProgress(stderr, o.progress, len(runs))
	results := make([]*autoscale.Result, len(runs))
	errs := make([]error, len(runs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for i := range runs {
		runs[i].Progress = bar.reporter(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i], errs[i] = autoscale.Simulate(runs[i])
		}()
	}
	wg.Wait()
	bar.done()
	if err := errors.Join(errs...); err != nil {
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
		var zf, zt time.Time
		if d, err := calendar.ParseDate(o.date); err == nil && o.trace == "trading-day" {
			if open, _, ok := cal.Session(d); ok {
				zf, zt = open.Add(-10*time.Minute), open.Add(20*time.Minute)
			}
		}
		if err := writeChart(o.pngPath, trace.Name(), results, cal.Location(), zf, zt); err != nil {
			return err
		}
	}
	return nil
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

func scenarios(o *options, cal *calendar.Calendar, s *autoscale.Settings, variants []*autoscale.Settings) ([]autoscale.Run, error) {
	var runs []autoscale.Run
	if !o.noKnative {
		runs = append(runs, autoscale.Run{Name: "knative (manifest)", Knative: s})
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
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("-prewarm-min-scale %q: want non-negative integers", v)
		}
		runs = append(runs, autoscale.Run{
			Name:     fmt.Sprintf("prewarm %d%s", n, prewarmLabel),
			Knative:  prewarmBase,
			MinScale: autoscale.PrewarmSchedule(cal, int32(n), o.prewarmBefore, o.prewarmAf, o.prewarmHold),
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
