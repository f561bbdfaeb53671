package httpclient_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/backends/fake"
	"github.com/portfolio-mcp/portfolio-mcp/backends/faults"
	"github.com/portfolio-mcp/portfolio-mcp/backends/httpclient"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

// countingHandler counts requests and answers the n-th (from 1) with
// respond; nil respond answers an empty account list.
type countingHandler struct {
	n       atomic.Int64
	respond func(n int64, w http.ResponseWriter, r *http.Request)
}

func (h *countingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := h.n.Add(1)
	if h.respond == nil {
		okAccounts(w)
		return
	}
	h.respond(n, w, r)
}

func (h *countingHandler) count() int64 { return h.n.Load() }

func okAccounts(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"accounts":[{"account_id":"ACC-1","name":"A","type":"ira","owner":"O","base_currency":"USD"}]}`)
}

func fail(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`, code, msg)
}

// portfolioAt starts h and returns a Portfolio client of it.
func portfolioAt(t *testing.T, h http.Handler, o httpclient.Options) (*httpclient.Portfolio, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	p, err := httpclient.NewPortfolio(srv.URL, o)
	if err != nil {
		t.Fatal(err)
	}
	return p, srv
}

func TestReadsRetriedOnTransientFailures(t *testing.T) {
	for _, status := range []int{500, 502, 503, 504, 429} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			h := &countingHandler{respond: func(n int64, w http.ResponseWriter, r *http.Request) {
				if n <= 2 {
					fail(w, status, "unavailable", "try later")
					return
				}
				okAccounts(w)
			}}
			p, _ := portfolioAt(t, h, httpclient.Options{Retries: 2, Timeout: 10 * time.Second})
			accts, err := p.ListAccounts(t.Context())
			if err != nil || len(accts) != 1 {
				t.Fatalf("ListAccounts = %v, %v; want success on the third attempt", accts, err)
			}
			if h.count() != 3 {
				t.Errorf("%d requests, want 3", h.count())
			}
		})
	}
}

func TestRetryBudgetExhausted(t *testing.T) {
	h := &countingHandler{respond: func(n int64, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, "panic: runtime error at /src/internal/secret.go:12 token=abc")
	}}
	p, srv := portfolioAt(t, h, httpclient.Options{Retries: 2, Timeout: 10 * time.Second})
	_, err := p.GetPortfolio(t.Context(), "ACC-1001")
	if !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrUnavailable (not a deadline)", err)
	}
	if h.count() != 3 {
		t.Errorf("%d requests, want 1 + 2 retries", h.count())
	}
	for _, leak := range []string{srv.Listener.Addr().String(), "secret.go", "token", "panic"} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("error %q leaks %q", err, leak)
		}
	}
}

func TestAnswersNotRetried(t *testing.T) {
	cases := []struct {
		name   string
		status int
		code   string
		msg    string
		want   error
		text   string // exact error text, when it is what the agent sees
	}{
		{"not found", 404, "not_found", "account not found", backends.ErrNotFound, ""},
		{"invalid", 400, "invalid", "limit must be between 1 and 100", backends.ErrInvalid, "invalid request: limit must be between 1 and 100"},
		{"conflict", 409, "invalid", "client_order_id was used for another order", backends.ErrInvalid, "invalid request: client_order_id was used for another order"},
		{"invalid with a URL", 400, "invalid", "see http://10.0.0.7/docs", backends.ErrInvalid, "invalid request: the request was refused by the service"},
		{"invalid with control characters", 400, "invalid", "bad\nthing", backends.ErrInvalid, "invalid request: the request was refused by the service"},
		{"invalid, long", 400, "invalid", strings.Repeat("x", 500), backends.ErrInvalid, "invalid request: " + strings.Repeat("x", 200) + "..."},
		{"unauthorized", 401, "unauthorized", "bad token", backends.ErrUnavailable, ""},
		{"bare 404 is not a missing account", 404, "", "", nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &countingHandler{respond: func(n int64, w http.ResponseWriter, r *http.Request) {
				if tc.code == "" {
					http.NotFound(w, r)
					return
				}
				fail(w, tc.status, tc.code, tc.msg)
			}}
			p, _ := portfolioAt(t, h, httpclient.Options{Retries: 3})
			_, err := p.SearchEquities(t.Context(), backends.EquityQuery{Text: "x"})
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range []error{backends.ErrNotFound, backends.ErrInvalid, backends.ErrUnavailable} {
				if errors.Is(err, s) != (s == tc.want) {
					t.Errorf("err = %v; errors.Is(%v) = %v", err, s, !(s == tc.want))
				}
			}
			if tc.text != "" && err.Error() != tc.text {
				t.Errorf("err text = %q, want %q", err, tc.text)
			}
			if h.count() != 1 {
				t.Errorf("%d requests, want 1", h.count())
			}
		})
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	var elsewhere countingHandler
	other := httptest.NewServer(&elsewhere)
	t.Cleanup(other.Close)
	h := &countingHandler{respond: func(n int64, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/v1/accounts", http.StatusFound)
	}}
	p, _ := portfolioAt(t, h, httpclient.Options{Retries: 2})
	if _, err := p.ListAccounts(t.Context()); err == nil || errors.Is(err, backends.ErrNotFound) {
		t.Fatalf("err = %v, want an internal error", err)
	}
	if elsewhere.count() != 0 || h.count() != 1 {
		t.Errorf("redirect target got %d requests, origin %d; want 0 and 1", elsewhere.count(), h.count())
	}
}

// TestRetryAfterBeyondDeadline: a wait the deadline cannot cover is not
// started; the call reports the service's answer at once.
func TestRetryAfterBeyondDeadline(t *testing.T) {
	h := &countingHandler{respond: func(n int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		fail(w, http.StatusServiceUnavailable, "unavailable", "overloaded")
	}}
	p, _ := portfolioAt(t, h, httpclient.Options{Retries: 3, Timeout: 2 * time.Second})
	_, err := p.ListAccounts(t.Context())
	if !errors.Is(err, backends.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrUnavailable from the answer, not a deadline", err)
	}
	if h.count() != 1 {
		t.Errorf("%d requests, want 1", h.count())
	}
}

// trading starts the fake Trade service with fault injection.
func trading(t *testing.T) (*httpclient.Trade, *faults.Injector) {
	t.Helper()
	inj := faults.New(fake.Routes(fake.Trade))
	h, err := fake.New(demo.New(fixedNow).Set(), fake.Options{Services: []string{fake.Trade}, Wrap: inj.Wrap})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	tr, err := httpclient.NewTrade(srv.URL, httpclient.Options{Retries: 2, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return tr, inj
}

var order = backends.OrderRequest{ClientOrderID: "c-42", AccountID: "ACC-1001", Ticker: "MSFT", Side: "buy", Type: "market", Quantity: 3}

// TestOrderResentOnlyWithoutAnswer: a dropped connection is resent (the
// contract's idempotency makes it safe, and the service sees one order);
// an answered 5xx is not.
func TestOrderResentOnlyWithoutAnswer(t *testing.T) {
	t.Run("dropped connection", func(t *testing.T) {
		tr, inj := trading(t)
		if err := inj.Set(faults.Fault{Route: "POST /v1/orders", Drop: true, Times: 1}); err != nil {
			t.Fatal(err)
		}
		o, err := tr.PlaceOrder(t.Context(), order)
		if err != nil {
			t.Fatal(err)
		}
		if hits := inj.State().Hits["POST /v1/orders"]; hits != 2 {
			t.Errorf("%d order requests, want 2 (dropped, then resent)", hits)
		}
		again, err := tr.GetOrder(t.Context(), o.OrderID)
		if err != nil || again.ClientOrderID != order.ClientOrderID || o.OrderID != "ORD-00000001" {
			t.Errorf("order %+v / %+v, %v: want exactly one order for c-42", o, again, err)
		}
	})
	t.Run("answered 503", func(t *testing.T) {
		tr, inj := trading(t)
		if err := inj.Set(faults.Fault{Route: "POST /v1/orders", Status: 503}); err != nil {
			t.Fatal(err)
		}
		if _, err := tr.PlaceOrder(t.Context(), order); !errors.Is(err, backends.ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
		if hits := inj.State().Hits["POST /v1/orders"]; hits != 1 {
			t.Errorf("%d order requests, want 1 (no resend after an answer)", hits)
		}
	})
}

// TestHangEndsAtDeadline: a service that never answers costs the call its
// deadline (the client's own, or the caller's if sooner) and leaves no
// goroutine behind.
func TestHangEndsAtDeadline(t *testing.T) {
	cases := []struct {
		name    string
		timeout time.Duration
		caller  time.Duration // 0: no caller deadline
	}{
		{"client timeout", 150 * time.Millisecond, 0},
		{"caller deadline sooner", time.Minute, 150 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			inj := faults.New(fake.Routes())
			h, err := fake.New(demo.New(nil).Set(), fake.Options{Wrap: inj.Wrap})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			tr := httpclient.NewTransport()
			defer tr.CloseIdleConnections()
			p, err := httpclient.NewPortfolio(srv.URL, httpclient.Options{Timeout: tc.timeout, Retries: 2, Transport: tr})
			if err != nil {
				t.Fatal(err)
			}
			if err := inj.Set(faults.Fault{Route: faults.AllRoutes, Hang: true}); err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			if tc.caller > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.caller)
				defer cancel()
			}
			var wg sync.WaitGroup
			errs := make([]error, 4)
			for i := range errs {
				wg.Go(func() { _, errs[i] = p.GetPortfolio(ctx, "ACC-1001") })
			}
			wg.Wait()
			for _, err := range errs {
				if !errors.Is(err, backends.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("err = %v, want ErrUnavailable at the deadline", err)
				}
			}
		})
	}
}

// breakerLog records the breaker's state changes from the client's log.
type breakerLog struct {
	mu      sync.Mutex
	changes []string
}

func (b *breakerLog) Enabled(context.Context, slog.Level) bool { return true }
func (b *breakerLog) WithAttrs([]slog.Attr) slog.Handler       { return b }
func (b *breakerLog) WithGroup(string) slog.Handler            { return b }
func (b *breakerLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "backend circuit breaker changed state" {
		return nil
	}
	var from, to string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "from":
			from = a.Value.String()
		case "to":
			to = a.Value.String()
		}
		return true
	})
	b.mu.Lock()
	b.changes = append(b.changes, from+"->"+to)
	b.mu.Unlock()
	return nil
}

func (b *breakerLog) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.changes, " ")
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCircuitBreaker(t *testing.T) {
	down, h := downService()
	log := &breakerLog{}
	p, _ := portfolioAt(t, h, httpclient.Options{Retries: 0, BreakerFailures: 3, BreakerCooldown: 50 * time.Millisecond, Logger: slog.New(log)})
	ctx := t.Context()

	for range 3 {
		if _, err := p.ListAccounts(ctx); errors.Is(err, httpclient.ErrCircuitOpen) || !errors.Is(err, backends.ErrUnavailable) {
			t.Fatalf("err = %v, want the service's failure", err)
		}
	}
	// Open: the call fails at once, without a request.
	_, err := p.ListAccounts(ctx)
	if !errors.Is(err, httpclient.ErrCircuitOpen) || !errors.Is(err, backends.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrCircuitOpen", err)
	}
	if h.count() != 3 {
		t.Fatalf("%d requests, want 3 (none while open)", h.count())
	}

	// Still down: the probe after the cooldown fails and re-opens.
	eventually(t, "a probe while down", func() bool { p.ListAccounts(ctx); return h.count() == 4 })
	if _, err := p.ListAccounts(ctx); !errors.Is(err, httpclient.ErrCircuitOpen) {
		t.Fatalf("after a failed probe err = %v, want ErrCircuitOpen", err)
	}

	// Recovered: the next probe closes it and calls flow again.
	down.Store(false)
	eventually(t, "the breaker to close", func() bool { _, err := p.ListAccounts(ctx); return err == nil })
	before := h.count()
	if _, err := p.ListAccounts(ctx); err != nil || h.count() != before+1 {
		t.Fatalf("after recovery err = %v, requests %d -> %d", err, before, h.count())
	}
	want := "closed->open open->half-open half-open->open open->half-open half-open->closed"
	if got := log.String(); got != want {
		t.Errorf("breaker went %q, want %q", got, want)
	}
}

// TestBreakerIgnoresAnswersAndCancellations: not-found answers and callers
// that gave up say nothing about the service's health.
func TestBreakerIgnoresAnswersAndCancellations(t *testing.T) {
	var notFound atomic.Bool
	notFound.Store(true)
	h := &countingHandler{respond: func(n int64, w http.ResponseWriter, r *http.Request) {
		if notFound.Load() {
			fail(w, http.StatusNotFound, "not_found", "no such account")
			return
		}
		okAccounts(w)
	}}
	p, _ := portfolioAt(t, h, httpclient.Options{Retries: 0, BreakerFailures: 2, BreakerCooldown: time.Hour})
	for range 5 {
		if _, err := p.GetPortfolio(t.Context(), "ACC-9"); !errors.Is(err, backends.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	for range 5 {
		if _, err := p.ListAccounts(cancelled); !errors.Is(err, context.Canceled) || errors.Is(err, backends.ErrUnavailable) {
			t.Fatalf("err = %v, want context.Canceled only", err)
		}
	}
	notFound.Store(false)
	if _, err := p.ListAccounts(t.Context()); err != nil {
		t.Fatalf("breaker opened on answers or cancellations: %v", err)
	}
}

// TestBreakerPerService: one service failing does not stop calls to another.
func TestBreakerPerService(t *testing.T) {
	broken := &countingHandler{respond: func(n int64, w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusBadGateway, "unavailable", "down")
	}}
	bad := httptest.NewServer(broken)
	t.Cleanup(bad.Close)
	h, err := fake.New(demo.New(nil).Set(), fake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	good := httptest.NewServer(h)
	t.Cleanup(good.Close)
	set, err := httpclient.NewSet(httpclient.URLs{Portfolio: bad.URL, Risk: good.URL, Trade: good.URL},
		httpclient.Options{Retries: 0, BreakerFailures: 1, BreakerCooldown: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	set.Portfolio.ListAccounts(t.Context())
	if _, err := set.Portfolio.ListAccounts(t.Context()); !errors.Is(err, httpclient.ErrCircuitOpen) {
		t.Fatalf("portfolio err = %v, want ErrCircuitOpen", err)
	}
	if _, err := set.Risk.RiskSummary(t.Context(), "ACC-1001"); err != nil {
		t.Fatalf("risk call failed while only portfolio is down: %v", err)
	}
}

// TestRequestHeaders: the bearer token is fetched per request (rotation
// without a restart), and the MCP request id is forwarded.
func TestRequestHeaders(t *testing.T) {
	type seen struct{ auth, id string }
	var mu sync.Mutex
	var got []seen
	h := &countingHandler{respond: func(n int64, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.Header.Get("Authorization"), r.Header.Get("X-Request-Id")})
		mu.Unlock()
		okAccounts(w)
	}}
	var token atomic.Value
	token.Store("first")
	p, _ := portfolioAt(t, h, httpclient.Options{Token: func() string { return token.Load().(string) }})
	ctx := telemetry.WithRequestID(t.Context(), "req-123")
	for _, tok := range []string{"first", "rotated", ""} {
		token.Store(tok)
		if _, err := p.ListAccounts(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := []seen{{"Bearer first", "req-123"}, {"Bearer rotated", "req-123"}, {"", "req-123"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("headers %v, want %v", got, want)
	}
}

func TestNewRejectsBadConfiguration(t *testing.T) {
	cases := []struct {
		url  string
		opts httpclient.Options
	}{
		{"", httpclient.Options{}},
		{"portfolio:8080", httpclient.Options{}},
		{"ftp://portfolio", httpclient.Options{}},
		{"http://user:pw@portfolio", httpclient.Options{}},
		{"http://portfolio?x=1", httpclient.Options{}},
		{"http://portfolio", httpclient.Options{Retries: -1}},
		{"http://portfolio", httpclient.Options{Timeout: -time.Second}},
	}
	for _, tc := range cases {
		if _, err := httpclient.NewPortfolio(tc.url, tc.opts); err == nil {
			t.Errorf("NewPortfolio(%q, %+v) succeeded", tc.url, tc.opts)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("error %q quotes the credentials", err)
		}
	}
}

// downService is a service answering 503 until down is cleared, then the
// account list.
func downService() (down *atomic.Bool, h *countingHandler) {
	down = new(atomic.Bool)
	down.Store(true)
	return down, &countingHandler{respond: func(n int64, w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			fail(w, http.StatusServiceUnavailable, "unavailable", "down")
			return
		}
		okAccounts(w)
	}}
}
