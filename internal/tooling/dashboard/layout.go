package dashboard

import (
	"bytes"
	"fmt"
	"image/color"
	"slices"
	"strings"

	gdash "github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/dashboard/promnames"
)

// The picture's scale: one of Grafana's 24 grid columns and one grid row
// (Grafana draws a row unit 30px high on a screen about 1,600px wide).
const (
	colWidth  = vg.Length(30)
	rowHeight = vg.Length(14)
	margin    = vg.Length(12)
	header    = vg.Length(30)
	gap       = vg.Length(2)
)

var (
	background  = color.RGBA{R: 0xf4, G: 0xf5, B: 0xf5, A: 0xff}
	rowColor    = color.RGBA{R: 0x3d, G: 0x47, B: 0x4f, A: 0xff}
	border      = color.RGBA{R: 0x9a, G: 0xa3, B: 0xab, A: 0xff}
	textColor   = color.RGBA{R: 0x1f, G: 0x24, B: 0x28, A: 0xff}
	subtle      = color.RGBA{R: 0x5f, G: 0x69, B: 0x72, A: 0xff}
	metricColor = color.RGBA{R: 0x1f, G: 0x5f, B: 0x99, A: 0xff}
	// Fill per panel type.
	fills = map[string]color.Color{
		"stat":           color.RGBA{R: 0xdc, G: 0xeb, B: 0xfa, A: 0xff},
		"timeseries":     color.RGBA{R: 0xff, G: 0xff, B: 0xff, A: 0xff},
		"state-timeline": color.RGBA{R: 0xe2, G: 0xf4, B: 0xe4, A: 0xff},
	}
	typeNames = map[string]string{"stat": "stat", "timeseries": "time series", "state-timeline": "state timeline"}
)

// Layout draws the dashboard's layout as a PNG: every row and panel at its
// gridPos, with its title and visualisation. The bytes are deterministic
// for a given dashboard (the fonts are compiled in).
func Layout(d gdash.Dashboard) ([]byte, error) {
	panels := Panels(d)
	var rows uint32
	for _, p := range panels {
		rows = max(rows, p.Y+p.H)
	}
	width := 2*margin + 24*colWidth
	height := 2*margin + header + vg.Length(rows)*rowHeight
	c := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(96), vgimg.UseBackgroundColor(background))

	regular := plot.DefaultFont
	regular.Variant = "Sans"
	bold := regular
	bold.Weight = 3 // golang.org/x/image/font.WeightBold
	titleFace := font.DefaultCache.Lookup(bold, 13)
	rowFace := font.DefaultCache.Lookup(bold, 9)
	panelFace := font.DefaultCache.Lookup(bold, 7.5)
	typeFace := font.DefaultCache.Lookup(regular, 6.5)
	mono := plot.DefaultFont
	mono.Variant = "Mono"
	metricFace := font.DefaultCache.Lookup(mono, 6.5)

	title := "portfolio-mcp"
	if d.Title != nil {
		title = *d.Title
	}
	c.SetColor(textColor)
	c.FillString(titleFace, vg.Point{X: margin, Y: height - margin - 14}, fmt.Sprintf("Grafana dashboard %q: layout (%d panels)", title, countPanels(panels)))

	// top converts a grid row to the y of its top edge (vg's origin is at
	// the bottom left).
	top := func(y uint32) vg.Length { return height - margin - header - vg.Length(y)*rowHeight }
	for _, p := range panels {
		x0 := margin + vg.Length(p.X)*colWidth + gap
		x1 := margin + vg.Length(p.X+p.W)*colWidth - gap
		y1 := top(p.Y) - gap
		y0 := top(p.Y+p.H) + gap
		if p.Row {
			fillRect(c, x0, y0, x1, y1, rowColor)
			c.SetColor(color.White)
			c.FillString(rowFace, vg.Point{X: x0 + 6, Y: y0 + (y1-y0)/2 - 3}, p.Title)
			continue
		}
		fill, ok := fills[p.Type]
		if !ok {
			fill = color.White
		}
		fillRect(c, x0, y0, x1, y1, fill)
		strokeRect(c, x0, y0, x1, y1, border)
		inner := x1 - x0 - 10
		c.SetColor(textColor)
		c.FillString(panelFace, vg.Point{X: x0 + 5, Y: y1 - 12}, fit(panelFace, p.Title, inner))
		c.SetColor(subtle)
		kind := typeNames[p.Type]
		if kind == "" {
			kind = p.Type
		}
		c.FillString(typeFace, vg.Point{X: x0 + 5, Y: y1 - 22}, fit(typeFace, fmt.Sprintf("%s · %d×%d", kind, p.W, p.H), inner))
		// The series it reads, one a line, as many as fit.
		y := y1 - 34
		for _, name := range metricNames(p.Exprs) {
			if y < y0+4 {
				break
			}
			c.SetColor(metricColor)
			c.FillString(metricFace, vg.Point{X: x0 + 5, Y: y}, fit(metricFace, name, inner))
			y -= 9
		}
	}
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// metricNames lists the series the expressions read, without the
// recording-rule levels' repetition and the histogram suffixes.
func metricNames(exprs []string) []string {
	var out []string
	for _, e := range exprs {
		for _, n := range promnames.Names(e) {
			n = strings.TrimSuffix(n, "_bucket")
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

func countPanels(ps []PanelPos) int {
	n := 0
	for _, p := range ps {
		if !p.Row {
			n++
		}
	}
	return n
}

func fillRect(c vg.Canvas, x0, y0, x1, y1 vg.Length, col color.Color) {
	c.SetColor(col)
	c.Fill(rect(x0, y0, x1, y1))
}

func strokeRect(c vg.Canvas, x0, y0, x1, y1 vg.Length, col color.Color) {
	c.SetColor(col)
	c.SetLineWidth(0.75)
	c.Stroke(rect(x0, y0, x1, y1))
}

func rect(x0, y0, x1, y1 vg.Length) vg.Path {
	var p vg.Path
	p.Move(vg.Point{X: x0, Y: y0})
	p.Line(vg.Point{X: x1, Y: y0})
	p.Line(vg.Point{X: x1, Y: y1})
	p.Line(vg.Point{X: x0, Y: y1})
	p.Close()
	return p
}

// fit shortens s with an ellipsis until it is at most w wide in face.
func fit(face font.Face, s string, w vg.Length) string {
	if face.Width(s) <= w {
		return s
	}
	r := []rune(s)
	for len(r) > 1 {
		r = r[:len(r)-1]
		if t := string(r) + "…"; face.Width(t) <= w {
			return t
		}
	}
	return ""
}
