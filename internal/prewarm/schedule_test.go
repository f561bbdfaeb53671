package prewarm

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
)

func TestFromCronJobReadsTheShippedJob(t *testing.T) {
	s, err := FromCronJob("../../knative/prewarm.yaml", "prewarm")
	if err != nil {
		t.Fatal(err)
	}
	if s.MinScale < 1 || s.Before <= 0 {
		t.Errorf("shipped schedule %+v: want a floor and a lead time", s)
	}
}

func TestFromCronJob(t *testing.T) {
	const job = `apiVersion: v1
kind: ServiceAccount
metadata: {name: x}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: x}
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - name: sidecar
            args: [--min-scale=9]
          - name: prewarm
            args: [--namespace=a, --services=b, --min-scale=3, --before=10m, --hold=45m, --holidays=2028-01-17]
`
	path := filepath.Join(t.TempDir(), "job.yaml")
	if err := os.WriteFile(path, []byte(job), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := FromCronJob(path, "prewarm")
	if err != nil {
		t.Fatal(err)
	}
	want := Schedule{MinScale: 3, Before: 10 * time.Minute, After: 15 * time.Minute, Hold: 45 * time.Minute}
	if s != want {
		t.Errorf("got %+v, want %+v", s, want)
	}
	if _, err := FromCronJob(path, "missing"); err == nil {
		t.Error("a missing container was accepted")
	}
	for _, args := range [][]string{{"--min-scale=0"}, {"--before=25h"}, {"--hold=x"}} {
		if _, err := parseArgs(args); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

func TestWarm(t *testing.T) {
	cal, err := calendar.NYSEFromLists("", "")
	if err != nil {
		t.Fatal(err)
	}
	ny := cal.Location()
	at := func(h, m int) time.Time { return time.Date(2026, 3, 10, h, m, 0, 0, ny) }
	session := Schedule{MinScale: 1, Before: 15 * time.Minute, After: 15 * time.Minute}
	opening := Schedule{MinScale: 5, Before: 15 * time.Minute, Hold: 30 * time.Minute}
	for _, tc := range []struct {
		s    Schedule
		t    time.Time
		want bool
	}{
		{session, at(9, 14), false},
		{session, at(9, 15), true},
		{session, at(16, 14), true},
		{session, at(16, 15), false},
		{opening, at(9, 59), true},
		{opening, at(10, 0), false},
	} {
		if got := tc.s.Warm(cal, tc.t); got != tc.want {
			t.Errorf("%v at %s: %v, want %v", tc.s, tc.t.Format("15:04"), got, tc.want)
		}
	}
}
