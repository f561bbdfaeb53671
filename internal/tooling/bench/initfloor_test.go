package bench

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestInitFloorLinksOurLibraries: bench/initfloor imports exactly the
// third-party packages the server's own packages import, so the floor it
// measures is the one those libraries set, as they change.
func TestInitFloorLinksOurLibraries(t *testing.T) {
	server := goList(t, "-deps", "-f", `{{if and (not .Standard) .Module}}{{if eq .Module.Path "github.com/portfolio-mcp/portfolio-mcp"}}{{join .Imports "\n"}}{{end}}{{end}}`, "../../../cmd/portfolio-mcp")
	floor := goList(t, "-f", `{{join .Imports "\n"}}`, "./initfloor")
	external := func(pkgs []string) []string {
		var out []string
		for _, p := range pkgs {
			first, _, _ := strings.Cut(p, "/")
			if strings.Contains(first, ".") && !strings.HasPrefix(p, "github.com/portfolio-mcp/") && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
		slices.Sort(out)
		return out
	}
	want, got := external(server), external(floor)
	for _, p := range want {
		if !slices.Contains(got, p) {
			t.Errorf("initfloor does not import %s, which the server imports", p)
		}
	}
	for _, p := range got {
		if !slices.Contains(want, p) {
			t.Errorf("initfloor imports %s, which the server does not", p)
		}
	}
}

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Fields(string(out))
}
