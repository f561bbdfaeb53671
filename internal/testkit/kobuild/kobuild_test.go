package kobuild

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestCommandBuildsAsKo: a binary built by Command carries ko.yaml's
// settings, as go version -m reads them from the binary itself.
func TestCommandBuildsAsKo(t *testing.T) {
	b, err := Load("portfolio-mcp")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "portfolio-mcp")
	if out, err := b.Command(t.Context(), "./cmd/portfolio-mcp", bin).CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command("go", "version", "-m", bin).CombinedOutput()
	if err != nil {
		t.Fatalf("go version -m: %v\n%s", err, out)
	}
	settings := map[string]string{}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "build" {
			k, v, _ := strings.Cut(strings.TrimPrefix(line, "\tbuild\t"), "=")
			settings[k] = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	for _, e := range b.Env {
		k, v, _ := strings.Cut(e, "=")
		if settings[k] != v {
			t.Errorf("binary built with %s=%q, ko.yaml gives %q", k, settings[k], v)
		}
	}
	for _, f := range b.Flags {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			v = "true"
		}
		if settings[k] != v {
			t.Errorf("binary built with %s=%q, ko.yaml gives %q", k, settings[k], v)
		}
	}
	// A -trimpath build does not record its -ldflags; ko.yaml's strip the
	// binary, which shows in it: no symbol table (-s), no DWARF (-w).
	if !slices.Contains(b.Ldflags, "-s -w") {
		t.Fatalf("ko.yaml's ldflags are %q; say here how to see them in a binary", b.Ldflags)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, s := range f.Sections {
		if s.Name == ".symtab" || strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
			t.Errorf("binary has %s, which -s -w leave out", s.Name)
		}
	}
}

// TestLoadLeavesOutTemplates: the version stamp's template is ko's to
// fill; a build here keeps the program's default instead.
func TestLoadLeavesOutTemplates(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/m\n")
	write("ko.yaml", `builds:
  - id: other
    flags: [-race]
  - id: server
    env: [CGO_ENABLED=0]
    flags: [-trimpath, -tags=a]
    ldflags:
      - -s -w
      - -X example.com/m.Version={{.Git.Tag}}
`)
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(filepath.Join(dir, "sub"))
	b, err := Load("server")
	if err != nil {
		t.Fatal(err)
	}
	if b.Dir != dir || !slices.Equal(b.Env, []string{"CGO_ENABLED=0"}) || !slices.Equal(b.Flags, []string{"-trimpath", "-tags=a"}) || !slices.Equal(b.Ldflags, []string{"-s -w"}) {
		t.Errorf("Load = %+v", b)
	}
	if _, err := Load("missing"); err == nil {
		t.Error("Load of a build ko.yaml does not have: no error")
	}
}

// TestOthersBuildAsKo: the builds outside Go (the release, the Knative
// end-to-end run, the patched-SDK bench build) spell ko.yaml's settings
// for the server out themselves; the command each builds the server with
// must still give every one of them.
func TestOthersBuildAsKo(t *testing.T) {
	b, err := Load("portfolio-mcp")
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Concat(b.Env, b.Flags, b.Ldflags)
	check := func(name, command string) {
		for _, w := range want {
			if !strings.Contains(command, w) {
				t.Errorf("%s builds the server without %q, which ko.yaml gives:\n%s", name, w, command)
			}
		}
	}
	// The shell scripts: the command lines (continuations joined,
	// comments left out) that name the server's package.
	for name, pkg := range map[string]string{
		"scripts/e2e-knative.sh":                        `"./cmd/$c"`, // a loop over the commands, the server among them
		"internal/tooling/bench/gosdk/build-patched.sh": "./cmd/portfolio-mcp",
	} {
		raw, err := os.ReadFile(filepath.Join(b.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var found int
		for _, line := range strings.Split(strings.ReplaceAll(string(raw), "\\\n", " "), "\n") {
			if !strings.HasPrefix(strings.TrimSpace(line), "#") && strings.Contains(line, pkg) {
				found++
				check(name, line)
			}
		}
		if found == 0 {
			t.Errorf("%s has no command that builds %s", name, pkg)
		}
	}
	// The release: goreleaser's build of the server.
	raw, err := os.ReadFile(filepath.Join(b.Dir, ".goreleaser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type build struct {
		Main                string
		Env, Flags, Ldflags []string
	}
	var release struct{ Builds []build }
	if err := yaml.Unmarshal(raw, &release); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(release.Builds, func(b build) bool { return b.Main == "./cmd/portfolio-mcp" })
	if i < 0 {
		t.Fatal(".goreleaser.yaml has no build of ./cmd/portfolio-mcp")
	}
	r := release.Builds[i]
	check(".goreleaser.yaml", strings.Join(slices.Concat(r.Env, r.Flags, r.Ldflags), "\n"))
}
