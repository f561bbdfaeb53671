package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	gdash "github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/dashboard/promnames"
)

// moduleRoot is where the generated paths are relative to.
const moduleRoot = "../../.."

const regenerate = "go run ./internal/tooling/dashboard/gen"

// TestGeneratedFilesAreCurrent rebuilds the dashboard and its layout
// picture and fails if the checked-in files differ.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range files {
		got, err := os.ReadFile(filepath.Join(moduleRoot, rel))
		if err != nil {
			t.Errorf("%s: %v; generate it with:\n\t%s", rel, err, regenerate)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what internal/tooling/dashboard builds (%d bytes checked in, %d built); regenerate it with:\n\t%s\nand commit the result", rel, len(got), len(want), regenerate)
		}
	}
}

// TestGenerationIsDeterministic: two builds give the same bytes, or the
// drift test above would flap.
func TestGenerationIsDeterministic(t *testing.T) {
	a, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	for rel := range a {
		if !bytes.Equal(a[rel], b[rel]) {
			t.Errorf("%s differs between two builds", rel)
		}
	}
}

// TestLayout: every panel fits Grafana's 24 columns, none overlaps another,
// ids are unique, each row has panels, and panel titles are unique.
func TestLayout(t *testing.T) {
	d, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	panels := Panels(d)
	if len(panels) < 30 {
		t.Fatalf("%d panels and rows; the dashboard lost its rows", len(panels))
	}
	titles := map[string]bool{}
	inRow := 0
	for i, p := range panels {
		if p.X+p.W > 24 || p.W == 0 || p.H == 0 {
			t.Errorf("%s does not fit the 24-column grid", p)
		}
		for _, q := range panels[:i] {
			if p.X < q.X+q.W && q.X < p.X+p.W && p.Y < q.Y+q.H && q.Y < p.Y+p.H {
				t.Errorf("%s overlaps %s", p, q)
			}
		}
		if p.Row {
			if i > 0 && inRow == 0 {
				t.Errorf("the row before %q has no panels", p.Title)
			}
			inRow = 0
			continue
		}
		inRow++
		if titles[p.Title] {
			t.Errorf("two panels are titled %q", p.Title)
		}
		titles[p.Title] = true
	}
	ids := map[uint32]bool{}
	for _, p := range d.Panels {
		var id uint32
		switch {
		case p.Panel != nil && p.Panel.Id != nil:
			id = *p.Panel.Id
		case p.RowPanel != nil:
			id = p.RowPanel.Id
		}
		if id == 0 || ids[id] {
			t.Errorf("panel id %d missing or repeated", id)
		}
		ids[id] = true
	}
}

// TestQueries: every panel queries Prometheus through the data source
// variable, every query but the objective's constant lines is narrowed by
// the $service variable, every query names a metric, and histograms are
// read through their buckets.
func TestQueries(t *testing.T) {
	d, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	b, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range Panels(d) {
		if p.Row {
			continue
		}
		if len(p.Exprs) == 0 {
			t.Errorf("%s has no Prometheus query", p)
		}
		for _, e := range p.Exprs {
			if strings.HasPrefix(e, "vector(") {
				continue
			}
			if !strings.Contains(e, "$service") {
				t.Errorf("%s: %s ignores the service variable", p.Title, e)
			}
			if len(promnames.Names(e)) == 0 {
				t.Errorf("%s: %s reads no metric", p.Title, e)
			}
			if strings.Contains(e, "histogram_quantile") && !strings.Contains(e, "_bucket{") {
				t.Errorf("%s: %s takes a quantile of something other than buckets", p.Title, e)
			}
		}
	}
	var raw struct {
		Panels []struct {
			Datasource struct{ UID string } `json:"datasource"`
			Title      string
			Type       string
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, p := range raw.Panels {
		if p.Type != "row" && p.Datasource.UID != "${datasource}" {
			t.Errorf("%s reads data source %q, want the variable", p.Title, p.Datasource.UID)
		}
	}
}

// TestJSONRoundTrips reads the generated JSON back with the SDK's own
// decoder (the one Grafana's tooling uses) and finds the same panels.
func TestJSONRoundTrips(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	b, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	var back gdash.Dashboard
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	d, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(Panels(back)), fmt.Sprint(Panels(d)); got != want {
		t.Errorf("panels after a round trip:\n%s\nwant\n%s", got, want)
	}
	if back.Uid == nil || *back.Uid != UID {
		t.Errorf("uid %v, want %q", back.Uid, UID)
	}
}

// TestLayoutPicture: the PNG decodes and has room for every grid row.
func TestLayoutPicture(t *testing.T) {
	d, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Layout(d)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var rows uint32
	for _, p := range Panels(d) {
		rows = max(rows, p.Y+p.H)
	}
	if bounds := img.Bounds(); bounds.Dx() < 900 || bounds.Dy() < int(rows)*14 {
		t.Errorf("picture is %v for %d grid rows", bounds, rows)
	}
}
