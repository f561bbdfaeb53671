// Command gen writes the files the dashboard package generates: the
// Grafana dashboard (knative/observability/dashboard.json) and the picture
// of its layout (docs/observability-dashboard.png).
//
//	go run ./internal/tooling/dashboard/gen
//
// It finds the module root from the working directory, so it also runs as
// go generate ./internal/tooling/dashboard.
package main

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/dashboard"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dashboard gen:", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	files, err := dashboard.Files()
	if err != nil {
		return err
	}
	for _, rel := range slices.Sorted(maps.Keys(files)) {
		path := filepath.Join(root, rel)
		if old, err := os.ReadFile(path); err == nil && string(old) == string(files[rel]) {
			fmt.Println("unchanged", rel)
			continue
		}
		if err := os.WriteFile(path, files[rel], 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", rel)
	}
	return nil
}

// moduleRoot is the nearest directory at or above the working directory
// that holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory")
		}
		dir = parent
	}
}
