package autoscale

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// Millis formats d in milliseconds with two decimals, as the tables do.
func Millis(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64)
}

// WriteTable writes one line per result: the numbers docs/autoscaling.md
// quotes.
func WriteTable(w io.Writer, results []*Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\trequests\tpod-hours\tmax pods\tfrom-zero\tp50 ms\tp99 ms\tmax ms\tcold-delayed\tat-zero\tcold p50 ms\tcold p99 ms\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%d\t%d\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t\n",
			r.Name, r.Requests, r.PodHours(), r.MaxReplicas, r.ScaleFromZero, Millis(r.P50), Millis(r.P99), Millis(r.Max),
			r.ColdDelayed, r.ColdAtZero, Millis(r.ColdP50), Millis(r.ColdP99))
	}
	return tw.Flush()
}

// WriteSummaryCSV writes the table as CSV.
func WriteSummaryCSV(w io.Writer, results []*Result) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"scenario", "requests", "pod_hours", "max_pods", "scale_from_zero", "p50_ms", "p99_ms", "max_ms",
		"cold_delayed", "cold_at_zero", "cold_p50_ms", "cold_p99_ms"})
	for _, r := range results {
		_ = cw.Write([]string{r.Name, strconv.FormatInt(r.Requests, 10), strconv.FormatFloat(r.PodHours(), 'f', 3, 64),
			strconv.Itoa(r.MaxReplicas), strconv.Itoa(r.ScaleFromZero), Millis(r.P50), Millis(r.P99), Millis(r.Max),
			strconv.FormatInt(r.ColdDelayed, 10), strconv.FormatInt(r.ColdAtZero, 10), Millis(r.ColdP50), Millis(r.ColdP99)})
	}
	cw.Flush()
	return cw.Error()
}

// WriteSamplesCSV writes the per-second time series of every result, long
// format: scenario,time,replicas,ready,draining,arrivals,concurrency,
// activator_buffered,cold_delayed,slowest_ms.
func WriteSamplesCSV(w io.Writer, results []*Result) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"scenario", "time", "replicas", "ready", "draining", "arrivals", "concurrency", "activator_buffered", "cold_delayed", "slowest_ms"})
	for _, r := range results {
		for _, s := range r.Samples {
			_ = cw.Write([]string{r.Name, r.Start.Add(s.At).Format(time.RFC3339), strconv.Itoa(s.Replicas),
				strconv.Itoa(s.Ready), strconv.Itoa(s.Draining), strconv.Itoa(s.Arrivals),
				strconv.FormatFloat(s.Concurrency, 'f', 3, 64), strconv.Itoa(s.Activator), strconv.Itoa(s.ColdDelayed), Millis(s.Slowest)})
		}
	}
	cw.Flush()
	return cw.Error()
}
