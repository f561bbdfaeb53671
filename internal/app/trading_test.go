package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/backends/fake"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/redistest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/approvals"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

const (
	allScopes  = "portfolio:read trade:write trade:approve"
	readScopes = "portfolio:read"
	approveKey = "0123456789abcdef0123456789abcdef-approval-events"
)

// tradingEnv is the environment of a server with real auth, secrets from
// the environment and trading on the demo market at any hour.
func tradingEnv(iss *oauthtest.Issuer, redisURL string) map[string]string {
	env := map[string]string{
		"OAUTH_ISSUER":           iss.URL,
		"PUBLIC_URL":             "http://127.0.0.1/mcp",
		"ENFORCE_MARKET_HOURS":   "false",
		"APPROVAL_NOTIONAL":      "50000",
		"APPROVAL_EVENT_SOURCES": "urn:test:workflow",
		// The bursts below are the point of the tests, not abuse.
		"RATE_TRADE_PER_MINUTE": "100000",
		"RATE_TRADE_BURST":      "1000",
		"RATE_READ_BURST":       "1000",
	}
	if redisURL != "" {
		env["REDIS_URL"] = redisURL
	}
	return env
}

// bearer returns an HTTP client that presents token.
func bearer(token string) *http.Client {
	return &http.Client{Transport: bearerTransport{token}}
}

type bearerTransport struct{ token string }

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func setSecrets(t testing.TB) {
	t.Setenv("SECRET_REQUEST_STATE_KEY", "test-request-state-key-0123456789abcdef")
	t.Setenv("SECRET_APPROVAL_EVENT_KEY", approveKey)
}

// sharedBackends is one demo market whose Trade side is shared by several
// servers, as replicas share the firm's Trade service. It counts the
// distinct orders the Trade service created.
type sharedBackends struct {
	set    backends.Set
	mu     sync.Mutex
	orders map[string]bool
}

func newShared() *sharedBackends {
	s := &sharedBackends{set: demo.New(nil).Set(), orders: map[string]bool{}}
	s.set.Trade = tradeCounter{s.set.Trade, s}
	return s
}

func (s *sharedBackends) count() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.orders) }

type tradeCounter struct {
	backends.Trade
	s *sharedBackends
}

func (c tradeCounter) PlaceOrder(ctx context.Context, r backends.OrderRequest) (backends.Order, error) {
	o, err := c.Trade.PlaceOrder(ctx, r)
	if err == nil {
		c.s.mu.Lock()
		c.s.orders[o.OrderID] = true
		c.s.mu.Unlock()
	}
	return o, err
}

// confirmedArgs are placeArgs with the user's confirmation asserted, as an
// initialize-era client sends them.
func confirmedArgs(account, key string, qty int) map[string]any {
	a := placeArgs(account, key, qty)
	a["confirm"] = true
	return a
}

func placeArgs(account, key string, qty int) map[string]any {
	return map[string]any{"account_id": account, "ticker": "KO", "side": "buy", "quantity": qty, "idempotency_key": key}
}

// TestPlaceOrderConfirmationFlows: MRTR confirmation on 2026-07-28 (accept,
// decline, tampered and replayed state) and the confirm argument on older
// protocols.
func TestPlaceOrderConfirmationFlows(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	srv := startServer(t, tradingEnv(iss, ""))
	token := iss.Token(t, iss.Claims("alice", "http://127.0.0.1/mcp", allScopes, "ACC-1001"))

	// Automatic MRTR: the go-sdk client answers the input request with its
	// elicitation handler, standing in for the user.
	var asked []string
	client := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, &mcp.ClientOptions{
		ElicitationHandler: func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			asked = append(asked, req.Params.Message)
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"confirm": true}}, nil
		},
	})
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: srv.URL + "/mcp", HTTPClient: bearer(token), MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	var out trading.Outcome
	callTool(t, cs, "place_order", placeArgs("ACC-1001", "mrtr-accept-1", 10), &out)
	if out.Status != backends.StatusFilled || out.Order == nil || len(asked) != 1 || !strings.Contains(asked[0], "buy 10 KO") {
		t.Fatalf("MRTR accept: %+v, asked %q", out, asked)
	}
	// A retry is answered from the record without asking again.
	callTool(t, cs, "place_order", placeArgs("ACC-1001", "mrtr-accept-1", 10), &out)
	if !out.Replayed || len(asked) != 1 {
		t.Fatalf("retry: %+v, asked %d times", out, len(asked))
	}

	// Manual MRTR, to hold the state in hand. The client answers the form
	// itself, so it declares the capability.
	manual := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, &mcp.ClientOptions{
		MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true},
		Capabilities:   &mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}}},
	})
	ms, err := manual.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: srv.URL + "/mcp", HTTPClient: bearer(token), MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	args := placeArgs("ACC-1001", "mrtr-manual-1", 5)
	first, err := ms.CallTool(t.Context(), &mcp.CallToolParams{Name: "place_order", Arguments: args})
	if err != nil || !first.NeedsInput() || first.RequestState == "" {
		t.Fatalf("first round: %+v %v", first, err)
	}
	retry := func(state string, accept bool, a map[string]any) *mcp.CallToolResult {
		action := "accept"
		if !accept {
			action = "decline"
		}
		res, err := ms.CallTool(t.Context(), &mcp.CallToolParams{Name: "place_order", Arguments: a, RequestState: state,
			InputResponses: mcp.InputResponseMap{"confirm": &mcp.ElicitResult{Action: action, Content: map[string]any{"confirm": accept}}}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := retry(first.RequestState+"x", true, args); !res.IsError || !strings.Contains(resultText(res), "invalid") {
		t.Fatalf("tampered state: %s", resultText(res))
	}
	other := placeArgs("ACC-1001", "mrtr-manual-1", 6)
	if res := retry(first.RequestState, true, other); !res.IsError {
		t.Fatalf("state reused for other arguments: %s", resultText(res))
	}
	// The state above was not consumed (its binding failed); decline uses it.
	if res := retry(first.RequestState, false, args); res.IsError || !strings.Contains(resultText(res), "not_confirmed") {
		t.Fatalf("decline: %s", resultText(res))
	}
	if res := retry(first.RequestState, true, args); !res.IsError || !strings.Contains(resultText(res), "already used") {
		t.Fatalf("replayed state: %s", resultText(res))
	}

	// A 2026-07-28 client that did not declare elicitation is never sent an
	// input request: it confirms with the argument, like older clients.
	plain := connect(t, srv.URL+"/mcp", "2026-07-28", bearer(token))
	callTool(t, plain, "place_order", placeArgs("ACC-1001", "no-elicit-1", 2), &out)
	if out.Status != trading.StatusNeedsConfirmation || out.Preview == nil {
		t.Fatalf("2026-07-28 without elicitation, no confirm: %+v", out)
	}
	callTool(t, plain, "place_order", confirmedArgs("ACC-1001", "no-elicit-1", 2), &out)
	if out.Status != backends.StatusFilled {
		t.Fatalf("2026-07-28 without elicitation, confirm=true: %+v", out)
	}

	// Initialize-era clients confirm with an argument.
	old := connect(t, srv.URL+"/mcp", "2025-06-18", bearer(token))
	callTool(t, old, "place_order", placeArgs("ACC-1001", "old-proto-1", 3), &out)
	if out.Status != trading.StatusNeedsConfirmation || out.Preview == nil {
		t.Fatalf("without confirm: %+v", out)
	}
	a := confirmedArgs("ACC-1001", "old-proto-1", 3)
	callTool(t, old, "place_order", a, &out)
	if out.Status != backends.StatusFilled {
		t.Fatalf("with confirm: %+v", out)
	}

	// The demo book moved: the three filled buys (10, 2 and 3 KO) show in
	// the portfolio, once each despite the replay.
	var pv backends.PortfolioValuation
	callTool(t, old, "get_portfolio", map[string]any{"account_id": "ACC-1001"}, &pv)
	var ko float64
	for _, h := range pv.Holdings {
		if h.Ticker == "KO" {
			ko = h.Quantity
		}
	}
	if ko != 15 {
		t.Fatalf("KO held after the filled buys: %g, want 15", ko)
	}
}

func decide(t *testing.T, base, token, id, decision string) (int, map[string]any) {
	t.Helper()
	return postJSON(t, base+"/approvals/"+id+"/decision", token, map[string]string{"decision": decision, "reason": "test"})
}

// postJSON posts v as JSON with token as its bearer and returns the status
// and the decoded answer.
func postJSON(t *testing.T, url, token string, v any) (int, map[string]any) {
	t.Helper()
	body, _ := json.Marshal(v)
	req, _ := http.NewRequestWithContext(t.Context(), "POST", url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := bearer(token).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestReplicasShareApprovals: two server processes on one Redis and one
// Trade service (the fakes over HTTP). An order placed on one is approved
// through the other, its status agrees on both, four eyes and scopes hold,
// and concurrent identical calls make one backend order.
// replicas are two server processes on one Redis and one Trade service
// (the fakes over HTTP, counting orders), configured by extra on top of
// tradingEnv.
type replicas struct {
	iss    *oauthtest.Issuer
	redis  *redistest.Server
	shared *sharedBackends
	a, b   string
}

func startReplicas(t *testing.T, extra map[string]string) replicas {
	t.Helper()
	setSecrets(t)
	r := replicas{iss: oauthtest.New(t), redis: redistest.Start(t), shared: newShared()}
	backend, err := fake.New(r.shared.set, fake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fakes := httptest.NewServer(backend)
	t.Cleanup(fakes.Close)
	env := tradingEnv(r.iss, r.redis.URL())
	env["PORTFOLIO_URL"], env["TRADE_URL"], env["RISK_URL"] = fakes.URL, fakes.URL, fakes.URL
	for k, v := range extra {
		env[k] = v
	}
	r.a, r.b = startProcess(t, env), startProcess(t, env)
	return r
}

func TestReplicasShareApprovals(t *testing.T) {
	// 100 identical one-share orders under distinct keys below are meant:
	// the duplicate check and the agent's daily count are other tests'.
	// The Redis deadline is raised: this test is about exactly-once under
	// 100 concurrent calls, and on a loaded two-core test machine a command
	// can wait longer than the production default (250ms) for the CPU,
	// which the breaker would rightly count as Redis failing.
	r := startReplicas(t, map[string]string{"DUPLICATE_ORDER_WINDOW": "0", "DAILY_MAX_ORDERS_PER_AGENT": "0", "REDIS_TIMEOUT": "1500ms"})
	iss, shared := r.iss, r.shared
	a, b := &testServer{URL: r.a}, &testServer{URL: r.b}
	aud := "http://127.0.0.1/mcp"
	alice := iss.Token(t, iss.Claims("alice", aud, "portfolio:read trade:write", "ACC-2001"))
	bob := iss.Token(t, iss.Claims("bob", aud, "portfolio:read trade:approve", "ACC-2001"))
	reader := iss.Token(t, iss.Claims("rita", aud, readScopes, "ACC-2001"))

	csA := connect(t, a.URL+"/mcp", "2025-11-25", bearer(alice))
	args := confirmedArgs("ACC-2001", "big-order-0001", 1000)
	var out trading.Outcome
	callTool(t, csA, "place_order", args, &out)
	if out.Status != trading.StatusPendingApproval || out.Approval == nil {
		t.Fatalf("large order: %+v", out)
	}
	id := out.Approval.ID

	if code, _ := decide(t, b.URL, alice, id, "approve"); code != http.StatusForbidden {
		t.Fatalf("self-approval (and no approve scope): %d", code)
	}
	if code, _ := decide(t, b.URL, reader, id, "approve"); code != http.StatusForbidden {
		t.Fatalf("approval without trade:approve: %d", code)
	}
	if code, body := decide(t, b.URL, bob, id, "approve"); code != http.StatusOK || body["status"] != backends.StatusFilled {
		t.Fatalf("bob approves on B: %d %v", code, body)
	}
	for _, srv := range []*testServer{a, b} {
		cs := connect(t, srv.URL+"/mcp", "2026-07-28", bearer(alice))
		var st trading.Outcome
		callTool(t, cs, "get_order_status", map[string]any{"id": id}, &st)
		if st.Status != backends.StatusFilled || st.Order == nil {
			t.Fatalf("status on %s: %+v", srv.URL, st)
		}
	}
	if shared.count() != 1 {
		t.Fatalf("%d backend orders after approval, want 1", shared.count())
	}

	// 100 concurrent identical calls across both replicas: one order.
	csB := connect(t, b.URL+"/mcp", "2025-11-25", bearer(alice))
	small := confirmedArgs("ACC-2001", "burst-key-0001", 10)
	var wg sync.WaitGroup
	ids := make(chan string, 100)
	for i := range 100 {
		cs := csA
		if i%2 == 1 {
			cs = csB
		}
		wg.Go(func() {
			var o trading.Outcome
			callTool(t, cs, "place_order", small, &o)
			if o.Order != nil {
				ids <- o.Order.OrderID
			}
		})
	}
	wg.Wait()
	close(ids)
	unique := map[string]bool{}
	for id := range ids {
		unique[id] = true
	}
	if len(unique) != 1 || shared.count() != 2 {
		t.Fatalf("burst made order ids %v, backend orders %d; want one new order", unique, shared.count())
	}
	for i := range 100 {
		wg.Go(func() {
			a := confirmedArgs("ACC-2001", fmt.Sprintf("distinct-key-%03d", i), 1)
			var o trading.Outcome
			callTool(t, csA, "place_order", a, &o)
		})
	}
	wg.Wait()
	if shared.count() != 102 {
		t.Fatalf("backend orders %d, want 102", shared.count())
	}
}

// postEvent delivers an approval.decided CloudEvent as a Broker would. Its
// id is the decision's own: a different decision is a different event.
func postEvent(t *testing.T, base, source string, d approvals.Decision, at time.Time, sig string) int {
	t.Helper()
	e := cloudevents.NewEvent()
	e.SetID(fmt.Sprintf("evt-%s-%s-%s-%s-%d", d.ApprovalID, d.Approver, d.Requester, d.ArgsDigest, at.UnixNano()))
	e.SetSource(source)
	e.SetType(approvals.EventType)
	e.SetTime(at)
	d.Decision, d.Reason = "approve", "workflow"
	e.SetData(cloudevents.ApplicationJSON, d)
	if sig == "" {
		sig = approvals.Sign([]byte(approveKey), e.ID(), e.Source(), e.Type(), e.Time(), e.Data())
	}
	e.SetExtension(approvals.SignatureExtension, sig)
	body, _ := json.Marshal(e)
	req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/events/approvals", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestApprovalEvents: only a signed event from a trusted source decides,
// and a rejected event changes nothing.
func TestApprovalEvents(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	srv := startServer(t, tradingEnv(iss, ""))
	alice := iss.Token(t, iss.Claims("alice", "http://127.0.0.1/mcp", allScopes, "ACC-2001"))
	cs := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(alice))
	args := confirmedArgs("ACC-2001", "event-order-01", 1000)
	var out trading.Outcome
	callTool(t, cs, "place_order", args, &out)
	id := out.Approval.ID

	status := func() string {
		var st trading.Outcome
		callTool(t, cs, "get_order_status", map[string]any{"id": id}, &st)
		return st.Status
	}
	good := approvals.Decision{ApprovalID: id, Approver: "bob", Requester: "alice", ArgsDigest: out.Approval.ArgsDigest}
	with := func(f func(*approvals.Decision)) approvals.Decision { d := good; f(&d); return d }
	now := time.Now()
	tests := []struct {
		name, source string
		d            approvals.Decision
		at           time.Time
		sig          string
		want         int
	}{
		{"bad signature", "urn:test:workflow", good, now, strings.Repeat("0", 64), http.StatusUnauthorized},
		{"untrusted source", "urn:evil", good, now, "", http.StatusForbidden},
		{"unknown approval", "urn:test:workflow", with(func(d *approvals.Decision) { d.ApprovalID = "APR-00000000000000000000" }), now, "", http.StatusNotFound},
		{"requester approves own order", "urn:test:workflow", with(func(d *approvals.Decision) { d.Approver = "Alice" }), now, "", http.StatusForbidden},
		{"pinned to another order", "urn:test:workflow", with(func(d *approvals.Decision) { d.ArgsDigest = strings.Repeat("a", 64) }), now, "", http.StatusUnprocessableEntity},
		{"stale event", "urn:test:workflow", good, now.Add(-31 * time.Minute), "", http.StatusUnprocessableEntity},
		{"no order pinned", "urn:test:workflow", with(func(d *approvals.Decision) { d.ArgsDigest = "" }), now, "", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code := postEvent(t, srv.URL, tt.source, tt.d, tt.at, tt.sig); code != tt.want {
				t.Fatalf("status %d, want %d", code, tt.want)
			}
			if s := status(); s != trading.StatusPendingApproval {
				t.Fatalf("approval changed to %s", s)
			}
		})
	}
	if code := postEvent(t, srv.URL, "urn:test:workflow", good, now, ""); code != http.StatusAccepted {
		t.Fatalf("valid event: %d", code)
	}
	if s := status(); s != backends.StatusFilled {
		t.Fatalf("after valid event: %s", s)
	}
	// The Broker redelivers: harmless.
	if code := postEvent(t, srv.URL, "urn:test:workflow", good, now, ""); code != http.StatusAccepted {
		t.Fatalf("redelivery: %d", code)
	}
}

// TestRedisDownFailsClosed: with the store gone, trades fail closed with a
// clear message and reads keep working; when it returns, trades resume with
// no restart.
func TestRedisDownFailsClosed(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	rds := redistest.Start(t)
	srv := startServer(t, tradingEnv(iss, rds.URL()))
	alice := iss.Token(t, iss.Claims("alice", "http://127.0.0.1/mcp", allScopes, "ACC-1001"))
	cs := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(alice))
	args := confirmedArgs("ACC-1001", "redis-down-01", 1)

	rds.Stop()
	msg := callToolError(t, cs, "place_order", args)
	if !strings.Contains(msg, "no order was placed") {
		t.Fatalf("trade with Redis down: %q", msg)
	}
	var pv backends.PortfolioValuation
	callTool(t, cs, "get_portfolio", map[string]any{"account_id": "ACC-1001"}, &pv)
	// A preview still answers, saying what it could not count.
	var pre policy.Preview
	callTool(t, cs, "preview_order", map[string]any{"account_id": "ACC-1001", "ticker": "KO", "side": "buy", "quantity": 1}, &pre)
	if !pre.CommittedUnknown {
		t.Fatalf("preview with Redis down: %+v", pre)
	}

	// Trades resume once the Redis breaker lets a probe through
	// (REDIS_BREAKER_COOLDOWN) and it succeeds.
	rds.Restart()
	start := time.Now()
	var out trading.Outcome
	waitFor(t, func() bool {
		res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "place_order", Arguments: args})
		if err != nil || res.IsError {
			return false
		}
		out = decodeOutcome(t, res)
		return true
	})
	if out.Status != backends.StatusFilled {
		t.Fatalf("after Redis returned: %+v", out)
	}
	t.Logf("trades resumed %s after Redis returned", time.Since(start).Round(time.Millisecond))
}

func decodeOutcome(t testing.TB, res *mcp.CallToolResult) trading.Outcome {
	t.Helper()
	var out trading.Outcome
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRedisPasswordFromSecretsDir: the password lives in the mounted
// secrets, not in REDIS_URL; a wrong one fails trades closed.
func TestRedisPasswordFromSecretsDir(t *testing.T) {
	iss := oauthtest.New(t)
	rds := redistest.Start(t, "--requirepass", "s3cret-redis-pw")
	dir := t.TempDir()
	for name, v := range map[string]string{
		"request-state-key":  "test-request-state-key-0123456789abcdef",
		"approval-event-key": approveKey,
		"redis-password":     "s3cret-redis-pw\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := tradingEnv(iss, rds.URL())
	env["SECRETS_DIR"] = dir
	srv := startServer(t, env)
	alice := iss.Token(t, iss.Claims("alice", "http://127.0.0.1/mcp", allScopes, "ACC-1001"))
	cs := connect(t, srv.URL+"/mcp", "2025-11-25", bearer(alice))
	args := confirmedArgs("ACC-1001", "redis-auth-01", 1)
	var out trading.Outcome
	callTool(t, cs, "place_order", args, &out)
	if out.Status != backends.StatusFilled {
		t.Fatalf("with the password: %+v", out)
	}

	wrong := tradingEnv(iss, rds.URL())
	wrongDir := t.TempDir()
	os.WriteFile(filepath.Join(wrongDir, "redis-password"), []byte("nope"), 0o600)
	os.WriteFile(filepath.Join(wrongDir, "request-state-key"), []byte("test-request-state-key-0123456789abcdef"), 0o600)
	os.WriteFile(filepath.Join(wrongDir, "approval-event-key"), []byte(approveKey), 0o600)
	wrong["SECRETS_DIR"] = wrongDir
	bad := startServer(t, wrong)
	csBad := connect(t, bad.URL+"/mcp", "2025-11-25", bearer(alice))
	args["idempotency_key"] = "redis-auth-02"
	if msg := callToolError(t, csBad, "place_order", args); !strings.Contains(msg, "no order was placed") {
		t.Fatalf("wrong password: %q", msg)
	}
}

// TestApprovalsAPIAudited: every request to the approvals API, refused
// ones included, leaves an audit record.
func TestApprovalsAPIAudited(t *testing.T) {
	srv, iss, sink := auditedServer(t, nil)
	alice := iss.Token(t, iss.Claims("alice", "http://127.0.0.1/mcp", allScopes, "ACC-2001"))
	if code, _ := decide(t, srv.URL, alice, "APR-00000000000000000000", "approve"); code != http.StatusNotFound {
		t.Fatalf("unknown approval: %d", code)
	}
	var e audit.Event
	waitFor(t, func() bool {
		for _, ce := range sink.byType("com.portfolio-mcp.tool.called") {
			if ce.Subject() == "approvals.decide" {
				return ce.DataAs(&e) == nil
			}
		}
		return false
	})
	if e.Outcome != "denied" || e.Principal != "alice" || e.ApprovalID != "APR-00000000000000000000" {
		t.Fatalf("audit record %+v", e)
	}
}

// TestLiveLegacyConfirmNeedsApprover: in live trading, an order confirmed
// only by the confirm argument (which no server can verify) waits for a
// human approver whatever its size.
func TestLiveLegacyConfirmNeedsApprover(t *testing.T) {
	// Live as config allows it: the firm's services (the fakes, over HTTP),
	// Redis and the audit sink.
	backend := httptest.NewServer(must(fake.New(demo.New(nil).Set(), fake.Options{})))
	t.Cleanup(backend.Close)
	cs := tradingSession(t, map[string]string{"TRADING_MODE": "live", "APPROVER_CLIENT_IDS": "approvals-tool",
		"PORTFOLIO_URL": backend.URL, "TRADE_URL": backend.URL, "RISK_URL": backend.URL,
		"REDIS_URL": "redis://" + redistest.Start(t).Addr, "K_SINK": newSecSink(t).srv.URL}, "2025-11-25", "ACC-1001")
	args := confirmedArgs("ACC-1001", "live-legacy-01", 1)
	var out trading.Outcome
	callTool(t, cs, "place_order", args, &out)
	if out.Status != trading.StatusPendingApproval || out.Approval == nil || !strings.Contains(strings.Join(out.Approval.Preview.ApprovalReasons, ";"), "cannot verify") {
		t.Fatalf("live legacy order: %+v", out)
	}
}

// TestPendingCapReachesTheAgent: past MAX_PENDING_APPROVALS the agent gets a
// tool error that says what to do, not a backend failure.
func TestPendingCapReachesTheAgent(t *testing.T) {
	cs := tradingSession(t, map[string]string{"MAX_PENDING_APPROVALS": "1"}, "2025-06-18", "ACC-2001")
	var out trading.Outcome
	callTool(t, cs, "place_order", confirmedArgs("ACC-2001", "cap-agent-1", 1000), &out)
	if out.Status != trading.StatusPendingApproval {
		t.Fatalf("first large order: %+v", out)
	}
	msg := callToolError(t, cs, "place_order", confirmedArgs("ACC-2001", "cap-agent-2", 999))
	if !strings.Contains(msg, "too many of your orders are waiting for an approver") || !strings.Contains(msg, "cancel_order") {
		t.Fatalf("second large order: %q", msg)
	}
}

// tradingSession starts a trading server (tradingEnv plus extra) and
// connects to it as alice, with every scope, entitled to account.
func tradingSession(t *testing.T, extra map[string]string, version, account string) *mcp.ClientSession {
	t.Helper()
	setSecrets(t)
	iss := oauthtest.New(t)
	env := tradingEnv(iss, "")
	for k, v := range extra {
		env[k] = v
	}
	srv := startServer(t, env)
	token := iss.Token(t, iss.Claims("alice", "http://127.0.0.1/mcp", allScopes, account))
	return connect(t, srv.URL+"/mcp", version, bearer(token))
}
