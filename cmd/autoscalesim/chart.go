package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/autoscale"
)

var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
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

// writeChart draws the request rate and each scenario's replicas over the
// whole trace, plus a per-second zoom on [zoomFrom, zoomTo) if set.
func writeChart(path, title string, results []*autoscale.Result, loc *time.Location, zoomFrom, zoomTo time.Time) error {
	if len(results) == 0 {
		return nil
	}
	r0 := results[0]
	from := r0.Start
	to := r0.Start.Add(time.Duration(len(r0.Samples)) * time.Second)
	span := to.Sub(from)
	bucket := max(time.Minute, (span / 1440).Truncate(time.Second))
	tick := clockTicks{every: 2}
	if span <= 6*time.Hour {
		tick.every = 0.5
	}

	rate := plot.New()
	rate.Title.Text = title
	rate.Y.Label.Text = "requests/s"
	rate.X.Tick.Marker = tick
	rate.Add(plotter.NewGrid())
	l, err := plotter.NewLine(series(r0, loc, from, to, bucket, meanRate))
	if err != nil {
		return err
	}
	l.Color = color.Gray{Y: 0x40}
	rate.Add(l)

	pods := plot.New()
	pods.Y.Label.Text = fmt.Sprintf("replicas (max per %v)", bucket)
	pods.X.Tick.Marker = tick
	pods.Add(plotter.NewGrid())
	pods.Legend.Top = true
	pods.Legend.Left = true
	addReplicas(pods, results, loc, from, to, bucket)

	rows := [][]*plot.Plot{{rate}, {pods}}
	height := vg.Points(640)
	if !zoomFrom.IsZero() {
		zoom := plot.New()
		zoom.Title.Text = fmt.Sprintf("zoom %s-%s, per second", zoomFrom.In(loc).Format("15:04"), zoomTo.In(loc).Format("15:04"))
		zoom.Y.Label.Text = "replicas"
		zoom.X.Tick.Marker = clockTicks{every: 1.0 / 12}
		zoom.Add(plotter.NewGrid())
		zoom.Legend.Top = true
		zoom.Legend.Left = true
		addReplicas(zoom, results, loc, zoomFrom, zoomTo, time.Second)
		rows = append(rows, []*plot.Plot{zoom})
		height = vg.Points(900)
	}
	img := vgimg.New(vg.Points(1000), height)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(rows), Cols: 1, PadTop: 4, PadBottom: 4, PadLeft: 4, PadRight: 8, PadY: 12}
	canvases := plot.Align(rows, tiles, dc)
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

func addReplicas(p *plot.Plot, results []*autoscale.Result, loc *time.Location, from, to time.Time, bucket time.Duration) {
	for i, r := range results {
		l, err := plotter.NewLine(series(r, loc, from, to, bucket, maxReplicas))
		if err != nil {
			continue
		}
		l.StepStyle = plotter.PostStep
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1.5)
		if i > 0 {
			l.Dashes = []vg.Length{vg.Points(float64(2 + 2*i)), vg.Points(2)}
		}
		p.Add(l)
		p.Legend.Add(r.Name, l)
	}
}
