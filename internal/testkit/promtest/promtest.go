// Package promtest reads a Prometheus registry in tests as a scrape would,
// so metric assertions compare plain strings.
package promtest

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Families gathers g, keyed by metric name.
func Families(t testing.TB, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// Series lists a family's series as "k=v,k=v value", sorted: a counter's
// or gauge's value, a histogram's sample count.
func Series(mf *dto.MetricFamily) []string {
	var out []string
	for _, m := range mf.GetMetric() {
		var labels []string
		for _, l := range m.GetLabel() {
			labels = append(labels, l.GetName()+"="+l.GetValue())
		}
		var v float64
		switch {
		case m.Histogram != nil:
			v = float64(m.GetHistogram().GetSampleCount())
		case m.Counter != nil:
			v = m.GetCounter().GetValue()
		case m.Gauge != nil:
			v = m.GetGauge().GetValue()
		}
		out = append(out, fmt.Sprintf("%s %g", strings.Join(labels, ","), v))
	}
	sort.Strings(out)
	return out
}
