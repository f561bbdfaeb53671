package httpclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/backends/fake"
	"github.com/portfolio-mcp/portfolio-mcp/backends/httpclient"
)

// fixedNow stamps orders, so that two demo books given the same orders agree.
func fixedNow() time.Time { return demo.AsOf.Add(time.Hour) }

// routeRecorder remembers which contract routes were served.
type routeRecorder struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (rr *routeRecorder) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rr.mu.Lock()
		rr.seen[r.Pattern] = true
		rr.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func (rr *routeRecorder) routes() []string {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	var out []string
	for r := range rr.seen {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// setCall is one named call on a backends.Set.
type setCall struct {
	name string
	call func(backends.Set) (any, error)
}

// TestClientsOverFakeMatchDemo drives every client method over real HTTP
// against the fake serving a demo book, and checks each answer (and each
// error) is what the same demo book gives in process. It also checks the
// clients call every contract route and no other.
func TestClientsOverFakeMatchDemo(t *testing.T) {
	direct := demo.New(fixedNow)
	rec := &routeRecorder{seen: map[string]bool{}}
	h, err := fake.New(demo.New(fixedNow).Set(), fake.Options{Token: "s3cret", Wrap: rec.wrap})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	remote, err := httpclient.NewSet(httpclient.URLs{Portfolio: srv.URL, Risk: srv.URL, Trade: srv.URL},
		httpclient.Options{Timeout: 5 * time.Second, Retries: 0, Token: func() string { return "s3cret" }})
	if err != nil {
		t.Fatal(err)
	}
	local := direct.Set()
	ctx := t.Context()

	// Each case runs the same call on both sets; order matters for trades.
	cases := []setCall{
		{"list accounts", func(s backends.Set) (any, error) { return s.Portfolio.ListAccounts(ctx) }},
		{"unknown account", func(s backends.Set) (any, error) { return s.Portfolio.GetPortfolio(ctx, "ACC-0000") }},
		{"search with filters", func(s backends.Set) (any, error) {
			return s.MarketData.SearchEquities(ctx, backends.EquityQuery{Text: "a", Sector: "information technology", Exchange: "NASDAQ", MinMarketCap: 1.5e11, MaxMarketCap: 3.25e12, Limit: 3})
		}},
		{"search bad limit", func(s backends.Set) (any, error) {
			return s.MarketData.SearchEquities(ctx, backends.EquityQuery{Limit: 101})
		}},
		{"search foreign cursor", func(s backends.Set) (any, error) {
			p, err := s.MarketData.SearchEquities(ctx, backends.EquityQuery{Text: "co", Limit: 2})
			if err != nil {
				return nil, err
			}
			return s.MarketData.SearchEquities(ctx, backends.EquityQuery{Text: "in", Limit: 2, Cursor: p.NextCursor})
		}},
		{"search every page", func(s backends.Set) (any, error) {
			var pages []backends.EquityPage
			q := backends.EquityQuery{Limit: 37}
			for {
				p, err := s.MarketData.SearchEquities(ctx, q)
				if err != nil {
					return nil, err
				}
				pages = append(pages, p)
				if p.NextCursor == "" {
					return pages, nil
				}
				q.Cursor = p.NextCursor
			}
		}},
		{"quotes with unknown", func(s backends.Set) (any, error) {
			return s.MarketData.Quotes(ctx, []string{"AAPL", "BRK.B", "nope", "msft"})
		}},
		{"no quotes", func(s backends.Set) (any, error) { return s.MarketData.Quotes(ctx, nil) }},
		{"risk unknown account", func(s backends.Set) (any, error) { return s.Risk.RiskSummary(ctx, "ACC-0000") }},
		{"market order", func(s backends.Set) (any, error) {
			return s.Trade.PlaceOrder(ctx, backends.OrderRequest{ClientOrderID: "c-1", AccountID: "ACC-1001", Ticker: "aapl", Side: "buy", Type: "market", Quantity: 10})
		}},
		{"market order repeated", func(s backends.Set) (any, error) {
			return s.Trade.PlaceOrder(ctx, backends.OrderRequest{ClientOrderID: "c-1", AccountID: "ACC-1001", Ticker: "aapl", Side: "buy", Type: "market", Quantity: 10})
		}},
		{"client order id reused", func(s backends.Set) (any, error) {
			return s.Trade.PlaceOrder(ctx, backends.OrderRequest{ClientOrderID: "c-1", AccountID: "ACC-1001", Ticker: "aapl", Side: "buy", Type: "market", Quantity: 11})
		}},
		{"resting limit order", func(s backends.Set) (any, error) {
			return s.Trade.PlaceOrder(ctx, backends.OrderRequest{ClientOrderID: "c-2", AccountID: "ACC-1002", Ticker: "KO", Side: "buy", Type: "limit", Quantity: 5, LimitPrice: 1})
		}},
		{"order for unknown ticker", func(s backends.Set) (any, error) {
			return s.Trade.PlaceOrder(ctx, backends.OrderRequest{ClientOrderID: "c-3", AccountID: "ACC-1002", Ticker: "ZZZZ", Side: "buy", Type: "market", Quantity: 5})
		}},
		{"get order", func(s backends.Set) (any, error) { return s.Trade.GetOrder(ctx, "ORD-00000002") }},
		{"get unknown order", func(s backends.Set) (any, error) { return s.Trade.GetOrder(ctx, "ORD-99999999") }},
		{"order by client id", func(s backends.Set) (any, error) { return s.Trade.OrderByClientID(ctx, "c-2") }},
		{"order by unknown client id", func(s backends.Set) (any, error) { return s.Trade.OrderByClientID(ctx, "never-sent-1") }},
		{"cancel resting", func(s backends.Set) (any, error) { return s.Trade.CancelOrder(ctx, "ORD-00000002") }},
		{"cancel again", func(s backends.Set) (any, error) { return s.Trade.CancelOrder(ctx, "ORD-00000002") }},
		{"cancel filled", func(s backends.Set) (any, error) { return s.Trade.CancelOrder(ctx, "ORD-00000001") }},
	}
	accts, _ := direct.ListAccounts(ctx)
	for _, a := range accts {
		cases = append(cases,
			setCall{"portfolio " + a.ID, func(s backends.Set) (any, error) { return s.Portfolio.GetPortfolio(ctx, a.ID) }},
			setCall{"risk " + a.ID, func(s backends.Set) (any, error) { return s.Risk.RiskSummary(ctx, a.ID) }},
		)
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, wantErr := tc.call(local)
			got, gotErr := tc.call(remote)
			if wantErr != nil || gotErr != nil {
				checkSameError(t, wantErr, gotErr)
				return
			}
			wj, _ := json.Marshal(want)
			gj, _ := json.Marshal(got)
			if string(wj) != string(gj) {
				t.Errorf("over HTTP:\n%s\nin process:\n%s", gj, wj)
			}
		})
	}

	if got, want := rec.routes(), sorted(fake.Routes()); !slices.Equal(got, want) {
		t.Errorf("clients called routes %q, want every contract route %q", got, want)
	}
}

// checkSameError requires both errors to carry the same sentinel, and an
// invalid request to read exactly the same (it is what the agent sees).
func checkSameError(t *testing.T, want, got error) {
	t.Helper()
	if want == nil || got == nil {
		t.Fatalf("in process err = %v, over HTTP err = %v", want, got)
	}
	for _, sentinel := range []error{backends.ErrNotFound, backends.ErrInvalid, backends.ErrUnavailable} {
		if errors.Is(want, sentinel) != errors.Is(got, sentinel) {
			t.Fatalf("in process err = %v, over HTTP err = %v: disagree on %v", want, got, sentinel)
		}
	}
	if errors.Is(want, backends.ErrInvalid) && want.Error() != got.Error() {
		t.Errorf("invalid-request text differs:\nover HTTP:  %s\nin process: %s", got, want)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestPlaceOrderNeedsClientOrderID: without the idempotency key a resend
// could execute twice, so the client refuses before the network.
func TestPlaceOrderNeedsClientOrderID(t *testing.T) {
	var hits countingHandler
	srv := httptest.NewServer(&hits)
	t.Cleanup(srv.Close)
	tr, err := httpclient.NewTrade(srv.URL, httpclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.PlaceOrder(context.Background(), backends.OrderRequest{AccountID: "ACC-1001", Ticker: "AAPL", Side: "buy", Type: "market", Quantity: 1})
	if !errors.Is(err, backends.ErrInvalid) || hits.count() != 0 {
		t.Fatalf("err = %v after %d requests; want ErrInvalid and no request", err, hits.count())
	}
}
