package app_test

import (
	"io"
	"testing"

	"github.com/sethvargo/go-envconfig"

	"github.com/portfolio-mcp/portfolio-mcp/config"
	"github.com/portfolio-mcp/portfolio-mcp/internal/app"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// BenchmarkAppNew is the in-process share of cold start: assembling the
// server from its config (schemas, demo data, middleware), before listening.
// Run: go test ./app -run '^$' -bench AppNew -benchmem
func BenchmarkAppNew(b *testing.B) {
	cfg, err := config.LoadFrom(b.Context(), envconfig.MapLookuper(map[string]string{"PORT": "0"}))
	if err != nil {
		b.Fatal(err)
	}
	log := telemetry.NewLogger(io.Discard, "info", telemetry.Revision{})
	for b.Loop() {
		if _, err := app.New(b.Context(), cfg, telemetry.Revision{}, log); err != nil {
			b.Fatal(err)
		}
	}
}
