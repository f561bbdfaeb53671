package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/backends/fake"
	"github.com/portfolio-mcp/portfolio-mcp/backends/faults"
	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/proctest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/redistest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
)

// The chaos test's shape. BACKEND_TIMEOUT is also the read deadline the
// test holds every read to, Redis frozen or not.
const (
	chaosReplicas   = 3 // slot 0 is never killed: the reads' replica
	chaosWorkers    = 6
	chaosOrders     = 60
	chaosDuration   = 20 * time.Second
	chaosBackendTTL = time.Second
	chaosAudience   = "http://127.0.0.1/mcp"
)

// TestChaosTrading runs several real server processes on one real Redis
// (AOF on, as docs/deploy.md requires) and the fakes over HTTP, with a
// workload of concurrent orders (unique keys, retried across replicas with
// the same key) while it SIGKILLs replicas (also right after the Trade
// service accepted an order), SIGTERMs one, freezes Redis and makes it
// refuse connections, and loses Trade answers after acceptance. Then it
// checks what an agent and an auditor rely on:
//
//   - one Trade order per key that was ever sent, and no order without a key
//     that owns it;
//   - every answer for a key agrees with the Trade service's record (never
//     "not placed" for an order that exists; the final answer is the
//     order's state);
//   - every approved order executed exactly once, no rejected one at all;
//   - no read failed or took longer than BACKEND_TIMEOUT, Redis frozen or not;
//   - only the replicas the test killed exited.
//
// PORTFOLIO_MCP_CHAOS_SEED replays a schedule (the seed is printed).
func TestChaosTrading(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: about a minute")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("PORTFOLIO_MCP_CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("PORTFOLIO_MCP_CHAOS_SEED: %v", err)
		}
	}
	t.Logf("chaos seed %d (PORTFOLIO_MCP_CHAOS_SEED=%d replays this schedule)", seed, seed)
	c := newChaos(t, seed)
	for slot := range chaosReplicas {
		if err := c.start(slot); err != nil {
			t.Fatal(err)
		}
	}

	c.specs = c.orders()
	work := make(chan orderSpec)
	var workers sync.WaitGroup
	for w := range chaosWorkers {
		rng := rand.New(rand.NewPCG(seed, uint64(w)+1))
		workers.Go(func() {
			for s := range work {
				c.place(s, rng)
			}
		})
	}
	readsDone := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() { c.read(readsDone) })
	approver := make(chan struct{})
	var approvers sync.WaitGroup
	approvers.Go(func() { c.approve(approver, rand.New(rand.NewPCG(seed, 99))) })

	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		defer close(work)
		for _, s := range c.specs {
			work <- s
			time.Sleep(chaosDuration / chaosOrders) // spread the orders over the chaos
		}
	}()
	c.schedule(seed) // runs the faults for chaosDuration, in this goroutine
	<-feedDone
	workers.Wait()
	close(approver)
	approvers.Wait()
	close(readsDone)
	readers.Wait()

	c.settle()
	c.check()
}

// orderSpec is one order the workload places under its own key.
type orderSpec struct {
	key     string
	kind    string // market, limit, sell, approval, tight
	args    map[string]any
	version string
}

// answer is what one call told the agent.
type answer struct {
	out trading.Outcome
	at  time.Time
}

type chaos struct {
	t       *testing.T
	bin     string
	rds     *redistest.Server
	iss     *oauthtest.Issuer
	book    *demo.Backend
	inj     *faults.Injector
	alice   string // trader's token
	bob     string // approver's token
	reader  string
	baseEnv []string
	specs   []orderSpec // the workload, made once

	mu        sync.Mutex
	slots     [chaosReplicas]*replica
	gates     [chaosReplicas]*gate
	answers   map[string][]answer // by key
	final     map[string]trading.Outcome
	kinds     map[string]string // key -> kind
	approvals map[string]string // approval id -> key
	decided   map[string]string // approval id -> decision that was acknowledged
	undecided []string          // approval ids waiting for the approver
	problems  []string
	counts    map[string]int
	freezeMax time.Duration // slowest read while Redis was frozen
	frozen    atomic.Bool
	lostTight atomic.Int64 // tight orders whose first answer was lost
}

func newChaos(t *testing.T, seed uint64) *chaos {
	bin := buildServer(t)
	c := &chaos{
		t: t, bin: bin, book: demo.New(nil),
		// AOF with fsync on every write: a Redis that restarts keeps what
		// it acknowledged (docs/deploy.md), so "refuses connections" is a
		// fault of its own, apart from data loss.
		rds:     redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always", "--dir", t.TempDir()),
		iss:     oauthtest.New(t),
		answers: map[string][]answer{}, final: map[string]trading.Outcome{}, kinds: map[string]string{},
		approvals: map[string]string{}, decided: map[string]string{}, counts: map[string]int{},
	}
	c.alice = c.iss.Token(t, c.iss.Claims("alice", chaosAudience, "portfolio:read trade:write", append([]string{"ACC-2001"}, tightAccounts...)...))
	c.bob = c.iss.Token(t, c.iss.Claims("bob", chaosAudience, "portfolio:read trade:approve", "*"))
	c.reader = c.iss.Token(t, c.iss.Claims("rita", chaosAudience, "portfolio:read", "ACC-2001"))

	c.inj = faults.New(fake.Routes())
	contract, err := fake.New(c.book.Set(), fake.Options{Wrap: c.inj.Wrap})
	if err != nil {
		t.Fatal(err)
	}
	lost := &sync.Map{}
	for i := range c.gates {
		// Each replica has a Trade endpoint of its own (one book behind all
		// of them), so the test knows whose order it is holding.
		c.gates[i] = &gate{next: contract, accepted: make(chan struct{}, 1), lost: lost, lose: &c.lostTight}
		srv := httptest.NewServer(c.gates[i])
		c.gates[i].url = srv.URL
		t.Cleanup(srv.Close)
	}
	c.baseEnv = append(os.Environ(), "LOG_LEVEL=warn", "REDIS_URL="+c.rds.URL(),
		"OAUTH_ISSUER="+c.iss.URL, "PUBLIC_URL="+chaosAudience,
		"ENFORCE_MARKET_HOURS=false", "MAX_POSITION_WEIGHT=1", "APPROVAL_NOTIONAL=50000",
		"BACKEND_TIMEOUT="+chaosBackendTTL.String(), "BACKEND_BREAKER_FAILURES=1000", "EXECUTION_LEASE=2s",
		"RATE_TRADE_PER_MINUTE=100000", "RATE_TRADE_BURST=1000", "RATE_READ_BURST=1000", "RATE_READ_PER_SECOND=1000",
		"DRAIN_TIMEOUT=10s",
		"SECRET_REQUEST_STATE_KEY=chaos-test-request-state-key-0123456789",
		"SECRET_APPROVAL_EVENT_KEY=chaos-test-approval-event-key-0123456789")
	return c
}

// gate is one replica's way to the fakes. Armed, it lets the Trade service
// accept the next order and then holds the answer until the replica dies.
// It always loses the answer to the first acceptance of a tight order.
type gate struct {
	next     http.Handler
	url      string
	armed    atomic.Bool
	accepted chan struct{}
	lost     *sync.Map // client order ids whose first answer was lost (shared)
	lose     *atomic.Int64
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/orders" {
		g.next.ServeHTTP(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	var req backends.OrderRequest
	json.Unmarshal(body, &req)
	if !g.armed.CompareAndSwap(true, false) {
		rec := httptest.NewRecorder()
		g.next.ServeHTTP(rec, r)
		if _, seen := g.lost.LoadOrStore(req.ClientOrderID, true); !seen && rec.Code == http.StatusOK && slices.Contains(tightAccounts, req.AccountID) {
			g.lose.Add(1)
			panic(http.ErrAbortHandler) // accepted, and the answer is lost
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
		return
	}
	rec := httptest.NewRecorder()
	g.next.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		g.armed.Store(true) // refused: wait for an order that is accepted
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
		return
	}
	select {
	case g.accepted <- struct{}{}:
	default: // a signal nobody took is still waiting
	}
	<-r.Context().Done() // the replica is killed waiting for this answer
}

// replica is one server process in a slot.
type replica struct {
	slot     int
	cmd      *exec.Cmd
	url      string
	exited   chan struct{}
	exitErr  error
	expected atomic.Bool // the test signalled it

	mu       sync.Mutex
	sessions map[string]*mcp.ClientSession // by token and protocol version
}

func (c *chaos) start(slot int) error {
	port := freePort(c.t)
	logf, err := os.Create(filepath.Join(c.t.TempDir(), fmt.Sprintf("replica-%d-%d.log", slot, port)))
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin)
	g := c.gates[slot]
	cmd.Env = append(slices.Clone(c.baseEnv), "PORT="+strconv.Itoa(port),
		"PORTFOLIO_URL="+g.url, "TRADE_URL="+g.url, "RISK_URL="+g.url)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	r := &replica{slot: slot, cmd: cmd, url: fmt.Sprintf("http://127.0.0.1:%d", port), exited: make(chan struct{}), sessions: map[string]*mcp.ClientSession{}}
	go func() {
		r.exitErr = cmd.Wait()
		logf.Close()
		close(r.exited)
		if !r.expected.Load() {
			c.problem("replica in slot %d (%s) exited on its own: %v (log %s)", slot, r.url, r.exitErr, logf.Name())
		}
	}()
	c.t.Cleanup(func() { r.expected.Store(true); cmd.Process.Kill(); <-r.exited })
	if err := proctest.PollReady(r.url, r.exited); err != nil {
		return fmt.Errorf("replica %d: %w (log %s)", slot, err, logf.Name())
	}
	c.mu.Lock()
	c.slots[slot] = r
	c.mu.Unlock()
	return nil
}

func (c *chaos) problem(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

func (c *chaos) count(what string, n int) {
	c.mu.Lock()
	c.counts[what] += n
	c.mu.Unlock()
}

// live returns the replica in a slot, or nil while it is down.
func (c *chaos) live(slot int) *replica {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slots[slot]
}

func (c *chaos) anyLive(rng *rand.Rand) *replica {
	for range 2 * chaosReplicas {
		if r := c.live(rng.IntN(chaosReplicas)); r != nil {
			return r
		}
	}
	return c.live(0)
}

// call calls a tool on r as the holder of token.
func (r *replica) call(ctx context.Context, token, version, tool string, args map[string]any) (*mcp.CallToolResult, error) {
	key := version + " " + token
	r.mu.Lock()
	cs := r.sessions[key]
	r.mu.Unlock()
	if cs == nil {
		client := mcp.NewClient(&mcp.Implementation{Name: "chaos-agent", Version: "1"}, nil)
		var err error
		cs, err = client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: r.url + "/mcp", HTTPClient: bearerClient(token), MaxRetries: -1},
			&mcp.ClientSessionOptions{ProtocolVersion: version})
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.sessions[key] = cs
		r.mu.Unlock()
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		r.mu.Lock()
		delete(r.sessions, key)
		r.mu.Unlock()
		cs.Close()
	}
	return res, err
}

func bearerClient(token string) *http.Client {
	return &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+token)
		return http.DefaultTransport.RoundTrip(r)
	})}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// tightAccounts hold the workload's "tight" orders: buys of 70% of the
// cash, sells of a whole position. Re-checked against its own fill, each
// would be refused, so the gates lose the first answer of every one of
// them (the Trade service accepted; the replica never hears).
var tightAccounts = []string{"ACC-1001", "ACC-1002", "ACC-1003", "ACC-2002"}

// orders is the workload: fills, resting limit orders, sells, orders that
// wait for an approver, and the tight orders (the same list every time).
func (c *chaos) orders() []orderSpec {
	rng := rand.New(rand.NewPCG(1, 2))
	ctx := c.t.Context()
	var specs []map[string]any
	var kinds []string
	for i, acct := range tightAccounts {
		pv, err := c.book.GetPortfolio(ctx, acct)
		if err != nil {
			c.t.Fatal(err)
		}
		buy := []string{"INTC", "KO", "PFE", "T"}[i]
		q, err := c.book.Quotes(ctx, []string{buy})
		if err != nil || len(q.Quotes) != 1 {
			c.t.Fatalf("quote %s: %v", buy, err)
		}
		specs = append(specs, map[string]any{"account_id": acct, "ticker": buy, "side": "buy", "quantity": int(0.7 * pv.Cash / q.Quotes[0].Ask)})
		kinds = append(kinds, "tight buy")
		for _, h := range pv.Holdings[:min(2, len(pv.Holdings))] {
			specs = append(specs, map[string]any{"account_id": acct, "ticker": h.Ticker, "side": "sell", "quantity": h.Quantity})
			kinds = append(kinds, "tight sell")
		}
	}
	ko, err := c.book.Quotes(ctx, []string{"KO"})
	if err != nil {
		c.t.Fatal(err)
	}
	for len(specs) < chaosOrders {
		a := map[string]any{"account_id": "ACC-2001", "ticker": "KO", "side": "buy", "quantity": 1 + rng.IntN(20)}
		switch p := rng.IntN(100); {
		case p < 50:
			kinds = append(kinds, "market")
			a["ticker"] = []string{"KO", "AAPL", "MSFT", "JPM"}[rng.IntN(4)]
		case p < 65:
			kinds = append(kinds, "limit")
			a["order_type"], a["limit_price"] = "limit", float64(int(ko.Quotes[0].Ask*80))/100
		case p < 80:
			kinds = append(kinds, "sell")
			a["ticker"], a["side"], a["quantity"] = "AAPL", "sell", 1+rng.IntN(10)
		default:
			kinds = append(kinds, "approval")
			a["quantity"] = 1000 // about 63k of KO, above APPROVAL_NOTIONAL
		}
		specs = append(specs, a)
	}
	order := rng.Perm(len(specs))
	versions := []string{"2025-06-18", "2025-11-25", "2026-07-28"}
	out := make([]orderSpec, len(specs))
	for i, j := range order {
		key := fmt.Sprintf("chaos-%03d", i)
		specs[j]["idempotency_key"], specs[j]["confirm"] = key, true
		out[i] = orderSpec{key: key, kind: kinds[j], args: specs[j], version: versions[i%len(versions)]}
	}
	return out
}

// place places one order until it gets a definitive answer, retrying with
// the same key on any replica after every failure, as a careful agent does.
func (c *chaos) place(s orderSpec, rng *rand.Rand) {
	c.mu.Lock()
	c.kinds[s.key] = s.kind
	c.mu.Unlock()
	giveUp := time.Now().Add(chaosDuration + 10*time.Second)
	for attempt := 0; time.Now().Before(giveUp); attempt++ {
		if attempt > 0 {
			c.count("retries", 1)
			time.Sleep(time.Duration(50+rng.IntN(150)) * time.Millisecond) // the agent's backoff
		}
		r := c.anyLive(rng)
		if r == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		res, err := r.call(ctx, c.alice, s.version, "place_order", s.args)
		cancel()
		if err != nil {
			continue // the replica died or the call timed out: retry elsewhere
		}
		if res.IsError {
			text := toolText(res)
			if strings.Contains(text, "different order") || !strings.Contains(text, "idempotency_key") && !strings.Contains(text, "retry") {
				c.problem("%s: a refusal an agent cannot act on: %q", s.key, text)
				return
			}
			continue
		}
		out := decode(res)
		c.record(s.key, out)
		if out.Status == trading.StatusPendingApproval && out.Approval != nil {
			c.mu.Lock()
			if _, seen := c.approvals[out.Approval.ID]; !seen {
				c.approvals[out.Approval.ID] = s.key
				c.undecided = append(c.undecided, out.Approval.ID)
			}
			c.mu.Unlock()
		}
		return
	}
	c.count("gave up during chaos", 1)
}

func (c *chaos) record(key string, out trading.Outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answers[key] = append(c.answers[key], answer{out: out, at: time.Now()})
}

func toolText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, ct := range res.Content {
		if tc, ok := ct.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func decode(res *mcp.CallToolResult) trading.Outcome {
	var out trading.Outcome
	b, _ := json.Marshal(res.StructuredContent)
	json.Unmarshal(b, &out)
	return out
}

// approve decides every approval the workload made: four in five approved.
func (c *chaos) approve(stop <-chan struct{}, rng *rand.Rand) {
	for {
		c.mu.Lock()
		var id string
		if len(c.undecided) > 0 {
			id, c.undecided = c.undecided[0], c.undecided[1:]
		}
		c.mu.Unlock()
		if id == "" {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				continue
			}
		}
		decision := "approve"
		if rng.IntN(5) == 0 {
			decision = "reject"
		}
		if !c.decide(id, decision, rng, time.Now().Add(chaosDuration)) {
			c.mu.Lock()
			c.undecided = append(c.undecided, id) // settle decides it
			c.mu.Unlock()
		}
	}
}

// decide posts a decision until a replica acknowledges it (a repeat of
// the same decision by the same approver is acknowledged too).
func (c *chaos) decide(id, decision string, rng *rand.Rand, until time.Time) bool {
	body, _ := json.Marshal(map[string]string{"decision": decision, "reason": "chaos test"})
	for time.Now().Before(until) {
		r := c.anyLive(rng)
		if r == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.url+"/approvals/"+id+"/decision", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := bearerClient(c.bob).Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			switch {
			// 202: an approve that took effect whose order is not sent yet
			// (the Trade service, or the store, did not answer): settle's
			// replay of the key drives it out, and the check requires an
			// order (or a failed approval) for it.
			case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusAccepted && decision == "approve":
				c.mu.Lock()
				c.decided[id] = decision
				c.mu.Unlock()
				c.count(map[string]string{"approve": "approved", "reject": "rejected"}[decision], 1)
				return true
			case resp.StatusCode < 500:
				c.problem("decision %s on %s: HTTP %d", decision, id, resp.StatusCode)
				return true
			}
		}
		time.Sleep(time.Duration(50+rng.IntN(150)) * time.Millisecond)
	}
	return false
}

// read reads all the time on the replica that is never killed, each read
// held to BACKEND_TIMEOUT: with Redis frozen, refused or fine, no read may
// fail or take longer.
func (c *chaos) read(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		r := c.live(0)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), chaosBackendTTL)
		res, err := r.call(ctx, c.reader, "2025-11-25", "get_portfolio", map[string]any{"account_id": "ACC-2001"})
		cancel()
		took := time.Since(start)
		c.count("reads", 1)
		switch {
		case err != nil:
			c.problem("read failed (Redis frozen: %v): %v", c.frozen.Load(), err)
		case res.IsError:
			c.problem("read refused (Redis frozen: %v): %s", c.frozen.Load(), toolText(res))
		}
		if c.frozen.Load() {
			c.mu.Lock()
			c.freezeMax = max(c.freezeMax, took)
			c.counts["reads while Redis frozen"]++
			c.mu.Unlock()
		}
	}
}

// schedule runs the faults, each kind at least once, in a seeded order,
// for chaosDuration.
func (c *chaos) schedule(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	kinds := []string{"kill", "kill-after-accept", "sigterm", "freeze-redis", "redis-refuses", "lose-answers"}
	end := time.Now().Add(chaosDuration)
	var plan []string
	for time.Now().Before(end) {
		if len(plan) == 0 {
			plan = slices.Clone(kinds)
			rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
		}
		kind := plan[0]
		plan = plan[1:]
		c.fault(kind, rng)
		c.count("fault "+kind, 1)
		time.Sleep(time.Duration(300+rng.IntN(600)) * time.Millisecond)
	}
	c.inj.Reset()
}

func (c *chaos) fault(kind string, rng *rand.Rand) {
	t := c.t
	victim := 1 + rng.IntN(chaosReplicas-1)
	switch kind {
	case "kill":
		c.stop(victim, syscall.SIGKILL)
	case "kill-after-accept":
		g := c.gates[victim]
		g.armed.Store(true)
		select {
		case <-g.accepted:
			c.count("killed after the Trade service accepted", 1)
		case <-time.After(3 * time.Second):
			g.armed.Store(false)
		}
		c.stop(victim, syscall.SIGKILL)
	case "sigterm":
		c.stop(victim, syscall.SIGTERM)
	case "freeze-redis":
		c.rds.Freeze()
		c.frozen.Store(true)
		time.Sleep(1500 * time.Millisecond)
		c.frozen.Store(false)
		c.rds.Thaw()
		return
	case "redis-refuses":
		c.rds.Stop()
		time.Sleep(time.Second)
		c.rds.Restart()
		return
	case "lose-answers":
		if err := c.inj.Set(faults.Fault{Route: "POST /v1/orders", Drop: true, After: true, Times: 2}); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := c.start(victim); err != nil {
		t.Fatal(err)
	}
}

// stop signals the replica in slot; a SIGTERMed one must drain and exit 0.
func (c *chaos) stop(slot int, sig syscall.Signal) {
	c.mu.Lock()
	r := c.slots[slot]
	c.slots[slot] = nil
	c.mu.Unlock()
	r.expected.Store(true)
	if err := r.cmd.Process.Signal(sig); err != nil {
		c.t.Fatal(err)
	}
	select {
	case <-r.exited:
	case <-time.After(30 * time.Second):
		c.t.Fatalf("replica %d did not exit within 30s of %v", slot, sig)
	}
	if sig == syscall.SIGTERM && r.exitErr != nil {
		c.problem("replica %d exited with %v after SIGTERM, want a clean drain (exit 0)", slot, r.exitErr)
	}
}

// settle asks once more, faults over, for every key's outcome (a retry
// with the same key on the stable replica), deciding what the approver
// could not, until no answer is in flight.
func (c *chaos) settle() {
	rng := rand.New(rand.NewPCG(3, 4))
	c.mu.Lock()
	pending := slices.Clone(c.undecided)
	c.mu.Unlock()
	for _, id := range pending {
		if !c.decide(id, "approve", rng, time.Now().Add(20*time.Second)) {
			c.problem("approval %s could not be decided after the faults ended", id)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range c.specs {
		c.mu.Lock()
		as := c.answers[s.key]
		c.mu.Unlock()
		if len(as) > 0 && len(as[len(as)-1].out.Violations) > 0 {
			continue // refused by pre-trade checks: an agent does not retry that
		}
		for {
			var out trading.Outcome
			var text string
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			res, err := c.live(0).call(ctx, c.alice, "2025-11-25", "place_order", s.args)
			cancel()
			if err == nil {
				out, text = decode(res), toolText(res)
			}
			if err == nil && !res.IsError && out.Status != trading.StatusApproved {
				c.record(s.key, out)
				c.mu.Lock()
				c.final[s.key] = out
				c.mu.Unlock()
				break
			}
			if time.Now().After(deadline) {
				c.problem("%s: no settled answer after the faults ended: %v %s %+v", s.key, err, text, out)
				break
			}
			time.Sleep(100 * time.Millisecond) // an execution lease of a killed replica is running out
		}
	}
}

// check compares every answer with the Trade service's record.
func (c *chaos) check() {
	t := c.t
	orders := map[string]backends.Order{}
	for _, o := range c.book.Orders() {
		orders[o.OrderID] = o
	}
	owner := map[string]string{} // order id -> key
	for key, f := range c.final {
		if f.Order == nil {
			continue
		}
		o, ok := orders[f.Order.OrderID]
		switch {
		case !ok:
			c.problem("%s: answered with order %s, which the Trade service does not hold", key, f.Order.OrderID)
		case owner[o.OrderID] != "":
			c.problem("order %s is the answer of both %s and %s", o.OrderID, owner[o.OrderID], key)
		case o.Status != f.Status || o.FilledQuantity != f.Order.FilledQuantity:
			c.problem("%s: final answer %s (%g filled), the Trade service says %s (%g filled)", key, f.Status, f.Order.FilledQuantity, o.Status, o.FilledQuantity)
		case f.Status == "executed":
			c.problem("%s: reported as executed", key)
		}
		owner[o.OrderID] = key
	}
	for id, o := range orders {
		if owner[id] == "" {
			c.problem("order %s (%s %g %s) exists at the Trade service, but no key's answer names it: an agent was told it was not placed",
				id, o.Side, o.Quantity, o.Ticker)
		}
	}
	for key, as := range c.answers {
		f := c.final[key]
		for _, a := range as {
			switch {
			case a.out.Order != nil && (f.Order == nil || a.out.Order.OrderID != f.Order.OrderID):
				c.problem("%s: an answer named order %s, the final one %+v", key, a.out.Order.OrderID, f.Order)
			case len(a.out.Violations) > 0 && f.Order != nil:
				c.problem("%s: answered rejected (%v) for order %s, which exists", key, a.out.Violations, f.Order.OrderID)
			case a.out.Status == backends.StatusFilled && (f.Order == nil || orders[f.Order.OrderID].Status != backends.StatusFilled):
				c.problem("%s: answered filled, the Trade service disagrees", key)
			}
		}
	}
	for id, key := range c.approvals {
		f := c.final[key]
		switch c.decided[id] {
		case "approve":
			if f.Order == nil && (f.Approval == nil || f.Approval.Status != trading.ApprovalFailed) {
				c.problem("approval %s (%s) was approved and did not execute: %+v", id, key, f)
			}
		case "reject":
			if f.Order != nil {
				c.problem("approval %s (%s) was rejected and executed as %s", id, key, f.Order.OrderID)
			}
		}
	}
	c.count("keys", len(c.kinds))
	c.count("answers", func() (n int) {
		for _, as := range c.answers {
			n += len(as)
		}
		return n
	}())
	c.count("trade orders", len(orders))
	c.count("tight orders' answers lost", int(c.lostTight.Load()))
	var counts []string
	for k, v := range c.counts {
		counts = append(counts, fmt.Sprintf("%s=%d", k, v))
	}
	slices.Sort(counts)
	t.Logf("chaos counts: %s; slowest read while Redis was frozen: %s", strings.Join(counts, " "), c.freezeMax.Round(time.Millisecond))
	for _, p := range c.problems {
		t.Error(p)
	}
}
