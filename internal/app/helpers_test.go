package app_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/sethvargo/go-envconfig"

	"github.com/portfolio-mcp/portfolio-mcp/config"
	"github.com/portfolio-mcp/portfolio-mcp/internal/app"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// Protocol generations every test runs against: the 2026-07-28 protocol
// (no initialize) and the initialize-era versions.
var protocols = []string{"2026-07-28", "2025-11-25", "2025-06-18"}

// testServer is one running server process-in-a-goroutine.
type testServer struct {
	URL  string // base URL, e.g. http://127.0.0.1:41234
	stop func() error
}

// startServer builds the server exactly as main does (app.New from a
// config) on a free loopback port and stops it when the test ends.
func startServer(t testing.TB, env map[string]string, opts ...app.Option) *testServer {
	t.Helper()
	log := telemetry.NewLogger(io.Discard, "warn", telemetry.Revision{})
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return serve(t, env, log, opts...)
}

// serve is startServer with the server's logger given.
func serve(t testing.TB, env map[string]string, log *slog.Logger, opts ...app.Option) *testServer {
	t.Helper()
	base := map[string]string{"PORT": "0", "LOG_LEVEL": "warn"}
	for k, v := range env {
		base[k] = v
	}
	cfg, err := config.LoadFrom(t.Context(), envconfig.MapLookuper(base))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := app.New(ctx, cfg, telemetry.Revision{}, log, opts...)
	if err != nil {
		cancel()
		t.Fatalf("app.New: %v", err)
	}
	ln, err := srv.Listen()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	ts := &testServer{URL: "http://" + ln.Addr().String()}
	var stopped bool
	var stopErr error
	ts.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			stopErr = <-done
		}
		return stopErr
	}
	t.Cleanup(func() { ts.stop() })
	return ts
}

type testWriter struct{ t testing.TB }

func (w *testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// connect opens a go-sdk client session to endpoint at protocol version.
func connect(t testing.TB, endpoint, version string, hc *http.Client) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-test", Version: "1"}, nil)
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1},
		&mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connect (%s): %v", version, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// callTool calls name and decodes its structured content into out. It
// fails the test on a protocol error or an isError result.
func callTool(t testing.TB, cs *mcp.ClientSession, name string, args map[string]any, out any) {
	t.Helper()
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if res.IsError {
		t.Fatalf("%s: tool error: %s", name, resultText(res))
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s: decoding structured content: %v", name, err)
	}
}

// callToolError calls name and returns the text of its isError result.
func callToolError(t testing.TB, cs *mcp.ClientSession, name string, args map[string]any) string {
	t.Helper()
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: protocol error %v, want a tool error result", name, err)
	}
	if !res.IsError {
		t.Fatalf("%s: succeeded, want a tool error", name)
	}
	return resultText(res)
}

func resultText(res *mcp.CallToolResult) string {
	var s string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			s += tc.Text
		}
	}
	return s
}
