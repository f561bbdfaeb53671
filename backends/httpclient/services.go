package httpclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
)

// Portfolio is the client of the Portfolio service, which also serves
// reference data (the equity universe) and market data (quotes).
type Portfolio struct{ c *caller }

// Risk is the client of the Risk service.
type Risk struct{ c *caller }

// Trade is the client of the Trade service.
type Trade struct{ c *caller }

var (
	_ backends.Portfolio  = (*Portfolio)(nil)
	_ backends.MarketData = (*Portfolio)(nil)
	_ backends.Risk       = (*Risk)(nil)
	_ backends.Trade      = (*Trade)(nil)
)

// NewPortfolio returns a client of the Portfolio service at baseURL.
func NewPortfolio(baseURL string, o Options) (*Portfolio, error) {
	c, err := newCaller("portfolio", baseURL, o)
	return &Portfolio{c}, err
}

// NewRisk returns a client of the Risk service at baseURL.
func NewRisk(baseURL string, o Options) (*Risk, error) {
	c, err := newCaller("risk", baseURL, o)
	return &Risk{c}, err
}

// NewTrade returns a client of the Trade service at baseURL.
func NewTrade(baseURL string, o Options) (*Trade, error) {
	c, err := newCaller("trade", baseURL, o)
	return &Trade{c}, err
}

// URLs locate the three services.
type URLs struct {
	Portfolio, Risk, Trade string
}

// NewSet returns clients of all three services sharing one connection pool
// (o.Transport, or a new NewTransport), each with its own breaker.
func NewSet(u URLs, o Options) (backends.Set, error) {
	if o.Transport == nil {
		o.Transport = NewTransport()
	}
	p, err := NewPortfolio(u.Portfolio, o)
	if err != nil {
		return backends.Set{}, err
	}
	r, err := NewRisk(u.Risk, o)
	if err != nil {
		return backends.Set{}, err
	}
	t, err := NewTrade(u.Trade, o)
	if err != nil {
		return backends.Set{}, err
	}
	return backends.Set{Portfolio: p, MarketData: p, Risk: r, Trade: t}, nil
}

// ListAccounts implements backends.Portfolio.
func (p *Portfolio) ListAccounts(ctx context.Context) ([]backends.Account, error) {
	var out struct {
		Accounts []backends.Account `json:"accounts"`
	}
	err := p.c.do(ctx, request{op: "list_accounts", method: http.MethodGet, route: "GET /v1/accounts", path: "/v1/accounts"}, &out)
	if err != nil {
		return nil, err
	}
	return out.Accounts, nil
}

// GetPortfolio implements backends.Portfolio.
func (p *Portfolio) GetPortfolio(ctx context.Context, accountID string) (backends.PortfolioValuation, error) {
	var out backends.PortfolioValuation
	err := p.c.do(ctx, request{op: "get_portfolio",
		method: http.MethodGet, route: "GET /v1/accounts/{account_id}/portfolio",
		path: "/v1/accounts/" + url.PathEscape(accountID) + "/portfolio",
	}, &out)
	if err != nil {
		return backends.PortfolioValuation{}, about(fmt.Sprintf("account %q", accountID), err)
	}
	return out, nil
}

// SearchEquities implements backends.MarketData.
func (p *Portfolio) SearchEquities(ctx context.Context, q backends.EquityQuery) (backends.EquityPage, error) {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	num := func(f float64) string {
		if f == 0 {
			return ""
		}
		// Shortest exact form, so the service sees the same float64.
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	set("q", q.Text)
	set("sector", q.Sector)
	set("exchange", q.Exchange)
	set("min_market_cap", num(q.MinMarketCap))
	set("max_market_cap", num(q.MaxMarketCap))
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	set("cursor", q.Cursor)
	var out backends.EquityPage
	err := p.c.do(ctx, request{op: "search_equities", method: http.MethodGet, route: "GET /v1/equities", path: "/v1/equities", query: v}, &out)
	if err != nil {
		return backends.EquityPage{}, err
	}
	return out, nil
}

// Quotes implements backends.MarketData.
func (p *Portfolio) Quotes(ctx context.Context, tickers []string) (backends.QuoteSet, error) {
	v := url.Values{"ticker": tickers}
	var out backends.QuoteSet
	err := p.c.do(ctx, request{op: "get_quotes", method: http.MethodGet, route: "GET /v1/quotes", path: "/v1/quotes", query: v}, &out)
	if err != nil {
		return backends.QuoteSet{}, err
	}
	return out, nil
}

// RiskSummary implements backends.Risk.
func (r *Risk) RiskSummary(ctx context.Context, accountID string) (backends.RiskSummary, error) {
	var out backends.RiskSummary
	err := r.c.do(ctx, request{op: "risk_summary",
		method: http.MethodGet, route: "GET /v1/accounts/{account_id}/risk-summary",
		path: "/v1/accounts/" + url.PathEscape(accountID) + "/risk-summary",
	}, &out)
	if err != nil {
		return backends.RiskSummary{}, about(fmt.Sprintf("account %q", accountID), err)
	}
	return out, nil
}

// PlaceOrder implements backends.Trade. The contract makes it idempotent on
// ClientOrderID, so a request that got no response at all is resent; one the
// service answered with an error is not, since it may have acted.
func (t *Trade) PlaceOrder(ctx context.Context, req backends.OrderRequest) (backends.Order, error) {
	if req.ClientOrderID == "" {
		// Without the key a resend could execute twice; refuse locally.
		return backends.Order{}, fmt.Errorf("%w: client_order_id is required", backends.ErrInvalid)
	}
	var out backends.Order
	err := t.c.do(ctx, request{op: "place_order",
		method: http.MethodPost, route: "POST /v1/orders", path: "/v1/orders", body: req, replaySafe: true,
	}, &out)
	if err != nil {
		return backends.Order{}, about(fmt.Sprintf("order %q", req.ClientOrderID), err)
	}
	return out, nil
}

// GetOrder implements backends.Trade.
func (t *Trade) GetOrder(ctx context.Context, orderID string) (backends.Order, error) {
	var out backends.Order
	err := t.c.do(ctx, request{op: "get_order",
		method: http.MethodGet, route: "GET /v1/orders/{order_id}", path: "/v1/orders/" + url.PathEscape(orderID),
	}, &out)
	if err != nil {
		return backends.Order{}, about(fmt.Sprintf("order %q", orderID), err)
	}
	return out, nil
}

// OrderByClientID implements backends.Trade. A read: retried like any other,
// and ErrNotFound (the contract's 404 body) means the service never saw the
// id.
func (t *Trade) OrderByClientID(ctx context.Context, clientOrderID string) (backends.Order, error) {
	var out backends.Order
	err := t.c.do(ctx, request{op: "order_by_client_id",
		method: http.MethodGet, route: "GET /v1/client-orders/{client_order_id}",
		path: "/v1/client-orders/" + url.PathEscape(clientOrderID),
	}, &out)
	if err != nil {
		return backends.Order{}, about(fmt.Sprintf("client order %q", clientOrderID), err)
	}
	return out, nil
}

// CancelOrder implements backends.Trade. Cancelling is idempotent by
// contract, so like PlaceOrder it is resent only when no response arrived.
func (t *Trade) CancelOrder(ctx context.Context, orderID string) (backends.Order, error) {
	var out backends.Order
	err := t.c.do(ctx, request{op: "cancel_order",
		method: http.MethodPost, route: "POST /v1/orders/{order_id}/cancel",
		path: "/v1/orders/" + url.PathEscape(orderID) + "/cancel", replaySafe: true,
	}, &out)
	if err != nil {
		return backends.Order{}, about(fmt.Sprintf("order %q", orderID), err)
	}
	return out, nil
}

// about prefixes err with what the call was about, for the log. An invalid
// request's message is left as the service wrote it: it is what the agent
// sees.
func about(what string, err error) error {
	if errors.Is(err, backends.ErrInvalid) {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}
