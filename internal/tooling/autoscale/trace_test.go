package autoscale

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
)

func count(a Arrivals) (n int, last time.Duration) {
	prev := time.Duration(-1)
	for {
		at, ok := a.Next()
		if !ok {
			return n, last
		}
		if at < prev {
			panic("arrivals out of order")
		}
		prev, last = at, at
		n++
	}
}

func TestPoissonArrivals(t *testing.T) {
	// 100 s at 0, 100 s at 500/s, 100 s at 0: ~50 000 arrivals, all in the
	// middle segment, same for the same seed.
	rates := make([]float64, 300)
	for i := 100; i < 200; i++ {
		rates[i] = 500
	}
	tr := &RateTrace{Label: "x", From: t0, Step: time.Second, Rates: rates}
	n, last := count(tr.Arrivals(1))
	if math.Abs(float64(n)-50000) > 4*math.Sqrt(50000) {
		t.Errorf("%d arrivals, want ~50000", n)
	}
	if last >= 200*time.Second {
		t.Errorf("arrival at %v in a zero-rate segment", last)
	}
	first, _ := tr.Arrivals(1).Next()
	if first < 100*time.Second {
		t.Errorf("first arrival at %v in a zero-rate segment", first)
	}
	n2, _ := count(tr.Arrivals(1))
	n3, _ := count(tr.Arrivals(2))
	if n2 != n || n3 == n {
		t.Errorf("seeded counts %d %d %d", n, n2, n3)
	}
}

func TestTradingDayShape(t *testing.T) {
	cal, _ := calendar.NYSE(nil, nil)
	ny := cal.Location()
	d := calendar.Date{Year: 2026, Month: time.March, Day: 10}
	tr, err := TradingDay(cal, d, 1000)
	if err != nil {
		t.Fatal(err)
	}
	at := func(h, m int) float64 {
		i := int(d.In(ny, calendar.TimeOfDay{Hour: h, Minute: m}).Sub(tr.From) / time.Second)
		return tr.Rates[i]
	}
	if len(tr.Rates) != 86400 {
		t.Errorf("%d seconds", len(tr.Rates))
	}
	if r := at(9, 30); math.Abs(r-1000) > 5 {
		t.Errorf("rate at the open %.1f, want the peak", r)
	}
	if at(9, 29) > 100 || at(3, 0) != nightRPS || at(22, 0) != nightRPS {
		t.Errorf("pre-open %.1f night %.3f/%.3f", at(9, 29), at(3, 0), at(22, 0))
	}
	if lull, openish := at(12, 45), at(10, 30); lull >= openish || lull < 150 {
		t.Errorf("midday lull %.0f vs 10:30 %.0f", lull, openish)
	}
	if closing, after := at(15, 59), at(16, 1); closing < 700 || after > 100 {
		t.Errorf("closing %.0f after-hours %.0f", closing, after)
	}
	// DST: the spring-forward day has 23 hours; early close ramps into 13:00.
	short, _ := TradingDay(cal, calendar.Date{Year: 2026, Month: time.March, Day: 9}, 1000)
	if short.Duration() != 24*time.Hour {
		t.Errorf("Monday after spring forward lasts %v", short.Duration())
	}
	if _, err := TradingDay(cal, calendar.Date{Year: 2026, Month: time.March, Day: 8}, 1000); err == nil {
		t.Error("Sunday accepted as a trading day")
	}
	ec, _ := TradingDay(cal, calendar.Date{Year: 2026, Month: time.November, Day: 27}, 1000)
	i := int(calendar.Date{Year: 2026, Month: time.November, Day: 27}.In(ny, calendar.TimeOfDay{Hour: 12, Minute: 59}).Sub(ec.From) / time.Second)
	if ec.Rates[i] < 700 || ec.Rates[i+120] > 100 {
		t.Errorf("early close: %.0f at 12:59, %.0f at 13:01", ec.Rates[i], ec.Rates[i+120])
	}
	q := QuietDay(ny, calendar.Date{Year: 2026, Month: time.March, Day: 8})
	if q.Duration() != 23*time.Hour {
		t.Errorf("spring-forward Sunday lasts %v", q.Duration())
	}
	if e := q.Expected(); e < 1500 || e > 2000 {
		t.Errorf("quiet day expects %.0f requests", e)
	}
}

func TestReadCSV(t *testing.T) {
	ts, err := ReadCSV(strings.NewReader("timestamp\n2026-03-10T09:30:00.5Z\n1773135000.25\n2026-03-10T09:30:02Z\n"), "t.csv")
	if err != nil {
		t.Fatal(err)
	}
	n, last := count(ts.Arrivals(0))
	// 1773135000 is 2026-03-10T09:30:00Z.
	if n != 3 || !ts.Start().Equal(time.Date(2026, 3, 10, 9, 30, 0, 0, time.UTC)) || last != 2*time.Second || ts.Duration() != 3*time.Second {
		t.Errorf("n=%d start=%v last=%v span=%v", n, ts.Start(), last, ts.Duration())
	}
	rt, err := ReadCSV(strings.NewReader("# per-minute rates\n2026-03-10T09:30:00Z,10\n2026-03-10T09:31:00Z,0\n2026-03-10T09:32:00Z,5\n"), "r.csv")
	if err != nil {
		t.Fatal(err)
	}
	r := rt.(*RateTrace)
	if r.Step != time.Minute || r.Duration() != 3*time.Minute || r.Expected() != 900 {
		t.Errorf("step %v span %v expected %v", r.Step, r.Duration(), r.Expected())
	}
	for name, in := range map[string]string{
		"uneven":    "0,1\n1,1\n3,1\n",
		"bad rate":  "0,x\n1,1\n",
		"negative":  "0,-1\n",
		"3 columns": "0,1,2\n",
		"empty":     "time\n",
		"bad time":  "yesterday\n",
	} {
		if _, err := ReadCSV(strings.NewReader(in), name); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 500 * time.Millisecond, 0.99: 990 * time.Millisecond, 1: time.Second} {
		got := h.quantile(q)
		if math.Abs(float64(got-want)) > 0.006*float64(want) {
			t.Errorf("q%.2f = %v, want %v within 0.6%%", q, got, want)
		}
	}
	var empty histogram
	if empty.quantile(0.5) != 0 {
		t.Error("empty histogram quantile not 0")
	}
}

func TestReports(t *testing.T) {
	r := &Result{Name: "a", Start: t0, Requests: 3, PodSeconds: 7200, MaxReplicas: 2, P50: 2 * time.Millisecond,
		Samples: []Sample{{At: time.Second, Replicas: 1, Ready: 1, Arrivals: 3, Concurrency: 0.5, ColdDelayed: 2, Slowest: 1500 * time.Millisecond}}}
	var tab, sum, ser bytes.Buffer
	if err := WriteTable(&tab, []*Result{r}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tab.String(), "2.00") || !strings.Contains(tab.String(), "pod-hours") {
		t.Errorf("table:\n%s", tab.String())
	}
	_ = WriteSummaryCSV(&sum, []*Result{r})
	if !strings.HasPrefix(strings.Split(sum.String(), "\n")[1], "a,3,2.000,2,") {
		t.Errorf("summary csv:\n%s", sum.String())
	}
	_ = WriteSamplesCSV(&ser, []*Result{r})
	if got := strings.Split(ser.String(), "\n")[1]; got != "a,2026-03-10T00:00:01Z,1,1,0,3,0.500,0,2,1500.00" {
		t.Errorf("samples csv row %q", got)
	}
}
