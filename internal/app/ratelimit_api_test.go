package app_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/approvals"
)

// TestApprovalsAPIShareTheApproveBudget: the approvals API draws on the
// approve budget the MCP approval tools draw on, one bucket per caller, so
// neither surface is a way around the other's limit. A refusal is a 429
// with Retry-After, recorded as rate_limited; engaging a halt and
// cancelling open orders are never refused for budget.
func TestApprovalsAPIShareTheApproveBudget(t *testing.T) {
	srv, iss, sink := auditedServer(t, map[string]string{"RATE_TRADE_BURST": "2", "RATE_TRADE_PER_MINUTE": "0.01"})
	ann := iss.Token(t, iss.Claims("ann", secResource, allScopes+" trade:halt", "*"))
	get := func(path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+path, nil)
		resp, err := bearer(ann).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}

	// A token of ann's without the approve scope is refused, and spends
	// nothing of her budget (over MCP as over HTTP).
	reader := iss.Token(t, iss.Claims("ann", secResource, "portfolio:read", "*"))
	for range 3 {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/approvals", nil)
		resp, err := bearer(reader).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("GET /approvals without the scope: %d, want 403", resp.StatusCode)
		}
	}

	// One call over MCP and one over HTTP spend the burst of two.
	if _, body := secRPC(t, srv.URL, ann, "tools/call", secCallParams("list_pending_approvals", map[string]any{})); strings.Contains(body, "rate limit exceeded") {
		t.Fatalf("first call refused: %s", body)
	}
	if resp := get("/approvals"); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /approvals within the budget: %d", resp.StatusCode)
	}
	for _, path := range []string{"/approvals", "/approvals/APR-0", "/halts"} {
		resp := get(path)
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("GET %s beyond the approve budget: %d, want 429", path, resp.StatusCode)
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
			t.Errorf("GET %s: Retry-After %q, want whole seconds", path, resp.Header.Get("Retry-After"))
		}
	}
	if _, body := secRPC(t, srv.URL, ann, "tools/call", secCallParams("list_pending_approvals", map[string]any{})); !strings.Contains(body, "rate limit exceeded") {
		t.Errorf("MCP call after the HTTP API spent the budget: %s", body)
	}
	if code, body := postJSON(t, srv.URL+"/approvals/APR-0/decision", ann, approvals.Decision{Decision: "approve"}); code != http.StatusTooManyRequests {
		t.Errorf("decision beyond the budget: %d %v, want 429", code, body)
	}

	// An emergency does not wait for a budget.
	if code, body := postJSON(t, srv.URL+"/halts", ann, approvals.HaltRequest{Scope: "global", Reason: "runaway agent"}); code != http.StatusOK {
		t.Errorf("engaging a halt beyond the budget: %d %v", code, body)
	}
	if code, body := postJSON(t, srv.URL+"/halts/cancel-open", ann, approvals.HaltRequest{Scope: "global", Reason: "flatten"}); code != http.StatusOK {
		t.Errorf("cancel-all beyond the budget: %d %v", code, body)
	}

	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
	limited := 0
	for _, ev := range sink.byType(audit.EventType) {
		var e audit.Event
		if err := ev.DataAs(&e); err != nil {
			t.Fatal(err)
		}
		if e.Outcome == outcome.RateLimited && (strings.HasPrefix(e.Tool, "approvals.") || strings.HasPrefix(e.Tool, "halts.")) {
			if e.Principal != "ann" {
				t.Errorf("rate-limited %s recorded for %q, want ann", e.Tool, e.Principal)
			}
			limited++
		}
	}
	if limited != 4 {
		t.Errorf("%d rate-limited API requests recorded, want 4", limited)
	}
}
