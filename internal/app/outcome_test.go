package app_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestPendingApprovalIsTheOutcomeInMetrics: an order now waiting for an
// approver is counted as pending_approval, as its audit record says
// (docs/observability.md: one vocabulary for metrics and audit events).
func TestPendingApprovalIsTheOutcomeInMetrics(t *testing.T) {
	s := startServer(t, nil)
	_, out := postMCP(t, http.DefaultClient, s.URL, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"place_order","arguments":{"account_id":"ACC-2001","ticker":"KO","side":"buy","quantity":1000,"idempotency_key":"big-order-0001","confirm":true}}}`,
		map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"})
	if !strings.Contains(string(out), "pending_approval") {
		t.Fatalf("setup: not pending approval: %s", out)
	}
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "mcp_tool_calls_total") && strings.Contains(l, `tool="place_order"`) {
			lines = append(lines, l)
		}
	}
	if !strings.Contains(strings.Join(lines, "\n"), `outcome="pending_approval"`) {
		t.Errorf("an order now waiting for an approver is counted as:\n%s\nwant outcome=\"pending_approval\" (as its audit record says)", strings.Join(lines, "\n"))
	}
}
