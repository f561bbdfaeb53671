package app_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/golang-jwt/jwt/v5"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"github.com/sethvargo/go-envconfig"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/config"
	"github.com/portfolio-mcp/portfolio-mcp/internal/app"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/ratelimit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/redistest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
)

// The resource every test server is (tradingEnv's PUBLIC_URL) and where its
// metadata lives.
const (
	secResource = "http://127.0.0.1/mcp"
	secMetadata = "http://127.0.0.1/.well-known/oauth-protected-resource/mcp"
)

// secPortfolio counts calls that reach the Portfolio backend, so a test can
// show that a refused request executed nothing.
type secPortfolio struct {
	backends.Portfolio
	calls *atomic.Int64
}

func (p secPortfolio) GetPortfolio(ctx context.Context, id string) (backends.PortfolioValuation, error) {
	p.calls.Add(1)
	return p.Portfolio.GetPortfolio(ctx, id)
}

func (p secPortfolio) ListAccounts(ctx context.Context) ([]backends.Account, error) {
	p.calls.Add(1)
	return p.Portfolio.ListAccounts(ctx)
}

// secBackends is the demo market with counted portfolio reads and orders.
func secBackends() (*sharedBackends, *atomic.Int64) {
	sh := newShared()
	var n atomic.Int64
	sh.set.Portfolio = secPortfolio{sh.set.Portfolio, &n}
	return sh, &n
}

// secRPC posts one JSON-RPC request to /mcp with token (if any) and
// returns the response and its body.
func secRPC(t *testing.T, base, token, method string, params any) (*http.Response, string) {
	t.Helper()
	return secRPCTyped(t, base, token, "application/json", method, params)
}

// secRPCTyped is secRPC with the Content-Type given.
func secRPCTyped(t *testing.T, base, token, contentType, method string, params any) (*http.Response, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/mcp", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func secCallParams(tool string, args map[string]any) map[string]any {
	return map[string]any{"name": tool, "arguments": args}
}

// challenge parses the Bearer challenge of resp.
func challenge(t *testing.T, resp *http.Response) map[string]string {
	t.Helper()
	cs, err := oauthex.ParseWWWAuthenticate(resp.Header.Values("WWW-Authenticate"))
	if err != nil || len(cs) != 1 || cs[0].Scheme != "bearer" {
		t.Fatalf("WWW-Authenticate %q: %v", resp.Header.Values("WWW-Authenticate"), err)
	}
	return cs[0].Params
}

// TestSecurityFrontDoor: every bad token is refused with 401 and a pointer
// to the resource metadata, a missing scope with a 403 step-up challenge,
// and none of them runs anything.
func TestSecurityFrontDoor(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	sh, reads := secBackends()
	srv := startServer(t, tradingEnv(iss, ""), app.WithBackends(sh.set))

	valid := func() jwt.MapClaims { return iss.Claims("alice", secResource, allScopes, "*") }
	with := func(k string, v any) jwt.MapClaims {
		c := valid()
		c[k] = v
		return c
	}
	rsa := iss.Published("RS256")
	impostor := iss.NewKey(t, "RS256")
	impostor.ID = rsa.ID
	hmacPub := jwt.NewWithClaims(jwt.SigningMethodHS256, valid())
	hmacPub.Header["kid"] = rsa.ID
	hmacToken, _ := hmacPub.SignedString(rsa.PublicPEM())
	none := jwt.NewWithClaims(jwt.SigningMethodNone, valid())
	noneToken, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	hour := time.Hour

	bad := []struct{ name, token string }{
		{"no token", ""},
		{"malformed", "not-a-jwt"},
		{"expired", oauthtest.Sign(t, rsa, with("exp", time.Now().Add(-hour).Unix()))},
		{"not yet valid", oauthtest.Sign(t, rsa, with("nbf", time.Now().Add(hour).Unix()))},
		{"wrong issuer", oauthtest.Sign(t, rsa, with("iss", "https://evil.example.com"))},
		{"wrong audience", oauthtest.Sign(t, rsa, with("aud", "https://other.example.com/mcp"))},
		{"bad signature", oauthtest.Sign(t, impostor, valid())},
		{"alg none", noneToken},
		{"HMAC signed with the public key", hmacToken},
		{"unknown kid", oauthtest.Sign(t, iss.NewKey(t, "ES256"), valid())},
	}
	calls := []struct {
		method string
		params any
	}{
		{"tools/call", secCallParams("get_portfolio", map[string]any{"account_id": "ACC-1001"})},
		{"tools/call", secCallParams("place_order", map[string]any{"account_id": "ACC-1001", "ticker": "KO", "side": "buy", "quantity": 1, "idempotency_key": "front-door-1", "confirm": true})},
		{"tools/list", map[string]any{}},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			for _, c := range calls {
				resp, body := secRPC(t, srv.URL, b.token, c.method, c.params)
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("%s: status %d, want 401: %s", c.method, resp.StatusCode, body)
				}
				if got := challenge(t, resp)["resource_metadata"]; got != secMetadata {
					t.Errorf("resource_metadata = %q, want %q", got, secMetadata)
				}
			}
		})
	}

	t.Run("missing scope: 403 step-up challenge", func(t *testing.T) {
		reader := iss.Token(t, iss.Claims("alice", secResource, readScopes, "*"))
		resp, body := secRPC(t, srv.URL, reader, calls[1].method, calls[1].params)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d, want 403: %s", resp.StatusCode, body)
		}
		// On 2025-11-25 the challenge names the scopes already granted too
		// (TestScopeChallengeKeepsGrantedScopesForOldClients).
		ch := challenge(t, resp)
		if ch["error"] != "insufficient_scope" || ch["scope"] != "portfolio:read trade:write" || ch["resource_metadata"] != secMetadata {
			t.Errorf("challenge = %v", ch)
		}
		var rpc struct {
			ID    int           `json:"id"`
			Error jsonrpc.Error `json:"error"`
		}
		if err := json.Unmarshal([]byte(body), &rpc); err != nil || rpc.ID != 7 || !strings.Contains(rpc.Error.Message, "trade:write") {
			t.Errorf("403 body %s is not a JSON-RPC error naming the scope", body)
		}

		// Reading needs portfolio:read, even for a trader.
		trader := iss.Token(t, iss.Claims("tom", secResource, "trade:write", "*"))
		resp, _ = secRPC(t, srv.URL, trader, "resources/read", map[string]any{"uri": "portfolio://accounts/ACC-1001"})
		if ch := challenge(t, resp); resp.StatusCode != http.StatusForbidden || ch["scope"] != "trade:write portfolio:read" {
			t.Errorf("resources/read without portfolio:read: %d %v", resp.StatusCode, ch)
		}

		// The go-sdk client sees the refusal; tools/list shows the reader
		// only what it may call.
		cs := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(reader))
		if _, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "place_order", Arguments: calls[1].params.(map[string]any)["arguments"]}); err == nil {
			t.Error("place_order with a read-only token succeeded")
		}
		tools, err := cs.ListTools(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tool := range tools.Tools {
			names = append(names, tool.Name)
		}
		slices.Sort(names)
		want := []string{"get_order_status", "get_portfolio", "get_quotes", "get_risk_summary", "list_accounts", "list_orders", "preview_order", "search_equities"}
		if !slices.Equal(names, want) {
			t.Errorf("read-only tools/list = %v, want %v", names, want)
		}
		all := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(iss.Token(t, iss.Claims("bob", secResource, allScopes, "*"))))
		tools, err = all.ListTools(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(tools.Tools) <= len(want) {
			t.Errorf("a principal with every scope sees %d tools", len(tools.Tools))
		}
	})

	if n := reads.Load(); n != 0 {
		t.Errorf("refused requests reached the portfolio backend %d times", n)
	}
	if n := sh.count(); n != 0 {
		t.Errorf("refused requests placed %d orders", n)
	}
}

// TestEntitlementsDoNotRevealAccounts: an account the principal is not
// entitled to looks exactly like one that does not exist, for every tool
// that takes an account and for the portfolio resource; and it is never
// read or traded.
func TestEntitlementsDoNotRevealAccounts(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	sh, reads := secBackends()
	srv := startServer(t, tradingEnv(iss, ""), app.WithBackends(sh.set))
	// ACC-9999 is entitled but does not exist; ACC-1002 exists but is not
	// entitled. The two must be indistinguishable.
	alice := iss.Token(t, iss.Claims("alice", secResource, allScopes, "ACC-1001", "ACC-9999"))
	cs := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(alice))

	var accts struct{ Accounts []backends.Account }
	callTool(t, cs, "list_accounts", nil, &accts)
	if len(accts.Accounts) != 1 || accts.Accounts[0].ID != "ACC-1001" {
		t.Fatalf("list_accounts = %+v, want only ACC-1001", accts.Accounts)
	}

	order := func(id string) map[string]any {
		a := placeArgs(id, "ent-"+id, 1)
		a["confirm"] = true
		return a
	}
	answer := func(tool string, args map[string]any, id string) string {
		res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: tool, Arguments: args})
		if err != nil {
			return "protocol error: " + strings.ReplaceAll(err.Error(), id, "<id>")
		}
		b, _ := json.Marshal(res)
		return strings.ReplaceAll(string(b), id, "<id>")
	}
	for _, c := range []struct {
		tool string
		args func(id string) map[string]any
	}{
		{"get_portfolio", func(id string) map[string]any { return map[string]any{"account_id": id} }},
		{"get_risk_summary", func(id string) map[string]any { return map[string]any{"account_id": id} }},
		{"preview_order", func(id string) map[string]any {
			return map[string]any{"account_id": id, "ticker": "KO", "side": "buy", "quantity": 1}
		}},
		{"place_order", order},
	} {
		before := reads.Load()
		forbidden := answer(c.tool, c.args("ACC-1002"), "ACC-1002")
		if reads.Load() != before {
			t.Errorf("%s on a non-entitled account reached the backend", c.tool)
		}
		missing := answer(c.tool, c.args("ACC-9999"), "ACC-9999")
		if forbidden != missing {
			t.Errorf("%s tells the accounts apart:\n not entitled: %s\n absent:       %s", c.tool, forbidden, missing)
		}
		if !strings.Contains(forbidden, `"isError":true`) || !strings.Contains(forbidden, "not found or is not accessible") {
			t.Errorf("%s on a non-entitled account: %s", c.tool, forbidden)
		}
	}

	read := func(id string) string {
		_, err := cs.ReadResource(t.Context(), &mcp.ReadResourceParams{URI: "portfolio://accounts/" + id})
		if err == nil {
			return "read succeeded"
		}
		return strings.ReplaceAll(err.Error(), id, "<id>")
	}
	if forbidden, missing := read("ACC-1002"), read("ACC-9999"); forbidden != missing || !strings.Contains(forbidden, "not found") {
		t.Errorf("the portfolio resource tells the accounts apart: %q vs %q", forbidden, missing)
	}
	// A duplicated key must not smuggle a second account past the check.
	if res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "get_portfolio",
		Arguments: json.RawMessage(`{"account_id":"ACC-1001","account_id":"ACC-1002"}`)}); err == nil && !res.IsError {
		t.Error("arguments with a duplicated account_id were accepted")
	}
	if n := sh.count(); n != 0 {
		t.Errorf("%d orders were placed on accounts alice may not trade", n)
	}
}

// TestProtectedResourceMetadataIsFromConfig: the metadata names the
// configured public URL whatever Host the request carries.
func TestProtectedResourceMetadataIsFromConfig(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	// An accepted Host that differs from PUBLIC_URL (a cluster-local name),
	// plus a forwarded header an attacker controls: neither may leak in.
	env := tradingEnv(iss, "")
	env["ALLOWED_HOSTS"] = "portfolio-mcp.portfolio-mcp.svc.cluster.local"
	srv := startServer(t, env)
	for _, path := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
		req.Host = "portfolio-mcp.portfolio-mcp.svc.cluster.local"
		req.Header.Set("X-Forwarded-Host", "attacker.example.com")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var md oauthex.ProtectedResourceMetadata
		err = json.NewDecoder(resp.Body).Decode(&md)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
		}
		if md.Resource != secResource || !slices.Equal(md.AuthorizationServers, []string{iss.URL}) ||
			!slices.Equal(md.ScopesSupported, []string{"portfolio:read", "trade:write", "trade:approve"}) {
			t.Errorf("GET %s = %+v", path, md)
		}
	}
}

// TestUnauthenticatedOnlyOnLoopback: with no issuer the server refuses a
// non-loopback address, and on loopback serves the local developer.
func TestUnauthenticatedOnlyOnLoopback(t *testing.T) {
	_, err := config.LoadFrom(t.Context(), envconfig.MapLookuper(map[string]string{"LISTEN_HOST": "0.0.0.0"}))
	var cerr *config.Error
	if !errors.As(err, &cerr) || cerr.Var != "OAUTH_ISSUER" {
		t.Fatalf("no issuer on 0.0.0.0: err = %v, want a refusal naming OAUTH_ISSUER", err)
	}
	srv := startServer(t, nil)
	cs := connect(t, srv.URL+"/mcp", "2025-11-25", nil)
	var accts struct{ Accounts []backends.Account }
	callTool(t, cs, "list_accounts", nil, &accts)
	if len(accts.Accounts) != 5 {
		t.Errorf("the local developer sees %d accounts, want all 5", len(accts.Accounts))
	}
	tools, err := cs.ListTools(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(tools.Tools, func(tl *mcp.Tool) bool { return tl.Name == "place_order" }) {
		t.Error("the local developer does not see the trade tools")
	}
}

// secSink is a CloudEvents receiver standing in for the K_SINK broker.
type secSink struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	events []cloudevents.Event
}

// auditedServer starts a trading server with an OAuth issuer whose audit
// events go to a recording sink; extra overrides its environment.
func auditedServer(t *testing.T, extra map[string]string) (*testServer, *oauthtest.Issuer, *secSink) {
	t.Helper()
	setSecrets(t)
	iss := oauthtest.New(t)
	sink := newSecSink(t)
	sh, _ := secBackends()
	env := tradingEnv(iss, "")
	env["K_SINK"] = sink.srv.URL
	maps.Copy(env, extra)
	return startServer(t, env, app.WithBackends(sh.set)), iss, sink
}

func newSecSink(t *testing.T) *secSink {
	s := &secSink{t: t}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil || ev.Validate() != nil {
			t.Errorf("sink got a malformed CloudEvent: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.events = append(s.events, *ev)
		s.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// outcomes lists the tool-call audit events received, as "principal tool
// outcome", sorted.
func (s *secSink) outcomes() []string {
	s.t.Helper()
	var got []string
	for _, ev := range s.byType(audit.EventType) {
		var e audit.Event
		if err := ev.DataAs(&e); err != nil {
			s.t.Fatal(err)
		}
		got = append(got, e.Principal+" "+e.Tool+" "+string(e.Outcome))
	}
	slices.Sort(got)
	return got
}

func (s *secSink) byType(typ string) []cloudevents.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []cloudevents.Event
	for _, e := range s.events {
		if e.Type() == typ {
			out = append(out, e)
		}
	}
	return out
}

// TestAuditTrail: one well-formed CloudEvent per call (allowed, denied at
// either layer, rate-limited), the trade's steps recorded synchronously,
// the SinkBinding's overrides applied, and no token anywhere.
func TestAuditTrail(t *testing.T) {
	srv, iss, sink := auditedServer(t, map[string]string{
		"K_CE_OVERRIDES":       `{"extensions":{"cluster":"test-eu"}}`,
		"RATE_READ_BURST":      "4",
		"RATE_READ_PER_SECOND": "0.001",
	})

	aliceToken := iss.Token(t, iss.Claims("alice", secResource, readScopes, "ACC-1001"))
	bobToken := iss.Token(t, iss.Claims("bob", secResource, allScopes, "ACC-1001"))
	alice := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(aliceToken))
	bob := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(bobToken))

	var accts struct{ Accounts []backends.Account }
	callTool(t, alice, "list_accounts", nil, &accts)                                   // ok
	callToolError(t, alice, "get_portfolio", map[string]any{"account_id": "ACC-1002"}) // denied: entitlement
	args := placeArgs("ACC-1001", "audit-trail-1", 1)
	args["confirm"] = true
	args["api_token"] = "do-not-record-me"
	if _, err := alice.CallTool(t.Context(), &mcp.CallToolParams{Name: "place_order", Arguments: args}); err == nil {
		t.Fatal("alice placed an order without trade:write") // denied: HTTP 403
	}
	delete(args, "api_token")
	var out trading.Outcome
	callTool(t, bob, "place_order", args, &out) // ok
	if out.Status != backends.StatusFilled || out.Order == nil {
		t.Fatalf("bob's order: %+v", out)
	}
	quotes := map[string]any{"tickers": []string{"KO"}}
	var qs backends.QuoteSet
	callTool(t, alice, "get_quotes", quotes, &qs) // alice's 3rd and 4th limited calls
	callTool(t, alice, "get_quotes", quotes, &qs)
	res, err := alice.CallTool(t.Context(), &mcp.CallToolParams{Name: "get_quotes", Arguments: quotes})
	if _, ok := ratelimit.Refused(res); err != nil || !ok {
		t.Fatalf("5th read over a burst of 4: %+v %v", res, err)
	}

	if err := srv.stop(); err != nil { // drains the audit queue
		t.Fatal(err)
	}
	type want struct {
		principal, tool string
		outcome         outcome.Outcome
	}
	wants := []want{
		{"alice", "list_accounts", outcome.OK},
		{"alice", "get_portfolio", outcome.Denied},
		{"alice", "place_order", outcome.Denied},
		{"bob", "place_order", outcome.OK},
		{"alice", "get_quotes", outcome.OK},
		{"alice", "get_quotes", outcome.OK},
		{"alice", "get_quotes", outcome.RateLimited},
	}
	calls := sink.byType(audit.EventType)
	var got []want
	ids := map[string]bool{}
	for _, ev := range calls {
		var e audit.Event
		if err := ev.DataAs(&e); err != nil {
			t.Fatalf("event data: %v", err)
		}
		got = append(got, want{e.Principal, e.Tool, e.Outcome})
		if ev.Subject() != e.Tool || ev.Source() != audit.DefaultSource || ev.Extensions()["cluster"] != "test-eu" || ids[ev.ID()] {
			t.Errorf("event attributes: id %s subject %s source %s extensions %v", ev.ID(), ev.Subject(), ev.Source(), ev.Extensions())
		}
		ids[ev.ID()] = true
		if e.Time.IsZero() || e.RequestID == "" || len(e.ArgsDigest) != 64 || e.Class == "" {
			t.Errorf("event %+v lacks time, request id, digest or class", e)
		}
		if e.Principal == "bob" {
			if e.IdempotencyKey != "audit-trail-1" || e.OrderID != out.Order.OrderID {
				t.Errorf("bob's order event lacks its ids: %+v", e)
			}
		}
		if e.Tool == "place_order" && e.Principal == "alice" && e.Args["api_token"] != audit.Redacted {
			t.Errorf("a secret argument was recorded: %v", e.Args)
		}
	}
	sortWants := func(ws []want) {
		slices.SortFunc(ws, func(a, b want) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	}
	sortWants(got)
	sortWants(wants)
	if !slices.Equal(got, wants) {
		t.Errorf("audit events:\n got  %v\n want %v", got, wants)
	}
	// Steps before their effect are events of their own; a step that took
	// effect during a call (the order the Trade service accepted) travels
	// with the call's record.
	var actions []string
	for _, ev := range sink.byType(audit.StepEventType) {
		var e audit.Event
		ev.DataAs(&e)
		actions = append(actions, e.Action)
	}
	for _, ev := range calls {
		var e audit.Event
		ev.DataAs(&e)
		for _, s := range e.Steps {
			actions = append(actions, s.Action)
		}
	}
	if !slices.Contains(actions, "order.intent") || !slices.Contains(actions, "order.executed") {
		t.Errorf("trade steps recorded: %v, want order.intent and order.executed", actions)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	for _, ev := range sink.events {
		raw := string(ev.Data())
		for _, secret := range []string{aliceToken, bobToken, "do-not-record-me", "eyJ", "Bearer"} {
			if strings.Contains(raw, secret) {
				t.Errorf("an audit event contains %q: %s", secret[:min(len(secret), 12)], raw)
			}
		}
	}
}

// TestCompletionIsARead: completion/complete reads the firm's accounts and
// equities, so it is governed as a read: without the read scope it is
// refused (with the step-up challenge), and every completion is audited and
// counted against the read budget.
func TestCompletionIsARead(t *testing.T) {
	srv, iss, sink := auditedServer(t, map[string]string{"RATE_READ_BURST": "2", "RATE_READ_PER_SECOND": "0.001"})
	params := map[string]any{"ref": map[string]any{"type": "ref/prompt", "name": "portfolio_review"},
		"argument": map[string]any{"name": "account_id", "value": "ACC"}}

	halter := iss.Token(t, iss.Claims("hal", secResource, "trade:halt", "*"))
	resp, body := secRPC(t, srv.URL, halter, "completion/complete", params)
	if resp.StatusCode != http.StatusForbidden || challenge(t, resp)["scope"] != "trade:halt portfolio:read" || strings.Contains(body, "ACC-") {
		t.Fatalf("completion without the read scope: %d %s", resp.StatusCode, body)
	}
	reader := iss.Token(t, iss.Claims("alice", secResource, readScopes, "ACC-1001"))
	for i, want := range []string{`"values":["ACC-1001"]`, `"values":["ACC-1001"]`, "rate limit"} {
		if _, body := secRPC(t, srv.URL, reader, "completion/complete", params); !strings.Contains(body, want) {
			t.Fatalf("completion %d: %s, want %s", i+1, body, want)
		}
	}

	if err := srv.stop(); err != nil { // drains the audit queue
		t.Fatal(err)
	}
	got := sink.outcomes()
	want := []string{"alice completion/complete ok", "alice completion/complete ok", "alice completion/complete rate_limited", "hal completion/complete denied"}
	if !slices.Equal(got, want) {
		t.Errorf("audit events %q, want %q", got, want)
	}
}

// TestResourcesListIsARead: resources/list reads the caller's accounts
// from the Portfolio service (what list_accounts answers), so it is a read
// like any other: charged to the read budget and audited. Without the read
// scope it is an empty list, as resources/templates/list is, and the
// Portfolio service is not asked (no scope challenge: clients list
// resources when they connect, and would be sent into step-up sign-in).
func TestResourcesListIsARead(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	sink := newSecSink(t)
	sh, backendCalls := secBackends()
	env := tradingEnv(iss, "")
	env["K_SINK"] = sink.srv.URL
	maps.Copy(env, map[string]string{"RATE_READ_BURST": "2", "RATE_READ_PER_SECOND": "0.001"})
	srv := startServer(t, env, app.WithBackends(sh.set))

	halter := iss.Token(t, iss.Claims("hal", secResource, "trade:halt", "*"))
	before := backendCalls.Load()
	resp, body := secRPC(t, srv.URL, halter, "resources/list", map[string]any{})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"resources":[]`) {
		t.Errorf("resources/list without the read scope: %d %s, want an empty list", resp.StatusCode, body)
	}
	if n := backendCalls.Load() - before; n != 0 {
		t.Errorf("resources/list without the read scope made %d backend calls", n)
	}
	reader := iss.Token(t, iss.Claims("alice", secResource, readScopes, "ACC-1001"))
	for i, want := range []string{"portfolio://accounts/ACC-1001", "portfolio://accounts/ACC-1001", "rate limit"} {
		if _, body := secRPC(t, srv.URL, reader, "resources/list", map[string]any{}); !strings.Contains(body, want) {
			t.Fatalf("resources/list %d: %s, want %s", i+1, body, want)
		}
	}

	if err := srv.stop(); err != nil { // drains the audit queue
		t.Fatal(err)
	}
	got := sink.outcomes()
	want := []string{"alice resources/list ok", "alice resources/list ok", "alice resources/list rate_limited", "hal resources/list ok"}
	if !slices.Equal(got, want) {
		t.Errorf("audit events %q, want %q", got, want)
	}
}

// sinkDownServer is a server with authentication whose audit sink does not
// answer: nothing listens at K_SINK.
func sinkDownServer(t *testing.T) (*testServer, *oauthtest.Issuer, *sharedBackends) {
	t.Helper()
	setSecrets(t)
	iss := oauthtest.New(t)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // nothing listens there any more
	sh, _ := secBackends()
	env := tradingEnv(iss, "")
	env["K_SINK"] = down.URL
	return startServer(t, env, app.WithBackends(sh.set)), iss, sh
}

// TestAuditSinkDown: reads keep working; a trade that cannot be recorded
// does not happen.
func TestAuditSinkDown(t *testing.T) {
	srv, iss, sh := sinkDownServer(t)
	bob := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(iss.Token(t, iss.Claims("bob", secResource, allScopes, "ACC-1001"))))

	var pv backends.PortfolioValuation
	callTool(t, bob, "get_portfolio", map[string]any{"account_id": "ACC-1001"}, &pv)

	args := placeArgs("ACC-1001", "sink-down-1", 1)
	args["confirm"] = true
	msg := callToolError(t, bob, "place_order", args)
	if !strings.Contains(msg, "record") {
		t.Errorf("trade with the audit sink down: %q, want a message that it could not be recorded", msg)
	}
	if n := sh.count(); n != 0 {
		t.Fatalf("%d orders placed while the audit sink was down", n)
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `audit_events_total{mode="sync",result="failed"}`) {
		t.Error("failed synchronous audit deliveries are not in /metrics")
	}
	if !strings.Contains(string(metrics), `portfolio_mcp_build_info{goversion="go`) || !strings.Contains(string(metrics), `version="dev"} 1`) {
		t.Error("/metrics has no portfolio_mcp_build_info naming the build")
	}
}

// secHelperEnv marks a test binary started as a server by
// TestRateLimitSharedAcrossProcesses.
const secHelperEnv = "PORTFOLIO_MCP_TEST_SERVER_PROCESS"

// TestRateLimitSharedAcrossProcesses runs two server processes on one Redis
// and shows that a principal's burst is one budget across both.
func TestRateLimitSharedAcrossProcesses(t *testing.T) {
	iss := oauthtest.New(t)
	rds := redistest.Start(t)
	env := tradingEnv(iss, rds.URL())
	env["RATE_READ_BURST"] = "3"
	env["RATE_READ_PER_SECOND"] = "0.001"
	env["SECRET_REQUEST_STATE_KEY"] = "test-request-state-key-0123456789abcdef"
	env["SECRET_APPROVAL_EVENT_KEY"] = approveKey
	a, b := startProcess(t, env), startProcess(t, env)

	token := iss.Token(t, iss.Claims("alice", secResource, readScopes, "*"))
	servers := []*mcp.ClientSession{
		connect(t, a+"/mcp", "2025-11-25", bearer(token)),
		connect(t, b+"/mcp", "2025-11-25", bearer(token)),
	}
	quotes := &mcp.CallToolParams{Name: "get_quotes", Arguments: map[string]any{"tickers": []string{"KO"}}}
	for i := range 3 {
		if _, err := servers[i%2].CallTool(t.Context(), quotes); err != nil {
			t.Fatalf("call %d within the burst: %v", i+1, err)
		}
	}
	res, err := servers[1].CallTool(t.Context(), quotes)
	r, ok := ratelimit.Refused(res)
	if err != nil || !ok {
		t.Fatalf("4th call across both processes: %+v %v, want the rate limit", res, err)
	}
	if r.RetryAfterSeconds <= 0 || !strings.Contains(resultText(res), "retry after") {
		t.Errorf("refusal without a retry-after hint: %q %+v", resultText(res), r)
	}
	resp, err := http.Get(b + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `mcp_rate_limited_total{class="read"} 1`) {
		t.Error("the refusal is not counted in mcp_rate_limited_total")
	}
}

// startProcess runs this test binary as a server process (see
// TestServerProcess) with env and returns its base URL.
func startProcess(t *testing.T, env map[string]string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerProcess$")
	cmd.Env = append(os.Environ(), secHelperEnv+"=1", "PORT=0", "LOG_LEVEL=warn")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "serving on "); ok {
				addr <- u
			}
		}
	}()
	select {
	case u := <-addr:
		return u
	case <-time.After(60 * time.Second): // a failure bound, not synchronisation
		t.Fatal("server process did not start")
		return ""
	}
}

// TestServerProcess is not a test: it is the body of the server processes
// TestRateLimitSharedAcrossProcesses starts from this binary.
func TestServerProcess(t *testing.T) {
	if os.Getenv(secHelperEnv) != "1" {
		t.Skip("server process for TestRateLimitSharedAcrossProcesses")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	cfg, err := config.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	log := telemetry.NewLogger(os.Stderr, cfg.LogLevel, telemetry.Revision{})
	srv, err := app.New(ctx, cfg, telemetry.Revision{}, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("serving on http://" + ln.Addr().String())
	if err := srv.Serve(ctx, ln); err != nil {
		t.Fatal(err)
	}
}

// TestReadyWaitsForIssuerKeys: a new replica is not ready while its first
// fetch of the issuer's keys is under way (its calls would all wait for the
// issuer), becomes ready when the fetch ends, logging how long the fetch
// took (a cold start's cost in production), and, if the issuer is down,
// becomes ready anyway and refuses calls at once with 503.
func TestReadyWaitsForIssuerKeys(t *testing.T) {
	setSecrets(t)
	readyz := func(srv *testServer) int {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	t.Run("slow issuer", func(t *testing.T) {
		iss := oauthtest.New(t)
		release := iss.Hold()
		defer release()
		var logs lockedBuffer
		srv := serve(t, tradingEnv(iss, ""), telemetry.NewLogger(&logs, "info", telemetry.Revision{}))
		if code := readyz(srv); code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz %d while the issuer's keys are being fetched, want 503", code)
		}
		if strings.Contains(logs.String(), "keys loaded") {
			t.Fatalf("keys reported loaded while the issuer holds them:\n%s", logs.String())
		}
		release()
		waitFor(t, func() bool { return readyz(srv) == http.StatusOK })
		var loaded struct {
			Issuer     string  `json:"issuer"`
			DurationMS float64 `json:"duration_ms"`
		}
		for line := range strings.Lines(logs.String()) {
			if strings.Contains(line, `"msg":"OAuth issuer keys loaded"`) {
				if err := json.Unmarshal([]byte(line), &loaded); err != nil {
					t.Fatal(err)
				}
			}
		}
		if loaded.Issuer != iss.URL || loaded.DurationMS <= 0 {
			t.Fatalf("keys loaded logged as %+v, want issuer %s and a duration:\n%s", loaded, iss.URL, logs.String())
		}
		cs := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(iss.Token(t, iss.Claims("alice", secResource, readScopes, "ACC-1001"))))
		var accounts struct{ Accounts []backends.Account }
		callTool(t, cs, "list_accounts", nil, &accounts)
	})
	t.Run("issuer down", func(t *testing.T) {
		iss := oauthtest.New(t)
		iss.SetDown(true)
		srv := startServer(t, tradingEnv(iss, ""))
		waitFor(t, func() bool { return readyz(srv) == http.StatusOK })
		resp, _ := secRPC(t, srv.URL, iss.Token(t, iss.Claims("alice", secResource, readScopes, "ACC-1001")), "tools/list", nil)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("call with the issuer down: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	})
}

// TestTypedTextIsRedacted: a credential an agent types anywhere (an
// argument the schema refuses and its error quotes, a tool name) never
// reaches the audit trail verbatim.
func TestTypedTextIsRedacted(t *testing.T) {
	srv, iss, sink := auditedServer(t, nil)
	bob := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(iss.Token(t, iss.Claims("bob", secResource, allScopes, "*"))))

	const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmF0dXJl"
	// The schema refuses it, and the validator's message quotes it.
	if res, err := bob.CallTool(t.Context(), &mcp.CallToolParams{Name: "get_portfolio", Arguments: map[string]any{"account_id": jwt}}); err != nil || !res.IsError {
		t.Fatalf("get_portfolio with a token as account: %v %+v", err, res)
	}
	// An unknown tool is recorded under the name it was called by.
	if _, err := bob.CallTool(t.Context(), &mcp.CallToolParams{Name: jwt, Arguments: map[string]any{}}); err == nil {
		t.Fatal("a tool named like a token was called")
	}
	// A token sent as a key, and repeated so the arguments are refused (the
	// refusal quotes the key): the repeat made a megabyte-sized record.
	h := map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-11-25"}
	bobClient := bearer(iss.Token(t, iss.Claims("bob", secResource, allScopes, "*")))
	if _, err := bob.CallTool(t.Context(), &mcp.CallToolParams{Name: "get_portfolio", Arguments: map[string]any{"account_id": "ACC-1001", "Bearer " + jwt: 1}}); err != nil {
		t.Fatal(err)
	}
	key := "Bearer " + jwt + strings.Repeat("A", 200_000)
	if resp, b := postMCP(t, bobClient, srv.URL, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_accounts","arguments":{"`+key+`":1,"`+key+`":2}}}`, h); resp.StatusCode != http.StatusOK || len(b) > 4096 {
		t.Errorf("repeated key: %d, %d bytes back", resp.StatusCode, len(b))
	}
	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
	events := sink.byType(audit.EventType)
	if len(events) != 4 {
		t.Fatalf("%d call records, want 4", len(events))
	}
	for _, ev := range events {
		if strings.Contains(string(ev.Data()), "eyJ") || strings.Contains(ev.Subject(), "eyJ") {
			t.Errorf("a token reached the audit trail: subject %q data %.300s", ev.Subject(), ev.Data())
		}
		if len(ev.Data()) > 4096 {
			t.Errorf("a record of %d bytes: recorded text is cut at 256 bytes", len(ev.Data()))
		}
		var e audit.Event
		ev.DataAs(&e)
		if e.Outcome == outcome.OK && e.Tool != "get_portfolio" {
			t.Errorf("record %+v: want a refusal", e)
		}
	}
}

// TestGovernedWhateverTheContentType: the go-sdk runs a body whose
// Content-Type is JSON in any case or spacing, so the edge parses every such
// body, and a request the edge did not parse still gets a Call, so a
// completion without the read scope is refused, rate limited and audited.
func TestGovernedWhateverTheContentType(t *testing.T) {
	srv, iss, sink := auditedServer(t, map[string]string{"RATE_READ_BURST": "1", "RATE_READ_PER_SECOND": "0.001"})
	params := map[string]any{"ref": map[string]any{"type": "ref/prompt", "name": "portfolio_review"},
		"argument": map[string]any{"name": "account_id", "value": "ACC"}}
	halter := iss.Token(t, iss.Claims("hal", secResource, "trade:halt", "*")) // no portfolio:read
	for _, ct := range []string{"application/json", "Application/JSON", " application/json ; charset=utf-8", "APPLICATION/JSON"} {
		if resp, body := secRPCTyped(t, srv.URL, halter, ct, "completion/complete", params); resp.StatusCode != http.StatusForbidden {
			t.Errorf("Content-Type %q without the read scope: %d %s, want 403", ct, resp.StatusCode, body)
		}
	}
	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
	if n := len(sink.byType(audit.EventType)); n != 4 {
		t.Errorf("%d audit records for 4 completion calls", n)
	}
}

// TestResourceReadIsPrivate: an account's portfolio, read as a resource, is
// for those entitled to it: no intermediary may cache and serve it to
// another user, on any protocol generation that carries cacheScope.
func TestResourceReadIsPrivate(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	srv := startServer(t, tradingEnv(iss, ""))
	token := iss.Token(t, iss.Claims("alice", "http://127.0.0.1/mcp", allScopes, "ACC-1001"))
	const uri = "portfolio://accounts/ACC-1001"
	for _, v := range []string{"2025-11-25", "2026-07-28"} {
		h := map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
			"Mcp-Protocol-Version": v, "Authorization": "Bearer " + token}
		params := `"uri":"` + uri + `"`
		if v >= "2026-07-28" {
			h["Mcp-Method"], h["Mcp-Name"] = "resources/read", uri
			params += "," + newMeta
		}
		resp, b := postMCP(t, http.DefaultClient, srv.URL, `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{`+params+`}}`, h)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"contents"`) || strings.Contains(string(b), `"cacheScope":"public"`) {
			t.Errorf("%s: resources/read %s: %d %s, want the portfolio, not cacheScope public", v, uri, resp.StatusCode, b)
		}
	}
}

// TestTrustedOriginCallsFromABrowser: a page on a trusted origin (a hosted
// MCP inspector) gets its preflight answered and may read the answer, the
// challenge header included; another origin gets neither.
func TestTrustedOriginCallsFromABrowser(t *testing.T) {
	const origin = "https://inspector.example.org"
	srv := startServer(t, map[string]string{"ALLOWED_ORIGINS": origin})

	pre, _ := http.NewRequestWithContext(t.Context(), http.MethodOptions, srv.URL+"/mcp", nil)
	pre.Header.Set("Origin", origin)
	pre.Header.Set("Access-Control-Request-Method", "POST")
	pre.Header.Set("Access-Control-Request-Headers", "authorization,content-type,mcp-protocol-version")
	resp, err := http.DefaultClient.Do(pre)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 || resp.Header.Get("Access-Control-Allow-Origin") != origin {
		t.Errorf("preflight from the trusted origin: %d, Access-Control-Allow-Origin %q, Allow %q; a browser refuses to send the POST",
			resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), resp.Header.Get("Allow"))
	}

	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	req.Header.Set("Origin", origin)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != origin || !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Www-Authenticate") {
		t.Errorf("POST from the trusted origin: %d, Access-Control-Allow-Origin %q, exposed %q; a browser hides the answer",
			resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), resp.Header.Get("Access-Control-Expose-Headers"))
	}
	// Another origin: no preflight approval, and its POST refused.
	pre.Header.Set("Origin", "https://evil.example")
	if resp, err = http.DefaultClient.Do(pre); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin allowed: %q", resp.Header.Get("Access-Control-Allow-Origin"))
	}
	req, _ = http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Content-Type", "application/json")
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("POST from another origin: %d, Access-Control-Allow-Origin %q; want 403", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
}

// TestRefusalStandsWithTheSinkDown: with the audit sink unreachable, a
// trade call refused by its rate limit (nothing done) is answered as the
// refusal it is, with its retry-after, not withheld as a call whose effect
// is unknown.
func TestRefusalStandsWithTheSinkDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	srv := startServer(t, map[string]string{"K_SINK": dead, "RATE_TRADE_BURST": "1", "RATE_TRADE_PER_MINUTE": "0.5"})
	cs := connect(t, srv.URL+"/mcp", "2025-11-25", nil)
	var limited bool
	for _, key := range []string{"sinkdown-0001", "sinkdown-0002"} {
		res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "place_order", Arguments: confirmedArgs("ACC-1001", key, 1)})
		if err != nil {
			t.Fatal(err)
		}
		_, limited = ratelimit.Refused(res)
	}
	if !limited {
		t.Error("the second trade beyond a burst of 1 was not answered as rate limited")
	}
}

// TestRequestTextIsBoundedInTheTrailAndTheLog: what a caller puts in a
// path (an approval id) or an unauthenticated caller in a token header (a
// kid) or an approval event (its id) reaches the audit trail and the log
// cut short and without credentials: no one writes a megabyte, or a
// working token, into a signed record or a log line.
func TestRequestTextIsBoundedInTheTrailAndTheLog(t *testing.T) {
	srv, iss, sink := auditedServer(t, nil)
	ann := iss.Token(t, iss.Claims("ann", secResource, allScopes, "*"))
	leaked := iss.Token(t, iss.Claims("victim", secResource, allScopes, "*"))
	for _, id := range []string{leaked, "APR-" + strings.Repeat("A", 40000)} {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/approvals/"+id, nil)
		resp, err := bearer(ann).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, ev := range sink.byType(audit.EventType) {
		var e audit.Event
		if err := ev.DataAs(&e); err != nil {
			t.Fatal(err)
		}
		if e.Tool != "approvals.get" {
			continue
		}
		got++
		if strings.Contains(e.ApprovalID, "eyJ") || len(e.ApprovalID) > 80 {
			t.Errorf("approval_id recorded as %.60q… (%d bytes)", e.ApprovalID, len(e.ApprovalID))
		}
	}
	if got != 2 {
		t.Errorf("%d approvals.get records, want 2", got)
	}

	logs := &lockedBuffer{}
	base, stop := serveWithLog(t, tradingEnv(iss, ""), logs)
	kid := "KID" + strings.Repeat("k", 40000)
	hdr, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "at+jwt", "kid": kid})
	enc := base64.RawURLEncoding
	forged := enc.EncodeToString(hdr) + "." + enc.EncodeToString([]byte(`{"sub":"x"}`)) + "." + enc.EncodeToString([]byte("sig"))
	if resp, _ := secRPC(t, base, forged, "tools/list", map[string]any{}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged token: %d", resp.StatusCode)
	}
	evID := "ID" + strings.Repeat("i", 500_000) + " Bearer abcdefghijklmnop"
	ev, _ := json.Marshal(map[string]any{"specversion": "1.0", "type": "com.portfolio-mcp.approval.decided",
		"source": "urn:evil Bearer abcdefghijklmnop", "id": evID, "data": map[string]string{}})
	req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/events/approvals", strings.NewReader(string(ev)))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	stop()
	out := logs.String()
	if !strings.Contains(out, "bearer token rejected") || !strings.Contains(out, "approval event from untrusted source") {
		t.Fatalf("the refusals were not logged: %.2000s", out)
	}
	if len(out) > 64<<10 {
		t.Errorf("the log is %d bytes after two unauthenticated requests", len(out))
	}
	if strings.Contains(out, "abcdefghijklmnop") {
		t.Error("a bearer credential from an unauthenticated request is in the log")
	}
}
