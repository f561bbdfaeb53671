package app_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
)

// TestScopeChallengeKeepsGrantedScopesForOldClients: a 2025-11-25
// client holding portfolio:read calls place_order. The 403 challenge's
// scope is what a 2025-era client (TypeScript SDK 1.x) re-authorizes with
// verbatim, replacing its scope; the 2025-11-25 spec asks servers to
// include the previously granted scopes the client still needs, so the
// client does not lose them (only 2026-07-28 moved accumulation to
// clients).
func TestScopeChallengeKeepsGrantedScopesForOldClients(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	srv := startServer(t, tradingEnv(iss, ""))
	token := iss.Token(t, iss.Claims("alice", secResource, "portfolio:read", "ACC-1001"))
	args := map[string]any{"account_id": "ACC-1001", "ticker": "KO", "side": "buy", "quantity": 1, "idempotency_key": "scope-challenge-1"}
	resp, b := secRPC(t, srv.URL, token, "tools/call", secCallParams("place_order", args)) // 2025-11-25
	if resp.StatusCode != http.StatusForbidden || challenge(t, resp)["scope"] != "portfolio:read trade:write" {
		t.Errorf("HTTP %d, challenge %v %s; want 403 naming the granted portfolio:read with trade:write, or a 2025-era client re-authorizes with only trade:write and loses its read scope",
			resp.StatusCode, challenge(t, resp), b)
	}
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"place_order","arguments":{"account_id":"ACC-1001","ticker":"KO","side":"buy","quantity":1,"idempotency_key":"scope-challenge-1"}}}`
	// A 2026-07-28 client adds the one scope named to what it holds.
	resp, _ = postMCP(t, http.DefaultClient, srv.URL, strings.Replace(body, `"idempotency_key":"scope-challenge-1"}`,
		`"idempotency_key":"scope-challenge-1"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`, 1),
		map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
			"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "place_order", "Authorization": "Bearer " + token})
	if ch := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusForbidden || !strings.Contains(ch, `scope="trade:write"`) {
		t.Errorf("2026-07-28: HTTP %d, challenge %q, want the operation's scope alone", resp.StatusCode, ch)
	}
}

// TestScopeChallengeKeepsTheHaltScope: a 2025-era client re-authorizes with
// exactly the scope a challenge names; a token holding portfolio:read and
// trade:halt (which /halts on this server accepts), challenged for
// trade:approve, is asked for all three, so it keeps the kill switch.
func TestScopeChallengeKeepsTheHaltScope(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	srv := startServer(t, tradingEnv(iss, ""))
	token := iss.Token(t, iss.Claims("rita", secResource, "portfolio:read trade:halt", "*"))
	// The token operates the kill switch on this server.
	req, _ := http.NewRequest("GET", srv.URL+"/halts", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	if hr.StatusCode != http.StatusOK {
		t.Fatalf("GET /halts with the token: HTTP %d, want 200", hr.StatusCode)
	}
	resp, b := secRPC(t, srv.URL, token, "tools/call", secCallParams("list_pending_approvals", map[string]any{})) // 2025-11-25
	if resp.StatusCode != http.StatusForbidden || challenge(t, resp)["scope"] != "portfolio:read trade:halt trade:approve" {
		t.Errorf("HTTP %d, challenge %v %s; want 403 naming the granted portfolio:read and trade:halt with trade:approve, or a 2025-era client re-authorizes without trade:halt and can no longer use /halts",
			resp.StatusCode, challenge(t, resp), b)
	}
}

// TestChallengeDescriptionIsRFC6750: a challenge's error_description holds
// only what RFC 6750 section 3 allows (no '"' or '\'), for a tool as for a
// resource: a strict client rejects a challenge that breaks it, and then
// never steps up.
func TestChallengeDescriptionIsRFC6750(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	srv := startServer(t, tradingEnv(iss, ""))
	token := iss.Token(t, iss.Claims("alice", secResource, "portfolio:read", "ACC-1001"))
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"cancel_order","arguments":{"id":"ORD-1"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"place_order","arguments":{}}}`,
	} {
		resp, _ := postMCP(t, bearer(token), srv.URL, body, map[string]string{"Content-Type": "application/json",
			"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"})
		wa := resp.Header.Get("WWW-Authenticate")
		m := regexp.MustCompile(`error_description="((?:[^"\\]|\\.)*)"`).FindStringSubmatch(wa)
		if resp.StatusCode != http.StatusForbidden || m == nil {
			t.Fatalf("no step-up challenge: %d %q", resp.StatusCode, wa)
		}
		if strings.ContainsAny(m[1], "\"\\") || !strings.Contains(m[1], "requires the scope trade:write") {
			t.Errorf("error_description %q: want RFC 6750's characters only, naming the scope", m[1])
		}
	}
}
