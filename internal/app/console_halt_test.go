package app_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/browsertest"
)

// TestConsoleKillSwitch is the kill switch as a risk officer and an
// approver meet it in the console: a halt engaged through the form stops
// the agent's next order and shows in a banner on every page, an approver
// cannot release an order under it and sees the order's provenance, and the
// halt is released on the record.
func TestConsoleKillSwitch(t *testing.T) {
	ctx := browsertest.New(t)
	setSecrets(t)
	iss := oauthtest.New(t)
	shared := newShared()
	_, base := consoleServer(t, iss, shared)
	agentToken := iss.Token(t, iss.Claims("alice", base+"/mcp", allScopes, "ACC-1001"))
	cs := connect(t, base+"/mcp", "2025-11-25", bearer(agentToken))
	waiting := placeForApproval(t, cs, "console-halt-1", 100)

	// Rita, a risk officer (trade:halt, every account), halts the account.
	iss.SignIn("rita", "portfolio:read trade:halt", "*")
	signIn(t, ctx, base, "/console/halts", "#engage")
	browsertest.Run(t, ctx, "engage",
		chromedp.SetValue(chromedp.CSS("#scope"), "account"),
		chromedp.SendKeys(chromedp.CSS("#target"), "ACC-1001"),
		chromedp.SendKeys(chromedp.CSS("#halt-reason"), "fat-finger storm on ACC-1001"),
		chromedp.Click(chromedp.CSS("#engage-button")),
		chromedp.WaitVisible(chromedp.CSS("#halt-banner")),
	)
	if got := text(t, ctx, "#halt-banner"); !strings.Contains(got, "account ACC-1001") || !strings.Contains(got, "fat-finger storm") {
		t.Errorf("banner %q", got)
	}
	if got := text(t, ctx, "#engaged tbody"); !strings.Contains(got, "rita") {
		t.Errorf("engaged halts %q", got)
	}
	writeScreenshot(t, ctx, "console-kill-switch.png")
	if msg := callToolError(t, cs, "place_order", confirmedArgs("ACC-1001", "console-halt-2", 3)); !strings.Contains(msg, "fat-finger storm") {
		t.Errorf("the agent's order under the halt: %q", msg)
	}
	signOut(t, ctx)

	// Bob, an approver, sees the banner and the order's provenance, and
	// cannot release it while the halt holds.
	iss.SignIn("bob", "portfolio:read trade:approve", "ACC-1001")
	signIn(t, ctx, base, "/console/approvals/"+waiting.ID, "#decide")
	if got := text(t, ctx, "#confirmation"); !strings.Contains(got, "confirm=true") {
		t.Errorf("provenance confirmation %q", got)
	}
	if got := text(t, ctx, "#policy-version"); !strings.HasPrefix(got, "rules-") {
		t.Errorf("provenance policy version %q", got)
	}
	browsertest.Run(t, ctx, "approve under the halt", chromedp.Click(chromedp.CSS("#approve")), chromedp.WaitVisible(chromedp.CSS("#result")))
	if got := text(t, ctx, "#result"); !strings.Contains(got, "halted") {
		t.Errorf("result %q", got)
	}
	if got := text(t, ctx, "#status"); got != "pending" {
		t.Errorf("status after a refused approval %q, want pending", got)
	}
	if shared.count() != 0 {
		t.Fatalf("%d orders reached the Trade service under the halt", shared.count())
	}
	signOut(t, ctx)

	// Rita releases it; the journal keeps both.
	iss.SignIn("rita", "portfolio:read trade:halt", "*")
	signIn(t, ctx, base, "/console/halts", "#engaged")
	browsertest.Run(t, ctx, "release",
		chromedp.SendKeys(chromedp.CSS(`#engaged input[name="reason"]`), "cleared with the desk"),
		chromedp.Click(chromedp.CSS(`#engaged button`)),
		chromedp.WaitVisible(chromedp.CSS("#result")),
		chromedp.WaitNotPresent(chromedp.CSS("#halt-banner")),
	)
	if got := text(t, ctx, "#journal tbody"); !strings.Contains(got, "released") || !strings.Contains(got, "engaged") || !strings.Contains(got, "cleared with the desk") {
		t.Errorf("journal %q", got)
	}
}
