package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/approvals"
)

// haltCall posts to the kill switch API as token.
func haltCall(t *testing.T, base, token, path string, req approvals.HaltRequest) (int, map[string]any) {
	t.Helper()
	return postJSON(t, base+path, token, req)
}

// TestKillSwitchAcrossReplicas: two server processes on one Redis. A halt
// engaged through one replica refuses the very next order on the other
// (nothing caches the switch, so "within a second" is "at once"), at the
// account, principal and agent scopes; approvals are not released while it
// holds; reads and cancels keep working; cancel-all empties the scope; and
// with Redis gone, engaged or not, no order reaches the Trade service while
// cancels still do.
func TestKillSwitchAcrossReplicas(t *testing.T) {
	r := startReplicas(t, nil)
	iss, rds, shared, a, b := r.iss, r.redis, r.shared, r.a, r.b
	aud := "http://127.0.0.1/mcp"
	aliceClaims := iss.Claims("alice", aud, "portfolio:read trade:write", "ACC-2001")
	aliceClaims["azp"], aliceClaims["act"] = "agent-frontend", map[string]any{"sub": "agent-runtime"}
	alice := iss.Token(t, aliceClaims)
	otherAgent := iss.Claims("alice", aud, "portfolio:read trade:write", "ACC-2001")
	otherAgent["client_id"] = "other-agent"
	aliceElsewhere := iss.Token(t, otherAgent)
	bob := iss.Token(t, iss.Claims("bob", aud, "portfolio:read trade:approve", "ACC-2001"))
	rita := iss.Token(t, iss.Claims("rita", aud, "portfolio:read trade:halt", "*"))
	accountOnly := iss.Token(t, iss.Claims("ron", aud, "portfolio:read trade:halt", "ACC-2001"))

	onA := connect(t, a+"/mcp", "2025-11-25", bearer(alice))
	onB := connect(t, b+"/mcp", "2026-07-28", bearer(alice))
	elsewhere := connect(t, a+"/mcp", "2025-11-25", bearer(aliceElsewhere))

	// Before any halt: a resting order (a buy limit below the market) and
	// an order waiting for an approver.
	resting := confirmedArgs("ACC-2001", "halt-resting-1", 5)
	resting["order_type"], resting["limit_price"] = "limit", 1
	var rest trading.Outcome
	callTool(t, onA, "place_order", resting, &rest)
	if rest.Order == nil || rest.Order.Status != backends.StatusAccepted {
		t.Fatalf("resting order: %+v", rest)
	}
	if p := rest.Provenance; p == nil || p.Subject != "alice" || p.Agent != "test-agent" || p.AuthorizedParty != "agent-frontend" ||
		p.Actor != "agent-runtime" || p.Confirmation != trading.ConfirmedByArgument || !strings.HasPrefix(p.PolicyVersion, "rules-") || p.PreviewDigest == "" {
		t.Fatalf("provenance of the resting order: %+v", rest.Provenance)
	}
	var pending trading.Outcome
	callTool(t, onA, "place_order", confirmedArgs("ACC-2001", "halt-big-1", 1000), &pending)
	if pending.Approval == nil {
		t.Fatalf("large order: %+v", pending)
	}

	// Who may operate the switch.
	if code, _ := haltCall(t, b, bob, "/halts", approvals.HaltRequest{Scope: "global", Reason: "x"}); code != http.StatusForbidden {
		t.Errorf("engage without trade:halt: %d", code)
	}
	if code, _ := haltCall(t, b, accountOnly, "/halts", approvals.HaltRequest{Scope: "global", Reason: "x"}); code != http.StatusForbidden {
		t.Errorf("global halt by an officer of one account: %d", code)
	}
	if code, _ := haltCall(t, b, rita, "/halts", approvals.HaltRequest{Scope: "account", Target: "ACC-2001"}); code != http.StatusBadRequest {
		t.Errorf("halt without a reason: %d", code)
	}

	// Engaged on B; the next order on A is refused, naming scope and reason.
	if code, body := haltCall(t, b, accountOnly, "/halts", approvals.HaltRequest{Scope: "account", Target: "ACC-2001", Reason: "runaway agent on ACC-2001"}); code != http.StatusOK {
		t.Fatalf("engage: %d %v", code, body)
	}
	before := shared.count()
	msg := callToolError(t, onA, "place_order", confirmedArgs("ACC-2001", "halt-after-1", 3))
	if !strings.Contains(msg, "halted") || !strings.Contains(msg, "account ACC-2001") || !strings.Contains(msg, "runaway agent on ACC-2001") {
		t.Fatalf("order under an account halt: %q", msg)
	}
	var pre map[string]any
	callTool(t, onA, "preview_order", map[string]any{"account_id": "ACC-2001", "ticker": "KO", "side": "buy", "quantity": 3}, &pre)
	if pre["allowed"] != false || !strings.Contains(toJSON(pre["violations"]), "runaway agent") {
		t.Errorf("preview under a halt: %v", pre)
	}
	if code, body := decide(t, a, bob, pending.Approval.ID, "approve"); code != http.StatusConflict || !strings.Contains(toJSON(body), "halted") {
		t.Errorf("approval released under a halt: %d %v", code, body)
	}
	var st trading.Outcome
	callTool(t, onB, "get_order_status", map[string]any{"id": pending.Approval.ID}, &st)
	if st.Status != trading.StatusPendingApproval {
		t.Errorf("the approval after a refused release: %+v", st)
	}
	// Reads and cancels go on.
	callTool(t, onB, "get_order_status", map[string]any{"id": rest.Order.OrderID}, &st)
	if st.Provenance == nil || st.Provenance.Actor != "agent-runtime" {
		t.Errorf("status of the resting order lacks its provenance: %+v", st)
	}
	var cancelled trading.Outcome
	callTool(t, onB, "cancel_order", map[string]any{"id": rest.Order.OrderID}, &cancelled)
	if cancelled.Status != backends.StatusCancelled {
		t.Errorf("cancel under a halt: %+v", cancelled)
	}
	if shared.count() != before {
		t.Fatalf("an order reached the Trade service under the halt: %d, want %d", shared.count(), before)
	}

	// Cancel-all of the scope withdraws the waiting approval.
	code, body := haltCall(t, a, accountOnly, "/halts/cancel-open", approvals.HaltRequest{Scope: "account", Target: "ACC-2001", Reason: "flatten"})
	if code != http.StatusOK || !strings.Contains(toJSON(body["withdrawn_approvals"]), pending.Approval.ID) {
		t.Fatalf("cancel-open: %d %v", code, body)
	}
	callTool(t, onA, "get_order_status", map[string]any{"id": pending.Approval.ID}, &st)
	if st.Status != trading.StatusCancelled {
		t.Errorf("the approval after cancel-all: %+v", st)
	}

	// Released on A: B trades again.
	if code, body := haltCall(t, a, rita, "/halts/release", approvals.HaltRequest{Scope: "account", Target: "ACC-2001", Reason: "agent fixed"}); code != http.StatusOK {
		t.Fatalf("release: %d %v", code, body)
	}
	var ok trading.Outcome
	callTool(t, onB, "place_order", confirmedArgs("ACC-2001", "halt-after-release", 4), &ok)
	if ok.Order == nil {
		t.Fatalf("order after the release: %+v", ok)
	}

	// The agent scope stops one OAuth client only; the principal scope
	// every client of that person.
	haltCall(t, b, rita, "/halts", approvals.HaltRequest{Scope: "agent", Target: "test-agent", Reason: "agent loops"})
	if msg := callToolError(t, onA, "place_order", confirmedArgs("ACC-2001", "halt-agent-1", 6)); !strings.Contains(msg, "agent test-agent") {
		t.Errorf("agent halt: %q", msg)
	}
	callTool(t, elsewhere, "place_order", confirmedArgs("ACC-2001", "halt-agent-2", 7), &ok)
	if ok.Order == nil {
		t.Errorf("another agent under an agent halt: %+v", ok)
	}
	haltCall(t, b, rita, "/halts", approvals.HaltRequest{Scope: "principal", Target: "alice", Reason: "person on leave"})
	if msg := callToolError(t, elsewhere, "place_order", confirmedArgs("ACC-2001", "halt-principal-1", 8)); !strings.Contains(msg, "principal alice") {
		t.Errorf("principal halt: %q", msg)
	}
	haltCall(t, a, rita, "/halts/release", approvals.HaltRequest{Scope: "agent", Target: "test-agent", Reason: "done"})
	haltCall(t, a, rita, "/halts/release", approvals.HaltRequest{Scope: "principal", Target: "alice", Reason: "back"})

	// The journal of the switch.
	get, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, b+"/halts", nil)
	resp, err := bearer(rita).Do(get)
	if err != nil {
		t.Fatal(err)
	}
	var state struct {
		Halts   []map[string]any `json:"halts"`
		History []map[string]any `json:"history"`
	}
	json.NewDecoder(resp.Body).Decode(&state)
	resp.Body.Close()
	if len(state.Halts) != 0 || len(state.History) != 6 || state.History[0]["action"] != "released" || state.History[5]["reason"] != "runaway agent on ACC-2001" {
		t.Errorf("switch state and journal: %+v", state)
	}

	// Redis gone (with a halt engaged elsewhere): no order goes out on
	// either replica, whichever read fails first (the idempotency record's,
	// before the switch's: TestHaltFailsSafe in internal/trading fails only
	// the switch), but a working order can still be cancelled.
	haltCall(t, a, rita, "/halts", approvals.HaltRequest{Scope: "account", Target: "ACC-9999", Reason: "unrelated"})
	var working trading.Outcome
	resting["idempotency_key"], resting["quantity"] = "halt-resting-2", 12
	callTool(t, onA, "place_order", resting, &working)
	if working.Order == nil {
		t.Fatalf("second resting order: %+v", working)
	}
	rds.Stop()
	before = shared.count()
	for _, cs := range []*mcp.ClientSession{onA, onB} {
		callToolError(t, cs, "place_order", confirmedArgs("ACC-2001", "halt-redis-down", 9))
	}
	callTool(t, onA, "cancel_order", map[string]any{"id": working.Order.OrderID}, &cancelled)
	if cancelled.Status != backends.StatusCancelled {
		t.Errorf("cancel with Redis down: %+v", cancelled)
	}
	if shared.count() != before {
		t.Fatalf("an order reached the Trade service with the switch unreadable")
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
