package integration

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends/faults"
)

// unavailableText is what handlers tell an agent when a backend is down.
const unavailableText = "temporarily unavailable; retry in a few seconds"

// TestTransientErrorsRetried: a backend answering 500 or 503 for a while is
// retried, and the agent gets the answer.
func TestTransientErrorsRetried(t *testing.T) {
	s := needDocker(t)
	cases := []struct {
		status int
		tool   string
		args   map[string]any
		route  string
	}{
		{503, "list_accounts", nil, "GET /v1/accounts"},
		{500, "get_quotes", map[string]any{"tickers": []string{"AAPL"}}, "GET /v1/quotes"},
		{503, "get_risk_summary", map[string]any{"account_id": "ACC-1001"}, "GET /v1/accounts/{account_id}/risk-summary"},
	}
	srv := startProcess(t, s, with(s.fakes.hostEnv(t), map[string]string{"BACKEND_RETRIES": "2", "BACKEND_TIMEOUT": "5s"}))
	cs := connect(t, srv.endpoint())
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%d on %s", tc.status, tc.tool), func(t *testing.T) {
			s.fakes.reset(t)
			s.fakes.inject(t, faults.Fault{Route: tc.route, Status: tc.status, Times: 2})
			res := callTool(t, cs, tc.tool, tc.args)
			if res.IsError {
				t.Fatalf("%s failed: %s", tc.tool, resultText(res))
			}
			if n := s.fakes.hits(t, tc.route); n != 3 {
				t.Errorf("the backend saw %d requests, want 3 (two failures, then the answer)", n)
			}
		})
	}
}

// TestRetryBudgetExhausted: past the retry budget the tool returns an
// actionable error, within its deadline, revealing nothing internal.
func TestRetryBudgetExhausted(t *testing.T) {
	s := needDocker(t)
	s.fakes.reset(t)
	fakesURL := s.fakes.hostURL(t)
	srv := startProcess(t, s, with(s.fakes.hostEnv(t), map[string]string{"BACKEND_RETRIES": "2", "BACKEND_TIMEOUT": "5s"}))
	cs := connect(t, srv.endpoint())

	route := "GET /v1/accounts/{account_id}/portfolio"
	s.fakes.inject(t, faults.Fault{Route: route, Status: 503})
	res := callTool(t, cs, "get_portfolio", map[string]any{"account_id": "ACC-1002"})
	text := resultText(res)
	if !res.IsError || !strings.Contains(text, unavailableText) || !strings.Contains(text, "(ref ") {
		t.Fatalf("get_portfolio = %q (isError %v), want the unavailable message with a reference", text, res.IsError)
	}
	if l := leaks(text, fakesURL, hostPort(fakesURL), "503", "injected fault", "/v1/", "http"); len(l) > 0 {
		t.Errorf("the agent's message %q reveals %q", text, l)
	}
	if n := s.fakes.hits(t, route); n != 3 {
		t.Errorf("the backend saw %d requests, want 1 + BACKEND_RETRIES=2", n)
	}
	s.report.add("retry budget exhausted: error returned in %s (BACKEND_TIMEOUT=5s)", toolDuration(srv.logs, "get_portfolio"))
	// The details are in the server's log, under the reference.
	if !strings.Contains(srv.logs.String(), "status 503") {
		t.Errorf("the server log does not record the backend's status")
	}
}

// TestHangingBackend: a backend that never answers costs each call its
// deadline, after which the agent gets the unavailable message and the
// server holds no goroutine for the call.
func TestHangingBackend(t *testing.T) {
	s := needDocker(t)
	s.fakes.reset(t)
	srv := startProcess(t, s, with(s.fakes.hostEnv(t), map[string]string{
		"BACKEND_TIMEOUT": "1s", "BACKEND_RETRIES": "2",
		// Keep the breaker out of this scenario (it has its own test).
		"BACKEND_BREAKER_FAILURES": "100",
	}))
	cs := connect(t, srv.endpoint())
	if res := callTool(t, cs, "get_risk_summary", map[string]any{"account_id": "ACC-1001"}); res.IsError {
		t.Fatalf("warm-up call failed: %s", resultText(res))
	}
	baseline := goroutines(t, srv.base)

	route := "GET /v1/accounts/{account_id}/risk-summary"
	s.fakes.inject(t, faults.Fault{Route: route, Hang: true})
	const calls = 5
	var wg sync.WaitGroup
	texts := make([]string, calls)
	for i := range calls {
		wg.Go(func() {
			res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "get_risk_summary", Arguments: map[string]any{"account_id": "ACC-1003"}})
			switch {
			case err != nil:
				texts[i] = "protocol error: " + err.Error()
			case !res.IsError:
				texts[i] = "succeeded: " + resultText(res)
			default:
				texts[i] = resultText(res)
			}
		})
	}
	wg.Wait()
	for _, text := range texts {
		if !strings.Contains(text, unavailableText) {
			t.Errorf("hung call answered %q, want the unavailable message", text)
		}
	}
	s.report.add("hanging backend: call ended in %s (BACKEND_TIMEOUT=1s)", toolDuration(srv.logs, "get_risk_summary"))
	// Each call used its whole deadline on one attempt.
	if n := s.fakes.hits(t, route); n != 1+calls {
		t.Errorf("the backend saw %d requests, want %d", n, 1+calls)
	}
	eventually(t, 15*time.Second, fmt.Sprintf("the server's goroutines to return to %d", baseline), func() bool {
		return goroutines(t, srv.base) <= baseline
	})

	// Released, the backend answers again.
	s.fakes.admin(t, "DELETE", "/admin/faults", nil)
	if res := callTool(t, cs, "get_risk_summary", map[string]any{"account_id": "ACC-1001"}); res.IsError {
		t.Errorf("after the hang cleared: %s", resultText(res))
	}
}

// with returns a merged copy of environment maps, later ones winning.
func with(maps ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
