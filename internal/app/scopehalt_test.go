package app_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
)

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
	t.Logf("GET /halts with the token: HTTP %d", hr.StatusCode)
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_pending_approvals","arguments":{}}}`
	resp, b := postMCP(t, http.DefaultClient, srv.URL, body, map[string]string{
		"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
		"MCP-Protocol-Version": "2025-11-25", "Authorization": "Bearer " + token})
	ch := resp.Header.Get("WWW-Authenticate")
	t.Logf("HTTP %d\nWWW-Authenticate: %s\n%s", resp.StatusCode, ch, b)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("HTTP %d, want the 403 scope challenge", resp.StatusCode)
	}
	if hr.StatusCode == http.StatusOK && !strings.Contains(ch, "trade:halt") {
		t.Errorf("the challenge drops the granted trade:halt: a 2025-era client re-authorizes without it and can no longer use /halts")
	}
}
