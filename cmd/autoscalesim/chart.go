package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/autoscale"
)

// Colours are fixed per scenario, so the same scenario looks the same in
// every chart; other variants take the rest of the palette in order.
var (
	shippedColor  = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff} // blue
	manifestColor = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff} // orange
	hpaColor      = color.RGBA{R: 0x55, G: 0x55, B: 0x55, A: 0xff} // grey
	palette       = []color.Color{
		color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
		color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
		color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
		color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
		color.RGBA{R: 0xe3, G: 0x77, B: 0xc2, A: 0xff},
		color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff},
	}
)

// styles gives each result its colour and dash pattern.
func styles(results []*autoscale.Result) []draw.LineStyle {
	out := make([]draw.LineStyle, len(results))
	other := 0
	for i, r := range results {
		st := draw.LineStyle{Width: vg.Points(1.5)}
		switch {
		case r.Name == shippedName:
			st.Color = shippedColor
		case r.Name == manifestName:
			st.Color, st.Dashes = manifestColor, []vg.Length{vg.Points(6), vg.Points(2)}
		case strings.HasPrefix(r.Name, "hpa "):
			st.Color, st.Dashes = hpaColor, []vg.Length{vg.Points(2), vg.Points(2)}
		default:
			st.Color, st.Dashes = palette[other%len(palette)], []vg.Length{vg.Points(float64(3 + 2*other)), vg.Points(2)}
			other++
		}
		out[i] = st
	}
	return out
}

// clockTicks labels an axis in hours since local midnight as HH:MM.
type clockTicks struct{ every float64 }

func (c clockTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for x := math.Ceil(lo/c.every) * c.every; x <= hi+1e-9; x += c.every {
		h := int(math.Floor(x + 1e-9))
		m := int(math.Round((x - float64(h)) * 60))
		ts = append(ts, plot.Tick{Value: x, Label: fmt.Sprintf("%02d:%02d", h, m)})
	}
	return ts
}

// hours converts an instant to hours since the local midnight of day0.
func hours(t, day0 time.Time) float64 {
	y, m, d := day0.Date()
	mid := time.Date(y, m, d, 0, 0, 0, 0, day0.Location())
	return t.Sub(mid).Hours()
}

// series reduces a result's samples to one point per bucket (max replicas,
// mean arrivals/s) between from and to.
func series(r *autoscale.Result, loc *time.Location, from, to time.Time, bucket time.Duration,
	value func([]autoscale.Sample) float64) plotter.XYs {
	day0 := r.Start.In(loc)
	var pts plotter.XYs
	per := int(bucket / time.Second)
	for i := 0; i < len(r.Samples); i += per {
		j := min(i+per, len(r.Samples))
		at := r.Start.Add(r.Samples[i].At - time.Second)
		if at.Before(from) || !at.Before(to) {
			continue
		}
		pts = append(pts, plotter.XY{X: hours(at, day0), Y: value(r.Samples[i:j])})
	}
	return pts
}

func maxReplicas(ss []autoscale.Sample) float64 {
	m := 0
	for _, s := range ss {
		m = max(m, s.Replicas)
	}
	return float64(m)
}

func meanRate(ss []autoscale.Sample) float64 {
	n := 0
	for _, s := range ss {
		n += s.Arrivals
	}
	return float64(n) / float64(len(ss))
}

func coldDelayed(ss []autoscale.Sample) float64 {
	n := 0
	for _, s := range ss {
		n += s.ColdDelayed
	}
	return float64(n)
}

func slowestMS(ss []autoscale.Sample) float64 {
	var m time.Duration
	for _, s := range ss {
		m = max(m, s.Slowest)
	}
	return float64(m) / float64(time.Millisecond)
}

// positive keeps the points a log scale can draw.
func positive(pts plotter.XYs) plotter.XYs {
	var out plotter.XYs
	for _, p := range pts {
		if p.Y > 0 {
			out = append(out, p)
		}
	}
	return out
}

// writeChart draws, over the whole trace: the request rate, each scenario's
// replicas, the calls delayed by a cold start and the slowest call, per
// bucket (a minute for a day); plus a per-second zoom on the replicas in
// [zoomFrom, zoomTo) if set. The legend has its own strip above the panels,
// so it hides no data.
func writeChart(path, title string, results []*autoscale.Result, loc *time.Location, zoomFrom, zoomTo time.Time) error {
	if len(results) == 0 {
		return nil
	}
	r0 := results[0]
	from := r0.Start
	to := r0.Start.Add(time.Duration(len(r0.Samples)) * time.Second)
	span := to.Sub(from)
	bucket := max(time.Minute, (span / 1440).Truncate(time.Second))
	per := "per " + strings.TrimPrefix(durationWords(bucket), "1 ")
	tick := clockTicks{every: 2}
	if span <= 6*time.Hour {
		tick.every = 0.5
	}
	xLabel := fmt.Sprintf("time of day, %s (%s)", loc, from.In(loc).Format("MST"))
	st := styles(results)
	panel := func(yLabel string, log bool) *plot.Plot {
		p := plot.New()
		p.X.Label.Text = xLabel
		p.Y.Label.Text = yLabel
		p.X.Tick.Marker = tick
		if log {
			p.Y.Scale = plot.LogScale{}
			p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		}
		p.Add(plotter.NewGrid())
		return p
	}
	lines := func(p *plot.Plot, from, to time.Time, bucket time.Duration, value func([]autoscale.Sample) float64) error {
		for i, r := range results {
			l, err := plotter.NewLine(series(r, loc, from, to, bucket, value))
			if err != nil {
				return err
			}
			l.StepStyle = plotter.PostStep
			l.LineStyle = st[i]
			p.Add(l)
		}
		return nil
	}

	rate := panel("calls/s, mean "+per, false)
	l, err := plotter.NewLine(series(r0, loc, from, to, bucket, meanRate))
	if err != nil {
		return err
	}
	l.Color = color.Gray{Y: 0x40}
	rate.Add(l)

	pods := panel("replicas, max "+per, false)
	if err := lines(pods, from, to, bucket, maxReplicas); err != nil {
		return err
	}
	var coldMax float64
	for _, r := range results {
		for _, p := range series(r, loc, from, to, bucket, coldDelayed) {
			coldMax = max(coldMax, p.Y)
		}
	}
	coldLabel := "calls delayed by a cold start, " + per
	if coldMax > 20 {
		coldLabel += " (log)"
	}
	cold := panel(coldLabel, coldMax > 20)
	slow := panel("slowest call, ms, "+per+" (log)", true)
	for i, r := range results {
		for _, pp := range []struct {
			p     *plot.Plot
			value func([]autoscale.Sample) float64
		}{{cold, coldDelayed}, {slow, slowestMS}} {
			pts := positive(series(r, loc, from, to, bucket, pp.value))
			if len(pts) == 0 {
				continue
			}
			sc, err := plotter.NewScatter(pts)
			if err != nil {
				return err
			}
			sc.GlyphStyle = draw.GlyphStyle{Color: st[i].Color, Radius: vg.Points(2), Shape: glyphs[i%len(glyphs)]}
			pp.p.Add(sc)
		}
	}

	rows := [][]*plot.Plot{{rate}, {pods}, {cold}, {slow}}
	if !zoomFrom.IsZero() {
		zoom := panel(fmt.Sprintf("replicas, %s-%s, per second", zoomFrom.In(loc).Format("15:04"), zoomTo.In(loc).Format("15:04")), false)
		zoom.X.Tick.Marker = clockTicks{every: 1.0 / 12}
		if err := lines(zoom, zoomFrom, zoomTo, time.Second, maxReplicas); err != nil {
			return err
		}
		rows = append(rows, []*plot.Plot{zoom})
	}

	rate.Title.Text = title
	const width, panelHeight, header = 1000, 260, 8
	legendHeight := 20 * len(results)
	img := vgimg.New(vg.Points(width), vg.Points(float64(header+legendHeight+panelHeight*len(rows))))
	dc := draw.New(img)
	top := dc.Max.Y
	// The legend strip, above the panels.
	leg := plot.NewLegend()
	leg.Top, leg.Left = true, true
	leg.Padding = vg.Points(4)
	leg.ThumbnailWidth = vg.Points(30)
	for i, r := range results {
		ls := st[i]
		leg.Add(fmt.Sprintf("%s (%.1f pod-hours)", r.Name, r.PodHours()), legendThumb{line: ls, glyph: glyphs[i%len(glyphs)]})
	}
	legArea := draw.Crop(dc, vg.Points(10), 0, 0, 0)
	legArea.Max.Y = top - vg.Points(header)
	legArea.Min.Y = legArea.Max.Y - vg.Points(float64(legendHeight))
	leg.Draw(legArea)

	body := dc
	body.Max.Y = legArea.Min.Y - vg.Points(4)
	tiles := draw.Tiles{Rows: len(rows), Cols: 1, PadTop: 4, PadBottom: 4, PadLeft: 4, PadRight: 8, PadY: 12}
	canvases := plot.Align(rows, tiles, body)
	for i := range rows {
		rows[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var glyphs = []draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.PlusGlyph{}, draw.CrossGlyph{}, draw.RingGlyph{}}

// legendThumb shows a scenario's line style and its cold-start glyph.
type legendThumb struct {
	line  draw.LineStyle
	glyph draw.GlyphDrawer
}

func (t legendThumb) Thumbnail(c *draw.Canvas) {
	y := c.Center().Y
	c.StrokeLine2(t.line, c.Min.X, y, c.Max.X-vg.Points(8), y)
	c.DrawGlyph(draw.GlyphStyle{Color: t.line.Color, Radius: vg.Points(2.5), Shape: t.glyph}, vg.Point{X: c.Max.X - vg.Points(3), Y: y})
}

// durationWords spells a bucket: "1 minute", "5 minutes", "1 hour".
func durationWords(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return plural(int(d/time.Hour), "hour")
	case d%time.Minute == 0:
		return plural(int(d/time.Minute), "minute")
	default:
		return plural(int(d/time.Second), "second")
	}
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}
