package autoscale

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
)

// Trace is a request arrival process over a time span.
type Trace interface {
	// Name labels the trace in output.
	Name() string
	// Start is the instant the trace begins.
	Start() time.Time
	// Duration is the span the simulation covers.
	Duration() time.Duration
	// Arrivals returns the arrival offsets from Start, in order. The same
	// seed gives the same arrivals.
	Arrivals(seed uint64) Arrivals
}

// Arrivals yields arrival offsets in non-decreasing order.
type Arrivals interface {
	// Next returns the next arrival, or ok=false when there are no more.
	Next() (at time.Duration, ok bool)
}

// RateTrace is a piecewise-constant request rate: Rates[i] requests per
// second during [Start+i*Step, Start+(i+1)*Step). Arrivals are Poisson.
type RateTrace struct {
	Label string
	From  time.Time
	Step  time.Duration
	Rates []float64
}

// Name implements Trace.
func (r *RateTrace) Name() string { return r.Label }

// Start implements Trace.
func (r *RateTrace) Start() time.Time { return r.From }

// Duration implements Trace.
func (r *RateTrace) Duration() time.Duration { return time.Duration(len(r.Rates)) * r.Step }

// Expected returns the expected number of requests.
func (r *RateTrace) Expected() float64 {
	sum := 0.
	for _, x := range r.Rates {
		sum += x
	}
	return sum * r.Step.Seconds()
}

// Arrivals implements Trace: a non-homogeneous Poisson process by inversion
// of the cumulative rate, exact for a piecewise-constant rate.
func (r *RateTrace) Arrivals(seed uint64) Arrivals {
	return &poisson{r: r, rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))}
}

type poisson struct {
	r   *RateTrace
	rng *rand.Rand
	i   int     // current segment
	pos float64 // seconds into the current segment
}

func (p *poisson) Next() (time.Duration, bool) {
	e := p.rng.ExpFloat64()
	step := p.r.Step.Seconds()
	for p.i < len(p.r.Rates) {
		rate := p.r.Rates[p.i]
		left := step - p.pos
		if rate > 0 && rate*left >= e {
			p.pos += e / rate
			return time.Duration((float64(p.i)*step + p.pos) * float64(time.Second)), true
		}
		e -= rate * left
		p.i++
		p.pos = 0
	}
	return 0, false
}

// TimestampTrace replays recorded arrival instants as they are.
type TimestampTrace struct {
	Label   string
	From    time.Time
	Span    time.Duration
	Offsets []time.Duration // sorted
}

// Name implements Trace.
func (t *TimestampTrace) Name() string { return t.Label }

// Start implements Trace.
func (t *TimestampTrace) Start() time.Time { return t.From }

// Duration implements Trace.
func (t *TimestampTrace) Duration() time.Duration { return t.Span }

// Arrivals implements Trace; the seed is unused.
func (t *TimestampTrace) Arrivals(uint64) Arrivals { return &replay{offs: t.Offsets} }

type replay struct {
	offs []time.Duration
	i    int
}

func (r *replay) Next() (time.Duration, bool) {
	if r.i >= len(r.offs) {
		return 0, false
	}
	r.i++
	return r.offs[r.i-1], true
}

// Day shape constants, as fractions of the peak rate unless noted.
const (
	nightRPS       = 0.005 // absolute: ~18 calls an hour overnight (monitors, batch agents)
	weekendDayRPS  = 0.05  // absolute: a call every 20 s, 09:00-18:00 on closed days
	preMarketLevel = 0.02  // at 09:00
	openEveLevel   = 0.08  // just before the open
	uMid, uEdge    = 0.20, 0.35
	openSpike      = 0.45
	openDecay      = 8 * time.Minute
	closeRamp      = 0.30
	closeRampLen   = 20 * time.Minute
	afterHours     = 0.06
	afterDecay     = 40 * time.Minute
)

// TradingDay is the built-in synthetic US trading day on date d of cal:
// a quiet night, a pre-market ramp from 04:00, a step to peakRPS at the open
// decaying over minutes, a midday lull (U-shaped intraday curve), a closing
// ramp into the close, and an after-hours tail until 20:00, in the
// exchange's local time (early closes and DST handled by cal). It runs from
// local midnight to the next local midnight with one rate per second.
// It is an error if the exchange does not open on d.
func TradingDay(cal *calendar.Calendar, d calendar.Date, peakRPS float64) (*RateTrace, error) {
	open, closeAt, ok := cal.Session(d)
	if !ok {
		return nil, fmt.Errorf("autoscale: %s is not a trading day", d)
	}
	loc := cal.Location()
	from := d.In(loc, calendar.TimeOfDay{})
	to := d.AddDays(1).In(loc, calendar.TimeOfDay{})
	pre := d.In(loc, calendar.TimeOfDay{Hour: 4})
	nine := open.Add(-30 * time.Minute)
	eight := d.In(loc, calendar.TimeOfDay{Hour: 20})
	session := closeAt.Sub(open)
	rate := func(t time.Time) float64 {
		switch {
		case t.Before(pre):
			return nightRPS
		case t.Before(nine): // exponential ramp night -> pre-market level
			f := float64(t.Sub(pre)) / float64(nine.Sub(pre))
			return nightRPS * math.Pow(preMarketLevel*peakRPS/nightRPS, f)
		case t.Before(open): // linear to the eve of the open
			f := float64(t.Sub(nine)) / float64(open.Sub(nine))
			return peakRPS * (preMarketLevel + f*(openEveLevel-preMarketLevel))
		case t.Before(closeAt):
			f := float64(t.Sub(open)) / float64(session)
			x := 2*f - 1
			level := uMid + uEdge*x*x
			level += openSpike * math.Exp(-float64(t.Sub(open))/float64(openDecay))
			if left := closeAt.Sub(t); left < closeRampLen {
				level += closeRamp * (1 - float64(left)/float64(closeRampLen))
			}
			return peakRPS * level
		case t.Before(eight):
			return nightRPS + peakRPS*afterHours*math.Exp(-float64(t.Sub(closeAt))/float64(afterDecay))
		default:
			return nightRPS
		}
	}
	return sampleRate(fmt.Sprintf("trading day %s (peak %.0f rps)", d, peakRPS), from, to, rate), nil
}

// QuietDay is the built-in weekend/holiday day: the overnight trickle all
// day plus a light daytime trickle 09:00-18:00 local time.
func QuietDay(loc *time.Location, d calendar.Date) *RateTrace {
	from := d.In(loc, calendar.TimeOfDay{})
	to := d.AddDays(1).In(loc, calendar.TimeOfDay{})
	dayFrom := d.In(loc, calendar.TimeOfDay{Hour: 9})
	dayTo := d.In(loc, calendar.TimeOfDay{Hour: 18})
	rate := func(t time.Time) float64 {
		if !t.Before(dayFrom) && t.Before(dayTo) {
			return weekendDayRPS
		}
		return nightRPS
	}
	return sampleRate(fmt.Sprintf("closed day %s", d), from, to, rate)
}

func sampleRate(label string, from, to time.Time, rate func(time.Time) float64) *RateTrace {
	n := int(to.Sub(from) / time.Second)
	rates := make([]float64, n)
	for i := range rates {
		rates[i] = rate(from.Add(time.Duration(i)*time.Second + time.Second/2))
	}
	return &RateTrace{Label: label, From: from, Step: time.Second, Rates: rates}
}

// ReadCSV reads a user trace. Two layouts are accepted, with or without a
// header row:
//
//   - one column: one request per row, its arrival time;
//   - two columns: time,rate: the request rate (per second) from that time
//     until the next row, rows evenly spaced (arrivals are then Poisson).
//
// Times are RFC 3339 (2026-03-09T09:30:00.123-04:00) or Unix seconds
// (fractions allowed).
func ReadCSV(r io.Reader, label string) (Trace, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.Comment = '#'
	recs, err := cr.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("autoscale: trace %s: %w", label, err)
	}
	if len(recs) > 0 {
		if _, err := parseInstant(recs[0][0]); err != nil {
			recs = recs[1:] // header
		}
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("autoscale: trace %s: no rows", label)
	}
	switch len(recs[0]) {
	case 1:
		return timestampsCSV(recs, label)
	case 2:
		return ratesCSV(recs, label)
	default:
		return nil, fmt.Errorf("autoscale: trace %s: want 1 column (timestamps) or 2 (time,rate), got %d", label, len(recs[0]))
	}
}

func timestampsCSV(recs [][]string, label string) (Trace, error) {
	ts := make([]time.Time, 0, len(recs))
	for i, rec := range recs {
		if len(rec) != 1 {
			return nil, fmt.Errorf("autoscale: trace %s row %d: want 1 column", label, i+1)
		}
		t, err := parseInstant(rec[0])
		if err != nil {
			return nil, fmt.Errorf("autoscale: trace %s row %d: %w", label, i+1, err)
		}
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	from := ts[0].Truncate(time.Second)
	offs := make([]time.Duration, len(ts))
	for i, t := range ts {
		offs[i] = t.Sub(from)
	}
	span := offs[len(offs)-1].Truncate(time.Second) + time.Second
	return &TimestampTrace{Label: label, From: from, Span: span, Offsets: offs}, nil
}

func ratesCSV(recs [][]string, label string) (Trace, error) {
	times := make([]time.Time, len(recs))
	rates := make([]float64, len(recs))
	for i, rec := range recs {
		if len(rec) != 2 {
			return nil, fmt.Errorf("autoscale: trace %s row %d: want 2 columns", label, i+1)
		}
		t, err := parseInstant(rec[0])
		if err != nil {
			return nil, fmt.Errorf("autoscale: trace %s row %d: %w", label, i+1, err)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rec[1]), 64)
		if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			return nil, fmt.Errorf("autoscale: trace %s row %d: bad rate %q", label, i+1, rec[1])
		}
		times[i], rates[i] = t, v
	}
	step := time.Second
	if len(times) > 1 {
		step = times[1].Sub(times[0])
	}
	if step <= 0 {
		return nil, errors.New("autoscale: trace " + label + ": rows must be in time order")
	}
	for i := 1; i < len(times); i++ {
		if times[i].Sub(times[i-1]) != step {
			return nil, fmt.Errorf("autoscale: trace %s row %d: rows must be evenly spaced (%v)", label, i+1, step)
		}
	}
	return &RateTrace{Label: label, From: times[0], Step: step, Rates: rates}, nil
}

func parseInstant(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return time.Time{}, fmt.Errorf("bad time %q: want RFC 3339 or Unix seconds", s)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC(), nil
}
