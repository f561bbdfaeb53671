package app_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/internal/app"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/browsertest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/proctest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
)

// value runs one action that returns a value.
func value[T any](t *testing.T, ctx context.Context, step string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", step, err)
	}
	return v
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	return strings.TrimSpace(value(t, ctx, "read "+sel, chromedp.Text(chromedp.CSS(sel))))
}

// consoleServer is a server with real OIDC sign-in: the test issuer knows
// the console as a public client whose callback is this server's.
func consoleServer(t *testing.T, iss *oauthtest.Issuer, shared *sharedBackends) (*testServer, string) {
	t.Helper()
	port := proctest.FreePort(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	iss.RegisterClient("portfolio-console", base+"/console/callback")
	dir := t.TempDir()
	for name, v := range map[string]string{
		"request-state-key":  "test-request-state-key-0123456789abcdef",
		"approval-event-key": approveKey,
		"console-cookie-key": "test-console-cookie-key-0123456789abcdef",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := tradingEnv(iss, "")
	env["PORT"], env["PUBLIC_URL"], env["SECRETS_DIR"], env["CONSOLE_CLIENT_ID"] = strconv.Itoa(port), base+"/mcp", dir, "portfolio-console"
	env["APPROVAL_NOTIONAL"] = "1000"
	return startServer(t, env, app.WithBackends(shared.set)), base
}

// placeForApproval has alice's agent place an order big enough to need an
// approver and returns its approval.
func placeForApproval(t *testing.T, cs *mcp.ClientSession, key string, qty int) trading.Approval {
	t.Helper()
	var out trading.Outcome
	callTool(t, cs, "place_order", confirmedArgs("ACC-1001", key, qty), &out)
	if out.Status != trading.StatusPendingApproval || out.Approval == nil {
		t.Fatalf("place_order: %+v, want pending_approval", out)
	}
	return *out.Approval
}

// signIn signs the browser in at the issuer as whoever the issuer has
// signed in, starting from a console page.
func signIn(t *testing.T, ctx context.Context, base, page, waitFor string) {
	t.Helper()
	browsertest.Run(t, ctx, "sign in",
		chromedp.Navigate(base+page),
		chromedp.WaitVisible(chromedp.CSS("#signin")),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS(waitFor)),
	)
}

func signOut(t *testing.T, ctx context.Context) {
	t.Helper()
	browsertest.Run(t, ctx, "sign out",
		chromedp.Click(chromedp.CSS(".signout button")),
		chromedp.WaitVisible(chromedp.CSS("#signin, ul.personas, #need-key")),
	)
}

// TestConsoleInABrowser is the approval gate as an approver meets it: OIDC
// sign-in (PKCE) at a real issuer, the live queue, an order's whole
// context, approval executing the order exactly once, four eyes, a
// person without trade:approve, CSRF and forged cookies, and what an agent
// or a person typed shown as text.
func TestConsoleInABrowser(t *testing.T) {
	ctx := browsertest.New(t)
	setSecrets(t)
	iss := oauthtest.New(t)
	shared := newShared()
	srv, base := consoleServer(t, iss, shared)
	_ = srv
	agentToken := iss.Token(t, iss.Claims("alice", base+"/mcp", allScopes, "ACC-1001"))
	cs := connect(t, base+"/mcp", "2025-11-25", bearer(agentToken))

	first := placeForApproval(t, cs, "console-first", 100)

	// Bob, an approver of ACC-1001, signs in and sees the queue.
	iss.SignIn("bob", "portfolio:read trade:approve", "ACC-1001")
	row := fmt.Sprintf(`tr[data-id="%s"]`, first.ID)
	signIn(t, ctx, base, "/console/queue", row)
	if who := text(t, ctx, "#who"); who != "bob" {
		t.Errorf("signed in as %q, want bob", who)
	}

	// The queue updates live: an order placed now appears without a reload.
	// It comes from an agent whose client id (which the issuer's token
	// carries as given) is markup.
	xssAgent := `<img src=x id=xss-agent onerror="document.title='pwned'">`
	claims := iss.Claims("alice", base+"/mcp", allScopes, "ACC-1001")
	claims["client_id"] = xssAgent
	cs2 := connect(t, base+"/mcp", "2025-11-25", bearer(iss.Token(t, claims)))
	second := placeForApproval(t, cs2, "console-second", 120)
	browsertest.Run(t, ctx, "live update", chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-id="%s"]`, second.ID))))
	writeScreenshot(t, ctx, "approvals-queue.png")

	// The order in full: what the agent sent, the check as of now.
	browsertest.Run(t, ctx, "open", chromedp.Click(chromedp.CSS(row+" a")), chromedp.WaitVisible(chromedp.CSS("#decide")))
	for sel, want := range map[string]string{"#requester": "alice", "#agent": "test-agent", "#account": "ACC-1001", "#digest": first.ArgsDigest} {
		if got := text(t, ctx, sel); got != want {
			t.Errorf("%s = %q, want %q", sel, got, want)
		}
	}
	if got := text(t, ctx, "#check"); !strings.Contains(got, "No rule blocks") {
		t.Errorf("pre-trade check shows %q", got)
	}
	if args := text(t, ctx, "#args"); !strings.Contains(args, `"idempotency_key": "console-first"`) {
		t.Errorf("args shown: %s", args)
	}
	writeScreenshot(t, ctx, "approvals-detail.png")

	// Approve with a double click: one decision, one order.
	browsertest.Run(t, ctx, "approve",
		chromedp.Evaluate[chromedp.Void](`document.getElementById('approve').click(); document.getElementById('approve').click();`),
		chromedp.WaitVisible(chromedp.CSS("#result")),
	)
	if got := text(t, ctx, "#order-state"); got != "filled" {
		t.Errorf("order state after approval %q, want filled", got)
	}
	if n := shared.count(); n != 1 {
		t.Fatalf("the Trade service has %d orders after one approval, want 1", n)
	}

	// The second order shows the agent's markup as text, and nothing ran.
	browsertest.Run(t, ctx, "open second", chromedp.Navigate(base+"/console/approvals/"+second.ID), chromedp.WaitVisible(chromedp.CSS("#args")))
	if got := text(t, ctx, "#agent"); got != xssAgent {
		t.Errorf("agent shown as %q, want the text %q", got, xssAgent)
	}
	injected := value(t, ctx, "no injection", chromedp.Evaluate[bool](`document.getElementById('xss-agent') !== null`))
	title := value(t, ctx, "title", chromedp.Title())
	if injected || title == "pwned" {
		t.Fatalf("agent-supplied markup was rendered (element %v, title %q)", injected, title)
	}

	// CSRF: a post without the form's token is refused, from the page
	// itself; so is one with a forged session cookie.
	status := value(t, ctx, "post without token", chromedp.Evaluate[int](fmt.Sprintf(
		`fetch('/console/approvals/%s/decision', {method: 'POST', body: new URLSearchParams({decision: 'approve'})}).then(r => r.status)`, second.ID),
		chromedp.EvalAwaitPromise))
	if status != http.StatusForbidden {
		t.Errorf("decision without CSRF token: HTTP %d, want 403", status)
	}
	checkForgedCookies(t, ctx, base, second.ID)
	// A decision names the order the approver was shown: another digest
	// changes nothing.
	landed := value(t, ctx, "stale decision", chromedp.Evaluate[string](fmt.Sprintf(
		`fetch('/console/approvals/%s/decision', {method: 'POST', body: new URLSearchParams({decision: 'approve',
			args_digest: 'not-this-order', requester: 'alice', csrf: document.querySelector('input[name=csrf]').value})}).then(r => r.url)`,
		second.ID), chromedp.EvalAwaitPromise))
	if !strings.HasSuffix(landed, "result=mismatch") || shared.count() != 1 {
		t.Errorf("a decision for another digest landed on %q with %d orders", landed, shared.count())
	}

	// Reject with a reason that is markup: shown as text in the history.
	reason := `<script>document.title='pwned'</script><b id=xss-reason>bold</b>`
	browsertest.Run(t, ctx, "reject",
		chromedp.Navigate(base+"/console/approvals/"+second.ID),
		chromedp.WaitVisible(chromedp.CSS("#decide")),
		chromedp.SendKeys(chromedp.CSS("#reason-input"), reason),
		chromedp.Click(chromedp.CSS("#reject")),
		chromedp.WaitVisible(chromedp.CSS("#result")),
	)
	if got := text(t, ctx, "#reason"); got != reason {
		t.Errorf("reason shown as %q, want the text %q", got, reason)
	}
	browsertest.Run(t, ctx, "history", chromedp.Navigate(base+"/console/history"), chromedp.WaitVisible(chromedp.CSS("#csv")))
	injected = value(t, ctx, "no injection", chromedp.Evaluate[bool](`document.getElementById('xss-reason') !== null`))
	title = value(t, ctx, "title", chromedp.Title())
	if body := text(t, ctx, "main"); injected || title == "pwned" || !strings.Contains(body, reason) || !strings.Contains(body, "filled") {
		t.Errorf("history: injected %v, title %q, body:\n%s", injected, title, body)
	}
	if n := shared.count(); n != 1 {
		t.Fatalf("the Trade service has %d orders after a rejection, want 1", n)
	}

	// Four eyes: alice, the requester, sees her order but cannot decide it.
	third := placeForApproval(t, cs, "console-third", 110)
	signOut(t, ctx)
	iss.SignIn("alice", "portfolio:read trade:write trade:approve", "ACC-1001")
	signIn(t, ctx, base, "/console/approvals/"+third.ID, "#foureyes")
	buttons := value(t, ctx, "no decision form", chromedp.Evaluate[int](`document.querySelectorAll('#decide').length`))
	if buttons != 0 {
		t.Error("the requester is offered a decision form")
	}
	// Nor by posting the decision herself, with a valid token and the
	// order's own digest.
	landed = value(t, ctx, "self-approval", chromedp.Evaluate[string](fmt.Sprintf(
		`fetch('/console/approvals/%s/decision', {method: 'POST', body: new URLSearchParams({decision: 'approve',
			args_digest: '%s', requester: 'alice', csrf: document.querySelector('input[name=csrf]').value})}).then(r => r.url)`,
		third.ID, third.ArgsDigest), chromedp.EvalAwaitPromise))
	if !strings.HasSuffix(landed, "result=foureyes") {
		t.Errorf("the requester's own decision landed on %q, want the four-eyes refusal", landed)
	}

	// Carol holds no trade:approve: the console refuses her.
	signOut(t, ctx)
	iss.SignIn("carol", "portfolio:read", "ACC-1001")
	signIn(t, ctx, base, "/console/queue", "#message")
	if got := text(t, ctx, "h1"); got != "Not an approver" {
		t.Errorf("carol sees %q", got)
	}
	if n := shared.count(); n != 1 {
		t.Fatalf("the Trade service has %d orders, want 1", n)
	}
}

// checkForgedCookies: the session cookie the browser holds opens the
// console; an edited one, or one sealed under another key, does not; and
// a cross-origin post is refused even with the right cookie and token.
func checkForgedCookies(t *testing.T, ctx context.Context, base, id string) {
	t.Helper()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/console/"}})
	if err != nil {
		t.Fatal(err)
	}
	var session string
	for _, c := range res.Cookies {
		if c.Name == "__Host-portfolio-console" {
			session = c.Value
			if !c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteStrict {
				t.Errorf("session cookie attributes: httpOnly %v secure %v sameSite %v", c.HTTPOnly, c.Secure, c.SameSite)
			}
		}
	}
	if session == "" {
		t.Fatal("no session cookie in the browser")
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(cookie string) int {
		req, _ := http.NewRequest(http.MethodGet, base+"/console/queue", nil)
		req.AddCookie(&http.Cookie{Name: "__Host-portfolio-console", Value: cookie})
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(session); got != http.StatusOK {
		t.Fatalf("the browser's own cookie: HTTP %d", got)
	}
	edited := []byte(session)
	edited[len(edited)/2] ^= 1
	for name, c := range map[string]string{"edited": string(edited), "truncated": session[:len(session)-4], "garbage": "eyJzdWIiOiJtYWxsb3J5In0"} {
		if got := get(c); got != http.StatusSeeOther {
			t.Errorf("%s cookie: HTTP %d, want a redirect to sign in", name, got)
		}
	}
	// Cross-site: the right cookie, a token taken from the page, another
	// Origin.
	browsertest.Run(t, ctx, "token", chromedp.Navigate(base+"/console/queue"), chromedp.WaitVisible(chromedp.CSS(".signout")))
	token := value(t, ctx, "token", chromedp.Evaluate[string](`document.querySelector('input[name=csrf]').value`))
	form := url.Values{"csrf": {token}, "decision": {"approve"}}
	req, _ := http.NewRequest(http.MethodPost, base+"/console/approvals/"+id+"/decision", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.AddCookie(&http.Cookie{Name: "__Host-portfolio-console", Value: session})
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin decision: HTTP %d, want 403", resp.StatusCode)
	}
}

// writeScreenshot saves the page to docs/ when PORTFOLIO_MCP_SCREENSHOTS is
// set (the docs' pictures are taken by this test).
func writeScreenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("PORTFOLIO_MCP_SCREENSHOTS") == "" {
		return
	}
	png := value(t, ctx, "screenshot", chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join("..", "..", "docs", name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConsoleLaptopPersonas is the README's laptop demo: a server with no
// issuer, an MCP client acting as the local developer places a large
// order, the console's Approver persona approves it; the Trader persona
// (the requester) cannot.
func TestConsoleLaptopPersonas(t *testing.T) {
	ctx := browsertest.New(t)
	shared := newShared()
	const key = "laptop-persona-key-0123456789"
	srv := startServer(t, map[string]string{"ENFORCE_MARKET_HOURS": "false", "APPROVAL_NOTIONAL": "1000", "CONSOLE_PERSONA_KEY": key},
		app.WithBackends(shared.set))
	cs := connect(t, srv.URL+"/mcp", "2025-11-25", nil)
	a := placeForApproval(t, cs, "laptop-demo-1", 100)
	detail := "/console/approvals/" + a.ID

	// Without the printed link's key the personas are not offered, and a
	// sign-in posted without it (an agent with an HTTP tool) is refused.
	browsertest.Run(t, ctx, "no key", chromedp.Navigate(srv.URL+detail), chromedp.WaitVisible(chromedp.CSS("#need-key")))
	resp, err := http.PostForm(srv.URL+"/console/login/persona", url.Values{"persona": {"approver"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Fatalf("persona sign-in without the key: HTTP %d, cookies %v", resp.StatusCode, resp.Cookies())
	}

	signin := srv.URL + "/console/signin?key=" + key + "&next=" + detail
	browsertest.Run(t, ctx, "trader", chromedp.Navigate(signin), chromedp.WaitVisible(chromedp.CSS("#persona-trader")),
		chromedp.Click(chromedp.CSS("#persona-trader")), chromedp.WaitVisible(chromedp.CSS("#foureyes")))
	signOut(t, ctx)
	browsertest.Run(t, ctx, "approver", chromedp.Navigate(signin), chromedp.WaitVisible(chromedp.CSS("#persona-approver")),
		chromedp.Click(chromedp.CSS("#persona-approver")), chromedp.WaitVisible(chromedp.CSS("#approve")),
		chromedp.Click(chromedp.CSS("#approve")), chromedp.WaitVisible(chromedp.CSS("#order-state")))
	if got := text(t, ctx, "#decided-by"); !strings.HasPrefix(got, "local-approver") {
		t.Errorf("decided by %q", got)
	}
	if n := shared.count(); n != 1 {
		t.Fatalf("the Trade service has %d orders, want 1", n)
	}
}
