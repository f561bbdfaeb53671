// Package kobuild builds this module's commands the way ko.yaml has ko
// build the image: static, without local paths, with its build tags,
// stripped. Tests and benchmarks that run "the image's program" build it
// here, from the flags ko.yaml gives, so that a flag added there reaches
// every one of them.
package kobuild

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// Build is one of ko.yaml's builds.
type Build struct {
	// Dir is the module's root, where ko.yaml is.
	Dir string
	// Env is added to the go command's environment, e.g. CGO_ENABLED=0.
	Env []string
	// Flags are go build's, e.g. -trimpath and -tags=grpcnotrace.
	Flags []string
	// Ldflags are the linker's, e.g. "-s -w". An entry with a template
	// (the release's version stamp) is left out: its value is ko's to
	// give, and the program's own default stands in for it.
	Ldflags []string
}

// Load reads the ko.yaml build named id from the nearest directory at or
// above the working directory that holds both go.mod and ko.yaml: this
// module's root, from any of its packages (a nested module without a
// ko.yaml of its own, such as the bench's mcpgo, resolves to it too).
func Load(id string) (Build, error) {
	dir, err := moduleRoot()
	if err != nil {
		return Build{}, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "ko.yaml"))
	if err != nil {
		return Build{}, err
	}
	var ko struct {
		Builds []struct {
			ID      string   `json:"id"`
			Env     []string `json:"env"`
			Flags   []string `json:"flags"`
			Ldflags []string `json:"ldflags"`
		} `json:"builds"`
	}
	if err := yaml.Unmarshal(raw, &ko); err != nil {
		return Build{}, fmt.Errorf("ko.yaml: %w", err)
	}
	for _, b := range ko.Builds {
		if b.ID != id {
			continue
		}
		out := Build{Dir: dir, Env: b.Env, Flags: b.Flags}
		for _, l := range b.Ldflags {
			if !strings.Contains(l, "{{") {
				out.Ldflags = append(out.Ldflags, l)
			}
		}
		return out, nil
	}
	return Build{}, fmt.Errorf("ko.yaml has no build %q", id)
}

// Command is `go build` of pkg (relative to b.Dir) into out, with b's
// environment and flags, run in b.Dir.
func (b Build) Command(ctx context.Context, pkg, out string) *exec.Cmd {
	args := append([]string{"build"}, b.Flags...)
	if len(b.Ldflags) > 0 {
		args = append(args, "-ldflags="+strings.Join(b.Ldflags, " "))
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "-o", out, pkg)...)
	cmd.Dir = b.Dir
	cmd.Env = append(os.Environ(), b.Env...)
	return cmd
}

// moduleRoot is the nearest directory at or above the working directory
// that holds both go.mod and ko.yaml.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		_, errMod := os.Stat(filepath.Join(dir, "go.mod"))
		_, errKo := os.Stat(filepath.Join(dir, "ko.yaml"))
		if errMod == nil && errKo == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no ko.yaml beside a go.mod at or above the working directory")
		}
		dir = parent
	}
}
