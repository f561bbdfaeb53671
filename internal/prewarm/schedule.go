// Package prewarm is the pre-warm job's schedule: the min-scale floor it
// holds around each trading session. cmd/prewarm applies it to a cluster and
// cmd/autoscalesim simulates it; both read it from the same flags, so the
// simulator can replay the CronJob exactly as knative/prewarm.yaml ships it.
package prewarm

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
)

// Schedule is a min-scale floor held from Before ahead of each regular
// session's open until After past its close, or, when Hold > 0, only until
// Hold past the open.
type Schedule struct {
	MinScale            int
	Before, After, Hold time.Duration
}

// Register defines the schedule's flags on fs with the tool's defaults:
// --min-scale, --before, --after, --hold.
func (s *Schedule) Register(fs *flag.FlagSet) {
	fs.IntVar(&s.MinScale, "min-scale", 1, "min-scale to hold during the warm window")
	fs.DurationVar(&s.Before, "before", 15*time.Minute, "raise min-scale this long before the open")
	fs.DurationVar(&s.After, "after", 15*time.Minute, "restore min-scale this long after the close")
	fs.DurationVar(&s.Hold, "hold", 0, "if set, restore min-scale this long after the open instead (warm for the opening burst only)")
}

// Validate refuses a floor below one pod and windows of a day or more.
func (s Schedule) Validate() error {
	if s.MinScale < 1 {
		return errors.New("min-scale must be at least 1")
	}
	for _, d := range []time.Duration{s.Before, s.After, s.Hold} {
		if d < 0 || d >= 24*time.Hour {
			return errors.New("before, after and hold must be in [0, 24h)")
		}
	}
	return nil
}

// Warm reports whether t is in the warm window on cal.
func (s Schedule) Warm(cal *calendar.Calendar, t time.Time) bool {
	if s.Hold > 0 {
		return cal.WithinOpening(t, s.Before, s.Hold)
	}
	return cal.WithinSession(t, s.Before, s.After)
}

func (s Schedule) String() string {
	until := fmt.Sprintf("close+%v", s.After)
	if s.Hold > 0 {
		until = fmt.Sprintf("open+%v", s.Hold)
	}
	return fmt.Sprintf("min-scale %d from open-%v to %s", s.MinScale, s.Before, until)
}

// FromCronJob reads the schedule from the args of the container named
// container in the CronJob of a (multi-document) manifest such as
// knative/prewarm.yaml. Flags that are not the schedule's are skipped.
func FromCronJob(path, container string) (Schedule, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Schedule{}, err
	}
	docs := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Schedule{}, fmt.Errorf("%s: %w", path, err)
		}
		var cj batchv1.CronJob
		if err := yaml.Unmarshal(doc, &cj); err != nil || cj.Kind != "CronJob" {
			continue
		}
		for _, c := range cj.Spec.JobTemplate.Spec.Template.Spec.Containers {
			if c.Name == container {
				return parseArgs(c.Args)
			}
		}
	}
	return Schedule{}, fmt.Errorf("%s: no CronJob with a container %q", path, container)
}

// parseArgs parses the schedule's own flags out of a full argument list.
func parseArgs(args []string) (Schedule, error) {
	var s Schedule
	fs := flag.NewFlagSet("prewarm", flag.ContinueOnError)
	fs.SetOutput(&bytes.Buffer{})
	s.Register(fs)
	var own []string
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if fs.Lookup(name) != nil {
			own = append(own, a)
		}
	}
	if err := fs.Parse(own); err != nil {
		return s, fmt.Errorf("pre-warm args: %w", err)
	}
	return s, s.Validate()
}
