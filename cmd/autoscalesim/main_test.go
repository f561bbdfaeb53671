package main

import (
	"bytes"
	"fmt"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeTrace writes 15 minutes of per-second rates around the 2026-03-10
// open (13:30 UTC): 20 req/s, then 400 req/s from the bell.
func writeTrace(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("time,rate\n")
	start := time.Date(2026, 3, 10, 13, 20, 0, 0, time.UTC)
	for i := 0; i < 900; i++ {
		at := start.Add(time.Duration(i) * time.Second)
		rate := 20
		if !at.Before(start.Add(10 * time.Minute)) {
			rate = 400
		}
		fmt.Fprintf(&b, "%s,%d\n", at.Format(time.RFC3339), rate)
	}
	p := filepath.Join(dir, "trace.csv")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunWritesTableCSVAndChart(t *testing.T) {
	dir := t.TempDir()
	trace := writeTrace(t, dir)
	args := func(sum string) []string {
		return []string{
			"-manifest", "../../internal/tooling/autoscale/testdata/service-live.yaml",
			"-trace", trace, "-prewarm-job", "", "-prewarm-min-scale", "3", "-progress", "off",
			"-csv", filepath.Join(dir, "series.csv"), "-summary-csv", sum,
			"-png", filepath.Join(dir, "chart.png"),
		}
	}
	var out, errb bytes.Buffer
	if err := run(args(filepath.Join(dir, "a.csv")), &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	for _, want := range []string{"manifest only", "hpa 3-8 @70%", "prewarm 3", "pod-hours", "% of the hpa 3-8 @70% baseline", "target=7"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	series, err := os.ReadFile(filepath.Join(dir, "series.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(series), "\n"); n != 1+3*900 {
		t.Errorf("series has %d lines, want %d", n, 1+3*900)
	}
	f, err := os.Open(filepath.Join(dir, "chart.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil || img.Bounds().Dx() < 800 {
		t.Fatalf("chart: %v %v", err, img)
	}

	// Deterministic: the same flags give the same numbers.
	if err := run(args(filepath.Join(dir, "b.csv")), &bytes.Buffer{}, &errb); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(dir, "a.csv"))
	b, _ := os.ReadFile(filepath.Join(dir, "b.csv"))
	if !bytes.Equal(a, b) || len(a) == 0 {
		t.Errorf("summaries differ:\n%s\n%s", a, b)
	}
	// The pre-warmed fleet (3 pods from 13:15 UTC) is ready for the bell;
	// the manifest's fleet (one pod) is not.
	lines := strings.Split(strings.TrimSpace(string(a)), "\n")
	if len(lines) != 4 {
		t.Fatalf("summary:\n%s", a)
	}
	cold := func(line string) string { return strings.Split(line, ",")[8] }
	if cold(lines[3]) != "0" || cold(lines[1]) == "0" {
		t.Errorf("cold-delayed: manifest %s, prewarm %s; want >0 and 0", cold(lines[1]), cold(lines[3]))
	}
}

func TestAnnotationOverride(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{"-manifest", "../../internal/tooling/autoscale/testdata/service-live.yaml", "-trace", writeTrace(t, t.TempDir()), "-prewarm-job", "",
		"-annotation", "target=2", "-annotation", "autoscaling.knative.dev/max-scale=4", "-container-concurrency", "5",
		"-variant", "rps:metric=rps,target=333,target-utilization-percentage=75,container-concurrency=4",
		"-prewarm-on", "rps", "-prewarm-min-scale", "2",
		"-no-hpa", "-progress", "off"}, &out, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "target=1.4") || !strings.Contains(s, "max=4") || !strings.Contains(s, "containerConcurrency=5") {
		t.Errorf("overrides not applied:\n%s", s)
	}
	// The variant starts from the overridden manifest and adds its own.
	if s := out.String(); !strings.Contains(s, "variant:  rps: metric=rps target=249.8 total=333 containerConcurrency=4 min=0 max=4") ||
		!strings.Contains(s, "prewarm 2 + rps") {
		t.Errorf("variant not simulated:\n%s", s)
	}
}

func TestRunErrors(t *testing.T) {
	if err := run([]string{"-manifest", "../../internal/tooling/autoscale/testdata/service-live.yaml", "-prewarm-job", "missing.yaml"}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("a missing -prewarm-job was accepted")
	}
	for name, args := range map[string][]string{
		"no manifest":   {"-manifest", "does/not/exist.yaml"},
		"closed day":    {"-manifest", "../../internal/tooling/autoscale/testdata/service-live.yaml", "-date", "2026-03-08"},
		"bad prewarm":   {"-manifest", "../../internal/tooling/autoscale/testdata/service-live.yaml", "-prewarm-min-scale", "x"},
		"bad holiday":   {"-holidays", "2026-02-30"},
		"stray arg":     {"extra"},
		"bad hpa":       {"-manifest", "../../internal/tooling/autoscale/testdata/service-live.yaml", "-hpa-min", "0"},
		"bad parallel":  {"-manifest", "../../internal/tooling/autoscale/testdata/service-live.yaml", "-pod-parallelism", "-1"},
		"bad annotaton": {"-annotation", "novalue"},
		"bad variant":   {"-variant", "nameonly"},
		"no variant":    {"-manifest", "../../internal/tooling/autoscale/testdata/service-live.yaml", "-prewarm-on", "missing"},
		"bad quantity":  {"-memory-per-call", "lots"},
	} {
		if err := run(append([]string{"-prewarm-job", ""}, args...), &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestShippedManifestsMeetTheStudy simulates the default trading day on the
// manifests as shipped (the Service and its pre-warm CronJob) and fails if
// they cost more than docs/autoscaling.md documents or miss the goals it
// states. Changing an autoscaling setting means re-running the study (the
// command in the doc) and committing what it says.
func TestShippedManifestsMeetTheStudy(t *testing.T) {
	o, err := parseFlags([]string{"-manifest", "../../knative/service-live.yaml", "-prewarm-job", "../../knative/prewarm.yaml",
		"-no-knative", "-progress", "off"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	sim, err := prepare(o)
	if err != nil {
		t.Fatal(err)
	}
	res, err := sim.simulate(newProgress(io.Discard, "off", len(sim.runs)))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Name != shippedName {
		t.Fatalf("scenarios %v", res)
	}
	ship, fixed := res[0], res[1]

	doc, err := os.ReadFile("../../docs/autoscaling.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := documentedPodHours(t, string(doc))
	if got := ship.PodHours(); got > documented+0.005 {
		t.Errorf("the shipped manifests cost %.2f pod-hours on the default day; docs/autoscaling.md documents %.2f: re-run the study", got, documented)
	}
	if ship.PodSeconds > 0.25*fixed.PodSeconds {
		t.Errorf("shipped %.2f pod-hours > 25%% of the fixed fleet's %.2f", ship.PodHours(), fixed.PodHours())
	}
	if ship.ColdDelayed*1000 > ship.Requests {
		t.Errorf("%d of %d calls delayed by a cold start: over 0.1%%", ship.ColdDelayed, ship.Requests)
	}
	if ship.P99 > fixed.P99 {
		t.Errorf("p99 %v, worse than the fixed fleet's %v", ship.P99, fixed.P99)
	}
	// A pod holding containerConcurrency calls fits its memory limit.
	s := sim.settings
	if peak := o.memIdle.Value() + s.ContainerConcurrency*o.memPerCall.Value(); s.MemoryLimit == 0 || peak > s.MemoryLimit/2 {
		t.Errorf("%d calls in flight need %s, over half the %s memory limit", s.ContainerConcurrency, mib(peak), mib(s.MemoryLimit))
	}
}

// documentedPodHours reads the shipped row of the doc's main study table.
func documentedPodHours(t *testing.T, doc string) float64 {
	t.Helper()
	row := "| **" + shippedName + "** | **"
	i := strings.Index(doc, row)
	if i < 0 {
		t.Fatalf("docs/autoscaling.md has no %q row", row)
	}
	num, _, _ := strings.Cut(doc[i+len(row):], "**")
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		t.Fatalf("documented pod-hours %q: %v", num, err)
	}
	return v
}

func TestReplaceBlock(t *testing.T) {
	doc := "a\n<!-- study:x generated -->\nold\n<!-- /study:x -->\nb\n"
	got, err := replaceBlock(doc, "x", "new\n")
	if err != nil || got != "a\n<!-- study:x generated -->\nnew\n<!-- /study:x -->\nb\n" {
		t.Errorf("got %q, %v", got, err)
	}
	for _, bad := range []string{"a\n", "<!-- /study:x -->\n<!-- study:x -->\n"} {
		if _, err := replaceBlock(bad, "x", ""); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestThousandsAndShare(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 12116582: "12,116,582"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q", n, got)
		}
	}
	if got := share(195, 12116582); got != "0.0016%" {
		t.Errorf("share = %q", got)
	}
}
