package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/approvals"
)

// consoleURL is the CONSOLE_URL the tests run with.
const consoleURL = "https://portfolio-mcp-live.portfolio-mcp.example.com"

// secretPath is part of every test webhook URL: it must never be logged.
const secretPath = "/services/T0000/B0000/s3cr3t-w3bh00k-t0k3n"

// reply is one scripted webhook answer.
type reply struct {
	status     int
	retryAfter string
	body       string
}

// hookCall is one request the fake webhook received.
type hookCall struct {
	at     time.Time
	path   string
	ctype  string
	text   string
	status int
}

// fakeWebhook is a Slack-compatible incoming webhook on a real HTTP
// server. It answers from its script (then 200 "ok") and records every
// request.
type fakeWebhook struct {
	srv    *httptest.Server
	mu     sync.Mutex
	script []reply
	calls  []hookCall
}

func newFakeWebhook(t *testing.T, script ...reply) *fakeWebhook {
	t.Helper()
	f := &fakeWebhook{script: script}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var msg struct {
			Text string `json:"text"`
		}
		err := json.NewDecoder(r.Body).Decode(&msg)
		f.mu.Lock()
		rep := reply{status: http.StatusOK, body: "ok"}
		if len(f.script) > 0 {
			rep, f.script = f.script[0], f.script[1:]
		}
		if err != nil || r.Method != http.MethodPost {
			rep = reply{status: http.StatusBadRequest, body: "invalid_payload"}
		}
		f.calls = append(f.calls, hookCall{at: time.Now(), path: r.URL.Path, ctype: r.Header.Get("Content-Type"), text: msg.Text, status: rep.status})
		f.mu.Unlock()
		if rep.retryAfter != "" {
			w.Header().Set("Retry-After", rep.retryAfter)
		}
		w.WriteHeader(rep.status)
		io.WriteString(w, rep.body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// url is the webhook URL to put in the secret file.
func (f *fakeWebhook) url() string { return f.srv.URL + secretPath }

// attempts returns every request received.
func (f *fakeWebhook) attempts() []hookCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]hookCall(nil), f.calls...)
}

// delivered returns the texts of the messages the webhook took (2xx).
func (f *fakeWebhook) delivered() []string {
	var out []string
	for _, c := range f.attempts() {
		if c.status/100 == 2 {
			out = append(out, c.text)
		}
	}
	return out
}

// writeSecret writes the webhook URL file as the mounted Secret holds it.
func writeSecret(t *testing.T, path, webhookURL string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(webhookURL+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
}

// testConfig is the configuration the tests start from: fast retries, a
// webhook URL file in a temporary directory pointing at hook (if any).
func testConfig(t *testing.T, hook *fakeWebhook) Config {
	t.Helper()
	cfg, err := loadConfig(context.Background(), mapEnv{
		"CONSOLE_URL":           consoleURL,
		"WEBHOOK_URL_FILE":      filepath.Join(t.TempDir(), "webhook-url"),
		"WEBHOOK_RETRY_BACKOFF": "1ms",
		"WEBHOOK_TIMEOUT":       "2s",
		"WEBHOOK_RETRY_BUDGET":  "10s",
	})
	if err != nil {
		t.Fatal(err)
	}
	if hook != nil {
		writeSecret(t, cfg.WebhookURLFile, hook.url())
	}
	return cfg
}

// mapEnv is an environment for loadConfig and run.
type mapEnv map[string]string

func (m mapEnv) Lookup(key string) (string, bool) {
	v, ok := m[key]
	return v, ok
}

// syncBuffer is a log destination safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startNotifier serves a notifier built from cfg on a real loopback
// listener with serve, as run does. It returns its URL and its log; the
// notifier is drained when the test ends, and the drain must succeed.
func startNotifier(t *testing.T, cfg Config) (string, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	n, err := newNotifier(cfg, newLogger(logs, cfg))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, n, 5*time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("drain: %v", err)
		}
		if strings.Contains(logs.String(), secretPath) {
			t.Errorf("the webhook URL reached the log:\n%s", logs.String())
		}
	})
	return "http://" + ln.Addr().String(), logs
}

// stepData is a trade-step event's data as audit.Journal writes it.
func stepData(action, principal, account, approvalID, detail string) map[string]any {
	args := map[string]any{"account_id": account}
	if detail != "" {
		args["detail"] = detail
	}
	return map[string]any{
		"time": "2026-11-24T14:31:07.412Z", "principal": principal, "tool": "", "class": "",
		"args": args, "outcome": "recorded", "approval_id": approvalID, "latency_ms": 0,
		"action": action, "revision": "portfolio-mcp-live-00042",
	}
}

// stepEvent is a trade-step CloudEvent as the server sends it to the
// Broker (subject the action, tradingmode from the SinkBinding).
func stepEvent(t *testing.T, subject string, data map[string]any) cloudevents.Event {
	t.Helper()
	ev := cloudevents.NewEvent()
	ev.SetID(uuid.NewString())
	ev.SetType(StepEventType)
	ev.SetSource("/portfolio-mcp/portfolio-mcp-live/portfolio-mcp-live-00042")
	ev.SetSubject(subject)
	ev.SetTime(time.Date(2026, 11, 24, 14, 31, 7, 0, time.UTC))
	ev.SetExtension("tradingmode", "live")
	if err := ev.SetData(cloudevents.ApplicationJSON, data); err != nil {
		t.Fatal(err)
	}
	return ev
}

// send delivers ev to target with the CloudEvents SDK's HTTP client, as
// the Broker does (binary mode unless structured), and returns the
// status code the notifier answered.
func send(t *testing.T, target string, ev cloudevents.Event, structured bool) int {
	t.Helper()
	code, err := deliver(target, ev, structured)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// deliver is send for a goroutine: it reports instead of failing the test.
func deliver(target string, ev cloudevents.Event, structured bool) (int, error) {
	c, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(target))
	if err != nil {
		return 0, err
	}
	ctx := context.Background()
	if structured {
		ctx = cloudevents.WithEncodingStructured(ctx)
	}
	res := c.Send(ctx, ev)
	var hr *cehttp.Result
	if !cloudevents.ResultAs(res, &hr) {
		return 0, fmt.Errorf("sending %s: no HTTP answer: %v", ev.ID(), res)
	}
	return hr.StatusCode, nil
}

func link(id string) string {
	return "<" + consoleURL + "/console/approvals/" + id + "|open in the approvals console>"
}

func TestRequestedAndDecidedPostOneMessageEach(t *testing.T) {
	hook := newFakeWebhook(t)
	target, _ := startNotifier(t, testConfig(t, hook))

	requested := stepEvent(t, ActionRequested, stepData(ActionRequested, "alice@firm.example", "ACC-1001", "APR-3F2A9C0B1D4E5F607182", ""))
	if code := send(t, target, requested, false); code != http.StatusOK {
		t.Fatalf("approval.requested (binary mode) answered %d, want 200", code)
	}
	decided := stepEvent(t, ActionDecided, stepData(ActionDecided, "bob@firm.example", "ACC-1001", "APR-3F2A9C0B1D4E5F607182", "approve: within the desk's limits"))
	if code := send(t, target, decided, true); code != http.StatusOK {
		t.Fatalf("approval.decided (structured mode) answered %d, want 200", code)
	}
	rejected := stepEvent(t, ActionDecided, stepData(ActionDecided, "carol@firm.example", "ACC-2002", "APR-MFRGGZDFMZTWQ2LK", "reject: "))
	if code := send(t, target, rejected, false); code != http.StatusOK {
		t.Fatalf("a rejection answered %d, want 200", code)
	}

	want := []string{
		"[live] Approval APR-3F2A9C0B1D4E5F607182 requested by alice@firm.example on account ACC-1001: " + link("APR-3F2A9C0B1D4E5F607182"),
		"[live] Approval APR-3F2A9C0B1D4E5F607182 approved by bob@firm.example on account ACC-1001 (reason: within the desk's limits): " + link("APR-3F2A9C0B1D4E5F607182"),
		"[live] Approval APR-MFRGGZDFMZTWQ2LK rejected by carol@firm.example on account ACC-2002: " + link("APR-MFRGGZDFMZTWQ2LK"),
	}
	got := hook.delivered()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("messages posted:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, c := range hook.attempts() {
		if c.path != secretPath || c.ctype != "application/json" {
			t.Errorf("webhook called on %q with Content-Type %q", c.path, c.ctype)
		}
	}
}

// TestTheServersOwnEventsAreNotified sends the events with the server's
// own audit trail (audit.Journal, as the approvals API records a decision)
// to the notifier, so the JSON contract is the real one.
func TestTheServersOwnEventsAreNotified(t *testing.T) {
	hook := newFakeWebhook(t)
	target, _ := startNotifier(t, testConfig(t, hook))
	a, err := audit.New(audit.Config{Sink: target, QueueSize: 4, CEOverrides: `{"extensions":{"tradingmode":"paper"}}`},
		telemetry.Revision{Service: "portfolio-mcp-paper", Revision: "portfolio-mcp-paper-00007"}, slog.New(slog.DiscardHandler), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())

	j := a.Journal()
	ctx := context.Background()
	if err := j.Record(ctx, audit.Step{Action: ActionRequested, Principal: "alice", AccountID: "ACC-1", ApprovalID: "APR-00FF00FF00FF00FF00FF"}); err != nil {
		t.Fatalf("the notifier did not acknowledge approval.requested: %v", err)
	}
	if err := j.RecordDone(ctx, audit.Step{Action: ActionDecided, Principal: "bob", AccountID: "ACC-1", ApprovalID: "APR-00FF00FF00FF00FF00FF", Detail: "reject: too large for the book"}); err != nil {
		t.Fatalf("the notifier did not acknowledge approval.decided: %v", err)
	}
	if err := j.Record(ctx, audit.Step{Action: "order.intent", Principal: "alice", AccountID: "ACC-1"}); err != nil {
		t.Fatalf("the notifier did not acknowledge an order.intent step it ignores: %v", err)
	}
	// carol's approval lost the race to bob's rejection (trading's
	// superseded records).
	if err := j.RecordDone(ctx, audit.Step{Action: ActionSuperseded, Principal: "carol", AccountID: "ACC-1", ApprovalID: "APR-00FF00FF00FF00FF00FF", Detail: "another decision or a cancellation took effect first"}); err != nil {
		t.Fatalf("the notifier did not acknowledge approval.decided.superseded: %v", err)
	}
	want := []string{
		"[paper] Approval APR-00FF00FF00FF00FF00FF requested by alice on account ACC-1: " + link("APR-00FF00FF00FF00FF00FF"),
		"[paper] Approval APR-00FF00FF00FF00FF00FF rejected by bob on account ACC-1 (reason: too large for the book): " + link("APR-00FF00FF00FF00FF00FF"),
		"[paper] Approval APR-00FF00FF00FF00FF00FF decision by carol did not take effect on account ACC-1 (reason: another decision or a cancellation took effect first): " + link("APR-00FF00FF00FF00FF00FF"),
	}
	if got := hook.delivered(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("messages posted:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestARequestInsideAToolCallIsNotified: the server names the tool as the
// subject of a step recorded during a tool call (place_order); the step in
// the data decides.
func TestARequestInsideAToolCallIsNotified(t *testing.T) {
	hook := newFakeWebhook(t)
	target, _ := startNotifier(t, testConfig(t, hook))
	data := stepData(ActionRequested, "alice", "ACC-1", "APR-ABCDEF0123456789ABCD", "")
	data["tool"], data["class"] = "place_order", "trade"
	if code := send(t, target, stepEvent(t, "place_order", data), false); code != http.StatusOK {
		t.Fatalf("answered %d, want 200", code)
	}
	if got := hook.delivered(); len(got) != 1 || !strings.Contains(got[0], "requested by alice") {
		t.Errorf("posted %q, want the request", got)
	}
}

func TestWebhookFailingTwiceThenSucceedingDeliversOnce(t *testing.T) {
	hook := newFakeWebhook(t, reply{status: 503, body: "unavailable"}, reply{status: 503, body: "unavailable"})
	target, logs := startNotifier(t, testConfig(t, hook))
	ev := stepEvent(t, ActionRequested, stepData(ActionRequested, "alice", "ACC-1", "APR-0123456789ABCDEF0123", ""))
	if code := send(t, target, ev, false); code != http.StatusOK {
		t.Fatalf("answered %d, want 200 after the webhook recovered", code)
	}
	if n := len(hook.attempts()); n != 3 {
		t.Errorf("webhook got %d attempts, want 3", n)
	}
	if got := hook.delivered(); len(got) != 1 {
		t.Errorf("webhook took %d messages, want exactly 1: %q", len(got), got)
	}
	if !strings.Contains(logs.String(), "webhook post failed; retrying") {
		t.Errorf("retries not logged:\n%s", logs)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	hook := newFakeWebhook(t, reply{status: http.StatusTooManyRequests, retryAfter: "1", body: "rate_limited"})
	target, _ := startNotifier(t, testConfig(t, hook))
	ev := stepEvent(t, ActionRequested, stepData(ActionRequested, "alice", "ACC-1", "APR-0123456789ABCDEF0123", ""))
	if code := send(t, target, ev, false); code != http.StatusOK {
		t.Fatalf("answered %d, want 200", code)
	}
	calls := hook.attempts()
	if len(calls) != 2 || len(hook.delivered()) != 1 {
		t.Fatalf("webhook got %d attempts (%d delivered), want 2 (1)", len(calls), len(hook.delivered()))
	}
	// The configured backoff is 1ms: only Retry-After explains a wait of
	// about a second.
	if gap := calls[1].at.Sub(calls[0].at); gap < 900*time.Millisecond {
		t.Errorf("retried %v after a 429 with Retry-After: 1", gap)
	}
}

func TestPermanentlyFailingWebhookAnswers503(t *testing.T) {
	var script []reply
	for range 3 {
		script = append(script, reply{status: http.StatusInternalServerError, body: "internal_error"})
	}
	hook := newFakeWebhook(t, script...)
	cfg := testConfig(t, hook)
	cfg.MaxAttempts = 3
	target, logs := startNotifier(t, cfg)
	ev := stepEvent(t, ActionDecided, stepData(ActionDecided, "bob", "ACC-1", "APR-0123456789ABCDEF0123", "approve: ok"))
	if code := send(t, target, ev, false); code != http.StatusServiceUnavailable {
		t.Fatalf("answered %d with the webhook down, want 503 so the Broker redelivers", code)
	}
	if n, d := len(hook.attempts()), len(hook.delivered()); n != 3 || d != 0 {
		t.Errorf("webhook got %d attempts, %d delivered; want 3 and 0", n, d)
	}
	if !strings.Contains(logs.String(), "after 3 attempts") || !strings.Contains(logs.String(), "internal_error") {
		t.Errorf("the failure is not logged with its cause:\n%s", logs)
	}
	// The webhook is back (its script is used up): the Broker's
	// redelivery of the same event posts it, once.
	if code := send(t, target, ev, false); code != http.StatusOK {
		t.Fatalf("redelivery answered %d, want 200", code)
	}
	if got := hook.delivered(); len(got) != 1 {
		t.Errorf("delivered %q, want one message", got)
	}
}

func TestClientErrorIsNotRetried(t *testing.T) {
	hook := newFakeWebhook(t, reply{status: http.StatusNotFound, body: "no_service"})
	target, logs := startNotifier(t, testConfig(t, hook))
	ev := stepEvent(t, ActionRequested, stepData(ActionRequested, "alice", "ACC-1", "APR-0123456789ABCDEF0123", ""))
	if code := send(t, target, ev, false); code != http.StatusServiceUnavailable {
		t.Fatalf("answered %d, want 503", code)
	}
	if n := len(hook.attempts()); n != 1 {
		t.Errorf("a 404 from the webhook was tried %d times, want once", n)
	}
	if !strings.Contains(logs.String(), "no_service") {
		t.Errorf("the webhook's error code is not logged:\n%s", logs)
	}
}

func TestRedeliveredEventPostsOnce(t *testing.T) {
	hook := newFakeWebhook(t)
	target, _ := startNotifier(t, testConfig(t, hook))
	ev := stepEvent(t, ActionRequested, stepData(ActionRequested, "alice", "ACC-1", "APR-0123456789ABCDEF0123", ""))
	for i, structured := range []bool{false, true, false} {
		if code := send(t, target, ev, structured); code != http.StatusOK {
			t.Fatalf("delivery %d answered %d, want 200", i+1, code)
		}
	}
	if got := hook.delivered(); len(got) != 1 {
		t.Fatalf("three deliveries of one event posted %d messages, want 1", len(got))
	}
	// Another event with the same content is another event.
	again := ev.Clone()
	again.SetID(uuid.NewString())
	if code := send(t, target, again, false); code != http.StatusOK {
		t.Fatalf("a new event answered %d", code)
	}
	if got := hook.delivered(); len(got) != 2 {
		t.Errorf("a new event id posted %d messages in all, want 2", len(got))
	}
}

// TestConcurrentRedeliveryPostsOnce delivers an event again while its
// first delivery is still waiting for the webhook: whichever order the two
// meet the notifier in, one message is posted and both are acknowledged.
func TestConcurrentRedeliveryPostsOnce(t *testing.T) {
	arrived, release := make(chan struct{}, 2), make(chan struct{})
	var mu sync.Mutex
	posted := 0
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		mu.Lock()
		posted++
		mu.Unlock()
	}))
	defer hook.Close()
	cfg := testConfig(t, nil)
	writeSecret(t, cfg.WebhookURLFile, hook.URL+secretPath)
	target, _ := startNotifier(t, cfg)
	ev := stepEvent(t, ActionRequested, stepData(ActionRequested, "alice", "ACC-1", "APR-0123456789ABCDEF0123", ""))

	type result struct {
		code int
		err  error
	}
	results := make(chan result, 2)
	for _, structured := range []bool{false, true} {
		go func() {
			code, err := deliver(target, ev, structured)
			results <- result{code, err}
		}()
		if !structured {
			<-arrived // the first delivery is at the webhook, waiting
		}
	}
	close(release)
	for range 2 {
		if r := <-results; r.err != nil || r.code != http.StatusOK {
			t.Errorf("a delivery answered %d %v, want 200", r.code, r.err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if posted != 1 {
		t.Errorf("posted %d times, want once", posted)
	}
}

func TestInjectionIsEscaped(t *testing.T) {
	hook := newFakeWebhook(t)
	target, _ := startNotifier(t, testConfig(t, hook))
	evil := "<!channel> <https://evil.example|click>"
	ev := stepEvent(t, ActionDecided, stepData(ActionDecided, evil, "ACC-1<!everyone>", "APR-0123456789ABCDEF0123",
		"approve: "+evil+" & <@U024BE7LH>\n[live] Approval APR-FAKE approved by the CEO\u202e"))
	if code := send(t, target, ev, false); code != http.StatusOK {
		t.Fatalf("answered %d, want 200", code)
	}
	got := hook.delivered()
	if len(got) != 1 {
		t.Fatalf("posted %d messages", len(got))
	}
	text := got[0]
	want := "[live] Approval APR-0123456789ABCDEF0123 approved by &lt;!channel&gt; &lt;https://evil.example|click&gt; on account ACC-1&lt;!everyone&gt; " +
		"(reason: &lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; &lt;@U024BE7LH&gt; [live] Approval APR-FAKE approved by the CEO): " + link("APR-0123456789ABCDEF0123")
	if text != want {
		t.Errorf("posted\n%s\nwant\n%s", text, want)
	}
	// Whatever the wording, the only mrkdwn control sequence is our link.
	if strings.Count(text, "<") != 1 || strings.Count(text, ">") != 1 || !strings.HasSuffix(text, link("APR-0123456789ABCDEF0123")) {
		t.Errorf("a field opened a mrkdwn sequence: %s", text)
	}
	if strings.ContainsAny(text, "\n\r\u202e") {
		t.Errorf("a field broke the line or reordered it: %q", text)
	}
}

func TestUnrelatedEventsAreAcknowledgedWithoutPosting(t *testing.T) {
	hook := newFakeWebhook(t)
	target, _ := startNotifier(t, testConfig(t, hook))
	data := stepData(ActionRequested, "alice", "ACC-1", "APR-0123456789ABCDEF0123", "")
	toolCall := stepEvent(t, "place_order", data)
	toolCall.SetType(audit.EventType)
	for name, ev := range map[string]cloudevents.Event{
		"a tool-call record": toolCall,
		"approval.cancelled": stepEvent(t, "approval.cancelled", stepData("approval.cancelled", "alice", "ACC-1", "APR-0123456789ABCDEF0123", "")),
		"order.executed":     stepEvent(t, "order.executed", stepData("order.executed", "alice", "ACC-1", "", "")),
		"an approval decision": func() cloudevents.Event {
			e := stepEvent(t, "", data)
			e.SetType("com.portfolio-mcp.approval.decided")
			return e
		}(),
		"an order.intent by id": stepEvent(t, ActionRequested, stepData("order.intent", "alice", "ACC-1", "", "")),
	} {
		if code := send(t, target, ev, false); code != http.StatusAccepted {
			t.Errorf("%s answered %d, want 202 (acknowledged, nothing to do)", name, code)
		}
	}
	if n := len(hook.attempts()); n != 0 {
		t.Errorf("webhook called %d times for events that are not approval requests or decisions", n)
	}
}

func TestBadApprovalIDIsRefused(t *testing.T) {
	hook := newFakeWebhook(t)
	target, _ := startNotifier(t, testConfig(t, hook))
	for _, id := range []string{"", "ORD-0123456789", "APR-", "APR-../../admin", "APR-ABCD|evil", "APR-ABCD>x", "APR-abcdef012345", "APR-ABCD EFGH", "APR-ABCD/../../x", strings.Repeat("APR-A", 40)} {
		ev := stepEvent(t, ActionRequested, stepData(ActionRequested, "alice", "ACC-1", id, ""))
		if code := send(t, target, ev, false); code != http.StatusBadRequest {
			t.Errorf("approval_id %q answered %d, want 400", id, code)
		}
	}
	bad := stepEvent(t, ActionRequested, nil)
	if err := bad.SetData(cloudevents.ApplicationJSON, []byte(`{"action": 7}`)); err != nil {
		t.Fatal(err)
	}
	if code := send(t, target, bad, false); code != http.StatusBadRequest {
		t.Errorf("undecodable data answered %d, want 400", code)
	}
	if n := len(hook.attempts()); n != 0 {
		t.Errorf("webhook called %d times for refused events", n)
	}
}

func TestNotACloudEventIsRefused(t *testing.T) {
	hook := newFakeWebhook(t)
	target, _ := startNotifier(t, testConfig(t, hook))
	resp, err := http.Post(target+"/", "application/json", strings.NewReader(`{"text":"<!channel>"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a plain JSON POST answered %d, want 400", resp.StatusCode)
	}
	resp, err = http.Get(target + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET / answered %d, want 405", resp.StatusCode)
	}
	if n := len(hook.attempts()); n != 0 {
		t.Errorf("webhook called %d times", n)
	}
}

func TestMissingOrUnsafeWebhookFileAnswers503(t *testing.T) {
	hook := newFakeWebhook(t)
	cfg := testConfig(t, nil) // no file yet
	target, logs := startNotifier(t, cfg)
	ev := stepEvent(t, ActionRequested, stepData(ActionRequested, "alice", "ACC-1", "APR-0123456789ABCDEF0123", ""))
	if code := send(t, target, ev, false); code != http.StatusServiceUnavailable {
		t.Fatalf("with no webhook file: %d, want 503", code)
	}
	if !strings.Contains(logs.String(), "WEBHOOK_URL_FILE") {
		t.Errorf("the missing file is not named in the log:\n%s", logs)
	}
	for name, content := range map[string]string{
		"empty":               "",
		"plain http, public":  "http://hooks.example.com" + secretPath,
		"not absolute":        secretPath,
		"another scheme":      "ftp://127.0.0.1" + secretPath,
		"unparseable":         "https://[::1" + secretPath,
		"http to a lookalike": "http://127.0.0.1.example.com" + secretPath,
	} {
		writeSecret(t, cfg.WebhookURLFile, content)
		if code := send(t, target, ev, false); code != http.StatusServiceUnavailable {
			t.Errorf("webhook file %s: %d, want 503", name, code)
		}
		os.Remove(cfg.WebhookURLFile)
	}
	if n := len(hook.attempts()); n != 0 {
		t.Fatalf("webhook called %d times", n)
	}
	// The Secret appears (External Secrets synced it): the Broker's next
	// redelivery is posted, without a restart.
	writeSecret(t, cfg.WebhookURLFile, hook.url())
	if code := send(t, target, ev, false); code != http.StatusOK {
		t.Fatalf("after the Secret appeared: %d, want 200", code)
	}
	if got := hook.delivered(); len(got) != 1 {
		t.Errorf("delivered %d messages, want 1", len(got))
	}
}

func TestRotatedWebhookURLApplies(t *testing.T) {
	before, after := newFakeWebhook(t), newFakeWebhook(t)
	cfg := testConfig(t, before)
	target, _ := startNotifier(t, cfg)
	first := stepEvent(t, ActionRequested, stepData(ActionRequested, "alice", "ACC-1", "APR-0123456789ABCDEF0123", ""))
	if code := send(t, target, first, false); code != http.StatusOK {
		t.Fatal(code)
	}
	// The kubelet replaces the mounted files atomically on rotation.
	tmp := cfg.WebhookURLFile + ".new"
	writeSecret(t, tmp, after.url())
	if err := os.Rename(tmp, cfg.WebhookURLFile); err != nil {
		t.Fatal(err)
	}
	second := stepEvent(t, ActionDecided, stepData(ActionDecided, "bob", "ACC-1", "APR-0123456789ABCDEF0123", "approve: ok"))
	if code := send(t, target, second, false); code != http.StatusOK {
		t.Fatal(code)
	}
	if b, a := len(before.delivered()), len(after.delivered()); b != 1 || a != 1 {
		t.Errorf("old webhook got %d, rotated one %d; want one each", b, a)
	}
}

// TestWebhookURLIsNeverLogged fails every way a post can fail with the
// debug log on, and looks for the URL's secret path in the log (every
// test also checks it when its notifier drains).
func TestWebhookURLIsNeverLogged(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL + secretPath
	down.Close() // connection refused from now on
	redirect := httptest.NewServer(http.RedirectHandler("https://elsewhere.example/", http.StatusFound))
	defer redirect.Close()
	slow := newFakeWebhook(t, reply{status: 503}, reply{status: 503}, reply{status: 503})

	cfg := testConfig(t, nil)
	cfg.LogLevel, cfg.MaxAttempts = "debug", 2
	target, logs := startNotifier(t, cfg)
	for i, u := range []string{downURL, redirect.URL + secretPath, slow.url(), "https://[::1" + secretPath, "http://example.com" + secretPath} {
		writeSecret(t, cfg.WebhookURLFile, u)
		ev := stepEvent(t, ActionRequested, stepData(ActionRequested, "alice", "ACC-1", "APR-0123456789ABCDEF0123", ""))
		if code := send(t, target, ev, false); code != http.StatusServiceUnavailable {
			t.Errorf("case %d answered %d, want 503", i, code)
		}
	}
	out := logs.String()
	if strings.Contains(out, secretPath) || strings.Contains(out, "s3cr3t") {
		t.Errorf("the webhook URL reached the log:\n%s", out)
	}
	for _, want := range []string{"webhook unreachable", "webhook answered 302", "webhook answered 503", "not https"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestProbesAndDrain(t *testing.T) {
	cfg := testConfig(t, nil)
	n, err := newNotifier(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, n, 5*time.Second) }()

	get := func(path string) (int, error) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, err := get(p); err != nil || code != http.StatusOK {
			t.Errorf("GET %s = %d %v, want 200", p, code, err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve after cancel: %v", err)
	}
	if n.ready.Load() {
		t.Error("still ready after draining began")
	}
	if _, err := get("/healthz"); err == nil {
		t.Error("still accepting connections after the drain")
	}
}

func TestRunValidatesTheEnvironment(t *testing.T) {
	for name, c := range map[string]struct {
		env  mapEnv
		want string
	}{
		"no CONSOLE_URL":           {mapEnv{}, "CONSOLE_URL"},
		"CONSOLE_URL not TLS":      {mapEnv{"CONSOLE_URL": "http://portfolio-mcp.example.com"}, "must be https"},
		"CONSOLE_URL with a query": {mapEnv{"CONSOLE_URL": consoleURL + "/?x=1"}, "without credentials, query or fragment"},
		"bad timeout":              {mapEnv{"CONSOLE_URL": consoleURL, "WEBHOOK_TIMEOUT": "0s"}, "WEBHOOK_TIMEOUT"},
		"no attempts":              {mapEnv{"CONSOLE_URL": consoleURL, "WEBHOOK_MAX_ATTEMPTS": "0"}, "WEBHOOK_MAX_ATTEMPTS"},
		"bad log level":            {mapEnv{"CONSOLE_URL": consoleURL, "LOG_LEVEL": "loud"}, "LOG_LEVEL"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), nil, c.env, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%s: exit %d, stderr %q; want 2 naming %q", name, code, stderr.String(), c.want)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, mapEnv{}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "WEBHOOK_URL_FILE") {
		t.Errorf("--help: exit %d, %q", code, stdout.String())
	}
}

// TestRunServesAndDrains runs the binary's run on a free port until it is
// told to stop, and checks it drains cleanly and warns about a missing
// webhook file at start.
func TestRunServesAndDrains(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // SIGTERM before the first request: start, then drain at once
	var stdout, stderr bytes.Buffer
	env := mapEnv{"CONSOLE_URL": consoleURL, "PORT": "0", "WEBHOOK_URL_FILE": filepath.Join(t.TempDir(), "missing"), "K_SERVICE": "portfolio-mcp-live-notifier"}
	if code := run(ctx, nil, env, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s %s", code, stdout.String(), stderr.String())
	}
	for _, want := range []string{`"msg":"notifier serving"`, `"k_service":"portfolio-mcp-live-notifier"`, "answered 503 until the webhook URL file is fixed", `"msg":"notifier drained"`} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, stdout.String())
		}
	}
}

// Example_approvalRequested shows the message for an approval request.
func Example_approvalRequested() {
	console, _ := consoleBase("https://portfolio-mcp-live.portfolio-mcp.example.com")
	ev := cloudevents.NewEvent()
	ev.SetID("1")
	ev.SetSource("/portfolio-mcp/portfolio-mcp-live")
	ev.SetType(StepEventType)
	ev.SetSubject(ActionRequested)
	_ = ev.SetData(cloudevents.ApplicationJSON, map[string]any{
		"action": ActionRequested, "principal": "alice <!here>", "approval_id": "APR-0A1B2C3D4E5F60718293",
		"args": map[string]any{"account_id": "ACC-1001"},
	})
	msg, err := approvalMessage(ev, console)
	fmt.Println(msg.text, err)
	// Output: Approval APR-0A1B2C3D4E5F60718293 requested by alice &lt;!here&gt; on account ACC-1001: <https://portfolio-mcp-live.portfolio-mcp.example.com/console/approvals/APR-0A1B2C3D4E5F60718293|open in the approvals console> <nil>
}

// TestUndeliveredDecisionsAreNotified: the approvals Trigger dead-letters a
// decision the server refused for good (422, with its reason) or never
// took within the Broker's retries; the approver is told it did not take
// effect and to decide again. The decision is the server's own type.
func TestUndeliveredDecisionsAreNotified(t *testing.T) {
	if DecisionEventType != approvals.EventType {
		t.Fatalf("DecisionEventType %q, the server's is %q", DecisionEventType, approvals.EventType)
	}
	hook := newFakeWebhook(t)
	target, _ := startNotifier(t, testConfig(t, hook))
	dead := func(decision, code, body string) cloudevents.Event {
		ev := cloudevents.NewEvent()
		ev.SetID(uuid.NewString())
		ev.SetType(approvals.EventType)
		ev.SetSource("urn:portfolio-mcp:approvals")
		ev.SetExtension("tradingmode", "live")
		ev.SetExtension("knativeerrordest", "http://portfolio-mcp-live.portfolio-mcp.svc.cluster.local/events/approvals")
		if code != "" {
			ev.SetExtension("knativeerrorcode", code)
		}
		if body != "" {
			ev.SetExtension("knativeerrordata", base64.StdEncoding.EncodeToString([]byte(body)))
		}
		if err := ev.SetData(cloudevents.ApplicationJSON, approvals.Decision{ApprovalID: "APR-3F2A9C0B1D4E5F607182", Decision: decision, Approver: "bob@firm.example", Reason: "ok"}); err != nil {
			t.Fatal(err)
		}
		return ev
	}
	for _, ev := range []cloudevents.Event{
		dead("approve", "422", `{"error":"trading is halted <!channel>"}`),
		dead("reject", "503", ""),
		dead("approve", "", ""),
	} {
		if code := send(t, target, ev, false); code != http.StatusOK {
			t.Fatalf("dead letter answered %d, want 200", code)
		}
	}
	l := link("APR-3F2A9C0B1D4E5F607182")
	want := []string{
		"[live] Approval APR-3F2A9C0B1D4E5F607182: the decision to approve by bob@firm.example was refused by the server (HTTP 422: trading is halted &lt;!channel&gt;) and did not take effect; decide again: " + l,
		"[live] Approval APR-3F2A9C0B1D4E5F607182: the decision to reject by bob@firm.example did not reach the server (HTTP 503 after the Broker's retries) and did not take effect; decide again: " + l,
		"[live] Approval APR-3F2A9C0B1D4E5F607182: the decision to approve by bob@firm.example did not reach the server within the Broker's retries and did not take effect; decide again: " + l,
	}
	if got := hook.delivered(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("messages posted:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
