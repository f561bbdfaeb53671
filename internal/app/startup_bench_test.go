package app_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sethvargo/go-envconfig"

	"github.com/portfolio-mcp/portfolio-mcp/config"
	"github.com/portfolio-mcp/portfolio-mcp/internal/app"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// BenchmarkAppNew is the in-process share of cold start: assembling the
// server from its config (schemas, demo data, middleware), before listening.
// Its bytes per op are what a start allocates on fresh heap pages, each
// 4 KiB a page fault (docs/performance.md, Page faults).
// Run: go test ./internal/app -run '^$' -bench AppNew -benchmem
func BenchmarkAppNew(b *testing.B) {
	benchmarkAppNew(b, map[string]string{"PORT": "0"})
}

// BenchmarkAppNewProduction is the same with a real issuer and an audit
// sink: the bearer verifier, its key fetch, and the audit workers and
// queue.
func BenchmarkAppNewProduction(b *testing.B) {
	iss := oauthtest.New(b)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }))
	b.Cleanup(sink.Close)
	// Secrets come from the process environment, as in a pod without a
	// mounted directory.
	b.Setenv("SECRET_REQUEST_STATE_KEY", "bench-request-state-key-0123456789abcdef")
	b.Setenv("SECRET_APPROVAL_EVENT_KEY", "bench-approval-event-key-0123456789abcdef")
	benchmarkAppNew(b, map[string]string{"PORT": "0", "OAUTH_ISSUER": iss.URL, "PUBLIC_URL": "http://127.0.0.1/mcp", "K_SINK": sink.URL})
}

func benchmarkAppNew(b *testing.B, env map[string]string) {
	cfg, err := config.LoadFrom(b.Context(), envconfig.MapLookuper(env))
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
