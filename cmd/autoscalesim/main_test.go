package main

import (
	"bytes"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
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
			"-trace", trace, "-prewarm-min-scale", "3", "-progress", "off",
			"-csv", filepath.Join(dir, "series.csv"), "-summary-csv", sum,
			"-png", filepath.Join(dir, "chart.png"),
		}
	}
	var out, errb bytes.Buffer
	if err := run(args(filepath.Join(dir, "a.csv")), &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	for _, want := range []string{"knative (manifest)", "hpa 3-8 @70%", "prewarm 3", "pod-hours", "% of the hpa 3-8 @70% baseline", "target=7"} {
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
	err := run([]string{"-manifest", "../../internal/tooling/autoscale/testdata/service-live.yaml", "-trace", writeTrace(t, t.TempDir()),
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
	} {
		if err := run(args, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
