package integration

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
)

// TestServerContainer: the shipping image starts, answers /readyz and MCP
// calls on the fakes by their network aliases, with the same answers as the
// demo. Its time to ready is reported.
func TestServerContainer(t *testing.T) {
	s := needDocker(t)
	s.fakes.reset(t)
	srv := startContainer(t, s, s.network, s.fakes.networkEnv())

	resp, err := http.Get(srv.base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz = %d", resp.StatusCode)
	}

	// Time to ready, two ways: from the start request to the first ready
	// answer seen from the host (includes Docker's start and the poll
	// interval), and from the container's process start to the server's
	// "serving" log line.
	info, err := srv.c.Inspect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	started, _ := time.Parse(time.RFC3339Nano, info.State.StartedAt)
	var serving time.Time
	if recs := srv.logs.find("serving"); len(recs) > 0 {
		serving, _ = time.Parse(time.RFC3339Nano, recs[0]["time"].(string))
	}
	msg := "server container: ready " + srv.readyAfter.Round(time.Millisecond).String() + " after the start request"
	if !started.IsZero() && !serving.IsZero() {
		msg += ", serving " + serving.Sub(started).Round(time.Millisecond).String() + " after the process started"
	}
	t.Log(msg)
	s.report.add("%s", msg)
	if info.Config.User != "65532:65532" && info.Config.User != "65532" {
		t.Errorf("the image runs as user %q, want nonroot 65532", info.Config.User)
	}

	demoSrv := startProcess(t, s, nil)
	s.report.add("server process: serving %s after exec", demoSrv.servingAfter.Round(time.Millisecond))
	want := answers(t, connect(t, demoSrv.endpoint()))
	cs := connect(t, srv.endpoint())
	// ko stamps the version from the build (the tag, or VERSION in a
	// release): an image saying "dev" was built without it.
	if ir := cs.InitializeResult(); ir == nil || ir.ServerInfo == nil || ir.ServerInfo.Version == "" || ir.ServerInfo.Version == "dev" {
		t.Errorf("the server image reports no build version: %+v", ir)
	} else {
		s.report.add("server container reports version %q", ir.ServerInfo.Version)
	}
	compareAnswers(t, "server container on the fakes", answers(t, cs), want)
}

// TestBackendDown: with the backends' container stopped, the breaker opens
// and calls fail at once with the unavailable message; when the backends
// come back the server closes the breaker again by itself.
func TestBackendDown(t *testing.T) {
	s := needDocker(t)
	ctx := t.Context()
	// Own network and fakes: this test stops them.
	nw, err := network.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nw.Remove(context.Background()) }) // not t.Context(): it is cancelled before cleanups run
	f, err := startFakes(ctx, s, nw, "down-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testcontainers.TerminateContainer(f.c) })

	srv := startContainer(t, s, nw, with(f.networkEnv(), map[string]string{
		"BACKEND_TIMEOUT": "2s", "BACKEND_RETRIES": "2",
		"BACKEND_BREAKER_FAILURES": "3", "BACKEND_BREAKER_COOLDOWN": "1s",
	}))
	cs := connect(t, srv.endpoint())
	if res := callTool(t, cs, "list_accounts", nil); res.IsError {
		t.Fatalf("list_accounts before the outage: %s", resultText(res))
	}

	stop := 10 * time.Second
	if err := f.c.Stop(ctx, &stop); err != nil {
		t.Fatal(err)
	}
	// Calls fail until the breaker has seen enough failed attempts to open.
	eventually(t, 60*time.Second, "the portfolio breaker to open", func() bool {
		res := callTool(t, cs, "list_accounts", nil)
		if !res.IsError || !strings.Contains(resultText(res), unavailableText) {
			t.Fatalf("list_accounts with the backend down = %q, want the unavailable message", resultText(res))
		}
		return slices.Contains(srv.logs.breakerChanges(), "portfolio:closed->open")
	})
	// Open: refused without a network attempt, with the same clear message.
	res := callTool(t, cs, "get_portfolio", map[string]any{"account_id": "ACC-1001"})
	if !res.IsError || !strings.Contains(resultText(res), unavailableText) {
		t.Fatalf("get_portfolio while open = %q", resultText(res))
	}
	eventually(t, 10*time.Second, "the server to log a call refused by the open breaker", func() bool {
		return strings.Contains(srv.logs.String(), "circuit breaker open")
	})

	if err := f.c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "calls to succeed after the backend recovered", func() bool {
		return !callTool(t, cs, "list_accounts", nil).IsError
	})
	// The container's log arrives asynchronously.
	eventually(t, 10*time.Second, "the log of the breaker closing again", func() bool {
		return slices.Contains(srv.logs.breakerChanges(), "portfolio:half-open->closed")
	})
	changes := srv.logs.breakerChanges()
	for _, want := range []string{"portfolio:closed->open", "portfolio:open->half-open", "portfolio:half-open->closed"} {
		if !slices.Contains(changes, want) {
			t.Errorf("breaker transitions %q lack %s", changes, want)
		}
	}
	if res := callTool(t, cs, "get_portfolio", map[string]any{"account_id": "ACC-1001"}); res.IsError {
		t.Errorf("get_portfolio after recovery: %s", resultText(res))
	}
	s.report.add("breaker open: calls refused in %s (server-side)", refusedDuration(srv.logs))
}

// refusedDuration is the server-side duration of the calls the open
// breaker refused, for the report.
func refusedDuration(l *logLines) string {
	refused := map[any]bool{}
	for _, rec := range l.find("backend call failed") {
		if e, _ := rec["error"].(string); strings.Contains(e, "circuit breaker open") {
			refused[rec["request_id"]] = true
		}
	}
	var out []string
	for _, rec := range l.find("tool call") {
		if refused[rec["request_id"]] {
			out = append(out, fmt.Sprintf("%vms", rec["duration_ms"]))
		}
	}
	return strings.Join(out, ", ")
}

// toolDuration is the server-side duration of the last logged call of tool,
// for the report.
func toolDuration(l *logLines, tool string) string {
	recs := l.find("tool call")
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i]["tool"] == tool {
			return fmt.Sprintf("%vms", recs[i]["duration_ms"])
		}
	}
	return "?"
}
